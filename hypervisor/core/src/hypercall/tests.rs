//! Host tests of the paravirtualized-memory and ring-compression hypercalls,
//! through [`System`](crate::system::System) as the kernel drives it.

use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::TestMemory;
use crate::manifest::Expect;
use crate::paging::flags;
use crate::system::{Next, Platform, System};
use crate::testing::{system_with, DATA};
use crate::vcpu::GuestRegs;
use hypercall_abi::mm::{MemoryOpCmd, MmuextCmd, MulticallEntry};
use hypercall_abi::trap::{frame_flags, TrapFrame, TrapInfo};
use hypercall_abi::{decode_result, Hypercall, HypercallError, StartInfo, PAGE_SIZE};
use zerocopy::{FromBytes, IntoBytes};

struct Guest {
    sys: System,
    mem: TestMemory,
    out: String,
    regs: GuestRegs,
    si: StartInfo,
}

impl Guest {
    fn new() -> Guest {
        let (mut sys, mut mem) = system_with(1, Expect::Exit(0));
        let mut regs = GuestRegs::default();
        sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut regs);
        let mut g = Guest { sys, mem, out: String::new(), regs, si: zerocopy::FromZeros::new_zeroed() };
        let mut bytes = [0u8; core::mem::size_of::<StartInfo>()];
        let at = g.regs.rdi;
        g.view().read(GuestSlice::new(at, bytes.len() as u64), &mut bytes).unwrap();
        g.si = StartInfo::read_from_bytes(&bytes).unwrap();
        g
    }

    fn view(&mut self) -> GuestView<'_, TestMemory> {
        let d = &self.sys.domains[0];
        GuestView { mem: &mut self.mem, frames: &self.sys.frames, domain: d.id, root: d.vcpu.kernel_root }
    }

    fn poke<T: IntoBytes + zerocopy::Immutable>(&mut self, va: u64, value: &T) {
        self.view().write(GuestSlice::new(va, value.as_bytes().len() as u64), value.as_bytes()).unwrap();
    }

    fn call(&mut self, h: Hypercall, args: &[u64]) -> (Next, Result<u64, HypercallError>) {
        self.regs.rax = h as u64;
        let slots = [&mut self.regs.rdi, &mut self.regs.rsi, &mut self.regs.rdx, &mut self.regs.r10];
        for (slot, a) in slots.into_iter().zip(args) {
            *slot = *a;
        }
        let mut p = Platform { mem: &mut self.mem, console: &mut self.out, tsc: 0 };
        let next = self.sys.on_hypercall(&mut p, &mut self.regs);
        (next, decode_result(self.regs.rax))
    }

    /// Machine frame of a guest pfn.
    fn mfn(&self, pfn: u64) -> u64 {
        self.sys.domains[0].frames[pfn as usize]
    }

    fn pfn_of(&self, va: u64) -> u64 {
        (va - self.si.virt_base) / PAGE_SIZE
    }

    /// A level-1 entry for pfn with the user bit and `extra` flags.
    fn pte(&self, pfn: u64, extra: u64) -> u64 {
        (self.mfn(pfn) << 12) | flags::PRESENT | flags::USER | extra
    }
}

#[test]
fn update_va_mapping_changes_rights_and_refuses_writable_page_tables() {
    let mut g = Guest::new();
    let data_pfn = g.pfn_of(DATA);
    // Read-only now: domain_info can no longer write there.
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[DATA, g.pte(data_pfn, flags::NO_EXECUTE), 0]).1, Ok(0));
    assert_eq!(g.call(Hypercall::DomainInfo, &[0, DATA]).1, Err(HypercallError::BadAddress));
    assert_eq!(g.call(Hypercall::ConsoleWrite, &[DATA, 5]).1, Ok(5), "still readable");
    // A page table mapped writable: refused, and the old entry stays.
    let pt_pfn = g.pfn_of(g.si.page_tables);
    let pt_va = g.si.page_tables;
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[pt_va, g.pte(pt_pfn, flags::WRITABLE), 0]).1, Err(HypercallError::FrameIsPageTable));
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[DATA, g.pte(data_pfn, 0), 7]).1, Err(HypercallError::BadArgument), "unknown flag");
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[0xffff_8000_0000_0000, 0, 0]).1, Err(HypercallError::HypervisorMemory));
}

