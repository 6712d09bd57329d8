//! Physical memory, read and written through the identity map: the only
//! module of this kernel that dereferences addresses it computed.
//!
//! The kernel maps `[0, mem_bytes)` at the same virtual addresses in every
//! address space (PML4 slot 0), so a physical address *is* a pointer.
//! Invariant relied on by every function: an address passed in lies in a
//! frame the platform owns (a page table, or a data frame of the frame
//! pool), carved out of the free memory after the kernel image, so no
//! Rust object lives there, and it is identity-mapped writable.
//!
//! Page-table entries are read and written with single aligned 64-bit
//! volatile accesses, never through references: under trap-and-emulate
//! the hypervisor write-protects the kernel's page tables and emulates
//! each store (and the CPU itself sets accessed and dirty bits natively).

use workload_core::layout::PAGE_SIZE;

/// Reads the 8-byte entry at physical address `address`.
pub fn read_entry(address: u64) -> u64 {
    assert!(address.is_multiple_of(8), "entries are 8-byte aligned");
    // SAFETY: an entry of a page table the platform owns (module
    // invariant), identity-mapped, 8-byte aligned (checked).
    unsafe { (address as *const u64).read_volatile() }
}

/// Writes the 8-byte entry at physical address `address`.
pub fn write_entry(address: u64, entry: u64) {
    assert!(address.is_multiple_of(8), "entries are 8-byte aligned");
    // SAFETY: as in `read_entry`; the caller flushes what the change makes
    // stale (`invlpg`, or a CR3 load).
    unsafe { (address as *mut u64).write_volatile(entry) };
}

/// Fills the frame at `address` with zeros (with `memset`).
pub fn zero(address: u64) {
    assert!(address.is_multiple_of(PAGE_SIZE), "frames are page-aligned");
    // SAFETY: a whole frame the platform owns (module invariant), which
    // nothing else uses while the kernel zeroes it (user mode is stopped).
    unsafe { core::ptr::write_bytes(address as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Copies the frame at `src` into the frame at `dst` (with `memcpy`).
pub fn copy(dst: u64, src: u64) {
    assert!(dst.is_multiple_of(PAGE_SIZE) && src.is_multiple_of(PAGE_SIZE), "frames are page-aligned");
    assert_ne!(dst, src, "copying a frame onto itself");
    // SAFETY: two different whole frames the platform owns (module
    // invariant; distinct and aligned, so they do not overlap), neither
    // used by anything else meanwhile.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, PAGE_SIZE as usize) };
}
