//! `nodeagent verify compare RUN_A RUN_B`: two runs side by side, level by level (levels are
//! matched by concurrency and rate), with the relative change of each headline metric, like the
//! seed's NUMA table (binding vs no binding).

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use super::summary::Summary;
use super::table::level_label;
use crate::loadgen::stats::LevelStats;

type Metric = (&'static str, fn(&LevelStats) -> f64, bool);

/// Metric, value, and whether higher is better.
const METRICS: &[Metric] = &[
    ("QPS (req/s)", |l| l.qps, true),
    ("output tok/s", |l| l.output_throughput, true),
    ("latency mean (s)", |l| l.latency_s.mean, false),
    ("latency p99 (s)", |l| l.latency_s.p99, false),
    ("TTFT p50 (ms)", |l| l.ttft_s.p50 * 1000.0, false),
    ("TTFT p99 (ms)", |l| l.ttft_s.p99 * 1000.0, false),
    ("TPOT mean (ms)", |l| l.tpot_s.mean * 1000.0, false),
    ("failed", |l| l.failed as f64, false),
];

/// Writes the comparison; returns how many levels matched.
pub fn compare<W: Write>(
    a: &Summary,
    b: &Summary,
    names: (&str, &str),
    mut w: W,
) -> std::io::Result<usize> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["level", "metric", names.0, names.1, "change"]);
    let mut matched = 0;
    for la in &a.levels {
        let Some(lb) = b.levels.iter().find(|lb| lb.parallel == la.parallel && lb.rate == la.rate)
        else {
            continue;
        };
        matched += 1;
        for (name, get, higher_better) in METRICS {
            let (va, vb) = (get(la), get(lb));
            let change = if va != 0.0 {
                let pct = (vb - va) / va * 100.0;
                let better = if *higher_better { pct > 0.0 } else { pct < 0.0 };
                let tag = if pct.abs() < 0.05 {
                    ""
                } else if better {
                    " better"
                } else {
                    " worse"
                };
                format!("{pct:+.1}%{tag}")
            } else if vb == 0.0 {
                "0".into()
            } else {
                "new".into()
            };
            t.add_row([level_label(la), name.to_string(), fmt(va), fmt(vb), change]);
        }
    }
    for i in 2..5 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    writeln!(w, "{t}")?;
    let unmatched: Vec<String> = a
        .levels
        .iter()
        .chain(&b.levels)
        .filter(|l| {
            !(a.levels.iter().any(|x| x.parallel == l.parallel && x.rate == l.rate)
                && b.levels.iter().any(|x| x.parallel == l.parallel && x.rate == l.rate))
        })
        .map(level_label)
        .collect();
    if !unmatched.is_empty() {
        writeln!(w, "levels in only one run (not compared): {}", unmatched.join(", "))?;
    }
    Ok(matched)
}

fn fmt(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e12 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_levels_show_relative_change() {
        let l = |c, qps| LevelStats { parallel: c, qps, ..Default::default() };
        let a = Summary { levels: vec![l(100, 0.766), l(8, 1.0)], ..Default::default() };
        let b = Summary { levels: vec![l(100, 0.869)], ..Default::default() };
        let mut out = Vec::new();
        assert_eq!(compare(&a, &b, ("none", "-N0 -m0"), &mut out).unwrap(), 1);
        let s = String::from_utf8(out).unwrap();
        let row = s.lines().find(|x| x.contains("QPS")).unwrap();
        assert!(row.contains("+13.4% better"), "{row}");
        assert!(s.contains("levels in only one run (not compared): c=8"), "{s}");
    }
}
