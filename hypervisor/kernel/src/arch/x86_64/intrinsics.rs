//! Symbols the prebuilt `core` expects from a C library.
//!
//! `core` for `x86_64-unknown-linux-gnu` calls `memcpy` and friends and
//! refers to `rust_eh_personality` (it is built with unwinding). With
//! `panic = "abort"` the personality routine is never called. The string
//! instructions keep these short; their speed is fine under QEMU.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst` (the regions do not overlap).
///
/// # Safety
/// `src` is valid for `n` reads and `dst` for `n` writes, and they do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Whole quadwords first, then the rest bytewise. (Under QEMU's -icount
    // every iteration of a `rep` counts as an instruction, so this also
    // keeps the benchmark figures honest about the work done.)
    // SAFETY: the caller guarantees both ranges; the two `rep` moves touch
    // exactly `n` bytes of each, forwards (DF is clear in all Parvus code).
    unsafe {
        asm!("rep movsq", "mov rcx, {rest}", "rep movsb",
             rest = in(reg) n % 8,
             inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n / 8 => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the regions may overlap.
///
/// # Safety
/// `src` is valid for `n` reads and `dst` for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 || (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src or the
        // ranges are disjoint; the caller guarantees validity.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: copying backwards from the last byte is correct when dst lies
    // inside (src, src + n); DF is restored before returning.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, inout("rcx") n => _,
             options(nostack));
    }
    dst
}

/// Fills `n` bytes at `dst` with the low byte of `c`.
///
/// # Safety
/// `dst` is valid for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = u64::from(c as u8);
    // SAFETY: the caller guarantees the range; `rep stosq` then `rep stosb`
    // write exactly `n` bytes, forwards.
    unsafe {
        asm!("rep stosq", "mov rcx, {rest}", "rep stosb",
             rest = in(reg) n % 8,
             inout("rdi") dst => _, inout("rcx") n / 8 => _, in("rax") byte * 0x0101_0101_0101_0101,
             options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes; returns the difference of the first unequal pair.
///
/// # Safety
/// `a` and `b` are valid for `n` reads.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n and the caller guarantees n readable bytes at each.
        let (x, y) = unsafe { (a.add(i).read(), b.add(i).read()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Like `memcmp`, but only zero versus non-zero matters.
///
/// # Safety
/// `a` and `b` are valid for `n` reads.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the prebuilt `core` (built with unwinding); never called
/// because Parvus aborts on panic.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Referenced by the prebuilt `alloc` (built with unwinding) on its cleanup
/// paths. With `panic = "abort"` no unwinding starts, so this is unreachable.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    panic!("_Unwind_Resume called, but Parvus never unwinds")
}
