//! The tables compare prints: one row per operation.
//!
//! The main table has the instructions per operation in each mode, the
//! ratios to native, the emulated run's exits per operation and the
//! paravirtualized run's hypercalls and bounces per operation (written
//! `hypercalls+bounces`). A second table splits the emulated exits by cause.
//! A mode that failed shows `failed` (the reason is printed below the
//! tables); a figure that could not be computed shows `-`.

use super::figures::{ModeReport, OpReport};
use super::plan::Mode;

/// The exit causes of the emulated summary, in its order, with their
/// column headings.
pub const EXIT_CAUSES: [(&str, &str); 8] = [
    ("instructions", "instr"),
    ("io", "io"),
    ("guest-page-faults", "guest-pf"),
    ("shadow-fills", "shadow-fill"),
    ("page-table-writes", "pt-write"),
    ("interrupts", "irq"),
    ("exceptions", "exc"),
    ("syscalls", "syscall"),
];

/// Lays out `rows` (the first is the heading) in columns: the first left
/// aligned, the others right aligned, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..count).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| if c == 0 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// A figure of `mode`, or `failed`.
fn cell(mode: &ModeReport, figure: impl Fn(&ModeReport) -> String) -> String {
    if mode.ok {
        figure(mode)
    } else {
        "failed".to_string()
    }
}

fn counter(mode: &ModeReport, key: &str) -> Option<f64> {
    mode.counters_per_op.get(key).copied()
}

/// The main table.
pub fn main_table(ops: &[OpReport]) -> String {
    let mut rows = vec![[
        "op",
        "native",
        "emulated",
        "paravirt",
        "emul/native",
        "PV/native",
        "exits/op emul",
        "hcalls+bounces/op PV",
    ]
    .map(String::from)
    .to_vec()];
    for op in ops {
        let instructions = |m: Mode| cell(op.mode(m), |r| number(r.instructions_per_op));
        let ratio = |m: Mode| {
            if op.native.ok && op.mode(m).ok {
                op.mode(m).ratio_to_native.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
            } else {
                "-".to_string()
            }
        };
        rows.push(vec![
            op.op.to_string(),
            instructions(Mode::Native),
            instructions(Mode::Emulated),
            instructions(Mode::Paravirtualized),
            ratio(Mode::Emulated),
            ratio(Mode::Paravirtualized),
            cell(&op.emulated, |r| number(counter(r, "exits"))),
            cell(&op.paravirtualized, |r| {
                format!("{}+{}", number(counter(r, "hypercalls")), number(counter(r, "bounces")))
            }),
        ]);
    }
    columns(&rows)
}

/// The emulated exits per operation by cause.
pub fn exits_table(ops: &[OpReport]) -> String {
    let mut heading = vec!["op".to_string(), "exits".to_string()];
    heading.extend(EXIT_CAUSES.iter().map(|(_, h)| h.to_string()));
    let mut rows = vec![heading];
    for op in ops {
        let mut row = vec![op.op.to_string(), cell(&op.emulated, |r| number(counter(r, "exits")))];
        row.extend(EXIT_CAUSES.iter().map(|(key, _)| cell(&op.emulated, |r| number(counter(r, key)))));
        rows.push(row);
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::super::figures::tests::{agreeing, failed};
    use super::super::figures::{mode_report, op_report};
    use super::*;
    use workload_core::ops::Op;

    #[test]
    fn the_main_table() {
        let (fork, _) = op_report(Op::Fork, 10, agreeing());
        let mut modes = agreeing();
        modes[1] = mode_report(vec![failed(10, "crashed")]);
        let (broken, _) = op_report(Op::Fork, 10, modes);
        let table = main_table(&[fork, broken]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "op    native  emulated  paravirt  emul/native  PV/native  exits/op emul  hcalls+bounces/op PV"
        );
        assert_eq!(
            lines[1],
            "fork  100.00   2500.00    105.00       25.00x      1.05x          30.00             3.00+3.00"
        );
        assert_eq!(
            lines[2],
            "fork  100.00    failed    105.00            -      1.05x         failed             3.00+3.00"
        );
    }

    #[test]
    fn exits_by_cause() {
        let (fork, _) = op_report(Op::Fork, 10, agreeing());
        let table = exits_table(&[fork]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "op    exits  instr    io  guest-pf  shadow-fill  pt-write  irq  exc  syscall");
        assert_eq!(lines[1], "fork  30.00      -  0.00         -            -         -    -    -        -");
    }
}
