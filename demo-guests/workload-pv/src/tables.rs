//! The paravirtualized platform's page tables: pools of pinned tables, and
//! [`Tree`], the tables of one address space.
//!
//! Direct paging makes a table page expensive to create and to retire:
//! the hypervisor checks all 512 entries when a frame first becomes a
//! table (*validation*) and again when it stops being one. The platform
//! pays that once, at boot: it takes every table it will ever use from the
//! SDK ([`PageTable`]: a zeroed frame made read-only), pins it, and keeps
//! it in a pool by level. A pinned table stays validated, so linking it
//! into a parent, or unlinking it, is a plain reference count in the
//! hypervisor. A table goes back to its pool only empty (every entry the
//! platform wrote is cleared first), which is what makes it reusable at
//! any level-matching place.
//!
//! Top-level tables get a pool of their own for a second reason: the
//! hypervisor writes its half of the address space into every validated
//! top-level table, so such a frame is never empty again.
//!
//! A [`Tree`] remembers its tables in a short list (level, address prefix,
//! frame, and the parent entry that links it), so finding the table for an
//! address reads no memory, tearing the tree down knows what to unlink,
//! and queued links that the hypervisor has not applied yet are seen. The
//! lists live in [`TableLists`], so that a tree is a small handle.

use parvus_guest_sdk::frames::{pfn_to_mfn, va_to_pfn};
use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
use parvus_guest_sdk::paging::{PageTable, PagingError};
use workload_core::frames::FramePool;
use workload_core::kernel::MAX_SPACES;
use workload_core::layout::pte::{ADDRESS_MASK, LINK, PRESENT, USER_DATA};
use workload_core::layout::table_index;
use workload_core::table_list::{self, ListId};
use workload_core::PlatformError;

use crate::memory;
use crate::queue::Queue;

/// Tables of each level kept pinned (index 0 is level 1).
pub const POOL_SIZES: [usize; 4] = [256, 32, 16, 8];

/// Pools of pinned, empty tables, one per level (see the module docs).
pub struct TablePools {
    pools: [FramePool<{ POOL_SIZES[0] }>; 4],
}

impl TablePools {
    /// Empty pools (see [`TablePools::fill`]).
    pub const fn new() -> Self {
        TablePools { pools: [const { FramePool::empty() }; 4] }
    }

    /// Makes and pins the tables of every pool.
    pub fn fill(&mut self) -> Result<(), PagingError> {
        for (index, &count) in POOL_SIZES.iter().enumerate() {
            for _ in 0..count {
                let mut table = PageTable::new(index as u8 + 1)?;
                table.pin()?;
                let pfn = va_to_pfn(table.va()).expect("a heap frame is in the linear window");
                // Kept for the domain's life: never unpinned or given back.
                core::mem::forget(table);
                self.pools[index].add_frame(pfn);
            }
        }
        Ok(())
    }

    /// An empty pinned table of `level` (its pfn).
    fn take(&mut self, level: u8) -> Result<u64, PlatformError> {
        self.pools[usize::from(level - 1)].alloc().ok_or(PlatformError::TooManyTables)
    }

    /// Gives back a table of `level` whose entries are all cleared (or
    /// queued to be, before anything can link it again).
    fn give_back(&mut self, level: u8, pfn: u64) {
        self.pools[usize::from(level - 1)].free(pfn);
    }
}

/// One table below a tree's root.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    /// Machine address of the parent entry that links it.
    link: u64,
    /// The address bits above this table's reach (`va >> (12 + 9 * level)`).
    prefix: u32,
    pfn: u32,
    level: u8,
}

impl Table {
    /// What the unused slots of a list hold.
    pub const UNUSED: Table = Table { link: 0, prefix: 0, pfn: 0, level: 0 };

    fn mfn(&self) -> u64 {
        pfn_to_mfn(u64::from(self.pfn)).expect("a table frame is the domain's")
    }
}

/// The prefix of `va` at `level` (fits 32 bits: user addresses have 48).
fn prefix(va: u64, level: u8) -> u32 {
    (va >> (12 + 9 * u32::from(level))) as u32
}

/// Trees the platform holds at once: the kernel's spaces, its spares, and
/// the tree of the user programs' code.
pub const MAX_TREES: usize = MAX_SPACES + SPARE_TREES + 1;

/// Trees of destroyed spaces the platform keeps for the next spaces.
pub const SPARE_TREES: usize = 4;

/// The table lists of every tree (the bookkeeping is workload-core's,
/// shared with the native build, so that a [`Tree`] is a small handle).
pub type TableLists = table_list::TableLists<Table, MAX_TREES>;

