//! The panic handler: a panic in the shim is one more reason it cannot
//! boot the kernel.

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::console::fail(format_args!("panic: {}", info.message()))
}
