//! The engine's own Prometheus metrics during a level, in pure code: a scrape of `/metrics`
//! (Prometheus text format, parsed with `prometheus-parse`) becomes a `Snapshot` of the figures
//! that tell whether the load reached the engine and what it did with it, and the snapshots of
//! one level become its `ServerLevel`: counter deltas (requests, prompt and generation tokens,
//! preemptions, prefix-cache queries and hits), gauge means and maxima (running, waiting, KV-cache use), and the server's own
//! TTFT, TPOT, end-to-end and queue-time histograms over the level (their deltas' mean and
//! percentiles). vLLM's `vllm:*` names and llama.cpp's `llamacpp:*` names are read; values of
//! the same name with different labels (`model_name`, `finished_reason`) are added up.
//!
//! The text format is parsed here (`parse`): the `prometheus-parse` crate was tried and reads
//! metric names as `\w+`, so it drops every `vllm:*` sample (a colon is legal in a name).
//!
//! Not here: fetching `/metrics` during a level (`sweep`), rendering (`report`).

use std::collections::BTreeMap;

use crate::summary::{GaugeStats, HistStats, ServerLevel};

/// A sample of what `/metrics` says, keyed by metric name (label sets added up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Counters, gauges, `_sum` and `_count` lines.
    pub values: BTreeMap<String, f64>,
    /// Histogram buckets: `le` -> cumulative count, label sets added up.
    pub buckets: BTreeMap<String, Vec<(f64, f64)>>,
}

/// The metric names one engine uses for each figure.
struct Names {
    engine: &'static str,
    running: &'static str,
    waiting: &'static str,
    kv_cache: &'static [&'static str],
    preemptions: &'static str,
    prompt_tokens: &'static str,
    generation_tokens: &'static str,
    requests: &'static str,
    prefix_queries: &'static str,
    prefix_hits: &'static str,
    ttft: &'static str,
    tpot: &'static str,
    e2e: &'static str,
    queue: &'static str,
}

const VLLM: Names = Names {
    engine: "vllm",
    running: "vllm:num_requests_running",
    waiting: "vllm:num_requests_waiting",
    // vLLM 0.10 renamed gpu_cache_usage_perc (a fraction despite its name).
    kv_cache: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    preemptions: "vllm:num_preemptions_total",
    prompt_tokens: "vllm:prompt_tokens_total",
    generation_tokens: "vllm:generation_tokens_total",
    requests: "vllm:request_success_total",
    // vLLM V1's counters, in tokens (the V0 engine had a hit-rate gauge instead).
    prefix_queries: "vllm:prefix_cache_queries_total",
    prefix_hits: "vllm:prefix_cache_hits_total",
    ttft: "vllm:time_to_first_token_seconds",
    tpot: "vllm:time_per_output_token_seconds",
    e2e: "vllm:e2e_request_latency_seconds",
    queue: "vllm:request_queue_time_seconds",
};

/// llama.cpp's server (`--metrics`): no request counter and no histograms.
const LLAMACPP: Names = Names {
    engine: "llamacpp",
    running: "llamacpp:requests_processing",
    waiting: "llamacpp:requests_deferred",
    kv_cache: &["llamacpp:kv_cache_usage_ratio"],
    preemptions: "",
    prompt_tokens: "llamacpp:prompt_tokens_total",
    generation_tokens: "llamacpp:tokens_predicted_total",
    requests: "",
    prefix_queries: "",
    prefix_hits: "",
    ttft: "",
    tpot: "",
    e2e: "",
    queue: "",
};

/// A line of a `/metrics` body that is not a sample, a comment or blank.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metrics line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses one `/metrics` body (Prometheus text format 0.0.4): comments and blank lines are
/// skipped, every sample is `name{labels} value [timestamp]`.
///
/// ```text
/// # TYPE vllm:num_requests_running gauge
/// vllm:num_requests_running{model_name="qwen2.5"} 3
/// vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="qwen2.5"} 7
/// ```
pub fn parse(text: &str) -> Result<Snapshot, ParseError> {
    let mut snap = Snapshot::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError { line: i + 1, reason, text: raw.to_string() };
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("no metric name"));
        }
        let mut rest = &line[name_end..];
        let mut le = None;
        if let Some(after) = rest.strip_prefix('{') {
            let (labels, tail) = parse_labels(after).ok_or_else(|| err("bad labels"))?;
            le = labels.into_iter().find(|(k, _)| k == "le").map(|(_, v)| v);
            rest = tail;
        }
        let value = rest.split_whitespace().next().ok_or_else(|| err("no value"))?;
        let value = parse_float(value).ok_or_else(|| err("bad value"))?;
        match (name.strip_suffix("_bucket"), le) {
            (Some(base), Some(le)) => {
                let le = parse_float(&le).ok_or_else(|| err("bad le label"))?;
                let b = snap.buckets.entry(base.to_string()).or_default();
                match b.iter_mut().find(|(x, _)| *x == le) {
                    Some(x) => x.1 += value,
                    None => b.push((le, value)),
                }
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
            }
            _ => *snap.values.entry(name.to_string()).or_default() += value,
        }
    }
    Ok(snap)
}