#[test]
fn mmu_update_stops_at_the_first_bad_request_and_reports_how_many_went_in() {
    let mut g = Guest::new();
    let free = g.si.free_start;
    let free_pfn = g.pfn_of(free);
    // The L1 entry of `free` and of the next page, by machine address.
    let l1 = g.sys.domains[0].vcpu.kernel_root; // any: we find the real entry address below
    let ptr = {
        let d = &g.sys.domains[0];
        let t = crate::page_type::PageTables { frames: &mut g.sys.frames, mem: &mut g.mem, domain: d.id, hypervisor_half: &g.sys.hypervisor_half };
        t.l1_entry_for(l1, free).unwrap()
    };
    let reqs = [
        hypercall_abi::mm::MmuUpdate { ptr, val: g.pte(free_pfn, flags::NO_EXECUTE) },
        hypercall_abi::mm::MmuUpdate { ptr: ptr + 8, val: g.pte(free_pfn + 1, 0) & !flags::USER },
        hypercall_abi::mm::MmuUpdate { ptr: ptr + 16, val: 0 },
    ];
    let at = free + 0x1000 * 4; // a writable, 16-aligned place for the array
    g.poke(at, &reqs);
    let done_at = at + 64;
    assert_eq!(g.call(Hypercall::MmuUpdate, &[at, 3, done_at]).1, Err(HypercallError::SupervisorMapping));
    let mut done = [0u8; 8];
    g.view().read(GuestSlice::new(done_at, 8), &mut done).unwrap();
    assert_eq!(u64::from_le_bytes(done), 1);
    assert_eq!(g.call(Hypercall::MmuUpdate, &[at + 8, 1, 0]).1, Err(HypercallError::Misaligned));
    assert_eq!(g.call(Hypercall::MmuUpdate, &[at, 5000, 0]).1, Err(HypercallError::BadArgument));
}

#[test]
fn ballooning_respects_the_limit_and_references() {
    let mut g = Guest::new();
    let out = g.si.free_start;
    let max = g.sys.domains[0].max_pages;
    let have = g.sys.domains[0].frames.len() as u64;
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::MaximumReservation as u64, 0, 0]).1, Ok(max));
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::IncreaseReservation as u64, out, max - have + 1]).1, Err(HypercallError::OverLimit));
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::IncreaseReservation as u64, out, 2]).1, Ok(2));
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::CurrentReservation as u64, 0, 0]).1, Ok(have + 2));
    let mut bytes = [0u8; 16];
    g.view().read(GuestSlice::new(out, 16), &mut bytes).unwrap();
    let new = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(g.sys.frames.info(new).unwrap().owner, crate::frame_table::Owner::Domain(crate::domain::DomainId(0)));
    // Give back: a fresh frame goes; a page table and the console ring do not.
    let pt = g.mfn(g.pfn_of(g.si.page_tables));
    let ring = g.mfn(g.pfn_of(g.si.console_ring));
    for (mfn, want) in [(new, Ok(1)), (pt, Err(HypercallError::TypeCountInUse)), (ring, Err(HypercallError::TypeCountInUse)), (3, Err(HypercallError::HypervisorMemory))] {
        g.poke(out + 64, &mfn);
        assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::DecreaseReservation as u64, out + 64, 1]).1, want, "frame {mfn:#x}");
    }
}

#[test]
fn multicall_reports_each_result_and_refuses_what_cannot_be_batched() {
    let mut g = Guest::new();
    let at = g.si.free_start;
    let entry = |op: Hypercall, args: [u64; 6]| MulticallEntry { op: op as u64, args, result: 0 };
    let calls = [
        entry(Hypercall::AbiVersion, [0; 6]),
        entry(Hypercall::Yield, [0; 6]),
        entry(Hypercall::ConsoleWrite, [0x1000, 4, 0, 0, 0, 0]),
    ];
    g.poke(at, &calls);
    assert_eq!(g.call(Hypercall::Multicall, &[at, 3]).1, Ok(3));
    let mut bytes = [0u8; 3 * 64];
    g.view().read(GuestSlice::new(at, bytes.len() as u64), &mut bytes).unwrap();
    let results: Vec<_> = bytes.chunks(64).map(|c| decode_result(MulticallEntry::read_from_bytes(c).unwrap().result)).collect();
    assert_eq!(results, [Ok(u64::from(hypercall_abi::ABI_VERSION)), Err(HypercallError::BadArgument), Err(HypercallError::BadAddress)]);
    assert_eq!(g.call(Hypercall::Multicall, &[at, 65]).1, Err(HypercallError::BadArgument));
}

