//! The hypervisor's heap: `linked_list_allocator` over RAM carved at boot.
//!
//! Its size follows the machine and the domains
//! ([`parvus_core::heap_account::heap_size`]): a fixed base, 24 bytes per
//! frame of the machine for the frame table, and each domain's record and
//! allowance. It is carved in two steps, because the domains are known
//! only once the boot bundle has been checked, which needs the heap:
//! [`init`] takes the base and the frame table's share from the first RAM
//! after the hypervisor's image that QEMU's start info and the bundle leave
//! free, before the frame table exists; [`grow`] then extends it by the
//! domains' share with the frames right after it. Both parts are reserved
//! in the frame table, so no domain is ever given them. The heap is
//! reached through the physical map.
//!
//! linked_list_allocator is small, widely used in hobby and teaching
//! kernels and needs no unsafe from us beyond handing it its memory.

use crate::arch::x86_64::paging::{physmap_end, PHYSMAP_BASE};
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};
use hypercall_abi::PAGE_SIZE;
use linked_list_allocator::LockedHeap;
use parvus_core::frame_table::{FrameTable, Owner};

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// The machine addresses the heap occupies (start, end), once carved.
static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);

/// Why the heap could not be carved.
#[derive(Clone, Copy, Debug)]
pub enum HeapError {
    /// No RAM range has this many free bytes after the hypervisor's image.
    NoRoom {
        /// Bytes wanted.
        bytes: u64,
    },
    /// The frames right after the heap are not free RAM, so it cannot grow
    /// by this many bytes.
    CannotGrow {
        /// Bytes wanted.
        bytes: u64,
        /// The first frame in the way.
        at: u64,
    },
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapError::NoRoom { bytes } => {
                write!(f, "no RAM range has {} KiB free after the hypervisor's image for its heap", bytes / 1024)
            }
            HeapError::CannotGrow { bytes, at } => write!(
                f,
                "the heap cannot grow by the {} KiB the domains need: machine address {at:#x} after it is not free RAM",
                bytes / 1024
            ),
        }
    }
}

/// Carves `bytes` (rounded up to whole pages) from the first RAM at or
/// above `floor`, below the physical map's end, that overlaps none of
/// `taken`, and hands it to the allocator. Called once, after the physical
/// map is built and before anything allocates; returns the machine range,
/// which the caller reserves in the frame table.
pub fn init(ram: &[Range<u64>], taken: &[Range<u64>], floor: u64, bytes: usize) -> Result<Range<u64>, HeapError> {
    let size = (bytes as u64).next_multiple_of(PAGE_SIZE);
    let place = ram.iter().find_map(|r| {
        let (mut start, end) = (floor.max(r.start).next_multiple_of(PAGE_SIZE), r.end.min(physmap_end()));
        while start + size <= end {
            match taken.iter().find(|t| t.start < start + size && start < t.end) {
                Some(t) => start = t.end.next_multiple_of(PAGE_SIZE),
                None => return Some(start..start + size),
            }
        }
        None
    });
    let range = place.ok_or(HeapError::NoRoom { bytes: size })?;
    START.store(range.start, Ordering::Relaxed);
    END.store(range.end, Ordering::Relaxed);
    // SAFETY: (1) the range is RAM that nothing else uses: it is below the
    // physical map's end, past the image and `floor`, and overlaps none of
    // `taken` (QEMU's start info and the boot bundle); the caller reserves
    // it in the frame table before any frame is handed out; (2) `init` is called once, before anything
    // allocates; (3) the physical map maps it writable for the hypervisor's
    // whole life.
    unsafe { ALLOCATOR.lock().init((PHYSMAP_BASE + range.start) as *mut u8, size as usize) };
    Ok(range)
}

/// Extends the heap to `bytes` in all (rounded up to whole pages) with the
/// frames right after it, which must be free RAM in `frames`; reserves
/// them there.
pub fn grow(frames: &mut FrameTable, bytes: usize) -> Result<(), HeapError> {
    let (start, end) = (START.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    let new_end = start + (bytes as u64).next_multiple_of(PAGE_SIZE);
    if new_end <= end {
        return Ok(());
    }
    let wanted = new_end - end;
    if let Some(mfn) = (end / PAGE_SIZE..new_end / PAGE_SIZE).find(|m| frames.owner(*m) != Some(Owner::Free)) {
        return Err(HeapError::CannotGrow { bytes: wanted, at: mfn * PAGE_SIZE });
    }
    frames.reserve(end / PAGE_SIZE, new_end / PAGE_SIZE);
    END.store(new_end, Ordering::Relaxed);
    // SAFETY: (1) the frames were free RAM and are reserved now, so nothing
    // else will ever use them; (2) they follow the heap's current end
    // directly, as `extend` requires; (3) the physical map maps them
    // writable for the hypervisor's whole life.
    unsafe { ALLOCATOR.lock().extend(wanted as usize) };
    Ok(())
}

/// The heap's size in bytes.
pub fn size() -> usize {
    ALLOCATOR.lock().size()
}

/// Bytes currently allocated, for the final report.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
