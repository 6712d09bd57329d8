//! `cargo xtask fuzz [--seed N] [--calls N] [--runs K] [--jobs J]`: the
//! fuzzing scenario, `scenarios/hypercall-fuzz`, with other seeds and sizes.
//!
//! Each run is that scenario with the fuzzer's seed and number of calls
//! changed, in its manifest and in its expected lines alike: its manifest
//! is written to `target/fuzz/<run>/manifest.toml`, and it is built,
//! booted and judged exactly as `cargo xtask test` judges the scenario (so
//! a `FINDING` line, a panic, a crash, a damaged victim, a hang or a
//! missing line fails it). A failed run is reported with its serial log and
//! the one command that replays it; a seed names a run exactly, because
//! runs are under `-icount` and the fuzzer draws everything from its seed.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::repo::Repo;
use crate::scenario::{parse_expected, Scenario};
use crate::test::run_scenarios;

/// The scenario every run is made from.
pub const SCENARIO: &str = "hypercall-fuzz";

/// Arguments of `fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seed of the first run (each next run: one more). Default: random
    /// seeds.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Hypercalls per run (default: as many as the scenario makes).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: Option<u64>,
    /// Runs.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Runs at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
}

/// What a run changes: the fuzzer's seed and number of calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// `seed=` on the fuzzer's command line.
    pub seed: u64,
    /// `calls=` on it.
    pub calls: u64,
}

impl Knobs {
    /// The knobs on a command line (`... seed=1 calls=100000 ...`).
    pub fn in_cmdline(cmdline: &str) -> Option<Knobs> {
        let value = |key: &str| {
            cmdline.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        Some(Knobs { seed: value("seed")?, calls: value("calls")? })
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!("cargo xtask fuzz --seed {} --calls {}", self.seed, self.calls)
    }
}

/// `text` with each way the scenario writes its knobs (`seed=1`, `seed 1`,
/// `calls=100000`, `100000 calls`) changed to the run's, whole words only.
pub fn retarget(text: &str, from: Knobs, to: Knobs) -> String {
    let pairs = [
        (format!("seed={}", from.seed), format!("seed={}", to.seed)),
        (format!("seed {}", from.seed), format!("seed {}", to.seed)),
        (format!("calls={}", from.calls), format!("calls={}", to.calls)),
        (format!("{} calls", from.calls), format!("{} calls", to.calls)),
    ];
    pairs.iter().fold(text.to_string(), |text, (old, new)| replace_words(&text, old, new))
}

/// `text` with every `old` that is not part of a longer word replaced.
fn replace_words(text: &str, old: &str, new: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(old) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + old.len()..].chars().next();
        out.push_str(&rest[..at]);
        out.push_str(if is_word(before) || is_word(after) { old } else { new });
        rest = &rest[at + old.len()..];
    }
    out.push_str(rest);
    out
}

/// A random seed (from the system's random source).
fn random_seed() -> Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a random seed (give one with --seed)")?;
    // Below 2^53, so that the seed reads the same wherever it is pasted.
    Ok(u64::from_le_bytes(bytes) >> 11)
}

/// The scenario's knobs: those on the fuzzer's command line in its manifest.
fn scenario_knobs(repo: &Repo, manifest: &Path) -> Result<Knobs> {
    let shown = repo.show(manifest);
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {shown}"))?;
    let parsed = parvus_core::manifest::Manifest::parse(&text).map_err(|e| anyhow!("{}", e.in_file(&shown)))?;
    parsed
        .domains
        .iter()
        .find_map(|d| Knobs::in_cmdline(&d.cmdline))
        .ok_or_else(|| anyhow!("{shown}: no domain's cmdline says seed=<n> calls=<n>"))
}

