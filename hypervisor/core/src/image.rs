//! Guest images: checking a guest ELF and deciding where everything of a
//! domain goes.
//!
//! [`GuestImage::parse`] reads only what the hypervisor needs (the loadable
//! segments, the entry point and the ABI note) and checks every header
//! against the file, so that loading can copy bytes without further checks.
//! [`GuestImage::check_placement`] checks the image against the domain's
//! memory and returns the [`InitialLayout`]: the page frame number of every
//! region the hypervisor builds after the image. `cargo xtask` runs both
//! before QEMU starts; the hypervisor runs them again and builds the domain
//! from exactly that layout, so the two can never disagree.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use elf::endian::AnyEndian;
use elf::ElfBytes;
use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::layout::{GUEST_STACK_PAGES, GUEST_VIRT_BASE, GUEST_VIRT_LIMIT};
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
    /// The ABI version from the image's note (equal to [`ABI_VERSION`]).
    pub abi_version: u32,
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
                 is it a guest built with parvus-guest-sdk and guest-sdk/guest.ld?"
            ),
            ImageError::BadAbiNote { desc_len } => {
                write!(f, "the Parvus ABI note holds {desc_len} bytes, not a 4-byte version")
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
            ImageError::DoesNotFit(e) => write!(f, "{e}"),
        }
    }
}

impl GuestImage {
    /// Parses and checks a guest ELF: ELF64, little-endian, x86_64,
    /// `ET_EXEC`, the Parvus ABI note with this hypervisor's
    /// [`ABI_VERSION`], sound segment headers, no writable and executable
    /// segment, and an entry point in an executable segment.
    pub fn parse(bytes: &[u8]) -> Result<GuestImage, ImageError> {
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

        let abi_version = find_abi_version(&file, &phdrs)?;
        if abi_version != ABI_VERSION {
            return Err(ImageError::AbiMismatch { image: abi_version, hypervisor: ABI_VERSION });
        }

        let mut segments = Vec::new();
        for (index, phdr) in phdrs.iter().enumerate() {
            if phdr.p_type != elf::abi::PT_LOAD || phdr.p_memsz == 0 {
                continue;
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
                return Err(ImageError::SegmentsOverlap {
                    first: lower.index,
                    second: higher.index,
                    at: higher.vaddr,
                });
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
            pfn_to_virt(nr_pages).ok_or(ImageError::DoesNotFit(LayoutError::TooLarge { nr_pages }))?;
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
        return Err(ImageError::SegmentOutsideFile {
            index,
            offset: phdr.p_offset,
            filesz: phdr.p_filesz,
            file_len,
        });
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Lowest address of the image (page-aligned).
    pub image_start: u64,
    /// One past the image's last page.
    pub image_end: u64,
    /// Every region of the domain, by pfn.
    pub layout: InitialLayout,
}

/// Guest-virtual address of domain pfn `pfn`, if it is a guest address.
pub fn pfn_to_virt(pfn: u64) -> Option<u64> {
    pfn.checked_mul(PAGE_SIZE)
        .and_then(|offset| GUEST_VIRT_BASE.checked_add(offset))
        .filter(|&va| va <= GUEST_VIRT_LIMIT)
}

/// How many page-table pages map a domain's memory linearly from
/// [`GUEST_VIRT_BASE`], by level.
///
/// Only the tables of the guest's (lower) half are counted: the PML4's
/// upper-half entries point to the hypervisor's own shared tables, which are
/// not the domain's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTableCounts {
    /// Level-3 tables (each maps 512 GiB).
    pub pdpt: u64,
    /// Level-2 tables (each maps 1 GiB).
    pub pd: u64,
    /// Level-1 tables (each maps 2 MiB).
    pub pt: u64,
}

impl PageTableCounts {
    /// Counts the tables that map `[GUEST_VIRT_BASE, GUEST_VIRT_BASE +
    /// nr_pages * 4 KiB)` with 4 KiB pages, exactly: one table per level-N
    /// region the range touches. `None` when the range is empty or leaves
    /// the guest half.
    pub fn for_linear_map(nr_pages: u64) -> Option<PageTableCounts> {
        let first = GUEST_VIRT_BASE;
        let last = pfn_to_virt(nr_pages)?.checked_sub(1).filter(|&l| l >= first)?;
        let touched = |shift: u32| (last >> shift) - (first >> shift) + 1;
        Some(PageTableCounts { pdpt: touched(39), pd: touched(30), pt: touched(21) })
    }

    /// All pages, the PML4 included.
    pub fn total(&self) -> u64 {
        1 + self.pdpt + self.pd + self.pt
    }
}

/// Which part of the initial layout a pfn belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Before the image end: the ELF segments (and any gap between them).
    Image,
    /// The [`StartInfo`](hypercall_abi::StartInfo) page.
    StartInfo,
    /// The [`ConsoleRing`](hypercall_abi::ConsoleRing) page.
    ConsoleRing,
    /// The frame list (pfn -> machine frame number).
    FrameList,
    /// The domain's page tables (mapped read-only).
    PageTables,
    /// The unmapped page below the stack.
    Guard,
    /// The initial stack.
    Stack,
    /// Free memory for the guest.
    Free,
}

/// The start-of-day layout of a domain, in domain page frame numbers (pfn
/// `n` is mapped at `GUEST_VIRT_BASE + n * 4 KiB`):
///
/// ```text
/// 0 .. image_end_pfn   image
/// start_info_pfn       start info (1 page)
/// console_ring_pfn     console ring (1 page)
/// frame_list_pfn       frame list (frame_list_pages = ceil(nr_pages * 8 / 4096))
/// page_tables_pfn      page tables (page_tables.total(): PML4, PDPTs, PDs, PTs in that order)
/// guard_pfn            guard page (left unmapped)
/// stack_pfn            stack (stack_pages = GUEST_STACK_PAGES)
/// free_pfn .. nr_pages free memory (at least one page)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialLayout {
    /// Pages of the domain.
    pub nr_pages: u64,
    /// First pfn after the image.
    pub image_end_pfn: u64,
    /// The start-info page.
    pub start_info_pfn: u64,
    /// The console-ring page.
    pub console_ring_pfn: u64,
    /// First page of the frame list.
    pub frame_list_pfn: u64,
    /// Pages of the frame list.
    pub frame_list_pages: u64,
    /// First page-table page (the PML4).
    pub page_tables_pfn: u64,
    /// Page tables by level.
    pub page_tables: PageTableCounts,
    /// The unmapped guard page below the stack.
    pub guard_pfn: u64,
    /// Lowest stack page.
    pub stack_pfn: u64,
    /// Pages of stack.
    pub stack_pages: u64,
    /// First free page; free memory runs to `nr_pages`.
    pub free_pfn: u64,
}

