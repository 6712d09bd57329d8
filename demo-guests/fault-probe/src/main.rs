//! `fault-probe`: an unmodified kernel that makes the CPU fault on purpose
//! and prints what its own handlers received.
//!
//! The idea shown: a kernel relies on the exceptions its instructions
//! raise (an exception table turns a #GP from a bad pointer into an error,
//! a probe of a feature expects its #GP). Under trap-and-emulate the
//! hypervisor carries out the privileged instructions itself, and sees the
//! faults of the others first; either way the kernel's handler must get
//! exactly what a CPU raises in ring 0: for a non-canonical memory operand
//! #GP(0), or #SS(0) through the stack segment, never a page fault; for a
//! `movaps` that breaks its alignment rule #GP(0); for a selector that
//! names no LDT or no free TSS, #GP with the selector. Each probe runs one
//! instruction in a net (its assembly arms [`RESUME`] with the address
//! after it; the handler notes the exception and resumes there) and
//! prints one line, `fault-probe: <instruction>, <why>: <what the handler
//! got>`. Booted natively by the boot shim the lines are the reference
//! (scenario `fault-probe-native`); under trap-and-emulate the same lines
//! must appear (`fault-probe-emulated`). The kernel exits 0 once every
//! line is printed, whatever they say: the scenarios check them.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use bare_rt::{idt, println, BootInfo, TrapFrame};
use x86_64::PrivilegeLevel;

bare_rt::entry!(main);

/// Bit 47 set, 63..48 clear: the first non-canonical address.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// Where to resume if the running probe faults; 0 outside a probe.
static RESUME: AtomicU64 = AtomicU64::new(0);
/// The vector the running probe faulted with, or [`NO_FAULT`].
static VECTOR: AtomicU64 = AtomicU64::new(NO_FAULT);
/// Its error code.
static ERROR_CODE: AtomicU64 = AtomicU64::new(0);
const NO_FAULT: u64 = u64::MAX;

/// The exceptions a probe may raise: #NP, #SS, #GP, #PF.
const VECTORS: [u8; 4] = [11, 12, 13, 14];

/// Inside a probe: note the exception, resume after the instruction.
/// Anywhere else: the runtime's report, and the end.
fn on_fault(frame: &mut TrapFrame) {
    let resume = RESUME.swap(0, Ordering::Relaxed);
    if resume == 0 {
        bare_rt::trap::unhandled(frame);
    }
    VECTOR.store(frame.vector, Ordering::Relaxed);
    ERROR_CODE.store(frame.error_code, Ordering::Relaxed);
    frame.rip = resume;
}

/// `asm!` for one probe: arms the net (the address after the templates in
/// [`RESUME`]), runs the templates, resumes there, then runs the `then`
/// templates (which undo what the first ones set up). The templates may
/// use the caller's operands, each followed by a comma.
macro_rules! probe {
    ($what:literal, $why:literal, $($template:literal),+ ; then $($then:literal),+ ; $($operands:tt)*) => {{
        VECTOR.store(NO_FAULT, Ordering::Relaxed);
        // SAFETY: each probe's instruction touches only the registers it
        // names and memory the CPU refuses to access (the fault is the
        // point) or the probe's own buffer; the net is armed first, so a
        // fault resumes after the instruction, with every register as the
        // templates leave them before it.
        unsafe {
            asm!(
                "lea {t}, [rip + 2f]",
                "mov qword ptr [{resume}], {t}",
                $($template,)+
                "2:",
                $($then,)+
                $($operands)*
                t = out(reg) _,
                resume = in(reg) RESUME.as_ptr(),
            )
        };
        RESUME.store(0, Ordering::Relaxed);
        report($what, $why);
    }};
    ($what:literal, $why:literal, $($template:literal),+ ; $($operands:tt)*) => {
        probe!($what, $why, $($template),+ ; then "nop" ; $($operands)*)
    };
}

/// Prints one probe's line.
fn report(what: &str, why: &str) {
    match VECTOR.load(Ordering::Relaxed) {
        NO_FAULT => println!("fault-probe: {what}, {why}: no fault"),
        vector => {
            let name = match vector {
                11 => "#NP",
                12 => "#SS",
                13 => "#GP",
                _ => "#PF",
            };
            println!("fault-probe: {what}, {why}: {name}({:#x})", ERROR_CODE.load(Ordering::Relaxed));
        }
    }
}

/// 16-byte aligned memory for `movaps`.
#[repr(C, align(16))]
struct Aligned([u8; 32]);

fn main(_boot: &'static BootInfo) -> u8 {
    for vector in VECTORS {
        idt::set_handler(vector, on_fault, PrivilegeLevel::Ring0);
    }
    // Privileged instructions, which trap-and-emulate carries out itself.
    probe!("sldt [rdi]", "rdi non-canonical", "sldt word ptr [rdi]"; in("rdi") NON_CANONICAL,);
    probe!(
        "sldt [rbp]", "rbp non-canonical",
        "push rbp", "mov rbp, {a}", "sldt word ptr [rbp]"; then "pop rbp";
        a = in(reg) NON_CANONICAL,
    );
    probe!("lidt [rdi]", "rdi non-canonical", "lidt [rdi]"; in("rdi") NON_CANONICAL,);
    probe!("mov ds, [rdi]", "rdi non-canonical", "mov ds, word ptr [rdi]"; in("rdi") NON_CANONICAL,);
    probe!("invlpg [rdi]", "rdi non-canonical", "invlpg [rdi]"; in("rdi") NON_CANONICAL,);
    probe!("lldt ax", "ax = 0x40, beyond the GDT", "lldt ax"; in("ax") 0x40u16,);
    probe!("lldt ax", "ax = 0x10, a data segment", "lldt ax"; in("ax") 0x10u16,);
    probe!("ltr ax", "ax = 0x30, the TSS already loaded (busy)", "ltr ax"; in("ax") 0x30u16,);
    // Ordinary instructions, whose faults do not depend on privilege.
    probe!("mov [rdi], rax", "rdi non-canonical", "mov qword ptr [rdi], rax"; in("rdi") NON_CANONICAL, in("rax") 1u64,);
    probe!("mov rax, [rdi]", "rdi non-canonical", "mov rax, qword ptr [rdi]"; in("rdi") NON_CANONICAL, out("rax") _,);
    probe!(
        "mov [rbp], rax", "rbp non-canonical",
        "push rbp", "mov rbp, {a}", "mov qword ptr [rbp], rax"; then "pop rbp";
        a = in(reg) NON_CANONICAL, in("rax") 1u64,
    );
    let mut buffer = Aligned([0; 32]);
    probe!(
        "movaps [rdi], xmm0", "rdi 8 bytes past a 16-byte boundary",
        "movaps xmmword ptr [rdi], xmm0";
        in("rdi") buffer.0.as_mut_ptr().wrapping_add(8), out("xmm0") _,
    );
    println!("fault-probe: done");
    0
}
