//! The PC devices an emulated kernel drives through I/O ports.
//!
//! Every `in` and `out` of a ring-3 guest faults (the TSS has no I/O
//! permission bitmap), so each port access is an exit that ends here.
//! Exactly the devices of the bare-metal contract are modelled
//! ([`hypercall_abi::bare_metal::port`]): COM1, the two 8259 PICs, PIT
//! channel 0 and QEMU's debug-exit port. A read of any other port returns
//! all ones (nothing answers on an ISA bus), a write is dropped; both are
//! counted.

pub mod pic;
pub mod pit;
pub mod uart;

use hypercall_abi::bare_metal::port;
use pic::Pic;
use pit::Pit;
use uart::Uart;

/// What a port write asks of the hypervisor besides the device's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWrite {
    /// Nothing more.
    Done,
    /// A byte for the domain's console.
    Console(u8),
    /// The PIT's deadline changed: re-arm the platform timer.
    TimerChanged,
    /// The debug-exit port: the domain ends with this status.
    Exit(u8),
}

/// The devices of one emulated domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Devices {
    /// COM1.
    pub uart: Uart,
    /// The master PIC (IRQ 0..7).
    pub pic: Pic,
    /// The slave PIC (IRQ 8..15; none of its lines is ever raised).
    pub pic_slave: Pic,
    /// PIT channel 0, wired to IRQ 0.
    pub pit: Pit,
    /// Accesses to ports no device answers.
    pub unclaimed: u64,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            uart: Uart::default(),
            pic: Pic::new(0x08),
            pic_slave: Pic::new(0x70),
            pit: Pit::default(),
            unclaimed: 0,
        }
    }
}

impl Devices {
    /// `in al, port` at system time `now_ns`.
    pub fn read(&mut self, p: u16, now_ns: u64) -> u8 {
        match p {
            port::COM1..=0x3ff => self.uart.read(p - port::COM1),
            port::PIC1_COMMAND => self.pic.read_command(),
            port::PIC1_DATA => self.pic.read_data(),
            port::PIC2_COMMAND => self.pic_slave.read_command(),
            port::PIC2_DATA => self.pic_slave.read_data(),
            port::PIT_CHANNEL0 => self.pit.read_data(now_ns),
            _ => {
                self.unclaimed += 1;
                0xff
            }
        }
    }

    /// `out port, al` at system time `now_ns`.
    pub fn write(&mut self, p: u16, value: u8, now_ns: u64) -> PortWrite {
        let timer = |changed: bool| if changed { PortWrite::TimerChanged } else { PortWrite::Done };
        match p {
            port::COM1..=0x3ff => return self.uart.write(p - port::COM1, value).map_or(PortWrite::Done, PortWrite::Console),
            port::PIC1_COMMAND => self.pic.write_command(value),
            port::PIC1_DATA => self.pic.write_data(value),
            port::PIC2_COMMAND => self.pic_slave.write_command(value),
            port::PIC2_DATA => self.pic_slave.write_data(value),
            port::PIT_COMMAND => return timer(self.pit.write_command(value, now_ns)),
            port::PIT_CHANNEL0 => return timer(self.pit.write_data(value, now_ns)),
            port::DEBUG_EXIT => return PortWrite::Exit(value),
            _ => self.unclaimed += 1,
        }
        PortWrite::Done
    }

    /// Raises IRQ 0 if the PIT is due at `now_ns`; returns whether it did.
    pub fn tick(&mut self, now_ns: u64) -> bool {
        let due = self.pit.expire(now_ns);
        if due {
            if self.pic.irr & 1 != 0 {
                self.pit.missed += 1; // the last tick was never taken
            }
            self.pic.raise(0);
        }
        due
    }

    /// Whether a PIT tick (IRQ 0) would interrupt the CPU now: the PIC is
    /// initialized, the line unmasked and not in service (nothing has a
    /// higher priority). If not, a tick cannot wake a halted kernel.
    pub fn tick_would_interrupt(&self) -> bool {
        let mut pic = self.pic.clone();
        pic.raise(0);
        pic.pending() == Some(0)
    }

    /// The vector the PIC would deliver now, if any, without taking it.
    pub fn pending_vector(&self) -> Option<u8> {
        self.pic.pending().map(|irq| self.pic.vector_base() + irq)
    }

    /// Takes the pending interrupt (the CPU's acknowledge cycle); returns its vector.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let irq = self.pic.pending()?;
        Some(self.pic.acknowledge(irq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_setting_up_its_timer_gets_vector_0x20_every_period() {
        let mut d = Devices::default();
        for (p, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0xa0, 0x11), (0xa1, 0x28), (0xa1, 0x02), (0xa1, 0x01)] {
            assert_eq!(d.write(p, v, 0), PortWrite::Done);
        }
        d.write(0x21, 0xfe, 0);
        assert_eq!(d.write(0x43, 0x34, 0), PortWrite::Done);
        assert_eq!(d.write(0x40, 0x9b, 0), PortWrite::Done);
        assert_eq!(d.write(0x40, 0x2e, 0), PortWrite::TimerChanged); // 11931: 100 Hz
        let period = d.pit.period_ns();
        assert!(!d.tick(period - 1));
        assert!(d.tick(period));
        assert_eq!(d.pending_vector(), Some(0x20));
        assert_eq!(d.acknowledge(), Some(0x20));
        assert_eq!(d.pending_vector(), None);
        d.write(0x20, 0x20, 0);
        assert!(d.tick(2 * period));
        assert_eq!(d.acknowledge(), Some(0x20));
    }

    #[test]
    fn console_exit_and_unclaimed_ports() {
        let mut d = Devices::default();
        assert_eq!(d.write(0x3f8, b'x', 0), PortWrite::Console(b'x'));
        assert_eq!(d.read(0x3fd, 0) & 0x20, 0x20);
        assert_eq!(d.write(0xf4, 7, 0), PortWrite::Exit(7));
        assert_eq!(d.read(0x60, 0), 0xff);
        assert_eq!(d.write(0x80, 0, 0), PortWrite::Done);
        assert_eq!(d.unclaimed, 2);
    }
}
