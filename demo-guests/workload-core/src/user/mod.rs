//! The user programs: one per operation, run as user processes.
//!
//! They are part of the kernel image but live in their own linker
//! sections, `.user_text` and `.user_rodata` (both linker scripts keep
//! them page-aligned between `__user_*_start` and `__user_*_end`), and
//! each build maps exactly those pages into user mode, read-only, at the
//! addresses they were linked at. User mode sees nothing else of the
//! image, so a program may not call anything outside its section: it is
//! written with `#[inline(always)]` helpers only ([`sys`] and
//! [`work`](crate::work)), without panics (no slice indexing, no
//! division by a variable) and without `core::fmt`. `objdump -d -j
//! .user_text` on a build must show no `call` or `jmp` out of the section
//! and no `rip`-relative operand outside the user sections.

pub mod programs;
#[allow(unsafe_code)]
pub mod sys;

/// Exit statuses of a user program that gave up (0 is success; a `fork`
/// child's status is its computed value instead).
pub mod status {
    /// `mmap` refused.
    pub const NO_MEMORY: u64 = 0xdead_0001;
    /// `fork` refused.
    pub const FORK_FAILED: u64 = 0xdead_0002;
    /// `munmap` refused.
    pub const MUNMAP_FAILED: u64 = 0xdead_0003;
    /// A `Region` index was out of bounds.
    pub const OUT_OF_BOUNDS: u64 = 0xdead_0004;
}

/// The signature of a user program's entry: two arguments (`rdi`, `rsi`),
/// and it ends with `exit`.
pub type Entry = extern "C" fn(u64, u64) -> !;

/// Defines a user program: an `extern "C" fn(u64, u64) -> !` placed in
/// `.user_text`. The body goes into an inner `#[inline(always)]` function
/// under `deny(unsafe_code)`: only the section attribute (which the
/// `unsafe_code` lint counts as unsafe) is allowed.
macro_rules! user_program {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($a:ident: u64, $b:ident: u64) -> ! $body:block) => {
        $(#[$attr])*
        #[allow(unsafe_code)]
        #[link_section = ".user_text"]
        #[inline(never)]
        $vis extern "C" fn $name($a: u64, $b: u64) -> ! {
            #[deny(unsafe_code)]
            #[inline(always)]
            fn body($a: u64, $b: u64) -> ! $body
            body($a, $b)
        }
    };
}
pub(crate) use user_program;
