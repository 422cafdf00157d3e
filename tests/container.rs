//! Container mode against a REAL Docker engine (Debian's docker.io; `scripts/setup.sh test`
//! starts dockerd). The test image `nodeagent-test-sim:latest` (tests/support/docker.rs) is made from local files,
//! `FROM scratch` in effect (`docker import` of a rootfs tarball; no registry is reachable):
//! the nodeagent binary and the shared libraries `ldd` lists, a static busybox for `sh` and
//! `sleep`, and an `/etc/group` that has `video`. Host devices that exist here stand in for the
//! MetaX ones (`/dev/null` as `/dev/mxcd`, `/dev/zero` as `/dev/dri/renderD128`).
//!
//! What is checked from the host, independently of the code under test: `/proc/<pid>/status`
//! of every container process (cpuset, groups), `/proc/<pid>/limits` (memlock),
//! `/proc/<pid>/root/...` (devices, shm size), and `docker inspect` / `docker ps` through the
//! CLI. Every test uses its own instance name and ends with no container of that name left.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodeagent::binding::{Binding, MemPolicy};
use nodeagent::config::container::ContainerSettings;
use nodeagent::host::cpuset::CpuSet;
use nodeagent::launch::container::ContainerSpec;
use nodeagent::supervise::docker::{DockerRuntime, LogSink};
use nodeagent::supervise::runtime::{EngineExit, EngineRuntime};

#[path = "support/docker.rs"]
mod support;
use support::{docker, docker_ready, test_image};
#[path = "support/agent.rs"]
mod agent;
use agent::{cmdline, BIN};

/// Tests that restart dockerd hold this exclusively; every other test holds it shared, so no
/// test loses its daemon halfway.
static DAEMON: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The daemon, shared: `None` (skip) when no Docker engine can be started.
fn daemon_shared() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    let guard = DAEMON.read().unwrap_or_else(|p| p.into_inner());
    docker_ready().then_some(guard)
}

/// The daemon, exclusively (this test restarts it): `None` (skip) when there is none.
fn daemon_exclusive() -> Option<std::sync::RwLockWriteGuard<'static, ()>> {
    let guard = DAEMON.write().unwrap_or_else(|p| p.into_inner());
    docker_ready().then_some(guard)
}

/// A unique instance name, and on drop the removal of anything still labelled with it (so a
/// failing test leaves nothing either), after asserting nothing is left on success paths.
struct Instance(String);

impl Instance {
    fn new(test: &str) -> Instance {
        Instance(format!("t-{test}-{}", std::process::id()))
    }
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=io.nodeagent.instance={}", self.0);
        let (ok, out) = docker(&["ps", "-aq", "--filter", &filter]);
        assert!(ok, "docker ps failed: {out}");
        out.split_whitespace().map(String::from).collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for id in self.containers() {
            let _ = docker(&["rm", "-f", &id]);
        }
    }
}

fn settings() -> ContainerSettings {
    ContainerSettings {
        image: test_image().to_string(),
        devices: vec!["/dev/null:/dev/mxcd".into(), "/dev/zero:/dev/dri/renderD128".into()],
        group_add: vec!["video".into()],
        network: Some("host".into()),
        shm_size: Some("64m".into()),
        // `-1` (unlimited, the seed's value; its translation is unit-tested) needs
        // CAP_SYS_RESOURCE, which this sandbox lacks (hard limit 8 MiB); 4 MiB differs from the
        // inherited default and so proves the ulimit is applied.
        memlock: Some(4 << 20),
        security_opt: vec!["seccomp=unconfined".into()],
        stop_timeout_s: Some(5),
        ..Default::default()
    }
}

fn one_cpu_binding() -> Binding {
    // This machine has CPUs 0-1 and one memory node: binding to CPU 1 is visible in /proc.
    Binding {
        cpu_nodes: vec![],
        cpus: Some(CpuSet::parse_list("1").unwrap()),
        memory: MemPolicy::Bind(vec![0]),
    }
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn runtime(
    settings: &ContainerSettings,
    binding: &Binding,
    cmd: &[&str],
    inst: &Instance,
) -> DockerRuntime {
    DockerRuntime::new(ContainerSpec::new(settings, binding, argv(cmd), BTreeMap::new(), &inst.0))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim_start_matches(':').trim().to_string()))
}

/// Session id: field 6 of `/proc/<pid>/stat` (after the parenthesised command).
fn session(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(3).unwrap().parse().unwrap()
}

