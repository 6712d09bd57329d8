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
    #[inline]
    pub fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), HypercallError> {
        let info = self.owned_info(mfn)?;
        // The common case, kept short: one more reference of the type it has.
        if info.type_count > 0 && info.ty == ty {
            info.type_count = info.type_count.checked_add(1).ok_or(HypercallError::TypeCountInUse)?;
            return Ok(());
        }
        self.get_type_slow(mfn, ty)
    }

    /// The frame's record if the domain owns it, else the ownership error.
    #[inline]
    fn owned_info(&mut self, mfn: Mfn) -> Result<&mut crate::frame_table::FrameInfo, HypercallError> {
        let domain = self.domain;
        // Addresses beyond RAM (device memory), the hypervisor's frames,
        // reserved and free memory all count as "not a guest's".
        let info = self.frames.info_mut(mfn).ok_or(HypercallError::HypervisorMemory)?;
        match info.owner {
            Owner::Domain(d) if d == domain => Ok(info),
            Owner::Domain(_) => Err(HypercallError::FrameNotOwned),
            _ => Err(HypercallError::HypervisorMemory),
        }
    }

    /// A type conflict, or the first reference (which validates a table).
    #[cold]
    #[inline(never)]
    fn get_type_slow(&mut self, mfn: Mfn, ty: PageType) -> Result<(), HypercallError> {
        let info = self.owned_info(mfn)?;
        if info.type_count > 0 {
            return Err(match (info.ty, ty) {
                (_, PageType::Writable) => HypercallError::FrameIsPageTable,
                (PageType::Writable, _) => HypercallError::FrameMappedWritable,
                _ => HypercallError::PageTypeConflict,
            });
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
    #[inline]
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
    #[inline]
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
        let writable = entry & flags::WRITABLE != 0;
        let info = self.owned_info(target)?;
        if writable {
            if info.type_count > 0 && info.ty == PageType::Writable {
                info.type_count = info.type_count.checked_add(1).ok_or(HypercallError::TypeCountInUse)?;
            } else {
                self.get_type_slow(target, PageType::Writable)?;
            }
        }
        let info = self.frames.info_mut(target).expect("owned");
        info.map_count = info.map_count.checked_add(1).ok_or(HypercallError::TypeCountInUse)?;
        Ok(())
    }

    /// Drops what a present entry (checked by `get_entry`) holds.
    #[inline]
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
        if !ptr.is_multiple_of(8) {
            return Err(HypercallError::Misaligned);
        }
        let level = match self.owned_info(ptr / PAGE_SIZE) {
            Ok(info) if info.type_count > 0 => info.ty.level().ok_or(HypercallError::NotAPageTable)?,
            Ok(_) | Err(HypercallError::HypervisorMemory) => return Err(HypercallError::NotAPageTable),
            Err(e) => return Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;
    use proptest::prelude::*;
    use HypercallError::*;

    const D: DomainId = DomainId(1);
    const OTHER: DomainId = DomainId(2);
    /// Frames 16..48 belong to D, 48..56 to OTHER, 0..16 are reserved.
    fn setup() -> (FrameTable, TestMemory) {
        let mut frames = FrameTable::new(64);
        frames.add_free(16, 64);
        for _ in 16..48 {
            frames.alloc(Owner::Domain(D)).unwrap();
        }
        for _ in 48..56 {
            frames.alloc(Owner::Domain(OTHER)).unwrap();
        }
        (frames, TestMemory::new(64))
    }

    const HALF: [u64; ENTRIES / 2] = [0xabc0_0003; ENTRIES / 2];
    const RW_USER: u64 = flags::PRESENT | flags::WRITABLE | flags::USER;
    const RO_USER: u64 = flags::PRESENT | flags::USER;

    fn pt<'a>(frames: &'a mut FrameTable, mem: &'a mut TestMemory) -> PageTables<'a, TestMemory> {
        PageTables { frames, mem, domain: D, hypervisor_half: &HALF }
    }

    fn entry(mfn: u64, f: u64) -> u64 {
        (mfn << 12) | f
    }

    #[test]
    fn a_page_table_is_never_writable_and_a_writable_frame_never_a_table() {
        let (mut frames, mut mem) = setup();
        mem.write_u64(20 << 12, entry(30, RW_USER)); // L1 frame 20 maps data frame 30 writable
        mem.write_u64((20 << 12) + 8, entry(20, RO_USER)); // and itself read-only: allowed
        let mut t = pt(&mut frames, &mut mem);
        t.pin(20, 1).unwrap();
        assert_eq!(t.frames.info(30).unwrap().ty, PageType::Writable);
        assert_eq!(t.frames.info(20).unwrap().map_count, 1);
        // Map the L1 writable through itself: refused.
        assert_eq!(t.update_entry((20 << 12) + 16, entry(20, RW_USER)), Err(FrameIsPageTable));
        // Use the writable data frame as a table: refused.
        assert_eq!(t.pin(30, 1), Err(FrameMappedWritable));
        // Unmap it, and now it can become a table.
        assert_eq!(t.update_entry(20 << 12, 0), Ok(true));
        assert_eq!(t.frames.info(30).unwrap().type_count, 0);
        t.pin(30, 1).unwrap();
        assert_eq!(t.pin(30, 1), Err(AlreadyPinned));
        assert_eq!(t.update_entry(20 << 12, entry(30, RW_USER)), Err(FrameIsPageTable), "reuse a pinned table as data");
    }

    #[test]
    fn entries_are_checked_bit_by_bit_and_frame_by_frame() {
        let (mut frames, mut mem) = setup();
        let mut t = pt(&mut frames, &mut mem);
        t.pin(20, 1).unwrap();
        let at = 20 << 12;
        assert_eq!(t.update_entry(at, entry(30, flags::PRESENT)), Err(SupervisorMapping));
        assert_eq!(t.update_entry(at, entry(30, RO_USER | flags::GLOBAL)), Err(UnsupportedEntryBits));
        assert_eq!(t.update_entry(at, entry(30, RO_USER | flags::HUGE)), Err(UnsupportedEntryBits));
        assert_eq!(t.update_entry(at, entry(50, RO_USER)), Err(FrameNotOwned));
        assert_eq!(t.update_entry(at, entry(3, RO_USER)), Err(HypervisorMemory));
        assert_eq!(t.update_entry(at, entry(1 << 30, RO_USER)), Err(HypervisorMemory), "beyond RAM");
        assert_eq!(t.update_entry(at + 4, entry(30, RO_USER)), Err(Misaligned));
        assert_eq!(t.update_entry(30 << 12, entry(31, RO_USER)), Err(NotAPageTable), "a data page");
        assert_eq!(t.update_entry(50 << 12, entry(31, RO_USER)), Err(FrameNotOwned), "another domain's table");
        assert_eq!(t.unpin(21), Err(NotPinned));
        assert_eq!(t.update_entry(at, entry(30, RO_USER)), Ok(false), "a valid entry goes in");
    }

    #[test]
    fn levels_must_match_and_the_top_level_keeps_the_hypervisor_half() {
        let (mut frames, mut mem) = setup();
        mem.write_u64(16 << 12, entry(17, RW_USER)); // L4 16 -> L3 17
        mem.write_u64(17 << 12, entry(18, RW_USER)); // L3 17 -> L2 18
        mem.write_u64(18 << 12, entry(19, RW_USER)); // L2 18 -> L1 19
        mem.write_u64(19 << 12, entry(30, RW_USER)); // L1 19 -> data 30
        let mut t = pt(&mut frames, &mut mem);
        t.pin(16, 4).unwrap();
        assert_eq!(t.mem.read_u64((16 << 12) + 256 * 8), HALF[0], "upper half written at validation");
        assert_eq!(t.frames.info(19).unwrap().ty, PageType::L1);
        // A self-referencing L4 entry would need the L4 to be an L3.
        assert_eq!(t.update_entry((16 << 12) + 8, entry(16, RW_USER)), Err(PageTypeConflict));
        // An L1 used as an L2.
        assert_eq!(t.update_entry((17 << 12) + 8, entry(19, RW_USER)), Err(PageTypeConflict));
        assert_eq!(t.update_entry((16 << 12) + 255 * 8, entry(17, RW_USER)), Err(HypervisorMemory));
        assert_eq!(t.update_entry((16 << 12) + 300 * 8, 0), Err(HypervisorMemory));
        // Unpinning the top devalidates the whole tree.
        t.unpin(16).unwrap();
        for mfn in [16, 17, 18, 19, 30] {
            assert!(t.frames.info(mfn).unwrap().is_unreferenced(), "frame {mfn}");
        }
    }

    #[test]
    fn a_failed_validation_takes_nothing() {
        let (mut frames, mut mem) = setup();
        for i in 0..5 {
            mem.write_u64((20 << 12) + i * 8, entry(30 + i, RW_USER));
        }
        mem.write_u64((20 << 12) + 5 * 8, entry(50, RW_USER)); // foreign: fails here
        let mut t = pt(&mut frames, &mut mem);
        assert_eq!(t.pin(20, 1), Err(FrameNotOwned));
        for mfn in 20..36 {
            assert!(t.frames.info(mfn).unwrap().is_unreferenced(), "frame {mfn}");
        }
    }

    /// Recomputes every frame's counts from the validated tables and pins,
    /// and checks the typing invariant.
    fn check_invariants(frames: &FrameTable, mem: &TestMemory) -> Result<(), String> {
        let mut type_refs = [0u32; 64];
        let mut maps = [0u32; 64];
        let mut writable = [false; 64];
        for mfn in 0..64u64 {
            let info = frames.info(mfn).unwrap();
            if info.pinned {
                type_refs[mfn as usize] += 1;
            }
            let Some(level) = info.ty.level().filter(|_| info.type_count > 0) else { continue };
            for i in guest_slots(level) {
                let e = mem.read_u64((mfn << 12) + i as u64 * 8);
                if e & flags::PRESENT == 0 {
                    continue;
                }
                let target = entry_target(e) as usize;
                if level > 1 {
                    type_refs[target] += 1;
                    let t = frames.info(target as u64).unwrap();
                    if t.ty != PageType::table(level - 1) {
                        return Err(format!("frame {target} linked from an L{level} is {:?}", t.ty));
                    }
                } else {
                    maps[target] += 1;
                    if e & flags::WRITABLE != 0 {
                        type_refs[target] += 1;
                        writable[target] = true;
                    }
                }
            }
        }
        for mfn in 0..64usize {
            let info = frames.info(mfn as u64).unwrap();
            if info.type_count != type_refs[mfn] || info.map_count != maps[mfn] {
                return Err(format!("frame {mfn}: {info:?}, expected type refs {} maps {}", type_refs[mfn], maps[mfn]));
            }
            if writable[mfn] && info.ty.level().is_some() {
                return Err(format!("frame {mfn} is a table and mapped writable"));
            }
        }
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Pin(u64, u8),
        Unpin(u64),
        Write { table: u64, slot: u64, target: u64, writable: bool },
        Clear { table: u64, slot: u64 },
        /// What a guest can do to a frame that is not a page table: write anything.
        Raw { frame: u64, slot: u64, target: u64, writable: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Frames 16..28 of D, plus 50 (OTHER) and 3 (reserved) as targets.
        let frame = prop_oneof![16u64..28, Just(50u64), Just(3u64)].boxed();
        prop_oneof![
            (16u64..28, 1u8..=4).prop_map(|(f, l)| Op::Pin(f, l)),
            (16u64..28).prop_map(Op::Unpin),
            (16u64..28, 0u64..3, frame.clone(), any::<bool>()).prop_map(|(table, slot, target, writable)| Op::Write { table, slot, target, writable }),
            (16u64..28, 0u64..3).prop_map(|(table, slot)| Op::Clear { table, slot }),
            (16u64..28, 0u64..3, frame.clone(), any::<bool>()).prop_map(|(frame, slot, target, writable)| Op::Raw { frame, slot, target, writable }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Random pins, unpins and entry writes never break the counts or the
        /// invariant, whatever succeeds or fails.
        #[test]
        fn typing_invariants_hold(ops in prop::collection::vec(op(), 1..60)) {
            let (mut frames, mut mem) = setup();
            for op in ops {
                let mut t = pt(&mut frames, &mut mem);
                let _ = match op {
                    Op::Pin(f, l) => t.pin(f, l),
                    Op::Unpin(f) => t.unpin(f),
                    Op::Write { table, slot, target, writable } => {
                        let f = if writable { RW_USER } else { RO_USER };
                        t.update_entry((table << 12) + slot * 8, entry(target, f)).map(|_| ())
                    }
                    Op::Clear { table, slot } => t.update_entry((table << 12) + slot * 8, 0).map(|_| ()),
                    Op::Raw { frame, slot, target, writable } => {
                        let info = *t.frames.info(frame).unwrap();
                        if info.type_count == 0 || info.ty.level().is_none() {
                            let f = if writable { RW_USER } else { RO_USER };
                            t.mem.write_u64((frame << 12) + slot * 8, entry(target, f));
                        }
                        Ok(())
                    }
                };
                if let Err(e) = check_invariants(&frames, &mem) {
                    prop_assert!(false, "{}", e);
                }
            }
        }
    }
}
