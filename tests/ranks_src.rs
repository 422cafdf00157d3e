//! Per-rank binding's pid -> GPU from the vendor library (issue 15 item 6): NVML and libmxsml
//! for real through FFI, without a GPU (`tests/fake-nvml`, `tests/fake-mxsml` compiled here with
//! `cc`, their process lists naming two `sleep` children as the rank workers). The binder
//! (`nodeagent::supervise::ranks::RankBinder`, as the supervisor ticks it) takes the library's
//! list first; when the library fails mid-run it reads the tool's table instead (a fake
//! `nvidia-smi` runner that counts its calls), and when both fail the ranks it bound stay bound.
//! The rank cgroups go to a temp tree standing for a cgroup v2 root (the binder's writes land in
//! plain files there), so no root is needed; `tests/ranks.rs` does the same on real cgroups.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeagent::host::mxsml::Mxsml;
use nodeagent::host::nvml::NvmlLib;
use nodeagent::host::runner::{CommandRunner, RunError, ToolOutput};
use nodeagent::supervise::occupancy::check::GpuTool;
use nodeagent::supervise::ranks::{RankBinder, RankStatus, RankTarget};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn cc(src: &str, out: &Path) {
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-w", "-o"])
        .arg(out)
        .arg(repo(src))
        .status()
        .expect("cc must be installed");
    assert!(status.success(), "building {src} failed");
}

/// Writes a config whole and renames it in place, so a library never reads half a file.
fn set_conf(path: &Path, conf: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, conf).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `nvidia-smi` answering from `apps` (`None`: it fails), counting its runs.
#[derive(Clone, Default)]
struct Smi {
    apps: Arc<Mutex<Option<String>>>,
    runs: Arc<AtomicUsize>,
}

impl CommandRunner for Smi {
    fn run(&self, p: &Path, args: &[&str], _: Duration) -> Result<ToolOutput, RunError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let Some(apps) = self.apps.lock().unwrap().clone() else {
            return Err(RunError::Failed {
                tool: p.display().to_string(),
                args: args.join(" "),
                status: "exit status: 15".into(),
                detail: ": Unable to determine the device handle for GPU0: Unknown Error".into(),
            });
        };
        let stdout = if args.first().is_some_and(|a| a.starts_with("--query-gpu")) {
            "index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n\
             0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559 MiB, 21653 MiB, 0 %, 31, 69.45 W\n\
             1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, 81559 MiB, 4691 MiB, 0 %, 31, 69.45 W\n"
                .to_string()
        } else {
            format!("gpu_bus_id, pid, process_name, used_gpu_memory [MiB]\n{apps}")
        };
        Ok(ToolOutput { stdout, stderr: String::new(), elapsed: Duration::ZERO })
    }
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sleepers(n: usize) -> (Children, Vec<i32>) {
    let kids: Vec<Child> =
        (0..n).map(|_| Command::new("sleep").arg("300").spawn().unwrap()).collect();
    let pids = kids.iter().map(|c| c.id() as i32).collect();
    (Children(kids), pids)
}