async fn pids_until(rt: &mut DockerRuntime, want: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = rt.pids().await.unwrap();
        if pids.len() >= want || Instant::now() > deadline {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn inspect(id: &str) -> serde_json::Value {
    let (ok, out) = docker(&["inspect", id]);
    assert!(ok, "docker inspect failed: {out}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn container_gets_binding_devices_group_shm_memlock_labels_and_stop_leaves_nothing() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("full");
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("config.json"), "{}").unwrap();
    let mut s = settings();
    s.volumes = vec![format!("{}:/data:ro", models.path().display())];
    // A directory passes every device in it (as `--device=/dev/dri` does on the MetaX host).
    let dir_device = Path::new("/dev/net/tun").exists();
    if dir_device {
        s.devices.push("/dev/net:/dev/gpu-dir".into());
    }
    // A main process with two workers, one of them in its own session (like Ray workers).
    let cmd = ["/bin/sh", "-c", "sleep 1000 & setsid sleep 1001 & exec sleep 1002"];
    let mut rt_ = runtime(&s, &one_cpu_binding(), &cmd, &inst);
    rt().block_on(async {
        rt_.preflight().await.unwrap();
        assert_eq!(rt_.cleanup_leftovers().await.unwrap(), Vec::<String>::new());
        rt_.start().await.unwrap();
        // init + sh-turned-sleep 1002 + sleep 1000 + setsid'd sleep 1001; a forked child
        // shows the shell's command line until it execs, so wait for the sleeps by name.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (pids, cmds) = loop {
            let pids = rt_.pids().await.unwrap();
            let cmds: Vec<String> = pids.iter().map(|p| cmdline(*p)).collect();
            let all = ["sleep 1000", "sleep 1001", "sleep 1002"]
                .iter()
                .all(|w| cmds.iter().any(|c| c == w));
            if all || Instant::now() > deadline {
                break (pids, cmds);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(pids.len(), 4, "container processes: {pids:?} {cmds:?}");
        for want in ["sleep 1000", "sleep 1001", "sleep 1002"] {
            assert!(cmds.iter().any(|c| c == want), "{want} not among {cmds:?}");
        }
        assert!(cmds.iter().any(|c| c.contains("docker-init")), "no init among {cmds:?}");
        // The cgroup read and the daemon's `top` agree.
        assert_eq!(rt_.pids_from_cgroup(), Some(pids.clone()));
        assert_eq!(rt_.pids_from_docker_top().await.unwrap(), pids);
        let main = rt_.main_pid().unwrap() as i32;
        assert!(pids.contains(&main), "main pid {main} not in {pids:?}");
        // The setsid worker is in another session and still listed.
        let worker = pids[cmds.iter().position(|c| c == "sleep 1001").unwrap()];
        let engine = pids[cmds.iter().position(|c| c == "sleep 1002").unwrap()];
        assert_ne!(session(worker), session(engine));
        // What the README's "Container mode" shows (visible with `--nocapture`).
        let (_, ps) = docker(&[
            "ps",
            "--filter",
            &format!("label=io.nodeagent.instance={}", inst.0),
            "--format",
            "{{.Names}}  {{.Image}}  {{.Status}}  {{.Labels}}",
        ]);
        eprintln!("$ docker ps --filter label=io.nodeagent.managed=true ...\n{}", ps.trim());
        for (pid, cmd) in pids.iter().zip(&cmds) {
            eprintln!(
                "host pid {pid:>7}  Cpus_allowed_list {}  Mems_allowed_list {}  {cmd}",
                status_field(*pid, "Cpus_allowed_list").unwrap_or_default(),
                status_field(*pid, "Mems_allowed_list").unwrap_or_default()
            );
        }
        for pid in &pids {
            assert_eq!(status_field(*pid, "Cpus_allowed_list").as_deref(), Some("1"), "pid {pid}");
            assert_eq!(status_field(*pid, "Mems_allowed_list").as_deref(), Some("0"), "pid {pid}");
        }
        // group video (44 in the image's /etc/group)
        let groups = status_field(engine, "Groups").unwrap();
        assert!(groups.split_whitespace().any(|g| g == "44"), "groups {groups:?}");
        // memlock as set
        let limits = std::fs::read_to_string(format!("/proc/{engine}/limits")).unwrap();
        let memlock = limits.lines().find(|l| l.starts_with("Max locked memory")).unwrap();
        assert_eq!(memlock.split_whitespace().collect::<Vec<_>>()[3..5], ["4194304", "4194304"]);
        // devices: the container's /dev/mxcd is the host's /dev/null (1:3), renderD128 /dev/zero
        let root = PathBuf::from(format!("/proc/{engine}/root"));
        for (inside, host) in [("dev/mxcd", "/dev/null"), ("dev/dri/renderD128", "/dev/zero")] {
            let m = std::fs::metadata(root.join(inside)).unwrap();
            assert!(m.file_type().is_char_device(), "{inside}");
            assert_eq!(m.rdev(), std::fs::metadata(host).unwrap().rdev(), "{inside}");
        }
        if dir_device {
            let m = std::fs::metadata(root.join("dev/gpu-dir/tun")).unwrap();
            assert_eq!(m.rdev(), std::fs::metadata("/dev/net/tun").unwrap().rdev());
        }
        // shm 64 MiB
        let shm = nix::sys::statvfs::statvfs(&root.join("dev/shm")).unwrap();
        assert_eq!(shm.blocks() as u64 * shm.fragment_size() as u64, 64 << 20);
        // the model volume, read-only
        assert!(root.join("data/config.json").exists());
        // what Docker recorded
        let id = rt_.container_id().unwrap().to_string();
        let c = inspect(&id);
        let hc = &c["HostConfig"];
        assert_eq!(hc["CpusetCpus"], "1");
        assert_eq!(hc["CpusetMems"], "0");
        assert_eq!(hc["NetworkMode"], "host");
        assert_eq!(hc["ShmSize"], 64 << 20);
        assert_eq!(hc["GroupAdd"], serde_json::json!(["video"]));
        assert_eq!(hc["Init"], true);
        // No Docker restart policy ("" or "no"): the agent restarts, with backoff and a budget.
        let policy = hc["RestartPolicy"]["Name"].as_str().unwrap();
        assert!(policy.is_empty() || policy == "no", "restart policy {policy:?}");
        assert_eq!(hc["SecurityOpt"], serde_json::json!(["seccomp=unconfined"]));
        assert_eq!(
            hc["Ulimits"],
            serde_json::json!([{"Name": "memlock", "Soft": 4 << 20, "Hard": 4 << 20}])
        );
        assert_eq!(hc["Devices"][0]["PathInContainer"], "/dev/mxcd");
        assert_eq!(hc["Devices"][1]["PathOnHost"], "/dev/zero");
        assert_eq!(hc["Binds"][0], format!("{}:/data:ro", models.path().display()));
        assert_eq!(c["Config"]["Labels"]["io.nodeagent.managed"], "true");
        assert_eq!(c["Config"]["Labels"]["io.nodeagent.instance"], inst.0.as_str());
        assert_eq!(c["Name"], format!("/nodeagent-{}", inst.0));

        rt_.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(inst.containers(), Vec::<String>::new());
        for pid in &pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "pid {pid} ({}) survived",
                cmds[0]
            );
        }
        assert_eq!(rt_.container_id(), None);
        // A second stop is a no-op.
        rt_.stop(Duration::from_secs(1)).await.unwrap();
    });
}

#[test]
fn stop_kills_an_engine_that_ignores_sigterm_after_the_grace() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("stubborn");
    // No init: the shell is PID 1 and ignores SIGTERM; only SIGKILL ends it.
    let mut s = settings();
    s.init = Some(false);
    let cmd = ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 1; done"];
    let mut rt_ = runtime(&s, &Binding::none(), &cmd, &inst);
    rt().block_on(async {
        rt_.start().await.unwrap();
        assert!(!pids_until(&mut rt_, 1).await.is_empty());
        let t = Instant::now();
        rt_.stop(Duration::from_secs(2)).await.unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "stopped after {took:?}: the grace was not honoured"
        );
        assert_eq!(inst.containers(), Vec::<String>::new());
    });
}

#[test]
fn wait_returns_exit_status_is_cancel_safe_and_start_again_restarts() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("wait");
    let mut rt_ =
        runtime(&settings(), &Binding::none(), &["/bin/sh", "-c", "sleep 1; exit 3"], &inst);
    rt().block_on(async {
        rt_.start().await.unwrap();
        // A wait dropped mid-flight (as a lost `select!` branch does) loses nothing.
        assert!(tokio::time::timeout(Duration::from_millis(200), rt_.wait()).await.is_err());
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(3));
        // Asking again after the exit answers the same at once.
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(3));
        assert_eq!(rt_.pids().await.unwrap(), Vec::<i32>::new());
        let first = rt_.container_id().unwrap().to_string();
        // The supervisor's restart: start again replaces the exited container.
        rt_.start().await.unwrap();
        let second = rt_.container_id().unwrap().to_string();
        assert_ne!(first, second);
        assert_eq!(inst.containers().len(), 1);
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(3));
        rt_.stop(Duration::from_secs(1)).await.unwrap();
        assert_eq!(inst.containers(), Vec::<String>::new());
    });
}

