//! `cargo xtask bench`: instruction counts of hypercall round trips.
//!
//! Boots `scenarios/bench/manifest.toml` (the `bench` demo guest) under
//! `-icount shift=0,align=off,sleep=off`, where the guest's `rdtsc` counts
//! executed instructions, so every figure is exact and the same on every
//! run. Performance is measured here, never by timed tests.
//!
//! # The lines it parses
//!
//! Anywhere in a serial line (after the `[bench] ` prefix the hypervisor
//! adds to guest output):
//!
//! ```text
//! BENCH name=<row> iterations=<n> total=<instructions> baseline=<instructions> [floor=<row>]
//! BENCH-FLOOR name=<floor> iterations=<n> total=<instructions> baseline=<instructions>
//! ```
//!
//! `total` is the instruction count of a loop of `iterations` round trips,
//! `baseline` that of the same loop with an empty body; the per-operation
//! value is `(total - baseline) / iterations`. The floor is what the least
//! possible `syscall`-based round trip (a bare `syscall` + `sysretq`) costs
//! on the same machine: a `BENCH-FLOOR` line, or a `BENCH` row named
//! `floor`. Every other row is reported beside the floor (the one its
//! `floor=` key names, else the first) with `ratio = value / floor`.
//!
//! # Output
//!
//! A table on stdout and `target/bench.json`:
//!
//! ```json
//! {"schema": 1, "rows": [{"name": "null", "unit": "instructions", "value": 7.0,
//!   "iterations": 10000, "floor": 3.0, "ratio": 2.33}]}
//! ```
//!
//! `floor` and `ratio` are `null` when no floor was measured.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::build::{build, manifest_path};
use crate::qemu::{self, describe_status, run_captured, STATUS_ALL_AS_EXPECTED};
use crate::repo::Repo;

/// Version of the JSON layout; bump it on any incompatible change.
pub const SCHEMA: u32 = 1;

/// The name of a `BENCH` row that is the floor.
const FLOOR_ROW: &str = "floor";

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The manifest to run (default: scenarios/bench/manifest.toml).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// QEMU is killed after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

/// One `BENCH` or `BENCH-FLOOR` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Row name.
    pub name: String,
    /// Loop iterations.
    pub iterations: u64,
    /// Instructions of the measured loop.
    pub total: u64,
    /// Instructions of the empty loop.
    pub baseline: u64,
    /// The floor this row is compared with, if named.
    pub floor: Option<String>,
    /// Whether it is a floor.
    pub is_floor: bool,
}

impl Measurement {
    /// Instructions per operation.
    pub fn per_op(&self) -> f64 {
        self.total.saturating_sub(self.baseline) as f64 / self.iterations as f64
    }
}

/// Parses one serial line: `None` when it has no bench marker, an error when
/// it has one but is malformed.
pub fn parse_line(line: &str) -> Option<Result<Measurement>> {
    let (is_floor, rest) = if let Some(i) = line.find("BENCH-FLOOR ") {
        (true, &line[i + "BENCH-FLOOR ".len()..])
    } else if let Some(i) = line.find("BENCH ") {
        (false, &line[i + "BENCH ".len()..])
    } else {
        return None;
    };
    Some(parse_fields(rest, is_floor).with_context(|| format!("malformed bench line {line:?}")))
}

fn parse_fields(rest: &str, is_floor: bool) -> Result<Measurement> {
    let mut name = None;
    let mut numbers = [None; 3];
    let mut floor = None;
    for field in rest.split_whitespace() {
        let (key, value) = field.split_once('=').ok_or_else(|| anyhow!("{field:?} is not key=value"))?;
        let number = || value.parse::<u64>().map_err(|_| anyhow!("{key}={value:?} is not a number"));
        match key {
            "name" => name = Some(value.to_string()),
            "iterations" => numbers[0] = Some(number()?),
            "total" => numbers[1] = Some(number()?),
            "baseline" => numbers[2] = Some(number()?),
            "floor" => floor = Some(value.to_string()),
            _ => bail!("unknown key {key:?}"),
        }
    }
    let missing = |key: &str| anyhow!("no {key}=");
    let iterations = numbers[0].ok_or_else(|| missing("iterations"))?;
    if iterations == 0 {
        bail!("iterations=0");
    }
    Ok(Measurement {
        name: name.ok_or_else(|| missing("name"))?,
        iterations,
        total: numbers[1].ok_or_else(|| missing("total"))?,
        baseline: numbers[2].ok_or_else(|| missing("baseline"))?,
        floor,
        is_floor,
    })
}

