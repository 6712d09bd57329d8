//! QEMU scenarios: what a test run expects, and how its serial log is
//! judged.
//!
//! A scenario is a folder `scenarios/<name>/` with:
//!
//! - `manifest.toml`: the domains to boot; or, for a *native* run (a
//!   bare-metal kernel under the boot shim, no hypervisor; see
//!   [`crate::native`]), a `[native]` table in `scenario.toml` instead;
//! - `expected.txt`: lines that must appear in the serial log, in this
//!   order, each as a substring of one serial line (blank lines and lines
//!   starting with `#` are ignored; surrounding spaces are trimmed);
//! - `scenario.toml` (optional): `timeout_seconds` (default 30),
//!   `qemu_exit` (QEMU's expected status, default 1 = every domain ended as
//!   expected), `allow` (alarm markers this scenario may print, e.g.
//!   `["crashed"]`), `qemu_args` (extra QEMU arguments), `raw_bundle`
//!   (a file to boot as the bundle as it is, to test the hypervisor's own
//!   checks) and `[native]` (`kernel`, `cmdline`, `memory`).
//!
//! A run passes only if every expected line appears in order, no alarm line
//! (`parvus: PANIC`, `parvus: FATAL`, ` crashed:`, ` FINDING: `; in a
//! native run also `boot-shim: error:`, `panic:` and `unhandled
//! exception:`) appears unless `expected.txt` or `allow` names it, the
//! machine is conserved, and QEMU exits by itself with the expected status
//! before the timeout. A triple fault makes QEMU exit 0, which therefore
//! fails.
//!
//! *Conserved*: the hypervisor prints its final summary only once every
//! domain has ended, and then a [`CONSERVATION`] line with the free frames
//! and the heap in use before the first domain was built and at the end.
//! They must be equal: every frame a domain had is free again, and every
//! heap byte it made the hypervisor hold is freed (one leaked allocation
//! fails the run). A summary without that line fails too.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use crate::native::NativeSpec;
use crate::qemu::{describe_native_status, describe_status, STATUS_ALL_AS_EXPECTED};
use crate::repo::Repo;

/// Serial lines that mean something went wrong, unless a scenario expects
/// them: the hypervisor panicked or faulted, a domain crashed, or a guest
/// that checks the hypervisor (`hypercall-fuzz`) found a result the ABI
/// does not allow.
pub const ALARMS: [&str; 4] = ["parvus: PANIC", "parvus: FATAL", " crashed:", " FINDING: "];

/// The line that follows the hypervisor's final summary.
pub const CONSERVATION: &str = "parvus: conservation: ";

/// The line that starts the hypervisor's final summary.
const SUMMARY: &str = "parvus: summary of ";

/// More alarms for native runs: the boot shim could not start the kernel,
/// the kernel panicked (bare-rt's panic handler), or it took an exception
/// it had no handler for (bare-rt's report).
pub const NATIVE_ALARMS: [&str; 3] = ["boot-shim: error:", "panic:", "unhandled exception:"];

/// `scenario.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// QEMU is killed (and the scenario fails) after this long.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The QEMU exit status that passes.
    #[serde(default = "default_qemu_exit")]
    pub qemu_exit: i32,
    /// Alarm markers this scenario may print (substrings of [`ALARMS`]).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Extra QEMU arguments.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// Boot this file (relative to the scenario folder) as the bundle,
    /// as it is, instead of the one packed from `manifest.toml`: for
    /// testing that the hypervisor itself refuses a bad bundle (xtask
    /// would refuse it first). The manifest still sets the machine.
    #[serde(default)]
    pub raw_bundle: Option<String>,
    /// Boot a bare-metal kernel natively instead of a manifest.
    #[serde(default)]
    pub native: Option<NativeSpec>,
}

fn default_timeout() -> u64 {
    30
}

fn default_qemu_exit() -> i32 {
    STATUS_ALL_AS_EXPECTED
}

impl Default for ScenarioSpec {
    fn default() -> Self {
        ScenarioSpec {
            timeout_seconds: default_timeout(),
            qemu_exit: default_qemu_exit(),
            allow: Vec::new(),
            qemu_args: Vec::new(),
            raw_bundle: None,
            native: None,
        }
    }
}

/// One line of `expected.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedLine {
    /// Its 1-based line number in `expected.txt`.
    pub file_line: usize,
    /// The text that must appear.
    pub text: String,
}

/// A scenario found on disk.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Folder name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The expected lines.
    pub expected: Vec<ExpectedLine>,
    /// `scenario.toml`, or the defaults.
    pub spec: ScenarioSpec,
}

