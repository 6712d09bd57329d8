//! Wrappers for the ring-compression registration hypercalls:
//! `set_trap_table`, `set_callbacks`, `stack_switch`.
//!
//! They are `unsafe` because the addresses registered become entry points
//! the hypervisor jumps to with a [`TrapFrame`](hypercall_abi::trap::TrapFrame)
//! on the stack: an ordinary Rust function there would misread its
//! arguments and never return properly. [`trap`](crate::trap) registers
//! the SDK's own assembly entry layer safely; use these only for
//! hand-written entry stubs (benchmarks do). `iret`, the way back, only
//! makes sense from such a stub and has no Rust wrapper.

use hypercall_abi::trap::TrapInfo;
use hypercall_abi::{Hypercall, HypercallError};

use super::raw;

/// `set_trap_table`: registers the guest kernel's exception handlers
/// (replacing every earlier one; an empty table removes all).
///
/// # Safety
///
/// Each handler is code that follows the trap protocol of
/// [`hypercall_abi::trap`]: entered with `rsp` at a `TrapFrame`, it ends in
/// the `iret` hypercall with `rsp` at a frame.
pub unsafe fn set_trap_table(table: &[TrapInfo]) -> Result<(), HypercallError> {
    // SAFETY: the hypervisor only reads `table`; the handlers are the
    // caller's contract.
    unsafe { raw::hypercall2(Hypercall::SetTrapTable, table.as_ptr() as u64, table.len() as u64) }.map(|_| ())
}

/// `set_callbacks`: where a `syscall` from guest user mode is delivered
/// (`0`: user system calls stop the domain) and where event upcalls will
/// be delivered (`0`: none).
///
/// # Safety
///
/// As for [`set_trap_table`]: both addresses follow the trap protocol.
pub unsafe fn set_callbacks(syscall: u64, event: u64) -> Result<(), HypercallError> {
    // SAFETY: no guest memory is written; the entry points are the caller's contract.
    unsafe { raw::hypercall2(Hypercall::SetCallbacks, syscall, event) }.map(|_| ())
}

/// `stack_switch`: the guest kernel stack a trap from user mode is
/// delivered on (its top; frames are pushed below it).
///
/// # Safety
///
/// `kernel_sp` is the top of writable memory reserved for trap frames and
/// the handlers' stack, used by nothing else while user mode runs.
pub unsafe fn stack_switch(kernel_sp: u64) -> Result<(), HypercallError> {
    // SAFETY: no guest memory is written now; the stack is the caller's contract.
    unsafe { raw::hypercall1(Hypercall::StackSwitch, kernel_sp) }.map(|_| ())
}
