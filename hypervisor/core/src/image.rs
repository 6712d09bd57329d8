//! Guest images: checking a guest ELF and deciding where everything of a
//! domain goes.
//!
//! [`GuestImage::parse`] reads only what the hypervisor needs (the loadable
//! segments, the entry point and the ABI note) and checks every header
//! against the file, so that loading can copy bytes without further checks.
//! [`GuestImage::check_placement`] checks the image against the domain's
//! memory and returns the [`InitialLayout`] (computed by
//! [`crate::initial_layout`]): where every region the hypervisor builds
//! after the image goes. `cargo xtask` runs both before QEMU starts; the
//! hypervisor runs them again on the bundle and builds the domain from the
//! same layout arithmetic, so the two can never disagree.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::initial_layout::{initial_layout, InitialLayout, LayoutError};
use crate::plural::count;
use elf::endian::AnyEndian;
use elf::ElfBytes;
use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::layout::{GUEST_VIRT_BASE, GUEST_VIRT_LIMIT};
use hypercall_abi::bare_metal::{LOADER_AREA_END, MAX_MEMORY};
use hypercall_abi::{ABI_VERSION, PAGE_SIZE};

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;

/// Segment may be executed (`PF_X`).
const PF_X: u32 = 1;
/// Segment may be written (`PF_W`).
const PF_W: u32 = 2;
/// Segment may be read (`PF_R`).
const PF_R: u32 = 4;

/// Access rights of a loadable segment, from its `p_flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentFlags {
    /// `PF_R`.
    pub read: bool,
    /// `PF_W`.
    pub write: bool,
    /// `PF_X`.
    pub execute: bool,
}

impl SegmentFlags {
    fn from_p_flags(p_flags: u32) -> Self {
        SegmentFlags { read: p_flags & PF_R != 0, write: p_flags & PF_W != 0, execute: p_flags & PF_X != 0 }
    }
}

impl fmt::Display for SegmentFlags {
    /// `R-X` style, as `readelf -l` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |on: bool, c: char| if on { c } else { '-' };
        write!(f, "{}{}{}", bit(self.read, 'R'), bit(self.write, 'W'), bit(self.execute, 'X'))
    }
}

/// A `PT_LOAD` segment whose headers have been checked against the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index in the program header table (as `readelf -l` numbers them).
    pub index: usize,
    /// Guest-virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (`filesz` bytes from the file, then zeros).
    pub memsz: u64,
    /// Offset of the file bytes in the image.
    pub offset: u64,
    /// Bytes taken from the file; at most `memsz`.
    pub filesz: u64,
    /// Access rights.
    pub flags: SegmentFlags,
}

impl Segment {
    /// One past the last byte in memory (cannot overflow: checked by parse).
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }

    /// The byte range of the segment's file data in the image.
    pub fn file_range(&self) -> Range<usize> {
        // Both fit in usize: parse checked them against the slice length.
        self.offset as usize..(self.offset + self.filesz) as usize
    }

    /// The segment's file data, from the same bytes the image was parsed from.
    pub fn file_bytes<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        &image[self.file_range()]
    }

    fn first_page(&self) -> u64 {
        self.vaddr / PAGE_SIZE
    }

    fn last_page(&self) -> u64 {
        (self.end() - 1) / PAGE_SIZE
    }
}

/// A guest ELF that passed every check that does not depend on the domain's
/// memory size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImage {
    /// Guest-virtual address of the first instruction.
    pub entry: u64,
    /// The non-empty `PT_LOAD` segments, sorted by address, not overlapping.
    pub segments: Vec<Segment>,
    /// The ABI version from the image's note (equal to [`ABI_VERSION`]);
    /// 0 for a bare-metal kernel, which has none.
    pub abi_version: u32,
}

/// Which kind of guest an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A guest built with the guest SDK (with its ABI note).
    Paravirtualized,
    /// An unmodified kernel for `mode = "emulated"` (see
    /// `hypercall_abi::bare_metal`).
    BareMetal,
}

