//! `crash`: a guest that faults, and a hypervisor that contains it.
//!
//! The idea shown: isolation. This guest stores to an address that is not
//! mapped in its address space. The page fault goes to the hypervisor, which
//! stops this domain alone, prints a report naming it (fault kind, error
//! code, RIP, CR2 = the address below, registers), and lets every other
//! domain run to completion. The line printed before the store still appears,
//! because the hypervisor drains the console ring of a domain that faulted.
#![no_std]
#![no_main]

use parvus_guest_sdk::{println, StartInfo};

/// Not mapped: far above this domain's memory, far below the hypervisor.
const UNMAPPED: u64 = 0xdead_0000;

/// Exit status if the store somehow succeeded (the manifest expects a crash,
/// so any exit fails the scenario).
const STORE_SUCCEEDED: u64 = 1;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    println!("{}: writing to unmapped address {:#x}", start.name(), UNMAPPED);
    // SAFETY: deliberately not a valid Rust object: that is the point of the
    // demo. The address lies outside every Rust allocation, where a volatile
    // access is allowed to trap, which it does (a page fault). `volatile`
    // also makes the compiler emit exactly this one store.
    unsafe { core::ptr::write_volatile(UNMAPPED as *mut u64, 0x0bad_c0de) };
    println!("{}: ERROR: still running after writing to {:#x}", start.name(), UNMAPPED);
    STORE_SUCCEEDED
}
