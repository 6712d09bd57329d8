//! Where the hypervisor puts things in a new domain's memory.
//!
//! A domain of `nr_pages` frames is mapped linearly from
//! [`GUEST_VIRT_BASE`]; its image occupies pfns `0..image_pages`. After the
//! image come, in this order (see [`hypercall_abi::layout`] for the picture):
//! the start-info page, the console ring, the shared-info page, the frame list, the page tables,
//! an unmapped guard page, the stack, and the free memory the guest's
//! allocator gets. The builder, `cargo xtask` (to reject an image before
//! QEMU starts) and the tests all use [`initial_layout`], so they cannot
//! disagree.

use core::ops::Range;
use hypercall_abi::layout::{GUEST_STACK_PAGES, GUEST_VIRT_BASE};
use hypercall_abi::PAGE_SIZE;

/// Entries per page table.
const ENTRIES: u64 = 512;

/// Pfn ranges of a new domain's regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialLayout {
    /// Total frames.
    pub nr_pages: u64,
    /// The loaded image.
    pub image: Range<u64>,
    /// The start-info page.
    pub start_info: u64,
    /// The console ring page.
    pub console_ring: u64,
    /// The shared-info page (events and time).
    pub shared_info: u64,
    /// The frame list (pfn -> mfn, 8 bytes each).
    pub frame_list: Range<u64>,
    /// The page tables: PML4 first, then one PDPT, then the PDs, then the PTs.
    pub page_tables: Range<u64>,
    /// Number of page directories among the page tables.
    pub page_directories: u64,
    /// The unmapped page below the stack.
    pub guard: u64,
    /// The initial stack.
    pub stack: Range<u64>,
    /// Free memory (at least one page).
    pub free: Range<u64>,
}

/// Which part of the layout a pfn belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The ELF segments (and gaps between them).
    Image,
    /// The [`StartInfo`](hypercall_abi::StartInfo) page.
    StartInfo,
    /// The [`ConsoleRing`](hypercall_abi::ConsoleRing) page.
    ConsoleRing,
    /// The [`SharedInfo`](hypercall_abi::SharedInfo) page.
    SharedInfo,
    /// The frame list.
    FrameList,
    /// The domain's page tables (mapped read-only).
    PageTables,
    /// The unmapped page below the stack.
    Guard,
    /// The initial stack.
    Stack,
    /// Free memory.
    Free,
}

/// Why a domain's memory cannot hold its image and the hypervisor's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image and the regions after it need more pages than the domain has.
    TooSmall {
        /// Pages needed, at least.
        needed: u64,
        /// Pages the domain has.
        have: u64,
    },
    /// The domain is larger than one PDPT maps (512 GiB).
    TooLarge {
        /// Pages the domain has.
        have: u64,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::TooSmall { needed, have } => write!(
                f,
                "needs at least {} KiB (image, start info, console ring, frame list, page tables, stack and one free page) but has {} KiB",
                needed * PAGE_SIZE / 1024,
                have * PAGE_SIZE / 1024
            ),
            LayoutError::TooLarge { have } => write!(f, "{} MiB is more than one domain can map (512 GiB)", (have * PAGE_SIZE) >> 20),
        }
    }
}

/// Page-table pages needed to map `nr_pages` pages linearly from
/// [`GUEST_VIRT_BASE`]: one PML4, one PDPT, and the PDs and PTs the range
/// touches. Returns (total, page directories).
pub fn page_table_pages(nr_pages: u64) -> (u64, u64) {
    let first = GUEST_VIRT_BASE / PAGE_SIZE;
    let last = first + nr_pages.max(1) - 1;
    let pts = last / ENTRIES - first / ENTRIES + 1;
    let pds = last / (ENTRIES * ENTRIES) - first / (ENTRIES * ENTRIES) + 1;
    (2 + pds + pts, pds)
}

