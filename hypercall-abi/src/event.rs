//! Virtual interrupts: event channels, the shared-info page and time.
//!
//! A paravirtualized guest has no interrupt controller. It has *event
//! channels*: numbered ports, each connected to a port of another domain,
//! to a virtual IRQ of the hypervisor (the timer, for instance), or unbound.
//! Sending on a port sets a bit in the receiver's [`SharedInfo`] page; if
//! the port is not masked, the hypervisor then *upcalls* the receiver's
//! kernel: it delivers a [`TrapFrame`](crate::trap::TrapFrame) with vector
//! [`VECTOR_EVENT`](crate::trap::VECTOR_EVENT) to the `event` entry
//! registered with `set_callbacks`, like an interrupt. Pending bits are
//! found through a two-level bitmap, as in Xen: bit `w` of
//! [`VcpuInfo::pending_sel`] says that word `w` of
//! [`SharedInfo::evtchn_pending`] has a pending, unmasked bit.
//!
//! Rules for the guest:
//! - It masks upcalls by setting [`VcpuInfo::upcall_mask`] (a critical
//!   section, like `cli`). The hypervisor sets it when it delivers an
//!   upcall; the guest clears it when its handler is done. After clearing
//!   it, if [`VcpuInfo::upcall_pending`] is set, the guest calls
//!   `sched_op(SchedCmd::CheckEvents)` to receive the upcall at once (any
//!   other hypercall but `null` also delivers it).
//! - It takes events by clearing `upcall_pending`, then `pending_sel` (with
//!   an atomic exchange), then for each set bit `w` the pending bits of
//!   word `w` that are not masked (atomic and-not), handling each port.
//! - It masks one port by setting its bit in [`SharedInfo::evtchn_mask`]
//!   and unmasks it with `event_channel_op(Unmask, port)`, which delivers
//!   an event that arrived while it was masked.
//!
//! Time: [`VcpuTime`] lets a guest compute the system time (nanoseconds
//! since the hypervisor booted) from its own `rdtsc`, without a hypercall:
//! `system_time + scale(rdtsc - tsc_timestamp)` where
//! `scale(t) = ((t << tsc_shift) * tsc_to_system_mul) >> 32` (a right
//! shift when `tsc_shift` is negative). `version` is odd while the
//! hypervisor updates the fields: read it, read the fields, read it again,
//! and retry if it changed or was odd.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Number of event-channel ports a domain can have.
pub const NR_PORTS: usize = 4096;
/// Bits per word of the pending and mask bitmaps.
pub const BITS_PER_WORD: usize = 64;
/// Words of the pending and mask bitmaps.
pub const PORT_WORDS: usize = NR_PORTS / BITS_PER_WORD;

/// Per-vCPU event state in the shared-info page.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an unmasked event is pending.
    pub upcall_pending: u8,
    /// Set by the guest (or by the hypervisor on delivery) to hold upcalls back.
    pub upcall_mask: u8,
    /// Padding.
    pub reserved: [u8; 6],
    /// Two-level selector: bit `w` means word `w` of `evtchn_pending` has work.
    pub pending_sel: u64,
}

/// System time, as the guest computes it (see the module docs).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuTime {
    /// Odd while the hypervisor updates the other fields.
    pub version: u32,
    /// Padding.
    pub reserved: u32,
    /// TSC value at which `system_time` was taken.
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at `tsc_timestamp`.
    pub system_time: u64,
    /// Multiplier of the TSC-to-nanoseconds conversion (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// Shift of the conversion (applied before multiplying).
    pub tsc_shift: i8,
    /// Padding.
    pub reserved2: [u8; 3],
}

/// The wall-clock time at boot (from the machine's real-time clock).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct WallClock {
    /// Odd while the hypervisor updates the other fields.
    pub version: u32,
    /// Nanoseconds part of the boot time.
    pub nsec: u32,
    /// Seconds since 1970-01-01 00:00 UTC at boot (system time 0).
    pub sec: u64,
}

/// The page a domain shares with the hypervisor for events and time.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// The (one) vCPU's event state.
    pub vcpu: VcpuInfo,
    /// System time.
    pub time: VcpuTime,
    /// Wall-clock time at boot.
    pub wall_clock: WallClock,
    /// Pending bit of each port.
    pub evtchn_pending: [u64; PORT_WORDS],
    /// Mask bit of each port (set by the guest).
    pub evtchn_mask: [u64; PORT_WORDS],
    /// Pads the structure to one page.
    pub tail: [u8; 4096 - 64 - 2 * 8 * PORT_WORDS],
}
const_assert_eq!(core::mem::size_of::<SharedInfo>(), 4096);
const_assert_eq!(core::mem::offset_of!(SharedInfo, time), 16);
const_assert_eq!(core::mem::offset_of!(SharedInfo, wall_clock), 48);
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_pending), 64);
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_mask), 64 + 512);

