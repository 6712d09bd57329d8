//! `multicall`: several hypercalls for the price of one entry.
//!
//! The guest passes an array of [`MulticallEntry`]s; each is read, performed
//! as if the guest had made it, and its encoded result written back into
//! the entry. Only calls that simply answer can be batched (see
//! `hypercall::answer`): one that leaves the caller or changes its registers is
//! refused in its entry, and the batch goes on.
//!
//! # Why one translation can serve many entries
//!
//! Batching only pays if an entry costs less than the entry and exit it
//! saves. Translating every entry's address twice through the guest's page
//! tables (once to read it, once to write its result) cost more than that.
//! So the page holding the entries is translated once, for writing (which
//! implies reading), and its machine address is reused for every entry in
//! that page, *as long as nothing the translation depends on can have
//! changed*: the caller's page tables, their root, and which frames the
//! caller owns. Only the calls `may_remap` names can change those; after
//! one of them the translation is dropped, and the next entry's page is
//! translated again before that entry is performed. (A stale machine address there would be a real hole: the batch
//! could unmap the array's page, pin its frame as a page table or give it
//! back, and the result write would then land in a frame the guest may no
//! longer write.)
//!
//! An entry that straddles two pages, or lies in a page the guest may read
//! but not write, takes the general path: a checked copy in, a check that
//! its `result` can be written, the call, a checked copy out.
//!
//! # Never a failure for something done
//!
//! An entry is performed only once its `result` is known to be writable:
//! in the fast path its page was translated for writing and nothing that
//! could change that has run since; in the general path it is checked
//! before the call. An entry whose `result` cannot be written is therefore
//! refused untouched (`BadAddress`, the entries before it performed). The
//! one case left is an entry that itself takes that write access away (it
//! remaps the array): it was performed, so the multicall does not report
//! a failure but stops after it, returning the number of entries performed.

use super::{answer, Context};
use crate::console::ConsoleSink;
use crate::guest_memory::GuestSlice;
use crate::machine_memory::MachineMemory;
use crate::paging::Access;
use hypercall_abi::mm::{MulticallEntry, MULTICALL_MAX};
use hypercall_abi::{encode_result, Hypercall, HypercallError, PAGE_SIZE};
use zerocopy::{FromZeros, IntoBytes};

/// Bytes of one entry.
const ENTRY: u64 = core::mem::size_of::<MulticallEntry>() as u64;
/// Offset of the `result` field in an entry.
const RESULT: u64 = core::mem::offset_of!(MulticallEntry, result) as u64;

/// No translated page (see [`multicall`]): the base is not page-aligned.
const NO_PAGE: (u64, u64) = (1, 0);

