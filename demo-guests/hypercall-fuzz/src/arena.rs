//! The arena: the only memory the fuzzer lets the hypervisor write, and
//! where it builds every request array.
//!
//! Each top-level call starts with an empty arena ([`Arena::reset`]); each
//! buffer of the call (a multicall's entries, and each entry's own buffers)
//! is a fresh allocation, so that what the hypervisor writes for one never
//! lands in another. Allocations come from the bottom; [`Arena::at_end`]
//! places a buffer so that it ends exactly where the arena does, with an
//! unmapped page after it, for requests that run off the end of mapped
//! memory.

use crate::space::{ARENA_PAGES, ARENA_VA};
use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// First byte of the arena (its first page is left unmapped).
pub const START: u64 = ARENA_VA + PAGE_SIZE;
/// The byte after the arena (unmapped).
pub const END: u64 = START + ARENA_PAGES * PAGE_SIZE;

/// The arena's allocation state.
pub struct Arena {
    next: u64,
    top: u64,
}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Arena {
        Arena { next: START, top: END }
    }

    /// Forgets every allocation.
    pub fn reset(&mut self) {
        *self = Arena::new();
    }

    /// `len` bytes aligned to `align` (a power of two), or `None` when full.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let at = self.next.checked_next_multiple_of(align)?;
        let end = at.checked_add(len)?;
        if end > self.top {
            return None;
        }
        self.next = end;
        Some(at)
    }

    /// `len` bytes ending where the arena ends (once per reset), or `None`.
    pub fn at_end(&mut self, len: u64) -> Option<u64> {
        let at = END.checked_sub(len)?;
        if self.top != END || at < self.next {
            return None;
        }
        self.top = at;
        Some(at)
    }

    /// Whether `[at, at + len)` lies in the arena.
    pub fn contains(at: u64, len: u64) -> bool {
        at >= START && at.checked_add(len).is_some_and(|end| end <= END)
    }

    /// Writes `value` at `at`, as much of it as lies in the arena.
    pub fn write<T: IntoBytes + Immutable + ?Sized>(at: u64, value: &T) {
        for (i, byte) in value.as_bytes().iter().enumerate() {
            let va = at + i as u64;
            if Arena::contains(va, 1) {
                // SAFETY: the arena is mapped writable for the fuzzer's whole
                // life (its entries are kept, see `space`), no Rust object
                // lives there, and the hypervisor writes it only during a
                // hypercall; volatile because it does.
                unsafe { (va as *mut u8).write_volatile(*byte) };
            }
        }
    }

    /// Reads a `T` at `at` (in the arena).
    pub fn read<T: FromBytes + IntoBytes>(at: u64) -> T {
        let mut value = T::new_zeroed();
        let len = core::mem::size_of::<T>() as u64;
        assert!(Arena::contains(at, len), "read outside the arena");
        for (i, byte) in value.as_mut_bytes().iter_mut().enumerate() {
            // SAFETY: as for `write`: mapped (checked above), no Rust object.
            *byte = unsafe { ((at + i as u64) as *const u8).read_volatile() };
        }
        value
    }

    /// Reads the word at `at` (in the arena, 8-byte aligned).
    pub fn read_u64(at: u64) -> u64 {
        assert!(Arena::contains(at, 8) && at % 8 == 0, "read outside the arena");
        // SAFETY: as for `write`: mapped, aligned (checked), no Rust object.
        unsafe { (at as *const u64).read_volatile() }
    }
}