#[test]
fn multicall_refuses_exactly_the_calls_the_abi_says_cannot_be_batched() {
    let mut g = Guest::new();
    let at = g.si.free_start;
    for call in Hypercall::ALL {
        g.poke(at, &MulticallEntry { op: call as u64, args: [0; 6], result: 0 });
        assert_eq!(g.call(Hypercall::Multicall, &[at, 1]).1, Ok(1), "{}", call.name());
        let result = multicall_results(&mut g, at, 1)[0];
        if call.batchable() {
            // With all-zero arguments no batchable call is refused as a bad
            // argument: a BadArgument here is the multicall's refusal.
            assert_ne!(result, Err(HypercallError::BadArgument), "{} was refused", call.name());
            assert!(result.err().is_none_or(|e| call.errors().contains(&e)), "{}: {result:?}", call.name());
        } else {
            assert_eq!(result, Err(HypercallError::BadArgument), "{}", call.name());
        }
    }
}

/// The `result` fields of `n` multicall entries at `at`.
fn multicall_results(g: &mut Guest, at: u64, n: usize) -> Vec<Result<u64, HypercallError>> {
    let mut bytes = vec![0u8; n * 64];
    g.view().read(GuestSlice::new(at, bytes.len() as u64), &mut bytes).unwrap();
    bytes.chunks(64).map(|c| decode_result(MulticallEntry::read_from_bytes(c).unwrap().result)).collect()
}

#[test]
fn multicall_entries_may_straddle_pages_and_span_two() {
    let mut g = Guest::new();
    // Two entries at the end of one page, one across the boundary, one after it.
    let at = g.si.free_start + PAGE_SIZE - 2 * 64 - 32;
    let entry = |op: Hypercall| MulticallEntry { op: op as u64, args: [0; 6], result: 0 };
    let calls = [entry(Hypercall::AbiVersion), entry(Hypercall::Exit), entry(Hypercall::AbiVersion), entry(Hypercall::Null)];
    g.poke(at, &calls);
    let (next, result) = g.call(Hypercall::Multicall, &[at, 4]);
    assert_eq!(result, Ok(4));
    assert!(matches!(next, Next::Resume { .. }), "the refused exit did nothing");
    let version = Ok(u64::from(hypercall_abi::ABI_VERSION));
    assert_eq!(multicall_results(&mut g, at, 4), [version, Err(HypercallError::BadArgument), version, Ok(0)]);
}

/// The raw `result` fields of `n` multicall entries at `at`.
fn multicall_raw_results(g: &mut Guest, at: u64, n: usize) -> Vec<u64> {
    let mut bytes = vec![0u8; n * 64];
    g.view().read(GuestSlice::new(at, bytes.len() as u64), &mut bytes).unwrap();
    bytes.chunks(64).map(|c| MulticallEntry::read_from_bytes(c).unwrap().result).collect()
}

/// What a `result` field holds before the hypervisor writes it.
const UNWRITTEN: u64 = 0x5eed_5eed_5eed_5eed;

fn mc_entry(op: Hypercall, args: [u64; 6]) -> MulticallEntry {
    MulticallEntry { op: op as u64, args, result: UNWRITTEN }
}

#[test]
fn multicall_translates_again_after_a_call_that_remaps() {
    let mut g = Guest::new();
    let at = g.si.free_start;
    let pfn = g.pfn_of(at);
    let sp = g.si.stack_top - 0x100;
    let sp_before = g.sys.domains[0].vcpu.kernel_sp;
    // The second call makes the array's own page read-only: it is
    // performed, but its result can no longer be written. The batch stops
    // after it and says how many entries were performed; nothing is
    // written through the old translation, and the third is not performed.
    let calls = [
        mc_entry(Hypercall::AbiVersion, [0; 6]),
        mc_entry(Hypercall::UpdateVaMapping, [at, g.pte(pfn, flags::NO_EXECUTE), 0, 0, 0, 0]),
        mc_entry(Hypercall::StackSwitch, [sp, 0, 0, 0, 0, 0]),
    ];
    g.poke(at, &calls);
    assert_eq!(g.call(Hypercall::Multicall, &[at, 3]).1, Ok(2), "two performed, not a failure");
    let version = hypercall_abi::encode_result(Ok(u64::from(hypercall_abi::ABI_VERSION)));
    assert_eq!(multicall_raw_results(&mut g, at, 3), [version, UNWRITTEN, UNWRITTEN]);
    assert_eq!(g.view().translate(at, crate::paging::Access::Write), Err(crate::paging::WalkError::ReadOnly { level: 1 }), "the remap was done");
    assert_eq!(g.sys.domains[0].vcpu.kernel_sp, sp_before, "the entry after it was not performed");
}

