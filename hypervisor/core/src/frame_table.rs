//! Who owns each machine frame.
//!
//! Every 4 KiB frame of machine memory has exactly one [`Owner`]. Frames that
//! are not RAM, or that hold the hypervisor image, the boot bundle or
//! firmware data, are [`Owner::Reserved`]; the rest start [`Owner::Free`]
//! and are handed to domains by [`FrameTable::alloc`]. Checking ownership is
//! how the hypervisor knows a machine address a guest's tables lead to
//! belongs to that guest.

use crate::domain::DomainId;
use alloc::vec::Vec;

/// A machine frame number (machine address / 4096).
pub type Mfn = u64;

/// Owner of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Not RAM, or RAM the hypervisor must never hand out.
    Reserved,
    /// Available for allocation.
    Free,
    /// Allocated by the hypervisor for itself.
    Hypervisor,
    /// Memory of a domain.
    Domain(DomainId),
}

/// Why a frame operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame is left (or fewer than were asked for).
    OutOfFrames {
        /// Frames asked for.
        wanted: u64,
        /// Frames free.
        free: u64,
    },
    /// The frame is beyond the end of the table.
    NoSuchFrame(Mfn),
    /// The frame is not owned by whom the caller said.
    NotOwner(Mfn),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::OutOfFrames { wanted, free } => write!(f, "out of memory: frames wanted {wanted}, free {free}"),
            FrameError::NoSuchFrame(mfn) => write!(f, "frame {mfn:#x} does not exist"),
            FrameError::NotOwner(mfn) => write!(f, "frame {mfn:#x} is not owned by the caller"),
        }
    }
}

/// What a frame is used as, for the page-typing rules of
/// [`page_type`](crate::page_type). Meaningful while `type_count > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    /// No typed use.
    None,
    /// Mapped writable by some level-1 entry.
    Writable,
    /// A level-1 page table (maps 4 KiB pages).
    L1,
    /// A level-2 page table (page directory).
    L2,
    /// A level-3 page table (page-directory pointer table).
    L3,
    /// A level-4 (top-level) page table.
    L4,
}

impl PageType {
    /// The page-table type of a level (1..=4).
    pub fn table(level: u8) -> PageType {
        match level {
            1 => PageType::L1,
            2 => PageType::L2,
            3 => PageType::L3,
            4 => PageType::L4,
            _ => unreachable!("page-table levels are 1..=4"),
        }
    }

    /// The level of a page-table type.
    pub fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            PageType::None | PageType::Writable => None,
        }
    }
}

/// Everything the hypervisor knows about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Who owns it.
    pub owner: Owner,
    /// Its current type (valid while `type_count > 0`).
    pub ty: PageType,
    /// References that need the type: writable mappings, entries of
    /// higher-level tables, pins and base pointers.
    pub type_count: u32,
    /// Level-1 entries that map it (read-only or writable).
    pub map_count: u32,
    /// Whether a pin holds one of the type references.
    pub pinned: bool,
}

impl FrameInfo {
    const fn with_owner(owner: Owner) -> Self {
        FrameInfo { owner, ty: PageType::None, type_count: 0, map_count: 0, pinned: false }
    }

    /// Whether nothing references the frame (it may be freed or retyped freely).
    pub fn is_unreferenced(&self) -> bool {
        self.type_count == 0 && self.map_count == 0 && !self.pinned
    }
}

/// The owner and type of every frame, and a stack of free ones.
///
/// The stack has room for every frame from the start, so that freeing a
/// frame (when a domain ends, or gives memory back) never allocates.
#[derive(Clone, Debug)]
pub struct FrameTable {
    frames: Vec<FrameInfo>,
    free: Vec<Mfn>,
}

impl FrameTable {
    /// Heap bytes the table takes per frame: its [`FrameInfo`] and its
    /// slot in the free stack.
    pub const BYTES_PER_FRAME: usize = core::mem::size_of::<FrameInfo>() + core::mem::size_of::<Mfn>();

    /// A table of `nr_frames` frames, all reserved.
    pub fn new(nr_frames: u64) -> Self {
        FrameTable {
            frames: alloc::vec![FrameInfo::with_owner(Owner::Reserved); nr_frames as usize],
            free: Vec::with_capacity(nr_frames as usize),
        }
    }

