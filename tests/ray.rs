//! `nodeagent serve` supervising the real Ray (PyPI `ray[default]`, from the venv that
//! `scripts/ray-venv.sh` caches in /var/cache/nodeagent-test/ray-venv, `NODEAGENT_RAY_VENV`):
//! `testdata/ray-engine/engine.py` does what vLLM's Ray executor does on one node (a driver with
//! the OpenAI endpoints, one actor per "GPU" holding memory), either starting its own cluster
//! with `ray.init()` or joining the one `ray start --head --block` started
//! (`testdata/ray-engine/cluster.sh`, the way multi-node vLLM is started). Proven on real
//! processes, with `/proc` as the witness: every Ray process (gcs_server, raylet, the dashboard
//! and its heads, the dashboard and runtime-env agents, the log monitor, the autoscaler monitor,
//! the actors) runs inside the binding and the engine's cgroup; a killed driver or a killed
//! actor is a dead engine, restarted with nothing of the old run left; SIGTERM leaves no Ray
//! process; after the agent's SIGKILL the next `serve` removes every leftover before it starts.
//!
//! A cluster start costs 10 to 70 s of both CPUs, so the cases are walked in sequence on one
//! agent's life rather than each from a fresh start: per style, the start (contained, bound,
//! answering), an actor SIGKILLed, the driver SIGKILLed, the agent SIGKILLed and the next
//! `serve`, SIGTERM: four cluster starts (`ray.init()` in bare mode, `ray start` under
//! `numactl`); and the `proc-walk` containment's start, agent SIGKILL and SIGTERM: two. Each
//! step logs `[  5.1s] TEST: step` to stderr, and a failure names its step.
//!
//! The tests run one at a time (`SERIAL`), each with Ray's temp dir (sessions, sockets, logs)
//! under its own temp dir. Without the venv they are skipped with a message, except under
//! `CI=true`, where that is a failure.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/agent.rs"]
mod agent;

use agent::{alive, cmdline, crate_path, free_port, kill_marked, marked, wait_for, BIN};

/// One Ray cluster at a time on this host.
static SERIAL: Mutex<()> = Mutex::new(());

/// Ray starts in 10 to 70 s on this 2-CPU host shared with other builds; allow more.
const READY: Duration = Duration::from_secs(240);

