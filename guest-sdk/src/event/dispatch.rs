//! From an upcall to the handlers: the two-level scan of pending ports.
//!
//! The hypervisor sets a port's bit in `evtchn_pending`, and, when the port
//! is not masked, bit `w` of `pending_sel` (word `w` of the bitmap has
//! work) and `upcall_pending`. The dispatcher takes the work in that order:
//! clear `upcall_pending`, swap `pending_sel` with 0, and for each word it
//! named, the pending bits that are not masked. A port with a handler has
//! its pending bit cleared *before* the handler runs, so an event that
//! arrives meanwhile is seen again. A port without a handler is *held*:
//! its mask bit is set and its pending bit kept, and
//! [`set_handler`](super::set_handler) delivers it later.
//!
//! Upcalls stay masked while handlers run (the hypervisor masked them on
//! delivery). When the scan is done the dispatcher clears `upcall_mask`;
//! if `upcall_pending` was set again meanwhile it masks and scans once
//! more, instead of going back through the hypervisor.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::event::BITS_PER_WORD;
use spin::Mutex;

use super::shared::{self, SharedPage};
use super::{Handler, Port, HANDLER_PORTS};

/// Words of the held-port bitmap.
const HELD_WORDS: usize = HANDLER_PORTS / BITS_PER_WORD;

/// The handler of each port below [`HANDLER_PORTS`]. Locked only with
/// upcalls masked (in the dispatcher, or through `with_events_masked`), so
/// an upcall never finds it locked on this single-vCPU domain.
pub(super) static HANDLERS: Mutex<[Option<Handler>; HANDLER_PORTS]> = Mutex::new([None; HANDLER_PORTS]);

/// Ports the dispatcher masked because an event came with no handler.
static HELD: [AtomicU64; HELD_WORDS] = [const { AtomicU64::new(0) }; HELD_WORDS];

/// Upcalls taken.
pub(super) static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Events passed to a handler.
pub(super) static HANDLED: AtomicU64 = AtomicU64::new(0);
/// Events held for want of a handler.
pub(super) static HELD_EVENTS: AtomicU64 = AtomicU64::new(0);

/// The handler of `port`, copied out so that the lock is free while it runs.
fn handler_of(port: usize) -> Option<Handler> {
    HANDLERS.lock().get(port).copied().flatten()
}

/// Forgets that `port` was held; returns whether it was.
pub(super) fn release_held(port: Port) -> bool {
    let port = port.0 as usize;
    match HELD.get(port / BITS_PER_WORD) {
        Some(word) => {
            let bit = 1u64 << (port % BITS_PER_WORD);
            word.fetch_and(!bit, Ordering::AcqRel) & bit != 0
        }
        None => false,
    }
}

/// Masks `port` and keeps its event pending, for a handler to come.
fn hold(page: &SharedPage, word: usize, bit: u64) {
    page.mask[word].fetch_or(bit, Ordering::AcqRel);
    let port = word * BITS_PER_WORD + bit.trailing_zeros() as usize;
    if let Some(held) = HELD.get(port / BITS_PER_WORD) {
        held.fetch_or(1 << (port % BITS_PER_WORD), Ordering::AcqRel);
    }
    HELD_EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// One pass over the pending ports the selector names.
fn scan(page: &SharedPage) {
    page.upcall_pending.store(0, Ordering::Release);
    let mut sel = page.pending_sel.swap(0, Ordering::AcqRel);
    while sel != 0 {
        let word = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        let Some(pending) = page.pending.get(word) else { continue };
        let mut bits = pending.load(Ordering::Acquire) & !page.mask[word].load(Ordering::Acquire);
        while bits != 0 {
            let bit = bits & bits.wrapping_neg();
            bits &= bits - 1;
            let port = word * BITS_PER_WORD + bit.trailing_zeros() as usize;
            match handler_of(port) {
                Some(handler) => {
                    pending.fetch_and(!bit, Ordering::AcqRel);
                    HANDLED.fetch_add(1, Ordering::Relaxed);
                    handler(Port(port as u32));
                }
                None => hold(page, word, bit),
            }
        }
    }
}

/// Set while the dispatcher runs handlers (so `with_events_masked` in a
/// handler does not unmask upcalls when it ends).
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// Whether the dispatcher is running handlers now.
pub(super) fn in_handler() -> bool {
    IN_HANDLER.load(Ordering::Acquire)
}

/// Called by the upcall stub (`upcall.rs`) with upcalls masked.
pub(super) extern "C" fn upcall_dispatch() {
    let page = shared::page();
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    IN_HANDLER.store(true, Ordering::Release);
    loop {
        scan(page);
        IN_HANDLER.store(false, Ordering::Release);
        page.upcall_mask.store(0, Ordering::Release);
        if page.upcall_pending.load(Ordering::Acquire) == 0 {
            break;
        }
        // More came while the handlers ran: take it here rather than
        // through the hypervisor (which would deliver a fresh upcall).
        page.upcall_mask.store(1, Ordering::Release);
        IN_HANDLER.store(true, Ordering::Release);
    }
}
