//! What a hostile guest does in one step of the fuzz: the hypercall it
//! makes (a number, arguments biased toward interesting values, and the
//! structures they point to, written in its own memory first), the
//! exception it raises, or the store it makes to its own memory.

use crate::testing::fuzz::Rng;
use crate::domain::{Domain, DomainId};
use crate::emulated::guest_phys::{Gpa, GuestPhys};
use crate::event_channel::Port;
use crate::frame_table::Mfn;
use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::TestMemory;
use crate::paging::flags;
use crate::system::System;
use crate::vcpu::GuestRegs;
use alloc::vec::Vec;
use hypercall_abi::domain_info::DOMID_SELF;
use hypercall_abi::event::{virq, EventChannelCmd, SchedCmd, NR_PORTS, POLL_MAX};
use hypercall_abi::layout::{GUEST_VIRT_BASE, GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use hypercall_abi::mm::{MmuUpdate, MmuextCmd, MmuextOp, MulticallEntry, BATCH_MAX, MULTICALL_MAX};
use hypercall_abi::trap::{frame_flags, TrapFrame, TrapInfo, TRAP_VECTORS};
use hypercall_abi::{Hypercall, StartInfo, PAGE_SIZE};
use zerocopy::IntoBytes;

/// What a paravirtualized guest knows of itself: its start-info page and
/// the machine frame of each of its first pfns (its frame list).
#[derive(Clone, Debug)]
pub(super) struct Knowledge {
    pub si: StartInfo,
    pub initial_frames: Vec<Mfn>,
}

/// A hypercall as the guest made it.
#[derive(Clone, Debug, Default)]
pub(super) struct Call {
    pub number: u64,
    pub args: [u64; 6],
    /// The stack pointer it was made with, if the call reads its stack (`iret`).
    pub rsp: Option<u64>,
    /// What it built in its memory for the call, if anything.
    pub built: Option<&'static str>,
    /// A multicall whose entries only answer: where the array is and the
    /// ops, so that each entry's result can be checked.
    pub answers_at: Option<(u64, Vec<u64>)>,
}

/// Scratch pages in the guest's free memory: the main structure, the
/// structures of multicall entries, the trap frame of `iret`.
const MAIN: u64 = 0;
const NESTED: u64 = 1;
const FRAME: u64 = 2;

/// One guest's moves, with read access to the whole system (a hostile
/// guest is assumed to know everything: others' frames, ports, ids).
pub(super) struct Guest<'a> {
    pub rng: &'a mut Rng,
    pub sys: &'a System,
    pub mem: &'a mut TestMemory,
    pub id: DomainId,
    pub knows: &'a Knowledge,
    pub now_ns: u64,
}

