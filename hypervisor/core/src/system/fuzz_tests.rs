//! The host fuzz of [`System`]: random hypercalls, exceptions, timer ticks
//! and guest stores from random domains, with every invariant of
//! [`invariants`] recomputed after each step.
//!
//! A run is a chain of *lifetimes*: a system of two to four small
//! paravirtualized domains (and, one time in three, an emulated one) is built,
//! started, and driven as the kernel drives it, one entry at a time, until
//! every domain has ended; then the next system is built. Each step, the
//! domain that runs acts as a hostile guest would (see [`steps`]): a
//! hypercall with arguments biased toward interesting values and
//! well-formed-looking structures written in its memory first, a trap, a
//! store to its own memory; or the platform timer fires. After the step:
//! nothing panicked, every hypercall's result is one the ABI lists for it
//! ([`Hypercall::errors`]), the entry's answer agrees with the system, and
//! every invariant holds.
//!
//! Seeds follow [`crate::testing::fuzz`]: the run's seed is
//! `PARVUS_FUZZ_SEED` (or a fresh one for `random`, or the fixed default,
//! so that the test command judges the same steps on every run), and
//! lifetime `n` draws from its own generator, derived from the seed and
//! `n`, so that it can be replayed alone. A failure prints the seed, the
//! lifetime, the step, the last steps taken, and the command that replays
//! exactly that lifetime:
//!
//! ```text
//! PARVUS_FUZZ_SEED=0x... PARVUS_FUZZ_CASE=<lifetime> cargo test -p parvus-core fuzz_system -- --nocapture
//! ```
//!
//! `PARVUS_FUZZ_STEPS` sets the steps of a run ([`DEFAULT_STEPS`]
//! without it).

mod steps;

use super::{Next, Platform, System};
use crate::builder::{build, DomainPlan, Segment};
use crate::domain::{DomainId, Ending};
use crate::frame_table::FrameTable;
use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::TestMemory;
use crate::manifest::{Expect, Mode};
use crate::paging::{flags, ENTRIES};
use crate::scheduler::SLICE_NS;
use crate::testing::fuzz::{self, Rng};
use crate::testing::invariants::{self, Violation};
use crate::time::{TimeBase, TscClock};
use crate::vcpu::{GuestRegs, VECTOR_SYSCALL};
use hypercall_abi::layout::GUEST_VIRT_BASE;
use hypercall_abi::mm::MulticallEntry;
use hypercall_abi::{decode_result, Hypercall, HypercallError, StartInfo, PAGE_SIZE};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use steps::{Call, Guest, Knowledge};
use zerocopy::{FromZeros, IntoBytes};

/// Steps of a run that names no number (`PARVUS_FUZZ_STEPS`).
pub const DEFAULT_STEPS: u64 = 1_000_000;
/// Frames below this one are reserved, as the hypervisor's own are.
const FIRST_FREE: u64 = 64;
/// Where the emulated kernel is loaded, and where its faulting
/// instructions are written.
pub(super) const KERNEL: u64 = 0x20_0000;
/// An emulated domain's memory beyond its kernel's address.
const EMULATED_EXTRA: u64 = 8 * PAGE_SIZE;
/// Steps kept for the report of a failure.
const HISTORY: usize = 20;

/// What one step did, for the report of a failure.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
enum Op {
    Hypercall { name: &'static str, number: u64, args: [u64; 4], rsp: u64, built: Option<&'static str> },
    /// A `syscall` the hypervisor bounces (user mode) or emulates (an emulated kernel).
    Syscall { number: u64, rip: u64 },
    Exception { vector: u64, error_code: u64, cr2: u64, rip: u64, rsp: u64 },
    Timer,
    /// The platform timer after the system idled.
    Wake,
    Store { va: u64, value: u64 },
}

/// How the kernel enters the system.
#[derive(Clone, Copy)]
enum Entry {
    /// `System::on_hypercall` (the kernel door, and any `syscall` of an emulated kernel).
    Syscall,
    /// `System::on_user_syscall`.
    UserDoor,
    /// `System::on_guest_exception`.
    Exception { cr2: u64 },
    /// `System::on_timer`.
    Timer,
}

