//! What QEMU tells the shim: the PVH `hvm_start_info` block.
//!
//! The layout is Xen's (`hvm_start_info`, version 1), written down once for
//! the shim and the hypervisor in [`hypercall_abi::pvh`]: a magic, the
//! module list (module 0 is the `-initrd` file: the kernel ELF), the
//! command line (`-append`) and the E820-style memory map. The shim reads
//! it once, before it loads anything, and keeps only plain values: the
//! module's range, the RAM size and a copy of the command line. (Loading
//! the kernel may overwrite memory the block lives in; the module itself
//! is checked not to be overwritten.)

use core::fmt;
use core::ops::Range;

use hypercall_abi::bare_metal::{BOOT_CMDLINE_MAX, MAX_MEMORY};
use hypercall_abi::pvh::{HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, PvhError};
use hypercall_abi::PAGE_SIZE;

/// What the shim needs from the block.
pub struct StartInfo {
    /// Module 0, the kernel ELF (physical addresses).
    pub kernel: Range<u64>,
    /// RAM from address 0: the end of the highest RAM range, clamped to
    /// [`MAX_MEMORY`] and rounded down to a page.
    pub mem_bytes: u64,
    /// The command line, copied.
    pub cmdline: [u8; BOOT_CMDLINE_MAX],
    /// Bytes of `cmdline` in use.
    pub cmdline_len: usize,
}

/// Why the block cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The block itself is not usable (wrong magic, no memory map).
    Block(PvhError),
    /// The memory map lists no RAM.
    NoRam,
    /// No `-initrd`: there is no kernel to load.
    NoModule,
    /// The command line is longer than the BootInfo holds.
    CmdlineTooLong(usize),
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::Block(e) => e.fmt(f),
            StartInfoError::NoRam => write!(f, "the memory map lists no RAM"),
            StartInfoError::NoModule => write!(f, "no kernel: QEMU was started without -initrd <kernel ELF>"),
            StartInfoError::CmdlineTooLong(len) => {
                write!(f, "the command line is {len} bytes, at most {BOOT_CMDLINE_MAX} fit in BootInfo")
            }
        }
    }
}

/// Reads the block at physical address `paddr`.
///
/// # Safety
///
/// `paddr` is the address QEMU passed in `ebx`, and the shim's identity map
/// (which covers all of QEMU's low memory) is active.
pub unsafe fn read(paddr: u64) -> Result<StartInfo, StartInfoError> {
    // SAFETY: the caller guarantees paddr is QEMU's start-info block, which
    // is identity-mapped and written by no one while the shim runs; any
    // bytes are a valid `HvmStartInfo` (it is `FromBytes`).
    let si = unsafe { &*(paddr as *const HvmStartInfo) };
    si.check().map_err(StartInfoError::Block)?;
    // SAFETY: `check` passed, so QEMU built the memory map, with the count
    // it gives, in identity-mapped memory.
    let memmap =
        unsafe { core::slice::from_raw_parts(si.memmap_paddr as *const HvmMemmapEntry, si.memmap_entries as usize) };
    let ram_end = memmap.iter().filter_map(HvmMemmapEntry::ram).map(|ram| ram.end).max();
    let mem_bytes = ram_end.ok_or(StartInfoError::NoRam)?.min(MAX_MEMORY) & !(PAGE_SIZE - 1);
    if si.nr_modules == 0 || si.modlist_paddr == 0 {
        return Err(StartInfoError::NoModule);
    }
    // SAFETY: as above: the module list has at least one entry.
    let module = unsafe { &*(si.modlist_paddr as *const HvmModlistEntry) };
    let mut cmdline = [0u8; BOOT_CMDLINE_MAX];
    // SAFETY: QEMU's command line is 0 or a NUL-terminated string in
    // identity-mapped memory.
    let cmdline_len = unsafe { copy_c_string(si.cmdline_paddr, &mut cmdline) }?;
    Ok(StartInfo { kernel: module.range(), mem_bytes, cmdline, cmdline_len })
}

/// Copies the NUL-terminated string at `paddr` into `out`; returns its length.
///
/// # Safety
///
/// `paddr` is 0 (no string) or a NUL-terminated string in identity-mapped memory.
unsafe fn copy_c_string(paddr: u64, out: &mut [u8; BOOT_CMDLINE_MAX]) -> Result<usize, StartInfoError> {
    if paddr == 0 {
        return Ok(0);
    }
    let p = paddr as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees a terminated string; each byte up to
    // and including the NUL is readable. (64 KiB bounds the scan of a
    // broken one.)
    while len < 65_536 && unsafe { p.add(len).read() } != 0 {
        if len < BOOT_CMDLINE_MAX {
            // SAFETY: as above.
            out[len] = unsafe { p.add(len).read() };
        }
        len += 1;
    }
    if len > BOOT_CMDLINE_MAX {
        return Err(StartInfoError::CmdlineTooLong(len));
    }
    Ok(len)
}
