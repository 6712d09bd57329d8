//! How a `cargo xtask run` ended, from QEMU's exit status and the serial
//! log read together.
//!
//! The status alone is ambiguous: `isa-debug-exit` turns the hypervisor's
//! code `v` into QEMU status `(v << 1) | 1`, so the hypervisor's success
//! (code 0) is status 1, which is also QEMU's own status when it cannot
//! start at all (an unknown option, memory it cannot allocate). So a run
//! succeeded only if QEMU exited 1 *and* the hypervisor printed its verdict
//! line ([`ALL_AS_EXPECTED`]); status 1 with nothing on the serial port is
//! QEMU failing to start. A native kernel prints no verdict line, but it
//! prints before it exits, so there too a silent serial port means QEMU
//! never started it.
//!
//! The log also tells which domains were still running when `--timeout`
//! stopped QEMU: the hypervisor prints a line when it builds each domain
//! and one when each ends.

use std::time::Duration;

use parvus_core::system::ALL_AS_EXPECTED;

use crate::qemu::{describe_native_status, describe_status, OnTerminal, STATUS_ALL_AS_EXPECTED};

/// How every line the hypervisor prints starts (`hypervisor/kernel/src/logger.rs`).
const HYPERVISOR: &str = "parvus: ";

/// Exit status of `run` when QEMU stopped without the hypervisor's (or the
/// native kernel's) exit: it failed to start, triple-faulted or was killed.
pub const NO_HYPERVISOR_EXIT: u8 = 125;

/// Exit status of `run` when `--timeout` stopped QEMU (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;

/// What `run` gathers from the serial lines as they go by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SerialLog {
    /// Whether the serial port printed anything at all.
    any_output: bool,
    /// Whether the hypervisor printed [`ALL_AS_EXPECTED`].
    all_as_expected: bool,
    /// The domains the hypervisor built, as it names them
    /// (`domain 0 (hello)`), with whether each has ended.
    domains: Vec<(String, bool)>,
}

impl SerialLog {
    /// Takes one serial line (without its newline).
    pub fn line(&mut self, line: &str) {
        self.any_output = true;
        let Some(text) = line.strip_prefix(HYPERVISOR) else { return };
        if text == ALL_AS_EXPECTED {
            self.all_as_expected = true;
        } else if let Some((label, rest)) = domain_label(text) {
            // `domain 0 (hello): 2048 KiB, entry ...` when it is built;
            // `domain 0 (hello) exited with status 0`, `... stopped after
            // ...`, `... stopped at its CPU time limit ...` when it ends.
            if rest.starts_with(": ") {
                self.domains.push((label.to_string(), false));
            } else if rest.starts_with(" exited ") || rest.starts_with(" stopped ") {
                if let Some(domain) = self.domains.iter_mut().find(|(l, _)| l == label) {
                    domain.1 = true;
                }
            }
        }
    }

    /// The domains built and not ended, as the hypervisor names them.
    pub fn still_running(&self) -> Vec<&str> {
        self.domains.iter().filter(|(_, ended)| !ended).map(|(label, _)| label.as_str()).collect()
    }
}

/// Splits `domain 3 (name)<rest>` into the label and the rest.
fn domain_label(text: &str) -> Option<(&str, &str)> {
    let after_word = text.strip_prefix("domain ")?;
    let digits = after_word.bytes().take_while(u8::is_ascii_digit).count();
    let name = after_word[digits..].strip_prefix(" (").filter(|_| digits > 0)?;
    let close = name.find(')')?;
    let end = "domain ".len() + digits + " (".len() + close + 1;
    Some(text.split_at(end))
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor (or the native kernel) exited with this code; 0 is
    /// success.
    Exited(u8),
    /// QEMU exited 1 before anything appeared on the serial port: it never
    /// started the machine, for the reason in its stderr.
    QemuDidNotStart {
        /// QEMU's messages, on one line.
        reason: String,
    },
    /// QEMU exited 1 after the hypervisor had printed, but without the
    /// hypervisor's verdict (QEMU's messages went to the terminal).
    NoVerdict,
    /// QEMU ended without the machine's exit: status 0 (a triple fault or
    /// a reset under `-no-reboot`), a signal, or a status `isa-debug-exit`
    /// cannot give.
    NoExit(Option<i32>),
    /// `--timeout` stopped QEMU.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// How many domains the hypervisor had built.
        built: usize,
        /// The domains still running, as the hypervisor names them.
        still_running: Vec<String>,
    },
}