#[test]
fn an_engine_killed_by_a_signal_reports_the_signal() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("signal");
    let mut rt_ = runtime(&settings(), &Binding::none(), &["/bin/sh", "-c", "kill -9 $$"], &inst);
    rt().block_on(async {
        rt_.start().await.unwrap();
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Signal(9));
        rt_.stop(Duration::from_secs(1)).await.unwrap();
        assert_eq!(inst.containers(), Vec::<String>::new());
    });
}

#[test]
fn leftovers_of_a_killed_agent_are_found_by_label_and_removed() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("leftover");
    let other = Instance::new("leftover-other");
    let cmd = ["/bin/sh", "-c", "exec sleep 1000"];
    rt().block_on(async {
        // "Previous run": the agent started its engines and was SIGKILLed (never stopped them).
        let mut before = runtime(&settings(), &Binding::none(), &cmd, &inst);
        before.start().await.unwrap();
        let old_pids = pids_until(&mut before, 2).await;
        let mut sibling = runtime(&settings(), &Binding::none(), &cmd, &other);
        sibling.start().await.unwrap();
        drop(before);

        let mut after = runtime(&settings(), &Binding::none(), &cmd, &inst);
        after.preflight().await.unwrap();
        let removed = after.cleanup_leftovers().await.unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(
            removed[0].starts_with(&format!("container nodeagent-{} (", inst.0)),
            "{removed:?}"
        );
        assert!(removed[0].ends_with(", running) removed"), "{removed:?}");
        assert_eq!(inst.containers(), Vec::<String>::new());
        for pid in old_pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "leftover pid {pid} survived");
        }
        // Another instance's container is not ours to remove.
        assert_eq!(other.containers().len(), 1);
        // And the name is free again.
        after.start().await.unwrap();
        after.stop(Duration::from_secs(1)).await.unwrap();
        sibling.stop(Duration::from_secs(1)).await.unwrap();
        assert_eq!(inst.containers(), Vec::<String>::new());
        assert_eq!(other.containers(), Vec::<String>::new());
    });
}

fn preflight_error(mut rt_: DockerRuntime) -> String {
    rt().block_on(async {
        match rt_.preflight().await {
            Err(e) if e.is_preflight() => {
                eprintln!("{e}");
                e.to_string()
            }
            other => panic!("expected a preflight error, got {other:?}"),
        }
    })
}

#[test]
fn preflight_refuses_a_missing_image_device_volume_or_engine_and_creates_nothing() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("preflight");
    let cmd = ["/bin/sh", "-c", "exec sleep 1000"];

    let mut s = settings();
    s.image = "nodeagent-test-absent:never".into();
    let e = preflight_error(runtime(&s, &Binding::none(), &cmd, &inst));
    assert!(e.starts_with("preflight: docker: image nodeagent-test-absent:never not found locally; nodeagent never pulls"), "{e}");

    let mut s = settings();
    s.devices.push("/dev/nodeagent-no-such-mxcd:/dev/mxcd".into());
    let e = preflight_error(runtime(&s, &Binding::none(), &cmd, &inst));
    assert_eq!(
        e,
        "preflight: docker: device /dev/nodeagent-no-such-mxcd does not exist on this host \
         (container.devices entry \"/dev/nodeagent-no-such-mxcd:/dev/mxcd\")"
    );

    let mut s = settings();
    s.volumes = vec!["/nonexistent/models:/data".into()];
    let e = preflight_error(runtime(&s, &Binding::none(), &cmd, &inst));
    assert!(e.contains("volume source /nonexistent/models does not exist on this host"), "{e}");

    let mut s = settings();
    s.shm_size = Some("huge".into());
    let e = preflight_error(runtime(&s, &Binding::none(), &cmd, &inst));
    assert!(e.contains("bad shm_size \"huge\""), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let e = preflight_error(runtime(&settings(), &Binding::none(), &cmd, &inst).with_socket(&sock));
    assert!(
        e.starts_with(&format!(
            "preflight: docker: cannot reach the engine at {}: ",
            sock.display()
        )),
        "{e}"
    );
    assert!(!e.contains('\n'));

    assert_eq!(inst.containers(), Vec::<String>::new());
}

#[test]
fn a_name_held_by_a_foreign_container_is_refused_not_removed() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("foreign");
    let name = format!("nodeagent-{}", inst.0);
    let (ok, out) = docker(&["create", "--name", &name, test_image(), "/bin/sleep", "1"]);
    assert!(ok, "{out}");
    let rt_ = runtime(&settings(), &Binding::none(), &["/bin/sleep", "1"], &inst);
    let e = preflight_error(rt_);
    assert!(
        e.contains(&format!("a container named {name} ("))
            && e.contains("is not managed by nodeagent"),
        "{e}"
    );
    let (ok, _) = docker(&["rm", "-f", &name]);
    assert!(ok, "the foreign container must still exist for us to remove it");
}

#[test]
fn a_start_the_daemon_refuses_leaves_no_container() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("refused");
    // A group the image's /etc/group lacks: create succeeds, start fails in the runtime.
    let mut s = settings();
    s.group_add = vec!["nodeagent-no-such-group".into()];
    let mut rt_ = runtime(&s, &Binding::none(), &["/bin/sleep", "100"], &inst);
    rt().block_on(async {
        let e = rt_.start().await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("docker: start container nodeagent-{}: ", inst.0)), "{e}");
        assert!(e.contains("nodeagent-no-such-group"), "{e}");
        assert_eq!(rt_.container_id(), None);
    });
    assert_eq!(inst.containers(), Vec::<String>::new());
}

#[test]
fn engine_output_outlives_the_removed_container() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("logs");
    let buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let sink: LogSink = buf.clone();
    let cmd = ["/bin/sh", "-c", "echo out-line; echo err-line >&2; exit 4"];
    let mut rt_ = runtime(&settings(), &Binding::none(), &cmd, &inst).with_log_sink(Some(sink));
    rt().block_on(async {
        rt_.start().await.unwrap();
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(4));
        // The restart removes the crashed container; what it printed is already in the sink.
        rt_.start().await.unwrap();
        let first = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(first.contains("out-line\n") && first.contains("err-line\n"), "{first:?}");
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(4));
        rt_.stop(Duration::from_secs(1)).await.unwrap();
    });
    let all = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(all.matches("out-line\n").count(), 2, "{all:?}");
    assert_eq!(all.matches("err-line\n").count(), 2, "{all:?}");
    assert_eq!(inst.containers(), Vec::<String>::new());
}