/// Rule: an entry whose `result` the caller cannot write is not performed.
/// The multicall fails with `BadAddress` before touching anything of it
/// (the entries before it were performed), whether the whole array is
/// read-only, a later page of it became read-only during the batch, or
/// only the page holding the entry's `result` is.
#[test]
fn a_multicall_entry_whose_result_cannot_be_written_is_not_performed() {
    let mut g = Guest::new();
    let base = g.si.free_start;
    let (pfn, next_pfn) = (g.pfn_of(base), g.pfn_of(base) + 1);
    let target = base + 4 * PAGE_SIZE;
    let target_pte = |g: &mut Guest| g.view().translate(target, crate::paging::Access::Read).ok();
    let before = target_pte(&mut g);
    let sp_before = g.sys.domains[0].vcpu.kernel_sp;
    let unmap_target = mc_entry(Hypercall::UpdateVaMapping, [target, 0, 0, 0, 0, 0]);
    let read_only = |g: &Guest, pfn: u64| g.pte(pfn, flags::NO_EXECUTE);
    let writable = |g: &Guest, pfn: u64| g.pte(pfn, flags::WRITABLE | flags::NO_EXECUTE);

    // 1. The array mapped read-only (a read-only alias of a frame the guest
    //    may write): the update_va_mapping in it is not carried out.
    g.poke(base, &[unmap_target]);
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[base, read_only(&g, pfn), 0]).1, Ok(0));
    assert_eq!(g.call(Hypercall::Multicall, &[base, 1]).1, Err(HypercallError::BadAddress));
    assert_eq!(target_pte(&mut g), before, "the mapping is unchanged");
    assert_eq!(multicall_raw_results(&mut g, base, 1), [UNWRITTEN]);
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[base, writable(&g, pfn), 0]).1, Ok(0));

    // 2. Across two pages: the first entry makes the second page read-only,
    //    so the entry there is refused before it is performed.
    let at = base + PAGE_SIZE - 64;
    let second = base + PAGE_SIZE;
    let calls = [
        mc_entry(Hypercall::UpdateVaMapping, [second, read_only(&g, next_pfn), 0, 0, 0, 0]),
        mc_entry(Hypercall::StackSwitch, [0x1234_5670, 0, 0, 0, 0, 0]),
    ];
    g.poke(at, &calls);
    assert_eq!(g.call(Hypercall::Multicall, &[at, 2]).1, Err(HypercallError::BadAddress));
    assert_eq!(multicall_raw_results(&mut g, at, 2), [hypercall_abi::encode_result(Ok(0)), UNWRITTEN]);
    assert_eq!(g.sys.domains[0].vcpu.kernel_sp, sp_before, "the second entry was not performed");

    // 3. One entry across the boundary, its `result` in the read-only page.
    let at = second - 32;
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[second, writable(&g, next_pfn), 0]).1, Ok(0));
    g.poke(at, &unmap_target);
    assert_eq!(g.call(Hypercall::UpdateVaMapping, &[second, read_only(&g, next_pfn), 0]).1, Ok(0));
    assert_eq!(g.call(Hypercall::Multicall, &[at, 1]).1, Err(HypercallError::BadAddress));
    assert_eq!(target_pte(&mut g), before, "the mapping is unchanged");
    assert_eq!(g.sys.domains[0].vcpu.kernel_sp, sp_before);
}

