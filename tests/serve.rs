//! `nodeagent serve` and `nodeagent status` end to end: the real binary, real processes (a
//! stand-in engine with worker grandchildren in their own sessions, `testdata/serve/fake_engine.py`),
//! real signals, real `numactl`, a real `NOTIFY_SOCKET` datagram socket, and the binding checked
//! in `/proc`. This machine has 1 NUMA node and 2 CPUs: the engine is bound to CPU 1, node 0.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/agent.rs"]
mod agent;

use agent::{alive, wait_for, BIN};

struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    state_dir: PathBuf,
    notices: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Writes a config (engine = the stand-in with `engine_args`, plus `extra` TOML) and starts
    /// `nodeagent serve` with a real `NOTIFY_SOCKET`.
    fn start(engine_args: &[&str], extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, engine_args, extra)
    }

    fn start_in(dir: tempfile::TempDir, engine_args: &[&str], extra: &str) -> Agent {
        let argv = agent::engine_argv("testdata/serve/fake_engine.py", engine_args);
        Self::start_argv(dir, argv, extra)
    }

    fn start_argv(dir: tempfile::TempDir, argv: Vec<String>, extra: &str) -> Agent {
        let state_dir = dir.path().join("state");
        let config = dir.path().join("nodeagent.toml");
        if !std::fs::exists(&config).unwrap() {
            let supervise = "health_interval = \"200ms\"\nhealth_timeout = \"500ms\"\n\
                             binding_check_interval = \"200ms\"\nbackoff_initial = \"100ms\"\n\
                             stop_grace = \"3s\"\n";
            agent::write_config(&config, &state_dir, &argv, &format!("{supervise}{extra}"));
        }
        let sock_path = dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let notices = Arc::new(Mutex::new(Vec::new()));
        let n2 = notices.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                n2.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
            }
        });
        // stderr to a file, not a pipe: engine processes inherit it and may outlive the agent
        // (the SIGKILL test), which would keep a pipe open forever.
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RAY_ADDRESS", "10.0.0.1:6379")
            .env("NODEAGENT_TEST_MARK", dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent { child: Some(child), dir, state_dir, notices }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn status(&self) -> Option<Value> {
        agent::status(&self.state_dir, &[])
    }

    fn wait_state(&self, state: &str, timeout: Duration) -> Value {
        wait_for(&format!("state {state}"), timeout, || {
            self.status().filter(|s| s["state"] == state)
        })
    }

    /// Live processes that inherited this agent's environment marker: what it left behind.
    fn leftovers(&self) -> Vec<i32> {
        agent::marked(self.dir.path())
    }

    /// SIGINT, exit 0 within 20 s, and no engine process left.
    fn stop_clean(&mut self) {
        self.signal("-INT");
        let (status, log) = self.finish(Duration::from_secs(20));
        assert!(status.success(), "{log}");
        assert_eq!(self.leftovers(), Vec::<i32>::new());
    }

    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        agent::signal(self.pid() as u32, sig);
    }

    /// Waits for the agent to exit; returns its exit status and stderr.
    fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = wait_for("agent exit", timeout, || child.try_wait().unwrap());
        (status, std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A failed test still stops its engine: SIGTERM first, SIGKILL if that hangs.
        agent::stop_child(self.child.take(), Duration::from_secs(20));
    }
}

fn pids(status: &Value) -> Vec<i64> {
    status["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect()
}

const BIND_CPU1: &str = "\n[binding]\ncpus = \"1\"\nmem_policy = \"bind\"\nmem_nodes = [0]\n";

/// Every engine process (workers in other sessions and their children included) runs on CPU 1
/// only with memory bound to node 0, as `/proc` reports it.
fn assert_bound(pids: &[i64]) {
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let cpus = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
        assert_eq!(cpus.split_whitespace().nth(1), Some("1"), "pid {pid}: {cpus}");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
        let first = maps.lines().next().unwrap();
        assert_eq!(first.split_whitespace().nth(1), Some("bind:0"), "pid {pid}: {first}");
    }
}

