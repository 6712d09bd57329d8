//! Rust side of the entry paths: hand each entry to the logic, apply its answer.

use crate::arch::x86_64::paging::{hypervisor_root, switch_address_space};
use crate::arch::x86_64::percpu::this_cpu;
use crate::arch::x86_64::power::{exit_qemu, ExitCode};
use crate::arch::x86_64::entry;
use parvus_core::system::Door;
use crate::arch::x86_64::{cpu, lapic, serial::Serial};
use crate::exclusive::Exclusive;
use crate::logger::{self, CONSOLE_LOCK};
use crate::arch::x86_64::machine_memory::PhysMap;
use core::fmt::Write;
use parvus_core::console::ConsoleSink;
use parvus_core::fault;
use parvus_core::hypercall::TlbFlush;
use parvus_core::system::{Next, Platform, System, ALL_AS_EXPECTED, NOT_AS_EXPECTED};
use parvus_core::vcpu::GuestRegs;

/// The machine's one [`System`] (see [`Exclusive`] for why it needs no lock).
pub static SYSTEM: Exclusive<Option<System>> = Exclusive::new(None);

/// What is free and what the heap holds: measured once before the first
/// domain is built ([`BOOT_LEVEL`]) and again when the last has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Frames in the free pool.
    pub free_frames: u64,
    /// Heap bytes allocated.
    pub heap_used: usize,
}

/// The level before any domain was built: with every domain ended, the
/// machine must be back at it exactly (every frame free again, every heap
/// block a domain caused freed); the final summary prints both.
pub static BOOT_LEVEL: spin::Once<Level> = spin::Once::new();

/// Guest console lines go to the serial port, whole lines under the console lock.
pub struct SerialConsole;

impl ConsoleSink for SerialConsole {
    fn line(&mut self, prefix: &str, text: &str) {
        let _guard = CONSOLE_LOCK.lock();
        let _ = writeln!(Serial, "[{prefix}] {text}");
    }
}

/// Called by `syscall_entry` for every hypercall but `null`, and by
/// `syscall_emulated_entry` for an emulated kernel's `syscall`.
pub extern "C" fn hypercall(frame: &mut GuestRegs) {
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_hypercall(&mut platform, frame);
        apply(next, system, frame);
    })
}

/// Called by `syscall_stepped_entry`: a hypercall made with TF set, which
/// owes the guest a single-step trap after it.
pub extern "C" fn stepped_hypercall(frame: &mut GuestRegs) {
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_stepped_hypercall(&mut platform, frame);
        apply(next, system, frame);
    })
}

/// Called by `syscall_user_entry`: a system call of a paravirtualized
/// guest's user process, for its kernel.
pub extern "C" fn user_syscall(frame: &mut GuestRegs) {
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_user_syscall(&mut platform, frame);
        apply(next, system, frame);
    })
}

/// Called for an external interrupt that arrived while a guest ran.
pub extern "C" fn guest_interrupt(frame: &mut GuestRegs) {
    if frame.vector != u64::from(lapic::TIMER_VECTOR) {
        return; // spurious: no EOI
    }
    lapic::eoi();
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_timer(&mut platform, frame);
        apply(next, system, frame);
    })
}

/// Called for an interrupt in ring 0 (only possible while idle).
pub extern "C" fn idle_interrupt(vector: u64) {
    if vector == u64::from(lapic::TIMER_VECTOR) {
        lapic::eoi();
    }
}

/// Arms the APIC timer for the system's next deadline (or stops it when
/// there is none at all). A deadline beyond the APIC's longest count
/// (`u32::MAX` ticks), up to the farthest ones, which `next_deadline`
/// saturates to TSC `u64::MAX`, arms the longest count: the timer fires
/// with nothing due, and `on_timer` has it armed again.
pub fn arm_timer(system: &mut System) {
    system.timer_dirty = false;
    let ticks = match system.next_deadline() {
        None => 0,
        Some(deadline) => {
            let tsc_ticks = deadline.saturating_sub(cpu::rdtsc()).max(1);
            timer_rate::tsc_to_apic(tsc_ticks).clamp(1, u64::from(u32::MAX)) as u32
        }
    };
    lapic::arm(ticks);
}