#[test]
fn the_test_image_runs_nodeagent_itself() {
    let Some(_daemon) = daemon_shared() else { return };
    // The image carries the binary and every library `ldd` lists: the simulator can run in it.
    let inst = Instance::new("version");
    let buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let sink: LogSink = buf.clone();
    let mut rt_ = runtime(&settings(), &Binding::none(), &["/nodeagent", "--version"], &inst)
        .with_log_sink(Some(sink));
    rt().block_on(async {
        rt_.start().await.unwrap();
        assert_eq!(rt_.wait().await.unwrap(), EngineExit::Code(0));
        rt_.stop(Duration::from_secs(1)).await.unwrap();
    });
    let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(out.trim(), format!("nodeagent {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(inst.containers(), Vec::<String>::new());
}

/// `GET path` on loopback; the status code, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_simulator_serves_from_the_container_with_every_worker_bound() {
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("sim");
    // Host network: the engine's port is the host's. Port 0 cannot be used across the
    // container boundary, so take a free one and let it go.
    let port = agent::free_port();
    let p = port.to_string();
    let cmd = ["/nodeagent", "simulate", "--host", "127.0.0.1", "--port", &p, "--workers", "3"];
    let mut rt_ = runtime(&settings(), &one_cpu_binding(), &cmd, &inst);
    rt().block_on(async {
        rt_.preflight().await.unwrap();
        rt_.start().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "/health") != Some(200) {
            assert!(Instant::now() < deadline, "the simulator in the container never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(http_status(port, "/v1/models"), Some(200));
        // init + simulator + 3 workers, each in its own session, all on CPU 1 / node 0.
        let pids = pids_until(&mut rt_, 5).await;
        let cmds: Vec<String> = pids.iter().map(|p| cmdline(*p)).collect();
        assert_eq!(pids.len(), 5, "{cmds:?}");
        assert_eq!(cmds.iter().filter(|c| c.contains("simulate-worker")).count(), 3, "{cmds:?}");
        for pid in &pids {
            assert_eq!(status_field(*pid, "Cpus_allowed_list").as_deref(), Some("1"), "pid {pid}");
            assert_eq!(status_field(*pid, "Mems_allowed_list").as_deref(), Some("0"), "pid {pid}");
        }
        rt_.stop(Duration::from_secs(10)).await.unwrap();
        for pid in &pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived the stop");
        }
    });
    assert_eq!(http_status(port, "/health"), None);
    assert_eq!(inst.containers(), Vec::<String>::new());
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real supervisor (the one `serve` runs) driving the container runtime: ready once the
/// simulator in the container answers, every container process bound, a SIGKILLed engine
/// replaced by a new container, and on cancellation (SIGTERM in `serve`) nothing left.
#[test]
fn the_supervisor_runs_restarts_and_stops_the_engine_container() {
    use nodeagent::config::Config;
    use nodeagent::supervise::notify::{Notice, RecordingNotifier};
    use nodeagent::supervise::procs::ProcFs;
    use nodeagent::supervise::status::{AgentStatus, State};
    use nodeagent::supervise::supervisor::{Outcome, Supervisor};
    let Some(_daemon) = daemon_shared() else { return };
    let inst = Instance::new("supervised");
    let port = agent::free_port();
    let p = port.to_string();
    let cmd = ["/nodeagent", "simulate", "--host", "127.0.0.1", "--port", &p, "--workers", "2"];
    let binding = one_cpu_binding();
    let rt_ = runtime(&settings(), &binding, &cmd, &inst);
    let cfg: Config = toml::from_str(
        "[supervise]\nhealth_interval = \"300ms\"\nbinding_check_interval = \"300ms\"\n\
         backoff_initial = \"200ms\"\nstop_grace = \"3s\"\nready_timeout = \"30s\"\n",
    )
    .unwrap();
    let status = Arc::new(Mutex::new(AgentStatus::new(
        rt_.describe(),
        argv(&cmd),
        port,
        Some("qwen2.5".into()),
        binding.clone(),
    )));
    let notifier = RecordingNotifier::default();
    let notices = notifier.notices.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let supervisor = Supervisor {
        runtime: Box::new(rt_),
        policy: cfg.policy(),
        health_addr: ([127, 0, 0, 1], port).into(),
        model: Some("qwen2.5".into()),
        binding,
        notifier: Arc::new(notifier),
        status: status.clone(),
        cancel: cancel.clone(),
        proc: ProcFs::default(),
        // As `serve` sets them in container mode: the engine's port must be free.
        check_port: Some(port),
        check_path: None,
        gpu_hung: None,
        ranks: None,
    };
    let snapshot = || status.lock().unwrap().snapshot();
    let driver = async {
        wait_for("READY=1", || notices.lock().unwrap().contains(&Notice::Ready)).await;
        let s = snapshot();
        assert_eq!(s.state, State::Ready, "{}", s.message);
        // init + simulator + 2 workers, all checked and on CPU 1.
        let check = s.binding_check.clone().unwrap();
        assert!(check.ok, "{check:?}");
        assert_eq!(check.processes.len(), 4, "{check:?}");
        let first_ids = inst.containers();
        assert_eq!(first_ids.len(), 1);
        let old_pids = s.pids.clone();
        let engine = simulator_main(&old_pids);
        // A crash: the supervisor sees the container exit and starts a new one.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(engine), nix::sys::signal::SIGKILL)
            .unwrap();
        wait_for("the restart", || {
            let s = snapshot();
            s.restarts == 1 && s.state == State::Ready && s.pids.len() == 4
        })
        .await;
        let second_ids = inst.containers();
        assert_eq!(second_ids.len(), 1);
        assert_ne!(first_ids, second_ids, "the crashed container was not replaced");
        assert_eq!(http_status(port, "/health"), Some(200));
        for pid in &old_pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "old pid {pid} survived");
        }
        let new_pids = snapshot().pids;
        cancel.cancel();
        new_pids
    };
    let (outcome, new_pids) = rt().block_on(async { tokio::join!(supervisor.run(), driver) });
    assert_eq!(outcome.unwrap(), Outcome::Stopped);
    assert!(notices.lock().unwrap().contains(&Notice::Stopping));
    assert_eq!(snapshot().state, State::Stopped);
    assert_eq!(inst.containers(), Vec::<String>::new());
    for pid in &new_pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived the stop");
    }
    assert_eq!(http_status(port, "/health"), None);
}

/// CPU time this thread has used, in ns (`/proc/thread-self/schedstat`, first field). The
/// runtime in these tests is single-threaded, so this is all the agent-side work.
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// CPU time (user + system, own + reaped children) of a process, in ns, from `/proc/PID/stat`.
fn process_cpu_ns(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime stime cutime cstime are fields 14-17, i.e. 11-14 after the state field.
    let ticks: u64 = fields[11..15].iter().sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    ticks * 1_000_000_000 / hz
}

