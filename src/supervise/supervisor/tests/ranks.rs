//! The supervisor's per-rank hookup (`Supervisor::ranks`, issue 15 item 6) on paused time: the
//! fake runtime runs two engine lives (the first crashes, the second runs until cancelled), a
//! fake `nvidia-smi` lists each life's rank workers on their GPUs a few seconds after the start
//! (once they "opened" them), and the binder makes its cgroups in a temp tree standing for the
//! cgroup v2 root (the engine's cgroup is the runtime's `containment`). The worker pids are
//! above the kernel's `PID_MAX_LIMIT` (4194304), so no real process is ever touched: `/proc`
//! has none of them and `migrate_pages` answers ESRCH.

use std::path::{Path, PathBuf};

use super::*;
use crate::host::runner::{CommandRunner, RunError, ToolOutput};
use crate::supervise::occupancy::check::GpuTool;
use crate::supervise::ranks::{RankBinder, RankTarget};

const BUS: [&str; 2] = ["00000000:18:00.0", "00000000:2A:00.0"];

/// `nvidia-smi`: two GPUs; the compute apps are the running life's workers (pid, GPU) once
/// `visible_after` has passed since that life's start, plus a foreign process on GPU 1.
struct FakeSmi {
    script: Script,
    workers: Arc<Mutex<Vec<(i32, u32)>>>,
    visible_after: Duration,
}

impl CommandRunner for FakeSmi {
    fn run(&self, _: &Path, args: &[&str], _: Duration) -> Result<ToolOutput, RunError> {
        let mut out = String::new();
        if args.first().is_some_and(|a| a.starts_with("--query-gpu")) {
            out.push_str("index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n");
            for (i, bus) in BUS.iter().enumerate() {
                out.push_str(&format!(
                    "{i}, NVIDIA H100 80GB HBM3, {bus}, 81559 MiB, 4691 MiB, 0 %, 31, 69.45 W\n"
                ));
            }
        } else {
            out.push_str("gpu_bus_id, pid, process_name, used_gpu_memory [MiB]\n");
            out.push_str(&format!("{}, 5000099, python3, 8 MiB\n", BUS[1]));
            let started = self.script.starts().last().copied();
            if started.is_some_and(|s| s.elapsed() >= self.visible_after) {
                for (pid, gpu) in self.workers.lock().unwrap().iter() {
                    out.push_str(&format!(
                        "{}, {pid}, ray::RayWorkerWrapper, 4682 MiB\n",
                        BUS[*gpu as usize]
                    ));
                }
            }
        }
        Ok(ToolOutput { stdout: out, stderr: String::new(), elapsed: Duration::ZERO })
    }
}

