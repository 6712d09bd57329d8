//! # parvus-intrinsics: the C-library symbols the prebuilt `core` needs
//!
//! Every Parvus binary is built for the ordinary host target
//! (`x86_64-unknown-linux-gnu`), whose prebuilt `core` assumes a C library:
//! it calls `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` by name, and
//! its unwind tables name `rust_eh_personality`. None of our binaries has a
//! C library, so each must define them: the hypervisor, the guest SDK (and
//! so every paravirtualized guest), bare-rt (every unmodified kernel) and the
//! boot shim. They are the same routines in all four, so they live here,
//! once, in a crate each of those links.
//!
//! Three rules shape the code:
//!
//! - **No Rust loops.** The compiler recognises a byte-copying loop and
//!   turns it into a call to `memcpy`, which inside `memcpy` itself would
//!   be endless recursion. The string instructions (`rep movs`, `rep stos`,
//!   `repe cmps`) in inline assembly cannot be turned into anything else.
//! - **Quadwords where they can be.** Under QEMU's `-icount`, which every
//!   Parvus run uses and which makes `rdtsc` count instructions, each
//!   iteration of a `rep` prefix counts as one instruction: copying a 4 KiB
//!   page with `rep movsb` costs 4096 "instructions", with `rep movsq` 512.
//!   `memcpy` and `memset` therefore move whole quadwords first and the
//!   last `n % 8` bytes one at a time. (The benchmark figures count the
//!   work the CPU does, not how it was spelled.)
//! - **DF is clear on entry.** The System V ABI guarantees it at every
//!   call, and every ring-0 entry path of ours clears it (`cld`) before it
//!   calls Rust; `memmove` sets it only around its backward copy.
//!
//! What is *not* here: `_Unwind_Resume`, which the prebuilt `alloc` names
//! on its cleanup paths. With `panic = "abort"` it is never called, but
//! what to do if it somehow were differs (the hypervisor panics, a guest
//! ends its domain), so each binary that uses `alloc` defines its own.
//!
//! ## Linking it
//!
//! A dependency that no code names is not linked at all, and these symbols
//! are named only by the compiler's output. A crate that needs them says
//! so at its root:
//!
//! ```ignore
//! // The C-library symbols the prebuilt `core` calls (see the crate).
//! extern crate parvus_intrinsics;
//! ```
//!
//! A crate *using* the guest SDK or bare-rt need not: they already do.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst`; the ranges must not overlap.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `n` bytes, and they do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Whole quadwords first, then the remaining `n % 8` bytes (see the
    // crate docs for why).
    // SAFETY: the caller guarantees both ranges; the two `rep` moves touch
    // exactly `n` bytes of each, forwards (DF is clear).
    unsafe {
        asm!(
            "rep movsq",
            "mov rcx, {rest}",
            "rep movsb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") n / 8 => _,
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
        // Copying forwards never overwrites a source byte before reading it:
        // the destination starts below the source, or past its end.
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

/// Fills `n` bytes at `dst` with the byte `c` (C's `memset` stores `c`
/// converted to a byte).
///
/// # Safety
///
/// `dst` is writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // The byte repeated in all eight bytes of the quadword `rep stosq` stores.
    let pattern = u64::from(c as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range; `rep stosq` then `rep stosb`
    // write exactly `n` bytes, forwards (DF is clear). `rep stosb` stores
    // the low byte of rax, which is `c as u8`.
    unsafe {
        asm!(
            "rep stosq",
            "mov rcx, {rest}",
            "rep stosb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _,
            inout("rcx") n / 8 => _,
            in("rax") pattern,
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

/// The prebuilt `core` is compiled for unwinding and names this symbol in
/// its unwind tables. Every Parvus binary uses `panic = "abort"`, so it is
/// never called; it only has to exist.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
