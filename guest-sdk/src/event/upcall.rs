//! The assembly entry the hypervisor jumps to for an event upcall.
//!
//! An upcall arrives like an interrupt: the hypervisor has pushed a
//! [`TrapFrame`](hypercall_abi::trap::TrapFrame) (vector
//! [`VECTOR_EVENT`](hypercall_abi::trap::VECTOR_EVENT)) 128 bytes below the
//! interrupted `rsp`, set `upcall_mask`, and jumped here with `rsp` at the
//! frame. Every register but `rsp`, `rcx` and `r11` (saved in the frame,
//! with `rax`) still holds the interrupted code's value, and that code may
//! be anywhere, so the stub keeps everything the Rust dispatcher may
//! clobber:
//!
//! ```text
//!   push rbx rdi rsi rdx r8 r9 r10        (rax rcx r11 are in the frame;
//!   rbx = rsp                              rbp r12-r15 the callee keeps)
//!   rsp -= 512, aligned to 16; fxsave64    (x87/SSE/mxcsr: Rust uses SSE)
//!   cld; call upcall_dispatch()
//!   fxrstor64; rsp = rbx; pop the registers
//!   eax = iret; syscall                    (rsp at the frame: never returns)
//! ```
//!
//! It is separate from the trap entry of [`trap`](crate::trap) on purpose:
//! an event needs no trap table or trap stack and no handler `Trap`
//! object, only the dispatcher, and the shorter path is what the event
//! round-trip benchmark measures.

use hypercall_abi::{decode_result, Hypercall, HypercallError};

core::arch::global_asm!(
    ".pushsection .text.parvus_event_entry, \"ax\", @progbits",
    ".globl __parvus_event_entry",
    ".type __parvus_event_entry, @function",
    ".p2align 4",
    "__parvus_event_entry:",
    "push rbx",
    "push rdi",
    "push rsi",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "mov rbx, rsp",
    "sub rsp, 512",
    "and rsp, -16",
    "fxsave64 [rsp]",
    "cld",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop rbx",
    "mov eax, {iret}",
    "syscall",
    // `iret` only comes back to refuse the frame.
    "mov rdi, rax",
    "and rsp, -16",
    "call {refused}",
    "ud2",
    ".size __parvus_event_entry, . - __parvus_event_entry",
    ".popsection",
    dispatch = sym super::dispatch::upcall_dispatch,
    refused = sym iret_refused,
    iret = const Hypercall::Iret as u64,
);

extern "C" {
    /// The stub above (only its address is used).
    fn __parvus_event_entry();
}

/// Address of the upcall entry, for `set_callbacks`.
pub(crate) fn entry_address() -> u64 {
    __parvus_event_entry as *const () as u64
}

/// Called by the stub when `iret` returned, which it only does to refuse
/// the frame (the frame on the stack was overwritten: a guest bug).
extern "C" fn iret_refused(rax: u64) -> ! {
    let error = decode_result(rax).err().unwrap_or(HypercallError::Unrecognized);
    panic!("the iret hypercall refused the event upcall frame: {error}")
}
