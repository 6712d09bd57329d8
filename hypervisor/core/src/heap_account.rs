//! What each domain makes the hypervisor hold on its heap, charged to it.
//!
//! Like Xen, which charges each domain for the hypervisor memory it causes
//! to be allocated, Parvus charges every block it keeps on its heap *for a
//! domain* to that domain's [`HeapAccount`] while the block lives: the
//! domain's frame list, its event-port table, and for an emulated domain
//! its virtual machine and the bookkeeping of its shadow page tables. A
//! domain may hold at most its *allowance* ([`allowance`]); a request that
//! would take it further fails with `OutOfMemory` for that domain alone
//! (an emulated domain, which makes no requests, is stopped instead).
//!
//! The allowance covers every such structure at the largest size its own
//! limit lets it reach (the ABI's port count, `max_memory`, the shadow
//! budget), so a guest that stays within the ABI never meets it, and the
//! kernel sizes its heap to hold every domain's allowance in full beside
//! its own structures ([`heap_size`]): what one domain takes never comes
//! out of another's. Growth goes through [`try_grow`], which asks the heap
//! with `try_reserve_exact`, so that even a heap that cannot serve a block
//! (fragmented, say) answers `OutOfMemory`, never a panic.
//!
//! Nothing else a guest does leaves anything on the heap: poll lists and
//! console lines live in fixed buffers inside the domain, hypercall
//! arguments are copied through the stack, and what a crash report or the
//! final summary formats is freed before the next guest instruction runs.

use crate::domain::Domain;
use crate::emulated::machine::VirtualMachine;
use crate::emulated::shadow;
use crate::event_channel::Port;
use crate::frame_table::{FrameTable, Mfn};
use crate::scheduler::Scheduler;
use alloc::vec::Vec;
use hypercall_abi::event::NR_PORTS;
use hypercall_abi::HypercallError;

/// Bytes of hypervisor heap held for one domain, and the most it may hold.
///
/// Invariant: `charged <= allowance`, and `charged` is the sum of the
/// layout sizes of the heap blocks the hypervisor holds for the domain
/// (what [`Domain::heap_held`] recomputes from its structures). Every
/// allocation for the domain is charged here before it is made (and
/// refused if it does not fit), and every free is refunded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapAccount {
    charged: usize,
    allowance: usize,
}

impl HeapAccount {
    /// An account with nothing charged that may hold `allowance` bytes.
    pub const fn new(allowance: usize) -> Self {
        HeapAccount { charged: 0, allowance }
    }

    /// Bytes charged now.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// The most it may hold.
    pub fn allowance(&self) -> usize {
        self.allowance
    }

    /// Charges `bytes` (`OutOfMemory`, with nothing charged, if that would
    /// pass the allowance).
    pub fn charge(&mut self, bytes: usize) -> Result<(), HypercallError> {
        match self.charged.checked_add(bytes) {
            Some(total) if total <= self.allowance => {
                self.charged = total;
                Ok(())
            }
            _ => Err(HypercallError::OutOfMemory),
        }
    }

    /// Refunds `bytes` that were charged.
    pub fn refund(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.charged, "refunding {bytes} bytes of {} charged", self.charged);
        self.charged = self.charged.saturating_sub(bytes);
    }

    /// A structure charged at `from` bytes now holds `to`: charges or
    /// refunds the difference (`OutOfMemory`, with nothing changed, if the
    /// growth does not fit).
    pub fn change(&mut self, from: usize, to: usize) -> Result<(), HypercallError> {
        if to >= from {
            self.charge(to - from)
        } else {
            self.refund(from - to);
            Ok(())
        }
    }
}

/// Heap bytes `v` holds.
pub fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * core::mem::size_of::<T>()
}

/// Makes room in `v` for one more element, charged to `account`. The
/// capacity doubles (from 4), as `Vec::push` would grow it, but never past
/// `max` elements. `OutOfMemory`, with `v` and `account` unchanged, if the
/// allowance or the heap cannot hold the larger block.
pub fn try_grow<T>(v: &mut Vec<T>, max: usize, account: &mut HeapAccount) -> Result<(), HypercallError> {
    if v.len() < v.capacity() {
        return Ok(());
    }
    let (old, capacity) = (vec_bytes(v), (v.capacity() * 2).clamp(4, max.max(v.len() + 1)));
    let new = capacity * core::mem::size_of::<T>();
    account.change(old, new)?;
    if v.try_reserve_exact(capacity - v.len()).is_err() {
        account.refund(new - old);
        return Err(HypercallError::OutOfMemory);
    }
    // (The standard library's `Vec` takes exactly the capacity asked for.)
    debug_assert_eq!(vec_bytes(v), new);
    Ok(())
}

/// Frees `v`'s block and refunds it.
pub fn release<T>(v: &mut Vec<T>, account: &mut HeapAccount) {
    account.refund(vec_bytes(v));
    *v = Vec::new();
}

/// Most bytes a `BTreeMap<K, V>` (or a `BTreeSet<K>`, with `V = ()`) of
/// `len` entries holds on the heap.
///
/// Standard Rust's B-tree keeps at least 5 entries in every node but the
/// root, and a node holds at most 11 entries and, if internal, 12 edges:
/// `len` entries live in at most `(len + 4) / 5` nodes (and a tree emptied
/// by removals keeps its empty root), none larger than an internal node (a
/// header of 12 bytes, the keys, the values and the edges, with padding
/// between them). This is a property of the standard
/// library's implementation rather than of its API, so the shadow tests
/// measure a shadow's real heap against it.
pub const fn btree_bytes<K, V>(len: usize) -> usize {
    let node = 128 + 11 * (core::mem::size_of::<K>() + core::mem::size_of::<V>());
    let nodes = len.div_ceil(5);
    (if nodes == 0 { 1 } else { nodes }) * node
}

