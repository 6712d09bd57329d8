//! [`AddressSpace`]: the page tables of one guest process.
//!
//! Ring compression gives every process two top-level tables:
//!
//! ```text
//!   kernel L4 (loaded with NewBaseptr)      user L4 (loaded with NewUserBaseptr)
//!   slot 0: boot tables' slot 0 (kernel)    slot 0: user-only tree (user image)
//!   slot n: process tree (shared L3) -----> slot n: the same L3
//! ```
//!
//! In kernel mode the guest kernel sees its own memory (slot 0, exactly as
//! at boot) and the process's slots; in user mode the process sees only
//! its own slots and, in slot 0, a separate tree that maps nothing but the
//! pages the kernel chose to show it (the user sections of the image,
//! read-only, at the addresses they were linked at). The kernel's memory is
//! simply absent from user mode's tables.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hypercall_abi::mm::MmuextCmd;
use hypercall_abi::PAGE_SIZE;

use super::{
    boot_root_entry, check_user_page, set_active_root, table_index, Batch, PageTable, PagingError, Pte, PteFlags,
    ACTIVE_ROOT,
};
use crate::frames::{pfn_to_mfn, pfn_to_va, va_to_pfn, PageFrame};
use crate::hypercall::{self, Aligned};
use crate::user;

/// Flags of an entry linking a lower-level table: rights are decided by
/// the level-1 entry alone.
const LINK: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::USER);

/// A page mapped in user space.
#[derive(Debug)]
enum Page {
    /// A frame the address space owns (given back when unmapped).
    Owned(PageFrame),
    /// A page of the guest image (pfn), shown to user mode read-only.
    Image(u64),
}

impl Page {
    fn pfn(&self) -> u64 {
        match self {
            Page::Owned(frame) => frame.pfn(),
            Page::Image(pfn) => *pfn,
        }
    }
}

/// The page tables of one guest process: a kernel and a user top-level
/// table (both pinned), the tables below them, and the frames mapped.
///
/// Dropping it unpins everything and gives every table and owned frame back
/// to the heap; if it is loaded, the boot tables are loaded first.
#[derive(Debug)]
pub struct AddressSpace {
    // Drop order matters: the roots go first, which devalidates the whole
    // tree, so that the lower tables can then be made plain memory.
    kernel_root: PageTable,
    user_root: PageTable,
    l3: BTreeMap<u64, PageTable>,
    l2: BTreeMap<u64, PageTable>,
    l1: BTreeMap<u64, PageTable>,
    pages: BTreeMap<u64, Page>,
}

impl AddressSpace {
    /// A new address space: kernel root with the boot slot 0, empty user
    /// root, both pinned.
    pub fn new() -> Result<AddressSpace, PagingError> {
        let mut kernel_root = PageTable::with_entries(4, &[(0, boot_root_entry(0))])?;
        kernel_root.pin()?;
        let mut user_root = PageTable::new(4)?;
        user_root.pin()?;
        Ok(AddressSpace {
            kernel_root,
            user_root,
            l3: BTreeMap::new(),
            l2: BTreeMap::new(),
            l1: BTreeMap::new(),
            pages: BTreeMap::new(),
        })
    }

    /// Mfn of the kernel top-level table (for `NewBaseptr`).
    pub fn kernel_root_mfn(&self) -> u64 {
        self.kernel_root.mfn()
    }

    /// Mfn of the user top-level table (for `NewUserBaseptr`).
    pub fn user_root_mfn(&self) -> u64 {
        self.user_root.mfn()
    }

    /// Loads this address space: its kernel table for kernel mode and its
    /// user table for user mode, in one `mmuext_op`.
    pub fn activate(&self) -> Result<(), PagingError> {
        let ops = Aligned([
            hypercall::mmuext(MmuextCmd::NewBaseptr, self.kernel_root_mfn()),
            hypercall::mmuext(MmuextCmd::NewUserBaseptr, self.user_root_mfn()),
        ]);
        // SAFETY: the kernel table's slot 0 is the boot tables' slot 0, where
        // all of the kernel's memory lives, so everything Rust code uses
        // stays mapped as it was.
        unsafe { hypercall::mmuext_op(&ops.0) }?;
        set_active_root(self.kernel_root_mfn());
        Ok(())
    }

    /// Whether this address space is loaded.
    pub fn is_active(&self) -> bool {
        ACTIVE_ROOT.load(core::sync::atomic::Ordering::Relaxed) == self.kernel_root_mfn()
    }

