//! The 16550 UART on COM1: the hypervisor's console.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// Line-status register bit: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 0x20;

/// COM1, polled (no interrupts).
pub struct Serial;

impl Serial {
    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init() {
        for (offset, value) in [(1u16, 0x00u8), (3, 0x80), (0, 0x01), (1, 0x00), (3, 0x03), (2, 0xc7), (4, 0x03)] {
            // SAFETY: COM1's registers are owned by this driver; writing them
            // only reprograms the UART.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn write_byte(byte: u8) {
        let mut lsr = Port::<u8>::new(COM1 + 5);
        let mut thr = Port::<u8>::new(COM1);
        // SAFETY: reading the line-status register has no side effect and
        // writing the transmit register sends a byte; both belong to COM1.
        unsafe {
            while lsr.read() & LSR_THR_EMPTY == 0 {}
            thr.write(byte);
        }
    }
}

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Serial::write_byte(b'\r');
            }
            Serial::write_byte(b);
        }
        Ok(())
    }
}
