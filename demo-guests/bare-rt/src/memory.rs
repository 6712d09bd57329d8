//! Where the kernel image ends, and the user-program sections in it.
//!
//! `kernel.ld` defines these symbols; only their addresses mean anything.
//! Because the kernel is linked and loaded at the same addresses
//! (`p_paddr == p_vaddr`) and started on an identity map, each address is
//! both virtual and physical.

use core::ops::Range;

use crate::BootInfo;

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __user_text_start: u8;
    static __user_text_end: u8;
    static __user_rodata_start: u8;
    static __user_rodata_end: u8;
}

/// The kernel image, page-aligned: from its first byte
/// ([`LOADER_AREA_END`](hypercall_abi::bare_metal::LOADER_AREA_END)) to
/// `__kernel_end`, bss and the runtime's stack included.
pub fn image() -> Range<u64> {
    (&raw const __kernel_start) as u64..(&raw const __kernel_end) as u64
}

/// The first physical address after the image: where free memory starts.
pub fn kernel_end() -> u64 {
    (&raw const __kernel_end) as u64
}

/// Free RAM after the image: `kernel_end()..boot.mem_bytes` (empty if the
/// loader reported less memory than the image needs, which it never does).
pub fn free_memory(boot: &BootInfo) -> Range<u64> {
    let start = kernel_end();
    start..boot.mem_bytes.max(start)
}

/// The addresses of `.user_text` (page-aligned; empty without user code).
pub fn user_text() -> Range<u64> {
    (&raw const __user_text_start) as u64..(&raw const __user_text_end) as u64
}

/// The addresses of `.user_rodata` (page-aligned; may be empty).
pub fn user_rodata() -> Range<u64> {
    (&raw const __user_rodata_start) as u64..(&raw const __user_rodata_end) as u64
}