    /// Starts a batch of changes, sent in as few `mmu_update` calls as
    /// possible when it is finished (or dropped).
    pub fn batch(&mut self) -> SpaceBatch<'_> {
        SpaceBatch { space: self, batch: Batch::new(), released: Vec::new() }
    }

    /// Maps `frame` at `va` (user mode and, outside slot 0, kernel mode)
    /// with `flags` plus `PRESENT | USER`; the address space owns the frame
    /// from now on.
    pub fn map(&mut self, va: u64, frame: PageFrame, flags: PteFlags) -> Result<(), PagingError> {
        let mut batch = self.batch();
        batch.map(va, frame, flags)?;
        batch.finish()
    }

    /// Unmaps the page at `va` and gives its frame back (if owned).
    pub fn unmap(&mut self, va: u64) -> Result<(), PagingError> {
        let mut batch = self.batch();
        batch.unmap(va)?;
        batch.finish()
    }

    /// Changes the rights of the page at `va` to `flags` plus `PRESENT | USER`.
    pub fn protect(&mut self, va: u64, flags: PteFlags) -> Result<(), PagingError> {
        let mut batch = self.batch();
        batch.protect(va, flags)?;
        batch.finish()
    }

    /// Shows the image's user sections (see [`user`](crate::user)) to user
    /// mode, read-only, at the addresses they were linked at: `.user_text`
    /// executable, `.user_rodata` not.
    pub fn map_user_image(&mut self) -> Result<(), PagingError> {
        let mut batch = self.batch();
        for (range, flags) in [(user::text_range(), PteFlags::empty()), (user::rodata_range(), PteFlags::NO_EXECUTE)] {
            for va in range.step_by(PAGE_SIZE as usize) {
                let pfn = va_to_pfn(va).ok_or(PagingError::BadAddress(va))?;
                batch.map_page(va, Page::Image(pfn), flags)?;
            }
        }
        batch.finish()
    }

    /// The machine frame and flags `va` maps to in user mode, if present.
    pub fn translate(&self, va: u64) -> Option<(u64, PteFlags)> {
        let pte = self.l1.get(&(va >> 21))?.entry(table_index(va, 1));
        pte.is_present().then(|| (pte.mfn(), pte.flags()))
    }

    /// Machine address of the level-1 entry for `va`, if its table exists
    /// (for hand-made `mmu_update` requests, as benchmarks make).
    pub fn entry_address(&self, va: u64) -> Option<u64> {
        Some(self.l1.get(&(va >> 21))?.entry_address(table_index(va, 1)))
    }

    /// Number of pages mapped.
    pub fn mapped_pages(&self) -> usize {
        self.pages.len()
    }

    /// Number of table pages (both roots included).
    pub fn table_pages(&self) -> usize {
        2 + self.l3.len() + self.l2.len() + self.l1.len()
    }

    /// Copies `buf.len()` bytes from user address `va`, checking that every
    /// page is mapped for user mode. Reads through the kernel's own mapping
    /// of each frame, so it works whichever address space is loaded.
    pub fn copy_from_user(&self, va: u64, buf: &mut [u8]) -> Result<(), PagingError> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = va.checked_add(done as u64).ok_or(PagingError::BadAddress(va))?;
            let (page, offset) = (addr & !(PAGE_SIZE - 1), addr % PAGE_SIZE);
            let present = self.translate(page).is_some_and(|(_, flags)| flags.contains(PteFlags::USER));
            let pfn = match (present, self.pages.get(&(page / PAGE_SIZE))) {
                (true, Some(p)) => p.pfn(),
                _ => return Err(PagingError::NotMapped(addr)),
            };
            let n = ((PAGE_SIZE - offset) as usize).min(buf.len() - done);
            // SAFETY: 1. The source is `n` bytes inside the page of `pfn`,
            // mapped readable in the linear window: an owned frame stays
            // mapped writable while the `PageFrame` exists, an image page is
            // part of the loaded image. 2. `buf` is kernel memory borrowed
            // mutably, so it is neither an owned user frame (allocated to
            // us) nor read-only image memory: no overlap. 3. User mode does
            // not run while the kernel does, so nothing writes the source.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (pfn_to_va(pfn) + offset) as *const u8,
                    buf[done..].as_mut_ptr(),
                    n,
                );
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        if self.is_active() {
            // A loaded table cannot be freed. If even this fails, the
            // tables below stay tables and are counted as leaked.
            let _ = super::activate_boot();
        }
    }
}

/// Changes to an [`AddressSpace`] collected into `mmu_update` batches.
/// Send them with [`SpaceBatch::finish`]; dropping the batch sends them too,
/// and panics if the hypervisor refuses one (it never should: every request
/// is built from the address space's own bookkeeping).
pub struct SpaceBatch<'a> {
    space: &'a mut AddressSpace,
    batch: Batch,
    /// Frames unmapped by this batch, given back once the unmapping is done.
    released: Vec<PageFrame>,
}