/// A run of the hypervisor, or of a native kernel under the boot shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// The hypervisor with a boot bundle.
    Hypervisor,
    /// A bare-metal kernel under the boot shim.
    Native,
}

impl Outcome {
    /// Judges a run from what QEMU did and what the serial port said.
    pub fn of(machine: Machine, run: &OnTerminal, log: &SerialLog, timeout: Option<Duration>) -> Outcome {
        if run.timed_out {
            let after = timeout.unwrap_or_default();
            let still_running = log.still_running().into_iter().map(String::from).collect();
            return Outcome::TimedOut { after, built: log.domains.len(), still_running };
        }
        match run.status {
            Some(STATUS_ALL_AS_EXPECTED) if !log.any_output => {
                Outcome::QemuDidNotStart { reason: one_line(&run.unstarted_stderr) }
            }
            Some(STATUS_ALL_AS_EXPECTED) if machine == Machine::Native || log.all_as_expected => Outcome::Exited(0),
            Some(STATUS_ALL_AS_EXPECTED) => Outcome::NoVerdict,
            Some(s) if s > 1 && s % 2 == 1 && s >> 1 <= 255 => Outcome::Exited((s >> 1) as u8),
            other => Outcome::NoExit(other),
        }
    }

    /// `run`'s exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::QemuDidNotStart { .. } | Outcome::NoVerdict | Outcome::NoExit(_) => NO_HYPERVISOR_EXIT,
            Outcome::TimedOut { .. } => TIMED_OUT,
        }
    }

    /// The one line `run` prints about the ending, when there is something
    /// to say: nothing after a success, which the hypervisor has announced
    /// (or the native kernel, by exiting 0).
    pub fn message(&self, machine: Machine) -> Option<String> {
        let describe = match machine {
            Machine::Hypervisor => describe_status,
            Machine::Native => describe_native_status,
        };
        match self {
            Outcome::Exited(0) => None,
            Outcome::Exited(code) => Some(describe(Some((i32::from(*code) << 1) | 1))),
            Outcome::QemuDidNotStart { reason } if reason.is_empty() => {
                Some("QEMU failed to start (it exited 1 and printed no reason)".to_string())
            }
            Outcome::QemuDidNotStart { reason } => Some(format!("QEMU failed to start: {reason}")),
            Outcome::NoVerdict => Some(
                "QEMU exited 1 without the hypervisor's verdict (QEMU's own failure status; its messages are above)"
                    .to_string(),
            ),
            Outcome::NoExit(status) => Some(describe(*status)),
            Outcome::TimedOut { after, built, still_running } => {
                let running = match machine {
                    Machine::Native => String::new(),
                    Machine::Hypervisor if *built == 0 => "; the hypervisor had not built any domain yet".to_string(),
                    Machine::Hypervisor if still_running.is_empty() => {
                        "; every domain had ended, but the hypervisor had not given its verdict".to_string()
                    }
                    Machine::Hypervisor => format!("; still running: {}", still_running.join(", ")),
                };
                Some(format!(
                    "timed out after {} and stopped QEMU (change the timeout with --timeout, e.g. --timeout 5m \
                     or --timeout none){running}",
                    show_duration(*after)
                ))
            }
        }
    }
}