impl Scenario {
    /// Its manifest.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("manifest.toml")
    }

    /// `scenario.toml`.
    pub fn spec_file(&self) -> PathBuf {
        self.dir.join("scenario.toml")
    }

    /// Reads a scenario folder: a manifest scenario, or a native one.
    pub fn load(repo: &Repo, dir: &Path) -> Result<Scenario> {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let expected_path = dir.join("expected.txt");
        let expected = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("cannot read {}", repo.show(&expected_path)))?;
        let spec_path = dir.join("scenario.toml");
        let spec = if spec_path.is_file() {
            let text = std::fs::read_to_string(&spec_path)
                .with_context(|| format!("cannot read {}", repo.show(&spec_path)))?;
            parse_spec(&text).map_err(|e| anyhow!("{}{e}", repo.show(&spec_path)))?
        } else {
            ScenarioSpec::default()
        };
        let has_manifest = dir.join("manifest.toml").is_file();
        match (&spec.native, has_manifest) {
            (Some(native), false) => native.validate(&repo.show(&spec_path))?,
            (None, true) => {}
            (Some(_), true) => {
                return Err(anyhow!(
                    "{}: a scenario has either a [native] table or a manifest.toml, not both",
                    repo.show(&spec_path)
                ))
            }
            (None, false) => {
                return Err(anyhow!(
                    "{}: no manifest.toml and no [native] table: nothing to boot",
                    repo.show(&dir.join("scenario.toml"))
                ))
            }
        }
        Ok(Scenario { name, dir: dir.to_path_buf(), expected: parse_expected(&expected), spec })
    }
}

/// Parses `scenario.toml`; the error starts with `:line: ` when known.
fn parse_spec(text: &str) -> Result<ScenarioSpec, String> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!(":{line}: {}", e.message()),
            None => format!(": {}", e.message()),
        }
    })
}

/// Every scenario (a folder with `expected.txt` and a `manifest.toml` or a
/// `scenario.toml`) whose name contains `filter`, sorted by name.
pub fn discover(repo: &Repo, filter: Option<&str>) -> Result<Vec<Scenario>> {
    let root = repo.scenarios_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("cannot list {}", repo.show(&root)))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| {
            d.join("expected.txt").is_file() && (d.join("manifest.toml").is_file() || d.join("scenario.toml").is_file())
        })
        .filter(|d| filter.is_none_or(|f| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(f))))
        .collect();
    dirs.sort();
    dirs.iter().map(|d| Scenario::load(repo, d)).collect()
}

/// The lines of `expected.txt` that must appear.
pub fn parse_expected(text: &str) -> Vec<ExpectedLine> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(file_line, text)| ExpectedLine { file_line, text: text.to_string() })
        .collect()
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// QEMU did not exit in time and was killed (a hang).
    Timeout {
        /// The limit.
        seconds: u64,
    },
    /// An expected line did not appear (after the previous one).
    MissingLine {
        /// The first line not found.
        expected: ExpectedLine,
        /// The serial line where the previous expected line was found.
        after_serial_line: Option<usize>,
    },
    /// An alarm line appeared that the scenario does not expect.
    Alarm {
        /// The marker found.
        marker: &'static str,
        /// 1-based serial line number.
        serial_line: usize,
        /// The line.
        text: String,
    },
    /// The final summary shows frames or heap not given back (or lacks
    /// the conservation line).
    NotConserved {
        /// 1-based serial line number (of the summary, if the line is missing).
        serial_line: usize,
        /// The line, or what is missing.
        text: String,
    },
    /// QEMU exited with another status.
    ExitStatus {
        /// The expected status.
        expected: i32,
        /// What it was (`None`: killed).
        got: Option<i32>,
        /// A native run (the statuses are the kernel's, not the hypervisor's).
        native: bool,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout { seconds } => write!(f, "QEMU did not exit within {seconds} s and was killed (a hang?)"),
            Failure::MissingLine { expected, after_serial_line } => {
                write!(f, "missing line (expected.txt:{}): {:?}", expected.file_line, expected.text)?;
                match after_serial_line {
                    Some(n) => write!(f, ", looked for after serial line {n}"),
                    None => Ok(()),
                }
            }
            Failure::Alarm { marker, serial_line, text } => {
                write!(f, "serial line {serial_line} has {marker:?}, which the scenario does not expect: {text}")
            }
            Failure::NotConserved { serial_line, text } => {
                write!(f, "serial line {serial_line}: the machine is not back at its boot level: {text}")
            }
            Failure::ExitStatus { expected, got, native } => {
                let describe = if *native { describe_native_status } else { describe_status };
                write!(
                    f,
                    "QEMU exit status {} ({}), expected {expected} ({})",
                    got.map_or("none".to_string(), |s| s.to_string()),
                    describe(*got),
                    describe(Some(*expected))
                )
            }
        }
    }
}

