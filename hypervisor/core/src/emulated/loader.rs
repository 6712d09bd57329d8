//! The hypervisor as the loader of the bare-metal boot contract.
//!
//! Natively, the boot shim loads an unmodified kernel (see
//! `hypercall_abi::bare_metal`); for an emulated domain the hypervisor does
//! the same job in the domain's guest-physical memory, so the kernel finds
//! exactly what the contract promises: its segments at their addresses,
//! RAM identity-mapped by page tables in the loader area, a boot GDT, a
//! stack and a [`BootInfo`]. The loader area is laid out as:
//!
//! ```text
//! 0x1000   BootInfo
//! 0x2000   boot GDT (null, 64-bit code 0x08, data 0x10)
//! 0xc000   boot stack (16 KiB, top at 0x10000)
//! 0x10000  boot page tables: L4, L3, L2, then one L1 per 2 MiB of RAM
//! ```

use super::cpu::{TableRegister, VirtualCpu};
use super::guest_phys::{Gpa, GuestPhys};
use crate::builder::{BuildError, DomainPlan};
use crate::frame_table::{FrameTable, Mfn, Owner};
use crate::machine_memory::MachineMemory;
use crate::paging::{flags, table_index};
use crate::vcpu::GuestRegs;
use alloc::vec::Vec;
use hypercall_abi::bare_metal::{
    BootInfo, BOOT_CMDLINE_MAX, BOOT_INFO_MAGIC, BOOT_INFO_VERSION, LOADER_AREA_END, MAX_MEMORY,
};
use hypercall_abi::PAGE_SIZE;
use zerocopy::{FromZeros, IntoBytes};

/// Guest-physical address of the [`BootInfo`] (in `rdi` at entry).
pub const BOOT_INFO: u64 = 0x1000;
/// Guest-physical address of the boot GDT.
pub const BOOT_GDT: u64 = 0x2000;
/// Top of the boot stack (in `rsp` at entry).
pub const BOOT_STACK_TOP: u64 = 0x10000;
/// Guest-physical address of the boot top-level table (the initial CR3).
pub const BOOT_TABLES: u64 = 0x10000;
/// What the kernel reads as its loader's name.
pub const LOADER_NAME: &[u8] = b"parvus trap-and-emulate";

/// The boot GDT: null, 64-bit ring-0 code (0x08), ring-0 data (0x10).
const BOOT_GDT_ENTRIES: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// A freshly loaded emulated machine: its RAM, its CPU, its registers.
#[derive(Debug)]
pub struct Loaded {
    /// Machine frame of each guest frame.
    pub frames: Vec<Mfn>,
    /// The virtual CPU at the kernel's entry.
    pub cpu: VirtualCpu,
    /// The registers at the kernel's entry (real selectors not yet set).
    pub regs: GuestRegs,
}

