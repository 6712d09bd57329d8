//! Wrappers for the direct-paging and ballooning hypercalls: `mmu_update`,
//! `mmuext_op`, `update_va_mapping`, `multicall` and `memory_op`.
//!
//! Which of them are `unsafe` follows one rule: a call that can change what
//! the *current guest-kernel address space* maps (and so pull memory out
//! from under a Rust reference, or alias it) is `unsafe`; a call that only
//! validates, pins, flushes, balloons or changes user mode's tables is
//! safe, because the hypervisor refuses anything that would break the
//! typing rules and none of it moves memory Rust code can see. The
//! page-table objects in [`paging`](crate::paging) build safe operations on
//! top of the `unsafe` ones by only ever touching user slots and tables
//! they own.
//!
//! `mmu_update` and `mmuext_op` read 16-byte records from an array that
//! must be 16-byte aligned; the wrappers take any slice and copy it through
//! an aligned buffer when it is not.

use core::fmt;

use hypercall_abi::mm::{MemoryOpCmd, MmuUpdate, MmuextCmd, MmuextOp, MulticallEntry, BATCH_MAX, MULTICALL_MAX};
use hypercall_abi::{Hypercall, HypercallError};

use super::raw;

/// How a batch hypercall (`mmu_update`, `mmuext_op`) failed: the requests
/// before `done` were applied, request `done` was refused with `error`,
/// and the rest were not looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchError {
    /// Number of requests applied before the refused one.
    pub done: usize,
    /// Why request `done` was refused.
    pub error: HypercallError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {} refused: {}", self.done, self.error)
    }
}

/// Records the hypervisor reads from guest memory, 16-byte aligned as the
/// ABI requires of `mmu_update` and `mmuext_op` arrays.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct Aligned<T>(pub T);

/// Records copied per round when a caller's slice is not aligned.
const BOUNCE_RECORDS: usize = 32;

/// Calls `call(records)` on aligned chunks of at most [`BATCH_MAX`]
/// records, copying through an aligned buffer if `records` is not aligned,
/// and adds up the `done` counts.
fn in_aligned_chunks<T: Copy>(
    records: &[T],
    mut call: impl FnMut(&[T]) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let chunk_len = if (records.as_ptr() as usize).is_multiple_of(16) { BATCH_MAX as usize } else { BOUNCE_RECORDS };
    let mut applied = 0;
    for chunk in records.chunks(chunk_len) {
        let outcome = if (chunk.as_ptr() as usize).is_multiple_of(16) {
            call(chunk)
        } else {
            let mut bounce: Aligned<[core::mem::MaybeUninit<T>; BOUNCE_RECORDS]> =
                Aligned([core::mem::MaybeUninit::uninit(); BOUNCE_RECORDS]);
            for (slot, record) in bounce.0.iter_mut().zip(chunk) {
                slot.write(*record);
            }
            // SAFETY: the first `chunk.len()` slots were written just above.
            let copy = unsafe { core::slice::from_raw_parts(bounce.0.as_ptr().cast::<T>(), chunk.len()) };
            call(copy)
        };
        outcome.map_err(|e| BatchError { done: applied + e.done, error: e.error })?;
        applied += chunk.len();
    }
    Ok(())
}

/// One batch hypercall on an aligned array of 16-byte records.
///
/// # Safety
///
/// As for [`mmu_update`] (the records may change mappings).
unsafe fn batch_call(call: Hypercall, records: u64, count: usize) -> Result<(), BatchError> {
    let mut done: u64 = 0;
    // SAFETY: the only memory the hypervisor writes is `done`, a local we
    // own; what the records do is the caller's responsibility.
    let result = unsafe { raw::hypercall3(call, records, count as u64, &mut done as *mut u64 as u64) };
    match result {
        Ok(_) => Ok(()),
        Err(error) => Err(BatchError { done: done as usize, error }),
    }
}

/// `mmu_update`: writes page-table entries, in order, each validated by the
/// hypervisor. `ptr` of each request is the *machine* address of the entry
/// (`mfn << 12 | index * 8`), `val` the new entry.
///
/// # Safety
///
/// The updates must not unmap, remap or make read-only any memory the
/// running Rust code still uses through the current kernel address space
/// (its image, stack, heap, statics, or anything borrowed): the hypervisor
/// keeps *other domains* safe, not this guest's own Rust invariants.
/// Updates to tables of an address space that is not loaded, or to user
/// slots Rust code never references, are always fine.
pub unsafe fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    in_aligned_chunks(reqs, |chunk| {
        // SAFETY: the caller's contract covers every request.
        unsafe { batch_call(Hypercall::MmuUpdate, chunk.as_ptr() as u64, chunk.len()) }
    })
}

