//! Each emulated instruction, from its bytes to its effect on the virtual CPU.

use super::*;
use crate::decode::decode;
use crate::emulated::guest_phys::GuestPhys;
use crate::emulated::guest_virt::tests::identity_guest;
use crate::machine_memory::TestMemory;

struct Guest {
    mem: TestMemory,
    map: alloc::vec::Vec<u64>,
    cpu: VirtualCpu,
    regs: GuestRegs,
    devices: Devices,
}

impl Guest {
    fn new() -> Self {
        let (mem, map) = identity_guest(64, false);
        let cpu = VirtualCpu::at_boot(0x1000, TableRegister { base: 0x3_0000, limit: 0x3f });
        let regs = GuestRegs { rip: 0x2_0000, rsp: 0x3_8000, rflags: 0x202, ..Default::default() };
        Guest { mem, map, cpu, regs, devices: Devices::default() }
    }

    /// A guest in its user mode (virtual CPL 3), all of its RAM user-accessible.
    fn user() -> Self {
        let (mem, map) = identity_guest(64, true);
        let mut g = Guest { mem, map, ..Guest::new() };
        (g.cpu.cpl, g.cpu.cs, g.cpu.ss) = (3, 0x23, 0x1b);
        g
    }

    /// Emulates the instruction in `bytes` (placed at rip).
    fn run(&mut self, bytes: &[u8]) -> Result<Outcome, EmulationError> {
        let insn = decode(bytes).expect("test instructions decode");
        let mut mem = GuestVirt::new(&mut self.mem, GuestPhys::new(&self.map), self.cpu.cr3, true, self.cpu.cpl == 3);
        emulate(&insn, &mut self.cpu, &mut self.regs, &mut mem, &mut self.devices, 0)
    }

    fn virt(&mut self) -> GuestVirt<'_, TestMemory> {
        GuestVirt::new(&mut self.mem, GuestPhys::new(&self.map), 0x1000, true, false)
    }
}

#[test]
fn descriptor_tables_load_and_store_the_virtual_registers() {
    let mut g = Guest::new();
    let mut raw = [0u8; 10];
    raw[..2].copy_from_slice(&0x37u16.to_le_bytes());
    raw[2..].copy_from_slice(&0x2_5000u64.to_le_bytes());
    g.virt().write(0x2_1000, &raw).unwrap();
    g.regs.rax = 0x2_1000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x10]), Ok(Outcome::Next)); // lgdt [rax]
    assert_eq!(g.cpu.gdtr, TableRegister { base: 0x2_5000, limit: 0x37 });
    assert_eq!(g.regs.rip, 0x2_0003);
    g.regs.rbx = 0x2_2000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x03]), Ok(Outcome::Next)); // sgdt [rbx]
    let mut back = [0u8; 10];
    g.virt().read(0x2_2000, &mut back, false).unwrap();
    assert_eq!(back, raw);
}

#[test]
fn a_gdt_reaching_the_reserved_slots_is_refused() {
    let mut g = Guest::new();
    let mut raw = [0u8; 10];
    raw[..2].copy_from_slice(&(14u16 * 8).to_le_bytes());
    g.virt().write(0x2_1000, &raw).unwrap();
    g.regs.rax = 0x2_1000;
    assert!(matches!(g.run(&[0x0f, 0x01, 0x10]), Err(EmulationError::Unsupported(_))));
    assert_eq!(g.regs.rip, 0x2_0000, "nothing happened");
}

#[test]
fn an_unmapped_operand_is_the_guests_page_fault() {
    let mut g = Guest::new();
    g.regs.rax = 0x40_0000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x10]), Ok(Outcome::PageFault { va: 0x40_0000, error_code: 0 }));
    assert_eq!(g.regs.rip, 0x2_0000);
}

