//! The load generator stays out of the engine's way (issue 15, item 5), with real processes on
//! this 2-CPU machine: the engine simulator started under `taskset` (or by `verify --compare`
//! under a binding), a real `verify` process against it, and that process's threads'
//! `Cpus_allowed_list` read from `/proc/PID/task/*/status` while it runs, cross-checked with
//! what its `summary.json` records. Every test needs CPUs 0 and 1 online.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

#[path = "support/agent.rs"]
mod agent;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeagent"));
    c.env_remove("OPENAI_API_KEY").env("RUST_LOG", "warn");
    c
}

/// Skips (with a line on stderr) on a machine whose CPUs are not exactly 0-1: the expected
/// lists below are this machine's.
fn two_cpus() -> bool {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() != "0-1" {
        eprintln!("skipped: these tests expect online cpus 0-1, this host has {online:?}");
        return false;
    }
    true
}

/// The simulator in its own process, pinned by `taskset -c CPUS`; killed on drop.
struct Engine {
    child: Child,
    url: String,
}

impl Engine {
    fn start(cpus: &str) -> Engine {
        let mut child = Command::new("taskset")
            .args(["-c", cpus, env!("CARGO_BIN_EXE_nodeagent"), "simulate", "--port", "0"])
            .args(["--served-model-name", "sim", "--prefill-base-ms", "5", "--decode-base-ms", "5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("taskset and the binary run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("listening on ").expect("the simulator's first line");
        Engine { child, url: format!("{base}/v1/chat/completions") }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Cpus_allowed_list` of every thread of `pid` now; empty once it has ended.
fn thread_cpus(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().into()))
        })
        .collect()
}

/// Runs `verify` while a thread samples every thread's CPU list from `/proc`; the output and
/// each sample (one `Vec` per reading, one entry per thread).
fn run_watched(args: &[&str]) -> (std::process::Output, Vec<Vec<String>>) {
    let child = bin()
        .arg("verify")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = thread_cpus(pid);
                if !s.is_empty() {
                    samples.lock().unwrap().push(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    (out, samples)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A sweep of two levels long enough (some seconds) for the watcher to see it.
fn sweep_args<'a>(url: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--url",
        url,
        "--dataset",
        "random",
        "--input-len",
        "16",
        "--output-len",
        "32",
        "--parallel",
        "2",
        "4",
        "--number",
        "16",
        "--warmup",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    a
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn check_schema(summary: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../docs/summary.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the checked-in schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(summary).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "summary.json does not match the schema: {errors:#?}");
}

/// Every measured level carries the load generator's CPU use, above zero.
fn check_cpu_figures(s: &Value, allowed_cpus: u64) {
    let levels = s["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2, "{s}");
    for l in levels {
        let c = &l["loadgen_cpu"];
        assert!(c["cpu_s"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["wall_s"].as_f64().unwrap() > 0.0, "{c}");
        let cores = c["cores"].as_f64().unwrap();
        assert!(cores > 0.0 && cores <= allowed_cpus as f64 + 0.05, "{c}");
        assert_eq!(c["allowed_cpus"].as_u64(), Some(allowed_cpus), "{c}");
        let share = c["allowed_share"].as_f64().unwrap();
        assert!((share - cores / allowed_cpus as f64).abs() < 1e-9, "{c}");
    }
}

#[test]
fn verify_pins_itself_to_the_cpu_the_engine_leaves_free() {
    if !two_cpus() {
        return;
    }
    let engine = Engine::start("0");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (o, samples) = run_watched(&sweep_args(&engine.url, &out, &[]));
    assert!(o.status.success(), "{}", text(&o));
    // Seen from /proc while it ran: every thread of verify on CPU 1 only.
    assert!(
        samples.iter().any(|s| s.iter().all(|c| c == "1")),
        "no reading had every thread on cpu 1: {samples:?}"
    );
    let s = summary(&out);
    check_schema(&s);
    let lg = &s["meta"]["loadgen"];
    assert_eq!(lg["pinned"], "1", "{lg}");
    assert!(lg["unpinned"].is_null(), "{lg}");
    assert_eq!(lg["cpus"], "1", "{lg}");
    assert_eq!(lg["engine_cpus"], "0", "{lg}");
    // The engine process itself is the listener (taskset exec'd into it).
    assert_eq!(lg["engine_pids"], json!([engine.child.id()]), "{lg}");
    let port = engine.url.rsplit(':').next().unwrap().split('/').next().unwrap();
    assert_eq!(lg["engine_from"], format!("listener of port {port}"), "{lg}");
    check_cpu_figures(&s, 1);
    // The report has the figure: a sweep-table row and a CSV column.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("load generator CPU (cores)"), "{stdout}");
    assert!(stdout.contains("load generator: ") && stdout.contains("% of its 1 cpu)"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .ends_with("loadgen_cpu_s,loadgen_cores,loadgen_allowed_share"));
}

#[test]
fn no_isolate_leaves_verify_on_every_cpu() {
    if !two_cpus() {
        return;
    }
    let engine = Engine::start("0");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (o, samples) = run_watched(&sweep_args(&engine.url, &out, &["--no-isolate"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(!samples.is_empty());
    let seen: BTreeSet<&String> = samples.iter().flatten().collect();
    assert_eq!(seen, BTreeSet::from([&"0-1".to_string()]), "{samples:?}");
    let s = summary(&out);
    check_schema(&s);
    let lg = &s["meta"]["loadgen"];
    assert!(lg["pinned"].is_null(), "{lg}");
    assert_eq!(lg["unpinned"], "--no-isolate", "{lg}");
    assert_eq!(lg["cpus"], "0-1", "{lg}");
    check_cpu_figures(&s, 2);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("unpinned"), "{}", text(&o));
}

#[test]
fn an_engine_on_every_cpu_leaves_verify_unpinned_with_one_warning() {
    if !two_cpus() {
        return;
    }
    let engine = Engine::start("0-1");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (o, samples) = run_watched(&sweep_args(&engine.url, &out, &[]));
    assert!(o.status.success(), "{}", text(&o));
    let seen: BTreeSet<&String> = samples.iter().flatten().collect();
    assert_eq!(seen, BTreeSet::from([&"0-1".to_string()]), "{samples:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("unpinned")).collect();
    assert_eq!(warned.len(), 1, "one warning line: {stderr}");
    assert!(
        warned[0].contains("no CPU is free of the engine's binding (engine on cpus 0-1"),
        "{stderr}"
    );
    let s = summary(&out);
    check_schema(&s);
    let lg = &s["meta"]["loadgen"];
    assert!(lg["pinned"].is_null(), "{lg}");
    assert_eq!(lg["engine_cpus"], "0-1", "{lg}");
    assert!(lg["unpinned"].as_str().unwrap().contains("engine on cpus 0-1"), "{lg}");
    assert!(
        s["meta"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("runs unpinned and competes with the engine")),
        "{s}"
    );
    check_cpu_figures(&s, 2);
}

#[test]
fn a_remote_engine_leaves_verify_unpinned_without_a_warning() {
    if !two_cpus() {
        return;
    }
    // TEST-NET-1 (RFC 5737) is no address of this host; nothing answers there, so the
    // preflight fails, but the placement is decided before it.
    let o = bin()
        .args(["verify", "--url", "http://192.0.2.1:9/v1/completions", "--connect-timeout", "1"])
        .args(["--dataset", "random", "--number", "1", "--quiet"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("the engine at 192.0.2.1:9 is not on this host"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// `verify --compare`: each sub-run's load generator keeps off that sub-run's engine binding
/// (`cpus=0`: on CPU 1), or runs unpinned where the binding covers every CPU (`none`); the
/// engine of the next sub-run does not inherit the load generator's pinning.
#[test]
fn compare_sub_runs_pin_the_load_generator_off_each_binding() {
    if !two_cpus() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("engine.toml");
    std::fs::write(
        &cfg,
        format!(
            "host = \"local\"\nmodel = \"sim\"\n[engine]\nport = {port}\nargv = [\"{{self}}\", \
             \"simulate\", \"--port\", \"{{port}}\", \"--served-model-name\", \
             \"{{served_model_name}}\", \"--decode-base-ms\", \"5\", \"--prefill-base-ms\", \"5\"]\n\
             [supervise]\nready_timeout = \"20s\"\nstop_grace = \"5s\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .args(["verify", "--compare", "cpus=0,none", "--trials", "1", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--dataset", "random", "--input-len", "16", "--output-len", "8"])
        .args(["--parallel", "2", "--number", "8", "--warmup", "0", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{json}");
    assert_eq!((&runs[0]["binding"], &runs[1]["binding"]), (&json!("cpus=0"), &json!("none")));
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        let lg = &r["loadgen"];
        let engine_cpus: Vec<&str> = r["binding_check"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cpus_allowed"].as_str().unwrap())
            .collect();
        if r["binding"] == "none" {
            // Started after a pinned sub-run: the engine did not inherit CPU 1.
            assert!(engine_cpus.iter().all(|c| *c == "0-1"), "{r}");
            assert!(lg["pinned"].is_null(), "{lg}");
            assert!(lg["unpinned"].as_str().unwrap().contains("engine on cpus 0-1"), "{lg}");
        } else {
            assert!(engine_cpus.iter().all(|c| *c == "0"), "{r}");
            assert_eq!(lg["pinned"], "1", "{lg}");
            assert_eq!(lg["engine_cpus"], "0", "{lg}");
        }
        assert_eq!(lg["engine_from"], "--compare", "{lg}");
        let cores = r["levels"][0][1]["loadgen_cores"].as_f64().unwrap();
        assert!(cores > 0.0, "{r}");
        let sub: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(r["dir"].as_str().unwrap()).join("summary.json"))
                .unwrap(),
        )
        .unwrap();
        check_schema(&sub);
        assert_eq!(&sub["meta"]["loadgen"], lg);
        assert_eq!(sub["levels"][0]["loadgen_cpu"]["cores"].as_f64(), Some(cores));
    }
}

/// The engine run by `nodeagent serve` (bare mode, binding `cpus = "0"`) with two worker
/// processes in sessions of their own: the listener's descendants count as the engine, and
/// `verify` lands on CPU 1.
#[test]
fn verify_keeps_off_an_engine_that_serve_bound_to_cpu_0() {
    if !two_cpus() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let config = dir.path().join("nodeagent.toml");
    let argv: Vec<String> = [
        agent::BIN,
        "simulate",
        "--port",
        "{port}",
        "--served-model-name",
        "{served_model_name}",
        "--workers",
        "2",
        "--prefill-base-ms",
        "5",
        "--decode-base-ms",
        "5",
    ]
    .map(String::from)
    .to_vec();
    agent::write_config(
        &config,
        &state_dir,
        &argv,
        "stop_grace = \"3s\"\n\n[launch]\nmode = \"bare\"\n\n[binding]\ncpus = \"0\"\n",
    );
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let serve = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .env("NODEAGENT_TEST_MARK", dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Stop(Option<Child>, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            agent::stop_child(self.0.take(), Duration::from_secs(10));
            agent::kill_marked(&self.1);
        }
    }
    let _stop = Stop(Some(serve), dir.path().to_path_buf());
    let st = agent::wait_for("the engine ready with 3 processes", Duration::from_secs(30), || {
        agent::status(&state_dir, &[])
            .filter(|s| s["state"] == "ready" && s["pids"].as_array().is_some_and(|p| p.len() == 3))
    });
    let port = st["port"].as_u64().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let out = dir.path().join("run");
    let (o, samples) =
        run_watched(&sweep_args(&url, &out, &["--state-dir", state_dir.to_str().unwrap()]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(samples.iter().any(|s| s.iter().all(|c| c == "1")), "{samples:?}");
    let s = summary(&out);
    check_schema(&s);
    let lg = &s["meta"]["loadgen"];
    assert_eq!((&lg["pinned"], &lg["engine_cpus"]), (&json!("1"), &json!("0")), "{lg}");
    assert_eq!(lg["engine_from"], format!("serve status ({})", state_dir.display()), "{lg}");
    // The listener and its two workers: the pids serve supervises.
    let mut want: Vec<i64> =
        st["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    want.sort_unstable();
    let mut got: Vec<i64> =
        lg["engine_pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, want, "{lg}");
    check_cpu_figures(&s, 1);
}
