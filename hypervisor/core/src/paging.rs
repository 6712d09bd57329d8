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
    // Every level must grant all of these; which one is missing (in this
    // order: present, user, writable) is worked out only on a refusal.
    let needed = flags::PRESENT | flags::USER | if access == Access::Write { flags::WRITABLE } else { 0 };
    let mut table = root;
    for level in (1..=4u8).rev() {
        let entry = mem.read_u64(table + table_index(va, level) as u64 * 8);
        if entry & needed != needed {
            return Err(refusal(entry, level));
        }
        let target = entry & ADDRESS_MASK;
        // Level 1 maps a 4 KiB page; a huge entry at level 2 or 3 maps 2 MiB or 1 GiB.
        if level == 1 || (level <= 3 && entry & flags::HUGE != 0) {
            let size = 1u64 << (12 + 9 * (level as u64 - 1));
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

/// Why an entry that lacks one of the rights a walk needs refuses it.
#[cold]
fn refusal(entry: u64, level: u8) -> WalkError {
    if entry & flags::PRESENT == 0 {
        WalkError::NotPresent { level }
    } else if entry & flags::USER == 0 {
        WalkError::Supervisor { level }
    } else {
        WalkError::ReadOnly { level }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::{MachineMemory, TestMemory};

    #[test]
    fn a_refusal_names_the_first_missing_right_and_its_level() {
        // va 0x40_0000: PML4 at frame 1, PDPT 2, PD 3, PT 4, page 5.
        let mut mem = TestMemory::new(8);
        let t = flags::PRESENT | flags::WRITABLE | flags::USER;
        mem.write_u64(0x1000, 0x2000 | t);
        mem.write_u64(0x2000, 0x3000 | t);
        mem.write_u64(0x3000 + 2 * 8, 0x4000 | t);
        let va = 0x40_0123;
        let walk = |mem: &TestMemory, access| translate(mem, 0x1000, va, access, |mfn| mfn == 5);
        assert_eq!(walk(&mem, Access::Read), Err(WalkError::NotPresent { level: 1 }));
        mem.write_u64(0x4000, 0x5000 | flags::WRITABLE); // not present, not user
        assert_eq!(walk(&mem, Access::Write), Err(WalkError::NotPresent { level: 1 }));
        mem.write_u64(0x4000, 0x5000 | flags::PRESENT); // present, supervisor, read-only
        assert_eq!(walk(&mem, Access::Write), Err(WalkError::Supervisor { level: 1 }));
        mem.write_u64(0x4000, 0x5000 | flags::PRESENT | flags::USER);
        assert_eq!(walk(&mem, Access::Read), Ok(0x5123));
        assert_eq!(walk(&mem, Access::Write), Err(WalkError::ReadOnly { level: 1 }));
        mem.write_u64(0x3000 + 2 * 8, 0x4000 | flags::PRESENT | flags::USER); // read-only directory
        assert_eq!(walk(&mem, Access::Write), Err(WalkError::ReadOnly { level: 2 }));
        mem.write_u64(0x4000, 0x6000 | t); // a frame the domain does not own
        assert_eq!(walk(&mem, Access::Read), Err(WalkError::ForeignFrame));
        assert_eq!(translate(&mem, 0x1000, hypercall_abi::layout::GUEST_VIRT_LIMIT, Access::Read, |_| true), Err(WalkError::NotGuestAddress));
    }
}