#[test]
fn control_registers_and_the_address_space() {
    let mut g = Guest::new();
    assert_eq!(g.run(&[0x0f, 0x20, 0xc0]), Ok(Outcome::Next)); // mov rax, cr0
    assert_eq!(g.regs.rax, g.cpu.cr0);
    g.regs.rax = 0x5000;
    assert_eq!(g.run(&[0x0f, 0x22, 0xd8]), Ok(Outcome::AddressSpace)); // mov cr3, rax
    assert_eq!(g.cpu.cr3, 0x5000);
    g.regs.rax = 0;
    assert_eq!(g.run(&[0x0f, 0x22, 0xc0]), Ok(GP0), "mov cr0, 0 would leave long mode");
    g.regs.rdi = 0x7000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x3f]), Ok(Outcome::Flush(TlbFlush::Page(0x7000)))); // invlpg [rdi]
}

#[test]
fn msrs_swapgs_and_unknown_msrs() {
    let mut g = Guest::new();
    (g.regs.rcx, g.regs.rdx, g.regs.rax) = (u64::from(msr::KERNEL_GS_BASE), 0x1, 0x2345);
    assert_eq!(g.run(&[0x0f, 0x30]), Ok(Outcome::Next));
    assert_eq!(g.cpu.kernel_gs_base, 0x1_0000_2345);
    assert_eq!(g.run(&[0x0f, 0x01, 0xf8]), Ok(Outcome::SegmentBases)); // swapgs
    assert_eq!((g.cpu.gs_base, g.cpu.kernel_gs_base), (0x1_0000_2345, 0));
    (g.regs.rcx, g.regs.rdx, g.regs.rax) = (u64::from(msr::EFER), 0, 0x901);
    g.run(&[0x0f, 0x30]).unwrap();
    assert_eq!(g.cpu.efer & cr::EFER_SCE, 1);
    g.regs.rcx = u64::from(msr::EFER);
    g.run(&[0x0f, 0x32]).unwrap();
    assert_eq!(g.regs.rax & 0xd01, 0xd01, "LME, LMA, NXE and SCE read back");
    g.regs.rcx = 0x1234;
    assert_eq!(g.run(&[0x0f, 0x32]), Ok(Outcome::Fault { vector: 13, error_code: Some(0) }));
}

/// The #GP(0) a real CPU raises for a bad operand of a privileged instruction.
const GP0: Outcome = Outcome::Fault { vector: 13, error_code: Some(0) };

/// Review item: a kernel's bad control-register or MSR write stopped the
/// domain, where a real CPU gives the kernel #GP(0) and changes nothing.
#[test]
fn bad_control_register_and_msr_writes_are_the_kernels_general_protection_fault() {
    let mut g = Guest::new();
    let before = g.cpu.clone();
    let attempts: [(&[u8], u64, u64); 9] = [
        (&[0x0f, 0x22, 0xd8], 0x5000 | (1 << 63), 0), // mov cr3, rax: no PCID, so bit 63 is reserved
        (&[0x0f, 0x22, 0xc0], 0x8001_0001 | (1 << 32), 0), // mov cr0, rax: bits 63..32 are reserved
        (&[0x0f, 0x22, 0xc0], 0x2001_0011, 0), // mov cr0, rax: PG off in 64-bit mode
        (&[0x0f, 0x22, 0xe0], (1 << 20) | 0x20, 0), // mov cr4, rax: SMEP, which the virtual CPU lacks
        (&[0x0f, 0x22, 0xe0], 0x680, 0),        // mov cr4, rax: PAE off
        (&[0x44, 0x0f, 0x22, 0xc0], 0x10, 0),   // mov cr8, rax: the TPR has 4 bits
        (&[0x0f, 0x30], 0xd01 | (1 << 12), u64::from(msr::EFER)), // wrmsr EFER.SVME
        (&[0x0f, 0x30], 0x801, u64::from(msr::EFER)), // wrmsr EFER, LME off
        (&[0x0f, 0x30], 0, 0xc000_0103),        // wrmsr TSC_AUX: not an MSR of the virtual CPU
    ];
    for (bytes, value, rcx) in attempts {
        (g.regs.rax, g.regs.rdx, g.regs.rcx) = (value, 0, rcx);
        assert_eq!(g.run(bytes), Ok(GP0), "{bytes:x?} {value:#x}");
        assert_eq!(g.cpu, before, "nothing changed");
        assert_eq!(g.regs.rip, 0x2_0000, "the fault is at the instruction");
    }
    // lgdt of a non-canonical base.
    let mut raw = [0u8; 10];
    raw[2..].copy_from_slice(&0x0000_8000_0000_0000u64.to_le_bytes());
    g.virt().write(0x2_1000, &raw).unwrap();
    g.regs.rax = 0x2_1000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x18]), Ok(GP0)); // lidt [rax]
    assert_eq!(g.cpu, before);
    // What a real CPU would do but the emulator cannot still stops it.
    g.regs.rax = 0x8000_0011; // PG, ET, PE: WP off
    assert!(matches!(g.run(&[0x0f, 0x22, 0xc0]), Err(EmulationError::Unsupported(_))));
}

