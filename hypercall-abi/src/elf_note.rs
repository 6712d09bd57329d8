//! The ELF note that stamps a guest image with the ABI it was built for.
//!
//! A `PT_NOTE` segment (section `.note.parvus`) holding one note with owner
//! [`NOTE_OWNER`], type [`NOTE_TYPE_ABI_VERSION`] and a 4-byte little-endian
//! descriptor: the [`ABI_VERSION`](crate::ABI_VERSION) the guest was built
//! against. The guest SDK emits it; the hypervisor and `cargo xtask` refuse an
//! image without it or with another version.

/// Owner name of the Parvus notes (without its NUL terminator).
pub const NOTE_OWNER: &str = "Parvus";

/// Note type carrying the ABI version.
pub const NOTE_TYPE_ABI_VERSION: u32 = 1;
