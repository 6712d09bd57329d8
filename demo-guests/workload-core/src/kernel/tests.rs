//! The kernel logic on the host, on a mock platform.
//!
//! [`Mock`] keeps frames and address spaces in plain Rust collections and
//! plays the seven user programs itself: each is a small state machine
//! whose state lives in the process's registers (`r15` is its program
//! counter), so `fork` copies it like real registers, and whose memory
//! accesses go through the active address space, raising a page fault on
//! an unmapped page exactly as the MMU would (the access is retried after
//! the kernel maps it). A timer tick can be injected every few traps, to
//! check that ticks never change a result.

use std::collections::BTreeMap;

use super::*;
use crate::layout::PAGE_WORDS;
use crate::ops::Op;
use crate::user::programs;
use crate::work::{self, APP_PAGES, MMAP_ROUND_PAGES};

/// A program's entry address, which identifies it in the mock.
fn at(program: Entry) -> u64 {
    program as usize as u64
}

/// A mock address space: its id in [`Mock::spaces`].
#[derive(Debug)]
struct MockSpace(usize);

#[derive(Default)]
struct Mock {
    /// Frame contents; a frame is an index.
    frames: Vec<[u64; 512]>,
    free: Vec<usize>,
    /// Each space's pages (`None` once destroyed).
    spaces: Vec<Option<BTreeMap<u64, usize>>>,
    active: Option<usize>,
    output: String,
    /// Inject a timer tick every this many entries into user mode (0: never).
    tick_every: u64,
    entries: u64,
    /// Frames in use: allocated and not freed.
    in_use: i64,
    /// Give up on `alloc_frame` after this many frames in use.
    frame_limit: i64,
}

/// What one step of a mock program does.
enum Step {
    /// Go on at this program counter.
    Next(u64),
    /// Trap (the program counter already points past it, or at the retry).
    Trap(Trap),
}

impl Mock {
    fn new() -> Mock {
        Mock { frame_limit: i64::MAX, ..Mock::default() }
    }

    fn active_pages(&mut self) -> &mut BTreeMap<u64, usize> {
        let id = self.active.expect("user mode runs in an active space");
        self.spaces[id].as_mut().expect("the active space exists")
    }

    /// Reads word `va` of the active space, or the page fault it raises.
    fn load(&mut self, va: u64) -> Result<u64, Trap> {
        let page = va & !(PAGE_SIZE - 1);
        match self.active_pages().get(&page).copied() {
            Some(f) => Ok(self.frames[f][((va - page) / 8) as usize]),
            None => Err(Trap::PageFault { address: va, present: false, write: false }),
        }
    }

    fn store(&mut self, va: u64, value: u64) -> Result<(), Trap> {
        let page = va & !(PAGE_SIZE - 1);
        match self.active_pages().get(&page).copied() {
            Some(f) => {
                self.frames[f][((va - page) / 8) as usize] = value;
                Ok(())
            }
            None => Err(Trap::PageFault { address: va, present: false, write: true }),
        }
    }

    /// Sets up a system call and moves on to `next`.
    fn call(c: &mut UserContext, number: u64, args: [u64; 3], next: u64) -> Step {
        c.regs.rax = number;
        (c.regs.rdi, c.regs.rsi, c.regs.rdx) = (args[0], args[1], args[2]);
        c.regs.r15 = next;
        Step::Trap(Trap::Syscall)
    }

