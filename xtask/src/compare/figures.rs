//! From runs to figures: instructions per operation, ratios to native,
//! counters per operation by differencing two sizes, and the check that
//! every mode computed the same results.
//!
//! # Why two sizes
//!
//! The measuring program reads the time-stamp counter around its loop, so
//! `tsc / n` is already a per-operation figure without boot or setup. The
//! hypervisor's counters (exits, hypercalls, bounces) are not: its summary
//! counts whole runs, boot and the kernel's setup included. Each operation
//! therefore runs twice, with `n` and `2n` iterations; everything outside
//! the loop is the same in both runs (the runs are deterministic under
//! `-icount`), so it cancels in the difference, and
//! `(count(2n) - count(n)) / n` is what one more iteration costs. The same
//! difference of the `tsc` figures is recorded too
//! (`marginal_instructions_per_op`): it drops what the first iteration
//! alone pays (a cold shadow, the first stack faults).

use std::collections::BTreeMap;

use serde::Serialize;
use workload_core::ops::Op;

use super::log::RunData;
use super::plan::{Mode, Prepared};
use crate::repo::Repo;

/// Version of the JSON layout; bump it on any incompatible change.
pub const SCHEMA: u32 = 1;

/// One run as the JSON records it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// Iterations.
    pub n: u64,
    /// The workload's command line.
    pub cmdline: String,
    /// QEMU's command line.
    pub qemu: String,
    /// The manifest booted (runs under the hypervisor), relative to the
    /// repository.
    pub manifest: Option<String>,
    /// The result line, if the run got that far.
    pub results: Option<String>,
    /// The bench line's instructions.
    pub tsc: Option<u64>,
    /// The hypervisor's summary counters (none natively).
    pub counters: BTreeMap<String, u64>,
    /// What went wrong, if the run failed.
    pub error: Option<String>,
}

impl RunRecord {
    /// The record of `prepared`'s run, which measured `outcome`.
    pub fn new(repo: &Repo, prepared: &Prepared, outcome: Result<RunData, String>) -> RunRecord {
        let mut record = RunRecord {
            n: prepared.run.n,
            cmdline: prepared.run.cmdline(),
            qemu: prepared.qemu.shell_line(),
            manifest: prepared.manifest.as_deref().map(|p| repo.show(p)),
            results: None,
            tsc: None,
            counters: BTreeMap::new(),
            error: None,
        };
        match outcome {
            Ok(data) => {
                record.results = Some(data.results);
                record.tsc = Some(data.tsc);
                record.counters = data.counters;
            }
            Err(error) => record.error = Some(error),
        }
        record
    }
}

/// One operation in one mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeReport {
    /// Whether both runs measured.
    pub ok: bool,
    /// The first run's error, if one failed.
    pub error: Option<String>,
    /// `tsc / n` of the run at `n`: instructions per operation.
    pub instructions_per_op: Option<f64>,
    /// `(tsc(2n) - tsc(n)) / n`: what one more iteration costs.
    pub marginal_instructions_per_op: Option<f64>,
    /// `instructions_per_op` over native's.
    pub ratio_to_native: Option<f64>,
    /// Every summary counter, `(count(2n) - count(n)) / n`.
    pub counters_per_op: BTreeMap<String, f64>,
    /// The runs, at `n` then `2n` (the second is skipped when the first
    /// failed).
    pub runs: Vec<RunRecord>,
}

/// One operation in every mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpReport {
    /// The operation's name.
    pub op: &'static str,
    /// The smaller size (the other is twice it).
    pub n: u64,
    /// The result line at `n`, if every mode printed the same one.
    pub results: Option<String>,
    /// Whether every mode printed the same result lines at both sizes.
    pub results_agree: bool,
    /// Natively.
    pub native: ModeReport,
    /// Under trap-and-emulate.
    pub emulated: ModeReport,
    /// Paravirtualized.
    pub paravirtualized: ModeReport,
}

impl OpReport {
    /// The report of `mode`.
    pub fn mode(&self, mode: Mode) -> &ModeReport {
        match mode {
            Mode::Native => &self.native,
            Mode::Emulated => &self.emulated,
            Mode::Paravirtualized => &self.paravirtualized,
        }
    }
}