fn run_and_stop(mode: &str) {
    let mut agent =
        Agent::start(&["--workers", "2"], &format!("{BIND_CPU1}\n[launch]\nmode = \"{mode}\"\n"));
    let st = agent.wait_state("ready", Duration::from_secs(30));
    // READY=1 only once healthy, with STATUS= lines before it.
    let notices = agent.notices();
    assert!(notices.iter().any(|n| n == "READY=1"), "{notices:?}");
    assert!(notices.iter().any(|n| n.starts_with("STATUS=ready: engine healthy")), "{notices:?}");
    // The engine, 2 workers in their own sessions, each with a child: 5 processes.
    let all = wait_for("5 engine processes", Duration::from_secs(10), || {
        let s = agent.status()?;
        (pids(&s).len() == 5).then_some(pids(&s))
    });
    assert_bound(&all);
    assert_eq!(st["binding_check"]["ok"], true);
    assert_eq!(st["served_model_name"], "qwen2.5");
    // RAY_ADDRESS from the agent's environment does not reach the engine.
    let env = std::fs::read(format!("/proc/{}/environ", all[0])).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains("RAY_ADDRESS"));
    assert!(!String::from_utf8_lossy(&env).contains("NOTIFY_SOCKET"));
    // SIGTERM: everything stops, exit 0, STOPPING=1 sent.
    agent.signal("-TERM");
    let (status, log) = agent.finish(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    for pid in &all {
        assert!(!alive(*pid), "engine process {pid} survived the agent's stop");
    }
    assert!(agent.notices().iter().any(|n| n == "STOPPING=1"));
    assert_eq!(agent.leftovers(), Vec::<i32>::new());
    assert!(!agent.state_dir.join("status.sock").exists());
}

#[test]
fn native_binding_holds_for_every_process_and_sigterm_leaves_nothing() {
    run_and_stop("bare");
}

#[test]
fn numactl_binding_holds_for_every_process_and_sigterm_leaves_nothing() {
    run_and_stop("numactl");
}

#[test]
fn crash_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed").display().to_string();
    let agent = Agent::start_in(dir, &["--crash-after", "0.5", "--crash-once-file", &marker], "");
    let first = agent.wait_state("ready", Duration::from_secs(30));
    let st = wait_for("a restart", Duration::from_secs(30), || {
        agent.status().filter(|s| s["restarts"] == 1 && s["state"] == "ready")
    });
    assert!(st["last_exit"].as_str().unwrap().contains("exited with code 3"), "{st}");
    assert_ne!(first["main_pid"], st["main_pid"]);
    for pid in pids(&first) {
        assert!(!alive(pid), "process {pid} of the crashed engine survived the restart");
    }
}

#[test]
fn hang_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("hung").display().to_string();
    let agent = Agent::start_in(
        dir,
        &["--hang-after", "0.5", "--hang-once-file", &marker],
        "health_failures = 2\n",
    );
    let first = agent.wait_state("ready", Duration::from_secs(30));
    let st = wait_for("a restart after the hang", Duration::from_secs(30), || {
        agent.status().filter(|s| s["restarts"] == 1 && s["state"] == "ready")
    });
    assert!(st["last_exit"].as_str().unwrap().contains("engine hung"), "{st}");
    for pid in pids(&first) {
        assert!(!alive(pid), "process {pid} of the hung engine survived the restart");
    }
}

#[test]
fn crash_loop_ends_failed_with_exit_1() {
    let mut agent =
        Agent::start(&["--crash-after", "0.1"], "restart_budget = 2\nbackoff_max = \"200ms\"\n");
    let (status, err) = agent.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("error: engine failed: crash loop: 3 failures"), "{err}");
    // The reader thread may still be draining the datagrams the agent sent before it exited.
    wait_for("STATUS=failed", Duration::from_secs(5), || {
        agent.notices().iter().any(|n| n.starts_with("STATUS=failed: crash loop")).then_some(())
    });
    let restarts = agent
        .notices()
        .iter()
        .filter(|n| n.starts_with("STATUS=restarting: restarting in"))
        .count();
    assert_eq!(restarts, 2, "{:?}", agent.notices());
    assert_eq!(agent.leftovers(), Vec::<i32>::new());
}

