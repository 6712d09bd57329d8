//! A small runtime for guest *user* programs.
//!
//! A guest kernel and its user programs are one ELF image: the user code
//! lives in its own linker sections, `.user_text` and `.user_rodata`
//! (page-aligned by `guest.ld`, which also defines the start and end
//! symbols read by [`text_range`] and [`rodata_range`]).
//! [`AddressSpace::map_user_image`](crate::paging::AddressSpace::map_user_image)
//! shows exactly those pages to user mode, read-only, at the addresses they
//! were linked at; nothing else of the image is visible there.
//!
//! So user code must not reach anything outside those sections: no calls
//! into the kernel's text (`core::fmt`, panics, bounds checks, `memcpy`),
//! no constants from `.rodata`. Write it as plain loops over raw pointers
//! with volatile accesses, use only `#[inline(always)]` helpers (those in
//! this module are), keep string constants in [`user_bytes!`](crate::user_bytes), and check the
//! result: `objdump -d -j .user_text <guest>` must show no `call` or
//! `jmp` leaving the section and no `rip`-relative operand outside
//! `.user_text`/`.user_rodata`. A user program that slips is not a
//! security problem, only a dead process: the page it reaches is not
//! mapped in user mode.
//!
//! The pieces:
//!
//! - [`user_entry!`](crate::user_entry): defines a user program's entry
//!   function in `.user_text`;
//! - [`syscall0`] .. [`syscall3`]: the system-call stub (number in `rax`,
//!   arguments in `rdi`, `rsi`, `rdx`, result in `rax`; the hypervisor
//!   bounces it to the guest kernel's handler);
//! - [`format_u64`]: decimal formatting without `core::fmt`.

use core::ops::Range;

extern "C" {
    // Defined by guest.ld around the user sections (only addresses are used).
    static __user_text_start: u8;
    static __user_text_end: u8;
    static __user_rodata_start: u8;
    static __user_rodata_end: u8;
}

/// The addresses of `.user_text` (page-aligned; empty if the guest has no
/// user code).
pub fn text_range() -> Range<u64> {
    let start = &raw const __user_text_start;
    let end = &raw const __user_text_end;
    start as u64..end as u64
}

/// The addresses of `.user_rodata` (page-aligned; may be empty).
pub fn rodata_range() -> Range<u64> {
    let start = &raw const __user_rodata_start;
    let end = &raw const __user_rodata_end;
    start as u64..end as u64
}

/// Defines a user program's entry point in `.user_text`:
///
/// ```ignore
/// parvus_guest_sdk::user_entry! {
///     /// Counts to ten and exits.
///     fn counter() -> ! {
///         // ... plain loops, volatile accesses, syscalls ...
///     }
/// }
/// ```
///
/// The function is `extern "C" fn() -> !` (it must end with the guest
/// kernel's exit system call) and its address is what
/// [`UserContext::new`](crate::trap::UserContext::new) takes as entry.
#[macro_export]
macro_rules! user_entry {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> ! $body:block) => {
        $(#[$attr])*
        #[link_section = ".user_text"]
        #[inline(never)]
        $vis extern "C" fn $name() -> ! $body
    };
}

/// A byte-string constant placed in `.user_rodata`, so user code can read
/// it (a plain literal lands in the kernel's `.rodata`, which user mode
/// cannot see). Evaluates to `&'static [u8; N]`.
///
/// ```ignore
/// let text: &[u8] = parvus_guest_sdk::user_bytes!(b"hello\n");
/// ```
#[macro_export]
macro_rules! user_bytes {
    ($bytes:literal) => {{
        #[link_section = ".user_rodata"]
        static BYTES: [u8; $bytes.len()] = *$bytes;
        &BYTES
    }};
}

/// A user system call with no argument.
///
/// # Safety
///
/// The guest kernel decides what the call does; if it writes user memory,
/// that memory must be valid for it and not borrowed.
#[inline(always)]
pub unsafe fn syscall0(number: u64) -> u64 {
    let result: u64;
    // SAFETY: `syscall` in user mode is bounced to the guest kernel, which
    // returns with every register as it was except `rax` (the result) and
    // `rcx`/`r11` (clobbered by the instruction); it does not touch the
    // user stack. Memory effects are the caller's contract.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => result,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// A user system call with one argument (`rdi`).
///
/// # Safety
///
/// As for [`syscall0`].
#[inline(always)]
pub unsafe fn syscall1(number: u64, a0: u64) -> u64 {
    let result: u64;
    // SAFETY: as in `syscall0`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => result,
            in("rdi") a0,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// A user system call with two arguments (`rdi`, `rsi`).
///
/// # Safety
///
/// As for [`syscall0`].
#[inline(always)]
pub unsafe fn syscall2(number: u64, a0: u64, a1: u64) -> u64 {
    let result: u64;
    // SAFETY: as in `syscall0`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => result,
            in("rdi") a0,
            in("rsi") a1,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// A user system call with three arguments (`rdi`, `rsi`, `rdx`).
///
/// # Safety
///
/// As for [`syscall0`].
#[inline(always)]
pub unsafe fn syscall3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let result: u64;
    // SAFETY: as in `syscall0`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => result,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// Writes `n` in decimal at the end of `buf` and returns the digits:
/// formatting for user code, which cannot call `core::fmt`.
#[inline(always)]
pub fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        // SAFETY: a u64 has at most 20 decimal digits, so `start` stays in
        // 0..20 (raw pointers, so no bounds-check panic path into kernel text).
        unsafe { *buf.as_mut_ptr().add(start) = b'0' + (n % 10) as u8 };
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: bytes `start..20` were written above and lie inside `buf`.
    unsafe { core::slice::from_raw_parts(buf.as_ptr().add(start), buf.len() - start) }
}
