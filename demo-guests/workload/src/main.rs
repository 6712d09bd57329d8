//! `workload`: the issue-6 workload as an unmodified kernel.
//!
//! The same kernel logic and user programs as the paravirtualized build
//! (`workload-core`), on a platform layer of privileged instructions
//! (`platform.rs`): its own page tables (`paging.rs`), `syscall`/`sysretq`
//! and `iretq` between user and kernel mode (`entry.rs`), and the PIT as
//! the scheduler tick. It runs on bare-rt, in ring 0 natively (started by
//! the boot shim) and, unchanged, in ring 3 under the hypervisor's
//! trap-and-emulate mode; its first line names the loader, which is the
//! only way it can tell.
//!
//! The command line is the workload's (`op=<name>`, `n=<N>`, see
//! `workload_core::cmdline`).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod entry;
mod paging;
mod phys;
mod platform;

use bare_rt::BootInfo;
use spin::Mutex;

use platform::NativePlatform;

/// The platform lives in a static: its frame pool is too big for the stack.
static PLATFORM: Mutex<NativePlatform> = Mutex::new(NativePlatform::new());

bare_rt::entry!(main);

fn main(boot: &'static BootInfo) -> u8 {
    let mut platform = PLATFORM.lock();
    if let Err(e) = platform.boot(boot) {
        panic!("workload: cannot start: {e}");
    }
    let loader = core::str::from_utf8(boot.loader_name()).unwrap_or("an unnamed loader");
    let cmdline = core::str::from_utf8(boot.cmdline()).unwrap_or("");
    workload_core::run(&mut *platform, loader, cmdline) as u8
}
