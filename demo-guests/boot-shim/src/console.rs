//! COM1 output for the shim's error line, and the way out through QEMU's
//! `isa-debug-exit`.
//!
//! The shim prints nothing when all goes well (the serial log is the
//! kernel's); it speaks only to say why it cannot start a kernel, in one
//! line that begins with `boot-shim: error:`, which the test runner treats
//! as an alarm.

use core::arch::asm;
use core::fmt;

use hypercall_abi::bare_metal::port::{COM1, COM1_LINE_STATUS, DEBUG_EXIT};

/// Line-status register bit: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 0x20;

/// Exit status when the shim cannot start the kernel.
pub const STATUS_CANNOT_BOOT: u8 = 3;

fn outb(port: u16, value: u8) {
    // SAFETY: the shim owns the machine; its only ports are COM1 and the
    // debug exit, whose writes print a byte or stop QEMU.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading COM1's line-status register has no side effect.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Programs COM1: 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    for (offset, value) in [(1u16, 0x00u8), (3, 0x80), (0, 0x01), (1, 0x00), (3, 0x03), (2, 0xc7), (4, 0x03)] {
        outb(COM1 + offset, value);
    }
}

/// `core::fmt` output to COM1, polled.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            while inb(COM1_LINE_STATUS) & LSR_THR_EMPTY == 0 {}
            outb(COM1, byte);
        }
        Ok(())
    }
}

/// Prints `boot-shim: error: <what>` and stops QEMU with
/// [`STATUS_CANNOT_BOOT`].
pub fn fail(what: impl fmt::Display) -> ! {
    let _ = fmt::Write::write_fmt(&mut Serial, format_args!("boot-shim: error: {what}\n"));
    exit(STATUS_CANNOT_BOOT)
}

/// Stops QEMU with `status` (QEMU exits with `(status << 1) | 1`).
pub fn exit(status: u8) -> ! {
    outb(DEBUG_EXIT, status);
    loop {
        // SAFETY: halting with interrupts off only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