/// `multicall(calls, count)`: performs `count` entries in order; returns
/// the number performed: `count`, or fewer if an entry took away the write
/// access to its own `result` (see the module's documentation). An entry
/// that cannot be read, or whose `result` cannot be written, is not
/// performed: the multicall fails there with `BadAddress` (the entries
/// before it were performed).
pub fn multicall<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, calls: u64, count: u64) -> Result<u64, HypercallError> {
    if count > MULTICALL_MAX {
        return Err(HypercallError::BadArgument);
    }
    // The page last translated for writing: its guest-virtual base and
    // its machine base; none is `NO_PAGE`, whose base matches no entry's
    // (it is not page-aligned), so that the test costs no flag kept beside
    // the two.
    let mut page = NO_PAGE;
    for i in 0..count {
        let at = calls.checked_add(i * ENTRY).ok_or(HypercallError::BadAddress)?;
        let base = at & !(PAGE_SIZE - 1);
        let in_one_page = at - base + ENTRY <= PAGE_SIZE;
        // Whether the entry lies in the page last translated, translated
        // now if it is another. A page the guest cannot write is not
        // translated (`page` keeps the last one, still valid: only a remap
        // drops it): the entry takes the general path, which refuses it
        // before performing it.
        let translated = in_one_page
            && (page.0 == base
                || match ctx.view().translate(base, Access::Write) {
                    Ok(maddr) => {
                        page = (base, maddr);
                        true
                    }
                    Err(_) => false,
                });
        let result = if translated {
            let entry_at = page.1 + (at - base);
            let mut entry = MulticallEntry::new_zeroed();
            ctx.mem.read(entry_at, entry.as_mut_bytes());
            let (result, remapped) = perform(ctx, &entry);
            if !remapped {
                ctx.mem.write_u64(entry_at + RESULT, encode_result(result));
                continue;
            }
            result
        } else {
            let mut entry = MulticallEntry::new_zeroed();
            ctx.view().read(GuestSlice::new(at, ENTRY), entry.as_mut_bytes())?;
            ctx.view().check(GuestSlice::new(at + RESULT, 8), Access::Write)?;
            let (result, remapped) = perform(ctx, &entry);
            if !remapped {
                // Checked writable above, and nothing changed since.
                write_result(ctx, at, result)?;
                continue;
            }
            result
        };
        // A call that may have remapped the array: the next entry's page is
        // translated again, and this result written through a fresh
        // translation. If the call took that write access away, it was
        // still performed: the batch stops after it.
        page = NO_PAGE;
        if write_result(ctx, at, result).is_err() {
            return Ok(performed_through(calls, at));
        }
    }
    Ok(count)
}

/// The number of entries performed when the one at `at` was the last.
/// Out of line: computed in the loop, it made the compiler keep a second
/// counter on every entry (4 instructions per entry of `multicall_8`). For
/// the same reason the loop has this one way out, shared by both paths.
#[cold]
#[inline(never)]
fn performed_through(calls: u64, at: u64) -> u64 {
    (at - calls) / ENTRY + 1
}

/// Performs one entry; also says whether it may have changed what the
/// caller's addresses translate to.
#[inline(always)]
fn perform<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, entry: &MulticallEntry) -> (Result<u64, HypercallError>, bool) {
    match Hypercall::try_from(entry.op) {
        Ok(call) => (answer(ctx, call, &entry.args), may_remap(call)),
        Err(e) => (Err(e), false),
    }
}

/// Writes an entry's result through a fresh, checked translation (the
/// call may have remapped the array). An error means the call took away
/// the write access to its own `result`: it was still performed, and the
/// batch stops after it. Inlined: every entry that may remap (the
/// page-table calls) ends here, and the call would cost more than the
/// write.
#[inline(always)]
fn write_result<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, at: u64, result: Result<u64, HypercallError>) -> Result<(), HypercallError> {
    ctx.view().write(GuestSlice::new(at + RESULT, 8), &encode_result(result).to_le_bytes())
}

/// Whether `call`, made inside a batch, may change a translation of the
/// caller's: its page tables, their root, or the frames it owns. Every call
/// is named (no wildcard), so a new hypercall must be placed on one side.
fn may_remap(call: Hypercall) -> bool {
    match call {
        Hypercall::MmuUpdate | Hypercall::MmuextOp | Hypercall::UpdateVaMapping | Hypercall::MemoryOp => true,
        // These read or write guest memory only through checked writable
        // mappings (never a page table, which the typing rules keep
        // read-only), or touch no guest memory at all.
        Hypercall::Null
        | Hypercall::AbiVersion
        | Hypercall::ConsoleWrite
        | Hypercall::DomainInfo
        | Hypercall::SetTrapTable
        | Hypercall::SetCallbacks
        | Hypercall::StackSwitch
        | Hypercall::EventChannelOp
        | Hypercall::SetTimer => false,
        // Refused in a batch: they do nothing there.
        Hypercall::Multicall | Hypercall::Yield | Hypercall::Exit | Hypercall::Iret | Hypercall::BenchFloor | Hypercall::SchedOp => false,
    }
}
