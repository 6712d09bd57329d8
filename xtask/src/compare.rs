//! `cargo xtask compare`: the issue-6 workload run natively, under
//! trap-and-emulate and paravirtualized, in one command.
//!
//! The workload (`demo-guests/workload-core`) is one kernel, built twice:
//! the bare-metal ELF `workload`, which runs natively under the boot shim
//! and, unchanged, in an emulated domain, and `workload-pv` on the guest
//! SDK. Each prints, per operation, its result and the instructions its
//! measuring program counted around the loop:
//!
//! ```text
//! workload: fork ok children=200 checksum=0xfe2b2f6ff29ebd8c
//! workload: bench fork n=200 tsc=3952123
//! ```
//!
//! compare builds everything, then boots every operation (`op=<name>
//! n=<N>`) in every mode at two sizes, `n` and `2n`, all under
//! `-icount shift=0,align=off,sleep=off`, where the time-stamp counter
//! counts instructions: every figure is an exact count, and running
//! compare twice gives the same numbers (the JSON is byte for byte the
//! same). [`figures`] says why two sizes; [`plan`] what each mode boots.
//!
//! It prints one table (instructions per operation in each mode, the
//! ratios to native, exits per operation emulated, hypercalls and bounces
//! per operation paravirtualized) and the emulated exits by cause, and
//! writes `target/compare/compare.json` (every figure, every run's command
//! lines, the QEMU version) and `target/compare/compare.svg` (the ratios as
//! a bar chart, [`chart`]).
//!
//! The result lines must be the same in all three modes: that is what
//! makes the comparison a comparison of one computation. A mode that
//! prints other results, crashes, fails or does not end in time is named
//! with the operation, and compare exits non-zero after writing what it
//! measured.

mod chart;
mod figures;
mod log;
mod plan;
mod table;

use std::collections::VecDeque;
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use workload_core::cmdline::MAX_ITERATIONS;
use workload_core::ops::Op;

use crate::build::build_binaries;
use crate::cargo_build::demo_guests;
use crate::qemu::{self, describe_native_status, describe_status, run_captured, Captured, QEMU, STATUS_ALL_AS_EXPECTED};
use crate::repo::Repo;
use parvus_core::plural::count;
use figures::{mode_report, op_report, Report, RunRecord, METHOD, SCHEMA};
use plan::{Mode, Planner, Prepared, Run};

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Only these operations, comma-separated (default: all seven:
    /// syscall,fork,switch,fault,mmap,compute,app).
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    pub ops: Vec<String>,
    /// Iterations of every operation (default: each operation's own, as
    /// the scenarios run it); each also runs with twice as many.
    #[arg(long, value_name = "N")]
    pub n: Option<u64>,
    /// QEMU runs at once (the figures do not depend on it).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// A run that has not ended after this long is killed and reported
    /// (the slowest, mmap emulated at 2n, takes about 4 s under TCG).
    #[arg(long, default_value_t = 60)]
    pub timeout_seconds: u64,
}

/// The operations `names` asks for, in the workload's order (all of them
/// when empty).
pub fn select_ops(names: &[String]) -> Result<Vec<Op>> {
    for name in names {
        if Op::from_name(name).is_none() {
            let all: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
            bail!("--ops: unknown operation {name:?} (one of {})", all.join(", "));
        }
    }
    Ok(Op::ALL.into_iter().filter(|op| names.is_empty() || names.iter().any(|n| n == op.name())).collect())
}

/// Checks `--n`: twice it must still be a size the workload accepts.
pub fn check_n(n: Option<u64>) -> Result<()> {
    match n {
        Some(n) if n == 0 || 2 * n > MAX_ITERATIONS => {
            bail!("--n {n}: must be from 1 to {} (the workload runs 2n, at most {MAX_ITERATIONS})", MAX_ITERATIONS / 2)
        }
        _ => Ok(()),
    }
}

/// What a run measured, judged: the workload's figures, or one line saying
/// what went wrong (with the crash or failure line when there is one).
pub fn judge(run: &Run, domain: Option<&str>, captured: &Captured, timeout: Duration) -> Result<log::RunData, String> {
    if captured.timed_out {
        let last = match log::failure(&captured.serial) {
            Some(failure) => failure,
            None => match captured.serial.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(line) => format!("last serial line: {}", line.trim()),
                None => "nothing on the serial port".to_string(),
            },
        };
        return Err(format!("did not end within {} s; {last}", timeout.as_secs()));
    }
    let status_ok = captured.status == Some(STATUS_ALL_AS_EXPECTED);
    let status = || match run.mode {
        Mode::Native => describe_native_status(captured.status),
        Mode::Emulated | Mode::Paravirtualized => describe_status(captured.status),
    };
    match log::read_run(&captured.serial, run.op, run.n, domain) {
        Ok(data) if status_ok => Ok(data),
        Ok(_) => Err(status()),
        Err(e) if status_ok => Err(e.to_string()),
        Err(e) => Err(format!("{e} ({})", status())),
    }
}