/// Benchmark (prints figures; run with
/// `cargo test --test container bench_ -- --ignored --nocapture`): listing the engine
/// container's processes, as the supervisor does on every health and binding tick, through
/// the container's cgroup versus the daemon's `top`, side by side on one container.
#[test]
#[ignore = "benchmark: prints figures"]
fn bench_container_pid_listing() {
    let Some(_daemon) = daemon_shared() else { return };
    let dockerd: i32 =
        String::from_utf8(Command::new("pidof").arg("dockerd").output().unwrap().stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .expect("dockerd pid")
            .parse()
            .unwrap();
    let inst = Instance::new("bench");
    let port = agent::free_port();
    let p = port.to_string();
    let cmd = ["/nodeagent", "simulate", "--host", "127.0.0.1", "--port", &p, "--workers", "3"];
    let mut rt_ = runtime(&settings(), &one_cpu_binding(), &cmd, &inst);
    rt().block_on(async {
        rt_.start().await.unwrap();
        let pids = pids_until(&mut rt_, 5).await;
        assert_eq!(pids.len(), 5);
        let (n_cg, n_top) = (2000u32, 100u32);
        let (t0, c0, d0) = (Instant::now(), thread_cpu_ns(), process_cpu_ns(dockerd));
        for _ in 0..n_cg {
            assert_eq!(rt_.pids_from_cgroup().unwrap().len(), 5);
        }
        let (t1, c1, d1) = (Instant::now(), thread_cpu_ns(), process_cpu_ns(dockerd));
        for _ in 0..n_top {
            assert_eq!(rt_.pids_from_docker_top().await.unwrap().len(), 5);
        }
        let (t2, c2, d2) = (Instant::now(), thread_cpu_ns(), process_cpu_ns(dockerd));
        let us = |ns: u64, n: u32| ns as f64 / n as f64 / 1000.0;
        let cg = ((t1 - t0).as_nanos() as u64, c1 - c0, d1 - d0);
        let top = ((t2 - t1).as_nanos() as u64, c2 - c1, d2 - d1);
        println!("container pid listing, 5 processes, per call (debug build):");
        println!("{:<22}{:>12}{:>16}{:>18}", "method", "wall µs", "agent CPU µs", "dockerd CPU µs");
        println!(
            "{:<22}{:>12.1}{:>16.1}{:>18.1}",
            "cgroup.procs",
            us(cg.0, n_cg),
            us(cg.1, n_cg),
            us(cg.2, n_cg)
        );
        println!(
            "{:<22}{:>12.1}{:>16.1}{:>18.1}",
            "docker top -eo pid",
            us(top.0, n_top),
            us(top.1, n_top),
            us(top.2, n_top)
        );
        println!(
            "ratio top/cgroup: wall {:.0}x, agent CPU {:.0}x",
            us(top.0, n_top) / us(cg.0, n_cg),
            us(top.1, n_top) / us(cg.1, n_cg)
        );
        rt_.stop(Duration::from_secs(5)).await.unwrap();
    });
    assert_eq!(inst.containers(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// The fault matrix in container mode: the real `nodeagent serve` binary, the simulator in a
// container, real signals, a real dockerd restart. Each row ends with no container of its
// instance and no engine process left.

/// `nodeagent serve` in container mode, with its own state dir, instance and port.
struct Agent {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    state_dir: PathBuf,
    instance: String,
    port: u16,
}

fn serve_config(dir: &Path, instance: &str, port: u16, extra: &str) -> String {
    format!(
        "host = \"local\"\nmodel = \"sim\"\nstate_dir = {state:?}\n\n[engine]\nport = {port}\n\
         argv = [\"/nodeagent\", \"simulate\", \"--host\", \"127.0.0.1\", \"--port\", \"{{port}}\", \
         \"--served-model-name\", \"{{served_model_name}}\", \"--workers\", \"2\"]\n\n\
         [launch]\nmode = \"container\"\ninstance = {instance}\n\n\
         [binding]\ncpus = \"1\"\nmem_policy = \"bind\"\nmem_nodes = [0]\n\n\
         [container]\nimage = {image:?}\nnetwork = \"host\"\nstop_timeout_s = 3\n\n\
         [supervise]\nhealth_interval = \"300ms\"\nhealth_timeout = \"1s\"\nhealth_failures = 2\n\
         binding_check_interval = \"300ms\"\nbackoff_initial = \"200ms\"\nstop_grace = \"3s\"\n\
         ready_timeout = \"30s\"\n{extra}",
        state = dir.join("state").display().to_string(),
        image = test_image(),
    )
}

impl Agent {
    /// A fresh instance (unique per test, and apart from a concurrent run's most of the time)
    /// and port; `extra` is appended to the config. `launch.instance` is at most 1024.
    fn start(row: u32, extra: &str) -> Agent {
        assert!(row < 100, "row {row}: instance numbers are 100 per run");
        let instance = (std::process::id() % 10 * 100 + row).to_string();
        let port = agent::free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodeagent.toml"),
            serve_config(dir.path(), &instance, port, extra),
        )
        .unwrap();
        Self::start_in(dir, instance, port)
    }

    fn start_in(dir: tempfile::TempDir, instance: String, port: u16) -> Agent {
        // stderr to a file: the log is read after the agent exits.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("nodeagent.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let state_dir = dir.path().join("state");
        Agent { child: Some(child), dir, state_dir, instance, port }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn status(&self) -> Option<serde_json::Value> {
        agent::status(&self.state_dir, &["--timeout", "2s"])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits for a status that satisfies `cond`; the agent's log in the panic message.
    fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status().filter(|s| cond(s)) {
                return s;
            }
            assert!(self.running(), "the agent exited waiting for {what}:\n{}", self.log());
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; status {:?}\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ready with `restarts` restarts, the simulator and its 2 workers (and the init) listed.
    fn wait_ready(&mut self, restarts: u64) -> serde_json::Value {
        self.wait_status(
            &format!("ready after {restarts} restarts"),
            Duration::from_secs(90),
            |s| s["state"] == "ready" && s["restarts"] == restarts && pids_of(s).len() == 4,
        )
    }

    fn signal(&self, sig: &str) {
        agent::signal(self.pid() as u32, sig);
    }

    fn finish(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(start.elapsed() < timeout, "the agent did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, self.log())
    }

    /// `(id, state)` of every container of this instance, as the CLI lists them.
    fn containers(&self) -> Vec<(String, String)> {
        let filter = format!("label=io.nodeagent.instance={}", self.instance);
        let (ok, out) =
            docker(&["ps", "-a", "--filter", &filter, "--format", "{{.ID}} {{.State}}"]);
        assert!(ok, "docker ps failed: {out}");
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, st)| (id.to_string(), st.to_string()))
            .collect()
    }

    /// Live processes of this agent's engine, found by command line on the host (the engine
    /// and its workers carry the port): what the agent left behind.
    fn engine_processes(&self) -> Vec<i32> {
        let needle = format!("--port {}", self.port);
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = cmdline(pid);
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))
            });
            if cmd.contains("simulate") && cmd.contains(&needle) && !zombie {
                found.push(pid);
            }
        }
        found
    }

    /// SIGTERM, exit 0, and nothing left: no container of the instance, no engine process.
    fn stop_and_check_nothing_left(&mut self) {
        self.signal("-TERM");
        let (status, log) = self.finish(Duration::from_secs(30));
        assert!(status.success(), "agent exit {status:?}:\n{log}");
        self.assert_nothing_left();
    }

    fn assert_nothing_left(&self) {
        assert_eq!(self.containers(), Vec::<(String, String)>::new(), "{}", self.log());
        // The host's processes of a removed container may take a moment to be reaped.
        let start = Instant::now();
        while !self.engine_processes().is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.engine_processes(), Vec::<i32>::new());
        assert_eq!(http_status(self.port, "/health"), None);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A failed test still stops its engine and leaves no container.
        agent::stop_child(self.child.take(), Duration::from_secs(30));
        if support::daemon_answers() {
            for (id, _) in self.containers() {
                let _ = docker(&["rm", "-f", &id]);
            }
        }
    }
}

