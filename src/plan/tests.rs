//! Unit tests of the plan rules (`plan/mod.rs`), on literal host facts.

use super::*;
use crate::host::facts::{GpuTopo, GpuTopoRow, NodeFacts, PciDeviceFacts};
use crate::host::HostFacts;
use crate::topology;

fn cpus(s: &str) -> CpuSet {
    CpuSet::parse_list(s).unwrap()
}

fn node(id: u32, c: &str, total: u64, free: u64, dist: &[u32]) -> NodeFacts {
    NodeFacts {
        id,
        cpus: cpus(c),
        memory_total_mb: Some(total),
        memory_free_mb: Some(free),
        distances: dist.iter().enumerate().map(|(i, d)| (i as u32, *d)).collect(),
        line: 2 + 3 * id as usize,
    }
}

fn row(index: u32, numa: Option<u32>, c: Option<&str>, gpu_numa: Option<u32>) -> GpuTopoRow {
    GpuTopoRow {
        index,
        links: BTreeMap::new(),
        cpu_affinity: c.map(cpus),
        numa_affinity: numa,
        gpu_numa_id: gpu_numa,
        line: 2 + index as usize,
    }
}

/// sysfs facts with no nodes and one NVIDIA 3D controller at `0000:01:00.0`.
fn one_pci_gpu(
    numa_node: Option<u32>,
    local_cpus: Option<CpuSet>,
) -> crate::host::facts::MachineFacts {
    crate::host::facts::MachineFacts {
        nodes: vec![],
        pci_devices: vec![PciDeviceFacts {
            bus_id: "0000:01:00.0".into(),
            class: Some(0x030200),
            vendor: Some(0x10de),
            numa_node,
            local_cpus,
            ..Default::default()
        }],
        cores: vec![],
    }
}

fn facts(nodes: Vec<NodeFacts>, rows: Vec<GpuTopoRow>) -> HostFacts {
    HostFacts {
        numactl: Some(nodes),
        gpu_topo: Some((
            "nvidia-smi-topo-m.txt".into(),
            GpuTopo { gpus: rows, ..GpuTopo::default() },
        )),
        ..HostFacts::default()
    }
}

fn two_sockets() -> Vec<NodeFacts> {
    vec![node(0, "0-7", 64000, 60000, &[10, 21]), node(1, "8-15", 64000, 60000, &[21, 10])]
}

#[test]
fn gpus_on_two_nodes_split_by_node_with_tp() {
    let rows = vec![
        row(0, Some(1), Some("8-15"), None),
        row(1, Some(0), Some("0-7"), None),
        row(2, Some(1), Some("8-15"), None),
        row(3, Some(0), Some("0-7"), None),
    ];
    let topo = topology::build(&facts(two_sockets(), rows));
    let plan = plan(&topo, &PlanRequest { split: Split::Tp(2), ..Default::default() }).unwrap();
    assert_eq!(plan.instances.len(), 2);
    assert_eq!(plan.instances[1].gpus, [1, 3]);
    assert_eq!(plan.instances[1].numactl.as_deref(), Some("numactl --cpunodebind=0 --membind=0"));
    assert_eq!(plan.instances[0].gpus, [0, 2]);
    assert_eq!(plan.instances[0].docker_args, ["--cpuset-cpus=8-15", "--cpuset-mems=1"]);

    let one = super::plan(&topo, &PlanRequest::default()).unwrap();
    assert_eq!(one.instances[0].cpunodebind, [0, 1]);
    assert!(one.instances[0].reasons.iter().any(|r| r.contains("union")));
}