/// The first line of `qemu-system-x86_64 --version`.
fn qemu_version() -> Result<String> {
    let output = Command::new(QEMU).arg("--version").output().with_context(|| format!("cannot run {QEMU} --version"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|l| l.trim().to_string()).ok_or_else(|| anyhow!("{QEMU} --version printed nothing"))
}

/// A record for a run that could not even be prepared.
fn unprepared(run: Run, error: String) -> RunRecord {
    RunRecord {
        n: run.n,
        cmdline: run.cmdline(),
        qemu: String::new(),
        manifest: None,
        results: None,
        tsc: None,
        counters: Default::default(),
        error: Some(error),
    }
}

/// Prepares and runs `runs`, `jobs` QEMUs at a time; returns their records
/// in the same order.
fn execute(repo: &Repo, planner: &Planner<'_>, runs: &[Run], jobs: usize, timeout: Duration) -> Vec<RunRecord> {
    let mut records: Vec<Option<RunRecord>> = vec![None; runs.len()];
    let mut queue = VecDeque::new();
    for (i, &run) in runs.iter().enumerate() {
        match planner.prepare(run) {
            Ok(prepared) => queue.push_back((i, prepared)),
            Err(e) => records[i] = Some(unprepared(run, format!("{e:#}"))),
        }
    }
    let queue = Mutex::new(queue);
    let done = Mutex::new(records);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some((i, prepared)) = queue.lock().expect("queue").pop_front() else { break };
                let record = run_one(repo, &prepared, timeout);
                done.lock().expect("records")[i] = Some(record);
            });
        }
    });
    done.into_inner().expect("records").into_iter().map(|r| r.expect("every run has a record")).collect()
}

/// Boots one prepared run and judges it.
fn run_one(repo: &Repo, prepared: &Prepared, timeout: Duration) -> RunRecord {
    let outcome = match run_captured(&prepared.qemu, timeout) {
        Ok(captured) => {
            let judged = judge(&prepared.run, prepared.domain.as_deref(), &captured, timeout);
            let verdict = match &judged {
                Ok(data) => format!("tsc={}", data.tsc),
                Err(e) => format!("FAILED: {e}"),
            };
            eprintln!("xtask: compare: {} ... {verdict} ({:.1} s)", prepared.run.describe(), captured.elapsed.as_secs_f64());
            judged
        }
        Err(e) => Err(format!("{e:#}")),
    };
    RunRecord::new(repo, prepared, outcome)
}

