//! Container mode against a REAL Docker engine (Debian's docker.io; `scripts/setup.sh test`
//! starts dockerd). The test image `nodeagent-test-sim:latest` is made here from local files,
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nodeagent::binding::{Binding, MemPolicy};
use nodeagent::host::cpuset::CpuSet;
use nodeagent::launch::container::{ContainerSettings, ContainerSpec};
use nodeagent::launch::docker::{DockerRuntime, LogSink};
use nodeagent::supervise::runtime::{EngineExit, EngineRuntime, RuntimeError};

const IMAGE: &str = "nodeagent-test-sim:latest";

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("running the docker CLI");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Starts dockerd when none answers (through the project's setup script); `false` with a loud
/// message only when it cannot be started at all.
fn docker_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
            return true;
        }
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
        let _ = Command::new(setup).arg("test").status();
        let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "\n\n*** SKIPPING container tests: no Docker engine could be started ***\n\n"
            );
        }
        ok
    })
}

/// Shared libraries the binary loads, from `ldd` output lines like
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Builds the test image once per binary version (a label records the binary's size and
/// mtime, so an unchanged binary is not re-imported).
fn test_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_nodeagent"));
        let meta = std::fs::metadata(bin).unwrap();
        let stamp = format!("{}-{}", meta.len(), meta.mtime());
        let (ok, current) = docker(&[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.nodeagent.test.stamp\"}}",
            IMAGE,
        ]);
        if ok && current.trim() == stamp {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "data"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::copy(bin, r.join("nodeagent")).unwrap();
        for lib in ldd(bin) {
            let dest = r.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "setsid", "cat", "ls", "kill", "wget"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nvideo:x:44:\n").unwrap();
        let tar = r.with_extension("tar");
        let st =
            Command::new("tar").arg("-C").arg(r).arg("-cf").arg(&tar).arg(".").status().unwrap();
        assert!(st.success(), "tar of the test rootfs failed");
        let label = format!("LABEL io.nodeagent.test.stamp={stamp}");
        let (ok, out) = docker(&["import", "--change", &label, tar.to_str().unwrap(), IMAGE]);
        let _ = std::fs::remove_file(&tar);
        assert!(ok, "docker import of the test image failed: {out}");
    });
    IMAGE
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

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
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
    if !docker_ready() {
        return;
    }
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
        // init + sh-turned-sleep 1002 + sleep 1000 + setsid'd sleep 1001
        let pids = pids_until(&mut rt_, 4).await;
        assert_eq!(pids.len(), 4, "container processes: {pids:?}");
        let cmds: Vec<String> = pids.iter().map(|p| cmdline(*p)).collect();
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
            Err(e @ RuntimeError::Preflight(_)) => {
                eprintln!("{e}");
                e.to_string()
            }
            other => panic!("expected a preflight error, got {other:?}"),
        }
    })
}

#[test]
fn preflight_refuses_a_missing_image_device_volume_or_engine_and_creates_nothing() {
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
    if !docker_ready() {
        return;
    }
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
