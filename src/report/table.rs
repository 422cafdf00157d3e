//! Human tables: one per level (rows = metrics, columns = statistics) and the sweep table (rows =
//! metrics, columns = levels, like the seed's tables).

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use crate::loadgen::stats::{Dist, LevelStats};

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
        notes.push(format!(
            "{} of {} succeeded requests had no usage: tokens counted from chunks",
            l.tokens_counted, l.succeeded
        ));
    }
    if let Some(g) = &l.goodput {
        notes.push(format!(
            "goodput {:.2} req/s ({} of {} requests met the SLOs)",
            g.goodput_qps, g.good_requests, l.requests
        ));
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
];

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

#[cfg(test)]
mod tests {
    use super::*;

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
