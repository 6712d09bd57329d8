//! The virtual CPU an emulated kernel believes it runs on.
//!
//! The real CPU runs the guest in ring 3 with interrupts enabled, on the
//! hypervisor's GDT, IDT and shadow page tables. Everything the guest set
//! with a privileged instruction lives here instead: its privilege level,
//! its interrupt flag, its control registers, its descriptor-table
//! registers and the MSRs it uses. The emulator reads and writes these;
//! the real CPU never sees them, except the few that the hypervisor must
//! make real while the guest runs (its GS and FS bases).

use hypercall_abi::bare_metal::{BOOT_CS, BOOT_DS};

/// Control-register bits the emulator looks at.
pub mod cr {
    /// CR0.PE: protected mode.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0.MP: monitor coprocessor.
    pub const CR0_MP: u64 = 1 << 1;
    /// CR0.ET: extension type (always one).
    pub const CR0_ET: u64 = 1 << 4;
    /// CR0.NE: native x87 errors.
    pub const CR0_NE: u64 = 1 << 5;
    /// CR0.WP: write protection in ring 0.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4.PAE: physical address extension (required in long mode).
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.UMIP: `sgdt`, `sidt`, `sldt`, `smsw` and `str` fault in user mode.
    pub const CR4_UMIP: u64 = 1 << 11;
    /// EFER.SCE: `syscall`/`sysret` enabled.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enabled.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: the NX bit is honoured.
    pub const EFER_NXE: u64 = 1 << 11;
}

/// The MSRs an emulated kernel may read and write.
pub mod msr {
    /// IA32_APIC_BASE (read-only here: the local APIC is not emulated).
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR: `syscall`/`sysret` selectors.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR: the 64-bit `syscall` entry point.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR: the compatibility-mode entry (stored, never used).
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK: RFLAGS bits `syscall` clears.
    pub const SFMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE: what `swapgs` exchanges with GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// Whether `va` is canonical: bits 63..47 all equal, as every address
/// that RIP, a descriptor's handler or an address MSR (LSTAR, the FS and
/// GS bases) may hold. The CPU refuses the others with #GP (`wrmsr`,
/// `sysretq`, `iretq`, `lretq`) and, worse for a hypervisor, its own
/// `iretq` to a guest at a non-canonical RIP faults in ring 0.
pub fn canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// RFLAGS.IOPL.
pub const IOPL_MASK: u64 = 3 << 12;

/// A descriptor-table register (GDTR or IDTR): a linear base and a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableRegister {
    /// Guest-virtual address of the table.
    pub base: u64,
    /// Its last valid byte offset.
    pub limit: u16,
}

/// The virtual CPU state of an emulated domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualCpu {
    /// The privilege level the guest believes it runs at: 0 (its kernel)
    /// or 3 (its user processes). The real one is always 3.
    pub cpl: u8,
    /// The guest's interrupt flag. The real IF stays set so the hypervisor
    /// keeps its timer; virtual interrupts wait while this is clear.
    pub interrupts: bool,
    /// The guest's I/O privilege level (RFLAGS.IOPL). The real one stays 0,
    /// or the guest's ring-3 code could reach the machine's ports; with
    /// IOPL 3 its user mode may use `in`, `out`, `cli` and `sti`, which the
    /// hypervisor then emulates.
    pub iopl: u8,
    /// CR0.
    pub cr0: u64,
    /// CR2: the address of the last page fault delivered to the guest.
    pub cr2: u64,
    /// CR3: guest-physical address of the guest's top-level page table.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8: the task priority (4 bits). Kept so it reads back; it changes
    /// nothing, as the virtual PIC has no priority threshold.
    pub cr8: u8,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK.
    pub sfmask: u64,
    /// IA32_FS_BASE (made real while the guest runs).
    pub fs_base: u64,
    /// IA32_GS_BASE (made real while the guest runs).
    pub gs_base: u64,
    /// IA32_KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// GDTR.
    pub gdtr: TableRegister,
    /// IDTR.
    pub idtr: TableRegister,
    /// LDTR selector (only the null LDT is supported).
    pub ldtr: u16,
    /// TR selector.
    pub tr: u16,
    /// Guest-virtual base of the TSS that TR names (read at `ltr`).
    pub tss_base: u64,
    /// Its limit in bytes (the I/O permission bitmap must end below it).
    pub tss_limit: u32,
    /// The code selector the guest believes it runs with.
    pub cs: u16,
    /// The stack selector the guest believes it runs with.
    pub ss: u16,
    /// DS.
    pub ds: u16,
    /// ES.
    pub es: u16,
}