#[test]
fn uneven_and_unknown_requests_are_errors() {
    let rows =
        vec![row(0, Some(0), None, None), row(1, Some(0), None, None), row(2, Some(1), None, None)];
    let topo = topology::build(&facts(two_sockets(), rows));
    let err = plan(&topo, &PlanRequest { split: Split::Tp(2), ..Default::default() });
    assert_eq!(err, Err(PlanError::UnevenTp { count: 3, tp: 2 }));
    let err = plan(&topo, &PlanRequest { gpus: Some(vec![7]), ..Default::default() });
    assert!(matches!(err, Err(PlanError::UnknownGpu { index: 7, .. })));
    let err = plan(&topo, &PlanRequest { gpus: Some(vec![0, 0]), ..Default::default() });
    assert_eq!(err, Err(PlanError::DuplicateGpu { index: 0 }));
    let err = plan(&topo, &PlanRequest { split: Split::Instances(0), ..Default::default() });
    assert_eq!(err, Err(PlanError::ZeroInstances));
    let err = plan(&topo, &PlanRequest { split: Split::Tp(0), ..Default::default() });
    assert_eq!(err, Err(PlanError::ZeroTp));
    let err = plan(&topo, &PlanRequest { split: Split::Instances(2), ..Default::default() });
    assert_eq!(err, Err(PlanError::Uneven { count: 3, instances: 2 }));
    let err = plan(&topo, &PlanRequest { host_memory_gb: Some(-1.0), ..Default::default() });
    assert!(matches!(err, Err(PlanError::BadMemory { .. })));
    let empty = topology::build(&HostFacts::default());
    assert!(matches!(plan(&empty, &PlanRequest::default()), Err(PlanError::NoGpus { .. })));
}

/// The plan reads the typed fact, not the warning text: a `--gpu-pci` device the host
/// lacks stops the plan even beside a real GPU.
#[test]
fn a_missing_gpu_pci_device_is_an_error_not_a_plan_for_the_others() {
    let mut f = facts(two_sockets(), vec![]);
    f.gpu_topo = None;
    f.gpu_pci = vec!["0000:99:00.0".into()];
    f.sysfs = Some(one_pci_gpu(Some(0), None));
    let topo = topology::build(&f);
    assert_eq!(topo.gpus.len(), 1);
    assert_eq!(topo.missing_gpu_pci.len(), 1);
    let err = plan(&topo, &PlanRequest::default());
    assert_eq!(
        err,
        Err(PlanError::GpuPciNotFound {
            bus_id: "0000:99:00.0".into(),
            problem: "no such PCI device in sysfs/bus/pci/devices".into()
        })
    );
    // A warning that merely reads like one is not the fact.
    let mut topo = topo;
    topo.missing_gpu_pci.clear();
    assert!(topo.warnings.iter().any(|w| w.starts_with("--gpu-pci 0000:99:00.0")));
    assert_eq!(plan(&topo, &PlanRequest::default()).unwrap().instances.len(), 1);
}

/// Flag names are the command line's words (`cmd::plan` adds them), not the planner's.
#[test]
fn plan_errors_name_no_flag() {
    let all = [
        PlanError::NoGpus { sources: "none".into() },
        PlanError::GpuPciNotFound { bus_id: "0000:99:00.0".into(), problem: "gone".into() },
        PlanError::UnknownGpu { index: 9, known: "0,1".into() },
        PlanError::DuplicateGpu { index: 0 },
        PlanError::ZeroInstances,
        PlanError::ZeroTp,
        PlanError::Uneven { count: 3, instances: 2 },
        PlanError::UnevenTp { count: 3, tp: 2 },
        PlanError::BadMemory { value: -1.0 },
        PlanError::ReserveLeavesNoCpu { count: 8, gpus: "0".into(), cpus: "0-7".into() },
    ];
    for e in all {
        assert!(!e.to_string().contains("--"), "{e}");
    }
}