impl<'a> Guest<'a> {
    fn me(&self) -> &'a Domain {
        &self.sys.domains[usize::from(self.id.0)]
    }

    /// A guest-virtual address of its own window, page-aligned, or just past it.
    fn own_va(&mut self) -> u64 {
        GUEST_VIRT_BASE + self.rng.below(self.knows.si.nr_pages + 2) * PAGE_SIZE
    }

    /// The guest-virtual address of one of its initial page tables.
    fn table_va(&mut self) -> u64 {
        self.knows.si.page_tables + self.rng.below(self.knows.si.nr_page_table_pages) * PAGE_SIZE
    }

    /// One of the frames it owns now.
    fn own_mfn(&mut self) -> Mfn {
        let frames = &self.me().frames;
        if frames.is_empty() {
            return 0;
        }
        frames[self.rng.below(frames.len() as u64) as usize]
    }

    /// A frame it owns that is a page table now, or one of its initial tables.
    fn table_mfn(&mut self) -> Mfn {
        for _ in 0..4 {
            let mfn = self.own_mfn();
            if self.sys.frames.info(mfn).is_some_and(|i| i.ty.level().is_some()) {
                return mfn;
            }
        }
        let first = (self.knows.si.page_tables - GUEST_VIRT_BASE) / PAGE_SIZE;
        self.knows.initial_frames[(first + self.rng.below(self.knows.si.nr_page_table_pages)) as usize]
    }

    /// A frame that is not its own: another domain's, a free one, a
    /// reserved one, one beyond RAM.
    fn foreign_mfn(&mut self) -> Mfn {
        let n = self.sys.domains.len() as u64;
        let other = &self.sys.domains[self.rng.below(n) as usize];
        match self.rng.below(4) {
            0 if !other.frames.is_empty() => other.frames[self.rng.below(other.frames.len() as u64) as usize],
            1 => self.rng.below(64),
            2 => self.sys.frames.len() + self.rng.below(64),
            _ => self.rng.below(self.sys.frames.len()),
        }
    }

    /// An address no guest may use: a hole, the hypervisor's half, non-canonical.
    fn bad_address(&mut self) -> u64 {
        let si = &self.knows.si;
        let guard = si.stack_bottom - PAGE_SIZE;
        let past_end = GUEST_VIRT_BASE + si.nr_pages * PAGE_SIZE;
        *self.rng.pick(&[
            0x1000,
            GUEST_VIRT_BASE - 8,
            guard,
            guard + 0xff8,
            past_end,
            past_end - 4,
            GUEST_VIRT_LIMIT - 8,
            GUEST_VIRT_LIMIT,
            0x0000_7fff_ffff_f000,
            0x0000_8000_0000_0000,
            0x8000_0000_0000_0000,
            HYPERVISOR_BASE,
            HYPERVISOR_BASE + 0x20_0000,
            0xffff_ffff_ffff_f000,
            u64::MAX - 7,
        ])
    }

    /// A port number: usually one it has allocated, else one at the edges.
    fn port(&mut self) -> u64 {
        let table = self.me().events.port_table();
        if self.rng.below(4) != 0 {
            let allocated: Vec<u64> = (0..table.len()).filter(|&p| table[p] != Port::Free).map(|p| p as u64).collect();
            if !allocated.is_empty() {
                return allocated[self.rng.below(allocated.len() as u64) as usize];
            }
        }
        *self.rng.pick(&[0, 1, 2, 3, 7, NR_PORTS as u64 - 1, NR_PORTS as u64, u64::from(u32::MAX), 1 << 32])
    }

    /// A domain id: one that exists, itself, or none.
    fn domain_id(&mut self) -> u64 {
        let n = self.sys.domains.len() as u64;
        match self.rng.below(6) {
            0 => u64::from(self.id.0),
            1 => *self.rng.pick(&[n, DOMID_SELF, u64::from(u16::MAX), u64::MAX]),
            _ => self.rng.below(n),
        }
    }

    /// An argument biased toward the values that find bugs.
    pub fn value(&mut self) -> u64 {
        match self.rng.below(15) {
            0 => 0,
            1 => *self.rng.pick(&[u64::MAX, 1 << 63, (1 << 63) - 1, u64::from(u32::MAX), 1 << 32, 1 << 47, 1]),
            2 => self.rng.below(70),
            3 => self.own_va(),
            4 => self.own_va() + *self.rng.pick(&[1, 8, 0x7c0, 0xff8, 0xfff]),
            5 => self.table_va(),
            6 => self.own_mfn(),
            7 => self.table_mfn(),
            8 => self.table_mfn() * PAGE_SIZE + 8 * self.rng.below(512),
            9 => self.own_mfn() * PAGE_SIZE,
            10 => self.foreign_mfn() * *self.rng.pick(&[1, PAGE_SIZE]),
            11 => self.bad_address(),
            12 => self.port(),
            13 => self.domain_id(),
            _ => self.rng.next_u64(),
        }
    }

    /// A page-table entry a guest might write: usually present and user,
    /// often writable, to one of its frames or its tables, sometimes to
    /// someone else's, sometimes with bits it may not set.
    fn pte(&mut self) -> u64 {
        if self.rng.chance(1, 8) {
            return 0;
        }
        let target = match self.rng.below(10) {
            0..=4 => self.own_mfn(),
            5 | 6 => self.table_mfn(),
            7 => self.foreign_mfn(),
            8 => self.me().shared_info / PAGE_SIZE,
            _ => self.me().console_ring / PAGE_SIZE,
        };
        let mut bits = 0;
        for (bit, one_in) in [(flags::PRESENT, 12), (flags::USER, 12)] {
            if !self.rng.chance(1, one_in) {
                bits |= bit;
            }
        }
        for bit in [flags::WRITABLE, flags::NO_EXECUTE, flags::ACCESSED, flags::DIRTY] {
            if self.rng.chance(1, 2) {
                bits |= bit;
            }
        }
        if self.rng.chance(1, 20) {
            bits |= *self.rng.pick(&[flags::HUGE, flags::GLOBAL, 1 << 52, 1 << 62]);
        }
        (target << 12) | bits
    }

    /// The machine address of an entry of one of its tables (usually), to write.
    fn entry_ptr(&mut self) -> u64 {
        let slot = if self.rng.chance(1, 2) { self.rng.below(self.knows.si.nr_pages + 8) % 512 } else { self.rng.below(512) };
        let frame = if self.rng.chance(1, 8) { self.own_mfn() } else { self.table_mfn() };
        let misalign = if self.rng.chance(1, 30) { 4 } else { 0 };
        frame * PAGE_SIZE + slot * 8 + misalign
    }

    /// A place in scratch page `page` of its free memory for `len` bytes,
    /// aligned to `align`; now and then running over the page's end.
    fn scratch(&mut self, page: u64, len: u64, align: u64) -> u64 {
        let base = self.knows.si.free_start + page * PAGE_SIZE;
        let room = PAGE_SIZE.saturating_sub(len).max(1);
        let offset = if self.rng.chance(1, 10) { PAGE_SIZE - (len / 2 / align) * align - align } else { self.rng.below(room) / align * align };
        base + offset
    }

    /// Writes `bytes` at `va` as the guest would (through its own writable
    /// mappings); a write it could not make is skipped.
    fn put(&mut self, va: u64, bytes: &[u8]) {
        let d = self.me();
        let (id, root) = (d.id, d.vcpu.kernel_root);
        let mut view = GuestView { mem: &mut *self.mem, frames: &self.sys.frames, domain: id, root };
        let _ = view.write(GuestSlice::new(va, bytes.len() as u64), bytes);
    }

    /// A hypercall number: mostly real ones, some unknown.
    fn number(&mut self) -> u64 {
        if self.rng.chance(1, 25) {
            return *self.rng.pick(&[Hypercall::ALL.len() as u64, 99, 0x100, u64::MAX, 1 << 63]);
        }
        // Exit ends the domain: rarer, so that domains live long enough to
        // build up state, but common enough that many lifetimes end.
        loop {
            let call = *self.rng.pick(&Hypercall::ALL);
            if call != Hypercall::Exit || self.rng.chance(1, 40) {
                return call as u64;
            }
        }
    }

    /// The hypercall this guest makes now.
    pub fn hypercall(&mut self) -> Call {
        let number = self.number();
        self.call(number, MAIN)
    }

    /// Arguments for hypercall `number`, its structures written in scratch
    /// page `page`: most of the time well-formed, the rest of the time any
    /// interesting values.
    fn call(&mut self, number: u64, page: u64) -> Call {
        let mut c = Call { number, args: core::array::from_fn(|_| 0), ..Call::default() };
        for a in &mut c.args {
            *a = self.value();
        }
        if self.rng.chance(1, 5) {
            return c;
        }
        let Ok(call) = Hypercall::try_from(number) else { return c };
        let a = &mut c.args;
        match call {
            Hypercall::ConsoleWrite => {
                let text = b"fuzz says hello\n";
                let at = self.scratch(page, text.len() as u64, 1);
                self.put(at, text);
                (a[0], a[1]) = (at, *self.rng.pick(&[0, 1, text.len() as u64, 4096, 5000]));
            }
            Hypercall::DomainInfo => {
                a[0] = self.domain_id();
                a[1] = self.scratch(page, 64, 8);
            }
            Hypercall::MmuUpdate => {
                let n = self.batch_len();
                let reqs: Vec<MmuUpdate> = (0..n).map(|_| MmuUpdate { ptr: self.entry_ptr(), val: self.pte() }).collect();
                let at = self.scratch(page, n * 16, 16);
                self.put(at, reqs.as_bytes());
                (a[0], a[1], a[2]) = (at, self.count_near(n), self.done_ptr(page));
                c.built = Some("mmu_update requests");
            }
            Hypercall::MmuextOp => {
                let n = self.batch_len();
                let ops: Vec<MmuextOp> = (0..n).map(|_| self.mmuext()).collect();
                let at = self.scratch(page, n * 16, 16);
                self.put(at, ops.as_bytes());
                (a[0], a[1], a[2]) = (at, self.count_near(n), self.done_ptr(page));
                c.built = Some("mmuext_op operations");
            }
            Hypercall::UpdateVaMapping => {
                a[0] = if self.rng.chance(1, 6) { self.table_va() } else { self.own_va() };
                a[1] = self.pte();
                a[2] = self.rng.below(5);
            }
            Hypercall::MemoryOp => {
                a[0] = self.rng.below(6);
                let n = *self.rng.pick(&[0, 1, 1, 2, 3]);
                let list: Vec<u64> = (0..n).map(|_| self.frame_to_give_back()).collect();
                let at = self.scratch(page, 8 * n.max(1), 8);
                self.put(at, list.as_bytes());
                (a[1], a[2]) = (at, self.count_near(n));
                c.built = Some("memory_op frame list");
            }
            // (Entries of a multicall get no structure of their own if they
            // are multicalls: the batch refuses them anyway.)
            Hypercall::Multicall if page == MAIN => {
                let n = self.rng.below(9);
                let mut entries = Vec::new();
                let mut answers = true;
                for _ in 0..n {
                    let op = self.number();
                    answers &= only_answers(op);
                    let inner = self.call(op, NESTED);
                    entries.push(MulticallEntry { op, args: inner.args, result: 0x5a5a });
                }
                let at = self.scratch(page, 64 * n.max(1), 16);
                self.put(at, entries.as_bytes());
                (a[0], a[1]) = (at, if self.rng.chance(1, 12) { MULTICALL_MAX + 1 } else { n });
                c.built = Some("multicall entries");
                if answers && a[1] == n {
                    c.answers_at = Some((at, entries.iter().map(|e| e.op).collect()));
                }
            }
            Hypercall::SetTrapTable => {
                // Usually a whole table, as a kernel sets it up (the call
                // replaces every handler, so a short table leaves most
                // traps fatal); sometimes a few entries, in any order.
                let whole = !self.rng.chance(1, 10);
                let n = if whole { TRAP_VECTORS } else { self.rng.below(6) };
                let mut infos: Vec<TrapInfo> = (0..n)
                    .map(|i| match whole {
                        true => TrapInfo { vector: i, handler: GUEST_VIRT_BASE + 16 },
                        false => TrapInfo { vector: self.rng.below(TRAP_VECTORS), handler: self.handler() },
                    })
                    .collect();
                // One entry spoiled, now and then: a bad vector or handler.
                if n > 0 && self.rng.chance(1, 4) {
                    let i = self.rng.below(n) as usize;
                    infos[i] = TrapInfo { vector: self.value(), handler: self.handler() };
                }
                let at = self.scratch(page, 16 * n.max(1), 8);
                self.put(at, infos.as_bytes());
                (a[0], a[1]) = (at, if self.rng.chance(1, 10) { TRAP_VECTORS + 1 } else { n });
                c.built = Some("trap table");
            }
            Hypercall::SetCallbacks => (a[0], a[1]) = (self.handler(), self.handler()),
            Hypercall::StackSwitch => a[0] = self.stack_pointer(),
            Hypercall::Iret => {
                let to_user = self.rng.chance(1, 3);
                let frame = TrapFrame {
                    rax: self.value(),
                    rip: self.handler(),
                    rsp: self.stack_pointer(),
                    rflags: self.rng.next_u64(),
                    flags: if self.rng.chance(1, 15) { self.value() } else { u64::from(to_user) * frame_flags::FROM_USER },
                    ..TrapFrame::default()
                };
                let at = self.scratch(FRAME, core::mem::size_of::<TrapFrame>() as u64, 8);
                self.put(at, frame.as_bytes());
                c.rsp = Some(if self.rng.chance(1, 10) { self.value() } else { at });
                c.built = Some("trap frame");
            }
            Hypercall::EventChannelOp => self.event_channel_args(a, page),
            Hypercall::SchedOp => {
                // Blocking is rarer than the rest: once every domain
                // blocks with nothing to wake it, the lifetime is over.
                let (block, poll, check) = (SchedCmd::Block as u64, SchedCmd::Poll as u64, SchedCmd::CheckEvents as u64);
                let any = self.value();
                a[0] = *self.rng.pick(&[block, poll, poll, poll, check, check, 3, any]);
                if a[0] == SchedCmd::Poll as u64 {
                    let n = self.rng.below(4) + 1;
                    let ports: Vec<u32> = (0..n).map(|_| self.port() as u32).collect();
                    let at = self.scratch(page, 4 * n, 4);
                    self.put(at, ports.as_bytes());
                    (a[1], a[2], a[3]) = (at, if self.rng.chance(1, 12) { POLL_MAX + 1 } else { n }, self.deadline());
                    c.built = Some("poll list");
                }
            }
            Hypercall::SetTimer => a[0] = self.deadline(),
            Hypercall::Exit => a[0] = *self.rng.pick(&[0, 0, 1, u64::MAX]),
            Hypercall::Null | Hypercall::AbiVersion | Hypercall::Yield | Hypercall::BenchFloor | Hypercall::Multicall => {}
        }
        c
    }

    /// How many records a batch has: usually a few, now and then one that
    /// spans pages or is too long.
    fn batch_len(&mut self) -> u64 {
        match self.rng.below(20) {
            0 => 300,
            _ => self.rng.below(6) + 1,
        }
    }

    /// The count passed with `n` records: usually `n`.
    fn count_near(&mut self, n: u64) -> u64 {
        match self.rng.below(16) {
            0 => n + 1,
            1 => BATCH_MAX + 1,
            2 => 0,
            _ => n,
        }
    }

    /// Where a batch's `done` count goes: nowhere, its scratch page, or anywhere.
    fn done_ptr(&mut self, page: u64) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => self.value(),
            _ => self.scratch(page, 8, 8),
        }
    }

    fn mmuext(&mut self) -> MmuextOp {
        let cmd = if self.rng.chance(1, 15) { self.rng.below(20) as u32 } else { self.rng.below(MmuextCmd::ALL.len() as u64) as u32 };
        let arg = match MmuextCmd::from_raw(cmd) {
            Some(MmuextCmd::InvlpgLocal) => self.own_va(),
            Some(MmuextCmd::NewUserBaseptr) if self.rng.chance(1, 4) => 0,
            // Its own top-level table: a valid base pointer for either mode.
            Some(MmuextCmd::NewBaseptr | MmuextCmd::NewUserBaseptr) if self.rng.chance(1, 2) => self.me().vcpu.kernel_root / PAGE_SIZE,
            Some(_) if self.rng.chance(1, 4) => self.own_mfn(),
            Some(_) if self.rng.chance(1, 8) => self.foreign_mfn(),
            _ => self.table_mfn(),
        };
        MmuextOp { cmd, reserved: if self.rng.chance(1, 30) { 1 } else { 0 }, arg }
    }

    /// A frame to give back: one it took by ballooning (the last of its
    /// list), any of its own, or someone else's.
    fn frame_to_give_back(&mut self) -> Mfn {
        match self.rng.below(4) {
            0 | 1 => self.me().frames.last().copied().unwrap_or(0),
            2 => self.own_mfn(),
            _ => self.value(),
        }
    }

    /// A handler address: in its code, anywhere in its window, or not an address a guest may use.
    fn handler(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => self.bad_address(),
            2 => self.own_va(),
            _ => GUEST_VIRT_BASE + 16 * self.rng.below(8),
        }
    }

    /// A stack pointer: in its stack (usually), elsewhere in its memory, or bad.
    pub fn stack_pointer(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => self.value(),
            1 => self.own_va(),
            _ => self.knows.si.stack_top - 16 * self.rng.below(64),
        }
    }

    /// A deadline: none, past, soon, far, or the end of time.
    fn deadline(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => self.now_ns.saturating_sub(self.rng.below(1000)),
            2 => *self.rng.pick(&[u64::MAX, u64::MAX / 2, 1 << 63]),
            _ => self.now_ns.saturating_add(self.rng.below(30_000_000)),
        }
    }

    fn event_channel_args(&mut self, a: &mut [u64; 6], page: u64) {
        let cmd = if self.rng.chance(1, 20) { self.value() } else { self.rng.below(7) };
        a[0] = cmd;
        match EventChannelCmd::from_raw(cmd) {
            Some(EventChannelCmd::AllocUnbound) => a[1] = self.domain_id(),
            Some(EventChannelCmd::BindInterdomain) => {
                // Usually a port some domain (itself included) offered it.
                (a[1], a[2]) = match self.offer() {
                    Some((remote, port)) if !self.rng.chance(1, 4) => (remote, port),
                    _ => (self.domain_id(), self.port()),
                };
            }
            Some(EventChannelCmd::BindVirq) => a[1] = self.rng.below(virq::COUNT + 1),
            Some(EventChannelCmd::Status) => (a[1], a[2]) = (self.port(), self.scratch(page, 16, 4)),
            Some(_) => a[1] = self.port(),
            None => {}
        }
    }

    /// A port some domain offered to this guest (domain id, port), if any.
    fn offer(&mut self) -> Option<(u64, u64)> {
        let me = self.id;
        let offers: Vec<(u64, u64)> = self
            .sys
            .domains
            .iter()
            .flat_map(|d| {
                let table = d.events.port_table();
                (0..table.len()).filter(move |&p| table[p] == Port::Unbound { remote: me }).map(move |p| (u64::from(d.id.0), p as u64))
            })
            .collect();
        (!offers.is_empty()).then(|| offers[self.rng.below(offers.len() as u64) as usize])
    }

    /// A store the guest makes to its own memory: an event word of its
    /// shared-info page, its upcall flags, its console ring's indexes, or
    /// its free memory. Returns where and what, if it could make it.
    pub fn store(&mut self) -> (u64, u64) {
        let si = &self.knows.si;
        let va = match self.rng.below(5) {
            0 => si.shared_info + *self.rng.pick(&[0, 8, 16, 16 + 512 - 8]),
            1 => si.shared_info + hypercall_abi::event::MASK_OFFSET as u64 + 8 * self.rng.below(4),
            2 => si.console_ring + 8 * self.rng.below(512),
            _ => self.own_va() + 8 * self.rng.below(512),
        };
        let value = if self.rng.chance(1, 3) { 0 } else { self.value() };
        self.put(va, &value.to_le_bytes());
        (va, value)
    }

    /// The exception the guest raises now: (vector, error code, cr2, rip).
    pub fn exception(&mut self) -> (u64, u64, u64, u64) {
        let vector = if self.rng.chance(1, 3) { self.rng.below(32) } else { *self.rng.pick(&[0, 3, 6, 13, 14, 14]) };
        let any = self.value();
        let error_code = *self.rng.pick(&[0, 2, 4, 5, 6, 7, 0x14, any]);
        let rip = if self.rng.chance(1, 2) { GUEST_VIRT_BASE + self.rng.below(4) } else { self.handler() };
        (vector, error_code, self.value(), rip)
    }
}

