//! Event channels: the guest kernel's interrupts.
//!
//! A Parvus guest has no interrupt controller. It has numbered *ports*,
//! each connected to a port of another domain, to a virtual interrupt of
//! the hypervisor (the timer, a domain crash), or waiting for a named
//! domain to connect. Sending on a port sets a bit in the receiver's
//! shared-info page and, unless the receiver masked it, *upcalls* its
//! kernel, which runs the handler registered here for that port. See
//! [`hypercall_abi::event`] for the hypervisor's side.
//!
//! ```ignore
//! use parvus_guest_sdk::event::{self, Port};
//! use core::sync::atomic::{AtomicU32, Ordering};
//!
//! static PINGS: AtomicU32 = AtomicU32::new(0);
//! fn on_ping(_: Port) { PINGS.fetch_add(1, Ordering::Relaxed); }
//!
//! event::init()?;                                 // upcalls on
//! let port = event::alloc_unbound(peer_domain)?;  // the peer binds to it
//! event::set_handler(port, on_ping)?;
//! event::block_until(|| PINGS.load(Ordering::Relaxed) > 0);
//! ```
//!
//! # Handlers run like interrupt handlers
//!
//! A handler is a plain `fn(Port)` called from the upcall, with upcalls
//! masked, on the stack of whatever code was interrupted. It must be short
//! and must not take a lock that ordinary code may hold with upcalls
//! enabled: **no `println!` and no heap allocation in a handler** (the
//! console and the allocator have such locks; the interrupted code may own
//! them, and the handler would spin forever). Handlers usually set an
//! atomic, send a reply, or both; ordinary code waits for the atomic with
//! [`block_until`]. Data that ordinary code and handlers share is
//! protected by [`with_events_masked`], this SDK's `cli`/`sti`.
//!
//! # Ports without a handler
//!
//! An event on a port with no handler is not lost: the dispatcher masks the
//! port and leaves it pending, and [`set_handler`] unmasks it, which
//! delivers the event. So a port may be allocated or bound before its
//! handler is set. Handlers exist for ports below [`HANDLER_PORTS`].
//!
//! # Blocking
//!
//! [`block_until`] checks its condition with upcalls masked and sleeps with
//! `sched_op(Block)`, which unmasks and sleeps in one step, so an event
//! that comes between the check and the sleep still wakes the domain.

mod dispatch;
mod shared;
mod upcall;

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hypercall_abi::event::{port_state, BITS_PER_WORD, NR_PORTS};
use hypercall_abi::HypercallError;
use spin::Once;

use crate::hypercall::{self, events as hc};

pub(crate) use shared::{page as shared_page, rdtsc};

/// Ports below this number can have a handler (the table costs 8 bytes a
/// port; the hypervisor hands out the lowest free port, so few guests ever
/// see a higher one).
pub const HANDLER_PORTS: usize = 1024;

/// An event-channel port of this domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl Port {
    /// The port number as the hypercalls take it.
    pub const fn raw(self) -> u64 {
        self.0 as u64
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a port's handler is: called with the port, in the upcall (see the
/// module docs for what a handler may do).
pub type Handler = fn(Port);

/// [`set_handler`] was given a port at or above [`HANDLER_PORTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortOutOfRange(pub Port);

impl fmt::Display for PortOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {} is beyond the {} ports that can have a handler", self.0, HANDLER_PORTS)
    }
}

/// What the hypervisor says a port is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortStatus {
    /// Allocated for domain `remote` to bind to; not connected yet (or its
    /// peer closed it).
    Unbound {
        /// The domain allowed to bind.
        remote: u32,
    },
    /// Connected to `remote_port` of domain `remote`.
    Interdomain {
        /// The peer domain.
        remote: u32,
        /// The peer's port.
        remote_port: Port,
    },
    /// Bound to virtual interrupt `virq`.
    Virq(u32),
}

/// Counters of the dispatcher since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Upcalls taken.
    pub upcalls: u64,
    /// Events passed to handlers (several events on one port between two
    /// upcalls count once: events are edges, not a queue).
    pub handled: u64,
    /// Events that found no handler and were held.
    pub held: u64,
}

static INIT: Once<Result<(), HypercallError>> = Once::new();