/// `mmuext_op`: pins and unpins tables, loads base pointers, flushes the
/// TLB (see [`MmuextCmd`]). The single-operation helpers below are safe
/// where the operation is.
///
/// # Safety
///
/// A `NewBaseptr` operation must load a kernel address space in which
/// everything the running Rust code uses is mapped as before (for example
/// one whose slot 0 is the boot tables' slot 0, as
/// [`AddressSpace`](crate::paging::AddressSpace) builds them).
pub unsafe fn mmuext_op(ops: &[MmuextOp]) -> Result<(), BatchError> {
    in_aligned_chunks(ops, |chunk| {
        // SAFETY: the caller's contract covers every operation.
        unsafe { batch_call(Hypercall::MmuextOp, chunk.as_ptr() as u64, chunk.len()) }
    })
}

/// An [`MmuextOp`] record.
pub const fn mmuext(cmd: MmuextCmd, arg: u64) -> MmuextOp {
    MmuextOp { cmd: cmd as u32, reserved: 0, arg }
}

/// One `mmuext_op` operation, its error unwrapped from the batch.
///
/// # Safety
///
/// As for [`mmuext_op`].
unsafe fn mmuext_one(cmd: MmuextCmd, arg: u64) -> Result<(), HypercallError> {
    let op = Aligned([mmuext(cmd, arg)]);
    // SAFETY: the caller's contract.
    unsafe { mmuext_op(&op.0) }.map_err(|e| e.error)
}

/// The pin command of a page-table level (1..=4).
fn pin_command(level: u8) -> Result<MmuextCmd, HypercallError> {
    match level {
        1 => Ok(MmuextCmd::PinL1Table),
        2 => Ok(MmuextCmd::PinL2Table),
        3 => Ok(MmuextCmd::PinL3Table),
        4 => Ok(MmuextCmd::PinL4Table),
        _ => Err(HypercallError::BadArgument),
    }
}

/// Validates machine frame `mfn` as a level-`level` page table (1..=4) and
/// keeps it validated until [`unpin_table`]. Fails if the frame is mapped
/// writable anywhere (`FrameMappedWritable`) or an entry breaks a rule.
///
/// Safe: pinning changes no mapping, it only makes the hypervisor refuse
/// later writable mappings of the frame.
pub fn pin_table(level: u8, mfn: u64) -> Result<(), HypercallError> {
    let cmd = pin_command(level)?;
    // SAFETY: a pin changes no mapping.
    unsafe { mmuext_one(cmd, mfn) }
}

/// Drops the pin on frame `mfn`; when nothing else references the table it
/// becomes plain memory again. Safe: no present mapping changes (a table
/// still in use keeps its other references).
pub fn unpin_table(mfn: u64) -> Result<(), HypercallError> {
    // SAFETY: unpinning changes no present mapping.
    unsafe { mmuext_one(MmuextCmd::Unpin, mfn) }
}

/// Loads top-level table `mfn` as the guest kernel's address space.
///
/// # Safety
///
/// As for [`mmuext_op`]: everything the running Rust code uses must stay
/// mapped as before in the new address space.
pub unsafe fn new_baseptr(mfn: u64) -> Result<(), HypercallError> {
    // SAFETY: the caller's contract.
    unsafe { mmuext_one(MmuextCmd::NewBaseptr, mfn) }
}

/// Uses top-level table `mfn` for guest user mode (`None`: no user mode).
/// Safe: user mode's tables are never used by the running (kernel) code.
pub fn new_user_baseptr(mfn: Option<u64>) -> Result<(), HypercallError> {
    // SAFETY: only user mode's address space changes.
    unsafe { mmuext_one(MmuextCmd::NewUserBaseptr, mfn.unwrap_or(0)) }
}

/// Flushes this CPU's TLB.
pub fn tlb_flush_local() -> Result<(), HypercallError> {
    // SAFETY: a flush changes no mapping.
    unsafe { mmuext_one(MmuextCmd::TlbFlushLocal, 0) }
}