#[test]
fn memoryless_node_binds_cpus_by_list_and_memory_to_nearest() {
    let nodes = vec![
        node(0, "0-5,24-29", 0, 0, &[10, 12, 12, 12]),
        node(1, "6-11", 64307, 19214, &[12, 10, 12, 12]),
        node(2, "12-17", 64472, 27945, &[12, 12, 10, 12]),
        node(3, "18-23", 0, 0, &[12, 12, 12, 10]),
    ];
    let topo = topology::build(&facts(nodes, vec![row(0, Some(0), Some("0-5,24-29"), None)]));
    let inst = &plan(&topo, &PlanRequest::default()).unwrap().instances[0];
    // Equal distance: the node with more free memory wins.
    assert_eq!(inst.numactl.as_deref(), Some("numactl --physcpubind=0-5,24-29 --membind=2"));
    assert!(inst.cpunodebind.is_empty());
    assert!(inst.reasons.iter().any(|r| r.contains("issue 165")));
}

#[test]
fn short_free_memory_switches_to_preferred() {
    let nodes =
        vec![node(0, "0-15", 64992, 4950, &[10, 22]), node(1, "16-31", 65461, 12524, &[22, 10])];
    let topo = topology::build(&facts(nodes, vec![row(0, Some(0), Some("0-15"), None)]));
    let req = PlanRequest { host_memory_gb: Some(8.0), ..Default::default() };
    let inst = &plan(&topo, &req).unwrap().instances[0];
    assert_eq!(inst.numactl.as_deref(), Some("numactl --cpunodebind=0 --preferred=0"));
    assert_eq!(inst.memory_policy, "preferred");
    // A cpuset cannot express "preferred": CPUs only.
    assert_eq!(inst.docker_args, ["--cpuset-cpus=0-15"]);
    let req = PlanRequest { host_memory_gb: Some(4.0), ..Default::default() };
    let inst = &plan(&topo, &req).unwrap().instances[0];
    assert_eq!(inst.numactl.as_deref(), Some("numactl --cpunodebind=0 --membind=0"));
}

#[test]
fn unknown_affinity_recommends_no_binding() {
    let mut f = facts(two_sockets(), vec![row(0, None, None, None)]);
    f.gpu_topo = None;
    f.sysfs = Some(one_pci_gpu(None, Some(cpus("0-15"))));
    let topo = topology::build(&f);
    assert_eq!(topo.gpus.len(), 1);
    let inst = &plan(&topo, &PlanRequest::default()).unwrap().instances[0];
    assert_eq!(inst.numactl, None);
    assert!(inst.binding.is_none());
    assert!(inst.docker_args.is_empty());
    assert!(inst.reasons[0].contains("no source knows its NUMA node"), "{:?}", inst.reasons);
}

#[test]
fn gpu_memory_node_is_never_a_cpu_node() {
    let mut nodes = vec![node(0, "0-71", 490037, 484432, &[10, 80])];
    nodes.push(node(1, "", 97280, 97279, &[80, 10]));
    // A tool that reports the GPU's own memory node as its affinity.
    let topo = topology::build(&facts(nodes, vec![row(0, Some(1), None, Some(1))]));
    assert!(topo.node(1).unwrap().gpu_memory);
    let inst = &plan(&topo, &PlanRequest::default()).unwrap().instances[0];
    assert_eq!(inst.cpunodebind, [0]);
    assert_eq!(inst.membind, [0]);
    assert!(inst.reasons.iter().any(|r| r.contains("node 1 is GPU memory")), "{:?}", inst.reasons);
}

#[test]
fn sources_that_disagree_are_named_in_a_warning() {
    let mut f = facts(two_sockets(), vec![row(0, Some(0), Some("0-7"), None)]);
    f.sysfs = Some(crate::host::facts::MachineFacts {
        nodes: vec![node(0, "0-7", 64000, 1, &[10, 21]), node(1, "8-11", 64000, 1, &[21, 10])],
        pci_devices: vec![],
        ..Default::default()
    });
    let topo = topology::build(&f);
    assert!(
        topo.warnings.iter().any(|w| w.contains("numactl-hardware.txt line 5")
            && w.contains("sysfs/devices/system/node/node1/cpulist")),
        "{:?}",
        topo.warnings
    );
}

