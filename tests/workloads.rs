//! `verify`'s workloads end to end: the trace parsers on the fixtures in testdata/workloads/,
//! a Mooncake replay whose send times follow the trace's timestamps (from the per-request
//! records) and whose prompt and output lengths reach the simulator as the trace says, the
//! shared-prefix generator against the simulator's prefix cache (a warm prefix lowers TTFT; the
//! hit rate `verify` reads from `/metrics` equals the simulator's ground truth), and bad trace
//! files refused with file:line. The real binary against the simulator on loopback port 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use nodeagent::loadgen::trace::{Trace, TraceFormat};
use nodeagent::sim::{self, LatencyModel, RequestTruth, SimConfig};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/workloads").join(name)
}

async fn verify(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "warn")
        .arg("verify")
        .args(args)
        .output()
        .await
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["warmup"] == false)
        .collect()
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn truth_by_id(sim: &sim::SimHandle) -> HashMap<String, RequestTruth> {
    sim.ground_truth().into_iter().map(|t| (t.request_id.clone(), t)).collect()
}

/// Tokens the simulator's chat template adds to a one-message prompt.
const CHAT_OVERHEAD: u32 = sim::model::CHAT_TOKENS_PER_MESSAGE + sim::model::CHAT_TOKENS_PER_PROMPT;