    /// One step of the program at `c.regs.rip` (registers: r15 program
    /// counter, r12 loop index, r13 accumulator, r14 region base, rbx
    /// second accumulator; rdi/rsi hold the arguments at entry and are
    /// copied to rbp (n) and r8 (second argument) first).
    fn step(&mut self, c: &mut UserContext) -> Step {
        let r = &mut c.regs;
        if r.r15 == 0 {
            (r.rbp, r.r8, r.r15) = (r.rdi, r.rsi, 1);
            // The entry's first push touches the stack, like compiled code.
            if let Err(t) = self.store(r.rsp - 8, 0) {
                r.r15 = 0;
                return Step::Trap(t);
            }
        }
        let entry = c.regs.rip;
        let n = c.regs.rbp;
        let pc = c.regs.r15;
        let region_word = |c: &UserContext, index: u64| c.regs.r14 + index * 8;
        if entry == at(programs::syscall_loop) {
            match pc {
                1 if c.regs.r12 < n => Self::call(c, syscall::GETPID, [0; 3], 2),
                1 => Self::call(c, syscall::REPORT, [c.regs.r13, 1, 0], 3),
                2 => {
                    c.regs.r13 += c.regs.rax;
                    c.regs.r12 += 1;
                    Step::Next(1)
                }
                _ => Self::call(c, syscall::EXIT, [0; 3], 99),
            }
        } else if entry == at(programs::fork_loop) {
            match pc {
                1 => Self::call(c, syscall::MMAP, [1, 0, 0], 2),
                2 => {
                    c.regs.r14 = c.regs.rax;
                    Step::Next(3)
                }
                3 if c.regs.r12 < n => match self.store(region_word(c, 0), c.regs.r12) {
                    Ok(()) => Self::call(c, syscall::FORK, [0; 3], 4),
                    Err(t) => Step::Trap(t),
                },
                3 => Self::call(c, syscall::REPORT, [c.regs.r13, 1, 0], 98),
                4 if c.regs.rax == 0 => match self.load(region_word(c, 0)) {
                    Ok(v) => match self.store(region_word(c, 0), !v) {
                        Ok(()) => Self::call(c, syscall::EXIT, [work::mix(v), 0, 0], 99),
                        Err(t) => Step::Trap(t),
                    },
                    Err(t) => Step::Trap(t),
                },
                4 => Self::call(c, syscall::WAIT, [0; 3], 5),
                5 => {
                    c.regs.rbx = c.regs.rax;
                    match self.load(region_word(c, 0)) {
                        Ok(v) => {
                            let leak = u64::from(v != c.regs.r12);
                            c.regs.r13 = work::fold(c.regs.r13, c.regs.rbx) ^ leak;
                            c.regs.r12 += 1;
                            Step::Next(3)
                        }
                        Err(t) => Step::Trap(t),
                    }
                }
                98 => Self::call(c, syscall::MUNMAP, [c.regs.r14, 1, 0], 99),
                _ => Self::call(c, syscall::EXIT, [0; 3], 100),
            }
        } else if entry == at(programs::switch_loop) {
            match pc {
                1 if c.regs.r12 < n => {
                    c.regs.r12 += 1;
                    Self::call(c, syscall::YIELD, [0; 3], 1)
                }
                1 if c.regs.r8 == 0 => Self::call(c, syscall::REPORT, [n, 1, 0], 2),
                _ => Self::call(c, syscall::EXIT, [0; 3], 99),
            }
        } else if entry == at(programs::fault_loop) || entry == at(programs::mmap_loop) {
            let one_region = entry == at(programs::fault_loop);
            let (rounds, pages) = if one_region { (1, n) } else { (n, MMAP_ROUND_PAGES) };
            match pc {
                // r12: round, rbx: page within the round.
                1 if c.regs.r12 < rounds => Self::call(c, syscall::MMAP, [pages, 0, 0], 2),
                1 => Self::call(c, syscall::REPORT, [c.regs.r13, 1, 0], 99),
                2 => {
                    (c.regs.r14, c.regs.rbx) = (c.regs.rax, 0);
                    Step::Next(3)
                }
                3 if c.regs.rbx < pages => {
                    let va = region_word(c, c.regs.rbx * PAGE_WORDS);
                    let value = if one_region { c.regs.rbx + 1 } else { c.regs.r12 * pages + c.regs.rbx };
                    match self.load(va).and_then(|old| self.store(va, value).map(|()| old)) {
                        Ok(old) => {
                            c.regs.r13 = c.regs.r13.wrapping_add(value) ^ old;
                            c.regs.rbx += 1;
                            Step::Next(3)
                        }
                        Err(t) => Step::Trap(t),
                    }
                }
                3 => {
                    c.regs.r12 += 1;
                    Self::call(c, syscall::MUNMAP, [c.regs.r14, pages, 0], 1)
                }
                _ => Self::call(c, syscall::EXIT, [0; 3], 100),
            }
        } else if entry == at(programs::app_loop) {
            match pc {
                // r12: round, rbx: page within the round, r13: the state.
                1 => {
                    c.regs.r13 = work::COMPUTE_SEED;
                    Step::Next(2)
                }
                2 if c.regs.r12 < n => Self::call(c, syscall::MMAP, [APP_PAGES, 0, 0], 3),
                2 => Self::call(c, syscall::REPORT, [c.regs.r13, 1, 0], 99),
                3 => {
                    (c.regs.r14, c.regs.rbx) = (c.regs.rax, 0);
                    Step::Next(4)
                }
                4 if c.regs.rbx < APP_PAGES => {
                    let va = region_word(c, c.regs.rbx * PAGE_WORDS);
                    let state = work::app_page(c.regs.r13);
                    match self.load(va).and_then(|old| self.store(va, state).map(|()| old)) {
                        Ok(old) => {
                            c.regs.r13 = state | old;
                            c.regs.rbx += 1;
                            Step::Next(4)
                        }
                        Err(t) => Step::Trap(t),
                    }
                }
                4 => Self::call(c, syscall::GETPID, [0; 3], 5),
                5 => {
                    c.regs.r13 = work::fold(c.regs.r13, c.regs.rax);
                    c.regs.r12 += 1;
                    Self::call(c, syscall::MUNMAP, [c.regs.r14, APP_PAGES, 0], 2)
                }
                _ => Self::call(c, syscall::EXIT, [0; 3], 100),
            }
        } else if entry == at(programs::compute_loop) {
            match pc {
                1 => Self::call(c, syscall::REPORT, [work::expected_compute(n), 1, 0], 2),
                _ => Self::call(c, syscall::EXIT, [0; 3], 99),
            }
        } else {
            panic!("no mock for the program at {entry:#x}")
        }
    }
}

