//! The panic handler: say where and why, then end the domain.
//!
//! Guests are built with `panic = "abort"`: there is no unwinding, so a
//! panic is the end of the domain. The message goes to the console as
//! `panicked at <file>:<line>: <message>` (the hypervisor prefixes the
//! domain's name), and the domain exits with [`status::PANIC`], which the
//! hypervisor's summary reports as a failure unless the manifest expects it.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::console::print_for_panic;
use crate::{hypercall, status};

/// Set by the first panic. A panic while printing a panic must not recurse
/// forever; it exits at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        hypercall::exit(status::PANIC);
    }
    match info.location() {
        Some(location) => print_for_panic(format_args!(
            "panicked at {}:{}: {}\n",
            location.file(),
            location.line(),
            info.message()
        )),
        None => print_for_panic(format_args!("panicked: {}\n", info.message())),
    }
    hypercall::exit(status::PANIC)
}

/// The prebuilt `alloc` is compiled for unwinding: its landing pads
/// (dropping a half-built collection when a panic passes through) end in a
/// call to this. Guests use `panic = "abort"`, so no panic ever passes
/// through and it is never called; if it somehow were, ending the domain is
/// the only safe thing to do. (`rust_eh_personality`, which `core` names,
/// is in `parvus-intrinsics` with `memcpy`.)
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    hypercall::exit(status::PANIC)
}
