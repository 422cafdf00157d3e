//! Shared by `tests/systemd.rs` and `tests/package.rs`: a container running a real systemd as
//! its PID 1 (the image `scripts/systemd-test-image.sh` builds, Debian bookworm with systemd,
//! made without a registry), the Docker CLI calls they make on it, and its removal on drop.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const SYSTEMD_IMAGE: &str = "nodeagent-test-systemd:bookworm";

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("running the docker CLI")
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// `docker ARGS` that must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Builds the systemd test image when this Docker engine lacks it.
pub fn build_image() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-test-image.sh");
    let st = Command::new(script).arg(SYSTEMD_IMAGE).status().unwrap();
    assert!(st.success(), "building the systemd test image failed");
}

/// A systemd container, removed on drop.
pub struct SystemdBox {
    pub name: String,
}

impl SystemdBox {
    /// Boots the image as `name` (a leftover of that name is removed first) with `extra`
    /// `docker run` arguments (the network, more volumes), and waits until systemd is up:
    /// `running`, or `degraded` (a unit of the minimal image that cannot work in a container);
    /// `starting` means not yet. Docker's default seccomp profile refuses set_mempolicy/mbind
    /// without SYS_NICE (numactl's binding); a real host has no such filter around the unit.
    pub fn boot(name: String, extra: &[&str]) -> SystemdBox {
        build_image();
        let _ = docker(&["rm", "-f", &name]);
        let mut run = vec!["run", "-d", "--name", &name, "--cap-add", "SYS_ADMIN"];
        run.extend(["--cap-add", "SYS_NICE", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]);
        run.extend(["--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"]);
        run.extend_from_slice(extra);
        run.extend([SYSTEMD_IMAGE, "/lib/systemd/systemd"]);
        docker_ok(&run);
        let b = SystemdBox { name };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = b.exec(&["systemctl", "is-system-running"]).0;
            if state.trim() == "running" || state.trim() == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "systemd did not come up: {state}");
            std::thread::sleep(Duration::from_millis(300));
        }
        b
    }

    /// Runs `cmd` in the box (apt's questions off): its output and whether it succeeded.
    pub fn exec(&self, cmd: &[&str]) -> (String, bool) {
        let mut args = vec!["exec", "-e", "DEBIAN_FRONTEND=noninteractive", self.name.as_str()];
        args.extend_from_slice(cmd);
        let o = docker(&args);
        (text(&o), o.status.success())
    }

    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let (out, ok) = self.exec(cmd);
        assert!(ok, "{cmd:?} in the systemd container failed: {out}");
        out
    }

    /// Copies a host file in, making its folder first.
    pub fn copy_in(&self, host: &Path, inside: &str) {
        if let Some(dir) = Path::new(inside).parent() {
            self.exec_ok(&["mkdir", "-p", dir.to_str().unwrap()]);
        }
        docker_ok(&["cp", "-L", host.to_str().unwrap(), &format!("{}:{inside}", self.name)]);
    }

    pub fn write(&self, inside: &str, content: &str) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), content).unwrap();
        self.copy_in(tmp.path(), inside);
    }

    pub fn exists(&self, path: &str) -> bool {
        self.exec(&["test", "-e", path]).1
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
