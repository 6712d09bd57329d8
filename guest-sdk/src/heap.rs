//! The global allocator, so guests can use `alloc` (`Vec`, `String`, `Box`).
//!
//! The heap is the domain's free memory, `[free_start, free_end)` from the
//! start-info page, managed by `linked_list_allocator`: a small, widely used
//! `no_std` first-fit allocator (it backs many hobby and teaching kernels,
//! including the "Writing an OS in Rust" series) that needs nothing but a
//! memory range. Writing and debugging a fresh allocator would teach less
//! than the rest of this SDK and add risk; its speed is not what Parvus
//! measures. When the heap runs out, allocation fails and `alloc` panics
//! with a message, which the panic handler reports.

use hypercall_abi::{StartInfo, PAGE_SIZE};
use linked_list_allocator::LockedHeap;

use crate::console::HypercallWriter;
use crate::start_info::in_domain_memory;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands the free memory named in the start-info page to the allocator, if
/// it is a sane range: page-aligned and inside the domain's memory.
pub(crate) fn init(info: &StartInfo) {
    let (start, end) = (info.free_start, info.free_end);
    let sane = start.is_multiple_of(PAGE_SIZE)
        && end.is_multiple_of(PAGE_SIZE)
        && start <= end
        && in_domain_memory(info, start, end - start);
    if !sane {
        use core::fmt::Write;
        let _ = writeln!(
            HypercallWriter,
            "parvus-guest-sdk: free memory [{start:#x}, {end:#x}) is not inside this domain's memory; no heap"
        );
        return;
    }
    if start == end {
        return;
    }
    // SAFETY: 1. The hypervisor's start-info page gives `[start, end)` to the
    // domain as free memory: mapped writable, used by nothing else (not the
    // image, stack, start info, ring or page tables), for the domain's life.
    // 2. We checked it is a non-empty range inside the domain's memory.
    // 3. `init` runs once, from the entry code, before `main` can allocate.
    unsafe { HEAP.lock().init(start as *mut u8, (end - start) as usize) };
}

/// Size of the heap in bytes (0 if the domain has no free memory).
pub fn size() -> usize {
    HEAP.lock().size()
}

/// Bytes of the heap not currently allocated.
pub fn free() -> usize {
    HEAP.lock().free()
}
