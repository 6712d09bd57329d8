//! COM1, a 16550 UART, as far as a kernel's console driver needs it.
//!
//! A console driver writes the line-control, FIFO and modem registers once,
//! then for every byte polls the line-status register until the transmitter
//! is empty and writes the byte to the data register. The emulated UART is
//! always empty and never interrupts, so a byte written goes straight to
//! the domain's console line (`[name] text`), and no byte ever arrives.

/// Line status: transmit holding register empty and transmitter idle.
pub const LINE_STATUS_IDLE: u8 = 0x60;

/// The registers a driver may read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uart {
    interrupt_enable: u8,
    line_control: u8,
    modem_control: u8,
    scratch: u8,
    divisor: u16,
}

/// Line control bit 7: the first two registers are the baud divisor.
const DLAB: u8 = 0x80;

impl Uart {
    /// A write to register `offset` (0..8); returns the byte to print, if
    /// it was a write to the data register.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<u8> {
        let dlab = self.line_control & DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            0 => return Some(value),
            1 if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            1 => self.interrupt_enable = value & 0x0f,
            3 => self.line_control = value,
            4 => self.modem_control = value & 0x1f,
            7 => self.scratch = value,
            _ => {} // FIFO control, read-only status registers
        }
        None
    }

    /// A read of register `offset` (0..8).
    pub fn read(&self, offset: u16) -> u8 {
        let dlab = self.line_control & DLAB != 0;
        match offset {
            0 if dlab => self.divisor as u8,
            0 => 0, // nothing ever received
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.interrupt_enable,
            2 => 0x01, // no interrupt pending
            3 => self.line_control,
            4 => self.modem_control,
            5 => LINE_STATUS_IDLE,
            6 => 0xb0, // carrier, data set ready, clear to send
            _ => self.scratch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_bytes_come_out_unless_the_divisor_is_selected() {
        let mut u = Uart::default();
        assert_eq!(u.write(0, b'A'), Some(b'A'));
        u.write(3, 0x80);
        assert_eq!(u.write(0, 3), None);
        assert_eq!(u.write(1, 0), None);
        assert_eq!((u.read(0), u.read(1)), (3, 0));
        u.write(3, 0x03);
        assert_eq!(u.read(5) & 0x20, 0x20, "always ready to send");
        assert_eq!(u.read(3), 0x03);
    }
}
