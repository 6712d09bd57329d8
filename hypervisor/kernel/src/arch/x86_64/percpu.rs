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
    /// The guest's `rsp` while the entry code switches stacks.
    pub scratch_rsp: u64,
    /// Top of this CPU's hypervisor stack (also TSS.RSP0).
    pub stack_top: u64,
    /// The running guest's x87/SSE state while the hypervisor runs.
    pub guest_fpu: FpuState,
    /// Where `syscall` currently goes.
    pub syscall_path: super::entry::SyscallPath,
}

/// Offset of [`PerCpu::scratch_rsp`], for the entry code.
pub const SCRATCH_RSP_OFFSET: usize = offset_of!(PerCpu, scratch_rsp);
/// Offset of [`PerCpu::stack_top`], for the entry code.
pub const STACK_TOP_OFFSET: usize = offset_of!(PerCpu, stack_top);
/// Offset of [`PerCpu::guest_fpu`], for the entry code (16-byte aligned).
pub const GUEST_FPU_OFFSET: usize = offset_of!(PerCpu, guest_fpu);
const _: () = assert!(GUEST_FPU_OFFSET % 16 == 0);

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

static mut BSP_STACK: Stack = Stack([0; STACK_SIZE]);

static mut BSP: PerCpu = PerCpu { scratch_rsp: 0, stack_top: 0, guest_fpu: FpuState([0; 512]), syscall_path: super::entry::SyscallPath::Kernel };

/// Sets up the boot CPU's data and points GS at it. Returns its stack top.
pub fn init_bsp() -> u64 {
    let top = core::ptr::addr_of!(BSP_STACK) as u64 + STACK_SIZE as u64;
    let percpu = core::ptr::addr_of_mut!(BSP);
    // SAFETY: runs once on the boot CPU before any guest or entry path uses
    // BSP, so there is no other reference.
    unsafe { (*percpu).stack_top = top };
    GsBase::write(VirtAddr::new(percpu as u64));
    // The guest's GS base, swapped in by `swapgs` on the way out.
    KernelGsBase::write(VirtAddr::new(0));
    top
}

/// This CPU's data. Only the code that runs with interrupts off on this CPU
/// (all of ring 0 in Parvus) may use it.
pub fn this_cpu() -> &'static mut PerCpu {
    // SAFETY: (1) GS base points at this CPU's PerCpu while in ring 0 (set in
    // init_bsp, swapped back on every entry); (2) the hypervisor runs with
    // interrupts off and is not re-entered, so one reference is live at a time
    // by convention of the callers (the entry path hands it to one handler).
    unsafe { &mut *(GsBase::read().as_u64() as *mut PerCpu) }
}
