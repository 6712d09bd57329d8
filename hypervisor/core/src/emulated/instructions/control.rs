//! Which values a `mov crN` or a `wrmsr` to EFER may put in the virtual
//! CPU.
//!
//! A real CPU checks every write to a control register or to EFER and
//! answers a bad one with #GP(0), leaving the register as it was (Intel
//! SDM vol. 2, MOV—Move to/from Control Registers, and WRMSR; vol. 3, 2.5
//! and 4.1; AMD APM vol. 2, 3.1). A kernel may rely on that (probing a
//! feature bit, say), so the emulator gives the guest that #GP through its
//! own IDT rather than stopping it. Only what the virtual CPU truly cannot
//! do (CR0.WP off, below) stops the domain with a report.
//!
//! The virtual CPU is a 64-bit CPU that stays in long mode with 4-level
//! paging, so every write that would leave it is one a real CPU refuses
//! too: clearing CR0.PG or CR0.PE in 64-bit mode, clearing CR4.PAE,
//! changing EFER.LME while paging is on. Its CR4 has only the features it
//! implements (or that change nothing for it); the bits of the others are
//! reserved, as on a CPU without them, and setting one is #GP.

use crate::emulated::cpu::{cr, VirtualCpu};

/// Why a write is not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// A real CPU refuses it too: #GP(0), the register unchanged.
    GeneralProtection,
    /// A real CPU would do it, but the emulator cannot (stop the domain).
    Unsupported(&'static str),
}

/// The CR0 bits a CPU defines (PE, MP, EM, TS, ET, NE, WP, AM, NW, CD,
/// PG); writes to the other bits of 31..0 are ignored, and bits 63..32
/// must be zero.
const CR0_DEFINED: u64 = 0x3f | (1 << 16) | (1 << 18) | (7 << 29);
/// CR0.NW: not write-through.
const CR0_NW: u64 = 1 << 29;
/// CR0.CD: cache disable.
const CR0_CD: u64 = 1 << 30;

/// The value CR0 takes for `mov cr0, value`.
pub(super) fn cr0(value: u64) -> Result<u64, Refused> {
    if value >> 32 != 0 {
        return Err(Refused::GeneralProtection); // SDM: bits 63..32 are reserved, #GP(0)
    }
    if value & cr::CR0_PG == 0 || value & cr::CR0_PE == 0 {
        // Clearing PG in 64-bit mode is #GP (APM 14.7: long mode is left
        // from compatibility mode only), and PG without PE is an invalid
        // combination.
        return Err(Refused::GeneralProtection);
    }
    if value & CR0_NW != 0 && value & CR0_CD == 0 {
        return Err(Refused::GeneralProtection); // NW without CD: invalid combination
    }
    if value & cr::CR0_WP == 0 {
        // The shadows and the walk always write-protect read-only pages in
        // the guest's kernel too; a kernel that clears WP to write one
        // would get a #PF it does not expect.
        return Err(Refused::Unsupported("it clears CR0.WP (ring-0 writes to read-only pages), which is not emulated"));
    }
    Ok((value & CR0_DEFINED) | cr::CR0_ET)
}

/// The CR3 bits above the widest physical address a CPU may have (52
/// bits): reserved. (A real CPU reserves from its own MAXPHYADDR up; the
/// guest reads that from the host's CPUID, and an address between it and
/// bit 52 is caught instead as a table outside the domain's RAM.)
const CR3_RESERVED: u64 = !((1 << 52) - 1);

/// The value CR3 takes for `mov cr3, value`. The virtual CPU has no PCIDs
/// (CR4.PCIDE cannot be set), so bit 63, the "do not flush" hint of a CPU
/// with PCIDE = 1, is an ordinary reserved bit here, and setting it is
/// #GP(0) like any other (SDM vol. 2, MOV to CR3; vol. 3, 4.10.4.1). Bits
/// 11..0 are PWT, PCD and ignored bits: kept as written.
pub(super) fn cr3(value: u64) -> Result<u64, Refused> {
    if value & CR3_RESERVED != 0 {
        return Err(Refused::GeneralProtection);
    }
    Ok(value)
}

/// The CR4 bits of the virtual CPU: those it implements (PAE, UMIP) or
/// whose effect it already has or does not need (DE: debug registers are
/// not emulated at all; PSE: ignored with PAE; MCE: no machine checks;
/// PGE: the shadows never hold global entries and are flushed with every
/// guest table write, so turning it on or off leaves nothing stale;
/// OSFXSR, OSXMMEXCPT: the real CPU runs the guest with SSE on). The other
/// bits name features it does not have (VME, PVI, TSD, PCE, LA57, VMXE,
/// SMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE, CET...) or are reserved.
pub const CR4_SUPPORTED: u64 = (1 << 3) | (1 << 4) | cr::CR4_PAE | (1 << 6) | (1 << 7) | (1 << 9) | (1 << 10) | cr::CR4_UMIP;

