//! How a guest starts: from the hypervisor's first `iretq` to `main`.
//!
//! The hypervisor enters the guest at the ELF entry point `_start` in ring
//! 3, with `rdi` holding the address of the [`StartInfo`] page, `rsp` at the
//! top of the initial stack, and every other register zero. `_start` (a few
//! instructions of assembly, because no Rust may run before they are done):
//!
//! 1. puts the x87 and SSE units in their default state (`fninit`, and
//!    `ldmxcsr` with [`MXCSR_DEFAULT`]: all exceptions masked, round to
//!    nearest), because compiled Rust uses SSE registers freely;
//! 2. zeroes `.bss` (between `__bss_start` and `__bss_end`, defined by
//!    `guest.ld`), which Rust statics rely on;
//! 3. aligns the stack to 16 bytes as the System V ABI requires at a call,
//!    and calls `rust_start`.
//!
//! `rust_start` checks the start-info page, sets up the console ring and the
//! heap, and calls the guest's `main` (registered with [`entry!`](crate::entry!)); the
//! status `main` returns is passed to the `exit` hypercall.

use hypercall_abi::StartInfo;

use crate::console::{self, HypercallWriter};
use crate::{heap, hypercall, start_info, status};

/// The power-on value of `mxcsr`: every SSE exception masked, round to
/// nearest, no flush-to-zero.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    // Keep the start-info address; `rep stosb` below needs rdi.
    "mov r12, rdi",
    "fninit",
    "push {mxcsr}",
    "ldmxcsr [rsp]",
    "add rsp, 8",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "cld",
    "rep stosb",
    "mov rdi, r12",
    "and rsp, -16",
    "xor ebp, ebp",
    "call {rust_start}",
    // `rust_start` never returns; trap if it somehow did.
    "ud2",
    ".size _start, . - _start",
    ".popsection",
    mxcsr = const MXCSR_DEFAULT,
    rust_start = sym rust_start,
);

extern "C" {
    /// Defined by the guest's [`entry!`] invocation.
    fn __parvus_guest_main(start: &'static StartInfo) -> u64;
}

/// The Rust half of the entry code, called by `_start` only.
///
/// # Safety
///
/// `start` is the value the hypervisor put in `rdi`: the address of this
/// domain's start-info page, mapped for the domain's whole life. (The page
/// is a `StartInfo` for any content, since every field is an integer or a
/// byte array; the magic and version are checked before anything else.)
unsafe extern "C" fn rust_start(start: *const StartInfo) -> ! {
    let addr = start as u64;
    if start.is_null() || !start.is_aligned() {
        fail(start_info::StartInfoError::BadPointer(addr));
    }
    // SAFETY: non-null and aligned (checked above), and mapped for the
    // domain's life (the hypervisor's entry contract, this function's Safety
    // section); no guest code writes the page, so a shared `'static`
    // reference is sound.
    let info: &'static StartInfo = unsafe { &*start };
    if let Err(error) = start_info::install(info) {
        fail(error);
    }
    console::init(info);
    heap::init(info);
    // SAFETY: `entry!` defines `__parvus_guest_main` with exactly this
    // signature; a guest without `entry!` fails to link, never gets here.
    let exit_status = unsafe { __parvus_guest_main(info) };
    hypercall::exit(exit_status)
}

/// Reports a start-info problem (the ring is not set up yet, so through the
/// hypercall) and exits without calling `main`.
fn fail(error: start_info::StartInfoError) -> ! {
    use core::fmt::Write;
    let _ = writeln!(HypercallWriter, "parvus-guest-sdk: cannot start: {error}");
    hypercall::exit(status::BAD_START_INFO)
}

/// Declares the guest's `main` function.
///
/// `main` receives the domain's [`StartInfo`] and returns its exit status
/// (`0` for success, see [`status`](crate::status)), which the SDK passes to
/// the `exit` hypercall. By the time `main` runs, `print!`/`println!`, the
/// heap and [`start_info()`](crate::start_info()) all work.
///
/// ```ignore
/// parvus_guest_sdk::entry!(main);
///
/// fn main(start: &'static parvus_guest_sdk::StartInfo) -> u64 {
///     0
/// }
/// ```
///
/// The macro defines one function with a fixed symbol name that the SDK's
/// entry code calls; using it twice is a duplicate-symbol link error, and
/// forgetting it an undefined-symbol one.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The guest's `main`, as the SDK's entry code calls it.
        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn __parvus_guest_main(start: &'static $crate::StartInfo) -> u64 {
            // Check the signature here, where a mismatch is a clear type error.
            let main: fn(&'static $crate::StartInfo) -> u64 = $main;
            main(start)
        }
    };
}
