//! `single-step`: a guest kernel that single-steps itself and a user
//! process, as a debugger would.
//!
//! The idea shown: a paravirtualized kernel gets the CPU's single-step
//! semantics (TF) as if it ran on hardware, one debug exception (#DB) after
//! every instruction, delivered with `rip` at the next one, although its
//! "instructions" include hypercalls and its traps are bounced through the
//! hypervisor (see `hypercall_abi::trap`, "Single-stepping"). Each sequence
//! below sets TF with `popf`, runs a few instructions with it, and clears it
//! with `popf`; the handler records every trap, and the kernel compares
//! them with the labels of the sequence:
//!
//! 1. kernel mode: a `nop`, a hypercall (`abi_version`, the slow lane), the
//!    `null` hypercall (the fast lane), a `ud2` whose handler returns past
//!    it (an `iret` to a frame with TF set: the instruction there runs
//!    first), and the `popf` that clears TF;
//! 2. the benchmark floor: a `syscall` on the floor path (the bare
//!    `sysretq`), then `bench_floor` itself made with TF set, then a
//!    hypercall, which must be a real one again;
//! 3. user mode: plain instructions and a system call made with TF set
//!    (delivered with TF clear; the kernel sees the user's TF and notes
//!    it), then the `iret` back to a frame with TF.
//!
//! It prints one line per sequence and exits 0 if every trap was where it
//! belongs (1 and the list of traps otherwise).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use parvus_guest_sdk::frames::PageFrame;
use parvus_guest_sdk::hypercall_abi::{decode_result, Hypercall, ABI_VERSION};
use parvus_guest_sdk::paging::{AddressSpace, PteFlags};
use parvus_guest_sdk::trap::{self, vector, Trap, UserContext};
use parvus_guest_sdk::{hypercall, println, StartInfo};
use spin::Mutex;

/// The user process's stack (one page below this).
const USER_STACK_TOP: u64 = 0x80_0010_0000;
/// User system call: "I made this call with TF set" (the kernel notes it).
const SYS_NOTE: u64 = 1;
/// User system call: the sequence is over.
const SYS_DONE: u64 = 2;

/// What the handler saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A single-step trap (#DB with the SINGLE_STEP cause).
    Step,
    /// An invalid opcode (#UD).
    InvalidOpcode,
    /// A user system call; whether the user ran it with TF set.
    Syscall { stepping: bool },
}

/// One trap: what, where (`frame.rip`), and `rax` then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Event {
    kind: Kind,
    rip: u64,
    rax: u64,
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