/// The ratio of the APIC timer's rate to the TSC's, measured once at boot.
pub mod timer_rate {
    use core::sync::atomic::{AtomicU64, Ordering};
    use parvus_core::time::Scale;

    /// `Scale::mul` in the low 32 bits, `Scale::shift` above.
    static TSC_TO_APIC: AtomicU64 = AtomicU64::new(1 << 32);

    /// Records the two rates.
    pub fn set(apic_hz: u64, tsc_hz: u64) {
        let s = Scale::new(apic_hz, tsc_hz);
        TSC_TO_APIC.store(u64::from(s.mul) | (u64::from(s.shift as u8) << 32), Ordering::Relaxed);
    }

    /// APIC timer ticks in `tsc_ticks` TSC ticks.
    pub fn tsc_to_apic(tsc_ticks: u64) -> u64 {
        let packed = TSC_TO_APIC.load(Ordering::Relaxed);
        Scale { mul: packed as u32, shift: (packed >> 32) as u8 as i8 }.apply(tsc_ticks)
    }
}

/// Called by the exception stubs for a fault raised in ring 3.
pub extern "C" fn guest_exception(frame: &mut GuestRegs) {
    let cr2 = cpu::cr2();
    SYSTEM.with(|system| {
        let system = system.as_mut().expect("guests run only after the system is built");
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_guest_exception(&mut platform, frame, cr2);
        apply(next, system, frame);
    })
}

/// Called by the exception stubs for a fault in ring 0: a hypervisor bug.
pub extern "C" fn hypervisor_fault(frame: &GuestRegs) -> ! {
    let cr2 = cpu::cr2();
    for line in fault::report("the hypervisor itself faulted", frame, cr2) {
        logger::emergency(format_args!("FATAL {line}"));
    }
    // Not this_cpu(): GS may hold the guest's base here.
    if let Some(id) = crate::arch::x86_64::percpu::bsp().current_domain {
        logger::emergency(format_args!("FATAL while serving domain {id}"));
    }
    exit_qemu(ExitCode::HypervisorFailure)
}

#[inline(always)]
fn apply(next: Next, system: &mut System, frame: &mut GuestRegs) {
    // The common cases first and inline: back to the same guest with
    // nothing to do or stale translations to flush, or a paravirtualized guest moving
    // between its kernel and user modes (every bounce and every `iret`),
    // which needs only its other table and its other `syscall` door.
    if !system.timer_dirty {
        match next {
            Next::RESUME => return,
            // A page-table hypercall's flush (update_va_mapping, mmu_update).
            Next::Resume { tlb } => return flush_tlb(tlb),
            Next::Switch { root, door } if door != Door::Emulated && is_running(system) => {
                // SAFETY: as in `apply_slow`: every top-level table a
                // paravirtualized guest can load was validated, which
                // writes the hypervisor's upper half into it.
                unsafe { switch_address_space(root) };
                entry::set_syscall_path(door);
                return;
            }
            _ => {}
        }
    }
    apply_slow(next, system, frame);
}

/// Whether the per-CPU data already points at the current domain (then a
/// switch of its address space changes nothing else).
#[inline(always)]
fn is_running(system: &System) -> bool {
    this_cpu().current_domain == system.current_id().map(|id| u32::from(id.0))
}

/// Drops the translations a page-table hypercall made stale.
#[inline(always)]
fn flush_tlb(tlb: TlbFlush) {
    match tlb {
        TlbFlush::None => {}
        TlbFlush::Page(va) => x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va)),
        TlbFlush::All => x86_64::instructions::tlb::flush_all(),
    }
}