#[test]
fn the_fixtures_parse_to_their_documented_figures() {
    let m = Trace::load(&fixture("mooncake-sample.jsonl"), TraceFormat::Mooncake).unwrap();
    let ms: Vec<u128> = m.rows.iter().map(|r| r.offset.as_millis()).collect();
    assert_eq!(ms, [0, 0, 250, 600, 610, 1200, 1500, 1500, 2100, 3000]);
    assert_eq!(m.rows[2].hash_ids, [0, 1, 3]);
    assert_eq!((m.rows[7].input_tokens, m.rows[7].output_tokens), (40, 8));
    assert!(m.rows[7].hash_ids.is_empty());
    let b = Trace::load(&fixture("burstgpt-sample.csv"), TraceFormat::BurstGpt).unwrap();
    let ms: Vec<u128> = b.rows.iter().map(|r| r.offset.as_millis()).collect();
    assert_eq!(ms, [0, 250, 1000, 1500, 2750, 3000]);
    assert_eq!(b.skipped, 1);
    assert_eq!((b.rows[0].input_tokens, b.rows[0].output_tokens, b.rows[0].line), (472, 18, 2));
    assert_eq!(b.rows[1].line, 4, "the failed row on line 3 is skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_each_request_at_its_trace_time_with_its_lengths() {
    let sim = sim::start(SimConfig::fixed(Duration::from_millis(2), Duration::from_millis(1)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let trace = fixture("mooncake-sample.jsonl");
    let o = verify(&[
        "--url",
        &sim.base_url(),
        "--trace",
        trace.to_str().unwrap(),
        "--trace-speed",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let t = Trace::load(&trace, TraceFormat::Mooncake).unwrap();
    let recs = records(&out);
    assert_eq!(recs.len(), t.rows.len());
    let truth = truth_by_id(&sim);
    let first_sent = recs.iter().map(|r| r["sent_s"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    let first_planned =
        recs.iter().map(|r| r["scheduled_s"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    for r in &recs {
        let row = &t.rows[r["seq"].as_u64().unwrap() as usize];
        let want = row.offset.as_secs_f64() / 2.0;
        let planned = r["scheduled_s"].as_f64().unwrap() - first_planned;
        let sent = r["sent_s"].as_f64().unwrap() - first_sent;
        assert!((planned - want).abs() < 1e-3, "planned {planned} for trace time {want}: {r}");
        // Sent within 20 ms of the trace's time (the open loop's timer is exact to microseconds
        // on an idle host; this machine is shared).
        assert!((sent - want).abs() < 0.020, "sent at {sent} for trace time {want}: {r}");
        let id = r["request_id"].as_str().unwrap();
        let server = &truth[id];
        assert_eq!(server.prompt_tokens, row.input_tokens + CHAT_OVERHEAD, "{r}");
        assert_eq!(server.output_tokens, row.output_tokens, "{r}");
        assert_eq!(r["output_tokens"].as_u64().unwrap(), u64::from(row.output_tokens));
    }
    let s = summary(&out);
    let level = &s["levels"][0];
    assert_eq!((level["requests"].as_u64(), level["succeeded"].as_u64()), (Some(10), Some(10)));
    // 9 gaps over 1.5 s at speed 2.
    assert!((level["rate"].as_f64().unwrap() - 6.0).abs() < 1e-9, "{level}");
    assert_eq!(s["meta"]["arrival"], "trace");
    assert!(s["meta"]["dataset"].as_str().unwrap().starts_with("mooncake:"), "{}", s["meta"]);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burstgpt_replay_skips_failed_rows_and_keeps_the_lengths() {
    let sim = sim::start(SimConfig::zero_delay()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let trace = fixture("burstgpt-sample.csv");
    let o = verify(&[
        "--url",
        &sim.base_url(),
        "--trace",
        trace.to_str().unwrap(),
        "--trace-format",
        "burstgpt",
        "--trace-speed",
        "10",
        "--api",
        "completions",
        "--quiet",
        "--no-preflight",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(&out);
    let truth = truth_by_id(&sim);
    let mut lengths: Vec<(u64, u32, u32)> = recs
        .iter()
        .map(|r| {
            let t = &truth[r["request_id"].as_str().unwrap()];
            (r["seq"].as_u64().unwrap(), t.prompt_tokens, t.output_tokens)
        })
        .collect();
    lengths.sort();
    // Completions: no template, the prompt is exactly the trace's request tokens.
    assert_eq!(
        lengths,
        [(0, 472, 18), (1, 85, 6), (2, 230, 12), (3, 61, 4), (4, 900, 9), (5, 128, 3)]
    );
    sim.shutdown().await.unwrap();
}

/// A simulator whose prefill is mostly per prompt token, with a prefix cache.
fn cached_sim() -> SimConfig {
    SimConfig {
        latency: LatencyModel {
            prefill_base: Duration::from_millis(2),
            prefill_per_token: Duration::from_micros(100),
            ..LatencyModel::fixed(Duration::ZERO, Duration::from_millis(1))
        },
        max_num_seqs: 0,
        prefix_cache_blocks: 10_000,
        prefix_block_tokens: 16,
        prefix_hit_cost: 0.1,
        ..SimConfig::default()
    }
}

/// Runs 24 shared-prefix requests (512-token prefixes, 32-token suffixes) one at a time: the
/// summary and what verify printed.
async fn prefix_run(sim: &sim::SimHandle, num_prefixes: &str, out: &Path) -> (Value, String) {
    let o = verify(&[
        "--url",
        &sim.base_url(),
        "--prefix-len",
        "512",
        "--num-prefixes",
        num_prefixes,
        "--input-len",
        "32",
        "--output-len",
        "2",
        "--number",
        "24",
        "--parallel",
        "1",
        "--metrics-interval",
        "100ms",
        "--no-preflight",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    (summary(out), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_lowers_ttft_and_the_hit_rate_matches_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let mut ttft = Vec::new();
    for (k, expect_hits) in [("1", true), ("24", false)] {
        // A fresh simulator each time: a cold cache.
        let sim = sim::start(cached_sim()).await.unwrap();
        let out = dir.path().join(format!("k{k}"));
        let (s, stdout) = prefix_run(&sim, k, &out).await;
        let truth = truth_by_id(&sim);
        let recs = records(&out);
        assert_eq!(recs.len(), 24);
        let (mut queried, mut cached) = (0u64, 0u64);
        for r in &recs {
            let t = &truth[r["request_id"].as_str().unwrap()];
            assert_eq!(t.prompt_tokens, 512 + 32 + CHAT_OVERHEAD);
            queried += u64::from(t.prompt_tokens);
            cached += u64::from(t.cached_tokens);
        }
        let server = &s["levels"][0]["server"];
        assert_eq!(server["prefix_cache_queries"].as_f64(), Some(queried as f64), "{server}");
        assert_eq!(server["prefix_cache_hits"].as_f64(), Some(cached as f64), "{server}");
        let rate = server["prefix_cache_hit_rate"].as_f64().unwrap();
        assert!((rate - cached as f64 / queried as f64).abs() < 1e-12, "{server}");
        // The server table after the sweep shows it.
        assert!(stdout.contains("prefix hit"), "{stdout}");
        assert!(stdout.contains(&format!("{:.1} %", rate * 100.0)), "{stdout}");
        if expect_hits {
            // The template's 2 leading tokens and the 512-word prefix: 32 whole blocks of 16
            // are shared by every request after the first.
            assert_eq!(cached, 23 * 512, "{server}");
        } else {
            assert_eq!(cached, 0, "{server}");
        }
        ttft.push(s["levels"][0]["ttft_s"]["mean"].as_f64().unwrap());
        sim.shutdown().await.unwrap();
    }
    // Shared: ~2 + 0.1 * (39 + 51.2) ms against ~2 + 0.1 * 551 ms.
    assert!(ttft[0] < ttft[1] * 0.5, "TTFT shared {} vs unshared {}", ttft[0], ttft[1]);
}

#[tokio::test]
async fn bad_traces_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 1}\n{\"timestamp\": 1}\n",
    )
    .unwrap();
    let o = verify(&["--url", "http://127.0.0.1:9", "--trace", bad.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("trace {}:2: missing field `input_length`", bad.display())),
        "{}",
        text(&o)
    );
    assert_eq!(err.trim().lines().count(), 1, "{}", text(&o));
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "Timestamp,Request tokens\n1,2\n").unwrap();
    let o = verify(&[
        "--url",
        "http://127.0.0.1:9",
        "--trace",
        csv.to_str().unwrap(),
        "--trace-format",
        "burstgpt",
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no column \"Response tokens\""));
    let o = verify(&[
        "--url",
        "http://127.0.0.1:9",
        "--trace",
        fixture("mooncake-sample.jsonl").to_str().unwrap(),
        "--trace-speed",
        "0",
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--trace-speed 0"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_sends_each_turn_after_the_answer_with_the_history() {
    use nodeagent::loadgen::dataset::{Dataset, DatasetSpec, LengthFilter};
    let data = fixture("sharegpt-multiturn.json");
    let cfg = SimConfig {
        prefix_cache_blocks: 1000,
        prefix_block_tokens: 4,
        ..SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1))
    };
    for (max_turns, expected) in [(None, 6u64), (Some("2"), 5)] {
        let sim = sim::start(cfg.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut args = vec![
            "--url".to_string(),
            sim.base_url(),
            "--dataset".into(),
            "sharegpt".into(),
            "--dataset-path".into(),
            data.display().to_string(),
            "--multi-turn".into(),
            "--number".into(),
            "3".into(),
            "--parallel".into(),
            "3".into(),
            "--max-tokens".into(),
            "4".into(),
            "--no-preflight".into(),
            "--quiet".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(m) = max_turns {
            args.extend(["--max-turns".into(), m.to_string()]);
        }
        let o = verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(o.status.success(), "{}", text(&o));
        let s = summary(&out);
        let level = &s["levels"][0];
        assert_eq!(level["planned"].as_u64(), Some(expected), "{level}");
        assert_eq!(level["succeeded"].as_u64(), Some(expected), "{level}");
        // The same dataset as verify loaded it (seed 0), to know each prompt's conversation.
        let spec = DatasetSpec::ShareGptDialogues {
            path: data.clone(),
            max_turns: max_turns.map(|m| m.parse().unwrap()),
        };
        let d = Dataset::load(&spec, LengthFilter::default(), None, 0).unwrap();
        let dl = d.dialogues.unwrap();
        let truth = truth_by_id(&sim);
        let mut by_conv: HashMap<usize, Vec<(usize, RequestTruth)>> = HashMap::new();
        for r in records(&out) {
            let prompt = r["prompt"].as_u64().unwrap() as usize;
            let (c, m) = dl.turns[prompt];
            let t = truth[r["request_id"].as_str().unwrap()].clone();
            // The simulator saw the whole conversation up to this turn.
            let contents = dl.messages[c][..=m].iter().map(|x| x.1.as_str());
            assert_eq!(t.prompt_tokens, sim::model::chat_prompt_tokens(contents), "{r}");
            by_conv.entry(c).or_default().push((m, t));
        }
        assert_eq!(by_conv.len(), 3);
        let mut turns: Vec<usize> = by_conv.values().map(Vec::len).collect();
        turns.sort();
        assert_eq!(turns, if max_turns.is_none() { [1, 2, 3] } else { [1, 2, 2] });
        for turns in by_conv.values_mut() {
            turns.sort_by_key(|x| x.0);
            for w in turns.windows(2) {
                let (prev, next) = (&w[0].1, &w[1].1);
                assert!(next.prompt_tokens > prev.prompt_tokens, "the history grows");
                assert!(
                    next.arrival_offset_ns >= prev.end_offset_ns,
                    "a turn is sent after the previous answer ended: {prev:?} {next:?}"
                );
                // The previous turn's prompt is this one's prefix: its blocks are cached.
                assert!(next.cached_tokens >= prev.prompt_tokens / 4 * 4 - 4, "{next:?}");
            }
        }
        sim.shutdown().await.unwrap();
    }
}
