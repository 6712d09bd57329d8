//! Delivering an interrupt or exception to an emulated kernel through its own IDT.
//!
//! On a real CPU an interrupt in long mode reads the gate of its vector
//! from the IDT, switches to the kernel stack named by the TSS if the
//! privilege level changes (or to an IST stack if the gate asks for one),
//! aligns it to 16 bytes, pushes SS, RSP, RFLAGS, CS, RIP and, for some
//! exceptions, an error code, and jumps to the gate's offset with CPL 0
//! and, for an interrupt gate, IF clear (Intel SDM vol. 3, 6.14). The
//! emulated kernel's IDT, TSS and stacks are in its own memory and its IF
//! is virtual, so the hypervisor does exactly those steps itself: this is
//! the only way a virtual interrupt, or a fault the guest must handle
//! (its own page faults, its user processes' errors), reaches it.
//!
//! Delivery can itself fail: the gate is missing or not present, an `int
//! n` names a gate its caller may not use, the TSS or the new stack cannot
//! be reached. A real CPU then raises the exception that failure is (#GP,
//! #NP, #TS, #SS or #PF, with the error code that names the gate or the
//! address) and delivers *that*, or a double fault when two faults
//! collide, or shuts down (a triple fault) when even the double fault
//! cannot be delivered (Intel SDM vol. 3, 6.15, Table 6-5). [`deliver`]
//! follows the same chain; only the triple fault (or a table outside the
//! domain's RAM, which no real machine has either) is an error, which
//! stops the domain with a report naming the first failure.

use super::cpu::VirtualCpu;
use super::guest_virt::{GuestVirt, VirtFault};
use crate::machine_memory::MachineMemory;
use crate::vcpu::GuestRegs;

/// RFLAGS bits an interrupt clears besides IF: TF, NT, RF.
const CLEARED_ON_DELIVERY: u64 = (1 << 8) | (1 << 14) | (1 << 16);
/// The double fault.
const DF: u8 = 8;
/// The page fault.
const PF: u8 = 14;
/// The error-code bit that says the fault names an IDT gate.
const ERROR_IDT: u64 = 2;
/// The error-code bit that says the fault came while delivering an event
/// external to the program (an interrupt or an exception, not `int n`).
const ERROR_EXT: u64 = 1;

/// What is being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A CPU exception, with the error code it pushes (if any).
    Exception {
        /// The error code.
        error_code: Option<u64>,
    },
    /// An external interrupt from the virtual PIC.
    External,
    /// An `int n` or `int3` instruction of `len` bytes at the guest's
    /// `rip`: the gate's DPL must allow the caller, and the handler returns
    /// after the instruction (a fault while delivering it points at it).
    Software {
        /// The instruction's length.
        len: u8,
    },
}

/// Why an event could not be delivered. Returned by [`deliver`] only for
/// the first failure of a chain that ended in a triple fault (or outside
/// RAM): the report names where it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The vector is beyond the IDT limit, or its gate is not an interrupt
    /// or trap gate (#GP).
    NoGate(u8),
    /// The gate's handler address is not canonical (#GP).
    BadHandler(u8),
    /// The vector's gate is not present (#NP).
    GateNotPresent(u8),
    /// An `int n` named a gate whose DPL is below the caller's CPL (#GP).
    Privilege(u8),
    /// The IDT, the TSS or the new stack could not be accessed (#PF).
    Memory(VirtFault),
    /// The gate asks for a stack from a TSS, but no TSS was loaded (`ltr`)
    /// (#TS).
    NoTss(u8),
    /// The stack the frame would be pushed on is not canonical (#SS).
    BadStack(u8),
    /// The TSS slot of the stack pointer (RSP0 or the gate's IST) is beyond
    /// the TSS limit (#TS).
    TssLimit(u8),
}

