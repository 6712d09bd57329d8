//! The thirteen instructions, each run once in assembly, and a net for the
//! ones that might fault.
//!
//! In ring 0 on a real CPU none of these instructions faults. Under a
//! hypervisor some might (with CR4.UMIP the five store instructions raise
//! #GP in ring 3, and a hypervisor could pass that #GP on to the kernel
//! instead of emulating it). So each probe runs inside a *net*: before the
//! instruction, its assembly stores the address just after it in [`RESUME`];
//! if the instruction faults, [`on_fault`] notes the vector and resumes
//! there, so the probe reports "trapped" instead of killing the kernel.
//! (The same idea as a kernel's exception table for user-memory copies.)

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use bare_rt::cpu::RFLAGS_IF;
use bare_rt::TrapFrame;

/// Where to resume if the running probe faults; 0 outside a probe.
static RESUME: AtomicU64 = AtomicU64::new(0);
/// The vector the running probe faulted with, or [`NO_FAULT`].
static FAULT: AtomicU64 = AtomicU64::new(NO_FAULT);
const NO_FAULT: u64 = u64::MAX;

/// The handler for #GP and #UD: inside a probe, skip the instruction;
/// anywhere else, the runtime's report.
pub fn on_fault(frame: &mut TrapFrame) {
    let resume = RESUME.swap(0, Ordering::Relaxed);
    if resume == 0 {
        bare_rt::trap::unhandled(frame);
    }
    FAULT.store(frame.vector, Ordering::Relaxed);
    frame.rip = resume;
}

/// What a probe saw: the value it read, or the vector it faulted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The instruction ran and produced this.
    Ran(T),
    /// The instruction faulted with this vector.
    Faulted(u64),
}

/// Runs `probe` (whose assembly arms the net with `RESUME`) and returns
/// what it produced, unless it faulted.
fn netted<T>(probe: impl FnOnce(&AtomicU64) -> T) -> Outcome<T> {
    FAULT.store(NO_FAULT, Ordering::Relaxed);
    let value = probe(&RESUME);
    RESUME.store(0, Ordering::Relaxed);
    match FAULT.load(Ordering::Relaxed) {
        NO_FAULT => Outcome::Ran(value),
        vector => Outcome::Faulted(vector),
    }
}

/// A descriptor-table register as `sgdt`/`sidt` store it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRegister {
    /// Size of the table minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

impl TableRegister {
    fn from_bytes(bytes: [u8; 10]) -> Self {
        let mut base = [0u8; 8];
        base.copy_from_slice(&bytes[2..]);
        TableRegister { limit: u16::from_le_bytes([bytes[0], bytes[1]]), base: u64::from_le_bytes(base) }
    }
}

/// `asm!` for one probe: arms the net (stores the address of the block's
/// end in [`RESUME`], whose address is `$resume`), runs `$template`, and
/// ends at the resume point, so a fault in the templates resumes after
/// them. The templates may use the scratch register `{t}` (free after
/// the arming) and the caller's operands, each followed by a comma.
macro_rules! netted_asm {
    ($resume:expr, $($template:literal),+ ; $($operands:tt)*) => {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [{resume}], {t}",
            $($template,)+
            "2:",
            $($operands)*
            t = out(reg) _,
            resume = in(reg) $resume.as_ptr(),
            options(nostack),
        )
    };
}

/// Defines a probe of `sgdt`/`sidt`: the descriptor-table register the
/// instruction stores, netted.
macro_rules! table_register_probe {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        pub fn $name() -> Outcome<TableRegister> {
            let mut bytes = [0u8; 10];
            netted(|resume| {
                // SAFETY: the instruction stores 10 bytes into `bytes` (10
                // bytes long); the net is armed first.
                unsafe { netted_asm!(resume, $insn; buf = in(reg) bytes.as_mut_ptr(),) };
                TableRegister::from_bytes(bytes)
            })
        }
    };
}

table_register_probe!(
    /// `sgdt`: the GDT register.
    sgdt, "sgdt [{buf}]"
);
table_register_probe!(
    /// `sidt`: the IDT register.
    sidt, "sidt [{buf}]"
);