fn pids_of(status: &serde_json::Value) -> Vec<i32> {
    status["pids"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|p| p.as_i64()).map(|p| p as i32).collect())
}

/// The simulator's main process (not a worker, not the init, whose command line names the
/// simulator's too) among `pids`.
fn simulator_main(pids: &[i32]) -> i32 {
    *pids
        .iter()
        .find(|p| cmdline(**p).starts_with("/nodeagent simulate "))
        .unwrap_or_else(|| panic!("no simulator among {pids:?}"))
}

fn simulator_worker(pids: &[i32]) -> i32 {
    *pids
        .iter()
        .find(|p| cmdline(**p).contains("simulate-worker"))
        .unwrap_or_else(|| panic!("no simulator worker among {pids:?}"))
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

fn gone(pids: &[i32]) -> bool {
    pids.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// One restart after a fault in the first engine: a new container, the old one's processes
/// gone, the reason recorded.
fn assert_restarted(
    agent: &mut Agent,
    first: &serde_json::Value,
    first_ids: &[(String, String)],
    why: &str,
) {
    let st = agent.wait_ready(1);
    let last = st["last_exit"].as_str().unwrap_or_default().to_string();
    assert!(last.contains(why), "last_exit {last:?}, want {why:?}");
    let ids = agent.containers();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0].0, first_ids[0].0, "the container was not replaced");
    assert_eq!(ids[0].1, "running");
    let old = pids_of(first);
    let start = Instant::now();
    while !gone(&old) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone(&old), "processes of the first engine survived: {old:?}");
    assert_eq!(http_status(agent.port, "/health"), Some(200));
}

/// A ready agent (`row` numbers its instance), `sig` sent to the process `target` picks from
/// its engine's pids, then one restart in a new container (`why` in `last_exit`) and a clean
/// stop (skipped without a daemon, like every test here).
fn fault_is_restarted(
    row: u32,
    target: fn(&[i32]) -> i32,
    sig: nix::sys::signal::Signal,
    why: &str,
) {
    let Some(_daemon) = daemon_shared() else { return };
    let mut agent = Agent::start(row, "");
    let first = agent.wait_ready(0);
    let first_ids = agent.containers();
    kill(target(&pids_of(&first)), sig);
    assert_restarted(&mut agent, &first, &first_ids, why);
    agent.stop_and_check_nothing_left();
}

#[test]
fn matrix_engine_crash_is_restarted_in_a_new_container() {
    fault_is_restarted(1, simulator_main, nix::sys::signal::SIGKILL, "engine");
}

#[test]
fn matrix_engine_hang_is_restarted_in_a_new_container() {
    // SIGSTOP: the process is there, the port is open, nothing answers.
    fault_is_restarted(2, simulator_main, nix::sys::signal::SIGSTOP, "engine hung");
}

#[test]
fn matrix_worker_kill_is_restarted_in_a_new_container() {
    fault_is_restarted(3, simulator_worker, nix::sys::signal::SIGKILL, "died");
}

#[test]
fn matrix_agent_sigterm_leaves_nothing() {
    let Some(_daemon) = daemon_shared() else { return };
    let mut agent = Agent::start(4, "");
    let st = agent.wait_ready(0);
    let pids = pids_of(&st);
    assert_eq!(agent.containers().len(), 1);
    agent.stop_and_check_nothing_left();
    assert!(gone(&pids), "{pids:?}");
}

#[test]
fn matrix_agent_sigkill_then_start_removes_the_leftover_container() {
    let Some(_daemon) = daemon_shared() else { return };
    let mut agent = Agent::start(5, "");
    let st = agent.wait_ready(0);
    let old = pids_of(&st);
    let old_ids = agent.containers();
    agent.signal("-KILL");
    let (status, _) = agent.finish(Duration::from_secs(10));
    assert!(!status.success());
    // The container outlives a SIGKILLed agent: that is the leftover.
    assert_eq!(agent.containers(), old_ids);
    assert!(!gone(&old));
    // A new agent of the same instance finds it by label and removes it before starting.
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    let (instance, port) = (agent.instance.clone(), agent.port);
    let mut second = Agent::start_in(dir, instance, port);
    let st = second.wait_ready(0);
    assert!(gone(&old), "leftover processes survived: {old:?}");
    assert!(pids_of(&st).iter().all(|p| !old.contains(p)));
    let ids = second.containers();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].0, old_ids[0].0);
    assert!(second.log().contains("removing a leftover engine container"), "{}", second.log());
    second.stop_and_check_nothing_left();
}

/// Watches the agent's status from a thread while dockerd restarts: every message seen.
fn watch_messages(
    state_dir: PathBuf,
) -> (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<Vec<String>>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let out = Command::new(BIN)
                .args(["status", "--json", "--timeout", "2s", "--state-dir"])
                .arg(&state_dir)
                .output()
                .unwrap();
            if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                let line = format!(
                    "{}: {}",
                    s["state"].as_str().unwrap_or("?"),
                    s["message"].as_str().unwrap_or("")
                );
                if seen.last() != Some(&line) {
                    seen.push(line);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    });
    (stop, handle)
}

/// Takes dockerd away under a running agent for 2 s (`while_down` checks the engine
/// meanwhile), starts it again with `flags`, waits with `back` for the agent to settle, and
/// returns that status: every status message seen through the outage must include the daemon
/// wait, and the restart budget must be untouched.
fn dockerd_outage(
    agent: &mut Agent,
    flags: &[&str],
    while_down: impl FnOnce(&Agent),
    back: impl FnOnce(&mut Agent) -> serde_json::Value,
) -> serde_json::Value {
    let (stop, watcher) = watch_messages(agent.state_dir.clone());
    support::stop_dockerd();
    while_down(agent);
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.running(), "the agent exited while dockerd was down:\n{}", agent.log());
    support::start_dockerd(flags);
    let st = back(agent);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(
        seen.iter().any(|m| m.contains("waiting for the Docker daemon")),
        "status never said it waited for the daemon: {seen:#?}\n{}",
        agent.log()
    );
    assert_eq!(st["restarts"], 0, "the outage spent the restart budget: {seen:#?}");
    st
}

