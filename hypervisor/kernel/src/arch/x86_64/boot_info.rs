//! What QEMU tells us at boot: the PVH `hvm_start_info` block.
//!
//! The layout is Xen's (`hvm_start_info`, version 1): a magic, the module
//! list (module 0 is the `-initrd` file, our boot bundle), the command line
//! and the E820-style memory map. It is read once, through the boot identity
//! map, into owned Rust values; nothing keeps pointers into it.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

const HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct HvmModule {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

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

/// Why the block could not be used.
#[derive(Debug)]
pub enum BootInfoError {
    /// The magic is wrong: not booted by a PVH loader.
    BadMagic(u32),
    /// Version 0 has no memory map.
    NoMemoryMap,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(f, "hvm_start_info magic is {m:#x}, expected {HVM_START_MAGIC:#x}: not a PVH boot"),
            BootInfoError::NoMemoryMap => write!(f, "hvm_start_info version 0 has no memory map; QEMU 4.0 or later is needed"),
        }
    }
}

/// Reads the block at physical address `paddr`.
///
/// # Safety
/// `paddr` must be the address QEMU passed in `ebx`, and the boot identity
/// map (first GiB) must still be active.
pub unsafe fn read(paddr: u64) -> Result<BootInfo, BootInfoError> {
    // SAFETY: the caller guarantees paddr is QEMU's start-info block, which
    // is identity-mapped and not written by anyone while we read it.
    let si = unsafe { &*(paddr as *const HvmStartInfo) };
    if si.magic != HVM_START_MAGIC {
        return Err(BootInfoError::BadMagic(si.magic));
    }
    if si.version < 1 || si.memmap_paddr == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let mut reserved = alloc::vec![paddr..paddr + core::mem::size_of::<HvmStartInfo>() as u64];
    // SAFETY: QEMU built these arrays with the counts it gives, in low,
    // identity-mapped memory.
    let modules = unsafe { core::slice::from_raw_parts(si.modlist_paddr as *const HvmModule, si.nr_modules as usize) };
    // SAFETY: as above.
    let memmap = unsafe { core::slice::from_raw_parts(si.memmap_paddr as *const HvmMemmapEntry, si.memmap_entries as usize) };
    reserved.push(si.modlist_paddr..si.modlist_paddr + core::mem::size_of_val(modules) as u64);
    reserved.push(si.memmap_paddr..si.memmap_paddr + core::mem::size_of_val(memmap) as u64);
    Ok(BootInfo {
        ram: memmap.iter().filter(|e| e.kind == E820_RAM).map(|e| e.addr..e.addr + e.size).collect(),
        modules: modules.iter().map(|m| m.paddr..m.paddr + m.size).collect(),
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