#[test]
fn traps_bounce_to_the_guest_kernel_and_iret_returns_to_user_mode() {
    let mut g = Guest::new();
    let at = g.si.free_start;
    let handler = g.si.image_start; // any guest address will do for the logic
    g.poke(at, &[TrapInfo { vector: 14, handler }]);
    assert_eq!(g.call(Hypercall::SetTrapTable, &[at, 1]).1, Ok(0));
    assert_eq!(g.call(Hypercall::SetTrapTable, &[at, 33]).1, Err(HypercallError::BadArgument));
    assert_eq!(g.call(Hypercall::StackSwitch, &[g.si.stack_top]).1, Ok(0));
    assert_eq!(g.call(Hypercall::SetCallbacks, &[handler + 16, 0]).1, Ok(0));
    assert_eq!(g.call(Hypercall::SetCallbacks, &[0xffff_8000_0000_0000, 0]).1, Err(HypercallError::BadArgument));

    // iret to user mode needs a user table.
    let frame_at = g.si.stack_top - 0x200;
    let to_user = TrapFrame { rip: handler + 32, rsp: g.si.stack_top - 0x400, flags: frame_flags::FROM_USER, rax: 7, ..Default::default() };
    g.poke(frame_at, &to_user);
    g.regs.rsp = frame_at;
    assert_eq!(g.call(Hypercall::Iret, &[]).1, Err(HypercallError::BadArgument));
    // Use the kernel's own top-level table as the user one (a valid L4).
    let root_mfn = g.sys.domains[0].vcpu.kernel_root / PAGE_SIZE;
    let op = hypercall_abi::mm::MmuextOp { cmd: MmuextCmd::NewUserBaseptr as u32, reserved: 0, arg: root_mfn };
    g.poke(at + 64, &op);
    assert_eq!(g.call(Hypercall::MmuextOp, &[at + 64, 1, 0]).1, Ok(1));
    assert_eq!(g.sys.frames.info(root_mfn).unwrap().type_count, 2, "kernel and user base pointers");
    g.regs.rsp = frame_at;
    g.regs.rax = Hypercall::Iret as u64;
    let mut p = Platform { mem: &mut g.mem, console: &mut g.out, tsc: 0 };
    let next = g.sys.on_hypercall(&mut p, &mut g.regs);
    assert_eq!((g.regs.rip, g.regs.rax), (handler + 32, 7));
    assert!(!g.sys.domains[0].vcpu.kernel_mode);
    assert!(matches!(next, Next::Switch { door: crate::system::Door::User, .. }), "a mode change reloads the table and the syscall door");

    // A page fault in user mode lands on the kernel stack with a frame.
    g.regs.vector = 14;
    g.regs.error_code = 6;
    let mut p = Platform { mem: &mut g.mem, console: &mut g.out, tsc: 0 };
    g.sys.on_guest_exception(&mut p, &mut g.regs, 0xdead_0000);
    assert_eq!(g.regs.rip, handler);
    assert!(g.sys.domains[0].vcpu.kernel_mode);
    let mut bytes = [0u8; core::mem::size_of::<TrapFrame>()];
    let sp = g.regs.rsp;
    g.view().read(GuestSlice::new(sp, bytes.len() as u64), &mut bytes).unwrap();
    let f = TrapFrame::read_from_bytes(&bytes).unwrap();
    assert_eq!((f.vector, f.error_code, f.cr2, f.flags, f.rip), (14, 6, 0xdead_0000, frame_flags::FROM_USER, handler + 32));
    assert_eq!(g.regs.rsp % 16, 0);
    assert!(g.regs.rsp < g.si.stack_top);
    assert_eq!(g.sys.domains[0].stats.bounces, 1, "the fault was bounced");

    // A user-mode syscall is bounced to the syscall callback, not served.
    g.sys.domains[0].vcpu.kernel_mode = false;
    let (_, _) = g.call(Hypercall::AbiVersion, &[]);
    assert_eq!(g.regs.rip, handler + 16);
    let mut bytes = [0u8; core::mem::size_of::<TrapFrame>()];
    let sp = g.regs.rsp;
    g.view().read(GuestSlice::new(sp, bytes.len() as u64), &mut bytes).unwrap();
    assert_eq!(TrapFrame::read_from_bytes(&bytes).unwrap().vector, hypercall_abi::trap::VECTOR_SYSCALL);

    // Both bounces are counted apart from the hypercalls, and summarized.
    let hypercalls = g.sys.domains[0].stats.hypercalls;
    assert_eq!(g.sys.domains[0].stats.bounces, 2);
    let (_, _) = g.call(Hypercall::AbiVersion, &[]);
    assert_eq!(g.sys.domains[0].stats.hypercalls, hypercalls + 1, "a kernel-mode call is a hypercall");
    assert_eq!(g.sys.domains[0].stats.bounces, 2, "and no bounce");
    let summary = g.sys.summary().join("\n");
    assert!(summary.contains(&format!("hypercalls={} preemptions=0 bounces=2", hypercalls + 1)), "{summary}");
}

