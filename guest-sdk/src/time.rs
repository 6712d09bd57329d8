//! Time without a hypercall, sleeping, and a list of one-shot timers.
//!
//! [`now`] is the hypervisor's *system time*, nanoseconds since it booted,
//! computed by the guest itself from its own `rdtsc` and the scale the
//! hypervisor publishes in the shared-info page (see
//! [`hypercall_abi::event::VcpuTime`]): the same clock the hypervisor uses
//! for `set_timer` deadlines and CPU accounting. [`wall_clock`] adds the
//! boot time from the machine's real-time clock.
//!
//! A domain has one hardware-like timer, `set_timer(deadline)`, which
//! raises the timer virtual interrupt once. This module multiplexes it:
//! [`add_timer`] keeps up to [`MAX_TIMERS`] deadlines sorted, programs the
//! earliest, and when its event comes runs the callbacks that are due and
//! programs the next. [`sleep`] and [`sleep_until`] are a timer plus
//! [`event::block_until`]: the domain takes no CPU while it sleeps.
//!
//! The timer port is bound (and upcalls turned on, see [`event::init`]) on
//! first use. A guest that binds `VIRQ_TIMER` itself cannot use this
//! module's timers, and vice versa (`PortInUse`).

use core::fmt;
use core::sync::atomic::{fence, Ordering};
use core::time::Duration;

use hypercall_abi::event::virq;
use hypercall_abi::HypercallError;
use spin::{Mutex, Once};

use crate::event::{self, rdtsc, shared_page, Port};
use crate::hypercall::{self, events as hc};

/// Timers that can be pending at once.
pub const MAX_TIMERS: usize = 16;

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

/// The system time: nanoseconds since the hypervisor booted. No hypercall:
/// one `rdtsc`, a multiply and a shift, retried if the hypervisor was
/// updating the scale (its `version` odd or changed).
pub fn now() -> u64 {
    let page = shared_page();
    loop {
        let version = page.time_version.load(Ordering::Acquire);
        if version & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let stamp = page.tsc_timestamp.load(Ordering::Relaxed);
        let base = page.system_time.load(Ordering::Relaxed);
        let mul = page.tsc_to_system_mul.load(Ordering::Relaxed);
        let shift = page.tsc_shift.load(Ordering::Relaxed);
        let tsc = rdtsc();
        fence(Ordering::Acquire);
        if page.time_version.load(Ordering::Relaxed) == version {
            return base.wrapping_add(scale(tsc.saturating_sub(stamp), mul, shift));
        }
    }
}

/// `((ticks << shift) * mul) >> 32`, a right shift when `shift` is
/// negative: the ABI's TSC-to-nanoseconds conversion, in 128 bits so it
/// cannot overflow.
fn scale(ticks: u64, mul: u32, shift: i8) -> u64 {
    let t = u128::from(ticks);
    let t = if shift >= 0 { t << shift.min(64) } else { t >> (-i16::from(shift)).min(127) };
    ((t * u128::from(mul)) >> 32) as u64
}

/// A moment in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallTime {
    /// Seconds since 1970-01-01 00:00 UTC.
    pub secs: u64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// The wall-clock time now: the boot time the hypervisor read from the
/// real-time clock plus [`now`]. (All zero seconds at boot if the machine
/// had no readable clock.)
pub fn wall_clock() -> WallTime {
    let page = shared_page();
    let (sec, nsec) = loop {
        let version = page.wall_version.load(Ordering::Acquire);
        if version & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let sec = page.wall_sec.load(Ordering::Relaxed);
        let nsec = page.wall_nsec.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if page.wall_version.load(Ordering::Relaxed) == version {
            break (sec, nsec);
        }
    };
    let total = u128::from(sec) * u128::from(NS_PER_S) + u128::from(nsec) + u128::from(now());
    WallTime { secs: (total / u128::from(NS_PER_S)) as u64, nanos: (total % u128::from(NS_PER_S)) as u32 }
}

