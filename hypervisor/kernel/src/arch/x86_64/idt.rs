//! The interrupt descriptor table: the 32 exception vectors and the APIC's.
//!
//! Every exception vector points at its stub in [`super::entry`]. Gates are
//! DPL 0, so a guest's `int n` raises #GP instead of entering the hypervisor,
//! except the breakpoint (`int3`) and overflow (`into`) gates, which are DPL 3
//! so those instructions report themselves as what they are.
//! Double faults, NMIs and machine checks switch to the IST stack, because
//! they may strike when the ordinary stack cannot be trusted.

use super::entry::exception_stubs;
use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const MISSING: Gate = Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

static mut IDT: [Gate; 256] = [MISSING; 256];

/// Present, DPL 0, 64-bit interrupt gate (interrupts stay off in the handler).
const INTERRUPT_GATE: u8 = 0x8e;
/// The same, but ring 3 may raise it with `int n`.
const USER_INTERRUPT_GATE: u8 = 0xee;

fn gate(handler: u64, ist: u8, attributes: u8) -> Gate {
    Gate {
        offset_low: handler as u16,
        selector: KERNEL_CS,
        ist,
        attributes,
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        reserved: 0,
    }
}

/// Fills in the exception gates and loads the IDT.
pub fn init() {
    let idt = core::ptr::addr_of_mut!(IDT);
    for vector in 0..32u8 {
        let ist = match vector {
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        let attributes = if matches!(vector, 3 | 4) { USER_INTERRUPT_GATE } else { INTERRUPT_GATE };
        // SAFETY: exception_stubs is a static table of 32 code addresses
        // emitted by the entry assembly.
        let handler = unsafe { exception_stubs[usize::from(vector)] };
        // SAFETY: init runs once, before the IDT is loaded, so nothing else
        // reads IDT while it is written.
        unsafe { (*idt)[usize::from(vector)] = gate(handler, ist, attributes) };
    }
    for (vector, stub) in [
        (super::lapic::TIMER_VECTOR, super::entry::timer_interrupt_stub as *const ()),
        (super::lapic::SPURIOUS_VECTOR, super::entry::spurious_interrupt_stub as *const ()),
    ] {
        // SAFETY: as above; the stubs expect the frame of an external interrupt.
        unsafe { (*idt)[usize::from(vector)] = gate(stub as u64, 0, INTERRUPT_GATE) };
    }
    let pointer = DescriptorTablePointer { limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16, base: VirtAddr::new(idt as u64) };
    // SAFETY: the IDT is static, fully initialised for the exception vectors,
    // and its stubs expect exactly the frames the CPU produces.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}
