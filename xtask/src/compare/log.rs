//! Reading one run's serial log: the workload's result and bench lines, the
//! hypervisor's summary counters, and what went wrong if something did.
//!
//! The workload prints, in every mode (the hypervisor prefixes a guest's
//! lines with `[<domain>] `, which is skipped by looking for `workload: `):
//!
//! ```text
//! workload: fork ok children=200 checksum=0xfe2b2f6ff29ebd8c
//! workload: bench fork n=200 tsc=3952123
//! ```
//!
//! and the hypervisor, at the end, one summary line per domain and, for an
//! emulated domain, a line of exits by cause:
//!
//! ```text
//! parvus:   0   workload   exited 0  expected exit 0  ok  cpu=6.271ms weight=256 hypercalls=1342 preemptions=0 bounces=400
//! parvus:       emulated: exits=9 (instructions=4 io=5 ...) shadow: tables=3 resets=0 frames=3
//! ```
//!
//! Every `key=<whole number>` of those two lines becomes a counter (the
//! shadow's get a `shadow-` prefix: `shadow-tables`); `cpu=6.271ms` is not a
//! whole number and is left out (it is time, which the instruction counts
//! already measure), and so is `weight=` (a setting).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use workload_core::ops::Op;

use crate::scenario::{ALARMS, NATIVE_ALARMS};

/// Where the workload's own text starts in a serial line.
const WORKLOAD_MARK: &str = "workload: ";

/// Starts the hypervisor's explanation of a crash (after `parvus: ERROR`).
const WHY_MARK: &str = " why: ";

/// Marks the counters of the shadow page tables in the emulated line.
const SHADOW_MARK: &str = "shadow:";

/// A `workload: bench <op> n=<N> tsc=<ticks>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bench {
    /// The operation's name.
    pub op: String,
    /// Its iterations.
    pub n: u64,
    /// Instructions the measuring program counted around its loop.
    pub tsc: u64,
}

/// What one good run measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunData {
    /// The result line, from `workload: ` on (the same in every mode).
    pub results: String,
    /// The bench line's instruction count.
    pub tsc: u64,
    /// The summary's counters (empty for a native run).
    pub counters: BTreeMap<String, u64>,
}

/// The workload's text of a serial line (from `workload: ` on), if any.
pub fn workload_text(line: &str) -> Option<&str> {
    line.find(WORKLOAD_MARK).map(|at| &line[at..])
}

/// Parses a bench line: `None` when `line` is none, an error when it is a
/// malformed one.
pub fn parse_bench(line: &str) -> Option<Result<Bench>> {
    let text = workload_text(line)?;
    let rest = text[WORKLOAD_MARK.len()..].strip_prefix("bench ")?;
    Some(bench_fields(rest).map_err(|e| anyhow!("malformed bench line {text:?}: {e}")))
}

fn bench_fields(rest: &str) -> Result<Bench> {
    let mut words = rest.split_whitespace();
    let op = words.next().ok_or_else(|| anyhow!("no operation"))?.to_string();
    let (mut n, mut tsc) = (None, None);
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| anyhow!("{word:?} is not key=value"))?;
        let number = value.parse::<u64>().map_err(|_| anyhow!("{key}={value:?} is not a number"))?;
        match key {
            "n" => n = Some(number),
            "tsc" => tsc = Some(number),
            _ => bail!("unknown key {key:?}"),
        }
    }
    Ok(Bench { op, n: n.ok_or_else(|| anyhow!("no n="))?, tsc: tsc.ok_or_else(|| anyhow!("no tsc="))? })
}

/// Whole numbers of the summary that are settings, not counters.
const NOT_COUNTERS: [&str; 1] = ["weight"];

/// Adds every `key=<whole number>` word of `text` to `into`, with `prefix`
/// before the key; parentheses around words are ignored.
fn add_counters(text: &str, prefix: &str, into: &mut BTreeMap<String, u64>) {
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c| c == '(' || c == ')');
        if let Some((key, value)) = word.split_once('=').filter(|(key, _)| !NOT_COUNTERS.contains(key)) {
            if let Ok(number) = value.parse::<u64>() {
                into.insert(format!("{prefix}{key}"), number);
            }
        }
    }
}

