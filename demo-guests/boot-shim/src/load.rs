//! Checking the kernel ELF and copying it into place.
//!
//! The boot contract ([`hypercall_abi::bare_metal`]) says where a kernel may
//! live: every `PT_LOAD` segment at its physical address, equal to its
//! virtual one, at or above [`LOADER_AREA_END`], ending below the RAM size.
//! The shim checks all of that, and that no segment would overwrite the
//! module it is being copied from, *before* it copies a byte: a kernel
//! either loads completely or not at all, with one line saying why.

use core::fmt;
use core::ops::Range;

use elf::abi::{EM_X86_64, ET_EXEC, PT_LOAD};
use elf::endian::LittleEndian;
use elf::segment::ProgramHeader;
use elf::ElfBytes;
use hypercall_abi::bare_metal::LOADER_AREA_END;

/// Why the kernel ELF cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The module is not an ELF file the parser accepts.
    NotElf,
    /// A 32-bit ELF, or one for another machine, or not an executable.
    NotX86_64Executable,
    /// No program headers, or none of them loadable.
    NoLoadableSegment,
    /// A segment's file bytes lie outside the module.
    SegmentOutsideFile {
        /// Index in the program header table.
        index: usize,
    },
    /// `p_filesz > p_memsz`.
    FileLargerThanMemory {
        /// Index in the program header table.
        index: usize,
    },
    /// `p_paddr != p_vaddr`: the kernel starts on an identity map.
    NotIdentity {
        /// Index in the program header table.
        index: usize,
        /// Its `p_paddr`.
        paddr: u64,
        /// Its `p_vaddr`.
        vaddr: u64,
    },
    /// The segment starts in the loader's area.
    BelowLoaderArea {
        /// Index in the program header table.
        index: usize,
        /// Its address.
        paddr: u64,
    },
    /// The segment ends beyond the RAM the kernel is given.
    BeyondMemory {
        /// Index in the program header table.
        index: usize,
        /// Its end address.
        end: u64,
        /// The RAM size.
        mem_bytes: u64,
    },
    /// Copying the segment would overwrite the module being loaded.
    OverlapsModule {
        /// Index in the program header table.
        index: usize,
        /// The segment's range.
        segment: Range<u64>,
        /// The module's range.
        module: Range<u64>,
    },
    /// The entry point is in no executable loadable segment.
    EntryOutsideText(u64),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotElf => write!(f, "the kernel module is not an ELF file"),
            LoadError::NotX86_64Executable => write!(f, "the kernel module is not a 64-bit x86_64 executable ELF"),
            LoadError::NoLoadableSegment => write!(f, "the kernel ELF has no loadable segment"),
            LoadError::SegmentOutsideFile { index } => {
                write!(f, "segment {index} of the kernel ELF reaches past the end of the file")
            }
            LoadError::FileLargerThanMemory { index } => {
                write!(f, "segment {index} of the kernel ELF has more file bytes than memory bytes")
            }
            LoadError::NotIdentity { index, paddr, vaddr } => write!(
                f,
                "segment {index} of the kernel ELF has p_paddr {paddr:#x} != p_vaddr {vaddr:#x} (the kernel starts on an identity map)"
            ),
            LoadError::BelowLoaderArea { index, paddr } => write!(
                f,
                "segment {index} of the kernel ELF starts at {paddr:#x}, in the loader's area (below {LOADER_AREA_END:#x})"
            ),
            LoadError::BeyondMemory { index, end, mem_bytes } => write!(
                f,
                "segment {index} of the kernel ELF ends at {end:#x}, beyond the {} MiB of RAM",
                mem_bytes >> 20
            ),
            LoadError::OverlapsModule { index, segment, module } => write!(
                f,
                "segment {index} of the kernel ELF ({:#x}..{:#x}) would overwrite the module itself ({:#x}..{:#x})",
                segment.start, segment.end, module.start, module.end
            ),
            LoadError::EntryOutsideText(entry) => {
                write!(f, "the kernel's entry point {entry:#x} is in no executable loadable segment")
            }
        }
    }
}

/// Segment may be executed.
const PF_X: u32 = 1;

