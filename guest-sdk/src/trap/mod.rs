//! Traps and system calls for a guest kernel (ring compression).
//!
//! The hypervisor delivers a guest user process's `syscall`, and any
//! exception in either mode, to the guest kernel by pushing a
//! [`TrapFrame`] on the kernel stack (see [`hypercall_abi::trap`]). This
//! module is the guest kernel's side of that:
//!
//! - [`install`] registers one assembly entry stub (in `trap/entry.rs`) for
//!   every exception vector and as the system-call callback, and the SDK's
//!   trap stack with `stack_switch`;
//! - the stub saves the registers the frame does not hold and the x87/SSE
//!   state, and calls your handler with a [`Trap`]: the frame, the
//!   registers and the FPU state, all writable;
//! - when the handler returns, the stub restores everything from the
//!   `Trap` (changed or not) and returns with the `iret` hypercall. A
//!   handler switches processes by saving the `Trap` into one
//!   [`UserContext`] and loading another;
//! - [`enter_user`] starts a user context from ordinary kernel code (the
//!   first process).

mod entry;

use hypercall_abi::trap::{
    debug_cause, frame_flags, TrapFrame, TrapInfo, RFLAGS_TF, TRAP_VECTORS, VECTOR_DEBUG, VECTOR_SYSCALL,
};
use hypercall_abi::HypercallError;
use spin::Mutex;

use crate::entry::MXCSR_DEFAULT;
use crate::hypercall;

pub use entry::{entry_address, enter_user, trap_stack_range};

/// Page-fault error-code bits ([`TrapFrame::error_code`] of vector 14).
pub mod page_fault {
    /// The page was present (a protection violation); clear: not present.
    pub const PRESENT: u64 = 1;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access came from ring 3 (always, in a guest).
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in an entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const INSTRUCTION: u64 = 1 << 4;
}

/// Exception vectors by name.
pub mod vector {
    /// Divide error (#DE).
    pub const DIVIDE_ERROR: u64 = 0;
    /// Debug exception (#DB): single steps (see [`Trap::is_single_step`](super::Trap::is_single_step)).
    pub const DEBUG: u64 = super::VECTOR_DEBUG;
    /// Breakpoint (#BP, `int3`).
    pub const BREAKPOINT: u64 = 3;
    /// Invalid opcode (#UD).
    pub const INVALID_OPCODE: u64 = 6;
    /// General protection fault (#GP).
    pub const GENERAL_PROTECTION: u64 = 13;
    /// Page fault (#PF).
    pub const PAGE_FAULT: u64 = 14;
    /// A `syscall` from guest user mode.
    pub const SYSCALL: u64 = super::VECTOR_SYSCALL;
}

/// What a vector is called, for messages.
pub fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug exception",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point exception",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point exception",
        VECTOR_SYSCALL => "system call",
        _ => "reserved exception",
    }
}

/// The general registers the entry stub saves (the frame holds `rax`,
/// `rcx`, `r11` and `rsp`), in the order they sit in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Registers {
    /// r15.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rdx: the third argument of a user system call.
    pub rdx: u64,
    /// rsi: the second argument.
    pub rsi: u64,
    /// rdi: the first argument.
    pub rdi: u64,
    /// rbp.
    pub rbp: u64,
    /// rbx.
    pub rbx: u64,
}

/// The x87/SSE state, in the `fxsave` format.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` with the default `mxcsr`: what a new
    /// process starts with.
    pub fn initial() -> FpuState {
        let mut bytes = [0u8; 512];
        bytes[0..2].copy_from_slice(&0x037f_u16.to_le_bytes()); // FCW: all x87 exceptions masked
        bytes[24..28].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
        FpuState(bytes)
    }
}

/// Everything needed to resume a user process: what the entry stub saves.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct UserContext {
    /// x87/SSE state.
    pub fpu: FpuState,
    /// General registers but `rax`, `rcx`, `r11`, `rsp`.
    pub regs: Registers,
    /// Where and how to resume (`rip`, `rsp`, `rflags`, `rax`...).
    pub frame: TrapFrame,
}

