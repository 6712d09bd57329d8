//! Building a domain: memory, image, page tables, start-info page, vCPU.
//!
//! The builder writes everything through [`MachineMemory`], so the exact
//! bytes a guest starts with are checked by host tests. The address space it
//! builds is the picture in [`hypercall_abi::layout`]:
//! every pfn mapped at `GUEST_VIRT_BASE + pfn * 4 KiB` with the least rights
//! it needs (image pages as their ELF segments say, everything else
//! non-executable; start info, frame list and page tables read-only; the
//! guard page unmapped), and the hypervisor's upper half copied from the
//! hypervisor's own top-level table, supervisor-only.

use crate::bundle::CheckedDomain;
use crate::console::LineBuffer;
use crate::domain::{Domain, DomainId, DomainName, DomainStats};
use crate::emulated::machine::VirtualMachine;
use crate::heap_account::{allowance, vec_bytes, HeapAccount};
use crate::frame_table::{FrameError, FrameTable, Mfn, Owner, PageType};
use crate::page_type::PageTables;
use crate::initial_layout::{initial_layout, InitialLayout, LayoutError, Region};
use crate::machine_memory::MachineMemory;
use crate::manifest::{Expect, Mode};
use crate::paging::{flags, table_index, ENTRIES};
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use alloc::vec::Vec;
use hypercall_abi::layout::{GUEST_VIRT_BASE, GUEST_VIRT_LIMIT};
use hypercall_abi::start_info::{CMDLINE_MAX, NAME_MAX, START_INFO_MAGIC};
use hypercall_abi::{SharedInfo, StartInfo, ABI_VERSION, PAGE_SIZE};
use crate::event_channel::EventChannels;
use crate::time::TimeBase;
use zerocopy::{FromZeros, IntoBytes};

/// One loadable piece of an image, already checked against its file.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Guest-virtual start.
    pub vaddr: u64,
    /// Bytes from the file; the rest up to `mem_size` is zero.
    pub data: &'a [u8],
    /// Size in memory.
    pub mem_size: u64,
    /// Writable.
    pub writable: bool,
    /// Executable.
    pub executable: bool,
}

/// What the builder needs to know about a domain.
#[derive(Clone, Debug)]
pub struct DomainPlan<'a> {
    /// Its id.
    pub id: DomainId,
    /// Its name.
    pub name: &'a str,
    /// Its command line.
    pub cmdline: &'a str,
    /// Memory in bytes (a multiple of 4 KiB).
    pub memory: u64,
    /// Most memory it may grow to, in bytes.
    pub max_memory: u64,
    /// How it is expected to end.
    pub expect: Expect,
    /// Scheduling weight.
    pub weight: u32,
    /// CPU time limit in nanoseconds.
    pub time_limit_ns: Option<u64>,
    /// Whether CR4.UMIP is on while it runs.
    pub umip: bool,
    /// Paravirtualized (an SDK guest) or emulated (an unmodified kernel).
    pub mode: Mode,
    /// Entry point.
    pub entry: u64,
    /// Loadable segments.
    pub segments: Vec<Segment<'a>>,
    /// The system's time base, written into the shared-info page.
    pub time: TimeBase,
}

impl<'a> DomainPlan<'a> {
    /// The hypervisor heap the domain may hold: [`allowance`] for its
    /// largest memory and its mode (as
    /// [`DomainSpec::heap_allowance`](crate::manifest::DomainSpec::heap_allowance)
    /// says for its manifest entry).
    pub fn heap_allowance(&self) -> usize {
        allowance(self.max_memory.max(self.memory) / PAGE_SIZE, self.mode == Mode::Emulated)
    }

