//! Ring compression: how traps reach the guest kernel and how it returns.
//!
//! x86_64 has no ring 1 to spare, so the guest kernel and its user
//! processes both run in ring 3. The hypervisor keeps them apart: each vCPU
//! is in guest *kernel mode* or guest *user mode*, and each mode has its own
//! top-level page table (user mode's lacks the kernel's mappings). A
//! `syscall` in kernel mode is a hypercall; in user mode it is the user's
//! system call, which the hypervisor *bounces* to the kernel's registered
//! entry. An exception in either mode is bounced to the kernel's handler
//! for that vector (registered with `set_trap_table`).
//!
//! A bounce switches to kernel mode (and the kernel's page table), and
//! pushes a [`TrapFrame`] on the guest kernel stack: the one given with
//! `stack_switch` when the trap came from user mode, else the current stack
//! 128 bytes below `rsp` (the red zone of the interrupted code is kept).
//! The handler starts with `rsp` pointing at the frame, interrupts as they
//! were, and every general register as it was at the trap except `rsp`,
//! `rcx` and `r11` (saved in the frame). It returns with the `iret`
//! hypercall, executed with `rsp` pointing at a frame of the same layout
//! (so: restore the other registers, then `syscall` with `rax = iret`).
//!
//! ```text
//!   frame + 0   rax         restored by iret
//!         + 8   r11         restored by iret (for a syscall: the user's RFLAGS)
//!         +16   rcx         restored by iret (for a syscall: the user's RIP)
//!         +24   vector      exception vector, or VECTOR_SYSCALL
//!         +32   error_code  as the CPU pushed it (0 if none)
//!         +40   cr2         faulting address of a page fault, else 0
//!         +48   flags       FROM_USER: trapped in (iret: return to) user mode
//!         +56   rip         where the trap happened / where iret resumes
//!         +64   rflags
//!         +72   rsp
//! ```

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `TrapFrame::vector` of a system call bounced from guest user mode.
pub const VECTOR_SYSCALL: u64 = 0x100;

/// `TrapFrame::vector` of an event upcall (see [`event`](crate::event)).
pub const VECTOR_EVENT: u64 = 0x101;

/// Bytes below the interrupted `rsp` left untouched when a trap is
/// delivered on the stack in use (the System V red zone).
pub const RED_ZONE: u64 = 128;

/// Bits of [`TrapFrame::flags`].
pub mod frame_flags {
    /// The trap came from guest user mode; for `iret`, return to user mode.
    pub const FROM_USER: u64 = 1;
}

/// The frame a bounce pushes and `iret` pops (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TrapFrame {
    /// rax at the trap; restored by `iret`.
    pub rax: u64,
    /// r11 at the trap; restored by `iret`.
    pub r11: u64,
    /// rcx at the trap; restored by `iret`.
    pub rcx: u64,
    /// Exception vector, or [`VECTOR_SYSCALL`].
    pub vector: u64,
    /// Error code.
    pub error_code: u64,
    /// Faulting address of a page fault.
    pub cr2: u64,
    /// [`frame_flags`].
    pub flags: u64,
    /// Instruction pointer.
    pub rip: u64,
    /// Flags register (the hypervisor keeps IOPL at 0 and IF set on `iret`).
    pub rflags: u64,
    /// Stack pointer.
    pub rsp: u64,
}
const_assert_eq!(core::mem::size_of::<TrapFrame>(), 80);
const_assert_eq!(core::mem::offset_of!(TrapFrame, vector), 24);
const_assert_eq!(core::mem::offset_of!(TrapFrame, rip), 56);

/// One entry of `set_trap_table`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception vector (0..32).
    pub vector: u64,
    /// Handler address in the guest kernel (0: none).
    pub handler: u64,
}
const_assert_eq!(core::mem::size_of::<TrapInfo>(), 16);

/// Exception vectors a trap table can name.
pub const TRAP_VECTORS: u64 = 32;
