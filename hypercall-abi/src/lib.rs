//! # The Parvus hypercall ABI
//!
//! This crate is the single source of truth for everything the hypervisor and
//! its guests must agree on: hypercall numbers, argument structures, error
//! codes and the layout of every page they share. Both sides depend on it; no
//! number or layout is written down anywhere else.
//!
//! ## Register convention
//!
//! A guest calls the hypervisor with the `syscall` instruction from ring 3.
//!
//! | register | on entry                      | on return                       |
//! |----------|-------------------------------|---------------------------------|
//! | `rax`    | hypercall number ([`Hypercall`]) | result, see [`encode_result`] |
//! | `rdi`    | argument 0                    | preserved                       |
//! | `rsi`    | argument 1                    | preserved                       |
//! | `rdx`    | argument 2                    | preserved                       |
//! | `r10`    | argument 3 (`rcx` is taken by `syscall`) | preserved            |
//! | `r8`     | argument 4                    | preserved                       |
//! | `r9`     | argument 5                    | preserved                       |
//! | `rcx`    | (return address, written by `syscall`) | clobbered              |
//! | `r11`    | (rflags, written by `syscall`) | clobbered                      |
//!
//! Every other register, including `rsp`, `rbp`, the SSE registers and
//! `mxcsr`, is preserved. Arithmetic flags are restored from `r11`. The
//! hypervisor writes to the guest stack only to deliver a trap or an event
//! upcall (see [`trap`]), and then always 128 bytes below `rsp`, so the
//! guest's red zone is safe.
//!
//! The result in `rax` is a value when it is below `2^64 - 4095` and a
//! negated [`HypercallError`] code otherwise, the same trick Linux uses for
//! `errno`. [`decode_result`] turns it into a `Result`.
//!
//! A pointer passed to a hypercall is a *guest-virtual* address in the
//! calling domain's current address space. The hypervisor validates it
//! against the domain's page tables before it reads or writes a byte; an
//! unmapped, read-only (for writes) or hypervisor address is refused with
//! [`HypercallError::BadAddress`], never a fault in ring 0.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bare_metal;
pub mod console;
pub mod domain_info;
pub mod elf_note;
pub mod error;
pub mod event;
pub mod hypercall;
pub mod idt;
pub mod layout;
pub mod mm;
pub mod pvh;
pub mod start_info;
pub mod trap;

pub use console::ConsoleRing;
pub use domain_info::{DomainInfo, DomainState};
pub use error::{decode_result, encode_result, HypercallError};
pub use event::SharedInfo;
pub use hypercall::Hypercall;
pub use start_info::StartInfo;

/// Version of this ABI. The guest SDK stamps it into every guest image as an
/// ELF note ([`elf_note`]); the hypervisor refuses to start an image built for
/// another version. Bump it on every incompatible change to this crate.
pub const ABI_VERSION: u32 = 3;

/// Size of a page and of a machine frame, in bytes.
pub const PAGE_SIZE: u64 = 4096;