/// Set once [`init`] has registered the upcall entry: from then on,
/// upcalls are enabled whenever no critical section or handler runs.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Nesting depth of [`with_events_masked`].
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// Turns upcalls on: registers the SDK's upcall entry with
/// `set_callbacks` (once), then clears `upcall_mask` (a domain starts
/// masked) and takes any event already pending. Inside
/// [`with_events_masked`] or a handler the mask stays set until that ends.
/// Every function of this module that needs upcalls calls it.
///
/// `set_callbacks` also names the entry for system calls from guest user
/// mode: if [`trap::install`](crate::trap::install) ran before, its entry
/// is kept. (Call `trap::install` first: it registers no event entry.)
pub fn init() -> Result<(), HypercallError> {
    (*INIT.call_once(|| {
        let syscall = if crate::trap::handler().is_some() { crate::trap::entry_address() } else { 0 };
        // SAFETY: 1. The event entry is the SDK's stub (`upcall.rs`), which
        // follows the upcall protocol: it saves what the dispatcher may
        // clobber and ends in `iret` with `rsp` at the frame. 2. The
        // system-call entry is 0 (none) or the one `trap::install` already
        // registered, which keeps its contract.
        unsafe { hypercall::set_callbacks(syscall, upcall::entry_address()) }?;
        ENABLED.store(true, Ordering::Release);
        Ok(())
    }))?;
    if may_enable() {
        enable_upcalls(shared_page());
    }
    Ok(())
}

/// Whether upcalls should be on now: the entry is registered, and no
/// critical section or handler is running.
fn may_enable() -> bool {
    ENABLED.load(Ordering::Acquire) && DEPTH.load(Ordering::Acquire) == 0 && !dispatch::in_handler()
}

/// Whether upcalls are enabled now (`upcall_mask` clear).
pub fn upcalls_enabled() -> bool {
    shared_page().upcall_mask.load(Ordering::Acquire) == 0
}

/// Clears `upcall_mask`, then asks for the upcall that became due while
/// it was set, if any.
fn enable_upcalls(page: &shared::SharedPage) {
    page.upcall_mask.store(0, Ordering::Release);
    if page.upcall_pending.load(Ordering::Acquire) != 0 {
        let _ = hc::sched_check_events();
    }
}

/// Runs `f` with upcalls masked: no handler runs until it returns, as with
/// interrupts disabled. Nesting is fine, and so is a call from a handler
/// (upcalls are masked there already). When the outermost section ends,
/// upcalls are enabled again (if [`init`] has run) and what came meanwhile
/// is delivered.
pub fn with_events_masked<R>(f: impl FnOnce() -> R) -> R {
    let page = shared_page();
    DEPTH.fetch_add(1, Ordering::AcqRel);
    page.upcall_mask.store(1, Ordering::Release);
    let result = f();
    DEPTH.fetch_sub(1, Ordering::AcqRel);
    if may_enable() {
        enable_upcalls(page);
    }
    result
}

/// A port of this domain raised by virtual interrupt `virq` (see
/// [`hypercall_abi::event::virq`]; `PortInUse` if it is already bound).
pub fn bind_virq(virq: u64) -> Result<Port, HypercallError> {
    hc::bind_virq(virq).map(Port)
}

/// A new port that domain `remote` may connect to with
/// [`bind_interdomain`]. Tell the peer its number (a command-line
/// convention, a known order...): the hypervisor does not.
pub fn alloc_unbound(remote: u64) -> Result<Port, HypercallError> {
    hc::alloc_unbound(remote).map(Port)
}

/// A new port connected to `remote_port` of domain `remote`, which that
/// domain allocated for this one. Errors: `NoSuchDomain`, `NoSuchPort`
/// (not allocated yet), `PermissionDenied` (allocated for another domain),
/// `WrongPortState` (already connected).
pub fn bind_interdomain(remote: u64, remote_port: Port) -> Result<Port, HypercallError> {
    hc::bind_interdomain(remote, remote_port.raw()).map(Port)
}

/// Raises an event at the other end of `port`.
#[inline]
pub fn send(port: Port) -> Result<(), HypercallError> {
    hc::send(port.raw())
}

/// Closes `port` and forgets its handler and any event still pending on
/// it, so that a port later allocated with the same number starts clean.
pub fn close(port: Port) -> Result<(), HypercallError> {
    hc::close(port.raw())?;
    with_events_masked(|| {
        if let Some(slot) = dispatch::HANDLERS.lock().get_mut(port.0 as usize) {
            *slot = None;
        }
        dispatch::release_held(port);
        let (word, bit) = word_and_bit(port);
        let page = shared_page();
        page.pending[word].fetch_and(!bit, Ordering::AcqRel);
        page.mask[word].fetch_and(!bit, Ordering::AcqRel);
    });
    Ok(())
}

/// What `port` is connected to (`NoSuchPort` if it is not allocated).
pub fn status(port: Port) -> Result<PortStatus, HypercallError> {
    let s = hc::status(port.raw())?;
    match s.state {
        port_state::UNBOUND => Ok(PortStatus::Unbound { remote: s.remote_domain }),
        port_state::INTERDOMAIN => {
            Ok(PortStatus::Interdomain { remote: s.remote_domain, remote_port: Port(s.remote_port) })
        }
        port_state::VIRQ => Ok(PortStatus::Virq(s.virq)),
        _ => Err(HypercallError::Unrecognized),
    }
}

