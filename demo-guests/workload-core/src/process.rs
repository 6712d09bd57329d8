//! [`Process`]: one user process, and [`Region`]: a range of its memory.
//!
//! A process's memory is a short list of regions (its stack and what
//! `mmap` gave it). Regions only reserve addresses: a page is allocated,
//! zeroed and mapped on its first touch, so the page tables are the only
//! record of which pages exist, and the kernel asks the platform
//! (`translate`, `unmap`) when it needs to know.

use crate::layout::PAGE_SIZE;

/// Most regions one process may have.
pub const MAX_REGIONS: usize = 8;

/// What a region is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// The stack, made with the process.
    Stack,
    /// An `mmap` region (the only kind `munmap` takes).
    Mmap,
}

/// `pages` pages of user memory from `start`, filled on first touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address (page-aligned).
    pub start: u64,
    /// Length in pages.
    pub pages: u64,
    /// What it is for.
    pub kind: RegionKind,
}

impl Region {
    /// The first address after it.
    pub fn end(&self) -> u64 {
        self.start + self.pages * PAGE_SIZE
    }

    /// Whether `va` lies in it.
    pub fn contains(&self, va: u64) -> bool {
        (self.start..self.end()).contains(&va)
    }

    /// The address of each of its pages.
    pub fn page_addresses(&self) -> impl Iterator<Item = u64> {
        (self.start..self.end()).step_by(PAGE_SIZE as usize)
    }
}

/// A process's list of regions (a fixed array: the kernel has no heap).
pub type Regions = [Option<Region>; MAX_REGIONS];

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// It can run.
    Runnable,
    /// It is in `wait`, for a child to exit.
    Waiting,
    /// It exited with this status; its parent has not collected it yet.
    /// Its memory is gone already.
    Zombie(u64),
}

/// One user process; `S` is the platform's address space. (Its registers
/// are in the kernel's table of contexts, at the same index, so that
/// creating or ending a process never moves them.)
pub struct Process<S> {
    /// Its id (1, 2, ... in each operation).
    pub pid: u64,
    /// Its parent's id, if it was forked and the parent still lives.
    pub parent: Option<u64>,
    /// Where it is in its life.
    pub state: State,
    /// Its address space (`None` once it exited).
    pub space: Option<S>,
    /// Its memory.
    pub regions: Regions,
    /// Where the next `mmap` region starts.
    pub mmap_next: u64,
}

impl<S> Process<S> {
    /// The region holding `va`.
    pub fn region_of(&self, va: u64) -> Option<Region> {
        self.regions.iter().flatten().copied().find(|r| r.contains(va))
    }

    /// Adds a region; `false` if the list is full.
    pub fn add_region(&mut self, region: Region) -> bool {
        match self.regions.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(region);
                true
            }
            None => false,
        }
    }

    /// Removes and returns the `mmap` region that starts at `start` and is
    /// `pages` long.
    pub fn remove_mmap(&mut self, start: u64, pages: u64) -> Option<Region> {
        let slot = self
            .regions
            .iter_mut()
            .find(|slot| slot.is_some_and(|r| r.start == start && r.pages == pages && r.kind == RegionKind::Mmap))?;
        slot.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Process<()> {
        Process {
            pid: 1,
            parent: None,
            state: State::Runnable,
            space: Some(()),
            regions: [None; MAX_REGIONS],
            mmap_next: 0x10_0000,
        }
    }

    #[test]
    fn regions_are_found_by_address_and_removed_whole() {
        let mut p = process();
        let stack = Region { start: 0x1000, pages: 2, kind: RegionKind::Stack };
        let map = Region { start: 0x10_0000, pages: 3, kind: RegionKind::Mmap };
        assert!(p.add_region(stack) && p.add_region(map));
        assert_eq!(p.region_of(0x2fff), Some(stack));
        assert_eq!(p.region_of(0x3000), None);
        assert_eq!(p.region_of(0x10_2abc), Some(map));
        assert_eq!(map.page_addresses().collect::<Vec<_>>(), [0x10_0000, 0x10_1000, 0x10_2000]);
        assert_eq!(p.remove_mmap(0x1000, 2), None, "the stack is not an mmap region");
        assert_eq!(p.remove_mmap(0x10_0000, 2), None, "only a whole region");
        assert_eq!(p.remove_mmap(0x10_0000, 3), Some(map));
        assert_eq!(p.region_of(0x10_0000), None);
    }

    #[test]
    fn the_region_list_has_a_limit() {
        let mut p = process();
        let r = Region { start: 0, pages: 1, kind: RegionKind::Mmap };
        for _ in 0..MAX_REGIONS {
            assert!(p.add_region(r));
        }
        assert!(!p.add_region(r));
    }
}
