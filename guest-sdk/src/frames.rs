//! Page frames: the domain's memory seen three ways, and an allocator of
//! whole frames.
//!
//! A frame of the domain has a *pfn* (its index in the domain, 0..nr_pages),
//! an *mfn* (the machine frame number page-table entries must hold, from
//! the start-info frame list) and a *virtual address* in the linear window
//! (`virt_base + pfn * 4 KiB`, see [`hypercall_abi::layout`]).
//!
//! [`PageFrame`] is one free frame taken from the heap (the domain's free
//! memory), zeroed and page-aligned, so it always has all three. While a
//! `PageFrame` exists its linear mapping is writable; code that turns it
//! into a page table (which must be read-only) takes it apart with
//! [`PageFrame::into_pfn`] and rebuilds it with [`PageFrame::from_pfn`]
//! once the frame is plain memory again, as [`paging`](crate::paging) does.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};

use hypercall_abi::PAGE_SIZE;

use crate::start_info::start_info;

/// The layout of one frame taken from the heap.
const FRAME_LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize) {
    Ok(layout) => layout,
    Err(_) => panic!("a page is a valid layout"),
};

/// The start-info frame list: the mfn of every pfn.
pub fn frame_list() -> &'static [u64] {
    let info = start_info();
    // SAFETY: 1. The hypervisor maps the frame list (read-only, `nr_pages`
    // little-endian u64s, 8-byte aligned at a page start) for the domain's
    // whole life; the SDK checked the start-info magic and version before
    // `main`. 2. Nothing in the guest writes it (it is read-only), so a
    // shared `'static` slice is sound.
    unsafe { core::slice::from_raw_parts(info.frame_list as *const u64, info.nr_pages as usize) }
}

/// The mfn of `pfn`, if the domain has that pfn.
pub fn pfn_to_mfn(pfn: u64) -> Option<u64> {
    frame_list().get(usize::try_from(pfn).ok()?).copied()
}

/// The pfn of machine frame `mfn`, if it is one of the domain's boot
/// frames (a linear search of the frame list: fine for the occasional
/// look-up, not for a loop).
pub fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    frame_list().iter().position(|m| *m == mfn).map(|pfn| pfn as u64)
}

/// The address of `pfn` in the linear window.
pub fn pfn_to_va(pfn: u64) -> u64 {
    start_info().virt_base + pfn * PAGE_SIZE
}

/// The pfn whose page holds `va`, if `va` is in the linear window.
pub fn va_to_pfn(va: u64) -> Option<u64> {
    let info = start_info();
    let pfn = va.checked_sub(info.virt_base)? / PAGE_SIZE;
    (pfn < info.nr_pages).then_some(pfn)
}

/// The mfn of the page holding `va` in the linear window.
pub fn va_to_mfn(va: u64) -> Option<u64> {
    pfn_to_mfn(va_to_pfn(va)?)
}

/// One whole frame of free memory, zeroed when allocated and mapped
/// writable in the linear window for as long as this value exists. Given
/// back to the heap on drop.
#[derive(Debug)]
pub struct PageFrame {
    pfn: u64,
}

impl PageFrame {
    /// A fresh zeroed frame, or `None` when the heap has no aligned page left.
    pub fn alloc() -> Option<PageFrame> {
        // SAFETY: `FRAME_LAYOUT` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(FRAME_LAYOUT) };
        if ptr.is_null() {
            return None;
        }
        let pfn = va_to_pfn(ptr as u64).expect("the heap lies in the linear window");
        Some(PageFrame { pfn })
    }

    /// Its pfn.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// Its machine frame number, for page-table entries.
    pub fn mfn(&self) -> u64 {
        pfn_to_mfn(self.pfn).expect("a heap frame is one of the domain's frames")
    }

    /// Its address in the linear window.
    pub fn va(&self) -> u64 {
        pfn_to_va(self.pfn)
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE as usize] {
        // SAFETY: the frame is a page-aligned heap allocation we own,
        // mapped (writable, hence readable) while `self` exists; `&self`
        // keeps mutation away for the borrow's life.
        unsafe { &*(self.va() as *const [u8; PAGE_SIZE as usize]) }
    }

    /// The frame's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE as usize] {
        // SAFETY: as for `bytes`, and `&mut self` makes the access exclusive.
        unsafe { &mut *(self.va() as *mut [u8; PAGE_SIZE as usize]) }
    }

    /// The frame as 512 words (page-table entries, for example).
    pub fn words_mut(&mut self) -> &mut [u64; 512] {
        // SAFETY: as for `bytes_mut`; the page is 8-byte aligned and every
        // bit pattern is a valid `u64`.
        unsafe { &mut *(self.va() as *mut [u64; 512]) }
    }

    /// Takes the frame apart, keeping it allocated: the caller now owns
    /// pfn `pfn` and must give it back with [`PageFrame::from_pfn`] (or
    /// leak it for good).
    pub fn into_pfn(self) -> u64 {
        let pfn = self.pfn;
        core::mem::forget(self);
        pfn
    }

    /// Rebuilds a frame taken apart with [`PageFrame::into_pfn`].
    ///
    /// # Safety
    ///
    /// `pfn` came from `into_pfn`, is not rebuilt twice, and its linear
    /// mapping is writable again (and maps the same frame).
    pub unsafe fn from_pfn(pfn: u64) -> PageFrame {
        PageFrame { pfn }
    }
}

impl Drop for PageFrame {
    fn drop(&mut self) {
        // SAFETY: `alloc` got this page from the heap with `FRAME_LAYOUT`,
        // and the invariant of `PageFrame` keeps it mapped writable, which
        // the allocator needs to write its free list into it.
        unsafe { dealloc(self.va() as *mut u8, FRAME_LAYOUT) };
    }
}
