//! One random hypercall per step: the number, arguments biased toward the
//! values that find bugs, the call, and the verdict.
//!
//! The generators are split by what they make: [`values`] (numbers,
//! addresses, frames, entries, domains, ports, deadlines), [`buffers`]
//! (what the hypervisor reads or writes through a pointer), [`calls`] (the
//! arguments of each call that only answers, which a multicall may also
//! carry) and [`control`] (the calls that leave the fuzzer or replace its
//! registers: `multicall`, `iret`, `bench_floor`, `sched_op`).
//!
//! Arguments come from pools of interesting values: 0, all ones, the top
//! bit, small numbers, numbers one past a limit, addresses in the
//! fuzzer's own memory (page-aligned and not), its page tables by machine
//! frame and by address, the hypervisor's half, non-canonical addresses,
//! unmapped holes, other domains' ids and frames, ports near the limits,
//! and plain random words. Whatever could change the fuzzer's own
//! mappings or memory passes through the rules of [`crate::space`] first.

use alloc::string::String;

use parvus_guest_sdk::hypercall_abi::domain_info::DOMID_SELF;
use parvus_guest_sdk::hypercall_abi::event::{port_state, EventChannelStatus};
use parvus_guest_sdk::hypercall_abi::{decode_result, DomainInfo, Hypercall, HypercallError, StartInfo};

mod buffers;
mod calls;
mod control;
mod values;

use crate::arena::Arena;
use crate::check::{describe, describe_call, verdict, Expect, Tally};
use crate::raw;
use crate::rng::Rng;
use crate::space::{Kind, Space};

/// Bytes `console_write` may take: carriage returns, which the console
/// drops, so that a fuzzed write prints nothing at all (and nothing a log
/// reader could mistake for a message).
static QUIET: [u8; 4096 + 64] = [b'\r'; 4096 + 64];

/// One call, ready to make.
struct Plan {
    number: u64,
    args: [u64; 6],
    expect: Expect,
    /// What the call wrote into the arena, to check once it succeeded.
    output: Output,
}

/// A buffer in the arena the hypervisor fills, and what it must hold.
#[derive(Clone, Copy)]
enum Output {
    None,
    /// `IncreaseReservation`: this many new frames (none the fuzzer has).
    Frames { at: u64, count: u64 },
    /// `mmu_update` or `mmuext_op`: the requests that went in (all on
    /// success, fewer on failure; always written to a counter the caller
    /// may write).
    Done { at: u64, count: u64 },
    /// `domain_info`: the domain asked about, and how many there are.
    DomainInfo { at: u64, id: u64, domains: u64 },
    /// `event_channel_op(Status)`: an allocated port's state.
    Status { at: u64 },
}

impl Plan {
    fn new(number: u64, args: [u64; 6], expect: Expect) -> Plan {
        Plan { number, args, expect, output: Output::None }
    }

    fn with_output(mut self, output: Output) -> Plan {
        self.output = output;
        self
    }
}

/// What `done` holds before a call writes it.
const UNWRITTEN: u64 = u64::MAX;

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
    /// before it blocks, clearing the user table, mapping a window page):
    /// checked, not counted.
    pub helpers: u64,
    /// A window page a multicall's entries lie in: the entries planned for
    /// it leave its mapping alone (only the entries meant to remap it do).
    avoid: Option<u64>,
    /// From this call on, each call is printed before it is made.
    pub trace: u64,
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
            avoid: None,
            trace: u64::MAX,
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
            Ok(Hypercall::Multicall) => {
                if !(self.rng.chance(15) && self.multicall_in_window()) {
                    self.multicall();
                }
            }
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
        self.trace(plan.number, &plan.args);
        // SAFETY: every plan is built by the rules of `space`.
        let rax = unsafe { raw::call(plan.number, plan.args) };
        self.judge(&plan, false, rax, None);
        rax
    }

    /// Prints a call about to be made, from the `trace`-th call on (and
    /// gets it out at once, in case the call never returns).
    fn trace(&self, number: u64, args: &[u64]) {
        if self.index >= self.trace {
            parvus_guest_sdk::println!("hypercall-fuzz: trace: call {}: {}", self.index, describe_call(number, args));
            parvus_guest_sdk::console::flush();
        }
    }

    /// Counts a result and checks it (and what the call wrote) against the
    /// ABI; keeps the frames a call ballooned in.
    fn judge(&mut self, plan: &Plan, batched: bool, rax: u64, entry: Option<usize>) {
        self.tally.result(rax);
        let why = verdict(plan.number, batched, &plan.expect, rax).or_else(|| self.check_output(plan.output, decode_result(rax)));
        if let Some(why) = why {
            self.finding(entry, alloc::format!("{}: {why}", describe(plan.number, &plan.args, rax)));
        }
    }

    /// Reports a finding about the call being made (or one of its entries).
    fn finding(&mut self, entry: Option<usize>, what: String) {
        let at = match entry {
            Some(i) => alloc::format!("call {} entry {i}", self.index),
            None => alloc::format!("call {}", self.index),
        };
        self.tally.finding(self.seed, &at, &what);
    }

    /// Checks what a call wrote into the arena; keeps ballooned frames.
    fn check_output(&mut self, output: Output, result: Result<u64, HypercallError>) -> Option<&'static str> {
        match (output, result) {
            (Output::Frames { at, count }, Ok(_)) => {
                for i in 0..count {
                    let mfn = Arena::read_u64(at + i * 8);
                    if self.space.kind(mfn) != Kind::Free {
                        return Some("a frame ballooned in is one the fuzzer already has");
                    }
                    if !self.space.pool.contains(&mfn) {
                        self.space.pool.push(mfn);
                    }
                }
                None
            }
            (Output::Done { at, count }, result) => {
                let done = Arena::read_u64(at);
                // On failure: the requests before the one refused, or none
                // when the batch itself was refused (a zero count included).
                let right = match result {
                    Ok(_) => done == count,
                    Err(_) => done < count || done == 0,
                };
                (!right).then_some("`done` does not count the requests that went in")
            }
            (Output::DomainInfo { at, id, domains }, Ok(_)) => {
                let info: DomainInfo = Arena::read(at);
                let want = if id == DOMID_SELF { self.me } else { id };
                (u64::from(info.domain_id) != want || u64::from(info.nr_domains) != domains)
                    .then_some("domain_info described another domain")
            }
            (Output::Status { at }, Ok(_)) => {
                let status: EventChannelStatus = Arena::read(at);
                let allocated = [port_state::UNBOUND, port_state::INTERDOMAIN, port_state::VIRQ];
                (!allocated.contains(&status.state)).then_some("the status of an allocated port is no state of one")
            }
            _ => None,
        }
    }

    /// A helper call (not fuzzed): made, judged, not counted as a call.
    fn helper(&mut self, call: Hypercall, args: [u64; 6], expect: Expect) -> Result<u64, HypercallError> {
        self.helpers += 1;
        // SAFETY: helpers re-arm the timer, clear the user table or map a
        // pool frame in the window: no memory the fuzzer uses changes.
        let rax = unsafe { raw::call(call as u64, args) };
        self.judge(&Plan::new(call as u64, args, expect), false, rax, None);
        decode_result(rax)
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
