//! What the fuzzer knows about its own memory, and the rules that keep the
//! memory it runs on mapped as it was while it throws random page-table
//! updates at the hypervisor.
//!
//! The fuzzer lives in the linear window the hypervisor built (code, data,
//! stack, heap, start info, console ring, shared info, frame list, boot page
//! tables) plus three things it sets up itself from frames it balloons in:
//!
//! - the *arena*: [`ARENA_PAGES`] pages mapped writable at [`ARENA_VA`] by
//!   an L1 of its own, with unmapped pages on both sides. Every buffer the
//!   hypervisor may write, and every request array, is built there;
//! - the *window*: an L1 of its own mapping [`WINDOW_VA`], whose entries are
//!   fair game for any update;
//! - a *clone* of its top-level table (the same slot 0), so that
//!   `NewBaseptr` can switch address spaces and back without losing a
//!   mapping.
//!
//! The rules, each checked where a request is generated:
//!
//! 1. An entry the fuzzer relies on (*kept*: every entry of a boot table
//!    that was present once set-up was done, every level-1 entry of the
//!    linear window, every arena entry, slot 0 of the clone, and every word
//!    of a read-only frame) is only ever rewritten with its current value
//!    or with a value the ABI refuses whatever the state (a reserved bit,
//!    no user bit, a hypervisor frame): [`Space::entry_rule`],
//!    [`Space::va_rule`], [`kept_value`].
//! 2. A new entry never maps a frame the fuzzer uses writable (rule 1's
//!    frames, the arena, its data), and never links one of its tables where
//!    that table could be taken for the level below (an alias of its own
//!    mappings): [`Space::sanitize`]. So the only writable paths to its own
//!    memory are the ones the hypervisor built.
//! 3. Its kept tables stay tables: the arena L1, the window L1 and the
//!    clone are pinned and never unpinned; `NewBaseptr` only ever loads
//!    the boot table or the clone (or a frame refused for certain).
//! 4. A pointer the hypervisor may write through never reaches a page of
//!    the linear window mapped writable, nor the arena outside a fresh
//!    allocation: [`Space::write_ok`].
//!
//! Reads are harmless except where the content becomes requests
//! (`mmu_update`, `mmuext_op`, `multicall`, `iret`) or console output:
//! those arrays are built in the arena, or read from the page tables or the
//! frame list (whose words make requests the ABI refuses), or are unmapped.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use parvus_guest_sdk::hypercall;
use parvus_guest_sdk::hypercall_abi::layout::GUEST_VIRT_LIMIT;
use parvus_guest_sdk::hypercall_abi::mm::MmuUpdate;
use parvus_guest_sdk::hypercall_abi::{HypercallError, PAGE_SIZE};
use parvus_guest_sdk::paging::{table_index, Pte, PteFlags, ADDRESS_MASK};
use parvus_guest_sdk::{frames, paging, StartInfo};

/// Slot of the boot directory (the L2 of the first GiB) that maps the arena.
const ARENA_SLOT: usize = 500;
/// Slot of the boot directory that maps the window.
const WINDOW_SLOT: usize = 501;
/// Where the arena's L1 maps: its first and last page stay unmapped.
pub const ARENA_VA: u64 = (ARENA_SLOT as u64) << 21;
/// Pages of the arena.
pub const ARENA_PAGES: u64 = 16;
/// The window: 2 MiB whose mappings are fair game.
pub const WINDOW_VA: u64 = (WINDOW_SLOT as u64) << 21;
/// A frame of the hypervisor (its image is loaded at 1 MiB).
pub const HYPERVISOR_MFN: u64 = 0x100;
/// Frames ballooned in at set-up to be mapped, pinned and given back.
pub const POOL_FRAMES: usize = 8;

/// Entry bits.
pub const P: u64 = PteFlags::PRESENT.bits();
pub const W: u64 = PteFlags::WRITABLE.bits();
pub const U: u64 = PteFlags::USER.bits();
pub const NX: u64 = PteFlags::NO_EXECUTE.bits();

