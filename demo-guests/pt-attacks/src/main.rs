//! `pt-attacks`: a hostile guest against the page-table validator.
//!
//! The idea shown: with *direct paging* the guest writes its own page
//! tables, so the hypervisor must refuse every update that would let it
//! reach memory it does not own or write a page table behind the
//! validator's back. This guest tries each such update in turn and prints
//! the typed error it gets, one line each:
//!
//! ```text
//! pt-attacks: <what> -> Err(<Variant>: <description>)
//! ```
//!
//! then makes a few valid updates (so the output also shows the validator
//! is not refusing everything), checks it can still print, and exits 0 if
//! every answer was the expected one (1 otherwise, with an `UNEXPECTED`
//! line). The scenario runs a second domain first, whose frames the first
//! attack tries to map.
//!
//! Most attacks use a *scratch window*: a fresh level-1 table linked into
//! an unused slot of the boot page directory, so `update_va_mapping` of
//! [`SCRATCH_VA`] writes an entry no Rust code depends on.
#![no_std]
#![no_main]

use parvus_guest_sdk::frames::{self, PageFrame};
use parvus_guest_sdk::hypercall::{self, raw, Aligned};
use parvus_guest_sdk::hypercall_abi::mm::{uvm_flags, MmuUpdate, MmuextOp, MulticallEntry};
use parvus_guest_sdk::hypercall_abi::{decode_result, Hypercall, PAGE_SIZE};
use parvus_guest_sdk::paging::{self, PageTable, Pte, PteFlags};
use parvus_guest_sdk::{println, HypercallError, StartInfo};

/// Directory slot of the scratch window (unused: the domain's memory
/// starts at 4 MiB and is far smaller than 1 GiB).
const SCRATCH_SLOT: usize = 511;
/// The address the scratch table maps (slot 511 of the first directory).
const SCRATCH_VA: u64 = (SCRATCH_SLOT as u64) << 21;
/// A directory slot for the large-page attempt (unused too).
const LARGE_SLOT: usize = 510;
/// The scratch-window slot a multicall through a read-only alias asks to map.
const ALIAS_TARGET_SLOT: usize = 9;
/// What a multicall entry's `result` holds until the hypervisor writes it.
const UNWRITTEN: u64 = 0x5eed_5eed_5eed_5eed;
/// A machine frame of the hypervisor: its image is loaded at 1 MiB.
const HYPERVISOR_MFN: u64 = 0x100;
/// How far from its own frames the guest looks for another domain's.
const NEIGHBOUR_SEARCH: u64 = 64;

const RO: PteFlags = PteFlags::PRESENT.union(PteFlags::USER).union(PteFlags::NO_EXECUTE);
const RW: PteFlags = RO.union(PteFlags::WRITABLE);
const LINK: PteFlags = PteFlags::PRESENT.union(PteFlags::USER).union(PteFlags::WRITABLE);

/// Counts answers as they are printed.
#[derive(Default)]
struct Tally {
    refused: u32,
    applied: u32,
    unexpected: u32,
}

impl Tally {
    /// Prints `what -> result` and checks it against `want`.
    fn check(&mut self, what: &str, result: Result<(), HypercallError>, want: Result<(), HypercallError>) {
        match result {
            Ok(()) => println!("pt-attacks: {what} -> Ok"),
            Err(e) => println!("pt-attacks: {what} -> Err({e:?}: {})", e.describe()),
        }
        if result != want {
            self.unexpected += 1;
            println!("pt-attacks: UNEXPECTED: wanted {want:?}");
        } else if result.is_ok() {
            self.applied += 1;
        } else {
            self.refused += 1;
        }
    }
}

/// One `mmu_update` request, its error unwrapped.
///
/// # Safety
///
/// If the hypervisor applies it, the entry at `ptr` must be one no Rust
/// code relies on (see each call).
unsafe fn update(ptr: u64, val: u64) -> Result<(), HypercallError> {
    let req = Aligned([MmuUpdate { ptr, val }]);
    // SAFETY: the caller's contract.
    unsafe { hypercall::mmu_update(&req.0) }.map_err(|e| e.error)
}

/// Sets the entry of the scratch window.
fn scratch(pte: u64) -> Result<(), HypercallError> {
    // SAFETY: `SCRATCH_VA` is mapped by the scratch table only; no Rust
    // object lives there, so any entry, or none, breaks nothing.
    unsafe { hypercall::update_va_mapping(SCRATCH_VA, pte, uvm_flags::INVLPG) }
}

/// The machine address of table entry `index` of the table in frame `mfn`.
fn entry_address(mfn: u64, index: usize) -> u64 {
    (mfn << 12) + index as u64 * 8
}

