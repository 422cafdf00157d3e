//! The last line of defence against orphans: when `nodeagent serve` panics after the engine
//! started (in any task or thread), `cmd::serve`'s panic hook calls [`stop_engine_now`] before
//! the process exits, so the worst case is a clean failure (exit 1), never an engine and its workers
//! re-parented to PID 1. It works from what is on disk and in `/proc` only (the supervisor's
//! state may be what panicked): the verified pid file entries and every process carrying this
//! state dir's `NODEAGENT_ENGINE` marker, with their descendants (`super::pidfile`), and every
//! process in the engine's cgroup (`super::cgroup`, found by its name, whatever the processes
//! did with sessions or double forks), are sent SIGTERM, then SIGKILL after the grace period;
//! the emptied cgroup is removed. Synchronous: no async runtime is needed.
//!
//! Not here: the orderly stop of a running engine (`EngineRuntime::stop`); containers (they are
//! removed by label at the next start).

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::supervise::cgroup::{CgroupFs, EngineCgroup};
use crate::supervise::pidfile::{victims, Identity, Leftovers, PID_FILE};
use crate::supervise::procs::ProcFs;
use crate::supervise::statedir::StateDir;

/// How long the engine may take to exit after SIGKILL before the guard gives up.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Stops every process of the engine started from `dir` (identified by `id`) and, when
/// `cgroup` names the engine's cgroup (`super::cgroup::cgroup_name`), every process in it:
/// SIGTERM, up to `grace`, then SIGKILL. Removes the pid file and the cgroup when nothing is
/// left. Returns the pids still alive at the end (empty: nothing of the engine is left).
pub fn stop_engine_now(
    dir: &StateDir,
    id: &Identity,
    cgroup: Option<&str>,
    grace: Duration,
) -> Vec<i32> {
    let proc = ProcFs::default();
    let found = Leftovers::find(&proc, dir, id);
    let targets = victims(&proc, &found.roots);
    let cgroups =
        cgroup.map(|name| EngineCgroup::locate(&CgroupFs::default(), name)).unwrap_or_default();
    for (pid, _, _) in &targets {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    for cg in &cgroups {
        cg.signal(Signal::SIGTERM);
    }
    let start = Instant::now();
    let mut killed = false;
    loop {
        let mut left: Vec<i32> =
            targets.iter().filter(|(p, t, _)| proc.alive_as(*p, *t)).map(|(p, _, _)| *p).collect();
        // A zombie still listed in a cgroup is gone for our purpose (its parent reaps it).
        left.extend(
            cgroups
                .iter()
                .flat_map(EngineCgroup::pids)
                .filter(|p| proc.stat(*p).is_some_and(|s| s.state != 'Z')),
        );
        left.sort_unstable();
        left.dedup();
        if left.is_empty() {
            let _ = dir.remove(PID_FILE);
            for cg in &cgroups {
                let _ = cg.remove();
            }
            return left;
        }
        let waited = start.elapsed();
        if !killed && waited >= grace {
            for pid in &left {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            for cg in &cgroups {
                cg.signal(Signal::SIGKILL);
            }
            killed = true;
        } else if killed && waited >= grace.saturating_add(AFTER_KILL) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::supervise::pidfile::MARKER_VAR;

    #[test]
    fn stops_the_marked_tree_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("s")).unwrap();
        let id = Identity::new(&dir, &[]);
        // An "engine" with a child, marked; a bystander without the marker.
        let mut engine = Command::new("sh")
            .args(["-c", "sleep 310 & wait"])
            .env(MARKER_VAR, dir.marker())
            .spawn()
            .unwrap();
        let mut bystander = Command::new("sleep").arg("311").spawn().unwrap();
        let proc = ProcFs::default();
        let engine_pid = engine.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let child = loop {
            let all = proc.all();
            if let Some(c) = all.iter().find(|s| s.ppid == engine_pid && s.comm == "sleep") {
                break c.pid;
            }
            assert!(Instant::now() < deadline, "the engine's child did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let left = stop_engine_now(&dir, &id, None, Duration::from_secs(2));
        assert_eq!(left, Vec::<i32>::new());
        let _ = engine.wait();
        assert!(proc.stat(child).is_none_or(|s| s.state == 'Z'), "the engine's child survived");
        assert!(proc.stat(bystander.id() as i32).is_some_and(|s| s.state != 'Z'));
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
