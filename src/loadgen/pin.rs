//! The load generator's own placement and CPU time, as system calls: the affinity of every
//! thread of this process (`sched_setaffinity` on each task of `/proc/self/task`, so threads
//! started before the pinning follow too, and threads started after inherit it), restored
//! when the `Pinned` guard drops; and the process's CPU time (`getrusage(RUSAGE_SELF)`: every
//! thread, children not included).
//!
//! Not here: deciding where to run (`super::isolate`, pure), finding the engine
//! (`crate::verify::isolate`).

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet as NixCpuSet};
use nix::unistd::Pid;

use crate::host::cpuset::CpuSet;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read this process's cpu affinity: {source}")]
    Get { source: nix::Error },
    #[error("cpu {cpu} is beyond what sched_setaffinity can address ({max} cpus)")]
    CpuOutOfRange { cpu: u32, max: usize },
    #[error("cannot list this process's threads in /proc/self/task: {source}")]
    Tasks { source: std::io::Error },
    #[error("cannot pin thread {tid} to cpus {cpus}: {source}")]
    Set { tid: i32, cpus: String, source: nix::Error },
}

/// The CPUs the calling thread may run on.
pub fn current_affinity() -> Result<CpuSet, PinError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|source| PinError::Get { source })?;
    Ok(from_nix(&set))
}

fn from_nix(set: &NixCpuSet) -> CpuSet {
    (0..NixCpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).map(|i| i as u32).collect()
}

fn to_nix(cpus: &CpuSet) -> Result<NixCpuSet, PinError> {
    let mut set = NixCpuSet::new();
    for cpu in cpus.iter() {
        set.set(cpu as usize)
            .map_err(|_| PinError::CpuOutOfRange { cpu, max: NixCpuSet::count() })?;
    }
    Ok(set)
}

/// The thread ids of this process.
fn tasks() -> Result<Vec<i32>, PinError> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|source| PinError::Tasks { source })?;
    Ok(dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
}

/// Sets `set` on every thread, again until a pass finds no thread it has not set (a thread
/// started by one not yet pinned would otherwise keep the old mask). A thread that ended
/// meanwhile is skipped.
fn set_all(set: &NixCpuSet, shown: &str) -> Result<(), PinError> {
    let mut done = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let fresh: Vec<i32> = tasks()?.into_iter().filter(|t| !done.contains(t)).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        for tid in fresh {
            match sched_setaffinity(Pid::from_raw(tid), set) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => return Err(PinError::Set { tid, cpus: shown.into(), source }),
            }
            done.insert(tid);
        }
    }
    Ok(())
}

/// Every thread of this process pinned to some CPUs; dropping it gives every thread back the
/// affinity the calling thread had before.
#[derive(Debug)]
pub struct Pinned {
    previous: NixCpuSet,
    previous_text: String,
}

/// Pins every thread of this process to `cpus`.
pub fn pin_process(cpus: &CpuSet) -> Result<Pinned, PinError> {
    let previous =
        sched_getaffinity(Pid::from_raw(0)).map_err(|source| PinError::Get { source })?;
    let previous_text = from_nix(&previous).to_list();
    let pinned = Pinned { previous, previous_text };
    // On a failure part-way the guard drops here and puts back what was set.
    set_all(&to_nix(cpus)?, &cpus.to_list())?;
    Ok(pinned)
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Err(e) = set_all(&self.previous, &self.previous_text) {
            tracing::warn!("cannot give the load generator its cpus back: {e}");
        }
    }
}

/// User + system CPU time of this process so far (every thread, children not included),
/// seconds; `None` when the kernel does not say.
pub fn process_cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pinning the whole process is not tested here: it would pin the test harness's other
    // threads and the children they spawn. `tests/isolate.rs` checks it on real `verify`
    // processes from `/proc`.
    #[test]
    fn cpu_lists_convert_both_ways_and_cpu_time_grows() {
        let cpus: CpuSet = [0, 3, 5].into_iter().collect();
        assert_eq!(from_nix(&to_nix(&cpus).unwrap()), cpus);
        assert!(matches!(
            to_nix(&[1 << 20].into_iter().collect()),
            Err(PinError::CpuOutOfRange { cpu: 1_048_576, .. })
        ));
        assert!(!current_affinity().unwrap().is_empty());
        let t0 = process_cpu_seconds().unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu_seconds().unwrap() > t0);
    }
}
