//! The ELF note that stamps every guest with the ABI it was built for.
//!
//! The hypervisor (and `cargo xtask`) read this note before loading a guest
//! and refuse one built for another [`ABI_VERSION`], naming both versions,
//! instead of letting it misinterpret hypercall numbers or the start-info
//! page. The layout is the standard ELF note: three 4-byte words (name size,
//! descriptor size, type), the owner name with its NUL, padded to 4 bytes,
//! then the descriptor (the version as a little-endian `u32`). Every number
//! comes from `hypercall-abi` through `const` operands, so nothing is retyped.
//!
//! The section is allocated (`"a"`) so the guest's linker script can place it
//! in the read-only segment and point a `PT_NOTE` header at it; the global
//! label lets the script name it in `EXTERN` so it is linked even though no
//! code refers to it.

use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::ABI_VERSION;

/// The owner name is written out in the assembly below (an `asm!` operand
/// cannot be a string); this check keeps it equal to the ABI crate's.
const _: () = assert!(bytes_equal(NOTE_OWNER.as_bytes(), b"Parvus"));

const fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

core::arch::global_asm!(
    ".pushsection .note.parvus, \"a\", @note",
    ".p2align 2",
    ".globl __parvus_abi_note",
    "__parvus_abi_note:",
    ".long {namesz}",
    ".long {descsz}",
    ".long {note_type}",
    ".asciz \"Parvus\"",
    ".p2align 2",
    ".long {version}",
    ".p2align 2",
    ".popsection",
    namesz = const NOTE_OWNER.len() + 1,
    descsz = const core::mem::size_of::<u32>(),
    note_type = const NOTE_TYPE_ABI_VERSION,
    version = const ABI_VERSION,
);
