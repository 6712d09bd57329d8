//! The shadow's central promise, checked against random guests.
//!
//! A random sequence of guest actions (building, changing and tearing
//! down page tables in three address spaces, sharing tables between them,
//! mapping page tables as data, large pages, scribbling over tables,
//! switching CR3 and mode, and touching addresses) runs against a model
//! CPU with a TLB. After every step:
//!
//! 1. every translation present in *any* cached shadow (walked as the CPU
//!    walks it for a ring-3 access) is one the guest's own tables allow for
//!    that mode, to the same frame; a writable one is allowed for writes,
//!    points at a dirty guest entry and at a frame that is not a page
//!    table; an executable one is allowed for fetches;
//! 2. every translation still in the model TLB obeys the same rules (so
//!    the flushes the shadow asks for are enough);
//! 3. no shadow leaf anywhere maps a tracked frame writable, and every
//!    writable leaf is in the reverse map (so a later downgrade finds it);
//! 4. top-level shadows keep slot 255 empty and the hypervisor's half;
//! 5. the frames the shadow holds are exactly the hypervisor's frames.
//!
//! Every fault is also checked: a fill must let the access through at once
//! (no fault loops), a reflected fault must carry the guest walk's error
//! code, a write to a page table must really be one.

use super::test_world::{hw_walk, va, HwTranslation, World};
use super::*;
use crate::emulated::guest_phys::GuestPhys;
use crate::emulated::guest_walk::{walk, Access, WalkFault};
use crate::frame_table::Owner;
use crate::hypercall::TlbFlush;
use crate::machine_memory::TestMemory;
use crate::paging::flags::{DIRTY, HUGE, PRESENT, USER, WRITABLE};
use crate::paging::{table_index, ADDRESS_MASK};
use alloc::collections::BTreeMap;
use proptest::prelude::*;

/// Guest frames used as tables or data: few, so that uses collide.
const GUEST_PAGES: u64 = 24;
/// Guest RAM in pages: enough for two 2 MiB pages.
const RAM_PAGES: u64 = 1024;
/// Guest frames holding the three address spaces' top-level tables.
const ROOTS: [u64; 3] = [1, 2, 3];
/// The first guest frame that is not a top-level table.
const FIRST_TABLE: u64 = 4;
/// Free frames for shadows: more than a run can use between resets.
const POOL: u64 = 400;

/// A guest-virtual address from a small set, so that paths collide.
#[derive(Clone, Copy, Debug)]
struct Va {
    l4: usize,
    l3: usize,
    l2: usize,
    l1: usize,
    offset: u64,
}

impl Va {
    fn addr(self) -> u64 {
        va(self.l4, self.l3, self.l2, self.l1) + self.offset
    }
}

fn any_va() -> impl Strategy<Value = Va> {
    (
        prop::sample::select(vec![0usize, 0, 0, 1, 254, 255, 300]),
        prop::sample::select(vec![0usize, 1]),
        prop::sample::select(vec![0usize, 1]),
        prop::sample::select(vec![0usize, 1, 2, 20]),
        0u64..4096,
    )
        .prop_map(|(l4, l3, l2, l1, offset)| Va { l4, l3, l2, l1, offset })
}

/// Entry bits: present (usually), writable, user (usually), NX, large, dirty.
fn any_flags() -> impl Strategy<Value = u64> {
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
        .prop_map(|(p, w, u, nx, ps, d)| {
            let bit = |b: bool, f: u64| if b { f } else { 0 };
            bit(p, PRESENT)
                | bit(w, WRITABLE)
                | bit(u, USER)
                | bit(nx, crate::paging::flags::NO_EXECUTE)
                | bit(ps, HUGE)
                | bit(d, DIRTY)
        })
}

/// Rights of the tables above a new mapping: mostly all.
fn upper_flags() -> impl Strategy<Value = u64> {
    (prop::bool::weighted(0.9), prop::bool::weighted(0.9), prop::bool::weighted(0.1)).prop_map(|(w, u, nx)| {
        let bit = |b: bool, f: u64| if b { f } else { 0 };
        PRESENT | bit(w, WRITABLE) | bit(u, USER) | bit(nx, crate::paging::flags::NO_EXECUTE)
    })
}

