//! [`MachineMemory`] over the physical map: how the logic reaches RAM.

use super::paging::{physmap_end, PHYSMAP_BASE};
use hypercall_abi::trap::TrapFrame;
use parvus_core::machine_memory::MachineMemory;

/// All machine memory, through the hypervisor's physical map.
pub struct PhysMap;

#[inline]
fn checked(maddr: u64, len: usize) -> *mut u8 {
    let end = maddr.checked_add(len as u64).expect("machine range wraps");
    assert!(end <= physmap_end(), "machine address {maddr:#x} beyond the physical map");
    (PHYSMAP_BASE + maddr) as *mut u8
}

impl MachineMemory for PhysMap {
    fn read(&self, maddr: u64, buf: &mut [u8]) {
        let src = checked(maddr, buf.len());
        // SAFETY: (1) the physical map covers [0, physmap_end()) read-write,
        // checked above; (2) callers in parvus-core only name frames they have
        // checked (a domain's or the hypervisor's), never the hypervisor image
        // in use by Rust references, so no reference is aliased.
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&mut self, maddr: u64, data: &[u8]) {
        let dst = checked(maddr, data.len());
        // SAFETY: as for `read`; the frames written belong to domains or to
        // the hypervisor's page-table pool, not to Rust objects.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    // Word-sized accesses (page-table entries, ring indexes) are on every
    // hypercall's path: one load or store instead of a byte copy, and
    // inline (with `checked`) wherever the generic logic that calls them
    // is compiled: which codegen unit that is depends on the size of code
    // elsewhere, and a call costs the page-table hypercalls a dozen
    // instructions each.

    #[inline]
    fn read_u64(&self, maddr: u64) -> u64 {
        let p = checked(maddr, 8).cast::<u64>();
        // SAFETY: as for `read`; read_unaligned has no alignment requirement.
        unsafe { p.read_unaligned() }
    }

    #[inline]
    fn write_u64(&mut self, maddr: u64, value: u64) {
        let p = checked(maddr, 8).cast::<u64>();
        // SAFETY: as for `write`.
        unsafe { p.write_unaligned(value) }
    }

    // The trap frame of every bounce and `iret`: one typed copy, which
    // the compiler turns into loads and stores of its fields.

    fn read_trap_frame(&self, maddr: u64) -> TrapFrame {
        let p = checked(maddr, core::mem::size_of::<TrapFrame>()).cast::<TrapFrame>();
        // SAFETY: as for `read`; every bit pattern is a valid TrapFrame
        // (ten u64s), and read_unaligned has no alignment requirement.
        unsafe { p.read_unaligned() }
    }

    fn write_trap_frame(&mut self, maddr: u64, frame: &TrapFrame) {
        let p = checked(maddr, core::mem::size_of::<TrapFrame>()).cast::<TrapFrame>();
        // SAFETY: as for `write`.
        unsafe { p.write_unaligned(*frame) }
    }

    fn read_u32(&self, maddr: u64) -> u32 {
        let p = checked(maddr, 4).cast::<u32>();
        // SAFETY: as for `read`.
        unsafe { p.read_unaligned() }
    }

    fn write_u32(&mut self, maddr: u64, value: u32) {
        let p = checked(maddr, 4).cast::<u32>();
        // SAFETY: as for `write`.
        unsafe { p.write_unaligned(value) }
    }
}

/// The bytes of a machine range (the boot bundle), through the physical map.
///
/// # Safety
/// The range must be RAM that nothing writes for the lifetime `'static`
/// (it is reserved in the frame table).
pub unsafe fn static_bytes(range: core::ops::Range<u64>) -> &'static [u8] {
    let p = checked(range.start, (range.end - range.start) as usize);
    // SAFETY: mapped (checked above) and, by the caller's guarantee, immutable forever.
    unsafe { core::slice::from_raw_parts(p, (range.end - range.start) as usize) }
}