/// QEMU's messages on one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A duration as `--timeout` takes it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A `--timeout`: a duration, or `none` (`None`: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Parses `--timeout`: `none`, or digits with a unit (`500ms`, `90s`,
/// `5m`, `1h`). A bare number is refused rather than guessed at.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text == "none" {
        return Ok(Timeout(None));
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} is not a duration: write it like 90s, 5m, 500ms or 1h, or none")),
    };
    let millis = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .ok_or_else(|| format!("{text:?} is not a duration: write it like 90s, 5m, 500ms or 1h, or none"))?;
    if millis == 0 {
        return Err("a timeout of 0 would stop QEMU at once: write none for no timeout".to_string());
    }
    Ok(Timeout(Some(Duration::from_millis(millis))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of the demo's log and three endings, as the hypervisor
    /// prints them.
    const LOG: &str = "parvus: Parvus 0.1.0 (ABI 3) starting\n\
        parvus: boot bundle: 3 domains, 10329 KiB\n\
        parvus: domain 0 (hello): 2048 KiB, entry 0x400000, cmdline \"greeting=hi mode=demo\"\n\
        parvus: domain 1 (spinner): 1024 KiB, entry 0x400000, cmdline \"\"\n\
        parvus: domain 2 (crash): 1024 KiB, entry 0x400000, cmdline \"\"\n\
        [hello] hello from domain 0 (hello)\n\
        [spinner] parvus: domain 1 (spinner) exited with status 0\n\
        parvus: domain 0 (hello) exited with status 0\n\
        parvus: ERROR domain 2 (crash) crashed: page fault (#PF, vector 14) at rip=0x4000b2\n\
        parvus: domain 2 (crash) stopped after #PF at 0x4000b2; the other domains run on\n";

    fn log(text: &str) -> SerialLog {
        let mut log = SerialLog::default();
        text.lines().for_each(|l| log.line(l));
        log
    }

    fn ended(status: Option<i32>, stderr: &str) -> OnTerminal {
        OnTerminal { status, timed_out: false, unstarted_stderr: stderr.to_string() }
    }

    #[test]
    fn a_domain_runs_from_its_build_line_to_its_end_line() {
        assert_eq!(
            log(LOG).still_running(),
            ["domain 1 (spinner)"],
            "a guest's line that looks like the hypervisor's is not"
        );
        let time_limit =
            format!("{LOG}parvus: domain 1 (spinner) stopped at its CPU time limit; the other domains run on\n");
        assert!(log(&time_limit).still_running().is_empty());
        assert!(log("").still_running().is_empty());
    }

    #[test]
    fn success_needs_the_verdict_line_and_status_1() {
        let all = log(&format!("{LOG}parvus: {ALL_AS_EXPECTED}\n"));
        assert_eq!(Outcome::of(Machine::Hypervisor, &ended(Some(1), ""), &all, None), Outcome::Exited(0));
        assert_eq!(
            Outcome::of(Machine::Hypervisor, &ended(Some(1), ""), &all, None).message(Machine::Hypervisor),
            None
        );
        // The verdict printed by a guest is not the hypervisor's.
        let forged = log(&format!("{LOG}[hello] parvus: {ALL_AS_EXPECTED}\n"));
        assert_eq!(Outcome::of(Machine::Hypervisor, &ended(Some(1), ""), &forged, None), Outcome::NoVerdict);
        assert_eq!(Outcome::of(Machine::Hypervisor, &ended(Some(0), ""), &all, None), Outcome::NoExit(Some(0)));
    }

    #[test]
    fn status_1_with_a_silent_serial_port_is_qemu_failing_to_start() {
        for (stderr, machine) in [
            ("qemu-system-x86_64: -bogus-option: invalid option\n", Machine::Hypervisor),
            ("qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n", Machine::Native),
        ] {
            let outcome = Outcome::of(machine, &ended(Some(1), stderr), &log(""), None);
            assert_eq!(outcome.exit_code(), NO_HYPERVISOR_EXIT);
            assert_eq!(outcome.message(machine), Some(format!("QEMU failed to start: {}", stderr.trim_end())));
        }
        let silent = Outcome::of(Machine::Hypervisor, &ended(Some(1), ""), &log(""), None);
        assert_eq!(
            silent.message(Machine::Hypervisor).unwrap(),
            "QEMU failed to start (it exited 1 and printed no reason)"
        );
        let two = Outcome::of(Machine::Hypervisor, &ended(Some(1), "a\n\n b \n"), &log(""), None);
        assert_eq!(two, Outcome::QemuDidNotStart { reason: "a; b".into() });
    }

    #[test]
    fn other_statuses_pass_the_exit_code_through() {
        let run = |status| Outcome::of(Machine::Hypervisor, &ended(status, ""), &log(LOG), None);
        assert_eq!(run(Some(3)).exit_code(), 1);
        assert_eq!(run(Some(5)).exit_code(), 2);
        assert!(run(Some(5)).message(Machine::Hypervisor).unwrap().contains("panicked"));
        for status in [Some(0), None, Some(2), Some(1001)] {
            assert_eq!(run(status), Outcome::NoExit(status));
            assert_eq!(run(status).exit_code(), NO_HYPERVISOR_EXIT);
        }
        assert!(run(Some(0)).message(Machine::Hypervisor).unwrap().contains("triple fault"));
        assert_eq!(run(Some(1)), Outcome::NoVerdict);
        let native = Outcome::of(Machine::Native, &ended(Some(1), ""), &log("pg-probe: loaded by boot-shim\n"), None);
        assert_eq!((native.exit_code(), native.message(Machine::Native)), (0, None));
        let shim = Outcome::of(Machine::Native, &ended(Some(7), ""), &log("boot-shim: error: x\n"), None);
        assert!(shim.message(Machine::Native).unwrap().contains("boot shim"));
    }

    #[test]
    fn a_timeout_names_the_domains_still_running() {
        let run = OnTerminal { status: None, timed_out: true, unstarted_stderr: String::new() };
        let outcome = Outcome::of(Machine::Hypervisor, &run, &log(LOG), Some(Duration::from_secs(60)));
        assert_eq!(outcome.exit_code(), TIMED_OUT);
        assert_eq!(
            outcome.message(Machine::Hypervisor).unwrap(),
            "timed out after 1m and stopped QEMU (change the timeout with --timeout, e.g. --timeout 5m or \
             --timeout none); still running: domain 1 (spinner)"
        );
        let booting =
            Outcome::of(Machine::Hypervisor, &run, &log("parvus: starting\n"), Some(Duration::from_millis(1500)));
        assert!(booting.message(Machine::Hypervisor).unwrap().starts_with("timed out after 1500ms "));
        assert!(booting
            .message(Machine::Hypervisor)
            .unwrap()
            .ends_with("; the hypervisor had not built any domain yet"));
        let ended = format!("{LOG}parvus: domain 1 (spinner) exited with status 0\n");
        let hung = Outcome::of(Machine::Hypervisor, &run, &log(&ended), Some(Duration::from_secs(1)));
        assert!(hung
            .message(Machine::Hypervisor)
            .unwrap()
            .ends_with("; every domain had ended, but the hypervisor had not given its verdict"));
    }

    #[test]
    fn timeouts() {
        let ok = |d: Duration| Ok(Timeout(Some(d)));
        assert_eq!(parse_timeout("90s"), ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1h"), ok(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("250ms"), ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("none"), Ok(Timeout(None)));
        for bad in ["90", "9 s", "s", "", "1.5m", "-1s", "99999999999999999999h"] {
            assert!(parse_timeout(bad).unwrap_err().contains("is not a duration"), "{bad:?}");
        }
        assert!(parse_timeout("0s").unwrap_err().contains("write none"));
        for d in ["90s", "5m", "1h", "250ms", "1500ms"] {
            assert_eq!(show_duration(parse_timeout(d).unwrap().0.unwrap()), d);
        }
    }
}
