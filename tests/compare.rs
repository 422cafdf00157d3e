//! `verify --compare` and `demo` end to end: the real binary launches the real engine
//! simulator under each binding (serve's process runtime, native binding), a watcher thread
//! reads the engine processes' `/proc/PID/status` and `numa_maps` while they run, and the
//! table, `compare.json` and chart are checked. This machine has CPUs 0-1 and node 0.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "support/bad_out.rs"]
mod bad_out;
use bad_out::BadOuts;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nodeagent"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(dir: &Path, argv_extra: &str) -> std::path::PathBuf {
    let port = free_port();
    let path = dir.join("engine.toml");
    std::fs::write(
        &path,
        format!(
            "host = \"local\"\nmodel = \"sim\"\n[engine]\nport = {port}\nargv = {argv_extra}\n\
             [supervise]\nready_timeout = \"20s\"\nstop_grace = \"5s\"\n"
        ),
    )
    .unwrap();
    path
}

const SIM_ARGV: &str = "[\"{self}\", \"simulate\", \"--port\", \"{port}\", \"--served-model-name\", \"{served_model_name}\", \"--decode-base-ms\", \"5\", \"--prefill-base-ms\", \"5\"]";

/// (cpus allowed, first numa_maps policy) of every live child of `parent` running `simulate`.
fn engine_bindings(parent: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let field =
            |k: &str| status.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
        if field("PPid:").as_deref() != Some(&parent.to_string()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("simulate") {
            continue;
        }
        let policy = std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
            .ok()
            .and_then(|t| {
                t.lines().next().and_then(|l| l.split_whitespace().nth(1).map(String::from))
            })
            .unwrap_or_default();
        if let Some(cpus) = field("Cpus_allowed_list:") {
            out.push((cpus, policy));
        }
    }
    out
}

/// Runs the command while a thread samples the engine processes' bindings from /proc.
fn run_watched(mut cmd: Command) -> (std::process::Output, BTreeSet<(String, String)>) {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                seen.lock().unwrap().extend(engine_bindings(pid));
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    (out, seen)
}

/// `verify --compare BINDINGS --trials TRIALS --config CFG --out OUT MORE` (`MORE`: flags and
/// values separated by spaces), with the
/// engines' bindings watched in /proc while it runs; it must succeed. Its stdout, what was seen
/// in /proc, and `compare.json` (`Null` when the run wrote none).
fn compare_ok(
    cfg: &Path,
    out: &Path,
    bindings: &str,
    trials: &str,
    more: &str,
) -> (String, BTreeSet<(String, String)>, serde_json::Value) {
    let mut cmd = bin();
    cmd.args(["verify", "--compare", bindings, "--trials", trials, "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .args(more.split_whitespace());
    let (o, seen) = run_watched(cmd);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let json = std::fs::read_to_string(out.join("compare.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (stdout, seen, json)
}

/// A compare sub-run's `summary.json`, checked against the published schema.
fn sub_summary(out: &Path, run: &serde_json::Value) -> serde_json::Value {
    let sub: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(run["dir"].as_str().unwrap()).join("summary.json"))
            .unwrap(),
    )
    .unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/summary.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&sub).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    sub
}

fn alive_simulators(pids: &[i64]) -> Vec<i64> {
    pids.iter()
        .copied()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("simulate"))
        })
        .collect()
}