impl UserContext {
    /// A process about to run `entry` in user mode with its stack ending at
    /// `stack_top` (16-aligned; `rsp` starts 8 below it, as after a `call`,
    /// which is what a function expects), interrupts on, other registers 0.
    pub fn new(entry: u64, stack_top: u64) -> UserContext {
        UserContext {
            fpu: FpuState::initial(),
            regs: Registers::default(),
            frame: TrapFrame {
                rip: entry,
                rsp: stack_top - 8,
                rflags: 0x202,
                flags: frame_flags::FROM_USER,
                ..TrapFrame::default()
            },
        }
    }
}

/// One trap, as the entry stub hands it to the handler. Everything is
/// written back when the handler returns.
pub struct Trap<'a> {
    /// The frame the hypervisor pushed (and `iret` pops).
    pub frame: &'a mut TrapFrame,
    /// The other general registers at the trap.
    pub regs: &'a mut Registers,
    /// The x87/SSE state at the trap.
    pub fpu: &'a mut FpuState,
}

impl Trap<'_> {
    /// Whether the trap came from guest user mode.
    pub fn from_user(&self) -> bool {
        self.frame.flags & frame_flags::FROM_USER != 0
    }

    /// Whether it is a user system call (else an exception).
    pub fn is_syscall(&self) -> bool {
        self.frame.vector == VECTOR_SYSCALL
    }

    /// Whether it is a single-step trap: the instruction before
    /// `frame.rip` ran with TF set (see [`hypercall_abi::trap`] for the
    /// rules). Returning with the frame's TF still set steps the next one.
    pub fn is_single_step(&self) -> bool {
        self.frame.vector == VECTOR_DEBUG && self.frame.error_code & debug_cause::SINGLE_STEP != 0
    }

    /// Whether the trapped code ran with TF set (single-stepping); for a
    /// system call, whether the user's `syscall` did (the kernel reports
    /// that step itself if it wants to: see [`hypercall_abi::trap`]).
    pub fn stepping(&self) -> bool {
        self.frame.rflags & RFLAGS_TF != 0
    }

    /// A system call's number (`rax`) and arguments (`rdi`, `rsi`, `rdx`).
    pub fn syscall_args(&self) -> (u64, [u64; 3]) {
        (self.frame.rax, [self.regs.rdi, self.regs.rsi, self.regs.rdx])
    }

    /// Sets the value `rax` has when the trapped code resumes.
    pub fn set_return(&mut self, value: u64) {
        self.frame.rax = value;
    }

    /// A copy of the trapped context, to resume later.
    pub fn save(&self) -> UserContext {
        UserContext { fpu: *self.fpu, regs: *self.regs, frame: *self.frame }
    }

    /// Makes the stub resume `context` instead of the trapped code.
    pub fn load(&mut self, context: &UserContext) {
        *self.fpu = context.fpu;
        *self.regs = context.regs;
        *self.frame = context.frame;
    }
}

/// A trap handler: called for every trap, in guest kernel mode, on the
/// SDK's trap stack (or, for a trap in kernel mode, below the interrupted
/// kernel code's stack).
pub type Handler = fn(&mut Trap<'_>);

/// The handler [`install`] registered.
static HANDLER: Mutex<Option<Handler>> = Mutex::new(None);

/// The handler to call now, if any (copied out, so a trap inside the
/// handler does not wait for the lock).
pub(crate) fn handler() -> Option<Handler> {
    *HANDLER.lock()
}

/// Makes `handler` the guest kernel's handler of every exception and of
/// user system calls, and the SDK's trap stack the stack traps from user
/// mode arrive on.
pub fn install(handler: Handler) -> Result<(), HypercallError> {
    *HANDLER.lock() = Some(handler);
    let entry = entry_address();
    let table: [TrapInfo; TRAP_VECTORS as usize] =
        core::array::from_fn(|v| TrapInfo { vector: v as u64, handler: entry });
    let stack_top = trap_stack_range().end;
    // SAFETY: 1. `entry` is the SDK's assembly stub, which follows the trap
    // protocol (it ends in `iret` with `rsp` at the frame). 2. The trap
    // stack is a static reserved for exactly this.
    unsafe {
        hypercall::set_trap_table(&table)?;
        hypercall::set_callbacks(entry, 0)?;
        hypercall::stack_switch(stack_top)?;
    }
    Ok(())
}
