//! The systemd unit: `systemd-analyze verify` and the offline security score on the host, and
//! the unit under a REAL systemd (PID 1 in a container made with debootstrap + `docker import`,
//! `scripts/systemd-test-image.sh`): `systemctl start` returns only once the engine is ready
//! (READY=1), the STATUS text shows, the engine runs in a cgroup of its own below the unit's
//! (`Delegate=yes`), killing the engine leads to a restart, `systemctl stop` leaves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/docker.rs"]
mod support;
#[path = "support/systemd_box.rs"]
mod systemd_box;

use systemd_box::{docker_ok, text, SystemdBox};

const UNIT: &str = "systemd/nodeagent.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join(UNIT)).unwrap()
}

/// The value of `Key=` in the unit (the last assignment wins, as in systemd).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .next_back()
        .map(|v| v.trim().to_string())
}

/// The unit with its `ExecStart` binary pointed at this build (`verify` checks that the binary
/// exists; nothing else is changed).
fn unit_for(binary: &str) -> String {
    unit_text().replace("ExecStart=/usr/local/bin/nodeagent ", &format!("ExecStart={binary} "))
}

#[test]
fn unit_declares_notify_control_group_kill_delegate_and_on_failure_restart() {
    let u = unit_text();
    assert_eq!(unit_value(&u, "Type").as_deref(), Some("notify"));
    assert_eq!(unit_value(&u, "NotifyAccess").as_deref(), Some("main"));
    assert_eq!(unit_value(&u, "KillMode").as_deref(), Some("control-group"));
    // The engine's cgroup goes below the unit's: delegated, and not made read-only.
    assert_eq!(unit_value(&u, "Delegate").as_deref(), Some("yes"));
    assert_ne!(unit_value(&u, "ProtectControlGroups").as_deref(), Some("yes"));
    assert_eq!(unit_value(&u, "Restart").as_deref(), Some("on-failure"));
    let start = humantime::parse_duration(&unit_value(&u, "TimeoutStartSec").unwrap()).unwrap();
    assert!(
        start >= Duration::from_secs(30 * 60),
        "TimeoutStartSec {start:?} is short for a 72B model"
    );
    let stop = humantime::parse_duration(&unit_value(&u, "TimeoutStopSec").unwrap()).unwrap();
    assert!(
        stop > Duration::from_secs(30),
        "TimeoutStopSec {stop:?} must exceed the agent's stop grace"
    );
    assert!(unit_value(&u, "ExecStart").unwrap().starts_with("/usr/local/bin/nodeagent serve "));
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodeagent.service");
    std::fs::write(&path, unit_for(env!("CARGO_BIN_EXE_nodeagent"))).unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let all = text(&out);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{all}");
    let about_us: Vec<&str> = all.lines().filter(|l| l.contains("nodeagent")).collect();
    assert!(about_us.is_empty(), "systemd-analyze verify complained:\n{all}");
}

/// `→ Overall exposure level for nodeagent.service: 2.8 OK 🙂`
fn parse_exposure(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.contains("Overall exposure level for"))?;
    line.rsplit_once(": ")?.1.split_whitespace().next()?.parse().ok()
}

#[test]
fn unit_security_exposure_is_medium_or_better() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(repo().join(UNIT))
        .output()
        .expect("systemd-analyze");
    let all = text(&out);
    let score = parse_exposure(&all).unwrap_or_else(|| panic!("no exposure level in:\n{all}"));
    assert!(score <= 5.0, "exposure {score} > 5.0:\n{all}");
    // The README states the figure; keep it true.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level {score:.1}")),
        "README does not state the measured exposure level {score:.1}"
    );
}

#[test]
fn exposure_parser_reads_the_score() {
    assert_eq!(
        parse_exposure("→ Overall exposure level for nodeagent.service: 2.8 OK 🙂"),
        Some(2.8)
    );
    assert_eq!(
        parse_exposure("→ Overall exposure level for x.service: 9.2 UNSAFE 😨\n"),
        Some(9.2)
    );
    assert_eq!(parse_exposure("nothing"), None);
}

// ------------------------------------------------------------------------------------------
// Under a real systemd