/// Entry `index` of one of the domain's own (boot) tables, by mfn.
fn read_entry(mfn: u64, index: usize) -> Pte {
    let pfn = frames::mfn_to_pfn(mfn).expect("the boot tables are the domain's frames");
    // SAFETY: the boot tables are mapped read-only in the linear window for
    // the domain's life; `index` < 512 keeps the read inside the page. The
    // hypervisor writes entries, hence volatile.
    Pte(unsafe { (frames::pfn_to_va(pfn) as *const u64).add(index).read_volatile() })
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let mut tally = Tally::default();
    let pml4 = paging::boot_root_mfn();
    let pdpt = paging::boot_root_entry(0).mfn();
    let directory = read_entry(pdpt, 0).mfn();
    assert!(!read_entry(directory, SCRATCH_SLOT).is_present(), "the scratch slot is in use");
    let mut data = PageFrame::alloc().expect("a data frame");
    data.words_mut()[0] = 0x5eed;
    println!("pt-attacks: {} frames of its own; attacking the validator", start.nr_pages);

    // The scratch window: a fresh L1 linked into an unused directory slot.
    let scratch_table = PageTable::new(1).expect("a scratch table");
    tally.check(
        "link a fresh L1 into an unused directory slot",
        // SAFETY: the slot was unused and the table is empty: nothing Rust
        // uses changes.
        unsafe { update(entry_address(directory, SCRATCH_SLOT), Pte::new(scratch_table.mfn(), LINK).0) },
        Ok(()),
    );

    // 1. Frames of others.
    let other = find_neighbour_frame();
    tally.check("map another domain's frame", other, Err(HypercallError::FrameNotOwned));
    tally.check(
        "map a hypervisor frame (mfn 0x100)",
        scratch(Pte::new(HYPERVISOR_MFN, RO).0),
        Err(HypercallError::HypervisorMemory),
    );

    // 2. Writable views of page tables.
    tally.check(
        "map its own L4 writable (its linear-map address)",
        // SAFETY: if accepted, the boot L4's linear mapping becomes
        // writable; no Rust reference points into it.
        unsafe { hypercall::update_va_mapping(start.page_tables, Pte::new(pml4, RW).0, uvm_flags::INVLPG) },
        Err(HypercallError::FrameIsPageTable),
    );
    let mut pinned = PageTable::new(1).expect("a table to pin");
    tally.check("pin a fresh L1", pinned.pin().map_err(refusal), Ok(()));
    tally.check(
        "reuse the pinned L1 as data (map it writable)",
        // SAFETY: if accepted, the table's own read-only linear mapping
        // becomes writable; `PageTable` holds no reference into it.
        unsafe { hypercall::update_va_mapping(pinned.va(), Pte::new(pinned.mfn(), RW).0, uvm_flags::INVLPG) },
        Err(HypercallError::FrameIsPageTable),
    );
    tally.check(
        "map the pinned L1 writable in the scratch window",
        scratch(Pte::new(pinned.mfn(), RW).0),
        Err(HypercallError::FrameIsPageTable),
    );
    tally.check(
        "pin a frame that is mapped writable",
        hypercall::pin_table(1, data.mfn()),
        Err(HypercallError::FrameMappedWritable),
    );
    tally.check(
        "L4 entry pointing at the L4 itself",
        // SAFETY: slot 1 of the L4 is unused; if accepted it would map the
        // L4's own contents at 512 GiB, where no Rust object lives.
        unsafe { update(entry_address(pml4, 1), Pte::new(pml4, LINK).0) },
        Err(HypercallError::PageTypeConflict),
    );
    tally.check(
        "directory entry pointing at the L4 (as an L1)",
        // SAFETY: the large-page slot is unused; nothing Rust uses is there.
        unsafe { update(entry_address(directory, LARGE_SLOT), Pte::new(pml4, LINK).0) },
        Err(HypercallError::PageTypeConflict),
    );

    // 3. Entries the guest may not write at all.
    tally.check(
        "supervisor mapping (no USER bit)",
        scratch(Pte::new(data.mfn(), RO.difference(PteFlags::USER)).0),
        Err(HypercallError::SupervisorMapping),
    );
    tally.check(
        "large page (PS bit in a directory entry)",
        // SAFETY: the slot is unused; nothing Rust uses is there.
        unsafe { update(entry_address(directory, LARGE_SLOT), Pte::new(data.mfn(), LINK | PteFlags::HUGE).0) },
        Err(HypercallError::UnsupportedEntryBits),
    );
    tally.check(
        "global page",
        scratch(Pte::new(data.mfn(), RO | PteFlags::GLOBAL).0),
        Err(HypercallError::UnsupportedEntryBits),
    );
    tally.check(
        "L4 slot 255 (reserved by the hypervisor)",
        // SAFETY: slot 255 is unused by the guest; if accepted it would map
        // the boot PDPT again there, where no Rust object lives.
        unsafe { update(entry_address(pml4, 255), Pte::new(pdpt, LINK).0) },
        Err(HypercallError::HypervisorMemory),
    );
    tally.check(
        "L4 slot 256 (the hypervisor's half)",
        // SAFETY: as above, for slot 256.
        unsafe { update(entry_address(pml4, 256), Pte::new(pdpt, LINK).0) },
        Err(HypercallError::HypervisorMemory),
    );

    // 4. Entry addresses that are not entries of the guest's tables.
    tally.check(
        "misaligned entry address",
        // SAFETY: if accepted, it would write inside the scratch table,
        // which no Rust code depends on.
        unsafe { update(entry_address(scratch_table.mfn(), 0) + 4, Pte::new(data.mfn(), RO).0) },
        Err(HypercallError::Misaligned),
    );
    tally.check(
        "entry address in a data page",
        // SAFETY: if accepted, it would write a word of `data`, a frame we
        // own and hold no reference into during the call.
        unsafe { update(data.mfn() << 12, Pte::new(data.mfn(), RO).0) },
        Err(HypercallError::NotAPageTable),
    );
    tally.check(
        "entry address in hypervisor memory",
        // SAFETY: no guest memory is addressed (the hypervisor's image).
        unsafe { update(HYPERVISOR_MFN << 12, Pte::new(data.mfn(), RO).0) },
        Err(HypercallError::NotAPageTable),
    );

    // 5. Pins and the balloon.
    tally.check(
        "unpin a table that is not pinned",
        hypercall::unpin_table(scratch_table.mfn()),
        Err(HypercallError::NotPinned),
    );
    tally.check("pin the pinned L1 again", pinned.pin().map_err(refusal), Err(HypercallError::AlreadyPinned));
    balloon(&mut tally);
    tally.check(
        "unknown mmuext command",
        // SAFETY: an unknown command changes nothing.
        unsafe { hypercall::mmuext_op(&Aligned([MmuextOp { cmd: 99, reserved: 0, arg: 0 }]).0) }.map_err(|e| e.error),
        Err(HypercallError::BadArgument),
    );

    // 6. A batch stops at its first bad request.
    let good = Pte::new(data.mfn(), RO).0;
    let batch = Aligned([
        MmuUpdate { ptr: entry_address(scratch_table.mfn(), 1), val: good },
        MmuUpdate { ptr: entry_address(scratch_table.mfn(), 2), val: Pte::new(data.mfn(), PteFlags::PRESENT).0 },
        MmuUpdate { ptr: entry_address(scratch_table.mfn(), 3), val: good },
    ]);
    // SAFETY: every request writes the scratch table, which maps addresses
    // no Rust object lives at.
    let outcome = unsafe { hypercall::mmu_update(&batch.0) };
    tally.check("batch of 3, the 2nd a supervisor mapping", outcome.map_err(|e| e.error), Err(HypercallError::SupervisorMapping));
    let done = outcome.err().map_or(3, |e| e.done);
    println!("pt-attacks: ... {done} of 3 applied before the refusal");
    if done != 1 {
        tally.unexpected += 1;
        println!("pt-attacks: UNEXPECTED: wanted 1");
    }

    // 7. A multicall performs every entry and reports each result; an
    //    entry whose result cannot be written back is not performed.
    multicall(&mut tally, Pte::new(data.mfn(), RO).0);
    multicall_through_alias(&mut tally, scratch_table.mfn(), Pte::new(data.mfn(), RO).0);

    // 8. Valid updates go through.
    tally.check("map an own frame read-only in the scratch window", scratch(Pte::new(data.mfn(), RO).0), Ok(()));
    // SAFETY: the scratch window now maps `data` (checked just above when
    // it succeeded); the read is volatile and aligned.
    let seen = unsafe { (SCRATCH_VA as *const u64).read_volatile() };
    println!("pt-attacks: ... reads {seen:#x} through it");
    if seen != 0x5eed {
        tally.unexpected += 1;
        println!("pt-attacks: UNEXPECTED: wanted 0x5eed");
    }
    tally.check("clear the scratch window", scratch(0), Ok(()));
    tally.check(
        "unlink the scratch L1 again",
        // SAFETY: the scratch slot maps nothing Rust uses.
        unsafe { update(entry_address(directory, SCRATCH_SLOT), 0) },
        Ok(()),
    );
    drop(pinned);
    drop(scratch_table);

    println!(
        "pt-attacks: {} attacks refused with the expected error, {} valid updates applied, {} unexpected answers",
        tally.refused, tally.applied, tally.unexpected
    );
    println!("pt-attacks: still alive, {} page tables leaked", paging::leaked_tables());
    u64::from(tally.unexpected != 0 || paging::leaked_tables() != 0)
}