    /// The plan for a domain of a checked bundle, given its id.
    pub fn from_checked(id: DomainId, checked: &'a CheckedDomain<'a>) -> Self {
        DomainPlan {
            id,
            name: &checked.spec.name,
            cmdline: &checked.spec.cmdline,
            memory: checked.spec.memory.bytes(),
            max_memory: checked.spec.max_memory_bytes(),
            expect: checked.spec.expect,
            weight: checked.spec.weight.unwrap_or(crate::scheduler::DEFAULT_WEIGHT),
            time_limit_ns: checked.spec.time_limit.map(|t| t.ns()),
            umip: checked.spec.umip.unwrap_or(true),
            mode: checked.spec.mode,
            entry: checked.image.entry,
            segments: checked
                .image
                .segments
                .iter()
                .map(|s| Segment {
                    vaddr: s.vaddr,
                    data: s.file_bytes(checked.image_bytes),
                    mem_size: s.memsz,
                    writable: s.flags.write,
                    executable: s.flags.execute,
                })
                .collect(),
            time: TimeBase::default(),
        }
    }
}

/// Why a domain could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A segment lies outside the domain's memory window.
    SegmentOutside {
        /// Its start.
        vaddr: u64,
        /// Its size in memory.
        mem_size: u64,
    },
    /// The memory cannot hold the image and the hypervisor's pages.
    Layout(LayoutError),
    /// Not enough free machine memory.
    Frames(FrameError),
    /// The name or command line does not fit the start-info page.
    TooLong(&'static str),
    /// The tables built do not pass the validator (a builder bug).
    Validation(hypercall_abi::HypercallError),
    /// The hypervisor's heap cannot hold the domain's frame list (the
    /// kernel sizes the heap for it: a kernel bug).
    Heap,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::SegmentOutside { vaddr, mem_size } => write!(
                f,
                "segment at {vaddr:#x} ({mem_size} bytes) is outside the domain's memory window starting at {GUEST_VIRT_BASE:#x}"
            ),
            BuildError::Layout(e) => write!(f, "memory {e}"),
            BuildError::Frames(e) => write!(f, "{e}"),
            BuildError::TooLong(what) => write!(f, "{what} is too long for the start-info page"),
            BuildError::Validation(e) => write!(f, "its initial page tables fail validation: {e}"),
            BuildError::Heap => f.write_str("the hypervisor's heap cannot hold its frame list"),
        }
    }
}

/// Builds a domain of either mode and takes its frames from `frames`.
/// `hypervisor_half` is PML4 slots 256..512 of the hypervisor's own table.
pub fn build(
    plan: &DomainPlan<'_>,
    frames: &mut FrameTable,
    mem: &mut impl MachineMemory,
    hypervisor_half: &[u64; ENTRIES / 2],
) -> Result<Domain, BuildError> {
    match plan.mode {
        Mode::Paravirtualized => build_domain(plan, frames, mem, hypervisor_half),
        Mode::Emulated => build_emulated_domain(plan, frames, mem),
    }
}

/// Builds an emulated domain: its RAM loaded as the bare-metal contract
/// says (see [`crate::emulated::loader`]), its virtual machine at the
/// kernel's entry. Its shadow tables are made when it first runs.
pub fn build_emulated_domain(
    plan: &DomainPlan<'_>,
    frames: &mut FrameTable,
    mem: &mut impl MachineMemory,
) -> Result<Domain, BuildError> {
    if plan.name.len() > NAME_MAX {
        return Err(BuildError::TooLong("name"));
    }
    let loaded = crate::emulated::loader::load(plan, frames, mem)?;
    let mut vcpu = Vcpu::new(plan.entry, 0, 0, 0);
    vcpu.regs = crate::system::emulated_initial_regs(loaded.regs);
    let max_pages = loaded.frames.len() as u64;
    let vm = Box::new(VirtualMachine::new(loaded.cpu));
    let (frame_list, heap) = accounted(plan, loaded.frames, max_pages, Some(&vm))?;
    Ok(Domain {
        id: plan.id,
        name: name(plan)?,
        expect: plan.expect,
        max_pages,
        weight: plan.weight,
        time_limit_ns: plan.time_limit_ns,
        umip: plan.umip,
        console_ring: 0,
        shared_info: 0,
        events: EventChannels::default(),
        vcpu,
        frames: frame_list,
        console: LineBuffer::default(),
        ending: None,
        stats: DomainStats::default(),
        vm: Some(vm),
        emulated: None,
        heap,
    })
}

