//! CPU features and control registers.

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// Protection features found in CPUID and switched on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protections {
    /// Supervisor-mode execution prevention: ring 0 cannot run guest pages.
    pub smep: bool,
    /// Supervisor-mode access prevention: ring 0 cannot touch guest pages.
    pub smap: bool,
    /// User-mode instruction prevention: SGDT/SIDT/SLDT/SMSW/STR fault in ring 3.
    pub umip: bool,
}

fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, sub)
}

/// Switches on write protection in ring 0, global pages, `syscall`, NX,
/// and SMEP/SMAP/UMIP where the CPU has them.
pub fn init() -> Protections {
    let leaf7 = cpuid(7, 0);
    let found = Protections {
        smep: leaf7.ebx & (1 << 7) != 0,
        smap: leaf7.ebx & (1 << 20) != 0,
        umip: leaf7.ecx & (1 << 2) != 0,
    };
    let mut cr4 = Cr4::read() | Cr4Flags::PAGE_GLOBAL | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
    cr4.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, found.smep);
    cr4.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, found.smap);
    cr4.set(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION, found.umip);
    // SAFETY: (1) the hypervisor never touches guest pages through their user
    // mappings (it copies through the physical map), so SMEP/SMAP cannot trip
    // it; (2) UMIP only affects ring 3; (3) PGE and the SSE bits are what the
    // rest of the code already assumes.
    unsafe { Cr4::write(cr4) };
    // SAFETY: WP makes ring 0 honour read-only mappings; the hypervisor only
    // writes through mappings it created writable.
    unsafe { Cr0::write(Cr0::read() | Cr0Flags::WRITE_PROTECT) };
    // SAFETY: SCE enables `syscall`, whose target MSRs are set before any
    // guest runs; NXE is already on (set at boot) and stays on.
    unsafe { Efer::write(Efer::read() | EferFlags::SYSTEM_CALL_EXTENSIONS | EferFlags::NO_EXECUTE_ENABLE) };
    HAS_UMIP.store(found.umip, core::sync::atomic::Ordering::Relaxed);
    found
}

/// Whether the CPU has UMIP (found by [`init`]).
static HAS_UMIP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns CR4.UMIP on or off for the domain about to run (a manifest may
/// ask for it off, to show what the five store instructions leak). A no-op
/// when the CPU has no UMIP or the bit is already as asked.
pub fn set_umip(on: bool) {
    if !HAS_UMIP.load(core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION) != on {
        let mut new = cr4;
        new.set(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION, on);
        // SAFETY: UMIP only changes what ring-3 code may execute.
        unsafe { Cr4::write(new) };
    }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Gives the CPU the FS and GS bases the next guest runs with (a no-op
/// when they are those it has, as for every paravirtualized guest). Called
/// in the hypervisor, between the entry's `swapgs` and the exit's: the
/// guest's GS base is then in IA32_KERNEL_GS_BASE, and the exit's `swapgs`
/// makes it the active one.
pub fn set_guest_segment_bases(cpu: &mut super::percpu::PerCpu, fs: u64, gs: u64) {
    if cpu.guest_segment_bases == (fs, gs) {
        return;
    }
    cpu.guest_segment_bases = (fs, gs);
    // The emulator stores whatever the guest wrote; a non-canonical base
    // would make the MSR write fault in ring 0, so it becomes 0 (the
    // guest then faults on its own use of it, not the hypervisor).
    let canonical = |v: u64| if ((v as i64) << 16 >> 16) as u64 == v { v } else { 0 };
    x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(canonical(fs)));
    x86_64::registers::model_specific::KernelGsBase::write(x86_64::VirtAddr::new_truncate(canonical(gs)));
}