/// Whether a multicall entry of hypercall `number` only writes its own
/// result (so the results read back are the ones the hypervisor wrote):
/// no call that writes other guest memory or changes its mappings.
fn only_answers(number: u64) -> bool {
    match Hypercall::try_from(number) {
        Ok(call) => matches!(
            call,
            Hypercall::Null
                | Hypercall::AbiVersion
                | Hypercall::ConsoleWrite
                | Hypercall::SetTrapTable
                | Hypercall::SetCallbacks
                | Hypercall::StackSwitch
                | Hypercall::SetTimer
                | Hypercall::Yield
                | Hypercall::Exit
                | Hypercall::BenchFloor
                | Hypercall::Iret
                | Hypercall::SchedOp
                | Hypercall::Multicall
        ),
        Err(_) => true,
    }
}

/// Instructions an unmodified kernel might fault on, to put at its `rip`
/// before a #GP: each privileged instruction the emulator knows, some it
/// refuses, and stores.
const EMULATED_CODE: &[&[u8]] = &[
    &[0xfa],                   // cli
    &[0xfb],                   // sti
    &[0xf4],                   // hlt
    &[0xee],                   // out dx, al
    &[0xec],                   // in al, dx
    &[0xe6, 0x43],             // out 0x43, al
    &[0xe6, 0x21],             // out 0x21, al
    &[0x0f, 0x22, 0xd8],       // mov cr3, rax
    &[0x0f, 0x22, 0xc0],       // mov cr0, rax
    &[0x0f, 0x22, 0xe0],       // mov cr4, rax
    &[0x0f, 0x20, 0xd8],       // mov rax, cr3
    &[0x0f, 0x01, 0x10],       // lgdt [rax]
    &[0x0f, 0x01, 0x18],       // lidt [rax]
    &[0x0f, 0x30],             // wrmsr
    &[0x0f, 0x32],             // rdmsr
    &[0x0f, 0x01, 0x38],       // invlpg [rax]
    &[0x48, 0xcf],             // iretq
    &[0x48, 0x0f, 0x07],       // sysretq
    &[0x0f, 0x01, 0xf8],       // swapgs
    &[0x0f, 0x00, 0xd8],       // ltr ax
    &[0x0f, 0x21, 0xc0],       // mov rax, dr0
    &[0x48, 0x89, 0x08],       // mov [rax], rcx
    &[0xf3, 0xa4],             // rep movsb
    &[0xcd, 0x80],             // int 0x80
    &[0x0f, 0x0b],             // ud2
];

