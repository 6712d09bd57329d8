//! The machine an unmodified ("bare-metal") kernel is handed, whoever hands it.
//!
//! Parvus runs two kinds of guest. A *paravirtualized* guest links the guest
//! SDK and asks for everything through hypercalls (the rest of this crate).
//! An *unmodified* kernel is written for a real PC: it runs in ring 0, loads
//! its own GDT, IDT and page tables, and drives the serial port, the 8259
//! PIC and the 8254 PIT through I/O ports. It can be started two ways, and
//! it must not be able to tell them apart except by asking [`BootInfo`]:
//!
//! - **natively**: QEMU boots the small *boot shim* (`demo-guests/boot-shim`)
//!   through its PVH note; the shim loads the kernel ELF from `-initrd`,
//!   builds identity page tables, enters long mode and jumps to the
//!   kernel's entry in ring 0;
//! - **under trap-and-emulate** (`mode = "emulated"` in a manifest): the
//!   hypervisor loads the same ELF into the domain's guest-physical memory,
//!   builds the same kind of tables and starts it in ring 3 with a
//!   *virtual* CPL of 0; every privileged instruction then traps and is
//!   emulated.
//!
//! This module is that contract, written once for the shim, the hypervisor
//! and the bare-metal runtime the kernels link.
//!
//! ## The state at the kernel's entry point (ELF `e_entry`)
//!
//! - 64-bit long mode, CPL 0, interrupts off (IF = 0), DF = 0.
//! - CS = [`BOOT_CS`] (flat 64-bit code), DS = ES = SS = [`BOOT_DS`].
//! - Paging on (CR0.PG, CR4.PAE, EFER.LME/LMA, EFER.NXE): guest-physical
//!   `[0, mem_bytes)` is identity-mapped, writable, supervisor, executable,
//!   with 4 KiB or 2 MiB pages. The tables live in the loader area; the
//!   kernel must build and load its own before it reuses that area.
//! - CR0.WP is set; CR0.EM/MP/TS and CR4.OSFXSR/OSXMMEXCPT are *not* set up
//!   for SSE: the kernel's first instructions must do that (Rust's
//!   prebuilt `core` uses SSE).
//! - `rdi` = physical (= virtual) address of a [`BootInfo`]; `rsp` = the top
//!   of a 16 KiB stack in the loader area, 16-byte aligned.
//! - The PIC and the PIT are as after reset: the kernel programs them.
//!
//! ## Physical memory
//!
//! ```text
//! 0                   LOADER_AREA_END                      mem_bytes
//! | loader's: boot info, tables, stack | kernel image | free RAM ... |
//! ```
//!
//! Every loadable segment of the kernel ELF has `p_paddr == p_vaddr`, at or
//! above [`LOADER_AREA_END`], and ends below `mem_bytes`. The kernel's
//! virtual addresses must stay in the lower half, PML4 slots
//! `0..`[`KERNEL_PML4_SLOTS`] (the upper half is the hypervisor's, as it is
//! for every guest).
//!
//! ## Descriptor tables under trap-and-emulate
//!
//! While an emulated kernel runs, the hypervisor's GDT holds the real
//! ring-3 selectors it runs on in slots [`RESERVED_GDT_SLOT`] and above; the
//! kernel's own GDT must therefore be smaller (limit below
//! `RESERVED_GDT_SLOT * 8`), or the hypervisor stops it at its `lgdt`.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `BootInfo::magic`: the bytes `"PRVSBOOT"` read as a little-endian `u64`.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"PRVSBOOT");

/// Version of the [`BootInfo`] layout.
pub const BOOT_INFO_VERSION: u32 = 1;

/// End of the loader's part of physical memory (2 MiB): kernels load above it.
pub const LOADER_AREA_END: u64 = 0x20_0000;

/// Most memory an unmodified kernel is given (the shim clamps QEMU's RAM to
/// it; a manifest may not ask for more in emulated mode).
pub const MAX_MEMORY: u64 = 256 << 20;

/// PML4 slots an unmodified kernel may use: `0..KERNEL_PML4_SLOTS` (the
/// lower half, as for a paravirtualized guest).
pub const KERNEL_PML4_SLOTS: usize = 255;

/// The code selector at entry (GDT slot 1, RPL 0).
pub const BOOT_CS: u16 = 0x08;

