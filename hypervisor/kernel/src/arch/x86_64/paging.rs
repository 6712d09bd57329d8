//! The hypervisor's own page tables, shared by every address space.
//!
//! The upper half of every address space is the hypervisor's:
//!
//! ```text
//! 0xffff_8000_0000_0000  physical map: all machine memory, 2 MiB pages, RW, NX
//! 0xffff_ffff_8000_0000  the hypervisor image (+ its physical load address):
//!                        .text R-X, .rodata R--, .data/.bss RW- (4 KiB pages)
//! ```
//!
//! All of it is supervisor-only and global. A domain's top-level table
//! copies PML4 slots 256..512 from here, so the hypervisor is mapped in every
//! domain while no guest can reach it. The low identity map used during boot
//! is gone once [`init`] switches to these tables.

use parvus_core::paging::{flags, ENTRIES};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// Where all machine memory is mapped.
pub const PHYSMAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Where the hypervisor image is linked, minus its physical load address.
pub const KERNEL_VIRT_OFFSET: u64 = 0xffff_ffff_8000_0000;
/// Largest machine address the physical map can cover.
pub const PHYSMAP_LIMIT: u64 = PHYSMAP_GIB as u64 * GIB;

// Every machine the manifest accepts fits the physical map, its 1 GiB hole
// below 4 GiB included.
const _: () = assert!(parvus_core::manifest::MAX_MACHINE_MEMORY.bytes() + GIB <= PHYSMAP_LIMIT);

/// End of what the physical map covers on this machine (set by [`init`]).
static MAPPED_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// End of the machine memory the physical map covers.
pub fn physmap_end() -> u64 {
    MAPPED_END.load(core::sync::atomic::Ordering::Relaxed)
}

const GIB: u64 = 1 << 30;
const PHYSMAP_GIB: usize = 16;
/// Page tables for the image: each covers 2 MiB, from KERNEL_VIRT_OFFSET.
const IMAGE_PTS: usize = 8;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);
const EMPTY: Table = Table([0; ENTRIES]);

static mut PML4: Table = EMPTY;
static mut PHYS_PDPT: Table = EMPTY;
static mut PHYS_PDS: [Table; PHYSMAP_GIB] = [EMPTY; PHYSMAP_GIB];
static mut IMAGE_PDPT: Table = EMPTY;
static mut IMAGE_PD: Table = EMPTY;
static mut IMAGE_PTS_: [Table; IMAGE_PTS] = [EMPTY; IMAGE_PTS];

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
}

/// Physical address of something in the hypervisor image.
pub fn image_phys<T>(p: *const T) -> u64 {
    p as u64 - KERNEL_VIRT_OFFSET
}

/// The machine-memory range the hypervisor image occupies (after boot code).
pub fn image_phys_range() -> core::ops::Range<u64> {
    let start = core::ptr::addr_of!(__text_start);
    let end = core::ptr::addr_of!(__image_end);
    image_phys(start)..image_phys(end)
}