impl SpaceBatch<'_> {
    /// Adds a request that only touches this address space's user tree or
    /// its kernel root outside slot 0.
    fn push(&mut self, ptr: u64, entry: Pte) -> Result<(), PagingError> {
        // SAFETY: every caller passes an entry address of a table of this
        // address space's own tree, or of its kernel root outside slot 0;
        // the running kernel's memory is all in slot 0, mapped by the boot
        // tables, which no request here touches.
        unsafe { self.batch.push(ptr, entry) }.map_err(PagingError::Batch)
    }

    /// Machine address of the level-1 entry for `va`, creating (and
    /// linking, in this batch) the tables on the way.
    fn l1_entry(&mut self, va: u64) -> Result<u64, PagingError> {
        let slot = va >> 39;
        if !self.space.l3.contains_key(&slot) {
            let table = PageTable::new(3)?;
            let link = Pte::new(table.mfn(), LINK);
            self.push(self.space.user_root.entry_address(slot as usize), link)?;
            if slot != 0 {
                self.push(self.space.kernel_root.entry_address(slot as usize), link)?;
            }
            self.space.l3.insert(slot, table);
        }
        for level in [2u8, 1] {
            let key = va >> (12 + 9 * level as u64);
            let parent_key = va >> (12 + 9 * (level as u64 + 1));
            let exists = if level == 2 { self.space.l2.contains_key(&key) } else { self.space.l1.contains_key(&key) };
            if exists {
                continue;
            }
            let table = PageTable::new(level)?;
            let parent = if level == 2 { &self.space.l3[&parent_key] } else { &self.space.l2[&parent_key] };
            let ptr = parent.entry_address(table_index(va, level + 1));
            self.push(ptr, Pte::new(table.mfn(), LINK))?;
            if level == 2 {
                self.space.l2.insert(key, table);
            } else {
                self.space.l1.insert(key, table);
            }
        }
        Ok(self.space.l1[&(va >> 21)].entry_address(table_index(va, 1)))
    }

    fn map_page(&mut self, va: u64, page: Page, flags: PteFlags) -> Result<(), PagingError> {
        check_user_page(va)?;
        if self.space.pages.contains_key(&(va / PAGE_SIZE)) {
            return Err(PagingError::AlreadyMapped(va));
        }
        let ptr = self.l1_entry(va)?;
        let mfn = pfn_to_mfn(page.pfn()).ok_or(PagingError::BadAddress(va))?;
        self.push(ptr, Pte::new(mfn, flags | PteFlags::PRESENT | PteFlags::USER))?;
        self.space.pages.insert(va / PAGE_SIZE, page);
        Ok(())
    }

    /// Maps `frame` at `va` with `flags` plus `PRESENT | USER`; the address
    /// space owns the frame from now on.
    pub fn map(&mut self, va: u64, frame: PageFrame, flags: PteFlags) -> Result<(), PagingError> {
        self.map_page(va, Page::Owned(frame), flags)
    }

    /// Unmaps the page at `va`; an owned frame goes back to the heap once
    /// the batch is sent.
    pub fn unmap(&mut self, va: u64) -> Result<(), PagingError> {
        check_user_page(va)?;
        let ptr = self.space.entry_address(va).ok_or(PagingError::NotMapped(va))?;
        let page = self.space.pages.remove(&(va / PAGE_SIZE)).ok_or(PagingError::NotMapped(va))?;
        let pushed = self.push(ptr, Pte::EMPTY);
        match page {
            Page::Owned(frame) if pushed.is_ok() => self.released.push(frame),
            // Not known to be unmapped: never reuse the frame.
            Page::Owned(frame) => core::mem::forget(frame),
            Page::Image(_) => {}
        }
        pushed
    }

    /// Sets the rights of the page at `va` to `flags` plus `PRESENT | USER`.
    pub fn protect(&mut self, va: u64, flags: PteFlags) -> Result<(), PagingError> {
        check_user_page(va)?;
        let ptr = self.space.entry_address(va).ok_or(PagingError::NotMapped(va))?;
        let pfn = self.space.pages.get(&(va / PAGE_SIZE)).ok_or(PagingError::NotMapped(va))?.pfn();
        let mfn = pfn_to_mfn(pfn).ok_or(PagingError::BadAddress(va))?;
        self.push(ptr, Pte::new(mfn, flags | PteFlags::PRESENT | PteFlags::USER))
    }

    /// Sends what is left and gives back the frames unmapped.
    pub fn finish(mut self) -> Result<(), PagingError> {
        self.send()
    }

    fn send(&mut self) -> Result<(), PagingError> {
        let sent = self.batch.flush();
        let released = core::mem::take(&mut self.released);
        match sent {
            Ok(()) => {
                drop(released);
                Ok(())
            }
            Err(e) => {
                // Some may still be mapped in user space: never reuse them.
                released.into_iter().for_each(core::mem::forget);
                Err(PagingError::Batch(e))
            }
        }
    }
}

impl Drop for SpaceBatch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.send() {
            panic!("address-space batch dropped with a refused request: {e}");
        }
    }
}
