//! Plain values: hypercall numbers, words from every pool, addresses,
//! machine frames, page-table entries and their addresses, domain ids,
//! ports, deadlines.

use parvus_guest_sdk::hypercall_abi::domain_info::DOMID_SELF;
use parvus_guest_sdk::hypercall_abi::event::NR_PORTS;
use parvus_guest_sdk::hypercall_abi::layout::{GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use parvus_guest_sdk::hypercall_abi::{Hypercall, PAGE_SIZE};
use parvus_guest_sdk::paging::{PteFlags, ADDRESS_MASK};
use parvus_guest_sdk::time;

use super::Fuzzer;
use crate::arena;
use crate::rng::Rng;
use crate::space::{kept_value, Kind, Rule, ARENA_PAGES, ARENA_VA, HYPERVISOR_MFN, NX, P, U, W, WINDOW_VA};

impl Fuzzer {
    /// A hypercall number: mostly real ones, by weight, sometimes none.
    /// `exit` only inside a multicall (where it is refused).
    pub(super) fn number(&mut self, batched: bool) -> u64 {
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
    pub(super) fn any(&mut self) -> u64 {
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
    pub(super) fn address(&mut self) -> u64 {
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
    pub(super) fn bad_address(&mut self) -> u64 {
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
    /// its neighbours (likely another domain's: the victim's), the
    /// hypervisor's, beyond RAM, random.
    pub(super) fn mfn(&mut self) -> u64 {
        let s = &self.space;
        // The hypervisor hands frames out low first, so the domains built
        // before this one own the frames just below its own.
        match self.rng.below(16) {
            0 => s.boot_l4,
            1 => self.rng.pick(&s.boot_tables).0,
            2 => self.rng.pick(&[s.window_l1, s.arena_l1, s.clone_l4]),
            3 => self.rng.pick(&s.arena_frames),
            4 => self.rng.pick(&s.writable_frames),
            5 => self.rng.pick(&s.read_only_frames),
            6..=8 if !s.pool.is_empty() => self.rng.pick(&s.pool),
            9..=11 => s.own_low.saturating_sub(1 + self.rng.below(512)),
            12 => s.own_high + 1 + self.rng.below(512),
            13 => self.rng.pick(&[0, 1, 0x9f, 0xfe, HYPERVISOR_MFN]),
            14 => self.rng.pick(&[1 << 20, 1 << 30, (1 << 40) - 1, u64::MAX >> 12]),
            _ => self.rng.next() >> self.rng.below(64),
        }
    }

    /// A frame that may be pinned or unpinned: never one of the fuzzer's
    /// read-only frames (which must not become tables) nor a kept pin.
    pub(super) fn table_mfn(&mut self) -> u64 {
        let mfn = self.mfn();
        match self.space.kind(mfn) {
            Kind::ReadOnly | Kind::Pinned(_) => HYPERVISOR_MFN,
            _ => mfn,
        }
    }

    /// A page-table entry for a table of `level` (`None`: not known),
    /// sanitized (rule 2).
    pub(super) fn pte(&mut self, level: Option<u8>) -> u64 {
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
    pub(super) fn entry_value(&mut self, rule: Rule) -> u64 {
        match rule {
            Rule::Kept(current) => kept_value(current, self.rng.next()),
            Rule::Free(level) => self.pte(level),
        }
    }

    /// The machine address of a page-table entry: in the fuzzer's tables
    /// (boot, window, clone, arena), a pool frame, a data frame, another
    /// domain's or the hypervisor's frame; sometimes misaligned.
    pub(super) fn entry_ptr(&mut self) -> u64 {
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
        match self.avoid {
            Some(page) if ptr == self.space.window_entry(page) => ptr ^ 8,
            _ => ptr,
        }
    }

    /// `va`, or the page after it if it is the page to leave alone.
    pub(super) fn steer_clear(&self, va: u64) -> u64 {
        match self.avoid {
            Some(page) if va & !(PAGE_SIZE - 1) == page => va.wrapping_add(PAGE_SIZE),
            _ => va,
        }
    }

    /// A domain id: each domain, the caller named itself, `DOMID_SELF`
    /// and its neighbours, ids that truncate to a real one, all ones.
    pub(super) fn domain_id(&mut self) -> u64 {
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
    pub(super) fn port(&mut self) -> u64 {
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
    pub(super) fn deadline(&mut self) -> u64 {
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
}