/// A checked kernel ELF.
pub struct Kernel<'a> {
    /// The module's bytes.
    file: &'a [u8],
    /// Its loadable segments, checked.
    elf: ElfBytes<'a, LittleEndian>,
    /// `e_entry`.
    pub entry: u64,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Checks one `PT_LOAD` header against the file, the contract and `module`.
fn check_segment(
    index: usize,
    ph: &ProgramHeader,
    file_len: u64,
    mem_bytes: u64,
    module: &Range<u64>,
) -> Result<Range<u64>, LoadError> {
    let file_end = ph.p_offset.checked_add(ph.p_filesz);
    if file_end.is_none_or(|end| end > file_len) {
        return Err(LoadError::SegmentOutsideFile { index });
    }
    if ph.p_filesz > ph.p_memsz {
        return Err(LoadError::FileLargerThanMemory { index });
    }
    if ph.p_paddr != ph.p_vaddr {
        return Err(LoadError::NotIdentity { index, paddr: ph.p_paddr, vaddr: ph.p_vaddr });
    }
    if ph.p_paddr < LOADER_AREA_END {
        return Err(LoadError::BelowLoaderArea { index, paddr: ph.p_paddr });
    }
    let end = ph.p_paddr.saturating_add(ph.p_memsz);
    if end > mem_bytes {
        return Err(LoadError::BeyondMemory { index, end, mem_bytes });
    }
    let segment = ph.p_paddr..end;
    if overlaps(&segment, module) {
        return Err(LoadError::OverlapsModule { index, segment, module: module.clone() });
    }
    Ok(segment)
}

impl<'a> Kernel<'a> {
    /// Parses `file` (the module at physical `module`) and checks every
    /// loadable segment.
    pub fn check(file: &'a [u8], module: Range<u64>, mem_bytes: u64) -> Result<Self, LoadError> {
        let elf = ElfBytes::<LittleEndian>::minimal_parse(file).map_err(|_| LoadError::NotElf)?;
        let header = &elf.ehdr;
        if header.class != elf::file::Class::ELF64 || header.e_machine != EM_X86_64 || header.e_type != ET_EXEC {
            return Err(LoadError::NotX86_64Executable);
        }
        let entry = header.e_entry;
        let segments = elf.segments().ok_or(LoadError::NoLoadableSegment)?;
        let mut loadable = 0;
        let mut entry_in_text = false;
        for (index, ph) in segments.iter().enumerate().filter(|(_, ph)| ph.p_type == PT_LOAD) {
            let range = check_segment(index, &ph, file.len() as u64, mem_bytes, &module)?;
            loadable += 1;
            entry_in_text |= ph.p_flags & PF_X != 0 && range.contains(&entry);
        }
        if loadable == 0 {
            return Err(LoadError::NoLoadableSegment);
        }
        if !entry_in_text {
            return Err(LoadError::EntryOutsideText(entry));
        }
        Ok(Kernel { file, elf, entry })
    }

    /// Copies every loadable segment to its physical address and zeroes the
    /// rest of its memory (bss).
    ///
    /// # Safety
    ///
    /// The identity map covers `[0, mem_bytes)` writable, and nothing the
    /// shim still needs lives in a segment's range (checked by
    /// [`Kernel::check`] for the module; the shim itself is below
    /// `LOADER_AREA_END`).
    pub unsafe fn load(&self) {
        let Some(segments) = self.elf.segments() else { return };
        for ph in segments.iter().filter(|ph| ph.p_type == PT_LOAD) {
            // Checked by `check`: the file range is inside `file`, and
            // `filesz <= memsz`.
            let bytes = &self.file[ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize];
            let dst = ph.p_paddr as *mut u8;
            // SAFETY: 1. the destination range [p_paddr, p_paddr + p_memsz)
            // is RAM below mem_bytes, identity-mapped and writable (checked
            // and this function's contract); 2. it does not overlap the
            // module the bytes come from (checked), so the copy's source
            // and destination are disjoint.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
                core::ptr::write_bytes(dst.add(bytes.len()), 0, (ph.p_memsz - ph.p_filesz) as usize);
            }
        }
    }
}
