//! The calls that leave the fuzzer or replace its registers, each made
//! its own way: `multicall` (whose entries are judged one by one),
//! `iret` (from a frame that resumes right after the call), `bench_floor`
//! (ended at once) and `sched_op` (with a wake-up certain).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::hypercall_abi::event::{SchedCmd, POLL_MAX, UPCALL_PENDING_OFFSET};
use parvus_guest_sdk::hypercall_abi::layout::{GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use parvus_guest_sdk::hypercall_abi::mm::{MmuextCmd, MmuextOp, MulticallEntry, MULTICALL_MAX};
use parvus_guest_sdk::hypercall_abi::trap::{frame_flags, TrapFrame};
use parvus_guest_sdk::hypercall_abi::{decode_result, encode_result, Hypercall, HypercallError};
use parvus_guest_sdk::time;

use super::{Fuzzer, Plan};
use crate::arena::Arena;
use crate::check::{describe, Expect};
use crate::raw;

/// `rax` of the frames `iret` is given: seen after a successful `iret`.
const IRET_MARKER: u64 = 0x1e7_f00d;
/// What a multicall entry's `result` holds before the call (a code no ABI
/// version has): still there afterwards means the entry was not answered.
const UNANSWERED: u64 = encode_result(Err(HypercallError::Unrecognized));

impl Fuzzer {
    /// A `multicall` of random entries, each planned as if made alone;
    /// each entry's result is judged when the whole batch was performed.
    pub(super) fn multicall(&mut self) {
        let number = Hypercall::Multicall as u64;
        let built = match self.rng.below(10) {
            0 => 0,
            1..=7 => 1 + self.rng.below(8) as usize,
            _ => 9 + self.rng.below(56) as usize,
        };
        // The entries' own buffers are planned first, so that the entries'
        // array and every buffer are separate allocations.
        let plans: Vec<Plan> = (0..built).map(|_| self.entry()).collect();
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

    /// A `multicall` whose entries lie in a window page that one of its
    /// own entries unmaps or makes read-only (an `update_va_mapping` or an
    /// `mmu_update` of the window's table), followed by entries that would
    /// pin or give back the page's frame. The batch must stop where it can
    /// no longer write a result: no result may be written through a stale
    /// translation, and the entry that took the page away was performed, so
    /// the multicall returns how many entries were (that one included, its
    /// `result` not written), not an error. Afterwards the page is mapped
    /// writable again (which must work: its frame is still the fuzzer's and
    /// no table) and the results must be a prefix: answered entries, then
    /// unanswered ones.
    /// Returns false (having made no fuzzed call) when no pool frame could
    /// be mapped there.
    pub(super) fn multicall_in_window(&mut self) -> bool {
        use crate::space::{NX, P, U, W, WINDOW_VA};
        use parvus_guest_sdk::hypercall_abi::mm::{uvm_flags, MemoryOpCmd, MmuUpdate};
        use parvus_guest_sdk::hypercall_abi::PAGE_SIZE;
        let Some(&frame) = self.space.pool.get(self.rng.below(self.space.pool.len().max(1) as u64) as usize) else {
            return false;
        };
        let page = WINDOW_VA + self.rng.below(512) * PAGE_SIZE;
        let writable = (frame << 12) | P | W | U | NX;
        let map = [page, writable, uvm_flags::INVLPG, 0, 0, 0];
        if self.helper(Hypercall::UpdateVaMapping, map, Expect::Exactly(0)).is_err() {
            return false;
        }
        self.avoid = Some(page);
        let mut plans: Vec<Plan> = (0..self.rng.below(12)).map(|_| self.entry()).collect();
        self.avoid = None;
        // The entry that takes the page away, then those that would need it gone.
        let taken = pick!(self.rng, [0, (frame << 12) | P | U | NX]);
        let take = if self.rng.chance(50) {
            Plan::new(Hypercall::UpdateVaMapping as u64, [page, taken, uvm_flags::INVLPG, 0, 0, 0], Expect::Exactly(0))
        } else {
            let at = self.arena.alloc(16, 16).expect("room for one request");
            Arena::write(at, &MmuUpdate { ptr: self.space.window_entry(page), val: taken });
            Plan::new(Hypercall::MmuUpdate as u64, [at, 1, 0, 0, 0, 0], Expect::Exactly(1))
        };
        let pin_at = self.arena_op(MmuextCmd::PinL1Table, frame);
        let list = self.arena.alloc(8, 8).expect("room for one frame");
        Arena::write(list, &frame);
        let at = self.rng.below(plans.len() as u64 + 1) as usize;
        plans.insert(at, take);
        plans.insert(at + 1, Plan::new(Hypercall::MmuextOp as u64, [pin_at, 1, 0, 0, 0, 0], Expect::Exactly(1)));
        let give_back = [MemoryOpCmd::DecreaseReservation as u64, list, 1, 0, 0, 0];
        plans.insert(at + 2, Plan::new(Hypercall::MemoryOp as u64, give_back, Expect::Exactly(1)));
        // All in this one page, from a random entry slot on.
        let count = plans.len() as u64;
        let array = page + 64 * self.rng.below(64 - count + 1);
        for (i, plan) in plans.iter().enumerate() {
            let entry = MulticallEntry { op: plan.number, args: plan.args, result: UNANSWERED };
            window_write(array + i as u64 * 64, &entry);
        }
        self.tally.multicalls += 1;
        self.tally.window_multicalls += 1;
        self.tally.entries += count;
        let rax = self.make(Plan::new(Hypercall::Multicall as u64, [array, count, 0, 0, 0, 0], Expect::AtMost(count)));
        // The page back, writable: its frame is still the fuzzer's, no table.
        if let Err(e) = self.helper(Hypercall::UpdateVaMapping, map, Expect::Exactly(0)) {
            self.finding(None, alloc::format!("after a multicall in the window, its frame {frame:#x} cannot be mapped writable again ({e:?}): the batch went on after it lost its page"));
            return true;
        }
        let results: Vec<u64> = (0..count).map(|i| window_read(array + i * 64 + 56)).collect();
        let answered = results.iter().take_while(|r| **r != UNANSWERED).count();
        if let Some(late) = results[answered..].iter().position(|r| *r != UNANSWERED) {
            let what = alloc::format!(
                "a multicall in the window stopped at entry {answered}, but entry {} has a result: written through a stale translation",
                answered + late
            );
            self.finding(None, what);
        }
        match decode_result(rax) {
            Ok(n) if n == count && answered as u64 != count => {
                self.finding(None, alloc::format!("a multicall in the window returned {count} but answered {answered} entries"));
            }
            // Stopped early: only after the entry that took its own page away.
            Ok(n) if n < count && n != answered as u64 + 1 => {
                let what = alloc::format!("a multicall in the window returned {n} performed but answered {answered} entries");
                self.finding(None, what);
            }
            _ => {}
        }
        for (i, (plan, result)) in plans.iter().zip(&results).take(answered).enumerate() {
            self.judge(plan, true, *result, Some(i));
        }
        true
    }

    /// One multicall entry: a random number and, for a call that only
    /// answers, its arguments (any arguments for the others, refused).
    pub(super) fn entry(&mut self) -> Plan {
        let op = self.number(true);
        match Hypercall::try_from(op) {
            Ok(call) => self.plan(call),
            Err(_) => Plan::new(op, core::array::from_fn(|_| self.any()), Expect::Any),
        }
    }

    /// `iret` from a frame in the arena: a good one (resuming right after
    /// the call), or one with each kind of fault the ABI refuses.
    pub(super) fn iret(&mut self) {
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
                    let _ = self.helper(Hypercall::MmuextOp, [op, 1, 0, 0, 0, 0], Expect::Exactly(1));
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
        let args = [at, frame.flags, frame.rip, frame.rsp, frame.rflags, 0];
        self.trace(number, &args);
        // SAFETY: a frame the hypervisor could accept is in the arena with
        // `resume_here` set and no TF; the others have a `rip` the ABI
        // refuses or cannot be read.
        let rax = unsafe { raw::iret(at, resume_here) };
        let resumed = rax == IRET_MARKER;
        let plan = Plan::new(number, args, Expect::Any);
        if resumed {
            self.tally.result(0);
        } else {
            self.judge(&plan, false, rax, None);
        }
        if resumed != good {
            let why = if good { "iret refused a frame the ABI accepts" } else { "iret accepted a frame the ABI refuses" };
            self.finding(None, alloc::format!("{}: {why}", describe(number, &args, rax)));
        }
    }

    /// One `MmuextOp` in a fresh arena buffer.
    pub(super) fn arena_op(&mut self, cmd: MmuextCmd, arg: u64) -> u64 {
        let at = self.arena.alloc(16, 16).expect("room for one operation");
        Arena::write(at, &MmuextOp { cmd: cmd as u32, reserved: 0, arg });
        at
    }

    /// `bench_floor`, a `syscall` on the floor path (which must return
    /// its `rax` unchanged) and the `int3` that ends the measurement.
    pub(super) fn bench_floor(&mut self) {
        let probe = self.any();
        self.trace(Hypercall::BenchFloor as u64, &[probe]);
        let (floor, seen) = raw::bench_floor(probe);
        self.judge(&Plan::new(Hypercall::BenchFloor as u64, [0; 6], Expect::Exactly(0)), false, floor, None);
        if seen.is_some_and(|seen| seen != probe) {
            let what = alloc::format!("a syscall on the bench_floor path with rax={probe:#x} returned {:#x}", seen.unwrap_or(0));
            self.finding(None, what);
        }
    }

    /// `sched_op`: `CheckEvents`, `Block` after arming the timer (so a
    /// wake-up is certain), `Poll` with a deadline (or with the timer's
    /// port among the ports and the timer armed), unknown commands.
    pub(super) fn sched_op(&mut self) {
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
    pub(super) fn poll(&mut self, mut args: [u64; 6]) {
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
        let (at, written) = if self.rng.chance(90) {
            (self.records(&ports, count, false), true)
        } else {
            (self.address(), false)
        };
        // Only ports the fuzzer wrote are known (an address it drew may lie
        // in the arena too, over whatever an earlier call left there).
        let timer_certain = with_timer && written && count <= ports.len() as u64 && Arena::contains(at, count * 4);
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
    pub(super) fn arm_timer(&mut self) {
        let deadline = time::now() + 20_000 + self.rng.below(200_000);
        let _ = self.helper(Hypercall::SetTimer, [deadline, 0, 0, 0, 0, 0], Expect::Exactly(0));
    }

    /// Clears `upcall_pending` (nothing else does: the fuzzer takes no
    /// upcalls), so that `block` really sleeps.
    pub(super) fn clear_upcall_pending(&mut self) {
        let flag = (self.start.shared_info + UPCALL_PENDING_OFFSET as u64) as *mut u8;
        // SAFETY: the shared-info page is mapped writable for the domain's
        // life, the flag is a byte the hypervisor and the guest only access
        // atomically, and no Rust reference covers it.
        unsafe { AtomicU8::from_ptr(flag) }.store(0, Ordering::Release);
    }
}

/// Writes `value` at `va`, a window page the fuzzer has just mapped
/// writable to a pool frame.
fn window_write<T: zerocopy::IntoBytes + zerocopy::Immutable>(va: u64, value: &T) {
    for (i, byte) in value.as_bytes().iter().enumerate() {
        // SAFETY: the caller mapped the page writable (the hypercall
        // succeeded) to a frame of the pool, which no Rust object uses; the
        // hypervisor reads and writes it during calls, hence volatile.
        unsafe { ((va + i as u64) as *mut u8).write_volatile(*byte) };
    }
}

/// Reads the word at `va`, in a window page mapped as for [`window_write`].
fn window_read(va: u64) -> u64 {
    // SAFETY: as for `window_write`; `va` is 8-byte aligned.
    unsafe { (va as *const u64).read_volatile() }
}
