//! `loopback`: an event channel whose two ends are the same domain.
//!
//! The idea shown: a domain may offer a port to itself (`alloc_unbound`
//! naming its own id) and bind it (`bind_interdomain` to its own port),
//! and both ends belong to it. When it ends, the hypervisor frees the
//! whole channel with its port table, however it ends, and the others run
//! on. The guest connects the channel, sends on it, checks the event came
//! back to itself, and then ends as its command line says.
//!
//! Command line: `end=exit` (the default) or `end=crash` (a store to an
//! unmapped address, which the hypervisor stops it for).
#![no_std]
#![no_main]

use parvus_guest_sdk::cmdline;
use parvus_guest_sdk::event::{self, PortStatus};
use parvus_guest_sdk::{println, status, HypercallError, StartInfo};

/// Not mapped: far above this domain's memory, far below the hypervisor.
const UNMAPPED: u64 = 0xdead_0000;

/// Exit status if a step of the channel failed.
const CHANNEL_FAILED: u64 = 1;

/// Exit status for a command line this guest cannot use.
const BAD_COMMAND_LINE: u64 = 2;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let me = u64::from(start.domain_id);
    let crash = match cmdline::value("end") {
        None | Some("exit") => false,
        Some("crash") => true,
        Some(other) => {
            println!("{name}: the command line must say end=exit or end=crash, not end={other}");
            return BAD_COMMAND_LINE;
        }
    };
    match connect_to_itself(me) {
        Ok(line) => println!("{name}: {line}"),
        Err(e) => {
            println!("{name}: FAILED: {e}");
            return CHANNEL_FAILED;
        }
    }
    if crash {
        println!("{name}: ending by a crash, with the channel open");
        // SAFETY: deliberately not a valid Rust object: the store must trap
        // (a page fault), and the hypervisor stops this domain for it.
        // `volatile` makes the compiler emit exactly this one store.
        unsafe { core::ptr::write_volatile(UNMAPPED as *mut u64, 1) };
        println!("{name}: ERROR: still running after writing to {UNMAPPED:#x}");
        return CHANNEL_FAILED;
    }
    println!("{name}: ending by exit, with the channel open");
    status::SUCCESS
}

/// Offers a port to this domain, binds it, sends on the bound end and
/// checks the event arrived at the offered end.
fn connect_to_itself(me: u64) -> Result<&'static str, &'static str> {
    let failed = |_: HypercallError| "a hypercall of the channel was refused";
    let offered = event::alloc_unbound(me).map_err(failed)?;
    let bound = event::bind_interdomain(me, offered).map_err(failed)?;
    match event::status(offered).map_err(failed)? {
        PortStatus::Interdomain { remote, remote_port } if u64::from(remote) == me && remote_port == bound => {}
        _ => return Err("the offered port is not connected to the bound one"),
    }
    event::send(bound).map_err(failed)?;
    if !event::is_pending(offered) {
        return Err("the event sent on the bound end did not arrive at the offered end");
    }
    Ok("port connected to itself; an event sent on one end arrived at the other")
}