#[test]
fn compare_bare_applies_each_binding_and_writes_table_json_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let out = dir.path().join("out");
    let (stdout, seen, json) = compare_ok(
        &cfg,
        &out,
        "none,cpus=1,cpus=0-1/mem=0",
        "2",
        concat!(
            "--dataset random --input-len 16 --output-len 8 ",
            "--parallel 2 --number 6 --warmup 1 --quiet"
        ),
    );
    // Seen in /proc while the engines ran: CPU 1 only, and the membind to node 0.
    assert!(seen.iter().any(|(c, _)| c == "1"), "{seen:?}");
    assert!(seen.iter().any(|(c, p)| c == "0-1" && p.starts_with("bind:0")), "{seen:?}");
    assert!(seen.iter().any(|(c, p)| c == "0-1" && p == "default"), "{seen:?}");
    // The table: one row per binding and level, the change against none.
    for row in ["| none ", "| cpus=1 ", "| cpus=0-1/mem=0 "] {
        assert!(stdout.contains(row), "{stdout}");
    }
    assert!(stdout.contains("over 2 trials") && stdout.contains("best: "), "{stdout}");
    // compare.json: 6 sub-runs interleaved, each with its binding check, the sub-run files.
    let runs = json["runs"].as_array().unwrap();
    let order: Vec<(String, u64)> = runs
        .iter()
        .map(|r| (r["binding"].as_str().unwrap().to_string(), r["trial"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("none".to_string(), 1),
            ("cpus=1".into(), 1),
            ("cpus=0-1/mem=0".into(), 1),
            ("none".into(), 2),
            ("cpus=1".into(), 2),
            ("cpus=0-1/mem=0".into(), 2)
        ]
    );
    let mut pids = Vec::new();
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        let checks = r["binding_check"].as_array().unwrap();
        assert!(!checks.is_empty());
        for c in checks {
            pids.push(c["pid"].as_i64().unwrap());
            if r["binding"] == "cpus=1" {
                assert_eq!(c["cpus_allowed"], "1");
            }
        }
        let sub = out.join(r["dir"].as_str().unwrap());
        assert!(sub.join("summary.json").is_file() && sub.join("requests.jsonl").is_file());
    }
    assert!(out.join("cpus=0-1+mem=0/trial-2/summary.json").is_file());
    let b = &json["bindings"][1];
    assert_eq!(b["label"], "cpus=1");
    assert_eq!(b["trials_ok"], 2);
    assert!(b["levels"][0]["output_throughput"]["ci95"].as_f64().unwrap() >= 0.0);
    assert!(json["verdict"].as_str().unwrap().starts_with("best: "));
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    // A legend entry for each of the three bindings.
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    for label in ["\nnone\n", "\ncpus=1 (", "\ncpus=0-1/mem=0 ("] {
        assert!(svg.contains(label), "no legend entry {label:?} in {svg}");
    }
    assert!(std::fs::read_to_string(out.join("compare.txt")).unwrap().contains("| cpus=1 "));
    assert!(alive_simulators(&pids).is_empty(), "engines left running");
}