#[test]
fn cpu_affinity_with_cpus_no_node_has_is_ignored() {
    // "0-31,64-950": a CPU list glued to the next cell by tab expansion.
    let topo =
        topology::build(&facts(two_sockets(), vec![row(0, Some(0), Some("0-7,64-950"), None)]));
    assert!(topo.warnings.iter().any(|w| w.contains("CPUs no node has")));
    assert_eq!(topo.gpus[0].cpu_affinity.as_ref().unwrap().value.to_list(), "0-7");
}

/// One socket, 4 cores with siblings side by side (`0,1` one core), 3 GPUs on it; with
/// `cores`, the host's cores are known (as hwloc or sysfs would give them).
fn one_socket_three_gpus(known: bool) -> Topology {
    let rows = (0..3).map(|i| row(i, Some(0), Some("0-7"), None)).collect();
    let mut f = facts(vec![node(0, "0-7", 64000, 60000, &[10])], rows);
    if known {
        let cores = (0..4)
            .map(|c| crate::host::facts::CoreFacts {
                logical_index: c,
                package: Some(0),
                cpus: cpus(&format!("{},{}", 2 * c, 2 * c + 1)),
            })
            .collect();
        f.hwloc = Some(crate::host::facts::MachineFacts { cores, ..Default::default() });
    }
    topology::build(&f)
}

fn cpu_lists(plan: &Plan) -> Vec<String> {
    plan.instances.iter().map(|i| i.cpus.to_list()).collect()
}

#[test]
fn a_shared_node_is_split_by_whole_cores_when_they_are_known() {
    let req = PlanRequest { split: Split::Tp(1), ..Default::default() };
    let plan = plan(&one_socket_three_gpus(true), &req).unwrap();
    // 4 cores for 3 instances: 1, 1 and 2 cores, never a core across two instances.
    assert_eq!(cpu_lists(&plan), ["0-1", "2-3", "4-7"]);
    let why = plan.instances[0].reasons.last().unwrap();
    assert!(
        why.contains("whole cores (SMT siblings together, from hwloc (Core objects))"),
        "{why}"
    );

    // Unknown cores: the range is cut as before (CPU 1 and 2 of core 0,1 / 2,3 part ways),
    // and the reason says the siblings were unknown.
    let plan = super::plan(&one_socket_three_gpus(false), &req).unwrap();
    assert_eq!(cpu_lists(&plan), ["0-1", "2-4", "5-7"]);
    let why = plan.instances[0].reasons.last().unwrap();
    assert!(why.contains("SMT siblings unknown"), "{why}");
}

#[test]
fn the_reserve_leaves_each_nodes_first_cores_out_of_every_instance() {
    let req = PlanRequest { split: Split::Tp(1), reserve_cpus: 1, ..Default::default() };
    let plan = plan(&one_socket_three_gpus(true), &req).unwrap();
    // Core 0,1 reserved whole (1 CPU asked, a core is never half reserved); 3 cores left.
    assert_eq!(cpu_lists(&plan), ["2-3", "4-5", "6-7"]);
    let inst = &plan.instances[0];
    assert_eq!(inst.numactl.as_deref(), Some("numactl --physcpubind=2-3 --membind=0"));
    assert!(inst.reasons.iter().any(|r| r.contains("CPUs 0-1 are left out")), "{:?}", inst.reasons);

    let plan = super::plan(&one_socket_three_gpus(false), &req).unwrap();
    assert_eq!(cpu_lists(&plan), ["1-2", "3-4", "5-7"]);

    let req = PlanRequest { reserve_cpus: 8, ..Default::default() };
    assert_eq!(
        super::plan(&one_socket_three_gpus(true), &req),
        Err(PlanError::ReserveLeavesNoCpu { count: 8, gpus: "0,1,2".into(), cpus: "0-7".into() })
    );
    // A reserve of 0 changes nothing.
    let req = PlanRequest { reserve_cpus: 0, ..Default::default() };
    let plan = super::plan(&one_socket_three_gpus(true), &req).unwrap();
    assert_eq!(plan.instances[0].numactl.as_deref(), Some("numactl --cpunodebind=0 --membind=0"));
}