/// Where a tree's tables come from, where they are remembered, and where
/// its requests go.
pub struct TreeContext<'a> {
    /// The pinned tables.
    pub pools: &'a mut TablePools,
    /// The trees' table lists.
    pub lists: &'a mut TableLists,
    /// The page-table requests.
    pub queue: &'a mut Queue,
}

/// The page tables of one address space below a root of level `top`
/// (see the module docs): a handle on its root and its table list.
pub struct Tree {
    top: u8,
    root_pfn: u64,
    root_mfn: u64,
    list: ListId,
}

impl Tree {
    /// A tree with an empty root of level `top`.
    pub fn new(top: u8, cx: &mut TreeContext<'_>) -> Result<Tree, PlatformError> {
        let list = cx.lists.take()?;
        let root_pfn = match cx.pools.take(top) {
            Ok(pfn) => pfn,
            Err(e) => {
                cx.lists.give_back(list);
                return Err(e);
            }
        };
        let root_mfn = pfn_to_mfn(root_pfn).expect("a heap frame is the domain's");
        Ok(Tree { top, root_pfn, root_mfn, list })
    }

    /// The root's machine frame number.
    pub fn root_mfn(&self) -> u64 {
        self.root_mfn
    }

    /// Machine address of root entry `slot`.
    pub fn root_entry(&self, slot: usize) -> u64 {
        self.root_mfn * PAGE_SIZE + slot as u64 * 8
    }

    fn find<'l>(&self, lists: &'l TableLists, level: u8, va: u64) -> Option<&'l Table> {
        let prefix = prefix(va, level);
        lists.list(self.list).tables().iter().find(|t| t.level == level && t.prefix == prefix)
    }

    /// Machine frame of the level-`level` table on `va`'s path, made (and
    /// its link queued) if missing.
    fn table(&mut self, va: u64, level: u8, cx: &mut TreeContext<'_>) -> Result<u64, PlatformError> {
        if level == self.top {
            return Ok(self.root_mfn);
        }
        if let Some(t) = self.find(cx.lists, level, va) {
            return Ok(t.mfn());
        }
        let parent = self.table(va, level + 1, cx)?;
        let list = cx.lists.list_mut(self.list);
        if list.is_full() {
            return Err(PlatformError::TooManyTables);
        }
        let pfn = cx.pools.take(level)?;
        let mfn = pfn_to_mfn(pfn).expect("a heap frame is the domain's");
        let link = parent * PAGE_SIZE + table_index(va, u32::from(level) + 1) as u64 * 8;
        cx.queue.update(link, (mfn << 12) | LINK);
        list.push(Table { link, prefix: prefix(va, level), pfn: pfn as u32, level });
        Ok(mfn)
    }

    /// Queues `entry` as the level-1 entry for `va`, making tables on the way.
    pub fn set_leaf(&mut self, va: u64, entry: u64, cx: &mut TreeContext<'_>) -> Result<(), PlatformError> {
        let l1 = self.table(va, 1, cx)?;
        cx.queue.update(l1 * PAGE_SIZE + table_index(va, 1) as u64 * 8, entry);
        Ok(())
    }

    /// The level-1 entry for `va` (as queued, if a write is pending) and
    /// its machine address, if its table exists.
    pub fn leaf(&self, va: u64, lists: &TableLists, queue: &Queue) -> Option<(u64, u64)> {
        let l1 = self.find(lists, 1, va)?;
        let index = table_index(va, 1);
        let ptr = l1.mfn() * PAGE_SIZE + index as u64 * 8;
        let entry = queue.pending_write(ptr).unwrap_or_else(|| memory::read_entry(u64::from(l1.pfn), index));
        Some((ptr, entry))
    }

    /// Unlinks every table (leaves first, so each is empty when its link
    /// goes) and gives the tables back, the root included. The caller has
    /// cleared the leaves, and any root entry it wrote itself.
    pub fn destroy(self, cx: &mut TreeContext<'_>) {
        let tables = cx.lists.list(self.list).tables();
        for level in 1..self.top {
            for t in tables.iter().filter(|t| t.level == level) {
                cx.queue.update(t.link, 0);
                cx.pools.give_back(level, u64::from(t.pfn));
            }
        }
        cx.lists.give_back(self.list);
        cx.pools.give_back(self.top, self.root_pfn);
    }
}

/// The machine frame an entry names.
pub fn entry_mfn(entry: u64) -> u64 {
    (entry & ADDRESS_MASK) >> 12
}

/// Whether an entry maps something.
pub fn is_present(entry: u64) -> bool {
    entry & PRESENT != 0
}

/// The entry for a user data page: present, writable, user, not executable.
pub fn data_entry(mfn: u64) -> u64 {
    (mfn << 12) | USER_DATA
}

/// The entry linking a lower table (or the shared image tree) of frame `mfn`.
pub fn link_entry(mfn: u64) -> u64 {
    (mfn << 12) | LINK
}