/// Judges one run; an empty list means it passed.
pub fn judge(
    expected: &[ExpectedLine],
    spec: &ScenarioSpec,
    serial: &str,
    status: Option<i32>,
    timed_out: bool,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    if timed_out {
        failures.push(Failure::Timeout { seconds: spec.timeout_seconds });
    }
    let lines: Vec<&str> = serial.lines().collect();

    let mut next = 0;
    let mut last_found = None;
    for want in expected {
        match lines[next..].iter().position(|l| l.contains(&want.text)) {
            Some(offset) => {
                last_found = Some(next + offset + 1);
                next += offset + 1;
            }
            None => {
                failures.push(Failure::MissingLine { expected: want.clone(), after_serial_line: last_found });
                break;
            }
        }
    }

    let allowed = |marker: &str| {
        spec.allow.iter().any(|a| !a.is_empty() && marker.contains(a.as_str()))
            || expected.iter().any(|e| e.text.contains(marker.trim()))
    };
    let native: &[&'static str] = if spec.native.is_some() { &NATIVE_ALARMS } else { &[] };
    'lines: for (i, line) in lines.iter().enumerate() {
        for &marker in ALARMS.iter().chain(native) {
            if line.contains(marker) && !allowed(marker) {
                failures.push(Failure::Alarm { marker, serial_line: i + 1, text: line.to_string() });
                break 'lines;
            }
        }
    }

    if let Some(failure) = conservation(&lines) {
        failures.push(failure);
    }

    if !timed_out && status != Some(spec.qemu_exit) {
        failures.push(Failure::ExitStatus { expected: spec.qemu_exit, got: status, native: spec.native.is_some() });
    }
    failures
}

