//! The kernel's own 4-level page tables.
//!
//! ```text
//!   PML4 (one per process, and the kernel's own)
//!   slot 0 ──> the identity map of [4 KiB, mem_bytes), 4 KiB pages, shared
//!              by every PML4: kernel pages supervisor and writable, the
//!              user programs' .user_text user and read-only, .user_rodata
//!              user, read-only and not executable
//!   slot 1 ──> the process's own tree: its stack and mmap pages, user,
//!              writable, not executable
//! ```
//!
//! Links (entries that point at a lower table) carry `USER | WRITABLE`:
//! the level-1 entry alone decides the rights. Page 0 stays unmapped, so a
//! null pointer faults.
//!
//! A table is created zeroed and retired zeroed: tearing a space down
//! clears every link it wrote, leaves first (its level-1 tables are empty
//! already: the kernel unmapped every page), so a retired table can serve
//! again at once without a `memset` (see [`TablePool`]). Entries are read
//! and written only through [`phys`](crate::phys), one aligned 64-bit
//! access each.

use workload_core::frames::FramePool;
use workload_core::kernel::MAX_SPACES;
use workload_core::layout::pte::{ADDRESS_MASK, LINK, NO_EXECUTE, PRESENT, USER, WRITABLE};
use workload_core::layout::{table_index, PAGE_SIZE};
use workload_core::table_list::{self, ListId};
use workload_core::PlatformError;

use crate::phys;

/// Retired (empty) tables kept for reuse.
const RETIRED_TABLES: usize = 64;

/// Tables that were in use and are all zero now, kept for the next
/// space; beyond [`RETIRED_TABLES`] they go back to the frame pool.
pub struct TablePool {
    zeroed: [u64; RETIRED_TABLES],
    len: usize,
}

impl TablePool {
    /// No retired table.
    pub const fn new() -> Self {
        TablePool { zeroed: [0; RETIRED_TABLES], len: 0 }
    }

    /// An empty table: a retired one, or a fresh frame zeroed with `memset`.
    pub fn take<const N: usize>(&mut self, frames: &mut FramePool<N>) -> Result<u64, PlatformError> {
        if self.len > 0 {
            self.len -= 1;
            return Ok(self.zeroed[self.len]);
        }
        let frame = frames.alloc().ok_or(PlatformError::OutOfFrames)?;
        phys::zero(frame);
        Ok(frame)
    }

    /// Takes back a table whose entries are all zero.
    pub fn retire<const N: usize>(&mut self, table: u64, frames: &mut FramePool<N>) {
        if self.len < RETIRED_TABLES {
            self.zeroed[self.len] = table;
            self.len += 1;
        } else {
            frames.free(table);
        }
    }
}

/// One table below a space's root, remembered for the teardown.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    /// Physical address of the parent entry that links it.
    link: u64,
    /// The table's frame.
    frame: u64,
    level: u8,
}

impl Table {
    /// What the unused slots of a list hold.
    pub const UNUSED: Table = Table { link: 0, frame: 0, level: 0 };
}

/// The table lists of every space (the bookkeeping is workload-core's,
/// shared with the paravirtualized build, so that a [`Space`] is a small
/// handle).
pub type TableLists = table_list::TableLists<Table, MAX_SPACES>;

/// Where a space's tables come from and are remembered.
pub struct Pools<'a, const N: usize> {
    /// Retired tables.
    pub tables: &'a mut TablePool,
    /// The spaces' table lists.
    pub lists: &'a mut TableLists,
    /// Fresh frames.
    pub frames: &'a mut FramePool<N>,
}

/// A process's address space: its PML4 and the index of the list of the
/// tables of its own slots.
pub struct Space {
    root: u64,
    list: ListId,
}

