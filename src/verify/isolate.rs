//! Keeping the load generator off the engine's CPUs. When the sweep targets an engine on this
//! host (a loopback or local address in the URL, or the processes `verify --compare` started),
//! the engine's CPUs are the union of its processes' `Cpus_allowed_list` (the given pids, else
//! those of the `serve` agent whose engine has the URL's port, asked over its status socket,
//! else the process listening on that port and its descendants, found in `/proc`),
//! and every thread of `verify` is pinned to the CPUs they leave free
//! (`crate::loadgen::isolate::decide`). Where no CPU is free, or the engine cannot be found,
//! it runs unpinned with one warning that says why; `--no-isolate` turns all of it off.
//! `meta.loadgen` records the outcome. The guard returned puts the affinity back when the
//! sweep ends (under `--compare`, before the next engine starts, so no engine inherits it).
//!
//! Not here: the decision (`crate::loadgen::isolate`), the system calls (`crate::loadgen::pin`).

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;

use hyper::Uri;

use crate::binding::Binding;
use crate::host::cpuset::CpuSet;
use crate::loadgen::isolate::{cpu_use, decide, Decision};
use crate::loadgen::pin::{self, Pinned};
use crate::summary::{LoadgenCpu, LoadgenPlacement};
use crate::supervise::procs::ProcFs;

/// The load generator's placement for one sweep; dropping it undoes the pinning.
#[derive(Debug)]
pub struct Isolation {
    _pinned: Option<Pinned>,
    pub placement: LoadgenPlacement,
    allowed_cpus: u32,
}

/// Process CPU time and wall time at the start of a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    cpu_s: f64,
    at: std::time::Instant,
}

impl Isolation {
    /// A mark at the start of a measured phase; `None` when the CPU time cannot be read.
    pub fn mark() -> Option<CpuMark> {
        Some(CpuMark { cpu_s: pin::process_cpu_seconds()?, at: std::time::Instant::now() })
    }

    /// The CPU use since `mark`.
    pub fn cpu_since(&self, mark: CpuMark) -> Option<LoadgenCpu> {
        let now = pin::process_cpu_seconds()?;
        Some(cpu_use(
            (now - mark.cpu_s).max(0.0),
            mark.at.elapsed().as_secs_f64(),
            self.allowed_cpus,
        ))
    }
}

/// Why the engine's CPUs are not known.
enum Engine {
    /// `from`: how the processes were found (`meta.loadgen.engine_from`).
    Found { pids: Vec<i32>, cpus: CpuSet, from: String },
    /// Elsewhere: nothing to keep away from, no warning.
    Remote(String),
    /// On this host but not found: a warning.
    Unknown(String),
}

/// What the placement of one sweep goes by (from its `SweepSpec`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `false`: `--no-isolate`.
    pub enabled: bool,
    /// The engine's URL: its host and port find it when `engine` is `None`.
    pub url: &'a Uri,
    /// The procfs root and pids of an engine this run started (`verify --compare`).
    pub engine: Option<(&'a Path, &'a [i32])>,
    /// The sysfs root whose `devices/system/cpu/online` lists the online CPUs.
    pub sysfs_root: &'a Path,
    /// The base state dir of the `nodeagent serve` agents to ask which processes serve the
    /// URL's port (`/run/nodeagent`).
    pub state_dir: &'a Path,
}

/// Places the load generator for a sweep. Warnings (one line each) go to `warnings`.
pub async fn start(spec: Target<'_>, warnings: &mut Vec<String>) -> Isolation {
    let allowed = match pin::current_affinity() {
        Ok(a) => a,
        Err(e) => {
            warnings.push(format!("the load generator runs unpinned: {e}"));
            return unpinned(e.to_string(), String::new(), 0, None, Vec::new());
        }
    };
    let count = allowed.len() as u32;
    if !spec.enabled {
        return unpinned("--no-isolate".into(), allowed.to_list(), count, None, Vec::new());
    }
    let (pids, engine, from) = match engine_cpus(spec).await {
        Engine::Found { pids, cpus, from } => (pids, cpus, from),
        Engine::Remote(why) => {
            tracing::info!("the load generator runs unpinned: {why}");
            return unpinned(why, allowed.to_list(), count, None, Vec::new());
        }
        Engine::Unknown(why) => {
            warnings.push(format!("the load generator runs unpinned: {why}"));
            return unpinned(why, allowed.to_list(), count, None, Vec::new());
        }
    };
    let online = online_cpus(spec.sysfs_root).unwrap_or_else(|| allowed.clone());
    let engine_text = Some(engine.to_list());
    let mut isolation = match decide(&online, &allowed, &engine) {
        Decision::NoneFree { reason } => {
            warnings.push(format!(
                "the load generator runs unpinned and competes with the engine: {reason}"
            ));
            unpinned(reason, allowed.to_list(), count, engine_text, pids)
        }
        Decision::Pin(cpus) => match pin::pin_process(&cpus) {
            Ok(guard) => {
                tracing::info!(
                    cpus = %cpus,
                    engine_cpus = %engine,
                    "the load generator is pinned to the cpus the engine leaves free"
                );
                Isolation {
                    _pinned: Some(guard),
                    allowed_cpus: cpus.len() as u32,
                    placement: LoadgenPlacement {
                        pinned: Some(cpus.to_list()),
                        unpinned: None,
                        cpus: cpus.to_list(),
                        engine_cpus: engine_text,
                        engine_pids: pids,
                        engine_from: None,
                    },
                }
            }
            Err(e) => {
                warnings.push(format!("the load generator runs unpinned: {e}"));
                unpinned(e.to_string(), allowed.to_list(), count, engine_text, pids)
            }
        },
    };
    isolation.placement.engine_from = Some(from);
    isolation
}