/// The JSON document (`target/compare/compare.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    /// How the figures were made.
    pub method: &'static str,
    /// One entry per operation, in the workload's order.
    pub ops: Vec<OpReport>,
}

/// The JSON's `method`.
pub const METHOD: &str = "Every run under QEMU -icount shift=0,align=off,sleep=off (one instruction = one tick, \
    so every figure is an exact instruction count and repeats). instructions_per_op = tsc / n from the \
    workload's bench line at n; counters_per_op = (count at 2n - count at n) / n from the hypervisor's summary, \
    which counts whole runs (boot included); ratios are to native.";

/// Rounds to two decimals (figures are exact; this keeps the JSON short).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn per_op(small: u64, large: u64, n: u64) -> f64 {
    round2((i128::from(large) - i128::from(small)) as f64 / n as f64)
}

/// The figures of one operation in one mode from its runs at `n` and `2n`
/// (only the first when it failed).
pub fn mode_report(runs: Vec<RunRecord>) -> ModeReport {
    let error = runs.iter().find_map(|r| r.error.clone());
    let mut report = ModeReport {
        ok: error.is_none() && runs.len() == 2,
        error,
        instructions_per_op: None,
        marginal_instructions_per_op: None,
        ratio_to_native: None,
        counters_per_op: BTreeMap::new(),
        runs,
    };
    if let Some(small) = report.runs.first() {
        if let Some(tsc) = small.tsc {
            report.instructions_per_op = Some(round2(tsc as f64 / small.n as f64));
        }
    }
    if let [small, large] = report.runs.as_slice() {
        if let (Some(a), Some(b), true) = (small.tsc, large.tsc, report.ok) {
            report.marginal_instructions_per_op = Some(per_op(a, b, small.n));
            report.counters_per_op = small
                .counters
                .iter()
                .filter_map(|(key, &a)| large.counters.get(key).map(|&b| (key.clone(), per_op(a, b, small.n))))
                .collect();
        }
    }
    report
}

