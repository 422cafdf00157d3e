//! `nodeagent monitor` end to end: the real binary, the fake `mx-smi`/`nvidia-smi` scripts in
//! `testdata/fake-tools/` playing recorded real outputs (changing over time, hanging, printing
//! garbage), a real engine process tree, a loopback engine metrics endpoint, and the real
//! `/metrics` checked with `promtool check metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/metrics.rs"]
mod metrics;
use metrics::{alerts, http_get, listening, promtool, wait_status};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeagent"));
    // The fake tools play recorded outputs: a real NVML on the test host must not win over
    // them (tests/nvml.rs drives NVML through its fake library).
    c.env("NO_COLOR", "1").env_remove("RUST_LOG").env("NODEAGENT_NVML_LIB", "off");
    c
}

/// Starts `nodeagent monitor ... --listen 127.0.0.1:0` and reads the bound address.
// The child is handed to the caller, which kills and waits for it; clippy cannot see that.
#[allow(clippy::zombie_processes)]
fn spawn_listening(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _) = listening(&mut child);
    (child, addr)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// nodeagent's own metrics must pass promtool's parser and linter outright; the engine's
/// re-exported metrics are the engine's as it wrote them (`vllm:` names, which dashboards use and
/// promtool's linter flags): they only have to parse.
fn promtool_ok(text: &str) {
    let own: String =
        text.lines().filter(|l| !l.contains("vllm:")).map(|l| format!("{l}\n")).collect();
    let (code, msg) = promtool(&own);
    assert_eq!(code, 0, "promtool check metrics failed on nodeagent's metrics: {msg}\n{own}");
    let (code, msg) = promtool(text);
    assert!(code == 0 || code == 3, "promtool could not parse /metrics: {msg}\n{text}");
    for problem in msg.lines() {
        assert!(
            problem.starts_with("vllm:"),
            "lint problem outside the engine's metrics: {problem}"
        );
    }
}

