//! Walking an emulated kernel's own page tables, as its MMU would.
//!
//! Under trap-and-emulate the CPU never walks the guest's tables: CR3 holds
//! a *shadow* table the hypervisor built (see `shadow`). But every decision
//! about a guest-virtual address starts here: may the guest touch it, and
//! which guest-physical page is behind it? The walk follows x86-64 4-level
//! paging exactly (Intel SDM vol. 3, 4.5; AMD APM vol. 2, 5.3): an entry
//! must be present; a write needs R/W at every level (the emulated CPU
//! always runs with CR0.WP = 1, so this holds for its ring 0 too); a
//! user-mode access needs U/S at every level; an instruction fetch is
//! refused if any level has NX (with EFER.NXE). 2 MiB and 1 GiB pages end
//! the walk early.
//!
//! A failed walk produces the error code the guest's page-fault handler
//! would get from real hardware, so the hypervisor can inject exactly that
//! #PF.

use super::guest_phys::{Gpa, GuestPhys, NotRam};
use crate::machine_memory::MachineMemory;
use crate::paging::{flags, table_index, ADDRESS_MASK};

/// What the guest is doing with an address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write (else a read or fetch).
    pub write: bool,
    /// From the guest's user mode (virtual CPL 3).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// A kernel-mode read.
    pub const KERNEL_READ: Access = Access { write: false, user: false, fetch: false };
    /// A kernel-mode write.
    pub const KERNEL_WRITE: Access = Access { write: true, user: false, fetch: false };
}

/// Page-fault error-code bits (what the CPU pushes with #PF).
pub mod error_code {
    /// The page was present (a protection violation), else not present.
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access came from user mode.
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in some entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address `va` maps to.
    pub gpa: Gpa,
    /// The level of the leaf entry: 1 (4 KiB page), 2 (2 MiB) or 3 (1 GiB).
    pub leaf_level: u8,
    /// Guest-physical address of the table read at each level, indexed by
    /// `level - 1` (only levels `leaf_level..=4` are meaningful).
    pub tables: [Gpa; 4],
    /// The entry read at each level, indexed like `tables`.
    pub entries: [u64; 4],
}

impl Translation {
    /// Whether every level allows writes.
    pub fn writable(&self) -> bool {
        self.levels().all(|e| e & flags::WRITABLE != 0)
    }
    /// Whether every level allows user mode.
    pub fn user(&self) -> bool {
        self.levels().all(|e| e & flags::USER != 0)
    }
    /// Whether some level forbids instruction fetches.
    pub fn no_execute(&self) -> bool {
        self.levels().any(|e| e & flags::NO_EXECUTE != 0)
    }
    fn levels(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries[usize::from(self.leaf_level - 1)..].iter().copied()
    }
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// The guest itself would take a page fault with this error code.
    PageFault {
        /// The #PF error code real hardware would push.
        error_code: u64,
    },
    /// A table or the page is outside the domain's RAM: no real machine
    /// has memory there either, but what a PC would do (bus garbage, MMIO)
    /// is not emulated, so the domain is stopped.
    NotRam(NotRam),
}

/// Whether an entry at `level` sets a bit that must be zero: NX without
/// EFER.NXE, or PS in a level-4 entry. (Bits 52..62 are free for software;
/// PS at level 1 is the PAT bit. Address bits above the guest's physical
/// width are caught as "not RAM" instead.)
fn reserved_bits(entry: u64, level: u8, nxe: bool) -> bool {
    let nx_reserved = !nxe && entry & flags::NO_EXECUTE != 0;
    let ps_reserved = level == 4 && entry & flags::HUGE != 0;
    nx_reserved || ps_reserved
}

