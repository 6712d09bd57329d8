//! [`Kernel`]: processes, system calls, demand paging and the scheduler,
//! written once for every build.
//!
//! The kernel is a loop. It picks a process, makes its address space
//! active, and asks the platform to run it until its next trap, which
//! comes back as a value ([`Trap`]). It handles the trap (a system call,
//! a page fault, the timer tick, a fault that kills the process) and goes
//! round again. Nothing interrupts the kernel itself: interrupts reach it
//! only as traps out of user mode, so it needs no locks and no interrupt
//! handlers.
//!
//! Scheduling is round-robin over the process table: `yield`, `exit`, a
//! blocking `wait` and the timer tick move on to the next runnable process
//! after the current one. An exited process's memory is freed only once
//! another address space is active, so a platform never tears down the
//! tables it is running on.

use core::fmt::{self, Write};

use crate::context::UserContext;
use crate::layout::{MMAP_MAX_PAGES, PAGE_SIZE, STACK_PAGES, STACK_TOP, USER};
use crate::ops::{Op, Outcome};
use crate::platform::{Platform, PlatformError, Trap};
use crate::process::{Process, Region, RegionKind, Regions, State, MAX_REGIONS};
use crate::syscall;
use crate::user::Entry;

/// Most processes alive at once (a `fork` parent and its child, or the two
/// `switch` processes, need two).
pub const MAX_PROCESSES: usize = 4;

/// Most address spaces the kernel holds at once: one per process, and one
/// per exited process not yet reaped. A platform sizes its bookkeeping by it.
pub const MAX_SPACES: usize = 2 * MAX_PROCESSES;

/// The exit status of a killed process.
pub const KILLED: u64 = 0xdead_dead;

/// An exited process's address space and regions, freed at the next switch.
struct Corpse<S> {
    space: S,
    regions: Regions,
}

/// What the kernel counts while an operation runs.
#[derive(Default)]
struct OpStats {
    /// `(result, ticks)` from the measuring program's `report`.
    report: Option<(u64, u64)>,
    /// `yield` calls served.
    yields: u64,
    /// Demand-zero faults served in `mmap` regions.
    demand_faults: u64,
    /// Processes created.
    processes: u64,
    /// Failures reported so far (a `FAILED` line was printed for each).
    failures: u64,
}