impl Platform for Mock {
    type Space = MockSpace;
    type Frame = usize;

    fn new_space(&mut self) -> Result<MockSpace, PlatformError> {
        self.spaces.push(Some(BTreeMap::new()));
        Ok(MockSpace(self.spaces.len() - 1))
    }

    fn destroy_space(&mut self, space: MockSpace) {
        assert_ne!(self.active, Some(space.0), "destroying the active space");
        let pages = self.spaces[space.0].take().expect("destroyed once");
        assert!(pages.is_empty(), "destroying a space with pages mapped: {pages:x?}");
    }

    fn map(&mut self, space: &mut MockSpace, va: u64, frame: usize) -> Result<(), PlatformError> {
        assert!(USER.contains(&va) && va.is_multiple_of(PAGE_SIZE), "bad user page {va:#x}");
        let old = self.spaces[space.0].as_mut().unwrap().insert(va, frame);
        assert_eq!(old, None, "{va:#x} mapped twice");
        Ok(())
    }

    fn unmap(&mut self, space: &mut MockSpace, va: u64) -> Option<usize> {
        self.spaces[space.0].as_mut().unwrap().remove(&va)
    }

    fn translate(&mut self, space: &MockSpace, va: u64) -> Option<usize> {
        self.spaces[space.0].as_ref().unwrap().get(&va).copied()
    }

    fn activate(&mut self, space: &MockSpace) {
        self.active = Some(space.0);
    }

    fn deactivate(&mut self) {
        self.active = None;
    }

    fn alloc_frame(&mut self) -> Option<usize> {
        if self.in_use >= self.frame_limit {
            return None;
        }
        self.in_use += 1;
        // Fresh frames hold garbage: the kernel must zero what it hands out.
        Some(self.free.pop().unwrap_or_else(|| {
            self.frames.push([0x5a5a_5a5a_5a5a_5a5a; 512]);
            self.frames.len() - 1
        }))
    }

    fn free_frame(&mut self, frame: usize) {
        assert!(!self.free.contains(&frame), "frame {frame} freed twice");
        self.in_use -= 1;
        self.frames[frame] = [0xdead; 512];
        self.free.push(frame);
    }

    fn zero_frame(&mut self, frame: usize) {
        self.frames[frame] = [0; 512];
    }

    fn copy_frame(&mut self, dst: usize, src: usize) {
        self.frames[dst] = self.frames[src];
    }

