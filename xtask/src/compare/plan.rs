//! What compare runs: the three modes, and for each run of the workload
//! its QEMU command line.
//!
//! Each mode boots exactly what its scenario boots (`scenarios/workload-native`,
//! `workload-emulated`, `workload-pv`), so the configuration the tests check
//! is the one measured; only the workload's command line changes, to
//! `op=<name> n=<N>`. A native run takes the scenario's `[native]` table
//! with that command line; a run under the hypervisor takes the scenario's
//! manifest, with that command line as its one domain's `cmdline`, written
//! to `target/compare/manifests/<mode>-<op>-<N>.toml` and packed like any
//! manifest (into `target/bundles/<mode>-<op>-<N>.tar`).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use workload_core::ops::Op;

use crate::build::{check_manifest, pack};
use crate::cargo_build::GuestCrate;
use crate::native;
use crate::qemu::QemuConfig;
use crate::repo::Repo;
use crate::scenario::Scenario;

/// How the workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The bare-metal kernel in ring 0 under the boot shim, no hypervisor.
    Native,
    /// The same ELF in an emulated domain: trap-and-emulate, shadow paging.
    Emulated,
    /// The paravirtualized build in a paravirtualized domain.
    Paravirtualized,
}

impl Mode {
    /// Every mode, in the order of the table's columns.
    pub const ALL: [Mode; 3] = [Mode::Native, Mode::Emulated, Mode::Paravirtualized];

    /// Its name in messages, file names and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Emulated => "emulated",
            Mode::Paravirtualized => "paravirtualized",
        }
    }

    /// The scenario whose configuration it runs.
    pub fn scenario(self) -> &'static str {
        match self {
            Mode::Native => "workload-native",
            Mode::Emulated => "workload-emulated",
            Mode::Paravirtualized => "workload-pv",
        }
    }
}

/// One run of the workload: one operation at one size in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The operation.
    pub op: Op,
    /// Its iterations.
    pub n: u64,
    /// The mode.
    pub mode: Mode,
}

impl Run {
    /// The workload's command line.
    pub fn cmdline(&self) -> String {
        format!("op={} n={}", self.op.name(), self.n)
    }

    /// Its name in file names: `<mode>-<op>-<n>`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}-{}", self.mode.name(), self.op.name(), self.n)
    }

    /// Its name in messages: `<op> n=<n> <mode>`.
    pub fn describe(&self) -> String {
        format!("{} n={} {}", self.op.name(), self.n, self.mode.name())
    }
}

/// A run ready to start.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The run.
    pub run: Run,
    /// QEMU's command line.
    pub qemu: QemuConfig,
    /// The manifest written for it (runs under the hypervisor).
    pub manifest: Option<PathBuf>,
    /// The domain whose summary counters to read (runs under the hypervisor).
    pub domain: Option<String>,
}

/// What every run needs and is the same for all: the repository, the
/// built hypervisor, the demo guests and where to write manifests.
pub struct Planner<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// The hypervisor ELF.
    pub hypervisor: PathBuf,
    /// The demo-guest crates.
    pub guests: Vec<GuestCrate>,
    /// Where the manifests go.
    pub manifests_dir: PathBuf,
}

impl Planner<'_> {
    /// The QEMU command line of `run`; an error if its mode's scenario is
    /// missing or does not describe a workload run.
    pub fn prepare(&self, run: Run) -> Result<Prepared> {
        let dir = self.repo.scenarios_dir().join(run.mode.scenario());
        if !dir.is_dir() {
            bail!("{} does not exist: no scenario to take the {} run from", self.repo.show(&dir), run.mode.name());
        }
        let scenario = Scenario::load(self.repo, &dir)?;
        match (&scenario.spec.native, run.mode) {
            (Some(spec), Mode::Native) => {
                let mut spec = spec.clone();
                spec.cmdline = run.cmdline();
                let shown = self.repo.show(&scenario.spec_file());
                spec.validate(&shown)?;
                let kernel =
                    native::resolve_kernel(self.repo, &shown, "[native], field `kernel`", &dir, &spec.kernel, &self.guests)?;
                let qemu = native::qemu_config(self.repo, kernel, &spec, false, scenario.spec.qemu_args.clone());
                Ok(Prepared { run, qemu, manifest: None, domain: None })
            }
            (None, Mode::Emulated | Mode::Paravirtualized) => {
                let text = std::fs::read_to_string(scenario.manifest())
                    .with_context(|| format!("cannot read {}", self.repo.show(&scenario.manifest())))?;
                let manifest = with_cmdline(&text, &run.cmdline())
                    .map_err(|e| anyhow!("{}: {e}", self.repo.show(&scenario.manifest())))?;
                std::fs::create_dir_all(&self.manifests_dir)
                    .with_context(|| format!("cannot create {}", self.repo.show(&self.manifests_dir)))?;
                let path = self.manifests_dir.join(format!("{}.toml", run.file_stem()));
                let header = format!("# Written by cargo xtask compare from {}.\n", self.repo.show(&scenario.manifest()));
                std::fs::write(&path, header + &manifest)
                    .with_context(|| format!("cannot write {}", self.repo.show(&path)))?;
                let file = check_manifest(self.repo, &path)?;
                let domain = file.manifest.domains.first().map(|d| d.name.clone());
                let prepared = pack(self.repo, file, self.hypervisor.clone())?;
                let qemu = prepared.qemu(true, false, scenario.spec.qemu_args.clone());
                Ok(Prepared { run, qemu, manifest: Some(path), domain })
            }
            (Some(_), _) => bail!("{} is a native scenario, but the {} run needs a manifest", scenario.name, run.mode.name()),
            (None, Mode::Native) => bail!("{} has no [native] table in its scenario.toml", scenario.name),
        }
    }
}