/// Review item: `mov cr8` checked its value but kept nothing, and `mov
/// rax, cr8` always read 0; on a real CPU CR8 is a register (the task
/// priority) that reads back what was written (SDM vol. 3, 10.8.6.1).
#[test]
fn cr8_reads_back_what_was_written() {
    let mut g = Guest::new();
    g.regs.rax = 0x9;
    assert_eq!(g.run(&[0x44, 0x0f, 0x22, 0xc0]), Ok(Outcome::Next)); // mov cr8, rax
    g.regs.rbx = 0;
    assert_eq!(g.run(&[0x44, 0x0f, 0x20, 0xc3]), Ok(Outcome::Next)); // mov rbx, cr8
    assert_eq!(g.regs.rbx, 0x9);
}

#[test]
fn the_interrupt_flag_is_virtual() {
    let mut g = Guest::new();
    g.run(&[0xfb]).unwrap();
    assert!(g.cpu.interrupts);
    g.run(&[0xfa]).unwrap();
    assert!(!g.cpu.interrupts);
    assert_eq!(g.regs.rflags & 0x200, 0x200, "the real IF never changes");
    assert_eq!(g.run(&[0xf4]), Ok(Outcome::Halt));
    assert_eq!(g.regs.rip, 0x2_0003);
}

#[test]
fn sysretq_enters_user_mode_with_the_star_selectors() {
    let mut g = Guest::new();
    g.cpu.efer |= cr::EFER_SCE;
    g.cpu.star = 0x0010_0008_0000_0000;
    (g.regs.rcx, g.regs.r11) = (0x80_0000_1000, 0x246);
    assert_eq!(g.run(&[0x48, 0x0f, 0x07]), Ok(Outcome::AddressSpace));
    assert_eq!((g.cpu.cpl, g.cpu.cs, g.cpu.ss, g.cpu.interrupts), (3, 0x23, 0x1b, true));
    assert_eq!((g.regs.rip, g.regs.rflags), (0x80_0000_1000, 0x246));
    // A user process may not do it again.
    assert_eq!(g.run(&[0x48, 0x0f, 0x07]), Ok(Outcome::Fault { vector: 13, error_code: Some(0) }));
}

#[test]
fn iretq_pops_its_frame_and_takes_the_rpl_as_the_new_cpl() {
    let mut g = Guest::new();
    let frame: [u64; 5] = [0x80_0000_2000, 0x23, 0x202, 0x80_0010_0000, 0x1b];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8000, &bytes).unwrap();
    assert_eq!(g.run(&[0x48, 0xcf]), Ok(Outcome::AddressSpace));
    assert_eq!((g.regs.rip, g.regs.rsp, g.cpu.cpl, g.cpu.cs, g.cpu.interrupts), (0x80_0000_2000, 0x80_0010_0000, 3, 0x23, true));
    // To the kernel's own level: no mode change.
    let mut g = Guest::new();
    let frame: [u64; 5] = [0x20_1000, 0x08, 0x2, 0x3_9000, 0x10];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8000, &bytes).unwrap();
    assert_eq!(g.run(&[0x48, 0xcf]), Ok(Outcome::Next));
    assert!(!g.cpu.interrupts);
}

