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
//! - `multicall_8`: one `multicall` of [`MULTICALL_ENTRIES`] `abi_version`
//!   calls; `iterations` counts entries, so the figure is what one batched
//!   call costs (to set beside `abi_version` made on its own);
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

use parvus_guest_sdk::hypercall_abi::mm::MulticallEntry;
use parvus_guest_sdk::hypercall_abi::{decode_result, Hypercall};
use parvus_guest_sdk::{console, hypercall, println, status, StartInfo};
use parvus_guest_sdk::bench::{empty_loop, ticks};

/// Iterations per loop: enough that the few instructions around the loop
/// vanish in the average.
const ITERATIONS: u64 = 10_000;
/// Entries of the `multicall_8` row's batch.
const MULTICALL_ENTRIES: usize = 8;
/// Iterations of the `multicall_8` row: fewer, so that the whole guest
/// still runs within one scheduler slice (10 ms, 10 million instructions
/// under `-icount`) and no other domain's work lands inside a loop.
const MULTICALL_LOOPS: u64 = 250;

parvus_guest_sdk::entry!(main);

fn main(_start: &'static StartInfo) -> u64 {
    println!("bench: {} iterations per row; ticks are instructions under -icount", ITERATIONS);
    // Print now, so no row's loop pays for draining the console ring.
    console::flush();

    let baseline = empty_loop(ITERATIONS);
    let entries = MULTICALL_LOOPS * MULTICALL_ENTRIES as u64;
    let multicall_baseline = empty_loop(MULTICALL_LOOPS);
    let rows = [
        ("null", ITERATIONS, null_loop(ITERATIONS), baseline),
        ("null_raw", ITERATIONS, null_raw_loop(ITERATIONS), baseline),
        ("abi_version", ITERATIONS, abi_version_loop(ITERATIONS), baseline),
        ("multicall_8", entries, multicall_loop(MULTICALL_LOOPS), multicall_baseline),
        ("floor", ITERATIONS, floor_loop(ITERATIONS), baseline),
    ];
    for (name, iterations, total, baseline) in rows {
        println!("BENCH name={} iterations={} total={} baseline={}", name, iterations, total, baseline);
    }
    for (name, iterations, total, baseline) in rows {
        let hundredths = total.saturating_sub(baseline) * 100 / iterations;
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

/// One `multicall` of [`MULTICALL_ENTRIES`] `abi_version` calls per
/// iteration (the batch is built once; the hypervisor rewrites only the
/// `result` fields).
#[inline(never)]
fn multicall_loop(n: u64) -> u64 {
    let entry = MulticallEntry { op: Hypercall::AbiVersion as u64, args: [0; 6], result: 0 };
    let mut calls = [entry; MULTICALL_ENTRIES];
    let start = ticks();
    for _ in 0..n {
        // SAFETY: `abi_version` takes no arguments and touches no guest
        // memory; the hypervisor writes only the `result` fields of `calls`.
        let _ = black_box(unsafe { hypercall::multicall(&mut calls) });
    }
    let total = ticks() - start;
    let answered = Ok(u64::from(parvus_guest_sdk::ABI_VERSION));
    assert!(calls.iter().all(|c| decode_result(c.result) == answered), "every batched call answered");
    total
}