/// Why the regions after an image do not fit in a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image and the regions after it need more pages than the domain has.
    TooSmall {
        /// Pages needed (including one free page).
        needed_pages: u64,
        /// Pages the domain has.
        nr_pages: u64,
    },
    /// The memory does not fit in the guest half of the address space.
    TooLarge {
        /// Pages the domain has.
        nr_pages: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::manifest::MemorySize;
        match *self {
            LayoutError::TooSmall { needed_pages, nr_pages } => write!(
                f,
                "the image and its start info, console ring, frame list, page tables, stack and one free page \
                 need {} but the domain has {}: raise `memory`",
                MemorySize(needed_pages * PAGE_SIZE),
                MemorySize(nr_pages * PAGE_SIZE)
            ),
            LayoutError::TooLarge { nr_pages } => write!(
                f,
                "{nr_pages} pages do not fit in the guest half of the address space above {GUEST_VIRT_BASE:#x}"
            ),
        }
    }
}

/// Computes the [`InitialLayout`] of a domain of `nr_pages` pages whose image
/// ends at pfn `image_end_pfn` (exclusive). The hypervisor builds the domain
/// from exactly this result, and `cargo xtask` refuses an image for which it
/// fails, so the two cannot disagree.
pub fn initial_layout(image_end_pfn: u64, nr_pages: u64) -> Result<InitialLayout, LayoutError> {
    let too_large = LayoutError::TooLarge { nr_pages };
    let page_tables = PageTableCounts::for_linear_map(nr_pages.max(1)).ok_or(too_large)?;
    let frame_list_pages = nr_pages.checked_mul(8).ok_or(too_large)?.div_ceil(PAGE_SIZE);

    let start_info_pfn = image_end_pfn;
    let console_ring_pfn = start_info_pfn + 1;
    let frame_list_pfn = console_ring_pfn + 1;
    let page_tables_pfn = frame_list_pfn + frame_list_pages;
    let guard_pfn = page_tables_pfn + page_tables.total();
    let stack_pfn = guard_pfn + 1;
    let free_pfn = stack_pfn + GUEST_STACK_PAGES;
    let needed_pages = free_pfn + 1;
    if needed_pages > nr_pages {
        return Err(LayoutError::TooSmall { needed_pages, nr_pages });
    }
    Ok(InitialLayout {
        nr_pages,
        image_end_pfn,
        start_info_pfn,
        console_ring_pfn,
        frame_list_pfn,
        frame_list_pages,
        page_tables_pfn,
        page_tables,
        guard_pfn,
        stack_pfn,
        stack_pages: GUEST_STACK_PAGES,
        free_pfn,
    })
}

