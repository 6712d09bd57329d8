//! One 8259A programmable interrupt controller.
//!
//! A PC has two, master (ports 0x20/0x21) and slave (0xa0/0xa1). A kernel
//! programs each with the initialization sequence ICW1..ICW4 (ICW2 sets the
//! vector of IRQ 0 of that chip), masks lines with the IMR, and ends every
//! interrupt with an EOI. The model keeps exactly the state that behaviour
//! needs: IRR (raised, not yet taken), ISR (taken, not yet ended) and IMR.
//! Lines are edge-triggered; priorities are fixed (IRQ 0 highest).

/// Where an initialization sequence is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Init {
    /// Initialized: data writes set the IMR.
    #[default]
    Ready,
    /// ICW2 (vector base) comes next.
    Icw2,
    /// ICW3 (cascade wiring) comes next.
    Icw3,
    /// ICW4 (mode) comes next.
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    init: Init,
    single: bool,
    needs_icw4: bool,
    auto_eoi: bool,
    vector_base: u8,
    /// Interrupt mask register: a set bit masks that line.
    pub imr: u8,
    /// Interrupt request register: lines raised and not yet acknowledged.
    pub irr: u8,
    /// In-service register: lines acknowledged and not yet ended.
    pub isr: u8,
    read_isr: bool,
}

impl Pic {
    /// A chip as firmware leaves it: every line masked, IRQ 0 at `vector_base`.
    pub fn new(vector_base: u8) -> Self {
        Pic {
            init: Init::Ready,
            single: false,
            needs_icw4: false,
            auto_eoi: false,
            vector_base,
            imr: 0xff,
            irr: 0,
            isr: 0,
            read_isr: false,
        }
    }

    /// The vector of IRQ 0 of this chip.
    pub fn vector_base(&self) -> u8 {
        self.vector_base
    }

    /// A write to the command port (ICW1, OCW2 or OCW3).
    pub fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1 starts a new initialization and clears the mask.
            self.init = Init::Icw2;
            self.single = value & 0x02 != 0;
            self.needs_icw4 = value & 0x01 != 0;
            self.imr = 0;
            self.isr = 0;
            self.irr = 0;
            self.read_isr = false;
        } else if value & 0x08 != 0 {
            // OCW3: which register a command-port read returns.
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
        } else {
            // OCW2: end of interrupt.
            match value >> 5 {
                0b001 => self.isr &= self.isr.wrapping_sub(1), // non-specific: clears the highest priority (lowest bit)
                0b011 => self.isr &= !(1 << (value & 7)),
                _ => {} // rotation commands: fixed priority only
            }
        }
    }

    /// A write to the data port (ICW2..ICW4 during initialization, else the IMR).
    pub fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.vector_base = value & 0xf8;
                match (self.single, self.needs_icw4) {
                    (false, _) => Init::Icw3,
                    (true, true) => Init::Icw4,
                    (true, false) => Init::Ready,
                }
            }
            Init::Icw3 if self.needs_icw4 => Init::Icw4,
            Init::Icw3 => Init::Ready,
            Init::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                Init::Ready
            }
        };
    }

    /// A read of the command port: the IRR or, after OCW3 asked, the ISR.
    pub fn read_command(&self) -> u8 {
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    /// A read of the data port: the IMR.
    pub fn read_data(&self) -> u8 {
        self.imr
    }

    /// An edge on line `irq` (0..8).
    pub fn raise(&mut self, irq: u8) {
        self.irr |= 1 << irq;
    }

    /// The line that would interrupt the CPU now, if any: the
    /// highest-priority unmasked request not blocked by one in service at
    /// the same or a higher priority.
    pub fn pending(&self) -> Option<u8> {
        if self.init != Init::Ready {
            return None;
        }
        let requests = self.irr & !self.imr;
        let irq = requests.trailing_zeros();
        if irq >= 8 {
            return None;
        }
        let blocking = self.isr & ((2u16 << irq) - 1) as u8;
        (blocking == 0).then_some(irq as u8)
    }

    /// The CPU takes line `irq`: request to in-service (none with auto-EOI).
    /// Returns its vector.
    pub fn acknowledge(&mut self, irq: u8) -> u8 {
        self.irr &= !(1 << irq);
        if !self.auto_eoi {
            self.isr |= 1 << irq;
        }
        self.vector_base + irq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remapped(base: u8) -> Pic {
        let mut p = Pic::new(8);
        p.write_command(0x11); // ICW1: edge, cascade, ICW4 follows
        p.write_data(base); // ICW2
        p.write_data(0x04); // ICW3
        p.write_data(0x01); // ICW4: 8086 mode
        p
    }

    #[test]
    fn initialization_sets_the_base_and_clears_the_mask() {
        let mut p = remapped(0x20);
        assert_eq!((p.vector_base(), p.imr), (0x20, 0));
        p.write_data(0xfe);
        assert_eq!(p.read_data(), 0xfe);
    }

    #[test]
    fn masked_lines_wait_and_in_service_lines_block_until_eoi() {
        let mut p = remapped(0x20);
        p.write_data(0xff);
        p.raise(0);
        assert_eq!(p.pending(), None);
        p.write_data(0xfe);
        assert_eq!(p.pending(), Some(0));
        assert_eq!(p.acknowledge(0), 0x20);
        p.raise(0);
        assert_eq!(p.pending(), None, "IRQ 0 is in service");
        p.write_command(0x0b); // OCW3: read ISR
        assert_eq!(p.read_command(), 1);
        p.write_command(0x20); // non-specific EOI
        assert_eq!(p.pending(), Some(0));
    }

    #[test]
    fn nothing_is_delivered_in_the_middle_of_initialization() {
        let mut p = Pic::new(8);
        p.write_command(0x11);
        p.raise(0);
        assert_eq!(p.pending(), None);
        p.write_data(0x20);
        p.write_data(0x04);
        p.write_data(0x01);
        assert_eq!(p.pending(), Some(0));
    }

    #[test]
    fn specific_eoi_ends_one_line() {
        let mut p = remapped(0x20);
        p.raise(3);
        p.acknowledge(3);
        p.raise(1);
        assert_eq!(p.pending(), Some(1), "a higher priority preempts");
        p.acknowledge(1);
        p.write_command(0x63); // specific EOI for IRQ 3
        assert_eq!(p.isr, 0b10);
    }
}