/// Why a guest image was refused. Each displays as one line that says what
/// is wrong and, where it helps, how to fix it; the caller puts the domain
/// and the file in front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The file does not start with the ELF magic bytes.
    NotElf,
    /// A 32-bit (or unknown class) ELF.
    NotElf64 {
        /// `e_ident[EI_CLASS]`.
        class: u8,
    },
    /// A big-endian (or unknown data encoding) ELF.
    NotLittleEndian {
        /// `e_ident[EI_DATA]`.
        data: u8,
    },
    /// An ELF for another architecture.
    NotX86_64 {
        /// `e_machine`.
        machine: u16,
    },
    /// Not a static executable: a relocatable object, a PIE or shared object.
    NotExecutable {
        /// `e_type`.
        e_type: u16,
    },
    /// The ELF structures are truncated or inconsistent.
    Malformed {
        /// What the ELF parser reported.
        detail: String,
    },
    /// No `PT_LOAD` segment with a non-zero size.
    NoLoadSegments,
    /// No Parvus ABI note in a `PT_NOTE` segment.
    NoAbiNote,
    /// The ABI note's descriptor is not a 4-byte version.
    BadAbiNote {
        /// Its length.
        desc_len: usize,
    },
    /// The image was built for another ABI version.
    AbiMismatch {
        /// The version in the image's note.
        image: u32,
        /// This hypervisor's [`ABI_VERSION`].
        hypervisor: u32,
    },
    /// A segment has more file bytes than memory bytes.
    FileSizeExceedsMemSize {
        /// Program header index.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment's file bytes lie (partly) outside the file.
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// Length of the file.
        file_len: usize,
    },
    /// A segment's `p_vaddr + p_memsz` overflows the address space.
    SegmentWraps {
        /// Program header index.
        index: usize,
    },
    /// A segment is both writable and executable (W^X holds for guests too).
    WritableAndExecutable {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// Two segments overlap.
    SegmentsOverlap {
        /// Program header index of the lower segment.
        first: usize,
        /// Program header index of the higher segment.
        second: usize,
        /// Where the higher one starts.
        at: u64,
    },
    /// Two segments with different access rights share a page, which cannot
    /// be mapped with both rights.
    SegmentsSharePage {
        /// Program header index of the lower segment.
        first: usize,
        /// Program header index of the higher segment.
        second: usize,
        /// The shared page.
        page: u64,
    },
    /// The entry point is not inside an executable segment.
    EntryNotExecutable {
        /// `e_entry`.
        entry: u64,
    },
    /// A segment starts below [`GUEST_VIRT_BASE`].
    SegmentBelowBase {
        /// Program header index.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// A segment ends beyond the domain's memory.
    SegmentBeyondMemory {
        /// Program header index.
        index: usize,
        /// One past its last byte.
        end: u64,
        /// One past the domain's last mapped byte.
        memory_end: u64,
        /// The domain's memory in bytes.
        memory: u64,
    },
    /// The image fits, but what the hypervisor puts after it does not.
    DoesNotFit(LayoutError),
    /// A paravirtualized guest (it has the Parvus ABI note) in an emulated domain.
    ParavirtualizedInEmulatedDomain,
    /// A bare-metal kernel's segment is not loaded at its virtual address.
    PhysicalAddressDiffers {
        /// Program header index.
        index: usize,
        /// Its virtual address.
        vaddr: u64,
        /// Its physical (load) address.
        paddr: u64,
    },
    /// A bare-metal kernel's segment lies in the loader's area.
    SegmentInLoaderArea {
        /// Program header index.
        index: usize,
        /// Its start.
        vaddr: u64,
    },
    /// A bare-metal kernel's segment ends beyond the emulated domain's RAM.
    KernelBeyondMemory {
        /// Program header index.
        index: usize,
        /// One past its last byte.
        end: u64,
        /// The domain's memory in bytes.
        memory: u64,
    },
    /// An emulated domain asks for more memory than an unmodified kernel may have.
    EmulatedMemoryTooLarge {
        /// What the manifest asks for.
        memory: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotElf => f.write_str("not an ELF file (no \\x7fELF magic)"),
            ImageError::NotElf64 { class } => match *class {
                ELFCLASS32 => f.write_str("a 32-bit ELF: guests must be ELF64 x86_64 executables"),
                c => write!(f, "unknown ELF class {c}: guests must be ELF64 x86_64 executables"),
            },
            ImageError::NotLittleEndian { data } => match *data {
                ELFDATA2MSB => f.write_str("a big-endian ELF: guests must be little-endian x86_64 executables"),
                d => write!(f, "unknown ELF data encoding {d}: guests must be little-endian x86_64 executables"),
            },
            ImageError::NotX86_64 { machine } => {
                write!(f, "an ELF for machine {machine}, not x86_64 (62)")
            }
            ImageError::NotExecutable { e_type } => match *e_type {
                1 => f.write_str("a relocatable object (ET_REL), not a linked executable"),
                3 => f.write_str(
                    "a position-independent executable or shared object (ET_DYN): \
                     guests must be static, non-PIE executables (build them with cargo xtask build)",
                ),
                t => write!(f, "ELF type {t}, not an executable (ET_EXEC)"),
            },
            ImageError::Malformed { detail } => write!(f, "malformed ELF: {detail}"),
            ImageError::NoLoadSegments => f.write_str("the ELF has no loadable (PT_LOAD) segment"),
            ImageError::NoAbiNote => write!(
                f,
                "no Parvus ABI note (owner \"{NOTE_OWNER}\", type {NOTE_TYPE_ABI_VERSION}, in a PT_NOTE segment): \
                 is it a guest built with parvus-guest-sdk and guest-sdk/guest.ld? \
                 (an unmodified kernel needs mode = \"emulated\")"
            ),
            ImageError::BadAbiNote { desc_len } => {
                write!(f, "the Parvus ABI note holds {}, not a 4-byte version", count(*desc_len, "byte", "bytes"))
            }
            ImageError::AbiMismatch { image, hypervisor } => write!(
                f,
                "built for ABI {image}, this hypervisor speaks ABI {hypervisor}: rebuild the guest with this tree's guest SDK"
            ),
            ImageError::FileSizeExceedsMemSize { index, filesz, memsz } => write!(
                f,
                "segment {index} has more file bytes ({filesz:#x}) than memory bytes ({memsz:#x})"
            ),
            ImageError::SegmentOutsideFile { index, offset, filesz, file_len } => write!(
                f,
                "segment {index} reads bytes {offset:#x}+{filesz:#x}, beyond the end of the {file_len}-byte file"
            ),
            ImageError::SegmentWraps { index } => {
                write!(f, "segment {index} wraps around the end of the address space")
            }
            ImageError::WritableAndExecutable { index, vaddr } => write!(
                f,
                "segment {index} at {vaddr:#x} is both writable and executable (W^X): \
                 link code and data into separate segments (guest-sdk/guest.ld does)"
            ),
            ImageError::SegmentsOverlap { first, second, at } => {
                write!(f, "segments {first} and {second} overlap at {at:#x}")
            }
            ImageError::SegmentsSharePage { first, second, page } => write!(
                f,
                "segments {first} and {second} have different rights but share the page at {page:#x}: \
                 align segments to 4 KiB (guest-sdk/guest.ld does)"
            ),
            ImageError::EntryNotExecutable { entry } => {
                write!(f, "the entry point {entry:#x} is not inside an executable segment")
            }
            ImageError::SegmentBelowBase { index, vaddr } => write!(
                f,
                "segment {index} starts at {vaddr:#x}, below the guest base {GUEST_VIRT_BASE:#x}: \
                 guests must be linked at {GUEST_VIRT_BASE:#x} (guest-sdk/guest.ld)"
            ),
            ImageError::SegmentBeyondMemory { index, end, memory_end, memory } => write!(
                f,
                "segment {index} ends at {end:#x}, beyond the domain's {} of memory (mapped up to {memory_end:#x}): \
                 raise `memory` or link the guest at {GUEST_VIRT_BASE:#x}",
                crate::manifest::MemorySize(*memory)
            ),
            ImageError::DoesNotFit(e) => write!(f, "the domain's memory {e}: raise `memory`"),
            ImageError::ParavirtualizedInEmulatedDomain => f.write_str(
                "a paravirtualized guest (it carries the Parvus ABI note) in a domain with mode = \"emulated\": \
                 remove `mode` or boot a bare-metal kernel",
            ),
            ImageError::PhysicalAddressDiffers { index, vaddr, paddr } => write!(
                f,
                "segment {index} is linked at {vaddr:#x} but loaded at {paddr:#x}: \
                 bare-metal kernels load every segment at its own address (demo-guests/bare-rt/kernel.ld)"
            ),
            ImageError::SegmentInLoaderArea { index, vaddr } => write!(
                f,
                "segment {index} starts at {vaddr:#x}, inside the loader's first {} (hypercall_abi::bare_metal)",
                crate::manifest::MemorySize(LOADER_AREA_END)
            ),
            ImageError::KernelBeyondMemory { index, end, memory } => write!(
                f,
                "segment {index} ends at {end:#x}, beyond the domain's {} of memory: raise `memory`",
                crate::manifest::MemorySize(*memory)
            ),
            ImageError::EmulatedMemoryTooLarge { memory } => write!(
                f,
                "an emulated domain may have at most {} of memory, not {}",
                crate::manifest::MemorySize(MAX_MEMORY),
                crate::manifest::MemorySize(*memory)
            ),
        }
    }
}

