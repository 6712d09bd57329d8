//! Measuring in instructions: the pieces every benchmark guest needs.
//!
//! Under QEMU's `-icount shift=0` the time-stamp counter advances by one
//! per executed instruction, so differences of [`ticks`] are exact
//! instruction counts. A benchmark times a loop of N operations and
//! subtracts [`empty_loop`] of the same N, then prints one line per row in
//! the format `cargo xtask bench` parses:
//! `BENCH name=<row> iterations=<n> total=<ticks> baseline=<ticks>`.

use core::hint::black_box;

/// The time-stamp counter. Not serialised (no `lfence`): under `-icount`
/// there is no out-of-order execution to fence, and the fence would itself
/// be counted.
#[inline(always)]
pub fn ticks() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; the hypervisor leaves CR4.TSD
    // clear, so ring 3 may execute it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Ticks of a loop of `n` iterations that does nothing: the baseline a
/// measured loop of the same shape subtracts.
#[inline(never)]
pub fn empty_loop(n: u64) -> u64 {
    let start = ticks();
    for i in 0..n {
        black_box(i);
    }
    ticks() - start
}
