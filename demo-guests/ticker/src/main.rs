//! `ticker`: ten ticks at 100 ms from the one-shot timer.
//!
//! The idea shown: paravirtual time. The guest reads the system time
//! without a hypercall ([`time::now`]: its own `rdtsc`, scaled with the
//! numbers the hypervisor publishes in the shared-info page), and sleeps
//! with [`time::sleep_until`], which programs the hypervisor's one-shot
//! timer (`set_timer`) and blocks until the timer's event. Deadlines are
//! absolute (start + k x 100 ms), so lateness does not accumulate.
//!
//! Each tick prints the interval the guest measured since the previous
//! one. The verdict lines say whether every interval, and the total, are
//! within [`TOLERANCE_PERCENT`] of what was asked: the guest's clock is the
//! hypervisor's clock, so this checks that the hypervisor fires timers
//! when it said it would, and that a sleeping guest is woken on time.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use parvus_guest_sdk::{println, status, time, StartInfo};

/// Ticks to print.
const TICKS: u64 = 10;
/// The period, in nanoseconds.
const PERIOD_NS: u64 = 100_000_000;
/// How far an interval (and the total) may be from the period (and from
/// `TICKS` periods), in percent.
const TOLERANCE_PERCENT: u64 = 10;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let wall = time::wall_clock();
    println!(
        "{name}: wall clock {}.{:09} s since 1970; {TICKS} ticks every {} ms",
        wall.secs,
        wall.nanos,
        PERIOD_NS / 1_000_000
    );
    let start_ns = time::now();
    let mut previous = start_ns;
    let mut worst_ns = 0;
    for tick in 1..=TICKS {
        time::sleep_until(start_ns + tick * PERIOD_NS);
        let now = time::now();
        let interval = now - previous;
        previous = now;
        worst_ns = worst_ns.max(interval.abs_diff(PERIOD_NS));
        println!("{name}: tick {tick}: {}.{:03} ms since the previous", interval / 1_000_000, interval / 1_000 % 1_000);
    }
    let total = previous - start_ns;
    let expected = TICKS * PERIOD_NS;
    println!(
        "{name}: {TICKS} ticks took {}.{:03} ms by the guest's clock (expected {} ms); worst interval off by {}.{:03} ms",
        total / 1_000_000,
        total / 1_000 % 1_000,
        expected / 1_000_000,
        worst_ns / 1_000_000,
        worst_ns / 1_000 % 1_000
    );
    let intervals_ok = worst_ns * 100 <= PERIOD_NS * TOLERANCE_PERCENT;
    let total_ok = total.abs_diff(expected) * 100 <= expected * TOLERANCE_PERCENT;
    if intervals_ok {
        println!("{name}: {TICKS} ticks, all intervals within {TOLERANCE_PERCENT}% of {} ms", PERIOD_NS / 1_000_000);
    } else {
        println!("{name}: FAILED: an interval was more than {TOLERANCE_PERCENT}% off {} ms", PERIOD_NS / 1_000_000);
    }
    if total_ok {
        println!("{name}: total within {TOLERANCE_PERCENT}% of {} ms", expected / 1_000_000);
    } else {
        println!("{name}: FAILED: the total was more than {TOLERANCE_PERCENT}% off {} ms", expected / 1_000_000);
    }
    if intervals_ok && total_ok {
        status::SUCCESS
    } else {
        1
    }
}