impl GuestImage {
    /// Parses and checks a guest ELF: ELF64, little-endian, x86_64,
    /// `ET_EXEC`, the Parvus ABI note with this hypervisor's
    /// [`ABI_VERSION`], sound segment headers, no writable and executable
    /// segment, and an entry point in an executable segment.
    pub fn parse(bytes: &[u8]) -> Result<GuestImage, ImageError> {
        Self::parse_as(bytes, ImageKind::Paravirtualized)
    }

    /// [`Self::parse`] for either kind of image: a paravirtualized guest
    /// must carry the ABI note of this hypervisor; a bare-metal kernel
    /// must not carry any (it would be an SDK guest in the wrong mode) and
    /// must load every segment at its physical address.
    pub(crate) fn parse_as(bytes: &[u8], kind: ImageKind) -> Result<GuestImage, ImageError> {
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ImageError::NotElf);
        }
        // The class and encoding are checked by hand first, so that a
        // 32-bit or big-endian file gets a plain message rather than a
        // parser error.
        match bytes.get(EI_CLASS).copied() {
            Some(ELFCLASS64) => {}
            Some(class) => return Err(ImageError::NotElf64 { class }),
            None => return Err(malformed("file ends inside the ELF header")),
        }
        match bytes.get(EI_DATA).copied() {
            Some(ELFDATA2LSB) => {}
            Some(data) => return Err(ImageError::NotLittleEndian { data }),
            None => return Err(malformed("file ends inside the ELF header")),
        }
        let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(malformed)?;
        if file.ehdr.e_machine != elf::abi::EM_X86_64 {
            return Err(ImageError::NotX86_64 { machine: file.ehdr.e_machine });
        }
        if file.ehdr.e_type != elf::abi::ET_EXEC {
            return Err(ImageError::NotExecutable { e_type: file.ehdr.e_type });
        }
        let phdrs = file.segments().ok_or(ImageError::NoLoadSegments)?;

        let abi_version = match (kind, find_abi_version(&file, &phdrs)) {
            (ImageKind::Paravirtualized, Ok(v)) if v != ABI_VERSION => {
                return Err(ImageError::AbiMismatch { image: v, hypervisor: ABI_VERSION })
            }
            (ImageKind::Paravirtualized, result) => result?,
            (ImageKind::BareMetal, Ok(_)) => return Err(ImageError::ParavirtualizedInEmulatedDomain),
            (ImageKind::BareMetal, Err(_)) => 0,
        };

        let mut segments = Vec::new();
        for (index, phdr) in phdrs.iter().enumerate() {
            if phdr.p_type != elf::abi::PT_LOAD || phdr.p_memsz == 0 {
                continue;
            }
            if kind == ImageKind::BareMetal && phdr.p_paddr != phdr.p_vaddr {
                return Err(ImageError::PhysicalAddressDiffers { index, vaddr: phdr.p_vaddr, paddr: phdr.p_paddr });
            }
            segments.push(check_segment(index, &phdr, bytes.len())?);
        }
        if segments.is_empty() {
            return Err(ImageError::NoLoadSegments);
        }
        segments.sort_by_key(|s| s.vaddr);
        for pair in segments.windows(2) {
            let (lower, higher) = (&pair[0], &pair[1]);
            if higher.vaddr < lower.end() {
                return Err(ImageError::SegmentsOverlap { first: lower.index, second: higher.index, at: higher.vaddr });
            }
            if higher.first_page() == lower.last_page() && higher.flags != lower.flags {
                return Err(ImageError::SegmentsSharePage {
                    first: lower.index,
                    second: higher.index,
                    page: higher.first_page() * PAGE_SIZE,
                });
            }
        }

        let entry = file.ehdr.e_entry;
        if !segments.iter().any(|s| s.flags.execute && (s.vaddr..s.end()).contains(&entry)) {
            return Err(ImageError::EntryNotExecutable { entry });
        }
        Ok(GuestImage { entry, segments, abi_version })
    }

    /// Lowest address of the image, rounded down to a page.
    pub fn start(&self) -> u64 {
        self.segments[0].vaddr / PAGE_SIZE * PAGE_SIZE
    }

    /// One past the image's last byte, rounded up to a page.
    pub fn end(&self) -> u64 {
        let end = self.segments.iter().map(Segment::end).max().unwrap_or(0);
        end.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// Checks that the image can be loaded into a domain of `memory_bytes`
    /// (rounded down to whole pages) and computes where everything goes.
    ///
    /// Every segment must lie inside `[GUEST_VIRT_BASE, GUEST_VIRT_BASE +
    /// memory)`, and the pages after the image must hold the regions listed
    /// in [`InitialLayout`] with at least one free page left over. The image
    /// occupies pfns `0..image_end_pfn` of the layout even when its first
    /// segment starts above `GUEST_VIRT_BASE`.
    pub fn check_placement(&self, memory_bytes: u64) -> Result<Placement, ImageError> {
        let nr_pages = memory_bytes / PAGE_SIZE;
        let memory_end =
            memory_end(nr_pages).ok_or(ImageError::DoesNotFit(LayoutError::TooLarge { have: nr_pages }))?;
        for s in &self.segments {
            if s.vaddr < GUEST_VIRT_BASE {
                return Err(ImageError::SegmentBelowBase { index: s.index, vaddr: s.vaddr });
            }
            if s.end() > memory_end {
                return Err(ImageError::SegmentBeyondMemory {
                    index: s.index,
                    end: s.end(),
                    memory_end,
                    memory: memory_bytes,
                });
            }
        }
        let image_end_pfn = (self.end() - GUEST_VIRT_BASE) / PAGE_SIZE;
        let layout = initial_layout(image_end_pfn, nr_pages).map_err(ImageError::DoesNotFit)?;
        Ok(Placement { image_start: self.start(), image_end: self.end(), layout })
    }
}

