//! Leaving QEMU: the `isa-debug-exit` device turns a code into QEMU's exit status.

use x86_64::instructions::port::Port;

/// Port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the hypervisor reports when it stops. QEMU exits with `(code << 1) | 1`.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum ExitCode {
    /// Every domain ended as its manifest expected (QEMU status 1).
    AllAsExpected = 0,
    /// Some domain did not end as expected, or the bundle was rejected (QEMU status 3).
    NotAsExpected = 1,
    /// The hypervisor itself panicked or faulted (QEMU status 5).
    HypervisorFailure = 2,
}

/// Stops the machine with `code`. If the debug-exit device is absent, halts forever.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: writing the debug-exit port ends QEMU; without the device the
    // write is ignored and we halt below.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