impl core::fmt::Display for InjectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InjectError::NoGate(v) => write!(f, "its IDT has no usable gate for vector {v:#x}"),
            InjectError::GateNotPresent(v) => write!(f, "its IDT gate for vector {v:#x} is not present"),
            InjectError::BadHandler(v) => write!(f, "its IDT gate for vector {v:#x} points to a non-canonical handler"),
            InjectError::Privilege(v) => write!(f, "`int {v:#x}` names a gate its caller may not use"),
            InjectError::Memory(VirtFault::PageFault { va, error_code }) => write!(
                f,
                "the IDT, TSS or kernel stack is not accessible (#PF at {va:#x}, error code {error_code:#x})"
            ),
            InjectError::Memory(VirtFault::NotRam(n)) => write!(f, "the IDT, TSS or kernel stack is not in RAM ({n})"),
            InjectError::Memory(VirtFault::NonCanonical { va }) => {
                write!(f, "the IDT, TSS or kernel stack is at a non-canonical address ({va:#x})")
            }
            InjectError::NoTss(v) => write!(f, "vector {v:#x} needs a stack from the TSS, but no TSS is loaded"),
            InjectError::BadStack(v) => write!(f, "the stack for vector {v:#x} is not canonical"),
            InjectError::TssLimit(v) => write!(f, "the TSS slot of the stack for vector {v:#x} is beyond the TSS limit"),
        }
    }
}

/// An exception raised while delivering another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Raised {
    vector: u8,
    error_code: u64,
    /// For a #PF, the address (the guest's CR2).
    cr2: Option<u64>,
}

impl InjectError {
    /// The exception a real CPU raises for this failure while delivering an
    /// event of `kind`; `None` for what no real machine has (a table
    /// outside RAM), which stops the domain at once.
    fn raised(self, kind: EventKind, tr: u16) -> Option<Raised> {
        let ext = if matches!(kind, EventKind::Software { .. }) { 0 } else { ERROR_EXT };
        let gate = |v: u8| u64::from(v) * 8 + ERROR_IDT + ext;
        let (vector, error_code, cr2) = match self {
            InjectError::NoGate(v) => (13, gate(v), None),
            InjectError::GateNotPresent(v) => (11, gate(v), None),
            InjectError::BadHandler(_) => (13, ext, None),
            InjectError::Privilege(v) => (13, u64::from(v) * 8 + ERROR_IDT, None),
            InjectError::NoTss(_) | InjectError::TssLimit(_) => (10, u64::from(tr & !3) + ext, None),
            InjectError::BadStack(_) => (12, ext, None),
            InjectError::Memory(VirtFault::PageFault { va, error_code }) => (PF, error_code, Some(va)),
            InjectError::Memory(VirtFault::NonCanonical { .. }) => (13, ext, None),
            InjectError::Memory(VirtFault::NotRam(_)) => return None,
        };
        Some(Raised { vector, error_code, cr2 })
    }
}

/// How an exception combines with one raised while delivering it (Intel
/// SDM vol. 3, Table 6-4): interrupts, `int n` and most exceptions are
/// benign; #DE, #TS, #NP, #SS and #GP are contributory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
    DoubleFault,
}

fn class(vector: u8, kind: EventKind) -> Class {
    match (vector, kind) {
        (_, EventKind::External | EventKind::Software { .. }) => Class::Benign,
        (0 | 10 | 11 | 12 | 13, _) => Class::Contributory,
        (PF, _) => Class::PageFault,
        (DF, _) => Class::DoubleFault,
        _ => Class::Benign,
    }
}

/// One IDT gate, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Handler address.
    pub offset: u64,
    /// Code selector to run it with.
    pub selector: u16,
    /// IST slot (0: none).
    pub ist: u8,
    /// An interrupt gate (clears IF), else a trap gate.
    pub interrupt: bool,
    /// Lowest privilege allowed to reach it with `int n`.
    pub dpl: u8,
}

/// Reads the gate of `vector` from the guest's IDT: a present interrupt or
/// trap gate to a canonical handler.
pub fn read_gate<M: MachineMemory>(cpu: &VirtualCpu, mem: &GuestVirt<'_, M>, vector: u8) -> Result<Gate, InjectError> {
    let (gate, present) = read_descriptor(cpu, mem, vector)?;
    usable(gate, present, vector)
}

