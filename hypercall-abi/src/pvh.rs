//! QEMU's PVH boot protocol: what the hypervisor and the boot shim both read.
//!
//! Two Parvus binaries are booted by QEMU itself (`-kernel`): the
//! hypervisor, and the boot shim that runs an unmodified kernel natively.
//! Both use the *PVH* protocol, which comes from Xen and which QEMU speaks
//! for any ELF kernel that carries the right note:
//!
//! 1. the image carries a [`PvhNote`] (owner `"Xen"`, type
//!    [`XEN_ELFNOTE_PHYS32_ENTRY`]) naming a 32-bit entry point;
//! 2. QEMU loads the image's segments at their physical addresses and
//!    jumps there in 32-bit protected mode, paging off, with `ebx` holding
//!    the physical address of an [`HvmStartInfo`] block;
//! 3. the block points at the list of boot modules ([`HvmModlistEntry`],
//!    one per `-initrd` file: the hypervisor's boot bundle, or the shim's
//!    kernel ELF), the command line (`-append`, NUL-terminated) and an
//!    E820-style memory map ([`HvmMemmapEntry`]).
//!
//! This module is those layouts (Xen's `hvm_start_info`, version 1) and
//! the checks that need no memory access. Reading the block and its lists
//! out of physical memory is each binary's own unsafe business, done once
//! at boot before anything can overwrite them
//! (`hypervisor/kernel/src/arch/x86_64/boot_info.rs`,
//! `demo-guests/boot-shim/src/start_info.rs`): every layout here is
//! [`FromBytes`], so any bytes found there are a valid value to check.

use core::fmt;
use core::ops::Range;

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// [`HvmStartInfo::magic`]: `"xEn3"` with the high bit of the `E` set.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// The ELF note type whose descriptor is the 32-bit PVH entry address
/// (`XEN_ELFNOTE_PHYS32_ENTRY` in Xen's `elfnote.h`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// [`HvmMemmapEntry::kind`] of usable RAM (E820 type 1).
pub const E820_RAM: u32 = 1;

/// The start-info block, at the physical address QEMU passes in `ebx`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Layout version: 0 has no memory map, 1 adds it (QEMU 4.0 and later).
    pub version: u32,
    /// Flags (none that Parvus uses).
    pub flags: u32,
    /// Entries in the module list.
    pub nr_modules: u32,
    /// Physical address of the module list ([`HvmModlistEntry`] array).
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0 (not used).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map ([`HvmMemmapEntry`] array), version 1 only.
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<HvmStartInfo>(), 56);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, modlist_paddr), 16);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, memmap_paddr), 40);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, memmap_entries), 48);

/// One boot module (an `-initrd` file).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmModlistEntry {
    /// Physical address of its first byte.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Physical address of its own command line, or 0 (not used).
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

const_assert_eq!(core::mem::size_of::<HvmModlistEntry>(), 32);

/// One range of the memory map.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmMemmapEntry {
    /// Physical address of its first byte.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The E820 type ([`E820_RAM`] for usable RAM).
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<HvmMemmapEntry>(), 24);

/// Why a start-info block cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The magic is wrong: not booted by a PVH loader.
    BadMagic(u32),
    /// Version 0 (QEMU before 4.0), or no memory map given.
    NoMemoryMap,
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::BadMagic(m) => {
                write!(f, "hvm_start_info magic is {m:#x}, expected {HVM_START_MAGIC:#x}: not a PVH boot")
            }
            PvhError::NoMemoryMap => write!(f, "hvm_start_info has no memory map (QEMU 4.0 or later is needed)"),
        }
    }
}

impl HvmStartInfo {
    /// Checks what must hold before any address in the block is followed:
    /// the magic, and a memory map to follow.
    pub fn check(&self) -> Result<(), PvhError> {
        if self.magic != HVM_START_MAGIC {
            return Err(PvhError::BadMagic(self.magic));
        }
        if self.version < 1 || self.memmap_paddr == 0 {
            return Err(PvhError::NoMemoryMap);
        }
        Ok(())
    }
}

impl HvmModlistEntry {
    /// The physical addresses the module occupies.
    pub fn range(&self) -> Range<u64> {
        self.paddr..self.paddr.saturating_add(self.size)
    }
}

impl HvmMemmapEntry {
    /// The physical addresses of this entry, if it is usable RAM.
    pub fn ram(&self) -> Option<Range<u64>> {
        (self.kind == E820_RAM).then(|| self.addr..self.addr.saturating_add(self.size))
    }
}

