//! What QEMU tells us at boot: the PVH `hvm_start_info` block.
//!
//! The layout is Xen's (`hvm_start_info`, version 1), written down once for
//! the hypervisor and the boot shim in [`hypercall_abi::pvh`]: a magic, the
//! module list (module 0 is the `-initrd` file, our boot bundle), the
//! command line and the E820-style memory map. It is read once, through the
//! boot identity map, into owned Rust values; nothing keeps pointers into it.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use hypercall_abi::pvh::{HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, PvhError};

/// The parts of `hvm_start_info` Parvus uses.
#[derive(Debug)]
pub struct BootInfo {
    /// RAM ranges (machine addresses).
    pub ram: Vec<Range<u64>>,
    /// Boot modules (machine address ranges); module 0 is the bundle.
    pub modules: Vec<Range<u64>>,
    /// The hypervisor's command line (`-append`).
    pub cmdline: String,
    /// Where the start-info block and its lists live, to keep them reserved.
    pub reserved: Vec<Range<u64>>,
}

/// Reads the block at physical address `paddr`.
///
/// # Safety
/// `paddr` must be the address QEMU passed in `ebx`, and the boot identity
/// map (first GiB) must still be active.
pub unsafe fn read(paddr: u64) -> Result<BootInfo, PvhError> {
    // SAFETY: the caller guarantees paddr is QEMU's start-info block, which
    // is identity-mapped and not written by anyone while we read it; any
    // bytes are a valid `HvmStartInfo` (it is `FromBytes`).
    let si = unsafe { &*(paddr as *const HvmStartInfo) };
    si.check()?;
    let mut reserved = alloc::vec![paddr..paddr + core::mem::size_of::<HvmStartInfo>() as u64];
    // SAFETY: `check` passed, so QEMU built these arrays, with the counts
    // it gives, in low, identity-mapped memory.
    let modules =
        unsafe { core::slice::from_raw_parts(si.modlist_paddr as *const HvmModlistEntry, si.nr_modules as usize) };
    // SAFETY: as above.
    let memmap =
        unsafe { core::slice::from_raw_parts(si.memmap_paddr as *const HvmMemmapEntry, si.memmap_entries as usize) };
    reserved.push(si.modlist_paddr..si.modlist_paddr + core::mem::size_of_val(modules) as u64);
    reserved.push(si.memmap_paddr..si.memmap_paddr + core::mem::size_of_val(memmap) as u64);
    Ok(BootInfo {
        ram: memmap.iter().filter_map(HvmMemmapEntry::ram).collect(),
        modules: modules.iter().map(HvmModlistEntry::range).collect(),
        // SAFETY: a NUL-terminated string QEMU wrote in identity-mapped memory.
        cmdline: unsafe { c_string(si.cmdline_paddr) },
        reserved,
    })
}

/// Copies a NUL-terminated string (at most 4 KiB).
///
/// # Safety
/// `paddr` is 0 or a NUL-terminated string in identity-mapped memory.
unsafe fn c_string(paddr: u64) -> String {
    if paddr == 0 {
        return String::new();
    }
    let p = paddr as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees a terminated string; 4 KiB caps the scan.
    while len < 4096 && unsafe { p.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just scanned are readable.
    String::from_utf8_lossy(unsafe { core::slice::from_raw_parts(p, len) }).into_owned()
}