    /// Number of frames the table describes.
    pub fn len(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Whether the table describes no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Marks reserved frames in `start..end` free (RAM from the memory map).
    /// Frames outside the table and frames already free are ignored.
    pub fn add_free(&mut self, start: Mfn, end: Mfn) {
        let end = end.min(self.len());
        // Pushed from the top so that allocation hands out low frames first.
        for mfn in (start..end).rev() {
            if self.frames[mfn as usize].owner == Owner::Reserved {
                self.frames[mfn as usize].owner = Owner::Free;
                self.free.push(mfn);
            }
        }
    }

    /// Marks frames in `start..end` reserved again (for instance the boot
    /// bundle, which sits in RAM the memory map calls free).
    pub fn reserve(&mut self, start: Mfn, end: Mfn) {
        let end = end.min(self.len());
        for mfn in start..end {
            if self.frames[mfn as usize].owner == Owner::Free {
                self.frames[mfn as usize].owner = Owner::Reserved;
            }
        }
        let frames = &self.frames;
        self.free.retain(|m| frames[*m as usize].owner == Owner::Free);
    }

    /// The owner of `mfn`, or `None` beyond the table.
    pub fn owner(&self, mfn: Mfn) -> Option<Owner> {
        self.frames.get(usize::try_from(mfn).ok()?).map(|f| f.owner)
    }

    /// Everything known about `mfn`, or `None` beyond the table.
    pub fn info(&self, mfn: Mfn) -> Option<&FrameInfo> {
        self.frames.get(usize::try_from(mfn).ok()?)
    }

    /// Mutable access for the page-typing rules, or `None` beyond the table.
    pub(crate) fn info_mut(&mut self, mfn: Mfn) -> Option<&mut FrameInfo> {
        self.frames.get_mut(usize::try_from(mfn).ok()?)
    }

    /// Whether `mfn` belongs to `domain`.
    pub fn is_owned_by(&self, mfn: Mfn, domain: DomainId) -> bool {
        self.owner(mfn) == Some(Owner::Domain(domain))
    }

    /// Number of free frames.
    pub fn free_count(&self) -> u64 {
        self.free.len() as u64
    }

    /// Every frame's record, by frame number (for the tests' invariant
    /// checks, which recompute them all after every step).
    #[cfg(test)]
    pub(crate) fn infos(&self) -> &[FrameInfo] {
        &self.frames
    }

    /// Number of frames owned by `owner`.
    pub fn count_owned(&self, owner: Owner) -> u64 {
        self.frames.iter().filter(|f| f.owner == owner).count() as u64
    }

    /// Allocates one frame for `owner`.
    pub fn alloc(&mut self, owner: Owner) -> Result<Mfn, FrameError> {
        let mfn = self.free.pop().ok_or(FrameError::OutOfFrames { wanted: 1, free: 0 })?;
        self.frames[mfn as usize] = FrameInfo::with_owner(owner);
        Ok(mfn)
    }

    /// Allocates `n` frames for `owner`, all or nothing.
    pub fn alloc_many(&mut self, owner: Owner, n: u64) -> Result<Vec<Mfn>, FrameError> {
        if n > self.free_count() {
            return Err(FrameError::OutOfFrames { wanted: n, free: self.free_count() });
        }
        (0..n).map(|_| self.alloc(owner)).collect()
    }

    /// Returns `mfn`, which must be owned by `owner`, to the free pool.
    pub fn free(&mut self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        match self.owner(mfn) {
            None => Err(FrameError::NoSuchFrame(mfn)),
            Some(o) if o != owner || o == Owner::Free || o == Owner::Reserved => Err(FrameError::NotOwner(mfn)),
            Some(_) => {
                self.frames[mfn as usize] = FrameInfo::with_owner(Owner::Free);
                self.free.push(mfn);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table_takes_24_bytes_a_frame_and_freeing_never_allocates() {
        assert_eq!(FrameTable::BYTES_PER_FRAME, 24);
        let mut t = FrameTable::new(64);
        let capacity = t.free.capacity();
        t.add_free(0, 64);
        let taken = t.alloc_many(Owner::Hypervisor, 64).unwrap();
        for mfn in taken {
            t.free(mfn, Owner::Hypervisor).unwrap();
        }
        assert_eq!((t.free.capacity(), t.free_count()), (capacity, 64));
    }

    #[test]
    fn allocation_follows_ownership() {
        let mut t = FrameTable::new(16);
        t.add_free(4, 12);
        t.reserve(10, 11);
        assert_eq!(t.free_count(), 7);
        let d = Owner::Domain(DomainId(1));
        let a = t.alloc(d).unwrap();
        assert_eq!(a, 4, "low frames first");
        assert!(t.is_owned_by(a, DomainId(1)));
        assert_eq!(t.free(a, Owner::Domain(DomainId(2))), Err(FrameError::NotOwner(a)));
        assert_eq!(t.free(0, Owner::Reserved), Err(FrameError::NotOwner(0)));
        assert_eq!(t.free(99, d), Err(FrameError::NoSuchFrame(99)));
        assert_eq!(t.alloc_many(d, 7), Err(FrameError::OutOfFrames { wanted: 7, free: 6 }));
        assert_eq!(t.free_count(), 6, "a refused alloc_many takes nothing");
        assert_eq!(t.free(a, d), Ok(()));
        assert_eq!(t.owner(10), Some(Owner::Reserved));
    }

    proptest! {
        /// Whatever the sequence of operations, every frame has one owner and
        /// the free stack lists exactly the free frames, each once.
        #[test]
        fn free_list_matches_owners(ops in prop::collection::vec((0u8..3, 0u16..4, 0u64..40), 0..200)) {
            let mut t = FrameTable::new(40);
            t.add_free(2, 38);
            for (op, dom, mfn) in ops {
                let owner = Owner::Domain(DomainId(dom));
                match op {
                    0 => { let _ = t.alloc(owner); }
                    1 => { let _ = t.free(mfn, owner); }
                    _ => { let _ = t.alloc_many(owner, mfn % 5); }
                }
                let mut listed = t.free.clone();
                listed.sort_unstable();
                listed.dedup();
                prop_assert_eq!(listed.len(), t.free.len());
                let free: Vec<Mfn> = (0..40).filter(|m| t.owner(*m) == Some(Owner::Free)).collect();
                prop_assert_eq!(listed, free);
                prop_assert_eq!(t.owner(0), Some(Owner::Reserved));
            }
        }
    }
}
