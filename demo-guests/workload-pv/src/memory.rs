//! Reading and writing the frames the platform owns, through the linear
//! window (`virt_base + pfn * 4 KiB`, where the hypervisor maps all of a
//! domain's memory). The only module here that dereferences addresses.
//!
//! Invariant relied on by every function: a pfn passed in belongs to one
//! of the platform's two pools (see `platform.rs`), carved out of the
//! heap at boot and never given back, so no Rust object lives in it. Data
//! frames stay writable in the window; table frames were made read-only
//! there (a frame mapped writable cannot be a page table) and are only
//! read.

use parvus_guest_sdk::frames::pfn_to_va;
use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;

/// Entry `index` (0..512) of the page table in frame `pfn`.
pub fn read_entry(pfn: u64, index: usize) -> u64 {
    assert!(index < 512, "a table has 512 entries");
    // SAFETY: the frame is a table frame of the platform (module
    // invariant), mapped read-only in the window; `index` is inside it.
    // The hypervisor writes table entries (and the CPU accessed/dirty
    // bits), hence a volatile read and no reference.
    unsafe { (pfn_to_va(pfn) as *const u64).add(index).read_volatile() }
}

/// Fills data frame `pfn` with zeros.
pub fn zero(pfn: u64) {
    // SAFETY: a data frame of the platform (module invariant), writable in
    // the window, and nothing else refers to it while the kernel zeroes it
    // (user mode does not run meanwhile).
    unsafe { core::ptr::write_bytes(pfn_to_va(pfn) as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Copies data frame `src` into data frame `dst`.
pub fn copy(dst: u64, src: u64) {
    assert_ne!(dst, src, "copying a frame onto itself");
    // SAFETY: two different data frames of the platform (module invariant,
    // checked distinct, so the pages do not overlap), both mapped in the
    // window (`dst` writable), neither used by anything else meanwhile.
    unsafe {
        core::ptr::copy_nonoverlapping(pfn_to_va(src) as *const u8, pfn_to_va(dst) as *mut u8, PAGE_SIZE as usize)
    };
}