impl InitialLayout {
    /// Guest-virtual address of `pfn` (valid for any pfn up to `nr_pages`,
    /// which [`initial_layout`] checked).
    pub fn virt(&self, pfn: u64) -> u64 {
        GUEST_VIRT_BASE + pfn * PAGE_SIZE
    }

    /// Number of page-table pages.
    pub fn page_table_pages(&self) -> u64 {
        self.page_tables.total()
    }

    /// The PML4's pfn.
    pub fn pml4_pfn(&self) -> u64 {
        self.page_tables_pfn
    }

    /// Pfn of the `i`-th PDPT (in address order), `i < page_tables.pdpt`.
    pub fn pdpt_pfn(&self, i: u64) -> u64 {
        debug_assert!(i < self.page_tables.pdpt);
        self.page_tables_pfn + 1 + i
    }

    /// Pfn of the `i`-th page directory (in address order), `i < page_tables.pd`.
    pub fn pd_pfn(&self, i: u64) -> u64 {
        debug_assert!(i < self.page_tables.pd);
        self.page_tables_pfn + 1 + self.page_tables.pdpt + i
    }

    /// Pfn of the `i`-th page table (in address order), `i < page_tables.pt`.
    pub fn pt_pfn(&self, i: u64) -> u64 {
        debug_assert!(i < self.page_tables.pt);
        self.page_tables_pfn + 1 + self.page_tables.pdpt + self.page_tables.pd + i
    }

    /// One past the highest stack address: the guest's initial `rsp`.
    pub fn stack_top(&self) -> u64 {
        self.virt(self.stack_pfn + self.stack_pages)
    }

    /// Free pages the guest starts with.
    pub fn free_pages(&self) -> u64 {
        self.nr_pages - self.free_pfn
    }