/// One step: when, who, what, and what the entry answered.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Record {
    step: u64,
    tsc: u64,
    domain: Option<u16>,
    op: Op,
    next: Option<Next>,
}

/// The last steps, oldest first.
#[derive(Default)]
struct History(VecDeque<Record>);

impl History {
    fn push(&mut self, r: Record) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(r);
    }

    fn answered(&mut self, next: Next) {
        if let Some(r) = self.0.back_mut() {
            r.next = Some(next);
        }
    }
}

/// What a run did, for its summary line.
#[derive(Debug, Default)]
struct Counts {
    steps: u64,
    lifetimes: u64,
    hypercalls: u64,
    failed_hypercalls: u64,
    syscalls: u64,
    exceptions: u64,
    ticks: u64,
    wakes: u64,
    stores: u64,
    exits: u64,
    crashes: u64,
    time_limits: u64,
}

/// One system from its build until every domain has ended.
struct Lifetime {
    rng: Rng,
    sys: System,
    mem: TestMemory,
    regs: GuestRegs,
    tsc: u64,
    next: Next,
    /// What each paravirtualized domain knows of itself.
    knows: Vec<Option<Knowledge>>,
    console: String,
}

impl Lifetime {
    /// Builds and starts a system drawn from `rng`.
    fn new(mut rng: Rng) -> Lifetime {
        let paravirtualized = 2 + rng.below(3);
        let emulated_at = rng.chance(1, 3).then(|| rng.below(paravirtualized + 1));
        let count = paravirtualized + u64::from(emulated_at.is_some());
        // The machine is as small as the domains allow (the invariants scan
        // every frame after every step), with less room than all of them
        // could balloon to, so that memory can run out; an emulated domain
        // brings its 2 MiB and room for some shadows.
        let emulated_frames = (KERNEL + EMULATED_EXTRA) / PAGE_SIZE + 512;
        let frames_total = FIRST_FREE + paravirtualized * 80 + u64::from(emulated_at.is_some()) * emulated_frames;
        let mut frames = FrameTable::new(frames_total);
        frames.add_free(FIRST_FREE, frames_total);
        // A recognizable hypervisor half (supervisor entries to frames
        // nobody owns), which validation must copy into every top-level table.
        let half: [u64; ENTRIES / 2] = core::array::from_fn(|i| ((8 + i as u64) << 12) | flags::PRESENT | flags::WRITABLE);
        let mut sys = System::new(frames, half, count as usize);
        // A TSC of some usual rate, started at boot or long before.
        let hz = *rng.pick(&[1_000_000_000, 2_400_000_000, 3_000_000_000, 100_000_000, 12_345_678]);
        let some_time = rng.below(1 << 40);
        let boot_tsc = *rng.pick(&[0, some_time, 1 << 62]);
        sys.time = TimeBase { clock: TscClock::new(hz), boot_tsc, wall_clock_sec: 1_700_000_000 };
        let mut mem = TestMemory::new(frames_total);
        let code = [0x90u8; 64];
        let mut knows = Vec::new();
        for i in 0..count {
            let id = DomainId(i as u16);
            let emulated = emulated_at == Some(i);
            let name = if emulated { format!("emu{i}") } else { format!("pv{i}") };
            let memory = if emulated { KERNEL + EMULATED_EXTRA } else { (40 + rng.below(24)) * PAGE_SIZE };
            let plan = DomainPlan {
                id,
                name: &name,
                cmdline: "fuzz",
                memory,
                max_memory: memory + if emulated { 0 } else { rng.below(33) * PAGE_SIZE },
                expect: *rng.pick(&[Expect::Exit(0), Expect::Crash, Expect::TimeLimit]),
                weight: *rng.pick(&[1, 100, 256, 256, 512, 1000]),
                time_limit_ns: rng.chance(1, 4).then(|| (1 + rng.below(50)) * 1_000_000),
                umip: true,
                mode: if emulated { Mode::Emulated } else { Mode::Paravirtualized },
                time: sys.time,
                entry: if emulated { KERNEL } else { GUEST_VIRT_BASE },
                segments: if emulated {
                    vec![Segment { vaddr: KERNEL, data: &[0xf4], mem_size: 0x1000, writable: true, executable: true }]
                } else {
                    vec![
                        Segment { vaddr: GUEST_VIRT_BASE, data: &code, mem_size: 64, writable: false, executable: true },
                        Segment { vaddr: GUEST_VIRT_BASE + 0x1000, data: b"hello", mem_size: 0x1000, writable: true, executable: false },
                    ]
                },
            };
            let mut d = build(&plan, &mut sys.frames, &mut mem, &half).expect("a fuzz domain builds");
            if !emulated && !rng.chance(1, 8) {
                // Most guests have set up their kernel before the fuzz
                // starts (as if by `set_trap_table`, `set_callbacks` and
                // `stack_switch`), so that a trap is usually bounced rather
                // than fatal and domains live long enough to build up state.
                let handler = GUEST_VIRT_BASE + 16;
                d.vcpu.traps = [handler; crate::vcpu::TRAP_VECTORS];
                (d.vcpu.syscall_callback, d.vcpu.event_callback) = (handler + 16, handler + 32);
                d.vcpu.kernel_sp = d.vcpu.regs.rsp;
            }
            knows.push((!emulated).then(|| {
                let mut si = StartInfo::new_zeroed();
                let mut view = GuestView { mem: &mut mem, frames: &sys.frames, domain: id, root: d.vcpu.kernel_root };
                view.read(GuestSlice::new(d.vcpu.regs.rdi, core::mem::size_of::<StartInfo>() as u64), si.as_mut_bytes())
                    .expect("the start-info page is readable");
                Knowledge { si, initial_frames: d.frames.clone() }
            }));
            sys.add_domain(d);
        }
        let mut regs = GuestRegs::default();
        let mut console = String::new();
        let next = sys.start(&mut Platform { mem: &mut mem, console: &mut console, tsc: boot_tsc }, &mut regs);
        Lifetime { rng, sys, mem, regs, tsc: boot_tsc, next, knows, console }
    }

