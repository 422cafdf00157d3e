//! Shared by `tests/container.rs` and `tests/systemd.rs`: the Docker CLI as an independent
//! observer, starting dockerd when absent, and the test image `nodeagent-test-sim:latest`,
//! made `FROM scratch` in effect (`docker import` of a rootfs tarball; no registry is reachable)
//! holding this build's nodeagent binary, the shared libraries `ldd` lists, a static busybox
//! (`sh`, `sleep`, `setsid`, ...) and an `/etc/group` with `video`.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const IMAGE: &str = "nodeagent-test-sim:latest";

pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("running the docker CLI");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Whether this is a CI run (`CI=true`, as CI services set it): there the setup installs and
/// starts Docker, so a missing engine is a broken setup, not a reason to skip.
fn under_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false)
}

/// Starts dockerd when none answers (through the project's setup script). When none can be
/// started: under CI (`CI=true`) the calling test fails, as `tests/vm.rs` does for qemu;
/// elsewhere it is skipped (`false`) with a message naming it.
pub fn docker_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        if Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
            return true;
        }
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
        let _ = Command::new(setup).arg("test").status();
        Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success())
    });
    if !ready {
        let test = std::thread::current().name().unwrap_or("a container test").to_string();
        let msg = format!(
            "{test}: no Docker engine could be started (`docker info` fails; \
             scripts/setup.sh test installs and starts one)"
        );
        assert!(!under_ci(), "{msg}");
        eprintln!("SKIPPED {msg}");
    }
    ready
}

/// Shared libraries the binary loads, from `ldd` output lines like
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
pub fn ldd(binary: &Path) -> Vec<PathBuf> {
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
pub fn test_image() -> &'static str {
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

/// Where the test-started dockerd writes, as `scripts/setup.sh` starts it.
const DOCKERD_LOG: &str = "/var/log/nodeagent-test-dockerd.log";

/// Whether the daemon answers now (`docker version` reaches the server; bounded, since a
/// daemon still starting may accept a connection and answer nothing for a while).
pub fn daemon_answers() -> bool {
    Command::new("timeout")
        .args(["10", "docker", "version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The pid of the running dockerd, if one runs.
pub fn dockerd_pid() -> Option<i32> {
    let out = Command::new("pidof").arg("dockerd").output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next()?.parse().ok()
}

/// The running dockerd's command line.
pub fn dockerd_cmdline() -> String {
    dockerd_pid()
        .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

fn wait_until(what: &str, timeout: std::time::Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Stops dockerd with SIGTERM (as `systemctl restart docker` does) and waits until it has
/// exited and its socket no longer answers. Without `--live-restore` the daemon stops every
/// container on its way out; with it, they keep running.
pub fn stop_dockerd() {
    let Some(pid) = dockerd_pid() else { return };
    let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(ok.success(), "kill -TERM {pid} (dockerd) failed");
    wait_until("dockerd to exit", std::time::Duration::from_secs(90), || {
        !Path::new(&format!("/proc/{pid}")).exists() || dockerd_pid() != Some(pid)
    });
    wait_until("the docker socket to stop answering", std::time::Duration::from_secs(30), || {
        !daemon_answers()
    });
}

/// Starts dockerd the way `scripts/setup.sh` does (`nohup dockerd >LOG 2>&1 &`, detached in
/// its own session, appending to the log), with `extra` flags, and waits for it to answer.
pub fn start_dockerd(extra: &[&str]) {
    let line = format!("nohup dockerd {} >>{DOCKERD_LOG} 2>&1 &", extra.join(" "));
    let ok = Command::new("setsid").args(["sh", "-c", &line]).status().unwrap();
    assert!(ok.success(), "starting dockerd failed");
    wait_until("dockerd to answer", std::time::Duration::from_secs(90), daemon_answers);
}

/// Restarts dockerd with `extra` flags (`--live-restore`); on drop, even when the test
/// failed, the daemon runs again as `scripts/setup.sh` starts it (no flags).
pub struct DaemonFlags {
    flags: Vec<String>,
}

impl DaemonFlags {
    pub fn set(extra: &[&str]) -> DaemonFlags {
        let guard = DaemonFlags { flags: extra.iter().map(|s| s.to_string()).collect() };
        stop_dockerd();
        start_dockerd(extra);
        guard
    }
}

impl Drop for DaemonFlags {
    fn drop(&mut self) {
        let cmdline = dockerd_cmdline();
        let flagged = self.flags.iter().any(|f| cmdline.split_whitespace().any(|w| w == f));
        if flagged || !daemon_answers() {
            stop_dockerd();
            start_dockerd(&[]);
        }
    }
}

/// Makes sure dockerd runs when dropped (a test that restarts it and fails midway).
pub struct DaemonRunning;

impl Drop for DaemonRunning {
    fn drop(&mut self) {
        if !daemon_answers() {
            if dockerd_pid().is_some() {
                stop_dockerd();
            }
            start_dockerd(&[]);
        }
    }
}
