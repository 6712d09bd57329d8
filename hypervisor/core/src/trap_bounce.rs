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
use crate::vcpu::{GuestRegs, HANDLER_RFLAGS};
use hypercall_abi::trap::{frame_flags, TrapFrame, RED_ZONE, VECTOR_EVENT, VECTOR_SYSCALL};
use hypercall_abi::HypercallError;
use zerocopy::{FromZeros, IntoBytes};

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
#[inline(always)]
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
    // The exception vectors tested first: only an exception's vector is
    // unknown until run time (the system call and event paths pass
    // constants, and this folds), so a fault pays one test, not three.
    let handler = match vcpu.traps.get(vector as usize) {
        Some(&handler) => handler,
        None if vector == VECTOR_SYSCALL => vcpu.syscall_callback,
        None if vector == VECTOR_EVENT => vcpu.event_callback,
        None => 0,
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
    // The handler runs on known flags, above all without TF (the frame
    // keeps the interrupted ones, and `iret` restores them).
    regs.rflags = HANDLER_RFLAGS;
    write_trap_frame(mem, frames, domain.id, vcpu, sp, &frame).map_err(BounceError::BadKernelStack)?;
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

impl StackAccess<'_> {
    fn len(&self) -> u64 {
        match self {
            StackAccess::Read(b) => b.len() as u64,
            StackAccess::Write(b) => b.len() as u64,
        }
    }
}

/// Reads or writes `bytes` at `va` in the vCPU's kernel address space,
/// through the two-page translation cache [`Vcpu::stack_pages`] (a trap
/// frame lies in one page, or straddles two neighbours), filling it with
/// checked translations on a miss. Only writable translations are cached.
///
/// Every bounce and every `iret` comes here, nearly always for a frame
/// inside one page the cache knows: that case is one lookup and one copy,
/// inline (so a fixed-size frame is copied without a `memcpy` call); the
/// rest is in [`stack_access_uncached`].
#[inline]
pub fn stack_access(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: crate::domain::DomainId,
    vcpu: &mut Vcpu,
    va: u64,
    access: StackAccess<'_>,
) -> Result<(), HypercallError> {
    let len = access.len();
    let offset = va & (PAGE_SIZE - 1);
    // `offset + len` cannot wrap: `offset` is below a page and `len` is a
    // slice's length. Within one page, `va + len` cannot wrap either.
    if len != 0 && offset + len <= PAGE_SIZE {
        if let Some(maddr) = vcpu.cached_stack_page(va - offset) {
            match access {
                StackAccess::Read(b) => mem.read(maddr + offset, b),
                StackAccess::Write(b) => mem.write(maddr + offset, b),
            }
            return Ok(());
        }
    }
    stack_access_uncached(mem, frames, domain, vcpu, va, access)
}

/// Where the trap frame at `va` lies in machine memory, if it is all in
/// one kernel-stack page that [`Vcpu::stack_pages`] holds.
#[inline(always)]
fn cached_frame_address(vcpu: &Vcpu, va: u64) -> Option<u64> {
    let offset = va & (PAGE_SIZE - 1);
    if offset + core::mem::size_of::<TrapFrame>() as u64 > PAGE_SIZE {
        return None;
    }
    vcpu.cached_stack_page(va - offset).map(|page| page + offset)
}

/// Reads the trap frame at `va` on the vCPU's kernel stack (`iret`): as
/// [`stack_access`], but copied as one value on the common path.
#[inline(always)]
pub fn read_trap_frame(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: crate::domain::DomainId,
    vcpu: &mut Vcpu,
    va: u64,
) -> Result<TrapFrame, HypercallError> {
    if let Some(maddr) = cached_frame_address(vcpu, va) {
        return Ok(mem.read_trap_frame(maddr));
    }
    let mut frame = TrapFrame::new_zeroed();
    stack_access_uncached(mem, frames, domain, vcpu, va, StackAccess::Read(frame.as_mut_bytes()))?;
    Ok(frame)
}

/// Writes a trap frame at `va` on the vCPU's kernel stack (a bounce): as
/// [`stack_access`], but copied as one value on the common path.
#[inline(always)]
pub fn write_trap_frame(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: crate::domain::DomainId,
    vcpu: &mut Vcpu,
    va: u64,
    frame: &TrapFrame,
) -> Result<(), HypercallError> {
    if let Some(maddr) = cached_frame_address(vcpu, va) {
        mem.write_trap_frame(maddr, frame);
        return Ok(());
    }
    stack_access_uncached(mem, frames, domain, vcpu, va, StackAccess::Write(frame.as_bytes()))
}

