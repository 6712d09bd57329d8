//! The 8254 programmable interval timer, used once: to measure how fast
//! the TSC and the local APIC timer tick.
//!
//! Channel 0 is put in mode 0 (count down once, no reload) and polled
//! through the latch command; its input runs at a fixed 1.193182 MHz on
//! every PC, which makes it the one clock whose rate we know. Its IRQ line
//! stays masked at the 8259 (see [`super::pic`]).

use x86_64::instructions::port::Port;

/// The PIT's input frequency in Hz.
pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL0: u16 = 0x40;
const COMMAND: u16 = 0x43;

/// Counts down `ticks` PIT ticks (at most 65535) while calling `sample`
/// at the start and at the end; returns (start sample, end sample).
pub fn measure<T>(ticks: u16, mut sample: impl FnMut() -> T) -> (T, T) {
    // SAFETY: the PIT's ports belong to this module; mode 0 on channel 0 only
    // raises IRQ 0, which is masked at the PIC.
    unsafe {
        Port::<u8>::new(COMMAND).write(0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
        Port::<u8>::new(CHANNEL0).write(ticks as u8);
        Port::<u8>::new(CHANNEL0).write((ticks >> 8) as u8);
    }
    let start = sample();
    let mut last = ticks;
    loop {
        let now = read_count();
        // Mode 0 counts down to 0 and then wraps to 0xffff: stop at either.
        if now == 0 || now > last {
            break;
        }
        last = now;
    }
    (start, sample())
}

fn read_count() -> u16 {
    // SAFETY: the latch command freezes channel 0's count for the two reads
    // that follow; nothing else uses the PIT.
    unsafe {
        Port::<u8>::new(COMMAND).write(0b0000_0000); // latch channel 0
        let low = Port::<u8>::new(CHANNEL0).read();
        let high = Port::<u8>::new(CHANNEL0).read();
        u16::from(low) | (u16::from(high) << 8)
    }
}
