//! A virtual CPU: the register state of a domain while it is not running.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Ring-3 code selector a guest runs with (GDT entry 4, RPL 3).
pub const GUEST_CS: u64 = 0x23;
/// Ring-3 stack selector a guest runs with (GDT entry 3, RPL 3).
pub const GUEST_SS: u64 = 0x1b;
/// RFLAGS a guest starts with: interrupts enabled, bit 1 (always one).
pub const GUEST_INITIAL_RFLAGS: u64 = 0x202;
/// RFLAGS bits a guest may hold: CF PF AF ZF SF TF IF DF OF, AC, ID.
/// (IOPL, NT, RF, VM, VIF, VIP are never given to a guest.)
pub const GUEST_RFLAGS_MASK: u64 = 0x24_0fd5;
/// RFLAGS.TF and the flags a trap handler starts with (see `hypercall_abi::trap`).
pub use hypercall_abi::trap::{HANDLER_RFLAGS, RFLAGS_TF};

/// The general-purpose registers and the interrupt frame of a guest, in the
/// order the entry code pushes them (lowest address first).
///
/// The kernel's entry code builds this at the top of the per-CPU stack on
/// every entry from a guest (hypercall or exception) and returns to the guest
/// from it with `iretq`; switching domains means swapping its contents.
/// Pseudo-vector [`VECTOR_SYSCALL`] marks an entry by `syscall`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GuestRegs {
    /// r15
    pub r15: u64,
    /// r14
    pub r14: u64,
    /// r13
    pub r13: u64,
    /// r12
    pub r12: u64,
    /// r11 (holds RFLAGS right after `syscall`)
    pub r11: u64,
    /// r10 (hypercall argument 3)
    pub r10: u64,
    /// r9 (hypercall argument 5)
    pub r9: u64,
    /// r8 (hypercall argument 4)
    pub r8: u64,
    /// rbp
    pub rbp: u64,
    /// rdi (hypercall argument 0)
    pub rdi: u64,
    /// rsi (hypercall argument 1)
    pub rsi: u64,
    /// rdx (hypercall argument 2)
    pub rdx: u64,
    /// rcx (holds the return RIP right after `syscall`)
    pub rcx: u64,
    /// rbx
    pub rbx: u64,
    /// rax (hypercall number in, result out)
    pub rax: u64,
    /// Exception vector, or [`VECTOR_SYSCALL`].
    pub vector: u64,
    /// Exception error code (0 when the CPU pushes none).
    pub error_code: u64,
    /// Instruction pointer to return to.
    pub rip: u64,
    /// Code selector to return to.
    pub cs: u64,
    /// Flags to return with.
    pub rflags: u64,
    /// Stack pointer to return to.
    pub rsp: u64,
    /// Stack selector to return to.
    pub ss: u64,
}

/// Pseudo-vector recorded in [`GuestRegs::vector`] for a `syscall` entry.
pub const VECTOR_SYSCALL: u64 = 0x100;

impl GuestRegs {
    /// The registers a domain's first instruction sees.
    pub fn initial(entry: u64, stack_top: u64, start_info: u64) -> Self {
        GuestRegs {
            rip: entry,
            rsp: stack_top,
            rdi: start_info,
            cs: GUEST_CS,
            ss: GUEST_SS,
            rflags: GUEST_INITIAL_RFLAGS,
            ..GuestRegs::default()
        }
    }

    /// Hypercall arguments in ABI order (`rdi rsi rdx r10 r8 r9`).
    pub fn hypercall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    /// General-purpose register `n` in the instruction encoding's order
    /// (0 = rax, 1 = rcx, 2 = rdx, 3 = rbx, 4 = rsp, 5 = rbp, 6 = rsi,
    /// 7 = rdi, 8..15 = r8..r15), as the emulator names them.
    pub fn gpr(&self, n: u8) -> u64 {
        match n & 15 {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    /// Sets general-purpose register `n` (numbered as in [`Self::gpr`]).
    pub fn set_gpr(&mut self, n: u8, value: u64) {
        let r = match n & 15 {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *r = value;
    }
}

/// The x87/SSE state saved by `fxsave64` (512 bytes, 16-byte aligned).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` with the default MXCSR (0x1f80) and FCW (0x37f).
    pub fn initial() -> Self {
        let mut s = FpuState([0; 512]);
        s.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
        s.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR
        s.0[28..32].copy_from_slice(&0xffffu32.to_le_bytes()); // MXCSR_MASK
        s
    }
}

impl core::fmt::Debug for FpuState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FpuState(..)")
    }
}

/// Number of exception vectors a guest kernel can handle.
pub const TRAP_VECTORS: usize = hypercall_abi::trap::TRAP_VECTORS as usize;

