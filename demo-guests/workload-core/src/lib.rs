//! # The workload, written once for every build
//!
//! Issue 6 measures one workload three ways: natively (an unmodified
//! kernel in ring 0), under trap-and-emulate (the same kernel ELF,
//! deprivileged by the hypervisor) and paravirtualized (the same source
//! built against the guest SDK). This crate is that source: the seven
//! operations ([`ops`]), the user programs that run them ([`user`]), and
//! the kernel logic (process table, system calls, demand-zero paging,
//! mmap/munmap, scheduler: [`Kernel`]). What differs between builds is
//! only the [`Platform`] under it: how page tables change, how user mode
//! is entered and left, where frames and the timer tick come from.
//!
//! A build calls [`run`] with its platform, the name of whoever loaded it
//! and the command line; the kernel prints
//!
//! ```text
//! workload: loaded by <loader>
//! workload: <op> ok <result>            (or: workload: <op> FAILED ...)
//! workload: bench <op> n=<N> tsc=<ticks>
//! ...                                   (for each operation)
//! workload: all done
//! ```
//!
//! and returns the exit status. The result lines are identical in every
//! build; the `tsc` figures are instruction counts under QEMU's `-icount`
//! and are what the builds are compared on.
//!
//! Everything here is safe code except [`user::sys`], the user programs'
//! system-call stubs and memory accesses.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cmdline;
pub mod context;
pub mod context_asm;
pub mod frames;
pub mod kernel;
pub mod layout;
pub mod ops;
pub mod platform;
pub mod process;
pub mod syscall;
pub mod table_list;
pub mod user;
pub mod work;

pub use context::UserContext;
pub use kernel::{run, Kernel};
pub use platform::{Platform, PlatformError, Trap};