/// Allocates the domain's RAM and loads the kernel of `plan` into it.
pub fn load(plan: &DomainPlan<'_>, frames: &mut FrameTable, mem: &mut impl MachineMemory) -> Result<Loaded, BuildError> {
    let memory = plan.memory / PAGE_SIZE * PAGE_SIZE;
    if memory > MAX_MEMORY || memory < LOADER_AREA_END {
        return Err(BuildError::SegmentOutside { vaddr: 0, mem_size: memory });
    }
    if plan.cmdline.len() > BOOT_CMDLINE_MAX {
        return Err(BuildError::TooLong("command line"));
    }
    for s in &plan.segments {
        let fits = s.vaddr >= LOADER_AREA_END && s.vaddr.checked_add(s.mem_size).is_some_and(|end| end <= memory);
        if !fits {
            return Err(BuildError::SegmentOutside { vaddr: s.vaddr, mem_size: s.mem_size });
        }
    }
    let owned = frames.alloc_many(Owner::Domain(plan.id), memory / PAGE_SIZE).map_err(BuildError::Frames)?;
    for &mfn in &owned {
        mem.zero_frame(mfn);
    }
    let phys = GuestPhys::new(&owned);
    let write = |mem: &mut _, gpa: u64, bytes: &[u8]| phys.write(mem, Gpa(gpa), bytes).expect("checked to be inside RAM");

    for s in &plan.segments {
        write(mem, s.vaddr, s.data); // the rest of mem_size is already zero
    }

    let mut info = BootInfo::new_zeroed();
    info.magic = BOOT_INFO_MAGIC;
    info.version = BOOT_INFO_VERSION;
    info.mem_bytes = memory;
    info.loader[..LOADER_NAME.len()].copy_from_slice(LOADER_NAME);
    info.cmdline_len = plan.cmdline.len() as u32;
    info.cmdline[..plan.cmdline.len()].copy_from_slice(plan.cmdline.as_bytes());
    write(mem, BOOT_INFO, info.as_bytes());

    let gdt: Vec<u8> = BOOT_GDT_ENTRIES.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, BOOT_GDT, &gdt);

    // Identity map of all RAM with 4 KiB pages: supervisor, writable, executable.
    let rw = flags::PRESENT | flags::WRITABLE;
    let (l4, l3, l2, l1_base) = (BOOT_TABLES, BOOT_TABLES + 0x1000, BOOT_TABLES + 0x2000, BOOT_TABLES + 0x3000);
    write(mem, l4, &(l3 | rw).to_le_bytes());
    write(mem, l3, &(l2 | rw).to_le_bytes());
    for gfn in 0..memory / PAGE_SIZE {
        let va = gfn * PAGE_SIZE;
        let l1 = l1_base + (gfn / 512) * PAGE_SIZE;
        if gfn % 512 == 0 {
            write(mem, l2 + table_index(va, 2) as u64 * 8, &(l1 | rw).to_le_bytes());
        }
        write(mem, l1 + table_index(va, 1) as u64 * 8, &(va | rw).to_le_bytes());
    }

    let gdtr = TableRegister { base: BOOT_GDT, limit: (BOOT_GDT_ENTRIES.len() * 8 - 1) as u16 };
    let cpu = VirtualCpu::at_boot(BOOT_TABLES, gdtr);
    let regs = GuestRegs::initial(plan.entry, BOOT_STACK_TOP, BOOT_INFO);
    Ok(Loaded { frames: owned, cpu, regs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Segment;
    use crate::domain::DomainId;
    use crate::emulated::guest_walk::{walk, Access};
    use crate::machine_memory::TestMemory;
    use crate::manifest::Expect;
    use zerocopy::FromBytes;

    fn plan<'a>(segments: Vec<Segment<'a>>, memory: u64) -> DomainPlan<'a> {
        DomainPlan {
            id: DomainId(0),
            name: "k",
            cmdline: "op=all",
            memory,
            max_memory: memory,
            expect: Expect::Exit(0),
            weight: 256,
            time_limit_ns: None,
            umip: true,
            entry: 0x20_0000,
            segments,
            time: crate::time::TimeBase::default(),
        }
    }

    #[test]
    fn the_kernel_finds_what_the_contract_promises() {
        let code = [0xf4u8, 0x90];
        let mut mem = TestMemory::new(2048 + 64);
        let mut ft = FrameTable::new(2048 + 64);
        ft.add_free(64, 2048 + 64);
        let segs = alloc::vec![Segment { vaddr: 0x20_0000, data: &code, mem_size: 0x2000, writable: false, executable: true }];
        let loaded = load(&plan(segs, 4 << 20), &mut ft, &mut mem).unwrap();
        assert_eq!(loaded.frames.len(), 1024);
        let phys = GuestPhys::new(&loaded.frames);
        let t = walk(&mem, &phys, loaded.cpu.cr3, 0x20_0001, Access::KERNEL_WRITE, true).unwrap();
        assert_eq!(t.gpa, Gpa(0x20_0001), "identity-mapped and writable");
        assert!(walk(&mem, &phys, loaded.cpu.cr3, 0x3f_f000, Access::KERNEL_READ, true).is_ok(), "to the last page");
        assert!(walk(&mem, &phys, loaded.cpu.cr3, 0x40_0000, Access::KERNEL_READ, true).is_err());
        let mut b = [0u8; 2];
        phys.read(&mem, Gpa(0x20_0000), &mut b).unwrap();
        assert_eq!(b, code);
        let mut raw = [0u8; core::mem::size_of::<BootInfo>()];
        phys.read(&mem, Gpa(BOOT_INFO), &mut raw).unwrap();
        let info = BootInfo::read_from_bytes(&raw).unwrap();
        assert_eq!((info.magic, info.mem_bytes, info.cmdline(), info.loader_name()), (BOOT_INFO_MAGIC, 4 << 20, &b"op=all"[..], LOADER_NAME));
        assert_eq!((loaded.regs.rip, loaded.regs.rsp, loaded.regs.rdi), (0x20_0000, BOOT_STACK_TOP, BOOT_INFO));
        assert_eq!((loaded.cpu.cpl, loaded.cpu.gdtr.base), (0, BOOT_GDT));
    }

    #[test]
    fn segments_outside_ram_or_in_the_loader_area_are_refused() {
        let mut mem = TestMemory::new(1100);
        let mut ft = FrameTable::new(1100);
        ft.add_free(64, 1100);
        let data = [0u8; 4];
        for vaddr in [0x1000, 0x3f_fffe] {
            let segs = alloc::vec![Segment { vaddr, data: &data, mem_size: 4, writable: true, executable: false }];
            assert!(matches!(load(&plan(segs, 4 << 20), &mut ft, &mut mem), Err(BuildError::SegmentOutside { .. })));
        }
        assert_eq!(ft.free_count(), 1100 - 64, "nothing was taken");
    }
}