/// A domain's virtual CPU.
///
/// Besides registers it holds the *ring compression* state: whether the
/// guest is in its kernel or its user mode (both run in ring 3), the
/// top-level table of each mode, and where traps are delivered.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Registers while the vCPU is not running.
    pub regs: GuestRegs,
    /// x87/SSE state. Saved and restored in place: while the vCPU runs,
    /// the kernel's entry code `fxsave`s into and `fxrstor`s from this
    /// very field (so a domain switch copies no FPU state).
    pub fpu: FpuState,
    /// Guest kernel mode (else guest user mode).
    pub kernel_mode: bool,
    /// Machine address of the kernel mode's top-level table.
    pub kernel_root: u64,
    /// Machine address of the user mode's top-level table, once set.
    pub user_root: Option<u64>,
    /// Guest kernel exception handlers by vector (0: none).
    pub traps: [u64; TRAP_VECTORS],
    /// Where a `syscall` from user mode is delivered (0: nowhere).
    pub syscall_callback: u64,
    /// Where event upcalls are delivered (0: nowhere).
    pub event_callback: u64,
    /// Kernel stack for traps from user mode.
    pub kernel_sp: u64,
    /// Measuring the bare `syscall` floor until the next exception.
    pub bench_floor: bool,
    /// A hypercall made with TF set owes the guest kernel a single-step
    /// trap, delivered before the vCPU resumes (and before an event
    /// upcall): see `System::on_stepped_hypercall`.
    pub single_step_owed: bool,
    /// The last kernel-stack pages a trap frame went to: (page-aligned
    /// guest-virtual address, machine address, top-level table); an
    /// all-zero entry is empty (page 0 is never a guest page). Saves page
    /// walks per bounce and per `iret`; forgotten whenever the domain
    /// changes any page table (every memory hypercall clears it).
    pub stack_pages: [(u64, u64, u64); 2],
}

impl Vcpu {
    /// A vCPU in kernel mode that will start at `entry` with the given stack,
    /// start-info address and top-level table.
    pub fn new(entry: u64, stack_top: u64, start_info: u64, kernel_root: u64) -> Self {
        Vcpu {
            regs: GuestRegs::initial(entry, stack_top, start_info),
            fpu: FpuState::initial(),
            kernel_mode: true,
            kernel_root,
            user_root: None,
            traps: [0; TRAP_VECTORS],
            syscall_callback: 0,
            event_callback: 0,
            kernel_sp: 0,
            bench_floor: false,
            single_step_owed: false,
            stack_pages: [(0, 0, 0); 2],
        }
    }

    /// The machine address of kernel-stack page `page` (page-aligned
    /// guest-virtual) if [`Self::stack_pages`] holds a writable translation
    /// of it under the current kernel table.
    #[inline]
    pub fn cached_stack_page(&self, page: u64) -> Option<u64> {
        let root = self.kernel_root;
        let [a, b] = self.stack_pages;
        if a.0 == page && a.2 == root {
            Some(a.1)
        } else if b.0 == page && b.2 == root {
            Some(b.1)
        } else {
            None
        }
    }

    /// The top-level table of the current mode.
    #[inline]
    pub fn current_root(&self) -> u64 {
        if self.kernel_mode {
            self.kernel_root
        } else {
            self.user_root.expect("user mode is entered only with a user table")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_matches_the_push_order() {
        assert_eq!(core::mem::size_of::<GuestRegs>(), 22 * 8);
        assert_eq!(core::mem::offset_of!(GuestRegs, rax), 14 * 8);
        assert_eq!(core::mem::offset_of!(GuestRegs, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(GuestRegs, rip), 17 * 8);
        assert_eq!(core::mem::offset_of!(GuestRegs, ss), 21 * 8);
    }

    #[test]
    fn registers_by_encoding_number() {
        let mut r = GuestRegs::default();
        for n in 0..16u8 {
            r.set_gpr(n, 100 + u64::from(n));
        }
        assert_eq!((r.rax, r.rcx, r.rsp, r.rdi, r.r8, r.r15), (100, 101, 104, 107, 108, 115));
        assert!((0..16u8).all(|n| r.gpr(n) == 100 + u64::from(n)));
    }

    #[test]
    fn stack_page_cache_answers_only_for_the_current_kernel_table() {
        let mut v = Vcpu::new(0x40_1000, 0x80_0000, 0x40_5000, 0x1000);
        assert_eq!(v.cached_stack_page(0), None, "empty entries match nothing");
        v.stack_pages = [(0x7f_f000, 0x5000, 0x1000), (0x80_0000, 0x6000, 0x1000)];
        assert_eq!(v.cached_stack_page(0x7f_f000), Some(0x5000));
        assert_eq!(v.cached_stack_page(0x80_0000), Some(0x6000));
        assert_eq!(v.cached_stack_page(0x80_1000), None);
        v.kernel_root = 0x2000; // a new kernel table: the translations are stale
        assert_eq!(v.cached_stack_page(0x7f_f000), None);
    }

    #[test]
    fn initial_registers() {
        let r = GuestRegs::initial(0x40_1000, 0x80_0000, 0x40_5000);
        assert_eq!((r.rip, r.rsp, r.rdi, r.cs & 3, r.ss & 3), (0x40_1000, 0x80_0000, 0x40_5000, 3, 3));
        assert_eq!(r.rflags & 0x200, 0x200);
    }
}