// The three sequences. Every label after an instruction is exported, so
// the kernel knows where each trap must land.
core::arch::global_asm!(
    r#"
    .pushsection .text.single_step, "ax", @progbits
    .globl step_kernel
step_kernel:
    push rbx
    pushfq
    or qword ptr [rsp], 0x100
    popfq                          /* sets TF: no trap after this one */
    nop
    .globl step_k2
step_k2:
    mov eax, {abi_version}
    .globl step_k3
step_k3:
    syscall                        /* a hypercall with TF set */
    .globl step_k4
step_k4:
    mov rbx, rax
    .globl step_k5
step_k5:
    xor eax, eax
    .globl step_k6
step_k6:
    syscall                        /* null: the fast lane */
    .globl step_k7
step_k7:
    ud2                            /* #UD; the handler resumes after it */
    .globl step_k8
step_k8:
    nop                            /* after an iret to a frame with TF */
    .globl step_k9
step_k9:
    pushfq
    .globl step_k10
step_k10:
    and qword ptr [rsp], ~0x100
    .globl step_k11
step_k11:
    popfq                          /* clears TF: it traps once more */
    .globl step_k12
step_k12:
    mov rax, rbx
    pop rbx
    ret

    .globl step_floor
step_floor:
    mov eax, {bench_floor}
    syscall                        /* on the floor path, TF still clear */
    mov eax, {abi_version}
    pushfq
    or qword ptr [rsp], 0x100
    popfq                          /* any trap ends the floor: the syscall */
    syscall                        /* is the first; the floor's sysretq: rax stays */
    .globl step_f3
step_f3:
    mov eax, {bench_floor}
    .globl step_f4
step_f4:
    syscall                        /* bench_floor itself, with TF set */
    .globl step_f5
step_f5:
    mov eax, {abi_version}
    .globl step_f6
step_f6:
    syscall                        /* a real hypercall again */
    .globl step_f7
step_f7:
    pushfq
    .globl step_f8
step_f8:
    and qword ptr [rsp], ~0x100
    .globl step_f9
step_f9:
    popfq
    .globl step_f10
step_f10:
    ret
    .popsection

    .pushsection .user_text, "ax", @progbits
    .globl step_user
step_user:
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    nop
    .globl step_u2
step_u2:
    mov eax, 5
    .globl step_u3
step_u3:
    add eax, 1
    .globl step_u4
step_u4:
    mov eax, {sys_note}
    .globl step_u5
step_u5:
    syscall                        /* a system call with TF set */
    .globl step_u6
step_u6:
    nop                            /* after the kernel's iret, TF set */
    .globl step_u7
step_u7:
    pushfq
    .globl step_u8
step_u8:
    and qword ptr [rsp], ~0x100
    .globl step_u9
step_u9:
    popfq
    .globl step_u10
step_u10:
    mov eax, {sys_done}
    syscall
    ud2
    .popsection
"#,
    abi_version = const Hypercall::AbiVersion as u64,
    bench_floor = const Hypercall::BenchFloor as u64,
    sys_note = const SYS_NOTE,
    sys_done = const SYS_DONE,
);

/// Declares the sequences' labels and `label(name)`, their addresses.
macro_rules! labels {
    ($($name:ident),* $(,)?) => {
        extern "C" {
            $(static $name: u8;)*
        }
        /// The address of a label of the sequences.
        fn label(name: &str) -> u64 {
            match name {
                $(stringify!($name) => (&raw const $name) as u64,)*
                _ => unreachable!("no label {name}"),
            }
        }
    };
}

labels!(
    step_k2, step_k3, step_k4, step_k5, step_k6, step_k7, step_k8, step_k9, step_k10, step_k11, step_k12,
    step_f3, step_f4, step_f5, step_f6, step_f7, step_f8, step_f9, step_f10,
    step_u2, step_u3, step_u4, step_u5, step_u6, step_u7, step_u8, step_u9, step_u10,
);

extern "C" {
    fn step_kernel() -> u64;
    fn step_floor();
    fn step_user() -> !;
}

parvus_guest_sdk::entry!(main);

fn main(_start: &'static StartInfo) -> u64 {
    trap::install(on_trap).expect("registering the trap handler");
    let version = encoded(u64::from(ABI_VERSION));

    // SAFETY: the sequence saves what it changes (rbx, the flags) and
    // clobbers only rax, rcx, r11 (the hypercalls), as a call may.
    let result = unsafe { step_kernel() };
    let kernel_ok = decode_result(result) == Ok(u64::from(ABI_VERSION));
    let step = |at: &'static str, rax: Option<u64>| (Kind::Step, at, rax);
    let expected = [
        step("step_k2", None),
        step("step_k3", None),
        step("step_k4", Some(version)), // after the hypercall: its result
        step("step_k5", None),
        step("step_k6", None),
        step("step_k7", Some(0)), // after null
        (Kind::InvalidOpcode, "step_k7", None),
        step("step_k9", None), // the nop after the iret ran first
        step("step_k10", None),
        step("step_k11", None),
        step("step_k12", None), // the popf that cleared TF
    ];
    let kernel_ok = check("kernel mode", &expected) && kernel_ok;

    // SAFETY: as above; the floor path leaves every register as it was.
    unsafe { step_floor() };
    let expected = [
        step("step_f3", Some(Hypercall::AbiVersion as u64)), // the floor did nothing
        step("step_f4", None),
        step("step_f5", Some(0)), // bench_floor's own result; the floor is over
        step("step_f6", None),
        step("step_f7", Some(version)), // a real hypercall
        step("step_f8", None),
        step("step_f9", None),
        step("step_f10", None),
    ];
    let floor_ok = check("benchmark floor", &expected);
    OK.store(kernel_ok && floor_ok, core::sync::atomic::Ordering::Relaxed);

    let mut space = AddressSpace::new().expect("an address space");
    space.map_user_image().expect("the user image");
    let frame = PageFrame::alloc().expect("a stack frame");
    space.map(USER_STACK_TOP - 4096, frame, PteFlags::WRITABLE | PteFlags::NO_EXECUTE).expect("the user stack");
    space.activate().expect("loading the user address space");
    core::mem::forget(space); // the process runs until the domain ends
    trap::enter_user(&UserContext::new(step_user as *const () as u64, USER_STACK_TOP))
}

