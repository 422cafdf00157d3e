//! The evalscope-style "Benchmarking summary" block, with the labels of the seed's reports
//! (evalscope-perf 0.5.5), so old reports can be compared line by line. Values are nodeagent's
//! measurements; where evalscope meant something else by a label, the line is marked `*` and a
//! note under the block says what differs.

use std::io::Write;

use crate::summary::LevelStats;

const PCTS: [&str; 8] = ["p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99"];

pub fn benchmarking_summary<W: Write>(l: &LevelStats, mut w: W) -> std::io::Result<()> {
    writeln!(w, "Benchmarking summary: ")?;
    writeln!(w, " Time taken for tests: {:.3} seconds", l.duration_s)?;
    writeln!(w, " Expected number of requests: {}", l.planned)?;
    writeln!(w, " Number of concurrency: {}", l.parallel)?;
    writeln!(w, " Total requests: {}", l.requests)?;
    writeln!(w, " Succeed requests: {}", l.succeeded)?;
    writeln!(w, " Failed requests: {}", l.failed)?;
    writeln!(w, " Average QPS: {:.3}", l.qps)?;
    writeln!(w, " Average latency: {:.3}", l.latency_s.mean)?;
    writeln!(w, " Throughput(average output tokens per second): {:.3}", l.output_throughput)?;
    writeln!(w, " Average time to first token: {:.3} *1", l.ttft_s.mean)?;
    writeln!(w, " Average input tokens per request: {:.3}", l.input_tokens_mean)?;
    writeln!(w, " Average output tokens per request: {:.3}", l.output_tokens_mean)?;
    writeln!(w, " Average time per output token: {:.5} *2", l.tpot_s.mean)?;
    writeln!(w, " Average package per request: {:.3}", l.chunks_mean)?;
    writeln!(w, " Average package latency: {:.3} *3", l.itl_s.mean)?;
    writeln!(w, " Percentile of time to first token: ")?;
    for p in PCTS {
        writeln!(w, "     {p}: {:.4}", l.ttft_s.get(p).unwrap_or(0.0))?;
    }
    writeln!(w, " Percentile of request latency: ")?;
    for p in PCTS {
        writeln!(w, "     {p}: {:.4}", l.latency_s.get(p).unwrap_or(0.0))?;
    }
    writeln!(w, " Notes (where evalscope-perf 0.5.5 meant something else):")?;
    writeln!(
        w,
        "  *1 measured from the send to the first streamed content token; the old tool did not"
    )?;
    writeln!(w, "     stream, so its value equalled the average latency")?;
    writeln!(
        w,
        "  *2 (last token - first token) / (output tokens - 1) per request, averaged; the old tool"
    )?;
    writeln!(w, "     printed time taken / total output tokens (1 / throughput)")?;
    writeln!(
        w,
        "  *3 mean gap between streamed chunks (ITL); the old tool printed latency / packages"
    )?;
    writeln!(
        w,
        "  Total requests counts every request sent (= succeeded + failed); {} planned request(s) were not sent",
        l.not_sent
    )?;
    writeln!(w, "  Percentiles interpolate linearly between closest ranks; latency percentiles are over succeeded requests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_uses_the_seed_labels() {
        let l = LevelStats {
            parallel: 128,
            planned: 1000,
            requests: 1000,
            succeeded: 950,
            failed: 50,
            ..Default::default()
        };
        let mut out = Vec::new();
        benchmarking_summary(&l, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        for label in [
            "Benchmarking summary:",
            " Number of concurrency: 128",
            " Total requests: 1000",
            " Failed requests: 50",
            " Average time to first token: ",
            " Percentile of request latency: ",
            "     p99: ",
        ] {
            assert!(s.contains(label), "missing {label:?} in\n{s}");
        }
    }
}
