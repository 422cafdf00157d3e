//! The GPU-occupancy preflight of `nodeagent serve` end to end: the real binary, the fake
//! `nvidia-smi` of `testdata/fake-tools` listing REAL processes this test starts — an orphan of
//! a "manual run" (a `sleep` whose process title is `VLLM::EngineCore`, re-parented to PID 1 by
//! a double fork in a new session), a foreign process (a plain `sleep`, child of this test) —
//! and a GPU whose memory is in use with no process listed. `--reclaim-orphans` really kills
//! the orphan, and only it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

#[path = "support/agent.rs"]
mod agent;

use agent::{alive, wait_for, BIN};

/// A process this test started, killed at the end whatever happened.
struct Proc(i32);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
    }
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// `sleep 300` titled `VLLM::EngineCore` (`exec -a`), its parent gone: re-parented to PID 1.
fn start_orphan() -> Proc {
    let out = Command::new("setsid")
        .args([
            "bash",
            "-c",
            "exec -a VLLM::EngineCore sleep 300 </dev/null >/dev/null 2>&1 & echo $!",
        ])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let orphan = Proc(pid);
    // The forked child may not have exec'd yet when its parent is gone.
    wait_for("the orphan exec'd and re-parented to pid 1", Duration::from_secs(5), || {
        (ppid(pid) == Some(1) && agent::cmdline(pid) == "VLLM::EngineCore 300").then_some(())
    });
    orphan
}

/// A plain `sleep`, child of this test: no engine, not an orphan.
fn start_foreign() -> (Child, i32) {
    let child = Command::new("sleep").arg("301").spawn().unwrap();
    let pid = child.id() as i32;
    wait_for("the foreign sleep", Duration::from_secs(5), || {
        (agent::cmdline(pid) == "sleep 301").then_some(())
    });
    (child, pid)
}

/// The fake `nvidia-smi`'s answers: GPU 0 held by the orphan, GPU 1 by the foreign process,
/// GPU 2 with 30000 MiB in use and no process listed, GPU 3 idle.
fn write_tool_answers(dir: &Path, orphan: i32, foreign: i32) {
    let query = "index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n\
        0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559 MiB, 21653 MiB, 0 %, 31, 69.45 W\n\
        1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, 81559 MiB, 4691 MiB, 0 %, 31, 69.45 W\n\
        2, NVIDIA H100 80GB HBM3, 00000000:3A:00.0, 81559 MiB, 30000 MiB, 0 %, 31, 69.45 W\n\
        3, NVIDIA H100 80GB HBM3, 00000000:5D:00.0, 81559 MiB, 0 MiB, 0 %, 31, 69.45 W\n";
    let apps = format!(
        "gpu_bus_id, pid, process_name, used_gpu_memory [MiB]\n\
         00000000:18:00.0, {orphan}, VLLM::EngineCor, 21644 MiB\n\
         00000000:2A:00.0, {foreign}, sleep, 4682 MiB\n"
    );
    std::fs::write(dir.join("nvidia-smi-query.csv"), query).unwrap();
    std::fs::write(dir.join("nvidia-smi-apps.csv"), apps).unwrap();
}

struct Serve {
    child: Option<Child>,
    dir: tempfile::TempDir,
    state_dir: PathBuf,
}

impl Serve {
    /// `nodeagent serve` with the stand-in engine on `gpus` (`launch.gpus`), the fake
    /// `nvidia-smi` answering from `tools` (and no `mx-smi`), and `flags`.
    fn start(gpus: &str, tools: &Path, flags: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config = dir.path().join("nodeagent.toml");
        let argv = agent::engine_argv("testdata/serve/fake_engine.py", &[]);
        let extra = format!(
            "health_interval = \"200ms\"\nbackoff_initial = \"100ms\"\nstop_grace = \"3s\"\n\
             \n[launch]\ngpus = {gpus}\n"
        );
        agent::write_config(&config, &state_dir, &argv, &extra);
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--mx-smi", "/nonexistent/mx-smi", "--nvidia-smi"])
            .arg(agent::crate_path("testdata/fake-tools/nvidia-smi"))
            .args(flags)
            .env("FAKE_NVSMI_DIR", tools)
            .env("NODEAGENT_TEST_MARK", dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Serve { child: Some(child), dir, state_dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap()
    }

    fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = wait_for("agent exit", timeout, || child.try_wait().unwrap());
        (status, self.log())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        agent::stop_child(self.child.take(), Duration::from_secs(20));
        agent::kill_marked(self.dir.path());
    }
}

/// The line of the log that holds `what` (the error line, a warning).
fn line_with<'a>(log: &'a str, what: &str) -> &'a str {
    log.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no `{what}` in:\n{log}"))
}