#[test]
fn ports_reach_the_devices() {
    let mut g = Guest::new();
    (g.regs.rdx, g.regs.rax) = (0x3f8, 0x1234_5641);
    assert_eq!(g.run(&[0xee]), Ok(Outcome::Console(b'A'))); // out dx, al
    g.regs.rdx = 0x3fd;
    g.run(&[0xec]).unwrap(); // in al, dx
    assert_eq!(g.regs.rax, 0x1234_5660, "only al changes");
    g.regs.rax = 0x34;
    assert_eq!(g.run(&[0xe6, 0x43]), Ok(Outcome::Next)); // out 0x43, al
    g.regs.rax = 0x9b;
    g.run(&[0xe6, 0x40]).unwrap();
    g.regs.rax = 0x2e;
    assert_eq!(g.run(&[0xe6, 0x40]), Ok(Outcome::TimerChanged));
    g.regs.rax = 3;
    assert_eq!(g.run(&[0xe6, 0xf4]), Ok(Outcome::Exit(3)));
}

#[test]
fn ltr_reads_the_tss_base_and_marks_it_busy() {
    let mut g = Guest::new();
    let tss_base: u64 = 0x12_3456_7000;
    let mut d = [0u8; 16];
    d[0..2].copy_from_slice(&0x67u16.to_le_bytes());
    d[2..4].copy_from_slice(&(tss_base as u16).to_le_bytes());
    d[4] = (tss_base >> 16) as u8;
    d[5] = 0x89;
    d[7] = (tss_base >> 24) as u8;
    d[8..12].copy_from_slice(&((tss_base >> 32) as u32).to_le_bytes());
    g.virt().write(0x3_0000 + 0x30, &d).unwrap();
    g.regs.rax = 0x30;
    assert_eq!(g.run(&[0x0f, 0x00, 0xd8]), Ok(Outcome::Next)); // ltr ax
    assert_eq!((g.cpu.tr, g.cpu.tss_base), (0x30, tss_base));
    let mut back = [0u8; 1];
    g.virt().read(0x3_0035, &mut back, false).unwrap();
    assert_eq!(back[0], 0x8b, "busy");
    g.regs.rax = 0x30; // busy now: a second ltr faults
    assert_eq!(g.run(&[0x0f, 0x00, 0xd8]), Ok(Outcome::Fault { vector: 13, error_code: Some(0x30) }));
    g.run(&[0x0f, 0x00, 0xc8]).unwrap(); // str eax
    assert_eq!(g.regs.rax, 0x30);
}

/// `str`, `sldt` and `smsw` into a 16-bit register write its low 16 bits
/// and keep the rest; into a 32- or 64-bit one they zero-extend (SDM vol.
/// 2, STR, SLDT, SMSW).
#[test]
fn selector_stores_to_a_register_write_the_operand_size() {
    let mut g = Guest::new();
    g.cpu.tr = 0x30;
    g.regs.rax = 0xdead_beef_cafe_f00d;
    g.run(&[0x66, 0x0f, 0x00, 0xc8]).unwrap(); // str ax
    assert_eq!(g.regs.rax, 0xdead_beef_cafe_0030);
    g.run(&[0x66, 0x0f, 0x01, 0xe0]).unwrap(); // smsw ax
    assert_eq!(g.regs.rax, 0xdead_beef_cafe_0000 | (g.cpu.cr0 & 0xffff));
    g.run(&[0x66, 0x0f, 0x00, 0xc0]).unwrap(); // sldt ax
    assert_eq!(g.regs.rax, 0xdead_beef_cafe_0000);
    g.regs.rax = u64::MAX;
    g.run(&[0x48, 0x0f, 0x00, 0xc8]).unwrap(); // str rax
    assert_eq!(g.regs.rax, 0x30);
}

