//! Which domain runs next: stride scheduling, a proportional share that no
//! guest can starve.
//!
//! Each runnable domain has a *pass*, a virtual time that advances by the
//! CPU time it used divided by its weight; the runnable domain with the
//! smallest pass runs next (ties go to the lowest id). A domain of weight
//! 512 thus gets twice the CPU of one of weight 256 when both want it, and
//! a domain that spins forever is preempted at the end of its slice and
//! overtaken by everyone whose pass is lower. A `yield` is charged as a
//! whole slice, so it really lets the others run. A domain that wakes up
//! (later: from `block`) starts at the smallest pass of those running, so
//! sleeping earns no credit to hog the CPU later. (Waldspurger and Weihl,
//! "Stride scheduling", 1995; Xen's credit scheduler aims at the same
//! proportion with a different mechanism.)

use crate::domain::DomainId;
use alloc::vec::Vec;

/// Weight of a domain that does not say (like Xen's default).
pub const DEFAULT_WEIGHT: u32 = 256;
/// Length of a time slice.
pub const SLICE_NS: u64 = 10_000_000;

/// Pass units per nanosecond at weight 1 are `STRIDE_SCALE`; dividing by the
/// weight keeps integer precision.
const STRIDE_SCALE: u128 = 1 << 16;

#[derive(Clone, Copy, Debug)]
struct Entry {
    weight: u32,
    runnable: bool,
    pass: u128,
}

/// The scheduler's view of every domain.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    entries: Vec<Entry>,
}

impl Scheduler {
    /// Heap bytes of one domain's entry.
    pub const ENTRY_BYTES: usize = core::mem::size_of::<Entry>();

    /// A scheduler with room for `n` domains (so adding them allocates
    /// nothing).
    pub fn with_capacity(n: usize) -> Self {
        Scheduler { entries: Vec::with_capacity(n) }
    }

    /// Adds domain `id` (ids are added in order) with a weight, runnable.
    pub fn add(&mut self, id: DomainId, weight: u32) {
        assert_eq!(usize::from(id.0), self.entries.len(), "domains are added in id order");
        let pass = self.min_pass().unwrap_or(0);
        self.entries.push(Entry { weight: weight.max(1), runnable: true, pass });
    }

    fn min_pass(&self) -> Option<u128> {
        self.entries.iter().filter(|e| e.runnable).map(|e| e.pass).min()
    }

    /// The runnable domain with the smallest pass.
    pub fn pick(&self) -> Option<DomainId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.runnable)
            .min_by_key(|(i, e)| (e.pass, *i))
            .map(|(i, _)| DomainId(i as u16))
    }

    /// Whether any domain other than `id` is runnable.
    pub fn others_runnable(&self, id: DomainId) -> bool {
        self.entries.iter().enumerate().any(|(i, e)| e.runnable && i != usize::from(id.0))
    }

    /// Whether another runnable domain would be picked before `id` once
    /// `id` is charged `ran_ns` more.
    pub fn would_preempt(&self, id: DomainId, ran_ns: u64) -> bool {
        let me = &self.entries[usize::from(id.0)];
        let my_pass = me.pass + u128::from(ran_ns) * STRIDE_SCALE / u128::from(me.weight);
        self.entries
            .iter()
            .enumerate()
            .any(|(i, e)| i != usize::from(id.0) && e.runnable && (e.pass, i) < (my_pass, usize::from(id.0)))
    }

    /// Charges `ns` nanoseconds of CPU to `id`.
    pub fn charge(&mut self, id: DomainId, ns: u64) {
        let e = &mut self.entries[usize::from(id.0)];
        e.pass += u128::from(ns) * STRIDE_SCALE / u128::from(e.weight);
    }

    /// Marks `id` runnable or not; a domain becoming runnable starts at the
    /// smallest pass of the runnable ones.
    pub fn set_runnable(&mut self, id: DomainId, runnable: bool) {
        let floor = self.min_pass();
        let e = &mut self.entries[usize::from(id.0)];
        if runnable && !e.runnable {
            e.pass = e.pass.max(floor.unwrap_or(0));
        }
        e.runnable = runnable;
    }

    /// Whether `id` is runnable.
    pub fn is_runnable(&self, id: DomainId) -> bool {
        self.entries[usize::from(id.0)].runnable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yielding_domains_alternate_in_id_order() {
        let mut s = Scheduler::default();
        for i in 0..3 {
            s.add(DomainId(i), DEFAULT_WEIGHT);
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let d = s.pick().unwrap();
            order.push(d.0);
            s.charge(d, SLICE_NS); // a yield costs a slice
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        s.set_runnable(DomainId(1), false);
        assert_eq!(s.pick(), Some(DomainId(0)));
        assert!(s.others_runnable(DomainId(0)));
    }

    #[test]
    fn cpu_follows_weights() {
        let mut s = Scheduler::default();
        s.add(DomainId(0), 256);
        s.add(DomainId(1), 512);
        let mut used = [0u64; 2];
        for _ in 0..300 {
            let d = s.pick().unwrap();
            s.charge(d, SLICE_NS);
            used[usize::from(d.0)] += SLICE_NS;
        }
        assert_eq!(used[1], 2 * used[0]);
    }

    #[test]
    fn sleeping_earns_no_credit() {
        let mut s = Scheduler::default();
        s.add(DomainId(0), 256);
        s.add(DomainId(1), 256);
        s.set_runnable(DomainId(1), false);
        for _ in 0..100 {
            s.charge(DomainId(0), SLICE_NS);
        }
        s.set_runnable(DomainId(1), true);
        // Domain 1 resumes level with domain 0, not 100 slices behind it.
        s.charge(DomainId(1), SLICE_NS);
        assert_eq!(s.pick(), Some(DomainId(0)));
    }

    #[test]
    fn a_woken_domain_preempts_only_when_it_is_owed_the_cpu() {
        let mut s = Scheduler::default();
        s.add(DomainId(0), 256);
        s.add(DomainId(1), 256);
        s.set_runnable(DomainId(1), false);
        s.charge(DomainId(0), 5 * SLICE_NS);
        s.set_runnable(DomainId(1), true); // starts level with 0
        assert!(s.would_preempt(DomainId(0), 1_000), "0 ran a little more since: 1 goes first");
        s.charge(DomainId(0), SLICE_NS);
        assert!(!s.would_preempt(DomainId(1), 0), "1 is owed the CPU: nobody goes before it");
    }
}
