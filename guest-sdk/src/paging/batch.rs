//! [`Batch`]: `mmu_update` requests sent together.
//!
//! One hypercall per entry would cost a round trip into the hypervisor per
//! page; a batch collects up to [`BATCH_LEN`] requests and sends them in
//! one `mmu_update`, which the hypervisor applies in order.

use hypercall_abi::mm::MmuUpdate;

use super::Pte;
use crate::hypercall::{self, Aligned, BatchError};

/// Requests a [`Batch`] holds before it sends them.
pub const BATCH_LEN: usize = 64;

/// Up to [`BATCH_LEN`] pending `mmu_update` requests. Sent when full, by
/// [`Batch::flush`], or on drop (a refusal at drop panics, since it can no
/// longer be reported: call `flush` to handle it).
pub struct Batch {
    reqs: Aligned<[MmuUpdate; BATCH_LEN]>,
    len: usize,
}

impl Batch {
    /// An empty batch.
    pub const fn new() -> Batch {
        Batch { reqs: Aligned([MmuUpdate { ptr: 0, val: 0 }; BATCH_LEN]), len: 0 }
    }

    /// Requests waiting to be sent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds "write `entry` at machine address `ptr`", sending the batch
    /// first if it is full (an error then is that earlier batch's).
    ///
    /// # Safety
    ///
    /// As for [`hypercall::mmu_update`]: when applied, the request must not
    /// change any mapping the running Rust code relies on.
    pub unsafe fn push(&mut self, ptr: u64, entry: Pte) -> Result<(), BatchError> {
        if self.len == BATCH_LEN {
            self.flush()?;
        }
        self.reqs.0[self.len] = MmuUpdate { ptr, val: entry.0 };
        self.len += 1;
        Ok(())
    }

    /// Sends the waiting requests. On a refusal the batch is emptied
    /// anyway (the requests after the refused one are dropped).
    pub fn flush(&mut self) -> Result<(), BatchError> {
        let len = core::mem::replace(&mut self.len, 0);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: every request was promised harmless by `push`'s caller.
        unsafe { hypercall::mmu_update(&self.reqs.0[..len]) }
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            panic!("page-table batch dropped with a refused request: {e}");
        }
    }
}