    /// One step: the running domain acts, or the timer fires. Pushes the
    /// step to `history` before the system sees it.
    fn step(&mut self, step: u64, history: &mut History, counts: &mut Counts) -> Result<(), Violation> {
        if self.next == Next::Idle {
            // The kernel halts until the platform timer, armed for the next deadline.
            let deadline = self.sys.next_deadline().ok_or("the system idles with no deadline to wake at")?;
            self.tsc = self.tsc.max(deadline);
            history.push(Record { step, tsc: self.tsc, domain: None, op: Op::Wake, next: None });
            counts.wakes += 1;
            return self.timer_at_deadline(history);
        }
        let id = self.sys.current_id().ok_or_else(|| format!("{:?}, but no domain runs", self.next))?;
        // (Saturating: a guest may ask for a timer at the end of time, and
        // the system idles until then.)
        self.tsc = self.tsc.saturating_add(match self.rng.below(10) {
            0..=5 => self.rng.below(2_000),
            6..=8 => self.rng.below(200_000),
            _ => self.rng.below(2 * SLICE_NS),
        });
        let d = &self.sys.domains[usize::from(id.0)];
        let (emulated, kernel_mode, floor) = (d.vm.is_some(), d.vcpu.kernel_mode, d.vcpu.bench_floor);
        let roll = self.rng.below(100);
        let (tsc, domain) = (self.tsc, Some(id.0));
        let stamp = |op| Record { step, tsc, domain, op, next: None };
        if emulated {
            let entry = match roll {
                0..65 => {
                    let (vector, error_code, cr2) = steps::emulated_exit(&mut self.rng, &self.sys, &mut self.mem, id, &mut self.regs);
                    self.trap(vector, error_code, cr2, counts)
                }
                65..75 => {
                    self.regs.vector = VECTOR_SYSCALL;
                    counts.syscalls += 1;
                    Entry::Syscall
                }
                _ => return self.tick(stamp, history, counts),
            };
            history.push(stamp(self.op(entry, None)));
            return self.enter(entry, history);
        }
        let knows = self.knows[usize::from(id.0)].as_ref().expect("a paravirtualized domain");
        let mut guest = Guest { rng: &mut self.rng, sys: &self.sys, mem: &mut self.mem, id, knows, now_ns: self.sys.time.now_ns(self.tsc) };
        // On the floor path a `syscall` never reaches the hypervisor: only
        // exceptions (the closing `int3` first of all) and the timer do.
        let (hypercall, exception, tick) = match (floor, kernel_mode) {
            (true, _) => (0, 60, 90),
            (false, true) => (80, 83, 93),
            (false, false) => (40, 65, 85),
        };
        let entry = if roll < hypercall && kernel_mode {
            let call = guest.hypercall();
            return self.hypercall(call, id, stamp, history, counts);
        } else if roll < hypercall {
            // A system call of its user mode, for its kernel: through the
            // user door, or (as the kernel may also call it) the hypercall one.
            self.regs.rax = guest.value();
            self.regs.vector = VECTOR_SYSCALL;
            counts.syscalls += 1;
            if guest.rng.chance(1, 4) {
                Entry::Syscall
            } else {
                Entry::UserDoor
            }
        } else if roll < exception {
            let (vector, error_code, cr2, rip) = guest.exception();
            self.regs.rip = rip;
            if guest.rng.chance(1, 2) {
                self.regs.rsp = guest.stack_pointer();
            }
            let vector = if floor && roll < 40 { 3 } else { vector };
            self.trap(vector, error_code, cr2, counts)
        } else if roll < tick {
            return self.tick(stamp, history, counts);
        } else {
            let (va, value) = guest.store();
            counts.stores += 1;
            history.push(stamp(Op::Store { va, value }));
            return Ok(());
        };
        history.push(stamp(self.op(entry, None)));
        self.enter(entry, history)
    }

