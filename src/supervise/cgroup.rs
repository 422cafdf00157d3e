//! The engine in a cgroup of its own, the way systemd and container runtimes track processes:
//! every process the engine ever forks is in it, whatever it does with sessions, process groups
//! or double forks, so a stop kills the cgroup and a pid file is only a hint.
//!
//! Where the cgroup goes ([`EngineCgroup::create`]): on a pure cgroup v2 host, a child of the
//! agent's own cgroup when that is writable (a unit with `Delegate=yes`; the agent then moves
//! itself into a leaf `agent` so the controllers can be enabled for its children), else
//! `nodeagent-<key>` under the v2 root; on a v1 (or hybrid) host, `nodeagent-<key>` under the
//! agent's own cgroup of the `pids`, `freezer`, `memory` and `cpuacct` hierarchies that exist.
//! The engine joins it between fork and exec ([`Joiner::join`], from the child itself: nothing
//! it runs can fork before it is inside). The key names the agent's instance and state dir, so a
//! restarted agent finds what a killed one left ([`EngineCgroup::locate`]).
//!
//! Killing ([`EngineCgroup::kill`]): `cgroup.kill` where the kernel has it (5.14); else freeze
//! (`cgroup.freeze`, v1 `freezer.state`), SIGKILL every process listed, thaw, until empty; else
//! SIGKILL every process listed, until empty. Usage: `memory.current` / `memory.usage_in_bytes`
//! and `cpu.stat` `usage_usec` / `cpuacct.usage`.
//!
//! Parsers are plain functions over text; the layout is read under a root path (a seam: the
//! unit tests use temp dirs). Not here: when to stop (`super::process`), the `/proc` walk that
//! remains the fallback where no cgroup is writable (`super::process`, `super::procs`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Where cgroups are mounted on every distribution this agent knows.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 hierarchies the engine joins, in order: the first one present is the one whose
/// `cgroup.procs` is read for the engine's processes.
const V1_CONTROLLERS: [&str; 4] = ["pids", "freezer", "memory", "cpuacct"];

/// The v2 controllers enabled for the engine's cgroup when the parent offers them.
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("creating cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {} still holds processes {pids:?} after SIGKILL", path.display())]
    Survivors { path: PathBuf, pids: Vec<i32> },
    #[error("no writable cgroup for the engine under {}", root.display())]
    NoneWritable { root: PathBuf },
}

/// The engine's resource use as its cgroup counts it; `None` where the cgroup does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub memory_bytes: Option<u64>,
    /// `cpu.stat` `usage_usec` (v2) or `cpuacct.usage` (v1), in seconds.
    pub cpu_seconds: Option<f64>,
}

/// One line of `/proc/self/cgroup`: `4:memory:/system.slice/x.service`, `0::/init.scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/PID/cgroup`; bad lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let id = f.next()?.parse().ok()?;
            let controllers = f.next()?;
            let path = f.next()?.to_string();
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.trim_start_matches("name=").to_string())
                .collect();
            Some(CgroupLine { id, controllers, path })
        })
        .collect()
}

/// The process's v2 path (`0::PATH`).
pub fn v2_path(lines: &[CgroupLine]) -> Option<&str> {
    lines.iter().find(|l| l.id == 0 && l.controllers.is_empty()).map(|l| l.path.as_str())
}

/// The process's path in the v1 hierarchy of `controller`.
pub fn v1_path<'a>(lines: &'a [CgroupLine], controller: &str) -> Option<&'a str> {
    lines.iter().find(|l| l.controllers.iter().any(|c| c == controller)).map(|l| l.path.as_str())
}

/// Pids of a `cgroup.procs` file, one per line.
pub fn parse_procs(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).filter(|p| *p > 0).collect()
}

/// A file holding one unsigned number (`memory.current`, `cpuacct.usage`); `max` is `None`.
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `usage_usec` of a v2 `cpu.stat` (`usage_usec 1234\nuser_usec ...`).
pub fn parse_cpu_stat_usage_usec(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
}

/// The engine cgroup's name for an agent instance and state dir: `nodeagent-<instance>-<hash>`,
/// the instance reduced to `[A-Za-z0-9_-]` and the hash (FNV-1a, 32 bits) of the state dir's
/// absolute path, so two agents on one host never share one and a restarted agent finds its own.
pub fn cgroup_name(instance: &str, state_dir: &Path) -> String {
    let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h: u32 = 0x811c_9dc5;
    for b in abs.as_os_str().as_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    let inst: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    format!("nodeagent-{inst}-{h:08x}")
}

