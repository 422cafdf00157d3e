//! Human tables: one per level (rows = metrics, columns = statistics) and the sweep table (rows =
//! metrics, columns = levels, like the seed's tables).

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use crate::summary::{Dist, LevelStats, SearchStep, SearchSummary, Slo};

/// How a level is named in headers: `c=128`, `rate=20/s c≤64`.
pub fn level_label(l: &LevelStats) -> String {
    match (l.rate, l.parallel) {
        (Some(r), 0) => format!("rate={r}/s"),
        (Some(r), c) => format!("rate={r}/s c≤{c}"),
        (None, c) => format!("c={c}"),
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t
}

fn ms(x: f64) -> String {
    format!("{:.2}", x * 1000.0)
}

fn right(t: &mut Table) {
    for i in 1..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The table printed after each level.
pub fn level_table<W: Write>(l: &LevelStats, mut w: W) -> std::io::Result<()> {
    writeln!(
        w,
        "{}: {} sent = {} succeeded + {} failed{}, {:.2} s, {:.2} req/s, {:.1} output tok/s, {:.1} total tok/s, concurrency achieved {:.1}",
        level_label(l),
        l.requests,
        l.succeeded,
        l.failed,
        if l.not_sent > 0 { format!(" ({} planned, not sent)", l.not_sent) } else { String::new() },
        l.duration_s,
        l.qps,
        l.output_throughput,
        l.total_throughput,
        l.achieved_concurrency,
    )?;
    let mut t = new_table();
    t.set_header(["metric (ms)", "mean", "std", "min", "p50", "p90", "p95", "p99", "p99.9", "max"]);
    let rows: [(&str, &Dist); 6] = [
        ("TTFT", &l.ttft_s),
        ("TPOT", &l.tpot_s),
        ("ITL", &l.itl_s),
        ("NTPOT", &l.ntpot_s),
        ("latency", &l.latency_s),
        ("schedule lag", &l.schedule_lag_s),
    ];
    for (name, d) in rows {
        t.add_row([
            name.to_string(),
            ms(d.mean),
            ms(d.std),
            ms(d.min),
            ms(d.p50),
            ms(d.p90),
            ms(d.p95),
            ms(d.p99),
            ms(d.p99_9),
            ms(d.max),
        ]);
    }
    right(&mut t);
    writeln!(w, "{t}")?;
    let mut notes = Vec::new();
    if !l.failures.is_empty() {
        let f: Vec<String> = l.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        notes.push(format!("failures: {}", f.join(", ")));
    }
    if l.tokens_counted > 0 {
        let input = match (l.input_tokens_counted, l.input_tokens_unknown) {
            (0, 0) => String::new(),
            (0, _) => ", input tokens unknown (--tokenizer counts them)".into(),
            (n, _) => format!(", input tokens of {n} by the tokenizer (no chat template)"),
        };
        notes.push(format!(
            "{} of {} succeeded requests had no usage: output tokens counted from chunks{input}",
            l.tokens_counted, l.succeeded
        ));
    }
    if let Some(g) = &l.goodput {
        notes.push(format!(
            "goodput {:.2} req/s ({} of {} requests met the SLOs)",
            g.goodput_qps, g.good_requests, l.requests
        ));
    }
    if let Some(c) = &l.loadgen_cpu {
        notes.push(format!("load generator: {}", loadgen_text(c)));
    }
    for n in notes {
        writeln!(w, "  {n}")?;
    }
    Ok(())
}

/// Rows of the sweep table: label and how to read the value from a level.
type Row = (&'static str, fn(&LevelStats) -> String);

const SWEEP_ROWS: &[Row] = &[
    ("requests sent", |l| l.requests.to_string()),
    ("succeeded", |l| l.succeeded.to_string()),
    ("failed", |l| l.failed.to_string()),
    ("not sent", |l| l.not_sent.to_string()),
    ("duration (s)", |l| format!("{:.2}", l.duration_s)),
    ("QPS (req/s)", |l| format!("{:.3}", l.qps)),
    ("output tok/s", |l| format!("{:.1}", l.output_throughput)),
    ("total tok/s", |l| format!("{:.1}", l.total_throughput)),
    ("concurrency achieved", |l| format!("{:.1}", l.achieved_concurrency)),
    ("TTFT mean (ms)", |l| ms(l.ttft_s.mean)),
    ("TTFT p50 (ms)", |l| ms(l.ttft_s.p50)),
    ("TTFT p99 (ms)", |l| ms(l.ttft_s.p99)),
    ("TPOT mean (ms)", |l| ms(l.tpot_s.mean)),
    ("TPOT p99 (ms)", |l| ms(l.tpot_s.p99)),
    ("ITL p50 (ms)", |l| ms(l.itl_s.p50)),
    ("ITL p99 (ms)", |l| ms(l.itl_s.p99)),
    ("latency mean (s)", |l| format!("{:.3}", l.latency_s.mean)),
    ("latency p50 (s)", |l| format!("{:.3}", l.latency_s.p50)),
    ("latency p99 (s)", |l| format!("{:.3}", l.latency_s.p99)),
    ("input tokens mean", |l| format!("{:.1}", l.input_tokens_mean)),
    ("output tokens mean", |l| format!("{:.1}", l.output_tokens_mean)),
    ("goodput (req/s)", |l| {
        l.goodput.as_ref().map_or_else(|| "-".into(), |g| format!("{:.3}", g.goodput_qps))
    }),
    ("numa_miss / other_node (pages)", numa_cell),
    ("thread migrations / CPU outside", threads_cell),
    ("load generator CPU (cores)", |l| {
        l.loadgen_cpu.as_ref().map_or_else(|| "-".into(), |c| format!("{:.3}", c.cores))
    }),
];

/// The engine threads' migrations and the share of their CPU time outside the binding over the
/// level, `-` for a figure not known (engine elsewhere, no `sched`, no CPU binding).
fn threads_cell(l: &LevelStats) -> String {
    l.threads.as_ref().map_or_else(
        || "-".into(),
        |t| {
            let m = t.migrations_delta.map_or("-".into(), |m| m.to_string());
            let o = t.outside_share.map_or("-".into(), |o| format!("{:.1} %", o * 100.0));
            format!("{m} / {o}")
        },
    )
}

/// The load generator's CPU use of a level: `0.12 cores (6.0 % of its 2 cpus)`.
pub fn loadgen_text(c: &crate::summary::LoadgenCpu) -> String {
    format!(
        "{:.3} cores ({:.1} % of its {} cpu{})",
        c.cores,
        c.allowed_share * 100.0,
        c.allowed_cpus,
        if c.allowed_cpus == 1 { "" } else { "s" }
    )
}

/// The level's host-wide `numa_miss` and `other_node` deltas, `-` without NUMA counters.
fn numa_cell(l: &LevelStats) -> String {
    l.numa.as_ref().map_or_else(
        || "-".into(),
        |n| {
            let get = |c: &str| n.total.get(c).copied().unwrap_or(0);
            format!("{} / {}", get("numa_miss"), get("other_node"))
        },
    )
}

/// Rows = metrics, columns = levels.
pub fn sweep_table<W: Write>(levels: &[LevelStats], mut w: W) -> std::io::Result<()> {
    let mut t = new_table();
    let mut header = vec!["metric".to_string()];
    header.extend(levels.iter().map(level_label));
    t.set_header(header);
    for (name, get) in SWEEP_ROWS {
        let mut row = vec![name.to_string()];
        row.extend(levels.iter().map(get));
        t.add_row(row);
    }
    right(&mut t);
    writeln!(w, "{t}")
}

/// How a search step's load is named: `c=8`, `rate=2.5/s`.
pub fn step_label(s: &SearchStep) -> String {
    match (s.parallel, s.rate) {
        (_, Some(r)) => format!("rate={r}/s"),
        (Some(c), None) => format!("c={c}"),
        (None, None) => "-".into(),
    }
}

/// `ttft ≤ 500 ms, tpot ≤ 50 ms`.
pub fn slo_text(slo: &Slo) -> String {
    let ms = |x: f64| format!("{} ms", (x * 1e3 * 1000.0).round() / 1000.0);
    [("ttft", slo.ttft_s), ("tpot", slo.tpot_s), ("itl", slo.itl_s), ("e2e", slo.latency_s)]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} ≤ {}", ms(v))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SLO search: one row per step in the order they ran, then the capacity found.
pub fn search_table<W: Write>(s: &SearchSummary, mut w: W) -> std::io::Result<()> {
    let mut t = new_table();
    t.set_header(vec![
        "step",
        "load",
        "attainment",
        "met",
        "req/s",
        "output tok/s",
        "TTFT p99 (s)",
        "TPOT p99 (s)",
        "latency p50 (s)",
    ]);
    for (i, x) in s.steps.iter().enumerate() {
        t.add_row(vec![
            format!("{}", i + 1),
            step_label(x),
            format!("{:.1} %", x.attainment * 100.0),
            if x.met { "yes" } else { "NO" }.into(),
            format!("{:.2}", x.qps),
            format!("{:.1}", x.output_throughput),
            format!("{:.3}", x.ttft_p99_s),
            format!("{:.4}", x.tpot_p99_s),
            format!("{:.3}", x.latency_p50_s),
        ]);
    }
    right(&mut t);
    writeln!(w, "{t}")?;
    writeln!(w, "{}", search_verdict(s))
}

/// One line: what was searched and what was found.
pub fn search_verdict(s: &SearchSummary) -> String {
    let head = format!(
        "SLO search ({}, {} for {} % of requests)",
        s.kind,
        slo_text(&s.slo),
        (s.attainment * 1000.0).round() / 10.0
    );
    let stop = s.stop.as_deref().unwrap_or("running");
    match &s.best {
        Some(b) => {
            let load = |x: &SearchStep| x.rate.unwrap_or(x.parallel.unwrap_or(0) as f64);
            let above = s
                .steps
                .iter()
                .filter(|x| !x.met && load(x) > load(b))
                .min_by(|x, y| load(x).total_cmp(&load(y)))
                .map(|a| format!("; {} missed it ({:.1} %)", step_label(a), a.attainment * 100.0))
                .unwrap_or_default();
            format!(
                "{head}: best {} ({:.1} % met, {:.2} req/s, {:.1} output tok/s){above}; stop: {stop}",
                step_label(b),
                b.attainment * 100.0,
                b.qps,
                b.output_throughput
            )
        }
        None => format!("{head}: no step met the SLO; stop: {stop}"),
    }
}

/// The engine's own metrics per level (`LevelStats::server`); nothing when no level has them.
pub fn server_table<W: Write>(levels: &[LevelStats], mut w: W) -> std::io::Result<()> {
    if levels.iter().all(|l| l.server.is_none()) {
        return Ok(());
    }
    let mut t = new_table();
    t.set_header(vec![
        "level",
        "running mean/max",
        "waiting mean/max",
        "KV cache max",
        "requests",
        "prompt tok",
        "gen tok",
        "preempt",
        "prefix hit",
        "server TTFT p50/p99 (s)",
        "server e2e p50 (s)",
    ]);
    let gauge = |g: &Option<crate::summary::GaugeStats>, pct: bool| match g {
        Some(g) if pct => format!("{:.1} %", g.max * 100.0),
        Some(g) => format!("{:.1} / {:.0}", g.mean, g.max),
        None => "-".into(),
    };
    let num = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0}"));
    for l in levels {
        let Some(s) = &l.server else { continue };
        t.add_row(vec![
            level_label(l),
            gauge(&s.running, false),
            gauge(&s.waiting, false),
            gauge(&s.kv_cache_usage, true),
            num(s.requests),
            num(s.prompt_tokens),
            num(s.generation_tokens),
            num(s.preemptions),
            s.prefix_cache_hit_rate.map_or("-".into(), |r| format!("{:.1} %", r * 100.0)),
            s.ttft_s.as_ref().map_or("-".into(), |h| format!("{:.3} / {:.3}", h.p50, h.p99)),
            s.e2e_s.as_ref().map_or("-".into(), |h| format!("{:.3}", h.p50)),
        ]);
    }
    right(&mut t);
    writeln!(
        w,
        "server metrics ({})",
        levels.iter().find_map(|l| l.server.as_ref()).map_or("", |s| s.url.as_str())
    )?;
    writeln!(w, "{t}")?;
    for l in levels {
        for warning in l.server.iter().flat_map(|s| &s.warnings) {
            writeln!(w, "warning: level {}: {warning}", level_label(l))?;
        }
    }
    Ok(())
}

/// GPU utilization and memory per level (`summary.json`'s `meta.gpu`, sampled while each level
/// ran): the seed report's "memory and utilization under load", one row per level and GPU.
/// Writes nothing when no level has GPU figures.
pub fn gpu_table<W: Write>(meta_gpu: &serde_json::Value, mut w: W) -> std::io::Result<()> {
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let cell = |x: Option<f64>, digits: usize| match x {
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_string(),
    };
    let mut t = new_table();
    t.set_header(["level", "GPU", "util mean %", "util max %", "mem mean MiB", "mem max MiB"]);
    let mut rows = 0;
    for level in meta_gpu.get("levels").and_then(|l| l.as_array()).into_iter().flatten() {
        let label = level.get("level").and_then(|l| l.as_str()).unwrap_or("?");
        for g in level.get("gpus").and_then(|g| g.as_array()).into_iter().flatten() {
            t.add_row([
                label.to_string(),
                cell(num(g, "gpu"), 0),
                cell(num(g, "utilization_mean_pct"), 1),
                cell(num(g, "utilization_max_pct"), 1),
                cell(num(g, "memory_used_mean_mib"), 0),
                cell(num(g, "memory_used_max_mib"), 0),
            ]);
            rows += 1;
        }
    }
    if rows == 0 {
        return Ok(());
    }
    right(&mut t);
    writeln!(
        w,
        "GPUs under load ({}):",
        meta_gpu.get("sampler").and_then(|s| s.as_str()).unwrap_or("sampler")
    )?;
    writeln!(w, "{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_table_lists_each_level_and_gpu_and_nothing_without_samples() {
        let meta = serde_json::json!({"sampler": "mx-smi", "interval_ms": 1000, "levels": [
            {"level": "c=8", "samples": 3, "samples_missing": 0, "gpus": [
                {"gpu": 0, "samples": 3, "utilization_mean_pct": 30.0, "utilization_max_pct": 36.0,
                 "memory_used_mean_mib": 60139.0, "memory_used_max_mib": 60278, "memory_total_mib": 65536},
                {"gpu": 1, "samples": 3, "utilization_mean_pct": null, "utilization_max_pct": null,
                 "memory_used_mean_mib": null, "memory_used_max_mib": null, "memory_total_mib": null}]}]});
        let mut out = Vec::new();
        gpu_table(&meta, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("GPUs under load (mx-smi):"), "{out}");
        assert!(out.contains("c=8") && out.contains("30.0") && out.contains("60278"), "{out}");
        assert_eq!(out.lines().filter(|l| l.contains("c=8")).count(), 2, "{out}");
        let mut none = Vec::new();
        gpu_table(&serde_json::json!({"levels": []}), &mut none).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn sweep_table_shows_the_numa_miss_and_other_node_deltas_per_level() {
        let numa = crate::summary::NumaCounters {
            per_node: Default::default(),
            total: [("numa_miss".to_string(), 2048), ("other_node".to_string(), 17)].into(),
        };
        let a = LevelStats { parallel: 8, numa: Some(numa), ..LevelStats::default() };
        let b = LevelStats { parallel: 16, ..LevelStats::default() };
        let mut out = Vec::new();
        sweep_table(&[a, b], &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        let row = s.lines().find(|l| l.contains("numa_miss / other_node")).unwrap();
        assert!(row.contains("2048 / 17") && row.contains(" - "), "{row}");
    }

    #[test]
    fn sweep_table_shows_the_thread_migrations_and_outside_share_per_level() {
        let threads = crate::summary::ThreadPlacement {
            migrations_delta: Some(120),
            outside_share: Some(0.025),
            ..Default::default()
        };
        let a = LevelStats { parallel: 8, threads: Some(threads), ..LevelStats::default() };
        let b = LevelStats {
            parallel: 16,
            threads: Some(crate::summary::ThreadPlacement::default()),
            ..LevelStats::default()
        };
        let mut out = Vec::new();
        sweep_table(&[a, b], &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        let row = s.lines().find(|l| l.contains("thread migrations / CPU outside")).unwrap();
        assert!(row.contains(" 120 / 2.5 % ") && row.contains(" - / - "), "{row}");
    }

    #[test]
    fn the_load_generators_cpu_use_is_a_sweep_row_and_a_level_note() {
        let cpu = crate::summary::LoadgenCpu {
            cpu_s: 0.9,
            wall_s: 3.0,
            cores: 0.3,
            allowed_share: 0.3,
            allowed_cpus: 1,
        };
        let a = LevelStats { parallel: 8, loadgen_cpu: Some(cpu), ..LevelStats::default() };
        let b = LevelStats { parallel: 16, ..LevelStats::default() };
        let mut out = Vec::new();
        sweep_table(&[a.clone(), b], &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        let row = s.lines().find(|l| l.contains("load generator CPU (cores)")).unwrap();
        assert!(row.contains(" 0.300 ") && row.contains(" - "), "{row}");
        let mut out = Vec::new();
        level_table(&a, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("  load generator: 0.300 cores (30.0 % of its 1 cpu)\n"), "{s}");
    }

    #[test]
    fn sweep_table_has_a_column_per_level() {
        let a = LevelStats {
            parallel: 8,
            requests: 10,
            succeeded: 9,
            failed: 1,
            ..LevelStats::default()
        };
        let b = LevelStats { parallel: 16, requests: 20, succeeded: 20, ..LevelStats::default() };
        let mut out = Vec::new();
        sweep_table(&[a.clone(), b], &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("c=8") && s.contains("c=16"), "{s}");
        let failed = s.lines().find(|l| l.contains("failed")).unwrap();
        assert!(failed.contains(" 1 ") && failed.contains(" 0 "), "{failed}");
        let mut out = Vec::new();
        level_table(&a, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("10 sent = 9 succeeded + 1 failed"));
    }
}
