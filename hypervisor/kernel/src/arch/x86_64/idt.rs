//! The interrupt descriptor table: the 32 exception vectors and the APIC's.
//!
//! Every exception vector points at its stub in [`super::entry`]. Gates are
//! DPL 0, so a guest's `int n` raises #GP instead of entering the hypervisor,
//! except the breakpoint (`int3`) and overflow (`into`) gates, which are DPL 3
//! so those instructions report themselves as what they are.
//! Double faults, NMIs, machine checks and debug exceptions switch to an
//! IST stack, because they may strike when the ordinary stack cannot be
//! trusted (a debug exception right after a `syscall` with TF set, on the
//! guest's stack).

use super::entry::exception_stubs;
use super::gdt::{IST_DEBUG, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use hypercall_abi::idt::IdtGate;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// The hypervisor's IDT. Every gate is an interrupt gate
/// ([`IdtGate::interrupt`]: interrupts stay off in the handler) into the
/// hypervisor's code segment.
static mut IDT: [IdtGate; 256] = [IdtGate::MISSING; 256];

/// Fills in the exception gates and loads the IDT.
pub fn init() {
    let idt = core::ptr::addr_of_mut!(IDT);
    for vector in 0..32u8 {
        let ist = match vector {
            1 => IST_DEBUG,
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        // Ring 3 may raise only `int3` and `into` itself (see the module docs).
        let dpl = if matches!(vector, 3 | 4) { 3 } else { 0 };
        // SAFETY: exception_stubs is a static table of 32 code addresses
        // emitted by the entry assembly.
        let handler = unsafe { exception_stubs[usize::from(vector)] };
        // SAFETY: init runs once, before the IDT is loaded, so nothing else
        // reads IDT while it is written.
        unsafe { (*idt)[usize::from(vector)] = IdtGate::interrupt(handler, KERNEL_CS, ist, dpl) };
    }
    for (vector, stub) in [
        (super::lapic::TIMER_VECTOR, super::entry::timer_interrupt_stub as *const ()),
        (super::lapic::SPURIOUS_VECTOR, super::entry::spurious_interrupt_stub as *const ()),
    ] {
        // SAFETY: as above; the stubs expect the frame of an external interrupt.
        unsafe { (*idt)[usize::from(vector)] = IdtGate::interrupt(stub as u64, KERNEL_CS, 0, 0) };
    }
    let pointer = DescriptorTablePointer { limit: (core::mem::size_of::<[IdtGate; 256]>() - 1) as u16, base: VirtAddr::new(idt as u64) };
    // SAFETY: the IDT is static, fully initialised for the exception vectors,
    // and its stubs expect exactly the frames the CPU produces.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}
