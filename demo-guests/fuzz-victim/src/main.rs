//! `fuzz-victim`: the domain beside `hypercall-fuzz`, which must not notice it.
//!
//! The idea shown: isolation under fire. While the fuzzer (`fuzzer=<id>` on
//! the command line) makes its random hypercalls, the victim goes round a
//! loop of checks, each against what it knew before the fuzzer started:
//!
//! - its memory: [`PATTERN_PAGES`] pages filled with a pseudo-random
//!   pattern, checked word by word;
//! - its page tables: every entry as it was (accessed and dirty bits aside,
//!   which the MMU sets), and the number of frames it owns;
//! - its events: each round sets one timer and sends one event on a
//!   loopback channel (a port of its own bound to another of its own), and
//!   each must arrive exactly once: the counts must equal the rounds;
//! - its ports: the one offered to the fuzzer is still offered to it (or
//!   bound by it), and the loopback channel still connects its two ports.
//!
//! It goes on until the fuzzer has ended (and for at least [`MIN_ROUNDS`]),
//! then prints one line, `fuzz-victim: intact after <n> rounds: ...`, and
//! exits 0; at the first difference it prints `fuzz-victim: DAMAGED: ...`
//! and exits 1.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use parvus_guest_sdk::event::{self, Port, PortStatus};
use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
use parvus_guest_sdk::{cmdline, hypercall, println, status, time, DomainState, StartInfo};

/// Pages of the pattern.
const PATTERN_PAGES: usize = 32;
/// Rounds made even if the fuzzer ends first.
const MIN_ROUNDS: u64 = 5;
/// The timer of one round.
const NAP: Duration = Duration::from_millis(2);

/// Timer callbacks run, loopback events handled, events from the fuzzer.
static TIMER_EVENTS: AtomicU64 = AtomicU64::new(0);
static LOOPBACK_EVENTS: AtomicU64 = AtomicU64::new(0);
static FUZZER_EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_timer(_: time::TimerId) {
    TIMER_EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn on_loopback(_: Port) {
    LOOPBACK_EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn on_fuzzer(_: Port) {
    FUZZER_EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// Word `i` of the pattern.
fn pattern(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x5eed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 31)
}

/// The domain's page tables, entry by entry, accessed and dirty bits aside.
fn page_tables(start: &StartInfo) -> Vec<u64> {
    let words = (start.nr_page_table_pages * PAGE_SIZE / 8) as usize;
    (0..words)
        .map(|i| {
            // SAFETY: the page tables are mapped read-only at `page_tables`
            // for the domain's life, `nr_page_table_pages` pages; `i` stays
            // inside; volatile because the hypervisor and the MMU write them.
            let word = unsafe { (start.page_tables as *const u64).add(i).read_volatile() };
            word & !0x60
        })
        .collect()
}

/// Whether domain `id` exists and has not ended.
fn is_alive(id: u64) -> bool {
    let state = hypercall::domain_info(id).map(|info| DomainState::from_raw(info.state));
    matches!(state, Ok(Some(DomainState::Runnable | DomainState::Blocked)))
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let Ok(fuzzer) = cmdline::parse::<u64>("fuzzer") else {
        println!("fuzz-victim: the command line must say fuzzer=<domain id>");
        return 2;
    };
    let me = u64::from(start.domain_id);
    let mut memory: Vec<u64> = (0..PATTERN_PAGES * 512).map(pattern).collect();
    let tables = page_tables(start);
    let pages = hypercall::domain_info_self().map(|i| i.nr_pages).unwrap_or(0);
    let channel = (|| {
        let offered = event::alloc_unbound(fuzzer)?;
        let a = event::alloc_unbound(me)?;
        let b = event::bind_interdomain(me, a)?;
        Ok::<_, parvus_guest_sdk::HypercallError>((offered, a, b))
    })();
    let Ok((offered, a, b)) = channel else {
        println!("fuzz-victim: cannot set up its ports: {:?}", channel.err());
        return 1;
    };
    if event::set_handler(a, on_loopback).and(event::set_handler(offered, on_fuzzer)).is_err() {
        println!("fuzz-victim: ports {a} and {offered} cannot have handlers");
        return 1;
    }
    println!("fuzz-victim: port {offered} offered to domain {fuzzer}; checking {PATTERN_PAGES} pages, its page tables and its events");

    let mut rounds = 0;
    let damage = loop {
        // One timer event and one loopback event per round, each exactly once.
        let deadline = time::deadline_after(NAP);
        if time::add_timer(deadline, on_timer).is_err() {
            break Some("cannot set a timer");
        }
        if event::send(b).is_err() {
            break Some("cannot send on its loopback channel");
        }
        time::sleep_until(deadline + 1_000_000);
        rounds += 1;
        if TIMER_EVENTS.load(Ordering::Relaxed) != rounds {
            break Some("a timer event was lost or came twice");
        }
        if LOOPBACK_EVENTS.load(Ordering::Relaxed) != rounds {
            break Some("a loopback event was lost or came twice");
        }
        if memory.iter().enumerate().any(|(i, w)| *w != pattern(i)) {
            break Some("its memory changed");
        }
        if page_tables(start) != tables {
            break Some("its page tables changed");
        }
        if hypercall::domain_info_self().map(|i| i.nr_pages) != Ok(pages) {
            break Some("the number of its frames changed");
        }
        let offered_ok = matches!(
            event::status(offered),
            Ok(PortStatus::Unbound { remote }) | Ok(PortStatus::Interdomain { remote, .. }) if u64::from(remote) == fuzzer
        );
        if !offered_ok {
            break Some("the port offered to the fuzzer changed hands");
        }
        let loopback_ok = matches!(event::status(a), Ok(PortStatus::Interdomain { remote, remote_port }) if u64::from(remote) == me && remote_port == b)
            && matches!(event::status(b), Ok(PortStatus::Interdomain { remote, remote_port }) if u64::from(remote) == me && remote_port == a);
        if !loopback_ok {
            break Some("its loopback channel changed");
        }
        if rounds >= MIN_ROUNDS && !is_alive(fuzzer) {
            break None;
        }
        // Touch the pattern, so that a stale mapping would show.
        let i = rounds as usize % memory.len();
        memory[i] = pattern(i);
    };
    match damage {
        None => {
            println!(
                "fuzz-victim: intact after {rounds} rounds: {PATTERN_PAGES} pages, its page tables, {pages} frames, \
                 {rounds} timer and {rounds} loopback events each exactly once ({} events from the fuzzer's side)",
                FUZZER_EVENTS.load(Ordering::Relaxed)
            );
            status::SUCCESS
        }
        Some(what) => {
            println!("fuzz-victim: DAMAGED after {rounds} rounds: {what}");
            1
        }
    }
}
