//! The memory routines the compiler expects to find, and the unwinding stub.
//!
//! The prebuilt `core` for `x86_64-unknown-linux-gnu` assumes a C library
//! and calls `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` by name; a
//! loader has no libc, so the shim defines them (the same routines as
//! bare-rt's, which the shim does not link: it is a loader, not a kernel).
//! The `rep movsb`/`rep stosb` string instructions are short and fast enough on every x86_64 (and the
//! compiler cannot turn them back into calls to these very functions, which
//! a plain Rust byte loop risks). The direction flag is clear on entry to
//! every function, as the System V ABI guarantees.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst`; the ranges must not overlap.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `n` bytes, and they do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsb` touches exactly
    // `n` bytes of each, moving forwards (DF is clear).
    unsafe {
        asm!(
            "rep movsb",
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") n => _,
            options(nostack, preserves_flags),
        );
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    let (d, s) = (dst as usize, src as usize);
    if d <= s || d >= s.wrapping_add(n) {
        // Copying forwards never overwrites a source byte before reading it.
        // SAFETY: same ranges as the caller's.
        return unsafe { memcpy(dst, src, n) };
    }
    // `dst` starts inside the source: copy backwards, from the last byte.
    // SAFETY: 1. n > 0 here (an empty range cannot contain `d`), so the last
    // byte `n - 1` of each range exists and the caller guarantees access.
    // 2. With DF set, `rep movsb` walks down exactly `n` bytes from there.
    // 3. DF is cleared again before returning, as the ABI requires.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _,
            options(nostack),
        );
    }
    dst
}

/// Fills `n` bytes at `dst` with the byte `c`.
///
/// # Safety
///
/// `dst` is writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` writes exactly `n`
    // bytes forwards. C's `memset` stores `c` converted to a byte.
    unsafe {
        asm!(
            "rep stosb",
            inout("rdi") dst => _,
            inout("rcx") n => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        );
    }
    dst
}

/// Compares `n` bytes: negative, zero or positive as `a` sorts before, equal
/// to or after `b` (bytes compared as unsigned).
///
/// # Safety
///
/// `a` and `b` are readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let (mut a_next, mut b_next) = (a, b);
    let differ: u8;
    // SAFETY: the caller guarantees both ranges; `repe cmpsb` reads forwards
    // until the first difference or after `n` bytes, and leaves `rsi`/`rdi`
    // one past the last bytes it compared. ZF tells whether those differed.
    unsafe {
        asm!(
            "repe cmpsb",
            "setne {differ}",
            differ = out(reg_byte) differ,
            inout("rsi") a_next,
            inout("rdi") b_next,
            inout("rcx") n => _,
            options(readonly, nostack),
        );
    }
    if differ == 0 {
        return 0;
    }
    // SAFETY: at least one byte was compared, so one before each end pointer
    // is the differing byte, inside the caller's ranges.
    let (x, y) = unsafe { (*a_next.sub(1), *b_next.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// Like [`memcmp`], but only zero versus non-zero is meaningful.
///
/// # Safety
///
/// `a` and `b` are readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` is compiled for unwinding and refers to this symbol
/// from its unwind tables. The shim uses `panic = "abort"`, so it is never
/// called; it only has to exist.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
