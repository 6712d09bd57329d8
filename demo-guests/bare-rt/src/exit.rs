//! Ending the machine.
//!
//! An unmodified kernel has no hypervisor to call: it stops the machine the
//! way a test kernel on QEMU does, by writing its status to the
//! `isa-debug-exit` port ([`port::DEBUG_EXIT`]). Natively QEMU exits at once
//! with `(status << 1) | 1`; under trap-and-emulate the hypervisor emulates
//! the same port and ends the domain with that status. Should the write
//! not stop anything (no such device), the CPU halts with interrupts off
//! for ever, which is the most a kernel can do.

use hypercall_abi::bare_metal::port;

use crate::cpu;

/// Ends the kernel with `status` (see [`crate::status`]).
pub fn exit(status: u8) -> ! {
    // SAFETY: the debug-exit port stops the machine; nothing runs after it.
    unsafe { cpu::outb(port::DEBUG_EXIT, status) };
    loop {
        cpu::cli();
        cpu::hlt();
    }
}