/// What [`Op::Map`] puts in place.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    /// 1 (4 KiB page), 2 (2 MiB) or 3 (1 GiB).
    leaf_level: u8,
    /// The guest frame mapped (4 KiB pages).
    target: u64,
    /// Entry bits of new tables above the leaf.
    upper: u64,
    /// Entry bits of the leaf.
    leaf: u64,
    /// Where the guest's allocator starts looking for new tables.
    fresh: [u64; 3],
}

#[derive(Clone, Debug)]
enum Op {
    /// The guest stores an entry anywhere: shares tables, maps tables as
    /// data, makes loops, points outside RAM.
    Write { table: u64, index: usize, target: u64, flags: u64 },
    /// The guest zeroes a frame (a fresh table, or a page reused).
    Zero { gfn: u64 },
    /// Bytes written at any alignment, possibly across a page boundary.
    Scribble { gfn: u64, offset: u64, len: u64, byte: u8 },
    /// The guest maps `target` at `at` in a space (`None`: the current
    /// one), as a kernel would: following present tables, adding zeroed
    /// fresh ones where missing.
    Map { space: Option<usize>, at: Va, mapping: Mapping },
    /// The guest clears the entry at some level of a mapping.
    Unmap { space: usize, at: Va, level: u8 },
    /// A CR3 load, or a change of virtual CPL.
    Switch { space: usize, user: bool },
    /// The guest touches an address (`recent`: one it mapped lately);
    /// `value` is what a write stores when it has to be emulated.
    Touch { at: Va, recent: Option<prop::sample::Index>, write: bool, fetch: bool, value: u64 },
}

fn any_op() -> impl Strategy<Value = Op> {
    let gfn = || prop_oneof![12 => 0..GUEST_PAGES, 1 => RAM_PAGES..RAM_PAGES + 2]; // or past the end of RAM
    prop_oneof![
        2 => (gfn(), prop::sample::select(vec![0usize, 1, 2, 20, 254, 255, 300, 511]), gfn(), any_flags())
            .prop_map(|(table, index, target, flags)| Op::Write { table, index, target, flags }),
        1 => (0..GUEST_PAGES).prop_map(|gfn| Op::Zero { gfn }),
        1 => (0..GUEST_PAGES, prop::sample::select(vec![0u64, 3, 4092, 4090, 2040]), 1u64..24, any::<u8>())
            .prop_map(|(gfn, offset, len, byte)| Op::Scribble { gfn, offset, len, byte }),
        5 => (prop::option::weighted(0.3, 0..3usize), any_va(), prop::sample::select(vec![1u8, 1, 1, 2, 3]), 0..GUEST_PAGES, upper_flags(), any_flags(), prop::array::uniform3(FIRST_TABLE..GUEST_PAGES))
            .prop_map(|(space, at, leaf_level, target, upper, leaf, fresh)| {
                Op::Map { space, at, mapping: Mapping { leaf_level, target, upper, leaf: leaf | PRESENT, fresh } }
            }),
        1 => (0..3usize, any_va(), 1u8..=4).prop_map(|(space, at, level)| Op::Unmap { space, at, level }),
        2 => (prop::sample::select(vec![0usize, 0, 1, 2]), any::<bool>()).prop_map(|(space, user)| Op::Switch { space, user }),
        8 => (any_va(), prop::option::weighted(0.9, any::<prop::sample::Index>()), any::<bool>(), prop::bool::weighted(0.2), any::<u64>())
            .prop_map(|(at, recent, write, fetch, value)| Op::Touch { at, recent, write: write && !fetch, fetch, value }),
    ]
}

/// The model machine: guest, shadow, the loaded CR3 and a TLB.
struct Machine {
    w: World,
    s: Shadow,
    /// Guest frame of each machine frame of guest RAM.
    gfn_of: BTreeMap<Mfn, u64>,
    space: usize,
    mode: Mode,
    root: u64,
    /// Cached translations of the loaded CR3, by page.
    tlb: BTreeMap<u64, HwTranslation>,
    /// Addresses mapped so far in each space.
    mapped: [Vec<Va>; 3],
}

impl Machine {
    fn new(nxe: bool, budget: u64) -> Self {
        let mut w = World::new(RAM_PAGES, POOL);
        w.nxe = nxe;
        let gfn_of = w.guest.iter().enumerate().map(|(g, m)| (*m, g as u64)).collect();
        let mut m = Machine {
            w,
            s: Shadow::new(budget),
            gfn_of,
            space: 0,
            mode: Mode::Kernel,
            root: 0,
            tlb: BTreeMap::new(),
            mapped: Default::default(),
        };
        m.switch(0, Mode::Kernel);
        m
    }

