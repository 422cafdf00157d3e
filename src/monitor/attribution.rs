//! Ties GPU processes to the supervised engine: which processes on the GPUs belong to the
//! engine's process tree, which are foreign processes on the engine's GPUs, and which are
//! orphans (pids that were the engine's and still hold GPU memory after it stopped or
//! restarted). Pure functions over pid sets, plus `process_tree` which reads `/proc` under a
//! root path (a seam for tests). It does not decide what to do about them (that is `checks`).
//!
//! Several instances on one host (`nodeagent serve --instance N`): [`read_instances`] reads
//! each instance's pid file (`engine.pids` in its state dir, `supervise::statedir::
//! instance_dirs`), keeps the pids that are still the process that was recorded (same start
//! time) and expands them to their process trees; [`name_instances`] then names every GPU
//! process with the instance whose engine it belongs to (`instance` in the monitor's JSON), so
//! each GPU is seen with its instance whichever agent's monitor looks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::facts::GpuProcess;
use crate::supervise::pidfile::{self, PID_FILE};
use crate::supervise::procs::ProcFs;
use crate::supervise::statedir::instance_dirs;

/// Whose a GPU process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// In the running engine's process tree.
    Engine,
    /// Not the engine's, on a GPU the engine uses.
    Foreign,
    /// Was in the engine's tree once, and the engine is gone or restarted without it.
    Orphan,
    /// Not the engine's, on a GPU the engine does not use (or no engine is supervised).
    Other,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Engine => "engine",
            Owner::Foreign => "foreign",
            Owner::Orphan => "orphan",
            Owner::Other => "other",
        }
    }
}

/// What the monitor knows of the engine when it attributes a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnginePids {
    /// Whether an engine is supervised at all; when false every process is `Other`.
    pub supervised: bool,
    /// Whether the engine is running now.
    pub running: bool,
    /// Its process tree now.
    pub current: BTreeSet<u32>,
    /// Every pid ever seen in its tree (across restarts).
    pub ever: BTreeSet<u32>,
    /// The GPUs the plan gave it; `None`: the GPUs its processes hold memory on.
    pub gpus: Option<BTreeSet<u32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributedProcess {
    pub gpu: u32,
    pub pid: u32,
    pub name: String,
    pub memory_mib: Option<u64>,
    pub owner: Owner,
    /// The instance (`nodeagent serve --instance N`) whose engine this process belongs to,
    /// when one of the host's instances claims it ([`name_instances`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<usize>,
}

/// One instance's engine on this host, as its state dir's pid file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEngine {
    pub instance: usize,
    /// Its engine's processes now (the recorded pids still alive, and their descendants).
    pub pids: BTreeSet<u32>,
}

/// Names each process with the instance whose engine holds its pid (the first listed, if two
/// claimed the same pid, which a live host cannot have).
pub fn name_instances(a: &mut Attribution, instances: &[InstanceEngine]) {
    for p in &mut a.processes {
        p.instance = instances.iter().find(|i| i.pids.contains(&p.pid)).map(|i| i.instance);
    }
}

/// Every instance's engine under the state dir `base` (instance 0 is `base`, instance N
/// `base/N`): the pid file's entries whose process still has the recorded start time, then
/// their descendants. A missing or unreadable pid file (another user's agent, none started
/// yet) gives no pids for that instance; a symlink is not followed.
pub fn read_instances(base: &Path, proc_root: &Path) -> Vec<InstanceEngine> {
    let proc = ProcFs::new(proc_root);
    instance_dirs(base)
        .into_iter()
        .filter_map(|(instance, dir)| {
            let file = dir.join(PID_FILE);
            let meta = std::fs::symlink_metadata(&file).ok()?;
            if !meta.is_file() {
                return None;
            }
            let text = std::fs::read_to_string(&file).ok()?;
            let roots: Vec<u32> = pidfile::parse(&text, &file.display().to_string())
                .into_iter()
                .filter(|(pid, start)| proc.stat(*pid).is_some_and(|s| s.start_time == *start))
                .filter_map(|(pid, _)| u32::try_from(pid).ok())
                .collect();
            Some(InstanceEngine { instance, pids: process_tree(proc_root, &roots) })
        })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub processes: Vec<AttributedProcess>,
    /// The GPUs counted as the engine's.
    pub engine_gpus: BTreeSet<u32>,
}

impl Attribution {
    pub fn with_owner(&self, owner: Owner) -> impl Iterator<Item = &AttributedProcess> {
        self.processes.iter().filter(move |p| p.owner == owner)
    }

    /// GPU memory held per GPU by processes of this owner, in MiB.
    pub fn memory_by_gpu(&self, owner: Owner) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for p in self.with_owner(owner) {
            *out.entry(p.gpu).or_insert(0) += p.memory_mib.unwrap_or(0);
        }
        out
    }
}

pub fn attribute(processes: &[GpuProcess], engine: &EnginePids) -> Attribution {
    let engine_gpus: BTreeSet<u32> = match &engine.gpus {
        Some(g) => g.clone(),
        None => processes
            .iter()
            .filter(|p| engine.running && engine.current.contains(&p.pid))
            .map(|p| p.gpu)
            .collect(),
    };
    let owner = |p: &GpuProcess| {
        if !engine.supervised {
            Owner::Other
        } else if engine.running && engine.current.contains(&p.pid) {
            Owner::Engine
        } else if engine.ever.contains(&p.pid) {
            Owner::Orphan
        } else if engine_gpus.contains(&p.gpu) {
            Owner::Foreign
        } else {
            Owner::Other
        }
    };
    let processes = processes
        .iter()
        .map(|p| AttributedProcess {
            gpu: p.gpu,
            pid: p.pid,
            name: p.name.clone(),
            memory_mib: p.memory_mib,
            owner: owner(p),
            instance: None,
        })
        .collect();
    Attribution { processes, engine_gpus }
}