/// The counters of `domain` in the hypervisor's summary: its summary line
/// and, if it is emulated, the exits line right after it. `None` if the
/// log has no summary line for it.
pub fn summary_counters(serial: &str, domain: &str) -> Option<BTreeMap<String, u64>> {
    let mut lines = serial.lines();
    while let Some(line) = lines.next() {
        let Some(at) = line.find("parvus: ") else { continue };
        let words: Vec<&str> = line[at + "parvus: ".len()..].split_whitespace().collect();
        let is_ours = words.len() > 2 && words[0].parse::<u16>().is_ok() && words[1] == domain;
        if !is_ours || !line.contains(" hypercalls=") {
            continue;
        }
        let mut counters = BTreeMap::new();
        add_counters(&line[at..], "", &mut counters);
        if let Some(next) = lines.next().filter(|l| l.contains("emulated: ")) {
            let text = &next[next.find("emulated: ").unwrap_or(0)..];
            let (exits, shadow) = text.split_once(SHADOW_MARK).unwrap_or((text, ""));
            add_counters(exits, "", &mut counters);
            add_counters(shadow, "shadow-", &mut counters);
        }
        return Some(counters);
    }
    None
}

/// The first line that says something went wrong: an alarm of the
/// hypervisor or of a native kernel, or a `FAILED` line of the workload.
pub fn first_alarm(serial: &str) -> Option<&str> {
    serial.lines().find(|line| {
        ALARMS.iter().chain(NATIVE_ALARMS.iter()).any(|alarm| line.contains(alarm))
            || workload_text(line).is_some_and(|t| t.contains(" FAILED"))
    })
}

/// What went wrong, in one line: the first alarm line, followed by the
/// hypervisor's `why:` line about it when there is one (it names the
/// instruction the emulator could not handle, or the missing handler).
pub fn failure(serial: &str) -> Option<String> {
    let alarm = first_alarm(serial)?;
    let after = serial.lines().skip_while(|line| *line != alarm).skip(1);
    let why = after.take(12).find_map(|line| line.find(WHY_MARK).map(|at| &line[at + 1..]));
    Some(match why {
        Some(why) => format!("{}; {}", alarm.trim(), why.trim()),
        None => alarm.trim().to_string(),
    })
}

