//! The system calls `minikernel` gives its processes: the number goes in
//! `rax`, arguments in `rdi`, `rsi`, `rdx`, the result comes back in `rax`
//! (`u64::MAX` for a refused call, 0 for a refused `mmap`).

/// `write(buf, len)`: prints `len` bytes (at most 4096); returns `len`.
pub const WRITE: u64 = 1;
/// `getpid()`: the process's id (1, 2, ...).
pub const GETPID: u64 = 2;
/// `yield()`: lets the next process run; returns 0.
pub const YIELD: u64 = 3;
/// `exit(status)`: ends the process.
pub const EXIT: u64 = 4;
/// `mmap(len)`: reserves `len` bytes of zero-filled memory, mapped page by
/// page on first touch; returns its address (0 if refused).
pub const MMAP: u64 = 5;