    /// The platform timer fires: now, or (half the time, as the kernel
    /// arms it) at the next deadline if that comes within a few slices.
    fn tick(&mut self, stamp: impl Fn(Op) -> Record, history: &mut History, counts: &mut Counts) -> Result<(), Violation> {
        counts.ticks += 1;
        let soon = self.tsc.saturating_add(self.sys.time.clock.ticks(4 * SLICE_NS));
        match self.sys.next_deadline() {
            Some(deadline) if deadline <= soon && self.rng.chance(1, 2) => {
                self.tsc = self.tsc.max(deadline);
                history.push(stamp(Op::Timer));
                self.timer_at_deadline(history)
            }
            _ => {
                history.push(stamp(Op::Timer));
                self.enter(Entry::Timer, history)
            }
        }
    }

    /// The platform timer fires at (or after) the deadline the system asked
    /// for: whatever was due must happen then, so that the next deadline is
    /// later; otherwise the kernel would arm the timer for the same past
    /// instant again and again.
    fn timer_at_deadline(&mut self, history: &mut History) -> Result<(), Violation> {
        let at = self.tsc;
        self.enter(Entry::Timer, history)?;
        match self.sys.next_deadline() {
            // (`u64::MAX`: a deadline past what the TSC can count, which it never reaches.)
            Some(again) if again <= at && again != u64::MAX => Err(format!(
                "the platform timer fired at TSC {at}, at or after the deadline it was armed for, and the next deadline is TSC {again}: what was due did not happen"
            )),
            _ => Ok(()),
        }
    }

    /// Sets up the frame of an exception.
    fn trap(&mut self, vector: u64, error_code: u64, cr2: u64, counts: &mut Counts) -> Entry {
        (self.regs.vector, self.regs.error_code) = (vector, error_code);
        counts.exceptions += 1;
        Entry::Exception { cr2 }
    }

