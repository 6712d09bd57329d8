//! The seven operations: their names, sizes, programs and expected results.

use core::fmt;

use crate::user::programs;
use crate::user::Entry;
use crate::work::{self, APP_PAGES, MMAP_ROUND_PAGES};

/// One operation of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A loop of trivial system calls.
    Syscall,
    /// Process creation and teardown (fork, exit, wait).
    Fork,
    /// Context switches between two processes (yield).
    Switch,
    /// Demand-zero page faults.
    Fault,
    /// mmap, touch, munmap.
    Mmap,
    /// Pure user-mode computation.
    Compute,
    /// An application's shape: mostly computation, with a kernel entry
    /// (system call or demand-zero fault) every ~30,000 instructions.
    App,
}

impl Op {
    /// Every operation, in the order a full run does them.
    pub const ALL: [Op; 7] = [Op::Syscall, Op::Fork, Op::Switch, Op::Fault, Op::Mmap, Op::Compute, Op::App];

    /// Its name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Op::Syscall => "syscall",
            Op::Fork => "fork",
            Op::Switch => "switch",
            Op::Fault => "fault",
            Op::Mmap => "mmap",
            Op::Compute => "compute",
            Op::App => "app",
        }
    }

    /// The operation called `name`.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Iterations when the command line gives no `n=`: enough to measure,
    /// few enough that all seven run in seconds under TCG.
    pub fn default_iterations(self) -> u64 {
        match self {
            Op::Syscall => 1000,
            Op::Fork => 200,
            Op::Switch => 500,
            Op::Fault => 500,
            Op::Mmap => 200,
            Op::Compute => 200,
            Op::App => 50,
        }
    }

    /// The processes the operation starts with: each an entry point and
    /// its second argument (the first is always `n`).
    pub fn programs(self) -> &'static [(Entry, u64)] {
        match self {
            Op::Syscall => &[(programs::syscall_loop, 0)],
            Op::Fork => &[(programs::fork_loop, 0)],
            Op::Switch => &[(programs::switch_loop, 0), (programs::switch_loop, 1)],
            Op::Fault => &[(programs::fault_loop, 0)],
            Op::Mmap => &[(programs::mmap_loop, 0)],
            Op::Compute => &[(programs::compute_loop, 0)],
            Op::App => &[(programs::app_loop, 0)],
        }
    }

    /// The result the measuring program must report after `n` iterations
    /// (its first process has id 1).
    pub fn expected(self, n: u64) -> u64 {
        match self {
            Op::Syscall => n,
            Op::Fork => work::expected_fork(n),
            Op::Switch => n,
            // Page i holds i + 1: the sum of 1..=n.
            Op::Fault => work::sum_below(n.wrapping_add(1)),
            Op::Mmap => work::sum_below(n.wrapping_mul(MMAP_ROUND_PAGES)),
            Op::Compute => work::expected_compute(n),
            // Its process is the first: getpid answers 1.
            Op::App => work::expected_app(n, 1),
        }
    }
}

/// What an operation printed as its result: the facts the kernel saw,
/// identical in every build.
pub struct Outcome {
    /// The operation.
    pub op: Op,
    /// Its iterations.
    pub n: u64,
    /// The measuring program's result.
    pub result: u64,
    /// `yield` calls served.
    pub yields: u64,
    /// Demand-zero faults served in `mmap` regions (the stack's are not
    /// counted).
    pub demand_faults: u64,
    /// Processes created (the first ones and every fork).
    pub processes: u64,
}

impl fmt::Display for Outcome {
    /// The part of `workload: <op> ok <result>` after `ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.n;
        match self.op {
            Op::Syscall => write!(f, "calls={n} pid_sum={}", self.result),
            Op::Fork => write!(f, "children={} checksum={:#018x}", self.processes - 1, self.result),
            Op::Switch => write!(f, "processes={} yields={}", self.processes, self.yields),
            Op::Fault => write!(f, "pages={n} faults={} sum={}", self.demand_faults, self.result),
            Op::Mmap => {
                write!(f, "rounds={n} pages={} faults={} sum={}", n * MMAP_ROUND_PAGES, self.demand_faults, self.result)
            }
            Op::Compute => write!(f, "rounds={n} state={:#018x}", self.result),
            Op::App => write!(f, "rounds={n} pages={} faults={} state={:#018x}", n * APP_PAGES, self.demand_faults, self.result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
        }
        assert_eq!(Op::from_name("nope"), None);
    }

    #[test]
    fn expected_results_follow_the_programs() {
        assert_eq!(Op::Fault.expected(3), 1 + 2 + 3);
        assert_eq!(Op::Mmap.expected(2), (0..2 * MMAP_ROUND_PAGES).sum::<u64>());
        assert_eq!(Op::Syscall.expected(10), 10);
    }
}
