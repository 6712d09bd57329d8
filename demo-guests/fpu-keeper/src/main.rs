//! `fpu-keeper`: SSE registers survive domain switches.
//!
//! The idea shown: the hypervisor saves and restores each domain's x87/SSE
//! state (it uses SSE itself, and other domains do too). Two copies of this
//! guest load their own patterns (from the command line's `seed=`) into
//! four SSE registers, yield to each other in the same instruction
//! sequence, and check that the registers still hold their own patterns.
#![no_std]
#![no_main]

use core::arch::asm;
use parvus_guest_sdk::{cmdline, println, status, StartInfo};

parvus_guest_sdk::entry!(main);

/// Loads four patterns into xmm8..xmm11, yields, and reads them back.
fn keep_across_yield(seed: u64) -> [u64; 4] {
    let (a, b, c, d): (u64, u64, u64, u64);
    // SAFETY: only the named xmm registers, rax, rcx and r11 are touched
    // (declared as clobbers); `yield` (hypercall 4) takes no argument and
    // touches no memory.
    unsafe {
        asm!(
            "movq xmm8, {s0}",
            "movq xmm9, {s1}",
            "movq xmm10, {s2}",
            "movq xmm11, {s3}",
            "mov eax, 4",
            "syscall",
            "movq {s0}, xmm8",
            "movq {s1}, xmm9",
            "movq {s2}, xmm10",
            "movq {s3}, xmm11",
            s0 = inout(reg) seed => a,
            s1 = inout(reg) seed.rotate_left(16) => b,
            s2 = inout(reg) seed.rotate_left(32) => c,
            s3 = inout(reg) !seed => d,
            out("rax") _, out("rcx") _, out("r11") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
        );
    }
    [a, b, c, d]
}

fn main(start: &'static StartInfo) -> u64 {
    let seed = cmdline::value("seed").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0x5eed);
    let expected = [seed, seed.rotate_left(16), seed.rotate_left(32), !seed];
    let mut bad = 0;
    for _ in 0..20 {
        if keep_across_yield(seed) != expected {
            bad += 1;
        }
    }
    println!("{}: 20 yields with xmm8-11 loaded, {} mismatches", start.name(), bad);
    if bad == 0 { status::SUCCESS } else { 1 }
}