fn unpinned(
    why: String,
    cpus: String,
    allowed_cpus: u32,
    engine_cpus: Option<String>,
    engine_pids: Vec<i32>,
) -> Isolation {
    Isolation {
        _pinned: None,
        allowed_cpus,
        placement: LoadgenPlacement {
            pinned: None,
            unpinned: Some(why),
            cpus,
            engine_cpus,
            engine_pids,
            engine_from: None,
        },
    }
}

/// `<sysfs>/devices/system/cpu/online`; `None` when unreadable.
fn online_cpus(sysfs_root: &Path) -> Option<CpuSet> {
    let text = std::fs::read_to_string(sysfs_root.join("devices/system/cpu/online")).ok()?;
    CpuSet::parse_list(text.trim()).ok()
}

/// The engine's processes and the union of their allowed CPUs: those `--compare` started,
/// else those of the `serve` agent serving the URL's port, else the process listening on it
/// and its descendants.
async fn engine_cpus(spec: Target<'_>) -> Engine {
    let (proc, pids, from) = match spec.engine {
        Some((root, pids)) => (ProcFs::new(root), pids.to_vec(), "--compare".to_string()),
        None => {
            let (host, port) = host_port(spec.url);
            if !is_local(&host, port) {
                return Engine::Remote(format!("the engine at {host}:{port} is not on this host"));
            }
            match served(spec.state_dir, port).await {
                Some(pids) => (
                    ProcFs::default(),
                    pids,
                    format!("serve status ({})", spec.state_dir.display()),
                ),
                None => match listening_engine(port) {
                    Ok((proc, pids)) => (proc, pids, format!("listener of port {port}")),
                    Err(e) => return e,
                },
            }
        }
    };
    let mut cpus = CpuSet::new();
    let mut seen = Vec::new();
    for &pid in &pids {
        let Some(check) = proc.check(pid, &Binding::none()) else { continue };
        if let Ok(c) = CpuSet::parse_list(&check.cpus_allowed) {
            cpus = cpus.union(&c);
            seen.push(pid);
        }
    }
    if cpus.is_empty() {
        return Engine::Unknown(format!(
            "the affinity of the engine's processes ({}) cannot be read",
            pids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    Engine::Found { pids: seen, cpus, from }
}

/// The host (without IPv6 brackets) and port of a URL.
fn host_port(url: &Uri) -> (String, u16) {
    let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 });
    (host.to_string(), port)
}

/// The engine processes of the `serve` agent (any instance under `state_dir`) whose engine
/// port is `port`; `None` when no agent there answers for it. A container's processes are
/// known this way although its port is only `docker-proxy`'s in `/proc`.
async fn served(state_dir: &Path, port: u16) -> Option<Vec<i32>> {
    let timeout = std::time::Duration::from_secs(2);
    let found = crate::supervise::status::query_all(state_dir, None, timeout).await;
    found
        .into_iter()
        .filter_map(|f| f.status.ok())
        .find(|s| s.port == port && !s.pids.is_empty())
        .map(|s| s.pids)
}

/// The process listening on `port` and its descendants.
fn listening_engine(port: u16) -> Result<(ProcFs, Vec<i32>), Engine> {
    let proc = ProcFs::default();
    let Some((pid, comm)) = proc.port_owner(port) else {
        return Err(Engine::Unknown(format!(
            "no process of this host is seen listening on port {port} (another user's, or in \
             another network namespace), so the engine's cpus are not known"
        )));
    };
    if comm == "docker-proxy" {
        return Err(Engine::Unknown(format!(
            "port {port} is held by docker-proxy (pid {pid}), not by the engine's processes, so \
             the engine's cpus are not known"
        )));
    }
    let all = proc.all();
    let tree = ProcFs::tree(&all, &BTreeSet::from([pid]));
    // This process is never the engine, nor are its children, even where the listener is
    // an ancestor (a test harness serving the simulator in-process and running `verify`).
    let own = ProcFs::tree(&all, &BTreeSet::from([std::process::id() as i32]));
    Ok((proc, tree.difference(&own).copied().collect()))
}

/// Whether `host` names this host: a loopback or unspecified address, `localhost`, or an
/// address one of this host's interfaces has (a UDP socket can be bound to it).
fn is_local(host: &str, port: u16) -> bool {
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            (host, port).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default()
        }
    };
    addrs
        .iter()
        .any(|ip| ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((*ip, 0)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_this_hosts_addresses_are_local_others_are_not() {
        assert!(is_local("127.0.0.1", 80));
        assert!(is_local("::1", 80));
        assert!(is_local("localhost", 80));
        assert!(is_local("0.0.0.0", 80));
        // TEST-NET-1 (RFC 5737) is never assigned to a host.
        assert!(!is_local("192.0.2.1", 80));
        assert!(!is_local("host.invalid", 80));
    }
}
