//! Writes tiny guest ELF files for the xtask tests with `object`'s ELF
//! writer: one `R-X` segment of a few `nop`s at a chosen address, entered at
//! its start, carrying the Parvus ABI note, as guest-sdk/guest.ld lays out a
//! real guest; or the same without the note, as demo-guests/bare-rt/kernel.ld
//! lays out a bare-metal kernel.

use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::ABI_VERSION;
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::Endianness;

/// A guest ELF linked at `vaddr`.
pub fn guest_elf(vaddr: u64) -> Vec<u8> {
    elf_file(vaddr, true)
}

/// A bare-metal kernel ELF (no ABI note) linked and loaded at `vaddr`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn bare_metal_elf(vaddr: u64) -> Vec<u8> {
    elf_file(vaddr, false)
}

fn elf_file(vaddr: u64, abi_note: bool) -> Vec<u8> {
    let code = [0x90u8; 16];
    let mut note = Vec::new();
    let name = format!("{NOTE_OWNER}\0");
    note.extend_from_slice(&(name.len() as u32).to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&NOTE_TYPE_ABI_VERSION.to_le_bytes());
    note.extend_from_slice(name.as_bytes());
    note.resize(note.len().next_multiple_of(4), 0);
    note.extend_from_slice(&ABI_VERSION.to_le_bytes());

    let mut buffer = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_program_headers(if abi_note { 2 } else { 1 });
    let code_offset = w.reserve(code.len() as u64, 16);
    let note_offset = if abi_note { w.reserve(note.len() as u64, 4) } else { 0 };
    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_X86_64,
        e_entry: vaddr,
        e_flags: elf::FileFlags(0),
    })
    .expect("the ELF header is writable");
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_LOAD,
        p_flags: elf::ProgramFlags(5), // R-X
        p_offset: code_offset,
        p_vaddr: vaddr,
        p_paddr: vaddr,
        p_filesz: code.len() as u64,
        p_memsz: code.len() as u64,
        p_align: 0x1000,
    });
    if abi_note {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_NOTE,
            p_flags: elf::ProgramFlags(4),
            p_offset: note_offset,
            p_vaddr: 0,
            p_paddr: 0,
            p_filesz: note.len() as u64,
            p_memsz: note.len() as u64,
            p_align: 4,
        });
    }
    w.pad_until(code_offset);
    w.write(&code);
    if abi_note {
        w.pad_until(note_offset);
        w.write(&note);
    }
    buffer
}