/// Whether the kernel-mode sequences went as expected.
static OK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `Ok(value)` as `rax` holds it.
fn encoded(value: u64) -> u64 {
    parvus_guest_sdk::hypercall_abi::encode_result(Ok(value))
}

/// Takes the recorded events and compares them with `expected` (kind,
/// label of `rip`, `rax` if it matters); prints the verdict line.
fn check(what: &str, expected: &[(Kind, &str, Option<u64>)]) -> bool {
    let events = core::mem::take(&mut *EVENTS.lock());
    let matches = |e: &Event, (kind, at, rax): &(Kind, &str, Option<u64>)| {
        e.kind == *kind && e.rip == label(at) && rax.is_none_or(|r| e.rax == r)
    };
    let ok = events.len() == expected.len() && events.iter().zip(expected).all(|(e, x)| matches(e, x));
    let steps = events.iter().filter(|e| e.kind == Kind::Step).count();
    if ok {
        println!("single-step: {what}: {} traps, {steps} single steps, each after the instruction it followed", events.len());
    } else {
        println!("single-step: {what}: WRONG: {} traps, expected {}:", events.len(), expected.len());
        for e in &events {
            println!("  {:?} at rip {:#x} rax {:#x}", e.kind, e.rip, e.rax);
        }
        for (kind, at, _) in expected {
            println!("  expected {kind:?} at {at} ({:#x})", label(at));
        }
    }
    ok
}

/// Every trap: recorded; `ud2` skipped; the user's system calls served.
fn on_trap(trap: &mut Trap<'_>) {
    let (rip, rax) = (trap.frame.rip, trap.frame.rax);
    let record = |kind| EVENTS.lock().push(Event { kind, rip, rax });
    if trap.is_single_step() {
        record(Kind::Step);
        return;
    }
    match trap.frame.vector {
        vector::INVALID_OPCODE => {
            record(Kind::InvalidOpcode);
            trap.frame.rip += 2; // past the `ud2`, TF still set in the frame
        }
        vector::SYSCALL => match trap.syscall_args() {
            (SYS_NOTE, _) => {
                // The user's `syscall` ran with TF: its step is this
                // kernel's to report, and it does, by noting it.
                record(Kind::Syscall { stepping: trap.stepping() });
                trap.set_return(0);
            }
            (SYS_DONE, _) => finish(),
            (number, _) => panic!("single-step: unknown system call {number}"),
        },
        v => panic!("single-step: unexpected {} at rip {rip:#x}", trap::vector_name(v)),
    }
}

/// The user sequence is over: check it and end the domain.
fn finish() -> ! {
    let step = |at: &'static str| (Kind::Step, at, None);
    let expected = [
        step("step_u2"),
        step("step_u3"),
        step("step_u4"),
        step("step_u5"),
        (Kind::Syscall { stepping: true }, "step_u6", None), // the syscall: no #DB of its own
        step("step_u7"), // the nop after the kernel's iret ran first
        step("step_u8"),
        step("step_u9"),
        step("step_u10"),
    ];
    let user_ok = check("user mode", &expected);
    let ok = OK.load(core::sync::atomic::Ordering::Relaxed) && user_ok;
    println!("single-step: {}", if ok { "every trap where it belongs" } else { "FAILED" });
    hypercall::exit(if ok { 0 } else { 1 })
}