/// The PVH ELF note: tells QEMU where the 32-bit entry point is.
///
/// A binary puts one in a section of its own that its linker script points
/// a `PT_NOTE` program header at (a binary, not this crate, because it
/// names the binary's own entry symbol):
///
/// ```text
/// extern "C" {
///     fn pvh_start32(); // the 32-bit entry, in the binary's assembly
/// }
///
/// #[used]
/// #[link_section = ".note.pvh"]
/// static PVH_NOTE: PvhNote = PvhNote::new(pvh_start32);
/// ```
///
/// The layout is an ELF note header (name size, descriptor size, type),
/// the name `"Xen\0"` and the descriptor, the entry's 8-byte address
/// (QEMU 7.2 reads 8 bytes). The struct is `packed(4)` on purpose: QEMU
/// finds the descriptor by rounding the name size up to the `PT_NOTE`
/// segment's alignment, and an 8-aligned note would make it look 4 bytes
/// too far. Four-byte alignment keeps the descriptor at offset 16, where
/// both QEMU and the ELF specification put it.
#[repr(C, packed(4))]
pub struct PvhNote {
    /// Bytes of `name`, its NUL included.
    namesz: u32,
    /// Bytes of `entry`.
    descsz: u32,
    /// [`XEN_ELFNOTE_PHYS32_ENTRY`].
    kind: u32,
    /// `"Xen\0"`.
    name: [u8; 4],
    /// The 32-bit entry point, by its physical (= linked) address.
    entry: unsafe extern "C" fn(),
}

const_assert_eq!(core::mem::size_of::<PvhNote>(), 24);
const_assert_eq!(core::mem::align_of::<PvhNote>(), 4);
const_assert_eq!(core::mem::offset_of!(PvhNote, entry), 16);

impl PvhNote {
    /// The note naming `entry`, the 32-bit entry point (a symbol of the
    /// binary's assembly: QEMU jumps there in 32-bit protected mode).
    pub const fn new(entry: unsafe extern "C" fn()) -> Self {
        PvhNote { namesz: 4, descsz: 8, kind: XEN_ELFNOTE_PHYS32_ENTRY, name: *b"Xen\0", entry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn good_block() -> HvmStartInfo {
        HvmStartInfo { magic: HVM_START_MAGIC, version: 1, memmap_paddr: 0x1000, ..HvmStartInfo::new_zeroed() }
    }

    #[test]
    fn a_block_needs_the_magic_and_a_memory_map() {
        assert_eq!(good_block().check(), Ok(()));
        let wrong = HvmStartInfo { magic: 0x1234, ..good_block() };
        assert_eq!(wrong.check(), Err(PvhError::BadMagic(0x1234)));
        assert_eq!(HvmStartInfo { version: 0, ..good_block() }.check(), Err(PvhError::NoMemoryMap));
        assert_eq!(HvmStartInfo { memmap_paddr: 0, ..good_block() }.check(), Err(PvhError::NoMemoryMap));
        assert_eq!(
            PvhError::BadMagic(0x1234).to_string(),
            "hvm_start_info magic is 0x1234, expected 0x336ec578: not a PVH boot"
        );
    }

    #[test]
    fn only_ram_entries_are_ram() {
        let ram = HvmMemmapEntry { addr: 0x10_0000, size: 0x1000, kind: E820_RAM, reserved: 0 };
        assert_eq!(ram.ram(), Some(0x10_0000..0x10_1000));
        assert_eq!(HvmMemmapEntry { kind: 2, ..ram }.ram(), None);
        let huge = HvmMemmapEntry { addr: u64::MAX - 1, size: 16, ..ram };
        assert_eq!(huge.ram(), Some(u64::MAX - 1..u64::MAX));
    }

    #[test]
    fn a_module_is_its_range() {
        let module = HvmModlistEntry { paddr: 0x20_0000, size: 5, cmdline_paddr: 0, reserved: 0 };
        assert_eq!(module.range(), 0x20_0000..0x20_0005);
    }

    #[test]
    fn the_note_is_laid_out_as_qemu_reads_it() {
        extern "C" fn entry() {}
        let note = PvhNote::new(entry);
        // Read the packed fields by value (no references into a packed struct).
        let (namesz, descsz, kind, name) = (note.namesz, note.descsz, note.kind, note.name);
        assert_eq!((namesz, descsz, kind), (4, 8, XEN_ELFNOTE_PHYS32_ENTRY));
        assert_eq!(&name, b"Xen\0");
    }
}