/// Reads the measurement of `op` at `n` from a run's log; `domain` is the
/// domain whose summary counters to read (`None` for a native run). The
/// error says what is missing or which line went wrong.
pub fn read_run(serial: &str, op: Op, n: u64, domain: Option<&str>) -> Result<RunData> {
    if let Some(failure) = failure(serial) {
        bail!("{failure}");
    }
    let ok_prefix = format!("{WORKLOAD_MARK}{} ok ", op.name());
    let results = serial
        .lines()
        .filter_map(workload_text)
        .find(|t| t.starts_with(&ok_prefix))
        .ok_or_else(|| anyhow!("no `{}` line", ok_prefix.trim_end()))?
        .trim_end()
        .to_string();
    let benches: Vec<Bench> = serial.lines().filter_map(parse_bench).collect::<Result<_>>()?;
    let bench = benches
        .iter()
        .find(|b| b.op == op.name())
        .ok_or_else(|| anyhow!("no `workload: bench {}` line", op.name()))?;
    if bench.n != n {
        bail!("the bench line says n={}, the command line asked for n={n}", bench.n);
    }
    let counters = match domain {
        None => BTreeMap::new(),
        Some(name) => summary_counters(serial, name)
            .ok_or_else(|| anyhow!("no summary line for domain {name:?} in the hypervisor's log"))?,
    };
    Ok(RunData { results, tsc: bench.tsc, counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PV_LOG: &str = "parvus: domain 0 (workload): 16384 KiB, entry 0x400000, cmdline \"op=fork n=100\"\n\
        [workload] workload: loaded by parvus paravirtualized\n\
        [workload] workload: fork ok children=100 checksum=0xef1b569a2a51c7b3\n\
        [workload] workload: bench fork n=100 tsc=1987476\n\
        [workload] workload: all done\n\
        parvus: summary of 1 domain:\n\
        parvus:   0   workload       exited 0                   expected exit 0     ok         cpu=6.271ms weight=256 hypercalls=1342 preemptions=0 bounces=400\n\
        parvus: all domains ended as expected\n";

    const EMULATED_SUMMARY: &str = "parvus:   0   workload       exited 0                   expected exit 0     ok         cpu=9.1ms weight=256 hypercalls=0 preemptions=2 bounces=0\n\
        parvus:       emulated: exits=14 (instructions=4 io=5 guest-page-faults=1 shadow-fills=2 page-table-writes=0 interrupts=1 exceptions=0 syscalls=1) shadow: tables=3 resets=0 frames=3\n";

    #[test]
    fn bench_lines() {
        let b = parse_bench("[workload] workload: bench fork n=100 tsc=1987476").unwrap().unwrap();
        assert_eq!(b, Bench { op: "fork".into(), n: 100, tsc: 1987476 });
        assert!(parse_bench("workload: fork ok children=1").is_none());
        assert!(parse_bench("parvus: bench").is_none());
        let e = parse_bench("workload: bench fork n=x tsc=1").unwrap().unwrap_err();
        assert!(e.to_string().contains("n=\"x\" is not a number"), "{e}");
        assert!(parse_bench("workload: bench fork n=1").unwrap().is_err());
        assert!(parse_bench("workload: bench fork n=1 tsc=2 colour=3").unwrap().is_err());
    }

    #[test]
    fn a_paravirtualized_run() {
        let data = read_run(PV_LOG, Op::Fork, 100, Some("workload")).unwrap();
        assert_eq!(data.results, "workload: fork ok children=100 checksum=0xef1b569a2a51c7b3");
        assert_eq!(data.tsc, 1987476);
        let keys: Vec<&str> = data.counters.keys().map(String::as_str).collect();
        assert_eq!(keys, ["bounces", "hypercalls", "preemptions"], "cpu=6.271ms and weight=256 are no counters");
        assert_eq!((data.counters["hypercalls"], data.counters["bounces"]), (1342, 400));
    }

    #[test]
    fn a_native_run_has_no_counters() {
        let log = "workload: loaded by boot-shim\nworkload: fork ok children=100 checksum=0x1\n\
                   workload: bench fork n=100 tsc=1200253\nworkload: all done\n";
        let data = read_run(log, Op::Fork, 100, None).unwrap();
        assert_eq!((data.tsc, data.counters.len()), (1200253, 0));
        assert_eq!(data.results, "workload: fork ok children=100 checksum=0x1");
    }

    #[test]
    fn emulated_exits_by_cause() {
        let c = summary_counters(EMULATED_SUMMARY, "workload").unwrap();
        assert_eq!(c["exits"], 14);
        assert_eq!((c["io"], c["shadow-fills"], c["syscalls"]), (5, 2, 1));
        assert_eq!((c["shadow-tables"], c["shadow-frames"]), (3, 3));
        assert_eq!(summary_counters(EMULATED_SUMMARY, "other"), None);
    }

    #[test]
    fn what_went_wrong() {
        let e = |log: &str| read_run(log, Op::Fork, 100, Some("workload")).unwrap_err().to_string();
        let crashed = PV_LOG.replace(
            "[workload] workload: all done\n",
            "parvus: ERROR domain 0 (workload) crashed: page fault (#PF, vector 14) at rip=0x4000b2\n",
        );
        assert_eq!(e(&crashed), "parvus: ERROR domain 0 (workload) crashed: page fault (#PF, vector 14) at rip=0x4000b2");
        let failed = PV_LOG.replace("fork ok children=100", "fork FAILED result 0x1, expected 0x2\n[workload] workload: x");
        assert_eq!(e(&failed), "[workload] workload: fork FAILED result 0x1, expected 0x2");
        assert_eq!(e(&PV_LOG.replace(" fork ok", " fork done")), "no `workload: fork ok` line");
        assert_eq!(e(&PV_LOG.replace("bench fork", "bench mmap")), "no `workload: bench fork` line");
        assert_eq!(
            e(&PV_LOG.replace("bench fork n=100", "bench fork n=7")),
            "the bench line says n=7, the command line asked for n=100"
        );
        assert_eq!(e(&PV_LOG.replace("hypercalls=", "calls=")), "no summary line for domain \"workload\" in the hypervisor's log");
        let with_why = crashed.replace(
            "rip=0x4000b2\n",
            "rip=0x4000b2\nparvus: ERROR rip=0x4000b2 rsp=0x0\nparvus: ERROR why: it writes to its own page table with 49 89 06\n",
        );
        assert_eq!(
            e(&with_why),
            "parvus: ERROR domain 0 (workload) crashed: page fault (#PF, vector 14) at rip=0x4000b2; \
             why: it writes to its own page table with 49 89 06"
        );
        let native = "unhandled exception: #GP at 0x200000\n";
        assert_eq!(read_run(native, Op::Fork, 100, None).unwrap_err().to_string(), "unhandled exception: #GP at 0x200000");
    }
}
