//! The local APIC: its timer drives preemption and guest timers.
//!
//! Parvus uses the xAPIC MMIO registers (QEMU's TCG CPU has no x2APIC and
//! no TSC-deadline mode) through the physical map. The timer runs in
//! one-shot mode: every time the hypervisor returns to a guest (or goes
//! idle) it arms the timer for the nearest deadline, the end of the running
//! domain's slice or the earliest guest timer, so no tick fires that nobody
//! needs. Its rate is measured once against the PIT (see [`calibrate`]).

use super::paging::PHYSMAP_BASE;

/// Vector of the timer interrupt.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of spurious interrupts (must end in 0xf on old APICs).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const LAPIC_BASE: u64 = 0xfee0_0000;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_CURRENT_COUNT: u64 = 0x390;
const REG_DIVIDE: u64 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
/// Divide the bus clock by 16.
const DIVIDE_BY_16: u32 = 0b0011;

fn reg(offset: u64) -> *mut u32 {
    (PHYSMAP_BASE + LAPIC_BASE + offset) as *mut u32
}

fn write(offset: u64, value: u32) {
    // SAFETY: the local APIC's registers are at LAPIC_BASE, mapped by the
    // physical map (which covers the first 4 GiB); only this module
    // touches them, with 32-bit accesses as the APIC requires.
    unsafe { reg(offset).write_volatile(value) }
}

fn read(offset: u64) -> u32 {
    // SAFETY: as for `write`.
    unsafe { reg(offset).read_volatile() }
}

/// Enables the APIC with the timer masked.
pub fn init() {
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
}

/// Measures the TSC and the APIC timer against the PIT over about 10 ms.
/// Returns (TSC ticks per second, APIC timer ticks per second).
pub fn calibrate() -> (u64, u64) {
    const PIT_TICKS: u16 = 11_932; // 10 ms at 1.193182 MHz
    write(REG_INITIAL_COUNT, u32::MAX);
    let sample = || (super::cpu::rdtsc(), read(REG_CURRENT_COUNT));
    let ((tsc0, apic0), (tsc1, apic1)) = super::pit::measure(PIT_TICKS, sample);
    write(REG_INITIAL_COUNT, 0);
    let scale = |ticks: u64| ticks * super::pit::PIT_HZ / u64::from(PIT_TICKS);
    (scale(tsc1 - tsc0), scale(u64::from(apic0 - apic1)))
}

/// Arms the one-shot timer to fire after `ticks` APIC ticks (0 stops it).
pub fn arm(ticks: u32) {
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    write(REG_INITIAL_COUNT, ticks);
}

/// Signals the end of an interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}
