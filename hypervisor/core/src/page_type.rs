//! Direct paging: page typing and the validation of guest page tables.
//!
//! A paravirtualized guest writes its own page tables, but only through the
//! hypervisor, which keeps this invariant for every frame:
//!
//! > a frame is a page table (of exactly one level) only while no writable
//! > mapping of it exists, and it may be mapped writable only while it is
//! > not a page table;
//!
//! together with: every present guest entry reaches a frame of the same
//! domain, with the user bit, without large/global/reserved bits, and the
//! upper half of every top-level table is the hypervisor's own.
//!
//! Each frame carries a [`PageType`] and a *type count* of the references
//! that need that type: a writable level-1 entry needs `Writable`; an entry
//! of a level-N table needs its target to be a level-(N-1) table; a pin or
//! a base pointer (CR3) needs a top-level table. The first reference of a
//! table type *validates* the frame (checks every present entry, taking
//! references for each, recursively); the last reference dropped
//! *devalidates* it (drops what its entries held). Level-1 entries also
//! count plain mappings (`map_count`), so a mapped frame cannot be given
//! back to the hypervisor. This is Xen's design, in a few hundred lines.

use crate::domain::DomainId;
use crate::frame_table::{FrameTable, Mfn, Owner, PageType};
use crate::machine_memory::MachineMemory;
use crate::paging::{flags, table_index, ADDRESS_MASK, ENTRIES};
use hypercall_abi::layout::{GUEST_PML4_SLOTS, GUEST_VIRT_LIMIT};
use hypercall_abi::mm::GUEST_ENTRY_ALLOWED;
use hypercall_abi::{HypercallError, PAGE_SIZE};

/// One domain's view of the frame table, with the rules applied.
pub struct PageTables<'a, M: MachineMemory> {
    /// Frame ownership and types.
    pub frames: &'a mut FrameTable,
    /// Machine memory (to read and write table entries).
    pub mem: &'a mut M,
    /// The domain whose tables these are.
    pub domain: DomainId,
    /// PML4 slots 256..512 of the hypervisor, written into every validated top-level table.
    pub hypervisor_half: &'a [u64; ENTRIES / 2],
}

fn entry_target(entry: u64) -> Mfn {
    (entry & ADDRESS_MASK) >> 12
}

/// Slots of a level-`level` table that belong to the guest.
fn guest_slots(level: u8) -> core::ops::Range<usize> {
    if level == 4 {
        0..GUEST_PML4_SLOTS
    } else {
        0..ENTRIES
    }
}

