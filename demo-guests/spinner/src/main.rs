//! `spinner`: a guest that never yields.
//!
//! The idea shown: preemption. Without a timer, a guest that loops forever
//! would keep the CPU and every other domain would starve. Parvus's
//! platform timer ends the spinner's slice so the others run on, and when
//! it has used the CPU time its manifest allows (`time_limit`) the
//! hypervisor stops it with a report. It prints how far it got every few
//! million iterations, so the console shows it being preempted.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::hint::black_box;
use parvus_guest_sdk::{console, println, StartInfo};

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    println!("{}: spinning forever", start.name());
    console::flush();
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
        if i % 20_000_000 == 0 {
            println!("{}: {} million iterations", start.name(), i / 1_000_000);
            console::flush();
        }
    }
}