/// What a frame is to the fuzzer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A boot page table of this level.
    BootTable(u8),
    /// A table of this level the fuzzer set up and keeps pinned.
    Pinned(u8),
    /// A page of the arena.
    Arena,
    /// Mapped writable in the linear window (data, stack, heap, console
    /// ring, shared info).
    Writable,
    /// Mapped read-only in the linear window and not a table (image, start
    /// info, frame list).
    ReadOnly,
    /// Its own, but nothing it uses (the stack's guard page, frames ballooned
    /// in), or not its own: fair game.
    Free,
}

/// How an entry may be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Rule 1: only with this value (its current one) or one refused for certain.
    Kept(u64),
    /// Any value, sanitized for a table of this level (`None`: unknown).
    Free(Option<u8>),
}

/// The fuzzer's memory.
pub struct Space {
    /// The frames it relies on (absent: [`Kind::Free`]).
    kinds: BTreeMap<u64, Kind>,
    /// The pfn of each boot frame.
    pfns: BTreeMap<u64, u64>,
    /// Which entries of each boot table are kept.
    kept: BTreeMap<u64, [u64; 8]>,
    /// Pages of the linear window mapped writable.
    writable: Vec<bool>,
    /// Start of the linear window.
    pub virt_base: u64,
    /// The boot top-level table, and what its slot 0 links.
    pub boot_l4: u64,
    /// The boot tables, with their levels.
    pub boot_tables: Vec<(u64, u8)>,
    /// The arena's L1 and what each of its entries holds.
    pub arena_l1: u64,
    arena_entries: [u64; 512],
    /// The arena's frames.
    pub arena_frames: Vec<u64>,
    /// The window's L1.
    pub window_l1: u64,
    /// The clone of the boot top-level table.
    pub clone_l4: u64,
    /// Boot frames by kind, for the generators.
    pub writable_frames: Vec<u64>,
    pub read_only_frames: Vec<u64>,
    /// Frames ballooned in (and maybe given back since): fair game.
    pub pool: Vec<u64>,
    /// Lowest and highest boot frame (their neighbours are likely another
    /// domain's).
    pub own_low: u64,
    pub own_high: u64,
    /// Every kept entry of the boot tables and what it held once set-up was
    /// done (accessed and dirty bits left out: the MMU sets them).
    snapshot: Vec<(u64, usize, u64)>,
}

/// The bits the MMU sets in entries by itself.
const ACCESSED_DIRTY: u64 = 0x60;

/// Reads a word of the domain's mapped memory.
fn read_word(va: u64) -> u64 {
    // SAFETY: every caller passes an 8-byte-aligned address of a page the
    // hypervisor mapped for the domain's whole life and that no kept entry
    // ever unmaps (Space's rule 1); the read is volatile because the
    // hypervisor and the MMU write page tables behind Rust's back.
    unsafe { (va as *const u64).read_volatile() }
}

/// Machine address of entry `index` of the table in frame `mfn`.
pub fn entry_address(mfn: u64, index: usize) -> u64 {
    (mfn << 12) + index as u64 * 8
}

