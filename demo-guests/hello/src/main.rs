//! `hello`: what a domain learns about itself at boot.
//!
//! The idea shown: a guest needs no probing or configuration files. The
//! hypervisor hands it a start-info page (id, name, memory, command line),
//! and hypercalls answer the rest: `abi_version` asks the hypervisor which
//! ABI it speaks, `domain_info` asks what it knows about this domain. The
//! heap works too, so the command line is split into an `alloc::Vec`.
//!
//! This guest contains no `unsafe` code: the SDK's safe wrappers are enough.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
use parvus_guest_sdk::{heap, hypercall, println, status, DomainState, StartInfo, ABI_VERSION};

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    println!("hello from domain {} ({})", start.domain_id, start.name());
    let kib = start.nr_pages * PAGE_SIZE / 1024;
    if kib.is_multiple_of(1024) {
        println!("memory: {} MiB ({} pages)", kib / 1024, start.nr_pages);
    } else {
        println!("memory: {} KiB ({} pages)", kib, start.nr_pages);
    }
    println!("cmdline: \"{}\"", start.cmdline());
    let words: Vec<&str> = start.cmdline().split_ascii_whitespace().collect();
    println!("cmdline words: {:?}", words);
    println!("heap: {} KiB", heap::size() / 1024);

    match hypercall::abi_version() {
        Ok(version) => println!("hypervisor ABI version: {} (built for {})", version, ABI_VERSION),
        Err(error) => println!("abi_version failed: {:?}: {}", error, error),
    }
    match hypercall::domain_info_self() {
        Ok(info) => println!(
            "domain_info: id={} name={} state={} pages={} domains={}",
            info.domain_id,
            info.name(),
            DomainState::from_raw(info.state).map_or("?", |s| s.name()),
            info.nr_pages,
            info.nr_domains
        ),
        Err(error) => println!("domain_info failed: {:?}: {}", error, error),
    }
    println!("goodbye");
    status::SUCCESS
}
