//! `cargo xtask test [--filter NAME] [--no-host]`: the host unit tests and
//! the documentation, then every QEMU scenario (see [`crate::scenario`]),
//! at most `--jobs` at a time.
//!
//! The hypervisor and every guest are built before the host unit tests,
//! which use them: the decoder's differential test compares every
//! instruction of the bare-metal kernels with a reference decoder (it finds
//! their ELF files in the variable [`KERNELS_TO_SWEEP`]), and xtask's own
//! tests of `cargo xtask run` boot them.
//!
//! Then come the API documentation and the book ([`crate::doc`]): a
//! broken intra-doc link or a broken link in the book fails the run.
//!
//! Ends with the line `N passed, N failed` (the host unit tests count as
//! one entry, and so do the API documentation and the book) and a non-zero
//! exit status when anything failed. A failed scenario is reported with its
//! name, every reason (the first missing line among them) and its whole
//! serial log.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::book;
use crate::build::{build_binaries, check_manifest, pack};
use crate::cargo_build::{build_bare_metal_kernels, cargo, demo_guests};
use crate::doc;
use crate::native;
use crate::qemu::{self, run_captured, QemuConfig};
use crate::repo::Repo;
use crate::scenario::{discover, judge, Scenario};
use parvus_core::decode::KERNELS_TO_SWEEP;
use parvus_core::plural::count;

/// Arguments of `test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run only the scenarios whose name contains this.
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// Skip the host unit tests (`cargo test`) and the documentation.
    #[arg(long)]
    pub no_host: bool,
    /// Scenarios run at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
}

/// The result of one entry of the summary.
pub struct Outcome {
    /// The scenario's name (or "host unit tests").
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
}

/// A scenario with its QEMU boot, or the reason it could not be prepared.
struct Job {
    scenario: Scenario,
    config: Result<QemuConfig, String>,
}

/// What a scenario boots, once its files are checked.
enum Checked {
    /// A manifest, to be packed into a bundle after the build.
    Manifest(crate::manifest::ManifestFile),
    /// A native kernel ELF under the boot shim, as the `[native]` table says.
    Native(std::path::PathBuf, native::NativeSpec),
}

/// Checks what a scenario boots before anything is built.
fn check_scenario(repo: &Repo, scenario: &Scenario) -> Result<Checked> {
    match &scenario.spec.native {
        None => Ok(Checked::Manifest(check_manifest(repo, &scenario.manifest())?)),
        Some(spec) => {
            let shown = repo.show(&scenario.spec_file());
            let kernel = native::resolve_kernel(
                repo,
                &shown,
                "[native], field `kernel`",
                &scenario.dir,
                &spec.kernel,
                &demo_guests(repo)?,
            )?;
            Ok(Checked::Native(kernel, spec.clone()))
        }
    }
}

