//! `target/compare/compare.svg`: the ratios to native as a grouped bar
//! chart, one group per operation, one bar per virtualized mode, drawn
//! with plotters' SVG backend.
//!
//! Trap-and-emulate can cost tens of times native where paravirtualization
//! costs a few percent; on a linear axis the paravirtualized bars would be
//! flat. When the largest ratio is [`LOG_FROM`] or more the axis is
//! logarithmic, and each bar carries its value, so both stay readable. A
//! line marks 1x (native). Operations where a mode failed have no bar for
//! it.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::figures::OpReport;
use super::plan::Mode;

/// The chart's size in pixels.
const SIZE: (u32, u32) = (960, 540);

/// The largest ratio from which the axis is logarithmic.
pub const LOG_FROM: f64 = 10.0;

/// The modes drawn, with their colours.
const BARS: [(Mode, RGBColor, &str); 2] =
    [(Mode::Emulated, RGBColor(0xd9, 0x5f, 0x02), "trap-and-emulate / native"), (Mode::Paravirtualized, RGBColor(0x1b, 0x9e, 0x77), "paravirtualized / native")];

/// Width of one group, in operations (the rest is the gap between groups).
const GROUP_WIDTH: f64 = 0.7;

/// The ratio of `mode` in `op`, when both it and native measured.
fn ratio(op: &OpReport, mode: Mode) -> Option<f64> {
    (op.native.ok && op.mode(mode).ok).then_some(op.mode(mode).ratio_to_native).flatten().filter(|&r| r > 0.0)
}

/// Whether the ratios need a logarithmic axis.
pub fn needs_log_scale(ops: &[OpReport]) -> bool {
    ops.iter().flat_map(|op| BARS.iter().filter_map(move |(m, ..)| ratio(op, *m))).any(|r| r >= LOG_FROM)
}

/// The chart as SVG text.
pub fn svg(ops: &[OpReport]) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, ops).map_err(|e| anyhow!("cannot draw the chart: {e}"))?;
        root.present().map_err(|e| anyhow!("cannot draw the chart: {e}"))?;
    }
    Ok(text)
}

type DrawResult<T> = Result<T, DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, ops: &[OpReport]) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let ratios: Vec<f64> = ops.iter().flat_map(|op| BARS.iter().filter_map(move |(m, ..)| ratio(op, *m))).collect();
    let high = ratios.iter().copied().fold(1.0f64, f64::max);
    let low = ratios.iter().copied().fold(1.0f64, f64::min);
    let x_range = -0.5..(ops.len().max(1) as f64 - 0.5);
    let caption = "Instructions per operation, relative to native (QEMU -icount)";
    let mut builder = ChartBuilder::on(root);
    builder.caption(caption, ("sans-serif", 22)).margin(16).x_label_area_size(36).y_label_area_size(64);
    if needs_log_scale(ops) {
        // Room above the tallest bar for its label and the legend.
        let mut chart = builder.build_cartesian_2d(x_range, (low * 0.5..high * 8.0).log_scale())?;
        let bottom = low * 0.5;
        draw_bars(&mut chart, ops, bottom, "ratio to native (log scale)")
    } else {
        let mut chart = builder.build_cartesian_2d(x_range, 0.0..high * 1.4)?;
        draw_bars(&mut chart, ops, 0.0, "ratio to native")
    }
}

/// A ratio as an axis label: `0.5x`, `1x`, `10x`.
fn times(v: &f64) -> String {
    let text = format!("{v:.2}");
    format!("{}x", text.trim_end_matches('0').trim_end_matches('.'))
}

fn draw_bars<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    ops: &[OpReport],
    bottom: f64,
    y_desc: &str,
) -> DrawResult<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let names: Vec<&str> = ops.iter().map(|op| op.op).collect();
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).map_or_else(String::new, |s| s.to_string())
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(ops.len().max(1))
        .x_label_formatter(&label)
        .y_label_formatter(&times)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .draw()?;
    let bar_width = GROUP_WIDTH / BARS.len() as f64;
    for (slot, &(mode, colour, legend)) in BARS.iter().enumerate() {
        let bars: Vec<(f64, f64)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| ratio(op, mode).map(|r| (i as f64 - GROUP_WIDTH / 2.0 + slot as f64 * bar_width, r)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x, r)| Rectangle::new([(x, bottom), (x + bar_width, r)], colour.filled())))?
            .label(legend)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
        chart.draw_series(bars.iter().map(|&(x, r)| {
            Text::new(format!("{r:.2}x"), (x + bar_width / 2.0, r), ("sans-serif", 12).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                ),
            ))
        }))?;
    }
    let (left, right) = (-0.5, ops.len().max(1) as f64 - 0.5);
    chart
        .draw_series(std::iter::once(PathElement::new(vec![(left, 1.0), (right, 1.0)], BLACK.stroke_width(1))))?
        .label("native = 1x")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(1)));
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE).border_style(BLACK).draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::figures::op_report;
    use super::super::figures::tests::agreeing;
    use super::*;
    use workload_core::ops::Op;

    fn ops() -> Vec<OpReport> {
        [Op::Syscall, Op::Fork, Op::Compute].iter().map(|&op| op_report(op, 10, agreeing()).0).collect()
    }

    #[test]
    fn draws_every_op_and_the_legend() {
        let svg = svg(&ops()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in ["syscall", "fork", "compute", "trap-and-emulate / native", "paravirtualized / native", "25.00x", "1.05x", "log scale"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(svg, super::svg(&ops()).unwrap(), "the same figures draw the same file");
    }

    #[test]
    fn axis_labels() {
        assert_eq!([0.5, 1.0, 10.0, 100.0, 0.0, 1.25].map(|v| times(&v)), ["0.5x", "1x", "10x", "100x", "0x", "1.25x"]);
    }

    #[test]
    fn linear_when_the_ratios_are_close() {
        let mut reports = ops();
        for op in &mut reports {
            op.emulated.ratio_to_native = Some(2.5);
        }
        assert!(!needs_log_scale(&reports));
        let svg = svg(&reports).unwrap();
        assert!(svg.contains("ratio to native") && !svg.contains("log scale"));
        assert_eq!(svg.matches("\n2.50x\n").count(), 3);
        // A failed mode has no bar, and the chart is still drawn.
        reports[0].emulated.ok = false;
        assert_eq!(super::svg(&reports).unwrap().matches("\n2.50x\n").count(), 2);
    }
}
