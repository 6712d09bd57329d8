//! The legacy 8259 PICs: masked, so that no stray IRQ lands on an exception vector.
//!
//! SeaBIOS (on `q35`/`pc`) leaves the master PIC unmasked with IRQ 0 at
//! vector 8, which would look like a double fault. Parvus does not use the
//! PICs, so it remaps them above the exception vectors and masks every line.

use x86_64::instructions::port::Port;

/// Remaps both PICs to vectors 0x20..0x30 and masks all their lines.
pub fn disable() {
    let writes: [(u16, u8); 10] = [
        (0x20, 0x11), (0xa0, 0x11), // ICW1: init, expect ICW4
        (0x21, 0x20), (0xa1, 0x28), // ICW2: vector offsets
        (0x21, 0x04), (0xa1, 0x02), // ICW3: cascade on IRQ 2
        (0x21, 0x01), (0xa1, 0x01), // ICW4: 8086 mode
        (0x21, 0xff), (0xa1, 0xff), // OCW1: mask everything
    ];
    for (port, value) in writes {
        // SAFETY: the PIC ports belong to this module; the sequence above is
        // the documented initialisation and leaves every line masked.
        unsafe { Port::<u8>::new(port).write(value) };
    }
}
