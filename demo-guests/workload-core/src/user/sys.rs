//! The user programs' only contact with the machine: system-call stubs,
//! the time-stamp counter, and memory from `mmap`.
//!
//! This is the one module of the crate with `unsafe` code. Everything here
//! is `#[inline(always)]`: it is compiled into the user programs'
//! `.user_text`, which is all of the kernel image user mode can see (a
//! call into kernel text would fault), so nothing here may call a
//! function, panic, or use a constant from `.rodata`.

use crate::layout::PAGE_WORDS;
use crate::syscall;

use super::status;

/// A system call with up to three arguments (see [`crate::syscall`] for
/// the convention).
///
/// Kept private: each call is wrapped below in a function whose types
/// make it safe (`munmap` takes the [`Region`] it destroys, for example).
#[inline(always)]
fn syscall3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let result: u64;
    // SAFETY: `syscall` enters the workload kernel, which keeps every
    // register but `rax` (the result), `rcx` and `r11` (declared clobbered)
    // and does not touch the user stack. It writes no user memory that
    // Rust code holds: the only memory a call changes is what `mmap`
    // regions map, which Rust code reaches only through `Region` with
    // volatile accesses (so the asm is not `nomem`, keeping them ordered).
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

/// `getpid()`.
#[inline(always)]
pub fn getpid() -> u64 {
    syscall3(syscall::GETPID, 0, 0, 0)
}

/// `exit(status)`: never returns.
#[inline(always)]
pub fn exit(status: u64) -> ! {
    // SAFETY: the kernel never resumes a process after `exit`; `ud2` would
    // stop it if it did. No memory or stack is touched.
    unsafe {
        core::arch::asm!(
            "syscall",
            "ud2",
            in("rax") syscall::EXIT,
            in("rdi") status,
            options(noreturn, nostack),
        );
    }
}

/// `yield()`.
#[inline(always)]
pub fn yield_now() {
    syscall3(syscall::YIELD, 0, 0, 0);
}

/// What [`fork`] returned.
pub enum Forked {
    /// This is the parent; the child has this id.
    Parent(u64),
    /// This is the child.
    Child,
    /// The kernel refused (no room for another process).
    Failed,
}

/// `fork()`. The child is a copy: its memory (regions included) holds what
/// the parent's held at the call, so every Rust value stays valid in both.
#[inline(always)]
pub fn fork() -> Forked {
    match syscall3(syscall::FORK, 0, 0, 0) {
        0 => Forked::Child,
        syscall::ERROR => Forked::Failed,
        pid => Forked::Parent(pid),
    }
}

/// `wait()`: a child's exit status (or [`syscall::ERROR`] without child).
#[inline(always)]
pub fn wait() -> u64 {
    syscall3(syscall::WAIT, 0, 0, 0)
}

/// `report(result, ticks)`.
#[inline(always)]
pub fn report(result: u64, ticks: u64) {
    syscall3(syscall::REPORT, result, ticks, 0);
}

/// The time-stamp counter (an instruction count under QEMU's `-icount`).
#[inline(always)]
pub fn ticks() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter; every build leaves CR4.TSD
    // clear, so user mode may execute it.
    unsafe { core::arch::asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Zero-filled memory from `mmap`, accessed a word at a time.
///
/// Invariant: `[base, base + words * 8)` is an `mmap` region of this
/// process that no Rust value lives in (the kernel reserved it for this
/// `Region` alone), and it stays reserved until [`munmap`] consumes the
/// `Region`. The kernel maps each page on its first touch.
pub struct Region {
    base: u64,
    words: u64,
}

/// `mmap(pages)`: a region of `pages` zero-filled pages, or `None`.
#[inline(always)]
pub fn mmap(pages: u64) -> Option<Region> {
    match syscall3(syscall::MMAP, pages, 0, 0) {
        0 => None,
        base => Some(Region { base, words: pages.wrapping_mul(PAGE_WORDS) }),
    }
}

/// `munmap`: gives a region back (its pages are freed).
#[inline(always)]
pub fn munmap(region: Region) {
    if syscall3(syscall::MUNMAP, region.base, region.words / PAGE_WORDS, 0) != 0 {
        exit(status::MUNMAP_FAILED);
    }
}

impl Region {
    /// Word `index`; a bad index ends the process (no panic in user code).
    #[inline(always)]
    pub fn read(&self, index: u64) -> u64 {
        if index >= self.words {
            exit(status::OUT_OF_BOUNDS);
        }
        // SAFETY: `index` is inside the region (checked), which by the
        // type's invariant is reserved for this `Region` and holds no Rust
        // value; the address is 8-aligned (regions are page-aligned). A
        // volatile read creates no reference, and the kernel fills the page
        // on first touch.
        unsafe { ((self.base + index * 8) as *const u64).read_volatile() }
    }

    /// Stores `value` at word `index`; a bad index ends the process.
    #[inline(always)]
    pub fn write(&mut self, index: u64, value: u64) {
        if index >= self.words {
            exit(status::OUT_OF_BOUNDS);
        }
        // SAFETY: as in `read`; `&mut self` makes this the only access.
        unsafe { ((self.base + index * 8) as *mut u64).write_volatile(value) }
    }
}