/// Issue 12, defect 1: a dockerd restart (without live-restore: the daemon stops the engine
/// container on its way out) must not end supervision. The agent waits for the daemon (not
/// spending its restart budget), then runs the engine again in one container, with no
/// exited container left behind.
#[test]
fn matrix_dockerd_restart_waits_for_the_daemon_and_runs_the_engine_again() {
    let Some(_daemon) = daemon_exclusive() else { return };
    let mut agent = Agent::start(6, "");
    // Dropped before the agent: the daemon runs again when the agent's drop removes what is
    // left of a failed run.
    let _restore = support::DaemonRunning;
    let first = agent.wait_ready(0);
    let first_ids = agent.containers();
    assert_eq!(first_ids.len(), 1);
    let st = dockerd_outage(&mut agent, &[], |_| {}, |agent| agent.wait_ready(0));
    let ids = agent.containers();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0].1, "running", "{ids:?}");
    assert!(gone(&pids_of(&first)), "the first engine's processes survived");
    assert_eq!(http_status(agent.port, "/health"), Some(200));
    // Still supervised: a crash now is restarted as usual.
    kill(simulator_main(&pids_of(&st)), nix::sys::signal::SIGKILL);
    agent.wait_ready(1);
    agent.stop_and_check_nothing_left();
}

/// With `--live-restore` the engine container survives the daemon's restart: the agent
/// adopts it (same container, same processes) instead of restarting the engine.
#[test]
fn matrix_dockerd_restart_with_live_restore_adopts_the_running_container() {
    let Some(_daemon) = daemon_exclusive() else { return };
    let _restore = support::DaemonFlags::set(&["--live-restore"]);
    let mut agent = Agent::start(7, "");
    let _running = support::DaemonRunning;
    let first = agent.wait_ready(0);
    let first_ids = agent.containers();
    let st = dockerd_outage(
        &mut agent,
        &["--live-restore"],
        // The engine keeps serving while the daemon is away.
        |agent| assert_eq!(http_status(agent.port, "/health"), Some(200)),
        // Adopted: ready again, the same container and processes, no restart.
        |agent| {
            agent.wait_status("the container adopted", Duration::from_secs(90), |s| {
                s["state"] == "ready"
                    && s["message"].as_str().is_some_and(|m| !m.contains("waiting"))
            })
        },
    );
    assert_eq!(agent.containers(), first_ids, "not adopted:\n{}", agent.log());
    assert_eq!(pids_of(&st), pids_of(&first), "not adopted:\n{}", agent.log());
    assert!(agent.log().contains("adopted"), "{}", agent.log());
    // Still supervised after the adoption: a crash is seen and restarted.
    kill(simulator_main(&pids_of(&st)), nix::sys::signal::SIGKILL);
    agent.wait_ready(1);
    agent.stop_and_check_nothing_left();
}

// ---------------------------------------------------------------------------------------------
// Only the instance's GPU device nodes: `nodeagent serve` in container mode for GPUs 1 and 2 of
// the seed host (the fake mx-smi gives their bus ids, 0000:08:00.0 and 0000:0e:00.0), a sysfs
// tree whose `drm/` dirs give each GPU's nodes (numbered against bus order, as on real hosts),
// and stand-in character devices made with mknod under a temp host root.

/// `mknod PATH c 1 3` (the major/minor of /dev/null): a harmless real character device.
fn mknod_null(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ok = Command::new("mknod").arg(path).args(["c", "1", "3"]).status().unwrap();
    assert!(ok.success(), "mknod {}", path.display());
}

/// The seed host's mx-smi table with its process rows left out: their recorded pids could be
/// live processes of this machine, which the occupancy preflight would rightly refuse.
fn seed_table_without_processes(to: &Path) {
    let text =
        std::fs::read_to_string(agent::crate_path("testdata/mx-smi/seed-mx-smi.idle.txt")).unwrap();
    let is_process_row = |l: &str| {
        let f: Vec<&str> = l.trim_matches(|c| c == '|' || c == ' ').split_whitespace().collect();
        f.len() == 4 && f[0].parse::<u32>().is_ok() && f[1].parse::<u32>().is_ok()
    };
    let kept: Vec<&str> = text.lines().filter(|l| !is_process_row(l)).collect();
    assert_eq!(kept.len() + 4, text.lines().count(), "the seed table lists 4 processes");
    std::fs::write(to, kept.join("\n") + "\n").unwrap();
}