/// Lays out a domain of `nr_pages` pages whose image ends at pfn `image_pages`.
pub fn initial_layout(image_pages: u64, nr_pages: u64) -> Result<InitialLayout, LayoutError> {
    if nr_pages > ENTRIES * ENTRIES * ENTRIES - GUEST_VIRT_BASE / PAGE_SIZE {
        return Err(LayoutError::TooLarge { have: nr_pages });
    }
    let (table_pages, page_directories) = page_table_pages(nr_pages);
    let start_info = image_pages;
    let console_ring = start_info + 1;
    let shared_info = console_ring + 1;
    let frame_list = shared_info + 1..shared_info + 1 + (nr_pages * 8).div_ceil(PAGE_SIZE);
    let page_tables = frame_list.end..frame_list.end + table_pages;
    let guard = page_tables.end;
    let stack = guard + 1..guard + 1 + GUEST_STACK_PAGES;
    let needed = stack.end + 1;
    if needed > nr_pages {
        return Err(LayoutError::TooSmall { needed, have: nr_pages });
    }
    Ok(InitialLayout {
        nr_pages,
        image: 0..image_pages,
        start_info,
        console_ring,
        shared_info,
        frame_list,
        page_tables,
        page_directories,
        guard,
        free: stack.end..nr_pages,
        stack,
    })
}

impl InitialLayout {
    /// Guest-virtual address of a pfn.
    pub const fn virt(&self, pfn: u64) -> u64 {
        pfn_to_va(pfn)
    }

    /// The region of `pfn`, or `None` past the domain's memory.
    pub fn region(&self, pfn: u64) -> Option<Region> {
        Some(match pfn {
            p if p >= self.nr_pages => return None,
            p if self.image.contains(&p) => Region::Image,
            p if p == self.start_info => Region::StartInfo,
            p if p == self.console_ring => Region::ConsoleRing,
            p if p == self.shared_info => Region::SharedInfo,
            p if self.frame_list.contains(&p) => Region::FrameList,
            p if self.page_tables.contains(&p) => Region::PageTables,
            p if p == self.guard => Region::Guard,
            p if self.stack.contains(&p) => Region::Stack,
            _ => Region::Free,
        })
    }

    /// Pfn of the PML4.
    pub fn pml4(&self) -> u64 {
        self.page_tables.start
    }

    /// Pfn of the PDPT.
    pub fn pdpt(&self) -> u64 {
        self.page_tables.start + 1
    }

    /// Pfn of the page directory mapping `va` (inside the domain's window).
    pub fn pd_for(&self, va: u64) -> u64 {
        self.page_tables.start + 2 + ((va >> 30) - (GUEST_VIRT_BASE >> 30))
    }

    /// Pfn of the page table mapping `va` (inside the domain's window).
    pub fn pt_for(&self, va: u64) -> u64 {
        self.page_tables.start + 2 + self.page_directories + ((va >> 21) - (GUEST_VIRT_BASE >> 21))
    }
}

/// Guest-virtual address of a pfn.
pub const fn pfn_to_va(pfn: u64) -> u64 {
    GUEST_VIRT_BASE + pfn * PAGE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mebibyte_domain() {
        let l = initial_layout(10, 512).unwrap();
        assert_eq!(l.start_info, 10);
        assert_eq!(l.console_ring, 11);
        assert_eq!(l.shared_info, 12);
        assert_eq!(l.frame_list, 13..14);
        // 0x40_0000 is pfn 1024 of the VA space: PT 2 only, PD 0 only.
        assert_eq!(l.page_tables, 14..14 + 4);
        assert_eq!(l.guard, 18);
        assert_eq!(l.stack, 19..35);
        assert_eq!(l.free, 35..512);
        assert_eq!(l.region(18), Some(Region::Guard));
        assert_eq!(l.region(12), Some(Region::SharedInfo));
        assert_eq!(l.region(9), Some(Region::Image));
        assert_eq!(l.region(512), None);
        assert_eq!((l.pml4(), l.pdpt(), l.pd_for(l.virt(0)), l.pt_for(l.virt(511))), (14, 15, 16, 17));
    }

    #[test]
    fn page_tables_cover_boundaries() {
        assert_eq!(page_table_pages(1), (4, 1));
        assert_eq!(page_table_pages(512), (4, 1));
        assert_eq!(page_table_pages(513), (5, 1));
        // 1 GiB from 4 MiB crosses into a second PD.
        assert_eq!(page_table_pages(262_144), (2 + 2 + 512, 2));
    }

    #[test]
    fn too_small_and_too_large() {
        assert_eq!(initial_layout(10, 30), Err(LayoutError::TooSmall { needed: 36, have: 30 }));
        assert!(initial_layout(1, 1 << 28).is_err());
        assert!(initial_layout(0, 36).is_ok());
    }
}
