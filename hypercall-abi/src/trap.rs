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
//! The handler starts with `rsp` pointing at the frame, RFLAGS =
//! [`HANDLER_RFLAGS`] (interrupts on, as they always are in a guest, every
//! other flag clear: TF above all, or the handler would trap on its own
//! first instruction; the interrupted flags are in the frame), and every
//! general register as it was at the trap except `rsp`, `rcx` and `r11`
//! (saved in the frame). It returns with the `iret` hypercall, executed with `rsp`
//! pointing at a frame of the same layout (so: restore the other
//! registers, then `syscall` with `rax = iret`).
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
//!
//! ## Single-stepping
//!
//! A guest kernel (or a user process) may set TF with `popf` or through an
//! `iret` frame, and is then single-stepped as on hardware: after each
//! instruction that ran with TF set, its kernel's handler for the debug
//! exception ([`VECTOR_DEBUG`]) gets a trap frame whose `rip` is the next
//! instruction and whose `error_code` says [`debug_cause::SINGLE_STEP`]
//! (the CPU pushes no error code for #DB; this is DR6.BS, which a guest
//! cannot read). The rules, each the CPU's own:
//!
//! - the instruction that sets TF (`popf`, `iret`) does not trap; the one
//!   after it does, and so does the `popf` that clears TF;
//! - a hypercall made with TF set is one instruction: the trap follows
//!   when it completes, with its result in `rax` (after `iret`: at the
//!   frame it returned to; after `yield` or a blocking call: when the
//!   domain runs again; `bench_floor` ends at once, a floor `syscall`
//!   traps like any other);
//! - an instruction that faults (`ud2`, a page fault) raises its exception,
//!   not a step: it did not complete; if the handler returns past it with
//!   TF still set in the frame, the first instruction there traps;
//! - a system call from user mode is delivered to the syscall callback
//!   with TF clear and the user's TF in the frame (as `syscall` with TF in
//!   FMASK): a kernel that reports the step past it does so itself;
//! - RF and NT are never given to a guest: `iret` drops them.
//!
//! A #DB without [`debug_cause::SINGLE_STEP`] comes from `int1` (0xf1).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `TrapFrame::vector` of a system call bounced from guest user mode.
pub const VECTOR_SYSCALL: u64 = 0x100;

/// `TrapFrame::vector` of an event upcall (see [`event`](crate::event)).
pub const VECTOR_EVENT: u64 = 0x101;

/// The debug exception (#DB): where single-step traps are delivered.
pub const VECTOR_DEBUG: u64 = 1;

/// RFLAGS.TF, the single-step flag (in [`TrapFrame::rflags`]).
pub const RFLAGS_TF: u64 = 1 << 8;

/// RFLAGS a trap handler starts with: IF (and bit 1, always set).
pub const HANDLER_RFLAGS: u64 = 0x202;

/// [`TrapFrame::error_code`] of a debug exception ([`VECTOR_DEBUG`]): why
/// it was raised, as DR6 reports it (see the module docs).
pub mod debug_cause {
    /// DR6.BS: a single-step trap after the instruction before `rip`.
    pub const SINGLE_STEP: u64 = 1 << 14;
}

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
    /// Error code (for [`VECTOR_DEBUG`]: [`debug_cause`]).
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