/// The hypercall error inside a paging error.
fn refusal(e: paging::PagingError) -> HypercallError {
    match e {
        paging::PagingError::Refused(e) => e,
        paging::PagingError::Batch(e) => e.error,
        _ => HypercallError::Unrecognized,
    }
}

/// Tries to map the machine frames next to this domain's own, below its
/// lowest and above its highest, until one is another domain's (the
/// hypervisor hands frames out in order, so a domain built just before or
/// after this one owns them). Returns the answer for that frame.
fn find_neighbour_frame() -> Result<(), HypercallError> {
    let own = frames::frame_list();
    let (low, high) = (own.iter().min().copied().unwrap_or(0), own.iter().max().copied().unwrap_or(0));
    let candidates = (1..=NEIGHBOUR_SEARCH)
        .filter_map(move |d| low.checked_sub(d))
        .chain((1..=NEIGHBOUR_SEARCH).map(move |d| high + d));
    let mut last = Err(HypercallError::HypervisorMemory);
    for mfn in candidates {
        last = scratch(Pte::new(mfn, RO).0);
        match last {
            Err(HypercallError::FrameNotOwned) => return last,
            Ok(()) => {
                // Should never happen: undo it at once.
                let _ = scratch(0);
                return last;
            }
            Err(_) => {}
        }
    }
    last
}

