//! The command line: `op=<name>` picks one operation (default: all seven, in
//! order), `n=<N>` sets the iterations of every operation (default: each
//! operation's own). Words are separated by spaces; other words are
//! ignored, and a later word overrides an earlier one.

use core::fmt;

use crate::ops::Op;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// One operation, or `None` for all of them.
    pub op: Option<Op>,
    /// Iterations for every operation, or `None` for their defaults.
    pub n: Option<u64>,
}

impl Settings {
    /// The operations to run, in order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|op| self.op.is_none_or(|only| only == *op))
    }

    /// Iterations of `op`.
    pub fn iterations(&self, op: Op) -> u64 {
        self.n.unwrap_or(op.default_iterations())
    }
}

/// A command line the workload cannot follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// `op=` names no operation.
    UnknownOp(&'a str),
    /// `n=` is not a number from 1 to [`MAX_ITERATIONS`].
    BadCount(&'a str),
}

/// Largest `n=` accepted (bigger runs take too long under TCG, and the
/// fault operation maps `n` pages).
pub const MAX_ITERATIONS: u64 = 10_000;

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnknownOp(name) => write!(f, "unknown op={name} (one of syscall, fork, switch, fault, mmap, compute)"),
            CmdlineError::BadCount(text) => write!(f, "bad n={text} (a number from 1 to {MAX_ITERATIONS})"),
        }
    }
}

/// Reads the settings from `cmdline`.
pub fn parse(cmdline: &str) -> Result<Settings, CmdlineError<'_>> {
    let mut settings = Settings { op: None, n: None };
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("op", "all")) => settings.op = None,
            Some(("op", name)) => settings.op = Some(Op::from_name(name).ok_or(CmdlineError::UnknownOp(name))?),
            Some(("n", text)) => {
                let n = text.parse().ok().filter(|n| (1..=MAX_ITERATIONS).contains(n));
                settings.n = Some(n.ok_or(CmdlineError::BadCount(text))?);
            }
            _ => {}
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_every_op_with_its_own_count() {
        let s = parse("").unwrap();
        assert_eq!(s.ops().count(), Op::ALL.len());
        assert_eq!(s.iterations(Op::Syscall), Op::Syscall.default_iterations());
    }

    #[test]
    fn picks_one_op_and_a_count() {
        let s = parse("quiet op=fork n=7").unwrap();
        assert_eq!(s.ops().collect::<Vec<_>>(), [Op::Fork]);
        assert_eq!(s.iterations(Op::Fork), 7);
        assert_eq!(parse("op=fork op=all").unwrap().op, None);
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        assert_eq!(parse("op=nap"), Err(CmdlineError::UnknownOp("nap")));
        assert_eq!(parse("n=0"), Err(CmdlineError::BadCount("0")));
        assert_eq!(parse("n=x"), Err(CmdlineError::BadCount("x")));
    }
}
