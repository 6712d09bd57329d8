//! Paravirtualized memory: the guest manages its page tables, the
//! hypervisor validates every change (*direct paging*).
//!
//! A guest sees machine frame numbers (its start-info frame list maps its
//! pfns to them) and writes real x86_64 page-table entries holding them.
//! Page-table pages are read-only to the guest; it changes them with
//! [`mmu_update`](crate::Hypercall::MmuUpdate) (any entry, by machine
//! address) or [`update_va_mapping`](crate::Hypercall::UpdateVaMapping) (the
//! level-1 entry of a virtual address), and the hypervisor checks, for every
//! present entry:
//!
//! - the target frame belongs to the caller (`FrameNotOwned`, or
//!   `HypervisorMemory` for frames of the hypervisor or nobody);
//! - the user bit is set (`SupervisorMapping`): guest kernel and guest user
//!   both run in ring 3, so a supervisor mapping would serve nobody but the
//!   hypervisor;
//! - no large-page, global or reserved bit (`UnsupportedEntryBits`);
//! - in a level-N table (N > 1) the target is a valid level-(N-1) table,
//!   validated on first use (`PageTypeConflict` if it is already another
//!   type, `FrameMappedWritable` if it is mapped writable somewhere);
//! - in a level-1 table, a writable entry's target is not a page table
//!   (`FrameIsPageTable`);
//! - in a top-level table, only slots below
//!   [`GUEST_PML4_SLOTS`](crate::layout::GUEST_PML4_SLOTS) are the guest's;
//!   the hypervisor fills the upper half itself (`HypervisorMemory`).
//!
//! Every frame has a *type* (none, writable, L1, L2, L3, L4) with a count
//! of the references that need it: a frame is a page table only while no
//! writable mapping of it exists, and can be mapped writable only while it
//! is not a page table. Pinning keeps a table validated while nothing else
//! references it, and a base pointer (CR3) references its top-level table.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One request of `mmu_update` (the array must be 16-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the entry to write (8-byte aligned, inside a
    /// validated page table of the caller).
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}
const_assert_eq!(core::mem::size_of::<MmuUpdate>(), 16);

/// What an [`MmuextOp`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MmuextCmd {
    /// Validate frame `arg` as a level-1 table and keep it validated.
    PinL1Table = 0,
    /// The same for a level-2 table.
    PinL2Table = 1,
    /// The same for a level-3 table.
    PinL3Table = 2,
    /// The same for a top-level (level-4) table.
    PinL4Table = 3,
    /// Drop the pin on frame `arg` (`NotPinned` if it has none).
    Unpin = 4,
    /// Load top-level table `arg` as the guest kernel's address space.
    NewBaseptr = 5,
    /// Use top-level table `arg` for guest user mode (0: none).
    NewUserBaseptr = 6,
    /// Flush this CPU's TLB.
    TlbFlushLocal = 7,
    /// Flush the TLB entry of virtual address `arg` on this CPU.
    InvlpgLocal = 8,
}

impl MmuextCmd {
    /// Every command, by number.
    pub const ALL: [MmuextCmd; 9] = [
        MmuextCmd::PinL1Table,
        MmuextCmd::PinL2Table,
        MmuextCmd::PinL3Table,
        MmuextCmd::PinL4Table,
        MmuextCmd::Unpin,
        MmuextCmd::NewBaseptr,
        MmuextCmd::NewUserBaseptr,
        MmuextCmd::TlbFlushLocal,
        MmuextCmd::InvlpgLocal,
    ];

    /// The command for a raw number.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.get(raw as usize).copied()
    }
}

/// One operation of `mmuext_op` (the array must be 16-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuextOp {
    /// An [`MmuextCmd`] as `u32`.
    pub cmd: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Machine frame number (pin, unpin, base pointers) or virtual address (invlpg).
    pub arg: u64,
}
const_assert_eq!(core::mem::size_of::<MmuextOp>(), 16);

/// Most requests one `mmu_update` or `mmuext_op`, and most frames one
/// `memory_op`, handles (longer batches are refused with `BadArgument`:
/// the hypervisor cannot be preempted inside a hypercall).
pub const BATCH_MAX: u64 = 4096;

/// Flags of `update_va_mapping`.
pub mod uvm_flags {
    /// Invalidate the TLB entry of the address afterwards.
    pub const INVLPG: u64 = 1;
    /// Flush the whole TLB afterwards.
    pub const TLB_FLUSH: u64 = 2;
    /// Every defined flag.
    pub const ALL: u64 = INVLPG | TLB_FLUSH;
}

/// Most entries one `multicall` performs.
pub const MULTICALL_MAX: u64 = 64;

/// One call of `multicall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MulticallEntry {
    /// The [`Hypercall`](crate::Hypercall) number.
    pub op: u64,
    /// Its arguments, in ABI order.
    pub args: [u64; 6],
    /// Written by the hypervisor: the encoded result (see
    /// [`decode_result`](crate::decode_result)).
    pub result: u64,
}
const_assert_eq!(core::mem::size_of::<MulticallEntry>(), 64);

/// What `memory_op` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum MemoryOpCmd {
    /// Take `count` more (zeroed) frames, writing their machine frame
    /// numbers to `frames[0..count]`; all or nothing (`OverLimit` above
    /// the manifest's `max_memory`, `OutOfMemory` when the machine has no
    /// room). Returns `count`.
    IncreaseReservation = 0,
    /// Give back the frames listed in `frames[0..count]`; each must be
    /// owned and unreferenced (no mapping, not a page table, not the
    /// console ring or the shared-info page, which the hypervisor holds).
    /// Returns `count`; stops at the first frame that cannot
    /// be given back and returns its error (the frames before it are gone).
    DecreaseReservation = 1,
    /// Returns the number of frames the domain owns (`frames`, `count` unused).
    CurrentReservation = 2,
    /// Returns the most frames the domain may own.
    MaximumReservation = 3,
}

impl MemoryOpCmd {
    /// The command for a raw number.
    pub fn from_raw(raw: u64) -> Option<Self> {
        [Self::IncreaseReservation, Self::DecreaseReservation, Self::CurrentReservation, Self::MaximumReservation]
            .into_iter()
            .find(|c| *c as u64 == raw)
    }
}

/// Entry bits a guest may set in a present entry: present, writable, user,
/// write-through, cache-disable, accessed, dirty, no-execute, the frame
/// address, and the bits ignored by the CPU that software may use (9..=11).
pub const GUEST_ENTRY_ALLOWED: u64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0xe00 | 0x000f_ffff_ffff_f000 | (1 << 63);