/// Ballooning: a page table cannot be given back, and the domain cannot
/// grow past its `max_memory`.
fn balloon(tally: &mut Tally) {
    let mut mfn = [0u64; 1];
    tally.check("take one more frame", hypercall::increase_reservation(&mut mfn), Ok(()));
    tally.check("pin it as an L1", hypercall::pin_table(1, mfn[0]), Ok(()));
    tally.check(
        "give back the pinned page table",
        hypercall::decrease_reservation(&mfn),
        Err(HypercallError::TypeCountInUse),
    );
    tally.check("unpin it", hypercall::unpin_table(mfn[0]), Ok(()));
    tally.check("give it back now", hypercall::decrease_reservation(&mfn), Ok(()));
    let max = hypercall::maximum_reservation().unwrap_or(0);
    let now = hypercall::current_reservation().unwrap_or(0);
    let mut too_many = [0u64; 64];
    let ask = ((max - now.min(max)) as usize + 1).min(too_many.len());
    tally.check(
        "grow beyond max_memory",
        hypercall::increase_reservation(&mut too_many[..ask]),
        Err(HypercallError::OverLimit),
    );
}

/// `multicall` of a valid mapping, a supervisor mapping and an `iret`
/// (never allowed inside a multicall): all three are performed, each with
/// its own result.
fn multicall(tally: &mut Tally, good: u64) {
    let call = |op: Hypercall, args: [u64; 3]| MulticallEntry {
        op: op as u64,
        args: [args[0], args[1], args[2], 0, 0, 0],
        result: 0,
    };
    let bad = good & !PteFlags::USER.bits();
    let mut calls = [
        call(Hypercall::UpdateVaMapping, [SCRATCH_VA, good, uvm_flags::INVLPG]),
        call(Hypercall::UpdateVaMapping, [SCRATCH_VA, bad, uvm_flags::INVLPG]),
        call(Hypercall::Iret, [0; 3]),
    ];
    // SAFETY: the two `update_va_mapping` entries change only the scratch
    // window, where no Rust object lives; `iret` is refused inside a multicall.
    let performed = unsafe { hypercall::multicall(&mut calls) };
    let results = calls.map(|c| decode_result(c.result).map(|_| ()));
    let describe = |r: Result<(), HypercallError>| match r {
        Ok(()) => "Ok",
        Err(HypercallError::SupervisorMapping) => "Err(SupervisorMapping)",
        Err(HypercallError::BadArgument) => "Err(BadArgument)",
        Err(_) => "Err(other)",
    };
    println!(
        "pt-attacks: multicall [map, supervisor map, iret] -> {:?}: [{}, {}, {}]",
        performed,
        describe(results[0]),
        describe(results[1]),
        describe(results[2])
    );
    let want = [Ok(()), Err(HypercallError::SupervisorMapping), Err(HypercallError::BadArgument)];
    if performed != Ok(3) || results != want {
        tally.unexpected += 1;
        println!("pt-attacks: UNEXPECTED: wanted Ok(3): [Ok, Err(SupervisorMapping), Err(BadArgument)]");
    } else {
        tally.applied += 1;
        tally.refused += 2;
    }
    let _ = scratch(0);
}