#[test]
fn segment_loads_are_remembered_and_user_mode_gets_general_protection() {
    let mut g = Guest::new();
    g.regs.rax = 0x18;
    g.run(&[0x8e, 0xd0]).unwrap(); // mov ss, ax
    assert_eq!(g.cpu.ss, 0x18);
    g.cpu.cpl = 3;
    for insn in [&[0xfa][..], &[0xf4], &[0x0f, 0x22, 0xd8], &[0xee], &[0x0f, 0x01, 0xf8]] {
        assert_eq!(g.run(insn), Ok(Outcome::Fault { vector: 13, error_code: Some(0) }), "{insn:x?}");
    }
}

#[test]
fn lretq_reloads_cs_at_the_same_level() {
    let mut g = Guest::new();
    let frame: [u64; 2] = [0x20_1234, 0x08];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8000, &bytes).unwrap();
    g.cpu.cs = 0x28;
    assert_eq!(g.run(&[0x48, 0xcb]), Ok(Outcome::Next));
    assert_eq!((g.regs.rip, g.regs.rsp, g.cpu.cs), (0x20_1234, 0x3_8010, 0x08));
    let frame: [u64; 2] = [0x20_1234, 0x23];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8010, &bytes).unwrap();
    assert!(matches!(g.run(&[0x48, 0xcb]), Err(EmulationError::Unsupported(_))));
}

/// Review item: with the guest's CR4.UMIP clear, `sgdt`, `sidt`, `sldt`,
/// `smsw` and `str` are legal in its user mode and return the virtual
/// registers (they trap only because the real CR4.UMIP is set); with it
/// set they are #GP, as on hardware.
#[test]
fn user_mode_descriptor_stores_follow_the_guests_umip() {
    let mut g = Guest::user();
    g.cpu.tr = 0x30;
    g.regs.rbx = 0x2_2000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x03]), Ok(Outcome::Next)); // sgdt [rbx]
    let mut back = [0u8; 10];
    g.virt().read(0x2_2000, &mut back, false).unwrap();
    assert_eq!(back[..2], 0x3fu16.to_le_bytes());
    assert_eq!(back[2..], 0x3_0000u64.to_le_bytes());
    assert_eq!(g.run(&[0x0f, 0x00, 0xc8]), Ok(Outcome::Next)); // str eax
    assert_eq!(g.regs.rax, 0x30);
    assert_eq!(g.run(&[0x0f, 0x01, 0xe0]), Ok(Outcome::Next)); // smsw eax
    assert_eq!(g.regs.rax, g.cpu.cr0 & 0xffff_ffff);
    g.cpu.cr4 |= cr::CR4_UMIP;
    let rip = g.regs.rip;
    for insn in [&[0x0f, 0x01, 0x03][..], &[0x0f, 0x01, 0x0b], &[0x0f, 0x00, 0xc0], &[0x0f, 0x01, 0xe0], &[0x0f, 0x00, 0xc8]] {
        assert_eq!(g.run(insn), Ok(GP0), "{insn:x?}");
    }
    assert_eq!(g.regs.rip, rip);
    // The kernel is never refused.
    g.cpu.cpl = 0;
    assert_eq!(g.run(&[0x0f, 0x00, 0xc8]), Ok(Outcome::Next));
}

