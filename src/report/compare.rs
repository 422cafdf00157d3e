//! `nodeagent verify compare RUN_A RUN_B`: two runs side by side, level by level (levels are
//! matched by concurrency and rate), with the relative change of each headline metric, like the
//! seed's NUMA table (binding vs no binding).

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use super::table::level_label;
use crate::summary::{LevelStats, Summary};

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
    let differ = workload_differences(a, b);
    if !differ.is_empty() {
        writeln!(
            w,
            "the two runs did not send the same workload, so the changes above mix binding and \
             workload: {}",
            differ.join("; ")
        )?;
    }
    for (name, s) in [names.0, names.1].iter().zip([a, b]) {
        if s.meta.interrupted {
            writeln!(w, "{name} was interrupted: its last level may be partial")?;
        }
    }
    Ok(matched)
}

/// What differs between the workloads of two runs (model, API, streaming, dataset and its
/// filter, seed, max tokens, arrival process): each as `what: A vs B`.
fn workload_differences(a: &Summary, b: &Summary) -> Vec<String> {
    let (ma, mb) = (&a.meta, &b.meta);
    let opt = |x: Option<u64>| x.map_or_else(|| "none".to_string(), |v| v.to_string());
    let fields: [(&str, String, String); 9] = [
        ("model", ma.model.clone(), mb.model.clone()),
        ("api", ma.api.clone(), mb.api.clone()),
        ("stream", ma.stream.to_string(), mb.stream.to_string()),
        ("dataset", ma.dataset.clone(), mb.dataset.clone()),
        ("prompts", ma.prompts.to_string(), mb.prompts.to_string()),
        (
            "prompt length filter",
            format!(
                "{}..{} {}",
                ma.min_prompt_length,
                opt(ma.max_prompt_length),
                ma.prompt_length_unit
            ),
            format!(
                "{}..{} {}",
                mb.min_prompt_length,
                opt(mb.max_prompt_length),
                mb.prompt_length_unit
            ),
        ),
        ("seed", ma.seed.to_string(), mb.seed.to_string()),
        ("max_tokens", opt(ma.max_tokens.map(u64::from)), opt(mb.max_tokens.map(u64::from))),
        (
            "arrival",
            ma.arrival.clone().unwrap_or_else(|| "closed loop".into()),
            mb.arrival.clone().unwrap_or_else(|| "closed loop".into()),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(what, x, y)| format!("{what}: {x} vs {y}"))
        .collect()
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
        assert!(!s.contains("same workload"), "same (default) workload: no note: {s}");
    }

    #[test]
    fn different_workloads_and_interruptions_are_said() {
        let mut a = Summary::default();
        a.meta.dataset = "openqa:/data/open_qa.jsonl".into();
        a.meta.max_prompt_length = Some(8000);
        a.meta.prompt_length_unit = "characters".into();
        let mut b = a.clone();
        b.meta.max_prompt_length = Some(2000);
        b.meta.prompt_length_unit = "tokens".into();
        b.meta.max_tokens = Some(256);
        b.meta.interrupted = true;
        let mut out = Vec::new();
        compare(&a, &b, ("A", "B"), &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(
                "workload: prompt length filter: 0..8000 characters vs 0..2000 tokens; \
                 max_tokens: none vs 256"
            ),
            "{s}"
        );
        assert!(s.contains("B was interrupted"), "{s}");
        assert!(!s.contains("A was interrupted"), "{s}");
    }
}
