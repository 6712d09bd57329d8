//! Direct paging and ballooning: `mmu_update`, `mmuext_op`,
//! `update_va_mapping`, `memory_op`.
//!
//! The rules live in [`page_type`](crate::page_type); this module reads the
//! guest's request arrays (a page of requests is translated once, then
//! read word by word), applies the requests in order, and records which TLB
//! entries must go.

use super::{Context, TlbFlush};
use crate::console::ConsoleSink;
use crate::frame_table::{Owner, PageType};
use crate::guest_memory::GuestSlice;
use crate::machine_memory::MachineMemory;
use crate::paging::Access;
use hypercall_abi::mm::{uvm_flags, MemoryOpCmd, MmuextCmd, BATCH_MAX};
use hypercall_abi::{HypercallError, PAGE_SIZE};

/// Runs a hypercall that may change the caller's page tables, forgetting
/// the vCPU's cached kernel-stack translation first.
pub fn forget_stack_page<M: MachineMemory, C: ConsoleSink>(
    ctx: &mut Context<'_, M, C>,
    call: impl FnOnce(&mut Context<'_, M, C>) -> Result<u64, HypercallError>,
) -> Result<u64, HypercallError> {
    ctx.caller().vcpu.stack_pages = [(0, 0, 0); 2];
    call(ctx)
}

/// Size of an `MmuUpdate` or `MmuextOp` record.
const RECORD: u64 = 16;

/// Calls `each(ctx, word0, word1)` for `count` 16-byte records at guest
/// address `addr`, translating each page of the array once. On the first
/// error returns how many records succeeded and the error.
fn for_each_record<M: MachineMemory, C: ConsoleSink>(
    ctx: &mut Context<'_, M, C>,
    addr: u64,
    count: u64,
    mut each: impl FnMut(&mut Context<'_, M, C>, u64, u64) -> Result<(), HypercallError>,
) -> Result<(), (u64, HypercallError)> {
    if count > BATCH_MAX {
        return Err((0, HypercallError::BadArgument));
    }
    if !addr.is_multiple_of(RECORD) {
        return Err((0, HypercallError::Misaligned));
    }
    let mut done = 0;
    while done < count {
        let va = addr.checked_add(done * RECORD).ok_or((done, HypercallError::BadAddress))?;
        let maddr = ctx.view().translate(va, Access::Read).map_err(|e| (done, e.into()))?;
        let in_page = ((PAGE_SIZE - va % PAGE_SIZE) / RECORD).min(count - done);
        for k in 0..in_page {
            let w0 = ctx.mem.read_u64(maddr + k * RECORD);
            let w1 = ctx.mem.read_u64(maddr + k * RECORD + 8);
            each(ctx, w0, w1).map_err(|e| (done + k, e))?;
        }
        done += in_page;
    }
    Ok(())
}

/// Writes `done` to the guest's counter (if it gave one) and turns a batch
/// outcome into the hypercall result.
fn finish_batch<M: MachineMemory, C: ConsoleSink>(
    ctx: &mut Context<'_, M, C>,
    count: u64,
    done_ptr: u64,
    outcome: Result<(), (u64, HypercallError)>,
) -> Result<u64, HypercallError> {
    let done = match outcome {
        Ok(()) => count,
        Err((n, _)) => n,
    };
    if done_ptr != 0 {
        // Translated again: the batch itself may have changed what `done`
        // maps to (even made its page a page table), and a stale machine
        // address would write through the typing rules.
        ctx.view().write(GuestSlice::new(done_ptr, 8), &done.to_le_bytes())?;
    }
    outcome.map(|()| count).map_err(|(_, e)| e)
}

/// Checks the caller's `done` counter (8-byte aligned, writable) before
/// any request is applied, so that a bad counter address cannot hide
/// updates that went in. (It is translated again when written.)
fn check_done<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, done_ptr: u64) -> Result<u64, HypercallError> {
    if done_ptr == 0 {
        return Ok(0);
    }
    if !done_ptr.is_multiple_of(8) {
        return Err(HypercallError::Misaligned);
    }
    ctx.view().translate(done_ptr, Access::Write)?;
    Ok(done_ptr)
}

/// `mmu_update(reqs, count, done)`.
pub fn mmu_update<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, reqs: u64, count: u64, done: u64) -> Result<u64, HypercallError> {
    let done = check_done(ctx, done)?;
    let outcome = for_each_record(ctx, reqs, count, |ctx, ptr, val| {
        if ctx.tables().update_entry(ptr, val)? {
            // A present entry changed: stale translations must go.
            ctx.tlb = TlbFlush::All;
        }
        Ok(())
    });
    finish_batch(ctx, count, done, outcome)
}