    /// The region `pfn` belongs to (`None` past the domain's memory).
    pub fn region(&self, pfn: u64) -> Option<Region> {
        Some(match pfn {
            p if p >= self.nr_pages => return None,
            p if p < self.start_info_pfn => Region::Image,
            p if p == self.start_info_pfn => Region::StartInfo,
            p if p == self.console_ring_pfn => Region::ConsoleRing,
            p if p < self.page_tables_pfn => Region::FrameList,
            p if p < self.guard_pfn => Region::PageTables,
            p if p == self.guard_pfn => Region::Guard,
            p if p < self.free_pfn => Region::Stack,
            _ => Region::Free,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_elf;

#[cfg(test)]
mod tests {
    use super::test_elf::{ElfSpec, SegSpec};
    use super::*;

    const R: u32 = PF_R;
    const RX: u32 = PF_R | PF_X;
    const RW: u32 = PF_R | PF_W;

    fn good() -> ElfSpec {
        ElfSpec::guest(vec![
            SegSpec::new(0x40_0000, vec![0x90; 100], 100, RX),
            SegSpec::new(0x40_1000, vec![1; 10], 10, R),
            SegSpec::new(0x40_2000, vec![2; 16], 0x2000, RW),
        ])
    }

    #[test]
    fn parses_a_good_guest() {
        let bytes = good().build();
        let image = GuestImage::parse(&bytes).unwrap();
        assert_eq!(image.entry, 0x40_0000);
        assert_eq!(image.abi_version, ABI_VERSION);
        assert_eq!(image.segments.len(), 3);
        let data = &image.segments[2];
        assert_eq!((data.vaddr, data.memsz, data.filesz), (0x40_2000, 0x2000, 16));
        assert_eq!(data.flags.to_string(), "RW-");
        assert_eq!(image.segments[0].flags.to_string(), "R-X");
        assert_eq!(data.file_bytes(&bytes), &[2u8; 16]);
        assert_eq!(image.segments[0].file_bytes(&bytes), &[0x90u8; 100]);
        assert_eq!(image.start(), 0x40_0000);
        assert_eq!(image.end(), 0x40_4000);
    }

    #[test]
    fn segments_are_sorted_and_empty_ones_skipped() {
        let mut spec = good();
        spec.segments.swap(0, 2);
        spec.segments.push(SegSpec::new(0x50_0000, vec![], 0, R));
        let image = GuestImage::parse(&spec.build()).unwrap();
        let addrs: Vec<u64> = image.segments.iter().map(|s| s.vaddr).collect();
        assert_eq!(addrs, [0x40_0000, 0x40_1000, 0x40_2000]);
        assert_eq!(image.segments[0].index, 2);
    }

    fn parse_err(bytes: &[u8]) -> ImageError {
        GuestImage::parse(bytes).unwrap_err()
    }

    #[test]
    fn not_elf() {
        assert_eq!(parse_err(b"hello world"), ImageError::NotElf);
        assert_eq!(parse_err(b""), ImageError::NotElf);
        assert_eq!(parse_err(b"\x7fEL"), ImageError::NotElf);
        assert_eq!(parse_err(b"\x7fELF").to_string(), "malformed ELF: file ends inside the ELF header");
        assert!(matches!(parse_err(&good().build()[..40]), ImageError::Malformed { .. }));
    }

    #[test]
    fn header_checks() {
        let mut bytes = good().build();
        bytes[EI_CLASS] = ELFCLASS32;
        assert_eq!(parse_err(&bytes), ImageError::NotElf64 { class: 1 });
        let mut bytes = good().build();
        bytes[EI_DATA] = ELFDATA2MSB;
        assert_eq!(parse_err(&bytes).to_string(), "a big-endian ELF: guests must be little-endian x86_64 executables");
        let mut spec = good();
        spec.machine = 183; // EM_AARCH64
        assert_eq!(parse_err(&spec.build()).to_string(), "an ELF for machine 183, not x86_64 (62)");
        let mut spec = good();
        spec.e_type = 3;
        assert!(parse_err(&spec.build()).to_string().starts_with("a position-independent executable"));
        spec.e_type = 1;
        assert_eq!(parse_err(&spec.build()), ImageError::NotExecutable { e_type: 1 });
    }

    #[test]
    fn abi_note() {
        let mut spec = good();
        spec.note = None;
        assert_eq!(parse_err(&spec.build()), ImageError::NoAbiNote);
        spec.note = Some(ABI_VERSION + 2);
        let e = parse_err(&spec.build());
        assert_eq!(e, ImageError::AbiMismatch { image: ABI_VERSION + 2, hypervisor: ABI_VERSION });
        assert_eq!(
            e.to_string(),
            format!(
                "built for ABI {}, this hypervisor speaks ABI {}: rebuild the guest with this tree's guest SDK",
                ABI_VERSION + 2,
                ABI_VERSION
            )
        );
        let mut spec = good();
        spec.note_owner = "Xen";
        assert_eq!(parse_err(&spec.build()), ImageError::NoAbiNote);
        let mut spec = good();
        spec.note_desc = Some(vec![1, 0]);
        assert_eq!(parse_err(&spec.build()), ImageError::BadAbiNote { desc_len: 2 });
    }

    #[test]
    fn no_load_segments() {
        let mut spec = good();
        spec.segments = vec![SegSpec::new(0x40_0000, vec![], 0, RX)];
        assert_eq!(parse_err(&spec.build()), ImageError::NoLoadSegments);
    }

    #[test]
    fn segment_size_checks() {
        let mut spec = good();
        spec.segments[1].memsz = 5;
        assert_eq!(parse_err(&spec.build()), ImageError::FileSizeExceedsMemSize { index: 1, filesz: 10, memsz: 5 });

        let mut spec = good();
        spec.segments[1].offset_override = Some(1 << 20);
        assert!(matches!(parse_err(&spec.build()), ImageError::SegmentOutsideFile { index: 1, .. }));
        let mut spec = good();
        spec.segments[1].offset_override = Some(u64::MAX - 4);
        assert!(matches!(parse_err(&spec.build()), ImageError::SegmentOutsideFile { index: 1, .. }));

        let mut spec = good();
        spec.segments[2].vaddr = u64::MAX - 0xfff;
        assert_eq!(parse_err(&spec.build()), ImageError::SegmentWraps { index: 2 });
    }

    #[test]
    fn w_xor_x() {
        let mut spec = good();
        spec.segments[2].flags = PF_R | PF_W | PF_X;
        let e = parse_err(&spec.build());
        assert_eq!(e, ImageError::WritableAndExecutable { index: 2, vaddr: 0x40_2000 });
        assert!(e.to_string().contains("both writable and executable (W^X)"));
    }

    #[test]
    fn overlap_and_shared_pages() {
        let mut spec = good();
        spec.segments[1].vaddr = 0x40_0050;
        assert_eq!(parse_err(&spec.build()), ImageError::SegmentsOverlap { first: 0, second: 1, at: 0x40_0050 });
        let mut spec = good();
        spec.segments[1].vaddr = 0x40_0800;
        assert_eq!(parse_err(&spec.build()), ImageError::SegmentsSharePage { first: 0, second: 1, page: 0x40_0000 });
        // Same rights may share a page.
        let mut spec = good();
        spec.segments[1].vaddr = 0x40_0800;
        spec.segments[1].flags = RX;
        assert!(GuestImage::parse(&spec.build()).is_ok());
    }

    #[test]
    fn entry_must_be_executable() {
        let mut spec = good();
        spec.entry = 0x40_1000;
        assert_eq!(parse_err(&spec.build()), ImageError::EntryNotExecutable { entry: 0x40_1000 });
        spec.entry = 0x40_0064; // one past the code
        assert_eq!(parse_err(&spec.build()), ImageError::EntryNotExecutable { entry: 0x40_0064 });
    }

    #[test]
    fn placement() {
        let image = GuestImage::parse(&good().build()).unwrap();
        let p = image.check_placement(2 << 20).unwrap();
        assert_eq!(p.image_start, 0x40_0000);
        assert_eq!(p.image_end, 0x40_4000);
        assert_eq!(p.layout.image_end_pfn, 4);
        assert_eq!(p.layout.start_info_pfn, 4);
        assert_eq!(p.layout.nr_pages, 512);
        assert_eq!(p.layout, initial_layout(4, 512).unwrap());
    }

    #[test]
    fn placement_below_base() {
        let mut spec = good();
        for s in &mut spec.segments {
            s.vaddr -= 0x20_0000;
        }
        spec.entry -= 0x20_0000;
        let image = GuestImage::parse(&spec.build()).unwrap();
        let e = image.check_placement(2 << 20).unwrap_err();
        assert_eq!(e, ImageError::SegmentBelowBase { index: 0, vaddr: 0x20_0000 });
        assert_eq!(
            e.to_string(),
            "segment 0 starts at 0x200000, below the guest base 0x400000: guests must be linked at 0x400000 (guest-sdk/guest.ld)"
        );
    }

    #[test]
    fn placement_beyond_memory() {
        let mut spec = good();
        spec.segments[2].vaddr = 0x8000_0000;
        let image = GuestImage::parse(&spec.build()).unwrap();
        let e = image.check_placement(2 << 20).unwrap_err();
        assert_eq!(
            e,
            ImageError::SegmentBeyondMemory { index: 2, end: 0x8000_2000, memory_end: 0x60_0000, memory: 2 << 20 }
        );
        assert!(e.to_string().starts_with("segment 2 ends at 0x80002000, beyond the domain's 2M of memory"));
    }

    #[test]
    fn placement_without_room_after_the_image() {
        let mut spec = good();
        spec.segments[2].memsz = 0x1f_0000; // data/bss up to 0x5f2000, 14 pages before the end
        let image = GuestImage::parse(&spec.build()).unwrap();
        let e = image.check_placement(2 << 20).unwrap_err();
        assert!(matches!(e, ImageError::DoesNotFit(LayoutError::TooSmall { nr_pages: 512, .. })), "{e:?}");
        assert!(e.to_string().contains("raise `memory`"));
        assert!(image.check_placement(4 << 20).is_ok());
    }

    #[test]
    fn page_table_counts_are_exact() {
        // 4 MiB base is 2 MiB-aligned: 512 pages fill exactly one PT.
        assert_eq!(PageTableCounts::for_linear_map(1), Some(PageTableCounts { pdpt: 1, pd: 1, pt: 1 }));
        assert_eq!(PageTableCounts::for_linear_map(512).unwrap().pt, 1);
        assert_eq!(PageTableCounts::for_linear_map(513).unwrap().pt, 2);
        // 1 GiB - 4 MiB fills the first PD exactly; one more page needs a second PD.
        let first_gib = (1 << 18) - 1024;
        assert_eq!(PageTableCounts::for_linear_map(first_gib), Some(PageTableCounts { pdpt: 1, pd: 1, pt: 510 }));
        assert_eq!(PageTableCounts::for_linear_map(first_gib + 1), Some(PageTableCounts { pdpt: 1, pd: 2, pt: 511 }));
        // Crossing 512 GiB needs a second PDPT.
        let first_512g = (1u64 << 27) - 1024;
        assert_eq!(PageTableCounts::for_linear_map(first_512g).unwrap().pdpt, 1);
        assert_eq!(PageTableCounts::for_linear_map(first_512g + 1).unwrap().pdpt, 2);
        assert_eq!(PageTableCounts::for_linear_map(0), None);
        assert_eq!(PageTableCounts::for_linear_map(u64::MAX), None);
        assert_eq!(PageTableCounts { pdpt: 1, pd: 1, pt: 1 }.total(), 4);
    }

    /// Brute-force count of distinct tables, to check the closed form.
    fn brute_force_tables(nr_pages: u64) -> PageTableCounts {
        let mut counts = PageTableCounts { pdpt: 0, pd: 0, pt: 0 };
        let mut last = (u64::MAX, u64::MAX, u64::MAX);
        for pfn in 0..nr_pages {
            let va = GUEST_VIRT_BASE + pfn * PAGE_SIZE;
            let key = (va >> 39, va >> 30, va >> 21);
            counts.pdpt += u64::from(key.0 != last.0);
            counts.pd += u64::from(key.1 != last.1);
            counts.pt += u64::from(key.2 != last.2);
            last = key;
        }
        counts
    }

    #[test]
    fn page_table_counts_match_brute_force() {
        for nr_pages in [1, 2, 511, 512, 513, 1023, 1024, 1025, 4096, 261_119, 261_120, 261_121, 300_000] {
            assert_eq!(PageTableCounts::for_linear_map(nr_pages), Some(brute_force_tables(nr_pages)), "{nr_pages}");
        }
    }

    #[test]
    fn layout_of_a_2m_domain() {
        let l = initial_layout(10, 512).unwrap();
        assert_eq!(l.start_info_pfn, 10);
        assert_eq!(l.console_ring_pfn, 11);
        assert_eq!(l.frame_list_pfn, 12);
        assert_eq!(l.frame_list_pages, 1);
        assert_eq!(l.page_tables_pfn, 13);
        assert_eq!(l.page_table_pages(), 4);
        assert_eq!((l.pml4_pfn(), l.pdpt_pfn(0), l.pd_pfn(0), l.pt_pfn(0)), (13, 14, 15, 16));
        assert_eq!(l.guard_pfn, 17);
        assert_eq!(l.stack_pfn, 18);
        assert_eq!(l.stack_pages, 16);
        assert_eq!(l.free_pfn, 34);
        assert_eq!(l.free_pages(), 512 - 34);
        assert_eq!(l.stack_top(), 0x40_0000 + 34 * 4096);
        assert_eq!(l.stack_top() % 16, 0);
        assert_eq!(l.virt(l.start_info_pfn), 0x40_a000);
    }

    #[test]
    fn layout_of_a_large_domain() {
        // 8 MiB: frame list of 2048 * 8 bytes = 4 pages; PTs for 8 MiB at 4 MiB = 4.
        let l = initial_layout(3, 2048).unwrap();
        assert_eq!(l.frame_list_pages, 4);
        assert_eq!(l.page_tables, PageTableCounts { pdpt: 1, pd: 1, pt: 4 });
        assert_eq!(l.pt_pfn(3), l.page_tables_pfn + 1 + 1 + 1 + 3);
        assert_eq!(l.guard_pfn, l.page_tables_pfn + 7);
        // 1 GiB: 2 MiB of frame list, 2 PDs (crosses 1 GiB), 512 PTs.
        let l = initial_layout(3, 1 << 18).unwrap();
        assert_eq!(l.frame_list_pages, 512);
        assert_eq!(l.page_tables, PageTableCounts { pdpt: 1, pd: 2, pt: 512 });
    }

    #[test]
    fn layout_needs_one_free_page() {
        // Exactly enough: image 10 + 1 + 1 + 1 + 4 + 1 + 16 = 34, plus one free page.
        assert!(initial_layout(10, 35).is_ok());
        assert_eq!(initial_layout(10, 34), Err(LayoutError::TooSmall { needed_pages: 35, nr_pages: 34 }));
        assert_eq!(initial_layout(600, 512).unwrap_err(), LayoutError::TooSmall { needed_pages: 625, nr_pages: 512 });
        assert_eq!(initial_layout(1, u64::MAX), Err(LayoutError::TooLarge { nr_pages: u64::MAX }));
        assert!(initial_layout(0, 0).is_err());
    }

    #[test]
    fn regions_cover_every_page_in_order() {
        let l = initial_layout(5, 600).unwrap();
        let mut runs: Vec<(Region, usize)> = Vec::new();
        for r in (0..l.nr_pages).map(|p| l.region(p).unwrap()) {
            match runs.last_mut() {
                Some((last, n)) if *last == r => *n += 1,
                _ => runs.push((r, 1)),
            }
        }
        assert_eq!(
            runs,
            [
                (Region::Image, 5),
                (Region::StartInfo, 1),
                (Region::ConsoleRing, 1),
                (Region::FrameList, 2),
                (Region::PageTables, 5),
                (Region::Guard, 1),
                (Region::Stack, 16),
                (Region::Free, 600 - 31),
            ]
        );
        assert_eq!(l.region(600), None);
    }

    #[test]
    fn pfn_to_virt_limits() {
        assert_eq!(pfn_to_virt(0), Some(GUEST_VIRT_BASE));
        assert_eq!(pfn_to_virt(u64::MAX), None);
        assert_eq!(pfn_to_virt((GUEST_VIRT_LIMIT - GUEST_VIRT_BASE) / PAGE_SIZE), Some(GUEST_VIRT_LIMIT));
        assert_eq!(pfn_to_virt((GUEST_VIRT_LIMIT - GUEST_VIRT_BASE) / PAGE_SIZE + 1), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the sizes, a successful layout keeps the regions in
            /// order, inside the domain, with the exact page-table count.
            #[test]
            fn layout_is_consistent(image_end in 0u64..4096, nr_pages in 0u64..(1 << 20)) {
                match initial_layout(image_end, nr_pages) {
                    Ok(l) => {
                        prop_assert!(l.free_pfn < l.nr_pages);
                        prop_assert_eq!(l.start_info_pfn, image_end);
                        prop_assert_eq!(l.frame_list_pages, (nr_pages * 8).div_ceil(4096));
                        prop_assert_eq!(l.guard_pfn - l.page_tables_pfn, l.page_table_pages());
                        prop_assert_eq!(l.free_pfn - l.stack_pfn, GUEST_STACK_PAGES);
                    }
                    Err(LayoutError::TooSmall { needed_pages, nr_pages: n }) => {
                        prop_assert_eq!(n, nr_pages);
                        prop_assert!(needed_pages > nr_pages);
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }

            /// Parsing never panics, whatever bytes follow a valid header.
            #[test]
            fn parse_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..600) {
                let mut bytes = good().build();
                let cut = cut.min(bytes.len());
                bytes.truncate(cut.max(64));
                bytes.extend_from_slice(&tail);
                let _ = GuestImage::parse(&bytes);
            }
        }
    }
}