#[test]
fn once_json_from_h100_capture_matches_nvidia_smi() {
    let out = bin()
        .args(["monitor", "--once", "--json", "--from"])
        .arg(repo("testdata/monitor/h100-load"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g0 = &v["gpus"][0];
    assert_eq!(g0["bus_id"], "0000:00:06.0");
    assert_eq!(g0["memory_used_mib"], 21653);
    assert_eq!(g0["memory_total_mib"], 81559);
    assert_eq!(g0["utilization_pct"], 100.0);
    assert_eq!(v["gpus"][1]["power_w"], 636.7);
    // The NUMA node comes from `topo -m` (NUMA Affinity 0), as in `plan`.
    assert_eq!((g0["numa_node"].as_u64(), v["gpus"][1]["numa_node"].as_u64()), (Some(0), Some(0)));
    let pids: Vec<u64> =
        v["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, [584, 585]);
    assert_eq!(v["processes"][0]["owner"], "other");
}

#[test]
fn once_live_fake_nvidia_smi_and_failures() {
    let fake = repo("testdata/fake-tools/nvidia-smi");
    let out = bin()
        .args(["monitor", "--once", "--json", "--tool", "nvidia", "--nvidia-smi"])
        .arg(&fake)
        .env("FAKE_NVSMI_DIR", repo("testdata/monitor/h100-load"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"][1]["memory_used_mib"], 4691);
    assert_eq!(v["gpus"][1]["numa_node"].as_u64(), Some(0), "from the fake's topo -m");
    assert!(v["sampler"].as_str().unwrap().starts_with("nvidia-smi"));

    // A hanging tool: the sample is missing, the command ends by the timeout with exit 1 and
    // still prints what it has.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hang"), "").unwrap();
    let started = Instant::now();
    let out = bin()
        .args([
            "monitor",
            "--once",
            "--json",
            "--tool",
            "nvidia",
            "--tool-timeout",
            "500ms",
            "--nvidia-smi",
        ])
        .arg(&fake)
        .env("FAKE_NVSMI_DIR", dir.path())
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "hung tool stalled the monitor");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: GPU sample missing: nvidia-smi timed out after 500ms"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples_missing_total"], 1);

    // Garbage: exit 1, the parser's line named.
    std::fs::remove_file(dir.path().join("hang")).unwrap();
    std::fs::write(
        dir.path().join("garbage"),
        "Failed to initialize NVML: Driver/library version mismatch\n",
    )
    .unwrap();
    let out = bin()
        .args(["monitor", "--once", "--tool", "nvidia", "--nvidia-smi"])
        .arg(&fake)
        .env("FAKE_NVSMI_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("Failed to initialize NVML"), "{err}");

    // No tool at all, and a snapshot dir without GPU files: bad input, exit 2.
    let out = bin()
        .args([
            "monitor",
            "--once",
            "--mx-smi",
            "/nonexistent/mx-smi",
            "--nvidia-smi",
            "/nonexistent/nvidia-smi",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no GPU tool found"));
    let out = bin().args(["monitor", "--once", "--from"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("has neither mx-smi.txt, nvidia-smi-query.csv nor nvidia-smi.txt"));

    // An engine pid that names no process: bad input, exit 2, one line naming it.
    let out = bin()
        .args(["monitor", "--once", "--engine-pid", "4000001", "--from"])
        .arg(repo("testdata/hosts/seed-4xmxc500"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "error: --engine-pid 4000001: no such process (in /proc)", "{err}");

    // Values that made the monitor do nothing, or never what was asked, are refused.
    let snapshot = repo("testdata/hosts/seed-4xmxc500");
    for (flags, said) in [
        (&["--count", "0"][..], "error: --count 0: must be at least 1"),
        (&["--hung-after", "0"][..], "error: --hung-after 0: must be at least 1 sample"),
        (&["--engine-metrics", "notaurl"][..], "error: --engine-metrics \"notaurl\": not an http"),
        (&["--engine-metrics", "https://h/metrics"][..], "error: --engine-metrics \"https:"),
        (&["--memory-threshold", "NaN"][..], "error: --memory-threshold NaN is not a percentage"),
    ] {
        let out = bin().args(["monitor", "--once", "--from"]).arg(&snapshot).args(flags).output();
        let out = out.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.starts_with(said) && err.trim().lines().count() == 1, "{flags:?}: {err}");
    }
    // A snapshot file that is a device or a fifo: named, exit 1 (no sample), never a hang.
    for (name, make) in [("zero", "/dev/zero"), ("fifo", "")] {
        let snap = dir.path().join(name);
        std::fs::create_dir(&snap).unwrap();
        let file = snap.join("mx-smi.txt");
        if make.is_empty() {
            assert!(Command::new("mkfifo").arg(&file).status().unwrap().success());
        } else {
            std::os::unix::fs::symlink(make, &file).unwrap();
        }
        let out = bin()
            .args(["monitor", "--once", "--from"])
            .arg(&snap)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        let said = format!("{}: not a regular file", file.display());
        assert!(err.contains(&said) && err.trim().lines().count() == 1, "{name}: {err}");
    }
    // `serve`'s monitor: the same percentage check, before anything starts.
    let cfg = dir.path().join("serve.toml");
    std::fs::write(&cfg, "[engine]\nargv = [\"/bin/true\"]\n").unwrap();
    let out = bin()
        .args(["serve", "--print-config", "--metrics-port", "0", "--gpu-memory-threshold", "500"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--gpu-memory-threshold 500 is not a percentage (0-100)"), "{err}");
}

/// A loopback stand-in for vLLM's `/metrics` with 3 requests running.
fn engine_metrics_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = "# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 3.0\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/metrics")
}

/// The seed's loaded mx-smi table with its process pids replaced and utilization forced to 0.
fn mx_table(engine_root: u32, engine_child: u32, drop_gpu3: bool) -> String {
    let t = std::fs::read_to_string(repo("testdata/mx-smi/seed-mx-smi.load.qwen72b.txt")).unwrap();
    let t = t
        .replace("343683", &engine_root.to_string())
        .replace("350950", &engine_child.to_string())
        .replace("351042", "4000001")
        .replace("| 36%  ", "| 0%   ")
        .replace("| 24%  ", "| 0%   ")
        .replace("| 35%  ", "| 0%   ");
    let lines: Vec<&str> = t.lines().collect();
    let mut out = Vec::new();
    let mut skip = 0;
    for l in lines {
        if drop_gpu3 && (l.starts_with("| 3           MXC500") || l.starts_with("|  3   ")) {
            skip = if l.starts_with("| 3 ") { 3 } else { 1 };
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        out.push(l);
    }
    out.join("\n") + "\n"
}

/// Adds a step to the fake mx-smi's script that plays from its next call on.
fn next_step(dir: &Path, kind: &str, text: &str) {
    let count: u64 = std::fs::read_to_string(dir.join(".count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(dir.join(format!("{}.{kind}", count + 1)), text).unwrap();
}

#[test]
fn live_alerts_attribution_and_metrics_with_fake_mx_smi() {
    // A real engine process tree: a shell and its child.
    let mut engine = Command::new("sh")
        .args(["-c", "sleep 300 & echo $!; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let root = engine.id();
    let mut line = String::new();
    BufReader::new(engine.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let child: u32 = line.trim().parse().unwrap();

    let steps = tempfile::tempdir().unwrap();
    std::fs::write(steps.path().join("1.txt"), mx_table(root, child, false)).unwrap();
    let mut cmd = bin();
    cmd.args([
        "monitor",
        "--json",
        "--interval",
        "200ms",
        "--tool-timeout",
        "300ms",
        "--tool",
        "metax",
    ])
    .args(["--engine-gpus", "0,1,2,3", "--engine-metrics", &engine_metrics_server()])
    .args(["--engine-pid", &root.to_string(), "--mx-smi"])
    .arg(repo("testdata/fake-tools/mx-smi"))
    .env("FAKE_MXSMI_DIR", steps.path());
    let (mut mon, addr) = spawn_listening(cmd);

    // 0 % utilization with 3 requests in flight: hung after 3 samples; the foreign pid flagged.
    let v = wait_status(&addr, "engine-hung", |v| {
        v["engine_hung"] == true && alerts(v).contains(&"foreign-process".into())
    });
    let owner = |pid: u64| {
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .map(|p| p["owner"].clone())
    };
    assert_eq!(owner(root as u64), Some("engine".into()));
    assert_eq!(
        owner(child as u64),
        Some("engine".into()),
        "the engine's child must count as the engine's"
    );
    assert_eq!(owner(4000001), Some("foreign".into()));
    assert_eq!(v["in_flight"], 3);

    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    promtool_ok(&metrics);
    assert!(metrics.contains("nodeagent_engine_hung 1.0"), "{metrics}");
    assert!(
        metrics.contains("nodeagent_alerts_active{check=\"foreign-process\"} 2.0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("pid=\"{child}\",process=\"ray::RayWorkerW\",owner=\"engine\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0"),
        "{metrics}"
    );
    assert!(metrics.contains("nodeagent_gpu_utilization_ratio{gpu=\"2\",bus_id=\"0000:0e:00.0\",numa_node=\"unknown\"} 0"), "{metrics}");

    // The engine dies; its pids still hold GPU memory in the table: orphans.
    let _ = nix_kill(child);
    let _ = engine.kill();
    let _ = engine.wait();
    // Every tick that starts after the death knows it (`--engine-pid` is read right before each
    // tick): the first one says `stopped`, and never "left over from an earlier run". The
    // 50 ms margin covers the read before the sample's timestamp.
    let dead_at = unix_ms() + 50;
    let v = wait_status(&addr, "a tick after the engine died", |v| {
        v["last_tick_unix_ms"].as_u64().is_some_and(|t| t > dead_at)
    });
    assert_eq!(v["engine"]["state"], "stopped", "the first tick after the death: {v:#}");
    assert!(!v.to_string().contains("left over from an earlier run"), "{v:#}");
    let v = wait_status(&addr, "orphan-memory with the engine stopped", |v| {
        alerts(v).contains(&"orphan-memory".into())
    });
    assert_eq!(v["engine"]["state"], "stopped", "{v:#}");
    assert!(!v["engine_hung"].as_bool().unwrap(), "a stopped engine is not hung");
    let orphan =
        v["alerts"].as_array().unwrap().iter().find(|a| a["check"] == "orphan-memory").unwrap();
    assert!(orphan["message"].as_str().unwrap().contains("after the engine stopped"), "{orphan}");

    // GPU 3 disappears from the list.
    next_step(steps.path(), "txt", &mx_table(root, child, true));
    let v = wait_status(&addr, "gpu-gone", |v| alerts(v).contains(&"gpu-gone".into()));
    let gone = v["alerts"].as_array().unwrap().iter().find(|a| a["check"] == "gpu-gone").unwrap();
    assert_eq!(gone["gpu"], 3);
    assert!(gone["message"].as_str().unwrap().contains("0000:0f:00.0"));

    // The tool hangs: samples go missing, the loop keeps ticking, the last GPU view stays.
    next_step(steps.path(), "hang", "");
    let v = wait_status(&addr, "sample-missing", |v| alerts(v).contains(&"sample-missing".into()));
    assert!(v["missing"].as_str().unwrap().contains("timed out after 300ms"), "{v}");
    assert_eq!(v["gpus"].as_array().unwrap().len(), 3);
    let before = v["samples_total"].as_u64().unwrap();
    let v =
        wait_status(&addr, "more ticks", |v| v["samples_total"].as_u64().unwrap() >= before + 2);
    assert!(v["samples_missing_total"].as_u64().unwrap() >= 3);
    let (_, metrics) = http_get(&addr, "/metrics");
    promtool_ok(&metrics);
    assert!(metrics.contains("nodeagent_gpu_sample_up 0.0"), "{metrics}");

    // Garbage then a good table again: the alert clears.
    next_step(steps.path(), "txt", &mx_table(root, child, true));
    wait_status(&addr, "sample-missing cleared", |v| !alerts(v).contains(&"sample-missing".into()));

    let _ = mon.kill();
    let _ = mon.wait();
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill").arg("-9").arg(pid.to_string()).status().map(|_| ())
}

#[test]
fn help_lists_the_options() {
    let out = bin().args(["monitor", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--once",
        "--json",
        "--from <DIR>",
        "--mx-smi <PATH>",
        "--nvidia-smi <PATH>",
        "--interval <DURATION>",
        "--tool-timeout <DURATION>",
        "--engine-pid <PID>",
        "--engine-metrics <URL>",
        "--listen <ADDR>",
        "--memory-threshold <PCT>",
        "--hung-after <N>",
    ] {
        assert!(help.contains(opt), "missing {opt} in:\n{help}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A request that keeps the simulator busy for a minute (2000 tokens at 30 ms each), sent and
/// left unread: it counts as in flight at the engine.
fn long_request(port: u16) -> TcpStream {
    let body = r#"{"model":"qwen2.5","prompt":"hello","max_tokens":2000,"stream":true}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn serve_on_the_simulator_exports_metrics_and_restarts_a_gpu_hung_engine() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("nodeagent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nport = {port}\nhost = \"127.0.0.1\"\nserved_model_name = \"qwen2.5\"\n\
             argv = [\"{{self}}\", \"simulate\", \"--port\", \"{{port}}\", \"--served-model-name\", \"qwen2.5\"]\n\n\
             [launch]\nmode = \"bare\"\n\n\
             [supervise]\nready_timeout = \"30s\"\nhealth_interval = \"500ms\"\nstop_grace = \"5s\"\nbackoff_initial = \"100ms\"\n"
        ),
    )
    .unwrap();
    // The cards show 0 % utilization throughout: idle is fine, idle with requests is a hang.
    // The listed processes are no live pid here (another PID namespace, to the occupancy
    // preflight: a warning): a live foreign pid on the GPUs would refuse the start.
    let steps = dir.path().join("steps");
    std::fs::create_dir(&steps).unwrap();
    std::fs::write(steps.join("1.txt"), mx_table(4000002, 4000003, false)).unwrap();
    let state = dir.path().join("state");
    let mut agent = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .args(["--metrics-port", "0", "--gpu-tool", "metax", "--gpu-interval", "300ms", "--mx-smi"])
        .arg(repo("testdata/fake-tools/mx-smi"))
        .env("FAKE_MXSMI_DIR", &steps)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(agent.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let status = agent.wait().unwrap();
            panic!("serve exited ({status}) before the monitor listened:\n{log}");
        }
        log.push_str(&line);
        if let Some(i) = line.find("monitor: serving http://") {
            let rest = &line[i + "monitor: serving http://".len()..];
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&(line + "\n"));
        }
    });

    // The engine comes up; the monitor sees it ready, with its pids.
    let v = wait_status(&addr, "engine ready", |v| {
        v["engine"]["state"] == "ready" && v["engine"]["health_latency_ms"].is_number()
    });
    assert!(!v["engine"]["pids"].as_array().unwrap().is_empty());
    let (_, metrics) = http_get(&addr, "/metrics");
    promtool_ok(&metrics);
    assert!(metrics.contains("nodeagent_engine_state{state=\"ready\"} 1.0"), "{metrics}");
    assert!(metrics.contains("nodeagent_engine_restarts_total 0"), "{metrics}");
    assert!(metrics.contains("nodeagent_gpu_memory_used_bytes{gpu=\"0\""), "{metrics}");
    assert!(metrics.contains("vllm:num_requests_running{engine=\"0\""), "{metrics}");

    // `nodeagent status` carries the monitor's view.
    let out = bin().args(["status", "--json", "--state-dir"]).arg(&state).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["monitor"]["gpus"].as_array().map(Vec::len), Some(4), "{st:#}");

    // Requests in flight, GPUs at 0 %: hung after 3 samples, and the supervisor restarts it.
    let _inflight: Vec<TcpStream> = (0..2).map(|_| long_request(port)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let out = bin().args(["status", "--json", "--state-dir"]).arg(&state).output().unwrap();
        let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if st["restarts"].as_u64().unwrap_or(0) >= 1 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no restart on a GPU hang; status {st:#}\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(st["last_exit"].as_str().unwrap_or("").contains("GPUs idle"), "{st:#}");
    let v = wait_status(&addr, "restart counted", |v| v["engine"]["restarts"] == 1);
    assert!(v["alerts"].as_array().is_some());
    assert!(log.lock().unwrap().contains("alert: "), "{}", log.lock().unwrap());

    nix_term(agent.id());
    let status = agent.wait().unwrap();
    assert!(status.success(), "serve did not stop cleanly: {status}\n{}", log.lock().unwrap());
}

fn nix_term(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}
