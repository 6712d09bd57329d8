//! Exit statuses with a fixed meaning.
//!
//! A guest's `main` returns its exit status, which the SDK passes to the
//! `exit` hypercall; the hypervisor's summary prints it and compares it with
//! the manifest's `expect`. The SDK itself exits with the values below, so
//! they are worth avoiding for a guest's own failures.

/// Everything went as planned.
pub const SUCCESS: u64 = 0;

/// The guest panicked (the panic handler printed where and why). The same
/// number Rust's standard library uses for a panicking process.
pub const PANIC: u64 = 101;

/// The start-info page was missing, not a start-info page, or written by a
/// hypervisor of another ABI version; `main` was not called.
pub const BAD_START_INFO: u64 = 102;
