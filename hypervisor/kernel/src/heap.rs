//! The hypervisor's heap: `linked_list_allocator` over a static region.
//!
//! A fixed region in `.bss` needs no frame allocator to exist first (the
//! frame table itself lives on this heap). linked_list_allocator is small,
//! widely used in hobby and teaching kernels and needs no unsafe from us
//! beyond handing it the region once.

use linked_list_allocator::LockedHeap;

/// Heap size. The largest user is the frame table (16 bytes per 4 KiB frame:
/// 512 KiB for 128 MiB of RAM).
pub const HEAP_SIZE: usize = 8 * 1024 * 1024;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the heap region to the allocator. Called once, before any allocation.
pub fn init() {
    let start = core::ptr::addr_of_mut!(HEAP_AREA).cast::<u8>();
    // SAFETY: (1) HEAP_AREA is used by nothing but the allocator; (2) init
    // is called once, from kmain, before anything allocates; (3) the region
    // is HEAP_SIZE bytes of writable .bss.
    unsafe { ALLOCATOR.lock().init(start, HEAP_SIZE) };
}

/// Bytes currently allocated, for the final report.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