/// `cargo xtask fuzz`.
pub fn main(args: &FuzzArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    let template = Scenario::load(&repo, &repo.scenarios_dir().join(SCENARIO))?;
    let manifest_text = std::fs::read_to_string(template.manifest())?;
    let expected_text = std::fs::read_to_string(template.dir.join("expected.txt"))?;
    let from = scenario_knobs(&repo, &template.manifest())?;
    let calls = args.calls.unwrap_or(from.calls);
    let mut runs = Vec::new();
    for k in 0..args.runs {
        let seed = match args.seed {
            Some(seed) => seed.wrapping_add(k),
            None => random_seed()?,
        };
        let to = Knobs { seed, calls };
        let name = format!("{SCENARIO}-seed-{seed}-calls-{calls}");
        let dir = repo.root.join("target/fuzz").join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", repo.show(&dir)))?;
        std::fs::write(dir.join("manifest.toml"), retarget(&manifest_text, from, to))?;
        let mut spec = template.spec.clone();
        // A bigger run takes longer: the scenario's timeout per its calls.
        spec.timeout_seconds = spec.timeout_seconds.saturating_mul(calls.div_ceil(from.calls).max(1));
        let expected = parse_expected(&retarget(&expected_text, from, to));
        runs.push((to, Scenario { name, dir, expected, spec }));
    }
    for (to, _) in &runs {
        println!("xtask: fuzz run: seed {}, {} calls", to.seed, to.calls);
    }
    let scenarios: Vec<Scenario> = runs.iter().map(|(_, s)| s.clone()).collect();
    let outcomes = run_scenarios(&repo, scenarios, args.jobs as usize)?;
    let failed: Vec<Knobs> =
        runs.iter().zip(&outcomes).filter(|(_, outcome)| !outcome.passed).map(|((to, _), _)| *to).collect();
    for to in &failed {
        println!("xtask: seed {} FAILED; replay it with: {}", to.seed, to.replay_command());
    }
    println!("{} runs, {} failed", runs.len(), failed.len());
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_are_read_from_a_command_line() {
        assert_eq!(Knobs::in_cmdline("seed=1 calls=100000 victim=0"), Some(Knobs { seed: 1, calls: 100_000 }));
        assert_eq!(Knobs::in_cmdline("victim=0 calls=5 seed=18446744073709551615").map(|k| k.seed), Some(u64::MAX));
        assert_eq!(Knobs::in_cmdline("seed=1"), None);
        assert_eq!(Knobs::in_cmdline("seed=x calls=1"), None);
    }

    #[test]
    fn retargeting_changes_whole_words_only() {
        let (from, to) = (Knobs { seed: 1, calls: 100_000 }, Knobs { seed: 42, calls: 7 });
        assert_eq!(
            retarget("cmdline = \"seed=1 calls=100000 victim=0\"", from, to),
            "cmdline = \"seed=42 calls=7 victim=0\""
        );
        assert_eq!(
            retarget("fuzz: seed 1, 100000 calls, beside\nfuzz: seed 1: 100000 calls made", from, to),
            "fuzz: seed 42, 7 calls, beside\nfuzz: seed 42: 7 calls made"
        );
        assert_eq!(retarget("seed=10 seed 12 1100000 calls calls=1000000", from, to), "seed=10 seed 12 1100000 calls calls=1000000");
    }

    #[test]
    fn the_scenario_has_knobs_and_retargets() {
        let repo = Repo::locate();
        let scenario = Scenario::load(&repo, &repo.scenarios_dir().join(SCENARIO)).unwrap();
        let from = scenario_knobs(&repo, &scenario.manifest()).unwrap();
        let to = Knobs { seed: from.seed + 1, calls: from.calls + 1 };
        let expected = std::fs::read_to_string(scenario.dir.join("expected.txt")).unwrap();
        let changed = parse_expected(&retarget(&expected, from, to));
        let mentions = |k: Knobs| changed.iter().filter(|l| l.text.contains(&format!("seed {}", k.seed))).count();
        assert!(mentions(to) >= 2, "the expected lines name the seed: {changed:?}");
        assert_eq!(mentions(from), 0);
        assert_eq!(to.replay_command(), format!("cargo xtask fuzz --seed {} --calls {}", to.seed, to.calls));
    }
}