impl Space {
    /// A space whose PML4 shares `slot0` (the identity map) with every other.
    pub fn new<const N: usize>(slot0: u64, pools: &mut Pools<'_, N>) -> Result<Space, PlatformError> {
        let list = pools.lists.take()?;
        let root = match pools.tables.take(pools.frames) {
            Ok(root) => root,
            Err(e) => {
                pools.lists.give_back(list);
                return Err(e);
            }
        };
        phys::write_entry(root, slot0);
        Ok(Space { root, list })
    }

    /// Physical address of its PML4 (what CR3 holds while it is active).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Clears every link it wrote, leaves first, and retires its tables.
    /// Every page must be unmapped already, so each table is then empty.
    pub fn destroy<const N: usize>(self, pools: &mut Pools<'_, N>) {
        let tables = pools.lists.list(self.list).tables();
        for level in 1..=3 {
            for t in tables.iter().filter(|t| t.level == level) {
                phys::write_entry(t.link, 0);
                pools.tables.retire(t.frame, pools.frames);
            }
        }
        pools.lists.give_back(self.list);
        phys::write_entry(self.root, 0);
        pools.tables.retire(self.root, pools.frames);
    }

    /// The level-1 table on `va`'s path, made (zeroed, linked) if missing.
    pub fn l1_table<const N: usize>(&mut self, va: u64, pools: &mut Pools<'_, N>) -> Result<u64, PlatformError> {
        let mut table = self.root;
        for level in [4u8, 3, 2] {
            let link = table + table_index(va, u32::from(level)) as u64 * 8;
            let entry = phys::read_entry(link);
            if entry & PRESENT != 0 {
                table = entry & ADDRESS_MASK;
                continue;
            }
            let list = pools.lists.list_mut(self.list);
            if list.is_full() {
                return Err(PlatformError::TooManyTables);
            }
            let new = pools.tables.take(pools.frames)?;
            phys::write_entry(link, new | LINK);
            list.push(Table { link, frame: new, level: level - 1 });
            table = new;
        }
        Ok(table)
    }

    /// Physical address of `va`'s level-1 entry, if its tables exist.
    pub fn leaf(&self, va: u64) -> Option<u64> {
        let mut table = self.root;
        for level in [4u32, 3, 2] {
            let entry = phys::read_entry(table + table_index(va, level) as u64 * 8);
            if entry & PRESENT == 0 {
                return None;
            }
            table = entry & ADDRESS_MASK;
        }
        Some(table + table_index(va, 1) as u64 * 8)
    }
}

/// Builds the kernel's PML4: slot 0 maps `[PAGE_SIZE, mem_bytes)` to
/// itself (see the module docs); `user_text` and `user_rodata` are the
/// user programs' sections. Returns the PML4 and its slot-0 entry, which
/// every process's PML4 copies. (Its tables are never torn down, so they
/// are not remembered: the list is emptied at each new 2 MiB.)
pub fn build_identity_map<const N: usize>(
    mem_bytes: u64,
    user_text: core::ops::Range<u64>,
    user_rodata: core::ops::Range<u64>,
    pools: &mut Pools<'_, N>,
) -> Result<(u64, u64), PlatformError> {
    let mut kernel = Space::new(0, pools)?;
    let mut l1 = 0;
    let mut l1_region = u64::MAX;
    for page in (PAGE_SIZE..mem_bytes).step_by(PAGE_SIZE as usize) {
        if page >> 21 != l1_region {
            pools.lists.list_mut(kernel.list).clear();
            l1 = kernel.l1_table(page, pools)?;
            l1_region = page >> 21;
        }
        let flags = if user_text.contains(&page) {
            PRESENT | USER
        } else if user_rodata.contains(&page) {
            PRESENT | USER | NO_EXECUTE
        } else {
            PRESENT | WRITABLE
        };
        phys::write_entry(l1 + table_index(page, 1) as u64 * 8, page | flags);
    }
    pools.lists.give_back(kernel.list);
    let root = kernel.root;
    Ok((root, phys::read_entry(root)))
}