/// Byte offset of [`VcpuInfo::upcall_pending`] in the page.
pub const UPCALL_PENDING_OFFSET: usize = 0;
/// Byte offset of [`VcpuInfo::upcall_mask`] in the page.
pub const UPCALL_MASK_OFFSET: usize = 1;
/// Byte offset of [`VcpuInfo::pending_sel`] in the page.
pub const PENDING_SEL_OFFSET: usize = 8;
/// Byte offset of [`SharedInfo::evtchn_pending`] in the page.
pub const PENDING_OFFSET: usize = core::mem::offset_of!(SharedInfo, evtchn_pending);
/// Byte offset of [`SharedInfo::evtchn_mask`] in the page.
pub const MASK_OFFSET: usize = core::mem::offset_of!(SharedInfo, evtchn_mask);

/// Virtual IRQs a domain can bind a port to.
pub mod virq {
    /// The one-shot timer of `set_timer` fired.
    pub const TIMER: u64 = 0;
    /// Console input arrived (reserved: Parvus has no console input yet).
    pub const CONSOLE: u64 = 1;
    /// Some domain crashed or was stopped by the hypervisor.
    pub const DOM_EXC: u64 = 2;
    /// Number of virtual IRQs.
    pub const COUNT: u64 = 3;
}

/// Commands of `event_channel_op(cmd, a, b)`. The three that allocate a
/// port answer `OutOfMemory` when the caller's hypervisor-memory allowance
/// (or the hypervisor's heap) cannot hold a longer port table, and
/// `PortInUse` once all [`NR_PORTS`] ports are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum EventChannelCmd {
    /// `a` = remote domain: allocates a port that domain may bind to.
    /// Returns the port.
    AllocUnbound = 0,
    /// `a` = remote domain, `b` = its unbound port (allocated for the
    /// caller): connects a new port of the caller to it. Returns the new
    /// port. `PermissionDenied` if the remote port was allocated for another domain.
    BindInterdomain = 1,
    /// `a` = virtual IRQ ([`virq`]): binds a new port to it. Returns the
    /// port (`PortInUse` if that IRQ is already bound).
    BindVirq = 2,
    /// `a` = port: raises an event on the other end (an interdomain port's
    /// peer; a port bound to a virtual IRQ raises itself). Returns 0.
    Send = 3,
    /// `a` = port: closes it; an interdomain peer goes back to unbound.
    /// Returns 0.
    Close = 4,
    /// `a` = port, `b` = address of an [`EventChannelStatus`] to fill. Returns 0.
    Status = 5,
    /// `a` = port: clears its mask bit and delivers the event if it is pending. Returns 0.
    Unmask = 6,
}

impl EventChannelCmd {
    /// The command for a raw number.
    pub fn from_raw(raw: u64) -> Option<Self> {
        [
            Self::AllocUnbound,
            Self::BindInterdomain,
            Self::BindVirq,
            Self::Send,
            Self::Close,
            Self::Status,
            Self::Unmask,
        ]
        .into_iter()
        .find(|c| *c as u64 == raw)
    }
}

/// States of a port, as `EventChannelStatus::state` reports them.
pub mod port_state {
    /// Not allocated.
    pub const FREE: u32 = 0;
    /// Allocated for a remote domain that has not bound yet.
    pub const UNBOUND: u32 = 1;
    /// Connected to a port of another domain.
    pub const INTERDOMAIN: u32 = 2;
    /// Bound to a virtual IRQ.
    pub const VIRQ: u32 = 3;
}

/// What `Status` reports about a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventChannelStatus {
    /// One of [`port_state`].
    pub state: u32,
    /// The remote domain (unbound and interdomain ports).
    pub remote_domain: u32,
    /// The remote port (interdomain ports).
    pub remote_port: u32,
    /// The virtual IRQ (virq ports).
    pub virq: u32,
}
const_assert_eq!(core::mem::size_of::<EventChannelStatus>(), 16);

/// Commands of `sched_op(cmd, a, b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum SchedCmd {
    /// Clears `upcall_mask` and sleeps until an event is pending (returns at
    /// once if one already is); the upcall is delivered on wake-up. Returns 0.
    Block = 0,
    /// `a` = address of a `u32` port array, `b` = its length (at most
    /// [`POLL_MAX`]), and an absolute deadline in the fourth argument
    /// (`r10`: system time in nanoseconds, 0 = none; any other value is a
    /// deadline however far, as for `set_timer`): sleeps until one of the
    /// ports is pending, masked or not. Returns the first pending port, or
    /// `TimedOut` once the deadline has passed.
    Poll = 1,
    /// Delivers an upcall now if one is due (after clearing `upcall_mask`).
    /// Returns 0.
    CheckEvents = 2,
}

impl SchedCmd {
    /// The command for a raw number.
    pub fn from_raw(raw: u64) -> Option<Self> {
        [Self::Block, Self::Poll, Self::CheckEvents].into_iter().find(|c| *c as u64 == raw)
    }
}

/// Most ports one `poll` watches.
pub const POLL_MAX: u64 = 64;
