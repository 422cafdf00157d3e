//! Keeping the load generator off the engine's CPUs. When the sweep targets an engine on this
//! host (a loopback or local address in the URL, or the processes `verify --compare` started),
//! the engine's CPUs are the union of its processes' `Cpus_allowed_list` (the process
//! listening on the URL's port and its descendants, found in `/proc`, else the given pids),
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
    Found {
        pids: Vec<i32>,
        cpus: CpuSet,
    },
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
}

/// Places the load generator for a sweep. Warnings (one line each) go to `warnings`.
pub fn start(spec: Target<'_>, warnings: &mut Vec<String>) -> Isolation {
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
    let (pids, engine) = match engine_cpus(spec) {
        Engine::Found { pids, cpus } => (pids, cpus),
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
    match decide(&online, &allowed, &engine) {
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
                    },
                }
            }
            Err(e) => {
                warnings.push(format!("the load generator runs unpinned: {e}"));
                unpinned(e.to_string(), allowed.to_list(), count, engine_text, pids)
            }
        },
    }
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
        },
    }
}

/// `<sysfs>/devices/system/cpu/online`; `None` when unreadable.
fn online_cpus(sysfs_root: &Path) -> Option<CpuSet> {
    let text = std::fs::read_to_string(sysfs_root.join("devices/system/cpu/online")).ok()?;
    CpuSet::parse_list(text.trim()).ok()
}

/// The engine's processes and the union of their allowed CPUs.
fn engine_cpus(spec: Target<'_>) -> Engine {
    let (proc, pids) = match spec.engine {
        Some((root, pids)) => (ProcFs::new(root), pids.to_vec()),
        None => match listening_engine(spec.url) {
            Ok(found) => found,
            Err(e) => return e,
        },
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
    Engine::Found { pids: seen, cpus }
}

/// The process listening on the URL's port and its descendants, when the URL's host is this
/// host.
fn listening_engine(url: &Uri) -> Result<(ProcFs, Vec<i32>), Engine> {
    let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 });
    if !is_local(host, port) {
        return Err(Engine::Remote(format!("the engine at {host}:{port} is not on this host")));
    }
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
    let tree = ProcFs::tree(&proc.all(), &BTreeSet::from([pid]));
    Ok((proc, tree.into_iter().collect()))
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
