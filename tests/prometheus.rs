//! The Prometheus rules and dashboard in `deploy/` checked by the real tools: `promtool check
//! rules` and `promtool test rules` (the unit tests next to the rules), and a real Prometheus
//! (Debian's package, installed by `scripts/setup.sh test`) scraping two real `nodeagent serve`
//! agents that stand for two GPU nodes: one serving the engine simulator, one whose engine
//! crashes at every start. The fleet rules must say 1 of 2 engines ready and the crash-loop alert
//! must fire for the faulty node only. The metric names the rules and the dashboard use must all
//! be in a live agent's `/metrics` (a rename in the code fails here, not silently in production).
//!
//! Without `prometheus`/`promtool` the tests are skipped with a message, except under `CI=true`,
//! where that is a failure (CI installs them).

#[path = "support/agent.rs"]
mod agent;
#[path = "support/metrics.rs"]
mod metrics;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent::{free_port, wait_for, BIN};
use metrics::try_http_get as http_get;
use serde_json::Value;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Whether `tool` is on PATH; outside CI a missing tool skips the test.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing under CI=true: scripts/setup.sh test installs the prometheus package"
        );
        eprintln!("skipped: {tool} not found (scripts/setup.sh test installs it)");
    }
    found
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    if !have("promtool") {
        return;
    }
    let dir = repo("deploy/prometheus");
    let out = run_ok(
        Command::new("promtool").args(["check", "rules"]).arg(dir.join("nodeagent.rules.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "nodeagent.rules.test.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");

    // The example configuration is valid once its rule file path points at the real file.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
    let text = text.replace(
        "/etc/prometheus/nodeagent.rules.yml",
        &dir.join("nodeagent.rules.yml").display().to_string(),
    );
    std::fs::write(tmp.path().join("prometheus.yml"), text).unwrap();
    run_ok(
        Command::new("promtool").args(["check", "config"]).arg(tmp.path().join("prometheus.yml")),
    );
}

/// Every `nodeagent_*` metric name in `text` (rules or dashboard), without the recording rules'
/// `nodeagent:` names.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bnodeagent_[a-z_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// Every recording rule name (`nodeagent:...`) used in `text`.
fn recorded_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bnodeagent:[a-z_:0-9]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// A `nodeagent serve` standing for one node: its engine, a monitor on `metrics_port` reading
/// the fake nvidia-smi (the recorded H100 under load), its own state dir.
struct Node {
    child: Child,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(engine_argv: Option<&[&str]>, supervise: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let argv = engine_argv
            .map(|a| format!("argv = {:?}\n", a.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
            .unwrap_or_default();
        let config = format!(
            "host = \"local\"\nmodel = \"sim\"\nstate_dir = {state:?}\n\n[engine]\nport = {port}\n\
             {argv}\n[supervise]\n{supervise}\n",
            state = state.display().to_string(),
            port = free_port(),
        );
        std::fs::write(dir.path().join("node.toml"), config).unwrap();
        let metrics_port = free_port();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("node.toml"))
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--gpu-tool", "nvidia", "--gpu-interval", "1s", "--nvidia-smi"])
            .arg(repo("testdata/fake-tools/nvidia-smi"))
            .env("FAKE_NVSMI_DIR", repo("testdata/monitor/h100-load"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        Node { child, metrics_port, _dir: dir }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    fn metrics(&self) -> Option<String> {
        http_get(&self.target(), "/metrics").filter(|(code, _)| *code == 200).map(|(_, b)| b)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = wait_for("serve to stop", Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten()
        });
    }
}

/// A query against Prometheus' HTTP API: the `data` object.
fn prom_api(addr: &str, path_and_query: &str) -> Option<Value> {
    let (code, body) = http_get(addr, path_and_query)?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (code == 200 && v["status"] == "success").then(|| v["data"].clone())
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scraping_two_agents_fires_the_fleet_rules_for_the_faulty_node() {
    if !have("prometheus") || !have("promtool") {
        return;
    }
    // Node 1 serves the simulator (canary on, so every liveness series is exported); node 2's
    // engine exits at every start: a crash loop the supervisor keeps restarting.
    let healthy = Node::start(None, "canary_interval = \"500ms\"\nhealth_interval = \"200ms\"\n");
    let faulty = Node::start(
        Some(&["python3", "-c", "import sys; sys.exit(3)"]),
        "backoff_initial = \"100ms\"\nbackoff_max = \"200ms\"\nrestart_budget = 10000\n",
    );

    // The names the rules and the dashboard use are exported by a live agent.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/nodeagent.rules.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(repo("deploy/grafana/nodeagent-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let wanted: BTreeSet<String> =
        metric_names(&rules).union(&metric_names(&dashboard)).cloned().collect();
    assert!(wanted.len() >= 15, "{wanted:?}");
    let exported =
        wait_for("every metric the rules use on node 1", Duration::from_secs(60), || {
            let text = healthy.metrics()?;
            let names: BTreeSet<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_string)
                .collect();
            wanted.iter().all(|w| names.contains(w)).then_some(names)
        });
    assert!(exported.contains("nodeagent_engine_state"));
    // Recording rules the dashboard reads are defined by the rules file.
    let defined = recorded_names(
        &rules.lines().filter(|l| l.contains("record:")).collect::<Vec<_>>().join("\n"),
    );
    for name in recorded_names(&dashboard) {
        assert!(defined.contains(&name), "the dashboard reads {name}, which no rule records");
    }

    // A real Prometheus, scraping and evaluating every second, with the shipped rules; only the
    // alerts' `for:` durations are cut to 0s so the test does not wait for minutes (promtool's
    // unit tests above check the real durations).
    let dir = tempfile::tempdir().unwrap();
    let re_for = regex::Regex::new(r"(?m)^(\s*)for: \S+$").unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        re_for.replace_all(&rules, "${1}for: 0s").as_ref(),
    )
    .unwrap();
    let interval = "interval: 30s";
    let fast_rules = std::fs::read_to_string(dir.path().join("rules.yml")).unwrap();
    assert!(fast_rules.contains(interval));
    std::fs::write(dir.path().join("rules.yml"), fast_rules.replace(interval, "interval: 1s"))
        .unwrap();
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: nodeagent\n    static_configs:\n      - targets: [\"{a}\", \"{b}\"]\n",
            rules = dir.path().join("rules.yml").display(),
            a = healthy.target(),
            b = faulty.target(),
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{prom_port}");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(&mut prom);

    let ratio_q =
        format!("/api/v1/query?query={}", urlencode("nodeagent:fleet_engines_ready:ratio"));
    let ratio = wait_for("the fleet ready ratio at 0.5", Duration::from_secs(90), || {
        let data = prom_api(&addr, &ratio_q)?;
        let v = data["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
        (v == 0.5).then_some(v)
    });
    assert_eq!(ratio, 0.5);

    let firing = |data: &Value, name: &str| -> Vec<String> {
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .map(|a| a["labels"]["instance"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let alerts = wait_for("the crash-loop alert for node 2", Duration::from_secs(90), || {
        let data = prom_api(&addr, "/api/v1/alerts")?;
        (!firing(&data, "NodeagentEngineCrashLooping").is_empty()
            && !firing(&data, "NodeagentFleetEnginesNotReady").is_empty())
        .then_some(data)
    });
    assert_eq!(
        firing(&alerts, "NodeagentEngineCrashLooping"),
        vec![faulty.target()],
        "the crash loop is node 2's only: {alerts}\nnode 2's log: {}",
        faulty.log()
    );
    assert_eq!(firing(&alerts, "NodeagentEngineNotReady"), vec![faulty.target()], "{alerts}");
    // Nothing fires for the healthy node.
    for a in alerts["alerts"].as_array().unwrap() {
        assert_ne!(a["labels"]["instance"], healthy.target().as_str(), "healthy node alerted: {a}");
    }
}
