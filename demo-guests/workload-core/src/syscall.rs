//! The workload kernel's system calls: one table shared by the kernel and
//! the user programs.
//!
//! Convention: the number in `rax`, arguments in `rdi`, `rsi`, `rdx`; the
//! result comes back in `rax`; `rcx` and `r11` are destroyed (the
//! `syscall` instruction uses them), every other register is kept. A call
//! the kernel refuses returns [`ERROR`].

/// What a refused call returns.
pub const ERROR: u64 = u64::MAX;

/// `getpid()`: the caller's process id (1, 2, ... in each operation).
pub const GETPID: u64 = 0;
/// `exit(status)`: ends the caller; its parent's `wait` gets `status`.
pub const EXIT: u64 = 1;
/// `yield()`: lets the next runnable process run; returns 0.
pub const YIELD: u64 = 2;
/// `fork()`: a child with a copy of the caller's memory and registers;
/// returns the child's id to the parent and 0 to the child.
pub const FORK: u64 = 3;
/// `wait()`: waits for a child to exit and returns its status
/// ([`ERROR`] if the caller has no child).
pub const WAIT: u64 = 4;
/// `mmap(pages)`: reserves `pages` pages of zero-filled memory, each
/// allocated on its first touch; returns the address (0 if refused).
pub const MMAP: u64 = 5;
/// `munmap(address, pages)`: gives back exactly one earlier `mmap`;
/// returns 0.
pub const MUNMAP: u64 = 6;
/// `report(result, ticks)`: the caller's result for the operation and the
/// time-stamp ticks its measured loop took; returns 0.
pub const REPORT: u64 = 7;