impl VirtualCpu {
    /// The FS and GS bases its memory operands add.
    pub fn segment_bases(&self) -> super::address::SegmentBases {
        super::address::SegmentBases { fs: self.fs_base, gs: self.gs_base }
    }

    /// The CPU as the bare-metal boot contract leaves it
    /// (`hypercall_abi::bare_metal`): long mode, paging on the loader's
    /// tables at `cr3`, CPL 0, interrupts off, the loader's GDT.
    pub fn at_boot(cr3: u64, gdtr: TableRegister) -> Self {
        use cr::*;
        VirtualCpu {
            cpl: 0,
            interrupts: false,
            iopl: 0,
            cr0: CR0_PG | CR0_WP | CR0_ET | CR0_PE,
            cr2: 0,
            cr3,
            cr4: CR4_PAE,
            cr8: 0,
            efer: EFER_LME | EFER_LMA | EFER_NXE,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            fs_base: 0,
            gs_base: 0,
            kernel_gs_base: 0,
            gdtr,
            idtr: TableRegister::default(),
            ldtr: 0,
            tr: 0,
            tss_base: 0,
            tss_limit: 0,
            cs: BOOT_CS,
            ss: BOOT_DS,
            ds: BOOT_DS,
            es: BOOT_DS,
        }
    }

    /// Whether the guest is in its user mode.
    pub fn user_mode(&self) -> bool {
        self.cpl == 3
    }

    /// Whether EFER.NXE is set (the NX bit is honoured in its tables).
    pub fn nxe(&self) -> bool {
        self.efer & cr::EFER_NXE != 0
    }

    /// The RFLAGS the guest should see: the real ones with its virtual IF
    /// and IOPL.
    pub fn visible_rflags(&self, real: u64) -> u64 {
        const IF: u64 = 1 << 9;
        (real & !(IF | IOPL_MASK)) | if self.interrupts { IF } else { 0 } | (u64::from(self.iopl) << 12)
    }

    /// Takes the virtual IF and IOPL from `rflags` as `iretq` or `sysretq`
    /// would at the current CPL: IOPL changes only at CPL 0, IF only where
    /// CPL <= IOPL (Intel SDM vol. 2, IRET).
    pub fn load_rflags(&mut self, rflags: u64) {
        const IF: u64 = 1 << 9;
        if self.cpl <= self.iopl {
            self.interrupts = rflags & IF != 0;
        }
        if self.cpl == 0 {
            self.iopl = ((rflags & IOPL_MASK) >> 12) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_as_the_contract_says() {
        let cpu = VirtualCpu::at_boot(0x10000, TableRegister { base: 0x1800, limit: 23 });
        assert_eq!((cpu.cpl, cpu.interrupts, cpu.cs, cpu.ss), (0, false, 0x08, 0x10));
        assert!(cpu.cr0 & cr::CR0_PG != 0 && cpu.cr4 & cr::CR4_PAE != 0 && cpu.nxe());
        assert_eq!(cpu.visible_rflags(0x202), 0x002);
    }

    #[test]
    fn iopl_is_virtual_and_changes_only_at_cpl_0() {
        let mut cpu = VirtualCpu::at_boot(0x10000, TableRegister::default());
        cpu.load_rflags(0x3202);
        assert_eq!((cpu.iopl, cpu.interrupts), (3, true));
        assert_eq!(cpu.visible_rflags(0x202), 0x3202);
        cpu.cpl = 3;
        cpu.load_rflags(0x0002);
        assert_eq!((cpu.iopl, cpu.interrupts), (3, false), "IOPL kept; IF changes under IOPL 3");
        cpu.iopl = 0;
        cpu.load_rflags(0x0202);
        assert!(!cpu.interrupts, "IF kept when CPL > IOPL");
    }

    #[test]
    fn canonical_addresses() {
        for va in [0, 0x7fff_ffff_ffff, 0xffff_8000_0000_0000, u64::MAX] {
            assert!(canonical(va), "{va:#x}");
        }
        for va in [0x8000_0000_0000, 0xffff_7fff_ffff_ffff, 1 << 63] {
            assert!(!canonical(va), "{va:#x}");
        }
    }
}
