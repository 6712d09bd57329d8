//! `hostile-flags`: a guest that enters the hypervisor with flags set that
//! ring 0 must not inherit.
//!
//! The idea shown: the hypervisor cannot trust anything a guest leaves in
//! the CPU. A ring-3 `popf` may set NT (nested task: makes `iretq` fault),
//! DF (string instructions run backwards) and AC (turns SMAP off). The
//! `syscall` path clears them through the SFMASK MSR and every exception
//! and interrupt entry starts by loading known flags, so each hypercall
//! below returns normally and the guest's own flags come back intact.
#![no_std]
#![no_main]

use core::arch::asm;
use parvus_guest_sdk::{hypercall, println, status, StartInfo};

parvus_guest_sdk::entry!(main);

const NT: u64 = 1 << 14;
const DF: u64 = 1 << 10;
const AC: u64 = 1 << 18;

/// Calls `abi_version` with RFLAGS |= `flags`; returns the result and the
/// flags seen right after the `syscall` (before they are restored).
fn hypercall_with_flags(flags: u64) -> (u64, u64) {
    let (rax, after): (u64, u64);
    // SAFETY: the flags are set only around the `syscall` and cleared again
    // (cld, popf of the saved value) before any Rust code runs; `abi_version`
    // touches no guest memory; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "pushfq",
            "pushfq",
            "or qword ptr [rsp], {flags}",
            "popfq",
            "mov eax, 1",
            "syscall",
            "pushfq",
            "pop {after}",
            "popfq",
            flags = in(reg) flags,
            after = out(reg) after,
            out("rax") rax,
            out("rcx") _,
            out("r11") _,
        );
    }
    (rax, after)
}

fn main(_start: &'static StartInfo) -> u64 {
    for (name, flag) in [("NT", NT), ("DF", DF), ("AC", AC)] {
        let (rax, after) = hypercall_with_flags(flag);
        let version = parvus_guest_sdk::hypercall_abi::decode_result(rax);
        println!(
            "hostile-flags: abi_version with {name} set -> {:?}; {name} still set on return: {}",
            version,
            after & flag != 0
        );
    }
    match hypercall::yield_now() {
        Ok(()) => println!("hostile-flags: the hypervisor survived all three"),
        Err(e) => println!("hostile-flags: yield failed: {e}"),
    }
    status::SUCCESS
}
