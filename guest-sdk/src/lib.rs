//! # The Parvus guest SDK
//!
//! Everything a guest kernel needs to run on Parvus, so that a guest crate is
//! a plain `#![no_std]` binary with one macro call:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! use parvus_guest_sdk::{println, StartInfo};
//!
//! parvus_guest_sdk::entry!(main);
//!
//! fn main(start: &'static StartInfo) -> u64 {
//!     println!("hello from domain {}", start.domain_id);
//!     0 // the exit status
//! }
//! ```
//!
//! What the SDK provides, one module each:
//!
//! - [`entry!`] and the `_start` routine ([`entry`](mod@entry)): SSE, bss and stack
//!   set-up, start-info checks, then your `main`, then [`hypercall::exit`].
//! - [`hypercall`]: a wrapper for every hypercall of
//!   [`hypercall_abi::Hypercall`], returning `Result<_, HypercallError>`
//!   (those that can change the caller's own mappings or register code the
//!   hypervisor jumps to are `unsafe fn` with a written contract; the
//!   [`paging`], [`trap`] and [`event`] modules are their safe faces).
//! - [`print!`]/[`println!`] ([`console`]): formatted output through the
//!   shared console ring, without a hypercall per line.
//! - a global allocator over the domain's free memory ([`heap`]), so `alloc`
//!   works;
//! - a panic handler that reports `panicked at <file>:<line>: <message>` and
//!   exits with [`status::PANIC`];
//! - `memcpy` and the other C-library symbols the prebuilt `core` calls, by
//!   linking `parvus-intrinsics` (`guest-sdk/intrinsics`);
//! - [`cmdline`]: `key=value` look-ups in the domain's command line;
//! - [`frames`]: pfn, mfn and virtual address of the domain's frames, and
//!   whole zeroed frames from the heap;
//! - [`paging`]: page tables the guest manages and the hypervisor validates
//!   (*direct paging*): page-table objects, batched `mmu_update`, and
//!   address spaces for guest processes;
//! - [`trap`]: trap-table and system-call registration, with an assembly
//!   entry layer that calls a Rust handler (*ring compression*);
//! - [`user`]: a runtime for guest user programs (entry macro, system-call
//!   stub, formatting without `core::fmt`);
//! - the ABI-version ELF note and the linker script (`guest-sdk/guest.ld`), so
//!   the hypervisor can refuse a guest built for another ABI.
//!
//! Design rule: `unsafe` lives only in small modules whose names say what
//! they touch (`hypercall::raw`, `console::ring`, `heap`, `entry`,
//! `frames`, `paging`, `trap::entry`, `user`), and each block explains why
//! it is sound.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
// `memcpy` and the other C-library symbols the prebuilt `core` calls,
// shared with the hypervisor, bare-rt and the boot shim (see that crate).
extern crate parvus_intrinsics;

mod abi_note;
pub mod bench;
pub mod cmdline;
pub mod console;
pub mod entry;
pub mod event;
pub mod frames;
pub mod heap;
pub mod hypercall;
mod panic;
pub mod paging;
mod start_info;
pub mod status;
pub mod time;
pub mod trap;
pub mod user;

pub use hypercall_abi::{self, DomainInfo, DomainState, HypercallError, StartInfo, ABI_VERSION};
pub use start_info::start_info;