#[test]
fn the_container_gets_only_the_instances_gpu_nodes_and_its_cpuset() {
    let Some(_daemon) = daemon_shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The fake mx-smi answers with the seed host's table (GPUs 0-3 on 05, 08, 0e, 0f:00.0).
    let tools = dir.path().join("mx-smi");
    std::fs::create_dir(&tools).unwrap();
    seed_table_without_processes(&tools.join("1.txt"));
    // sysfs: every GPU has nodes; the instance's are card3/renderD130 (GPU 1) and
    // card1/renderD128 (GPU 2).
    let sys = dir.path().join("sys");
    for (bus, card, render) in [
        ("0000:05:00.0", "card2", "renderD129"),
        ("0000:08:00.0", "card3", "renderD130"),
        ("0000:0e:00.0", "card1", "renderD128"),
        ("0000:0f:00.0", "card4", "renderD131"),
    ] {
        let drm = sys.join("bus/pci/devices").join(bus).join("drm");
        std::fs::create_dir_all(&drm).unwrap();
        for n in [card, render, "controlD64"] {
            std::fs::create_dir(drm.join(n)).unwrap();
        }
    }
    let host = dir.path().join("host");
    for n in
        ["card1", "card2", "card3", "card4", "renderD128", "renderD129", "renderD130", "renderD131"]
    {
        mknod_null(&host.join("dev/dri").join(n));
    }
    mknod_null(&host.join("dev/mxcd"));

    let instance = (std::process::id() % 10 * 100 + 90).to_string();
    let port = agent::free_port();
    // The configured devices are the seed's (`/dev/dri` whole, `/dev/mxcd`): replaced.
    let extra = "\n[container.env]\nMACA_VISIBLE_DEVICES = \"1,2\"\n";
    let config = serve_config(dir.path(), &instance, port, extra)
        .replace("[binding]", "gpus = [1, 2]\n\n[binding]")
        .replace(
            "network = \"host\"",
            "network = \"host\"\ndevices = [\"/dev/dri\", \"/dev/mxcd\"]",
        );
    std::fs::write(dir.path().join("nodeagent.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("nodeagent.toml"))
        .args(["--nvidia-smi", "/nonexistent/nvidia-smi", "--mx-smi"])
        .arg(agent::crate_path("testdata/fake-tools/mx-smi"))
        .arg("--sysfs-root")
        .arg(&sys)
        .arg("--host-root")
        .arg(&host)
        .env("FAKE_MXSMI_DIR", &tools)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut agent = Agent {
        child: Some(child),
        dir,
        state_dir: PathBuf::new(),
        instance: instance.clone(),
        port,
    };
    agent.state_dir = agent.dir.path().join("state");
    let status = agent.wait_status("ready", Duration::from_secs(90), |s| s["state"] == "ready");
    let containers = agent.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let info = inspect(&containers[0].0);
    let hc = &info["HostConfig"];
    let devices: Vec<(String, String)> = hc["Devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_string();
            (s("PathOnHost"), s("PathInContainer"))
        })
        .collect();
    let h = |p: &str| host.join(p.trim_start_matches('/')).display().to_string();
    let want: Vec<(String, String)> = [
        "/dev/dri/card3",
        "/dev/dri/renderD130",
        "/dev/dri/card1",
        "/dev/dri/renderD128",
        "/dev/mxcd",
    ]
    .iter()
    .map(|p| (h(p), p.to_string()))
    .collect();
    assert_eq!(devices, want, "{}", agent.log());
    assert_eq!(hc["CpusetCpus"], "1");
    let env: Vec<&str> =
        info["Config"]["Env"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&"MACA_VISIBLE_DEVICES=0,1"), "{env:?}");
    // Inside, from the host: /dev/dri holds exactly the instance's nodes, and they are the
    // stand-in character devices (major 1, minor 3).
    let pid = simulator_main(&pids_of(&status));
    let root = PathBuf::from(format!("/proc/{pid}/root/dev"));
    let mut inside: Vec<String> = std::fs::read_dir(root.join("dri"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    assert_eq!(inside, ["card1", "card3", "renderD128", "renderD130"]);
    for n in ["dri/card3", "mxcd"] {
        let m = std::fs::metadata(root.join(n)).unwrap();
        assert!(m.file_type().is_char_device(), "{n}");
        assert_eq!((m.rdev() >> 8, m.rdev() & 0xff), (1, 3), "{n}");
    }
    assert_eq!(status_field(pid, "Cpus_allowed_list").as_deref(), Some("1"));
    agent.signal("-INT");
    let (exit, log) = agent.finish(Duration::from_secs(30));
    assert!(exit.success(), "{log}");
    assert_eq!(agent.containers(), Vec::<(String, String)>::new());
    drop(host);
}

#[test]
fn a_gpu_without_device_nodes_is_a_preflight_error() {
    let Some(_daemon) = daemon_shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("mx-smi");
    std::fs::create_dir(&tools).unwrap();
    seed_table_without_processes(&tools.join("1.txt"));
    let instance = (std::process::id() % 10 * 100 + 91).to_string();
    let config = serve_config(dir.path(), &instance, agent::free_port(), "")
        .replace("[binding]", "gpus = [3]\n\n[binding]");
    std::fs::write(dir.path().join("nodeagent.toml"), config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("nodeagent.toml"))
        .args(["--nvidia-smi", "/nonexistent/nvidia-smi", "--mx-smi"])
        .arg(agent::crate_path("testdata/fake-tools/mx-smi"))
        .arg("--sysfs-root")
        .arg(dir.path().join("empty-sys"))
        .env("FAKE_MXSMI_DIR", &tools)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert_eq!(
        line,
        format!(
            "error: container devices: gpu 3 (0000:0f:00.0): no DRM card and render node in {}/bus/pci/devices/0000:0f:00.0/drm (is the driver loaded?)",
            dir.path().join("empty-sys").display()
        )
    );
    let filter = format!("label=io.nodeagent.instance={instance}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]).1.trim(), "");
}

/// Per-rank binding in container mode (issue 15 item 6): a container's process, listed by the
/// fake `nvidia-smi` on GPU 0, is moved by the rank binder (as `serve` runs it; the Docker
/// runtime has no containment of the agent's, so the container's cgroup is taken from the
/// worker's own) into a child cgroup `rank-0` of the container's, with the planned cpuset.
/// Checked from the host: the cgroup's files under /sys/fs/cgroup and `/proc/PID/status`.
#[test]
fn a_containers_rank_worker_lands_in_its_own_child_cgroup_with_the_planned_cpuset() {
    use nodeagent::host::runner::SystemRunner;
    use nodeagent::supervise::occupancy::check::GpuTool;
    use nodeagent::supervise::ranks::{RankBinder, RankTarget};
    let Some(_daemon) = daemon_shared() else { return };
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let cpus: CpuSet = online.trim().parse().unwrap();
    let last = cpus.iter().last().unwrap();
    let name = format!("nodeagent-ranktest-{}", std::process::id());
    let (ok, id) = docker(&["run", "-d", "--name", &name, test_image(), "/bin/sleep", "300"]);
    assert!(ok, "docker run: {id}");
    let id = id.trim().to_string();
    let result = std::panic::catch_unwind(|| {
        let pid = inspect(&id)["State"]["Pid"].as_i64().unwrap() as i32;
        let tools = tempfile::tempdir().unwrap();
        std::fs::write(
            tools.path().join("nvidia-smi-query.csv"),
            "index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n\
             0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559 MiB, 21653 MiB, 0 %, 31, 69.45 W\n",
        )
        .unwrap();
        std::fs::write(
            tools.path().join("nvidia-smi-apps.csv"),
            format!("gpu_bus_id, pid, process_name, used_gpu_memory [MiB]\n00000000:18:00.0, {pid}, VLLM::Worker_TP0, 21644 MiB\n"),
        )
        .unwrap();
        std::env::set_var("FAKE_NVSMI_DIR", tools.path());
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-tools/nvidia-smi");
        let rank = RankTarget {
            rank: 0,
            gpu: 0,
            node: 0,
            cpus: std::iter::once(last).collect(),
            memory_node: Some(0),
        };
        let mut binder = RankBinder::new(
            vec![rank],
            Some(GpuTool::NvidiaSmi(fake)),
            Box::new(SystemRunner),
            Duration::from_secs(10),
        );
        let states = binder.tick(&[pid], None);
        assert_eq!(states[0].problem, None, "{states:?}");
        let dir = PathBuf::from(states[0].cgroup.clone().unwrap());
        assert!(dir.ends_with(format!("{id}/rank-0")), "{}", dir.display());
        assert!(dir.starts_with("/sys/fs/cgroup"), "{}", dir.display());
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
        assert_eq!(read("cgroup.procs"), pid.to_string());
        assert_eq!(read("cpuset.cpus"), last.to_string());
        assert_eq!(status_field(pid, "Cpus_allowed_list").unwrap(), last.to_string());
        dir
    });
    let _ = docker(&["rm", "-f", &name]);
    let dir = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(dir.parent().unwrap());
}
