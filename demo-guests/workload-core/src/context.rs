//! [`UserContext`]: everything needed to resume a user process.
//!
//! The kernel logic reads and writes a process's registers as plain data
//! (the system-call number and arguments, the return value, a forked
//! child's copy). The platform layers' assembly fills the same structure
//! on every trap and reloads it on every return to user mode, so its
//! layout is fixed (`repr(C)`) and the byte offsets the assembly uses are
//! constants here, checked against the compiler's layout at build time.
//!
//! ```text
//!   +0    rax rbx rcx rdx rsi rdi rbp r8 .. r15     (15 words)
//!   +120  rip rflags rsp                             (3 words)
//!   +144  resume: how the process may be resumed
//!   +160  fpu: the x87/SSE state in fxsave format (512 bytes, 16-aligned)
//! ```

/// The initial x87 control word (every exception masked), as after `fninit`.
const FCW_DEFAULT: u16 = 0x037f;

/// The initial `mxcsr` (every SSE exception masked, round to nearest): what
/// a new process starts with, and what both platforms' trap entries load
/// for the kernel after saving the process's own.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// `rflags` of a new process: the always-one bit 1 and IF, so the timer
/// can interrupt it.
pub const USER_RFLAGS: u64 = 0x202;

/// The general registers and the instruction pointer, flags and stack
/// pointer of a user process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Registers {
    /// rax: the system-call number on entry, the result on return.
    pub rax: u64,
    /// rbx.
    pub rbx: u64,
    /// rcx (a `syscall` overwrites it with the return address).
    pub rcx: u64,
    /// rdx: the third system-call argument.
    pub rdx: u64,
    /// rsi: the second system-call argument.
    pub rsi: u64,
    /// rdi: the first system-call argument.
    pub rdi: u64,
    /// rbp.
    pub rbp: u64,
    /// r8.
    pub r8: u64,
    /// r9.
    pub r9: u64,
    /// r10.
    pub r10: u64,
    /// r11 (a `syscall` overwrites it with the flags).
    pub r11: u64,
    /// r12.
    pub r12: u64,
    /// r13.
    pub r13: u64,
    /// r14.
    pub r14: u64,
    /// r15.
    pub r15: u64,
    /// Where the process resumes.
    pub rip: u64,
    /// Its flags register.
    pub rflags: u64,
    /// Its stack pointer.
    pub rsp: u64,
}

/// How a context may be resumed, in [`UserContext::resume`].
pub mod resume {
    /// Every register must be restored exactly (after an interrupt or an
    /// exception, or for a new process): natively with `iretq`.
    pub const FULL: u64 = 0;
    /// The process last entered the kernel with `syscall`, which already
    /// destroyed `rcx` and `r11`: natively the faster `sysretq` may
    /// return (it reloads `rip` from `rcx` and `rflags` from `r11`).
    pub const AFTER_SYSCALL: u64 = 1;
}

/// The x87/SSE state in the 512-byte `fxsave` format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state a new process starts with: as after `fninit`, with the
    /// default `mxcsr`.
    pub fn initial() -> FpuState {
        let mut bytes = [0u8; 512];
        bytes[0..2].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
        bytes[24..28].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
        FpuState(bytes)
    }
}

/// Everything needed to resume a user process (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct UserContext {
    /// The registers.
    pub regs: Registers,
    /// One of [`resume`]: written by the platform's trap entry.
    pub resume: u64,
    /// Keeps `fpu` 16-byte aligned.
    pub reserved: u64,
    /// The x87/SSE state.
    pub fpu: FpuState,
}

impl UserContext {
    /// A process about to run `entry(arg0, arg1)` in user mode with its
    /// stack ending at `stack_top` (16-aligned; `rsp` starts 8 below, as
    /// after the `call` a function expects), interrupts enabled, every
    /// other register zero.
    pub fn new(entry: u64, stack_top: u64, arg0: u64, arg1: u64) -> UserContext {
        UserContext {
            regs: Registers {
                rdi: arg0,
                rsi: arg1,
                rip: entry,
                rsp: stack_top - 8,
                rflags: USER_RFLAGS,
                ..Registers::default()
            },
            resume: resume::FULL,
            reserved: 0,
            fpu: FpuState::initial(),
        }
    }

