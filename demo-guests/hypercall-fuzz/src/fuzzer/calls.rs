//! The arguments of each call that only answers (the calls a multicall
//! may carry), and the value each must return.

use alloc::vec::Vec;

use parvus_guest_sdk::hypercall_abi::event::{virq, EventChannelCmd};
use parvus_guest_sdk::hypercall_abi::layout::{GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use parvus_guest_sdk::hypercall_abi::mm::{uvm_flags, MemoryOpCmd, MmuUpdate, MmuextCmd, MmuextOp, BATCH_MAX};
use parvus_guest_sdk::hypercall_abi::trap::{TrapInfo, TRAP_VECTORS};
use parvus_guest_sdk::hypercall_abi::{Hypercall, ABI_VERSION};

use super::{Fuzzer, Output, Plan};
use crate::arena::Arena;
use crate::check::Expect;
use crate::space::HYPERVISOR_MFN;

impl Fuzzer {
    /// Arguments and expected value for `call`.
    pub(super) fn plan(&mut self, call: Hypercall) -> Plan {
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
                let plan = Plan::new(number, args, Expect::Exactly(0));
                if Arena::contains(args[1], 64) && args[1] % 8 == 0 {
                    return plan.with_output(Output::DomainInfo { at: args[1], id: args[0], domains: self.domains });
                }
                return plan;
            }
            Hypercall::MmuUpdate => {
                let reqs: Vec<MmuUpdate> = (0..self.batch_len())
                    .map(|_| {
                        let ptr = self.entry_ptr();
                        let rule = self.space.entry_rule(ptr);
                        MmuUpdate { ptr, val: self.entry_value(rule) }
                    })
                    .collect();
                return self.batch(number, args, &reqs);
            }
            Hypercall::MmuextOp => {
                let ops: Vec<MmuextOp> = (0..self.batch_len()).map(|_| self.mmuext()).collect();
                return self.batch(number, args, &ops);
            }
            Hypercall::UpdateVaMapping => {
                let address = self.address();
                let va = self.steer_clear(address);
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

    /// `mmu_update` or `mmuext_op` of `records`: the array, a count (the
    /// records', or one the batch is refused for or runs off the arena
    /// with), and a `done` counter, checked when it is a fresh one.
    fn batch<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, number: u64, mut args: [u64; 6], records: &[T]) -> Plan {
        let count = self.batch_count(records.len(), BATCH_MAX);
        args[0] = self.records(records, count, true);
        args[1] = count;
        args[2] = self.done_ptr();
        self.with_done(Plan::new(number, args, Expect::Exactly(count)))
    }

    /// One `mmuext_op` operation.
    pub(super) fn mmuext(&mut self) -> MmuextOp {
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
    pub(super) fn base_mfn(&mut self) -> u64 {
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
    pub(super) fn memory_op(&mut self, mut args: [u64; 6]) -> Plan {
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
                    let plan = Plan::new(number, args, Expect::Exactly(count));
                    if Arena::contains(args[1], count * 8) && args[1] % 8 == 0 {
                        return plan.with_output(Output::Frames { at: args[1], count });
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
    pub(super) fn event_channel_op(&mut self, mut args: [u64; 6]) -> Plan {
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
                let plan = Plan::new(number, args, Expect::Exactly(0));
                if Arena::contains(args[2], 16) && args[2] % 8 == 0 {
                    return plan.with_output(Output::Status { at: args[2] });
                }
                return plan;
            }
            EventChannelCmd::Send | EventChannelCmd::Unmask => {
                args[1] = self.port();
                Expect::Exactly(0)
            }
        };
        Plan::new(number, args, expect)
    }
}
