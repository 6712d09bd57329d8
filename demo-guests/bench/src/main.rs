//! `bench`: what one hypercall costs, counted in instructions.
//!
//! The idea shown: measuring a round trip into the hypervisor and back.
//! Under QEMU with `-icount shift=0`, the time-stamp counter advances by one
//! per executed instruction, so `rdtsc` differences are exact instruction
//! counts, the same on every run and every machine. Each row runs a loop
//! of [`ITERATIONS`] iterations; the empty loop, measured the same way, is
//! the baseline to subtract:
//!
//! - `null`: the `null` hypercall through the SDK wrapper (what a guest pays);
//! - `null_raw`: a bare `mov eax, 0; syscall` (what the hypervisor's entry
//!   and exit path costs, plus one instruction);
//! - `abi_version`: a hypercall served on the slow path, for contrast;
//! - `floor`: the same loop as `null_raw` while the hypervisor has pointed
//!   `syscall` at a lone `sysretq` (the `bench_floor` hypercall): the least
//!   any `syscall`-based hypercall can cost on this machine.
//!
//! Each row is printed as one machine-readable line that `cargo xtask bench`
//! parses:
//!
//! ```text
//! BENCH name=<row> iterations=<n> total=<ticks> baseline=<ticks>
//! ```
//!
//! and the per-iteration cost is `(total - baseline) / iterations`.
#![no_std]
#![no_main]

use core::arch::asm;
use core::hint::black_box;

use parvus_guest_sdk::{console, hypercall, println, status, StartInfo};
use parvus_guest_sdk::bench::{empty_loop, ticks};

/// Iterations per loop: enough that the few instructions around the loop
/// vanish in the average.
const ITERATIONS: u64 = 10_000;

parvus_guest_sdk::entry!(main);

fn main(_start: &'static StartInfo) -> u64 {
    println!("bench: {} iterations per row; ticks are instructions under -icount", ITERATIONS);
    // Print now, so no row's loop pays for draining the console ring.
    console::flush();

    let baseline = empty_loop(ITERATIONS);
    let rows = [
        ("null", null_loop(ITERATIONS)),
        ("null_raw", null_raw_loop(ITERATIONS)),
        ("abi_version", abi_version_loop(ITERATIONS)),
        ("floor", floor_loop(ITERATIONS)),
    ];
    for (name, total) in rows {
        println!("BENCH name={} iterations={} total={} baseline={}", name, ITERATIONS, total, baseline);
    }
    for (name, total) in rows {
        let hundredths = total.saturating_sub(baseline) * 100 / ITERATIONS;
        println!("bench: {}: {}.{:02} ticks per call", name, hundredths / 100, hundredths % 100);
    }
    status::SUCCESS
}



/// `null` through the SDK's safe wrapper, result included.
#[inline(never)]
fn null_loop(n: u64) -> u64 {
    let start = ticks();
    for _ in 0..n {
        let _ = black_box(hypercall::null());
    }
    ticks() - start
}

/// `null` as the bare instruction pair, without the SDK.
#[inline(never)]
fn null_raw_loop(n: u64) -> u64 {
    let start = ticks();
    for i in 0..n {
        black_box(i);
        // SAFETY: `null` (number 0) takes no arguments and touches no guest
        // memory; `syscall` clobbers rcx and r11, and rax carries the result.
        unsafe {
            asm!(
                "mov eax, 0",
                "syscall",
                out("rax") _,
                out("rcx") _,
                out("r11") _,
                options(nostack),
            );
        }
    }
    ticks() - start
}

/// The `null_raw` loop with `syscall` pointed at a bare `sysretq`.
#[inline(never)]
fn floor_loop(n: u64) -> u64 {
    if hypercall::bench_floor_begin().is_err() {
        return 0;
    }
    let total = null_raw_loop(n);
    hypercall::bench_floor_end();
    total
}

/// `abi_version`, a hypercall the hypervisor serves on its slow path.
#[inline(never)]
fn abi_version_loop(n: u64) -> u64 {
    let start = ticks();
    for _ in 0..n {
        let _ = black_box(hypercall::abi_version());
    }
    ticks() - start
}