/// A multicall through an alias. The array's frame is the guest's, but the
/// address it passes maps it read-only (in the scratch window), and its one
/// entry asks for a mapping: the hypervisor cannot write that entry's
/// result, so it must refuse the entry before doing it (`BadAddress`, the
/// mapping not made). Then the alias is writable and the first entry makes
/// it read-only: that entry is performed, the batch stops after it and
/// says one entry was performed, not that anything failed.
fn multicall_through_alias(tally: &mut Tally, scratch_table: u64, good: u64) {
    let Some(mut array) = PageFrame::alloc() else {
        tally.unexpected += 1;
        println!("pt-attacks: UNEXPECTED: no frame for the multicall array");
        return;
    };
    let target = SCRATCH_VA + ALIAS_TARGET_SLOT as u64 * PAGE_SIZE;
    let entry = |op: Hypercall, args: [u64; 3]| MulticallEntry {
        op: op as u64,
        args: [args[0], args[1], args[2], 0, 0, 0],
        result: UNWRITTEN,
    };
    let map_target = entry(Hypercall::UpdateVaMapping, [target, good, uvm_flags::INVLPG]);
    let write_entries = |array: &mut PageFrame, entries: &[MulticallEntry]| {
        for (words, e) in array.words_mut().chunks_exact_mut(8).zip(entries) {
            let [a0, a1, a2, a3, a4, a5] = e.args;
            words.copy_from_slice(&[e.op, a0, a1, a2, a3, a4, a5, e.result]);
        }
    };
    write_entries(&mut array, &[map_target]);
    let alias = |flags: PteFlags, array: &PageFrame| scratch(Pte::new(array.mfn(), flags).0);
    let result_of = |array: &PageFrame, i: usize| {
        // SAFETY: the array's frame is ours and mapped (writable, hence
        // readable) at `array.va()` for its life; word `i * 8 + 7` of the
        // page is an entry's `result`; volatile, as the hypervisor wrote it.
        unsafe { (array.va() as *const u64).add(i * 8 + 7).read_volatile() }
    };
    let target_mapped = || read_entry(scratch_table, ALIAS_TARGET_SLOT).is_present();

    let mut ok = alias(RO, &array).is_ok();
    // SAFETY: the array at `SCRATCH_VA` is read-only: the hypervisor may
    // write nothing there; its entry would only map `target`, in the
    // scratch window, where no Rust object lives.
    let refused = unsafe { raw::hypercall2(Hypercall::Multicall, SCRATCH_VA, 1) };
    tally.check("multicall of a mapping, its array mapped read-only", refused.map(drop), Err(HypercallError::BadAddress));
    let untouched = !target_mapped() && result_of(&array, 0) == UNWRITTEN;
    println!("pt-attacks: ... the mapping was {}", if untouched { "not made" } else { "MADE" });
    ok &= untouched;

    let make_alias_read_only = entry(Hypercall::UpdateVaMapping, [SCRATCH_VA, Pte::new(array.mfn(), RO).0, uvm_flags::INVLPG]);
    write_entries(&mut array, &[make_alias_read_only, map_target]);
    ok &= alias(RW, &array).is_ok();
    // SAFETY: the hypervisor writes only `result` fields of the array, a
    // frame no Rust reference points into during the call; the entries map
    // only scratch-window addresses.
    let performed = unsafe { raw::hypercall2(Hypercall::Multicall, SCRATCH_VA, 2) };
    let stopped = performed == Ok(1) && result_of(&array, 0) == UNWRITTEN && result_of(&array, 1) == UNWRITTEN && !target_mapped();
    let alias_now = read_entry(scratch_table, 0);
    let now_read_only = alias_now.mfn() == array.mfn() && !alias_now.flags().contains(PteFlags::WRITABLE);
    println!(
        "pt-attacks: multicall [make its own array read-only, map] -> {performed:?}: the first done, {}",
        if stopped && now_read_only { "the second not" } else { "UNEXPECTED results" }
    );
    ok &= stopped && now_read_only;
    if ok {
        tally.applied += 1;
    } else {
        tally.unexpected += 1;
        println!("pt-attacks: UNEXPECTED: wanted Err(BadAddress) with nothing done, then Ok(1) with only the first entry done");
    }
    let _ = scratch(0);
}