/// `manifest` (TOML text with exactly one `[[domain]]`) with that domain's
/// `cmdline` set to `cmdline`.
pub fn with_cmdline(manifest: &str, cmdline: &str) -> Result<String> {
    let mut table: toml::Table = toml::from_str(manifest).map_err(|e| anyhow!("{}", e.message()))?;
    let domains = table.get_mut("domain").and_then(|d| d.as_array_mut()).ok_or_else(|| anyhow!("no [[domain]]"))?;
    let [domain] = domains.as_mut_slice() else {
        bail!("{} domains; the workload's manifest has one", domains.len());
    };
    let domain = domain.as_table_mut().ok_or_else(|| anyhow!("[[domain]] is not a table"))?;
    domain.insert("cmdline".into(), toml::Value::String(cmdline.into()));
    Ok(toml::to_string(&table)?)
}

/// The runs of `ops` in every mode, at `n` (each operation's own when
/// `None`) and twice that.
pub fn runs(ops: &[Op], n: Option<u64>) -> Vec<[Run; 2]> {
    let mut runs = Vec::new();
    for &op in ops {
        let n = n.unwrap_or(op.default_iterations());
        for mode in Mode::ALL {
            runs.push([Run { op, n, mode }, Run { op, n: 2 * n, mode }]);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let run = Run { op: Op::Mmap, n: 200, mode: Mode::Paravirtualized };
        assert_eq!(run.cmdline(), "op=mmap n=200");
        assert_eq!(run.file_stem(), "paravirtualized-mmap-200");
        assert_eq!(run.describe(), "mmap n=200 paravirtualized");
        assert_eq!(Mode::ALL.map(Mode::scenario), ["workload-native", "workload-emulated", "workload-pv"]);
        assert_eq!(serde_json::to_string(&Mode::Emulated).unwrap(), "\"emulated\"");
    }

    #[test]
    fn sets_the_one_domains_cmdline() {
        let text = "# comment\n[machine]\nmemory = \"128M\"\n\n[[domain]]\nname = \"workload\"\nimage = \"workload\"\n\
                    memory = \"32M\"\nmode = \"emulated\"\ncmdline = \"old\"\n";
        let out = with_cmdline(text, "op=fork n=10").unwrap();
        let parsed = parvus_core::manifest::Manifest::parse(&out).unwrap();
        assert_eq!(parsed.domains.len(), 1);
        assert_eq!(parsed.domains[0].cmdline, "op=fork n=10");
        assert_eq!(parsed.domains[0].mode, parvus_core::manifest::Mode::Emulated);
        assert_eq!(parsed.machine.memory.bytes(), 128 << 20);
        let two = "[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"1M\"\n[[domain]]\nname = \"b\"\nimage = \"x\"\nmemory = \"1M\"\n";
        assert_eq!(with_cmdline(two, "x").unwrap_err().to_string(), "2 domains; the workload's manifest has one");
        assert_eq!(with_cmdline("", "x").unwrap_err().to_string(), "no [[domain]]");
    }

    #[test]
    fn two_sizes_per_op_and_mode() {
        let runs = runs(&[Op::Fork, Op::Compute], None);
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[0], [Run { op: Op::Fork, n: 200, mode: Mode::Native }, Run { op: Op::Fork, n: 400, mode: Mode::Native }]);
        assert_eq!(runs[5][1], Run { op: Op::Compute, n: 400, mode: Mode::Paravirtualized });
        assert!(super::runs(&[Op::Syscall], Some(7)).iter().all(|[a, b]| (a.n, b.n) == (7, 14)));
    }

    #[test]
    fn prepares_the_scenarios_configuration() {
        // Needs no build: a native run only names the files it will boot.
        let repo = Repo::locate();
        let guests = crate::cargo_build::demo_guests(&repo).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let planner = Planner { repo: &repo, hypervisor: repo.hypervisor_elf(), guests, manifests_dir: dir.path().into() };
        let p = planner.prepare(Run { op: Op::Fault, n: 5, mode: Mode::Native }).unwrap();
        let line = p.qemu.shell_line();
        assert!(line.contains(&format!("-initrd {} -append 'op=fault n=5'", repo.bare_metal_elf("workload").display())), "{line}");
        assert!(line.contains("-icount shift=0,align=off,sleep=off"), "{line}");
        assert_eq!((p.manifest, p.domain), (None, None));
        let missing = Planner { repo: &Repo { root: dir.path().into() }, ..planner };
        let e = missing.prepare(Run { op: Op::Fault, n: 5, mode: Mode::Emulated }).unwrap_err().to_string();
        assert_eq!(e, "scenarios/workload-emulated does not exist: no scenario to take the emulated run from");
    }
}
