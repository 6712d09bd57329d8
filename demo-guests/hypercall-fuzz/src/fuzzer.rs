//! One random hypercall per step: the number, arguments biased toward the
//! values that find bugs, the call, and the verdict.
//!
//! Arguments come from pools of interesting values: 0, all ones, the top
//! bit, small numbers, numbers one past a limit, addresses in the
//! fuzzer's own memory (page-aligned and not), its page tables by machine
//! frame and by address, the hypervisor's half, non-canonical addresses,
//! unmapped holes, other domains' ids and frames, ports near the limits,
//! and plain random words. Whatever could change the fuzzer's own
//! mappings or memory passes through the rules of [`crate::space`] first.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::hypercall_abi::domain_info::DOMID_SELF;
use parvus_guest_sdk::hypercall_abi::event::{virq, EventChannelCmd, SchedCmd, NR_PORTS, POLL_MAX, UPCALL_PENDING_OFFSET};
use parvus_guest_sdk::hypercall_abi::layout::{GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use parvus_guest_sdk::hypercall_abi::mm::{uvm_flags, MemoryOpCmd, MmuUpdate, MmuextCmd, MmuextOp, MulticallEntry, BATCH_MAX, MULTICALL_MAX};
use parvus_guest_sdk::hypercall_abi::trap::{frame_flags, TrapFrame, TrapInfo, TRAP_VECTORS};
use parvus_guest_sdk::hypercall_abi::{decode_result, encode_result, Hypercall, HypercallError, StartInfo, ABI_VERSION, PAGE_SIZE};
use parvus_guest_sdk::paging::{PteFlags, ADDRESS_MASK};
use parvus_guest_sdk::time;

use crate::arena::{self, Arena};
use crate::check::{describe, verdict, Expect, Tally};
use crate::raw;
use crate::rng::Rng;
use crate::space::{kept_value, Kind, Rule, Space, ARENA_PAGES, ARENA_VA, HYPERVISOR_MFN, NX, P, U, W, WINDOW_VA};

/// `rax` of the frames `iret` is given: seen after a successful `iret`.
const IRET_MARKER: u64 = 0x1e7_f00d;
/// What a multicall entry's `result` holds before the call (a code no ABI
/// version has): still there afterwards means the entry was not answered.
const UNANSWERED: u64 = encode_result(Err(HypercallError::Unrecognized));
/// Bytes `console_write` may take: carriage returns, which the console
/// drops, so that a fuzzed write prints nothing at all (and nothing a log
/// reader could mistake for a message).
static QUIET: [u8; 4096 + 64] = [b'\r'; 4096 + 64];

/// One of the values, chosen by the fuzzer's generator. (A macro, so that
/// the values may themselves be drawn from the generator first.)
macro_rules! pick {
    ($rng:expr, [$($value:expr),+ $(,)?]) => {{
        let values = [$($value),+];
        $rng.pick(&values)
    }};
}

/// One call, ready to make.
struct Plan {
    number: u64,
    args: [u64; 6],
    expect: Expect,
    /// Where `IncreaseReservation` writes its frames, and how many.
    harvest: Option<(u64, u64)>,
}

impl Plan {
    fn new(number: u64, args: [u64; 6], expect: Expect) -> Plan {
        Plan { number, args, expect, harvest: None }
    }
}

/// The fuzzer's state.
pub struct Fuzzer {
    rng: Rng,
    space: Space,
    arena: Arena,
    start: &'static StartInfo,
    seed: u64,
    /// The call being made (from 0).
    index: u64,
    me: u64,
    victim: u64,
    domains: u64,
    timer_port: u32,
    max_pages: u64,
    /// A user top-level table may be set (then `iret` to user mode with a
    /// good frame would leave the fuzzer's code behind).
    user_root_maybe: bool,
    /// Calls the fuzzer made to prepare a fuzzed one (re-arming its timer
    /// before it blocks, clearing the user table): checked, not counted.
    pub helpers: u64,
    pub tally: Tally,
}

impl Fuzzer {
    /// A fuzzer for `seed`, beside domain `victim`.
    pub fn new(start: &'static StartInfo, seed: u64, space: Space, victim: u64, domains: u64, timer_port: u32, max_pages: u64) -> Fuzzer {
        Fuzzer {
            rng: Rng::new(seed),
            space,
            arena: Arena::new(),
            start,
            seed,
            index: 0,
            me: u64::from(start.domain_id),
            victim,
            domains,
            timer_port,
            max_pages,
            user_root_maybe: false,
            helpers: 0,
            tally: Tally::new(),
        }
    }

    /// Makes one random hypercall and judges its result.
    pub fn step(&mut self) {
        self.arena.reset();
        let number = self.number(false);
        self.tally.call(number);
        match Hypercall::try_from(number) {
            Ok(Hypercall::Iret) => self.iret(),
            Ok(Hypercall::BenchFloor) => self.bench_floor(),
            Ok(Hypercall::SchedOp) => self.sched_op(),
            Ok(Hypercall::Multicall) => self.multicall(),
            Ok(Hypercall::Exit) => unreachable!("exit is only made inside a multicall"),
            Ok(call) => {
                let plan = self.plan(call);
                self.make(plan);
            }
            Err(_) => {
                let args = core::array::from_fn(|_| self.any());
                self.make(Plan::new(number, args, Expect::Any));
            }
        }
        self.index += 1;
    }

    /// Makes a planned call and judges it.
    fn make(&mut self, plan: Plan) -> u64 {
        // SAFETY: every plan is built by the rules of `space`.
        let rax = unsafe { raw::call(plan.number, plan.args) };
        self.judge(&plan, false, rax, None);
        rax
    }

    /// Checks a result, counts it, harvests ballooned frames.
    fn judge(&mut self, plan: &Plan, batched: bool, rax: u64, entry: Option<usize>) {
        self.tally.result(rax);
        if let Some(why) = verdict(plan.number, batched, &plan.expect, rax) {
            let at = match entry {
                Some(i) => alloc::format!("call {} entry {i}", self.index),
                None => alloc::format!("call {}", self.index),
            };
            self.tally.finding(self.seed, &at, &alloc::format!("{}: {why}", describe(plan.number, &plan.args, rax)));
        }
        if let (Some((at, count)), Ok(_)) = (plan.harvest, decode_result(rax)) {
            for i in 0..count {
                let mfn = Arena::read_u64(at + i * 8);
                if !self.space.pool.contains(&mfn) {
                    self.space.pool.push(mfn);
                }
            }
        }
    }

    /// A helper call (not fuzzed): made, judged, not counted as a call.
    fn helper(&mut self, call: Hypercall, args: [u64; 6], expect: Expect) {
        self.helpers += 1;
        // SAFETY: helpers re-arm the timer or clear the user table: no
        // memory of the fuzzer changes.
        let rax = unsafe { raw::call(call as u64, args) };
        self.judge(&Plan::new(call as u64, args, expect), false, rax, None);
    }

    // --- Numbers and plain values ---

    /// A hypercall number: mostly real ones, by weight, sometimes none.
    /// `exit` only inside a multicall (where it is refused).
    fn number(&mut self, batched: bool) -> u64 {
        const UNKNOWN: [u64; 20] = [
            19, 20, 31, 32, 63, 64, 255, 256, 4095, 0x7fff_ffff, 0xffff_ffff, 1 << 32,
            (1 << 32) | 5, (1 << 32) | 15, 1 << 63, (1 << 63) | 2, u64::MAX, u64::MAX - 1, u64::MAX - 24, u64::MAX - 4095,
        ];
        if self.rng.chance(7) {
            return if self.rng.chance(75) { self.rng.pick(&UNKNOWN) } else { self.rng.next() | 32 };
        }
        // (call, weight at the top level, weight inside a multicall)
        const WEIGHTS: [(Hypercall, u64, u64); 19] = [
            (Hypercall::Null, 2, 2),
            (Hypercall::AbiVersion, 2, 2),
            (Hypercall::ConsoleWrite, 4, 3),
            (Hypercall::DomainInfo, 5, 4),
            (Hypercall::Yield, 2, 2),
            (Hypercall::Exit, 0, 2),
            (Hypercall::BenchFloor, 1, 2),
            (Hypercall::MmuUpdate, 12, 10),
            (Hypercall::MmuextOp, 10, 8),
            (Hypercall::UpdateVaMapping, 12, 10),
            (Hypercall::Multicall, 8, 2),
            (Hypercall::MemoryOp, 7, 5),
            (Hypercall::SetTrapTable, 4, 3),
            (Hypercall::SetCallbacks, 3, 3),
            (Hypercall::StackSwitch, 2, 2),
            (Hypercall::Iret, 4, 2),
            (Hypercall::EventChannelOp, 12, 10),
            (Hypercall::SchedOp, 5, 2),
            (Hypercall::SetTimer, 4, 3),
        ];
        let weight = |w: &(Hypercall, u64, u64)| if batched { w.2 } else { w.1 };
        let total: u64 = WEIGHTS.iter().map(weight).sum();
        let mut roll = self.rng.below(total);
        for w in &WEIGHTS {
            if roll < weight(w) {
                return w.0 as u64;
            }
            roll -= weight(w);
        }
        unreachable!("the roll is below the total")
    }

    /// Any word, from every pool.
    fn any(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.pick(&[0, 1, 2, 7, 8, 16, 63, 64, 4095, 4096, 4097, u32::MAX as u64, 1 << 32, 1 << 63, (1 << 63) - 1, u64::MAX, u64::MAX - 1]),
            1 => self.rng.below(256),
            2 => self.address(),
            3 => self.bad_address(),
            4 => self.mfn(),
            5 => self.mfn() << 12,
            6 => 1 << self.rng.below(64),
            _ => self.rng.next(),
        }
    }

    /// A guest-virtual address: the fuzzer's own memory (page-aligned or
    /// not), its page tables, the arena, the window, holes, the limit, the
    /// hypervisor's half, non-canonical addresses.
    fn address(&mut self) -> u64 {
        let s = self.start;
        let page = match self.rng.below(14) {
            0 | 1 => s.virt_base + self.rng.below(s.nr_pages) * PAGE_SIZE,
            2 => s.page_tables + self.rng.below(s.nr_page_table_pages.max(1)) * PAGE_SIZE,
            3 => s.stack_top - (1 + self.rng.below(17)) * PAGE_SIZE,
            4 => s.image_start + self.rng.below((s.image_end - s.image_start) / PAGE_SIZE + 1) * PAGE_SIZE,
            5 => ARENA_VA + self.rng.below(ARENA_PAGES + 2) * PAGE_SIZE,
            6 | 7 => WINDOW_VA + self.rng.below(512) * PAGE_SIZE,
            8 => self.rng.pick(&[0, PAGE_SIZE, GUEST_VIRT_LIMIT - PAGE_SIZE, 1 << 30, 1 << 39, 3 << 21]),
            9 => s.virt_base + (s.nr_pages + self.rng.below(4)) * PAGE_SIZE,
            10 => s.shared_info,
            11 => s.console_ring,
            12 => (WINDOW_VA + (2 << 21)) + self.rng.below(8 << 21) / PAGE_SIZE * PAGE_SIZE,
            _ => return self.bad_address(),
        };
        if self.rng.chance(10) {
            page + self.rng.below(PAGE_SIZE)
        } else {
            page
        }
    }

    /// An address no entry of the domain can ever map: the arena's
    /// unmapped neighbours, the limit and beyond, the hypervisor's half,
    /// non-canonical addresses, a range that wraps.
    fn bad_address(&mut self) -> u64 {
        self.rng.pick(&[
            ARENA_VA,
            ARENA_VA + PAGE_SIZE - 8,
            arena::END,
            arena::END + 0x800,
            GUEST_VIRT_LIMIT,
            GUEST_VIRT_LIMIT + 0x1000,
            0x0000_7fff_ffff_f000,
            0x0000_8000_0000_0000,
            0x1234_5678_9abc_d000,
            HYPERVISOR_BASE,
            0xffff_ffff_8000_0000,
            0xffff_ffff_ffff_f000,
            u64::MAX - 7,
        ])
    }

    /// A machine frame: the fuzzer's tables, special frames, data, pool,
    /// its neighbours (likely another domain's), the hypervisor's, beyond
    /// RAM, random.
    fn mfn(&mut self) -> u64 {
        let s = &self.space;
        match self.rng.below(14) {
            0 => s.boot_l4,
            1 => self.rng.pick(&s.boot_tables).0,
            2 => self.rng.pick(&[s.window_l1, s.arena_l1, s.clone_l4]),
            3 => self.rng.pick(&s.arena_frames),
            4 => self.rng.pick(&s.writable_frames),
            5 => self.rng.pick(&s.read_only_frames),
            6..=8 if !s.pool.is_empty() => self.rng.pick(&s.pool),
            9 => s.own_low.saturating_sub(1 + self.rng.below(8)),
            10 => s.own_high + 1 + self.rng.below(8),
            11 => self.rng.pick(&[0, 1, 0x9f, 0xfe, HYPERVISOR_MFN]),
            12 => self.rng.pick(&[1 << 20, 1 << 30, (1 << 40) - 1, u64::MAX >> 12]),
            _ => self.rng.next() >> self.rng.below(64),
        }
    }

    /// A frame that may be pinned or unpinned: never one of the fuzzer's
    /// read-only frames (which must not become tables) nor a kept pin.
    fn table_mfn(&mut self) -> u64 {
        let mfn = self.mfn();
        match self.space.kind(mfn) {
            Kind::ReadOnly | Kind::Pinned(_) => HYPERVISOR_MFN,
            _ => mfn,
        }
    }

    /// A page-table entry for a table of `level` (`None`: not known),
    /// sanitized (rule 2).
    fn pte(&mut self, level: Option<u8>) -> u64 {
        let value = match self.rng.below(20) {
            0 => 0,
            1 => self.rng.next(),
            _ => {
                let mut flags = 0;
                for (bit, percent) in [(P, 90), (U, 90), (W, 50), (NX, 40), (0x60, 15), (0x18, 10), (0xe00, 10)] {
                    if self.rng.chance(percent) {
                        flags |= bit;
                    }
                }
                if self.rng.chance(8) {
                    flags |= pick!(self.rng, [PteFlags::HUGE.bits(), PteFlags::GLOBAL.bits(), 1 << (52 + self.rng.below(11))]);
                }
                ((self.mfn() << 12) & ADDRESS_MASK) | flags
            }
        };
        self.space.sanitize(value, level)
    }

    /// A value for the entry at machine address `ptr` (rules 1 and 2).
    fn entry_value(&mut self, rule: Rule) -> u64 {
        match rule {
            Rule::Kept(current) => kept_value(current, self.rng.next()),
            Rule::Free(level) => self.pte(level),
        }
    }

    /// The machine address of a page-table entry: in the fuzzer's tables
    /// (boot, window, clone, arena), a pool frame, a data frame, another
    /// domain's or the hypervisor's frame; sometimes misaligned.
    fn entry_ptr(&mut self) -> u64 {
        use crate::space::entry_address;
        let index = |rng: &mut Rng| pick!(rng, [0, 1, 2, 3, 254, 255, 256, 500, 501, 502, 511, rng.below(512) as usize]);
        let s = &self.space;
        let ptr = match self.rng.below(12) {
            0..=2 => {
                let (table, _) = self.rng.pick(&s.boot_tables);
                entry_address(table, index(&mut self.rng))
            }
            3..=5 => entry_address(s.window_l1, self.rng.below(512) as usize),
            6 => entry_address(self.rng.pick(&[s.clone_l4, s.arena_l1]), index(&mut self.rng)),
            7 | 8 => {
                let mfn = self.mfn();
                entry_address(mfn, index(&mut self.rng))
            }
            9 => self.rng.next(),
            _ => return self.entry_ptr().wrapping_add(1 + self.rng.below(7)),
        };
        ptr
    }

    /// A domain id: each domain, the caller named itself, `DOMID_SELF`
    /// and its neighbours, ids that truncate to a real one, all ones.
    fn domain_id(&mut self) -> u64 {
        let (me, victim, n) = (self.me, self.victim, self.domains);
        match self.rng.below(4) {
            0 => victim,
            1 => me,
            2 => self.rng.below(n + 2),
            _ => pick!(self.rng, [
                DOMID_SELF,
                DOMID_SELF - 1,
                DOMID_SELF + 1,
                0xffff,
                0x1_0000 | victim,
                0x1_0000 | me,
                u32::MAX as u64,
                (1 << 32) | victim,
                u64::MAX,
                self.rng.next(),
            ]),
        }
    }

    /// A port number: small ones (where allocations land), the timer's,
    /// the limits, numbers that truncate to a real one.
    fn port(&mut self) -> u64 {
        match self.rng.below(4) {
            0 | 1 => 1 + self.rng.below(8),
            2 => self.rng.below(64),
            _ => pick!(self.rng, [
                0,
                u64::from(self.timer_port),
                NR_PORTS as u64 - 2,
                NR_PORTS as u64 - 1,
                NR_PORTS as u64,
                (1 << 32) | 1,
                (1 << 32) | u64::from(self.timer_port),
                u32::MAX as u64,
                u64::MAX,
                self.rng.next(),
            ]),
        }
    }

    /// A deadline: none, the past, now, soon, far, never.
    fn deadline(&mut self) -> u64 {
        let now = time::now();
        match self.rng.below(9) {
            0 => 0,
            1 => 1,
            2 => now.saturating_sub(self.rng.below(1_000_000)),
            3 => now,
            4 | 5 => now + 1 + self.rng.below(100_000),
            6 => now + 1_000_000_000_000,
            7 => self.rng.pick(&[u64::MAX, u64::MAX - 1, i64::MAX as u64]),
            _ => self.rng.next(),
        }
    }

    // --- Buffers ---

    /// A pointer the hypervisor may write `len` bytes through (rule 4):
    /// a fresh arena buffer (sometimes misaligned, sometimes running off
    /// the arena's end), or an address that is refused or harmless.
    fn write_ptr(&mut self, len: u64) -> u64 {
        let fresh = match self.rng.below(10) {
            0..=5 => self.arena.alloc(len, 8),
            6 => {
                let skew = 1 + self.rng.below(7);
                self.arena.alloc(len + 8, 8).map(|at| at + skew)
            }
            7 if len > 1 => {
                let short = 1 + self.rng.below(len - 1);
                self.arena.at_end(len - short)
            }
            8 => {
                let at = self.address();
                return if self.space.write_ok(at, len) { at } else { self.bad_address() };
            }
            9 => {
                let at = self.any();
                return if self.space.write_ok(at, len) { at } else { self.bad_address() };
            }
            _ => None,
        };
        fresh.unwrap_or_else(|| self.bad_address())
    }

    /// A pointer to `built` records of `size` bytes written by `record`,
    /// for a call told to read `count` of them: in a fresh arena buffer,
    /// or ending at the arena's end when `count` > `built` (the rest runs
    /// into the unmapped page), or unmapped. With `from_frame_list`, it may
    /// also point into the frame list, whose words make requests the ABI
    /// refuses (only while `count` records stay inside it).
    fn records<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        built: &[T],
        count: u64,
        from_frame_list: bool,
    ) -> u64 {
        let size = core::mem::size_of::<T>() as u64;
        let bytes = built.len() as u64 * size;
        let frame_list_bytes = self.start.nr_pages * 8;
        let at = match self.rng.below(20) {
            0 if from_frame_list && count.saturating_mul(size) <= frame_list_bytes => {
                let room = (frame_list_bytes - count * size) / size;
                return self.start.frame_list + self.rng.below(room + 1) * size;
            }
            1 => return self.bad_address(),
            _ if count > built.len() as u64 => self.arena.at_end(bytes),
            2 => self.arena.alloc(bytes + 8, 16).map(|at| at + 8),
            _ => self.arena.alloc(bytes, 16),
        };
        match at {
            Some(at) => {
                Arena::write(at, built);
                at
            }
            None => self.bad_address(),
        }
    }

    /// How many records a batch says it has, given `built` of them.
    fn batch_count(&mut self, built: usize, max: u64) -> u64 {
        match self.rng.below(20) {
            0 => max + 1,
            1 => self.rng.pick(&[u64::MAX, 1 << 32, 1 << 60]),
            2 => built as u64 + 1 + self.rng.below(4),
            _ => built as u64,
        }
    }

    /// How many records to build.
    fn batch_len(&mut self) -> usize {
        match self.rng.below(20) {
            0 => 0,
            1..=12 => 1 + self.rng.below(4) as usize,
            13..=17 => 5 + self.rng.below(12) as usize,
            _ => 17 + self.rng.below(48) as usize,
        }
    }

    /// A `done` pointer: none, a fresh counter, misaligned, unmapped.
    fn done_ptr(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=3 => 0,
            4..=7 => self.arena.alloc(8, 8).unwrap_or(0),
            8 => self.arena.alloc(16, 8).map_or(0, |at| at + 4),
            _ => self.write_ptr(8),
        }
    }

    // --- The calls that only answer (also made inside a multicall) ---

    /// Arguments and expected value for `call`.
    fn plan(&mut self, call: Hypercall) -> Plan {
        let number = call as u64;
        let mut args: [u64; 6] = core::array::from_fn(|_| self.any());
        let expect = match call {
            Hypercall::Null | Hypercall::Yield => Expect::Exactly(0),
            Hypercall::AbiVersion => Expect::Exactly(u64::from(ABI_VERSION)),
            Hypercall::ConsoleWrite => {
                let (buf, len) = self.console_buffer();
                args[..2].copy_from_slice(&[buf, len]);
                Expect::Exactly(len.min(4096))
            }
            Hypercall::DomainInfo => {
                args[0] = self.domain_id();
                args[1] = self.write_ptr(64);
                Expect::Exactly(0)
            }
            Hypercall::MmuUpdate => {
                let reqs: Vec<MmuUpdate> = (0..self.batch_len())
                    .map(|_| {
                        let ptr = self.entry_ptr();
                        let rule = self.space.entry_rule(ptr);
                        MmuUpdate { ptr, val: self.entry_value(rule) }
                    })
                    .collect();
                let count = self.batch_count(reqs.len(), BATCH_MAX);
                args[0] = self.records(&reqs, count, true);
                args[1] = count;
                args[2] = self.done_ptr();
                Expect::Exactly(count)
            }
            Hypercall::MmuextOp => {
                let ops: Vec<MmuextOp> = (0..self.batch_len()).map(|_| self.mmuext()).collect();
                let count = self.batch_count(ops.len(), BATCH_MAX);
                args[0] = self.records(&ops, count, true);
                args[1] = count;
                args[2] = self.done_ptr();
                Expect::Exactly(count)
            }
            Hypercall::UpdateVaMapping => {
                let va = self.address();
                let rule = self.space.va_rule(va);
                args[0] = va;
                args[1] = self.entry_value(rule);
                args[2] = pick!(self.rng, [0, 0, uvm_flags::INVLPG, uvm_flags::INVLPG, uvm_flags::TLB_FLUSH, uvm_flags::ALL, 4, 1 << 63, self.rng.next()]);
                Expect::Exactly(0)
            }
            Hypercall::MemoryOp => return self.memory_op(args),
            Hypercall::SetTrapTable => {
                let entries: Vec<TrapInfo> = (0..self.rng.below(6))
                    .map(|_| TrapInfo {
                        vector: pick!(self.rng, [self.rng.below(TRAP_VECTORS as u64), 32, 255, u64::MAX]),
                        handler: pick!(self.rng, [0, self.address(), GUEST_VIRT_LIMIT, self.any()]),
                    })
                    .collect();
                let count = match self.rng.below(10) {
                    0 => self.rng.pick(&[TRAP_VECTORS as u64, TRAP_VECTORS as u64 + 1, u64::MAX]),
                    _ => entries.len() as u64,
                };
                // The table is only read: any readable address will do.
                args[0] = if self.rng.chance(80) { self.records(&entries, count, false) } else { self.address() };
                args[1] = count;
                Expect::Exactly(0)
            }
            Hypercall::SetCallbacks => {
                // `event` is where upcalls would go: the fuzzer has none, so
                // it stays 0 unless the call is refused anyway.
                args[0] = pick!(self.rng, [0, self.address(), self.any()]);
                if args[0] < GUEST_VIRT_LIMIT {
                    args[1] = self.rng.pick(&[0, 0, GUEST_VIRT_LIMIT, u64::MAX, HYPERVISOR_BASE]);
                }
                Expect::Exactly(0)
            }
            Hypercall::StackSwitch => {
                args[0] = pick!(self.rng, [self.address(), self.any()]);
                Expect::Exactly(0)
            }
            Hypercall::EventChannelOp => return self.event_channel_op(args),
            Hypercall::SetTimer => {
                args[0] = self.deadline();
                Expect::Exactly(0)
            }
            // Refused inside a multicall, which is the only place these are
            // planned: any arguments.
            Hypercall::Exit | Hypercall::BenchFloor | Hypercall::Multicall | Hypercall::Iret | Hypercall::SchedOp => {
                Expect::Any
            }
        };
        Plan::new(number, args, expect)
    }

    /// `console_write`'s buffer and length: quiet bytes (a few, sometimes
    /// more than a call takes), or a range that is refused whole.
    fn console_buffer(&mut self) -> (u64, u64) {
        let quiet = QUIET.as_ptr() as u64;
        match self.rng.below(10) {
            0..=4 => (quiet + self.rng.below(64), self.rng.below(9)),
            5 if self.rng.chance(30) => (quiet, self.rng.pick(&[4096, 4097, 1 << 32, u64::MAX])),
            5 => (self.address(), 0),
            6 | 7 => (self.bad_address(), pick!(self.rng, [1, 8, 64, 4096, u64::MAX, self.rng.next()])),
            _ => {
                // Runs off the arena's end: refused whole, nothing printed.
                let before = 1 + self.rng.below(64);
                let len = before + 1 + self.rng.below(64);
                (self.arena.at_end(before).unwrap_or_else(|| self.bad_address()), len)
            }
        }
    }

    /// One `mmuext_op` operation.
    fn mmuext(&mut self) -> MmuextOp {
        let cmd = if self.rng.chance(5) { self.rng.pick(&[9, 10, 255, u32::MAX]) } else { self.rng.below(9) as u32 };
        let reserved = if self.rng.chance(4) { self.rng.next() as u32 | 1 } else { 0 };
        let arg = match MmuextCmd::from_raw(cmd) {
            Some(MmuextCmd::PinL1Table | MmuextCmd::PinL2Table | MmuextCmd::PinL3Table | MmuextCmd::PinL4Table) => {
                self.table_mfn()
            }
            Some(MmuextCmd::Unpin) => self.table_mfn(),
            Some(MmuextCmd::NewBaseptr) => self.base_mfn(),
            Some(MmuextCmd::NewUserBaseptr) => {
                let mfn = if self.rng.chance(30) { 0 } else { self.mfn() };
                self.user_root_maybe |= mfn != 0;
                mfn
            }
            Some(MmuextCmd::InvlpgLocal) => self.address(),
            _ => self.any(),
        };
        MmuextOp { cmd, reserved, arg }
    }

    /// A frame for `NewBaseptr` (rule 3): the boot table or the clone,
    /// which map the fuzzer alike, or a frame refused for certain (another
    /// level's table, a frame mapped writable, not the fuzzer's).
    fn base_mfn(&mut self) -> u64 {
        let s = &self.space;
        let refused: [u64; 8] = [
            self.rng.pick(&s.boot_tables[1..]).0,
            s.window_l1,
            s.arena_l1,
            self.rng.pick(&s.writable_frames),
            self.rng.pick(&s.arena_frames),
            HYPERVISOR_MFN,
            1 << 30,
            u64::MAX,
        ];
        match self.rng.below(4) {
            0 => s.boot_l4,
            1 => s.clone_l4,
            _ => self.rng.pick(&refused),
        }
    }

    /// `memory_op`: ballooning in and out, and the two questions.
    fn memory_op(&mut self, mut args: [u64; 6]) -> Plan {
        let number = Hypercall::MemoryOp as u64;
        let cmd = match self.rng.below(9) {
            0..=2 => MemoryOpCmd::IncreaseReservation,
            3..=5 => MemoryOpCmd::DecreaseReservation,
            6 => MemoryOpCmd::CurrentReservation,
            7 => MemoryOpCmd::MaximumReservation,
            _ => {
                args[0] = self.rng.pick(&[4, 5, 1 << 32, u64::MAX]);
                return Plan::new(number, args, Expect::Any);
            }
        };
        args[0] = cmd as u64;
        match cmd {
            MemoryOpCmd::IncreaseReservation => {
                // A count above the headroom is refused (`OverLimit`) before
                // anything is written: only small counts get a buffer.
                let count = self.rng.pick(&[0, 1, 1, 2, 3, 8, 64, BATCH_MAX, BATCH_MAX + 1, u64::MAX, 1 << 61]);
                args[2] = count;
                if count <= 64 {
                    args[1] = self.write_ptr(count * 8);
                    let mut plan = Plan::new(number, args, Expect::Exactly(count));
                    if Arena::contains(args[1], count * 8) && args[1] % 8 == 0 {
                        plan.harvest = Some((args[1], count));
                    }
                    return plan;
                }
                Plan::new(number, args, Expect::Exactly(count))
            }
            MemoryOpCmd::DecreaseReservation => {
                let frames: Vec<u64> = (0..self.rng.below(4)).map(|_| self.mfn()).collect();
                let count = self.batch_count(frames.len(), BATCH_MAX);
                // Only read, and only frames nothing references can go.
                args[1] = if self.rng.chance(85) { self.records(&frames, count, true) } else { self.address() };
                args[2] = count;
                Plan::new(number, args, Expect::Exactly(count))
            }
            MemoryOpCmd::CurrentReservation => {
                args[2] = if self.rng.chance(90) { self.rng.below(16) } else { self.any() };
                Plan::new(number, args, Expect::AtMost(self.max_pages))
            }
            MemoryOpCmd::MaximumReservation => {
                args[2] = if self.rng.chance(90) { self.rng.below(16) } else { self.any() };
                Plan::new(number, args, Expect::Exactly(self.max_pages))
            }
        }
    }

    /// `event_channel_op`: every command, with ports and domains from the
    /// pools; the timer's port is never closed (the fuzzer needs it to
    /// wake from `block`).
    fn event_channel_op(&mut self, mut args: [u64; 6]) -> Plan {
        let number = Hypercall::EventChannelOp as u64;
        let cmd = match self.rng.below(21) {
            0..=2 => EventChannelCmd::AllocUnbound,
            3..=5 => EventChannelCmd::BindInterdomain,
            6 | 7 => EventChannelCmd::BindVirq,
            8..=11 => EventChannelCmd::Send,
            12..=14 => EventChannelCmd::Close,
            15 | 16 => EventChannelCmd::Status,
            17..=19 => EventChannelCmd::Unmask,
            _ => {
                args[0] = self.rng.pick(&[7, 8, 99, 1 << 32, u64::MAX]);
                return Plan::new(number, args, Expect::Any);
            }
        };
        args[0] = cmd as u64;
        let expect = match cmd {
            EventChannelCmd::AllocUnbound => {
                args[1] = self.domain_id();
                Expect::Port
            }
            EventChannelCmd::BindInterdomain => {
                args[1] = self.domain_id();
                args[2] = self.port();
                Expect::Port
            }
            EventChannelCmd::BindVirq => {
                args[1] = self.rng.pick(&[virq::TIMER, virq::CONSOLE, virq::DOM_EXC, virq::COUNT, 63, 1 << 32, u64::MAX]);
                Expect::Port
            }
            EventChannelCmd::Close => {
                let port = self.port();
                args[1] = if port == u64::from(self.timer_port) { port + 1 } else { port };
                Expect::Exactly(0)
            }
            EventChannelCmd::Status => {
                args[1] = self.port();
                args[2] = self.write_ptr(16);
                Expect::Exactly(0)
            }
            EventChannelCmd::Send | EventChannelCmd::Unmask => {
                args[1] = self.port();
                Expect::Exactly(0)
            }
        };
        Plan::new(number, args, expect)
    }

    // --- The calls that leave the caller or replace its registers ---

    /// A `multicall` of random entries, each planned as if made alone;
    /// each entry's result is judged when the whole batch was performed.
    fn multicall(&mut self) {
        let number = Hypercall::Multicall as u64;
        let built = match self.rng.below(10) {
            0 => 0,
            1..=7 => 1 + self.rng.below(8) as usize,
            _ => 9 + self.rng.below(56) as usize,
        };
        // The entries' own buffers are planned first, so that the entries'
        // array and every buffer are separate allocations.
        let plans: Vec<Plan> = (0..built)
            .map(|_| {
                let op = self.number(true);
                match Hypercall::try_from(op) {
                    Ok(call) => self.plan(call),
                    Err(_) => Plan::new(op, core::array::from_fn(|_| self.any()), Expect::Any),
                }
            })
            .collect();
        let entries: Vec<MulticallEntry> =
            plans.iter().map(|p| MulticallEntry { op: p.number, args: p.args, result: UNANSWERED }).collect();
        let count = self.batch_count(built, MULTICALL_MAX);
        let at = self.records(&entries, count, true);
        let args = [at, count, self.any(), self.any(), self.any(), self.any()];
        self.tally.multicalls += 1;
        self.tally.entries += built as u64;
        let plan = Plan::new(number, args, Expect::Exactly(count));
        let rax = self.make(plan);
        if decode_result(rax) != Ok(count) || !Arena::contains(at, count * 64) {
            return;
        }
        for (i, entry_plan) in plans.iter().enumerate() {
            let result = Arena::read_u64(at + i as u64 * 64 + 56);
            self.judge(entry_plan, true, result, Some(i));
        }
    }

    /// `iret` from a frame in the arena: a good one (resuming right after
    /// the call), or one with each kind of fault the ABI refuses.
    fn iret(&mut self) {
        let number = Hypercall::Iret as u64;
        const TF: u64 = 1 << 8;
        let mut frame = TrapFrame {
            rax: IRET_MARKER,
            r11: self.any(),
            rcx: self.any(),
            vector: self.any(),
            error_code: self.any(),
            cr2: self.any(),
            flags: 0,
            rip: 0,
            rflags: self.rng.next() & !TF,
            rsp: pick!(self.rng, [0, self.address() % GUEST_VIRT_LIMIT, self.start.stack_top]),
        };
        let variant = self.rng.below(10);
        let (mut resume_here, mut good) = (true, true);
        match variant {
            0..=3 => {}
            4 => {
                // User mode without a user table.
                if self.user_root_maybe {
                    let op = self.arena_op(MmuextCmd::NewUserBaseptr, 0);
                    self.helper(Hypercall::MmuextOp, [op, 1, 0, 0, 0, 0], Expect::Exactly(1));
                    self.user_root_maybe = false;
                }
                frame.flags = frame_flags::FROM_USER;
                good = false;
            }
            5 => {
                frame.flags = pick!(self.rng, [2, 1 << 63, self.rng.next() | 2]);
                good = false;
            }
            6 => {
                frame.rip = self.rng.pick(&[GUEST_VIRT_LIMIT, 0x0000_8000_0000_0000, HYPERVISOR_BASE, u64::MAX]);
                resume_here = false;
                good = false;
            }
            7 => {
                frame.rsp = self.rng.pick(&[GUEST_VIRT_LIMIT, 0x0000_8000_0000_0000, u64::MAX]);
                good = false;
            }
            _ => {}
        }
        let at = match variant {
            8 => {
                resume_here = false;
                good = false;
                self.bad_address()
            }
            9 => {
                resume_here = false;
                good = false;
                let before = 8 + self.rng.below(72);
                self.arena.at_end(before).unwrap_or_else(|| self.bad_address())
            }
            _ => self.arena.alloc(core::mem::size_of::<TrapFrame>() as u64, 8).expect("the arena is empty"),
        };
        Arena::write(at, &frame);
        // SAFETY: a frame the hypervisor could accept is in the arena with
        // `resume_here` set and no TF; the others have a `rip` the ABI
        // refuses or cannot be read.
        let rax = unsafe { raw::iret(at, resume_here) };
        let args = [at, frame.flags, frame.rip, frame.rsp, frame.rflags, 0];
        let resumed = rax == IRET_MARKER;
        let plan = Plan::new(number, args, Expect::Any);
        if resumed {
            self.tally.result(0);
        } else {
            self.judge(&plan, false, rax, None);
        }
        if resumed != good {
            let why = if good { "iret refused a frame the ABI accepts" } else { "iret accepted a frame the ABI refuses" };
            let at = alloc::format!("call {}", self.index);
            self.tally.finding(self.seed, &at, &alloc::format!("{}: {why}", describe(number, &args, rax)));
        }
    }

    /// One `MmuextOp` in a fresh arena buffer.
    fn arena_op(&mut self, cmd: MmuextCmd, arg: u64) -> u64 {
        let at = self.arena.alloc(16, 16).expect("room for one operation");
        Arena::write(at, &MmuextOp { cmd: cmd as u32, reserved: 0, arg });
        at
    }

    /// `bench_floor`, a `syscall` on the floor path (which must return
    /// its `rax` unchanged) and the `int3` that ends the measurement.
    fn bench_floor(&mut self) {
        let probe = self.any();
        let (floor, seen) = raw::bench_floor(probe);
        self.judge(&Plan::new(Hypercall::BenchFloor as u64, [0; 6], Expect::Exactly(0)), false, floor, None);
        if seen.is_some_and(|seen| seen != probe) {
            let at = alloc::format!("call {}", self.index);
            let what = alloc::format!("a syscall on the bench_floor path with rax={probe:#x} returned {:#x}", seen.unwrap_or(0));
            self.tally.finding(self.seed, &at, &what);
        }
    }

    /// `sched_op`: `CheckEvents`, `Block` after arming the timer (so a
    /// wake-up is certain), `Poll` with a deadline (or with the timer's
    /// port among the ports and the timer armed), unknown commands.
    fn sched_op(&mut self) {
        let number = Hypercall::SchedOp as u64;
        let mut args: [u64; 6] = core::array::from_fn(|_| self.any());
        let expect = match self.rng.below(10) {
            0..=2 => {
                args[0] = SchedCmd::CheckEvents as u64;
                Expect::Exactly(0)
            }
            3 | 4 => {
                args[0] = SchedCmd::Block as u64;
                if self.rng.chance(50) {
                    self.clear_upcall_pending();
                }
                self.arm_timer();
                Expect::Exactly(0)
            }
            5..=8 => {
                args[0] = SchedCmd::Poll as u64;
                return self.poll(args);
            }
            _ => {
                args[0] = self.rng.pick(&[3, 4, 99, 1 << 32, u64::MAX]);
                Expect::Any
            }
        };
        self.make(Plan::new(number, args, expect));
    }

    /// `sched_op(Poll)`.
    fn poll(&mut self, mut args: [u64; 6]) {
        let number = Hypercall::SchedOp as u64;
        let mut ports: Vec<u32> = (0..1 + self.rng.below(8)).map(|_| self.port() as u32).collect();
        let with_timer = self.rng.chance(50);
        if with_timer {
            let i = self.rng.below(ports.len() as u64) as usize;
            ports[i] = self.timer_port;
        }
        let count = match self.rng.below(20) {
            0 => 0,
            1 => POLL_MAX + 1,
            2 => u64::MAX,
            3 => ports.len() as u64 + 1 + self.rng.below(8),
            _ => ports.len() as u64,
        };
        // The ports are only read; but a poll must end: with a deadline,
        // or with the armed timer's port certainly among those read.
        let at = if self.rng.chance(90) {
            self.records(&ports, count, false)
        } else {
            self.address()
        };
        let timer_certain = with_timer && count <= ports.len() as u64 && Arena::contains(at, count * 4);
        let now = time::now();
        let deadline = match self.rng.below(6) {
            0 if timer_certain => self.rng.pick(&[0, u64::MAX, now + 1_000_000_000_000]),
            0 | 1 => now.saturating_sub(self.rng.below(1_000_000)).max(1),
            2 => now,
            _ => now + 1 + self.rng.below(50_000),
        };
        let _ = event::take_pending(Port(self.timer_port));
        if timer_certain {
            self.arm_timer();
        }
        args[1] = at;
        args[2] = count;
        args[3] = deadline;
        let expect = if timer_certain { Expect::PortIn(ports) } else { Expect::Port };
        self.make(Plan::new(number, args, expect));
    }

    /// Sets the timer soon (a helper call), so that a `block` or `poll`
    /// that waits for it ends.
    fn arm_timer(&mut self) {
        let deadline = time::now() + 20_000 + self.rng.below(200_000);
        self.helper(Hypercall::SetTimer, [deadline, 0, 0, 0, 0, 0], Expect::Exactly(0));
    }

    /// Clears `upcall_pending` (nothing else does: the fuzzer takes no
    /// upcalls), so that `block` really sleeps.
    fn clear_upcall_pending(&mut self) {
        let flag = (self.start.shared_info + UPCALL_PENDING_OFFSET as u64) as *mut u8;
        // SAFETY: the shared-info page is mapped writable for the domain's
        // life, the flag is a byte the hypervisor and the guest only access
        // atomically, and no Rust reference covers it.
        unsafe { AtomicU8::from_ptr(flag) }.store(0, Ordering::Release);
    }

    /// Checks that every kept entry still maps what it did (the fuzzer's
    /// own rules held, and so did the hypervisor's): a finding if not.
    pub fn check_own_mappings(&mut self) -> bool {
        let damaged = self.space.damaged_entries();
        if damaged > 0 {
            let at = alloc::format!("after {} calls", self.index);
            self.tally.finding(self.seed, &at, &alloc::format!("{damaged} of its own kept entries changed"));
        }
        damaged == 0
    }
}
