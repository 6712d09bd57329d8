//! `ping`: one side of 1,000 event round trips between two domains.
//!
//! The idea shown: event channels as the paravirtual interrupt. `pong`
//! allocates a port for `ping`; `ping` connects to it, then sends an event
//! and sleeps until the reply's upcall, 1,000 times. Neither side spins:
//! between events both are blocked and take no CPU, which is what the
//! hypervisor's summary shows beside the spinner.
//!
//! The rendezvous is a convention: the manifest order gives domain ids, so
//! the command line tells `ping` its peer and the port the peer will
//! allocate (`peer=2 port=1`: pong is domain 2, and its first
//! `alloc_unbound` returns port 1). If `ping` runs first, the port is not
//! there yet (`NoSuchPort`): it yields and tries again.
//!
//! Its lines are printed so that the console order is the same on every
//! run, however the domains are scheduled: the first after the first reply
//! (pong printed its own before it could answer), the last after pong has
//! ended (pong prints its count just before).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::{cmdline, hypercall, println, status, time, DomainState, HypercallError, StartInfo};

/// Round trips to make (pong answers exactly this many).
const ROUNDS: u32 = 1000;
/// Attempts to connect before giving up (each yields once).
const BIND_ATTEMPTS: u32 = 1000;

/// Replies received, counted by the handler.
static REPLIES: AtomicU32 = AtomicU32::new(0);

/// The reply's handler: count it (handlers must not print).
fn on_reply(_: Port) {
    REPLIES.fetch_add(1, Ordering::Relaxed);
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let (Ok(peer), Ok(port)) = (cmdline::parse::<u64>("peer"), cmdline::parse::<u32>("port")) else {
        println!("{name}: the command line must say peer=<domain id> port=<its port>");
        return 2;
    };
    if let Err(e) = event::init() {
        println!("{name}: cannot turn events on: {e}");
        return 1;
    }
    let local = match connect(peer, Port(port)) {
        Ok(local) => local,
        Err(e) => {
            println!("{name}: cannot bind to port {port} of domain {peer}: {e}");
            return 1;
        }
    };
    // The handler is set before the first send, so no reply finds none.
    if event::set_handler(local, on_reply).is_err() {
        println!("{name}: port {local} cannot have a handler");
        return 1;
    }

    let started = time::now();
    for sent in 0..ROUNDS {
        if let Err(e) = event::send(local) {
            println!("{name}: send {} failed: {e}", sent + 1);
            return 1;
        }
        event::block_until(|| REPLIES.load(Ordering::Relaxed) > sent);
        if sent == 0 {
            let peer_info = hypercall::domain_info(peer);
            let peer_name = peer_info.as_ref().map_or("?", |info| info.name());
            println!("{name}: connected to port {port} of domain {peer} ({peer_name}), first reply received");
        }
    }
    let elapsed = time::now() - started;
    // pong prints its count and exits after its last answer; wait for
    // that, so the console shows pong's line first, always.
    while hypercall::domain_info(peer).is_ok_and(|info| {
        matches!(DomainState::from_raw(info.state), Some(DomainState::Runnable | DomainState::Blocked))
    }) {
        time::sleep(Duration::from_millis(1));
    }
    println!("{name}: {ROUNDS} round trips done");
    let micros = elapsed / 1000 / u64::from(ROUNDS);
    println!("{name}: (about {micros} us per round trip here, other domains' slices included)");
    status::SUCCESS
}

/// Binds to the peer's port, waiting for the peer to allocate it.
fn connect(peer: u64, port: Port) -> Result<Port, HypercallError> {
    let mut attempts = 0;
    loop {
        match event::bind_interdomain(peer, port) {
            Err(HypercallError::NoSuchPort) if attempts < BIND_ATTEMPTS => {
                attempts += 1;
                hypercall::yield_now()?;
            }
            other => return other,
        }
    }
}
