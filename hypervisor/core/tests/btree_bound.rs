//! `heap_account::btree_bytes` bounds what a B-tree of the standard
//! library holds on the heap: measured here, with a counting allocator, for
//! maps and sets whose entries are the sizes the shadow bookkeeping uses,
//! through random insertions, removals and `retain`s. (The bound rests on
//! how the standard library builds its nodes, not on its API: this test is
//! what says it still holds.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use parvus_core::heap_account::btree_bytes;

/// The system allocator, counting the bytes each thread holds.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    let _ = HELD.try_with(|h| h.set(h.get() + bytes));
}

// SAFETY: every call is passed to `System` unchanged; counting touches
// only a thread-local `Cell`, which needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn held() -> isize {
    HELD.with(Cell::get)
}

/// A small xorshift generator: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Drives a map of `K -> V` made by `make` through growth, churn and
/// pruning, checking the bound after every step.
fn check<K: Ord + Copy, V: Copy>(make: impl Fn(u64) -> (K, V), keys: u64) {
    let base = held();
    let mut map = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut worst = 0f64;
    for step in 0..40_000u64 {
        let (k, v) = make(rng.next() % keys);
        match step % 10 {
            0..=5 => {
                map.insert(k, v);
            }
            6..=8 => {
                map.remove(&k);
            }
            _ if step % 5000 == 9 => {
                let cut = rng.next() % 4;
                let mut i = 0u64;
                map.retain(|_, _| {
                    i += 1;
                    i % 4 != cut
                });
            }
            _ => {}
        }
        let used = (held() - base) as usize;
        let bound = btree_bytes::<K, V>(map.len());
        assert!(used <= bound, "{} entries hold {used} bytes, more than the bound {bound}", map.len());
        worst = worst.max(used as f64 / bound as f64);
    }
    assert!(worst > 0.4, "the bound is not absurdly loose ({worst:.2} at worst)");
    drop(map);
    assert_eq!(held(), base);
}

#[test]
fn the_shadow_maps_stay_within_the_bound() {
    // The tables by guest frame: u64 -> eight optional frames.
    check(|k| (k, [Some(k); 8]), 3000);
    // The splinters: a 16-byte key -> a frame.
    check(|k| ((k, k as u16, 0u8), k), 3000);
    // The splinters of each entry, and the reverse map: sets of pairs.
    check(|k| ((k, k), ()), 3000);
    check(|k| ((k / 7, (k, k as u16)), ()), 20_000);
}

#[test]
fn sets_built_in_order_stay_within_the_bound_too() {
    // Ascending insertions split nodes at their right end: the tightest
    // case for "at least five entries a node".
    let base = held();
    let mut set = BTreeSet::new();
    for k in 0..20_000u64 {
        set.insert((k, k));
        assert!((held() - base) as usize <= btree_bytes::<(u64, u64), ()>(set.len()));
    }
    // And removals from the right end merge them; emptied, it keeps its root.
    for k in (0..20_000u64).rev() {
        set.remove(&(k, k));
        let (used, bound) = ((held() - base) as usize, btree_bytes::<(u64, u64), ()>(set.len()));
        assert!(used <= bound, "{} entries hold {used} bytes, more than the bound {bound}", set.len());
    }
}
