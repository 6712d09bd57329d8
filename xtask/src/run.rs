//! `cargo xtask run [--manifest FILE] [--gdb] [-- QEMU ARGS]`: build, then
//! boot under QEMU with the serial console on this terminal.
//! `cargo xtask run --native CRATE [--cmdline TEXT] [--memory SIZE]` boots
//! a bare-metal kernel natively instead, under the boot shim (see
//! [`crate::native`]).
//!
//! The exit status passes the hypervisor's verdict through: 0 when every
//! domain ended as expected, the hypervisor's exit code otherwise (1: some
//! domain did not, 2: the hypervisor panicked or faulted),
//! [`NO_HYPERVISOR_EXIT`](crate::verdict::NO_HYPERVISOR_EXIT) when QEMU
//! ended without the hypervisor's exit (it failed to start, or a triple
//! fault or reset exited it with 0, which is *not* success) and
//! [`TIMED_OUT`](crate::verdict::TIMED_OUT) when `--timeout` stopped it. Success is
//! read from the hypervisor's verdict line and QEMU's status together (see
//! [`crate::verdict`]). A native run passes the kernel's exit status
//! through the same way (the shim exits 3 when it cannot boot the kernel).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::build::{build_binaries, check_manifest, manifest_path, pack, Prepared};
use crate::cargo_build::{build_guests, demo_guests};
use crate::native::{self, NativeSpec, DEFAULT_NATIVE_MEMORY};
use crate::qemu::{self, QemuConfig};
use crate::repo::{from_cwd, Repo};
use crate::verdict::{parse_timeout, Machine, Outcome, SerialLog, Timeout};
use parvus_core::manifest::MemorySize;

/// How long a run may take when `--timeout` is not given (except under
/// `--gdb`, which waits for a person): the demo ends in a few seconds, and
/// a guest that never ends should not hang the terminal silently.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The domain manifest (default: scenarios/demo/manifest.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "native")]
    pub manifest: Option<PathBuf>,
    /// Boot this bare-metal kernel crate natively, under the boot shim,
    /// without the hypervisor.
    #[arg(long, value_name = "CRATE")]
    pub native: Option<String>,
    /// The native kernel's command line.
    #[arg(long, value_name = "TEXT", requires = "native")]
    pub cmdline: Option<String>,
    /// Machine memory of a native run (default 64M).
    #[arg(long, value_name = "SIZE", requires = "native", value_parser = parse_memory)]
    pub memory: Option<MemorySize>,
    /// Start QEMU halted, waiting for gdb on port 1234, and print the gdb command.
    #[arg(long)]
    pub gdb: bool,
    /// Stop QEMU after this long (e.g. 90s, 5m, 1h) and name the domains
    /// still running; `none` never stops it. Default: 60s, none with --gdb.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,
    /// Extra arguments for QEMU (after `--`).
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

fn parse_memory(text: &str) -> Result<MemorySize, String> {
    MemorySize::parse(text).map_err(|e| e.to_string())
}

impl RunArgs {
    /// The timeout in force: `--timeout`, else none under `--gdb`, else
    /// [`DEFAULT_TIMEOUT`].
    fn effective_timeout(&self) -> Option<Duration> {
        self.timeout.map_or(if self.gdb { None } else { Some(DEFAULT_TIMEOUT) }, |t| t.0)
    }
}

/// The gdb command that loads the hypervisor's and the guests' symbols and
/// attaches to QEMU.
pub fn gdb_command(prepared: &Prepared) -> String {
    let mut command = format!("gdb {} -ex 'target remote :1234'", from_cwd(&prepared.hypervisor));
    let mut seen: Vec<&PathBuf> = Vec::new();
    for (_, image) in &prepared.images {
        if !seen.contains(&image) {
            seen.push(image);
            command.push_str(&format!(" -ex 'add-symbol-file {}'", from_cwd(image)));
        }
    }
    command
}

/// The gdb command for a native run: the kernel's symbols, and the shim's.
fn native_gdb_command(repo: &Repo, kernel: &std::path::Path) -> String {
    format!(
        "gdb {} -ex 'target remote :1234' -ex 'add-symbol-file {}'",
        from_cwd(kernel),
        from_cwd(&repo.boot_shim_elf())
    )
}

