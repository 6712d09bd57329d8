//! `victim`: the target of `event-abuse`, which must not notice much.
//!
//! The idea shown: isolation of event channels. The victim allocates two
//! ports: one *reserved* for another domain (`other=<id>`), which the
//! abuser must not be able to bind, and one *offered* to the abuser
//! (`abuser=<id>`), which the abuser binds and floods with 10,000 events.
//! Events are edges, not a queue: a flood costs the victim a few upcalls,
//! not 10,000. Meanwhile the victim does its own job, naps of 10 ms on the
//! timer until the abuser has ended, and checks none ended much too late;
//! at the end it checks with `status` that its reserved port is still
//! unbound and reserved for the same domain.
//!
//! With `after=<id>` it first waits (sleeping) until that domain has
//! ended, so that a scenario's console output has one order. Port numbers
//! follow from the order of allocation: the reserved port (1) at once,
//! then the timer's (2, at the first sleep: the wait, or the first nap),
//! then the offered port (3) after the wait.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use parvus_guest_sdk::event::{self, Port, PortStatus};
use parvus_guest_sdk::{cmdline, console, hypercall, println, status, time, DomainState, StartInfo};

/// Naps the victim's own job takes at least (it goes on napping until the
/// abuser has ended, so the flood lands in the middle of it).
const MIN_NAPS: u64 = 10;
/// Length of a nap.
const NAP: Duration = Duration::from_millis(10);
/// How late a nap may end. A woken domain does not preempt the running
/// one: it may wait for the end of that domain's slice (10 ms; a spinner
/// may be running), and a busy host running QEMU adds its own delays. A
/// limit of ten slices catches a victim that stops being scheduled, not
/// the host's noise.
const LATE_LIMIT_NS: u64 = 100_000_000;
/// Most events the flood may cost. Events are edges, not a queue: the
/// abuser's 10,000 sends set one pending bit, seen once per time the
/// victim gets the CPU while the flood goes on (a handful).
const FLOOD_EVENT_LIMIT: u64 = 100;

/// Events seen on the offered port (each upcall counts once, however many
/// sends it stands for).
static FLOOD_EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_flood(_: Port) {
    FLOOD_EVENTS.fetch_add(1, Ordering::Relaxed);
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let (Ok(abuser), Ok(other)) = (cmdline::parse::<u64>("abuser"), cmdline::parse::<u64>("other")) else {
        println!("{name}: the command line must say abuser=<domain id> other=<domain id>");
        return 2;
    };
    // The reserved port first: `other` is alive now (it may not be later).
    let reserved = match event::alloc_unbound(other) {
        Ok(port) => port,
        Err(e) => {
            println!("{name}: cannot allocate a port for domain {other}: {e}");
            return 1;
        }
    };
    if let Ok(after) = cmdline::parse::<u64>("after") {
        wait_for_end(after);
    }
    println!("{name}: port {reserved} reserved for domain {other}; offering a port to domain {abuser}");
    // Out before the abuser can bind (and print): one console order.
    console::flush();
    let offered = match event::alloc_unbound(abuser) {
        Ok(port) => port,
        Err(e) => {
            println!("{name}: cannot allocate a port for domain {abuser}: {e}");
            return 1;
        }
    };
    if event::set_handler(offered, on_flood).is_err() {
        println!("{name}: port {offered} cannot have a handler");
        return 1;
    }

    let (mut naps, mut worst_late) = (0, 0);
    while naps < MIN_NAPS || is_alive(abuser) {
        let deadline = time::deadline_after(NAP);
        time::sleep_until(deadline);
        worst_late = worst_late.max(time::now() - deadline);
        naps += 1;
    }
    let flood_events = FLOOD_EVENTS.load(Ordering::Relaxed);
    println!(
        "{name}: ({naps} naps, the latest {} us late; the flood came as {flood_events} events; {} upcalls in all)",
        worst_late / 1000,
        event::stats().upcalls
    );
    let naps_ok = worst_late <= LATE_LIMIT_NS;
    let flood_ok = (1..=FLOOD_EVENT_LIMIT).contains(&flood_events);
    let reserved_ok = event::status(reserved) == Ok(PortStatus::Unbound { remote: other as u32 });
    if naps_ok {
        println!(
            "{name}: napped {} ms at a time until the abuser ended, never more than {} ms late",
            NAP.as_millis(),
            LATE_LIMIT_NS / 1_000_000
        );
    } else {
        println!("{name}: FAILED: a nap ended {} us late", worst_late / 1000);
    }
    if flood_ok {
        println!("{name}: the flood came as at most {FLOOD_EVENT_LIMIT} events");
    } else {
        println!("{name}: FAILED: the flood came as {flood_events} events");
    }
    if reserved_ok {
        println!("{name}: port {reserved} still reserved for domain {other}");
    } else {
        println!("{name}: FAILED: port {reserved} is now {:?}", event::status(reserved));
    }
    if naps_ok && flood_ok && reserved_ok {
        println!("{name}: unaffected");
        status::SUCCESS
    } else {
        1
    }
}

/// Whether domain `id` exists and has not ended.
fn is_alive(id: u64) -> bool {
    let state = hypercall::domain_info(id).map(|info| DomainState::from_raw(info.state));
    matches!(state, Ok(Some(DomainState::Runnable | DomainState::Blocked)))
}

/// Sleeps in 5 ms steps until domain `id` has exited or been stopped.
fn wait_for_end(id: u64) {
    while is_alive(id) {
        time::sleep(Duration::from_millis(5));
    }
}