/// The name of the domain of `plan`, held in place.
fn name(plan: &DomainPlan<'_>) -> Result<DomainName, BuildError> {
    DomainName::try_from(plan.name).map_err(|()| BuildError::TooLong("name"))
}

/// The frame list `frames` given room for `max_pages` frames (so that
/// growing it needs no memory), and the heap account of the domain of
/// `plan`, charged with that list and its virtual machine `vm`, if it has
/// one.
fn accounted(
    plan: &DomainPlan<'_>,
    mut frames: Vec<Mfn>,
    max_pages: u64,
    vm: Option<&VirtualMachine>,
) -> Result<(Vec<Mfn>, HeapAccount), BuildError> {
    let room = (max_pages as usize).saturating_sub(frames.len());
    frames.try_reserve_exact(room).map_err(|_| BuildError::Heap)?;
    let mut heap = HeapAccount::new(plan.heap_allowance());
    let vm_bytes = vm.map_or(0, |vm| core::mem::size_of::<VirtualMachine>() + vm.shadow_charged);
    heap.charge(vec_bytes(&frames) + vm_bytes).map_err(|_| BuildError::Heap)?;
    Ok((frames, heap))
}

/// Builds a paravirtualized domain and takes its frames from `frames`.
/// `hypervisor_half` is PML4 slots 256..512 of the hypervisor's own table.
pub fn build_domain(
    plan: &DomainPlan<'_>,
    frames: &mut FrameTable,
    mem: &mut impl MachineMemory,
    hypervisor_half: &[u64; ENTRIES / 2],
) -> Result<Domain, BuildError> {
    if plan.name.len() > NAME_MAX {
        return Err(BuildError::TooLong("name"));
    }
    if plan.cmdline.len() > CMDLINE_MAX {
        return Err(BuildError::TooLong("command line"));
    }
    let nr_pages = plan.memory / PAGE_SIZE;
    let window_end = nr_pages.saturating_mul(PAGE_SIZE).saturating_add(GUEST_VIRT_BASE).min(GUEST_VIRT_LIMIT);
    let mut image_end = GUEST_VIRT_BASE;
    for s in &plan.segments {
        let end = s.vaddr.checked_add(s.mem_size);
        match end {
            Some(end) if s.vaddr >= GUEST_VIRT_BASE && end <= window_end => image_end = image_end.max(end),
            _ => return Err(BuildError::SegmentOutside { vaddr: s.vaddr, mem_size: s.mem_size }),
        }
    }
    let image_pages = (image_end - GUEST_VIRT_BASE).div_ceil(PAGE_SIZE);
    let layout = initial_layout(image_pages, nr_pages).map_err(BuildError::Layout)?;
    let owner = Owner::Domain(plan.id);
    let pfns = frames.alloc_many(owner, nr_pages).map_err(BuildError::Frames)?;
    for &mfn in &pfns {
        mem.zero_frame(mfn);
    }

    // The image, page by page (segments need not be page-aligned).
    let mut page_rights = alloc::vec![(false, false); layout.image.end as usize];
    for s in &plan.segments {
        let mut copied = 0u64;
        while copied < s.data.len() as u64 {
            let va = s.vaddr + copied;
            let pfn = (va - GUEST_VIRT_BASE) / PAGE_SIZE;
            let n = (PAGE_SIZE - va % PAGE_SIZE).min(s.data.len() as u64 - copied);
            mem.write(pfns[pfn as usize] * PAGE_SIZE + va % PAGE_SIZE, &s.data[copied as usize..(copied + n) as usize]);
            copied += n;
        }
        let first = (s.vaddr - GUEST_VIRT_BASE) / PAGE_SIZE;
        let last = (s.vaddr + s.mem_size.max(1) - 1 - GUEST_VIRT_BASE) / PAGE_SIZE;
        for r in &mut page_rights[first as usize..=last as usize] {
            r.0 |= s.writable;
            r.1 |= s.executable;
        }
    }

    build_page_tables(&layout, &pfns, &page_rights, mem, hypervisor_half);
    // The kernel base pointer takes a type reference on the top-level table,
    // which validates the whole tree: the builder is held to the same rules
    // as the guest.
    let root_mfn = pfns[layout.pml4() as usize];
    // The hypervisor itself writes the console ring and the shared-info
    // page for the domain's whole life: it holds a writable-type reference
    // on each, so that the guest can never turn them into page tables (or
    // give them back) under the hypervisor's writes.
    let ring_mfn = pfns[layout.console_ring as usize];
    let shared_mfn = pfns[layout.shared_info as usize];
    let validation = {
        let mut tables = PageTables { frames: &mut *frames, mem: &mut *mem, domain: plan.id, hypervisor_half };
        tables
            .get_type(root_mfn, PageType::L4)
            .and_then(|()| tables.get_type(ring_mfn, PageType::Writable))
            .and_then(|()| tables.get_type(shared_mfn, PageType::Writable))
    };
    if let Err(e) = validation {
        for &mfn in &pfns {
            let _ = frames.free(mfn, owner);
        }
        return Err(BuildError::Validation(e));
    }

    // The frame list.
    let list: Vec<u8> = pfns.iter().flat_map(|m| m.to_le_bytes()).collect();
    mem.write(pfns[layout.frame_list.start as usize] * PAGE_SIZE, &list);

    // The start-info page.
    let mut si = StartInfo::new_zeroed();
    si.magic = START_INFO_MAGIC;
    si.abi_version = ABI_VERSION;
    si.domain_id = u32::from(plan.id.0);
    si.nr_pages = nr_pages;
    si.virt_base = GUEST_VIRT_BASE;
    si.frame_list = layout.virt(layout.frame_list.start);
    si.page_tables = layout.virt(layout.page_tables.start);
    si.nr_page_table_pages = layout.page_tables.end - layout.page_tables.start;
    si.console_ring = layout.virt(layout.console_ring);
    si.shared_info = layout.virt(layout.shared_info);
    si.stack_bottom = layout.virt(layout.stack.start);
    si.stack_top = layout.virt(layout.stack.end);
    si.free_start = layout.virt(layout.free.start);
    si.free_end = layout.virt(layout.free.end);
    si.image_start = GUEST_VIRT_BASE;
    si.image_end = layout.virt(layout.image.end);
    si.name_len = plan.name.len() as u32;
    si.name[..plan.name.len()].copy_from_slice(plan.name.as_bytes());
    si.cmdline_len = plan.cmdline.len() as u32;
    si.cmdline[..plan.cmdline.len()].copy_from_slice(plan.cmdline.as_bytes());
    mem.write(pfns[layout.start_info as usize] * PAGE_SIZE, si.as_bytes());

    // The shared-info page: no event pending, upcalls masked until the
    // guest registers its handler and clears the mask; the time base.
    let mut shared = SharedInfo::new_zeroed();
    shared.vcpu.upcall_mask = 1;
    shared.time.version = 2;
    shared.time.tsc_timestamp = plan.time.boot_tsc;
    shared.time.system_time = 0;
    shared.time.tsc_to_system_mul = plan.time.clock.mul;
    shared.time.tsc_shift = plan.time.clock.shift;
    shared.wall_clock.version = 2;
    shared.wall_clock.sec = plan.time.wall_clock_sec;
    mem.write(pfns[layout.shared_info as usize] * PAGE_SIZE, shared.as_bytes());

    let max_pages = plan.max_memory.max(plan.memory) / PAGE_SIZE;
    let (frame_list, heap) = accounted(plan, pfns, max_pages, None)?;
    Ok(Domain {
        id: plan.id,
        name: name(plan)?,
        expect: plan.expect,
        max_pages,
        weight: plan.weight,
        time_limit_ns: plan.time_limit_ns,
        umip: plan.umip,
        console_ring: ring_mfn * PAGE_SIZE,
        shared_info: shared_mfn * PAGE_SIZE,
        events: EventChannels::default(),
        vcpu: Vcpu::new(plan.entry, si.stack_top, layout.virt(layout.start_info), root_mfn * PAGE_SIZE),
        frames: frame_list,
        console: LineBuffer::default(),
        ending: None,
        stats: DomainStats::default(),
        vm: None,
        emulated: None,
        heap,
    })
}