#[test]
fn sigkill_then_restart_removes_leftovers() {
    let mut agent = Agent::start(&["--workers", "2"], "");
    agent.wait_state("ready", Duration::from_secs(30));
    let st = wait_for("5 engine processes", Duration::from_secs(10), || {
        agent.status().filter(|s| pids(s).len() == 5)
    });
    let old = pids(&st);
    agent.signal("-KILL");
    let (status, _) = agent.finish(Duration::from_secs(10));
    assert!(!status.success());
    // The engine outlives a SIGKILLed agent (it has its own process group and sessions).
    assert!(old.iter().all(|p| alive(*p)), "leftovers expected after SIGKILL");
    // A new agent on the same state dir finds them through the pid file and removes them.
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    let mut second = Agent::start_in(dir, &[], "");
    let st = second.wait_state("ready", Duration::from_secs(30));
    for pid in &old {
        assert!(!alive(*pid), "leftover {pid} not removed");
    }
    assert!(pids(&st).iter().all(|p| !old.contains(p)));
    second.signal("-TERM");
    let (status, log) = second.finish(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    assert!(log.contains("removed leftovers of an earlier run"), "{log}");
    assert_eq!(second.leftovers(), Vec::<i32>::new());
}

#[test]
fn binding_escape_fails_loudly_and_leaves_nothing() {
    let mut agent = Agent::start(&["--escape-worker"], BIND_CPU1);
    let (status, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("binding escaped") && err.contains("runs on cpus 0-1"), "{err}");
    assert_eq!(agent.leftovers(), Vec::<i32>::new());
}

#[test]
fn busy_port_is_a_preflight_error_naming_the_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(f, "model = \"sim\"\nstate_dir = {:?}\n[engine]\nport = {port}", dir.path().join("s"))
        .unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let me = std::process::id();
    assert!(err.contains(&format!("port {port} is already in use by pid {me}")), "{err}");
}

#[test]
fn bad_config_gives_file_line_column_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "model = \"sim\"\n\n[supervise]\nstop_grace = 10\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("error: {}:4:14: ", config.display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let missing = dir.path().join("nope.toml");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn status_without_agent_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["status", "--state-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no nodeagent serve answers"));
}

#[test]
fn print_config_shows_the_seed_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "host = \"nvidia\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"numactl\"\n[binding]\nauto = false\ncpu_nodes = [0]\nmem_nodes = [0]\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"argv: ["numactl","--cpunodebind=0","--membind=0","--","vllm","serve","/data/Qwen2.5-72B-Instruct","--served-model-name","qwen2.5","--tensor-parallel-size","4""#), "{text}");
}

/// Issue 13: the seed host split with TP 2; instance 1 gets `--tensor-parallel-size 2` and
/// GPUs 2,3 through both MetaX visibility variables.
#[test]
fn print_config_places_instance_one_of_a_tp2_split() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"bare\"\ntp = 2\ninstance = 1\n[binding]\nauto = true\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--from", "testdata/hosts/seed-4xmxc500", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""--tensor-parallel-size","2""#), "{text}");
    assert!(text.contains("#   instance 1: gpus [2, 3]\n"), "{text}");
    assert!(text.contains("CUDA_VISIBLE_DEVICES=2,3 MACA_VISIBLE_DEVICES=2,3"), "{text}");
    // A contradicting explicit value is bad input (exit 2), one line.
    std::fs::write(&config, "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"bare\"\ntp = 2\ninstance = 1\n[binding]\nauto = true\n[engine.env]\nMACA_VISIBLE_DEVICES = \"0,1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--from", "testdata/hosts/seed-4xmxc500", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MACA_VISIBLE_DEVICES = `0,1` but the plan gives this instance GPUs 2,3"),
        "{err}"
    );
}

/// Issue 13: `launch.reserve_cpus` reaches the plan as `plan --reserve-cpus` does: the seed's
/// node 0 (0-15) keeps CPUs 0-1 back, instance 1 of the TP-2 split gets the second half of 2-15.
#[test]
fn print_config_takes_the_reserve_from_launch_reserve_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"numactl\"\ntp = 2\ninstance = 1\nreserve_cpus = 2\n[binding]\nauto = true\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--from", "testdata/hosts/seed-4xmxc500", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"argv: ["numactl","--physcpubind=9-15","--membind=0","--""#), "{text}");
}

/// The engine argv of the project's own simulator on the config's port, plus `extra`.
fn simulator_argv(extra: &[&str]) -> Vec<String> {
    let base = ["{self}", "simulate", "--host", "127.0.0.1", "--port", "{port}"];
    let name = ["--served-model-name", "{served_model_name}"];
    base.iter().chain(&name).chain(extra).map(|s| s.to_string()).collect()
}