/// Review item: `cli`, `sti`, `in` and `out` in the guest's user mode
/// depend on its virtual IOPL (and, for ports, its TSS's I/O bitmap).
#[test]
fn user_mode_io_and_interrupt_flag_follow_the_virtual_iopl_and_io_bitmap() {
    let mut g = Guest::user();
    (g.regs.rdx, g.regs.rax) = (0x3f8, u64::from(b'A'));
    assert_eq!(g.run(&[0xfb]), Ok(GP0), "sti under IOPL 0");
    assert_eq!(g.run(&[0xee]), Ok(GP0), "out without a TSS");
    g.cpu.iopl = 3;
    assert_eq!(g.run(&[0xfb]), Ok(Outcome::Next));
    assert!(g.cpu.interrupts);
    assert_eq!(g.run(&[0xee]), Ok(Outcome::Console(b'A')));
    // IOPL 0, but a TSS whose bitmap (at offset 0x68) opens ports 0x3f8..0x3ff.
    g.cpu.iopl = 0;
    let tss = 0x3_4000;
    (g.cpu.tss_base, g.cpu.tss_limit) = (tss, 0x68 + 0x2000);
    g.virt().write(tss + 0x66, &0x68u16.to_le_bytes()).unwrap();
    let mut bitmap = [0xffu8; 0x2000];
    bitmap[0x3f8 / 8] = 0;
    g.virt().write(tss + 0x68, &bitmap).unwrap();
    assert_eq!(g.run(&[0xee]), Ok(Outcome::Console(b'A')), "out dx, al to 0x3f8");
    g.regs.rdx = 0x3fd;
    assert_eq!(g.run(&[0xec]), Ok(Outcome::Next), "in al, dx from 0x3fd");
    g.regs.rdx = 0x3fe;
    assert_eq!(g.run(&[0xed]), Ok(GP0), "in eax, dx: 0x400 and 0x401 are closed");
    g.regs.rdx = 0x3f7;
    assert_eq!(g.run(&[0xee]), Ok(GP0));
    g.cpu.tss_limit = 0x68 + 0x3f8 / 8; // the second byte the CPU reads is past the limit
    g.regs.rdx = 0x3f8;
    assert_eq!(g.run(&[0xee]), Ok(GP0));
    assert_eq!(g.run(&[0xfa]), Ok(GP0), "cli under IOPL 0");
}

/// Review item: a user process's own `iretq` (to its own level) raised #NP
/// on the hypervisor's not-present user selectors and went to its kernel;
/// a real CPU just returns. One to the kernel's level is #GP(selector).
/// And the kernel's `iretq` sets the virtual IOPL.
#[test]
fn iretq_in_user_mode_and_the_virtual_iopl() {
    let mut g = Guest::user();
    let frame: [u64; 5] = [0x2_1000, 0x23, 0x3202, 0x3_9000, 0x1b];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8000, &bytes).unwrap();
    assert_eq!(g.run(&[0x48, 0xcf]), Ok(Outcome::Next));
    assert_eq!((g.regs.rip, g.regs.rsp, g.cpu.cpl), (0x2_1000, 0x3_9000, 3));
    assert_eq!((g.cpu.iopl, g.cpu.interrupts), (0, false), "CPL 3 changes neither IOPL nor IF under IOPL 0");
    let frame: [u64; 5] = [0x2_1000, 0x08, 0x2, 0x3_9000, 0x10];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_9000, &bytes).unwrap();
    assert_eq!(g.run(&[0x48, 0xcf]), Ok(Outcome::Fault { vector: 13, error_code: Some(0x08) }));
    // The kernel returns to user mode with IOPL 3.
    let mut g = Guest::new();
    let frame: [u64; 5] = [0x80_0000_2000, 0x23, 0x3202, 0x80_0010_0000, 0x1b];
    let bytes: alloc::vec::Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.virt().write(0x3_8000, &bytes).unwrap();
    assert_eq!(g.run(&[0x48, 0xcf]), Ok(Outcome::AddressSpace));
    assert_eq!((g.cpu.iopl, g.cpu.cpl), (3, 3));
    assert_eq!(g.regs.rflags & (3 << 12), 0, "the real IOPL stays 0");
    assert_eq!(g.cpu.visible_rflags(g.regs.rflags) & (3 << 12), 3 << 12);
}

