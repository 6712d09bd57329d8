//! Wrappers for the event and time hypercalls: `event_channel_op`,
//! `sched_op` and `set_timer`.
//!
//! These are the bare calls, one per command of
//! [`EventChannelCmd`] and [`SchedCmd`], with ports as plain `u32`. Most
//! guests use [`event`](crate::event) and [`time`](crate::time) instead,
//! which add handlers, masking and timers on top; the bare calls are here
//! for those modules, for benchmarks and for guests that test how the
//! hypervisor refuses bad requests (`event-abuse`).
//!
//! All of them are safe: the only one that writes guest memory (`Status`)
//! writes a local it owns. The `*_raw` variants take any command number and
//! arguments and are `unsafe` for that reason.

use hypercall_abi::event::{EventChannelCmd, EventChannelStatus, SchedCmd};
use hypercall_abi::{Hypercall, HypercallError};
use zerocopy::FromZeros;

use super::raw;

/// A port number the hypervisor returned (always below `NR_PORTS`).
fn to_port(raw: u64) -> Result<u32, HypercallError> {
    u32::try_from(raw).map_err(|_| HypercallError::Unrecognized)
}

/// `event_channel_op(AllocUnbound, remote)`: a new port of this domain that
/// domain `remote` (and only it) may connect to with
/// [`bind_interdomain`]. Returns the port.
#[inline]
pub fn alloc_unbound(remote: u64) -> Result<u32, HypercallError> {
    // SAFETY: `AllocUnbound` writes no guest memory.
    let port = unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::AllocUnbound as u64, remote, 0) }?;
    to_port(port)
}

/// `event_channel_op(BindInterdomain, remote, remote_port)`: connects a new
/// port of this domain to `remote_port` of domain `remote`, which must be
/// unbound and allocated for this domain. Returns the new local port.
#[inline]
pub fn bind_interdomain(remote: u64, remote_port: u64) -> Result<u32, HypercallError> {
    // SAFETY: `BindInterdomain` writes no guest memory.
    let port = unsafe {
        raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::BindInterdomain as u64, remote, remote_port)
    }?;
    to_port(port)
}

/// `event_channel_op(BindVirq, virq)`: a new port raised by the hypervisor's
/// virtual interrupt `virq` (see [`hypercall_abi::event::virq`]). Returns
/// the port.
#[inline]
pub fn bind_virq(virq: u64) -> Result<u32, HypercallError> {
    // SAFETY: `BindVirq` writes no guest memory.
    let port = unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::BindVirq as u64, virq, 0) }?;
    to_port(port)
}

/// `event_channel_op(Send, port)`: raises an event at the other end of
/// `port` (on a virtual-IRQ port: on `port` itself).
#[inline]
pub fn send(port: u64) -> Result<(), HypercallError> {
    // SAFETY: `Send` writes no guest memory.
    unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::Send as u64, port, 0) }.map(|_| ())
}

/// `event_channel_op(Close, port)`: frees `port`; an interdomain peer's end
/// goes back to unbound.
#[inline]
pub fn close(port: u64) -> Result<(), HypercallError> {
    // SAFETY: `Close` writes no guest memory.
    unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::Close as u64, port, 0) }.map(|_| ())
}

/// `event_channel_op(Status, port, &out)`: what the hypervisor knows about
/// `port`.
pub fn status(port: u64) -> Result<EventChannelStatus, HypercallError> {
    let mut out = EventChannelStatus::new_zeroed();
    let at = &mut out as *mut EventChannelStatus as u64;
    // SAFETY: the hypervisor writes one `EventChannelStatus` at `at`, a local
    // we own exclusively, for which every bit pattern is valid.
    unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::Status as u64, port, at) }?;
    Ok(out)
}

/// `event_channel_op(Unmask, port)`: clears `port`'s mask bit in the
/// shared-info page and, if an event is pending on it, delivers it.
#[inline]
pub fn unmask(port: u64) -> Result<(), HypercallError> {
    // SAFETY: `Unmask` writes no guest memory (the shared-info page is
    // written through atomics on both sides).
    unsafe { raw::hypercall3(Hypercall::EventChannelOp, EventChannelCmd::Unmask as u64, port, 0) }.map(|_| ())
}

/// `event_channel_op(cmd, a, b)` with any numbers, for testing refusals.
///
/// # Safety
///
/// For `Status` (or any command a later ABI adds that writes memory), `b`
/// is written by the hypervisor: it must be memory Rust allows to change,
/// as for [`raw::hypercall3`]. An address the domain cannot write is
/// refused with `BadAddress`.
pub unsafe fn event_channel_op_raw(cmd: u64, a: u64, b: u64) -> Result<u64, HypercallError> {
    // SAFETY: the caller vouches for any memory the command writes.
    unsafe { raw::hypercall3(Hypercall::EventChannelOp, cmd, a, b) }
}

/// `sched_op(Block)`: clears `upcall_mask` and sleeps until an event is
/// pending (at once if one is). The upcall is delivered before this
/// returns, so the handlers have run when it does.
#[inline]
pub fn sched_block() -> Result<(), HypercallError> {
    // SAFETY: `Block` writes no guest memory but the shared-info flag the
    // guest only accesses atomically.
    unsafe { raw::hypercall1(Hypercall::SchedOp, SchedCmd::Block as u64) }.map(|_| ())
}

/// `sched_op(Poll, ports, deadline)`: sleeps until one of `ports` is pending
/// (masked or not; nothing is delivered for masked ports) or until the
/// system time reaches `deadline_ns` (0: no deadline). Returns the first
/// pending port, or [`HypercallError::TimedOut`].
pub fn sched_poll(ports: &[u32], deadline_ns: u64) -> Result<u32, HypercallError> {
    // SAFETY: `Poll` only reads the port array.
    let port = unsafe {
        raw::hypercall4(
            Hypercall::SchedOp,
            SchedCmd::Poll as u64,
            ports.as_ptr() as u64,
            ports.len() as u64,
            deadline_ns,
        )
    }?;
    to_port(port)
}

/// `sched_op(CheckEvents)`: receive now the upcall that became due while
/// upcalls were masked. Call it after clearing `upcall_mask` when
/// `upcall_pending` is set.
#[inline]
pub fn sched_check_events() -> Result<(), HypercallError> {
    // SAFETY: `CheckEvents` writes no guest memory.
    unsafe { raw::hypercall1(Hypercall::SchedOp, SchedCmd::CheckEvents as u64) }.map(|_| ())
}

/// `sched_op(cmd, a, b, c)` with any numbers, for testing refusals.
///
/// # Safety
///
/// `Poll` reads `b` 32-bit ports at `a`; no command writes guest memory
/// through an argument. Any future command that does makes the caller
/// responsible for it, as for [`raw::hypercall4`].
pub unsafe fn sched_op_raw(cmd: u64, a: u64, b: u64, c: u64) -> Result<u64, HypercallError> {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall4(Hypercall::SchedOp, cmd, a, b, c) }
}

/// `set_timer(deadline_ns)`: raise the timer virtual interrupt once the
/// system time reaches `deadline_ns` (at once if it already has); 0
/// cancels. One deadline per domain: a new one replaces the old.
#[inline]
pub fn set_timer(deadline_ns: u64) -> Result<(), HypercallError> {
    // SAFETY: `set_timer` writes no guest memory.
    unsafe { raw::hypercall1(Hypercall::SetTimer, deadline_ns) }.map(|_| ())
}
