//! Delivering a trap to the guest kernel (ring compression).
//!
//! When a guest raises an exception, or makes a `syscall` in its user mode,
//! the hypervisor does what the CPU would do for a kernel in ring 0: switch
//! to the guest's kernel mode and its kernel stack, push a
//! [`TrapFrame`] and jump to the registered handler. The frame layout and
//! the register rules are in [`hypercall_abi::trap`].

use crate::domain::Domain;
use crate::frame_table::FrameTable;
use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::MachineMemory;
use crate::vcpu::GuestRegs;
use hypercall_abi::trap::{frame_flags, TrapFrame, RED_ZONE, VECTOR_EVENT, VECTOR_SYSCALL};
use hypercall_abi::HypercallError;
use zerocopy::IntoBytes;

/// Why a trap could not be delivered (the domain is then stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// The guest kernel registered no handler for this trap.
    NoHandler,
    /// The frame could not be written to the guest kernel's stack.
    BadKernelStack(HypercallError),
}

impl core::fmt::Display for BounceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BounceError::NoHandler => f.write_str("the guest kernel registered no handler for it"),
            BounceError::BadKernelStack(e) => write!(f, "the guest kernel stack cannot take the trap frame ({e})"),
        }
    }
}

/// Delivers trap `vector` (or [`VECTOR_SYSCALL`], or [`VECTOR_EVENT`]) of `domain`, whose
/// registers are in `regs`, to its kernel: on success `regs` and the vCPU's
/// mode say where it continues.
pub fn bounce(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: &mut Domain,
    regs: &mut GuestRegs,
    vector: u64,
    error_code: u64,
    cr2: u64,
) -> Result<(), BounceError> {
    let vcpu = &domain.vcpu;
    let handler = match vector {
        VECTOR_SYSCALL => vcpu.syscall_callback,
        VECTOR_EVENT => vcpu.event_callback,
        _ => vcpu.traps.get(vector as usize).copied().unwrap_or(0),
    };
    if handler == 0 {
        return Err(BounceError::NoHandler);
    }
    let vcpu = &mut domain.vcpu;
    let from_user = !vcpu.kernel_mode;
    let stack = if from_user { vcpu.kernel_sp } else { regs.rsp.wrapping_sub(RED_ZONE) };
    let size = core::mem::size_of::<TrapFrame>() as u64;
    let sp = stack.wrapping_sub(size) & !15;
    let frame = TrapFrame {
        rax: regs.rax,
        r11: regs.r11,
        rcx: regs.rcx,
        vector,
        error_code,
        cr2,
        flags: if from_user { frame_flags::FROM_USER } else { 0 },
        rip: regs.rip,
        rflags: regs.rflags,
        rsp: regs.rsp,
    };
    let mut view = GuestView { mem, frames, domain: domain.id, root: vcpu.kernel_root };
    view.write(GuestSlice::new(sp, size), frame.as_bytes()).map_err(BounceError::BadKernelStack)?;
    vcpu.kernel_mode = true;
    regs.rsp = sp;
    regs.rip = handler;
    Ok(())
}
