//! The user programs `minikernel` runs, one per process.
//!
//! They live in `.user_text`/`.user_rodata` (see `parvus_guest_sdk::user`):
//! user mode sees those pages and nothing else of the image, so everything
//! here is `#[inline(always)]` or a `user_entry!`, and every string is a
//! `user_bytes!`. They talk to the kernel only through its system calls
//! (numbers in [`crate::syscall`]).

use parvus_guest_sdk::{user, user_bytes, user_entry};

use crate::syscall::{EXIT, GETPID, MMAP, WRITE, YIELD};

/// `write(buf, len)`: prints bytes on the console.
#[inline(always)]
fn write(bytes: &[u8]) {
    // SAFETY: the kernel's `write` only reads the buffer, which is ours.
    unsafe { user::syscall2(WRITE, bytes.as_ptr() as u64, bytes.len() as u64) };
}

/// Prints `n` in decimal.
#[inline(always)]
fn write_number(n: u64) {
    let mut digits = [0u8; 20];
    write(user::format_u64(n, &mut digits));
}

/// Prints `pid <n>: `, the start of every line a program prints.
#[inline(always)]
fn write_prefix() {
    write(user_bytes!(b"pid "));
    // SAFETY: `getpid` touches no user memory.
    write_number(unsafe { user::syscall0(GETPID) });
    write(user_bytes!(b": "));
}

/// `yield()`: lets the next process run.
#[inline(always)]
fn yield_now() {
    // SAFETY: `yield` touches no user memory.
    unsafe { user::syscall0(YIELD) };
}

/// `exit(status)`: ends the process.
#[inline(always)]
fn exit(status: u64) -> ! {
    // SAFETY: `exit` touches no user memory and does not return.
    unsafe { user::syscall1(EXIT, status) };
    // The kernel never resumes an exited process.
    loop {
        core::hint::spin_loop();
    }
}

/// `mmap(len)`: `len` bytes of anonymous memory, zero-filled on first
/// touch; null if the kernel refused.
#[inline(always)]
fn mmap(len: u64) -> *mut u64 {
    // SAFETY: `mmap` writes no user memory (it only reserves addresses).
    unsafe { user::syscall1(MMAP, len) as *mut u64 }
}

/// The numbers process 1 sums.
pub const SUM_N: u64 = 1000;

user_entry! {
    /// Process 1: stores 1..=SUM_N in memory from `mmap` (yielding
    /// halfway), then sums it back.
    pub fn summer() -> ! {
        let values = mmap(SUM_N * 8);
        if values.is_null() {
            exit(2);
        }
        write_prefix();
        write(user_bytes!(b"storing 1..="));
        write_number(SUM_N);
        write(user_bytes!(b" in mmap'd memory, yielding halfway\n"));
        for i in 0..SUM_N {
            // SAFETY: `values` is SUM_N words the kernel reserved for us.
            unsafe { values.add(i as usize).write_volatile(i + 1) };
            if i == SUM_N / 2 {
                yield_now();
            }
        }
        let mut sum = 0u64;
        for i in 0..SUM_N {
            // SAFETY: as above.
            sum += unsafe { values.add(i as usize).read_volatile() };
        }
        write_prefix();
        write(user_bytes!(b"sum of 1..="));
        write_number(SUM_N);
        write(user_bytes!(b" = "));
        write_number(sum);
        write(user_bytes!(b"\n"));
        exit(if sum == SUM_N * (SUM_N + 1) / 2 { 0 } else { 1 })
    }
}

/// Pages process 2 fills.
pub const PATTERN_PAGES: u64 = 16;

/// Words per page.
const WORDS: u64 = 512;

/// The word process 2 stores at `word` of `page`: different everywhere,
/// so a page mapped twice or zeroed late shows up.
#[inline(always)]
fn pattern(page: u64, word: u64) -> u64 {
    ((page << 32) | word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

user_entry! {
    /// Process 2: writes a pattern over PATTERN_PAGES pages from `mmap`
    /// (yielding halfway), then checks every word.
    pub fn patterner() -> ! {
        let base = mmap(PATTERN_PAGES * 4096);
        if base.is_null() {
            exit(2);
        }
        for page in 0..PATTERN_PAGES {
            for word in 0..WORDS {
                // SAFETY: `base` is PATTERN_PAGES pages the kernel reserved for us.
                unsafe { base.add((page * WORDS + word) as usize).write_volatile(pattern(page, word)) };
            }
            if page + 1 == PATTERN_PAGES / 2 {
                write_prefix();
                write(user_bytes!(b"wrote "));
                write_number(page + 1);
                write(user_bytes!(b" of "));
                write_number(PATTERN_PAGES);
                write(user_bytes!(b" pages, yielding\n"));
                yield_now();
            }
        }
        let mut mismatches = 0u64;
        for page in 0..PATTERN_PAGES {
            for word in 0..WORDS {
                // SAFETY: as above.
                let value = unsafe { base.add((page * WORDS + word) as usize).read_volatile() };
                if value != pattern(page, word) {
                    mismatches += 1;
                }
            }
        }
        write_prefix();
        write(user_bytes!(b"pattern over "));
        write_number(PATTERN_PAGES);
        write(user_bytes!(b" pages checked, "));
        write_number(mismatches);
        write(user_bytes!(b" mismatches\n"));
        exit(mismatches)
    }
}

/// What process 3 tries to read: the first page of the kernel's image.
pub const KERNEL_ADDRESS: u64 = parvus_guest_sdk::hypercall_abi::layout::GUEST_VIRT_BASE;

user_entry! {
    /// Process 3: reads kernel memory, which user mode does not map.
    pub fn kernel_reader() -> ! {
        write_prefix();
        write(user_bytes!(b"reading kernel memory at 0x400000\n"));
        // SAFETY: deliberately not a valid object: the read must fault (the
        // address is not mapped in user mode), and the kernel kills us.
        let value = unsafe { (KERNEL_ADDRESS as *const u64).read_volatile() };
        write_prefix();
        write(user_bytes!(b"ERROR: read kernel memory: "));
        write_number(value);
        write(user_bytes!(b"\n"));
        exit(1)
    }
}

user_entry! {
    /// Process 4: executes a privileged instruction.
    pub fn privileged() -> ! {
        write_prefix();
        write(user_bytes!(b"executing hlt\n"));
        // SAFETY: `hlt` in ring 3 raises #GP before doing anything; the
        // kernel kills us.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        write_prefix();
        write(user_bytes!(b"ERROR: hlt did not fault\n"));
        exit(1)
    }
}
