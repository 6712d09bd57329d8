//! The guest-virtual address space a domain starts with.
//!
//! The upper half of every address space (from [`HYPERVISOR_BASE`]) belongs
//! to the hypervisor and is mapped supervisor-only; a guest can never map
//! anything there. A domain's memory is mapped linearly from
//! [`GUEST_VIRT_BASE`]: page frame number (pfn) `n` of the domain sits at
//! `GUEST_VIRT_BASE + n * PAGE_SIZE`. The guest image is linked inside that
//! window, and the hypervisor places the rest after the image's last page:
//!
//! ```text
//!  GUEST_VIRT_BASE                                      + nr_pages * 4 KiB
//!  | image (ELF segments) | start info | console ring | shared info | frame list |
//!  | page tables (read-only) | guard (unmapped) | stack | free memory ... |
//! ```
//!
//! The [`StartInfo`](crate::StartInfo) page gives the guest every address in
//! this picture, so a guest never hard-codes more than `GUEST_VIRT_BASE`
//! (its link address).



/// Guest-virtual address of the domain's pfn 0, and the address guest images
/// are linked at. The first 4 MiB stay unmapped so that null pointers fault.
pub const GUEST_VIRT_BASE: u64 = 0x40_0000;

/// First address a guest may not map: the start of top-level (PML4) slot
/// 255. Slots 0..=254 (the lower half but its last 512 GiB) are the
/// guest's. Keeping the last slot unmapped means no guest code can sit at
/// the very end of the lower half, where a `syscall` would return to a
/// non-canonical address (which faults in ring 0 on some CPUs).
pub const GUEST_VIRT_LIMIT: u64 = 0x0000_7f80_0000_0000;

/// Number of top-level (PML4) slots a guest may use: 0..GUEST_PML4_SLOTS.
pub const GUEST_PML4_SLOTS: usize = 255;

/// Start of the hypervisor's part of every address space (the upper half).
pub const HYPERVISOR_BASE: u64 = 0xffff_8000_0000_0000;

/// Size of the stack the hypervisor gives a domain's first vCPU, in bytes.
pub const GUEST_STACK_SIZE: u64 = 64 * 1024;

/// Number of pages of the initial stack.
pub const GUEST_STACK_PAGES: u64 = GUEST_STACK_SIZE / crate::PAGE_SIZE;
