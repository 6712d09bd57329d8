//! Rust side of the entry paths: hand each entry to the logic, apply its answer.

use crate::arch::x86_64::paging::{hypervisor_root, switch_address_space};
use crate::arch::x86_64::percpu::this_cpu;
use crate::arch::x86_64::power::{exit_qemu, ExitCode};
use crate::arch::x86_64::entry::{self, SyscallPath};
use crate::arch::x86_64::{cpu, serial::Serial};
use crate::exclusive::Exclusive;
use crate::logger::{self, CONSOLE_LOCK};
use crate::machine_memory::PhysMap;
use core::fmt::Write;
use parvus_core::console::ConsoleSink;
use parvus_core::fault;
use parvus_core::hypercall::TlbFlush;
use parvus_core::system::{Next, Platform, System};
use parvus_core::vcpu::GuestRegs;

/// The machine's one [`System`] (see [`Exclusive`] for why it needs no lock).
pub static SYSTEM: Exclusive<Option<System>> = Exclusive::new(None);

/// Guest console lines go to the serial port, whole lines under the console lock.
pub struct SerialConsole;

impl ConsoleSink for SerialConsole {
    fn line(&mut self, prefix: &str, text: &str) {
        let _guard = CONSOLE_LOCK.lock();
        let _ = writeln!(Serial, "[{prefix}] {text}");
    }
}

/// Called by `syscall_entry` for every hypercall but `null`.
pub extern "C" fn hypercall(frame: &mut GuestRegs) {
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let next = system.on_hypercall(&mut Platform { mem: &mut PhysMap, console: &mut SerialConsole }, frame, &mut this_cpu().guest_fpu);
        apply(next, system);
    })
}

/// Vector of the breakpoint (`int3`) that ends a floor measurement.
const BREAKPOINT: u64 = 3;

/// Called by the exception stubs for a fault raised in ring 3.
pub extern "C" fn guest_exception(frame: &mut GuestRegs) {
    let cr2 = cpu::cr2();
    if this_cpu().syscall_path == SyscallPath::Floor {
        entry::set_syscall_path(SyscallPath::Kernel);
        if frame.vector == BREAKPOINT {
            return; // the end of a floor measurement: resume after the int3
        }
    }
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let next = system.on_guest_exception(&mut Platform { mem: &mut PhysMap, console: &mut SerialConsole }, frame, &mut this_cpu().guest_fpu, cr2);
        apply(next, system);
    })
}

/// Called by the exception stubs for a fault in ring 0: a hypervisor bug.
pub extern "C" fn hypervisor_fault(frame: &GuestRegs) -> ! {
    let cr2 = cpu::cr2();
    let running = SYSTEM.peek().and_then(|s| s.as_ref().and_then(|s| s.current().map(|d| d.label())));
    for line in fault::report("the hypervisor itself faulted", frame, cr2) {
        logger::emergency(format_args!("FATAL {line}"));
    }
    if let Some(label) = running {
        logger::emergency(format_args!("FATAL while serving {label}"));
    }
    exit_qemu(ExitCode::HypervisorFailure)
}

fn apply(next: Next, system: &System) {
    match next {
        Next::Resume { tlb: TlbFlush::None } => {}
        Next::Resume { tlb: TlbFlush::Page(va) } => {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
        }
        Next::Resume { tlb: TlbFlush::All } => x86_64::instructions::tlb::flush_all(),
        Next::ResumeOnFloorPath => entry::set_syscall_path(SyscallPath::Floor),
        Next::Switch { root, kernel_mode } => {
            // SAFETY: every top-level table a guest can load was validated,
            // which writes the hypervisor's upper half into it (parvus_core::page_type).
            unsafe { switch_address_space(root) };
            entry::set_syscall_path(if kernel_mode { SyscallPath::Kernel } else { SyscallPath::User });
        }
        Next::Finished { all_as_expected } => finish(system, all_as_expected),
    }
}

/// Prints the summary and stops the machine.
pub fn finish(system: &System, all_as_expected: bool) -> ! {
    // SAFETY: the hypervisor's own tables map the hypervisor exactly as
    // every domain's do.
    unsafe { switch_address_space(hypervisor_root()) };
    for line in system.summary() {
        log::info!("{line}");
    }
    log::info!("hypervisor heap in use: {} KiB", crate::heap::used() / 1024);
    if all_as_expected {
        log::info!("all domains ended as expected");
        exit_qemu(ExitCode::AllAsExpected)
    } else {
        log::error!("some domains did not end as expected");
        exit_qemu(ExitCode::NotAsExpected)
    }
}