/// The data selector at entry (GDT slot 2, RPL 0).
pub const BOOT_DS: u16 = 0x10;

/// First GDT slot the hypervisor keeps for itself while an emulated kernel
/// runs; the kernel's GDT must end below it.
pub const RESERVED_GDT_SLOT: u16 = 14;

/// Longest loader name, in bytes.
pub const LOADER_NAME_MAX: usize = 32;

/// Longest command line, in bytes.
pub const BOOT_CMDLINE_MAX: usize = 256;

/// What the loader tells the kernel, at the address in `rdi`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// Bytes of `cmdline` in use.
    pub cmdline_len: u32,
    /// RAM in bytes, from physical address 0 (a multiple of 4 KiB).
    pub mem_bytes: u64,
    /// Who loaded the kernel, NUL-padded ASCII: `"boot-shim"` natively,
    /// `"parvus trap-and-emulate"` under the hypervisor.
    pub loader: [u8; LOADER_NAME_MAX],
    /// The command line (QEMU's `-append` natively, the manifest's
    /// `cmdline` under the hypervisor), not NUL-terminated.
    pub cmdline: [u8; BOOT_CMDLINE_MAX],
}

const_assert_eq!(core::mem::size_of::<BootInfo>(), 312);
const_assert_eq!(core::mem::offset_of!(BootInfo, mem_bytes), 16);
const_assert_eq!(core::mem::offset_of!(BootInfo, loader), 24);
const_assert_eq!(core::mem::offset_of!(BootInfo, cmdline), 56);

impl BootInfo {
    /// The loader name, without its padding.
    pub fn loader_name(&self) -> &[u8] {
        let end = self.loader.iter().position(|&b| b == 0).unwrap_or(LOADER_NAME_MAX);
        &self.loader[..end]
    }

    /// The command line.
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..(self.cmdline_len as usize).min(BOOT_CMDLINE_MAX)]
    }
}

/// The I/O ports of the devices an unmodified kernel may use. Natively they
/// are QEMU's; under trap-and-emulate the hypervisor emulates exactly these
/// (a read of any other port returns all ones, a write is ignored and counted).
pub mod port {
    /// COM1, a 16550 UART: 8 registers from here (data at +0, line status at +5).
    pub const COM1: u16 = 0x3f8;
    /// Line-status register of COM1 (bit 5: transmitter empty).
    pub const COM1_LINE_STATUS: u16 = COM1 + 5;
    /// Master 8259 PIC, command register.
    pub const PIC1_COMMAND: u16 = 0x20;
    /// Master 8259 PIC, data (mask) register.
    pub const PIC1_DATA: u16 = 0x21;
    /// Slave 8259 PIC, command register.
    pub const PIC2_COMMAND: u16 = 0xa0;
    /// Slave 8259 PIC, data (mask) register.
    pub const PIC2_DATA: u16 = 0xa1;
    /// 8254 PIT channel 0 data (its output is IRQ 0).
    pub const PIT_CHANNEL0: u16 = 0x40;
    /// 8254 PIT mode/command register.
    pub const PIT_COMMAND: u16 = 0x43;
    /// QEMU's `isa-debug-exit`: writing byte `v` stops the machine with
    /// status `v` (QEMU exits with `(v << 1) | 1`); under the hypervisor it
    /// ends the domain as `exit(v)`.
    pub const DEBUG_EXIT: u16 = 0xf4;
}

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_its_name() {
        assert_eq!(&BOOT_INFO_MAGIC.to_le_bytes(), b"PRVSBOOT");
    }

    #[test]
    fn names_and_cmdline_lose_their_padding() {
        let mut info = BootInfo::new_zeroed_for_test();
        info.loader[..9].copy_from_slice(b"boot-shim");
        info.cmdline[..5].copy_from_slice(b"quick");
        info.cmdline_len = 5;
        assert_eq!(info.loader_name(), b"boot-shim");
        assert_eq!(info.cmdline(), b"quick");
        info.cmdline_len = 10_000;
        assert_eq!(info.cmdline().len(), BOOT_CMDLINE_MAX);
    }

    impl BootInfo {
        fn new_zeroed_for_test() -> Self {
            zerocopy::FromZeros::new_zeroed()
        }
    }
}
