//! `pit-ticker`: an unmodified kernel's timer, natively and emulated.
//!
//! The idea shown: a PC kernel gets its clock tick by programming two
//! chips through I/O ports, the 8254 PIT (channel 0, a rate generator at
//! 100 Hz) and the 8259 PIC (IRQ 0 remapped to vector 0x20, unmasked), and
//! then sleeps in `sti; hlt` until each interrupt arrives through its own
//! IDT. Under trap-and-emulate every one of those steps is the
//! hypervisor's: the port writes are emulated devices, the PIT's period
//! becomes a deadline of the hypervisor's own timer, `hlt` blocks the
//! domain, and the tick is injected through the guest's IDT when its
//! virtual IF allows.
//!
//! The kernel takes ten ticks, stamping each with `rdtsc`, and checks every
//! interval against 10 ms. Under QEMU's `-icount shift=0` (every Parvus
//! run) the TSC counts one tick per nanosecond, so 10 ms is 10,000,000 TSC
//! ticks; the check allows 10%.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use bare_rt::idt;
use bare_rt::{cpu, pic, pit, println, BootInfo};
use x86_64::PrivilegeLevel;

bare_rt::entry!(main);

/// Ticks to take.
const TICKS: usize = 10;
/// The tick rate asked of the PIT.
const HZ: u32 = 100;
/// One period in TSC ticks (1 GHz under `-icount shift=0`).
const PERIOD_TSC: u64 = 1_000_000_000 / HZ as u64;

/// Ticks taken so far.
static TAKEN: AtomicU64 = AtomicU64::new(0);
/// `rdtsc` at the start and at each tick.
static STAMPS: [AtomicU64; TICKS + 1] = [const { AtomicU64::new(0) }; TICKS + 1];

/// IRQ 0: stamp the tick and end the interrupt at the PIC.
fn on_tick(_frame: &mut bare_rt::trap::TrapFrame) {
    let n = TAKEN.fetch_add(1, Ordering::Relaxed) as usize + 1;
    if n <= TICKS {
        STAMPS[n].store(cpu::rdtsc(), Ordering::Relaxed);
    }
    pic::eoi(pic::IRQ_TIMER);
}

fn main(boot: &'static BootInfo) -> u8 {
    let loader = core::str::from_utf8(boot.loader_name()).unwrap_or("?");
    println!("pit-ticker: loaded by {loader}");
    idt::set_handler(pic::IRQ_BASE + pic::IRQ_TIMER, on_tick, PrivilegeLevel::Ring0);
    let reload = pit::start_periodic(HZ);
    STAMPS[0].store(cpu::rdtsc(), Ordering::Relaxed);
    pic::unmask(pic::IRQ_TIMER);
    println!("pit-ticker: PIT channel 0 at {HZ} Hz (reload {reload}), IRQ 0 at vector {:#x}", pic::IRQ_BASE);
    while (TAKEN.load(Ordering::Relaxed) as usize) < TICKS {
        cpu::idle(); // sti; hlt; cli
    }
    pic::mask(pic::IRQ_TIMER);
    let mut good = 0;
    for i in 1..=TICKS {
        let interval = STAMPS[i].load(Ordering::Relaxed) - STAMPS[i - 1].load(Ordering::Relaxed);
        // The first interval starts before the PIC is unmasked: at most a period.
        let ok = interval.abs_diff(PERIOD_TSC) <= PERIOD_TSC / 10 || (i == 1 && interval <= PERIOD_TSC + PERIOD_TSC / 10);
        if ok {
            good += 1;
        } else {
            println!("pit-ticker: tick {i} came after {interval} TSC ticks, not about {PERIOD_TSC}");
        }
    }
    println!("pit-ticker: {good} of {TICKS} ticks on time (10 ms apart, within 10%)");
    if good == TICKS {
        0
    } else {
        1
    }
}