/// The pids of `roots` and all their descendants, read from `<proc_root>/*/stat`. Processes
/// that vanish while being read are skipped (they are gone, which is the truth).
pub fn process_tree(proc_root: &Path, roots: &[u32]) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            if let Some(ppid) = parse_ppid(&stat) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut stack: Vec<u32> =
        roots.iter().copied().filter(|r| proc_root.join(r.to_string()).exists()).collect();
    while let Some(pid) = stack.pop() {
        if out.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    out
}

/// The parent pid from `/proc/PID/stat`: `584 (python3) S 1 584 ...`. The command name may
/// hold spaces and parentheses, so the fields are read after the *last* `)`.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(gpu: u32, pid: u32, mem: u64) -> GpuProcess {
        GpuProcess { gpu, pid, name: format!("p{pid}"), memory_mib: Some(mem), line: 0 }
    }

    #[test]
    fn engine_foreign_orphan_other() {
        let ps =
            [proc(0, 10, 100), proc(1, 11, 100), proc(1, 99, 5), proc(2, 98, 7), proc(0, 9, 50)];
        let engine = EnginePids {
            supervised: true,
            running: true,
            current: [10, 11].into(),
            ever: [9, 10, 11].into(),
            gpus: None,
        };
        let a = attribute(&ps, &engine);
        let owners: Vec<Owner> = a.processes.iter().map(|p| p.owner).collect();
        assert_eq!(
            owners,
            [Owner::Engine, Owner::Engine, Owner::Foreign, Owner::Other, Owner::Orphan]
        );
        assert_eq!(a.engine_gpus, [0, 1].into());
        assert_eq!(a.memory_by_gpu(Owner::Engine), [(0, 100), (1, 100)].into());
    }

    #[test]
    fn after_stop_engine_pids_are_orphans() {
        let ps = [proc(0, 10, 100)];
        let engine = EnginePids {
            supervised: true,
            running: false,
            current: BTreeSet::new(),
            ever: [10].into(),
            gpus: Some([0].into()),
        };
        assert_eq!(attribute(&ps, &engine).processes[0].owner, Owner::Orphan);
        let unsupervised = EnginePids::default();
        assert_eq!(attribute(&ps, &unsupervised).processes[0].owner, Owner::Other);
    }

    #[test]
    fn processes_are_named_with_their_instance() {
        let ps = [proc(0, 10, 100), proc(1, 11, 100), proc(4, 20, 100), proc(5, 99, 1)];
        let mut a = attribute(&ps, &EnginePids::default());
        let instances = [
            InstanceEngine { instance: 0, pids: [10, 11].into() },
            InstanceEngine { instance: 1, pids: [20, 21].into() },
        ];
        name_instances(&mut a, &instances);
        let named: Vec<Option<usize>> = a.processes.iter().map(|p| p.instance).collect();
        assert_eq!(named, [Some(0), Some(0), Some(1), None]);
        let json = serde_json::to_value(&a.processes[2]).unwrap();
        assert_eq!(json["instance"], 1);
        assert!(serde_json::to_value(&a.processes[3]).unwrap().get("instance").is_none());
    }

    /// Fake `/proc` and state dirs: instance 0's recorded pid is live with the same start
    /// time (its child comes along), instance 1's pid was reused by another process (start
    /// time differs), instance 2's pid file is a symlink (not read).
    #[test]
    fn read_instances_checks_start_times_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let stat = |pid: u32, ppid: u32, start: u64| {
            let d = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let rest = "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
            std::fs::write(d.join("stat"), format!("{pid} (x y) S {ppid} 1 1 {rest} {start} 0\n"))
                .unwrap();
        };
        stat(100, 1, 5000);
        stat(101, 100, 5001);
        stat(200, 1, 9999);
        assert_eq!(ProcFs::new(&proc_root).stat(100).unwrap().start_time, 5000);
        let base = tmp.path().join("run");
        for (dir, text) in [(base.clone(), "100 5000\n"), (base.join("1"), "200 6000\n")] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(PID_FILE), text).unwrap();
        }
        std::fs::create_dir_all(base.join("2")).unwrap();
        std::os::unix::fs::symlink(base.join(PID_FILE), base.join("2").join(PID_FILE)).unwrap();
        let found = read_instances(&base, &proc_root);
        assert_eq!(
            found,
            [
                InstanceEngine { instance: 0, pids: [100, 101].into() },
                InstanceEngine { instance: 1, pids: BTreeSet::new() },
            ]
        );
    }

    #[test]
    fn ppid_survives_odd_names() {
        assert_eq!(parse_ppid("584 (python3) S 1 584 584 0"), Some(1));
        assert_eq!(parse_ppid("7 (ray::Ray Worker) (x)) R 42 7"), Some(42));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn process_tree_of_a_real_child() {
        // A real shell with a real child: the tree must contain both, and not our parent.
        let mut child =
            std::process::Command::new("sh").args(["-c", "sleep 30 & wait"]).spawn().unwrap();
        let root = child.id();
        let mut tree = BTreeSet::new();
        for _ in 0..50 {
            tree = process_tree(Path::new("/proc"), &[root]);
            if tree.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for pid in &tree {
            let pid = nix::unistd::Pid::from_raw(*pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.wait();
        assert!(tree.contains(&root));
        assert_eq!(tree.len(), 2, "{tree:?}");
        assert!(!tree.contains(&std::process::id()));
    }
}