/// One console line being formatted (the kernel has no heap; a longer
/// line is cut).
struct Line {
    bytes: [u8; 200],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl Line {
    fn as_str(&self) -> &str {
        // Cutting a line may split a UTF-8 sequence: keep the valid prefix.
        match core::str::from_utf8(&self.bytes[..self.len]) {
            Ok(text) => text,
            Err(e) => core::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

/// Runs the workload as `cmdline` asks (see [`crate::cmdline`]) and
/// returns the exit status: 0 if every operation printed `ok`.
pub fn run<P: Platform>(platform: &mut P, loader: &str, cmdline: &str) -> u64 {
    let mut kernel = Kernel::new(platform);
    kernel.say(format_args!("workload: loaded by {loader}"));
    let mut failed = 0;
    match crate::cmdline::parse(cmdline) {
        Ok(settings) => {
            for op in settings.ops() {
                if !kernel.run_op(op, settings.iterations(op)) {
                    failed += 1;
                }
            }
        }
        Err(e) => {
            kernel.say(format_args!("workload: FAILED command line: {e}"));
            failed += 1;
        }
    }
    kernel.say(format_args!("workload: all done"));
    u64::from(failed != 0)
}

/// The kernel's state (see the module docs).
pub struct Kernel<'p, P: Platform> {
    platform: &'p mut P,
    /// The process table.
    procs: [Option<Process<P::Space>>; MAX_PROCESSES],
    /// The registers of the process in each slot of `procs` (a separate
    /// table: a context is 672 bytes, and under `-icount` every byte a
    /// `memcpy` moves counts as an instruction, so contexts never move;
    /// only `fork` copies one).
    contexts: [UserContext; MAX_PROCESSES],
    /// Slot of the process to run next (`None`: nothing can run).
    current: Option<usize>,
    /// Id of the process whose space is active.
    active: Option<u64>,
    /// Exited processes' memory, freed after the next switch.
    graveyard: [Option<Corpse<P::Space>>; MAX_PROCESSES],
    /// The id the next process gets.
    next_pid: u64,
    /// The operation running.
    op: Op,
    stats: OpStats,
}

impl<'p, P: Platform> Kernel<'p, P> {
    /// A kernel with no process, on `platform`.
    pub fn new(platform: &'p mut P) -> Self {
        Kernel {
            platform,
            procs: [const { None }; MAX_PROCESSES],
            contexts: [UserContext::new(0, STACK_TOP, 0, 0); MAX_PROCESSES],
            current: None,
            active: None,
            graveyard: [const { None }; MAX_PROCESSES],
            next_pid: 1,
            op: Op::Syscall,
            stats: OpStats::default(),
        }
    }

    /// Prints one line.
    fn say(&mut self, args: fmt::Arguments<'_>) {
        let mut line = Line { bytes: [0; 200], len: 0 };
        let _ = writeln!(line, "{args}");
        self.platform.console_write(line.as_str());
    }

    /// Prints a `FAILED` line for the running operation and counts it.
    fn fail(&mut self, args: fmt::Arguments<'_>) {
        self.stats.failures += 1;
        let name = self.op.name();
        self.say(format_args!("workload: {name} FAILED {args}"));
    }

    /// Runs one operation to the end and prints its result and
    /// measurement; returns whether it was right.
    pub fn run_op(&mut self, op: Op, n: u64) -> bool {
        self.op = op;
        self.stats = OpStats::default();
        self.next_pid = 1;
        for &(entry, arg) in op.programs() {
            if let Err(e) = self.spawn(entry, n, arg) {
                self.fail(format_args!("starting a process: {e}"));
            }
        }
        self.current = self.procs.iter().position(|p| p.is_some());
        while let Some(slot) = self.current {
            self.switch_to(slot);
            let trap = self.platform.run_user(&mut self.contexts[slot]);
            self.handle(slot, trap);
        }
        self.clean_up_stuck();
        self.platform.deactivate();
        self.active = None;
        self.reap();
        self.conclude(op, n)
    }

    /// Checks the operation's result and prints its two lines.
    fn conclude(&mut self, op: Op, n: u64) -> bool {
        let Some((result, ticks)) = self.stats.report else {
            self.fail(format_args!("no result reported"));
            return false;
        };
        let expected = op.expected(n);
        if result != expected {
            self.fail(format_args!("result {result:#x}, expected {expected:#x}"));
        }
        if self.stats.failures != 0 {
            return false;
        }
        let outcome = Outcome {
            op,
            n,
            result,
            yields: self.stats.yields,
            demand_faults: self.stats.demand_faults,
            processes: self.stats.processes,
        };
        let name = op.name();
        self.say(format_args!("workload: {name} ok {outcome}"));
        self.say(format_args!("workload: bench {name} n={n} tsc={ticks}"));
        true
    }

    /// Ends processes left when nothing can run (all waiting: a bug in a
    /// program), so the next operation starts clean.
    fn clean_up_stuck(&mut self) {
        for slot in 0..MAX_PROCESSES {
            if let Some(process) = self.procs[slot].take() {
                let (pid, state) = (process.pid, process.state);
                self.fail(format_args!("pid {pid} left {state:?} when nothing could run"));
                if let Some(space) = process.space {
                    self.bury(space, process.regions);
                }
            }
        }
    }

    /// Creates a process running `entry(arg0, arg1)` with a fresh stack.
    fn spawn(&mut self, entry: Entry, arg0: u64, arg1: u64) -> Result<(), PlatformError> {
        let slot = self.free_slot().ok_or(PlatformError::TooManyTables)?;
        let space = self.platform.new_space()?;
        let mut regions = [None; MAX_REGIONS];
        regions[0] = Some(Region { start: STACK_TOP - STACK_PAGES * PAGE_SIZE, pages: STACK_PAGES, kind: RegionKind::Stack });
        let pid = self.take_pid();
        self.procs[slot] = Some(Process {
            pid,
            parent: None,
            state: State::Runnable,
            space: Some(space),
            regions,
            mmap_next: crate::layout::MMAP_BASE,
        });
        self.contexts[slot] = UserContext::new(entry as usize as u64, STACK_TOP, arg0, arg1);
        Ok(())
    }

    fn free_slot(&self) -> Option<usize> {
        self.procs.iter().position(|p| p.is_none())
    }

    fn take_pid(&mut self) -> u64 {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.stats.processes += 1;
        pid
    }

    fn process(&mut self, slot: usize) -> &mut Process<P::Space> {
        self.procs[slot].as_mut().expect("a live slot")
    }

    /// Makes `slot`'s space active (if it is not) and frees the memory of
    /// processes that exited, now that their spaces are not active.
    fn switch_to(&mut self, slot: usize) {
        let process = self.procs[slot].as_ref().expect("a live slot");
        if self.active != Some(process.pid) {
            self.platform.activate(process.space.as_ref().expect("a runnable process has its space"));
            self.active = Some(process.pid);
        }
        self.reap();
    }

    /// The next runnable process after `slot` in table order, `slot`
    /// itself if it is the only one.
    fn next_runnable_after(&self, slot: usize) -> Option<usize> {
        (1..=MAX_PROCESSES)
            .map(|k| (slot + k) % MAX_PROCESSES)
            .find(|&s| self.procs[s].as_ref().is_some_and(|p| p.state == State::Runnable))
    }

    fn handle(&mut self, slot: usize, trap: Trap) {
        match trap {
            Trap::Syscall => self.syscall(slot),
            Trap::PageFault { address, present, write } => self.page_fault(slot, address, present, write),
            Trap::Timer => self.current = self.next_runnable_after(slot),
            Trap::Fault { vector, error_code } => {
                let rip = self.contexts[slot].regs.rip;
                self.kill(slot, format_args!("exception {vector} (error code {error_code:#x}) at rip {rip:#x}"));
            }
        }
    }

    fn syscall(&mut self, slot: usize) {
        let (number, [a0, a1, _]) = self.contexts[slot].syscall_args();
        let result = match number {
            syscall::GETPID => self.process(slot).pid,
            syscall::EXIT => {
                let process = self.process(slot);
                if process.parent.is_none() && a0 != 0 {
                    let pid = process.pid;
                    self.fail(format_args!("pid {pid} exited with status {a0:#x}"));
                }
                return self.exit(slot, a0);
            }
            syscall::YIELD => {
                self.stats.yields += 1;
                self.contexts[slot].set_return(0);
                self.current = self.next_runnable_after(slot);
                return;
            }
            syscall::FORK => self.fork(slot),
            syscall::WAIT => match self.wait(slot) {
                Some(status) => status,
                None => return,
            },
            syscall::MMAP => self.mmap(slot, a0),
            syscall::MUNMAP => self.munmap(slot, a0, a1),
            syscall::REPORT => {
                self.stats.report = Some((a0, a1));
                0
            }
            _ => syscall::ERROR,
        };
        self.contexts[slot].set_return(result);
        self.current = Some(slot);
    }

    /// Ends the process in `slot` with `status`: its memory goes to the
    /// graveyard, its parent gets the status (now if it waits, else it
    /// stays a zombie), its children lose their parent.
    fn exit(&mut self, slot: usize, status: u64) {
        let (pid, parent, space, regions) = {
            let p = self.process(slot);
            (p.pid, p.parent, p.space.take(), p.regions)
        };
        if let Some(space) = space {
            self.bury(space, regions);
        }
        for other in self.procs.iter_mut() {
            if let Some(child) = other.as_mut().filter(|c| c.parent == Some(pid)) {
                if matches!(child.state, State::Zombie(_)) {
                    *other = None;
                } else {
                    child.parent = None;
                }
            }
        }
        let parent_slot = parent.and_then(|ppid| self.procs.iter().position(|p| p.as_ref().is_some_and(|p| p.pid == ppid)));
        match parent_slot {
            Some(ps) if self.process(ps).state == State::Waiting => {
                self.contexts[ps].set_return(status);
                self.process(ps).state = State::Runnable;
                self.procs[slot] = None;
            }
            Some(_) => self.process(slot).state = State::Zombie(status),
            None => self.procs[slot] = None,
        }
        self.current = self.next_runnable_after(slot);
    }

    /// Kills the process in `slot`, saying why.
    fn kill(&mut self, slot: usize, what: fmt::Arguments<'_>) {
        let pid = self.process(slot).pid;
        self.fail(format_args!("pid {pid} killed: {what}"));
        self.exit(slot, KILLED);
    }

    /// Keeps an exited process's memory until its space is not active.
    fn bury(&mut self, space: P::Space, regions: Regions) {
        let grave = self.graveyard.iter_mut().find(|g| g.is_none()).expect("one grave per process");
        *grave = Some(Corpse { space, regions });
    }

    /// Frees the memory of buried processes (their spaces are not active).
    fn reap(&mut self) {
        for grave in 0..MAX_PROCESSES {
            if let Some(corpse) = self.graveyard[grave].take() {
                free_memory(self.platform, corpse.space, &corpse.regions);
            }
        }
    }

    /// `fork()`: a child with a copy of every page the parent has, the
    /// parent's registers, and 0 as its result.
    fn fork(&mut self, slot: usize) -> u64 {
        let Some(child_slot) = self.free_slot() else { return syscall::ERROR };
        let Ok(mut space) = self.platform.new_space() else { return syscall::ERROR };
        let parent = self.procs[slot].as_ref().expect("a live slot");
        let parent_space = parent.space.as_ref().expect("a running process has its space");
        if copy_memory(self.platform, parent_space, &mut space, &parent.regions).is_err() {
            let regions = parent.regions;
            free_memory(self.platform, space, &regions);
            return syscall::ERROR;
        }
        let (parent_pid, regions, mmap_next) = (parent.pid, parent.regions, parent.mmap_next);
        let pid = self.take_pid();
        self.procs[child_slot] = Some(Process {
            pid,
            parent: Some(parent_pid),
            state: State::Runnable,
            space: Some(space),
            regions,
            mmap_next,
        });
        self.contexts[child_slot] = self.contexts[slot];
        self.contexts[child_slot].set_return(0);
        pid
    }

    /// `wait()`: a zombie child's status at once, or `None` after blocking
    /// the caller until a child exits (`exit` then hands it the status).
    fn wait(&mut self, slot: usize) -> Option<u64> {
        let pid = self.process(slot).pid;
        let mut has_child = false;
        for other in self.procs.iter_mut() {
            if let Some(child) = other.as_ref().filter(|c| c.parent == Some(pid)) {
                if let State::Zombie(status) = child.state {
                    *other = None;
                    return Some(status);
                }
                has_child = true;
            }
        }
        if !has_child {
            return Some(syscall::ERROR);
        }
        self.process(slot).state = State::Waiting;
        self.current = self.next_runnable_after(slot);
        None
    }

    /// `mmap(pages)`: reserves a region after the last one, leaving one
    /// unmapped guard page between regions.
    fn mmap(&mut self, slot: usize, pages: u64) -> u64 {
        let process = self.process(slot);
        let start = process.mmap_next;
        let fits = (1..=MMAP_MAX_PAGES).contains(&pages) && start + pages * PAGE_SIZE <= USER.end;
        if !fits || !process.add_region(Region { start, pages, kind: RegionKind::Mmap }) {
            return 0;
        }
        process.mmap_next = start + (pages + 1) * PAGE_SIZE;
        start
    }

    /// `munmap(start, pages)`: unmaps and frees an `mmap` region's pages;
    /// if it was the last region, its addresses are handed out again.
    fn munmap(&mut self, slot: usize, start: u64, pages: u64) -> u64 {
        let process = self.procs[slot].as_mut().expect("a live slot");
        let Some(region) = process.remove_mmap(start, pages) else { return syscall::ERROR };
        if region.end() + PAGE_SIZE == process.mmap_next {
            process.mmap_next = region.start;
        }
        let space = process.space.as_mut().expect("a running process has its space");
        for va in region.page_addresses() {
            if let Some(frame) = self.platform.unmap(space, va) {
                self.platform.free_frame(frame);
            }
        }
        0
    }

    /// A page fault: the first touch of a region page gets a zeroed frame;
    /// anything else kills the process.
    fn page_fault(&mut self, slot: usize, address: u64, present: bool, write: bool) {
        let access = if write { "write" } else { "read" };
        let process = self.procs[slot].as_mut().expect("a live slot");
        let Some(region) = process.region_of(address) else {
            return self.kill(slot, format_args!("{access} page fault at {address:#x}, outside its memory"));
        };
        if present {
            return self.kill(slot, format_args!("{access} page fault at {address:#x}, a protection violation"));
        }
        let Some(frame) = self.platform.alloc_frame() else {
            return self.kill(slot, format_args!("page fault at {address:#x}: out of memory"));
        };
        self.platform.zero_frame(frame);
        let space = process.space.as_mut().expect("a running process has its space");
        if let Err(e) = self.platform.map(space, address & !(PAGE_SIZE - 1), frame) {
            self.platform.free_frame(frame);
            return self.kill(slot, format_args!("page fault at {address:#x}: {e}"));
        }
        if region.kind == RegionKind::Mmap {
            self.stats.demand_faults += 1;
        }
        // Returning retries the access, which now succeeds.
        self.current = Some(slot);
    }
}

/// Gives to `child` a copy of each page `parent` has mapped in `regions`.
/// On failure the pages copied so far stay mapped in `child`.
fn copy_memory<P: Platform>(
    platform: &mut P,
    parent: &P::Space,
    child: &mut P::Space,
    regions: &Regions,
) -> Result<(), PlatformError> {
    for region in regions.iter().flatten() {
        for va in region.page_addresses() {
            let Some(source) = platform.translate(parent, va) else { continue };
            let copy = platform.alloc_frame().ok_or(PlatformError::OutOfFrames)?;
            platform.copy_frame(copy, source);
            if let Err(e) = platform.map(child, va, copy) {
                platform.free_frame(copy);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Unmaps and frees every page of `regions` in `space` (not active), then
/// destroys the space.
fn free_memory<P: Platform>(platform: &mut P, mut space: P::Space, regions: &Regions) {
    for region in regions.iter().flatten() {
        for va in region.page_addresses() {
            if let Some(frame) = platform.unmap(&mut space, va) {
                platform.free_frame(frame);
            }
        }
    }
    platform.destroy_space(space);
}

#[cfg(test)]
mod tests;
