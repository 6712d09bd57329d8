//! The 8254 programmable interval timer, channel 0: the periodic tick.
//!
//! The PIT counts down from a reload value at a fixed
//! [`PIT_HZ`] (1.193182 MHz) on every PC.
//! In mode 2 (rate generator) it pulses its output, IRQ 0, each time the
//! count reaches 1 and starts again from the reload value: a periodic
//! interrupt at `PIT_HZ / reload` Hz, with nothing to re-arm in the handler.
//! The IRQ goes through the PIC ([`crate::pic`]), which must unmask it.

use hypercall_abi::bare_metal::port::{PIT_CHANNEL0, PIT_COMMAND};
use hypercall_abi::bare_metal::PIT_HZ;

use crate::cpu::outb;

/// Command byte: channel 0, access low byte then high byte, mode 2 (rate
/// generator), binary counting.
const CHANNEL0_LOHI_RATE_GENERATOR: u8 = 0x34;

/// The reload value for `hz` ticks a second: `PIT_HZ / hz`, kept within
/// what the 16-bit counter can do in mode 2 (2 to 65535).
pub fn reload_for(hz: u32) -> u16 {
    let reload = PIT_HZ / u64::from(hz.max(1));
    reload.clamp(2, u64::from(u16::MAX)) as u16
}

/// Starts channel 0 ticking about `hz` times a second; returns the reload
/// value used (the exact rate is `PIT_HZ / reload`).
pub fn start_periodic(hz: u32) -> u16 {
    let reload = reload_for(hz);
    // SAFETY: the PIT's ports belong to this module; the command and the two
    // bytes of the reload value are the documented way to program channel 0,
    // whose IRQ stays masked at the PIC until the kernel unmasks it.
    unsafe {
        outb(PIT_COMMAND, CHANNEL0_LOHI_RATE_GENERATOR);
        outb(PIT_CHANNEL0, reload as u8);
        outb(PIT_CHANNEL0, (reload >> 8) as u8);
    }
    reload
}