#[test]
fn compare_bad_input_and_engine_that_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let out = dir.path().join("out");
    for (bindings, want) in [
        ("nodes=7", "NUMA node 7 does not exist"),
        ("none,bogus", "`bogus` is not KEY=LIST"),
        ("cpus=64", "CPUs 64 do not exist"),
    ] {
        let o = bin()
            .args(["verify", "--compare", bindings, "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bindings}: {err}");
        assert!(err.contains(want) && err.lines().count() == 1, "{bindings}: {err}");
    }
    // An engine that exits at once: the sub-run is recorded as failed, exit 1, JSON written.
    let cfg = config(dir.path(), "[\"/bin/false\"]");
    let o = bin()
        .args(["verify", "--compare", "none", "--trials", "1", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--dataset", "random", "--number", "2", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("engine ended before it was ready"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert!(json["runs"][0]["error"].as_str().unwrap().contains("before it was ready"));
}

#[test]
fn demo_runs_end_to_end_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut cmd = bin();
    cmd.args(["demo", "--trials", "1", "--out"]).arg(&out);
    let started = std::time::Instant::now();
    let (o, seen) = run_watched(cmd);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(stdout.contains("numactl --cpunodebind=0 --membind=0"), "{stdout}");
    assert!(stdout.contains("-> numactl --physcpubind=0 --membind=0"), "{stdout}");
    assert!(stdout.contains("Cpus_allowed_list 0 ") && stdout.contains("inside the binding"));
    assert!(stdout.contains(&format!("report: {}", out.join("report.md").display())), "{stdout}");
    assert!(seen.iter().any(|(c, p)| c == "0" && p.starts_with("bind:0")), "{seen:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("compare/compare.svg") && report.contains("| auto "), "{report}");
    assert!(out.join("compare/compare.svg").is_file() && out.join("sweep/summary.json").is_file());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare/compare.json")).unwrap())
            .unwrap();
    let pids: Vec<i64> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["binding_check"].as_array().unwrap().iter().map(|c| c["pid"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(pids.len(), 2);
    // The sweep's engine, as the demo printed it: `/proc/PID/status: ...`.
    let mut pids = pids;
    pids.extend(
        stdout.lines().filter_map(|l| {
            l.trim().strip_prefix("/proc/")?.split('/').next()?.parse::<i64>().ok()
        }),
    );
    assert_eq!(pids.len(), 3, "{stdout}");
    assert!(alive_simulators(&pids).is_empty(), "engines left running");
    // The engines' own output is in engine.log (one start line per life), not on the terminal.
    let log = std::fs::read_to_string(out.join("engine.log")).unwrap();
    assert_eq!(log.matches("listening on http://").count(), 3, "{log}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("listening on") && !stderr.contains("Uvicorn running"), "{stderr}");
}

/// Issue 12, defect 4: the demo used to write into `<tmp>/nodeagent-demo-<second>`, reusing
/// one that existed and following symlinks. Symlinks planted at every such name of the next
/// two minutes, into a directory whose `engine.log` and `report.md` link to a victim file:
/// the victim is untouched, and the demo's directory is a fresh private one under the temp dir.
#[test]
fn demo_writes_a_fresh_private_directory_never_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let trap = tmp.path().join("trap");
    std::fs::create_dir(&trap).unwrap();
    for name in ["engine.log", "report.md"] {
        std::os::unix::fs::symlink(&victim, trap.join(name)).unwrap();
    }
    let now = std::time::SystemTime::now();
    for s in 0..120 {
        let stamp = humantime::format_rfc3339_seconds(now + Duration::from_secs(s))
            .to_string()
            .replace(':', "");
        std::os::unix::fs::symlink(&trap, tmp.path().join(format!("nodeagent-demo-{stamp}")))
            .unwrap();
    }
    let o = bin().args(["demo", "--trials", "1"]).env("TMPDIR", tmp.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read_dir(&trap).unwrap().count(), 2, "the demo wrote into the trap");
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report line: {stdout}"));
    let used = Path::new(report).parent().unwrap();
    assert_eq!(used.parent(), Some(tmp.path()), "{stdout}");
    let meta = std::fs::symlink_metadata(used).unwrap();
    assert!(meta.is_dir() && !meta.file_type().is_symlink(), "{}", used.display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", used.display());
    assert!(used.join("report.md").is_file() && used.join("engine.log").is_file());
    assert!(stdout.contains(&format!("demo directory: {}", used.display())), "{stdout}");
}

/// Issue 12, defect 4: `demo --out` and `verify --compare --out` refuse a symlink and a file.
#[test]
fn demo_and_compare_refuse_an_out_that_is_a_symlink_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let bad = BadOuts::new(dir.path());
    for (out, want) in bad.cases() {
        let demo = bin().args(["demo", "--trials", "1", "--out"]).arg(out).output().unwrap();
        let compare = bin()
            .args(["verify", "--compare", "none", "--trials", "1", "--config"])
            .arg(&cfg)
            .args(["--dataset", "random", "--number", "1", "--quiet", "--out"])
            .arg(out)
            .output()
            .unwrap();
        for o in [demo, compare] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(err.contains(want) && err.lines().count() == 1, "{err}");
        }
    }
    bad.assert_untouched();
}

/// Issue 12, defect 4: `verify --compare` without `--out` writes into a fresh private
/// directory under the temp dir and says which.
#[test]
fn compare_without_out_writes_a_fresh_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let o = bin()
        .args(["verify", "--compare", "none", "--trials", "1", "--config"])
        .arg(&cfg)
        .args(["--dataset", "random", "--input-len", "16", "--output-len", "4"])
        .args(["--parallel", "1", "--number", "2", "--quiet"])
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let used = stderr
        .lines()
        .find_map(|l| l.strip_prefix("results in ")?.split(" (").next())
        .unwrap_or_else(|| panic!("no results line: {stderr}"));
    let used = Path::new(used);
    assert_eq!(used.parent(), Some(dir.path()), "{stderr}");
    assert!(used.file_name().unwrap().to_string_lossy().starts_with("nodeagent-compare-"));
    let meta = std::fs::symlink_metadata(used).unwrap();
    assert!(meta.is_dir() && meta.permissions().mode() & 0o777 == 0o700);
    assert!(
        used.join("compare.json").is_file() && used.join("none/trial-1/summary.json").is_file()
    );
}

/// Issue 12, defect 6: SIGTERM mid-sweep of a comparison is handled like Ctrl-C: the engine is
/// stopped, what was measured is kept in `compare.json`, exit 1.
#[test]
fn sigterm_stops_a_comparison_and_keeps_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let out = dir.path().join("out");
    let child = bin()
        .args(["verify", "--compare", "none,cpus=0", "--trials", "2", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--dataset", "random", "--input-len", "16", "--output-len", "8"])
        .args(["--parallel", "2", "--number", "100000", "--grace", "1s", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the first sub-run's sweep has records on disk.
    let records = out.join("none/trial-1/requests.jsonl");
    let started = std::time::Instant::now();
    let mut engines = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        engines.extend(engine_pids(pid));
        if std::fs::metadata(&records).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    engines.extend(engine_pids(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let left = alive_simulators(&engines);
    for p in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{:?}\n{stderr}", o.status);
    assert!(!engines.is_empty() && left.is_empty(), "engines {engines:?}, left running {left:?}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 1, "{json}");
    assert!(json["runs"][0]["error"].as_str().unwrap().contains("interrupted"), "{json}");
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("none/trial-1/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["meta"]["interrupted"], true);
    // The level cut short is kept with what it measured (a failure here once on a loaded
    // machine, not reproduced since: the whole summary and the log say what was there).
    let records = std::fs::read_to_string(&records).unwrap_or_default();
    assert!(
        s["levels"][0]["succeeded"].as_u64().is_some_and(|n| n > 0),
        "summary {s}\nrequests.jsonl {} lines\nstderr {stderr}",
        records.lines().count()
    );
}

/// Pids of the live children of `parent` running `simulate`.
fn engine_pids(parent: u32) -> Vec<i64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1));
        if ppid == Some(&parent.to_string()) && !alive_simulators(&[pid]).is_empty() {
            out.push(pid);
        }
    }
    out
}

#[path = "support/docker.rs"]
mod support;

#[test]
fn compare_container_mode_binds_the_container_cpuset() {
    if !support::docker_ready() {
        return;
    }
    let image = support::test_image();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("engine.toml");
    std::fs::write(
        &cfg,
        format!(
            "host = \"local\"\nmodel = \"sim\"\n[launch]\nmode = \"container\"\n\
             [container]\nimage = \"{image}\"\nnetwork = \"host\"\nstop_timeout_s = 5\n\
             security_opt = [\"seccomp=unconfined\"]\n\
             [engine]\nport = {port}\nargv = [\"/nodeagent\", \"simulate\", \"--port\", \"{{port}}\", \
             \"--served-model-name\", \"{{served_model_name}}\", \"--decode-base-ms\", \"5\"]\n\
             [supervise]\nready_timeout = \"30s\"\nstop_grace = \"5s\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .args(["verify", "--compare", "none,cpus=1", "--trials", "1", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--dataset", "random", "--input-len", "16", "--output-len", "8"])
        .args(["--parallel", "2", "--number", "4", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("| cpus=1 "), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let run = &json["runs"][1];
    assert_eq!(run["binding"], "cpus=1");
    let checks = run["binding_check"].as_array().unwrap();
    assert!(!checks.is_empty() && checks.iter().all(|c| c["cpus_allowed"] == "1"), "{run}");
    let (_, left) =
        support::docker(&["ps", "-aq", "--filter", "label=io.nodeagent.instance=compare"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
}

/// `--compare` with `--search`: each sub-run searches, and the bindings are ranked by the
/// capacity found under the SLO. The engine runs 2 requests at once (220 ms each); a third
/// waits a whole request, so the capacity under a 120 ms TTFT is concurrency 2 under any
/// binding.
#[test]
fn compare_with_a_search_ranks_bindings_by_capacity_under_the_slo() {
    let dir = tempfile::tempdir().unwrap();
    let argv = "[\"{self}\", \"simulate\", \"--port\", \"{port}\", \"--served-model-name\", \
                \"{served_model_name}\", \"--prefill-base-ms\", \"20\", \"--prefill-per-token-ms\", \
                \"0\", \"--decode-base-ms\", \"40\", \"--decode-per-running-ms\", \"0\", \
                \"--max-num-seqs\", \"2\"]";
    let cfg = config(dir.path(), argv);
    let out = dir.path().join("out");
    let (stdout, _, json) = compare_ok(
        &cfg,
        &out,
        "none,cpus=0",
        "1",
        concat!(
            "--dataset random --input-len 16 --output-len 6 --search concurrency ",
            "--slo ttft=120ms --slo-attainment 0.95 --number 8 --quiet"
        ),
    );
    assert_eq!(json["score_unit"], "concurrency under the SLO");
    for r in json["runs"].as_array().unwrap() {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["capacity"]["kind"], "concurrency", "{r}");
        assert_eq!(r["capacity"]["value"].as_f64(), Some(2.0), "{r}");
        assert_eq!(r["capacity"]["stop"], "bracketed", "{r}");
        let sub: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(r["dir"].as_str().unwrap()).join("summary.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(sub["search"]["best"]["parallel"].as_u64(), Some(2), "{sub:#}");
    }
    assert_eq!(json["bindings"][0]["score"]["values"], serde_json::json!([2.0]));
    assert!(
        json["verdict"].as_str().unwrap().contains("at 2.0 concurrency under the SLO"),
        "{}",
        json["verdict"]
    );
    assert!(stdout.contains("none trial 1: capacity 2 concurrency under the SLO"), "{stdout}");
}

#[test]
fn compare_sub_runs_carry_the_engines_memory_by_node_and_numa_counters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let out = dir.path().join("out");
    let (stdout, _, json) = compare_ok(
        &cfg,
        &out,
        "none,cpus=0-1/mem=0",
        "1",
        concat!(
            "--dataset random --input-len 16 --output-len 8 ",
            "--parallel 2 --number 4 --warmup 0 --quiet"
        ),
    );
    for r in json["runs"].as_array().unwrap() {
        assert!(r["error"].is_null(), "{r}");
        // The simulator's resident memory, all of it on node 0 (this host's only node).
        let on0 = r["memory_by_node"]["0"].as_u64().unwrap_or(0);
        assert!(on0 > 1 << 20, "{r}");
        assert_eq!(r["memory_by_node"].as_object().unwrap().len(), 1, "{r}");
        // Share off the binding's memory nodes: none has no memory nodes, mem=0 has node 0.
        if r["binding"] == "none" {
            assert!(r["memory_off_node_share"].is_null(), "{r}");
        } else {
            assert_eq!(r["memory_off_node_share"].as_f64(), Some(0.0), "{r}");
        }
        let total = r["numa"]["total"].as_object().unwrap();
        let keys: BTreeSet<&str> = total.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["local_node", "numa_foreign", "numa_hit", "numa_miss", "other_node"].into()
        );
        // The sweep allocates: the kernel counted hits on node 0 while it ran.
        assert!(total["numa_hit"].as_u64().unwrap() > 0, "{r}");
        // Each level of the sub-run's summary.json: the engine's memory and the counters.
        let sub = sub_summary(&out, r);
        let level = &sub["levels"][0];
        assert!(level["memory_by_node"]["0"].as_u64().unwrap_or(0) > 1 << 20, "{level}");
        assert!(level["numa"]["per_node"]["0"]["numa_hit"].is_u64(), "{level}");
    }
    let b = &json["bindings"][1];
    assert_eq!(b["memory_off_node_pct"].as_f64(), Some(0.0), "{b}");
    assert_eq!(b["none_memory_off_node_pct"].as_f64(), Some(0.0), "{b}");
    assert!(stdout.contains("none trial 1: engine memory N0 "), "{stdout}");
    assert!(
        stdout.contains("cpus=0-1/mem=0: ")
            && stdout.contains("engine memory on remote nodes 0.0 % vs 0.0 % under none"),
        "{stdout}"
    );
}

#[test]
fn compare_sub_runs_carry_the_engines_thread_placement() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SIM_ARGV);
    let out = dir.path().join("out");
    let (stdout, _, json) = compare_ok(
        &cfg,
        &out,
        "none,cpus=0/mem=0",
        "1",
        concat!(
            "--dataset random --input-len 64 --output-len 64 ",
            "--parallel 4 --number 40 --warmup 0 --quiet"
        ),
    );
    for r in json["runs"].as_array().unwrap() {
        let t = &r["threads"];
        // The simulator is a tokio program: several threads, each with a last CPU.
        assert!(t["threads"].as_u64().unwrap() >= 2, "{r}");
        assert!(t["cpu_seconds"].as_f64().unwrap() > 0.0, "{r}");
        if r["binding"] == "none" {
            assert!(t["outside_share"].is_null(), "{r}");
        } else {
            // Affinity set by the kernel: every thread last ran on CPU 0, none of its time
            // outside.
            assert_eq!(t["last_cpus"], serde_json::json!([0]), "{r}");
            assert_eq!(t["outside_share"].as_f64(), Some(0.0), "{r}");
        }
        let sub = sub_summary(&out, r);
        assert!(sub["levels"][0]["threads"]["threads"].as_u64().unwrap() >= 2, "{sub}");
    }
    let b = &json["bindings"][1];
    assert_eq!(b["cpu_outside_pct"].as_f64(), Some(0.0), "{b}");
    assert_eq!(b["placement"], "held", "{b}");
    assert!(json["bindings"][0]["placement"].is_null(), "{json}");
    assert!(
        stdout.contains("cpus=0/mem=0: ") && stdout.contains("CPU time outside the binding 0.0 %"),
        "{stdout}"
    );
    assert!(stdout.contains("none trial 1: ") && stdout.contains("threads: "), "{stdout}");
}
