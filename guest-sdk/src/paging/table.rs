//! [`PageTable`]: one page-table page owned by the guest.
//!
//! Life of a table page: a zeroed [`PageFrame`] from the heap (writable),
//! optionally filled with initial entries while it is still writable, then
//! made read-only in the linear window with `update_va_mapping` (a frame
//! with a writable mapping cannot become a table), then pinned or linked
//! into a parent with `mmu_update` (the hypervisor validates it then). On
//! drop: unpinned, mapped writable again (which the hypervisor allows only
//! once nothing uses it as a table any more) and given back to the heap.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::mm::uvm_flags;
use hypercall_abi::PAGE_SIZE;

use super::{PagingError, Pte, PteFlags, ENTRIES};
use crate::frames::{pfn_to_mfn, pfn_to_va, PageFrame};
use crate::hypercall;

/// Flags of the linear-window mapping of a table page (read-only).
const READ_ONLY: PteFlags = PteFlags::PRESENT.union(PteFlags::USER).union(PteFlags::NO_EXECUTE);

/// Flags of the linear-window mapping of a plain heap page.
const READ_WRITE: PteFlags = READ_ONLY.union(PteFlags::WRITABLE);

/// Table pages that could not be made plain memory on drop (still in use
/// as a table somewhere) and were left allocated.
static LEAKED: AtomicU64 = AtomicU64::new(0);

/// How many table pages were dropped while still in use and left allocated
/// (0 in a guest that tears its address spaces down in order).
pub fn leaked_tables() -> u64 {
    LEAKED.load(Ordering::Relaxed)
}

/// One page-table page of level 1..=4, owned by the guest.
#[derive(Debug)]
pub struct PageTable {
    pfn: u64,
    level: u8,
    pinned: bool,
}

impl PageTable {
    /// An empty table of `level` (1..=4), read-only and not yet pinned or linked.
    pub fn new(level: u8) -> Result<PageTable, PagingError> {
        Self::with_entries(level, &[])
    }

    /// A table of `level` whose entries `entries` (index, entry) are
    /// written while the page is still plain memory, so no hypercall is
    /// needed for them; the hypervisor checks them when the table is
    /// pinned or linked.
    pub fn with_entries(level: u8, entries: &[(usize, Pte)]) -> Result<PageTable, PagingError> {
        assert!((1..=4).contains(&level), "page-table levels are 1..=4");
        let mut frame = PageFrame::alloc().ok_or(PagingError::OutOfFrames)?;
        let words = frame.words_mut();
        for &(index, entry) in entries {
            words[index] = entry.0;
        }
        let (va, mfn) = (frame.va(), frame.mfn());
        // SAFETY: the page is a heap frame we own exclusively (`frame`), so
        // no Rust reference into it exists; making it read-only breaks
        // nothing, since from now on it is only read.
        unsafe { hypercall::update_va_mapping(va, Pte::new(mfn, READ_ONLY).0, uvm_flags::INVLPG) }?;
        Ok(PageTable { pfn: frame.into_pfn(), level, pinned: false })
    }

    /// Its level (1: maps pages, 4: top level).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Its machine frame number (what a parent entry or a base pointer names).
    pub fn mfn(&self) -> u64 {
        pfn_to_mfn(self.pfn).expect("a heap frame is one of the domain's frames")
    }

    /// Its address in the linear window (mapped read-only).
    pub fn va(&self) -> u64 {
        pfn_to_va(self.pfn)
    }

    /// Machine address of entry `index`: the `ptr` of an `mmu_update` request.
    pub fn entry_address(&self, index: usize) -> u64 {
        assert!(index < ENTRIES, "a table has {ENTRIES} entries");
        self.mfn() * PAGE_SIZE + index as u64 * 8
    }

    /// Entry `index`, as the hypervisor last wrote it.
    pub fn entry(&self, index: usize) -> Pte {
        assert!(index < ENTRIES, "a table has {ENTRIES} entries");
        // SAFETY: the page is ours and stays mapped (read-only) in the
        // linear window while `self` exists; `index` is inside it. The
        // hypervisor writes entries (and the CPU accessed/dirty bits), so
        // the read is volatile.
        Pte(unsafe { (self.va() as *const u64).add(index).read_volatile() })
    }

    /// Pins the table: the hypervisor validates it now and keeps it
    /// validated even while nothing references it.
    pub fn pin(&mut self) -> Result<(), PagingError> {
        hypercall::pin_table(self.level, self.mfn())?;
        self.pinned = true;
        Ok(())
    }

    /// Drops the pin.
    pub fn unpin(&mut self) -> Result<(), PagingError> {
        hypercall::unpin_table(self.mfn())?;
        self.pinned = false;
        Ok(())
    }

    /// Whether it is pinned.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Unpins the table and maps it writable again; the hypervisor refuses
    /// (`FrameIsPageTable`) while a parent, a base pointer or another pin
    /// still uses it as a table.
    fn make_plain(&mut self) -> Result<(), PagingError> {
        if self.pinned {
            self.unpin()?;
        }
        let (va, mfn) = (self.va(), self.mfn());
        // SAFETY: the page is ours, nothing Rust holds points into it, and
        // the new entry maps the very same frame, only writable again.
        unsafe { hypercall::update_va_mapping(va, Pte::new(mfn, READ_WRITE).0, uvm_flags::INVLPG) }?;
        Ok(())
    }

    /// Turns the table back into a plain writable frame, or gives the
    /// table back with the reason it is still in use.
    pub fn into_frame(mut self) -> Result<PageFrame, (PageTable, PagingError)> {
        match self.make_plain() {
            Ok(()) => {
                let pfn = self.pfn;
                core::mem::forget(self);
                // SAFETY: `pfn` came from `PageFrame::into_pfn` in
                // `with_entries`, `self` is forgotten so it is rebuilt once,
                // and `make_plain` mapped it writable again.
                Ok(unsafe { PageFrame::from_pfn(pfn) })
            }
            Err(e) => Err((self, e)),
        }
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        match self.make_plain() {
            // SAFETY: as in `into_frame`; dropping `self` afterwards does
            // nothing more (this is its drop).
            Ok(()) => drop(unsafe { PageFrame::from_pfn(self.pfn) }),
            // Still a table somewhere: the heap must never write it, so it
            // stays allocated.
            Err(_) => {
                LEAKED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