impl GuestImage {
    /// Parses and checks an unmodified kernel for an emulated domain: the
    /// checks of [`Self::parse`] but the ABI note (it must have none), and
    /// every segment loaded at its own address.
    pub fn parse_bare_metal(bytes: &[u8]) -> Result<GuestImage, ImageError> {
        Self::parse_as(bytes, ImageKind::BareMetal)
    }

    /// Checks that a bare-metal kernel fits an emulated domain of
    /// `memory_bytes`: every segment in `[LOADER_AREA_END, memory)`, and the
    /// memory within [`MAX_MEMORY`].
    pub fn check_bare_metal_placement(&self, memory_bytes: u64) -> Result<(), ImageError> {
        if memory_bytes > MAX_MEMORY {
            return Err(ImageError::EmulatedMemoryTooLarge { memory: memory_bytes });
        }
        let memory_end = memory_bytes / PAGE_SIZE * PAGE_SIZE;
        for s in &self.segments {
            if s.vaddr < LOADER_AREA_END {
                return Err(ImageError::SegmentInLoaderArea { index: s.index, vaddr: s.vaddr });
            }
            if s.end() > memory_end {
                return Err(ImageError::KernelBeyondMemory { index: s.index, end: s.end(), memory: memory_bytes });
            }
        }
        Ok(())
    }
}

