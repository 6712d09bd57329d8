//! `heap-hog`: takes every per-domain object the hypervisor gives it.
//!
//! The idea shown: what a domain makes the hypervisor hold for it is
//! bounded and accounted to that domain (see `hypervisor/core/src/heap_account.rs`),
//! so a domain that asks for everything gets a typed error, and neither the
//! hypervisor nor the other domains run short. The guest allocates event
//! ports until it is refused (the ABI's limit, `PortInUse`, or its
//! allowance, `OutOfMemory`), grows its memory until it is refused
//! (`OverLimit` at its `max_memory`, or `OutOfMemory`), polls the most
//! ports a poll may name, leaves a line unfinished in its console buffer,
//! and prints what it got for each. Then it exits with everything still
//! held, and the hypervisor takes it all back.
//!
//! Command line (so that many hogs hold everything at once, and a
//! scenario's output has one order): `after=<id>` naps until domain `<id>`,
//! another hog of the same memory, has grown its memory and blocked (so it
//! holds what it took and its lines are printed) or ended, before taking
//! anything; `hold=<id>` holds everything,
//! napping, until domain `<id>` has ended, before exiting.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::time::Duration;

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::hypercall::{self, events};
use parvus_guest_sdk::hypercall_abi::event::POLL_MAX;
use parvus_guest_sdk::{cmdline, print, println, status, time, DomainState, HypercallError, StartInfo};

/// Frames asked for in one `memory_op`.
const BATCH: usize = 64;

/// How long it sleeps between two looks at another domain.
const NAP: Duration = Duration::from_millis(5);

/// Exit status if a refusal was not one the ABI lists for the call.
const UNEXPECTED: u64 = 1;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let me = u64::from(start.domain_id);
    let mut surprises = 0;
    // A first nap binds the timer's port, so that it can still sleep while
    // it holds every other port.
    time::sleep(Duration::from_millis(1));
    if let Ok(after) = cmdline::parse::<u64>("after") {
        while !done_taking(after, start.nr_pages) {
            time::sleep(NAP);
        }
    }

    let mut ports = 0u32;
    let mut last = Port(0);
    let refused = loop {
        match event::alloc_unbound(me) {
            Ok(port) => {
                ports += 1;
                last = port;
            }
            Err(e) => break e,
        }
    };
    println!("{name}: took {ports} event ports (the last is port {last}), then: {refused}");
    surprises += u32::from(!matches!(refused, HypercallError::PortInUse | HypercallError::OutOfMemory));

    let mut frames = [0u64; BATCH];
    let mut grown = 0;
    let refused = loop {
        let room = hypercall::maximum_reservation().unwrap_or(0).saturating_sub(hypercall::current_reservation().unwrap_or(0));
        // A whole batch while there is room for one, then one frame at a
        // time, so that the refusal comes exactly at the limit.
        let n = if room >= BATCH as u64 { BATCH } else { 1 };
        match hypercall::increase_reservation(&mut frames[..n]) {
            Ok(()) => grown += n,
            Err(e) => break e,
        }
    };
    println!("{name}: grew by {grown} frames, then: {refused}");
    surprises += u32::from(!matches!(refused, HypercallError::OverLimit | HypercallError::OutOfMemory));

    let many = [last.0; POLL_MAX as usize];
    match events::sched_poll(&many, 1) {
        Err(HypercallError::TimedOut) => println!("{name}: polled {POLL_MAX} ports with a deadline in the past: timed out"),
        other => {
            println!("{name}: FAILED: a poll of {POLL_MAX} ports with a deadline in the past gave {other:?}");
            surprises += 1;
        }
    }

    if let Ok(hold) = cmdline::parse::<u64>("hold") {
        while !ended(hold) {
            time::sleep(NAP);
        }
    }
    // An unfinished line: the hypervisor prints it when the domain ends.
    print!("{name}: exiting with everything held");
    if surprises == 0 {
        status::SUCCESS
    } else {
        UNEXPECTED
    }
}

/// Whether hog `id` has taken everything and printed what it got: it has
/// grown past `nr_pages` and then blocked (a domain's console is printed
/// when it blocks), or it has ended.
fn done_taking(id: u64, nr_pages: u64) -> bool {
    match hypercall::domain_info(id) {
        Ok(info) => {
            let blocked = DomainState::from_raw(info.state) == Some(DomainState::Blocked);
            (info.nr_pages != nr_pages && blocked) || ended(id)
        }
        Err(_) => true,
    }
}

/// Whether domain `id` has ended (or does not exist).
fn ended(id: u64) -> bool {
    let state = hypercall::domain_info(id).ok().and_then(|info| DomainState::from_raw(info.state));
    !matches!(state, Some(DomainState::Runnable | DomainState::Blocked))
}