/// Rights of each pfn's mapping, or `None` for the unmapped guard page.
fn leaf_flags(layout: &InitialLayout, pfn: u64, image_rights: &[(bool, bool)]) -> Option<u64> {
    let base = flags::PRESENT | flags::USER;
    let read_only = base | flags::NO_EXECUTE;
    let read_write = base | flags::WRITABLE | flags::NO_EXECUTE;
    match layout.region(pfn)? {
        Region::Guard => None,
        Region::Image => {
            let (w, x) = image_rights.get(pfn as usize).copied().unwrap_or((false, false));
            Some(base | if w { flags::WRITABLE } else { 0 } | if x { 0 } else { flags::NO_EXECUTE })
        }
        Region::StartInfo | Region::FrameList | Region::PageTables => Some(read_only),
        Region::ConsoleRing | Region::SharedInfo | Region::Stack | Region::Free => Some(read_write),
    }
}

/// Writes the domain's own tables: the PML4 (guest half plus the copied
/// hypervisor half), then one entry per PDPT, PD and PT slot the window uses.
fn build_page_tables(
    layout: &InitialLayout,
    pfns: &[Mfn],
    image_rights: &[(bool, bool)],
    mem: &mut impl MachineMemory,
    hypervisor_half: &[u64; ENTRIES / 2],
) {
    let addr = |pfn: u64| pfns[pfn as usize] * PAGE_SIZE;
    let pml4 = addr(layout.pml4());
    let pdpt = addr(layout.pdpt());
    let link = flags::PRESENT | flags::WRITABLE | flags::USER;
    for (i, e) in hypervisor_half.iter().enumerate() {
        mem.write_u64(pml4 + ((ENTRIES / 2 + i) * 8) as u64, *e);
    }
    for pfn in 0..layout.nr_pages {
        let va = layout.virt(pfn);
        let (pd, pt) = (addr(layout.pd_for(va)), addr(layout.pt_for(va)));
        // Link entries are rewritten for every page; the value is the same each time.
        mem.write_u64(pml4 + table_index(va, 4) as u64 * 8, pdpt | link);
        mem.write_u64(pdpt + table_index(va, 3) as u64 * 8, pd | link);
        mem.write_u64(pd + table_index(va, 2) as u64 * 8, pt | link);
        if let Some(f) = leaf_flags(layout, pfn, image_rights) {
            mem.write_u64(pt + table_index(va, 1) as u64 * 8, addr(pfn) | f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;
    use crate::paging::{translate, Access, WalkError};
    use zerocopy::FromBytes;

    fn plan<'a>(code: &'a [u8], data: &'a [u8]) -> DomainPlan<'a> {
        DomainPlan {
            id: DomainId(0),
            name: "t",
            cmdline: "a=b",
            memory: 2 << 20,
            max_memory: 2 << 20,
            expect: Expect::Exit(0),
            weight: 256,
            time_limit_ns: None,
            umip: true,
            mode: Mode::Paravirtualized,
            time: TimeBase::default(),
            entry: GUEST_VIRT_BASE,
            segments: alloc::vec![
                Segment { vaddr: GUEST_VIRT_BASE, data: code, mem_size: code.len() as u64, writable: false, executable: true },
                Segment { vaddr: GUEST_VIRT_BASE + 0x1010, data, mem_size: 0x2000, writable: true, executable: false },
            ],
        }
    }

    #[test]
    fn builds_the_documented_address_space() {
        let mut mem = TestMemory::new(2048);
        let mut frames = FrameTable::new(2048);
        frames.add_free(256, 2048);
        let upper = [0x1234_5000 | flags::PRESENT | flags::WRITABLE; ENTRIES / 2];
        let d = build_domain(&plan(b"\x90\xc3", b"data"), &mut frames, &mut mem, &upper).unwrap();
        let owns = |mfn| frames.is_owned_by(mfn, DomainId(0));
        let walk = |va, a| translate(&mem, d.root(), va, a, owns);
        // Code: readable, not writable.
        let code = walk(GUEST_VIRT_BASE, Access::Read).unwrap();
        let mut b = [0u8; 2];
        mem.read(code, &mut b);
        assert_eq!(&b, b"\x90\xc3");
        assert_eq!(walk(GUEST_VIRT_BASE, Access::Write), Err(WalkError::ReadOnly { level: 1 }));
        // Data at an unaligned address, then zero-filled bss.
        let data = walk(GUEST_VIRT_BASE + 0x1010, Access::Write).unwrap();
        let mut b = [0u8; 6];
        mem.read(data, &mut b);
        assert_eq!(&b, b"data\0\0");
        // Start info is readable and correct, but read-only.
        let si_va = d.vcpu.regs.rdi;
        let si_maddr = walk(si_va, Access::Read).unwrap();
        let mut page = [0u8; core::mem::size_of::<StartInfo>()];
        mem.read(si_maddr, &mut page);
        let si = StartInfo::read_from_bytes(&page).unwrap();
        assert_eq!((si.magic, si.nr_pages, si.name(), si.cmdline()), (START_INFO_MAGIC, 512, "t", "a=b"));
        assert_eq!(walk(si_va, Access::Write), Err(WalkError::ReadOnly { level: 1 }));
        // The page tables are visible read-only; the guard page is a hole.
        assert!(walk(si.page_tables, Access::Read).is_ok());
        assert!(walk(si.page_tables, Access::Write).is_err());
        assert_eq!(walk(si.stack_bottom - PAGE_SIZE, Access::Read), Err(WalkError::NotPresent { level: 1 }));
        assert!(walk(si.stack_top - 8, Access::Write).is_ok());
        assert!(walk(si.free_end - 1, Access::Write).is_ok());
        assert!(walk(si.free_end, Access::Read).is_err());
        // The upper half is the hypervisor's.
        assert_eq!(mem.read_u64(d.root() + 256 * 8), upper[0]);
        assert_eq!(d.frames.len(), 512);
        assert_eq!(frames.count_owned(Owner::Domain(DomainId(0))), 512);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut mem = TestMemory::new(2048);
        let mut frames = FrameTable::new(2048);
        frames.add_free(256, 2048);
        let upper = [0; ENTRIES / 2];
        let mut p = plan(b"\xc3", b"");
        p.segments[0].vaddr = 0x1000;
        assert!(matches!(build_domain(&p, &mut frames, &mut mem, &upper), Err(BuildError::SegmentOutside { .. })));
        let mut p = plan(b"\xc3", b"");
        p.memory = 64 << 10;
        assert!(matches!(build_domain(&p, &mut frames, &mut mem, &upper), Err(BuildError::Layout(_))));
        let mut p = plan(b"\xc3", b"");
        p.memory = 64 << 20;
        assert!(matches!(build_domain(&p, &mut frames, &mut mem, &upper), Err(BuildError::Frames(_))));
        assert_eq!(frames.free_count(), 2048 - 256, "a failed build takes no frames");
    }
}