#[test]
fn an_orphan_is_refused_then_reclaimed_and_only_it_is_killed() {
    let tools = tempfile::tempdir().unwrap();
    let orphan = start_orphan();
    let (mut foreign, foreign_pid) = start_foreign();
    write_tool_answers(tools.path(), orphan.0, foreign_pid);

    // GPUs 0 and 2: the orphan and the process-less memory. Refused, exit 2, nothing killed.
    let mut refused = Serve::start("[0, 2]", tools.path(), &[]);
    let (status, log) = refused.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{log}");
    let error = line_with(&log, "error:");
    assert!(
        error.contains(&format!(
            "gpu 0: pid {} (VLLM::EngineCore) using 21644 MiB; stop it or pass --reclaim-orphans",
            orphan.0
        )),
        "{error}"
    );
    assert!(!error.contains(&foreign_pid.to_string()), "gpu 1 is not this instance's: {error}");
    let warning = line_with(&log, "gpu 2: 30000 MiB in use");
    assert!(warning.contains("30000 MiB of it by no visible process"), "{warning}");
    assert!(alive(orphan.0) && alive(foreign_pid));
    assert!(!refused.state_dir.join("engine.pids").exists(), "nothing was started");

    // With --reclaim-orphans: the orphan is killed, the engine starts, the foreign process lives.
    let mut reclaimed = Serve::start("[0, 2]", tools.path(), &["--reclaim-orphans"]);
    wait_for("the orphan killed", Duration::from_secs(30), || (!alive(orphan.0)).then_some(()));
    wait_for("the engine ready", Duration::from_secs(30), || {
        agent::status(&reclaimed.state_dir, &[]).filter(|s| s["state"] == "ready")
    });
    assert!(alive(foreign_pid), "a foreign process is never killed");
    let log = reclaimed.log();
    assert!(line_with(&log, "reclaimed GPUs").contains(&orphan.0.to_string()), "{log}");
    agent::signal(reclaimed.child.as_ref().unwrap().id(), "-INT");
    let (status, log) = reclaimed.finish(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    let _ = foreign.kill();
    let _ = foreign.wait();
}

#[test]
fn a_foreign_process_is_refused_and_left_alive_even_with_reclaim() {
    let tools = tempfile::tempdir().unwrap();
    let orphan = start_orphan();
    let (mut foreign, foreign_pid) = start_foreign();
    write_tool_answers(tools.path(), orphan.0, foreign_pid);

    // GPUs 0 and 1: refused for the foreign process; the refusal comes before any reclaim, so
    // the orphan lives too.
    let mut serve = Serve::start("[0, 1]", tools.path(), &["--reclaim-orphans"]);
    let (status, log) = serve.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{log}");
    let error = line_with(&log, "error:");
    assert!(
        error.contains(&format!(
            "no engine of this agent: gpu 1: pid {foreign_pid} (sleep) using 4682 MiB"
        )),
        "{error}"
    );
    assert!(alive(foreign_pid) && alive(orphan.0));
    // GPU 3 is idle: the engine starts (and nothing is killed).
    let mut idle = Serve::start("[3]", tools.path(), &["--reclaim-orphans"]);
    wait_for("the engine ready", Duration::from_secs(30), || {
        agent::status(&idle.state_dir, &[]).filter(|s| s["state"] == "ready")
    });
    assert!(alive(foreign_pid) && alive(orphan.0));
    agent::signal(idle.child.as_ref().unwrap().id(), "-INT");
    let (status, log) = idle.finish(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    let _ = foreign.kill();
    let _ = foreign.wait();
}