/// Shared libraries a binary loads, from `ldd` lines such as
/// `libnuma.so.1 => /lib/x86_64-linux-gnu/libnuma.so.1 (0x...)`.
fn ldd_paths(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// The unit's boxes: a systemd container per test, on Docker's `none` network (loopback only)
/// unless said otherwise.
impl SystemdBox {
    /// `tag` keeps the containers of tests running side by side apart.
    fn start(tag: &str) -> Option<SystemdBox> {
        Self::start_on(tag, "none")
    }

    /// On a Docker network: `none` (loopback only), or `host` when the unit's engine runs in a
    /// container of the host's engine with host networking and must be reachable from the box.
    /// The host's Docker socket is there for container mode under the unit.
    fn start_on(tag: &str, network: &str) -> Option<SystemdBox> {
        if !support::docker_ready() {
            return None;
        }
        let name = format!("nodeagent-test-systemd-{tag}-{}", std::process::id());
        let sock = "/var/run/docker.sock:/run/docker.sock";
        Some(SystemdBox::boot(name, &["--network", network, "-v", sock]))
    }

    /// The binary, the shared libraries it needs that the image lacks, busybox (for `wget`).
    fn install_nodeagent(&self) {
        let bin = Path::new(env!("CARGO_BIN_EXE_nodeagent"));
        self.copy_in(bin, "/usr/local/bin/nodeagent");
        self.copy_libs(bin);
        self.copy_in(Path::new("/bin/busybox"), "/usr/local/bin/busybox");
        self.copy_in(&repo().join(UNIT), "/etc/systemd/system/nodeagent.service");
    }

    /// The shared libraries `binary` needs that the image lacks.
    fn copy_libs(&self, binary: &Path) {
        for lib in ldd_paths(binary) {
            if !self.exec(&["test", "-e", &lib]).1 {
                self.copy_in(Path::new(&lib), &lib);
            }
        }
    }

    fn show(&self, prop: &str) -> String {
        self.exec_ok(&["systemctl", "show", "nodeagent", "-p", prop, "--value"]).trim().to_string()
    }

    /// PIDs in the unit's cgroup (`cgroup.procs` of its systemd controller hierarchy).
    fn unit_pids(&self) -> Vec<i32> {
        let cg = self.show("ControlGroup");
        let (out, ok) = self.exec(&["cat", &format!("/sys/fs/cgroup/systemd{cg}/cgroup.procs")]);
        if !ok {
            return Vec::new();
        }
        out.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    fn health(&self, port: u16) -> bool {
        self.exec(&["busybox", "wget", "-q", "-O", "-", &format!("http://127.0.0.1:{port}/health")])
            .1
    }
}

/// The unit's sandbox (every hardening option as shipped) lets through what the agent needs:
/// the Docker socket with no capabilities, numactl's CPU and memory binding, the state and
/// cache directories; and it does make `/etc` read-only and drop every capability. Checked by
/// running a probe script in place of `ExecStart` in a copy of the unit (only `Type`,
/// `ExecStart` and `Restart` differ).
#[test]
fn hardened_unit_keeps_docker_socket_numactl_and_state_dir_working() {
    let Some(b) = SystemdBox::start("probe") else { return };
    b.copy_in(Path::new("/usr/bin/docker"), "/usr/local/bin/docker");
    b.copy_in(Path::new("/usr/bin/numactl"), "/usr/local/bin/numactl");
    b.copy_libs(Path::new("/usr/bin/numactl"));
    let probe = r#"set -e
echo "docker-api $(docker version --format '{{.Server.APIVersion}}')"
numactl --physcpubind=1 --membind=0 cat /proc/self/status | grep -E '^(Cpus|Mems)_allowed_list'
touch /var/lib/nodeagent/probe && echo state-dir-writable
touch /var/cache/nodeagent/probe && echo cache-dir-writable
if touch /etc/nodeagent-probe 2>/dev/null; then echo etc-writable; else echo etc-read-only; fi
grep '^CapEff' /proc/self/status
"#;
    b.write("/usr/local/bin/nodeagent-probe.sh", probe);
    let unit = unit_text()
        .replace("Type=notify", "Type=oneshot")
        .replace("Restart=on-failure\n", "")
        .replace(
            "ExecStart=/usr/local/bin/nodeagent serve --config /etc/nodeagent/nodeagent.toml",
            "ExecStart=/bin/sh /usr/local/bin/nodeagent-probe.sh",
        );
    b.write("/etc/systemd/system/nodeagent-probe.service", &unit);
    b.exec_ok(&["systemctl", "daemon-reload"]);
    let (out, ok) = b.exec(&["systemctl", "start", "nodeagent-probe"]);
    let log = b.exec(&["journalctl", "-u", "nodeagent-probe", "-o", "cat", "--no-pager"]).0;
    assert!(ok, "the probe failed under the unit's sandbox: {out}\n{log}");
    for want in [
        "docker-api 1.4",
        "Cpus_allowed_list:\t1",
        "Mems_allowed_list:\t0",
        "state-dir-writable",
        "cache-dir-writable",
        "etc-read-only",
        "CapEff:\t0000000000000000",
    ] {
        assert!(log.contains(want), "{want:?} missing from the probe's output:\n{log}");
    }
}

/// A config that serves the simulator bare, bound to CPU 1 and memory node 0, with two
/// workers in their own sessions (like Ray's) and a load time, so that a `systemctl start`
/// that returned early would be caught.
fn simulator_config(port: u16) -> String {
    format!(
        r#"# nodeagent config for tests/systemd.rs
host = "local"
model = "sim"

[engine]
port = {port}
argv = ["{{self}}", "simulate", "--port", "{{port}}", "--served-model-name", "{{served_model_name}}",
        "--workers", "2", "--startup-delay-ms", "{STARTUP_DELAY_MS}"]

[binding]
auto = false
cpus = "1"
mem_policy = "bind"
mem_nodes = [0]

[supervise]
health_interval = "500ms"
backoff_initial = "500ms"
stop_grace = "5s"
"#
    )
}

const STARTUP_DELAY_MS: u64 = 1500;

#[test]
fn unit_under_real_systemd_starts_ready_restarts_the_engine_and_stops_clean() {
    let Some(b) = SystemdBox::start("serve") else { return };
    b.install_nodeagent();
    let port = 18123;
    b.write("/etc/nodeagent/nodeagent.toml", &simulator_config(port));
    // The optional watchdog, short: an agent that stopped pinging would be killed and
    // restarted by systemd within the test (MainPID and NRestarts below would show it).
    b.write("/etc/systemd/system/nodeagent.service.d/watchdog.conf", "[Service]\nWatchdogSec=2s\n");
    b.exec_ok(&["systemctl", "daemon-reload"]);
    let journal = || b.exec(&["journalctl", "-u", "nodeagent", "--no-pager", "-n", "60"]).0;

    // `systemctl start` blocks until READY=1 (Type=notify), which the agent sends only once
    // the engine answers: after the simulated load time, and the engine answers right away.
    let t = Instant::now();
    let (out, ok) = b.exec(&["systemctl", "start", "nodeagent"]);
    let took = t.elapsed();
    assert!(ok, "systemctl start failed: {out}\n{}", journal());
    assert!(
        took >= Duration::from_millis(STARTUP_DELAY_MS),
        "systemctl start returned after {took:?}, before the engine could be ready"
    );
    assert_eq!(b.show("ActiveState"), "active");
    assert!(b.health(port), "engine not healthy right after start returned:\n{}", journal());
    let status = b.show("StatusText");
    assert!(!status.is_empty(), "no STATUS= text");
    let (st, _) = b.exec(&["systemctl", "status", "--no-pager", "nodeagent"]);
    assert!(st.contains(&format!("Status: \"{status}\"")), "systemctl status lacks STATUS:\n{st}");
    eprintln!("$ systemctl status nodeagent\n{st}");
    let (agent_status, ok) = b.exec(&["nodeagent", "status"]);
    assert!(ok, "nodeagent status failed under systemd: {agent_status}");
    eprintln!("$ nodeagent status\n{agent_status}");

    // The engine has a cgroup of its own below the unit's (Delegate=yes): `status` names it.
    let json = b.exec_ok(&["nodeagent", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&json).unwrap();
    let containment = st["containment"].as_str().unwrap_or_default().to_string();
    let engine_cg = containment.split_once(' ').map_or(String::new(), |(_, p)| p.to_string());
    assert!(
        containment.starts_with("cgroup-") && engine_cg.contains("/nodeagent.service/nodeagent-0-"),
        "the engine is not in a cgroup below the unit's: {containment:?}\n{json}"
    );
    let in_engine_cg = |b: &SystemdBox| -> Vec<i32> {
        let (out, _) = b.exec(&["cat", &format!("{engine_cg}/cgroup.procs")]);
        out.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    };

    // Every process of the unit but the agent is the engine or a worker, bound as configured.
    let agent: i32 = b.show("MainPID").parse().unwrap();
    let engine_procs = |b: &SystemdBox| -> Vec<(i32, String)> {
        b.unit_pids()
            .into_iter()
            .filter(|p| *p != agent)
            .map(|p| (p, b.exec(&["cat", &format!("/proc/{p}/cmdline")]).0.replace('\0', " ")))
            .collect()
    };
    let before = engine_procs(&b);
    assert_eq!(before.len(), 3, "engine + 2 workers expected: {before:?}");
    let mut contained = in_engine_cg(&b);
    contained.sort_unstable();
    let mut unit_engine: Vec<i32> = before.iter().map(|(p, _)| *p).collect();
    unit_engine.sort_unstable();
    assert_eq!(contained, unit_engine, "the engine's cgroup {engine_cg} vs the unit's processes");
    assert!(!contained.contains(&agent), "the agent is not in the engine's cgroup");
    for (pid, _) in &before {
        let st = b.exec_ok(&["cat", &format!("/proc/{pid}/status")]);
        assert!(st.contains("Cpus_allowed_list:\t1\n"), "pid {pid} not on CPU 1:\n{st}");
        assert!(st.contains("Mems_allowed_list:\t0\n"), "pid {pid} not on node 0:\n{st}");
    }

    // Kill the engine (SIGKILL, as a crash): the agent restarts it; systemd does not restart
    // the unit, whose main process stays the same agent.
    let (engine, _) = before
        .iter()
        .find(|(_, cmd)| cmd.contains(" simulate ") && !cmd.contains("simulate-worker"))
        .unwrap_or_else(|| panic!("no engine among {before:?}"))
        .clone();
    b.exec_ok(&["busybox", "kill", "-9", &engine.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = engine_procs(&b);
        let restarted =
            now.len() == 3 && now.iter().all(|(p, _)| before.iter().all(|(q, _)| p != q));
        if restarted && b.health(port) {
            break;
        }
        assert!(Instant::now() < deadline, "engine not restarted:\n{now:?}\n{}", journal());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Several watchdog intervals more, across and after the engine restart.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(b.show("WatchdogUSec"), "2s");
    assert_eq!(b.show("MainPID").parse::<i32>().unwrap(), agent, "the agent itself was restarted");
    assert_eq!(b.show("NRestarts"), "0");
    assert_eq!(b.show("ActiveState"), "active");
    assert!(!journal().contains("Watchdog timeout"), "{}", journal());

    // `systemctl stop`: the agent stops the engine and exits 0; nothing of the unit is left.
    b.exec_ok(&["systemctl", "stop", "nodeagent"]);
    assert_eq!(b.show("ActiveState"), "inactive");
    assert_eq!(b.show("Result"), "success", "{}", journal());
    assert!(b.unit_pids().is_empty());
    assert!(!b.exec(&["test", "-d", &engine_cg]).1, "{engine_cg} left after the stop");
    let top = docker_ok(&["top", &b.name, "-eo", "pid,args"]);
    assert!(!top.contains("nodeagent"), "processes left after stop:\n{top}");
    assert!(!b.health(port));
    let log = journal();
    assert!(!log.contains("SIGKILL"), "systemd had to kill something:\n{log}");
}

#[test]
fn the_config_example_loads_as_the_unit_would_use_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["serve", "--print-config", "--config"])
        .arg(repo().join("systemd/nodeagent.toml.example"))
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "the example config does not load:\n{all}");
    for want in
        ["mode = \"container\"", "cpus = \"0-15\"", "mem_nodes = [0]", "shm_size = \"256gb\""]
    {
        assert!(all.contains(want), "{want} missing from --print-config:\n{all}");
    }
}

/// Container mode under the unit: the agent (hardened, no capabilities) drives the host's
/// Docker engine through its socket; the engine container runs the simulator with host
/// networking, so the box shares the host's network to reach it.
#[test]
fn unit_under_real_systemd_runs_the_engine_container_and_removes_it_on_stop() {
    let image = support::test_image();
    let Some(b) = SystemdBox::start_on("container", "host") else { return };
    b.install_nodeagent();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        r#"host = "local"
model = "sim"
[launch]
mode = "container"
instance = 7
[engine]
port = {port}
argv = ["/nodeagent", "simulate", "--host", "127.0.0.1", "--port", "{{port}}",
        "--served-model-name", "{{served_model_name}}", "--workers", "2"]
[binding]
auto = false
cpus = "1"
mem_policy = "bind"
mem_nodes = [0]
[container]
image = "{image}"
devices = ["/dev/null:/dev/mxcd"]
group_add = ["video"]
network = "host"
[supervise]
health_interval = "500ms"
backoff_initial = "500ms"
stop_grace = "5s"
"#
    );
    b.write("/etc/nodeagent/nodeagent.toml", &config);
    b.exec_ok(&["systemctl", "daemon-reload"]);
    let journal = || b.exec(&["journalctl", "-u", "nodeagent", "--no-pager", "-n", "60"]).0;
    let ours = || {
        let (ok, out) = support::docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=io.nodeagent.managed=true",
            "--filter",
            "label=io.nodeagent.cpus=1",
            "--filter",
            "ancestor=nodeagent-test-sim:latest",
        ]);
        assert!(ok, "{out}");
        out.split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    let before = ours();

    let (out, ok) = b.exec(&["systemctl", "start", "nodeagent"]);
    assert!(ok, "systemctl start failed: {out}\n{}", journal());
    let health = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(health(), "engine not answering after start:\n{}", journal());
    let running: Vec<String> = ours().into_iter().filter(|c| !before.contains(c)).collect();
    assert_eq!(running.len(), 1, "one engine container expected: {running:?}\n{}", journal());

    // A crash of the engine in the container: the agent replaces the container.
    let needle = format!("/nodeagent simulate --host 127.0.0.1 --port {port} ");
    let engine = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").starts_with(&needle))
        })
        .expect("the engine process on the host");
    let agent: i32 = b.show("MainPID").parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(engine), nix::sys::signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Vec<String> = ours().into_iter().filter(|c| !before.contains(c)).collect();
        if now.len() == 1 && now != running && health() {
            break;
        }
        assert!(Instant::now() < deadline, "engine container not replaced: {now:?}\n{}", journal());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(b.show("MainPID").parse::<i32>().unwrap(), agent);
    assert_eq!(b.show("NRestarts"), "0");

    // Stop: the container is removed, the unit ends cleanly.
    b.exec_ok(&["systemctl", "stop", "nodeagent"]);
    assert_eq!(b.show("Result"), "success", "{}", journal());
    let left: Vec<String> = ours().into_iter().filter(|c| !before.contains(c)).collect();
    assert!(left.is_empty(), "engine container left after stop: {left:?}");
    assert!(!health());
}

