//! Shared by the tests that run `nodeagent serve` as a real process (`tests/cgroup.rs`,
//! `tests/hardening.rs`, `tests/serve.rs`, `tests/container.rs`): the binary, a free port, a
//! poll-until helper, `/proc` probes (live, command line, the processes carrying a test's
//! `NODEAGENT_TEST_MARK`), `nodeagent status --json`, signals and the stop of a left agent.
//! Not the agents themselves: each test file keeps its own `Agent` (configs and options differ).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_nodeagent");

/// `REL` (a path relative to the crate root) as an absolute path.
pub fn crate_path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

/// The stand-in engine's argv: `python3 SCRIPT --port {port} --served-model-name
/// {served_model_name} EXTRA...`, with `SCRIPT` relative to the crate root.
pub fn engine_argv(script: &str, extra: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "python3".to_string(),
        crate_path(script),
        "--port".into(),
        "{port}".into(),
        "--served-model-name".into(),
        "{served_model_name}".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

/// Writes a `nodeagent serve` config to `config`: host `local`, model `sim`, `state_dir`, the
/// engine `argv` on a free port, then `[supervise]` followed by `supervise` (TOML lines, and
/// whatever sections the caller appends after them).
pub fn write_config(config: &Path, state_dir: &Path, argv: &[String], supervise: &str) {
    let text = format!(
        "host = \"local\"\nmodel = \"sim\"\nstate_dir = {state:?}\n\n[engine]\nport = {port}\n\
         argv = {argv:?}\n\n[supervise]\n{supervise}",
        state = state_dir.display().to_string(),
        port = free_port(),
    );
    std::fs::write(config, text).unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 20 ms until it gives a value; fails the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: impl Into<i64>) -> bool {
    let pid = pid.into();
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// The command line of `pid`, arguments joined by spaces (empty when gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

/// Live processes whose environment holds `NODEAGENT_TEST_MARK=DIR`: an engine's, or what an
/// agent left behind.
pub fn marked(dir: &Path) -> Vec<i32> {
    let mark = format!("NODEAGENT_TEST_MARK={}", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        if env.split(|b| *b == 0).any(|v| v == mark.as_bytes()) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// SIGKILLs every process `marked(dir)` finds, so one failing test does not leak processes.
pub fn kill_marked(dir: &Path) {
    for pid in marked(dir) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// `nodeagent status --json --state-dir STATE_DIR ARGS...`: the status, `None` when it fails.
pub fn status(state_dir: &Path, args: &[&str]) -> Option<Value> {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Sends `sig` (as `kill` spells it: `-TERM`, `-KILL` ...) to `pid`; fails the test if `kill` does.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

/// Stops what a test left running (for `Drop`): SIGTERM, then SIGKILL after `grace`.
pub fn stop_child(child: Option<Child>, grace: Duration) {
    if let Some(mut c) = child {
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let start = Instant::now();
        while c.try_wait().unwrap().is_none() && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}