/// `update_va_mapping(va, pte, flags)`.
pub fn update_va_mapping<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, va: u64, pte: u64, flags: u64) -> Result<u64, HypercallError> {
    if flags & !uvm_flags::ALL != 0 {
        return Err(HypercallError::BadArgument);
    }
    let root = ctx.caller().vcpu.kernel_root;
    let mut tables = ctx.tables();
    let ptr = tables.l1_entry_for(root, va)?;
    let replaced = tables.update_entry(ptr, pte)?;
    // A replaced entry may be cached under other addresses too (the same
    // level-1 table can be linked at several places), and a stale writable
    // translation of a frame that becomes a page table would break the
    // typing invariant: then everything goes. Otherwise `va`'s entry, or
    // all if the guest asks.
    let flush = if replaced || flags & uvm_flags::TLB_FLUSH != 0 { TlbFlush::All } else { TlbFlush::Page(va) };
    ctx.tlb = ctx.tlb.and(flush);
    Ok(0)
}

/// `mmuext_op(ops, count, done)`.
pub fn mmuext_op<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, ops: u64, count: u64, done: u64) -> Result<u64, HypercallError> {
    let done = check_done(ctx, done)?;
    let outcome = for_each_record(ctx, ops, count, |ctx, word0, arg| {
        let (cmd, reserved) = (word0 as u32, (word0 >> 32) as u32);
        if reserved != 0 {
            return Err(HypercallError::BadArgument);
        }
        match MmuextCmd::from_raw(cmd).ok_or(HypercallError::BadArgument)? {
            MmuextCmd::PinL1Table => ctx.tables().pin(arg, 1),
            MmuextCmd::PinL2Table => ctx.tables().pin(arg, 2),
            MmuextCmd::PinL3Table => ctx.tables().pin(arg, 3),
            MmuextCmd::PinL4Table => ctx.tables().pin(arg, 4),
            MmuextCmd::Unpin => ctx.tables().unpin(arg),
            MmuextCmd::NewBaseptr => {
                ctx.tables().get_type(arg, PageType::L4)?;
                let old = core::mem::replace(&mut ctx.caller().vcpu.kernel_root, arg * PAGE_SIZE);
                ctx.tables().put_type(old / PAGE_SIZE);
                Ok(())
            }
            MmuextCmd::NewUserBaseptr => {
                if arg != 0 {
                    ctx.tables().get_type(arg, PageType::L4)?;
                }
                let new = (arg != 0).then_some(arg * PAGE_SIZE);
                if let Some(old) = core::mem::replace(&mut ctx.caller().vcpu.user_root, new) {
                    ctx.tables().put_type(old / PAGE_SIZE);
                }
                Ok(())
            }
            MmuextCmd::TlbFlushLocal => {
                ctx.tlb = TlbFlush::All;
                Ok(())
            }
            MmuextCmd::InvlpgLocal => {
                ctx.tlb = ctx.tlb.and(TlbFlush::Page(arg));
                Ok(())
            }
        }
    });
    finish_batch(ctx, count, done, outcome)
}