/// The IDT descriptor of `vector` if it is an interrupt or trap gate within
/// the IDT limit (#GP otherwise), and whether it is present. The CPU checks
/// the caller's privilege for `int n` between this and the rest
/// ([`usable`]; SDM vol. 2, INT n, IA-32e mode).
fn read_descriptor<M: MachineMemory>(cpu: &VirtualCpu, mem: &GuestVirt<'_, M>, vector: u8) -> Result<(Gate, bool), InjectError> {
    let at = u64::from(vector) * 16;
    if at + 15 > u64::from(cpu.idtr.limit) {
        return Err(InjectError::NoGate(vector));
    }
    let mut raw = [0u8; 16];
    mem.read(cpu.idtr.base.wrapping_add(at), &mut raw, false).map_err(InjectError::Memory)?;
    let attributes = raw[5];
    let kind = attributes & 0x0f;
    if !(kind == 0x0e || kind == 0x0f) {
        return Err(InjectError::NoGate(vector));
    }
    let offset = u64::from(u16::from_le_bytes([raw[0], raw[1]]))
        | (u64::from(u16::from_le_bytes([raw[6], raw[7]])) << 16)
        | (u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]])) << 32);
    let gate = Gate {
        offset,
        selector: u16::from_le_bytes([raw[2], raw[3]]),
        ist: raw[4] & 7,
        interrupt: kind == 0x0e,
        dpl: (attributes >> 5) & 3,
    };
    Ok((gate, attributes & 0x80 != 0))
}

/// The checks after the privilege check: the gate is present (#NP) and its
/// handler canonical (#GP).
fn usable(gate: Gate, present: bool, vector: u8) -> Result<Gate, InjectError> {
    if !present {
        return Err(InjectError::GateNotPresent(vector));
    }
    if !super::cpu::canonical(gate.offset) {
        // The CPU cannot jump there (#GP), and the hypervisor's `iretq` to
        // it would fault in ring 0.
        return Err(InjectError::BadHandler(vector));
    }
    Ok(gate)
}

/// Delivers `vector` to the guest whose registers are `regs` (`rip` is
/// where the handler's `iretq` must return, or for [`EventKind::Software`]
/// the `int` instruction itself), and, as a real CPU does, whatever that
/// delivery raises in turn (see the module's text; a #PF raised on the way
/// loads CR2). Returns whether the guest's privilege level changed (user to
/// kernel), which means the hypervisor must switch to the kernel's shadow
/// tables. An error means a real CPU would have shut down (or the IDT,
/// TSS or stack is outside RAM); nothing was delivered.
pub fn deliver<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    vector: u8,
    kind: EventKind,
) -> Result<bool, InjectError> {
    // The CPU reaches the IDT, the TSS and the new stack as the kernel
    // (so a #PF on the way has U/S clear in its error code).
    mem.user = false;
    let (mut vector, mut kind) = (vector, kind);
    let mut first = None;
    // A chain is at most: benign, contributory, #PF, #DF (Table 6-5).
    for _ in 0..5 {
        let failure = match deliver_once(cpu, regs, mem, vector, kind) {
            Ok(changed) => return Ok(changed),
            Err(e) => e,
        };
        let root = *first.get_or_insert(failure);
        let Some(raised) = failure.raised(kind, cpu.tr) else { return Err(root) };
        if let Some(va) = raised.cr2 {
            cpu.cr2 = va;
        }
        let double = match (class(vector, kind), class(raised.vector, EventKind::Exception { error_code: None })) {
            (Class::DoubleFault, _) => return Err(root), // shutdown: a triple fault
            (Class::Contributory, Class::Contributory) | (Class::PageFault, Class::Contributory | Class::PageFault) => true,
            _ => false,
        };
        (vector, kind) = if double {
            (DF, EventKind::Exception { error_code: Some(0) })
        } else {
            (raised.vector, EventKind::Exception { error_code: Some(raised.error_code) })
        };
    }
    Err(first.unwrap_or(InjectError::NoGate(vector)))
}