/// Builds the final tables, mapping machine memory up to `ram_end`, and
/// switches to them.
pub fn init(ram_end: u64) {
    let physmap_gib = ram_end.div_ceil(GIB).clamp(4, PHYSMAP_GIB as u64) as usize;
    if ram_end > PHYSMAP_LIMIT {
        log::warn!("memory above {:#x} is not used", PHYSMAP_LIMIT);
    }
    let sections = [
        (core::ptr::addr_of!(__text_start) as u64, core::ptr::addr_of!(__text_end) as u64, flags::PRESENT | flags::GLOBAL),
        (core::ptr::addr_of!(__rodata_start) as u64, core::ptr::addr_of!(__rodata_end) as u64, flags::PRESENT | flags::GLOBAL | flags::NO_EXECUTE),
        (core::ptr::addr_of!(__data_start) as u64, core::ptr::addr_of!(__image_end) as u64, flags::PRESENT | flags::WRITABLE | flags::GLOBAL | flags::NO_EXECUTE),
    ];
    // SAFETY: (1) init runs once, on the boot CPU, before anything else reads
    // these tables; (2) while they are written the CPU still uses the boot
    // tables, so a half-built table is never live.
    unsafe {
        let pml4 = &mut *core::ptr::addr_of_mut!(PML4);
        let phys_pdpt = &mut *core::ptr::addr_of_mut!(PHYS_PDPT);
        let phys_pds = &mut *core::ptr::addr_of_mut!(PHYS_PDS);
        let image_pdpt = &mut *core::ptr::addr_of_mut!(IMAGE_PDPT);
        let image_pd = &mut *core::ptr::addr_of_mut!(IMAGE_PD);
        let image_pts = &mut *core::ptr::addr_of_mut!(IMAGE_PTS_);

        let table = flags::PRESENT | flags::WRITABLE;
        for (gib, pd) in phys_pds.iter_mut().enumerate().take(physmap_gib) {
            for (i, e) in pd.0.iter_mut().enumerate() {
                let addr = gib as u64 * GIB + ((i as u64) << 21);
                // Past RAM is device memory (the local APIC among it): uncached.
                let caching = if addr >= ram_end { flags::NO_CACHE | flags::WRITE_THROUGH } else { 0 };
                *e = addr | flags::PRESENT | flags::WRITABLE | flags::HUGE | flags::GLOBAL | flags::NO_EXECUTE | caching;
            }
            phys_pdpt.0[gib] = image_phys(pd) | table;
        }
        pml4.0[pml4_index(PHYSMAP_BASE)] = image_phys(phys_pdpt) | table;

        for (start, end, f) in sections {
            let mut va = start;
            while va < end {
                let pd_index = ((va - KERNEL_VIRT_OFFSET) >> 21) as usize;
                assert!(pd_index < IMAGE_PTS, "hypervisor image too large for its page tables");
                image_pts[pd_index].0[((va >> 12) & 511) as usize] = (va - KERNEL_VIRT_OFFSET) | f;
                va += 4096;
            }
        }
        for (i, pt) in image_pts.iter().enumerate() {
            image_pd.0[i] = image_phys(pt) | table;
        }
        image_pdpt.0[((KERNEL_VIRT_OFFSET >> 30) & 511) as usize] = image_phys(image_pd) | table;
        pml4.0[pml4_index(KERNEL_VIRT_OFFSET)] = image_phys(image_pdpt) | table;

        let frame = PhysFrame::from_start_address(PhysAddr::new(image_phys(pml4))).expect("PML4 is page-aligned");
        Cr3::write(frame, Cr3Flags::empty());
    }
    MAPPED_END.store(physmap_gib as u64 * GIB, core::sync::atomic::Ordering::Relaxed);
}

fn pml4_index(va: u64) -> usize {
    ((va >> 39) & 511) as usize
}

/// The hypervisor's half of a top-level table (slots 256..512), to copy into
/// every domain's PML4.
pub fn hypervisor_pml4_entries() -> [u64; ENTRIES / 2] {
    let mut upper = [0; ENTRIES / 2];
    // SAFETY: after init the PML4 is never written again, so reading it is race-free.
    let pml4 = unsafe { &*core::ptr::addr_of!(PML4) };
    upper.copy_from_slice(&pml4.0[ENTRIES / 2..]);
    upper
}

/// Physical address of the hypervisor's own top-level table (used when no domain runs).
pub fn hypervisor_root() -> u64 {
    image_phys(core::ptr::addr_of!(PML4))
}

/// Switches to the address space whose PML4 is at machine address `root`.
///
/// # Safety
/// `root` must be a top-level table whose upper half is [`hypervisor_pml4_entries`].
#[inline(always)]
pub unsafe fn switch_address_space(root: u64) {
    let frame = PhysFrame::from_start_address(PhysAddr::new(root)).expect("page tables are page-aligned");
    // SAFETY: the caller guarantees the hypervisor stays mapped identically,
    // so the code, stack and data in use remain reachable.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}
