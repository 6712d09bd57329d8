//! One entry of a 64-bit interrupt descriptor table: [`IdtGate`].
//!
//! The IDT is an x86 structure, not a Parvus invention, but three parts of
//! Parvus handle its entries and must agree on them bit for bit:
//!
//! - the hypervisor writes its own IDT (`hypervisor/kernel`);
//! - an unmodified kernel writes its IDT through `bare-rt`, natively read
//!   by the CPU;
//! - under trap-and-emulate the CPU never sees that kernel's IDT: the
//!   hypervisor reads the gate itself when it delivers an interrupt or an
//!   exception to the kernel (`hypervisor/core`, `emulated/inject.rs`).
//!
//! A gate is 16 bytes: the handler's address split in three pieces around
//! the code selector, the IST slot and the attribute byte (present bit,
//! DPL, gate type). [`IdtGate::interrupt`] builds one from plain values, so
//! no caller shifts and masks the pieces by hand; the accessors read them
//! back.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Attribute byte: the gate is present.
const PRESENT: u8 = 0x80;

/// Attribute byte, low nibble: a 64-bit interrupt gate (the CPU clears IF
/// on entry, so the handler starts with interrupts off).
pub const TYPE_INTERRUPT_GATE: u8 = 0x0e;

/// Attribute byte, low nibble: a 64-bit trap gate (IF is left as it was).
pub const TYPE_TRAP_GATE: u8 = 0x0f;

/// A 64-bit IDT gate, as the CPU reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdtGate {
    /// Handler address, bits 0-15.
    offset_low: u16,
    /// The code selector the handler runs with.
    selector: u16,
    /// Bits 0-2: the IST slot of the stack to switch to (0: none).
    ist: u8,
    /// Present bit (7), DPL (bits 5-6), gate type (bits 0-3).
    attributes: u8,
    /// Handler address, bits 16-31.
    offset_mid: u16,
    /// Handler address, bits 32-63.
    offset_high: u32,
    /// Must be zero.
    reserved: u32,
}

const_assert_eq!(core::mem::size_of::<IdtGate>(), 16);
const_assert_eq!(core::mem::offset_of!(IdtGate, attributes), 5);
const_assert_eq!(core::mem::offset_of!(IdtGate, offset_high), 8);

impl IdtGate {
    /// A not-present gate: the vector raises #NP (or #GP for `int n`).
    pub const MISSING: IdtGate =
        IdtGate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    /// A present 64-bit interrupt gate to `handler` in code segment
    /// `selector`, switching to IST stack `ist` (0 to 7, 0: none) and
    /// callable with `int n` from privilege level `dpl` (0 to 3) or more
    /// privileged. Out-of-range `ist` and `dpl` keep their low bits.
    pub const fn interrupt(handler: u64, selector: u16, ist: u8, dpl: u8) -> IdtGate {
        IdtGate {
            offset_low: handler as u16,
            selector,
            ist: ist & 7,
            attributes: PRESENT | ((dpl & 3) << 5) | TYPE_INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    /// Whether the gate is present.
    pub fn is_present(&self) -> bool {
        self.attributes & PRESENT != 0
    }

    /// The gate type ([`TYPE_INTERRUPT_GATE`], [`TYPE_TRAP_GATE`], or
    /// something no 64-bit IDT may hold).
    pub fn kind(&self) -> u8 {
        self.attributes & 0x0f
    }

    /// The handler's address.
    pub fn handler(&self) -> u64 {
        u64::from(self.offset_low) | (u64::from(self.offset_mid) << 16) | (u64::from(self.offset_high) << 32)
    }

    /// The code selector the handler runs with.
    pub fn selector(&self) -> u16 {
        self.selector
    }

    /// The IST slot (0: no stack switch beyond the privilege change).
    pub fn ist(&self) -> u8 {
        self.ist & 7
    }

    /// The least privileged level that may raise the vector with `int n`.
    pub fn dpl(&self) -> u8 {
        (self.attributes >> 5) & 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_gate_reads_back_what_it_was_built_from() {
        let gate = IdtGate::interrupt(0xffff_ffff_8012_3456, 0x08, 2, 3);
        assert!(gate.is_present());
        assert_eq!(gate.kind(), TYPE_INTERRUPT_GATE);
        assert_eq!(gate.handler(), 0xffff_ffff_8012_3456);
        assert_eq!((gate.selector(), gate.ist(), gate.dpl()), (0x08, 2, 3));
    }

    #[test]
    fn the_bytes_are_the_cpus() {
        // The encoding the CPU documents: offset 15:0, selector, IST,
        // attributes (0x8e: present, DPL 0, interrupt gate; 0xee: DPL 3),
        // offset 31:16, offset 63:32, reserved.
        let gate = IdtGate::interrupt(0x0020_0800, 0x08, 0, 0);
        assert_eq!(gate.as_bytes(), &[0x00, 0x08, 0x08, 0x00, 0, 0x8e, 0x20, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(IdtGate::interrupt(0, 0x08, 0, 3).as_bytes()[5], 0xee);
        let read = IdtGate::read_from_bytes(gate.as_bytes()).unwrap();
        assert_eq!(read, gate);
    }

    #[test]
    fn a_missing_gate_is_not_present_and_ranges_are_masked() {
        assert!(!IdtGate::MISSING.is_present());
        assert_eq!(IdtGate::MISSING.as_bytes(), &[0u8; 16]);
        let gate = IdtGate::interrupt(0, 0x08, 9, 7);
        assert_eq!((gate.ist(), gate.dpl()), (1, 3));
    }
}