/// [`stack_access`] when the cache does not already cover the frame:
/// translate (and cache) each page, or take the general guest-memory path
/// for a range over more than two pages.
#[inline(never)]
pub fn stack_access_uncached(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: crate::domain::DomainId,
    vcpu: &mut Vcpu,
    va: u64,
    mut access: StackAccess<'_>,
) -> Result<(), HypercallError> {
    let len = access.len();
    let end = va.checked_add(len).ok_or(HypercallError::BadAddress)?;
    if len == 0 {
        return Ok(());
    }
    let first_page = va & !(PAGE_SIZE - 1);
    let last_page = (end - 1) & !(PAGE_SIZE - 1);
    if last_page - first_page > PAGE_SIZE {
        let mut view = GuestView { mem, frames, domain, root: vcpu.kernel_root };
        return match access {
            StackAccess::Read(b) => view.read(GuestSlice::new(va, len), b),
            StackAccess::Write(b) => view.write(GuestSlice::new(va, len), b),
        };
    }
    let writing = matches!(access, StackAccess::Write(_));
    // Translate both pages before touching either: all or nothing.
    let mut maddrs = [0u64; 2];
    let pages = if first_page == last_page { 1 } else { 2 };
    for (i, page) in [first_page, last_page].into_iter().take(pages).enumerate() {
        maddrs[i] = match vcpu.cached_stack_page(page) {
            // A cached page was translated for writing, so reads are fine too.
            Some(m) => m,
            None => {
                let view = GuestView { mem: &mut *mem, frames, domain, root: vcpu.kernel_root };
                let m = view.translate(page, if writing { Access::Write } else { Access::Read })? & !(PAGE_SIZE - 1);
                if writing {
                    vcpu.stack_pages[usize::from(page != first_page)] = (page, m, vcpu.kernel_root);
                }
                m
            }
        };
    }
    let split = (first_page + PAGE_SIZE).min(end) - va;
    let pieces = [(maddrs[0] + (va - first_page), 0, split), (maddrs[1], split, len - split)];
    for (at, from, n) in pieces {
        if n == 0 {
            continue;
        }
        let range = from as usize..(from + n) as usize;
        match &mut access {
            StackAccess::Read(b) => mem.read(at, &mut b[range]),
            StackAccess::Write(b) => mem.write(at, &b[range]),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Expect;
    use crate::testing::{system_with, DATA};

    #[test]
    fn a_frame_straddling_two_pages_is_written_whole_and_read_back() {
        let (mut sys, mut mem) = system_with(1, Expect::Exit(0));
        let d = &mut sys.domains[0];
        let top = d.vcpu.regs.rsp; // the initial stack's top, page-aligned
        let at = top - 0x1000 - 40; // 40 bytes in one stack page, 40 in the next
        let frame: [u8; 80] = core::array::from_fn(|i| i as u8);
        stack_access(&mut mem, &sys.frames, d.id, &mut d.vcpu, at, StackAccess::Write(&frame)).unwrap();
        assert_eq!(d.vcpu.stack_pages[0].0, top - 0x2000);
        assert_eq!(d.vcpu.stack_pages[1].0, top - 0x1000);
        let mut back = [0u8; 80];
        stack_access(&mut mem, &sys.frames, d.id, &mut d.vcpu, at, StackAccess::Read(&mut back)).unwrap();
        assert_eq!(back, frame);
        // The data page's neighbour (the start-info page) is read-only: a
        // frame across them is refused whole, and the data page keeps its bytes.
        let across = DATA + 0x1000 - 40;
        let mut before = [0u8; 40];
        stack_access(&mut mem, &sys.frames, d.id, &mut d.vcpu, across, StackAccess::Read(&mut before)).unwrap();
        assert_eq!(
            stack_access(&mut mem, &sys.frames, d.id, &mut d.vcpu, across, StackAccess::Write(&frame)),
            Err(HypercallError::BadAddress)
        );
        let mut after = [0u8; 40];
        stack_access(&mut mem, &sys.frames, d.id, &mut d.vcpu, across, StackAccess::Read(&mut after)).unwrap();
        assert_eq!(before, after);
    }
}
