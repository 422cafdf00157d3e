//! Worker child processes of `nodeagent simulate --workers N`, standing in for vLLM's Ray /
//! multiprocessing GPU workers so the supervisor's process-tree handling can be tested for real.
//!
//! Like Ray workers, each runs in its OWN session and process group (`setsid`), so killing the
//! simulator's process group misses them. Each is `nodeagent simulate-worker --rank R
//! --parent-pid P` (argv identifies it; `/proc/PID/comm` is `sim::Worker_TPR`), polls its
//! parent every 100 ms and exits when the parent is gone, unless started with `--orphan`
//! (then it lives on, a leftover like Ray workers after a SIGKILL of vLLM). The simulator
//! stops them on a graceful shutdown: SIGTERM, then SIGKILL after a grace period.
//!
//! What it does not do: any work. A worker only sleeps, holding the memory `--memory-mb`
//! made it touch.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getppid, Pid};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start simulator worker {rank} ({exe}): {source}")]
    Spawn { rank: u32, exe: String, source: std::io::Error },
    #[error("cannot name simulator worker process: {source}")]
    Name { source: nix::Error },
}

/// The running workers of one simulator.
#[derive(Debug, Default)]
pub struct Workers {
    children: Vec<(u32, Child)>,
}

/// Starts `n` workers, ranks 1..=n (rank 0 is the simulator itself, like vLLM's engine
/// process holding GPU 0), each in a new session.
pub fn spawn(exe: &Path, n: u32, orphan: bool) -> Result<Workers, WorkerError> {
    spawn_with_memory(exe, n, orphan, 0)
}

/// [`spawn`], each worker first allocating and touching `memory_mb` MiB (`--memory-mb`).
pub fn spawn_with_memory(
    exe: &Path,
    n: u32,
    orphan: bool,
    memory_mb: u64,
) -> Result<Workers, WorkerError> {
    let parent = std::process::id();
    let mut workers = Workers::default();
    for rank in 1..=n {
        let mut cmd = Command::new(exe);
        cmd.arg("simulate-worker")
            .arg("--rank")
            .arg(rank.to_string())
            .arg("--parent-pid")
            .arg(parent.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if orphan {
            cmd.arg("--orphan");
        }
        if memory_mb > 0 {
            cmd.arg("--memory-mb").arg(memory_mb.to_string());
        }
        // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent; it is the
        // only thing done between fork and exec.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
        }
        match cmd.spawn() {
            Ok(child) => workers.children.push((rank, child)),
            Err(source) => {
                workers.stop(Duration::from_secs(1));
                return Err(WorkerError::Spawn { rank, exe: exe.display().to_string(), source });
            }
        }
    }
    Ok(workers)
}

impl Workers {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// SIGTERM every worker, wait up to `grace` for them to exit, SIGKILL the rest, reap all.
    pub fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.children {
            // An already-dead worker (ESRCH) is what we want anyway.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for (rank, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        tracing::warn!(
                            rank = *rank,
                            pid = child.id(),
                            "worker ignored SIGTERM; killing"
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

/// `mib` MiB allocated and written, one byte per 4 KiB page, so every page is resident (on the
/// node the worker's memory policy gives). Hold the result for as long as the memory should stay.
pub fn touch_memory(mib: u64) -> Vec<u8> {
    let len = usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX / 2);
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(v)
}

/// The body of `nodeagent simulate-worker`: name the process, then sleep until the parent is
/// gone (unless `orphan`) or a signal ends us.
pub fn run_worker(rank: u32, parent_pid: u32, orphan: bool) -> Result<(), WorkerError> {
    let name = CString::new(format!("sim::Worker_TP{rank}")).unwrap_or_default();
    nix::sys::prctl::set_name(&name).map_err(|source| WorkerError::Name { source })?;
    loop {
        // Reparenting (to init or a subreaper) is how a child learns its parent died; polling
        // works whichever thread of the parent spawned us, unlike PR_SET_PDEATHSIG.
        if !orphan && getppid().as_raw() as u32 != parent_pid {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