/// The Ray venv's python, or `None` (skip) when it is not installed.
fn ray_python(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("NODEAGENT_RAY_VENV")
        .map_or_else(|| PathBuf::from("/var/cache/nodeagent-test/ray-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    if python.is_file() && venv.join("bin/ray").is_file() {
        return Some(python);
    }
    let why = format!("no Ray venv at {} (scripts/ray-venv.sh installs it)", venv.display());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// The driver starts its own cluster: `ray.init()`.
    Init,
    /// `ray start --head --block`, then the driver joins it.
    Cluster,
}

/// A test's directory, ports and Ray temp dir, shared by the agents that run on it in turn, and
/// its step log.
struct Run {
    steps: Steps,
    dir: tempfile::TempDir,
    python: PathBuf,
    style: Style,
    mode: &'static str,
    ray_temp: PathBuf,
    actors_file: PathBuf,
    gcs_port: u16,
    dashboard_port: u16,
    env: Vec<(&'static str, &'static str)>,
}

impl Run {
    /// `env`: set in every agent's environment.
    fn new(
        test: &'static str,
        python: PathBuf,
        style: Style,
        mode: &'static str,
        env: &[(&'static str, &'static str)],
    ) -> Run {
        let dir = tempfile::tempdir().unwrap();
        Run {
            steps: Steps::new(test),
            ray_temp: dir.path().join("ray"),
            actors_file: dir.path().join("actors"),
            dir,
            python,
            style,
            mode,
            gcs_port: free_port(),
            dashboard_port: free_port(),
            env: env.to_vec(),
        }
    }

    fn argv(&self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let py = self.python.display().to_string();
        let temp = self.ray_temp.display().to_string();
        let mut argv = match self.style {
            Style::Init => vec![
                py,
                crate_path("testdata/ray-engine/engine.py"),
                s("--temp-dir"),
                temp,
                s("--dashboard-port"),
                self.dashboard_port.to_string(),
            ],
            Style::Cluster => vec![
                crate_path("testdata/ray-engine/cluster.sh"),
                py,
                temp,
                self.gcs_port.to_string(),
                self.dashboard_port.to_string(),
                s("--"),
            ],
        };
        let actors = self.actors_file.display().to_string();
        argv.extend(
            ["--port", "{port}", "--served-model-name", "{served_model_name}", "--gpus", "2"]
                .map(s),
        );
        argv.extend([s("--pids-file"), actors]);
        argv
    }

    /// Starts `nodeagent serve` on this run's state dir; `n` numbers its log. The config is
    /// written once, so every agent of the run serves the same engine on the same port.
    fn agent(&self, n: u32) -> Agent {
        let state_dir = self.dir.path().join("state");
        let config = self.dir.path().join("nodeagent.toml");
        if !config.exists() {
            let supervise = format!(
                "health_interval = \"500ms\"\nhealth_timeout = \"3s\"\n\
                 binding_check_interval = \"1s\"\nbackoff_initial = \"200ms\"\n\
                 stop_grace = \"20s\"\nready_timeout = \"{}s\"\n\
                 \n[binding]\ncpus = \"1\"\nmem_policy = \"bind\"\nmem_nodes = [0]\n\
                 \n[launch]\nmode = \"{}\"\n",
                READY.as_secs(),
                self.mode
            );
            agent::write_config(&config, &state_dir, &self.argv(), &supervise);
        }
        let log = self.dir.path().join(format!("agent{n}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .env("RAY_ADDRESS", "10.0.0.1:6379")
            .envs(self.env.iter().copied())
            .env("NODEAGENT_TEST_MARK", self.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child), state_dir, log }
    }

    /// Every live process of this run but the agents: what carries the test's mark in its
    /// environment or names the test's dir (Ray's temp dir) on its command line, and their
    /// descendants (the dashboard's heads rename themselves with `setproctitle`, which
    /// overwrites `/proc/PID/environ`: only their parent links tell).
    fn ray_procs(&self) -> BTreeSet<i32> {
        let dir = self.dir.path().display().to_string();
        let mut found: BTreeSet<i32> = marked(self.dir.path()).into_iter().collect();
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            if !alive(pid) {
                continue;
            }
            if cmdline(pid).contains(&dir) {
                found.insert(pid);
            }
            parents.push((pid, ppid(pid)));
        }
        found.retain(|p| !cmdline(*p).starts_with(BIN));
        loop {
            let children: Vec<i32> = parents
                .iter()
                .filter(|(p, pp)| found.contains(pp) && !found.contains(p))
                .map(|(p, _)| *p)
                .collect();
            if children.is_empty() {
                return found;
            }
            found.extend(children);
        }
    }

    /// `ray_procs` named: `pid comm cmdline` (first 120 characters), for messages.
    fn describe(&self, pids: &BTreeSet<i32>) -> String {
        pids.iter()
            .map(|p| {
                let c = cmdline(*p);
                format!("\n  {p} {} {}", comm(*p), &c[..c.len().min(120)])
            })
            .collect()
    }

    /// The actors' pids (`rank pid` lines the engine writes once they answer).
    fn actors(&self) -> Vec<i32> {
        wait_for("the actors' pids file", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&self.actors_file).ok()?;
            let pids: Vec<i32> =
                text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
            (pids.len() == 2).then_some(pids)
        })
    }

    /// Waits until the Ray processes of a full cluster are up, and returns them all.
    fn wait_full_cluster(&self) -> BTreeSet<i32> {
        wait_for("every Ray process up", Duration::from_secs(60), || {
            let procs = self.ray_procs();
            let comms: Vec<String> = procs.iter().map(|p| comm(*p)).collect();
            let lines: Vec<String> = procs.iter().map(|p| cmdline(*p)).collect();
            let has = |c: &str| comms.iter().any(|x| x == c);
            let runs = |s: &str| lines.iter().any(|l| l.contains(s));
            let actors = comms.iter().filter(|c| c.as_str() == "ray::RayWorkerW").count();
            let full = has("gcs_server")
                && has("raylet")
                && has("ray::DashboardA")
                && has("ray::RuntimeEnv")
                && runs("dashboard/dashboard.py")
                && comms.iter().any(|c| c.starts_with("ray-dashboard-"))
                && runs("log_monitor.py")
                && actors == 2;
            full.then_some(procs)
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED {}", self.steps.at());
            kill_marked(self.dir.path());
            for p in self.ray_procs() {
                let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
            }
        }
    }
}

