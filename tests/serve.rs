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
    // READY=1 only once healthy, with STATUS= lines before it. The status record may say
    // `ready` a moment before the datagram is read here: wait for it rather than race it.
    let notices = wait_for("READY=1", Duration::from_secs(10), || {
        let n = agent.notices();
        n.iter().any(|n| n == "READY=1").then_some(n)
    });
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

/// `serve --print-config --from testdata/hosts/seed-4xmxc500 --config CONFIG`.
fn print_config_on_the_seed(config: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["serve", "--print-config", "--from", "testdata/hosts/seed-4xmxc500", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// Issue 13: the seed host split with TP 2; instance 1 gets `--tensor-parallel-size 2` and
/// GPUs 2,3 through both MetaX visibility variables.
#[test]
fn print_config_places_instance_one_of_a_tp2_split() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"bare\"\ntp = 2\ninstance = 1\n[binding]\nauto = true\n").unwrap();
    let out = print_config_on_the_seed(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""--tensor-parallel-size","2""#), "{text}");
    assert!(text.contains("#   instance 1: gpus [2, 3]\n"), "{text}");
    assert!(text.contains("CUDA_VISIBLE_DEVICES=2,3 MACA_VISIBLE_DEVICES=2,3"), "{text}");
    // A contradicting explicit value is bad input (exit 2), one line.
    std::fs::write(&config, "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"bare\"\ntp = 2\ninstance = 1\n[binding]\nauto = true\n[engine.env]\nMACA_VISIBLE_DEVICES = \"0,1\"\n").unwrap();
    let out = print_config_on_the_seed(&config);
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
    let out = print_config_on_the_seed(&config);
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

// ------------------------------------------------------------------------------------------
// Several instances on one host (issue 13, item 4 and 6)

/// `serve --print-config --json` for `config` (TOML text) and `args`: the parsed document, or
/// the exit code and stderr.
fn print_json(config: &str, args: &[&str]) -> Result<Value, (Option<i32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--json", "--config"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err((out.status.code(), String::from_utf8_lossy(&out.stderr).to_string()));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

const SPLIT: &str = "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[launch]\n\
                     mode = \"numactl\"\ntp = TP\n[binding]\nauto = true\n";

/// The engine argv of the 72B profile at `tp` on `port`.
fn vllm(tp: &str, port: &str) -> Vec<&'static str> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    vec![
        "vllm",
        "serve",
        "/data/Qwen2.5-72B-Instruct",
        "--served-model-name",
        "qwen2.5",
        "--tensor-parallel-size",
        leak(tp),
        "--distributed-executor-backend",
        "ray",
        "--host",
        "0.0.0.0",
        "--port",
        leak(port),
    ]
}

/// The `launch` contract of `--print-config --json`, literally, on the seed host split with
/// TP 2 and on the 8-GPU snapshot split with TP 4, for instances 0 and 1: GPUs and both MetaX
/// visibility variables, disjoint CPUs of the shared node, ports 8000/8001, state dirs
/// `/run/nodeagent` and `/run/nodeagent/1`.
#[test]
fn print_config_json_is_the_launch_contract_for_instances_0_and_1() {
    let cases = [
        ("seed-4xmxc500", "2", 0, "0-7", "0,1", "8000", "/run/nodeagent"),
        ("seed-4xmxc500", "2", 1, "8-15", "2,3", "8001", "/run/nodeagent/1"),
        ("ms-swift-8xc500", "4", 0, "0-15,64-79", "0,1,2,3", "8000", "/run/nodeagent"),
        ("ms-swift-8xc500", "4", 1, "16-31,80-95", "4,5,6,7", "8001", "/run/nodeagent/1"),
    ];
    for (host, tp, instance, cpus, gpus, port, state_dir) in cases {
        let from = format!("testdata/hosts/{host}");
        let n = instance.to_string();
        let doc = print_json(&SPLIT.replace("TP", tp), &["--from", &from, "--instance", &n])
            .unwrap_or_else(|e| panic!("{host} instance {n}: {e:?}"));
        let mut argv =
            vec!["numactl", Box::leak(format!("--physcpubind={cpus}").into()), "--membind=0", "--"];
        argv.extend(vllm(tp, port));
        let gpu_list: Vec<u32> = gpus.split(',').map(|g| g.parse().unwrap()).collect();
        let want = serde_json::json!({
            "mode": "numactl",
            "instance": instance,
            "argv": argv,
            "env": {"CUDA_VISIBLE_DEVICES": gpus, "MACA_VISIBLE_DEVICES": gpus},
            "unset_env": ["RAY_ADDRESS", "VLLM_PORT"],
            "gpus": gpu_list,
            "cpus": cpus,
            "mems": [0],
            "mem_policy": "bind",
            "devices": [],
            "port": port.parse::<u16>().unwrap(),
            "state_dir": state_dir,
        });
        assert_eq!(doc["launch"], want, "{host} instance {instance}");
        // The config is the effective one: the instance and its port.
        assert_eq!(doc["config"]["launch"]["instance"], instance, "{host}");
        assert_eq!(doc["config"]["engine"]["port"], port.parse::<u16>().unwrap(), "{host}");
        assert_eq!(doc["config"]["engine"]["argv"][6], "{tp}", "{host}");
    }
}

/// Container mode: the devices are the container's device nodes as `launch/container.rs`
/// passes them, with the instance's cpuset and visibility variables.
#[test]
fn print_config_json_names_the_container_devices() {
    let config = SPLIT.replace("TP", "4").replace("numactl", "container");
    let doc = print_json(&config, &["--from", "testdata/hosts/ms-swift-8xc500", "--instance", "1"])
        .unwrap();
    let l = &doc["launch"];
    assert_eq!(l["mode"], "container");
    assert_eq!(l["devices"], serde_json::json!(["/dev/dri", "/dev/mxcd"]));
    assert_eq!(l["argv"], serde_json::json!(vllm("4", "8001")));
    assert_eq!(l["cpus"], "16-31,80-95");
    assert_eq!(l["env"]["MACA_VISIBLE_DEVICES"], "4,5,6,7");
    // Outside a terminal-friendly mode, --json needs --print-config.
    let out = Command::new(BIN).args(["serve", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The port and state-dir rules: `engine.port + N`, `launch.ports[N]` first, `--port` first of
/// all; a config that names its own instance keeps its port; past 65535 is one-line bad input.
#[test]
fn instance_ports_and_state_dirs_follow_the_rules() {
    let base =
        "host = \"local\"\nmodel = \"sim\"\nstate_dir = \"/srv/na\"\n[engine]\nport = 9000\n\
                argv = [\"x\", \"{port}\", \"{instance}\"]\n[binding]\nauto = false\n";
    let launch = |doc: &Value| {
        let l = &doc["launch"];
        (
            l["port"].as_u64().unwrap(),
            l["state_dir"].as_str().unwrap().to_string(),
            l["argv"].clone(),
        )
    };
    let doc = print_json(base, &[]).unwrap();
    assert_eq!(launch(&doc), (9000, "/srv/na".into(), serde_json::json!(["x", "9000", "0"])));
    let doc = print_json(base, &["--instance", "3"]).unwrap();
    assert_eq!(launch(&doc), (9003, "/srv/na/3".into(), serde_json::json!(["x", "9003", "3"])));
    let doc = print_json(base, &["--instance", "3", "--state-dir", "/tmp/s"]).unwrap();
    assert_eq!(launch(&doc).1, "/tmp/s/3");
    let doc = print_json(base, &["--instance", "3", "--port", "7777"]).unwrap();
    assert_eq!(launch(&doc).0, 7777);
    let listed = format!("{base}[launch]\nports = [8100, 8200]\n");
    assert_eq!(launch(&print_json(&listed, &["--instance", "1"]).unwrap()).0, 8200);
    assert_eq!(launch(&print_json(&listed, &["--instance", "2"]).unwrap()).0, 9002);
    // A config written for instance 7 with its own port keeps it; --instance 8 is one above.
    let own = format!("{base}[launch]\ninstance = 7\n");
    assert_eq!(launch(&print_json(&own, &[]).unwrap()).0, 9000);
    assert_eq!(launch(&print_json(&own, &["--instance", "8"]).unwrap()).0, 9001);
    let (code, err) = print_json(&base.replace("9000", "65535"), &["--instance", "1"]).unwrap_err();
    assert_eq!(code, Some(2));
    assert!(
        err.contains("instance 1: engine.port 65535 + 1 - launch.instance 0 = 65536 is not a port"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, err) = print_json(base, &["--instance", "1025"]).unwrap_err();
    assert_eq!(code, Some(2));
    assert!(err.contains("launch.instance"), "{err}");
    let (code, err) = print_json(&format!("{base}[launch]\nports = [0]\n"), &[]).unwrap_err();
    assert_eq!(code, Some(2));
    assert!(err.contains("launch.ports"), "{err}");
}

/// One `nodeagent serve --instance N` of a shared config, the simulator as its engine.
struct Instance {
    child: Option<Child>,
    log: PathBuf,
}

impl Instance {
    fn start(config: &Path, n: usize, mark: &Path) -> Instance {
        let log = config.with_file_name(format!("agent-{n}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--instance", &n.to_string(), "--config"])
            .arg(config)
            .env("NODEAGENT_TEST_MARK", mark)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance { child: Some(child), log }
    }

    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        agent::signal(child.id(), "-INT");
        let st = wait_for("agent exit", Duration::from_secs(20), || child.try_wait().unwrap());
        assert!(st.success(), "{}", std::fs::read_to_string(&self.log).unwrap());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        agent::stop_child(self.child.take(), Duration::from_secs(20));
    }
}

fn status_cmd(base: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(["status", "--state-dir"]).arg(base).args(args).output().unwrap()
}

/// Two real agents from one config (`--instance 0` and `--instance 1`, the simulator as the
/// engine on loopback): state dirs `BASE` and `BASE/1`, ports `P` and `P + 1`, `{instance}` in
/// the engine's argv; `nodeagent status` lists both (text table, `--json --all`, `--instance`),
/// `--json` alone refuses to pick; stopping instance 0 leaves instance 1 serving, and then
/// `status --json` is instance 1's record.
#[test]
fn two_instances_serve_side_by_side_and_status_lists_both() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("run");
    let port = wait_for("two consecutive free ports", Duration::from_secs(5), || {
        let p = agent::free_port();
        (p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()).then_some(p)
    });
    let argv = simulator_argv(&["--workers", "1", "--seed", "4{instance}"]);
    let config = dir.path().join("nodeagent.toml");
    let text = format!(
        "host = \"local\"\nmodel = \"sim\"\nstate_dir = {base:?}\n[engine]\nport = {port}\n\
         argv = {argv:?}\n{BIND_CPU1}[supervise]\nhealth_interval = \"200ms\"\n\
         binding_check_interval = \"200ms\"\nstop_grace = \"3s\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let mut zero = Instance::start(&config, 0, dir.path());
    let mut one = Instance::start(&config, 1, dir.path());
    let one_dir = base.join("1");
    for (n, state_dir) in [(0, &base), (1, &one_dir)] {
        let st = wait_for(&format!("instance {n} ready"), Duration::from_secs(30), || {
            agent::status(&base, &["--instance", &n.to_string()]).filter(|s| s["state"] == "ready")
        });
        assert_eq!(st["instance"], n);
        assert_eq!(st["port"], port + n as u16);
        assert_eq!(st["state_dir"], state_dir.display().to_string());
        let main = st["main_pid"].as_i64().unwrap();
        let cmd = agent::cmdline(main as i32);
        assert!(cmd.contains(&format!("--port {}", port + n as u16)), "{cmd}");
        assert!(cmd.contains(&format!("--seed 4{n}")), "{cmd}");
        let mode = std::fs::metadata(state_dir).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0, "{state_dir:?}");
    }
    // Every instance, as a table and blocks, and as a JSON array.
    let out = status_cmd(&base, &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = text.lines().take(3).collect();
    assert!(table[0].starts_with("INSTANCE STATE      PORT   GPUS"), "{text}");
    assert!(table[1].starts_with(&format!("0        ready      {port} ")), "{text}");
    assert!(table[2].starts_with(&format!("1        ready      {} ", port + 1)), "{text}");
    assert!(text.contains(&format!("== instance 1 ({})", one_dir.display())), "{text}");
    let out = status_cmd(&base, &["--json", "--all"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<(u64, u64)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["instance"].as_u64().unwrap(), s["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, [(0, u64::from(port)), (1, u64::from(port) + 1)]);
    let out = status_cmd(&base, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 instances answer (0, 1): pick one with --instance N"), "{err}");
    let one_only: Value =
        serde_json::from_slice(&status_cmd(&base, &["--json", "--instance", "1"]).stdout).unwrap();
    assert_eq!(one_only["port"], port + 1);

    // Stop instance 0: instance 1 goes on serving and is the one `status` finds.
    zero.stop();
    assert!(!base.join("status.sock").exists());
    let st = agent::status(&base, &[]).expect("instance 1 still answers");
    assert_eq!((st["instance"].as_u64(), st["state"].as_str()), (Some(1), Some("ready")));
    let health = std::net::TcpStream::connect(("127.0.0.1", port + 1));
    assert!(health.is_ok(), "instance 1's engine stopped with instance 0");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    one.stop();
    assert_eq!(agent::marked(dir.path()), Vec::<i32>::new());
    let out = status_cmd(&base, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: no nodeagent serve answers under "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Reads a streamed answer until `[DONE]`, the end of the connection (keep-alive holds it open
/// after a complete answer) or `limit`.
fn read_stream(mut tcp: std::net::TcpStream, limit: Duration) -> String {
    use std::io::Read;
    let start = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit && !String::from_utf8_lossy(&got).contains("data: [DONE]") {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Issue 14 item 4: an engine with `/v1/models` but no `/health` (llama-cpp-python's server;
/// here the simulator with `--no-health`) was never ready: `/health` answered 404 until
/// `ready_timeout`, then a restart, forever. Now the 404 falls back to `/v1/models` with one
/// note in the log and in `status` (and `/live`, which the sim profile names, to the models
/// list too); a kill -9 is restarted and the fallback holds again, the notes not repeated.
#[test]
fn an_engine_without_health_is_ready_through_its_models_list() {
    let argv = simulator_argv(&["--no-health"]);
    let mut agent =
        Agent::start_argv(tempfile::tempdir().unwrap(), argv, "ready_timeout = \"20s\"\n");
    let st = agent.wait_state("ready", Duration::from_secs(15));
    let note = "GET /health answered 404: this engine has no /health; readiness and liveness \
                use /v1/models instead ([probe] in docs/serve.md)";
    assert_eq!(st["probe_notes"][0], note, "{st}");
    assert_eq!(st["health"]["last"], "healthy", "{st}");
    // The sim profile names `/live` too: the first liveness check falls back once more.
    let live = "GET /live answered 404: this engine has no /live; liveness uses /v1/models \
                instead ([probe] in docs/serve.md)";
    let st = wait_for("the /live note", Duration::from_secs(10), || {
        agent.status().filter(|s| s["probe_notes"].as_array().is_some_and(|n| n.len() == 2))
    });
    assert_eq!(st["probe_notes"], serde_json::json!([note, live]), "{st}");
    assert_eq!(st["health"]["last"], "healthy", "{st}");
    let engine = st["main_pid"].as_i64().unwrap();
    agent::signal(engine as u32, "-KILL");
    let st = wait_for("a restart after kill -9", Duration::from_secs(20), || {
        agent.status().filter(|s| s["restarts"].as_u64() >= Some(1) && s["state"] == "ready")
    });
    assert!(st["last_exit"].as_str().unwrap().contains("signal 9"), "{st}");
    std::thread::sleep(Duration::from_millis(600)); // liveness checks of the new life
    let st = agent.status().unwrap();
    assert_eq!(st["probe_notes"], serde_json::json!([note, live]), "each said once: {st}");
    agent.stop_clean();
    let log = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap();
    assert_eq!(log.matches("this engine has no /health").count(), 1, "{log}");
    assert_eq!(log.matches("this engine has no /live").count(), 1, "{log}");
}

/// Issue 14 item 1: a long prefill with chunked prefill counts its prompt tokens chunk by
/// chunk (`--prefill-chunk-tokens`), so a prefill of 4 s under a stall_timeout of 1 s is
/// progress, not a stall: the request completes and nothing is restarted. The same prefill
/// counted all at once (no chunking) is flat for 4 s and is restarted: the rule is what
/// tells them apart.
#[test]
fn a_long_chunked_prefill_is_progress_and_an_unchunked_one_is_a_stall() {
    for chunked in [true, false] {
        let chunk = if chunked { "1" } else { "0" };
        let argv = simulator_argv(&[
            "--prefill-base-ms",
            "4000",
            "--prefill-chunk-tokens",
            chunk,
            "--decode-base-ms",
            "20",
        ]);
        let mut agent =
            Agent::start_argv(tempfile::tempdir().unwrap(), argv, "stall_timeout = \"1s\"\n");
        agent.wait_state("ready", Duration::from_secs(30));
        let answer = read_stream(send_chat(engine_port(&agent), 5), Duration::from_secs(20));
        let st = agent.status().unwrap();
        if chunked {
            assert!(answer.contains("data: [DONE]"), "{answer}");
            assert_eq!(st["restarts"].as_u64(), Some(0), "{st}");
        } else {
            let st = wait_for("the unchunked prefill restarted", Duration::from_secs(20), || {
                agent.status().filter(|s| s["restarts"].as_u64() >= Some(1))
            });
            let why = st["last_exit"].as_str().unwrap();
            assert!(why.starts_with("engine stalled: 1 running, 0 waiting"), "{st}");
            assert!(!answer.contains("data: [DONE]"), "{answer}");
        }
        agent.stop_clean();
    }
}

/// Issue 14 item 2: a stop drains first. At SIGTERM the status socket says `draining` (so a
/// router stops sending); a streamed request in flight that fits in `drain_timeout` completes
/// (the client sees `[DONE]`) before the engine gets SIGTERM; one that does not fit is cut
/// when `drain_timeout` has passed. Either way the agent exits 0 and leaves nothing.
#[test]
fn a_stop_drains_in_flight_requests_within_drain_timeout() {
    use std::io::Read;
    // (drain_timeout, tokens at 50 ms each, whether the stream completes)
    for (drain, tokens, completes) in [("8s", 40, true), ("1s", 400, false)] {
        let argv = simulator_argv(&["--decode-base-ms", "50"]);
        let extra = format!("drain_timeout = \"{drain}\"\n");
        let mut agent = Agent::start_argv(tempfile::tempdir().unwrap(), argv, &extra);
        agent.wait_state("ready", Duration::from_secs(30));
        let mut tcp = send_chat(engine_port(&agent), tokens);
        let mut first = [0u8; 64];
        let n = tcp.read(&mut first).unwrap();
        assert!(n > 0, "the stream started");
        let client = std::thread::spawn(move || read_stream(tcp, Duration::from_secs(40)));
        let stopped_at = Instant::now();
        agent.signal("-TERM");
        let st = agent.wait_state("draining", Duration::from_secs(5));
        assert!(st["drain"]["timeout_s"].as_f64().is_some(), "{st}");
        let answer = client.join().unwrap();
        let (status, log) = agent.finish(Duration::from_secs(30));
        assert!(status.success(), "{log}");
        assert_eq!(agent.leftovers(), Vec::<i32>::new());
        if completes {
            assert!(answer.contains("data: [DONE]"), "{answer}");
            assert!(log.contains("drained: no request in flight after "), "{log}");
        } else {
            assert!(!answer.contains("data: [DONE]"), "{answer}");
            assert!(log.contains("drain_timeout 1s passed with 1 request(s) in flight"), "{log}");
            assert!(stopped_at.elapsed() < Duration::from_secs(15), "{:?}", stopped_at.elapsed());
        }
    }
}

/// An engine that drains itself (`probe.shutdown_timeout_arg`, vLLM's `--shutdown-timeout`)
/// is started with `drain_timeout` in seconds at the end of its argv, in numactl mode after
/// the binding's options too; without `drain_timeout` nothing is added.
#[test]
fn print_config_passes_drain_timeout_to_the_engines_own_drain_option() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let base = "host = \"nvidia\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"numactl\"\n\
                [binding]\nauto = false\ncpu_nodes = [0]\nmem_nodes = [0]\n\
                [probe]\nshutdown_timeout_arg = \"--shutdown-timeout\"\n";
    for (extra, want) in [("[supervise]\ndrain_timeout = \"45s\"\n", true), ("", false)] {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--print-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let argv = text.lines().find(|l| l.starts_with("#   argv: ")).unwrap();
        assert_eq!(argv.ends_with(r#","--shutdown-timeout","45"]"#), want, "{argv}");
        assert!(
            argv.starts_with(r#"#   argv: ["numactl","--cpunodebind=0","--membind=0","--","vllm""#),
            "{argv}"
        );
    }
}

/// The thread placement in `status`: every engine thread (the simulator, its workers and their
/// children) last ran on the bound CPU, and from the second reading on the CPU time since the
/// previous check is known, none of it outside the binding.
#[test]
fn status_carries_the_thread_placement_of_the_bound_engine() {
    let agent =
        Agent::start(&["--workers", "2"], &format!("{BIND_CPU1}\n[launch]\nmode = \"bare\"\n"));
    agent.wait_state("ready", Duration::from_secs(30));
    let st = wait_for("a second thread reading", Duration::from_secs(20), || {
        agent
            .status()
            .filter(|s| pids(s).len() == 5 && s["thread_placement"]["cpu_seconds"].is_number())
    });
    let t = &st["thread_placement"];
    assert!(t["threads"].as_u64().unwrap() >= 5, "{t}");
    assert_eq!(t["last_cpus"], serde_json::json!([1]), "{t}");
    assert_eq!(t["last_cpus_outside"], serde_json::json!([]), "{t}");
    assert!(t["last_cpu_changes"].is_u64(), "{t}");
    if t["cpu_seconds"].as_f64().unwrap() > 0.0 {
        assert_eq!(t["outside_share"].as_f64(), Some(0.0), "{t}");
    } else {
        assert!(t["outside_share"].is_null(), "{t}");
    }
    assert_eq!(st["cpu_outside_alert"], false, "{st}");
}