/// The value CR4 takes for `mov cr4, value`.
pub(super) fn cr4(value: u64) -> Result<u64, Refused> {
    if value & !CR4_SUPPORTED != 0 || value & cr::CR4_PAE == 0 {
        // A reserved bit, or leaving long mode by clearing PAE: #GP(0).
        return Err(Refused::GeneralProtection);
    }
    Ok(value)
}

/// The value CR8 (the task priority, bits 3..0) takes for `mov cr8,
/// value`; the other bits are reserved (SDM vol. 3, 10.8.6.1).
pub(super) fn cr8(value: u64) -> Result<u8, Refused> {
    u8::try_from(value).ok().filter(|v| *v < 16).ok_or(Refused::GeneralProtection)
}

/// The EFER bits a `wrmsr` may set: SCE, LME, LMA (ignored: the CPU
/// sets it) and NXE. The others (SVME, LMSLE, FFXSR, TCE...) name features
/// the virtual CPU does not have, or are reserved.
const EFER_WRITABLE: u64 = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;

/// The value EFER takes for `wrmsr` of `value` to IA32_EFER.
pub(super) fn efer(cpu: &VirtualCpu, value: u64) -> Result<u64, Refused> {
    if value & !EFER_WRITABLE != 0 || value & cr::EFER_LME == 0 {
        // A reserved bit, or changing LME while paging is on (SDM vol. 3,
        // 10.8.5: #GP).
        return Err(Refused::GeneralProtection);
    }
    Ok((value & !cr::EFER_LMA) | (cpu.efer & cr::EFER_LMA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::cpu::TableRegister;

    const GP: Result<u64, Refused> = Err(Refused::GeneralProtection);

    #[test]
    fn cr0_refuses_what_a_cpu_in_long_mode_refuses() {
        let boot = VirtualCpu::at_boot(0x1000, TableRegister::default()).cr0;
        assert_eq!(cr0(boot | 0b1110), Ok(boot | 0b1110), "MP, EM, TS");
        assert_eq!(cr0(boot & !cr::CR0_ET), Ok(boot), "ET is hardwired");
        assert_eq!(cr0(boot | (1 << 8)), Ok(boot), "reserved low bits are ignored");
        assert_eq!(cr0(boot | (1 << 32)), GP);
        assert_eq!(cr0(boot & !cr::CR0_PG), GP);
        assert_eq!(cr0(boot & !cr::CR0_PE), GP);
        assert_eq!(cr0(boot | CR0_NW), GP);
        assert_eq!(cr0(boot | CR0_NW | CR0_CD), Ok(boot | CR0_NW | CR0_CD));
        assert!(matches!(cr0(boot & !cr::CR0_WP), Err(Refused::Unsupported(_))));
    }

    #[test]
    fn cr3_has_no_pcid_so_bit_63_is_reserved() {
        assert_eq!(cr3(0x1234_5018), Ok(0x1234_5018), "PWT, PCD and ignored bits are kept");
        assert_eq!(cr3(0x1000 | (1 << 63)), GP);
        assert_eq!(cr3(0x1000 | (1 << 52)), GP);
    }

    #[test]
    fn cr4_has_only_the_virtual_cpus_features() {
        assert_eq!(cr4(cr::CR4_PAE | (1 << 9) | (1 << 10) | (1 << 7)), Ok(cr::CR4_PAE | 0x680));
        for bit in [0, 1, 2, 8, 12, 13, 15, 16, 17, 18, 20, 21, 22, 23, 32, 63] {
            assert_eq!(cr4(cr::CR4_PAE | (1 << bit)), GP, "bit {bit}");
        }
        assert_eq!(cr4(0x680), GP, "PAE off leaves long mode");
    }

    #[test]
    fn efer_keeps_long_mode_and_refuses_unknown_bits() {
        let cpu = VirtualCpu::at_boot(0x1000, TableRegister::default());
        let on = cr::EFER_LME | cr::EFER_NXE | cr::EFER_SCE;
        assert_eq!(efer(&cpu, on), Ok(on | cr::EFER_LMA), "LMA is the CPU's");
        assert_eq!(efer(&cpu, cr::EFER_NXE | cr::EFER_LMA), GP, "LME off with paging on");
        assert_eq!(efer(&cpu, on | (1 << 12)), GP, "SVME: no such feature");
        assert_eq!(efer(&cpu, on | (1 << 40)), GP, "reserved");
    }
}