/// The project's own simulator as the engine (the `sim` profile's `{self} simulate`), with
/// workers that outlive their parent like Ray workers: they re-parent to the agent (a child
/// subreaper), stay bound, and are stopped with it; a hang is detected and restarted.
#[test]
fn real_simulator_with_orphan_workers_hang_restart_and_clean_stop() {
    let argv = simulator_argv(&["--workers", "2", "--orphan-workers", "--hang-after-ms", "1500"]);
    let mut agent = Agent::start_argv(
        tempfile::tempdir().unwrap(),
        argv,
        &format!("health_failures = 2\n{BIND_CPU1}"),
    );
    let first = agent.wait_state("ready", Duration::from_secs(30));
    let all = wait_for("3 engine processes", Duration::from_secs(10), || {
        agent.status().and_then(|s| (pids(&s).len() == 3).then(|| pids(&s)))
    });
    assert_bound(&all);
    let st = wait_for("a restart after the hang", Duration::from_secs(30), || {
        agent.status().filter(|s| s["restarts"].as_u64() >= Some(1) && s["state"] == "ready")
    });
    assert!(st["last_exit"].as_str().unwrap().contains("engine hung"), "{st}");
    for pid in pids(&first).iter().chain(&all) {
        assert!(!alive(*pid), "process {pid} of the hung engine survived the restart");
    }
    agent.stop_clean();
}

/// An engine stuck behind a live API server: `/health` keeps answering, a request stays
/// running, and no token is produced any more. Only the progress watchdog (vLLM's `/metrics`)
/// sees it; the supervisor restarts the engine and says why.
#[test]
fn stuck_engine_with_live_health_is_restarted_by_the_progress_watchdog() {
    let argv = simulator_argv(&["--decode-base-ms", "20", "--freeze-after-ms", "1500"]);
    let mut agent =
        Agent::start_argv(tempfile::tempdir().unwrap(), argv, "stall_timeout = \"1s\"\n");
    agent.wait_state("ready", Duration::from_secs(30));
    let port = engine_port(&agent);
    // One long streamed request, left running: it gets tokens until the engine freezes.
    let client = std::thread::spawn(move || {
        use std::io::Read;
        let mut tcp = send_chat(port, 20000);
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink); // ends when the stuck engine is killed
        sink.len()
    });
    let st = wait_for("a restart of the stuck engine", Duration::from_secs(30), || {
        agent.status().filter(|s| s["restarts"].as_u64() >= Some(1) && s["state"] == "ready")
    });
    let why = st["last_exit"].as_str().unwrap();
    assert!(why.contains("engine stalled: 1 running, 0 waiting, no token counted for "), "{st}");
    assert!(client.join().unwrap() > 0, "the request got tokens before the freeze");
    agent.stop_clean();
}