#[test]
fn the_user_door_bounces_like_the_hypercall_door_and_falls_back_in_kernel_mode() {
    let mut g = Guest::new();
    let callback = g.si.image_start + 16;
    assert_eq!(g.call(Hypercall::StackSwitch, &[g.si.stack_top]).1, Ok(0));
    assert_eq!(g.call(Hypercall::SetCallbacks, &[callback, 0]).1, Ok(0));
    // A user-mode system call through the user door: bounced to the callback.
    let vcpu = &mut g.sys.domains[0].vcpu;
    (vcpu.kernel_mode, vcpu.user_root) = (false, Some(vcpu.kernel_root));
    g.regs.rax = Hypercall::AbiVersion as u64;
    g.regs.rip = g.si.image_start + 64;
    let mut p = Platform { mem: &mut g.mem, console: &mut g.out, tsc: 0 };
    g.sys.on_user_syscall(&mut p, &mut g.regs);
    assert_eq!(g.regs.rip, callback);
    assert!(g.sys.domains[0].vcpu.kernel_mode);
    assert_eq!(g.sys.domains[0].stats.bounces, 1);
    // In kernel mode the same door is a hypercall, answered as one.
    g.regs.rax = Hypercall::AbiVersion as u64;
    let mut p = Platform { mem: &mut g.mem, console: &mut g.out, tsc: 0 };
    assert_eq!(g.sys.on_user_syscall(&mut p, &mut g.regs), Next::RESUME);
    assert_eq!(decode_result(g.regs.rax), Ok(u64::from(hypercall_abi::ABI_VERSION)));
    assert_eq!(g.sys.domains[0].stats.bounces, 1);
}

/// Regression tests for two escapes found in review: pages the hypervisor
/// writes for the guest must never become page tables, and the `done`
/// counter must not be written through a stale translation.
mod escapes {
    use super::*;
    use crate::frame_table::PageType;
    use crate::machine_memory::MachineMemory;

    fn l1_ptr(g: &Guest, va: u64) -> u64 {
        let mut t = g.sys.domains[0].vcpu.kernel_root;
        for level in (2..=4u8).rev() {
            let e = g.mem.read_u64(t + crate::paging::table_index(va, level) as u64 * 8);
            t = e & crate::paging::ADDRESS_MASK;
        }
        t + crate::paging::table_index(va, 1) as u64 * 8
    }

    fn l2_table(g: &Guest, va: u64) -> u64 {
        let mut t = g.sys.domains[0].vcpu.kernel_root;
        for level in (3..=4u8).rev() {
            let e = g.mem.read_u64(t + crate::paging::table_index(va, level) as u64 * 8);
            t = e & crate::paging::ADDRESS_MASK;
        }
        t
    }

    #[test]
    fn the_shared_info_page_and_the_console_ring_cannot_become_page_tables() {
        let mut g = Guest::new();
        for va in [g.si.shared_info, g.si.console_ring] {
            let mfn = g.mfn(g.pfn_of(va));
            assert_eq!(g.call(Hypercall::UpdateVaMapping, &[va, 0, 0]).1, Ok(0), "the guest may unmap it");
            g.poke(DATA, &[MmuextCmd::PinL1Table as u64, mfn]);
            assert_eq!(g.call(Hypercall::MmuextOp, &[DATA, 1, 0]).1, Err(HypercallError::FrameMappedWritable));
            assert_ne!(g.sys.frames.info(mfn).unwrap().ty, PageType::L1);
            g.poke(DATA, &mfn);
            assert_eq!(
                g.call(Hypercall::MemoryOp, &[MemoryOpCmd::DecreaseReservation as u64, DATA, 1]).1,
                Err(HypercallError::TypeCountInUse),
                "nor give it back"
            );
        }
    }