/// What the status record said of the ranks, once per change: the state, then per rank its
/// pids, the source that listed them, its cgroup and problem.
type Seen = (State, Vec<(Vec<i32>, Option<String>, Option<String>, Option<String>)>);

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn binding_checks_bind_each_lifes_new_workers_status_carries_them_and_stop_releases() {
    // A cgroup v2 root with `cpuset` offered, and the engine's cgroup the runtime made.
    let tree = tempfile::tempdir().unwrap();
    let engine = tree.path().join("nodeagent-0-ab");
    std::fs::create_dir(&engine).unwrap();
    for dir in [tree.path(), engine.as_path()] {
        std::fs::write(dir.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
    }
    std::fs::write(engine.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(engine.join("cgroup.procs"), "").unwrap();

    // Life 1 crashes after 10 s; life 2 runs until cancelled. Its rank 1 worker has the pid
    // the life-1 worker of rank 1 had (pids are reused): only a binder that forgot the old
    // engine's workers at its stop binds it.
    let mut h = harness(&[Some(10), None], None, |p| {
        p.ready_timeout = Duration::from_secs(3600);
        p.binding_check_interval = Duration::from_secs(2);
        p.backoff_initial = Duration::from_secs(1);
    });
    h.script.containment = Some(format!("cgroup-v2 {}", engine.display()));
    *h.script.pids.lock().unwrap() =
        [vec![5_000_000, 5_000_001, 5_000_002], vec![5_000_010, 5_000_011, 5_000_002]].into();
    h.supervisor.runtime = Box::new(FakeRuntime::new(h.script.clone()));
    let workers = Arc::new(Mutex::new(vec![(5_000_001, 0), (5_000_002, 1)]));
    let smi = FakeSmi {
        script: h.script.clone(),
        workers: workers.clone(),
        visible_after: Duration::from_secs(3),
    };
    let rank = |r: u32, node: u32, cpus: &str| RankTarget {
        rank: r,
        gpu: r,
        node,
        cpus: cpus.parse().unwrap(),
        memory_node: Some(node),
    };
    let mut binder = RankBinder::new(
        vec![rank(0, 0, "0-1"), rank(1, 1, "2-3")],
        Some(GpuTool::NvidiaSmi(PathBuf::from("nvidia-smi"))),
        Box::new(smi),
        Duration::from_secs(5),
    );
    binder.cgroup_root = tree.path().to_path_buf();
    binder.proc_root = tree.path().join("proc");
    h.supervisor.ranks = Some(binder);

    // Watches the status record; between the lives it removes rank 1's `cgroup.procs` (a
    // regular file in this tree) so that a new move of its worker shows; once life 2 has run
    // 10 s it cancels.
    let (status, script, cancel) = (h.status.clone(), h.script.clone(), h.cancel.clone());
    let (rank1_procs, life2) = (engine.join("rank-1/cgroup.procs"), workers.clone());
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<Seen> = Vec::new();
        loop {
            let now: Seen = {
                let s = status.lock().unwrap();
                let ranks = s
                    .ranks
                    .iter()
                    .map(|r| {
                        (r.pids.clone(), r.source.clone(), r.cgroup.clone(), r.problem.clone())
                    })
                    .collect();
                (s.state, ranks)
            };
            if now.0 == State::Restarting && script.starts().len() == 1 {
                let _ = std::fs::remove_file(&rank1_procs);
                *life2.lock().unwrap() = vec![(5_000_011, 0), (5_000_002, 1)];
            }
            if seen.last() != Some(&now) {
                seen.push(now.clone());
            }
            if now.0 == State::Stopped {
                return seen;
            }
            let starts = script.starts();
            if starts.len() == 2 && starts[1].elapsed() >= Duration::from_secs(10) {
                cancel.cancel();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    let seen = watcher.await.unwrap();

    let dir = |r: u32| Some(engine.join(format!("rank-{r}")).display().to_string());
    let smi = || Some("nvidia-smi".to_string());
    let waiting = |gpu: u32| {
        (
            Vec::new(),
            smi(),
            None,
            Some(format!(
                "GPU{gpu} shows no process of the engine yet in the vendor's process list"
            )),
        )
    };
    let bound = |pid: i32, r: u32| (vec![pid], smi(), dir(r), None);
    // Only the rank states, in order, with the state they were seen in.
    let ranks: Vec<&Seen> = seen.iter().filter(|(_, r)| !r.is_empty()).collect();
    let states: Vec<State> = seen.iter().map(|(s, _)| *s).collect();
    let life1 = (State::Starting, vec![bound(5_000_001, 0), bound(5_000_002, 1)]);
    let life2 = (State::Starting, vec![bound(5_000_011, 0), bound(5_000_002, 1)]);
    let before = (State::Starting, vec![waiting(0), waiting(1)]);
    assert_eq!(ranks, vec![&before, &life1, &before, &life2], "{seen:#?}");
    // Between the lives and after the stop, no ranks of a stopped engine are shown.
    let between = seen.iter().position(|s| s.0 == State::Restarting).expect("restarted");
    assert!(seen[between].1.is_empty(), "ranks shown while restarting: {seen:#?}");
    assert_eq!(seen.last().unwrap(), &(State::Stopped, Vec::new()), "{states:?}");

    // On disk: each rank's cgroup with its CPUs and node, holding life 2's worker (rank 1's
    // reused pid moved again), the engine's cgroup handing `cpuset` to its children.
    for (r, cpus, node, pid) in [(0, "0-1", "0", "5000011"), (1, "2-3", "1", "5000002")] {
        let d = engine.join(format!("rank-{r}"));
        assert_eq!(read(&d.join("cpuset.cpus")), cpus);
        assert_eq!(read(&d.join("cpuset.mems")), node);
        assert_eq!(read(&d.join("cgroup.procs")), pid, "rank {r}");
    }
    assert_eq!(read(&engine.join("cgroup.subtree_control")), "+cpuset");
    assert!(engine.join("main").is_dir());
}