/// The engine's port, from the test's config.
fn engine_port(agent: &Agent) -> u16 {
    let config = std::fs::read_to_string(agent.dir.path().join("nodeagent.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("port = "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap()
}

/// Sends one chat completion and leaves the connection open (the caller reads or drops it).
fn send_chat(port: u16, max_tokens: u32) -> std::net::TcpStream {
    let body = format!(
        r#"{{"model":"qwen2.5","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens},"ignore_eos":true,"stream":true}}"#
    );
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tcp
}

/// vLLM #39863: the EngineCore is dead, the API server answers `/health` and queues requests,
/// the log says `Running: 0 reqs, Waiting: 3`. Nothing runs, so only the waiting gauge shows
/// the engine owes tokens; the progress watchdog restarts it and names the signature.
#[test]
fn requests_waiting_with_none_running_restart_the_engine_with_the_signature() {
    let argv = simulator_argv(&["--decode-base-ms", "20", "--stop-admitting-after-ms", "500"]);
    let mut agent =
        Agent::start_argv(tempfile::tempdir().unwrap(), argv, "stall_timeout = \"1s\"\n");
    agent.wait_state("ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000)); // past the cue
    let port = engine_port(&agent);
    let queued: Vec<_> = (0..3).map(|_| send_chat(port, 5)).collect();
    let started = Instant::now();
    let st =
        wait_for("a restart of the engine that admits nothing", Duration::from_secs(30), || {
            agent.status().filter(|s| s["restarts"].as_u64() >= Some(1))
        });
    let why = st["last_exit"].as_str().unwrap();
    assert!(
        why.starts_with("engine stalled: 0 running, 3 waiting, no token counted for 1s"),
        "{st}"
    );
    // stall_timeout (1 s) plus a health interval or two, with a margin for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(queued);
    agent.wait_state("ready", Duration::from_secs(30));
    agent.stop_clean();
}

/// A slow engine that still counts tokens (one every 400 ms, with 4 requests waiting behind the
/// one that runs) is never restarted, however long it runs, with a stall_timeout of 1 s.
#[test]
fn a_slow_but_progressing_engine_is_not_restarted() {
    let argv = simulator_argv(&["--decode-base-ms", "400", "--max-num-seqs", "1"]);
    let mut agent =
        Agent::start_argv(tempfile::tempdir().unwrap(), argv, "stall_timeout = \"1s\"\n");
    agent.wait_state("ready", Duration::from_secs(30));
    let port = engine_port(&agent);
    let conns: Vec<_> = (0..5).map(|_| send_chat(port, 1000)).collect();
    std::thread::sleep(Duration::from_secs(6));
    let st = agent.status().unwrap();
    assert_eq!(st["restarts"].as_u64(), Some(0), "{st}");
    assert_eq!(st["state"], "ready", "{st}");
    // The signals the watchdog judged, in the status record.
    let live = &st["liveness"];
    assert_eq!(
        (live["running"].as_f64(), live["waiting"].as_f64()),
        (Some(1.0), Some(4.0)),
        "{st}"
    );
    assert!(live["last_token_s_ago"].as_u64() <= Some(1), "{st}");
    let text = Command::new(BIN)
        .args(["status", "--state-dir"])
        .arg(agent.dir.path().join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(", 1 running, 4 waiting; no canary"), "{text}");
    drop(conns);
    agent.stop_clean();
}

/// vLLM #1492: `/health` and `/v1/models` answer 200 while every completion answers 500. Idle,
/// the counters are flat and nothing waits, so the progress watchdog has nothing to judge; the
/// canary (one `max_tokens: 1` completion per `canary_interval`) fails `health_failures` times
/// in a row and the engine is restarted with that reason.
#[test]
fn completions_failing_behind_a_live_health_are_restarted_by_the_canary() {
    let argv = simulator_argv(&["--fail-completions-after-ms", "2500"]);
    let extra = "canary_interval = \"300ms\"\ncanary_timeout = \"1s\"\nhealth_failures = 3\n";
    let mut agent = Agent::start_argv(tempfile::tempdir().unwrap(), argv, extra);
    agent.wait_state("ready", Duration::from_secs(30));
    // Before the cue the canaries pass: an idle, working engine is left alone.
    let st = agent.status().unwrap();
    assert_eq!(st["restarts"].as_u64(), Some(0), "{st}");
    let st =
        wait_for("a restart of the engine whose completions fail", Duration::from_secs(30), || {
            agent.status().filter(|s| s["restarts"].as_u64() >= Some(1))
        });
    let why = st["last_exit"].as_str().unwrap();
    assert!(
        why.starts_with(
            "engine fails completions: 3 canary completion(s) in a row failed, last: HTTP 500"
        ),
        "{st}"
    );
    agent.stop_clean();
}

/// The canary on a working idle engine: it answers, nothing is restarted, and the engine
/// counted the canaries' tokens.
#[test]
fn the_canary_leaves_a_working_idle_engine_alone() {
    let argv = simulator_argv(&[]);
    let extra = "canary_interval = \"200ms\"\ncanary_timeout = \"1s\"\nhealth_failures = 1\n";
    let mut agent = Agent::start_argv(tempfile::tempdir().unwrap(), argv, extra);
    agent.wait_state("ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let st = agent.status().unwrap();
    assert_eq!(st["restarts"].as_u64(), Some(0), "{st}");
    assert_eq!(st["liveness"]["canary"], "ok", "{st}");
    assert_eq!(st["liveness"]["canary_failures"], 0, "{st}");
    let port = engine_port(&agent);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(tcp, "GET /metrics HTTP/1.0\r\nhost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut text).unwrap();
    let generated =
        nodeagent::supervise::progress::vllm_sum(&text, &["vllm:generation_tokens_total"]);
    assert!(generated >= Some(2.0), "canaries were sent: {generated:?}");
    agent.stop_clean();
}

/// `nodeagent status --help` is pinned: update `testdata/serve/status-help.txt` on purpose.
#[test]
fn status_help_is_pinned() {
    let out = Command::new(BIN).args(["status", "--help"]).output().unwrap();
    let want = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/serve/status-help.txt"),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
