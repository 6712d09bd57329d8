//! Writing into the console ring page shared with the hypervisor.
//!
//! The guest is the only writer of `out_prod` and of the `out` bytes; the
//! hypervisor is the only writer of `out_cons`, and it reads the ring only
//! while this domain is inside a hypercall (or after it faulted). So the
//! protocol is: copy the bytes into free slots, then publish them by storing
//! the new `out_prod` with release ordering, which keeps the compiler from
//! moving the byte stores after the index store.

use core::ptr::{addr_of_mut, NonNull};
use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};

use hypercall_abi::console::CONSOLE_OUT_SIZE;
use hypercall_abi::ConsoleRing;

use crate::hypercall;

/// Exclusive access to the domain's console ring.
pub(crate) struct Ring {
    ring: NonNull<ConsoleRing>,
}

// SAFETY: `Ring` is only a pointer to a page shared with the hypervisor, not
// with other guest threads; the `Mutex` in `console` serialises its users.
unsafe impl Send for Ring {}

impl Ring {
    /// # Safety
    ///
    /// `addr` is the console ring page the hypervisor named in the start-info
    /// page: mapped writable, 4 KiB aligned, for the rest of the domain's
    /// life, and accessed by no other guest code than this `Ring`.
    pub(crate) unsafe fn new(addr: u64) -> Option<Self> {
        NonNull::new(addr as *mut ConsoleRing).map(|ring| Ring { ring })
    }

    fn out_prod(&self) -> &AtomicU32 {
        // SAFETY: the field is in the ring page (valid and aligned for the
        // domain's life, see `new`), and both sides only use it atomically.
        unsafe { AtomicU32::from_ptr(addr_of_mut!((*self.ring.as_ptr()).out_prod)) }
    }

    fn out_cons(&self) -> &AtomicU32 {
        // SAFETY: as for `out_prod`.
        unsafe { AtomicU32::from_ptr(addr_of_mut!((*self.ring.as_ptr()).out_cons)) }
    }

    /// Free bytes in the output buffer. An impossible producer/consumer
    /// distance (the hypervisor resets that case) counts as full.
    fn free_space(&self) -> usize {
        let used = self.out_prod().load(Ordering::Relaxed).wrapping_sub(self.out_cons().load(Ordering::Acquire));
        CONSOLE_OUT_SIZE.saturating_sub(used as usize)
    }

    /// Copies `bytes` into the ring at `prod` (wrapping at the end of the
    /// buffer); `bytes.len()` must not exceed the free space.
    fn copy_in(&mut self, prod: u32, bytes: &[u8]) {
        let start = prod as usize % CONSOLE_OUT_SIZE;
        let first = bytes.len().min(CONSOLE_OUT_SIZE - start);
        // SAFETY: the `out` array lies inside the ring page (see `new`).
        let out = unsafe { addr_of_mut!((*self.ring.as_ptr()).out) }.cast::<u8>();
        // SAFETY: 1. `start + first <= CONSOLE_OUT_SIZE` and
        // `bytes.len() - first <= start` (the caller passes at most the free
        // space), so both copies stay inside `out`. 2. The slots are free, so
        // the hypervisor does not read them until we publish `out_prod`.
        // 3. `bytes` is guest memory Rust owns, never the ring: no overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), out.add(start), first);
            core::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), out, bytes.len() - first);
        }
    }

    /// Appends `bytes` to the ring. When the ring is full it asks the
    /// hypervisor to drain it (`console_write` of length 0); if that frees
    /// nothing, the rest goes straight through `console_write`, which also
    /// drains first, so output stays in order either way.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let mut free = self.free_space();
            if free == 0 {
                let _ = hypercall::console_write(&[]);
                free = self.free_space();
                if free == 0 {
                    let _ = hypercall::console_write_all(bytes);
                    return;
                }
            }
            let chunk = free.min(bytes.len());
            let prod = self.out_prod().load(Ordering::Relaxed);
            self.copy_in(prod, &bytes[..chunk]);
            compiler_fence(Ordering::Release);
            self.out_prod().store(prod.wrapping_add(chunk as u32), Ordering::Release);
            bytes = &bytes[chunk..];
        }
    }
}