/// The cgroup layout under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `cgroup2` mounted at the root itself.
    V2,
    /// v1 hierarchies (a hybrid host's empty `unified` v2 mount is not used): these
    /// controllers of [`V1_CONTROLLERS`] have a hierarchy of their own under the root.
    V1(Vec<&'static str>),
    /// Nothing usable.
    None,
}

/// Reads the layout under `root` from which files exist.
pub fn layout(root: &Path) -> Layout {
    if root.join("cgroup.controllers").is_file() {
        return Layout::V2;
    }
    let v1: Vec<&'static str> = V1_CONTROLLERS
        .into_iter()
        .filter(|c| root.join(c).join("cgroup.procs").is_file())
        .collect();
    if v1.is_empty() {
        Layout::None
    } else {
        Layout::V1(v1)
    }
}

/// Joins `root` and an absolute cgroup path (`/system.slice/x`), never leaving `root`.
fn under(root: &Path, cg: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in cg.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..") {
        p.push(part);
    }
    p
}

/// The pure plan: the directories the engine's cgroup would be, in order of preference, for
/// the layout, the agent's `/proc/self/cgroup` and the name. v2: `(own cgroup's child, true)`
/// first when the agent is not in the root (a delegated unit), then `(root child, false)`. v1:
/// one directory per hierarchy (the `bool` is unused).
pub fn plan(
    layout: &Layout,
    root: &Path,
    lines: &[CgroupLine],
    name: &str,
) -> Vec<(PathBuf, bool)> {
    match layout {
        Layout::V2 => {
            let mut out = Vec::new();
            if let Some(own) = v2_path(lines).filter(|p| under(root, p) != root) {
                out.push((under(root, own).join(name), true));
            }
            out.push((root.join(name), false));
            out
        }
        Layout::V1(controllers) => controllers
            .iter()
            .map(|c| (under(&root.join(c), v1_path(lines, c).unwrap_or("/")).join(name), false))
            .collect(),
        Layout::None => Vec::new(),
    }
}

/// A view of the cgroup file system (the root is a seam for tests).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    pub root: PathBuf,
    /// This process's `/proc/self/cgroup` text.
    pub self_cgroup: String,
}

impl Default for CgroupFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from(CGROUP_ROOT),
            self_cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        }
    }
}

/// The engine's cgroup: the directories it joins and the files that kill and account it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCgroup {
    pub v2: bool,
    /// Every directory the engine joins (v2: one; v1: one per hierarchy). The first one's
    /// `cgroup.procs` (and its children's) lists the engine's processes.
    pub dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create { path: path.to_path_buf(), source }),
    }
}

