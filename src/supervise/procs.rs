//! Reading processes from `/proc` (a root path is a seam for tests): parent links and start
//! times from `/proc/PID/stat`, the process tree under a pid, and the binding check from
//! `/proc/PID/status` (`Cpus_allowed_list`, `Mems_allowed_list`) and the memory policy in the
//! first line of `/proc/PID/numa_maps`. Parsers are plain functions over text; nothing here
//! sends a signal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::binding::{Binding, MemPolicy};
use crate::host::cpuset::CpuSet;

/// The fields of `/proc/PID/stat` the supervisor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Session id (`setsid` makes a new one: Ray workers do).
    pub session: i32,
    /// Clock ticks after boot: with the pid, identifies a process across pid reuse.
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`, e.g.
/// `4242 (ray::RayWorkerW) S 4200 4242 4242 0 -1 4194560 ... 0 0 20 0 1 0 1234567 ...`.
/// `comm` may hold spaces and parentheses, so the fields are split after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); start time is field 22.
    Some(Stat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// A view of a `/proc` tree.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self { root: PathBuf::from("/proc") }
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root of this tree (`/proc`).
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn path(&self, pid: i32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    pub fn stat(&self, pid: i32) -> Option<Stat> {
        parse_stat(&std::fs::read_to_string(self.path(pid, "stat")).ok()?)
    }

    /// Every process now (threads are not listed in `/proc` itself, only under `task/`).
    pub fn all(&self) -> Vec<Stat> {
        let Ok(dir) = std::fs::read_dir(&self.root) else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| self.stat(pid))
            .collect()
    }

    /// The environment `pid` started with (`/proc/PID/environ`), one `NAME=value` per entry;
    /// `None` when unreadable (gone, or another user's process without privileges).
    pub fn environ(&self, pid: i32) -> Option<Vec<std::ffi::OsString>> {
        use std::os::unix::ffi::OsStringExt;
        let bytes = std::fs::read(self.path(pid, "environ")).ok()?;
        Some(
            bytes
                .split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| std::ffi::OsString::from_vec(v.to_vec()))
                .collect(),
        )
    }

    /// The command line of `pid` (`/proc/PID/cmdline`); `None` when gone or empty (a kernel
    /// thread, a zombie).
    pub fn cmdline(&self, pid: i32) -> Option<Vec<String>> {
        let bytes = std::fs::read(self.path(pid, "cmdline")).ok()?;
        let args: Vec<String> = bytes
            .strip_suffix(&[0])
            .unwrap_or(&bytes)
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (!bytes.is_empty()).then_some(args)
    }

    /// Whether `pid` still is the process that started at `start_time` (and not a zombie).
    pub fn alive_as(&self, pid: i32, start_time: u64) -> bool {
        self.stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z')
    }

    /// `roots` and all their descendants, from the parent links of `all`.
    pub fn tree(all: &[Stat], roots: &BTreeSet<i32>) -> BTreeSet<i32> {
        let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for s in all {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        let present: BTreeSet<i32> = all.iter().map(|s| s.pid).collect();
        let mut out = BTreeSet::new();
        let mut stack: Vec<i32> = roots.iter().copied().filter(|p| present.contains(p)).collect();
        while let Some(pid) = stack.pop() {
            if out.insert(pid) {
                stack.extend(children.get(&pid).into_iter().flatten());
            }
        }
        out
    }

    /// Checks one process against the binding.
    pub fn check(&self, pid: i32, binding: &Binding) -> Option<ProcCheck> {
        let status = std::fs::read_to_string(self.path(pid, "status")).ok()?;
        let comm = self.stat(pid).map(|s| s.comm).unwrap_or_default();
        let numa_maps = read_first_line(&self.path(pid, "numa_maps"));
        Some(check_process(pid, comm, &status, numa_maps.as_deref(), binding))
    }

    fn listening(&self, port: u16) -> BTreeSet<u64> {
        let mut inodes = BTreeSet::new();
        for file in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(self.root.join(file)) {
                inodes.extend(listening_inodes(&text, port));
            }
        }
        inodes
    }

    /// Whether a TCP socket listens on `port` (any address) in this network namespace.
    pub fn port_listening(&self, port: u16) -> bool {
        !self.listening(port).is_empty()
    }

    /// The process holding a listening TCP socket on `port`, if `/proc` tells: `(pid, comm)`.
    pub fn port_owner(&self, port: u16) -> Option<(i32, String)> {
        let inodes = self.listening(port);
        if inodes.is_empty() {
            return None;
        }
        for s in self.all() {
            let Ok(fds) = std::fs::read_dir(self.path(s.pid, "fd")) else { continue };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                        return Some((s.pid, s.comm));
                    }
                }
            }
        }
        None
    }
}

fn read_first_line(path: &Path) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    BufReader::new(file).read_line(&mut line).ok()?;
    Some(line)
}

/// Inodes of sockets listening on `port` in `/proc/net/tcp` text:
/// `  0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 ...`
/// (state `0A` is LISTEN; addresses are hex `ADDR:PORT`).
pub fn listening_inodes(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// What the binding check found for one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcCheck {
    pub pid: i32,
    pub comm: String,
    pub cpus_allowed: String,
    pub mems_allowed: String,
    /// The memory policy from `numa_maps` (`bind:0`, `default`), when readable.
    pub mempolicy: Option<String>,
    /// Why the process is outside its binding; `None` when it is inside.
    pub escape: Option<String>,
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// Splits a `numa_maps` policy such as `bind:0-1`, `bind=static:0`, `prefer:1`, `default`.
fn parse_policy(text: &str) -> (String, Option<CpuSet>) {
    let (name, nodes) = text.split_once(':').map_or((text, None), |(n, l)| (n, Some(l)));
    let name = name.split('=').next().unwrap_or(name).to_string();
    (name, nodes.and_then(|l| CpuSet::parse_list(l).ok()))
}

/// Checks a process's `/proc/PID/status` text (and the first `numa_maps` line) against the
/// binding. CPUs: `Cpus_allowed_list` must be inside the binding's CPUs. Memory: either the
/// cpuset confines it (`Mems_allowed_list` inside the nodes: containers) or the task's policy
/// in `numa_maps` is the binding's (native binding and numactl).
pub fn check_process(
    pid: i32,
    comm: String,
    status: &str,
    numa_maps_first: Option<&str>,
    binding: &Binding,
) -> ProcCheck {
    let cpus_allowed = status_field(status, "Cpus_allowed_list").unwrap_or("").to_string();
    let mems_allowed = status_field(status, "Mems_allowed_list").unwrap_or("").to_string();
    let mempolicy = numa_maps_first.and_then(|l| l.split_whitespace().nth(1)).map(str::to_string);
    let mut escape = None;
    if let Some(want) = &binding.cpus {
        match CpuSet::parse_list(&cpus_allowed) {
            Ok(have) if have.is_subset(want) => {}
            Ok(_) => escape = Some(format!("runs on cpus {cpus_allowed}, binding allows {want}")),
            Err(_) => escape = Some(format!("unreadable Cpus_allowed_list `{cpus_allowed}`")),
        }
    }
    let want_nodes: CpuSet = binding.memory_nodes().into_iter().collect();
    if escape.is_none() && !want_nodes.is_empty() {
        let confined = CpuSet::parse_list(&mems_allowed)
            .is_ok_and(|m| !m.is_empty() && m.is_subset(&want_nodes));
        let (name, nodes) = mempolicy.as_deref().map(parse_policy).unwrap_or_default();
        let want_name = match binding.memory {
            MemPolicy::Bind(_) => "bind",
            MemPolicy::Preferred(_) => "prefer",
            MemPolicy::Interleave(_) => "interleave",
            MemPolicy::Default => "default",
        };
        let by_policy = name == want_name && nodes.as_ref() == Some(&want_nodes);
        // A preferred node cannot be enforced by a cpuset, so only the policy counts for it.
        let ok = by_policy || (confined && !matches!(binding.memory, MemPolicy::Preferred(_)));
        if !ok {
            escape = Some(format!(
                "memory policy {} (mems allowed {mems_allowed}), binding wants {want_name}:{want_nodes}",
                mempolicy.as_deref().unwrap_or("unknown"),
            ));
        }
    }
    ProcCheck { pid, comm, cpus_allowed, mems_allowed, mempolicy, escape }
}

/// Whether a checked process is part of the engine for the binding check. `numactl` is the
/// launcher between its own exec and the engine's: it applies the binding to itself and then
/// execs the engine, so a check that lands in that window (seen under QEMU, and possible on a
/// loaded host) must not call it an escape.
pub fn is_engine_process(check: &ProcCheck) -> bool {
    check.comm != "numactl"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numactl_mid_launch_is_not_an_escape() {
        let binding = Binding {
            cpu_nodes: vec![0],
            cpus: Some(CpuSet::parse_list("1").unwrap()),
            memory: MemPolicy::Bind(vec![0]),
        };
        let status = "Cpus_allowed_list:\t0-7\nMems_allowed_list:\t0\n";
        let launcher = check_process(7, "numactl".into(), status, Some("0 default"), &binding);
        assert!(launcher.escape.is_some(), "numactl has not applied the binding yet");
        assert!(!is_engine_process(&launcher));
        let engine = check_process(8, "python".into(), status, Some("0 default"), &binding);
        assert!(engine.escape.is_some() && is_engine_process(&engine));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = parse_stat("4242 (ray::Ray (W) x) S 4200 4241 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 1234567 100 10").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid, s.pgrp, s.session),
            (4242, "ray::Ray (W) x", 'S', 4200, 4241, 4242)
        );
        assert_eq!(s.start_time, 1234567);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn tree_follows_parent_links() {
        let st = |pid, ppid| Stat {
            pid,
            comm: String::new(),
            state: 'S',
            ppid,
            pgrp: 0,
            session: 0,
            start_time: 0,
        };
        let all = vec![st(1, 0), st(10, 1), st(11, 10), st(12, 11), st(20, 1)];
        let t = ProcFs::tree(&all, &BTreeSet::from([10]));
        assert_eq!(t, BTreeSet::from([10, 11, 12]));
        assert!(ProcFs::tree(&all, &BTreeSet::from([99])).is_empty());
    }

    #[test]
    fn check_flags_cpu_and_memory_escapes() {
        let b = Binding {
            cpu_nodes: vec![],
            cpus: Some(CpuSet::parse_list("1").unwrap()),
            memory: MemPolicy::Bind(vec![0]),
        };
        let status = "Name:\tx\nCpus_allowed_list:\t1\nMems_allowed_list:\t0\n";
        let ok = check_process(1, "x".into(), status, Some("5500 bind:0 file=/x"), &b);
        assert_eq!(ok.escape, None);
        // Two nodes allowed by the cpuset: only the task policy can keep memory on node 0.
        let two = "Cpus_allowed_list:\t1\nMems_allowed_list:\t0-1\n";
        let bad_mem = check_process(1, "x".into(), two, Some("5500 default file=/x"), &b);
        assert!(bad_mem.escape.unwrap().contains("memory policy default"));
        let wide = "Cpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n";
        let bad_cpu = check_process(1, "x".into(), wide, Some("5500 bind:0"), &b);
        assert!(bad_cpu.escape.unwrap().contains("runs on cpus 0-1"));
        // A container: the cpuset confines memory even with the default policy.
        let b2 = Binding { memory: MemPolicy::Bind(vec![0, 1]), ..b.clone() };
        let c = "Cpus_allowed_list:\t1\nMems_allowed_list:\t0-1\n";
        assert_eq!(check_process(1, "x".into(), c, Some("1 default"), &b2).escape, None);
    }

    #[test]
    fn listening_inode_lookup() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0\n   1: 0100007F:1F40 0100007F:9999 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0\n";
        assert_eq!(listening_inodes(text, 8000), [777]);
        assert!(listening_inodes(text, 8001).is_empty());
    }

    #[test]
    fn live_proc_of_self_is_readable() {
        let p = ProcFs::default();
        let me = std::process::id() as i32;
        let s = p.stat(me).unwrap();
        assert!(p.alive_as(me, s.start_time));
        assert!(!p.alive_as(me, s.start_time + 1));
        let c = p.check(me, &Binding::none()).unwrap();
        assert!(!c.cpus_allowed.is_empty() && c.escape.is_none());
    }
}