/// One row of the report (and of the JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Row name.
    pub name: String,
    /// Always `"instructions"`.
    pub unit: &'static str,
    /// Instructions per operation.
    pub value: f64,
    /// Loop iterations.
    pub iterations: u64,
    /// Instructions of the floor, if measured.
    pub floor: Option<f64>,
    /// `value / floor`, if there is a floor.
    pub ratio: Option<f64>,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The rows.
    pub rows: Vec<Row>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Turns a serial log into rows; errors on malformed lines, on no rows and
/// on a row naming an unknown floor. A floor of 0 instructions counts as not
/// measured.
pub fn rows_from_log(serial: &str) -> Result<Vec<Row>> {
    let measurements: Vec<Measurement> = serial.lines().filter_map(parse_line).collect::<Result<_>>()?;
    let (floors, rows): (Vec<&Measurement>, Vec<&Measurement>) =
        measurements.iter().partition(|m| m.is_floor || m.name == FLOOR_ROW);
    if rows.is_empty() {
        bail!("no BENCH line in the serial log");
    }
    rows.iter()
        .map(|m| {
            let floor = match &m.floor {
                Some(name) => Some(
                    floors
                        .iter()
                        .find(|f| &f.name == name)
                        .ok_or_else(|| anyhow!("row {} names unknown floor {name}", m.name))?,
                ),
                None => floors.first(),
            };
            let floor = floor.map(|f| f.per_op()).filter(|&f| f > 0.0);
            let value = m.per_op();
            Ok(Row {
                name: m.name.clone(),
                unit: "instructions",
                value: round2(value),
                iterations: m.iterations,
                floor: floor.map(round2),
                ratio: floor.map(|f| round2(value / f)),
            })
        })
        .collect()
}

/// The table printed on stdout.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max("row".len());
    let mut out = format!("{:<width$}  {:>14}  {:>10}  {:>7}\n", "row", "instr/op", "floor", "ratio");
    for row in rows {
        let opt = |v: Option<f64>, suffix: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{suffix}"));
        out.push_str(&format!(
            "{:<width$}  {:>14.2}  {:>10}  {:>7}\n",
            row.name,
            row.value,
            opt(row.floor, ""),
            opt(row.ratio, "x")
        ));
    }
    out
}