    /// What an entry is, for the history.
    fn op(&self, entry: Entry, call: Option<&Call>) -> Op {
        let r = &self.regs;
        match (entry, call) {
            (Entry::Syscall, Some(c)) => Op::Hypercall {
                name: Hypercall::try_from(c.number).map_or("unknown", Hypercall::name),
                number: c.number,
                args: [r.rdi, r.rsi, r.rdx, r.r10],
                rsp: r.rsp,
                built: c.built,
            },
            (Entry::Syscall | Entry::UserDoor, _) => Op::Syscall { number: r.rax, rip: r.rip },
            (Entry::Exception { cr2 }, _) => Op::Exception { vector: r.vector, error_code: r.error_code, cr2, rip: r.rip, rsp: r.rsp },
            (Entry::Timer, _) => Op::Timer,
        }
    }

    /// The kernel mode's hypercall `call`, and the check of its result.
    fn hypercall(
        &mut self,
        call: Call,
        id: DomainId,
        stamp: impl Fn(Op) -> Record,
        history: &mut History,
        counts: &mut Counts,
    ) -> Result<(), Violation> {
        let a = call.args;
        let r = &mut self.regs;
        (r.vector, r.rax, r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (VECTOR_SYSCALL, call.number, a[0], a[1], a[2], a[3], a[4], a[5]);
        if let Some(rsp) = call.rsp {
            r.rsp = rsp;
        }
        history.push(stamp(self.op(Entry::Syscall, Some(&call))));
        counts.hypercalls += 1;
        self.enter(Entry::Syscall, history)?;
        self.check_result(id, &call, counts)
    }

    /// Enters the system as the kernel would, and checks the entry's answer.
    fn enter(&mut self, entry: Entry, history: &mut History) -> Result<(), Violation> {
        let mut p = Platform { mem: &mut self.mem, console: &mut self.console, tsc: self.tsc };
        let next = match entry {
            Entry::Syscall => self.sys.on_hypercall(&mut p, &mut self.regs),
            Entry::UserDoor => self.sys.on_user_syscall(&mut p, &mut self.regs),
            Entry::Exception { cr2 } => self.sys.on_guest_exception(&mut p, &mut self.regs, cr2),
            Entry::Timer => self.sys.on_timer(&mut p, &mut self.regs),
        };
        history.answered(next);
        self.next = next;
        self.console.clear();
        invariants::next_agrees(&self.sys, next)
    }

    /// A hypercall's result, when the caller still runs in kernel mode to
    /// see it: one of the errors the ABI lists for the call; and for a
    /// batch of calls that only answer, each entry's result likewise.
    fn check_result(&mut self, id: DomainId, call: &Call, counts: &mut Counts) -> Result<(), Violation> {
        let d = &self.sys.domains[usize::from(id.0)];
        if call.number == Hypercall::Iret as u64 || self.sys.current_id() != Some(id) || !d.vcpu.kernel_mode {
            return Ok(());
        }
        let result = decode_result(self.regs.rax);
        counts.failed_hypercalls += u64::from(result.is_err());
        if !documented(call.number, result) {
            return Err(format!("hypercall {} returned {result:?}, which the ABI does not list for it", call.number));
        }
        let (Some((at, ops)), Ok(_)) = (&call.answers_at, result) else { return Ok(()) };
        let mut view = GuestView { mem: &mut self.mem, frames: &self.sys.frames, domain: id, root: d.root() };
        for (i, &op) in ops.iter().enumerate() {
            let mut entry = MulticallEntry::new_zeroed();
            let read = view.read(GuestSlice::new(at + 64 * i as u64, 64), entry.as_mut_bytes());
            if read.is_err() || entry.op != op {
                continue; // the guest's write of the array did not go in
            }
            let result = decode_result(entry.result);
            if !documented(op, result) && result != Err(HypercallError::BadArgument) {
                return Err(format!("multicall entry {i} (hypercall {op}) returned {result:?}, which the ABI does not list for it"));
            }
        }
        Ok(())
    }

    /// Whether the lifetime is over: every domain has ended, or all that
    /// are left wait for a deadline past what the TSC can count (the
    /// machine would idle for centuries).
    fn is_over(&self) -> bool {
        match self.next {
            Next::Finished { .. } => true,
            Next::Idle => self.sys.next_deadline() == Some(u64::MAX),
            _ => false,
        }
    }

    /// Counts how the domains of a finished lifetime ended.
    fn count_endings(&self, counts: &mut Counts) {
        for d in &self.sys.domains {
            match d.ending {
                Some(Ending::Exited(_)) => counts.exits += 1,
                Some(Ending::Crashed(_)) => counts.crashes += 1,
                Some(Ending::TimeLimit) => counts.time_limits += 1,
                None => {}
            }
        }
    }
}

/// Whether `result` is one hypercall `number` may return: a value, or one
/// of its errors ([`Hypercall::errors`]; `UnknownHypercall` for a number
/// that is no hypercall).
fn documented(number: u64, result: Result<u64, HypercallError>) -> bool {
    match (Hypercall::try_from(number), result) {
        (Err(_), r) => r == Err(HypercallError::UnknownHypercall),
        (Ok(_), Ok(_)) => true,
        (Ok(call), Err(e)) => call.errors().contains(&e),
    }
}

/// A failed run: where, why, and how to replay it.
struct Failure {
    seed: u64,
    step: u64,
    lifetime: u64,
    lifetime_step: u64,
    why: String,
    history: History,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "fuzz_system: step {} of the run seeded {:#x} (lifetime {}, its step {}): {}",
            self.step, self.seed, self.lifetime, self.lifetime_step, self.why
        )?;
        writeln!(f, "the last {} steps, oldest first (numbers in hexadecimal):", self.history.0.len())?;
        for r in &self.history.0 {
            writeln!(f, "  {r:x?}")?;
        }
        write!(
            f,
            "replay: PARVUS_FUZZ_SEED={:#x} PARVUS_FUZZ_CASE={} cargo test -p parvus-core fuzz_system -- --nocapture",
            self.seed, self.lifetime
        )
    }
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("(a panic without a message)"))
}

