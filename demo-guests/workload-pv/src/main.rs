//! `workload-pv`: the issue-6 workload, paravirtualized.
//!
//! The same kernel logic and user programs as the native kernel
//! (`workload-core`), on a platform layer of guest-SDK calls
//! (`platform.rs`): direct paging with batched `mmu_update`, the `iret`
//! hypercall into user mode, and the hypervisor's timer event as the
//! scheduler tick. Its output lines are the native kernel's, each
//! prefixed by the hypervisor with `[<domain>] `, so one `expected.txt`
//! checks both.
//!
//! The command line is the workload's (`op=<name>`, `n=<N>`, see
//! `workload_core::cmdline`).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod memory;
mod platform;
mod queue;
mod tables;
mod trap;

use parvus_guest_sdk::StartInfo;
use spin::Mutex;

use platform::PvPlatform;

/// Who loaded this kernel, as the first output line says it.
const LOADER: &str = "parvus paravirtualized";

/// The platform lives in a static: its frame pools are too big for the stack.
static PLATFORM: Mutex<PvPlatform> = Mutex::new(PvPlatform::new());

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let mut platform = PLATFORM.lock();
    if let Err(e) = platform.boot() {
        panic!("workload-pv: cannot start: {e}");
    }
    workload_core::run(&mut *platform, LOADER, start.cmdline())
}
