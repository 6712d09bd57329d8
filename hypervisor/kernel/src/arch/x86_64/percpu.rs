//! Per-CPU data, reached through the GS base while in ring 0.
//!
//! The hypercall and exception entry code swaps GS (`swapgs`) and then finds
//! everything it needs at fixed offsets from GS: a scratch slot for the
//! guest's stack pointer, the top of this CPU's hypervisor stack (where the
//! [`GuestRegs`](parvus_core::vcpu::GuestRegs) frame lives) and the area
//! that holds the running guest's x87/SSE state. Parvus runs on one CPU
//! today; keeping these per CPU means SMP needs no rewrite of the entry path.

use core::mem::offset_of;
use parvus_core::vcpu::FpuState;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::VirtAddr;

/// Size of each CPU's hypervisor stack.
pub const STACK_SIZE: usize = 64 * 1024;

/// One CPU's private data. The layout is read by assembly (see the `*_OFFSET` constants).
#[repr(C, align(64))]
pub struct PerCpu {
    /// This structure's own address, so that code can find it with one load from GS.
    pub self_ptr: u64,
    /// The guest's `rsp` while the entry code switches stacks.
    pub scratch_rsp: u64,
    /// Top of this CPU's hypervisor stack (also TSS.RSP0).
    pub stack_top: u64,
    /// Where the running guest's x87/SSE state is saved on entry and
    /// restored from on exit: its vCPU's `fpu` field (16-byte aligned).
    pub guest_fpu: *mut FpuState,
    /// Where `syscall` currently goes.
    pub syscall_path: parvus_core::system::Door,
    /// The domain running on this CPU (for fault reports, and to skip the
    /// per-domain set-up when the same domain runs again).
    pub current_domain: Option<u32>,
    /// The FS and GS bases the running guest has (0 for paravirtualized guests).
    pub guest_segment_bases: (u64, u64),
}

/// Offset of [`PerCpu::self_ptr`].
pub const SELF_PTR_OFFSET: usize = offset_of!(PerCpu, self_ptr);
/// Offset of [`PerCpu::scratch_rsp`], for the entry code.
pub const SCRATCH_RSP_OFFSET: usize = offset_of!(PerCpu, scratch_rsp);
/// Offset of [`PerCpu::stack_top`], for the entry code.
pub const STACK_TOP_OFFSET: usize = offset_of!(PerCpu, stack_top);
/// Offset of [`PerCpu::guest_fpu`], for the entry code.
pub const GUEST_FPU_OFFSET: usize = offset_of!(PerCpu, guest_fpu);

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

static mut BSP_STACK: Stack = Stack([0; STACK_SIZE]);

/// Where an entry before the first guest would save x87/SSE state (none
/// does; the pointer is never dangling).
static mut BOOT_FPU: FpuState = FpuState([0; 512]);

static mut BSP: PerCpu = PerCpu { self_ptr: 0, scratch_rsp: 0, stack_top: 0, guest_fpu: core::ptr::addr_of_mut!(BOOT_FPU), syscall_path: parvus_core::system::Door::Kernel, current_domain: None, guest_segment_bases: (0, 0) };

/// Sets up the boot CPU's data and points GS at it. Returns its stack top.
pub fn init_bsp() -> u64 {
    let top = core::ptr::addr_of!(BSP_STACK) as u64 + STACK_SIZE as u64;
    let percpu = core::ptr::addr_of_mut!(BSP);
    // SAFETY: runs once on the boot CPU before any guest or entry path uses
    // BSP, so there is no other reference.
    unsafe {
        (*percpu).stack_top = top;
        (*percpu).self_ptr = percpu as u64;
    }
    GsBase::write(VirtAddr::new(percpu as u64));
    // The guest's GS base, swapped in by `swapgs` on the way out.
    KernelGsBase::write(VirtAddr::new(0));
    top
}

/// The boot CPU's data, reached without GS: for the fault path, which may
/// run with the guest's GS base loaded (an NMI between `syscall` and
/// `swapgs`, for instance). Read-only use.
pub fn bsp() -> &'static PerCpu {
    // SAFETY: BSP is a static; the fatal-fault path only reads it and never
    // returns to code holding a mutable reference.
    unsafe { &*core::ptr::addr_of!(BSP) }
}

/// This CPU's data. Only the code that runs with interrupts off on this CPU
/// (all of ring 0 in Parvus) may use it.
pub fn this_cpu() -> &'static mut PerCpu {
    let ptr: u64;
    // SAFETY: GS base points at this CPU's PerCpu while in ring 0 (set in
    // init_bsp, swapped back on every entry), whose first field holds its
    // own address; reading it has no side effect.
    unsafe { core::arch::asm!("mov {}, gs:[{off}]", out(reg) ptr, off = const SELF_PTR_OFFSET, options(nostack, readonly, preserves_flags)) };
    // SAFETY: (1) ptr is this CPU's PerCpu, a static; (2) the hypervisor runs
    // with interrupts off and is not re-entered, so callers hold one
    // reference at a time (the entry path hands it to one handler).
    unsafe { &mut *(ptr as *mut PerCpu) }
}