/// `cargo xtask compare`.
pub fn main(args: &CompareArgs) -> Result<ExitCode> {
    let ops = select_ops(&args.ops)?;
    check_n(args.n)?;
    let repo = Repo::locate();
    qemu::ensure_installed()?;
    let qemu_version = qemu_version()?;
    let hypervisor = build_binaries(&repo)?;
    let planner = Planner { repo: &repo, hypervisor, guests: demo_guests(&repo)?, manifests_dir: repo.compare_dir().join("manifests") };
    let timeout = Duration::from_secs(args.timeout_seconds);

    // First every run at n; then, at 2n, those whose run at n measured
    // (a mode that crashes is not waited for twice).
    let pairs = plan::runs(&ops, args.n);
    let small: Vec<Run> = pairs.iter().map(|[a, _]| *a).collect();
    let small_records = execute(&repo, &planner, &small, args.jobs, timeout);
    let large: Vec<Run> =
        pairs.iter().zip(&small_records).filter(|(_, r)| r.error.is_none()).map(|([_, b], _)| *b).collect();
    let mut large_records = execute(&repo, &planner, &large, args.jobs, timeout).into_iter();

    let mut modes = Vec::new();
    for record in small_records {
        let mut runs = vec![record];
        if runs[0].error.is_none() {
            runs.push(large_records.next().expect("a run at 2n for every good run at n"));
        }
        modes.push(mode_report(runs));
    }
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    let mut modes = modes.into_iter();
    for &op in &ops {
        let three = [(); 3].map(|_| modes.next().expect("three modes per operation"));
        let (report, found) = op_report(op, three[0].runs[0].n, three);
        reports.push(report);
        problems.extend(found);
    }

    println!("instructions per operation (QEMU -icount: exact), ratios to native, and per operation the");
    println!("emulated exits and the paravirtualized hypercalls+bounces ((count at 2n - count at n) / n):");
    print!("{}", table::main_table(&reports));
    println!("\nemulated exits per operation, by cause:");
    print!("{}", table::exits_table(&reports));

    let out = repo.compare_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", repo.show(&out)))?;
    let svg = chart::svg(&reports)?;
    let report = Report { schema: SCHEMA, qemu_version, method: METHOD, ops: reports };
    let json_path = out.join("compare.json");
    let json = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(&json_path, json).with_context(|| format!("cannot write {}", repo.show(&json_path)))?;
    let svg_path = out.join("compare.svg");
    std::fs::write(&svg_path, svg).with_context(|| format!("cannot write {}", repo.show(&svg_path)))?;
    println!("\nwrote {} and {}", repo.show(&json_path), repo.show(&svg_path));

    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("xtask: compare: {problem}");
        }
        bail!("{} in the comparison (listed above)", count(problems.len(), "problem", "problems"));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(serial: &str, status: Option<i32>, timed_out: bool) -> Captured {
        Captured { serial: serial.into(), stderr: String::new(), status, timed_out, elapsed: Duration::from_secs(1) }
    }

    const GOOD: &str = "workload: fork ok children=10 checksum=0x1\nworkload: bench fork n=10 tsc=500\n";

    #[test]
    fn selects_ops_in_the_workloads_order() {
        assert_eq!(select_ops(&[]).unwrap(), Op::ALL);
        assert_eq!(select_ops(&["mmap".into(), "syscall".into()]).unwrap(), [Op::Syscall, Op::Mmap]);
        let e = select_ops(&["nap".into()]).unwrap_err().to_string();
        assert_eq!(e, "--ops: unknown operation \"nap\" (one of syscall, fork, switch, fault, mmap, compute, app)");
    }

    #[test]
    fn n_leaves_room_for_twice_it() {
        check_n(None).unwrap();
        check_n(Some(MAX_ITERATIONS / 2)).unwrap();
        assert!(check_n(Some(0)).is_err());
        let e = check_n(Some(MAX_ITERATIONS / 2 + 1)).unwrap_err().to_string();
        assert!(e.starts_with("--n 5001: must be from 1 to 5000"), "{e}");
    }

    #[test]
    fn judges_a_run() {
        let run = Run { op: Op::Fork, n: 10, mode: Mode::Native };
        let t = Duration::from_secs(60);
        assert_eq!(judge(&run, None, &captured(GOOD, Some(1), false), t).unwrap().tsc, 500);
        assert_eq!(judge(&run, None, &captured(GOOD, Some(3), false), t).unwrap_err(), "the kernel exited 1");
        assert_eq!(
            judge(&run, None, &captured("workload: loaded\nworkload: fork", None, true), t).unwrap_err(),
            "did not end within 60 s; last serial line: workload: fork"
        );
        let crash = "workload: loaded\nparvus: ERROR domain 0 (workload) crashed: #GP\nparvus: summary\n";
        let emulated = Run { mode: Mode::Emulated, ..run };
        assert_eq!(
            judge(&emulated, Some("workload"), &captured(crash, Some(3), false), t).unwrap_err(),
            "parvus: ERROR domain 0 (workload) crashed: #GP (some domains did not end as expected (hypervisor exit 1))"
        );
        assert_eq!(
            judge(&emulated, Some("workload"), &captured(crash, None, true), t).unwrap_err(),
            "did not end within 60 s; parvus: ERROR domain 0 (workload) crashed: #GP"
        );
    }

    #[test]
    fn json_shape() {
        let (op, _) = op_report(Op::Fork, 10, figures::tests::agreeing());
        let report = Report { schema: SCHEMA, qemu_version: "QEMU emulator version 7.2.0".into(), method: METHOD, ops: vec![op] };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], 1);
        assert!(json["method"].as_str().unwrap().contains("-icount"));
        let op = &json["ops"][0];
        assert_eq!((op["op"].as_str(), op["n"].as_u64(), op["results_agree"].as_bool()), (Some("fork"), Some(10), Some(true)));
        for mode in ["native", "emulated", "paravirtualized"] {
            let m = &op[mode];
            for key in ["ok", "error", "instructions_per_op", "marginal_instructions_per_op", "ratio_to_native", "counters_per_op", "runs"] {
                assert!(m.get(key).is_some(), "{mode}.{key}");
            }
            let run = &m["runs"][0];
            for key in ["n", "cmdline", "qemu", "manifest", "results", "tsc", "counters", "error"] {
                assert!(run.get(key).is_some(), "{mode}.runs[0].{key}");
            }
        }
        assert_eq!(op["emulated"]["ratio_to_native"], 25.0);
        assert_eq!(op["emulated"]["counters_per_op"]["exits"], 30.0);
        assert_eq!(op["paravirtualized"]["counters_per_op"]["bounces"], 3.0);
        assert_eq!(op["native"]["runs"][1]["cmdline"], "op=fork n=20");
    }
}