impl<M: MachineMemory> PageTables<'_, M> {
    /// The frame's ownership as an error, if it is not the domain's.
    fn check_owner(&self, mfn: Mfn) -> Result<(), HypercallError> {
        match self.frames.owner(mfn) {
            Some(Owner::Domain(d)) if d == self.domain => Ok(()),
            Some(Owner::Domain(_)) => Err(HypercallError::FrameNotOwned),
            // The hypervisor's frames, reserved memory, free memory and
            // addresses beyond RAM (device memory) all count as "not a guest's".
            _ => Err(HypercallError::HypervisorMemory),
        }
    }

    /// Takes a reference needing type `ty` on `mfn`, validating it first if
    /// it becomes a page table now.
    pub fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), HypercallError> {
        self.check_owner(mfn)?;
        let info = self.frames.info_mut(mfn).expect("owned frames are in the table");
        if info.type_count > 0 {
            if info.ty != ty {
                return Err(match (info.ty, ty) {
                    (_, PageType::Writable) => HypercallError::FrameIsPageTable,
                    (PageType::Writable, _) => HypercallError::FrameMappedWritable,
                    _ => HypercallError::PageTypeConflict,
                });
            }
            info.type_count = info.type_count.checked_add(1).ok_or(HypercallError::TypeCountInUse)?;
            return Ok(());
        }
        // First reference: take the type provisionally (so that an entry
        // pointing back at this frame sees it), then validate.
        info.ty = ty;
        info.type_count = 1;
        if let Some(level) = ty.level() {
            if let Err(e) = self.validate(mfn, level) {
                let info = self.frames.info_mut(mfn).expect("checked above");
                info.ty = PageType::None;
                info.type_count = 0;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops a type reference on `mfn`; the last one of a page table
    /// devalidates it.
    pub fn put_type(&mut self, mfn: Mfn) {
        let info = self.frames.info_mut(mfn).expect("a referenced frame is in the table");
        assert!(info.type_count > 0, "type count underflow on frame {mfn:#x}: a reference was dropped twice");
        info.type_count -= 1;
        if info.type_count == 0 {
            let ty = core::mem::replace(&mut info.ty, PageType::None);
            if let Some(level) = ty.level() {
                self.devalidate(mfn, level);
            }
        }
    }

    /// Checks one present entry of a level-`level` table and takes the
    /// references it needs.
    fn get_entry(&mut self, level: u8, entry: u64) -> Result<(), HypercallError> {
        if entry & !GUEST_ENTRY_ALLOWED != 0 {
            return Err(HypercallError::UnsupportedEntryBits);
        }
        if entry & flags::USER == 0 {
            return Err(HypercallError::SupervisorMapping);
        }
        let target = entry_target(entry);
        if level > 1 {
            return self.get_type(target, PageType::table(level - 1));
        }
        self.check_owner(target)?;
        if entry & flags::WRITABLE != 0 {
            self.get_type(target, PageType::Writable)?;
        }
        let info = self.frames.info_mut(target).expect("owned");
        info.map_count = info.map_count.checked_add(1).ok_or(HypercallError::TypeCountInUse)?;
        Ok(())
    }

    /// Drops what a present entry (checked by `get_entry`) holds.
    fn put_entry(&mut self, level: u8, entry: u64) {
        let target = entry_target(entry);
        if level > 1 {
            return self.put_type(target);
        }
        let info = self.frames.info_mut(target).expect("a mapped frame is in the table");
        info.map_count -= 1;
        if entry & flags::WRITABLE != 0 {
            self.put_type(target);
        }
    }

    fn validate(&mut self, mfn: Mfn, level: u8) -> Result<(), HypercallError> {
        let base = mfn * PAGE_SIZE;
        if level == 4 && self.mem.read_u64(base + GUEST_PML4_SLOTS as u64 * 8) & flags::PRESENT != 0 {
            return Err(HypercallError::HypervisorMemory);
        }
        for i in guest_slots(level) {
            let entry = self.mem.read_u64(base + i as u64 * 8);
            if entry & flags::PRESENT == 0 {
                continue;
            }
            if let Err(e) = self.get_entry(level, entry) {
                for j in 0..i {
                    let earlier = self.mem.read_u64(base + j as u64 * 8);
                    if earlier & flags::PRESENT != 0 {
                        self.put_entry(level, earlier);
                    }
                }
                return Err(e);
            }
        }
        if level == 4 {
            for (i, e) in self.hypervisor_half.iter().enumerate() {
                self.mem.write_u64(base + ((ENTRIES / 2 + i) * 8) as u64, *e);
            }
        }
        Ok(())
    }

    fn devalidate(&mut self, mfn: Mfn, level: u8) {
        let base = mfn * PAGE_SIZE;
        for i in guest_slots(level) {
            let entry = self.mem.read_u64(base + i as u64 * 8);
            if entry & flags::PRESENT != 0 {
                self.put_entry(level, entry);
            }
        }
    }

    /// Writes `val` to the entry at machine address `ptr`, which must lie in
    /// one of the domain's validated page tables. Returns whether the old
    /// entry was present (the caller then flushes the TLB).
    pub fn update_entry(&mut self, ptr: u64, val: u64) -> Result<bool, HypercallError> {
        if ptr % 8 != 0 {
            return Err(HypercallError::Misaligned);
        }
        let table = ptr / PAGE_SIZE;
        match self.frames.owner(table) {
            Some(Owner::Domain(d)) if d == self.domain => {}
            Some(Owner::Domain(_)) => return Err(HypercallError::FrameNotOwned),
            _ => return Err(HypercallError::NotAPageTable),
        }
        let info = self.frames.info(table).expect("owned");
        let level = match info.ty.level() {
            Some(level) if info.type_count > 0 => level,
            _ => return Err(HypercallError::NotAPageTable),
        };
        if !guest_slots(level).contains(&((ptr % PAGE_SIZE / 8) as usize)) {
            return Err(HypercallError::HypervisorMemory);
        }
        let old = self.mem.read_u64(ptr);
        if val & flags::PRESENT != 0 {
            self.get_entry(level, val)?;
        }
        self.mem.write_u64(ptr, val);
        let old_present = old & flags::PRESENT != 0;
        if old_present {
            self.put_entry(level, old);
        }
        Ok(old_present)
    }

    /// Validates `mfn` as a level-`level` table and keeps it validated.
    pub fn pin(&mut self, mfn: Mfn, level: u8) -> Result<(), HypercallError> {
        self.check_owner(mfn)?;
        if self.frames.info(mfn).expect("owned").pinned {
            return Err(HypercallError::AlreadyPinned);
        }
        self.get_type(mfn, PageType::table(level))?;
        self.frames.info_mut(mfn).expect("owned").pinned = true;
        Ok(())
    }

    /// Drops the pin on `mfn`.
    pub fn unpin(&mut self, mfn: Mfn) -> Result<(), HypercallError> {
        self.check_owner(mfn)?;
        let info = self.frames.info_mut(mfn).expect("owned");
        if !info.pinned {
            return Err(HypercallError::NotPinned);
        }
        info.pinned = false;
        self.put_type(mfn);
        Ok(())
    }

    /// Machine address of the level-1 entry that maps `va` in the tables
    /// rooted at machine address `root`.
    pub fn l1_entry_for(&self, root: u64, va: u64) -> Result<u64, HypercallError> {
        if va >= GUEST_VIRT_LIMIT {
            return Err(HypercallError::HypervisorMemory);
        }
        let mut table = root;
        for level in (2..=4u8).rev() {
            let entry = self.mem.read_u64(table + table_index(va, level) as u64 * 8);
            if entry & flags::PRESENT == 0 {
                return Err(HypercallError::NotAPageTable);
            }
            table = entry & ADDRESS_MASK;
        }
        Ok(table + table_index(va, 1) as u64 * 8)
    }
}