/// A cgroup v2 root with `cpuset` offered and the engine's cgroup in it; its containment.
fn v2_tree(root: &Path) -> (PathBuf, String) {
    let engine = root.join("nodeagent-0-ab");
    std::fs::create_dir(&engine).unwrap();
    for dir in [root, engine.as_path()] {
        std::fs::write(dir.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
    }
    std::fs::write(engine.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(engine.join("cgroup.procs"), "").unwrap();
    let containment = format!("cgroup-v2 {}", engine.display());
    (engine, containment)
}

fn ranks() -> Vec<RankTarget> {
    (0..2)
        .map(|r| RankTarget {
            rank: r,
            gpu: r,
            node: 0,
            cpus: r.to_string().parse().unwrap(),
            memory_node: Some(0),
        })
        .collect()
}

/// One rank: its pids, source, whether it has a cgroup, its problem.
type Summary<'a> = (Vec<i32>, Option<&'a str>, bool, Option<&'a str>);

fn summary(states: &[RankStatus]) -> Vec<Summary<'_>> {
    states
        .iter()
        .map(|s| (s.pids.clone(), s.source.as_deref(), s.cgroup.is_some(), s.problem.as_deref()))
        .collect()
}

fn procs_of(engine: &Path, rank: u32) -> String {
    std::fs::read_to_string(engine.join(format!("rank-{rank}/cgroup.procs"))).unwrap_or_default()
}

#[test]
fn nvml_first_the_tool_when_nvml_fails_and_bound_ranks_kept_when_both_fail() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    cc("tests/fake-nvml/fake_nvml.c", &lib);
    let conf = dir.path().join("fake_nvml.conf");
    let (kids, pids) = sleepers(4);
    let (a, b, other, c) = (pids[0], pids[1], pids[2], pids[3]);
    let listed = |x: i32, y: i32| format!("gpus 2\ngpu0.proc.pid {x}\ngpu1.proc.pid {y}\n");
    set_conf(&conf, &listed(a, b));

    let tree = tempfile::tempdir().unwrap();
    let (engine, containment) = v2_tree(tree.path());
    let smi = Smi::default();
    *smi.apps.lock().unwrap() = Some(format!(
        "00000000:18:00.0, {a}, python3, 21644 MiB\n00000000:2A:00.0, {b}, python3, 4682 MiB\n"
    ));
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    let mut binder = RankBinder::new(
        ranks(),
        Some(GpuTool::NvidiaSmi("nvidia-smi".into())),
        Box::new(smi.clone()),
        Duration::from_secs(5),
    );
    binder.library = Some(Box::new(nvml));
    binder.cgroup_root = tree.path().to_path_buf();

    // NVML lists both workers: bound from it, the tool never run.
    let s = binder.tick(&[a, b], Some(&containment));
    assert_eq!(
        summary(&s),
        [(vec![a], Some("NVML"), true, None), (vec![b], Some("NVML"), true, None)],
        "{s:?}"
    );
    assert_eq!(smi.runs.load(Ordering::SeqCst), 0);
    assert_eq!(procs_of(&engine, 0), a.to_string());
    assert_eq!(procs_of(&engine, 1), b.to_string());
    assert!(s[0].memory_by_node.values().sum::<u64>() > 0, "{s:?}");

    // NVML's process calls fail mid-run while the engine forks a process: the tool's table is
    // read instead (it runs the two queries), the ranks stay bound to the same workers.
    set_conf(&conf, &format!("{}fail.nvmlDeviceGetComputeRunningProcesses_v3 999\n", listed(a, b)));
    let s = binder.tick(&[a, b, other], Some(&containment));
    assert_eq!(
        summary(&s),
        [(vec![a], Some("nvidia-smi"), true, None), (vec![b], Some("nvidia-smi"), true, None)],
        "{s:?}"
    );
    assert_eq!(smi.runs.load(Ordering::SeqCst), 2);

    // The tool fails too: nothing lists the workers, yet they are the engine's and bound.
    *smi.apps.lock().unwrap() = None;
    let s = binder.tick(&[a, b], Some(&containment));
    assert_eq!(
        summary(&s),
        [(vec![a], Some("NVML"), true, None), (vec![b], Some("NVML"), true, None)],
        "{s:?}"
    );

    // The engine restarts (release at its stop): the new worker on GPU 0 comes from NVML,
    // answering again; GPU 1's worker is not listed yet, and why is said.
    binder.release();
    set_conf(&conf, &listed(c, 0));
    let s = binder.tick(&[c, other], Some(&containment));
    assert_eq!(s[0].pids, vec![c], "{s:?}");
    assert_eq!((s[0].source.as_deref(), s[0].problem.as_deref()), (Some("NVML"), None));
    assert_eq!(procs_of(&engine, 0), c.to_string());
    assert_eq!(
        summary(&s)[1],
        (
            vec![],
            Some("NVML"),
            false,
            Some("GPU1 shows no process of the engine yet in the vendor's process list")
        )
    );
    drop(kids);
}

#[test]
fn libmxsml_lists_the_workers_and_a_failing_list_keeps_the_bound_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libmxsml.so");
    cc("tests/fake-mxsml/fake_mxsml.c", &lib);
    let conf = dir.path().join("libmxsml.so.conf");
    let (kids, pids) = sleepers(3);
    let (a, b, c) = (pids[0], pids[1], pids[2]);
    let listed = |x: i32, y: i32| {
        format!("count 2\nprocs.0 {x}:ray::RayWorkerW:58880\nprocs.1 {y}:ray::RayWorkerW:58880\n")
    };
    set_conf(&conf, &listed(a, b));
    let tree = tempfile::tempdir().unwrap();
    let (engine, containment) = v2_tree(tree.path());
    let mut binder = RankBinder::new(ranks(), None, Box::new(Smi::default()), Duration::ZERO);
    binder.library = Some(Box::new(Mxsml::open_first(&[lib]).unwrap()));
    binder.cgroup_root = tree.path().to_path_buf();

    let s = binder.tick(&[a, b], Some(&containment));
    assert_eq!(
        summary(&s),
        [(vec![a], Some("libmxsml"), true, None), (vec![b], Some("libmxsml"), true, None)],
        "{s:?}"
    );
    assert_eq!(procs_of(&engine, 1), b.to_string());

    // GPU 1's list fails and there is no mx-smi: the bound ranks stay bound; a worker the
    // engine lost is no rank of it any more, and the failure is the reason given.
    set_conf(&conf, &format!("{}fail.mxSmlGetSingleGpuProcess.1 1\n", listed(a, b)));
    let s = binder.tick(&[a, b, c], Some(&containment));
    assert_eq!(
        summary(&s),
        [(vec![a], Some("libmxsml"), true, None), (vec![b], Some("libmxsml"), true, None)],
        "{s:?}"
    );
    let s = binder.tick(&[a, c], Some(&containment));
    assert_eq!(summary(&s)[0], (vec![a], Some("libmxsml"), true, None), "{s:?}");
    let why = s[1].problem.as_deref().unwrap_or_default();
    assert!(
        why.starts_with(
            "libmxsml's process list failed: libmxsml: mxSmlGetSingleGpuProcess on GPU 1:"
        ) && why.ends_with(
            "; no vendor tool (nvidia-smi, mx-smi) found to tell which pid runs on which GPU"
        ),
        "{why}"
    );
    assert_eq!((s[1].cgroup.as_ref(), s[1].source.as_ref()), (None, None));
    drop(kids);
}