// ------------------------------------------------------------------------------------------
// The template unit, one instance per unit (issue 13)

const TEMPLATE: &str = "systemd/nodeagent@.service";

/// The settings of a unit, in order, without comments and blank lines.
fn settings(unit: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The template is nodeagent.service option for option (hardening and all), except the
/// instance in `Description=` and `ExecStart=` (`--instance %i`) and the shared runtime
/// directory kept across one instance's stop; each difference is marked `# template:`.
#[test]
fn template_unit_is_the_service_plus_the_instance() {
    let template = std::fs::read_to_string(repo().join(TEMPLATE)).unwrap();
    let want: Vec<String> = settings(&unit_text())
        .into_iter()
        .flat_map(|l| {
            if l.starts_with("Description=") {
                vec![l.replace("nodeagent:", "nodeagent instance %i:")]
            } else if l.starts_with("ExecStart=") {
                vec![l.replace(" serve ", " serve --instance %i ")]
            } else if l == "RuntimeDirectory=nodeagent" {
                vec![l, "RuntimeDirectoryPreserve=yes".to_string()]
            } else {
                vec![l]
            }
        })
        .collect();
    assert_eq!(settings(&template), want);
    assert_eq!(template.matches("# template:").count(), 3);
}

#[test]
fn template_unit_passes_verify_and_keeps_the_exposure_level() {
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(repo().join(TEMPLATE)).unwrap().replace(
        "ExecStart=/usr/local/bin/nodeagent ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_nodeagent")),
    );
    std::fs::write(dir.path().join("nodeagent@.service"), template).unwrap();
    let unit = dir.path().join("nodeagent@1.service");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{all}");
    assert!(!all.contains("nodeagent"), "systemd-analyze verify complained:\n{all}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let service = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(repo().join(UNIT))
        .output()
        .unwrap();
    assert_eq!(parse_exposure(&text(&out)), parse_exposure(&text(&service)), "{}", text(&out));
}

