//! `hypercall-fuzz`: a guest that makes random hypercalls and checks every
//! result against the ABI.
//!
//! The idea shown: a hostile guest the hypervisor has never seen. With
//! `seed=<n> calls=<n> victim=<domain id>` on its command line it makes
//! `calls` hypercalls chosen by a generator seeded with `seed` (so a seed
//! names one run: `cargo xtask fuzz --seed <n>` replays it): every number
//! the ABI has and numbers it has not, with arguments biased toward the
//! values that find bugs (see [`fuzzer`]), including page-table updates,
//! event channels, blocking and polling with deadlines, timers, nested
//! multicalls, ballooning, trap tables and `iret`.
//!
//! Every result is judged against [`Hypercall::errors`] and the value the
//! call's documentation promises ([`check`]); anything else is printed as
//!
//! ```text
//! hypercall-fuzz: FINDING: seed=<n> call <i>: #<number> <name>(<args>) -> <result>: <why>
//! ```
//!
//! which fails the scenario. With `trace=<i>` on its command line it also
//! prints every call from the `i`-th on, before making it (a run of fewer
//! calls is the start of a longer one, so a hang can be narrowed down
//! first). The fuzzer must survive its own calls to make
//! them all: [`space`] keeps its code, stack and data mapped (kept entries
//! are only ever rewritten with their own value or one refused for
//! certain; new mappings of its own frames are read-only; buffers the
//! hypervisor writes are fresh ones in an arena of its own). It never calls
//! `exit` but to end (inside a multicall, where it is refused), and it
//! arms its timer before it blocks. At the end it checks that its own
//! mappings are as they were and prints its tallies:
//!
//! ```text
//! hypercall-fuzz: seed <n>: <calls> calls made, 0 findings
//! hypercall-fuzz: results: Ok ..., UnknownHypercall ..., BadAddress ..., ...
//! ```
//!
//! A victim domain (`fuzz-victim`) runs beside it and checks that none of
//! this reached it.
#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod rng;
mod arena;
mod check;
mod fuzzer;
mod raw;
mod space;

use parvus_guest_sdk::hypercall_abi::event::virq;
use parvus_guest_sdk::hypercall_abi::Hypercall;
use parvus_guest_sdk::hypercall::{self, events};
use parvus_guest_sdk::{cmdline, console, println, StartInfo};

use crate::fuzzer::Fuzzer;
use crate::space::Space;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let (Ok(seed), Ok(calls), Ok(victim)) =
        (cmdline::parse::<u64>("seed"), cmdline::parse::<u64>("calls"), cmdline::parse::<u64>("victim"))
    else {
        println!("hypercall-fuzz: the command line must say seed=<n> calls=<n> victim=<domain id>");
        return 2;
    };
    println!("hypercall-fuzz: seed {seed}, {calls} calls, beside domain {victim}");
    let space = match Space::set_up(start) {
        Ok(space) => space,
        Err(e) => {
            println!("hypercall-fuzz: cannot set up: {}: {}", e.0, e.1);
            return 1;
        }
    };
    let (Ok(timer_port), Ok(info), Ok(max_pages)) =
        (events::bind_virq(virq::TIMER), hypercall::domain_info_self(), hypercall::maximum_reservation())
    else {
        println!("hypercall-fuzz: cannot bind its timer or learn its limits");
        return 1;
    };
    let mut fuzzer = Fuzzer::new(start, seed, space, victim, u64::from(info.nr_domains), timer_port, max_pages);
    fuzzer.trace = cmdline::parse::<u64>("trace").unwrap_or(u64::MAX);
    for _ in 0..calls {
        fuzzer.step();
    }
    let intact = fuzzer.check_own_mappings();
    let t = &fuzzer.tally;
    println!("hypercall-fuzz: seed {seed}: {calls} calls made, {} findings", t.findings);
    println!(
        "hypercall-fuzz: {} with numbers that are no hypercall, {} multicalls with {} entries ({} in a page they \
         took away), {} helper calls",
        t.calls[Hypercall::ALL.len()],
        t.multicalls,
        t.entries,
        t.window_multicalls,
        fuzzer.helpers
    );
    for chunk in t.results().chunks(6) {
        println!("hypercall-fuzz: results: {}", chunk.join(", "));
    }
    for chunk in t.calls().chunks(7) {
        println!("hypercall-fuzz: calls: {}", chunk.join(", "));
    }
    if intact {
        println!("hypercall-fuzz: its own mappings are as they were");
    }
    console::flush();
    u64::from(t.findings != 0)
}
