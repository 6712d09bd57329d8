//! The 8259 programmable interrupt controllers (a master and a slave).
//!
//! The PC's 16 legacy IRQ lines reach the CPU through two cascaded 8259s:
//! IRQ 0-7 on the master, IRQ 8-15 on the slave, which signals through the
//! master's IRQ 2. After reset they deliver IRQ 0-7 on vectors 8-15, the
//! CPU's exception vectors, so the first thing a kernel does is *remap*
//! them: [`init`] moves them to [`IRQ_BASE`] (0x20-0x27) and 0x28-0x2f, and
//! masks every line. A kernel then [`unmask`]s the lines it handles, and
//! every handler of an IRQ ends with [`eoi`], without which the PIC never
//! delivers that line (or any of lower priority) again.
//!
//! The masks are kept in a copy here, so that changing one line never
//! needs to read the mask register (one emulated `in` fewer under
//! trap-and-emulate).

use core::sync::atomic::{AtomicU16, Ordering};

use hypercall_abi::bare_metal::port::{PIC1_COMMAND, PIC1_DATA, PIC2_COMMAND, PIC2_DATA};

use crate::cpu::outb;

/// The vector of IRQ 0; IRQ `n` arrives on `IRQ_BASE + n`.
pub const IRQ_BASE: u8 = 0x20;
/// The IRQ of the PIT's channel 0.
pub const IRQ_TIMER: u8 = 0;
/// The master's line the slave is wired to.
const CASCADE_IRQ: u8 = 2;

/// ICW1: initialisation, ICW4 follows (edge-triggered, cascaded).
const ICW1_INIT_WITH_ICW4: u8 = 0x11;
/// ICW4: 8086 mode, normal (not automatic) end of interrupt.
const ICW4_8086: u8 = 0x01;
/// OCW2: non-specific end of interrupt.
const OCW2_EOI: u8 = 0x20;

/// The masks of both PICs (bit `n` set: IRQ `n` masked).
static MASK: AtomicU16 = AtomicU16::new(0xffff);

/// Remaps IRQ 0-15 to vectors 0x20-0x2f and masks them all (called by the
/// runtime before `main`).
pub fn init() {
    let writes: [(u16, u8); 10] = [
        (PIC1_COMMAND, ICW1_INIT_WITH_ICW4),
        (PIC2_COMMAND, ICW1_INIT_WITH_ICW4),
        (PIC1_DATA, IRQ_BASE),           // ICW2: the master's first vector
        (PIC2_DATA, IRQ_BASE + 8),       // ICW2: the slave's first vector
        (PIC1_DATA, 1 << CASCADE_IRQ),   // ICW3: the master has a slave on IRQ 2
        (PIC2_DATA, CASCADE_IRQ),        // ICW3: the slave's cascade identity
        (PIC1_DATA, ICW4_8086),
        (PIC2_DATA, ICW4_8086),
        (PIC1_DATA, 0xff),               // OCW1: mask everything
        (PIC2_DATA, 0xff),
    ];
    for (port, value) in writes {
        // SAFETY: the PIC ports belong to this module; the sequence is the
        // documented initialisation and leaves every line masked.
        unsafe { outb(port, value) };
    }
    MASK.store(0xffff, Ordering::Relaxed);
}

/// Lets IRQ `irq` (0-15) through; an IRQ of the slave also opens the
/// cascade line on the master.
pub fn unmask(irq: u8) {
    assert!(irq < 16, "the 8259 pair has IRQs 0-15, not {irq}");
    let mut mask = MASK.load(Ordering::Relaxed) & !(1 << irq);
    if irq >= 8 {
        mask &= !(1 << CASCADE_IRQ);
    }
    write_mask(mask);
}

/// Stops IRQ `irq` (0-15).
pub fn mask(irq: u8) {
    assert!(irq < 16, "the 8259 pair has IRQs 0-15, not {irq}");
    write_mask(MASK.load(Ordering::Relaxed) | (1 << irq));
}

fn write_mask(mask: u16) {
    MASK.store(mask, Ordering::Relaxed);
    // SAFETY: writing the mask registers only changes which lines the PICs
    // deliver; a newly unmasked line needs a handler, which is the caller's
    // business before it enables interrupts (a missing one is reported).
    unsafe {
        outb(PIC1_DATA, mask as u8);
        outb(PIC2_DATA, (mask >> 8) as u8);
    }
}

/// Ends the handling of IRQ `irq`, so that the PIC delivers it (and lower
/// priority lines) again: the slave's IRQs need an EOI at both PICs.
pub fn eoi(irq: u8) {
    // SAFETY: a non-specific EOI only clears the PIC's in-service bit of the
    // interrupt being handled.
    unsafe {
        if irq >= 8 {
            outb(PIC2_COMMAND, OCW2_EOI);
        }
        outb(PIC1_COMMAND, OCW2_EOI);
    }
}