/// `cargo xtask test`.
pub fn main(args: &TestArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    let mut outcomes = Vec::new();
    // Before the host tests too: xtask's tests of `run` boot QEMU, two at
    // a time, and must not both try to install it.
    qemu::ensure_installed()?;

    if !args.no_host {
        println!("xtask: the hypervisor and every guest, for the host tests that boot or read them");
        let mut host_tests = cargo(&repo);
        host_tests.arg("test");
        match build_binaries(&repo).and_then(|_| build_bare_metal_kernels(&repo)) {
            Ok(kernels) => {
                host_tests.env(KERNELS_TO_SWEEP, std::env::join_paths(kernels)?);
            }
            Err(e) => {
                println!("xtask: building the hypervisor and the guests FAILED: {e:#}");
                outcomes.push(Outcome { name: "the build the host tests use".into(), passed: false });
            }
        }
        println!("xtask: host unit tests (cargo test)");
        let status = host_tests.status()?;
        outcomes.push(Outcome { name: "host unit tests".into(), passed: status.success() });
        if !status.success() {
            println!("xtask: host unit tests FAILED ({status})");
        }
        println!("xtask: the API documentation and the book, links checked (cargo xtask doc)");
        outcomes.push(step("API documentation", doc::api(&repo)));
        outcomes.push(step("the book", book::build(&repo).map(drop)));
    }

    let scenarios = discover(&repo, args.filter.as_deref())?;
    if scenarios.is_empty() {
        if let Some(filter) = &args.filter {
            bail!("no scenario under scenarios/ has a name containing {filter:?}");
        }
    } else {
        outcomes.extend(run_scenarios(&repo, scenarios, args.jobs as usize)?);
    }

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    if !failed.is_empty() {
        println!("xtask: failed: {}", failed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "));
    }
    println!("{} passed, {} failed", outcomes.len() - failed.len(), failed.len());
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The outcome of a step that is not a test binary or a scenario, with its
/// error printed when it failed.
fn step(name: &str, result: Result<()>) -> Outcome {
    if let Err(e) = &result {
        println!("xtask: {name} FAILED: {e:#}");
    }
    Outcome { name: name.to_string(), passed: result.is_ok() }
}

/// Checks every manifest (and native kernel), builds once, packs each
/// bundle, then boots the scenarios in parallel (also what `fuzz` runs).
pub fn run_scenarios(repo: &Repo, scenarios: Vec<Scenario>, jobs: usize) -> Result<Vec<Outcome>> {
    // Manifests first: a bad one fails its scenario without building.
    let checked: Vec<(Scenario, Result<Checked, String>)> = scenarios
        .into_iter()
        .map(|s| {
            let checked = check_scenario(repo, &s).map_err(|e| format!("{e:#}"));
            (s, checked)
        })
        .collect();
    let built = build_binaries(repo).map_err(|e| format!("{e:#}"));
    let jobs_list: Vec<Job> = checked
        .into_iter()
        .map(|(scenario, checked)| {
            let spec = &scenario.spec;
            let config = match (checked, &built) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(format!("the build failed: {e}")),
                (Ok(Checked::Native(kernel, native)), Ok(_)) => {
                    Ok(native::qemu_config(repo, kernel, &native, false, spec.qemu_args.clone()))
                }
                (Ok(Checked::Manifest(file)), Ok(hypervisor)) => {
                    pack(repo, file, hypervisor.clone()).map_err(|e| format!("{e:#}")).map(|mut prepared| {
                        if let Some(raw) = &spec.raw_bundle {
                            prepared.bundle = scenario.dir.join(raw);
                        }
                        // Under -icount the platform timer runs on
                        // instructions, not on the host's clock, so
                        // preemption lands at the same place every run and
                        // the serial log is the same whatever else the
                        // machine is doing.
                        prepared.qemu(true, false, spec.qemu_args.clone())
                    })
                }
            };
            Job { scenario, config }
        })
        .collect();

    println!(
        "xtask: running {}, {} at a time",
        count(jobs_list.len(), "scenario", "scenarios"),
        jobs.min(jobs_list.len())
    );
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(jobs_list.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs_list.get(i) else { break };
                let (passed, report) = run_one(repo, job);
                // One scenario's report is printed in one piece.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(report.as_bytes());
                let _ = out.flush();
                outcomes.lock().expect("outcomes").push((i, Outcome { name: job.scenario.name.clone(), passed }));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("outcomes");
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes.into_iter().map(|(_, o)| o).collect())
}

/// Boots one scenario and judges it; returns whether it passed and its report.
fn run_one(repo: &Repo, job: &Job) -> (bool, String) {
    let name = &job.scenario.name;
    let config = match &job.config {
        Ok(config) => config,
        Err(e) => return (false, format!("scenario {name} ... FAILED before QEMU\n    {e}\n")),
    };
    let spec = &job.scenario.spec;
    let run = match run_captured(config, Duration::from_secs(spec.timeout_seconds)) {
        Ok(run) => run,
        Err(e) => return (false, format!("scenario {name} ... FAILED\n    {e:#}\n")),
    };
    let failures = judge(&job.scenario.expected, spec, &run.serial, run.status, run.timed_out);
    let seconds = run.elapsed.as_secs_f64();
    if failures.is_empty() {
        return (true, format!("scenario {name} ... ok ({seconds:.1} s)\n"));
    }
    let mut report = format!("scenario {name} ... FAILED ({seconds:.1} s)\n");
    for failure in &failures {
        report.push_str(&format!("    {failure}\n"));
    }
    report.push_str(&format!("    QEMU: {}\n", config.shell_line()));
    report.push_str(&format!("    expected lines: {}\n", repo.show(&job.scenario.dir.join("expected.txt"))));
    report.push_str(&format!("--- serial log of scenario {name} ---\n"));
    report.push_str(&run.serial);
    if !run.serial.ends_with('\n') && !run.serial.is_empty() {
        report.push('\n');
    }
    report.push_str(&format!("--- end of serial log of scenario {name} ---\n"));
    if !run.stderr.trim().is_empty() {
        report.push_str(&format!("--- QEMU stderr ---\n{}\n--- end of QEMU stderr ---\n", run.stderr.trim_end()));
    }
    (false, report)
}