/// Two template units from one config under a real systemd: `systemctl start nodeagent@0
/// nodeagent@1` returns with both ready, each engine on its port (`engine.port + N`) in a
/// cgroup below its own unit, `nodeagent status` lists both; stopping `nodeagent@0` leaves
/// `nodeagent@1` serving (its state dir under the shared `/run/nodeagent` survives).
#[test]
fn two_template_units_under_real_systemd_run_side_by_side() {
    let Some(b) = SystemdBox::start("instances") else { return };
    b.install_nodeagent();
    b.copy_in(&repo().join(TEMPLATE), "/etc/systemd/system/nodeagent@.service");
    let port = 18200;
    b.write("/etc/nodeagent/nodeagent.toml", &simulator_config(port));
    b.exec_ok(&["systemctl", "daemon-reload"]);
    let journal = |u: &str| b.exec(&["journalctl", "-u", u, "--no-pager", "-n", "40"]).0;
    let show = |u: &str, p: &str| {
        b.exec_ok(&["systemctl", "show", u, "-p", p, "--value"]).trim().to_string()
    };
    let (out, ok) = b.exec(&["systemctl", "start", "nodeagent@0", "nodeagent@1"]);
    assert!(
        ok,
        "systemctl start failed: {out}\n{}\n{}",
        journal("nodeagent@0"),
        journal("nodeagent@1")
    );
    for n in [0u16, 1] {
        let unit = format!("nodeagent@{n}");
        assert_eq!(show(&unit, "ActiveState"), "active", "{}", journal(&unit));
        assert!(b.health(port + n), "instance {n} not healthy:\n{}", journal(&unit));
        let json = b.exec_ok(&["nodeagent", "status", "--instance", &n.to_string(), "--json"]);
        let st: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(st["instance"], n);
        assert_eq!(st["port"], port + n);
        assert_eq!(st["state"], "ready");
        let containment = st["containment"].as_str().unwrap_or_default();
        assert!(
            containment.contains(&format!("/nodeagent@{n}.service/nodeagent-{n}-")),
            "instance {n}'s engine is not below its unit: {containment}"
        );
    }
    let (listing, ok) = b.exec(&["nodeagent", "status"]);
    assert!(ok, "{listing}");
    eprintln!("$ nodeagent status\n{listing}");
    let rows: Vec<&str> = listing.lines().skip(1).take(2).collect();
    assert!(rows[0].starts_with(&format!("0        ready      {port} ")), "{listing}");
    assert!(rows[1].starts_with(&format!("1        ready      {} ", port + 1)), "{listing}");
    assert!(listing.contains("== instance 1 (/run/nodeagent/1)"), "{listing}");

    b.exec_ok(&["systemctl", "stop", "nodeagent@0"]);
    assert_eq!(show("nodeagent@0", "Result"), "success", "{}", journal("nodeagent@0"));
    assert!(!b.health(port));
    assert_eq!(show("nodeagent@1", "ActiveState"), "active");
    assert!(b.health(port + 1), "instance 1 stopped with instance 0:\n{}", journal("nodeagent@1"));
    let json = b.exec_ok(&["nodeagent", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((st["instance"].as_u64(), st["state"].as_str()), (Some(1), Some("ready")), "{json}");
    b.exec_ok(&["systemctl", "stop", "nodeagent@1"]);
    assert_eq!(show("nodeagent@1", "Result"), "success", "{}", journal("nodeagent@1"));
    let top = docker_ok(&["top", &b.name, "-eo", "pid,args"]);
    assert!(!top.contains("nodeagent serve"), "processes left after stop:\n{top}");
}
