//! The assembly between the hypervisor's trap frame and Rust.
//!
//! On entry `rsp` points at the [`TrapFrame`] and every register but `rsp`,
//! `rcx` and `r11` is as it was at the trap. The stub:
//!
//! ```text
//!   push rbx rbp rdi rsi rdx r8 r9 r10 r12 r13 r14 r15   (= Registers, then the frame)
//!   cld; rbx = rsp; rsp -= 512, aligned to 16; fxsave64 [rsp]
//!   trap_dispatch(rbx = &Registers+frame, rsp = &FpuState)
//!   fxrstor64 [rsp]; rsp = rbx; pop the registers
//!   rax = iret; syscall                                  (rsp at the frame)
//! ```
//!
//! `iret` does not come back unless it refused the frame (the handler wrote
//! a bad one); the stub then calls `iret_refused`, which panics with the error.

use core::cell::UnsafeCell;
use core::ops::Range;

use hypercall_abi::trap::{frame_flags, TrapFrame};
use hypercall_abi::{decode_result, Hypercall, HypercallError};

use super::{handler, FpuState, Registers, Trap, UserContext};

/// Size of the trap stack.
const TRAP_STACK_SIZE: usize = 32 * 1024;

/// The stack traps from user mode are delivered on.
#[repr(C, align(16))]
struct TrapStack(UnsafeCell<[u8; TRAP_STACK_SIZE]>);

// SAFETY: the stack is never accessed through Rust references, only as a
// stack (by the hypervisor and the stub) and by `enter_user`, which runs
// when no trap is being handled; a domain has one vCPU.
unsafe impl Sync for TrapStack {}

static TRAP_STACK: TrapStack = TrapStack(UnsafeCell::new([0; TRAP_STACK_SIZE]));

/// The addresses of the trap stack.
pub fn trap_stack_range() -> Range<u64> {
    let start = TRAP_STACK.0.get() as u64;
    start..start + TRAP_STACK_SIZE as u64
}

/// What the stub leaves at `rsp` for `trap_dispatch`: the registers it
/// pushed, then the frame the hypervisor pushed.
#[repr(C)]
struct SavedByStub {
    regs: Registers,
    frame: TrapFrame,
}

core::arch::global_asm!(
    ".pushsection .text.parvus_trap_entry, \"ax\", @progbits",
    ".globl __parvus_trap_entry",
    ".type __parvus_trap_entry, @function",
    ".p2align 4",
    "__parvus_trap_entry:",
    "push rbx",
    "push rbp",
    "push rdi",
    "push rsi",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "cld",
    "mov rbx, rsp",
    "sub rsp, 512",
    "and rsp, -16",
    "fxsave64 [rsp]",
    "mov rdi, rbx",
    "mov rsi, rsp",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop rbp",
    "pop rbx",
    "mov eax, {iret}",
    "syscall",
    "mov rdi, rax",
    "and rsp, -16",
    "call {refused}",
    "ud2",
    ".size __parvus_trap_entry, . - __parvus_trap_entry",
    ".popsection",
    dispatch = sym trap_dispatch,
    refused = sym iret_refused,
    iret = const Hypercall::Iret as u64,
);

extern "C" {
    /// The stub above (only its address is used).
    fn __parvus_trap_entry();
}

/// Address of the SDK's trap entry stub, for hand-written stubs that want
/// to fall back to it (jump there with `rsp` at the frame and the
/// registers as at the trap).
pub fn entry_address() -> u64 {
    __parvus_trap_entry as *const () as u64
}

/// Called by the stub with the saved state.
///
/// # Safety
///
/// `saved` and `fpu` point at what the stub just saved on the stack: valid,
/// aligned, and used by nothing else until this returns.
unsafe extern "C" fn trap_dispatch(saved: *mut SavedByStub, fpu: *mut FpuState) {
    // SAFETY: the function's contract: both point at live stack memory of
    // the stub, exclusively ours for this call.
    let (saved, fpu) = unsafe { (&mut *saved, &mut *fpu) };
    let mut trap = Trap { frame: &mut saved.frame, regs: &mut saved.regs, fpu };
    match handler() {
        Some(handler) => handler(&mut trap),
        None => panic!(
            "{} (vector {}) at rip {:#x} before trap::install registered a handler",
            super::vector_name(trap.frame.vector),
            trap.frame.vector,
            trap.frame.rip
        ),
    }
}

/// Called by the stubs when `iret` returned, which it only does to refuse.
extern "C" fn iret_refused(rax: u64) -> ! {
    let error = decode_result(rax).err().unwrap_or(HypercallError::Unrecognized);
    panic!("the iret hypercall refused the trap frame: {error}")
}

/// Starts `context` in user mode and never comes back (the kernel regains
/// control through its trap handler). For the first process, from ordinary
/// kernel code; a handler switches processes with [`Trap::load`] instead.
///
/// The context's `FROM_USER` flag is forced on: kernel mode cannot be
/// entered this way. A user address space must be loaded
/// ([`AddressSpace::activate`](crate::paging::AddressSpace::activate)),
/// else `iret` refuses and this panics.
///
/// # Panics
///
/// If called on the trap stack (from a trap handler).
pub fn enter_user(context: &UserContext) -> ! {
    let stack = trap_stack_range();
    let here = &stack as *const _ as u64;
    assert!(!stack.contains(&here), "enter_user called from a trap handler; use Trap::load");
    let mut copy = *context;
    copy.frame.flags |= frame_flags::FROM_USER;
    // The copy goes at the top of the trap stack: free now, and overwritten
    // by the next trap only after `iret` has consumed it.
    let slot = (stack.end - core::mem::size_of::<UserContext>() as u64) & !15;
    // SAFETY: 1. `slot..stack.end` lies inside the trap stack (a static
    // larger than a context), 16-aligned as `UserContext` requires. 2. No
    // trap is being handled (checked above), so nothing else uses it.
    unsafe { (slot as *mut UserContext).write(copy) };
    // SAFETY: the asm leaves Rust for good (`noreturn`): it loads the FPU
    // state and registers from the copy (laid out fpu, regs, frame, as the
    // stub expects) and leaves `rsp` at the frame for `iret`. If `iret`
    // refuses, `iret_refused` panics on an aligned stack.
    unsafe {
        core::arch::asm!(
            "mov rsp, {slot}",
            "fxrstor64 [rsp]",
            "add rsp, 512",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop r10",
            "pop r9",
            "pop r8",
            "pop rdx",
            "pop rsi",
            "pop rdi",
            "pop rbp",
            "pop rbx",
            "mov eax, {iret}",
            "syscall",
            "mov rdi, rax",
            "and rsp, -16",
            "call {refused}",
            "ud2",
            slot = in(reg) slot,
            iret = const Hypercall::Iret as u64,
            refused = sym iret_refused,
            options(noreturn),
        );
    }
}