    /// A system call's number (`rax`) and arguments (`rdi`, `rsi`, `rdx`).
    pub fn syscall_args(&self) -> (u64, [u64; 3]) {
        (self.regs.rax, [self.regs.rdi, self.regs.rsi, self.regs.rdx])
    }

    /// Sets the value `rax` has when the process resumes.
    pub fn set_return(&mut self, value: u64) {
        self.regs.rax = value;
    }
}

/// Byte offsets into [`UserContext`] for the platforms' assembly.
pub mod offset {
    /// `regs.rax`.
    pub const RAX: usize = 0;
    /// `regs.rbx`.
    pub const RBX: usize = 8;
    /// `regs.rcx`.
    pub const RCX: usize = 16;
    /// `regs.rdx`.
    pub const RDX: usize = 24;
    /// `regs.rsi`.
    pub const RSI: usize = 32;
    /// `regs.rdi`.
    pub const RDI: usize = 40;
    /// `regs.rbp`.
    pub const RBP: usize = 48;
    /// `regs.r8`.
    pub const R8: usize = 56;
    /// `regs.r9`.
    pub const R9: usize = 64;
    /// `regs.r10`.
    pub const R10: usize = 72;
    /// `regs.r11`.
    pub const R11: usize = 80;
    /// `regs.r12`.
    pub const R12: usize = 88;
    /// `regs.r13`.
    pub const R13: usize = 96;
    /// `regs.r14`.
    pub const R14: usize = 104;
    /// `regs.r15`.
    pub const R15: usize = 112;
    /// `regs.rip`.
    pub const RIP: usize = 120;
    /// `regs.rflags`.
    pub const RFLAGS: usize = 128;
    /// `regs.rsp`.
    pub const RSP: usize = 136;
    /// `resume`.
    pub const RESUME: usize = 144;
    /// `fpu`.
    pub const FPU: usize = 160;
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(UserContext, regs) == 0);
    assert!(offset_of!(Registers, rax) == offset::RAX);
    assert!(offset_of!(Registers, rbx) == offset::RBX);
    assert!(offset_of!(Registers, rcx) == offset::RCX);
    assert!(offset_of!(Registers, rdx) == offset::RDX);
    assert!(offset_of!(Registers, rsi) == offset::RSI);
    assert!(offset_of!(Registers, rdi) == offset::RDI);
    assert!(offset_of!(Registers, rbp) == offset::RBP);
    assert!(offset_of!(Registers, r8) == offset::R8);
    assert!(offset_of!(Registers, r9) == offset::R9);
    assert!(offset_of!(Registers, r10) == offset::R10);
    assert!(offset_of!(Registers, r11) == offset::R11);
    assert!(offset_of!(Registers, r12) == offset::R12);
    assert!(offset_of!(Registers, r13) == offset::R13);
    assert!(offset_of!(Registers, r14) == offset::R14);
    assert!(offset_of!(Registers, r15) == offset::R15);
    assert!(offset_of!(Registers, rip) == offset::RIP);
    assert!(offset_of!(Registers, rflags) == offset::RFLAGS);
    assert!(offset_of!(Registers, rsp) == offset::RSP);
    assert!(offset_of!(UserContext, resume) == offset::RESUME);
    assert!(offset_of!(UserContext, fpu) == offset::FPU);
    assert!(offset::FPU.is_multiple_of(16));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_context_starts_at_its_entry_with_its_arguments() {
        let c = UserContext::new(0x1000, 0x8000, 7, 9);
        assert_eq!((c.regs.rip, c.regs.rsp, c.regs.rdi, c.regs.rsi), (0x1000, 0x7ff8, 7, 9));
        assert_eq!(c.regs.rflags, USER_RFLAGS);
        assert_eq!(c.resume, resume::FULL);
        assert_eq!(&c.fpu.0[0..2], &[0x7f, 0x03]);
        assert_eq!(&c.fpu.0[24..28], &0x1f80u32.to_le_bytes());
    }
}