/// One exit of an emulated kernel: an instruction written at its `rip`
/// and the registers it faults with; returns (vector, error code, cr2).
pub(super) fn emulated_exit(rng: &mut Rng, sys: &System, mem: &mut TestMemory, id: DomainId, regs: &mut GuestRegs) -> (u64, u64, u64) {
    let d = &sys.domains[usize::from(id.0)];
    let ram = d.frames.len() as u64 * PAGE_SIZE;
    let values = [0, 0x10_0000, 0x20_0000, 0x20_0800, ram - 8, ram, 0x10000, 0xc000_0080, 0xc000_0082, 0x1b, u64::MAX, 1 << 63, 0x8000_0011];
    let code = super::KERNEL + 16 * rng.below(16);
    let insn = *rng.pick(EMULATED_CODE);
    let _ = GuestPhys::new(&d.frames).write(mem, Gpa(code), insn);
    regs.rip = code;
    regs.rax = if rng.chance(1, 3) { rng.next_u64() } else { *rng.pick(&values) };
    regs.rcx = *rng.pick(&values);
    let any = *rng.pick(&values);
    regs.rdx = *rng.pick(&[0x3f8, 0x43, 0x40, 0x20, 0x21, 0xa0, 0xf4, any]);
    match rng.below(6) {
        0..=2 => (13, 0, 0),
        3 => (14, *rng.pick(&[4, 5, 6, 7, 0x14, 0, 2]), *rng.pick(&values)),
        _ => (*rng.pick(&[0, 1, 3, 4, 6, 8, 11, 12, 17, 19]), 0, 0),
    }
}
