//! Exit statuses the runtime itself uses (a kernel's `main` may return any
//! other value).
//!
//! Natively the status is written to QEMU's `isa-debug-exit` port, and
//! QEMU exits with `(status << 1) | 1`; under the hypervisor it becomes the
//! domain's exit status.

/// `main` succeeded.
pub const SUCCESS: u8 = 0;
/// An exception without a handler (the runtime printed a report).
pub const EXCEPTION: u8 = 2;
/// The loader's [`BootInfo`](crate::BootInfo) was missing or wrong.
pub const BAD_BOOT_INFO: u8 = 3;
/// The kernel panicked.
pub const PANIC: u8 = 101;