    fn cr3(&self) -> u64 {
        ROOTS[self.space] << 12
    }

    fn switch(&mut self, space: usize, mode: Mode) {
        self.space = space;
        self.mode = mode;
        let cr3 = self.cr3();
        self.root = self.s.root(&mut self.w.env(), cr3, mode).expect("roots are RAM and frames suffice");
        self.tlb.clear(); // the CR3 load
    }

    fn flush(&mut self, tlb: TlbFlush) {
        match tlb {
            TlbFlush::None => {}
            TlbFlush::Page(a) => {
                self.tlb.remove(&(a >> 12));
            }
            TlbFlush::All => self.tlb.clear(),
        }
    }

    /// A guest store of `bytes` at `gpa` (outside RAM: dropped), reported
    /// when it touches a tracked frame.
    fn store(&mut self, gpa: u64, bytes: &[u8]) {
        if gpa + bytes.len() as u64 <= self.w.phys().size() {
            GuestPhys::new(&self.w.guest).write(&mut self.w.mem, Gpa(gpa), bytes).unwrap();
            let flush = self.s.guest_wrote(&mut self.w.env(), Gpa(gpa), bytes.len() as u64);
            let tracked = (gpa >> 12..=(gpa + bytes.len() as u64 - 1) >> 12).any(|g| self.s.is_tracked(g));
            if !tracked {
                assert_eq!(flush, TlbFlush::None, "an untracked frame has no shadow to fix");
            }
            self.flush(flush);
        }
    }

    fn store_entry(&mut self, table: u64, index: usize, entry: u64) {
        self.store(table * 4096 + index as u64 * 8, &entry.to_le_bytes());
    }

    fn entry(&self, table: u64, index: usize) -> u64 {
        self.w.entry(table, index)
    }

    fn guest_walk(
        &self,
        cr3: u64,
        mode: Mode,
        at: u64,
        write: bool,
        fetch: bool,
    ) -> Result<crate::emulated::guest_walk::Translation, WalkFault> {
        let access = Access { write, user: mode == Mode::User, fetch };
        walk(&self.w.mem, &self.w.phys(), cr3, at, access, self.w.nxe)
    }

    fn map(&mut self, space: usize, at: u64, m: Mapping) {
        let Mapping { leaf_level, target, upper, leaf, fresh } = m;
        let mut table = ROOTS[space];
        for level in ((leaf_level + 1)..=4).rev() {
            let index = table_index(at, level);
            let e = self.entry(table, index);
            if e & PRESENT != 0 && e & HUGE == 0 && (e & ADDRESS_MASK) >> 12 < RAM_PAGES {
                table = (e & ADDRESS_MASK) >> 12;
                continue;
            }
            let new = self.free_table(fresh[usize::from(level - 2)]);
            self.store(new * 4096, &[0; 4096]);
            self.store_entry(table, index, new << 12 | upper);
            table = new;
        }
        // Large pages start at guest-physical 0 or (2 MiB pages) 2 MiB.
        let (target, leaf) = match leaf_level {
            1 => (target, leaf & !HUGE),
            2 => (target % 2 * 512, leaf | HUGE),
            _ => (0, leaf | HUGE),
        };
        self.store_entry(table, table_index(at, leaf_level), target << 12 | leaf);
    }

    /// A frame for a new table, as the guest's allocator would pick it:
    /// from `seed` on, the first that no address space uses as a table
    /// (else `seed`: then an old table is overwritten).
    fn free_table(&self, seed: u64) -> u64 {
        let mut used = alloc::collections::BTreeSet::new();
        for root in ROOTS {
            self.tables_under(root, 4, &mut used);
        }
        let first = FIRST_TABLE;
        (0..GUEST_PAGES - first)
            .map(|k| first + (seed - first + k) % (GUEST_PAGES - first))
            .find(|g| !used.contains(g))
            .unwrap_or(seed)
    }

    /// The guest frames used as tables under `table` at `level`.
    fn tables_under(&self, table: u64, level: u8, used: &mut alloc::collections::BTreeSet<u64>) {
        if !used.insert(table) || level == 1 {
            return;
        }
        for e in self::table(&self.w.mem, self.w.guest[table as usize]) {
            let child = (e & ADDRESS_MASK) >> 12;
            if e & PRESENT != 0 && (level == 4 || e & HUGE == 0) && child < RAM_PAGES {
                self.tables_under(child, level - 1, used);
            }
        }
    }

