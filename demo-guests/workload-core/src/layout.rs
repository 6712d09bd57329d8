//! Where things are in a user process's address space.
//!
//! Every build puts the kernel (and the user programs' code, which is part
//! of the kernel image) in the first top-level (PML4) slot, the low 512
//! GiB; user memory starts at the second slot. So a process's own pages
//! never share a page table with the kernel's, and an address space is
//! "the kernel's slot 0, shared, plus this process's slot 1".
//!
//! ```text
//!   0x0000_0000_0000  kernel and user code (slot 0)
//!   0x0080_0000_0000  USER.start (slot 1)
//!   0x0080_000f_c000  stack: STACK_PAGES pages below STACK_TOP
//!   0x0080_0010_0000  STACK_TOP
//!   0x0080_4000_0000  MMAP_BASE: mmap regions, one guard page apart
//!   0x0100_0000_0000  USER.end
//! ```

use core::ops::Range;

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;

/// Words (u64) in a page.
pub const PAGE_WORDS: u64 = PAGE_SIZE / 8;

/// The user part of every address space: PML4 slot 1.
pub const USER: Range<u64> = 0x0080_0000_0000..0x0100_0000_0000;

/// Top of every process's stack.
pub const STACK_TOP: u64 = USER.start + 0x10_0000;

/// Pages of stack (zero-filled on first touch like any region).
pub const STACK_PAGES: u64 = 4;

/// Where `mmap` hands out addresses.
pub const MMAP_BASE: u64 = USER.start + 0x4000_0000;

/// Most pages one `mmap` may ask for.
pub const MMAP_MAX_PAGES: u64 = 4096;

/// Index of `va`'s entry in its level-`level` table (1 = the table that
/// maps pages, 4 = the top level).
pub const fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The bits of a page-table entry both platforms write (x86-64 4-level
/// paging), and the two combinations the workload uses.
pub mod pte {
    /// The entry maps something.
    pub const PRESENT: u64 = 1;
    /// Writes are allowed.
    pub const WRITABLE: u64 = 1 << 1;
    /// User mode may access.
    pub const USER: u64 = 1 << 2;
    /// No instruction fetch.
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The frame-address bits.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Flags of an entry linking a lower table: every right, so that the
    /// level-1 entry alone decides what a page allows.
    pub const LINK: u64 = PRESENT | WRITABLE | USER;
    /// Flags of a user data page: present, writable, user, not executable.
    pub const USER_DATA: u64 = PRESENT | WRITABLE | USER | NO_EXECUTE;
}