/// The system time `d` from now (saturating).
pub fn deadline_after(d: Duration) -> u64 {
    now().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Identifies a pending timer, for [`cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// What a timer calls when it expires: its own id, from the timer
/// interrupt's handler, so under the rules of an event handler (no
/// `println!`, no allocation; see [`event`]).
pub type TimerCallback = fn(TimerId);

/// Why a timer could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerError {
    /// [`MAX_TIMERS`] timers are pending already.
    Full,
    /// Binding the timer interrupt or programming it failed.
    Hypercall(HypercallError),
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerError::Full => write!(f, "all {MAX_TIMERS} timers are in use"),
            TimerError::Hypercall(e) => write!(f, "timer hypercall refused: {e}"),
        }
    }
}

impl From<HypercallError> for TimerError {
    fn from(e: HypercallError) -> Self {
        TimerError::Hypercall(e)
    }
}

#[derive(Clone, Copy)]
struct Timer {
    deadline: u64,
    id: TimerId,
    callback: TimerCallback,
}

/// Pending timers, earliest first, and what `set_timer` was last told.
struct TimerList {
    timers: [Option<Timer>; MAX_TIMERS],
    len: usize,
    next_id: u64,
    programmed: u64,
}

/// Locked only with upcalls masked (see [`event::with_events_masked`]).
static TIMERS: Mutex<TimerList> =
    Mutex::new(TimerList { timers: [None; MAX_TIMERS], len: 0, next_id: 1, programmed: 0 });

static TIMER_PORT: Once<Result<Port, HypercallError>> = Once::new();

/// Binds the timer interrupt to this module's handler, once.
fn timer_port() -> Result<Port, HypercallError> {
    *TIMER_PORT.call_once(|| {
        event::init()?;
        let port = event::bind_virq(virq::TIMER)?;
        event::set_handler(port, on_timer_event).map_err(|_| HypercallError::PortInUse)?;
        Ok(port)
    })
}

impl TimerList {
    /// Tells the hypervisor the earliest deadline, if it changed.
    fn program(&mut self) -> Result<(), HypercallError> {
        let earliest = if self.len > 0 { self.timers[0].map_or(0, |t| t.deadline.max(1)) } else { 0 };
        if earliest != self.programmed {
            hc::set_timer(earliest)?;
            self.programmed = earliest;
        }
        Ok(())
    }

    fn insert(&mut self, timer: Timer) -> Result<(), TimerError> {
        if self.len == MAX_TIMERS {
            return Err(TimerError::Full);
        }
        let at = self.timers[..self.len].iter().position(|t| t.is_some_and(|t| t.deadline > timer.deadline));
        let at = at.unwrap_or(self.len);
        self.timers.copy_within(at..self.len, at + 1);
        self.timers[at] = Some(timer);
        self.len += 1;
        Ok(())
    }

    fn remove_at(&mut self, at: usize) -> Timer {
        let timer = self.timers[at].take().expect("entries below len are set");
        self.timers.copy_within(at + 1..self.len, at);
        self.len -= 1;
        self.timers[self.len] = None;
        timer
    }
}

/// Calls `callback` once the system time reaches `deadline_ns` (at the next
/// timer event if it already has).
pub fn add_timer(deadline_ns: u64, callback: TimerCallback) -> Result<TimerId, TimerError> {
    timer_port()?;
    event::with_events_masked(|| {
        let mut list = TIMERS.lock();
        let id = TimerId(list.next_id);
        list.next_id += 1;
        list.insert(Timer { deadline: deadline_ns, id, callback })?;
        if let Err(e) = list.program() {
            let at = list.timers[..list.len].iter().position(|t| t.is_some_and(|t| t.id == id));
            if let Some(at) = at {
                list.remove_at(at);
            }
            return Err(TimerError::Hypercall(e));
        }
        Ok(id)
    })
}

/// Cancels a pending timer; returns whether it was still pending.
pub fn cancel(id: TimerId) -> bool {
    event::with_events_masked(|| {
        let mut list = TIMERS.lock();
        let at = list.timers[..list.len].iter().position(|t| t.is_some_and(|t| t.id == id));
        match at {
            Some(at) => {
                list.remove_at(at);
                let _ = list.program();
                true
            }
            None => false,
        }
    })
}

/// Timers pending now.
pub fn pending_timers() -> usize {
    event::with_events_masked(|| TIMERS.lock().len)
}

/// The timer interrupt's handler: runs the callbacks that are due (the
/// lock released, so they may add timers) and programs the next deadline.
fn on_timer_event(_: Port) {
    // The hypervisor's one-shot timer is spent: the next deadline must be
    // programmed again, even if it is the one it had.
    TIMERS.lock().programmed = 0;
    loop {
        let due = {
            let mut list = TIMERS.lock();
            let due = list.len > 0 && list.timers[0].is_some_and(|t| t.deadline <= now());
            let timer = if due { Some(list.remove_at(0)) } else { None };
            if timer.is_none() {
                let _ = list.program();
            }
            timer
        };
        match due {
            Some(timer) => (timer.callback)(timer.id),
            None => break,
        }
    }
}

/// A callback that does nothing: the timer only has to wake the domain.
fn wake_only(_: TimerId) {}

/// Sleeps until the system time reaches `deadline_ns`, taking no CPU.
/// Handlers of other events run meanwhile. If no timer can be set (all
/// [`MAX_TIMERS`] in use, or no timer interrupt), it yields until the
/// deadline instead.
pub fn sleep_until(deadline_ns: u64) {
    match add_timer(deadline_ns, wake_only) {
        Ok(id) => {
            event::block_until(|| now() >= deadline_ns);
            cancel(id);
        }
        Err(_) => {
            while now() < deadline_ns {
                let _ = hypercall::yield_now();
            }
        }
    }
}

/// Sleeps for `d`, taking no CPU (see [`sleep_until`]).
pub fn sleep(d: Duration) {
    sleep_until(deadline_after(d));
}
