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
use crate::paging::Access;
use crate::vcpu::Vcpu;
use hypercall_abi::PAGE_SIZE;
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
    stack_access(mem, frames, domain.id, vcpu, sp, StackAccess::Write(frame.as_bytes())).map_err(BounceError::BadKernelStack)?;
    vcpu.kernel_mode = true;
    regs.rsp = sp;
    regs.rip = handler;
    Ok(())
}

/// A read or a write of a trap frame on the guest kernel's stack.
pub enum StackAccess<'a> {
    /// Read into the buffer.
    Read(&'a mut [u8]),
    /// Write the bytes.
    Write(&'a [u8]),
}

/// Reads or writes `bytes` at `va` in the vCPU's kernel address space,
/// through the one-page translation cache [`Vcpu::stack_page`] when the
/// range lies in the cached page (a trap frame almost always does), else
/// through a checked [`GuestView`] (and the cache is refilled).
pub fn stack_access(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: crate::domain::DomainId,
    vcpu: &mut Vcpu,
    va: u64,
    access: StackAccess<'_>,
) -> Result<(), HypercallError> {
    let len = match &access {
        StackAccess::Read(b) => b.len() as u64,
        StackAccess::Write(b) => b.len() as u64,
    };
    let page = va & !(PAGE_SIZE - 1);
    let in_one_page = va.checked_add(len).is_some_and(|end| end <= page + PAGE_SIZE);
    if in_one_page {
        let maddr = match vcpu.stack_page {
            // A cached page was translated for writing, so reads are fine too.
            Some((p, m, root)) if p == page && root == vcpu.kernel_root => m,
            _ => {
                let view = GuestView { mem: &mut *mem, frames, domain, root: vcpu.kernel_root };
                let writing = matches!(access, StackAccess::Write(_));
                let m = view.translate(page, if writing { Access::Write } else { Access::Read })? & !(PAGE_SIZE - 1);
                if writing {
                    vcpu.stack_page = Some((page, m, vcpu.kernel_root));
                }
                m
            }
        };
        let at = maddr + (va - page);
        match access {
            StackAccess::Read(b) => mem.read(at, b),
            StackAccess::Write(b) => mem.write(at, b),
        }
        return Ok(());
    }
    let mut view = GuestView { mem, frames, domain, root: vcpu.kernel_root };
    match access {
        StackAccess::Read(b) => view.read(GuestSlice::new(va, len), b),
        StackAccess::Write(b) => view.write(GuestSlice::new(va, len), b),
    }
}