/// Frames `memory_op` handles per copy of its array through the stack.
const MEMORY_OP_CHUNK: u64 = 64;

/// `memory_op(cmd, frames, count)`. The array is checked whole first, then
/// copied through the stack in chunks: a call needs no hypervisor heap,
/// and the caller's frame list has room for `max_pages` frames from the
/// start.
pub fn memory_op<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, cmd: u64, frames: u64, count: u64) -> Result<u64, HypercallError> {
    let cmd = MemoryOpCmd::from_raw(cmd).ok_or(HypercallError::BadArgument)?;
    if count > BATCH_MAX {
        return Err(HypercallError::BadArgument);
    }
    let list = GuestSlice::new(frames, count.checked_mul(8).ok_or(HypercallError::BadArgument)?);
    match cmd {
        MemoryOpCmd::CurrentReservation => Ok(ctx.caller().frames.len() as u64),
        MemoryOpCmd::MaximumReservation => Ok(ctx.caller().max_pages),
        MemoryOpCmd::IncreaseReservation => {
            let d = ctx.caller();
            if d.frames.len() as u64 + count > d.max_pages {
                return Err(HypercallError::OverLimit);
            }
            // Check the output array and the free frames before taking anything.
            ctx.view().check(list, Access::Write)?;
            if ctx.frames.free_count() < count {
                return Err(HypercallError::OutOfMemory);
            }
            let owner = Owner::Domain(ctx.caller);
            for first in (0..count).step_by(MEMORY_OP_CHUNK as usize) {
                let n = MEMORY_OP_CHUNK.min(count - first);
                let mut bytes = [0u8; MEMORY_OP_CHUNK as usize * 8];
                for chunk in bytes.chunks_exact_mut(8).take(n as usize) {
                    let mfn = ctx.frames.alloc(owner).expect("counted free above");
                    ctx.mem.zero_frame(mfn);
                    chunk.copy_from_slice(&mfn.to_le_bytes());
                    ctx.caller().frames.push(mfn);
                }
                let piece = GuestSlice::new(frames + first * 8, n * 8);
                ctx.view().write(piece, &bytes[..n as usize * 8]).expect("the array was checked writable above");
            }
            Ok(count)
        }
        MemoryOpCmd::DecreaseReservation => {
            ctx.view().check(list, Access::Read)?;
            for first in (0..count).step_by(MEMORY_OP_CHUNK as usize) {
                let n = MEMORY_OP_CHUNK.min(count - first);
                let mut bytes = [0u8; MEMORY_OP_CHUNK as usize * 8];
                let piece = GuestSlice::new(frames + first * 8, n * 8);
                ctx.view().read(piece, &mut bytes[..n as usize * 8]).expect("the array was checked readable above");
                for chunk in bytes[..n as usize * 8].chunks_exact(8) {
                    let mfn = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    give_back(ctx, mfn)?;
                }
            }
            Ok(count)
        }
    }
}

/// Returns one unreferenced frame of the caller to the hypervisor.
fn give_back<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, mfn: u64) -> Result<(), HypercallError> {
    let caller = ctx.caller;
    match ctx.frames.owner(mfn) {
        Some(Owner::Domain(d)) if d == caller => {}
        Some(Owner::Domain(_)) => return Err(HypercallError::FrameNotOwned),
        _ => return Err(HypercallError::HypervisorMemory),
    }
    // (The console ring and shared-info page are never unreferenced: the
    // hypervisor holds a reference on each for the domain's whole life.)
    let info = ctx.frames.info(mfn).expect("owned");
    if !info.is_unreferenced() {
        return Err(HypercallError::TypeCountInUse);
    }
    ctx.frames.free(mfn, Owner::Domain(caller)).expect("owned and unreferenced");
    let list = &mut ctx.caller().frames;
    if let Some(i) = list.iter().position(|m| *m == mfn) {
        list.swap_remove(i);
    }
    Ok(())
}