/// Translates `va` through the tables rooted at guest-physical `cr3` for
/// `access`. `nxe` is the guest's EFER.NXE.
pub fn walk(
    mem: &impl MachineMemory,
    phys: &GuestPhys<'_>,
    cr3: u64,
    va: u64,
    access: Access,
    nxe: bool,
) -> Result<Translation, WalkFault> {
    let mut code = 0;
    if access.write {
        code |= error_code::WRITE;
    }
    if access.user {
        code |= error_code::USER;
    }
    if access.fetch && nxe {
        code |= error_code::FETCH;
    }
    let mut t = Translation { gpa: Gpa(0), leaf_level: 1, tables: [Gpa(0); 4], entries: [0; 4] };
    let mut table = cr3 & ADDRESS_MASK;
    for level in (1..=4u8).rev() {
        let slot = Gpa(table + table_index(va, level) as u64 * 8);
        let entry = phys.read_u64(mem, slot).map_err(WalkFault::NotRam)?;
        let i = usize::from(level - 1);
        t.tables[i] = Gpa(table);
        t.entries[i] = entry;
        if entry & flags::PRESENT == 0 {
            return Err(WalkFault::PageFault { error_code: code });
        }
        if reserved_bits(entry, level, nxe) {
            return Err(WalkFault::PageFault { error_code: code | error_code::PRESENT | error_code::RESERVED });
        }
        let leaf_size = match level {
            1 => Some(1u64 << 12),
            2 | 3 if entry & flags::HUGE != 0 => Some(1u64 << (12 + 9 * (level as u64 - 1))),
            _ => None,
        };
        if let Some(size) = leaf_size {
            t.leaf_level = level;
            // A large page's address bits below its size hold PAT and
            // reserved bits, not address.
            t.gpa = Gpa(((entry & ADDRESS_MASK) & !(size - 1)) + (va & (size - 1)));
            let denied = (access.write && !t.writable())
                || (access.user && !t.user())
                || (access.fetch && nxe && t.no_execute());
            if denied {
                return Err(WalkFault::PageFault { error_code: code | error_code::PRESENT });
            }
            phys.maddr(t.gpa).map_err(WalkFault::NotRam)?;
            return Ok(t);
        }
        table = entry & ADDRESS_MASK;
    }
    unreachable!("level 1 entries are always leaves")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;

    const P: u64 = flags::PRESENT;
    const W: u64 = flags::WRITABLE;
    const U: u64 = flags::USER;

    /// Guest RAM of 16 frames, machine frames in reverse order; tables at
    /// guest frames 1 (L4), 2 (L3), 3 (L2), 4 (L1).
    fn setup() -> (TestMemory, [u64; 16]) {
        let mem = TestMemory::new(32);
        let mut frames = [0; 16];
        for (i, f) in frames.iter_mut().enumerate() {
            *f = 31 - i as u64;
        }
        (mem, frames)
    }

    fn set(mem: &mut TestMemory, frames: &[u64], table_gfn: u64, index: usize, entry: u64) {
        GuestPhys::new(frames).write_u64(mem, Gpa(table_gfn * 4096 + index as u64 * 8), entry).unwrap();
    }

    fn map_user_page(mem: &mut TestMemory, frames: &[u64], va: u64, gfn: u64, leaf_flags: u64) {
        set(mem, frames, 1, table_index(va, 4), 0x2000 | P | W | U);
        set(mem, frames, 2, table_index(va, 3), 0x3000 | P | W | U);
        set(mem, frames, 3, table_index(va, 2), 0x4000 | P | W | U);
        set(mem, frames, 4, table_index(va, 1), (gfn * 4096) | leaf_flags);
    }

    #[test]
    fn a_mapped_page_translates_and_records_the_tables() {
        let (mut mem, frames) = setup();
        let va = 0x80_0000_5123;
        map_user_page(&mut mem, &frames, va, 9, P | W | U);
        let phys = GuestPhys::new(&frames);
        let t = walk(&mem, &phys, 0x1000, va, Access { write: true, user: true, fetch: false }, true).unwrap();
        assert_eq!(t.gpa, Gpa(0x9123));
        assert_eq!(t.leaf_level, 1);
        assert_eq!(t.tables, [Gpa(0x4000), Gpa(0x3000), Gpa(0x2000), Gpa(0x1000)]);
        assert!(t.writable() && t.user() && !t.no_execute());
    }

    #[test]
    fn faults_carry_the_hardware_error_code() {
        let (mut mem, frames) = setup();
        let va = 0x80_0000_5000;
        let phys = GuestPhys::new(&frames);
        let user_write = Access { write: true, user: true, fetch: false };
        assert_eq!(
            walk(&mem, &phys, 0x1000, va, user_write, true),
            Err(WalkFault::PageFault { error_code: error_code::WRITE | error_code::USER })
        );
        map_user_page(&mut mem, &frames, va, 9, P | U); // read-only
        assert_eq!(
            walk(&mem, &phys, 0x1000, va, user_write, true),
            Err(WalkFault::PageFault { error_code: error_code::PRESENT | error_code::WRITE | error_code::USER })
        );
        // Read-only applies to the kernel too (CR0.WP = 1).
        assert!(walk(&mem, &phys, 0x1000, va, Access::KERNEL_WRITE, true).is_err());
        map_user_page(&mut mem, &frames, va, 9, P | W); // supervisor page
        assert_eq!(
            walk(&mem, &phys, 0x1000, va, Access { write: false, user: true, fetch: false }, true),
            Err(WalkFault::PageFault { error_code: error_code::PRESENT | error_code::USER })
        );
        assert!(walk(&mem, &phys, 0x1000, va, Access::KERNEL_WRITE, true).is_ok());
        map_user_page(&mut mem, &frames, va, 9, P | flags::NO_EXECUTE);
        assert_eq!(
            walk(&mem, &phys, 0x1000, va, Access { write: false, user: false, fetch: true }, true),
            Err(WalkFault::PageFault { error_code: error_code::PRESENT | error_code::FETCH })
        );
        // Without EFER.NXE the NX bit is reserved.
        assert_eq!(
            walk(&mem, &phys, 0x1000, va, Access::KERNEL_READ, false),
            Err(WalkFault::PageFault { error_code: error_code::PRESENT | error_code::RESERVED })
        );
    }

    #[test]
    fn large_pages_end_the_walk() {
        let (mut mem, frames) = setup();
        let phys = GuestPhys::new(&frames);
        set(&mut mem, &frames, 1, 0, 0x2000 | P | W);
        set(&mut mem, &frames, 2, 0, 0x3000 | P | W);
        set(&mut mem, &frames, 3, 0, P | W | flags::HUGE); // 2 MiB at gpa 0
        let t = walk(&mem, &phys, 0x1000, 0x5432, Access::KERNEL_READ, true).unwrap();
        assert_eq!((t.gpa, t.leaf_level), (Gpa(0x5432), 2));
        // Beyond the 16 frames of RAM:
        assert_eq!(
            walk(&mem, &phys, 0x1000, 0x10_0000, Access::KERNEL_READ, true),
            Err(WalkFault::NotRam(NotRam(Gpa(0x10_0000))))
        );
    }

    #[test]
    fn tables_outside_ram_are_not_followed() {
        let (mut mem, frames) = setup();
        let phys = GuestPhys::new(&frames);
        set(&mut mem, &frames, 1, 0, 0x40_0000 | P | W);
        assert!(matches!(walk(&mem, &phys, 0x1000, 0x1000, Access::KERNEL_READ, true), Err(WalkFault::NotRam(_))));
        assert!(matches!(walk(&mem, &phys, 0x99_0000, 0, Access::KERNEL_READ, true), Err(WalkFault::NotRam(_))));
    }
}
