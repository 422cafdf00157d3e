//! `nodeagent verify` end to end: the real binary against the project's engine simulator on a
//! loopback port 0, checking the client's numbers against the simulator's ground truth, fault
//! classes, accounting (sent = succeeded + failed), files on disk after a dead server and after
//! Ctrl-C, the summary schema, `verify compare`, and exit statuses.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nodeagent::sim::{self, RequestStatus, SimConfig};
use serde_json::Value;

#[path = "support/bad_out.rs"]
mod bad_out;
use bad_out::BadOuts;

fn bin() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"));
    c.env_remove("OPENAI_API_KEY").env("RUST_LOG", "warn");
    c
}

async fn verify(args: &[&str]) -> Output {
    bin().arg("verify").args(args).output().await.expect("the binary runs")
}

/// `--url URL --dataset line --dataset-path DATA --out OUT`, then `more`.
fn line_args<'a>(url: &'a str, data: &'a str, out: &'a Path, more: &[&'a str]) -> Vec<&'a str> {
    let out = out.to_str().unwrap();
    let mut args = vec!["--url", url, "--dataset", "line", "--dataset-path", data, "--out", out];
    args.extend_from_slice(more);
    args
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A line-by-line dataset of `n` distinct prompts.
fn dataset(dir: &Path, n: usize) -> String {
    let path = dir.join("prompts.txt");
    let lines: String =
        (0..n).map(|i| format!("prompt number {i} about NUMA nodes and GPUs\n")).collect();
    std::fs::write(&path, lines).unwrap();
    path.display().to_string()
}

/// A fast simulator (`SimConfig::fixed(2 ms, 1 ms)`), a temp dir and a 5-line dataset in it.
async fn fast_sim_and_dataset() -> (sim::SimHandle, tempfile::TempDir, String) {
    let sim = sim::start(SimConfig::fixed(Duration::from_millis(2), Duration::from_millis(1)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 5);
    (sim, dir, data)
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line of requests.jsonl is complete JSON"))
        .collect()
}

fn check_schema(summary: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../docs/summary.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the checked-in schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(summary).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "summary.json does not match docs/summary.schema.json: {errors:#?}");
}

/// Every level accounts for every request it sent.
fn check_accounting(s: &Value) {
    for l in s["levels"].as_array().unwrap() {
        let n = |k: &str| l[k].as_u64().unwrap();
        assert_eq!(n("requests"), n("succeeded") + n("failed"), "{l}");
        let by_class: u64 =
            l["failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(by_class, n("failed"), "{l}");
        assert_eq!(n("requests") + n("not_sent"), n("planned"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_times_match_the_simulator_ground_truth() {
    let cfg = SimConfig::fixed(Duration::from_millis(60), Duration::from_millis(4));
    let sim = sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 50);
    let out = dir.path().join("run");
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let o = verify(&line_args(
        &url,
        &data,
        &out,
        &[
            "--parallel",
            "2",
            "--parallels",
            "6",
            "--number",
            "12",
            "30",
            "--warmup",
            "2",
            "--max-tokens",
            "12",
            "--ignore-eos",
            "--quiet",
        ],
    ))
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("c=2") && stdout.contains("c=6") && stdout.contains("TTFT"),
        "{stdout}"
    );

    let s = summary(&out);
    check_schema(&s);
    check_accounting(&s);
    let levels = s["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(
        (levels[0]["parallel"].as_u64(), levels[0]["requests"].as_u64()),
        (Some(2), Some(12))
    );
    assert_eq!(
        (levels[1]["parallel"].as_u64(), levels[1]["requests"].as_u64()),
        (Some(6), Some(30))
    );
    assert_eq!(levels[1]["warmup"].as_u64(), Some(2));
    assert_eq!(s["meta"]["model"], "qwen2.5", "the model defaults to the first of /v1/models");
    // A fixed 60 ms TTFT and 4 ms per token are lower bounds (a loaded box only adds delay).
    let tpot = levels[1]["tpot_s"]["mean"].as_f64().unwrap();
    assert!(tpot >= 0.0035, "TPOT {tpot}");
    let ttft = levels[1]["ttft_s"]["p50"].as_f64().unwrap();
    assert!(ttft >= 0.060, "TTFT {ttft}");

    // Request by request: the client's view against the server's (keyed by x-request-id).
    let truth: HashMap<String, sim::RequestTruth> =
        sim.ground_truth().into_iter().map(|t| (t.request_id.clone(), t)).collect();
    let recs = records(&out);
    assert_eq!(recs.len(), 12 + 30 + 2 + 2, "measured + warmup records");
    // Connections: as many as requests in flight, kept across levels: at most the largest
    // concurrency is ever opened (the preflight's own connection aside).
    let opened = recs.iter().filter(|r| r["connect_s"].is_number()).count();
    assert!((2..=6).contains(&opened), "{opened} connections opened for c=2 then c=6");
    let (mut diffs, mut tpot_diffs) = (Vec::new(), Vec::new());
    for r in &recs {
        let id = r["request_id"].as_str().unwrap();
        let t = truth.get(id).unwrap_or_else(|| panic!("the server never saw {id}"));
        assert_eq!(t.status, RequestStatus::Ok);
        assert_eq!(r["output_tokens"].as_u64(), Some(u64::from(t.tokens_sent)), "{r}");
        assert_eq!(r["input_tokens"].as_u64(), Some(u64::from(t.prompt_tokens)), "{r}");
        assert_eq!(r["tokens_from"], "usage");
        assert_eq!(r["input_tokens_from"], "usage");
        assert_eq!(r["chunk_s"].as_array().unwrap().len() as u32, t.tokens_sent);
        // Client TTFT includes the trip to the server: never much below the server's.
        let client = r["first_token_s"].as_f64().unwrap() - r["sent_s"].as_f64().unwrap();
        let server = t.ttft().unwrap().as_secs_f64();
        assert!(client >= server - 0.001, "client TTFT {client} < server TTFT {server}");
        diffs.push(client - server);
        // TPOT per request, client's against the server's own first/last token times.
        let n = f64::from(t.tokens_sent - 1);
        let server_tpot =
            (t.last_token_offset_ns.unwrap() - t.first_token_offset_ns.unwrap()) as f64 / 1e9 / n;
        let client_tpot =
            (r["last_token_s"].as_f64().unwrap() - r["first_token_s"].as_f64().unwrap()) / n;
        tpot_diffs.push((client_tpot - server_tpot).abs());
    }
    tpot_diffs.sort_by(f64::total_cmp);
    let median_tpot = tpot_diffs[tpot_diffs.len() / 2];
    assert!(median_tpot < 0.001, "client TPOT differs from the server's by {median_tpot} s");
    // Both sides time what they read by the kernel's receive stamp, so neither process's
    // scheduling delays count: loopback adds microseconds. A loaded 2-core CI box can still
    // pause the client between stamping a send and writing it, so the worst case is loose.
    diffs.sort_by(f64::total_cmp);
    let (median, worst) = (diffs[diffs.len() / 2], diffs[diffs.len() - 1]);
    assert!(median < 0.001, "client TTFT exceeds the server's by {median} s at the median");
    assert!(worst < 0.100, "client TTFT exceeds the server's by up to {worst} s");
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_classified_and_counted() {
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(2));
    cfg.faults = sim::FaultRates { http_500: 0.15, drop: 0.15, stall: 0.15, stream_error: 0.15 };
    cfg.stall = Duration::from_millis(600);
    cfg.seed = 11;
    let sim = sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let url = sim.base_url();
    let args = line_args(
        &url,
        &data,
        &out,
        &[
            "--parallel",
            "8",
            "--number",
            "200",
            "--max-tokens",
            "16",
            "--ignore-eos",
            "--read-timeout",
            "200ms",
            "--no-preflight",
            "--quiet",
        ],
    );
    // 60 % failures on purpose: `--max-failure-rate 1` keeps them from failing the run.
    let o = verify(&[&args[..], &["--max-failure-rate", "1"]].concat()).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    check_accounting(&s);
    let l = &s["levels"][0];
    assert_eq!(l["requests"].as_u64(), Some(200));
    let truth = sim.ground_truth();
    let count = |st: RequestStatus| truth.iter().filter(|t| t.status == st).count() as u64;
    let failures = &l["failures"];
    assert_eq!(
        failures["http_500"].as_u64(),
        Some(count(RequestStatus::ServerError)),
        "{failures}"
    );
    assert_eq!(failures["stream_cut"].as_u64(), Some(count(RequestStatus::Dropped)), "{failures}");
    assert_eq!(
        failures["server_error"].as_u64(),
        Some(count(RequestStatus::StreamError)),
        "{failures}"
    );
    // A 600 ms stall against a 200 ms read timeout: every stalled request is an idle timeout.
    let stalls = truth.iter().filter(|t| t.fault.as_deref() == Some("stall")).count() as u64;
    assert!(stalls > 10, "{stalls}");
    assert_eq!(failures["idle_timeout"].as_u64(), Some(stalls), "{failures}");
    assert_eq!(l["succeeded"].as_u64(), Some(count(RequestStatus::Ok)), "{l}");

    let o = verify(&[&args[..], &["--max-failure-rate", "0.1"]].concat()).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--max-failure-rate 0.1"), "{err}");
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_sweep_leaves_every_request_accounted_on_disk() {
    let cfg = SimConfig::fixed(Duration::from_millis(20), Duration::from_millis(10));
    let sim = sim::start(cfg).await.unwrap();
    let url = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let child = bin()
        .arg("verify")
        .args(["--url", &url, "--dataset", "line", "--dataset-path", &data])
        .args(["--parallel", "4", "8", "--number", "60", "--max-tokens", "20", "--ignore-eos"])
        .args(["--connect-timeout", "1", "--quiet", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.shutdown().await.unwrap();
    let o = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    check_accounting(&s);
    let levels = s["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2, "{s}");
    let l1 = &levels[1];
    assert_eq!(l1["succeeded"].as_u64(), Some(0));
    assert!(l1["failures"]["connect_refused"].as_u64().unwrap() > 0, "{l1}");
    let sent: u64 = levels.iter().map(|l| l["requests"].as_u64().unwrap()).sum();
    assert_eq!(records(&out).len() as u64, sent);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no request succeeded"), "{err}");
}

/// Sends `signal` to a real `nodeagent verify` mid-level: the sweep stops, what was measured
/// is saved with `interrupted: true`, exit 1.
async fn a_signal_stops_the_sweep_and_keeps_what_was_measured(signal: nix::sys::signal::Signal) {
    let cfg = SimConfig::fixed(Duration::from_millis(10), Duration::from_millis(20));
    let sim = sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let child = bin()
        .arg("verify")
        .args(["--url", &sim.base_url(), "--dataset", "line", "--dataset-path", &data])
        .args(["--parallel", "4", "--number", "100000", "--max-tokens", "10", "--ignore-eos"])
        .args(["--grace", "2s", "--quiet", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let o = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{signal}: {}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    check_accounting(&s);
    assert_eq!(s["meta"]["interrupted"], true);
    let l = &s["levels"][0];
    let sent = l["requests"].as_u64().unwrap();
    assert!(sent > 10 && l["not_sent"].as_u64().unwrap() > 90_000, "{l}");
    // In-flight requests finished within the grace period, so nothing was cut.
    assert_eq!(l["failed"].as_u64(), Some(0), "{l}");
    assert_eq!(records(&out).len() as u64, sent);
    assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted"));
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_sweep_and_keeps_what_was_measured() {
    a_signal_stops_the_sweep_and_keeps_what_was_measured(nix::sys::signal::Signal::SIGINT).await;
}

/// Issue 12, defect 6: SIGTERM (timeouts, CI, systemd, `docker stop`) is handled like Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sweep_and_keeps_what_was_measured() {
    a_signal_stops_the_sweep_and_keeps_what_was_measured(nix::sys::signal::Signal::SIGTERM).await;
}

/// Runs `verify` at c=1 (20 requests) then c=2 (`last` requests) against a simulator that
/// stops `done` requests into the run (the preflight's counts), while the last level runs.
async fn sweep_with_a_server_dying_after(done: u64, last: &str, extra: &[&str]) -> (Output, Value) {
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(2));
    cfg.exit_after_requests = Some(done);
    let mut sim = sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let child = bin()
        .arg("verify")
        .args(["--url", &sim.base_url(), "--dataset", "line", "--dataset-path", &data])
        .args(["--parallel", "1", "2", "--number", "20", last, "--max-tokens", "8"])
        .args(["--connect-timeout", "1", "--quiet", "--out", out.to_str().unwrap()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), sim.stop_requested()).await.unwrap();
    sim.shutdown().await.unwrap();
    let o = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let s = summary(&out);
    check_schema(&s);
    check_accounting(&s);
    assert_eq!(s["levels"].as_array().unwrap().len(), 2, "{s}");
    let sent: u64 =
        s["levels"].as_array().unwrap().iter().map(|l| l["requests"].as_u64().unwrap()).sum();
    assert_eq!(records(&out).len() as u64, sent, "every record is on disk");
    (o, s)
}

/// Issue 12, defect 7: the server dies during the last level and about a quarter of it fails
/// (some requests of that level succeeded): exit 1 by default, the level and its failure rate
/// named, the files written; `--max-failure-rate 0.5` accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_in_the_last_level_fails_the_run_above_5_percent_failed() {
    // 1 preflight + 20 at c=1 + 28 of the 40 at c=2.
    let (o, s) = sweep_with_a_server_dying_after(49, "40", &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = &s["levels"][1];
    let (ok, failed) = (last["succeeded"].as_u64().unwrap(), last["failed"].as_u64().unwrap());
    assert!(ok >= 20 && failed >= 5, "{last}");
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(
        line.contains("level c=2") && line.contains(&format!("{failed} of 40 requests failed")),
        "{err}"
    );
    assert!(line.contains("--max-failure-rate 0.05"), "{err}");

    let (o, _) = sweep_with_a_server_dying_after(49, "40", &["--max-failure-rate", "0.5"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A server that dies at the very end of the last level: a request or two in flight fail,
/// under 5 %: exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_failures_under_the_default_failure_rate_exit_0() {
    // 1 preflight + 20 at c=1 + 99 of the 100 at c=2.
    let (o, s) = sweep_with_a_server_dying_after(120, "100", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let failed = s["levels"][1]["failed"].as_u64().unwrap();
    assert!(failed <= 5, "{s}");
}

#[tokio::test]
async fn max_failure_rate_outside_0_to_1_is_refused_in_one_line() {
    for bad in ["1.5", "-0.1", "NaN"] {
        let flag = format!("--max-failure-rate={bad}");
        let o = verify(&["--url", "http://127.0.0.1:1", "--dataset", "random", &flag]).await;
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--max-failure-rate") && err.lines().count() == 1, "{bad}: {err}");
    }
}

/// Issue 12, defect 5: the API key (`--api-key X`, `--api-key=X`, `OPENAI_API_KEY`) and
/// secret-looking keys of `--extra-body` never reach an output: summary.json, summary.csv,
/// requests.jsonl, the evalscope report, the chart, stdout (JSON) and stderr (debug logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_in_every_output() {
    let (sim, dir, data) = fast_sim_and_dataset().await;
    let url = sim.base_url();
    let key = "sk-SECRET-key-0451";
    let header = "Bearer sk-SECRET-header-7733";
    let body_key = "SECRET-body-9001";
    let extra = format!(
        r#"{{"headers": {{"Authorization": "{header}"}}, "api-key": "{body_key}", "temperature": 0.5}}"#
    );
    let forms: [(&str, Vec<String>); 3] = [
        ("--api-key X", vec!["--api-key".into(), key.into()]),
        ("--api-key=X", vec![format!("--api-key={key}")]),
        ("OPENAI_API_KEY", vec![]),
    ];
    for (i, (form, key_args)) in forms.into_iter().enumerate() {
        let out = dir.path().join(format!("run-{i}"));
        let mut cmd = bin();
        cmd.env("RUST_LOG", "debug");
        if key_args.is_empty() {
            cmd.env("OPENAI_API_KEY", key);
        }
        let o = cmd
            .arg("verify")
            .args(["--url", &url, "--dataset", "line", "--dataset-path", &data])
            .args(["--parallel", "2", "--number", "4", "--max-tokens", "4", "--format", "json"])
            .args(["--quiet", "--extra-body", &extra, "--out", out.to_str().unwrap()])
            .args(&key_args)
            .output()
            .await
            .unwrap();
        assert!(o.status.success(), "{form}: {}", text(&o));
        let mut outputs = vec![
            ("stdout".to_string(), String::from_utf8_lossy(&o.stdout).to_string()),
            ("stderr".to_string(), String::from_utf8_lossy(&o.stderr).to_string()),
        ];
        for e in std::fs::read_dir(&out).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            outputs.push((path.display().to_string(), String::from_utf8_lossy(&bytes).to_string()));
        }
        assert!(outputs.len() >= 7, "{outputs:?}");
        for (name, content) in &outputs {
            for secret in [key, "sk-SECRET-header-7733", body_key] {
                assert!(!content.contains(secret), "{form}: {secret} is in {name}:\n{content}");
            }
        }
        let s = summary(&out);
        let argv = s["meta"]["argv"].to_string();
        assert!(argv.contains("<redacted>") && argv.contains("temperature"), "{form}: {argv}");
        let stdout: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(stdout["meta"]["argv"], s["meta"]["argv"], "{form}");
    }
    // The key did reach the server (the redaction is of outputs only).
    assert_eq!(sim.ground_truth().len(), 3 * 5);
    sim.shutdown().await.unwrap();
}

/// Issue 12, item 4: a run whose preflight fails does not leave the earlier run's files in
/// `--out` looking like its own: they are moved into `previous-<run id>/` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preflight_leaves_no_earlier_results_at_the_top_of_out() {
    let (sim, dir, data) = fast_sim_and_dataset().await;
    let out = dir.path().join("run");
    let args = |url: &str| -> Vec<String> {
        ["--url", url, "--dataset", "line", "--dataset-path", &data, "--number", "3", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--out".to_string(), out.display().to_string()])
            .collect()
    };
    let o = bin().arg("verify").args(args(&sim.base_url())).output().await.unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run_id = summary(&out)["meta"]["run_id"].as_str().unwrap().to_string();
    sim.shutdown().await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = bin().arg("verify").args(args(&format!("http://127.0.0.1:{port}"))).output().await;
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for name in ["summary.json", "summary.csv", "requests.jsonl", "evalscope-summary.txt"] {
        assert!(!out.join(name).exists(), "{name} of the earlier run is still in --out");
    }
    let previous = out.join(format!("previous-{run_id}"));
    assert_eq!(summary(&previous)["meta"]["run_id"], run_id.as_str());
    assert!(previous.join("requests.jsonl").is_file() && previous.join("chart.svg").is_file());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&previous.display().to_string()), "{err}");
}

/// Issue 12, defect 4: an `--out` that is a symlink or a file is refused, nothing written.
#[tokio::test]
async fn an_out_that_is_a_symlink_or_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = BadOuts::new(dir.path());
    for (out, want) in bad.cases() {
        let o = bin()
            .arg("verify")
            .args(["--url", "http://127.0.0.1:1", "--dataset", "random", "--number", "1"])
            .arg("--out")
            .arg(out)
            .output()
            .await
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want) && err.lines().count() == 1, "{err}");
    }
    bad.assert_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_completions_compare_and_evalscope_block() {
    let cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1));
    let sim = sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let qa = dir.path().join("qa.jsonl");
    std::fs::write(&qa, "{\"input\": \"what is numa\"}\n{\"input\": \"what is a gpu\"}\n").unwrap();
    let url = format!("{}/v1/completions", sim.base_url());
    let qa = qa.display().to_string();
    let mut outs = Vec::new();
    for name in ["a", "b"] {
        let out = dir.path().join(name);
        let o = verify(&[
            "--url",
            &url,
            "--dataset-path",
            &qa,
            "--dataset-field",
            "input",
            "--rate",
            "200",
            "--arrival",
            "gamma",
            "--burstiness",
            "0.5",
            "--number",
            "40",
            "--max-tokens",
            "8",
            "--slo",
            "ttft=1s,tpot=50ms",
            "--format",
            "evalscope",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
        assert!(o.status.success(), "{}", text(&o));
        let block = String::from_utf8_lossy(&o.stdout);
        assert!(block.contains("Benchmarking summary:"), "{block}");
        assert!(block.contains(" Total requests: 40"), "{block}");
        // An open loop without a cap: connections follow the requests in flight (a few at
        // 200/s of 13 ms requests), not one per scheduled request.
        let opened = records(&out).iter().filter(|r| r["connect_s"].is_number()).count();
        assert!((1..40).contains(&opened), "{opened} connections for 40 open-loop requests");
        outs.push(out);
    }
    let s = summary(&outs[0]);
    check_schema(&s);
    assert_eq!(s["meta"]["api"], "completions");
    assert_eq!(s["levels"][0]["rate"].as_f64(), Some(200.0));
    assert_eq!(s["levels"][0]["goodput"]["good_requests"].as_u64(), Some(40));
    assert!(s["meta"]["arrival"].as_str().unwrap().starts_with("gamma"));
    assert!(sim.ground_truth().iter().all(|t| t.endpoint == sim::Endpoint::Completions));
    let o = bin().args(["verify", "compare"]).arg(&outs[0]).arg(&outs[1]).output().await.unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("QPS") && table.contains("rate=200/s"), "{table}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_and_unreachable_servers_exit_with_one_line_errors() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let o = verify(&["--url", &url, "--dataset", "random", "--number", "5", "--quiet"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: ") && err.contains("/v1/models"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let o = verify(&["--url", &url, "--dataset-path", "/nonexistent/qa.jsonl"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/qa.jsonl"));

    let o = verify(&["--url", &url, "--parallel", "8", "16", "--number", "1", "2", "3"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--number has 3 values for 2 levels"));

    let o = verify(&["--url", "https://127.0.0.1:1", "--dataset", "random"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let o = bin().args(["verify", "compare", "/nonexistent/a", "/nonexistent/b"]).output().await;
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Hostile numbers and files (audit of wave 9): each was a panic, an abort or a hang before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_rates_traces_and_non_files_are_one_line_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let far = dir.path().join("far.jsonl");
    std::fs::write(
        &far,
        "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2}\n\
         {\"timestamp\": 1e300, \"input_length\": 4, \"output_length\": 2}\n",
    )
    .unwrap();
    let near = dir.path().join("near.jsonl");
    std::fs::write(
        &near,
        "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2}\n\
         {\"timestamp\": 100, \"input_length\": 4, \"output_length\": 2}\n",
    )
    .unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (far, near, fifo) = (far.to_str().unwrap(), near.to_str().unwrap(), fifo.to_str().unwrap());
    let base = ["--url", &url, "--no-preflight", "--no-isolate", "--model", "m", "--quiet"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--dataset", "random", "--rate", "1e-20", "--number", "3"], "spans at most 365 days"),
        (vec!["--dataset", "random", "--rate", "1", "--number", "99999999999999999"], "--number"),
        (vec!["--trace", far], "far.jsonl:2"),
        (vec!["--trace", near, "--trace-speed", "1e-300"], "a replay spans at most 365 days"),
        (vec!["--trace", fifo], "fifo"),
        (vec!["--dataset", "line", "--dataset-path", fifo], "fifo"),
        (vec!["--dataset", "line", "--dataset-path", "/dev/zero"], "/dev/zero"),
    ];
    for (more, names) in cases {
        let mut args = base.to_vec();
        args.extend(more);
        let o = tokio::time::timeout(Duration::from_secs(60), verify(&args))
            .await
            .unwrap_or_else(|_| panic!("{args:?}: still running after 60 s"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(err.starts_with("error: ") && err.contains(names), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // `verify compare` reads two summaries: a fifo blocked it, `/dev/zero` filled memory.
    let compare = bin().args(["verify", "compare", fifo, "/dev/zero"]).output();
    let o = tokio::time::timeout(Duration::from_secs(60), compare).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(err.contains("fifo") && err.contains("not a regular file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn help_lists_the_seed_flags() {
    let o = bin().args(["verify", "--help"]).output().await.unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--url",
        "--parallel",
        "[alias: --parallels]",
        "[alias: --n]",
        "--number",
        "--read-timeout",
        "--max-prompt-length",
        "--dataset-field",
        "--tokenizer",
        "--slo",
        "--out",
        "compare",
    ] {
        assert!(help.contains(flag), "verify --help lacks {flag}:\n{help}");
    }
    // The unit caveat, whatever the line wrapping.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("no special tokens, chat template NOT applied"), "{help}");
}

/// `--tokenizer`: lengths in tokens, stated in errors and `meta`; input tokens counted by the
/// tokenizer when the server streams no usage (as llama.cpp does; here the simulator is told
/// `include_usage: false` through `--extra-body`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenizer_counts_prompt_lengths_and_input_tokens_without_usage() {
    let tok = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tokenizers/wordpiece.json");
    let sim = sim::start(SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prompts.txt");
    // Characters 12, 7, 15, 30, 4; tokens 3, 2, 4, 7, 1 (testdata/tokenizers/README.md).
    std::fs::write(
        &data,
        "what is numa\nlatency\nnetwork latency\nhow does the memory node work?\nNUMA\n",
    )
    .unwrap();
    let data = data.display().to_string();
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let run = |extra: &[&str]| {
        let mut args = vec!["--url", &url, "--dataset", "line", "--dataset-path", &data, "--quiet"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move { bin().arg("verify").args(&args).output().await.unwrap() }
    };

    // Bad tokenizer files and an empty filter: exit 2, one line naming the file, no request.
    let missing = dir.path().join("missing.json");
    let o = run(&["--tokenizer", missing.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!("error: tokenizer {}: cannot read:", missing.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let o = run(&["--tokenizer", &data]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with(&format!("error: tokenizer {data}: not JSON:")), "{err}");
    let o =
        run(&["--tokenizer", tok, "--min-prompt-length", "8", "--max-prompt-length", "40"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.trim_end().ends_with("(5 read, 8..=40 tokens kept)"), "{err}");
    assert!(sim.ground_truth().is_empty(), "a request was sent before the input was checked");

    let out = dir.path().join("run");
    let o = run(&[
        "--tokenizer",
        tok,
        "--min-prompt-length",
        "3",
        "--max-prompt-length",
        "12",
        "--extra-body",
        r#"{"stream_options": {"include_usage": false}}"#,
        "--parallel",
        "2",
        "--number",
        "6",
        "--max-tokens",
        "4",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    let meta = &s["meta"];
    assert_eq!(meta["prompt_length_unit"], "tokens");
    assert_eq!(meta["tokenizer"], tok);
    assert_eq!(
        (meta["min_prompt_length"].as_u64(), meta["max_prompt_length"].as_u64()),
        (Some(3), Some(12))
    );
    // In characters, 3..=12 would keep "what is numa", "latency" and "NUMA" instead.
    assert_eq!(meta["prompts"].as_u64(), Some(3));
    let warnings = meta["warnings"].to_string();
    assert!(warnings.contains("input tokens are counted with the tokenizer"), "{warnings}");
    let l = &s["levels"][0];
    assert_eq!(l["input_tokens_from"], "tokenizer");
    assert_eq!(l["input_tokens_counted"].as_u64(), Some(6));
    assert_eq!(l["input_tokens_unknown"].as_u64(), Some(0));
    // Six requests over three prompts: each sent twice.
    let mean = l["input_tokens_mean"].as_f64().unwrap();
    assert!((mean - 14.0 / 3.0).abs() < 1e-9, "{mean}");
    let recs = records(&out);
    let mut counts: Vec<u64> = recs
        .iter()
        .map(|r| {
            assert_eq!(r["input_tokens_from"], "tokenizer", "{r}");
            assert_eq!(r["tokens_from"], "counted_chunks", "{r}");
            r["input_tokens"].as_u64().unwrap()
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![3, 3, 4, 4, 7, 7]);
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// SLO search

/// A simulator with a known capacity: 8 requests run at once (`--max-num-seqs 8`), each takes
/// 20 ms to its first token and 50 ms per further token (270 ms for 6 tokens). A request that
/// finds the 8 slots taken waits for one: at concurrency 9 the ninth request of the first wave
/// waits a whole request, so its TTFT is over 290 ms whatever the machine's noise.
async fn capacity_8_sim() -> sim::SimHandle {
    let mut cfg = SimConfig::fixed(Duration::from_millis(20), Duration::from_millis(50));
    cfg.max_num_seqs = 8;
    sim::start(cfg).await.unwrap()
}

/// A concurrency search from 2 under `slo`; the summary from `--out` (`out`) or stdout.
async fn search(
    sim: &sim::SimHandle,
    dir: &Path,
    slo: &str,
    out: bool,
    extra: &[&str],
) -> (Output, Value) {
    let data = dataset(dir, 5);
    let out_dir = dir.join("out");
    let url = sim.base_url();
    let mut args = vec![
        "--url",
        &url,
        "--dataset",
        "line",
        "--dataset-path",
        &data,
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--search",
        "concurrency",
        "--parallel",
        "2",
        "--slo",
        slo,
        "--number",
        "16",
        "--quiet",
    ];
    if out {
        args.extend_from_slice(&["--out", out_dir.to_str().unwrap()]);
    } else {
        // No run directory: a debug build spends seconds per level redrawing chart.png.
        args.extend_from_slice(&["--format", "json"]);
    }
    args.extend_from_slice(extra);
    let o = verify(&args).await;
    let s = if out {
        summary(&out_dir)
    } else {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
    };
    (o, s)
}

fn tried(s: &Value) -> Vec<u64> {
    s["search"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["parallel"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_search_finds_the_capacity_and_shows_the_failing_step_above_it() {
    let sim = capacity_8_sim().await;
    let dir = tempfile::tempdir().unwrap();
    // Up to concurrency 8 every request gets a slot at once (TTFT 20 ms and the noise of a
    // loaded machine, seen up to 110 ms); at 9, at least one of its 18 requests waits 270 ms:
    // under 95 % meet 200 ms.
    let (o, s) = search(&sim, dir.path(), "ttft=200ms", false, &["--slo-attainment", "0.95"]).await;
    assert!(o.status.success(), "{}", text(&o));
    check_schema(&s);
    let search = &s["search"];
    assert_eq!(search["kind"], "concurrency");
    assert_eq!(search["attainment"].as_f64(), Some(0.95));
    assert_eq!(search["slo"]["ttft_s"].as_f64(), Some(0.2));
    assert_eq!(tried(&s), [2, 4, 8, 16, 12, 10, 9], "{search:#}");
    assert_eq!(search["stop"], "bracketed");
    assert_eq!(search["best"]["parallel"].as_u64(), Some(8), "{search:#}");
    let steps = search["steps"].as_array().unwrap();
    let above = steps.iter().find(|x| x["parallel"] == 9).unwrap();
    assert_eq!(above["met"], false);
    assert!(above["attainment"].as_f64().unwrap() < 0.95, "{above}");
    // Each step is a level of its own, at the step's concurrency.
    let levels = s["levels"].as_array().unwrap();
    assert_eq!(levels.len(), steps.len());
    for x in steps {
        let l = &levels[x["level"].as_u64().unwrap() as usize];
        assert_eq!(l["parallel"], x["parallel"]);
        assert_eq!(l["goodput"]["good_fraction"], x["attainment"]);
    }
    // A step sends --number requests, and at least two per worker.
    let sent: Vec<u64> = levels.iter().map(|l| l["requests"].as_u64().unwrap()).collect();
    assert_eq!(sent, [16, 16, 16, 32, 24, 20, 18]);
    check_accounting(&s);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saturation_stop_ends_a_search_on_an_engine_that_cannot_keep_up() {
    let sim = capacity_8_sim().await;
    let dir = tempfile::tempdir().unwrap();
    // A TTFT objective every step meets: only the saturation stop can end the doubling. From
    // 8 to 16 the throughput stays at 8 slots' worth while requests queue.
    let (o, s) = search(&sim, dir.path(), "ttft=30s", true, &[]).await;
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .contains("SLO search (concurrency, ttft ≤ 30000 ms for 99 % of requests): best c=16")
            && stdout.contains("stop: saturated"),
        "{stdout}"
    );
    let chart = std::fs::read_to_string(dir.path().join("out/chart.svg")).unwrap();
    assert!(chart.contains("SLO search: best c=16 (saturated)"));
    check_schema(&s);
    assert_eq!(tried(&s), [2, 4, 8, 16], "{:#}", s["search"]);
    assert_eq!(s["search"]["stop"], "saturated");
    assert_eq!(s["search"]["best"]["parallel"].as_u64(), Some(16));
    let l = s["levels"].as_array().unwrap();
    let (q8, q16) = (l[2]["qps"].as_f64().unwrap(), l[3]["qps"].as_f64().unwrap());
    assert!(q16 < q8 * 1.15, "c=16 {q16} req/s against c=8 {q8}");
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// server metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_during_a_level_equal_the_simulators_ground_truth() {
    // 4 slots for 8 clients: 4 requests run and 4 wait most of the time.
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(10));
    cfg.max_num_seqs = 4;
    let sim = sim::start(cfg).await.unwrap();
    // A second engine that gets no load: its counters cannot match the client's.
    let idle = sim::start(SimConfig::zero_delay()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 5);
    let run = |metrics: Option<String>| {
        let (url, data) = (sim.base_url(), data.clone());
        async move {
            let mut args = vec![
                "--url".to_string(),
                url,
                "--dataset".into(),
                "line".into(),
                "--dataset-path".into(),
                data,
                "--parallel".into(),
                "8".into(),
                "--number".into(),
                "40".into(),
                "--warmup".into(),
                "8".into(),
                "--max-tokens".into(),
                "5".into(),
                "--ignore-eos".into(),
                "--metrics-interval".into(),
                "50ms".into(),
                "--format".into(),
                "json".into(),
                "--quiet".into(),
            ];
            if let Some(m) = metrics {
                args.extend(["--metrics-url".to_string(), m]);
            }
            let o = verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
            assert!(o.status.success(), "{}", text(&o));
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            check_schema(&s);
            s
        }
    };
    let s = run(None).await;
    let server = &s["levels"][0]["server"];
    assert_eq!(server["url"], format!("{}/metrics", sim.base_url()));
    assert_eq!(server["engine"], "vllm");
    // The measured phase's requests: every truth record after the preflight (index 0) and
    // the 8 warmup requests.
    let truth: Vec<_> = sim.ground_truth().into_iter().filter(|t| t.index > 8).collect();
    assert_eq!(truth.len(), 40);
    let sum = |f: fn(&sim::RequestTruth) -> u32| truth.iter().map(|t| f(t) as f64).sum::<f64>();
    assert_eq!(server["requests"].as_f64(), Some(40.0), "{server:#}");
    assert_eq!(server["generation_tokens"].as_f64(), Some(sum(|t| t.tokens_sent)), "{server:#}");
    assert_eq!(server["prompt_tokens"].as_f64(), Some(sum(|t| t.prompt_tokens)), "{server:#}");
    assert_eq!(server["preemptions"].as_f64(), Some(0.0));
    for h in ["ttft_s", "e2e_s", "queue_s", "tpot_s"] {
        assert_eq!(server[h]["count"].as_f64(), Some(40.0), "{h}: {server:#}");
    }
    // The simulator's TTFT histogram mean is its ground truth's mean TTFT.
    let ttft_mean = truth.iter().map(|t| t.ttft().unwrap().as_secs_f64()).sum::<f64>() / 40.0;
    assert!((server["ttft_s"]["mean"].as_f64().unwrap() - ttft_mean).abs() < 1e-6, "{server:#}");
    assert_eq!(server["running"]["max"].as_f64(), Some(4.0), "{server:#}");
    assert!(server["waiting"]["max"].as_f64().unwrap() >= 1.0, "{server:#}");
    assert!(server["scrapes"].as_u64().unwrap() >= 3, "{server:#}");
    assert_eq!(server["warnings"], serde_json::json!([]));

    // The metrics of an engine that got none of the load: the shortfall is said.
    let s = run(Some(format!("{}/metrics", idle.base_url()))).await;
    let w = s["levels"][0]["server"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].as_str().unwrap().contains("counted 0 finished requests"), "{w:?}");
    sim.shutdown().await.unwrap();
    idle.shutdown().await.unwrap();
}

/// Issue 17 item 4: an open loop's sends leave one by one at their planned instants, never
/// before them, and every send's schedule lag is measured. How late they leave is a speed
/// figure and lives in `scripts/bench-openloop.sh` (BENCHMARKS.md, exact against the old 1 ms
/// wait side by side): a timed bound here failed on the 2-core CI machine running twenty tests
/// at once (p50 565 us), which says nothing about the pacing. The wait's decisions are tested
/// purely in `loadgen::schedule` (`an_exact_waiter_sleeps_until_the_last_50_us...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_leave_in_order_never_early_and_each_lag_is_measured() {
    let (sim, dir, data) = fast_sim_and_dataset().await;
    let out = dir.path().join("out");
    let o = verify(&line_args(
        &sim.base_url(),
        &data,
        &out,
        &[
            "--rate",
            "500",
            "--arrival",
            "poisson",
            "--parallel",
            "64",
            "--number",
            "500",
            "--max-tokens",
            "4",
            "--quiet",
        ],
    ))
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let lag = &summary(&out)["levels"][0]["schedule_lag_s"];
    assert_eq!(lag["count"].as_u64(), Some(500), "{lag}");
    let (min, p50, p99, max) = (
        lag["min"].as_f64().unwrap(),
        lag["p50"].as_f64().unwrap(),
        lag["p99"].as_f64().unwrap(),
        lag["max"].as_f64().unwrap(),
    );
    // Never early (a negative lag would be a send before its instant), and ordered.
    assert!(0.0 <= min && min <= p50 && p50 <= p99 && p99 <= max && max < 5.0, "lag {lag}");
    let mut sends: Vec<(u64, f64, f64)> = records(&out)
        .iter()
        .filter(|r| r["warmup"] == false)
        .map(|r| {
            let f = |k: &str| r[k].as_f64().unwrap();
            (r["seq"].as_u64().unwrap(), f("scheduled_s"), f("sent_s"))
        })
        .collect();
    assert_eq!(sends.len(), 500);
    sends.sort_by_key(|(seq, _, _)| *seq);
    // Each ticket's instant is the Poisson process's, in ticket order, and no send left before
    // its instant (the lag distribution clamps at 0, so this reads the records themselves).
    assert!(sends.windows(2).all(|w| w[0].1 <= w[1].1), "planned instants out of ticket order");
    let early: Vec<_> = sends.iter().filter(|(_, planned, sent)| sent < planned).collect();
    assert!(early.is_empty(), "sent before their planned instant: {early:?}");
    // An open loop at 500/s: 500 instants over about a second (a closed loop would plan all
    // 500 at the start), so the sends are paced by the schedule and not by the 64 slots.
    let span = sends.last().unwrap().1 - sends[0].1;
    assert!((0.5..2.0).contains(&span), "500 instants at 500/s over {span:.2} s");
}

/// The five counters of a `numa` object, in a set.
fn numa_keys(c: &Value) -> std::collections::BTreeSet<String> {
    c.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_level_carries_this_hosts_numa_counter_deltas() {
    let (sim, dir, data) = fast_sim_and_dataset().await;
    let out = dir.path().join("out");
    let url = sim.base_url();
    let level = ["--max-tokens", "4", "--number", "6", "--parallel", "1", "2"];
    let o = verify(&line_args(&url, &data, &out, &[&level[..], &["--quiet"]].concat())).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    let five: std::collections::BTreeSet<String> =
        ["local_node", "numa_foreign", "numa_hit", "numa_miss", "other_node"]
            .map(String::from)
            .into();
    let levels = s["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for l in levels {
        let numa = &l["numa"];
        assert_eq!(numa_keys(&numa["total"]), five, "{numa}");
        // This host's real counters: node 0 is there, and the level's own allocations count.
        assert_eq!(numa_keys(&numa["per_node"]["0"]), five, "{numa}");
        assert!(numa["total"]["numa_hit"].as_u64().unwrap() > 0, "{numa}");
        // An engine known only by its URL: no memory placement.
        assert!(l["memory_by_node"].is_null() && l["memory_off_node_share"].is_null(), "{l}");
    }
    // The table output has the NUMA row.
    let table = dir.path().join("table");
    let o = verify(&line_args(&url, &data, &table, &[&level[..], &["--format", "table"]].concat()))
        .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("numa_miss / other_node (pages)"),
        "{}",
        text(&o)
    );
    sim.shutdown().await.unwrap();
}

/// [`line_args`] for one measured request (`--parallel 1 --number 1 --warmup 0 --max-tokens 2
/// --quiet`) whose NUMA counters are read below `sysfs`, then `more`.
fn one_request<'a>(
    url: &'a str,
    data: &'a str,
    out: &'a Path,
    sysfs: &'a Path,
    more: &[&'a str],
) -> Vec<&'a str> {
    let one = ["--parallel", "1", "--number", "1", "--warmup", "0", "--max-tokens", "2"];
    let mut args = line_args(url, data, out, &one);
    args.extend_from_slice(more);
    args.extend(["--quiet", "--sysfs-root", sysfs.to_str().unwrap()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numa_deltas_are_what_changed_in_the_sysfs_tree_during_the_level() {
    // One request that takes 600 ms: the counters change while it runs.
    let sim = sim::start(SimConfig::fixed(Duration::from_millis(600), Duration::from_millis(1)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 5);
    let sys = dir.path().join("sys");
    let node = |n: u32| sys.join(format!("devices/system/node/node{n}"));
    let write = |n: u32, v: [u64; 6]| {
        std::fs::create_dir_all(node(n)).unwrap();
        let text = format!(
            "numa_hit {}\nnuma_miss {}\nnuma_foreign {}\ninterleave_hit {}\nlocal_node {}\nother_node {}\n",
            v[0], v[1], v[2], v[3], v[4], v[5]
        );
        std::fs::write(node(n).join("numastat"), text).unwrap();
    };
    write(0, [1000, 10, 0, 5, 990, 20]);
    write(1, [500, 0, 10, 5, 500, 0]);
    let out = dir.path().join("out");
    let url = sim.base_url();
    let args = one_request(&url, &data, &out, &sys, &["--no-preflight", "--metrics-interval", "0"]);
    let run = verify(&args);
    let change = async {
        // The measured request has arrived: the level's first reading is taken.
        while sim.arrivals() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        write(0, [1300, 17, 0, 9, 1250, 70]);
        write(1, [540, 0, 13, 5, 520, 20]);
    };
    let (o, ()) = tokio::join!(run, change);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    check_schema(&s);
    let numa = &s["levels"][0]["numa"];
    let want = serde_json::json!({
        "per_node": {
            "0": {"numa_hit": 300, "numa_miss": 7, "numa_foreign": 0, "local_node": 260, "other_node": 50},
            "1": {"numa_hit": 40, "numa_miss": 0, "numa_foreign": 3, "local_node": 20, "other_node": 20}
        },
        "total": {"numa_hit": 340, "numa_miss": 7, "numa_foreign": 3, "local_node": 280, "other_node": 70}
    });
    assert_eq!(numa, &want);
    // A tree without numastat: null, and the schema allows it.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out2 = dir.path().join("out2");
    let o = verify(&one_request(&url, &data, &out2, &empty, &[])).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out2);
    check_schema(&s);
    assert!(s["levels"][0]["numa"].is_null(), "{}", s["levels"][0]);
    sim.shutdown().await.unwrap();
}
