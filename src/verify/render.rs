//! The binding comparison's table (`compare.txt`, and stdout) and chart (`compare.svg`),
//! rendered from a `CompareReport` to any `W: Write`.
//!
//! Not here: the statistics and the verdict (`compare`), writing the files (`trials`).

use std::io::Write;

use super::compare::{BindingResult, CompareReport, Estimate, TrialRun};

/// `mean ± half-width` with `digits` decimals (the mean alone without an interval).
fn show(e: &Estimate, digits: usize) -> String {
    match e.ci95 {
        Some(ci) => format!("{:.*} ± {:.*}", digits, e.mean, digits, ci),
        None => format!("{:.*}", digits, e.mean),
    }
}

/// The seed's table: binding × level with QPS, latency, output throughput, TTFT p50/p99 and
/// failures (mean ± 95 % half-width across trials), and the change against `none`.
pub fn write_table<W: Write>(r: &CompareReport, mut w: W) -> std::io::Result<()> {
    use comfy_table::presets::ASCII_MARKDOWN;
    use comfy_table::{CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(vec![
        "binding",
        "level",
        "avg QPS",
        "avg latency (s)",
        "output tok/s",
        "TTFT p50 (s)",
        "TTFT p99 (s)",
        "failed",
        "tok/s vs none",
    ]);
    for b in &r.bindings {
        if b.trials_ok == 0 {
            t.add_row(vec![b.label.clone(), "-".into(), "no successful trial".into()]);
            continue;
        }
        for l in &b.levels {
            t.add_row(vec![
                b.label.clone(),
                l.level.clone(),
                show(&l.qps, 3),
                show(&l.latency_s, 3),
                show(&l.output_throughput, 1),
                show(&l.ttft_p50_s, 3),
                show(&l.ttft_p99_s, 3),
                show(&l.failed, 1),
                l.throughput_vs_none_pct.map_or("-".into(), |p| format!("{p:+.1} %")),
            ]);
        }
    }
    for i in 2..9 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    writeln!(w, "{t}")?;
    let ci = if r.trials >= 2 {
        format!("mean ± 95 % confidence half-width over {} trials (Student t)", r.trials)
    } else {
        "one trial: no confidence interval".to_string()
    };
    writeln!(w, "{ci}; trials interleaved: {}", r.order.join(" → "))?;
    for run in r.runs.iter().filter(|x| x.error.is_none()) {
        if let Some(c) = &run.capacity {
            writeln!(
                w,
                "  {} trial {}: capacity {} {} (search stop: {})",
                run.binding,
                run.trial,
                c.value,
                r.score_unit,
                c.stop.as_deref().unwrap_or("-")
            )?;
        }
    }
    for b in &r.bindings {
        if let Some(e) = &b.score_vs_none_pct {
            if b.binding.is_none() {
                continue;
            }
            match e.ci95 {
                Some(ci) => writeln!(
                    w,
                    "  {}: {:+.1} % {} against none (95 %: {:+.1} % to {:+.1} %)",
                    b.label,
                    e.mean,
                    r.score_unit,
                    e.mean - ci,
                    e.mean + ci
                )?,
                None => {
                    writeln!(w, "  {}: {:+.1} % {} against none", b.label, e.mean, r.score_unit)?
                }
            }
        }
    }
    let failed: Vec<&TrialRun> = r.runs.iter().filter(|x| x.error.is_some()).collect();
    for f in &failed {
        writeln!(
            w,
            "  FAILED {} trial {}: {}",
            f.binding,
            f.trial,
            f.error.as_deref().unwrap_or_default()
        )?;
    }
    if r.incomplete {
        writeln!(w, "  (incomplete: the comparison stopped before every sub-run was done)")?;
    }
    writeln!(w, "{}", r.verdict)
}

/// The comparison chart (SVG, drawn with plotters): output tok/s per level, one bar per
/// binding, with the 95 % interval across trials as an error bar, and each binding's change
/// against `none` in the legend.
pub fn write_chart<W: Write>(r: &CompareReport, mut w: W) -> std::io::Result<()> {
    let svg = chart_svg(r).map_err(std::io::Error::other)?;
    w.write_all(svg.as_bytes())
}

fn chart_svg(r: &CompareReport) -> Result<String, String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    crate::report::chart::register_font();
    let bindings: Vec<&BindingResult> = r.bindings.iter().filter(|b| b.trials_ok > 0).collect();
    let levels: Vec<String> = bindings
        .first()
        .map(|b| b.levels.iter().map(|l| l.level.clone()).collect())
        .unwrap_or_default();
    let ymax = bindings
        .iter()
        .flat_map(|b| b.levels.iter())
        .map(|l| l.output_throughput.mean + l.output_throughput.ci95.unwrap_or(0.0))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = levels.len().max(1);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (760, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("output tok/s by binding (mean, 95 % interval over {} trial(s))", r.trials),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(|x| e(&x))?;
        // Levels are categories at x = i + 0.5; ticks come every 0.5, only the middles are named.
        let level_name = |x: &f64| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 1e-6 {
                levels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&level_name)
            .y_desc("output tok/s")
            .draw()
            .map_err(|x| e(&x))?;
        let width = 0.8 / bindings.len().max(1) as f64;
        for (bi, b) in bindings.iter().enumerate() {
            let colour = Palette99::pick(bi).to_rgba();
            let bars: Vec<(f64, f64, Option<f64>)> = levels
                .iter()
                .enumerate()
                .filter_map(|(li, level)| {
                    let l = b.levels.iter().find(|l| &l.level == level)?;
                    let m = l.output_throughput.mean;
                    m.is_finite().then_some((
                        li as f64 + 0.1 + width * bi as f64,
                        m,
                        l.output_throughput.ci95,
                    ))
                })
                .collect();
            let change = b
                .score_vs_none_pct
                .as_ref()
                .filter(|_| !b.binding.is_none())
                .map(|e| format!(" ({:+.1} %)", e.mean))
                .unwrap_or_default();
            chart
                .draw_series(bars.iter().map(|&(x, m, _)| {
                    Rectangle::new([(x, 0.0), (x + width * 0.9, m)], colour.filled())
                }))
                .map_err(|x| e(&x))?
                .label(format!("{}{change}", b.label))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
            chart
                .draw_series(bars.iter().filter_map(|&(x, m, ci)| {
                    let ci = ci?;
                    let cx = x + width * 0.45;
                    Some(ErrorBar::new_vertical(cx, (m - ci).max(0.0), m, m + ci, BLACK, 6))
                }))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare::analyse;
    use crate::verify::compare::tests::{choices, clear_gain_runs, failed_run_report};

    #[test]
    fn a_clear_gain_shows_in_the_table_and_the_chart() {
        let r = analyse(&choices(), 3, &clear_gain_runs(), false);
        let mut table = Vec::new();
        write_table(&r, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("| nodes=0 ") && table.contains("585.0 ±"), "{table}");
        let mut svg = Vec::new();
        write_chart(&r, &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // One legend entry per binding, with its change against `none`.
        assert!(svg.contains("\nnone\n") && svg.contains("\nnodes=0 (+12."), "{svg}");
    }

    #[test]
    fn failed_runs_are_listed_in_the_table() {
        let r = failed_run_report();
        let mut table = Vec::new();
        write_table(&r, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("FAILED nodes=0 trial 1") && table.contains("incomplete"),
            "{table}"
        );
    }

    #[test]
    fn estimates_show_their_interval_when_they_have_one() {
        assert_eq!(show(&Estimate::of(&[10.0, 12.0, 14.0]), 1), "12.0 ± 5.0");
        assert_eq!(show(&Estimate::of(&[5.0]), 3), "5.000");
    }
}