    fn unmap(&mut self, space: usize, at: u64, level: u8) {
        let mut table = ROOTS[space];
        for l in (level..=4).rev() {
            let index = table_index(at, l);
            if l == level {
                self.store_entry(table, index, 0);
                return;
            }
            let e = self.entry(table, index);
            if e & PRESENT == 0 || e & HUGE != 0 || (e & ADDRESS_MASK) >> 12 >= RAM_PAGES {
                return;
            }
            table = (e & ADDRESS_MASK) >> 12;
        }
    }

    /// The guest touches `at`: the model CPU uses its TLB, then the shadow,
    /// and page faults go to the shadow code.
    fn touch(&mut self, at: Va, write: bool, fetch: bool, value: u64) -> Result<(), TestCaseError> {
        let a = at.addr();
        let allows = |t: &HwTranslation| (!write || t.writable) && (!fetch || t.executable);
        if self.tlb.get(&(a >> 12)).is_some_and(allows) {
            return Ok(());
        }
        self.tlb.remove(&(a >> 12)); // a fault drops the entry
        if let Some(t) = hw_walk(&self.w.mem, self.root, a).filter(|t| allows(t)) {
            self.tlb.insert(a >> 12, t);
            return Ok(());
        }
        let (cr3, mode) = (self.cr3(), self.mode);
        let guest = self.guest_walk(cr3, mode, a, write, fetch);
        let access = Access { write, user: false, fetch };
        match self.s.on_page_fault(&mut self.w.env(), cr3, mode, a, access) {
            Ok(FaultOutcome::Filled { tlb }) => {
                prop_assert!(guest.is_ok(), "filled {a:#x} the guest cannot use: {guest:?}");
                self.flush(tlb);
                let t = hw_walk(&self.w.mem, self.root, a);
                prop_assert!(t.as_ref().is_some_and(allows), "fault loop at {a:#x}: {t:?}");
                self.tlb.insert(a >> 12, t.unwrap());
            }
            Ok(FaultOutcome::GuestFault { error_code }) => {
                prop_assert_eq!(guest, Err(WalkFault::PageFault { error_code }));
            }
            Ok(FaultOutcome::WriteToPageTable { gpa, tlb }) => {
                self.flush(tlb);
                let t = guest.map_err(|e| TestCaseError::fail(alloc::format!("{e:?}")))?;
                prop_assert!(write && t.gpa == gpa && self.s.is_tracked(gpa.gfn()));
                prop_assert!(hw_walk(&self.w.mem, self.root, a).is_some(), "reads go through");
                self.store(gpa.0 & !7, &value.to_le_bytes());
            }
            Err(ShadowError::NotRam(_)) => prop_assert!(matches!(guest, Err(WalkFault::NotRam(_)))),
            Err(ShadowError::HypervisorHalf { va }) => prop_assert!(va == a && at.l4 >= GUEST_SLOTS && guest.is_ok()),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
        Ok(())
    }

    /// A translation the CPU may use (from a shadow or the TLB) must be
    /// one the guest allows.
    fn check_translation(&self, cr3: u64, mode: Mode, at: u64, t: HwTranslation) -> Result<(), TestCaseError> {
        let read = self.guest_walk(cr3, mode, at, false, false);
        let g = read.map_err(|e| {
            TestCaseError::fail(alloc::format!("{mode:?} shadow maps {at:#x} the guest does not: {e:?}"))
        })?;
        prop_assert_eq!(self.w.guest[g.gpa.gfn() as usize], t.mfn, "{:?} {:#x}: wrong frame", mode, at);
        if t.writable {
            let wr = self.guest_walk(cr3, mode, at, true, false);
            prop_assert!(wr.is_ok(), "{:?} {:#x} writable in the shadow only", mode, at);
            prop_assert!(g.entries[usize::from(g.leaf_level - 1)] & DIRTY != 0, "{:#x}: writable but not dirty", at);
            prop_assert!(!self.s.is_tracked(g.gpa.gfn()), "{:#x}: a page table is writable", at);
        }
        if t.executable && self.w.nxe {
            prop_assert!(
                self.guest_walk(cr3, mode, at, false, true).is_ok(),
                "{:#x}: executable in the shadow only",
                at
            );
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mem = &self.w.mem;
        prop_assert_eq!(self.w.frames.count_owned(Owner::Hypervisor), self.s.stats().frames);
        for (gfn, mode, mfn) in self.s.roots() {
            let root = mfn * 4096;
            let entries = table(mem, mfn);
            prop_assert_eq!(entries[255], 0);
            prop_assert_eq!(&entries[256..], &self.w.half[..]);
            let mut leaves = Vec::new();
            leaves_of(mem, mfn, 4, 0, &mut leaves)?;
            for at in leaves {
                let t = hw_walk(mem, root, at).expect("every level allows ring 3");
                self.check_translation(gfn << 12, mode, at, t)?;
            }
        }
        for leaf_table in self.s.leaf_tables() {
            for (i, &e) in table(mem, leaf_table).iter().enumerate() {
                if e & (PRESENT | WRITABLE) == PRESENT | WRITABLE {
                    let gfn = self.gfn_of[&((e & ADDRESS_MASK) >> 12)];
                    prop_assert!(!self.s.is_tracked(gfn), "a leaf maps page table {gfn} writable");
                    prop_assert!(
                        self.s.in_reverse_map(gfn, leaf_table, i),
                        "writable leaf missing from the reverse map"
                    );
                }
            }
        }
        for (page, t) in &self.tlb {
            self.check_translation(self.cr3(), self.mode, page << 12, *t)?;
        }
        Ok(())
    }
}

/// The 512 entries of the table in machine frame `mfn`.
fn table(mem: &TestMemory, mfn: Mfn) -> [u64; 512] {
    use zerocopy::IntoBytes;
    let mut entries = [0u64; 512];
    mem.read(mfn * 4096, entries.as_mut_bytes()); // the host is little-endian, like x86
    entries
}

/// The addresses of every present leaf under shadow table `mfn` at
/// `level` (every present shadow entry must allow ring 3).
fn leaves_of(mem: &TestMemory, mfn: Mfn, level: u8, base: u64, out: &mut Vec<u64>) -> Result<(), TestCaseError> {
    let slots = if level == 4 { GUEST_SLOTS } else { 512 };
    for (i, &e) in table(mem, mfn).iter().enumerate().take(slots) {
        if e & PRESENT == 0 {
            prop_assert_eq!(e, 0, "not-present shadow entries are zero");
            continue;
        }
        prop_assert!(e & USER != 0 && e & HUGE == 0, "shadow entry {:#x}", e);
        let at = base | (i as u64) << (12 + 9 * (u64::from(level) - 1));
        if level == 1 {
            out.push(at);
        } else {
            leaves_of(mem, (e & ADDRESS_MASK) >> 12, level - 1, at, out)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn shadows_always_agree_with_the_guest(
        nxe in prop::bool::weighted(0.8),
        budget in prop::sample::select(vec![2u64, 6, 1000]),
        ops in prop::collection::vec(any_op(), 1..100),
    ) {
        let mut m = Machine::new(nxe, budget);
        m.check()?;
        for op in ops {
            match op {
                Op::Write { table, index, target, flags } => m.store_entry(table, index, target << 12 | flags),
                Op::Zero { gfn } => m.store(gfn * 4096, &[0; 4096]),
                Op::Scribble { gfn, offset, len, byte } => m.store(gfn * 4096 + offset, &alloc::vec![byte; len as usize]),
                Op::Map { space, at, mapping } => {
                    m.map(space.unwrap_or(m.space), at.addr(), mapping);
                    m.mapped[space.unwrap_or(m.space)].push(at);
                }
                Op::Unmap { space, at, level } => m.unmap(space, at.addr(), level),
                Op::Switch { space, user } => m.switch(space, if user { Mode::User } else { Mode::Kernel }),
                Op::Touch { at, recent, write, fetch, value } => {
                    // Prefer what this space mapped, else what any did.
                    let list = if m.mapped[m.space].is_empty() { m.mapped.concat() } else { m.mapped[m.space].clone() };
                    let at = match recent {
                        Some(i) if !list.is_empty() => Va { offset: at.offset, ..list[i.index(list.len())] },
                        _ => at,
                    };
                    m.touch(at, write, fetch, value)?;
                }
            }
            m.check()?;
        }
        let st = m.s.stats();
        std::eprintln!("STATS fills={} gf={} twf={} created={} resets={} tw={} down={} tlb={}", st.fills, st.guest_faults, st.table_write_faults, st.tables_created, st.resets, st.table_writes, st.downgrades, m.tlb.len());
    }
}
