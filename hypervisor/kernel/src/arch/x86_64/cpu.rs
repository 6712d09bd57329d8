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
    found
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
