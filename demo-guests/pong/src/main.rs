//! `pong`: the other side of `ping`'s 1,000 event round trips.
//!
//! The idea shown: answering an event from its handler. `pong` allocates
//! a port for its peer (`peer=<id>` on the command line) and registers a
//! handler that sends an event straight back; the main code only sleeps
//! until the handler has answered 1,000 times. The handler runs in the
//! upcall, like an interrupt handler: it counts and sends, nothing more
//! (no printing: the interrupted code may hold the console).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::{cmdline, console, hypercall, println, status, StartInfo};

/// Events to answer (ping sends exactly this many).
const ROUNDS: u32 = 1000;

/// Events answered, counted by the handler.
static ANSWERED: AtomicU32 = AtomicU32::new(0);
/// A reply could not be sent.
static SEND_FAILED: AtomicBool = AtomicBool::new(false);

/// The handler: reply on the same port.
fn on_ping(port: Port) {
    match event::send(port) {
        Ok(()) => {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => SEND_FAILED.store(true, Ordering::Relaxed),
    }
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let Ok(peer) = cmdline::parse::<u64>("peer") else {
        println!("{name}: the command line must say peer=<domain id>");
        return 2;
    };
    let port = match event::alloc_unbound(peer) {
        Ok(port) => port,
        Err(e) => {
            println!("{name}: cannot allocate a port for domain {peer}: {e}");
            return 1;
        }
    };
    let peer_info = hypercall::domain_info(peer);
    let peer_name = peer_info.as_ref().map_or("?", |info| info.name());
    println!("{name}: port {port} offered to domain {peer} ({peer_name})");
    // Out before the handler is set, so before any answer: ping prints its
    // first line only after the first answer, so the two lines keep one order.
    console::flush();
    if event::set_handler(port, on_ping).is_err() {
        println!("{name}: port {port} cannot have a handler");
        return 1;
    }
    event::block_until(|| ANSWERED.load(Ordering::Relaxed) >= ROUNDS || SEND_FAILED.load(Ordering::Relaxed));
    if SEND_FAILED.load(Ordering::Relaxed) {
        println!("{name}: a reply could not be sent (after {} answers)", ANSWERED.load(Ordering::Relaxed));
        return 1;
    }
    println!("{name}: {ROUNDS} events answered");
    status::SUCCESS
}