struct Agent {
    child: Option<Child>,
    state_dir: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn status(&self) -> Option<Value> {
        agent::status(&self.state_dir, &[])
    }

    /// Waits for `ready` with `restarts` restarts (in all, since the agent started).
    fn wait_ready(&self, restarts: u64, steps: &Steps) -> Value {
        let start = std::time::Instant::now();
        loop {
            let st = self.status();
            if let Some(st) = st.filter(|s| s["state"] == "ready" && s["restarts"] == restarts) {
                return st;
            }
            assert!(
                start.elapsed() < READY,
                "{}: not ready after {restarts} restart(s) within {READY:?}: {:?}\n{}",
                steps.at(),
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) {
        agent::signal(self.child.as_ref().unwrap().id(), sig);
    }

    fn finish(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = wait_for("agent exit", Duration::from_secs(90), || child.try_wait().unwrap());
        (status, self.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        agent::stop_child(self.child.take(), Duration::from_secs(40));
    }
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

fn ppid(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn pids(status: &Value) -> BTreeSet<i32> {
    status["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap() as i32).collect()
}

/// Every process of `procs` runs on CPU 1 only, with memory bound to node 0, and is in the
/// engine's cgroup (where the agent made one), as `/proc` and the cgroup's files report it;
/// and the agent counts each as the engine's.
fn assert_contained(run: &Run, agent: &Agent, procs: &BTreeSet<i32>) {
    let st = agent.status().unwrap();
    let cgroup_procs: Option<BTreeSet<i32>> = st["containment"]
        .as_str()
        .and_then(|c| c.strip_prefix("cgroup-v1 ").or_else(|| c.strip_prefix("cgroup-v2 ")))
        .map(|path| {
            let text = std::fs::read_to_string(Path::new(path).join("cgroup.procs")).unwrap();
            text.lines().map(|l| l.parse().unwrap()).collect()
        });
    let named = run.describe(procs);
    let at = run.steps.at();
    for pid in procs {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let cpus = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
        assert_eq!(cpus.split_whitespace().nth(1), Some("1"), "{at}: pid {pid}: {cpus}{named}");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
        let first = maps.lines().next().unwrap_or_default();
        assert_eq!(
            first.split_whitespace().nth(1),
            Some("bind:0"),
            "{at}: pid {pid}: {first}{named}"
        );
        if let Some(cg) = &cgroup_procs {
            assert!(cg.contains(pid), "{at}: pid {pid} outside the engine's cgroup {st}{named}");
        }
    }
    // The agent's scans find every one of them (a scan runs each binding check, every 1 s; a
    // proc-walk scan of a debug build on a loaded 2-core machine took over 10 s once, in CI).
    let start = Instant::now();
    loop {
        let st = agent.status();
        let seen = st.as_ref().map(pids).unwrap_or_default();
        let missing: BTreeSet<i32> =
            procs.iter().copied().filter(|p| alive(*p) && !seen.contains(p)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{at}: after 30 s the agent does not count these Ray processes:{}\nits status: {st:?}",
            run.describe(&missing)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The step log of a walk: each step prints `[  5.1s] TEST: step` to stderr as it starts, and
/// a failure says the step it happened in (`Run`'s drop), so one walk of several cases still
/// tells which case failed.
struct Steps {
    test: &'static str,
    started: Instant,
    now: RefCell<String>,
}

impl Steps {
    fn new(test: &'static str) -> Steps {
        Steps { test, started: Instant::now(), now: RefCell::new(String::new()) }
    }

    fn step(&self, what: &str) {
        eprintln!("[{:>5.1}s] {}: {what}", self.started.elapsed().as_secs_f64(), self.test);
        *self.now.borrow_mut() = what.to_string();
    }

    /// `TEST, step S` for assertion messages.
    fn at(&self) -> String {
        format!("{}, step {:?}", self.test, self.now.borrow())
    }
}

/// The driver answers from its actors (their tokens interleave: t0 from rank 0, t1 rank 1).
fn completion_works(run: &Run, st: &Value) {
    let port = st["port"].as_u64().unwrap();
    let out = Command::new("curl")
        .args(["-sf", "-m", "30", &format!("http://127.0.0.1:{port}/v1/chat/completions")])
        .args(["-d", r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("t0 t1 t2 t3"), "{}: completion answered {body:?}", run.steps.at());
}

/// The first start: ready, the whole cluster up, every process contained and bound, the binding
/// check ok, a completion answered, and the agent's `RAY_ADDRESS` not passed to the driver.
/// Returns the agent and the cluster's processes.
fn started(run: &Run) -> (Agent, BTreeSet<i32>) {
    run.steps.step("start: ready, every Ray process up, bound, contained; a completion");
    let agent = run.agent(1);
    let st = agent.wait_ready(0, &run.steps);
    let procs = run.wait_full_cluster();
    eprintln!("{}: Ray processes of the run:{}", run.steps.test, run.describe(&procs));
    assert_contained(run, &agent, &procs);
    assert_eq!(st["binding_check"]["ok"], true, "{}: {st}", run.steps.at());
    completion_works(run, &st);
    // The agent's environment's RAY_ADDRESS did not reach the driver (it would join that cluster).
    let env = std::fs::read(format!("/proc/{}/environ", st["main_pid"])).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains("RAY_ADDRESS=10.0.0.1"), "{}", run.steps.at());
    (agent, procs)
}

/// One actor (a Ray worker holding a "GPU") SIGKILLed: the engine is dead (the driver finds
/// the dead actor, `/health` answers 500 and the driver exits, as vLLM does; the agent also
/// sees a process of the ready engine gone), and it is restarted (restart `restarts`) with new
/// actors and nothing of `old` left; the new cluster is contained and answers. Returns it.
fn actor_killed(run: &Run, agent: &Agent, old: &BTreeSet<i32>, restarts: u64) -> BTreeSet<i32> {
    run.steps.step("an actor SIGKILLed: a dead engine, restarted with nothing old left");
    let actors = run.actors();
    std::fs::remove_file(&run.actors_file).unwrap();
    agent::signal(actors[1] as u32, "-KILL");
    let st = agent.wait_ready(restarts, &run.steps);
    let why = st["last_exit"].as_str().unwrap();
    eprintln!("{}: restarted after: {why}", run.steps.test);
    let lost = format!("engine process(es) [{}] died", actors[1]);
    assert!(
        why == lost || why.contains("exited with code 1"),
        "{}: {why}\n{}",
        run.steps.at(),
        agent.log()
    );
    let left: BTreeSet<i32> = old.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "{}: old run's processes alive:{}",
        run.steps.at(),
        run.describe(&left)
    );
    let new_actors = run.actors();
    assert!(
        new_actors.iter().all(|p| !actors.contains(p)),
        "{}: {new_actors:?} {actors:?}",
        run.steps.at()
    );
    let new = run.wait_full_cluster();
    assert_contained(run, agent, &new);
    completion_works(run, &st);
    new
}

/// The driver (the agent's main process) SIGKILLed: a restart (restart `restarts`), and when
/// the new engine is ready nothing of `old` is left (Ray's dashboard and runtime-env agents
/// outlive a killed driver on their own); the new cluster is contained. Returns it.
fn driver_killed(run: &Run, agent: &Agent, old: &BTreeSet<i32>, restarts: u64) -> BTreeSet<i32> {
    run.steps.step("the driver SIGKILLed: restarted with no old Ray process left");
    let driver = agent.status().unwrap()["main_pid"].as_i64().unwrap() as i32;
    std::fs::remove_file(&run.actors_file).unwrap();
    agent::signal(driver as u32, "-KILL");
    let st = agent.wait_ready(restarts, &run.steps);
    let why = st["last_exit"].as_str().unwrap();
    eprintln!("{}: restarted after: {why}", run.steps.test);
    assert!(
        why.contains("signal 9") || why.contains("died"),
        "{}: {why}\n{}",
        run.steps.at(),
        agent.log()
    );
    let left: BTreeSet<i32> = old.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "{}: old run's processes alive after the restart:{}\n{}",
        run.steps.at(),
        run.describe(&left),
        agent.log()
    );
    let new = run.wait_full_cluster();
    assert_contained(run, agent, &new);
    new
}

/// The agent SIGKILLed: the whole Ray cluster (`old`) lives on; the next `serve` on the same
/// state dir (agent `n`) removes every leftover before it starts its own engine (the same
/// ports, so a leftover would also make the start fail). Returns that agent.
fn agent_sigkilled(run: &Run, mut first: Agent, old: &BTreeSet<i32>, n: u32) -> Agent {
    run.steps.step("the agent SIGKILLed: the next serve removes every leftover");
    first.signal("-KILL");
    let (status, _) = first.finish();
    assert!(!status.success(), "{}: {status}", run.steps.at());
    std::thread::sleep(Duration::from_secs(1));
    let survivors: BTreeSet<i32> = old.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        !survivors.is_empty(),
        "{}: nothing survived the agent's SIGKILL: nothing to prove",
        run.steps.at()
    );
    std::fs::remove_file(&run.actors_file).unwrap();
    let second = run.agent(n);
    second.wait_ready(0, &run.steps);
    let log = second.log();
    assert!(log.contains("removed leftovers of an earlier run"), "{}: {log}", run.steps.at());
    let left: BTreeSet<i32> = survivors.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "{}: leftovers alive after the next start:{}\n{log}",
        run.steps.at(),
        run.describe(&left)
    );
    let new = run.wait_full_cluster();
    assert!(new.is_disjoint(old), "{}: {}", run.steps.at(), run.describe(&new));
    assert_contained(run, &second, &new);
    second
}

/// SIGTERM: the agent exits 0 and no process of the run is left.
fn stop_leaves_nothing(run: &Run, mut agent: Agent) {
    run.steps.step("SIGTERM: exit 0, no process of the run left");
    agent.signal("-TERM");
    let (status, log) = agent.finish();
    assert!(status.success(), "{}: {log}", run.steps.at());
    let left = run.ray_procs();
    assert!(
        left.is_empty(),
        "{}: left after SIGTERM:{}\n{log}",
        run.steps.at(),
        run.describe(&left)
    );
    run.steps.step("done");
}

/// One agent's life with every fault in turn, four cluster starts: the start (contained, bound,
/// answering), an actor SIGKILLed (restart 1), the driver SIGKILLed (restart 2), the agent
/// SIGKILLed and the next `serve` removing the leftovers, SIGTERM leaving nothing.
fn walk(test: &'static str, style: Style, mode: &'static str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = ray_python(test) else { return };
    let run = Run::new(test, python, style, mode, &[]);
    let (agent, procs) = started(&run);
    let procs = actor_killed(&run, &agent, &procs, 1);
    let procs = driver_killed(&run, &agent, &procs, 2);
    let agent = agent_sigkilled(&run, agent, &procs, 2);
    stop_leaves_nothing(&run, agent);
}

#[test]
fn ray_init_walk_contained_actor_driver_agent_killed_sigterm_leaves_nothing() {
    walk("ray_init_walk", Style::Init, "bare");
}

#[test]
fn ray_start_under_numactl_walk_contained_actor_driver_agent_killed_sigterm_leaves_nothing() {
    walk("ray_start_numactl_walk", Style::Cluster, "numactl");
}

/// The `proc-walk` containment (no cgroup: the engine's processes are found by their parent
/// links, and the leftovers by the pid file and the marker): two cluster starts, the start
/// (contained, bound, answering), the agent SIGKILLed and the next `serve` removing the
/// leftovers, SIGTERM leaving nothing.
#[test]
fn ray_init_proc_walk_agent_sigkilled_next_serve_removes_leftovers() {
    let test = "ray_init_proc_walk";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = ray_python(test) else { return };
    let env = [("NODEAGENT_CONTAINMENT", "proc-walk")];
    let run = Run::new(test, python, Style::Init, "bare", &env);
    let (agent, procs) = started(&run);
    assert_eq!(agent.status().unwrap()["containment"], "proc-walk", "{}", run.steps.at());
    let agent = agent_sigkilled(&run, agent, &procs, 2);
    stop_leaves_nothing(&run, agent);
}