/// `cargo xtask bench`.
pub fn main(args: &BenchArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    let manifest = manifest_path(args.manifest.as_deref(), repo.bench_manifest());
    qemu::ensure_installed()?;
    let prepared = build(&repo, &manifest)?;
    let config = prepared.qemu(true, false, Vec::new());
    eprintln!("xtask: {}", config.shell_line());
    let run = run_captured(&config, Duration::from_secs(args.timeout_seconds))?;
    if run.timed_out || run.status != Some(STATUS_ALL_AS_EXPECTED) {
        eprintln!("--- serial log ---\n{}--- end of serial log ---", run.serial);
        if run.timed_out {
            bail!("the bench run did not end within {} s", args.timeout_seconds);
        }
        bail!("the bench run failed: {}", describe_status(run.status));
    }
    let rows = rows_from_log(&run.serial).inspect_err(|_| {
        eprintln!("--- serial log ---\n{}--- end of serial log ---", run.serial);
    })?;
    print!("{}", table(&rows));
    if rows.iter().all(|r| r.floor.is_none()) {
        eprintln!("xtask: warning: no floor was measured (no BENCH-FLOOR line or `floor` row)");
    }
    let json = serde_json::to_string_pretty(&Report { schema: SCHEMA, rows })?;
    let out = repo.bench_json();
    std::fs::write(&out, json + "\n").with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", repo.show(&out));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "[bench] bench: 10000 iterations per row\n\
        [bench] BENCH name=null iterations=10000 total=90000 baseline=20000\n\
        [bench] BENCH name=null_raw iterations=10000 total=70000 baseline=20000\n\
        [bench] BENCH name=floor iterations=10000 total=50000 baseline=20000\n\
        parvus: all domains ended as expected\n";

    #[test]
    fn parses_lines() {
        let m = parse_line("[bench] BENCH name=null iterations=10 total=100 baseline=30").unwrap().unwrap();
        assert_eq!(m.name, "null");
        assert_eq!(m.per_op(), 7.0);
        assert!(!m.is_floor);
        let f = parse_line("parvus: BENCH-FLOOR name=sysret iterations=4 total=30 baseline=18").unwrap().unwrap();
        assert!(f.is_floor);
        assert_eq!(f.per_op(), 3.0);
        assert!(parse_line("[hello] hello").is_none());
        let e = parse_line("[bench] BENCH name=x iterations=ten total=1 baseline=0").unwrap().unwrap_err();
        assert!(format!("{e:#}").contains("iterations=\"ten\" is not a number"), "{e:#}");
        assert!(parse_line("BENCH name=x total=1 baseline=0").unwrap().is_err());
        assert!(parse_line("BENCH name=x iterations=0 total=1 baseline=0").unwrap().is_err());
        assert!(parse_line("BENCH name=x iterations=1 total=1 baseline=0 colour=red").unwrap().is_err());
    }

    #[test]
    fn rows_beside_the_floor() {
        let rows = rows_from_log(LOG).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            Row {
                name: "null".into(),
                unit: "instructions",
                value: 7.0,
                iterations: 10000,
                floor: Some(3.0),
                ratio: Some(2.33)
            }
        );
        assert_eq!(rows[1].ratio, Some(1.67));
        let table = table(&rows);
        assert!(table.starts_with("row       "), "{table}");
        assert!(table.contains("null_raw"), "{table}");
        assert!(table.contains("2.33x"), "{table}");
    }

    #[test]
    fn json_has_the_schema() {
        let json = serde_json::to_value(Report { schema: SCHEMA, rows: rows_from_log(LOG).unwrap() }).unwrap();
        assert_eq!(json["schema"], 1);
        let row = &json["rows"][0];
        for key in ["name", "unit", "value", "iterations", "floor", "ratio"] {
            assert!(row.get(key).is_some(), "{key}");
        }
        assert_eq!(row["unit"], "instructions");
    }

    #[test]
    fn without_floor() {
        let rows = rows_from_log("BENCH name=null iterations=2 total=20 baseline=6\n").unwrap();
        assert_eq!(rows[0].floor, None);
        assert_eq!(rows[0].ratio, None);
        assert!(table(&rows).contains("-"));
        // A floor that measured nothing (its hypercall was refused) is no floor.
        let rows = rows_from_log(
            "BENCH name=null iterations=2 total=20 baseline=6\nBENCH name=floor iterations=2 total=0 baseline=6\n",
        )
        .unwrap();
        assert_eq!(rows[0].floor, None);
    }

    #[test]
    fn named_floor() {
        let log =
            "BENCH-FLOOR name=a iterations=1 total=3 baseline=0\nBENCH-FLOOR name=b iterations=1 total=5 baseline=0\n\
                   BENCH name=x iterations=1 total=10 baseline=0 floor=b\n";
        assert_eq!(rows_from_log(log).unwrap()[0].floor, Some(5.0));
        assert!(rows_from_log("BENCH name=x iterations=1 total=10 baseline=0 floor=c\n").is_err());
        assert!(rows_from_log("nothing here\n").is_err());
    }
}
