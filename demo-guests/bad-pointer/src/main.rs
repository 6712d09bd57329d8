//! `bad-pointer`: a guest that lies about its buffers.
//!
//! The idea shown: the hypervisor treats every pointer a guest passes as a
//! claim to check, not an address to use. Each call below names memory the
//! guest may not hand over: unmapped, hypervisor-owned, wrapping around the
//! address space, running off the end of the mapped stack area into the
//! guard page, or (for `domain_info`, which *writes*) read-only. Each gets
//! back a typed [`HypercallError`] instead of a fault in ring 0, this guest
//! prints it and carries on, and exits 0 at the end.
#![no_std]
#![no_main]

use core::fmt;

use parvus_guest_sdk::hypercall::{self, console_write_raw};
use parvus_guest_sdk::hypercall_abi::domain_info::DOMID_SELF;
use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
use parvus_guest_sdk::{println, status, DomainInfo, HypercallError, StartInfo};

/// A domain id no domain has.
const NO_SUCH_DOMAIN: u64 = 999;

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    // The good case first, for contrast.
    let text = b"a valid buffer goes through\n";
    let result = hypercall::console_write(text);
    println!("console_write(valid buffer, {}) -> {}", text.len(), Outcome(result));

    // (a) unmapped: the first 4 MiB are never mapped (null-pointer guard).
    write(0x1000, 16);
    // (b) hypervisor memory: the upper half, and where the hypervisor's code sits.
    write(0xffff_8000_0000_0000, 16);
    write(0xffff_ffff_8010_0000, 16);
    // (c) a range that wraps around the end of the address space.
    write(u64::MAX - 7, 16);
    // (d) starts in mapped memory, runs into the unmapped guard page below the stack.
    let guard = start.stack_bottom - PAGE_SIZE;
    let result = console_write_raw(guard - 8, 16);
    println!("console_write(8 bytes before the stack guard page, 16) -> {}", Outcome(result));

    // (e) domain_info writes its answer: read-only memory is refused.
    let page_tables = start.page_tables as *mut DomainInfo;
    // SAFETY: the page tables are not memory any Rust reference points to,
    // and they are mapped read-only, so the hypervisor must refuse to write.
    let result = unsafe { hypercall::domain_info_raw(DOMID_SELF, page_tables) };
    println!("domain_info(self, out = page tables) -> {}", Outcome(result));
    let code = main as *const () as *mut DomainInfo;
    // SAFETY: as above: this is our own code, mapped read-and-execute only.
    let result = unsafe { hypercall::domain_info_raw(DOMID_SELF, code) };
    println!("domain_info(self, out = own code) -> {}", Outcome(result));
    // ... and a domain that does not exist.
    let result = hypercall::domain_info(NO_SUCH_DOMAIN).map(|info| info.domain_id);
    println!("domain_info({}) -> {}", NO_SUCH_DOMAIN, Outcome(result));

    println!("all bad pointers refused");
    status::SUCCESS
}

/// Calls `console_write` with `len` bytes at `addr` and prints the outcome.
fn write(addr: u64, len: u64) {
    println!("console_write({:#x}, {}) -> {}", addr, len, Outcome(console_write_raw(addr, len)));
}

/// Shows a hypercall result as `Ok(value)` or `Err(Name: description)`.
struct Outcome<T>(Result<T, HypercallError>);

impl<T: fmt::Debug> fmt::Display for Outcome<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(value) => write!(f, "Ok({:?})", value),
            Err(error) => write!(f, "Err({:?}: {})", error, error),
        }
    }
}