fn malformed(detail: impl fmt::Display) -> ImageError {
    ImageError::Malformed { detail: detail.to_string() }
}

/// Reads the ABI version from the first Parvus note in a `PT_NOTE` segment.
fn find_abi_version(
    file: &ElfBytes<'_, AnyEndian>,
    phdrs: &elf::segment::SegmentTable<'_, AnyEndian>,
) -> Result<u32, ImageError> {
    for phdr in phdrs.iter().filter(|p| p.p_type == elf::abi::PT_NOTE) {
        let notes = file.segment_data_as_notes(&phdr).map_err(malformed)?;
        for note in notes {
            let elf::note::Note::Unknown(note) = note else { continue };
            if note.n_type != u64::from(NOTE_TYPE_ABI_VERSION) || note.name_str().ok() != Some(NOTE_OWNER) {
                continue;
            }
            let desc: [u8; 4] =
                note.desc.try_into().map_err(|_| ImageError::BadAbiNote { desc_len: note.desc.len() })?;
            return Ok(u32::from_le_bytes(desc));
        }
    }
    Err(ImageError::NoAbiNote)
}

fn check_segment(index: usize, phdr: &elf::segment::ProgramHeader, file_len: usize) -> Result<Segment, ImageError> {
    if phdr.p_filesz > phdr.p_memsz {
        return Err(ImageError::FileSizeExceedsMemSize { index, filesz: phdr.p_filesz, memsz: phdr.p_memsz });
    }
    let in_file = phdr.p_offset.checked_add(phdr.p_filesz).is_some_and(|end| end <= file_len as u64);
    if !in_file {
        return Err(ImageError::SegmentOutsideFile { index, offset: phdr.p_offset, filesz: phdr.p_filesz, file_len });
    }
    if phdr.p_vaddr.checked_add(phdr.p_memsz).is_none() {
        return Err(ImageError::SegmentWraps { index });
    }
    let flags = SegmentFlags::from_p_flags(phdr.p_flags);
    if flags.write && flags.execute {
        return Err(ImageError::WritableAndExecutable { index, vaddr: phdr.p_vaddr });
    }
    Ok(Segment { index, vaddr: phdr.p_vaddr, memsz: phdr.p_memsz, offset: phdr.p_offset, filesz: phdr.p_filesz, flags })
}

/// Where an image goes in its domain and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Lowest address of the image (page-aligned).
    pub image_start: u64,
    /// One past the image's last page.
    pub image_end: u64,
    /// Every region of the domain, by pfn.
    pub layout: InitialLayout,
}

/// One past the last guest-virtual address of a domain of `nr_pages`
/// pages, if the domain fits in the guest half.
fn memory_end(nr_pages: u64) -> Option<u64> {
    nr_pages
        .checked_mul(PAGE_SIZE)
        .and_then(|bytes| GUEST_VIRT_BASE.checked_add(bytes))
        .filter(|&end| end <= GUEST_VIRT_LIMIT)
}

#[cfg(test)]
pub(crate) mod test_elf;

#[cfg(test)]
mod tests;