/// Enables the controllers `parent` offers of [`V2_CONTROLLERS`] for its children.
fn enable_controllers(parent: &Path) -> Result<(), CgroupError> {
    let offered = read(&parent.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read(&parent.join("cgroup.subtree_control")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        let has = |text: &str| text.split_whitespace().any(|w| w == c);
        if has(&offered) && !has(&enabled) {
            write(&parent.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
    }
    Ok(())
}

impl EngineCgroup {
    /// The engine cgroup named `name` as it would be on this host, whether it exists or not
    /// (the first candidate of [`plan`] for v2; every hierarchy for v1). `None` without cgroups.
    pub fn at(fs: &CgroupFs, name: &str) -> Option<Self> {
        let layout = layout(&fs.root);
        let lines = parse_proc_cgroup(&fs.self_cgroup);
        let plan = plan(&layout, &fs.root, &lines, name);
        match layout {
            Layout::V2 => plan.into_iter().next().map(|(d, _)| Self { v2: true, dirs: vec![d] }),
            Layout::V1(_) if !plan.is_empty() => {
                Some(Self { v2: false, dirs: plan.into_iter().map(|(d, _)| d).collect() })
            }
            _ => None,
        }
    }

    /// Leftovers of an earlier agent run: every existing engine cgroup named `name` (a v2 one
    /// may be under the agent's cgroup or the root).
    pub fn locate(fs: &CgroupFs, name: &str) -> Vec<Self> {
        let layout = layout(&fs.root);
        let lines = parse_proc_cgroup(&fs.self_cgroup);
        let plan = plan(&layout, &fs.root, &lines, name);
        match layout {
            Layout::V2 => plan
                .into_iter()
                .filter(|(d, _)| d.is_dir())
                .map(|(d, _)| Self { v2: true, dirs: vec![d] })
                .collect(),
            Layout::V1(_) => {
                let dirs: Vec<PathBuf> =
                    plan.into_iter().map(|(d, _)| d).filter(|d| d.is_dir()).collect();
                if dirs.is_empty() {
                    Vec::new()
                } else {
                    vec![Self { v2: false, dirs }]
                }
            }
            Layout::None => Vec::new(),
        }
    }

    /// Creates the engine's cgroup (see the module header for where). An error means no
    /// cgroup is writable here: the caller falls back to the `/proc` walk.
    pub fn create(fs: &CgroupFs, name: &str) -> Result<Self, CgroupError> {
        let layout = layout(&fs.root);
        let lines = parse_proc_cgroup(&fs.self_cgroup);
        let plan = plan(&layout, &fs.root, &lines, name);
        let none = || CgroupError::NoneWritable { root: fs.root.clone() };
        match layout {
            Layout::V2 => {
                let mut last = None;
                for (dir, delegated) in plan {
                    let parent = dir.parent().unwrap_or(&fs.root).to_path_buf();
                    if let Err(e) = mkdir(&dir) {
                        last = Some(e);
                        continue;
                    }
                    if enable_controllers(&parent).is_err() && delegated {
                        // "No internal processes": a cgroup with processes (the agent) cannot
                        // give its children controllers; the agent moves to a leaf of its own.
                        let leaf = parent.join("agent");
                        let moved = mkdir(&leaf).and_then(|_| {
                            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())
                        });
                        match moved.and_then(|_| enable_controllers(&parent)) {
                            Ok(()) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "engine cgroup without controllers")
                            }
                        }
                    }
                    return Ok(Self { v2: true, dirs: vec![dir] });
                }
                Err(last.unwrap_or_else(none))
            }
            Layout::V1(_) => {
                let mut dirs = Vec::new();
                let mut first_err = None;
                for (dir, _) in plan {
                    match mkdir(&dir) {
                        Ok(()) => dirs.push(dir),
                        Err(e) => {
                            tracing::debug!(error = %e, "skipping a cgroup v1 hierarchy");
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if dirs.is_empty() {
                    Err(first_err.unwrap_or_else(none))
                } else {
                    Ok(Self { v2: false, dirs })
                }
            }
            Layout::None => Err(none()),
        }
    }

    /// The directory whose `cgroup.procs` lists the engine.
    pub fn path(&self) -> &Path {
        &self.dirs[0]
    }

    /// `cgroup-v2 PATH` or `cgroup-v1 PATH`, for `status`.
    pub fn describe(&self) -> String {
        format!("cgroup-{} {}", if self.v2 { "v2" } else { "v1" }, self.path().display())
    }

    /// What the child calls between fork and exec to join every directory.
    pub fn joiner(&self) -> Joiner {
        Joiner {
            files: self
                .dirs
                .iter()
                .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
                .collect(),
        }
    }

    /// Every process in the cgroup and its child cgroups now (zombies are not listed).
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut stack = vec![(self.path().to_path_buf(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            out.extend(parse_procs(&read(&dir.join("cgroup.procs")).unwrap_or_default()));
            if depth < 16 {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    stack.extend(
                        entries
                            .flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| (e.path(), depth + 1)),
                    );
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Sends `sig` to every process in the cgroup; returns how many were signalled.
    pub fn signal(&self, sig: Signal) -> usize {
        self.pids().into_iter().filter(|p| kill(Pid::from_raw(*p), sig).is_ok()).count()
    }

    fn kill_file(&self) -> Option<PathBuf> {
        let f = self.path().join("cgroup.kill");
        (self.v2 && f.is_file()).then_some(f)
    }

    /// Freezes (`true`) or thaws the cgroup, where a freezer exists; whether one does.
    fn freeze(&self, on: bool) -> bool {
        if self.v2 {
            let f = self.path().join("cgroup.freeze");
            return f.is_file() && write(&f, if on { "1" } else { "0" }).is_ok();
        }
        let Some(f) = self.dirs.iter().map(|d| d.join("freezer.state")).find(|f| f.is_file())
        else {
            return false;
        };
        write(&f, if on { "FROZEN" } else { "THAWED" }).is_ok()
    }

    /// Waits (up to 1 s) until a freeze took, so nothing forks between listing and killing.
    async fn wait_frozen(&self) {
        for _ in 0..20 {
            let frozen = if self.v2 {
                read(&self.path().join("cgroup.events"))
                    .is_some_and(|t| t.lines().any(|l| l.trim() == "frozen 1"))
            } else {
                self.dirs
                    .iter()
                    .find_map(|d| read(&d.join("freezer.state")))
                    .is_some_and(|t| t.trim() == "FROZEN")
            };
            if frozen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How this cgroup is killed, for logs: `cgroup.kill`, `freeze + kill` or `kill`.
    pub fn kill_method(&self) -> &'static str {
        if self.kill_file().is_some() {
            "cgroup.kill"
        } else if self.v2 && self.path().join("cgroup.freeze").is_file()
            || self.dirs.iter().any(|d| d.join("freezer.state").is_file())
        {
            "freeze + kill"
        } else {
            "kill"
        }
    }

    /// SIGKILLs every process in the cgroup until it is empty, or fails after `timeout`.
    /// `reap` runs between rounds (the caller reaps its own zombie children there). Returns
    /// the pids that were in it.
    pub async fn kill(
        &self,
        timeout: Duration,
        mut reap: impl FnMut(),
    ) -> Result<Vec<i32>, CgroupError> {
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        loop {
            reap();
            let now = self.pids();
            if now.is_empty() {
                break;
            }
            seen.extend(now.iter().copied());
            if start.elapsed() > timeout {
                return Err(CgroupError::Survivors { path: self.path().to_path_buf(), pids: now });
            }
            if let Some(f) = self.kill_file() {
                let _ = write(&f, "1");
            } else if self.freeze(true) {
                self.wait_frozen().await;
                for pid in self.pids() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                self.freeze(false);
            } else {
                for pid in now {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.sort_unstable();
        seen.dedup();
        Ok(seen)
    }

    /// The engine's memory and CPU use now.
    pub fn usage(&self) -> Usage {
        if self.v2 {
            let d = self.path();
            return Usage {
                memory_bytes: read(&d.join("memory.current")).as_deref().and_then(parse_u64),
                cpu_seconds: read(&d.join("cpu.stat"))
                    .as_deref()
                    .and_then(parse_cpu_stat_usage_usec)
                    .map(|us| us as f64 / 1e6),
            };
        }
        let find = |file: &str| self.dirs.iter().find_map(|d| read(&d.join(file)));
        Usage {
            memory_bytes: find("memory.usage_in_bytes").as_deref().and_then(parse_u64),
            cpu_seconds: find("cpuacct.usage")
                .as_deref()
                .and_then(parse_u64)
                .map(|ns| ns as f64 / 1e9),
        }
    }

    /// Removes the cgroup (and child cgroups the engine made), deepest first. Fails while a
    /// process is still in it.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let mut all = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&d) {
                    stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                all.push(d);
            }
            for d in all.iter().rev() {
                match std::fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(CgroupError::Create { path: d.clone(), source }),
                }
            }
        }
        Ok(())
    }
}

/// The `cgroup.procs` files the engine's child writes itself into, prepared before the fork.
#[derive(Debug, Clone)]
pub struct Joiner {
    files: Vec<CString>,
}

impl Joiner {
    /// Moves the calling process into every cgroup. Only `open`, `write` and `close`: meant for
    /// `CommandExt::pre_exec`. The first file (the cgroup that lists the engine) must take;
    /// the others (accounting hierarchies) are best effort.
    pub fn join(&self) -> std::io::Result<()> {
        for (i, file) in self.files.iter().enumerate() {
            // SAFETY: `file` is a valid NUL-terminated path prepared before the fork; open,
            // write and close are async-signal-safe system calls.
            let ok = unsafe {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    false
                } else {
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    n == 1
                }
            };
            if !ok && i == 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/e9b\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn proc_cgroup_lines_give_v1_and_v2_paths() {
        let lines = parse_proc_cgroup(HYBRID);
        assert_eq!(v1_path(&lines, "memory"), Some("/process_api/e9b"));
        assert_eq!(v1_path(&lines, "systemd"), Some("/"));
        assert_eq!(v2_path(&lines), Some("/"));
        let unit = parse_proc_cgroup("0::/system.slice/nodeagent.service\ngarbage\n");
        assert_eq!(v2_path(&unit), Some("/system.slice/nodeagent.service"));
        assert_eq!(v1_path(&unit, "pids"), None);
        let combined = parse_proc_cgroup("3:cpu,cpuacct:/a\n");
        assert_eq!(v1_path(&combined, "cpuacct"), Some("/a"));
    }

    #[test]
    fn file_parsers_take_numbers_and_refuse_the_rest() {
        assert_eq!(parse_procs("12\n13\n\nx\n-4\n"), [12, 13]);
        assert_eq!(parse_u64("4096\n"), Some(4096));
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(
            parse_cpu_stat_usage_usec("usage_usec 2500000\nuser_usec 1\nsystem_usec 2\n"),
            Some(2_500_000)
        );
        assert_eq!(parse_cpu_stat_usage_usec("user_usec 1\n"), None);
    }

    #[test]
    fn names_are_stable_per_state_dir_and_safe() {
        let a = cgroup_name("0", Path::new("/var/lib/nodeagent"));
        assert_eq!(a, cgroup_name("0", Path::new("/var/lib/nodeagent")));
        assert_ne!(a, cgroup_name("0", Path::new("/tmp/other")));
        assert!(a.starts_with("nodeagent-0-") && a.len() == "nodeagent-0-".len() + 8, "{a}");
        let odd = cgroup_name("../x y", Path::new("/s"));
        assert!(odd.starts_with("nodeagent-___x_y-") && !odd.contains('/'), "{odd}");
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn layout_and_plan_on_a_v1_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(layout(r), Layout::None);
        touch(&r.join("pids/cgroup.procs"));
        touch(&r.join("memory/cgroup.procs"));
        touch(&r.join("memory/process_api/e9b/cgroup.procs"));
        touch(&r.join("unified/cgroup.controllers"));
        assert_eq!(layout(r), Layout::V1(vec!["pids", "memory"]));
        let lines = parse_proc_cgroup(HYBRID);
        let plan = plan(&layout(r), r, &lines, "nodeagent-0-1");
        let dirs: Vec<PathBuf> = plan.into_iter().map(|(d, _)| d).collect();
        assert_eq!(
            dirs,
            [r.join("pids/nodeagent-0-1"), r.join("memory/process_api/e9b/nodeagent-0-1")]
        );
        let fs = CgroupFs { root: r.to_path_buf(), self_cgroup: HYBRID.into() };
        assert!(EngineCgroup::locate(&fs, "nodeagent-0-1").is_empty());
        let cg = EngineCgroup::create(&fs, "nodeagent-0-1").unwrap();
        assert_eq!(cg.describe(), format!("cgroup-v1 {}", r.join("pids/nodeagent-0-1").display()));
        assert_eq!(EngineCgroup::locate(&fs, "nodeagent-0-1"), vec![cg.clone()]);
        std::fs::write(cg.dirs[0].join("cgroup.procs"), "1\n2\n").unwrap();
        std::fs::write(cg.dirs[1].join("memory.usage_in_bytes"), "8192\n").unwrap();
        assert_eq!(cg.pids(), [1, 2]);
        assert_eq!(cg.usage(), Usage { memory_bytes: Some(8192), cpu_seconds: None });
        assert_eq!(cg.kill_method(), "kill");
    }

    #[test]
    fn v2_prefers_the_agents_own_cgroup_then_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(&r.join("cgroup.controllers"));
        let unit = parse_proc_cgroup("0::/system.slice/nodeagent.service\n");
        let p = plan(&Layout::V2, r, &unit, "n");
        assert_eq!(p, [(r.join("system.slice/nodeagent.service/n"), true), (r.join("n"), false)]);
        let at_root = parse_proc_cgroup("0::/\n");
        assert_eq!(plan(&Layout::V2, r, &at_root, "n"), [(r.join("n"), false)]);
        // A path cannot climb out of the root.
        let evil = parse_proc_cgroup("0::/../../etc\n");
        assert_eq!(plan(&Layout::V2, r, &evil, "n")[0].0, r.join("etc/n"));
        // Delegated unit cgroup missing here: the root is used.
        let fs = CgroupFs { root: r.to_path_buf(), self_cgroup: "0::/system.slice/x\n".into() };
        let cg = EngineCgroup::create(&fs, "n").unwrap();
        assert_eq!(cg.dirs, [r.join("n")]);
        std::fs::write(r.join("n/memory.current"), "100\n").unwrap();
        std::fs::write(r.join("n/cpu.stat"), "usage_usec 1500000\n").unwrap();
        std::fs::write(r.join("n/cgroup.kill"), "").unwrap();
        assert_eq!(cg.usage(), Usage { memory_bytes: Some(100), cpu_seconds: Some(1.5) });
        assert_eq!(cg.kill_method(), "cgroup.kill");
        assert!(cg.describe().starts_with("cgroup-v2 "));
    }
}