#[inline(never)]
fn apply_slow(next: Next, system: &mut System, frame: &mut GuestRegs) {
    match next {
        Next::Resume { tlb } => flush_tlb(tlb),
        Next::ResumeOnFloorPath => entry::set_syscall_path(Door::Floor),
        Next::Switch { root, door } => {
            // SAFETY: every top-level table a guest can load was validated,
            // which writes the hypervisor's upper half into it
            // (parvus_core::page_type), or is a shadow table, which gets it
            // when it is made (parvus_core::emulated::shadow).
            unsafe { switch_address_space(root) };
            entry::set_syscall_path(door);
            // A paravirtualized guest switching between its kernel and user
            // modes keeps everything else; another domain, or an emulated
            // kernel (whose segment bases may have changed), does not.
            if !is_running(system) || door == Door::Emulated {
                point_at_current_vcpu(system);
            }
        }
        Next::Idle => return idle(system, frame),
        Next::Finished { all_as_expected } => finish(system, all_as_expected),
    }
    if system.timer_dirty {
        arm_timer(system);
    }
}

/// No domain can run: halt with interrupts on until the timer brings the
/// next deadline, then let the logic decide. Returns once a domain's
/// registers are in the frame at the top of the stack (the caller then
/// returns to the entry code, which resumes it).
fn idle(system: &mut System, frame: &mut GuestRegs) {
    // The last domain's tables may just have been freed: idle on our own.
    // SAFETY: the hypervisor's own top-level table maps the hypervisor as
    // every domain's does.
    unsafe { switch_address_space(hypervisor_root()) };
    loop {
        arm_timer(system);
        // SAFETY: `sti; hlt` enables interrupts only for the halt (the
        // instruction after `sti` runs before any interrupt); the timer
        // interrupt in ring 0 is served by the idle path of the entry code,
        // which only sends the EOI, on this stack below `rsp` (no red zone
        // is in use here); `cli` closes the window again.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let mut platform = Platform { mem: &mut PhysMap, console: &mut SerialConsole, tsc: cpu::rdtsc() };
        let next = system.on_timer(&mut platform, frame);
        if next != Next::Idle {
            return apply(next, system, frame);
        }
    }
}

/// Points the per-CPU data at the running domain: its id (for fault
/// reports) and its vCPU's x87/SSE area (where the entry code saves it);
/// sets CR4.UMIP as the domain's manifest asks; and gives the CPU the
/// ring-3 selectors and the FS/GS bases of its kind of guest (an emulated
/// kernel has its own bases and runs on selectors of its own, see
/// [`crate::arch::x86_64::gdt::select_guest_segments`]).
pub fn point_at_current_vcpu(system: &mut System) {
    let cpu = this_cpu();
    let Some(d) = system.current_mut() else {
        cpu.current_domain = None;
        return;
    };
    let id = u32::from(d.id.0);
    if cpu.current_domain != Some(id) {
        // Another domain: everything that is per domain. (A switch between
        // a paravirtualized guest's kernel and user modes, the common case,
        // skips all of this.)
        cpu.current_domain = Some(id);
        cpu.guest_fpu = core::ptr::addr_of_mut!(d.vcpu.fpu);
        crate::arch::x86_64::cpu::set_umip(d.umip);
        crate::arch::x86_64::gdt::select_guest_segments(d.is_emulated());
    }
    let (fs, gs) = d.segment_bases();
    crate::arch::x86_64::cpu::set_guest_segment_bases(cpu, fs, gs);
}

/// Prints the summary and stops the machine.
pub fn finish(system: &System, all_as_expected: bool) -> ! {
    lapic::arm(0);
    // SAFETY: the hypervisor's own tables map the hypervisor exactly as
    // every domain's do.
    unsafe { switch_address_space(hypervisor_root()) };
    for line in system.summary() {
        log::info!("{line}");
    }
    let end = Level { free_frames: system.frames.free_count(), heap_used: crate::heap::used() };
    if let Some(boot) = BOOT_LEVEL.get() {
        log::info!(
            "conservation: free frames {} at boot, {} at the end; heap in use {} bytes at boot, {} at the end",
            boot.free_frames,
            end.free_frames,
            boot.heap_used,
            end.heap_used
        );
    }
    if all_as_expected {
        log::info!("{ALL_AS_EXPECTED}");
        exit_qemu(ExitCode::AllAsExpected)
    } else {
        log::error!("{NOT_AS_EXPECTED}");
        exit_qemu(ExitCode::NotAsExpected)
    }
}
