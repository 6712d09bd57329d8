//! Buffers: where the hypervisor writes (rule 4 of [`crate::space`]),
//! request arrays (built in the arena, or read where their words make
//! requests the ABI refuses), `done` counters, `console_write`'s bytes.

use super::{Fuzzer, Output, Plan, QUIET, UNWRITTEN};
use crate::arena::Arena;

impl Fuzzer {
    /// A pointer the hypervisor may write `len` bytes through (rule 4):
    /// a fresh arena buffer (sometimes misaligned, sometimes running off
    /// the arena's end), or an address that is refused or harmless.
    pub(super) fn write_ptr(&mut self, len: u64) -> u64 {
        let fresh = match self.rng.below(10) {
            0..=5 => self.arena.alloc(len, 8),
            6 => {
                let skew = 1 + self.rng.below(7);
                self.arena.alloc(len + 8, 8).map(|at| at + skew)
            }
            7 if len > 1 => {
                let short = 1 + self.rng.below(len - 1);
                self.arena.at_end(len - short)
            }
            8 => {
                let at = self.address();
                return if self.space.write_ok(at, len) { at } else { self.bad_address() };
            }
            9 => {
                let at = self.any();
                return if self.space.write_ok(at, len) { at } else { self.bad_address() };
            }
            _ => None,
        };
        fresh.unwrap_or_else(|| self.bad_address())
    }

    /// A pointer to `built` records of `size` bytes written by `record`,
    /// for a call told to read `count` of them: in a fresh arena buffer,
    /// or ending at the arena's end when `count` > `built` (the rest runs
    /// into the unmapped page), or unmapped. With `from_frame_list`, it may
    /// also point into the frame list, whose words make requests the ABI
    /// refuses (only while `count` records stay inside it).
    pub(super) fn records<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        built: &[T],
        count: u64,
        from_frame_list: bool,
    ) -> u64 {
        let size = core::mem::size_of::<T>() as u64;
        let bytes = built.len() as u64 * size;
        let frame_list_bytes = self.start.nr_pages * 8;
        let at = match self.rng.below(20) {
            0 if from_frame_list && count.saturating_mul(size) <= frame_list_bytes => {
                let room = (frame_list_bytes - count * size) / size;
                return self.start.frame_list + self.rng.below(room + 1) * size;
            }
            1 => return self.bad_address(),
            _ if count > built.len() as u64 => self.arena.at_end(bytes),
            2 => self.arena.alloc(bytes + 8, 16).map(|at| at + 8),
            _ => self.arena.alloc(bytes, 16),
        };
        match at {
            Some(at) => {
                Arena::write(at, built);
                at
            }
            None => self.bad_address(),
        }
    }

    /// How many records a batch says it has, given `built` of them.
    pub(super) fn batch_count(&mut self, built: usize, max: u64) -> u64 {
        match self.rng.below(20) {
            0 => max + 1,
            1 => self.rng.pick(&[u64::MAX, 1 << 32, 1 << 60]),
            2 => built as u64 + 1 + self.rng.below(4),
            _ => built as u64,
        }
    }

    /// How many records to build.
    pub(super) fn batch_len(&mut self) -> usize {
        match self.rng.below(20) {
            0 => 0,
            1..=12 => 1 + self.rng.below(4) as usize,
            13..=17 => 5 + self.rng.below(12) as usize,
            _ => 17 + self.rng.below(48) as usize,
        }
    }

    /// `plan` (an `mmu_update` or `mmuext_op`) with its `done` counter
    /// checked when it is a fresh one in the arena.
    pub(super) fn with_done(&mut self, plan: Plan) -> Plan {
        let (at, count) = (plan.args[2], plan.args[1]);
        if at != 0 && at % 8 == 0 && Arena::contains(at, 8) {
            Arena::write(at, &UNWRITTEN);
            return plan.with_output(Output::Done { at, count });
        }
        plan
    }

    /// A `done` pointer: none, a fresh counter, misaligned, unmapped.
    pub(super) fn done_ptr(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=3 => 0,
            4..=7 => self.arena.alloc(8, 8).unwrap_or(0),
            8 => self.arena.alloc(16, 8).map_or(0, |at| at + 4),
            _ => self.write_ptr(8),
        }
    }

    /// `console_write`'s buffer and length: quiet bytes (a few, sometimes
    /// more than a call takes), or a range that is refused whole.
    pub(super) fn console_buffer(&mut self) -> (u64, u64) {
        let quiet = QUIET.as_ptr() as u64;
        match self.rng.below(10) {
            0..=4 => (quiet + self.rng.below(64), self.rng.below(9)),
            5 if self.rng.chance(30) => (quiet, self.rng.pick(&[4096, 4097, 1 << 32, u64::MAX])),
            5 => (self.address(), 0),
            6 | 7 => (self.bad_address(), pick!(self.rng, [1, 8, 64, 4096, u64::MAX, self.rng.next()])),
            _ => {
                // Runs off the arena's end: refused whole, nothing printed.
                let before = 1 + self.rng.below(64);
                let len = before + 1 + self.rng.below(64);
                (self.arena.at_end(before).unwrap_or_else(|| self.bad_address()), len)
            }
        }
    }
}