/// Flushes the TLB entry of virtual address `va` on this CPU.
pub fn invlpg_local(va: u64) -> Result<(), HypercallError> {
    // SAFETY: a flush changes no mapping.
    unsafe { mmuext_one(MmuextCmd::InvlpgLocal, va) }
}

/// `update_va_mapping`: sets the level-1 entry that maps `va` in the
/// current kernel address space to `pte` (validated like an `mmu_update`
/// request), then flushes as `flags` ([`uvm_flags`](hypercall_abi::mm::uvm_flags)) asks.
///
/// # Safety
///
/// As for [`mmu_update`]: the page at `va` must not be memory the running
/// Rust code uses in a way the new entry breaks (unmapping or remapping it,
/// or making it read-only while something writes it).
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), HypercallError> {
    // SAFETY: `update_va_mapping` writes no guest memory through a
    // pointer; the mapping change is the caller's contract.
    unsafe { raw::hypercall3(Hypercall::UpdateVaMapping, va, pte, flags) }.map(|_| ())
}

/// `multicall`: performs up to [`MULTICALL_MAX`] hypercalls in one entry,
/// writing each one's encoded result into its `result` field (decode it
/// with [`decode_result`](hypercall_abi::decode_result)). Returns the
/// number performed: all of them, or fewer if an entry remapped `calls`
/// itself read-only (that entry was performed, its `result` not written).
/// `BadAddress` if an entry's `result` cannot be written: that entry and
/// the rest were not performed.
///
/// # Safety
///
/// Each entry must be a call the caller could make directly under that
/// call's own contract (pointer arguments included).
pub unsafe fn multicall(calls: &mut [MulticallEntry]) -> Result<usize, HypercallError> {
    if calls.len() as u64 > MULTICALL_MAX {
        return Err(HypercallError::BadArgument);
    }
    // SAFETY: the hypervisor writes the `result` fields of `calls`, which we
    // borrow mutably; everything else is the caller's contract.
    let performed = unsafe { raw::hypercall2(Hypercall::Multicall, calls.as_mut_ptr() as u64, calls.len() as u64) }?;
    Ok(performed as usize)
}

/// `memory_op(IncreaseReservation)`: fills `mfns` with the machine frame
/// numbers of `mfns.len()` new, zeroed frames (all or nothing). The frames
/// are owned but mapped nowhere; map them (or pin them as tables) to use
/// them. `OverLimit` above the manifest's `max_memory`.
pub fn increase_reservation(mfns: &mut [u64]) -> Result<(), HypercallError> {
    // SAFETY: the hypervisor writes `mfns.len()` numbers into `mfns`, which
    // we borrow mutably; every bit pattern is a valid `u64`.
    unsafe {
        raw::hypercall3(
            Hypercall::MemoryOp,
            MemoryOpCmd::IncreaseReservation as u64,
            mfns.as_mut_ptr() as u64,
            mfns.len() as u64,
        )
    }
    .map(|_| ())
}

/// `memory_op(DecreaseReservation)`: gives the frames in `mfns` back to the
/// hypervisor. Each must be owned and unreferenced: not mapped anywhere, not
/// a page table, not pinned (else `TypeCountInUse`). Stops at the first
/// refusal; the frames before it are gone.
///
/// Safe: a frame Rust code could reach is mapped, so it is refused.
pub fn decrease_reservation(mfns: &[u64]) -> Result<(), HypercallError> {
    // SAFETY: `memory_op` only reads the list; an unmapped frame is nothing
    // Rust code can observe.
    unsafe {
        raw::hypercall3(
            Hypercall::MemoryOp,
            MemoryOpCmd::DecreaseReservation as u64,
            mfns.as_ptr() as u64,
            mfns.len() as u64,
        )
    }
    .map(|_| ())
}

/// `memory_op(CurrentReservation)`: the number of frames this domain owns.
pub fn current_reservation() -> Result<u64, HypercallError> {
    // SAFETY: no pointer is passed.
    unsafe { raw::hypercall3(Hypercall::MemoryOp, MemoryOpCmd::CurrentReservation as u64, 0, 0) }
}

/// `memory_op(MaximumReservation)`: the most frames this domain may own.
pub fn maximum_reservation() -> Result<u64, HypercallError> {
    // SAFETY: no pointer is passed.
    unsafe { raw::hypercall3(Hypercall::MemoryOp, MemoryOpCmd::MaximumReservation as u64, 0, 0) }
}