/// Runs QEMU on this terminal; returns `run`'s exit status, after one
/// `xtask:` line saying how it ended unless it succeeded.
fn boot(config: &QemuConfig, machine: Machine, timeout: Option<Duration>) -> Result<ExitCode> {
    eprintln!("xtask: {}", config.shell_line());
    let mut log = SerialLog::default();
    let run = qemu::run_on_terminal(config, timeout, |line| log.line(line)).context("cannot run QEMU")?;
    let outcome = Outcome::of(machine, &run, &log, timeout);
    if !matches!(outcome, Outcome::QemuDidNotStart { .. }) {
        // Held back only in case it explained a failure to start.
        eprint!("{}", run.unstarted_stderr);
    }
    if let Some(message) = outcome.message(machine) {
        eprintln!("xtask: {message}");
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// `cargo xtask run --native CRATE`.
fn run_native(repo: &Repo, args: &RunArgs, kernel: &str) -> Result<ExitCode> {
    let spec = NativeSpec {
        kernel: kernel.to_string(),
        cmdline: args.cmdline.clone().unwrap_or_default(),
        memory: args.memory.unwrap_or(DEFAULT_NATIVE_MEMORY),
    };
    spec.validate("--native")?;
    let guests = demo_guests(repo)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let elf = native::resolve_kernel(repo, "--native", "the kernel", &cwd, kernel, &guests)?;
    qemu::ensure_installed()?;
    build_guests(repo, &native::crates_to_build(&guests, kernel))?;
    let config = native::qemu_config(repo, elf.clone(), &spec, args.gdb, args.qemu_args.clone());
    if args.gdb {
        eprintln!("xtask: QEMU is waiting for gdb on localhost:1234; in another terminal run:");
        eprintln!("  {}", native_gdb_command(repo, &elf));
    }
    boot(&config, Machine::Native, args.effective_timeout())
}

/// `cargo xtask run`.
pub fn main(args: &RunArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    if let Some(kernel) = &args.native {
        return run_native(&repo, args, kernel);
    }
    let manifest = manifest_path(args.manifest.as_deref(), repo.default_manifest());
    let file = check_manifest(&repo, &manifest)?;
    qemu::ensure_installed()?;
    let hypervisor = build_binaries(&repo)?;
    let prepared = pack(&repo, file, hypervisor)?;
    // -icount: virtual time follows instructions, so a run prints the same
    // thing every time (see the scenarios).
    let config = prepared.qemu(true, args.gdb, args.qemu_args.clone());

    if args.gdb {
        eprintln!("xtask: QEMU is waiting for gdb on localhost:1234; in another terminal run:");
        eprintln!("  {}", gdb_command(&prepared));
        eprintln!("xtask: every guest is linked at 0x400000, so symbols of different guests overlap.");
    }
    boot(&config, Machine::Hypervisor, args.effective_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestFile;
    use parvus_core::manifest::Manifest;

    #[test]
    fn the_timeout_defaults_to_a_minute_and_to_none_under_gdb() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let timeout =
            |args: &[&str]| Cli::parse_from(std::iter::once("run").chain(args.iter().copied())).run.effective_timeout();
        assert_eq!(timeout(&[]), Some(DEFAULT_TIMEOUT));
        assert_eq!(timeout(&["--gdb"]), None);
        assert_eq!(timeout(&["--timeout", "5s"]), Some(Duration::from_secs(5)));
        assert_eq!(timeout(&["--gdb", "--timeout", "5m"]), Some(Duration::from_secs(300)));
        assert_eq!(timeout(&["--timeout", "none"]), None);
    }

    #[test]
    fn gdb_command_names_every_image_once() {
        let prepared = Prepared {
            file: ManifestFile {
                path: "m.toml".into(),
                shown: "m.toml".into(),
                manifest: Manifest { machine: Default::default(), domains: vec![] },
                sources: vec![],
            },
            hypervisor: "/nonexistent/parvus".into(),
            bundle: "/nonexistent/b.tar".into(),
            images: vec![
                ("a".into(), "/nonexistent/yielder".into()),
                ("b".into(), "/nonexistent/yielder".into()),
                ("c".into(), "/nonexistent/hello".into()),
            ],
        };
        assert_eq!(
            gdb_command(&prepared),
            "gdb /nonexistent/parvus -ex 'target remote :1234' -ex 'add-symbol-file /nonexistent/yielder' \
             -ex 'add-symbol-file /nonexistent/hello'"
        );
    }
}