/// The I/O bitmap at its edges: the two bytes the CPU reads may straddle a
/// page (and the second may not be mapped: the kernel's #PF, as a
/// supervisor access, at that address), and a 4-byte access at port
/// 0xffff tests bits of two bytes without overflowing.
#[test]
fn the_io_bitmap_read_straddles_pages_and_faults_as_the_kernel() {
    let mut g = Guest::user();
    let tss = 0x3_b000;
    (g.cpu.tss_base, g.cpu.tss_limit) = (tss, 0xffff_ffff);
    // The bitmap's byte for ports 0xfff8..0xffff is the last of a page.
    g.virt().write(tss + 0x66, &0x2000u16.to_le_bytes()).unwrap();
    g.virt().write(tss + 0x3fff, &[0x80]).unwrap(); // 0xffff is closed; the rest open
    g.regs.rdx = 0xfffe;
    assert_eq!(g.run(&[0xec]), Ok(Outcome::Next), "in al, dx: 0xfffe is open");
    g.regs.rdx = 0xffff;
    assert_eq!(g.run(&[0xec]), Ok(GP0), "0xffff is closed");
    g.virt().write(tss + 0x3fff, &[0]).unwrap();
    assert_eq!(g.run(&[0xed]), Ok(Outcome::Next), "in eax, dx at 0xffff: bits 7..10, the next page's byte is 0");
    // A bitmap on a page that is not mapped: the #PF is the kernel's.
    let tss = 0x3_f000;
    g.cpu.tss_base = tss;
    g.virt().write(tss + 0x66, &0x1000u16.to_le_bytes()).unwrap();
    g.regs.rdx = 0x10;
    assert_eq!(g.run(&[0xec]), Ok(Outcome::PageFault { va: 0x4_0002, error_code: 0 }));
}

/// Bit 47 set, 63..48 clear: the first non-canonical address.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

#[test]
fn a_non_canonical_operand_is_gp_or_ss_through_the_stack_never_a_page_fault() {
    const GP: Result<Outcome, EmulationError> = Ok(Outcome::Fault { vector: 13, error_code: Some(0) });
    const SS: Result<Outcome, EmulationError> = Ok(Outcome::Fault { vector: 12, error_code: Some(0) });
    // Every emulated instruction that reads or writes a memory operand,
    // with that operand at `rdi` (or `rbp`: through SS), non-canonical.
    let cases: [(&str, &[u8], Result<Outcome, EmulationError>); 13] = [
        ("sldt [rdi]", &[0x0f, 0x00, 0x07], GP),
        ("sldt [rbp]", &[0x0f, 0x00, 0x45, 0x00], SS),
        ("sldt ds:[rbp]", &[0x3e, 0x0f, 0x00, 0x45, 0x00], GP),
        ("sldt ss:[rdi]", &[0x36, 0x0f, 0x00, 0x07], SS),
        ("str [rdi]", &[0x0f, 0x00, 0x0f], GP),
        ("smsw [rdi]", &[0x0f, 0x01, 0x27], GP),
        ("sgdt [rdi]", &[0x0f, 0x01, 0x07], GP),
        ("sidt [rbp]", &[0x0f, 0x01, 0x4d, 0x00], SS),
        ("lgdt [rdi]", &[0x0f, 0x01, 0x17], GP),
        ("lmsw [rdi]", &[0x0f, 0x01, 0x37], GP),
        ("lldt [rdi]", &[0x0f, 0x00, 0x17], GP),
        ("ltr [rdi]", &[0x0f, 0x00, 0x1f], GP),
        ("mov ds, [rdi]", &[0x8e, 0x1f], GP),
    ];
    for (name, bytes, want) in cases {
        let mut g = Guest::new();
        (g.regs.rdi, g.regs.rbp) = (NON_CANONICAL, NON_CANONICAL);
        let before = (g.cpu.clone(), g.regs);
        assert_eq!(g.run(bytes), want, "{name}");
        assert_eq!((g.cpu.clone(), g.regs), before, "{name}: nothing changed");
    }
    // The last byte counts: sgdt writes 10 bytes, the last 2 past the top.
    let mut g = Guest::new();
    g.regs.rdi = NON_CANONICAL - 8;
    assert_eq!(g.run(&[0x0f, 0x01, 0x07]), GP);
    // An FS or GS base counts too.
    g.cpu.gs_base = NON_CANONICAL - 0x1000;
    g.regs.rdi = 0x1000;
    assert_eq!(g.run(&[0x65, 0x0f, 0x00, 0x07]), GP, "sldt gs:[rdi]");
    // The frames of `iretq` and `lretq` are popped through SS.
    for bytes in [&[0x48, 0xcf][..], &[0x48, 0xcb]] {
        let mut g = Guest::new();
        g.regs.rsp = NON_CANONICAL - 8;
        assert_eq!(g.run(bytes), SS, "{bytes:02x?}");
    }
}