/// Why set-up failed.
#[derive(Debug)]
pub struct SetUpError(pub &'static str, pub HypercallError);

impl Space {
    /// Learns the boot layout, balloons in its own frames and sets up the
    /// arena, the window and the clone.
    pub fn set_up(start: &'static StartInfo) -> Result<Space, SetUpError> {
        let list = frames::frame_list();
        let pfns: BTreeMap<u64, u64> = list.iter().enumerate().map(|(pfn, mfn)| (*mfn, pfn as u64)).collect();
        let boot_l4 = paging::boot_root_mfn();
        let mut space = Space {
            kinds: BTreeMap::new(),
            pfns,
            kept: BTreeMap::new(),
            writable: Vec::new(),
            virt_base: start.virt_base,
            boot_l4,
            boot_tables: Vec::new(),
            arena_l1: 0,
            arena_entries: [0; 512],
            arena_frames: Vec::new(),
            window_l1: 0,
            clone_l4: 0,
            writable_frames: Vec::new(),
            read_only_frames: Vec::new(),
            pool: Vec::new(),
            own_low: list.iter().copied().min().unwrap_or(0),
            own_high: list.iter().copied().max().unwrap_or(0),
            snapshot: Vec::new(),
        };
        // The boot tables, level by level from the root.
        let mut level_tables = alloc::vec![boot_l4];
        for level in (1..=4u8).rev() {
            let mut next = Vec::new();
            for &mfn in &level_tables {
                space.boot_tables.push((mfn, level));
                space.kinds.insert(mfn, Kind::BootTable(level));
                if level > 1 {
                    let slots = if level == 4 { 0..255 } else { 0..512 };
                    next.extend(slots.map(|i| Pte(space.word(mfn, i))).filter(|e| e.is_present()).map(Pte::mfn));
                }
            }
            level_tables = next;
        }
        // Every other boot frame by how the linear window maps it.
        for (pfn, &mfn) in list.iter().enumerate() {
            let va = start.virt_base + pfn as u64 * PAGE_SIZE;
            let entry = space.boot_leaf(va).map(Pte).unwrap_or(Pte::EMPTY);
            let writable = entry.is_present() && entry.0 & W != 0;
            space.writable.push(writable);
            if space.kinds.contains_key(&mfn) {
                continue;
            }
            let kind = match (entry.is_present(), writable) {
                (true, true) => Kind::Writable,
                (true, false) => Kind::ReadOnly,
                (false, _) => Kind::Free,
            };
            match kind {
                Kind::Writable => space.writable_frames.push(mfn),
                Kind::ReadOnly => space.read_only_frames.push(mfn),
                _ => {}
            }
            if kind != Kind::Free {
                space.kinds.insert(mfn, kind);
            }
        }
        space.build()?;
        // Kept entries: present now (set-up done), and every level-1 entry
        // of the linear window (the stack's guard page too).
        let window = start.virt_base..start.virt_base + start.nr_pages * PAGE_SIZE;
        for &(mfn, level) in &space.boot_tables {
            let mut bits = [0u64; 8];
            for i in 0..512 {
                let present = Pte(space.word(mfn, i)).is_present();
                if present {
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
            if level == 1 {
                for pfn in 0..start.nr_pages {
                    let va = window.start + pfn * PAGE_SIZE;
                    if space.boot_l1_of(va) == Some(mfn) {
                        let i = table_index(va, 1);
                        bits[i / 64] |= 1 << (i % 64);
                    }
                }
            }
            space.kept.insert(mfn, bits);
        }
        space.snapshot = space.kept_entries().collect();
        Ok(space)
    }

    /// Every kept entry of the boot tables, with its value now.
    fn kept_entries(&self) -> impl Iterator<Item = (u64, usize, u64)> + '_ {
        self.boot_tables
            .iter()
            .flat_map(move |&(mfn, _)| (0..512).filter(move |&i| self.is_kept(mfn, i)).map(move |i| (mfn, i)))
            .map(|(mfn, i)| (mfn, i, self.word(mfn, i) & !ACCESSED_DIRTY))
    }

    /// How many kept entries of the boot tables differ from the snapshot
    /// taken at set-up.
    pub fn damaged_entries(&self) -> usize {
        self.kept_entries().zip(&self.snapshot).filter(|(now, then)| now != *then).count()
    }

    /// Balloons in the arena, the window, the clone and the pool, and
    /// links them.
    fn build(&mut self) -> Result<(), SetUpError> {
        let mut mfns = [0u64; 3 + ARENA_PAGES as usize + POOL_FRAMES];
        hypercall::increase_reservation(&mut mfns).map_err(|e| SetUpError("balloon in its frames", e))?;
        let [arena_l1, window_l1, clone_l4, rest @ ..] = mfns;
        let (arena, pool) = rest.split_at(ARENA_PAGES as usize);
        self.arena_l1 = arena_l1;
        self.window_l1 = window_l1;
        self.clone_l4 = clone_l4;
        self.arena_frames = arena.to_vec();
        self.pool = pool.to_vec();
        self.kinds.insert(arena_l1, Kind::Pinned(1));
        self.kinds.insert(window_l1, Kind::Pinned(1));
        self.kinds.insert(clone_l4, Kind::Pinned(4));
        for &mfn in arena {
            self.kinds.insert(mfn, Kind::Arena);
        }
        let pin = |level, mfn, what| hypercall::pin_table(level, mfn).map_err(|e| SetUpError(what, e));
        pin(1, arena_l1, "pin the arena's table")?;
        pin(1, window_l1, "pin the window's table")?;
        pin(4, clone_l4, "pin the clone of its top-level table")?;
        let directory = self.directory();
        let link = |mfn| Pte::new(mfn, PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER).0;
        let mut updates = Vec::new();
        for (i, &mfn) in arena.iter().enumerate() {
            let entry = Pte::new(mfn, PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::NO_EXECUTE).0;
            self.arena_entries[1 + i] = entry;
            updates.push(MmuUpdate { ptr: entry_address(arena_l1, 1 + i), val: entry });
        }
        updates.push(MmuUpdate { ptr: entry_address(directory, ARENA_SLOT), val: link(arena_l1) });
        updates.push(MmuUpdate { ptr: entry_address(directory, WINDOW_SLOT), val: link(window_l1) });
        updates.push(MmuUpdate { ptr: entry_address(clone_l4, 0), val: self.word(self.boot_l4, 0) });
        // SAFETY: every request writes a table the fuzzer just pinned, or an
        // unused slot of the boot directory: nothing Rust uses changes.
        unsafe { hypercall::mmu_update(&updates) }.map_err(|e| SetUpError("map the arena and the window", e.error))?;
        Ok(())
    }

    /// The boot directory that maps the first GiB (the arena and the window).
    fn directory(&self) -> u64 {
        let l3 = Pte(self.word(self.boot_l4, 0)).mfn();
        Pte(self.word(l3, 0)).mfn()
    }

    /// Word `index` of boot frame `mfn` (mapped in the linear window).
    fn word(&self, mfn: u64, index: usize) -> u64 {
        let pfn = self.pfns[&mfn];
        read_word(self.virt_base + pfn * PAGE_SIZE + index as u64 * 8)
    }

    /// The boot L1 that maps `va` through boot tables only.
    fn boot_l1_of(&self, va: u64) -> Option<u64> {
        let mut table = self.boot_l4;
        for level in (2..=4u8).rev() {
            let entry = Pte(self.word(table, table_index(va, level)));
            if !entry.is_present() || self.kinds.get(&entry.mfn()) != Some(&Kind::BootTable(level - 1)) {
                return None;
            }
            table = entry.mfn();
        }
        Some(table)
    }

    /// The boot level-1 entry of `va`, if boot tables map it.
    fn boot_leaf(&self, va: u64) -> Option<u64> {
        self.boot_l1_of(va).map(|l1| self.word(l1, table_index(va, 1)))
    }

    /// Machine address of the window's entry that maps `va`.
    pub fn window_entry(&self, va: u64) -> u64 {
        entry_address(self.window_l1, table_index(va, 1))
    }

    /// What the fuzzer relies on frame `mfn` for.
    pub fn kind(&self, mfn: u64) -> Kind {
        self.kinds.get(&mfn).copied().unwrap_or(Kind::Free)
    }

    fn is_kept(&self, table: u64, index: usize) -> bool {
        self.kept.get(&table).is_some_and(|bits| bits[index / 64] & (1 << (index % 64)) != 0)
    }

    /// How the entry at machine address `ptr` may be rewritten.
    pub fn entry_rule(&self, ptr: u64) -> Rule {
        if ptr % 8 != 0 {
            return Rule::Free(None); // refused as misaligned, whatever the value
        }
        let (mfn, index) = (ptr >> 12, (ptr % PAGE_SIZE / 8) as usize);
        match self.kind(mfn) {
            Kind::BootTable(_) if self.is_kept(mfn, index) => Rule::Kept(self.word(mfn, index)),
            Kind::BootTable(level) => Rule::Free(Some(level)),
            Kind::Pinned(_) if mfn == self.arena_l1 => Rule::Kept(self.arena_entries[index]),
            Kind::Pinned(_) if mfn == self.clone_l4 && index == 0 => Rule::Kept(self.word(self.boot_l4, 0)),
            Kind::Pinned(level) => Rule::Free(Some(level)),
            Kind::ReadOnly => Rule::Kept(self.word(mfn, index)),
            // Never a table (mapped writable): refused, whatever the value.
            Kind::Writable | Kind::Arena => Rule::Free(None),
            Kind::Free => Rule::Free(None),
        }
    }

    /// How the level-1 entry that maps `va` may be rewritten by
    /// `update_va_mapping` (which walks the current tables: only boot
    /// tables reach the fuzzer's own level-1 tables, by rule 2).
    pub fn va_rule(&self, va: u64) -> Rule {
        if va >= GUEST_VIRT_LIMIT {
            return Rule::Free(Some(1));
        }
        let in_directory = table_index(va, 4) == 0 && table_index(va, 3) == 0;
        if in_directory && table_index(va, 2) == ARENA_SLOT {
            return Rule::Kept(self.arena_entries[table_index(va, 1)]);
        }
        if in_directory && table_index(va, 2) == WINDOW_SLOT {
            return Rule::Free(Some(1));
        }
        match self.boot_l1_of(va) {
            Some(l1) if self.is_kept(l1, table_index(va, 1)) => Rule::Kept(self.word(l1, table_index(va, 1))),
            _ => Rule::Free(Some(1)),
        }
    }

    /// Rule 2: `value` made safe to write into a table of `level` (`None`:
    /// not known): a frame the fuzzer uses is mapped read-only, and none of
    /// its tables is linked where it would be taken for the level below.
    pub fn sanitize(&self, value: u64, level: Option<u8>) -> u64 {
        if value & P == 0 {
            return value;
        }
        let retarget = (value & !ADDRESS_MASK) | (HYPERVISOR_MFN << 12);
        match (self.kind(Pte(value).mfn()), level) {
            (Kind::Free, _) => value,
            (Kind::Writable | Kind::Arena, _) => value & !W,
            (Kind::ReadOnly, Some(1)) => value & !W,
            (Kind::ReadOnly, _) => retarget,
            // A writable mapping of a table is refused, unless the table is
            // the boot L4 while the clone is loaded (then it is no table).
            (Kind::BootTable(4), Some(1)) => value & !W,
            (Kind::BootTable(_) | Kind::Pinned(_), Some(1)) => value,
            (Kind::BootTable(l) | Kind::Pinned(l), Some(n)) if l + 1 != n => value,
            (Kind::BootTable(_) | Kind::Pinned(_), _) => retarget,
        }
    }

    /// Rule 4: whether the hypervisor may write `len` bytes at `addr` (a
    /// range that is refused is fine too).
    pub fn write_ok(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len.max(1));
        let arena = ARENA_VA..ARENA_VA + (ARENA_PAGES + 2) * PAGE_SIZE;
        if addr < arena.end && end > arena.start {
            return false;
        }
        let first = addr.saturating_sub(self.virt_base) / PAGE_SIZE;
        let last = end.saturating_sub(1).saturating_sub(self.virt_base) / PAGE_SIZE;
        if end <= self.virt_base {
            return true;
        }
        (first..=last.min(self.writable.len() as u64)).all(|pfn| !self.writable.get(pfn as usize).copied().unwrap_or(false))
    }
}

/// Rule 1: a value for a kept entry whose current value is `current`:
/// itself, or one the ABI refuses whatever the state.
pub fn kept_value(current: u64, choice: u64) -> u64 {
    const LOW_FLAGS: u64 = 0xe7f;
    match choice % 6 {
        0 | 1 => current,
        2 => current | P | (1 << (52 + choice / 6 % 11)),
        3 => current | P | if choice / 6 % 2 == 0 { PteFlags::HUGE.bits() } else { PteFlags::GLOBAL.bits() },
        4 => (current | P) & !U,
        _ => (current & LOW_FLAGS) | P | U | (HYPERVISOR_MFN << 12),
    }
}
