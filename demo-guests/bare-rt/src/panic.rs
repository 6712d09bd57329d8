//! The panic handler: say why, then end the kernel.
//!
//! Kernels are built with `panic = "abort"`: there is no unwinding, so a
//! panic is the end. The message goes to COM1 as `panic: <message> at
//! <file>:<line>` (a line the test runner treats as an alarm), and the
//! kernel exits with [`status::PANIC`].

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{exit, println, status};

/// Set by the first panic: a panic while printing a panic exits at once
/// instead of recursing.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        exit(status::PANIC);
    }
    match info.location() {
        Some(location) => println!("panic: {} at {}:{}", info.message(), location.file(), location.line()),
        None => println!("panic: {}", info.message()),
    }
    exit(status::PANIC)
}
