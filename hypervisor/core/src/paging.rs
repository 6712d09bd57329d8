//! x86_64 four-level page tables: entry bits and a software walker.
//!
//! The walker is how the hypervisor checks a guest pointer: it follows the
//! guest's own tables exactly as the MMU would for a ring-3 access, and only
//! an address the guest could itself touch with the needed right is
//! accepted. Everything is read through [`MachineMemory`], so the walk is the
//! same in the kernel and in tests.

use crate::machine_memory::MachineMemory;

/// Entries per table.
pub const ENTRIES: usize = 512;

/// Page-table entry bits.
pub mod flags {
    /// The entry is valid.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes are allowed (at every level of the walk).
    pub const WRITABLE: u64 = 1 << 1;
    /// Ring 3 may use the mapping (at every level of the walk).
    pub const USER: u64 = 1 << 2;
    /// Write-through caching.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Caching disabled.
    pub const NO_CACHE: u64 = 1 << 4;
    /// Set by the CPU on access.
    pub const ACCESSED: u64 = 1 << 5;
    /// Set by the CPU on write (leaf entries).
    pub const DIRTY: u64 = 1 << 6;
    /// A 2 MiB (level 2) or 1 GiB (level 3) leaf.
    pub const HUGE: u64 = 1 << 7;
    /// Kept in the TLB across CR3 loads (hypervisor mappings only).
    pub const GLOBAL: u64 = 1 << 8;
    /// Instruction fetches are not allowed.
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// Bits 12..52 of an entry: the machine address it points to.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Index into the table at `level` (4 = PML4 ... 1 = page table) for `va`.
pub const fn table_index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (level as u64 - 1))) & 511) as usize
}

/// What a guest wants to do with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it.
    Read,
    /// Write it.
    Write,
}

/// Why a walk failed; each maps to a bad-address error for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The address is in the hypervisor's half or non-canonical.
    NotGuestAddress,
    /// Some level has no present entry.
    NotPresent {
        /// The level (4..1) whose entry was missing.
        level: u8,
    },
    /// Some level denies ring 3.
    Supervisor {
        /// The level (4..1) that denied it.
        level: u8,
    },
    /// A write through a read-only entry.
    ReadOnly {
        /// The level (4..1) that denied it.
        level: u8,
    },
    /// The walk reached a frame the domain does not own.
    ForeignFrame,
}

/// Translates guest-virtual `va` in the address space rooted at machine
/// address `root` for a ring-3 `access`, returning the machine address.
///
/// `owns(mfn)` must say whether the domain owns a frame; the final frame
/// must be owned. (The tables on the way are not checked: `root` is a
/// validated top-level table, and validation guarantees that every table
/// it reaches is the domain's. The final check is a second line of defence.)
pub fn translate(
    mem: &impl MachineMemory,
    root: u64,
    va: u64,
    access: Access,
    owns: impl Fn(u64) -> bool,
) -> Result<u64, WalkError> {
    if va >= hypercall_abi::layout::GUEST_VIRT_LIMIT {
        return Err(WalkError::NotGuestAddress);
    }
    let mut table = root;
    for level in (1..=4u8).rev() {
        let entry = mem.read_u64(table + table_index(va, level) as u64 * 8);
        if entry & flags::PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        if entry & flags::USER == 0 {
            return Err(WalkError::Supervisor { level });
        }
        if access == Access::Write && entry & flags::WRITABLE == 0 {
            return Err(WalkError::ReadOnly { level });
        }
        let target = entry & ADDRESS_MASK;
        let leaf_size = match level {
            1 => Some(1u64 << 12),
            2 | 3 if entry & flags::HUGE != 0 => Some(1u64 << (12 + 9 * (level as u64 - 1))),
            _ => None,
        };
        if let Some(size) = leaf_size {
            let maddr = (target & !(size - 1)) + (va & (size - 1));
            if !owns(maddr >> 12) {
                return Err(WalkError::ForeignFrame);
            }
            return Ok(maddr);
        }
        table = target;
    }
    unreachable!("level 1 entries are always leaves")
}