/// Runs `steps` steps from `seed`, lifetime after lifetime; or, with
/// `only`, that one lifetime until it ends (or `steps` run out).
fn run(seed: u64, steps: u64, only: Option<u64>) -> Result<Counts, Box<Failure>> {
    let mut counts = Counts { lifetimes: 1, ..Counts::default() };
    let mut history = History::default();
    let (mut lifetime, mut lifetime_start) = (only.unwrap_or(0), 0);
    let mut life = Lifetime::new(Rng::for_case(seed, lifetime));
    for step in 0..steps {
        if life.is_over() {
            life.count_endings(&mut counts);
            if only.is_some() {
                break;
            }
            (lifetime, lifetime_start) = (lifetime + 1, step);
            counts.lifetimes += 1;
            life = Lifetime::new(Rng::for_case(seed, lifetime));
        }
        counts.steps += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            life.step(step, &mut history, &mut counts)?;
            invariants::check_all(&life.sys, &life.mem)
        }));
        let why = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(violation)) => violation,
            Err(payload) => format!("panicked: {}", panic_text(&*payload)),
        };
        let lifetime_step = step - lifetime_start;
        return Err(Box::new(Failure { seed, step, lifetime, lifetime_step, why, history }));
    }
    Ok(counts)
}

/// A million random hypercalls, exceptions, timer ticks and guest stores
/// from random domains, over thousands of lifetimes of the system, every
/// invariant recomputed after each step. `PARVUS_FUZZ_SEED` and
/// `PARVUS_FUZZ_STEPS` choose another run; a failure prints the command
/// that replays it, such as
/// `PARVUS_FUZZ_SEED=0x... PARVUS_FUZZ_CASE=<lifetime> cargo test -p parvus-core fuzz_system -- --nocapture`.
#[test]
fn fuzz_system() {
    let (seed, only) = (fuzz::seed(), fuzz::from_env("CASE"));
    let steps = fuzz::from_env("STEPS").unwrap_or(DEFAULT_STEPS);
    let started = std::time::Instant::now();
    let counts = run(seed, steps, only).unwrap_or_else(|failure| panic!("{failure}"));
    println!("fuzz_system: seed {seed:#x}, {:.1?}: {counts:?}", started.elapsed());
}
