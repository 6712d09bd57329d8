//! What QEMU tells us at boot: the PVH `hvm_start_info` block.
//!
//! The layout is Xen's (`hvm_start_info`, version 1), written down once for
//! the hypervisor and the boot shim in [`hypercall_abi::pvh`]: a magic, the
//! module list (module 0 is the `-initrd` file, our boot bundle), the
//! command line and the E820-style memory map. It is read once, through the
//! boot identity map, into owned Rust values; nothing keeps pointers into it.
//! They are held in place, not on the heap: the heap is carved from RAM
//! that this block describes.

use core::fmt;
use core::ops::Range;

use hypercall_abi::pvh::{HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, PvhError};

/// Ranges of each kind Parvus keeps (QEMU's microvm gives 2 RAM ranges and
/// 1 module).
pub const MAX_RANGES: usize = 32;

/// Bytes of the command line kept (the rest is cut).
pub const CMDLINE_MAX: usize = 1024;

/// A list of machine-address ranges.
pub type Ranges = heapless::Vec<Range<u64>, MAX_RANGES>;

/// The parts of `hvm_start_info` Parvus uses.
#[derive(Debug)]
pub struct BootInfo {
    /// RAM ranges (machine addresses).
    pub ram: Ranges,
    /// Boot modules (machine address ranges); module 0 is the bundle.
    pub modules: Ranges,
    /// The hypervisor's command line (`-append`).
    pub cmdline: heapless::String<CMDLINE_MAX>,
    /// Where the start-info block and its lists live, to keep them reserved.
    pub reserved: Ranges,
}

/// Why the start-info block could not be used.
#[derive(Clone, Copy, Debug)]
pub enum BootInfoError {
    /// The block itself is wrong.
    Pvh(PvhError),
    /// More RAM ranges or modules than [`MAX_RANGES`].
    TooManyRanges(&'static str),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::Pvh(e) => e.fmt(f),
            BootInfoError::TooManyRanges(what) => write!(f, "hvm_start_info lists more than {MAX_RANGES} {what}"),
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
    // is identity-mapped and not written by anyone while we read it; any
    // bytes are a valid `HvmStartInfo` (it is `FromBytes`).
    let si = unsafe { &*(paddr as *const HvmStartInfo) };
    si.check().map_err(BootInfoError::Pvh)?;
    // SAFETY: `check` passed, so QEMU built these arrays, with the counts
    // it gives, in low, identity-mapped memory.
    let modules =
        unsafe { core::slice::from_raw_parts(si.modlist_paddr as *const HvmModlistEntry, si.nr_modules as usize) };
    // SAFETY: as above.
    let memmap =
        unsafe { core::slice::from_raw_parts(si.memmap_paddr as *const HvmMemmapEntry, si.memmap_entries as usize) };
    let reserved = [
        paddr..paddr + core::mem::size_of::<HvmStartInfo>() as u64,
        si.modlist_paddr..si.modlist_paddr + core::mem::size_of_val(modules) as u64,
        si.memmap_paddr..si.memmap_paddr + core::mem::size_of_val(memmap) as u64,
    ];
    Ok(BootInfo {
        ram: ranges("RAM ranges", memmap.iter().filter_map(HvmMemmapEntry::ram))?,
        modules: ranges("modules", modules.iter().map(HvmModlistEntry::range))?,
        // SAFETY: a NUL-terminated string QEMU wrote in identity-mapped memory.
        cmdline: unsafe { c_string(si.cmdline_paddr) },
        reserved: ranges("reserved ranges", reserved.into_iter())?,
    })
}

/// The ranges of `iter` (`what` names them if there are too many).
fn ranges(what: &'static str, mut iter: impl Iterator<Item = Range<u64>>) -> Result<Ranges, BootInfoError> {
    let mut list = Ranges::new();
    iter.try_for_each(|r| list.push(r)).map_err(|_| BootInfoError::TooManyRanges(what))?;
    Ok(list)
}

/// Copies a NUL-terminated string (its first [`CMDLINE_MAX`] bytes;
/// invalid UTF-8 ends it).
///
/// # Safety
/// `paddr` is 0 or a NUL-terminated string in identity-mapped memory.
unsafe fn c_string(paddr: u64) -> heapless::String<CMDLINE_MAX> {
    let mut text = heapless::String::new();
    if paddr == 0 {
        return text;
    }
    let p = paddr as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees a terminated string; CMDLINE_MAX caps the scan.
    while len < CMDLINE_MAX && unsafe { p.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just scanned are readable.
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    let valid = match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    let _ = text.push_str(valid);
    text
}