/// Puts the three modes of `op` together: ratios to native and the
/// results check. Returns the report and the problems found (failed runs,
/// results that differ), each one line naming the operation and the modes.
pub fn op_report(op: Op, n: u64, modes: [ModeReport; 3]) -> (OpReport, Vec<String>) {
    let [native, emulated, paravirtualized] = modes;
    let mut report =
        OpReport { op: op.name(), n, results: None, results_agree: false, native, emulated, paravirtualized };
    let mut problems = Vec::new();
    for mode in Mode::ALL {
        for run in &report.mode(mode).runs {
            if let Some(error) = &run.error {
                problems.push(format!("{} n={} {}: {error}", op.name(), run.n, mode.name()));
            }
        }
    }
    let mut agree = true;
    for size in 0..2 {
        let results: Vec<(Mode, Option<&String>)> = Mode::ALL
            .iter()
            .map(|&m| (m, report.mode(m).runs.get(size).and_then(|r| r.results.as_ref())))
            .collect();
        let present: Vec<(Mode, &String)> = results.iter().filter_map(|&(m, r)| r.map(|r| (m, r))).collect();
        agree &= present.len() == Mode::ALL.len();
        let Some(&(first_mode, first)) = present.first() else { continue };
        for &(mode, other) in &present[1..] {
            if other != first {
                agree = false;
                let n = report.mode(mode).runs[size].n;
                problems.push(format!(
                    "{} n={n}: the results differ between {} and {}: `{first}` vs `{other}`",
                    op.name(),
                    first_mode.name(),
                    mode.name()
                ));
            }
        }
    }
    report.results_agree = agree;
    if agree {
        report.results = report.native.runs[0].results.clone();
    }
    let native = report.native.instructions_per_op.filter(|&v| v > 0.0);
    for mode in [&mut report.native, &mut report.emulated, &mut report.paravirtualized] {
        mode.ratio_to_native = native.zip(mode.instructions_per_op).map(|(base, v)| round2(v / base));
    }
    (report, problems)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A record of a good run.
    pub fn good(n: u64, tsc: u64, results: &str, counters: &[(&str, u64)]) -> RunRecord {
        RunRecord {
            n,
            cmdline: format!("op=fork n={n}"),
            qemu: "qemu-system-x86_64 ...".into(),
            manifest: None,
            results: Some(results.into()),
            tsc: Some(tsc),
            counters: counters.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            error: None,
        }
    }

    /// A record of a failed run.
    pub fn failed(n: u64, error: &str) -> RunRecord {
        RunRecord { results: None, tsc: None, counters: BTreeMap::new(), error: Some(error.into()), ..good(n, 0, "", &[]) }
    }

    /// Three modes of fork at n = 10 that agree.
    pub fn agreeing() -> [ModeReport; 3] {
        let ok = |n: u64| format!("workload: fork ok children={n}");
        [
            mode_report(vec![good(10, 1000, &ok(10), &[]), good(20, 2000, &ok(20), &[])]),
            mode_report(vec![
                good(10, 25000, &ok(10), &[("exits", 5000), ("io", 100)]),
                good(20, 49000, &ok(20), &[("exits", 5300), ("io", 100)]),
            ]),
            mode_report(vec![
                good(10, 1050, &ok(10), &[("hypercalls", 140), ("bounces", 30)]),
                good(20, 2100, &ok(20), &[("hypercalls", 170), ("bounces", 60)]),
            ]),
        ]
    }

    #[test]
    fn differencing_cancels_what_is_outside_the_loop() {
        let [native, emulated, pv] = agreeing();
        assert!(native.ok && emulated.ok && pv.ok);
        assert_eq!(native.instructions_per_op, Some(100.0));
        assert_eq!(emulated.instructions_per_op, Some(2500.0));
        assert_eq!(emulated.marginal_instructions_per_op, Some(2400.0));
        assert_eq!(emulated.counters_per_op["exits"], 30.0, "(5300 - 5000) / 10: boot's 5000 - 300 cancel");
        assert_eq!(emulated.counters_per_op["io"], 0.0);
        assert_eq!((pv.counters_per_op["hypercalls"], pv.counters_per_op["bounces"]), (3.0, 3.0));
        assert!(native.counters_per_op.is_empty());
    }

    #[test]
    fn ratios_and_agreeing_results() {
        let (report, problems) = op_report(Op::Fork, 10, agreeing());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(report.results_agree);
        assert_eq!(report.results.as_deref(), Some("workload: fork ok children=10"));
        assert_eq!(report.native.ratio_to_native, Some(1.0));
        assert_eq!(report.emulated.ratio_to_native, Some(25.0));
        assert_eq!(report.paravirtualized.ratio_to_native, Some(1.05));
    }

    #[test]
    fn differing_results_are_a_problem_naming_the_op_and_the_modes() {
        let mut modes = agreeing();
        modes[2].runs[1].results = Some("workload: fork ok children=21".into());
        let (report, problems) = op_report(Op::Fork, 10, modes);
        assert!(!report.results_agree);
        assert_eq!(report.results, None);
        assert_eq!(
            problems,
            ["fork n=20: the results differ between native and paravirtualized: \
              `workload: fork ok children=20` vs `workload: fork ok children=21`"]
        );
    }

    #[test]
    fn a_failed_mode_is_reported_and_has_no_figures() {
        let mut modes = agreeing();
        modes[1] = mode_report(vec![failed(10, "parvus: ERROR domain 0 (workload) crashed: #GP")]);
        let (report, problems) = op_report(Op::Fork, 10, modes);
        assert_eq!(problems, ["fork n=10 emulated: parvus: ERROR domain 0 (workload) crashed: #GP"]);
        assert!(!report.emulated.ok);
        assert_eq!(report.emulated.error.as_deref(), Some("parvus: ERROR domain 0 (workload) crashed: #GP"));
        assert_eq!((report.emulated.instructions_per_op, report.emulated.ratio_to_native), (None, None));
        assert!(!report.results_agree, "a mode without results cannot agree");
        assert_eq!(report.paravirtualized.ratio_to_native, Some(1.05), "the others still compare");
        // A failure at 2n keeps the figure at n but no difference.
        let m = mode_report(vec![good(10, 100, "r", &[("exits", 1)]), failed(20, "timed out")]);
        assert!(!m.ok);
        assert_eq!((m.instructions_per_op, m.marginal_instructions_per_op), (Some(10.0), None));
        assert!(m.counters_per_op.is_empty());
    }
}
