//! Guest-managed page tables (*direct paging*), the safe way.
//!
//! A Parvus guest writes its own x86_64 page tables, but every table page
//! is read-only to it and every change goes through the hypervisor, which
//! validates it (see [`hypercall_abi::mm`]). This module wraps that in
//! objects:
//!
//! - [`Pte`] and [`PteFlags`]: one entry, holding a *machine* frame number;
//! - [`PageTable`]: a table page of a given level, taken from the heap,
//!   made read-only, optionally pinned, given back on drop;
//! - [`Batch`]: `mmu_update` requests collected and sent 64 at a time;
//! - [`AddressSpace`]: a guest process (ring compression): a kernel
//!   top-level table (the boot tables' slot 0 plus the process's slots)
//!   and a user top-level table (only the process's slots), with
//!   map/unmap/protect batched into one `mmu_update`, and translate.
//!
//! The guest kernel itself keeps living in PML4 slot 0, mapped by the boot
//! tables; every address space shares that slot, so switching between
//! them never moves memory Rust code uses.

mod batch;
mod space;
mod table;

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use bitflags::bitflags;
use hypercall_abi::layout::GUEST_VIRT_LIMIT;
use hypercall_abi::mm::MmuextCmd;
use hypercall_abi::{HypercallError, PAGE_SIZE};

use crate::frames::va_to_mfn;
use crate::hypercall::{self, BatchError};
use crate::start_info::start_info;

pub use batch::{Batch, BATCH_LEN};
pub use space::{AddressSpace, SpaceBatch};
pub use table::{leaked_tables, PageTable};

/// Entries per table.
pub const ENTRIES: usize = 512;

/// The frame-address bits of an entry.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

bitflags! {
    /// The flag bits of a page-table entry. The hypervisor accepts
    /// `PRESENT`, `WRITABLE`, `USER` (required), `WRITE_THROUGH`,
    /// `NO_CACHE`, `ACCESSED`, `DIRTY`, `NO_EXECUTE` and the three bits
    /// software may use; `HUGE` and `GLOBAL` exist here so that the
    /// refusal can be demonstrated.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// The entry maps something.
        const PRESENT = 1;
        /// Writes allowed.
        const WRITABLE = 1 << 1;
        /// Ring-3 access allowed (mandatory in guest entries).
        const USER = 1 << 2;
        /// Write-through caching.
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled.
        const NO_CACHE = 1 << 4;
        /// Set by the CPU on access.
        const ACCESSED = 1 << 5;
        /// Set by the CPU on write (level 1).
        const DIRTY = 1 << 6;
        /// Large page (levels 2 and 3): refused by the hypervisor.
        const HUGE = 1 << 7;
        /// Global page: refused by the hypervisor.
        const GLOBAL = 1 << 8;
        /// Instruction fetches not allowed.
        const NO_EXECUTE = 1 << 63;
    }
}

/// One page-table entry: a machine frame number and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pte(pub u64);

impl Pte {
    /// The entry that maps nothing.
    pub const EMPTY: Pte = Pte(0);

    /// An entry for machine frame `mfn` with `flags`.
    pub const fn new(mfn: u64, flags: PteFlags) -> Pte {
        Pte(((mfn << 12) & ADDRESS_MASK) | flags.bits())
    }

    /// The machine frame number it names.
    pub const fn mfn(self) -> u64 {
        (self.0 & ADDRESS_MASK) >> 12
    }

    /// Its flags (unknown bits dropped).
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    /// Whether it maps something.
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }
}

/// Index of `va` in its level-`level` table (1..=4).
pub const fn table_index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (level as u64 - 1))) & 0x1ff) as usize
}

/// Why a page-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The heap has no free page left for a table or a frame.
    OutOfFrames,
    /// The hypervisor refused a request.
    Refused(HypercallError),
    /// The hypervisor refused a request of a batch.
    Batch(BatchError),
    /// The address is not page-aligned, or not in the guest's part of the
    /// address space.
    BadAddress(u64),
    /// Something is mapped there already.
    AlreadyMapped(u64),
    /// Nothing is mapped there (for the access asked).
    NotMapped(u64),
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::OutOfFrames => f.write_str("no free frame left"),
            PagingError::Refused(e) => write!(f, "refused by the hypervisor: {e}"),
            PagingError::Batch(e) => write!(f, "batch refused by the hypervisor: {e}"),
            PagingError::BadAddress(va) => write!(f, "{va:#x} is not a page-aligned guest address"),
            PagingError::AlreadyMapped(va) => write!(f, "{va:#x} is mapped already"),
            PagingError::NotMapped(va) => write!(f, "{va:#x} is not mapped"),
        }
    }
}

impl From<HypercallError> for PagingError {
    fn from(e: HypercallError) -> Self {
        PagingError::Refused(e)
    }
}

impl From<BatchError> for PagingError {
    fn from(e: BatchError) -> Self {
        PagingError::Batch(e)
    }
}

/// Checks that `va` is a page-aligned address a guest may map.
fn check_user_page(va: u64) -> Result<(), PagingError> {
    if !va.is_multiple_of(PAGE_SIZE) || va >= GUEST_VIRT_LIMIT {
        return Err(PagingError::BadAddress(va));
    }
    Ok(())
}

/// The mfn of the top-level table the domain booted with.
pub fn boot_root_mfn() -> u64 {
    va_to_mfn(start_info().page_tables).expect("the boot tables are in the linear window")
}

/// Entry `slot` of the boot top-level table (read through its read-only mapping).
pub fn boot_root_entry(slot: usize) -> Pte {
    assert!(slot < ENTRIES, "a table has {ENTRIES} entries");
    let root = start_info().page_tables as *const u64;
    // SAFETY: the start-info page names the boot page tables, PML4 first,
    // mapped read-only for the domain's life; `slot` is inside the page.
    // The hypervisor may change entries at any hypercall, hence volatile.
    Pte(unsafe { root.add(slot).read_volatile() })
}

/// The kernel top-level table loaded now: 0 means the boot table.
static ACTIVE_ROOT: AtomicU64 = AtomicU64::new(0);

/// Records which kernel root [`AddressSpace::activate`] loaded.
pub(crate) fn set_active_root(mfn: u64) {
    ACTIVE_ROOT.store(mfn, Ordering::Relaxed);
}

/// The mfn of the kernel top-level table loaded now.
pub fn active_root_mfn() -> u64 {
    match ACTIVE_ROOT.load(Ordering::Relaxed) {
        0 => boot_root_mfn(),
        mfn => mfn,
    }
}

/// Loads the boot tables again as the kernel's address space, with no user
/// mode, so that no [`AddressSpace`] is in use (they can then be dropped
/// and their frames reused).
pub fn activate_boot() -> Result<(), BatchError> {
    let ops = hypercall::Aligned([
        hypercall::mmuext(MmuextCmd::NewBaseptr, boot_root_mfn()),
        hypercall::mmuext(MmuextCmd::NewUserBaseptr, 0),
    ]);
    // SAFETY: the boot tables map slot 0, where all of the kernel's memory
    // lives, exactly as every `AddressSpace` kernel table does (they copy
    // the boot slot-0 entry), so nothing Rust code uses moves.
    unsafe { hypercall::mmuext_op(&ops.0) }?;
    set_active_root(0);
    Ok(())
}