/// `key="value",...}` -> the pairs and what follows the `}`; `None` when malformed.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(tail) = rest.strip_prefix('}') {
            return Some((out, tail));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].trim_start().char_indices();
        let body = rest[eq + 1..].trim_start();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (j, c) in chars {
            match (escaped, c) {
                (true, 'n') => (value.push('\n'), escaped = false).1,
                (true, c) => (value.push(c), escaped = false).1,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(j);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        out.push((key, value));
        rest = body[end? + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Which engine's names a snapshot uses (`None`: neither vLLM's nor llama.cpp's).
fn names(s: &Snapshot) -> Option<&'static Names> {
    let has = |prefix: &str| s.values.keys().chain(s.buckets.keys()).any(|k| k.starts_with(prefix));
    if has("vllm:") {
        Some(&VLLM)
    } else if has("llamacpp:") {
        Some(&LLAMACPP)
    } else {
        None
    }
}

/// Whether a `/metrics` body holds any figure this module reads.
pub fn known(s: &Snapshot) -> bool {
    names(s).is_some()
}

/// Percentile `q` of a histogram from its cumulative buckets (Prometheus' `histogram_quantile`:
/// linear within the bucket; the highest finite bound when it falls in `+Inf`).
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = count - prev.1;
            let frac = if width > 0.0 { (rank - prev.1) / width } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

/// The histogram `name` over the level: last minus first.
fn hist(first: &Snapshot, last: &Snapshot, name: &str) -> Option<HistStats> {
    if name.is_empty() {
        return None;
    }
    let delta = |suffix: &str| {
        let key = format!("{name}{suffix}");
        Some(last.values.get(&key)? - first.values.get(&key).copied().unwrap_or(0.0))
    };
    let count = delta("_count")?;
    let sum = delta("_sum")?;
    let before = first.buckets.get(name);
    let buckets: Vec<(f64, f64)> = last
        .buckets
        .get(name)?
        .iter()
        .map(|&(le, c)| {
            let b = before.and_then(|v| v.iter().find(|x| x.0 == le)).map_or(0.0, |x| x.1);
            (le, c - b)
        })
        .collect();
    Some(HistStats {
        count,
        mean: if count > 0.0 { sum / count } else { 0.0 },
        p50: bucket_quantile(&buckets, 0.5).unwrap_or(0.0),
        p90: bucket_quantile(&buckets, 0.9).unwrap_or(0.0),
        p99: bucket_quantile(&buckets, 0.99).unwrap_or(0.0),
    })
}

/// The level's server figures from the snapshot taken as it began (`first`), those taken while
/// it ran (`during`, for the gauges) and the one after it ended (`last`). `None` when the
/// snapshots hold neither vLLM's nor llama.cpp's names.
pub fn summarize(
    url: &str,
    interval_s: f64,
    first: &Snapshot,
    during: &[Snapshot],
    last: &Snapshot,
) -> Option<ServerLevel> {
    let n = names(last)?;
    let counter = |name: &str| {
        if name.is_empty() {
            return None;
        }
        let end = *last.values.get(name)?;
        Some(end - first.values.get(name).copied().unwrap_or(0.0))
    };
    let gauge = |names: &[&str]| -> Option<GaugeStats> {
        let name = names.iter().find(|k| last.values.contains_key(**k))?;
        let v: Vec<f64> = during.iter().filter_map(|s| s.values.get(*name).copied()).collect();
        if v.is_empty() {
            return Some(GaugeStats::default());
        }
        Some(GaugeStats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            max: v.iter().copied().fold(f64::MIN, f64::max),
            samples: v.len() as u64,
        })
    };
    let (prefix_queries, prefix_hits) = (counter(n.prefix_queries), counter(n.prefix_hits));
    Some(ServerLevel {
        prefix_cache_queries: prefix_queries,
        prefix_cache_hits: prefix_hits,
        prefix_cache_hit_rate: match (prefix_hits, prefix_queries) {
            (Some(h), Some(q)) if q > 0.0 => Some(h / q),
            _ => None,
        },
        url: url.to_string(),
        engine: n.engine.to_string(),
        interval_s,
        scrapes: during.len() as u64 + 2,
        running: gauge(&[n.running]),
        waiting: gauge(&[n.waiting]),
        kv_cache_usage: gauge(n.kv_cache),
        requests: counter(n.requests),
        prompt_tokens: counter(n.prompt_tokens),
        generation_tokens: counter(n.generation_tokens),
        preemptions: counter(n.preemptions),
        ttft_s: hist(first, last, n.ttft),
        tpot_s: hist(first, last, n.tpot),
        e2e_s: hist(first, last, n.e2e),
        queue_s: hist(first, last, n.queue),
        warnings: Vec::new(),
    })
}

/// Warnings when the server counted fewer requests or tokens over the level than the client
/// saw succeed (the load did not all reach this engine, or the counters are of another one).
pub fn shortfalls(s: &ServerLevel, succeeded: u64, output_tokens: f64) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = s.requests {
        if r + 0.5 < succeeded as f64 {
            out.push(format!(
                "the server counted {r} finished requests during the level, the client {succeeded} \
                 successes: not all the load reached the engine behind {}",
                s.url
            ));
        }
    }
    if let Some(g) = s.generation_tokens {
        if g + 0.5 < output_tokens {
            out.push(format!(
                "the server counted {g} generated tokens during the level, the client \
                 {output_tokens}: not all the load reached the engine behind {}",
                s.url
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.0
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 1
vllm:request_success_total{finished_reason="length",model_name="m"} 2
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="m"} 30
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"} 3
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 3
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.15
vllm:time_to_first_token_seconds_count{model_name="m"} 3
"#;

    fn after(running: u32) -> String {
        format!(
            r#"# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="m"}} {running}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{model_name="m"}} 0.25
# TYPE vllm:request_success_total counter
vllm:request_success_total{{finished_reason="stop",model_name="m"}} 5
vllm:request_success_total{{finished_reason="length",model_name="m"}} 8
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{model_name="m"}} 130
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} 5
vllm:time_to_first_token_seconds_bucket{{le="1.0",model_name="m"}} 13
vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} 13
vllm:time_to_first_token_seconds_sum{{model_name="m"}} 4.15
vllm:time_to_first_token_seconds_count{{model_name="m"}} 13
"#
        )
    }

    #[test]
    fn a_level_is_the_difference_of_two_scrapes_and_the_gauges_between() {
        let first = parse(BEFORE).unwrap();
        assert_eq!(first.values["vllm:request_success_total"], 3.0, "label sets add up");
        let during = [parse(&after(2)).unwrap(), parse(&after(6)).unwrap()];
        let last = parse(&after(0)).unwrap();
        let s = summarize("http://x/metrics", 0.5, &first, &during, &last).unwrap();
        assert_eq!(s.engine, "vllm");
        assert_eq!(
            (s.requests, s.generation_tokens, s.preemptions),
            (Some(10.0), Some(100.0), None)
        );
        let r = s.running.unwrap();
        assert_eq!((r.mean, r.max, r.samples), (4.0, 6.0, 2));
        assert_eq!(s.kv_cache_usage.unwrap().max, 0.25);
        let t = s.ttft_s.unwrap();
        assert_eq!(t.count, 10.0);
        assert!((t.mean - 0.4).abs() < 1e-12, "{t:?}");
        // 2 of the 10 under 0.1 s, 8 between 0.1 and 1 s: the median is 3/8 into that bucket.
        assert!((t.p50 - (0.1 + 0.9 * 3.0 / 8.0)).abs() < 1e-12, "{t:?}");
        assert_eq!(s.scrapes, 4);
    }

    #[test]
    fn llama_cpp_names_and_unknown_bodies() {
        let first = parse("llamacpp:prompt_tokens_total 10\nllamacpp:tokens_predicted_total 5\nllamacpp:requests_processing 0\n").unwrap();
        let last = parse("llamacpp:prompt_tokens_total 50\nllamacpp:tokens_predicted_total 45\nllamacpp:requests_processing 1\n").unwrap();
        let s = summarize("u", 1.0, &first, std::slice::from_ref(&last), &last).unwrap();
        assert_eq!(s.engine, "llamacpp");
        assert_eq!(
            (s.prompt_tokens, s.generation_tokens, s.requests),
            (Some(40.0), Some(40.0), None)
        );
        assert!(s.ttft_s.is_none());
        assert_eq!(s.running.unwrap().max, 1.0);
        let none = parse("# nothing we know\nprocess_cpu_seconds_total 3\n").unwrap();
        assert!(!known(&none));
        assert!(summarize("u", 1.0, &none, &[], &none).is_none());
    }

    #[test]
    fn labels_with_commas_quotes_and_escapes_and_bad_lines() {
        let s = parse(
            "m{a=\"x,y\",b=\"say \\\"hi\\\"\"} 2 1700000000000\nm{a=\"z\"} 3e0\nh_bucket{le=\"+Inf\"} 4\n",
        )
        .unwrap();
        assert_eq!(s.values["m"], 5.0);
        assert_eq!(s.buckets["h"], [(f64::INFINITY, 4.0)]);
        let e = parse("ok 1\n\nm{a=\"x} 1\n").unwrap_err();
        assert_eq!((e.line, e.reason), (3, "bad labels"));
        assert_eq!(
            parse("m 1\nm two\n").unwrap_err().to_string(),
            "metrics line 2: bad value: \"m two\""
        );
        assert_eq!(parse("{a=\"b\"} 1").unwrap_err().reason, "no metric name");
        assert_eq!(parse("m\n").unwrap_err().reason, "no value");
    }

    #[test]
    fn histogram_quantiles_interpolate_within_buckets() {
        let b = [(0.1, 2.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        assert!((bucket_quantile(&b, 0.1).unwrap() - 0.05).abs() < 1e-12);
        assert!((bucket_quantile(&b, 1.0).unwrap() - 1.0).abs() < 1e-12);
        // Beyond the last finite bucket: its bound.
        let b = [(0.1, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(&b, 0.99), Some(0.1));
        assert_eq!(bucket_quantile(&[], 0.5), None);
        assert_eq!(bucket_quantile(&[(1.0, 0.0)], 0.5), None);
    }

    #[test]
    fn prefix_cache_hits_over_queries_are_the_levels_hit_rate() {
        let body = |q: u32, h: u32| {
            format!(
                "# TYPE vllm:prefix_cache_queries_total counter\n\
                 vllm:prefix_cache_queries_total{{model_name=\"m\"}} {q}\n\
                 # TYPE vllm:prefix_cache_hits_total counter\n\
                 vllm:prefix_cache_hits_total{{model_name=\"m\"}} {h}\n"
            )
        };
        let first = parse(&body(100, 20)).unwrap();
        let last = parse(&body(1100, 770)).unwrap();
        let s = summarize("u", 1.0, &first, &[], &last).unwrap();
        assert_eq!((s.prefix_cache_queries, s.prefix_cache_hits), (Some(1000.0), Some(750.0)));
        assert_eq!(s.prefix_cache_hit_rate, Some(0.75));
        let idle = summarize("u", 1.0, &first, &[], &first).unwrap();
        assert_eq!((idle.prefix_cache_queries, idle.prefix_cache_hit_rate), (Some(0.0), None));
        // An engine without the counters: null, not 0.
        let s =
            summarize("u", 1.0, &parse(BEFORE).unwrap(), &[], &parse(&after(0)).unwrap()).unwrap();
        assert_eq!((s.prefix_cache_hits, s.prefix_cache_hit_rate), (None, None));
    }

    #[test]
    fn fewer_requests_or_tokens_on_the_server_are_warned_about() {
        let s = ServerLevel {
            url: "http://e/metrics".into(),
            requests: Some(8.0),
            generation_tokens: Some(100.0),
            ..ServerLevel::default()
        };
        assert!(shortfalls(&s, 8, 100.0).is_empty());
        let w = shortfalls(&s, 10, 120.0);
        assert_eq!(w.len(), 2);
        assert!(
            w[0].contains("counted 8 finished requests") && w[0].contains("client 10"),
            "{w:?}"
        );
        assert!(w[1].contains("120"), "{w:?}");
    }
}
