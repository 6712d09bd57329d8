//! The interrupt descriptor table: 256 interrupt gates.
//!
//! Every gate starts out pointing at its vector's stub in [`crate::trap`],
//! with DPL 0: ring 3 cannot raise any vector with `int n` (it gets #GP
//! instead), and a vector nobody registered a handler for is reported and
//! ends the kernel. A kernel then installs what it handles:
//!
//! - [`set_handler`]: a Rust function that gets the [`TrapFrame`], through
//!   the runtime's common entry path; the DPL says whether user code may
//!   raise the vector itself with `int n` (a system-call gate has DPL 3);
//! - [`set_gate`]: an entry point of the kernel's own, written in assembly,
//!   for a path that must do something the common one does not.
//!
//! All gates are *interrupt* gates (not trap gates): the CPU clears IF on
//! entry, so handlers run with interrupts off like the rest of ring 0.
//! None uses an IST stack, so a fault lands on the kernel stack it
//! happened on (or on TSS.RSP0 if it came from ring 3).

use core::mem::size_of;

use hypercall_abi::idt::IdtGate;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::gdt::KERNEL_CS;
use crate::trap::{self, Handler};
use crate::TrapFrame;

/// The table (every gate missing until [`init`]; the gate encoding is
/// [`IdtGate`], shared with the hypervisor, which reads these gates itself
/// under trap-and-emulate).
static mut IDT: [IdtGate; 256] = [IdtGate::MISSING; 256];

/// A gate to `handler` in ring 0, on the current stack (no IST), that code
/// running at `dpl` or more privileged may raise with `int n`.
fn gate(handler: u64, dpl: PrivilegeLevel) -> IdtGate {
    IdtGate::interrupt(handler, KERNEL_CS, 0, dpl as u8)
}

/// Writes one gate.
fn write_gate(vector: u8, gate: IdtGate) {
    let idt = &raw mut IDT;
    // SAFETY: one CPU, and ring 0 runs with interrupts off, so no interrupt
    // reads the IDT while this 16-byte store is half done (an exception
    // here would be a bug in this function, which only stores).
    unsafe { (*idt)[usize::from(vector)] = gate };
}

/// Points every gate at its stub and loads the IDT (called by the runtime
/// before `main`).
pub fn init() {
    for vector in 0..=255u8 {
        write_gate(vector, gate(trap::stub_address(vector), PrivilegeLevel::Ring0));
    }
    let pointer = table();
    // SAFETY: the IDT is a static, valid for the rest of the run, and every
    // gate points at a stub that expects exactly the frame the CPU pushes.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

/// Handles `vector` with `handler`, called with the interrupted state; `dpl`
/// is the least privileged ring that may raise it with `int n`
/// ([`PrivilegeLevel::Ring0`] for exceptions and IRQs,
/// [`PrivilegeLevel::Ring3`] for a system-call vector).
pub fn set_handler(vector: u8, handler: Handler, dpl: PrivilegeLevel) {
    trap::register(vector, handler);
    write_gate(vector, gate(trap::stub_address(vector), dpl));
}

/// Points `vector`'s gate at the kernel's own assembly entry point.
///
/// # Safety
///
/// `entry` is code that expects the frame the CPU pushes for this vector
/// (with or without an error code), preserves the interrupted state and
/// returns with `iretq` (or never returns).
pub unsafe fn set_gate(vector: u8, entry: unsafe extern "C" fn(), dpl: PrivilegeLevel) {
    write_gate(vector, gate(entry as usize as u64, dpl));
}

/// The IDT's base address and limit, as `lidt` loaded them (what `sidt`
/// shows when nothing intercepts it).
pub fn table() -> DescriptorTablePointer {
    let idt = &raw const IDT;
    DescriptorTablePointer { limit: (size_of::<[IdtGate; 256]>() - 1) as u16, base: VirtAddr::new(idt as u64) }
}

/// A handler that does nothing: for a vector the kernel wants to ignore.
pub fn ignore(_frame: &mut TrapFrame) {}