    #[test]
    fn the_done_counter_is_not_written_into_a_page_that_became_a_table() {
        let mut g = Guest::new();
        let dva = g.si.free_start;
        let d = g.mfn(g.pfn_of(dva));
        g.poke(dva, &[0u8; 4096]);
        let l2 = l2_table(&g, dva);
        // Unmap D, link it as an L1 into a free directory slot, then five no-ops.
        let mut recs: Vec<u64> = alloc::vec![l1_ptr(&g, dva), 0, l2 + 300 * 8, (d << 12) | 7];
        for _ in 0..5 {
            recs.extend([l2 + 301 * 8, 0]);
        }
        let reqs = DATA + 0x100;
        let arr: [u64; 14] = recs.try_into().unwrap();
        g.poke(reqs, &arr);
        let (_, r) = g.call(Hypercall::MmuUpdate, &[reqs, 7, dva + 5 * 8]);
        assert_eq!(r, Err(HypercallError::BadAddress), "the counter's page is gone: reported, not written");
        assert_eq!(g.sys.frames.info(d).unwrap().ty, PageType::L1);
        assert_eq!(g.mem.read_u64(d * 4096 + 40), 0, "no entry forged in the new table");
    }
}

#[test]
fn a_fault_on_the_floor_path_puts_the_real_door_back() {
    use crate::system::Door;
    let mut g = Guest::new();
    let at = g.si.free_start;
    let handler = g.si.image_start;
    g.poke(at, &[TrapInfo { vector: 14, handler }]);
    assert_eq!(g.call(Hypercall::SetTrapTable, &[at, 1]).1, Ok(0));
    assert_eq!(g.call(Hypercall::StackSwitch, &[g.si.stack_top]).1, Ok(0));
    assert_eq!(g.call(Hypercall::BenchFloor, &[]).0, Next::ResumeOnFloorPath);
    // A page fault in kernel mode while on the floor: bounced as usual,
    // and syscall must enter through the kernel door again although
    // neither the mode nor the table changed.
    g.regs.rsp = g.si.stack_top - 0x100;
    g.regs.vector = 14;
    g.regs.error_code = 2;
    let mut p = Platform { mem: &mut g.mem, console: &mut g.out, tsc: 0 };
    let next = g.sys.on_guest_exception(&mut p, &mut g.regs, 0x1000);
    assert_eq!(g.regs.rip, handler);
    assert!(matches!(next, Next::Switch { door: Door::Kernel, .. }), "{next:?}");
    assert!(!g.sys.domains[0].vcpu.bench_floor);
}

/// `memory_op` copies its array through the stack in chunks: a request
/// larger than one chunk gets every frame, in order, and gives them back
/// the same way; a machine without free frames answers `OutOfMemory`
/// with nothing taken; an array that cannot be read whole gives nothing back.
#[test]
fn ballooning_in_chunks_and_out_of_frames() {
    let mut g = Guest::new();
    let out = g.si.free_start;
    let have = g.sys.domains[0].frames.len();
    let n = 200u64;
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::IncreaseReservation as u64, out, n]).1, Ok(n));
    let mut bytes = vec![0u8; n as usize * 8];
    g.view().read(GuestSlice::new(out, n * 8), &mut bytes).unwrap();
    let got: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, g.sys.domains[0].frames[have..], "the array lists the new frames in the frame list's order");
    assert_eq!(g.sys.check_heap_accounts(), Ok(()), "growing the list took no memory");

    // An array of frames it may give back, longer than a chunk, whose end
    // runs past its mapped memory: refused before anything goes.
    let first_chunk: [u64; 64] = got[..64].try_into().unwrap();
    let tail = g.si.free_end - 8 * 64;
    g.poke(tail, &first_chunk);
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::DecreaseReservation as u64, tail, 70]).1, Err(HypercallError::BadAddress));
    assert_eq!(g.sys.domains[0].frames.len(), have + n as usize, "nothing given back");
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::DecreaseReservation as u64, out, n]).1, Ok(n));
    assert_eq!(g.sys.domains[0].frames.len(), have);

    // No free frame left on the machine.
    let free = g.sys.frames.free_count();
    let taken = g.sys.frames.alloc_many(crate::frame_table::Owner::Hypervisor, free - 3).unwrap();
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::IncreaseReservation as u64, out, 4]).1, Err(HypercallError::OutOfMemory));
    assert_eq!((g.sys.domains[0].frames.len(), g.sys.frames.free_count()), (have, 3), "nothing taken");
    assert_eq!(g.call(Hypercall::MemoryOp, &[MemoryOpCmd::IncreaseReservation as u64, out, 3]).1, Ok(3));
    for mfn in taken {
        g.sys.frames.free(mfn, crate::frame_table::Owner::Hypervisor).unwrap();
    }
}
