//! [`Queue`]: page-table requests held back and sent together.
//!
//! Every change a paravirtualized kernel makes to a page table is a
//! request to the hypervisor, and every hypercall costs a round trip into
//! it, so the platform never sends a request on its own. It queues
//! `mmu_update` entries (write this entry) and `mmuext_op` operations
//! (pin, unpin, switch the user address space) in the order it makes
//! them, and sends the lot just before user mode runs again (the only
//! moment the changes must be in effect). Each run of requests of one kind
//! becomes one call: a demand-zero fault or a munmap costs one hypercall
//! however many entries it changes, a switch to a forked child two (its
//! pages, then the user base pointer).
//!
//! Reading an entry while a write to it is still queued would see the old
//! value, so [`Queue::pending_write`] lets the page-table code read its own
//! writes.

use parvus_guest_sdk::hypercall::{mmuext, raw, Aligned};
use parvus_guest_sdk::hypercall_abi::mm::{MmuUpdate, MmuextCmd, MmuextOp};
use parvus_guest_sdk::hypercall_abi::Hypercall;

/// `mmu_update` entries the queue holds.
const UPDATES: usize = 512;
/// `mmuext_op` operations the queue holds.
const EXTS: usize = 32;
/// Calls one flush may make (runs of one kind).
const CALLS: usize = 16;

/// One call of a flush: a run of updates or of operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// `mmu_update` on `updates[start..start + len]`.
    Updates { start: usize, len: usize },
    /// `mmuext_op` on `exts[start..start + len]`.
    Exts { start: usize, len: usize },
}

/// Page-table requests waiting to be sent (see the module docs).
pub struct Queue {
    updates: Aligned<[MmuUpdate; UPDATES]>,
    n_updates: usize,
    exts: Aligned<[MmuextOp; EXTS]>,
    n_exts: usize,
    runs: [Run; CALLS],
    n_runs: usize,
}

impl Queue {
    /// An empty queue.
    pub const fn new() -> Queue {
        Queue {
            updates: Aligned([MmuUpdate { ptr: 0, val: 0 }; UPDATES]),
            n_updates: 0,
            exts: Aligned([MmuextOp { cmd: 0, reserved: 0, arg: 0 }; EXTS]),
            n_exts: 0,
            runs: [Run::Updates { start: 0, len: 0 }; CALLS],
            n_runs: 0,
        }
    }

    /// Queues "write `val` at machine address `ptr`" (an entry of one of
    /// the platform's user page tables: never the kernel's own tables).
    pub fn update(&mut self, ptr: u64, val: u64) {
        if self.n_updates == UPDATES || self.needs_new_run(false) {
            self.flush();
        }
        self.updates.0[self.n_updates] = MmuUpdate { ptr, val };
        self.n_updates += 1;
        match &mut self.runs[..self.n_runs] {
            [.., Run::Updates { len, .. }] => *len += 1,
            _ => self.push_run(Run::Updates { start: self.n_updates - 1, len: 1 }),
        }
    }

    /// Queues one `mmuext_op` operation.
    pub fn ext(&mut self, cmd: MmuextCmd, arg: u64) {
        if self.n_exts == EXTS || self.needs_new_run(true) {
            self.flush();
        }
        self.exts.0[self.n_exts] = mmuext(cmd, arg);
        self.n_exts += 1;
        match &mut self.runs[..self.n_runs] {
            [.., Run::Exts { len, .. }] => *len += 1,
            _ => self.push_run(Run::Exts { start: self.n_exts - 1, len: 1 }),
        }
    }

    /// Whether adding a request of this kind would start a run and no
    /// run is left.
    fn needs_new_run(&self, ext: bool) -> bool {
        let extends = match self.runs[..self.n_runs].last() {
            Some(Run::Exts { .. }) => ext,
            Some(Run::Updates { .. }) => !ext,
            None => false,
        };
        !extends && self.n_runs == CALLS
    }

    fn push_run(&mut self, run: Run) {
        self.runs[self.n_runs] = run;
        self.n_runs += 1;
    }

    /// The value last queued for the entry at `ptr`, if a write to it is
    /// waiting.
    pub fn pending_write(&self, ptr: u64) -> Option<u64> {
        self.updates.0[..self.n_updates].iter().rev().find(|u| u.ptr == ptr).map(|u| u.val)
    }

    /// The hypercall, record address and count of one run.
    fn run_call(&self, run: Run) -> (Hypercall, u64, u64) {
        match run {
            Run::Updates { start, len } => (Hypercall::MmuUpdate, &self.updates.0[start] as *const MmuUpdate as u64, len as u64),
            Run::Exts { start, len } => (Hypercall::MmuextOp, &self.exts.0[start] as *const MmuextOp as u64, len as u64),
        }
    }

    /// Sends everything queued: one hypercall per run, in order.
    ///
    /// (Not one `multicall` for all runs: under `-icount`, a multicall of an
    /// `mmuext_op` and a 2-entry `mmu_update` costs 1,930 instructions, the
    /// two calls made one after the other 1,293 (`mm_pair_multicall` and
    /// `mm_pair_separate` in `cargo xtask bench`; 3,572 against 558 + 833
    /// when first measured, before the fast-path work). Multicall now reads
    /// its entries through one translation per page, but every page-table
    /// call may remap that page, so after each one the hypervisor
    /// translates it again. Traced, a batch does six checked translations
    /// of guest addresses (the entries' page at the start and after each
    /// page-table call, each result write, the two record arrays) against
    /// two for the separate calls, at about 110 instructions each: more
    /// than the ~100 of the entry and exit it saves.)
    ///
    /// # Panics
    ///
    /// If the hypervisor refuses a request: the platform builds every
    /// request from its own bookkeeping, so a refusal is a bug there.
    pub fn flush(&mut self) {
        let n_runs = core::mem::replace(&mut self.n_runs, 0);
        self.n_updates = 0;
        self.n_exts = 0;
        for run in 0..n_runs {
            let (call, records, len) = self.run_call(self.runs[run]);
            // SAFETY: 1. every request touches only user page tables, which
            // no Rust code reads through a mapping (see `update`); 2. the
            // records are this queue's, 16-byte aligned (the arrays are,
            // and records are 16 bytes), and stay put during the call; 3. no
            // `done` counter is passed (the SDK's wrappers pass one, which
            // costs the hypervisor two more guest-memory translations: a
            // refusal is a bug here, and where it happened does not matter).
            if let Err(e) = unsafe { raw::hypercall3(call, records, len, 0) } {
                panic!("workload-pv: the hypervisor refused a page-table request: {e}");
            }
        }
    }
}
