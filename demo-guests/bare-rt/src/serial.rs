//! COM1, a 16550 UART, polled: the kernel's console, and `print!`/`println!`.
//!
//! The UART is programmed once (115200 baud, 8 data bits, no parity, one
//! stop bit, FIFOs on, its interrupts off), then every byte is sent the
//! simplest way: wait until the line-status register says the transmitter
//! has room, then write the byte. No interrupt, no buffer, no lock: the
//! kernel runs on one CPU with interrupts off, so two writers can never
//! interleave within a byte, and a panic can always print.
//!
//! Under trap-and-emulate each of those port accesses is an `in` or `out`
//! that faults and is emulated, so a printed line costs a few exits per
//! byte; that is part of what the comparison measures.

use core::fmt;

use hypercall_abi::bare_metal::port::{COM1, COM1_LINE_STATUS};

use crate::cpu::{inb, outb};

/// Line-status register bit: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 0x20;

/// Programs COM1 (called by the runtime before `main`).
pub fn init() {
    let settings: [(u16, u8); 7] = [
        (1, 0x00), // interrupt enable: none
        (3, 0x80), // line control: DLAB on, to reach the divisor
        (0, 0x01), // divisor low: 115200 / 1
        (1, 0x00), // divisor high
        (3, 0x03), // line control: DLAB off, 8N1
        (2, 0xc7), // FIFO control: enable, clear both, 14-byte threshold
        (4, 0x03), // modem control: DTR, RTS
    ];
    for (offset, value) in settings {
        // SAFETY: COM1's registers belong to this module; the writes only
        // reprogram the UART, with its interrupts off.
        unsafe { outb(COM1 + offset, value) };
    }
}

/// Sends one byte, waiting for room in the transmitter.
pub fn write_byte(byte: u8) {
    // SAFETY: reading the line-status register has no side effect, and
    // writing the data register sends a byte; both belong to this module.
    unsafe {
        while inb(COM1_LINE_STATUS) & LSR_THR_EMPTY == 0 {}
        outb(COM1, byte);
    }
}

/// A handle for `core::fmt` output to COM1 (it has no state).
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(write_byte);
        Ok(())
    }
}

/// Used by [`print!`](crate::print) and [`println!`](crate::println).
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Serial output cannot fail.
    let _ = fmt::Write::write_fmt(&mut Serial, args);
}

/// Prints to COM1, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!($($arg)*))
    };
}

/// Prints a line to COM1, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::serial::_print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
