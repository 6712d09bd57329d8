//! Builds small guest ELF files for the image tests with `object`'s ELF
//! writer, so every header the checks look at can be set to a bad value.

use alloc::vec::Vec;

use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::ABI_VERSION;
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::Endianness;

/// One `PT_LOAD` segment to write.
#[derive(Clone, Debug)]
pub struct SegSpec {
    pub vaddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    pub flags: u32,
    /// Writes this `p_offset` instead of where the data really is.
    pub offset_override: Option<u64>,
    /// Writes this `p_paddr` instead of `vaddr`.
    pub paddr_override: Option<u64>,
}

impl SegSpec {
    pub fn new(vaddr: u64, data: Vec<u8>, memsz: u64, flags: u32) -> Self {
        SegSpec { vaddr, data, memsz, flags, offset_override: None, paddr_override: None }
    }
}

/// A whole file to write.
#[derive(Clone, Debug)]
pub struct ElfSpec {
    pub e_type: u16,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<SegSpec>,
    /// The ABI version in the note; `None` leaves the note out (unless
    /// `note_desc` is set).
    pub note: Option<u32>,
    pub note_owner: &'static str,
    /// Raw note descriptor, replacing the version.
    pub note_desc: Option<Vec<u8>>,
}

impl ElfSpec {
    /// An x86_64 executable with the current ABI note, entered at the first
    /// segment's address.
    pub fn guest(segments: Vec<SegSpec>) -> Self {
        ElfSpec {
            e_type: elf::ET_EXEC.0,
            machine: elf::EM_X86_64.0,
            entry: segments[0].vaddr,
            segments,
            note: Some(ABI_VERSION),
            note_owner: NOTE_OWNER,
            note_desc: None,
        }
    }

    fn note_bytes(&self) -> Option<Vec<u8>> {
        let desc = match (&self.note_desc, self.note) {
            (Some(desc), _) => desc.clone(),
            (None, Some(version)) => version.to_le_bytes().to_vec(),
            (None, None) => return None,
        };
        let mut name = self.note_owner.as_bytes().to_vec();
        name.push(0);
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&NOTE_TYPE_ABI_VERSION.to_le_bytes());
        note.extend_from_slice(&name);
        note.resize(note.len().next_multiple_of(4), 0);
        note.extend_from_slice(&desc);
        note.resize(note.len().next_multiple_of(4), 0);
        Some(note)
    }

    pub fn build(&self) -> Vec<u8> {
        let note = self.note_bytes();
        let mut buffer = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut buffer);
        w.reserve_file_header();
        w.reserve_program_headers((self.segments.len() + usize::from(note.is_some())) as u32);
        let offsets: Vec<u64> = self.segments.iter().map(|s| w.reserve(s.data.len() as u64, 16)).collect();
        let note_offset = note.as_ref().map(|n| w.reserve(n.len() as u64, 4));

        w.write_file_header(&FileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::FileType(self.e_type),
            e_machine: elf::Machine(self.machine),
            e_entry: self.entry,
            e_flags: elf::FileFlags(0),
        })
        .unwrap();
        w.write_align_program_headers();
        for (s, &offset) in self.segments.iter().zip(&offsets) {
            w.write_program_header(&ProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: elf::ProgramFlags(s.flags),
                p_offset: s.offset_override.unwrap_or(offset),
                p_vaddr: s.vaddr,
                p_paddr: s.paddr_override.unwrap_or(s.vaddr),
                p_filesz: s.data.len() as u64,
                p_memsz: s.memsz,
                p_align: 0x1000,
            });
        }
        if let (Some(note), Some(offset)) = (&note, note_offset) {
            w.write_program_header(&ProgramHeader {
                p_type: elf::PT_NOTE,
                p_flags: elf::ProgramFlags(4),
                p_offset: offset,
                p_vaddr: 0,
                p_paddr: 0,
                p_filesz: note.len() as u64,
                p_memsz: note.len() as u64,
                p_align: 4,
            });
        }
        for (s, &offset) in self.segments.iter().zip(&offsets) {
            w.pad_until(offset);
            w.write(&s.data);
        }
        if let (Some(note), Some(offset)) = (&note, note_offset) {
            w.pad_until(offset);
            w.write(note);
        }
        buffer
    }
}