/// One attempt: delivers `vector` or says what went wrong, changing
/// nothing then.
fn deliver_once<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    vector: u8,
    kind: EventKind,
) -> Result<bool, InjectError> {
    let (gate, present) = read_descriptor(cpu, mem, vector)?;
    if matches!(kind, EventKind::Software { .. }) && gate.dpl < cpu.cpl {
        return Err(InjectError::Privilege(vector));
    }
    let gate = usable(gate, present, vector)?;
    let return_rip = match kind {
        EventKind::Software { len } => regs.rip.wrapping_add(u64::from(len)),
        _ => regs.rip,
    };
    let to_kernel = cpu.cpl != 0;
    let stack = if gate.ist != 0 || to_kernel {
        if cpu.tss_base == 0 {
            return Err(InjectError::NoTss(vector));
        }
        let slot = if gate.ist != 0 { 0x24 + 8 * (u64::from(gate.ist) - 1) } else { 4 };
        if slot + 7 > u64::from(cpu.tss_limit) {
            return Err(InjectError::TssLimit(vector));
        }
        mem.read_u64(cpu.tss_base.wrapping_add(slot)).map_err(InjectError::Memory)?
    } else {
        regs.rsp
    };
    let mut frame = [0u64; 6];
    frame[1] = return_rip;
    frame[2] = u64::from(cpu.cs);
    frame[3] = cpu.visible_rflags(regs.rflags);
    frame[4] = regs.rsp;
    frame[5] = u64::from(cpu.ss);
    let words: &[u64] = match kind {
        EventKind::Exception { error_code: Some(code) } => {
            frame[0] = code;
            &frame
        }
        _ => &frame[1..],
    };
    let new_rsp = (stack & !0xf).wrapping_sub(words.len() as u64 * 8);
    let last_byte = new_rsp.wrapping_add(words.len() as u64 * 8 - 1);
    if !super::cpu::canonical(new_rsp) || !super::cpu::canonical(last_byte) {
        return Err(InjectError::BadStack(vector));
    }
    let mut bytes = [0u8; 48];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    mem.write(new_rsp, &bytes[..words.len() * 8]).map_err(InjectError::Memory)?;
    regs.rsp = new_rsp;
    regs.rip = gate.offset;
    regs.rflags &= !CLEARED_ON_DELIVERY;
    if gate.interrupt {
        cpu.interrupts = false;
    }
    if to_kernel {
        cpu.ss = 0; // a privilege change loads a null SS in long mode
    }
    cpu.cs = gate.selector;
    cpu.cpl = 0;
    Ok(to_kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::cpu::TableRegister;
    use crate::emulated::guest_phys::GuestPhys;
    use crate::emulated::guest_virt::tests::identity_guest;

    const IDT: u64 = 0x8000;
    const TSS: u64 = 0x9000;

    fn gate(offset: u64, ist: u8, kind: u8, dpl: u8) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(offset as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x08u16.to_le_bytes());
        g[4] = ist;
        g[5] = 0x80 | (dpl << 5) | kind;
        g[6..8].copy_from_slice(&((offset >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((offset >> 32) as u32).to_le_bytes());
        g
    }

    fn setup(mem: &mut GuestVirt<'_, crate::machine_memory::TestMemory>) -> VirtualCpu {
        let mut cpu = VirtualCpu::at_boot(0x1000, TableRegister::default());
        cpu.idtr = TableRegister { base: IDT, limit: 256 * 16 - 1 };
        (cpu.tss_base, cpu.tss_limit) = (TSS, 0x67);
        mem.write(IDT + 14 * 16, &gate(0x20_1000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 0x20 * 16, &gate(0x20_2000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 0x80 * 16, &gate(0x20_3000, 0, 0x0f, 3)).unwrap();
        mem.write(IDT + 0x81 * 16, &gate(0x20_4000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 8 * 16, &gate(0x20_5000, 1, 0x0e, 0)).unwrap();
        mem.write(TSS + 4, &0x1_0000u64.to_le_bytes()).unwrap(); // RSP0
        mem.write(TSS + 0x24, &0x1_8000u64.to_le_bytes()).unwrap(); // IST1
        cpu
    }

    fn stack_words<M: MachineMemory>(mem: &GuestVirt<'_, M>, rsp: u64, n: usize) -> alloc::vec::Vec<u64> {
        (0..n).map(|i| mem.read_u64(rsp + 8 * i as u64).unwrap()).collect()
    }

    #[test]
    fn a_user_page_fault_switches_to_rsp0_and_pushes_the_error_code() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        (cpu.cpl, cpu.cs, cpu.ss, cpu.interrupts) = (3, 0x23, 0x1b, true);
        let mut regs = GuestRegs { rip: 0x8000_0000, rsp: 0x7777, rflags: 0x202 | 0x100, ..Default::default() };
        let changed = deliver(&mut cpu, &mut regs, &mut mem, 14, EventKind::Exception { error_code: Some(6) }).unwrap();
        assert!(changed);
        assert_eq!((regs.rip, regs.rsp), (0x20_1000, 0x1_0000 - 48));
        assert_eq!(stack_words(&mem, regs.rsp, 6), [6, 0x8000_0000, 0x23, 0x302, 0x7777, 0x1b]);
        assert_eq!((cpu.cpl, cpu.cs, cpu.ss, cpu.interrupts), (0, 0x08, 0, false));
        assert_eq!(regs.rflags & 0x100, 0, "TF cleared");
        assert_eq!(regs.rflags & 0x200, 0x200, "the real IF stays on");
    }

    #[test]
    fn a_kernel_interrupt_stays_on_its_aligned_stack_and_shows_the_virtual_if() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        cpu.interrupts = true;
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_2348, rflags: 0x246, ..Default::default() };
        assert!(!deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External).unwrap());
        assert_eq!(regs.rsp, 0x1_2340 - 40);
        assert_eq!(stack_words(&mem, regs.rsp, 5), [0x20_0010, 0x08, 0x246, 0x1_2348, 0x10]);
        assert!(!cpu.interrupts);
    }

    #[test]
    fn ist_gates_and_trap_gates() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        let mut regs = GuestRegs { rsp: 0x1_2340, rflags: 0x202, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 8, EventKind::Exception { error_code: Some(0) }).unwrap();
        assert_eq!(regs.rsp, 0x1_8000 - 48);
        cpu.interrupts = true;
        (cpu.cpl, cpu.cs) = (3, 0x23);
        deliver(&mut cpu, &mut regs, &mut mem, 0x80, EventKind::Software { len: 2 }).unwrap();
        assert_eq!(regs.rip, 0x20_3000);
        assert!(cpu.interrupts, "a trap gate leaves IF alone");
    }

    #[test]
    fn int_to_a_kernel_only_gate_becomes_a_general_protection_fault_at_the_int() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 13 * 16, &gate(0x20_6000, 0, 0x0e, 0)).unwrap();
        (cpu.cpl, cpu.cs) = (3, 0x23);
        let mut regs = GuestRegs { rip: 0x7000, rsp: 0x5000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x81, EventKind::Software { len: 2 }).unwrap();
        assert_eq!(regs.rip, 0x20_6000);
        assert_eq!(stack_words(&mem, regs.rsp, 2), [0x81 * 8 + 2, 0x7000], "names the gate; points at the int");
        // An allowed one returns after the instruction.
        (cpu.cpl, cpu.cs) = (3, 0x23);
        regs = GuestRegs { rip: 0x7000, rsp: 0x5000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x80, EventKind::Software { len: 2 }).unwrap();
        assert_eq!(mem.read_u64(regs.rsp).unwrap(), 0x7002);
    }

    /// Review item: a delivery that faulted stopped the domain, where a real
    /// CPU raises the fault (then #DF, then shuts down) through the IDT.
    #[test]
    fn a_missing_gate_is_a_general_protection_fault_then_a_double_fault() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_0000, ..Default::default() };
        // No gate 0x30 and no #GP gate: #GP on #GP is a double fault (IST 1).
        deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External).unwrap();
        assert_eq!((regs.rip, regs.rsp), (0x20_5000, 0x1_8000 - 48));
        assert_eq!(stack_words(&mem, regs.rsp, 2), [0, 0x20_0010]);
        // With a #GP gate, the #GP names the missing gate (IDT and EXT bits).
        mem.write(IDT + 13 * 16, &gate(0x20_6000, 0, 0x0e, 0)).unwrap();
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_0000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External).unwrap();
        assert_eq!(regs.rip, 0x20_6000);
        assert_eq!(mem.read_u64(regs.rsp).unwrap(), 0x30 * 8 + 3);
        // A gate that is there but not present is #NP (no gate: then #DF).
        mem.write(IDT + 0x30 * 16, &gate(0x20_7000, 0, 0x0e, 0).map(|b| b & 0x7f)).unwrap();
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_0000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External).unwrap();
        assert_eq!(regs.rip, 0x20_5000, "#NP has no gate: double fault");
    }

    /// Review item: a #PF raised while pushing the frame (a kernel access
    /// even from user mode) carries the address in CR2 and U/S clear.
    #[test]
    fn a_page_fault_on_the_kernel_stack_is_delivered_with_cr2_and_a_supervisor_error_code() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 14 * 16, &gate(0x20_1000, 1, 0x0e, 0)).unwrap(); // #PF on IST 1
        mem.write(TSS + 4, &0x40_0000u64.to_le_bytes()).unwrap(); // RSP0: not mapped
        (cpu.cpl, cpu.cs, cpu.ss, cpu.interrupts) = (3, 0x23, 0x1b, true);
        let mut regs = GuestRegs { rip: 0x8000, rsp: 0x9000, rflags: 0x202, ..Default::default() };
        assert!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External).unwrap());
        assert_eq!((regs.rip, regs.rsp), (0x20_1000, 0x1_8000 - 48));
        assert_eq!(cpu.cr2, 0x40_0000 - 40, "where the push failed");
        assert_eq!(stack_words(&mem, regs.rsp, 6), [0b010, 0x8000, 0x23, 0x202, 0x9000, 0x1b], "write, supervisor");
        assert_eq!(cpu.cpl, 0);
    }

    /// Review item: `int n` from user mode checked the gate's presence and
    /// handler before its DPL, so a kernel-only gate that is not present
    /// (or points nowhere) gave #NP (or #GP(0)) where a real CPU gives
    /// #GP(vector * 8 + 2): the privilege check comes first (SDM vol. 2,
    /// INT n, IA-32e mode).
    #[test]
    fn int_to_a_kernel_only_gate_is_refused_before_its_presence_or_handler_is_checked() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 13 * 16, &gate(0x20_6000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 11 * 16, &gate(0x20_7000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 0x40 * 16, &gate(0x20_8000, 0, 0x0e, 0).map(|b| b & 0x7f)).unwrap(); // not present
        mem.write(IDT + 0x41 * 16, &gate(0x8000_0000_0000, 0, 0x0e, 0)).unwrap(); // non-canonical
        for vector in [0x40u8, 0x41] {
            (cpu.cpl, cpu.cs) = (3, 0x23);
            let mut regs = GuestRegs { rip: 0x7000, rsp: 0x5000, ..Default::default() };
            deliver(&mut cpu, &mut regs, &mut mem, vector, EventKind::Software { len: 2 }).unwrap();
            assert_eq!(regs.rip, 0x20_6000, "vector {vector:#x}: #GP");
            assert_eq!(mem.read_u64(regs.rsp).unwrap(), u64::from(vector) * 8 + 2, "vector {vector:#x}");
        }
        // From the kernel (DPL allows it) the gate's own faults remain.
        let mut regs = GuestRegs { rip: 0x7000, rsp: 0x5000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x40, EventKind::Software { len: 2 }).unwrap();
        assert_eq!(regs.rip, 0x20_7000, "#NP");
        assert_eq!(mem.read_u64(regs.rsp).unwrap(), 0x40 * 8 + 2);
    }

    /// Review item: the stack pointer a delivery takes from the TSS (RSP0
    /// or an IST slot) was read whatever the TSS limit (set by `ltr`); a
    /// real CPU raises #TS(TSS selector + EXT) when the eight bytes are not
    /// within it (SDM vol. 2, INT n, IA-32e mode).
    #[test]
    fn a_stack_slot_beyond_the_tss_limit_is_an_invalid_tss_fault() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 10 * 16, &gate(0x20_9000, 0, 0x0e, 0)).unwrap();
        (cpu.tr, cpu.tss_limit) = (0x28, 0x2b); // RSP0 and IST1 fit, IST2 does not
        mem.write(IDT + 0x20 * 16, &gate(0x20_2000, 2, 0x0e, 0)).unwrap();
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_2340, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External).unwrap();
        assert_eq!(regs.rip, 0x20_9000, "#TS");
        assert_eq!(stack_words(&mem, regs.rsp, 2), [0x28 + 1, 0x20_0010], "names the TSS, EXT set");
        // From user mode with RSP0 beyond the limit, the #TS needs RSP0
        // too, and the #DF's IST 1 is beyond it as well: a triple fault.
        (cpu.cpl, cpu.cs, cpu.ss, cpu.tss_limit) = (3, 0x23, 0x1b, 0x0a);
        let mut regs = GuestRegs { rip: 0x7000, rsp: 0x5000, ..Default::default() };
        let result = deliver(&mut cpu, &mut regs, &mut mem, 0x81, EventKind::External);
        assert_eq!(result, Err(InjectError::TssLimit(0x81)));
        cpu.tss_limit = 0x67;
        assert!(deliver(&mut cpu, &mut regs, &mut mem, 0x81, EventKind::External).unwrap());
        assert_eq!(regs.rip, 0x20_4000);
    }

    /// The longest chain Table 6-5 allows: an interrupt whose gate is
    /// missing (#GP), the #GP's stack faults (#PF, handled serially after a
    /// contributory fault), the #PF's stack faults too (#PF on #PF: #DF),
    /// and the #DF is delivered. CR2 is the last fault's address.
    #[test]
    fn the_longest_chain_ends_in_a_delivered_double_fault() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 13 * 16, &gate(0x20_6000, 2, 0x0e, 0)).unwrap();
        mem.write(IDT + 14 * 16, &gate(0x20_1000, 3, 0x0e, 0)).unwrap();
        mem.write(TSS + 0x2c, &0x40_0000u64.to_le_bytes()).unwrap(); // IST2: not mapped
        mem.write(TSS + 0x34, &0x50_0000u64.to_le_bytes()).unwrap(); // IST3: not mapped
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_2340, rflags: 0x202, ..Default::default() };
        assert!(!deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External).unwrap());
        assert_eq!((regs.rip, regs.rsp), (0x20_5000, 0x1_8000 - 48));
        assert_eq!(stack_words(&mem, regs.rsp, 3), [0, 0x20_0010, 0x08]);
        assert_eq!(cpu.cr2, 0x50_0000 - 48);
        // Without the #DF's stack as well: a triple fault naming the first failure.
        mem.write(TSS + 0x24, &0x60_0000u64.to_le_bytes()).unwrap();
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_2340, rflags: 0x202, ..Default::default() };
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External), Err(InjectError::NoGate(0x30)));
    }

    #[test]
    fn what_would_triple_fault_is_an_error_naming_the_first_failure() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 8 * 16, &[0; 16]).unwrap(); // no #DF gate
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_0000, ..Default::default() };
        let before = (cpu.clone(), regs);
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External), Err(InjectError::NoGate(0x30)));
        assert_eq!((cpu.clone(), regs), before, "nothing delivered");
        cpu.idtr.limit = 0x20 * 16;
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::NoGate(0x20)));
        cpu.idtr.limit = 0xfff;
        regs.rsp = 0x80_0000; // beyond RAM: no real machine has that
        assert!(matches!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::Memory(_))));
        (cpu.cpl, cpu.tss_base) = (3, 0);
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::NoTss(0x20)));
    }
}
