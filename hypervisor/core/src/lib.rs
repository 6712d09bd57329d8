//! # parvus-core: the hypervisor's logic, testable on the host
//!
//! Everything the hypervisor decides (who owns a frame, whether a guest
//! address may be touched, which domain runs next, whether a manifest or an
//! image is acceptable) lives here, in plain safe Rust that builds both for
//! the ring-0 kernel (`no_std` + `alloc`) and for the host, where `cargo test`
//! exercises it. The kernel crate (`hypervisor/kernel`) only supplies the
//! hardware: it implements [`machine_memory::MachineMemory`] and
//! [`console::ConsoleSink`] and calls [`system::System`] on every entry.
//!
//! Design rules, borrowed from Hubris: simple and clear algorithms over fast
//! and clever ones; a guest pointer is an untrusted claim ([`guest_memory::GuestAddr`])
//! until it is validated against the domain's page tables.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod builder;
pub mod bundle;
pub mod console;
pub mod decode;
pub mod domain;
pub mod emulated;
pub mod event_channel;
pub mod fault;
pub mod frame_table;
pub mod guest_memory;
pub mod heap_account;
pub mod hypercall;
pub mod image;
pub mod initial_layout;
pub mod machine_memory;
pub mod manifest;
pub mod page_type;
pub mod paging;
pub mod plural;
pub mod scheduler;
pub mod system;
pub mod time;
pub mod trap_bounce;
#[cfg(test)]
mod testing;
pub mod vcpu;
