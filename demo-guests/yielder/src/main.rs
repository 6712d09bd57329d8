//! `yielder`: domains taking turns on one CPU.
//!
//! The idea shown: cooperative scheduling. In this version of Parvus a
//! domain keeps the CPU until it yields, blocks or exits. Two copies of this
//! guest each print a line and then call `yield`, so their lines interleave
//! (`a round 1`, `b round 1`, `a round 2`, ...), and the order proves the
//! hypervisor switched domains at each yield. The line printed before a
//! yield reaches the console first, because the hypervisor drains a domain's
//! console ring whenever the domain gives up the CPU.
//!
//! Command line: `rounds=N` (default 3).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use parvus_guest_sdk::cmdline::{self, CmdlineError};
use parvus_guest_sdk::{hypercall, println, status, StartInfo};

/// Rounds to run when the command line does not say.
const DEFAULT_ROUNDS: u32 = 3;

/// Exit status for a command line this guest cannot use.
const BAD_COMMAND_LINE: u64 = 2;

/// Exit status when the hypervisor refuses a `yield`.
const YIELD_FAILED: u64 = 3;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let rounds = match cmdline::parse::<u32>("rounds") {
        Ok(rounds) => rounds,
        Err(CmdlineError::Missing) => DEFAULT_ROUNDS,
        Err(CmdlineError::Malformed(text)) => {
            println!("bad command line: rounds={} is not a number", text);
            return BAD_COMMAND_LINE;
        }
    };
    for round in 1..=rounds {
        println!("{} round {}", start.name(), round);
        if let Err(error) = hypercall::yield_now() {
            println!("yield failed: {:?}: {}", error, error);
            return YIELD_FAILED;
        }
    }
    println!("{} done", start.name());
    status::SUCCESS
}