    fn run_user(&mut self, context: &mut UserContext) -> Trap {
        self.entries += 1;
        if self.tick_every != 0 && self.entries.is_multiple_of(self.tick_every) {
            return Trap::Timer;
        }
        loop {
            match self.step(context) {
                Step::Next(pc) => context.regs.r15 = pc,
                Step::Trap(trap) => return trap,
            }
        }
    }

    fn console_write(&mut self, text: &str) {
        self.output.push_str(text);
    }
}

/// Runs the workload on a fresh mock; returns the exit status and the mock.
fn run_mock(cmdline: &str, tick_every: u64) -> (u64, Mock) {
    let mut mock = Mock::new();
    mock.tick_every = tick_every;
    let status = run(&mut mock, "the mock", cmdline);
    (status, mock)
}

/// The output without the `bench` lines (whose ticks are the mock's).
fn results(mock: &Mock) -> Vec<String> {
    mock.output.lines().filter(|l| !l.contains(" bench ")).map(String::from).collect()
}

#[test]
fn every_operation_succeeds_and_gives_everything_back() {
    let (status, mock) = run_mock("n=20", 0);
    assert_eq!(status, 0, "{}", mock.output);
    let lines = results(&mock);
    assert_eq!(lines.first().map(String::as_str), Some("workload: loaded by the mock"));
    assert_eq!(lines.last().map(String::as_str), Some("workload: all done"));
    for op in Op::ALL {
        let prefix = format!("workload: {} ok ", op.name());
        assert!(lines.iter().any(|l| l.starts_with(&prefix)), "no ok line for {}:\n{}", op.name(), mock.output);
        let bench = format!("workload: bench {} n=20 tsc=1", op.name());
        assert!(mock.output.contains(&bench), "no bench line for {}:\n{}", op.name(), mock.output);
    }
    let fork = format!("workload: fork ok children=20 checksum={:#018x}", work::expected_fork(20));
    assert!(lines.contains(&fork), "{lines:#?}");
    assert!(lines.contains(&"workload: switch ok processes=2 yields=40".to_string()), "{lines:#?}");
    assert!(lines.contains(&"workload: fault ok pages=20 faults=20 sum=210".to_string()), "{lines:#?}");
    assert!(lines.contains(&"workload: mmap ok rounds=20 pages=80 faults=80 sum=3160".to_string()), "{lines:#?}");
    assert_eq!(mock.in_use, 0, "frames leaked");
    assert!(mock.spaces.iter().all(Option::is_none), "address spaces leaked");
    assert_eq!(mock.active, None);
}

#[test]
fn timer_ticks_change_no_result() {
    let (_, quiet) = run_mock("n=15", 0);
    for every in [2, 3, 7] {
        let (status, ticked) = run_mock("n=15", every);
        assert_eq!(status, 0, "{}", ticked.output);
        assert_eq!(results(&ticked), results(&quiet), "ticks every {every} entries");
    }
}

#[test]
fn one_op_and_its_count_come_from_the_command_line() {
    let (status, mock) = run_mock("op=syscall n=7", 0);
    assert_eq!(status, 0);
    assert_eq!(
        results(&mock),
        ["workload: loaded by the mock", "workload: syscall ok calls=7 pid_sum=7", "workload: all done"]
    );
}

#[test]
fn a_bad_command_line_fails_cleanly() {
    let (status, mock) = run_mock("op=sleep", 0);
    assert_eq!(status, 1);
    assert!(mock.output.contains("workload: FAILED command line: unknown op=sleep"), "{}", mock.output);
    assert!(mock.output.ends_with("workload: all done\n"));
}

#[test]
fn running_out_of_memory_kills_the_process_and_fails_the_op() {
    let mut mock = Mock::new();
    mock.frame_limit = 10;
    let status = run(&mut mock, "the mock", "op=fault n=50");
    assert_eq!(status, 1);
    assert!(mock.output.contains("workload: fault FAILED pid 1 killed: page fault at 0x"), "{}", mock.output);
    assert!(mock.output.contains("out of memory"), "{}", mock.output);
    assert_eq!(mock.in_use, 0, "a killed process's frames are freed");
    assert!(mock.spaces.iter().all(Option::is_none));
}