/// The word of the bitmaps and the bit of `port` (ports beyond the bitmap
/// map to a bit that is never set, in word 0, so callers need no check).
fn word_and_bit(port: Port) -> (usize, u64) {
    let p = port.0 as usize;
    if p >= NR_PORTS {
        return (0, 0);
    }
    (p / BITS_PER_WORD, 1 << (p % BITS_PER_WORD))
}

/// Masks `port`: its events stay pending without an upcall until
/// [`unmask`]. A local bit flip, no hypercall.
pub fn mask(port: Port) {
    let (word, bit) = word_and_bit(port);
    shared_page().mask[word].fetch_or(bit, Ordering::AcqRel);
}

/// Unmasks `port`; an event that came while it was masked is delivered now
/// (through the hypervisor, which re-raises it).
pub fn unmask(port: Port) -> Result<(), HypercallError> {
    dispatch::release_held(port);
    hc::unmask(port.raw())
}

/// Whether an event is pending on `port` (masked or not).
pub fn is_pending(port: Port) -> bool {
    let (word, bit) = word_and_bit(port);
    shared_page().pending[word].load(Ordering::Acquire) & bit != 0
}

/// Clears `port`'s pending bit; returns whether it was set. For ports
/// watched with [`poll`] rather than handlers.
pub fn take_pending(port: Port) -> bool {
    let (word, bit) = word_and_bit(port);
    shared_page().pending[word].fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

/// Makes `handler` the handler of `port`, replacing any other. If an event
/// was held on the port for want of a handler, it is delivered now.
pub fn set_handler(port: Port, handler: Handler) -> Result<(), PortOutOfRange> {
    if port.0 as usize >= HANDLER_PORTS {
        return Err(PortOutOfRange(port));
    }
    init().ok();
    let held = with_events_masked(|| {
        dispatch::HANDLERS.lock()[port.0 as usize] = Some(handler);
        dispatch::release_held(port)
    });
    if held {
        // The hypervisor re-raises the pending event on unmask. If the port
        // was closed meanwhile there is nothing to deliver.
        let _ = hc::unmask(port.raw());
    }
    Ok(())
}

/// Removes `port`'s handler; later events on it are held.
pub fn clear_handler(port: Port) {
    with_events_masked(|| {
        if let Some(slot) = dispatch::HANDLERS.lock().get_mut(port.0 as usize) {
            *slot = None;
        }
    });
}

/// Sleeps until an event is pending, whose handler has run when this
/// returns. Prefer [`block_until`], which also closes the race between
/// checking a condition and sleeping. Call it from ordinary code, never
/// from a handler or a [`with_events_masked`] section.
pub fn block() {
    if init().is_ok() {
        let _ = hc::sched_block();
    }
}

/// Sleeps (giving the CPU to other domains) until `cond` is true. `cond`
/// is checked with upcalls masked, so a handler that makes it true cannot
/// slip in between the check and the sleep; each wake-up runs the handlers,
/// then checks again.
///
/// Call it from ordinary code, never from an event handler or a
/// [`with_events_masked`] section (sleeping unmasks upcalls). If nothing can
/// ever make `cond` true, the domain sleeps until the hypervisor notices
/// that no event can come and stops it.
pub fn block_until(mut cond: impl FnMut() -> bool) {
    if !ENABLED.load(Ordering::Acquire) && init().is_err() {
        // No upcalls, so no handler can change `cond`; let others run.
        while !cond() {
            let _ = hypercall::yield_now();
        }
        return;
    }
    let page = shared_page();
    page.upcall_mask.store(1, Ordering::Release);
    while !cond() {
        // Unmasks and sleeps in one step; the upcall is taken before it
        // returns, and the dispatcher leaves upcalls unmasked.
        let _ = hc::sched_block();
        page.upcall_mask.store(1, Ordering::Release);
    }
    if may_enable() {
        enable_upcalls(page);
    }
}

/// Sleeps until one of `ports` is pending (masked or not) or the system
/// time reaches `deadline_ns`; returns the pending port, or `TimedOut`.
/// Nothing is delivered for masked ports: use [`take_pending`] on the
/// result. At most [`POLL_MAX`](hypercall_abi::event::POLL_MAX) ports.
pub fn poll(ports: &[Port], deadline_ns: Option<u64>) -> Result<Port, HypercallError> {
    const MAX: usize = hypercall_abi::event::POLL_MAX as usize;
    if ports.is_empty() || ports.len() > MAX {
        return Err(HypercallError::BadArgument);
    }
    let mut raw = [0u32; MAX];
    for (slot, port) in raw.iter_mut().zip(ports) {
        *slot = port.0;
    }
    hc::sched_poll(&raw[..ports.len()], deadline_ns.unwrap_or(0)).map(Port)
}

/// The dispatcher's counters.
pub fn stats() -> Stats {
    Stats {
        upcalls: dispatch::UPCALLS.load(Ordering::Relaxed),
        handled: dispatch::HANDLED.load(Ordering::Relaxed),
        held: dispatch::HELD_EVENTS.load(Ordering::Relaxed),
    }
}