/// Defines a probe that runs one instruction writing `eax`, netted.
macro_rules! eax_probe {
    ($(#[$doc:meta])* $name:ident, $insn:literal, $mask:expr) => {
        $(#[$doc])*
        pub fn $name() -> Outcome<u64> {
            netted(|resume| {
                let mut value: u64 = 0;
                // SAFETY: the instruction only reads CPU state into eax
                // (declared); the net is armed first.
                unsafe { netted_asm!(resume, $insn; inout("rax") value,) };
                value & $mask
            })
        }
    };
}

eax_probe!(
    /// `sldt`: the LDT selector.
    sldt, "sldt eax", 0xffff
);
eax_probe!(
    /// `smsw`: the low 16 bits of CR0 (the "machine status word").
    smsw, "smsw eax", 0xffff
);
eax_probe!(
    /// `str`: the task-register selector.
    str_, "str eax", 0xffff
);

/// `pushfq` after `cli`: the IF bit it shows (0 on bare metal).
pub fn pushf_after_cli() -> bool {
    bare_rt::cpu::cli();
    bare_rt::cpu::rflags() & RFLAGS_IF != 0
}

/// `popfq` clearing IF after `sti`: the IF bit `pushfq` shows afterwards
/// (0 on bare metal, where `popfq` in ring 0 changes IF). Interrupts are
/// off again when this returns.
pub fn popf_clearing_if() -> bool {
    let flags: u64;
    // SAFETY: 1. interrupts are on for the few instructions between `sti`
    // and `cli`, and every PIC line is masked, so nothing arrives (an NMI
    // would find the runtime's gate); 2. the pushes and pops are balanced
    // on our own stack; 3. `popfq` changes only IF (and restores the other
    // flags `pushfq` just saved).
    unsafe {
        asm!(
            "sti",
            "pushfq",
            "and qword ptr [rsp], {clear_if}",
            "popfq",
            "pushfq",
            "pop {flags}",
            "cli",
            clear_if = const !RFLAGS_IF as i64,
            flags = out(reg) flags,
        )
    };
    flags & RFLAGS_IF != 0
}

/// `mov r, cs` and `mov r, ss`: the selectors.
pub fn segment_selectors() -> (u16, u16) {
    let (cs, ss): (u64, u64);
    // SAFETY: reads two segment selectors into registers.
    unsafe { asm!("mov {c:e}, cs", "mov {s:e}, ss", c = out(reg) cs, s = out(reg) ss, options(nomem, nostack, preserves_flags)) };
    ((cs & 0xffff) as u16, (ss & 0xffff) as u16)
}

/// What `lar` or `lsl` said about a selector: the value if ZF was set.
pub type SelectorQuery = Outcome<Option<u64>>;

/// Defines a probe of `lar`/`lsl` on a selector: `Some(value)` if the CPU
/// found the selector valid (ZF = 1), `None` if not.
macro_rules! selector_query {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        pub fn $name(selector: u16) -> SelectorQuery {
            netted(|resume| {
                let (value, valid): (u64, u64);
                // SAFETY: the instruction only reads the descriptor the
                // selector names into a register and sets ZF; the net is
                // armed first (a fault leaves `valid` 0).
                unsafe {
                    netted_asm!(resume, "xor {ok:e}, {ok:e}", $insn, "setz {ok:l}";
                        sel = in(reg) u64::from(selector),
                        v = out(reg) value,
                        ok = out(reg) valid,
                    )
                };
                (valid != 0).then_some(value)
            })
        }
    };
}

selector_query!(
    /// `lar`: the access rights of `selector`'s descriptor.
    lar, "lar {v}, {sel}"
);
selector_query!(
    /// `lsl`: the segment limit of `selector`'s descriptor.
    lsl, "lsl {v}, {sel}"
);

/// Defines a probe of `verr`/`verw`: whether the CPU says the segment can
/// be read (written) from the current privilege level.
macro_rules! verify {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        pub fn $name(selector: u16) -> Outcome<bool> {
            netted(|resume| {
                let ok: u64;
                // SAFETY: the instruction only reads the descriptor and sets
                // ZF; the net is armed first (a fault leaves `ok` 0).
                unsafe {
                    netted_asm!(resume, "xor {ok:e}, {ok:e}", $insn, "setz {ok:l}";
                        sel = in(reg) u64::from(selector),
                        ok = out(reg) ok,
                    )
                };
                ok != 0
            })
        }
    };
}

verify!(
    /// `verr`: may the segment be read?
    verr, "verr {sel:x}"
);
verify!(
    /// `verw`: may the segment be written?
    verw, "verw {sel:x}"
);
