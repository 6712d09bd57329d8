//! `far-timer`: a deadline centuries away is still a deadline.
//!
//! The idea shown: a guest may sleep with its timer at `u64::MAX` ns (584
//! years after boot, beyond what the hypervisor's clock can count). The
//! hypervisor keeps it as the farthest time it can wait for: the domain
//! sleeps, taking no CPU, and is not taken for one that nothing can wake;
//! an event wakes it as usual. The same holds for a `poll` deadline.
//!
//! One image, two roles, chosen by the command line:
//!
//! - `waker=<id>`: the sleeper. Offers a port to domain `id`, sets its timer
//!   to `u64::MAX` and blocks until the port's event; then polls the port
//!   with the deadline `u64::MAX` until the second event.
//! - `sleeper=<id> port=<port>`: the waker. Connects to that port, and
//!   twice waits until the sleeper is blocked, then sends it an event.
//!
//! Each side prints before it lets the other go on (and flushes), so the
//! console has one order on every run.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::{cmdline, console, hypercall, println, status, time, DomainState, HypercallError, StartInfo};

/// The farthest deadline a guest can ask for.
const FAR: u64 = u64::MAX;
/// Attempts to connect, or to see the sleeper blocked, before giving up;
/// each yields once.
const ATTEMPTS: u32 = 100_000;

/// The waker's nap before its second event: long enough for the
/// hypervisor's notice about a long idle (an hour or more).
const NAP: Duration = Duration::from_secs(150 * 60);

/// Events the sleeper's handler has taken.
static WOKEN: AtomicU32 = AtomicU32::new(0);

fn on_event(_: Port) {
    WOKEN.fetch_add(1, Ordering::Relaxed);
}

/// The timer's callback: it would run in 584 years.
fn never(_: time::TimerId) {}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    if let Ok(waker) = cmdline::parse::<u64>("waker") {
        return sleep(name, waker).unwrap_or_else(|e| {
            println!("{name}: FAILED: {e}");
            1
        });
    }
    match (cmdline::parse::<u64>("sleeper"), cmdline::parse::<u32>("port")) {
        (Ok(sleeper), Ok(port)) => wake(name, sleeper, Port(port)).unwrap_or_else(|e| {
            println!("{name}: FAILED: {e}");
            1
        }),
        _ => {
            println!("{name}: the command line must say waker=<id>, or sleeper=<id> port=<port>");
            2
        }
    }
}

/// The sleeper's side.
fn sleep(name: &str, waker: u64) -> Result<u64, HypercallError> {
    let port = event::alloc_unbound(waker)?;
    event::set_handler(port, on_event).map_err(|_| HypercallError::NoSuchPort)?;
    time::add_timer(FAR, never).map_err(|_| HypercallError::BadArgument)?;
    println!("{name}: port {port} offered to domain {waker}; timer set to u64::MAX ns; blocking");
    console::flush();
    event::block_until(|| WOKEN.load(Ordering::Relaxed) >= 1);
    println!("{name}: woken by the event on port {port}, with the timer still {} years away", years_left());

    // The same with a poll deadline: the port masked, so that its event
    // stays pending for the poll instead of going to the handler.
    event::mask(port);
    println!("{name}: polling port {port} with the deadline u64::MAX ns");
    console::flush();
    let polled = event::poll(&[port], Some(FAR));
    event::take_pending(port);
    match polled {
        Ok(p) if p == port => println!("{name}: the poll returned port {p}, not a timeout"),
        other => {
            println!("{name}: FAILED: the poll returned {other:?}");
            return Ok(1);
        }
    }
    Ok(status::SUCCESS)
}

/// Whole years from now to the far deadline.
fn years_left() -> u64 {
    const YEAR_NS: u64 = 31_557_600 * 1_000_000_000;
    (FAR - time::now()) / YEAR_NS
}

/// The waker's side.
fn wake(name: &str, sleeper: u64, port: Port) -> Result<u64, HypercallError> {
    let local = retry(|| match event::bind_interdomain(sleeper, port) {
        Err(HypercallError::NoSuchPort) => Ok(None), // not offered yet
        other => other.map(Some),
    })?;
    for round in 1..=2 {
        retry(|| {
            let state = DomainState::from_raw(hypercall::domain_info(sleeper)?.state);
            Ok((state == Some(DomainState::Blocked)).then_some(()))
        })?;
        if round == 2 {
            // Everyone sleeps now, the sleeper for centuries: the
            // hypervisor says once that it idles, and the nap ends on time.
            println!("{name}: domain {sleeper} sleeps; napping {} minutes first", NAP.as_secs() / 60);
            console::flush();
            time::sleep(NAP);
        }
        println!("{name}: domain {sleeper} sleeps; event {round} on port {local}");
        console::flush();
        event::send(local)?;
    }
    Ok(status::SUCCESS)
}

/// `f` until it gives an answer (`Some`) or an error, yielding between
/// attempts; `TimedOut` after [`ATTEMPTS`].
fn retry<T>(mut f: impl FnMut() -> Result<Option<T>, HypercallError>) -> Result<T, HypercallError> {
    for _ in 0..ATTEMPTS {
        if let Some(answer) = f()? {
            return Ok(answer);
        }
        hypercall::yield_now()?;
    }
    Err(HypercallError::TimedOut)
}