/// Bytes of the largest port table (every port the ABI allows).
pub const PORT_TABLE_BYTES: usize = NR_PORTS * core::mem::size_of::<Port>();

/// Bytes of the virtual machine of an emulated domain, and the most its
/// shadow bookkeeping holds.
pub const EMULATED_BYTES: usize = core::mem::size_of::<VirtualMachine>() + shadow::HEAP_MAX;

/// The allowance of a domain that may own up to `max_pages` frames:
/// its frame list at its longest, the largest port table, and for an
/// emulated domain its virtual machine and the most its shadows may hold.
/// (For `max_memory = "4M"`: 8 KiB + 64 KiB = 72 KiB; an emulated domain
/// adds 1.7 MiB.)
pub const fn allowance(max_pages: u64, emulated: bool) -> usize {
    let frames = max_pages as usize * core::mem::size_of::<Mfn>();
    frames + PORT_TABLE_BYTES + if emulated { EMULATED_BYTES } else { 0 }
}

/// The hypervisor's own heap besides the frame table and the domains:
/// the checked boot bundle it keeps (the manifest and each image's
/// segment list), the reports and summary it formats, the copy a growing
/// block makes (one port table at a time: 96 KiB), and room for the
/// allocator's rounding and fragmentation.
pub const HEAP_BASE: usize = 1 << 20;

/// Heap bytes per domain that are not charged to it: its record in the
/// domain table, its scheduler entry, and what the hypervisor keeps of its
/// manifest entry and image (name, command line, segment list).
pub const DOMAIN_RECORD_BYTES: usize = core::mem::size_of::<Domain>() + Scheduler::ENTRY_BYTES + 2048;

/// The heap the hypervisor needs on a machine of `nr_frames` frames for
/// domains with these allowances: the [`HEAP_BASE`], the frame table
/// ([`FrameTable::BYTES_PER_FRAME`] per frame), and each domain's record
/// and allowance.
pub fn heap_size(nr_frames: u64, allowances: impl IntoIterator<Item = usize>) -> usize {
    let domains: usize = allowances.into_iter().map(|a| a + DOMAIN_RECORD_BYTES).sum();
    HEAP_BASE + nr_frames as usize * FrameTable::BYTES_PER_FRAME + domains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_never_holds_more_than_its_allowance() {
        let mut a = HeapAccount::new(100);
        assert_eq!(a.charge(60), Ok(()));
        assert_eq!(a.charge(41), Err(HypercallError::OutOfMemory), "61 more would pass 100");
        assert_eq!(a.charged(), 60, "a refused charge charges nothing");
        assert_eq!(a.charge(usize::MAX), Err(HypercallError::OutOfMemory), "no overflow either");
        assert_eq!(a.change(60, 100), Ok(()));
        assert_eq!(a.change(100, 101), Err(HypercallError::OutOfMemory));
        assert_eq!(a.change(100, 30), Ok(()));
        a.refund(30);
        assert_eq!((a.charged(), a.allowance()), (0, 100));
    }

    #[test]
    fn growth_doubles_up_to_the_limit_and_is_charged_as_it_goes() {
        let mut a = HeapAccount::new(1 << 20);
        let mut v: Vec<u64> = Vec::new();
        let mut capacities = Vec::new();
        for i in 0..10u64 {
            try_grow(&mut v, 10, &mut a).unwrap();
            v.push(i);
            assert_eq!(a.charged(), vec_bytes(&v));
            capacities.push(v.capacity());
        }
        assert_eq!(capacities, [4, 4, 4, 4, 8, 8, 8, 8, 10, 10], "doubling from 4, capped at 10");
        release(&mut v, &mut a);
        assert_eq!((v.capacity(), a.charged()), (0, 0));
    }

    #[test]
    fn growth_past_the_allowance_is_refused_and_changes_nothing() {
        let mut a = HeapAccount::new(4 * 8 + 7);
        let mut v: Vec<u64> = Vec::new();
        for i in 0..4 {
            try_grow(&mut v, usize::MAX, &mut a).unwrap();
            v.push(i);
        }
        assert_eq!(try_grow(&mut v, usize::MAX, &mut a), Err(HypercallError::OutOfMemory));
        assert_eq!((v.len(), v.capacity(), a.charged()), (4, 4, 32));
    }

    #[test]
    fn a_heap_that_cannot_serve_the_block_is_out_of_memory_too() {
        // The allowance would allow it, but no allocator can: `try_reserve`
        // refuses a block larger than `isize::MAX` bytes.
        let mut a = HeapAccount::new(usize::MAX);
        let mut big: Vec<[u8; 1 << 40]> = Vec::new();
        assert_eq!(try_grow(&mut big, usize::MAX, &mut a), Err(HypercallError::OutOfMemory));
        assert_eq!(a.charged(), 0, "the refused block is refunded");
    }

    #[test]
    fn the_allowance_covers_every_bounded_structure() {
        assert_eq!(PORT_TABLE_BYTES, 64 * 1024);
        assert_eq!(allowance(1024, false), 8 * 1024 + 64 * 1024);
        assert!(allowance(1024, true) >= allowance(1024, false) + shadow::HEAP_MAX);
        assert_eq!(heap_size(0, []), HEAP_BASE);
        assert_eq!(heap_size(10, [5]), HEAP_BASE + 10 * FrameTable::BYTES_PER_FRAME + 5 + DOMAIN_RECORD_BYTES);
    }
}