/// Checks the conservation line after the final summary, if the run
/// printed one: `None` if the frames and the heap are back at their boot
/// level.
fn conservation(lines: &[&str]) -> Option<Failure> {
    let summary = lines.iter().position(|l| l.contains(SUMMARY))?;
    let Some(at) = lines[summary..].iter().position(|l| l.contains(CONSERVATION)).map(|i| summary + i) else {
        let text = "the summary has no conservation line".to_string();
        return Some(Failure::NotConserved { serial_line: summary + 1, text });
    };
    let line = lines[at];
    let numbers: Vec<u64> = line[line.find(CONSERVATION)? + CONSERVATION.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [frames_boot, frames_end, heap_boot, heap_end] if frames_boot == frames_end && heap_boot == heap_end => None,
        _ => Some(Failure::NotConserved { serial_line: at + 1, text: line.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "parvus: booting\n[hello] hello from domain 0\n[a] 1\n[b] 1\n[a] 2\n\
                       parvus: domain 3 (crash) crashed: page fault\nparvus: all domains ended as expected\n";

    fn expected(lines: &[&str]) -> Vec<ExpectedLine> {
        parse_expected(&lines.join("\n"))
    }

    #[test]
    fn parses_expected_lines() {
        let lines = parse_expected("# comment\n\n  [a] 1  \n#x\n[b] 1\n");
        assert_eq!(
            lines,
            [ExpectedLine { file_line: 3, text: "[a] 1".into() }, ExpectedLine { file_line: 5, text: "[b] 1".into() }]
        );
    }

    #[test]
    fn passes_when_lines_are_in_order() {
        let want = expected(&["[hello] hello", "[a] 1", "[b] 1", "[a] 2", "crashed: page fault", "all domains ended"]);
        assert_eq!(judge(&want, &ScenarioSpec::default(), LOG, Some(1), false), []);
    }

    #[test]
    fn fails_on_order() {
        let want = expected(&["[b] 1", "[a] 1", "crashed:"]);
        let failures = judge(&want, &ScenarioSpec::default(), LOG, Some(1), false);
        assert_eq!(
            failures,
            [Failure::MissingLine {
                expected: ExpectedLine { file_line: 2, text: "[a] 1".into() },
                after_serial_line: Some(4)
            }]
        );
        assert_eq!(failures[0].to_string(), "missing line (expected.txt:2): \"[a] 1\", looked for after serial line 4");
    }

    #[test]
    fn each_serial_line_matches_once() {
        let want = expected(&["[a] 1", "[a] 1", "crashed:"]);
        assert!(matches!(
            judge(&want, &ScenarioSpec::default(), LOG, Some(1), false)[..],
            [Failure::MissingLine { .. }]
        ));
    }

    #[test]
    fn changing_an_expected_line_fails() {
        let want = expected(&["[hello] hello from domain 1"]);
        assert!(matches!(
            judge(&want, &ScenarioSpec::default(), "[hello] hello from domain 0\n", Some(1), false)[..],
            [Failure::MissingLine { after_serial_line: None, .. }]
        ));
    }

    #[test]
    fn unexpected_crash_is_an_alarm() {
        let want = expected(&["[hello] hello"]);
        let failures = judge(&want, &ScenarioSpec::default(), LOG, Some(1), false);
        assert_eq!(
            failures,
            [Failure::Alarm {
                marker: " crashed:",
                serial_line: 6,
                text: "parvus: domain 3 (crash) crashed: page fault".into()
            }]
        );
        let spec = ScenarioSpec { allow: vec!["crashed".into()], ..Default::default() };
        assert_eq!(judge(&want, &spec, LOG, Some(1), false), []);
    }

    #[test]
    fn panic_fails_even_with_all_lines() {
        let log = "[hello] hi\nparvus: PANIC at src/main.rs:3: oops\n";
        let failures = judge(&expected(&["[hello] hi"]), &ScenarioSpec::default(), log, Some(5), false);
        assert_eq!(failures.len(), 2);
        assert!(matches!(failures[0], Failure::Alarm { marker: "parvus: PANIC", serial_line: 2, .. }));
        assert!(failures[1].to_string().starts_with("QEMU exit status 5 (the hypervisor panicked"));
        let finding = "[fuzz] fuzz: FINDING: seed=1 call 7: null() -> Ok(0x1): not the value the ABI promises\n";
        assert!(matches!(
            judge(&[], &ScenarioSpec::default(), finding, Some(1), false)[..],
            [Failure::Alarm { marker: " FINDING: ", serial_line: 1, .. }]
        ));
        let fatal = "parvus: FATAL page fault in the hypervisor\n";
        assert!(matches!(
            judge(&[], &ScenarioSpec::default(), fatal, Some(1), false)[..],
            [Failure::Alarm { marker: "parvus: FATAL", .. }]
        ));
    }

    const CONSERVED: &str = "parvus: summary of 1 domain:\n\
        parvus:   0   hello          exited 0   expected exit 0     ok\n\
        parvus: conservation: free frames 29158 at boot, 29158 at the end; heap in use 799632 bytes at boot, 799632 at the end\n\
        parvus: all domains ended as expected\n";

    #[test]
    fn a_summary_must_show_every_frame_and_heap_byte_back() {
        let spec = ScenarioSpec::default();
        assert_eq!(judge(&[], &spec, CONSERVED, Some(1), false), []);
        let leaked_byte = CONSERVED.replace("799632 at the end", "799648 at the end");
        assert_eq!(
            judge(&[], &spec, &leaked_byte, Some(1), false),
            [Failure::NotConserved { serial_line: 3, text: leaked_byte.lines().nth(2).unwrap().to_string() }]
        );
        let kept_frame = CONSERVED.replace("29158 at the end", "29157 at the end");
        let failures = judge(&[], &spec, &kept_frame, Some(1), false);
        assert!(matches!(&failures[..], [Failure::NotConserved { serial_line: 3, .. }]), "{failures:?}");
        assert!(failures[0].to_string().starts_with("serial line 3: the machine is not back at its boot level: parvus: conservation:"));
        let missing: String = CONSERVED.lines().filter(|l| !l.contains(CONSERVATION)).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            judge(&[], &spec, &missing, Some(1), false),
            [Failure::NotConserved { serial_line: 1, text: "the summary has no conservation line".into() }]
        );
        // A run that never reaches the summary (a boot refused, a native
        // kernel) has nothing to conserve.
        assert_eq!(judge(&[], &spec, "parvus: bundle: not a tar archive\n", Some(1), false), []);
    }

    #[test]
    fn triple_fault_fails() {
        let want = expected(&["[hello] hello"]);
        let failures =
            judge(&want, &ScenarioSpec { allow: vec!["crashed".into()], ..Default::default() }, LOG, Some(0), false);
        assert_eq!(failures, [Failure::ExitStatus { expected: 1, got: Some(0), native: false }]);
        assert!(failures[0].to_string().contains("triple fault"));
    }

    #[test]
    fn timeout_fails() {
        let spec = ScenarioSpec { timeout_seconds: 3, allow: vec!["crashed".into()], ..Default::default() };
        let failures = judge(&expected(&["[hello] hello"]), &spec, LOG, None, true);
        assert_eq!(failures, [Failure::Timeout { seconds: 3 }]);
    }

    #[test]
    fn other_exit_status_can_be_expected() {
        let spec = ScenarioSpec { qemu_exit: 3, allow: vec!["crashed".into()], ..Default::default() };
        assert_eq!(judge(&[], &spec, LOG, Some(3), false), []);
        assert_eq!(
            judge(&[], &spec, LOG, Some(1), false),
            [Failure::ExitStatus { expected: 3, got: Some(1), native: false }]
        );
    }

    fn native_spec() -> ScenarioSpec {
        let native = NativeSpec { kernel: "k".into(), cmdline: String::new(), memory: crate::native::DEFAULT_NATIVE_MEMORY };
        ScenarioSpec { native: Some(native), ..Default::default() }
    }

    #[test]
    fn native_runs_have_more_alarms() {
        let log = "pg-probe: loaded by boot-shim\npanic: oops at src/main.rs:3\n";
        let want = expected(&["loaded by boot-shim"]);
        assert_eq!(judge(&want, &ScenarioSpec::default(), log, Some(1), false), []);
        let failures = judge(&want, &native_spec(), log, Some(203), false);
        assert!(matches!(failures[0], Failure::Alarm { marker: "panic:", serial_line: 2, .. }), "{failures:?}");
        assert_eq!(
            failures[1].to_string(),
            "QEMU exit status 203 (the kernel exited 101), expected 1 (the kernel exited 0)"
        );
        let shim = "boot-shim: error: the kernel module is not an ELF file\n";
        assert!(matches!(judge(&[], &native_spec(), shim, Some(7), false)[0], Failure::Alarm { marker: "boot-shim: error:", .. }));
        let spec = ScenarioSpec { qemu_exit: 7, allow: vec!["boot-shim".into()], ..native_spec() };
        assert_eq!(judge(&[], &spec, shim, Some(7), false), []);
        let fault = "unhandled exception: page fault (#PF, vector 14), error code 0x2, rip=0x201000 (ring 0)\n";
        assert!(matches!(judge(&[], &native_spec(), fault, Some(1), false)[0], Failure::Alarm { .. }));
    }

    #[test]
    fn a_scenario_boots_a_manifest_or_a_native_kernel() {
        let repo = Repo::locate();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("expected.txt"), "x\n").unwrap();
        std::fs::write(dir.path().join("scenario.toml"), "timeout_seconds = 3\n").unwrap();
        let e = Scenario::load(&repo, dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("scenario.toml: no manifest.toml and no [native] table: nothing to boot"), "{e}");
        std::fs::write(dir.path().join("scenario.toml"), "[native]\nkernel = \"k\"\n").unwrap();
        assert!(Scenario::load(&repo, dir.path()).unwrap().spec.native.is_some());
        std::fs::write(dir.path().join("manifest.toml"), "").unwrap();
        let e = Scenario::load(&repo, dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("scenario.toml: a scenario has either a [native] table or a manifest.toml, not both"), "{e}");
    }

    #[test]
    fn scenario_toml() {
        assert_eq!(parse_spec("").unwrap(), ScenarioSpec::default());
        let spec =
            parse_spec("timeout_seconds = 5\nqemu_exit = 3\nallow = [\"crashed\"]\nqemu_args = [\"-d\", \"int\"]\n")
                .unwrap();
        assert_eq!(spec.timeout_seconds, 5);
        assert_eq!(spec.qemu_args, ["-d", "int"]);
        let e = parse_spec("timeout_seconds = 5\ntimeout = 3\n").unwrap_err();
        assert!(e.starts_with(":2: unknown field `timeout`"), "{e}");
        let spec = parse_spec("[native]\nkernel = \"pg-probe-bare\"\ncmdline = \"x=1\"\n").unwrap();
        assert_eq!(spec.native.map(|n| (n.kernel, n.cmdline)), Some(("pg-probe-bare".into(), "x=1".into())));
        let e = parse_spec("[native]\nkernel = \"k\"\nkernels = 2\n").unwrap_err();
        assert!(e.starts_with(":3: unknown field `kernels`"), "{e}");
    }

    #[test]
    fn the_demo_scenario_is_found() {
        let repo = Repo::locate();
        let all = discover(&repo, None).unwrap();
        let demo = all.iter().find(|s| s.name == "demo").expect("scenarios/demo");
        assert!(!demo.expected.is_empty());
        assert!(demo.manifest().is_file());
        let native = all.iter().find(|s| s.name == "pg-probe-native").expect("scenarios/pg-probe-native");
        assert_eq!(native.spec.native.as_ref().map(|n| n.kernel.as_str()), Some("pg-probe-bare"));
        assert!(discover(&repo, Some("no-such-scenario-xyz")).unwrap().is_empty());
    }
}