#[test]
fn invlpg_of_a_non_canonical_address_does_nothing() {
    let mut g = Guest::new();
    g.regs.rdi = NON_CANONICAL;
    assert_eq!(g.run(&[0x0f, 0x01, 0x3f]), Ok(Outcome::Next)); // invlpg [rdi]
    assert_eq!(g.regs.rip, 0x2_0003);
    g.regs.rdi = 0x5000;
    assert_eq!(g.run(&[0x0f, 0x01, 0x3f]), Ok(Outcome::Flush(TlbFlush::Page(0x5000))));
}

#[test]
fn lldt_and_ltr_raise_what_the_cpu_raises_for_a_selector_that_names_no_ldt_or_tss() {
    let mut g = Guest::new();
    // The GDT at 0x3_0000 (limit 0x3f): a data segment at 0x10, an LDT
    // descriptor not present at 0x20, a present one at 0x30.
    g.virt().write(0x3_0010, &0x00cf_9200_0000_ffffu64.to_le_bytes()).unwrap();
    g.virt().write(0x3_0020, &[0xff, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    g.virt().write(0x3_0030, &[0xff, 0, 0, 0, 0, 0x82, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let fault = |vector, code: u64| Ok(Outcome::Fault { vector, error_code: Some(code) });
    for (selector, want) in [
        (0x10u64, fault(13, 0x10)), // a data segment
        (0x13, fault(13, 0x10)),    // (the RPL is not part of the error code)
        (0x0c, fault(13, 0x0c)),    // in the LDT
        (0x40, fault(13, 0x40)),    // beyond the GDT limit
        (0x20, fault(11, 0x20)),    // an LDT, not present
    ] {
        g.regs.rax = selector;
        assert_eq!(g.run(&[0x0f, 0x00, 0xd0]), want, "lldt {selector:#x}"); // lldt ax
        assert_eq!(g.regs.rip, 0x2_0000);
    }
    g.regs.rax = 0x30;
    assert!(matches!(g.run(&[0x0f, 0x00, 0xd0]), Err(EmulationError::Unsupported(_))), "a real LDT");
    g.regs.rax = 0;
    assert_eq!(g.run(&[0x0f, 0x00, 0xd0]), Ok(Outcome::Next), "the null LDT");
    // ltr: the LDT descriptor is the wrong type; a TSS not present is #NP.
    g.regs.rax = 0x30;
    assert_eq!(g.run(&[0x0f, 0x00, 0xd8]), fault(13, 0x30));
    g.virt().write(0x3_0030, &[0x67, 0, 0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(g.run(&[0x0f, 0x00, 0xd8]), fault(11, 0x30));
    g.regs.rax = 0;
    assert_eq!(g.run(&[0x0f, 0x00, 0xd8]), fault(13, 0), "a null selector");
}
