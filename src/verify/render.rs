//! The binding comparison's table (`compare.txt`, and stdout) and chart (`compare.svg`),
//! rendered from a `CompareReport` to any `W: Write`.
//!
//! Not here: the statistics and the verdict (`compare`), writing the files (`trials`).

use std::io::Write;

use super::compare::{BindingResult, CompareReport, Estimate, PlacementVerdict, TrialRun};

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
    for line in placement_lines(r) {
        writeln!(w, "  {line}")?;
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

/// Where the engine's memory was and how the NUMA counters moved: one line per successful
/// sub-run (resident MiB per node, the share off the binding's nodes, `numa_miss` and
/// `other_node` deltas), then one per binding set against `none` ("auto: engine memory on
/// remote nodes 0.4 % vs 38.0 % under none; numa_miss 2048 vs 1900000 under none").
pub fn placement_lines(r: &CompareReport) -> Vec<String> {
    let mut out = Vec::new();
    for run in r.runs.iter().filter(|x| x.error.is_none()) {
        let mut parts = Vec::new();
        if let Some(m) = &run.memory_by_node {
            let nodes: Vec<String> =
                m.iter().map(|(n, b)| format!("N{n} {:.1} MiB", *b as f64 / 1048576.0)).collect();
            let off = run
                .memory_off_node_share
                .map_or(String::new(), |s| format!(" ({:.1} % off its nodes)", s * 100.0));
            parts.push(format!("engine memory {}{off}", nodes.join(", ")));
        }
        if let Some(n) = &run.numa {
            let get = |c: &str| n.total.get(c).copied().unwrap_or(0);
            parts.push(format!("numa_miss {}, other_node {}", get("numa_miss"), get("other_node")));
        }
        if let Some(t) = &run.threads {
            parts.push(format!("threads: {}", crate::host::task_stat::describe(t)));
        }
        if !parts.is_empty() {
            out.push(format!("{} trial {}: {}", run.binding, run.trial, parts.join("; ")));
        }
    }
    let none = r.bindings.iter().find(|b| b.binding.is_none());
    for b in r.bindings.iter().filter(|b| !b.binding.is_none() && b.trials_ok > 0) {
        let mut parts = Vec::new();
        if let Some(p) = &b.score_vs_none_pct {
            parts.push(format!("{:+.1} % {}", p.mean, r.score_unit));
        }
        match (b.memory_off_node_pct, b.none_memory_off_node_pct) {
            (Some(a), Some(n)) => {
                parts.push(format!("engine memory on remote nodes {a:.1} % vs {n:.1} % under none"))
            }
            (Some(a), None) => parts.push(format!("engine memory on remote nodes {a:.1} %")),
            _ => {}
        }
        match (b.numa_miss, none.and_then(|n| n.numa_miss)) {
            (Some(a), Some(n)) => {
                parts.push(format!("numa_miss {} vs {} under none", compact(a), compact(n)))
            }
            (Some(a), None) => parts.push(format!("numa_miss {}", compact(a))),
            _ => {}
        }
        match (b.thread_migrations, none.and_then(|n| n.thread_migrations)) {
            (Some(a), Some(n)) => {
                parts.push(format!("thread migrations {} vs {} under none", compact(a), compact(n)))
            }
            (Some(a), None) => parts.push(format!("thread migrations {}", compact(a))),
            _ => {}
        }
        if let Some(p) = b.cpu_outside_pct {
            parts.push(format!("CPU time outside the binding {p:.1} %"));
        }
        match b.placement {
            Some(PlacementVerdict::MemoryDidNotFollow) => {
                parts.push("held in /proc but memory did not follow".into())
            }
            Some(PlacementVerdict::ThreadsOutside) => {
                parts.push("held in /proc but the threads ran outside it".into())
            }
            _ => {}
        }
        if parts.len() > usize::from(b.score_vs_none_pct.is_some()) {
            out.push(format!("{}: {}", b.label, parts.join("; ")));
        }
    }
    out
}

/// A count for people: `10`, `2 k`, `1.9 M`.
pub fn compact(v: f64) -> String {
    let (x, unit) = match v.abs() {
        a if a < 1e3 => return format!("{v:.0}"),
        a if a < 1e6 => (v / 1e3, "k"),
        a if a < 1e9 => (v / 1e6, "M"),
        _ => (v / 1e9, "G"),
    };
    let s = format!("{x:.1}");
    format!("{} {unit}", s.strip_suffix(".0").unwrap_or(&s))
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
    fn memory_and_numa_misses_are_set_against_none() {
        let mut runs = clear_gain_runs();
        for r in &mut runs {
            let (by_node, miss) = if r.binding == "none" {
                ([(0, 600 << 20), (1, 400 << 20)], 3000)
            } else {
                ([(0, 1023 << 20), (1, 1 << 20)], 10)
            };
            r.memory_by_node = Some(by_node.into());
            r.numa = Some(crate::summary::NumaCounters {
                per_node: Default::default(),
                total: [("numa_miss".to_string(), miss), ("other_node".to_string(), 7)].into(),
            });
        }
        let r = analyse(&choices(), 3, &runs, false);
        let lines = placement_lines(&r);
        assert!(
            lines.contains(&"none trial 1: engine memory N0 600.0 MiB, N1 400.0 MiB; numa_miss 3000, other_node 7".to_string()),
            "{lines:#?}"
        );
        let last = lines.last().unwrap();
        assert!(last.starts_with("nodes=0: +12."), "{last}");
        assert!(
            last.ends_with("engine memory on remote nodes 0.1 % vs 40.0 % under none; numa_miss 10 vs 3 k under none"),
            "{last}"
        );
        let mut table = Vec::new();
        write_table(&r, &mut table).unwrap();
        assert!(String::from_utf8(table).unwrap().contains(last.as_str()));
    }

    #[test]
    fn one_sentence_per_binding_explains_the_verdict() {
        let mut runs = clear_gain_runs();
        for r in &mut runs {
            let none = r.binding == "none";
            let (by_node, miss) = if none {
                ([(0, 600 << 20), (1, 400 << 20)], 1_900_000)
            } else {
                ([(0, 800 << 20), (1, 200 << 20)], 2000)
            };
            r.memory_by_node = Some(by_node.into());
            r.numa = Some(crate::summary::NumaCounters {
                per_node: Default::default(),
                total: [("numa_miss".to_string(), miss)].into(),
            });
            r.threads = Some(crate::summary::ThreadPlacement {
                threads: 9,
                last_cpus: if none { vec![0, 5] } else { vec![1, 2] },
                migrations_delta: Some(if none { 4100 } else { 120 }),
                cpu_seconds: Some(30.0),
                outside_share: (!none).then_some(0.0),
                ..Default::default()
            });
        }
        let r = analyse(&choices(), 3, &runs, false);
        let lines = placement_lines(&r);
        assert_eq!(
            lines.last().unwrap(),
            "nodes=0: +12.5 % output tok/s; engine memory on remote nodes 20.0 % vs 40.0 % under \
             none; numa_miss 2 k vs 1.9 M under none; thread migrations 120 vs 4.1 k under none; \
             CPU time outside the binding 0.0 %; held in /proc but memory did not follow"
        );
        assert!(
            lines.contains(
                &"none trial 2: engine memory N0 600.0 MiB, N1 400.0 MiB; numa_miss 1900000, \
              other_node 0; threads: 9 threads last on CPUs 0,5; 30.0 s CPU"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert_eq!(r.bindings[1].placement, Some(PlacementVerdict::MemoryDidNotFollow));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["bindings"][1]["placement"], "memory_did_not_follow");
        assert_eq!(json["bindings"][0]["placement"], serde_json::Value::Null);
        assert!(
            r.verdict.contains("; nodes=0 held in /proc but memory did not follow (20.0 % of the engine's memory on remote nodes)"),
            "{}",
            r.verdict
        );
    }

    #[test]
    fn counts_read_compactly() {
        let got: Vec<String> =
            [0.0, 10.0, 999.0, 2000.0, 4100.0, 1.9e6, 3.25e9].map(compact).into();
        assert_eq!(got, ["0", "10", "999", "2 k", "4.1 k", "1.9 M", "3.2 G"]);
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
