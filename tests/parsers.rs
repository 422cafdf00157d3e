//! Parsers of GPU tool text and hwloc XML against captured real outputs in
//! `testdata/fixtures/` (see `testdata/fixtures/SOURCES.md`), their format variations
//! (tabs, ANSI escapes, CRLF, trailing blanks, wrapped headers, glued cells, truncation), and
//! property tests that no input makes them panic.

use std::path::PathBuf;

use nodeagent::host::cpuset::CpuSet;
use nodeagent::host::facts::{GpuTopo, SmiStatus};
use nodeagent::host::text::expand_tabs;
use nodeagent::host::{gputopo, hwloc, mxdmon, mxsmi, nvsmi, rocmsmi};
use proptest::prelude::*;

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fixtures").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const MX_SEED_IDLE: &str = "mx-smi/seed-4xc500-2.1.6.idle.txt";
const MX_SEED_QWEN: &str = "mx-smi/seed-4xc500-2.1.6.load.qwen72b.txt";
const MX_SEED_R1: &str = "mx-smi/seed-4xc500-2.1.6.load.r1-32b.txt";
const MX_224: &str = "mx-smi/ernie-8xc550-2.2.4-gpu-state.txt";
const MX_229: &str = "mx-smi/ms-swift-8xc500-2.2.9-board-layout.txt";
const NV_TABLE: &str = "nvidia-smi/stelline-asus-esc8000a-4xrtx6000ada.txt";
const TOPO_MX_SEED: &str = "mx-smi-topo/seed-4xc500-mx-smi-topo-m.txt";
const TOPO_MX_SWIFT: &str = "mx-smi-topo/ms-swift-8xc500-node-affinity.txt";
const TOPO_CLUB: &str = "nvidia-smi-topo/club3090-2x5090-PHB-gpu-numa-id-NA.txt";
const TOPO_DGX: &str = "nvidia-smi-topo/dgxa100-8gpu-NV12-12mlx5-numa-3-1-7-5.txt";
const TOPO_H200: &str = "nvidia-smi-topo/h200-hgx-8gpu-12nic-NV18-PXB-tabs.txt";
const NV_H100_LOAD: &str = "../captures/h100-2gpu-vm/nvidia-smi.load.txt";
const TOPO_QUDA: &str = "nvidia-smi-topo/quda669-8gpu-mlx5-cpu-affinity-only-2018.txt";
const TOPO_P4: &str = "nvidia-smi-topo/hami99-1xp4-numa-affinity-NA.txt";
const TOPO_4090: &str = "nvidia-smi-topo/club3090-46-5gpu-2node-spaces.txt";
const TOPO_H100: &str = "../captures/h100-2gpu-vm/nvidia-smi-topo-m.txt";
const STATUS_FIXTURES: &[&str] =
    &[MX_SEED_IDLE, MX_SEED_QWEN, MX_SEED_R1, MX_224, MX_229, NV_TABLE, NV_H100_LOAD];
const TOPO_FIXTURES: &[&str] = &[
    TOPO_MX_SEED,
    TOPO_MX_SWIFT,
    TOPO_CLUB,
    TOPO_DGX,
    TOPO_H200,
    TOPO_H100,
    TOPO_QUDA,
    TOPO_P4,
    TOPO_4090,
];

fn capture(name: &str) -> String {
    fixture(&format!("../captures/h100-2gpu-vm/{name}"))
}

fn status(rel: &str) -> SmiStatus {
    let text = fixture(rel);
    let parsed =
        if rel.contains("nvidia") { nvsmi::parse_table(&text) } else { mxsmi::parse(&text) };
    parsed.unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn topo(rel: &str) -> GpuTopo {
    gputopo::parse(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn bus_ids(s: &SmiStatus) -> Vec<&str> {
    s.gpus.iter().map(|g| g.bus_id.as_deref().unwrap_or("-")).collect()
}

fn cpus(list: &str) -> Option<CpuSet> {
    Some(CpuSet::parse_list(list).unwrap())
}

// ---------------------------------------------------------------- mx-smi status table

#[test]
fn mxsmi_seed_idle_2_1_6() {
    let s = status(MX_SEED_IDLE);
    assert_eq!(s.tool_version.as_deref(), Some("MX-SMI 2.1.6"));
    assert_eq!(s.driver_version.as_deref(), Some("2.5.014"));
    assert_eq!(s.gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(bus_ids(&s), ["0000:05:00.0", "0000:08:00.0", "0000:0e:00.0", "0000:0f:00.0"]);
    assert!(s.gpus.iter().all(|g| g.name.as_deref() == Some("MXC500")));
    let used: Vec<_> = s.gpus.iter().map(|g| g.memory_used_mib.unwrap()).collect();
    assert_eq!(used, [60982, 60534, 60534, 60534]);
    assert!(s.gpus.iter().all(|g| g.memory_total_mib == Some(65536)));
    assert!(s.gpus.iter().all(|g| g.utilization_pct == Some(0.0)));
    let temps: Vec<_> = s.gpus.iter().map(|g| g.temperature_c.unwrap()).collect();
    assert_eq!(temps, [51.0, 51.0, 50.0, 50.0]);
    let power: Vec<_> = s.gpus.iter().map(|g| g.power_w.unwrap()).collect();
    assert_eq!(power, [71.0, 76.0, 74.0, 71.0]);
    assert_eq!(s.gpus[0].line, 14);
    let procs: Vec<_> = s
        .processes
        .iter()
        .map(|p| (p.gpu, p.pid, p.name.as_str(), p.memory_mib.unwrap()))
        .collect();
    assert_eq!(
        procs,
        [
            (0, 15652, "python", 60032),
            (1, 22854, "ray::RayWorkerW", 59584),
            (2, 22945, "ray::RayWorkerW", 59584),
            (3, 23034, "ray::RayWorkerW", 59584)
        ]
    );
    assert_eq!(s.processes[0].line, 32);
}

#[test]
fn mxsmi_seed_loaded_outputs() {
    let q = status(MX_SEED_QWEN);
    let util: Vec<_> = q.gpus.iter().map(|g| g.utilization_pct.unwrap()).collect();
    assert_eq!(util, [36.0, 36.0, 24.0, 35.0]);
    let used: Vec<_> = q.gpus.iter().map(|g| g.memory_used_mib.unwrap()).collect();
    assert_eq!(used, [60278, 59830, 59830, 59830]);
    let pids: Vec<_> = q.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [343683, 350950, 351042, 351132]);
    assert_eq!(q.processes[3].name, "ray::RayWorkerW");
    assert_eq!(q.processes[3].memory_mib, Some(58880));

    let r = status(MX_SEED_R1);
    let util: Vec<_> = r.gpus.iter().map(|g| g.utilization_pct.unwrap()).collect();
    assert_eq!(util, [34.0, 34.0, 33.0, 33.0]);
    let power: Vec<_> = r.gpus.iter().map(|g| g.power_w.unwrap()).collect();
    assert_eq!(power, [112.0, 118.0, 114.0, 111.0]);
    let used: Vec<_> = r.gpus.iter().map(|g| g.memory_used_mib.unwrap()).collect();
    assert_eq!(used, [61292, 60716, 60716, 60716]);
    let procs: Vec<_> = r.processes.iter().map(|p| (p.gpu, p.pid, p.memory_mib.unwrap())).collect();
    assert_eq!(
        procs,
        [(0, 279777, 60352), (1, 287035, 59776), (2, 287125, 59776), (3, 287215, 59776)]
    );
}

#[test]
fn mxsmi_2_2_4_gpu_state_layout() {
    let s = status(MX_224);
    assert_eq!(s.tool_version.as_deref(), Some("MX-SMI 2.2.4"));
    assert_eq!(s.driver_version.as_deref(), Some("2.15.9"));
    assert_eq!(
        bus_ids(&s),
        [
            "0000:0f:00.0",
            "0000:34:00.0",
            "0000:48:00.0",
            "0000:5a:00.0",
            "0000:87:00.0",
            "0000:ae:00.0",
            "0000:c2:00.0",
            "0000:d7:00.0"
        ]
    );
    assert_eq!(s.gpus.iter().map(|g| g.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert!(s.gpus.iter().all(|g| g.name.as_deref() == Some("MetaX C550")));
    assert_eq!(s.gpus[0].power_w, Some(53.0));
    assert_eq!(s.gpus[7].temperature_c, Some(31.0));
    assert!(s
        .gpus
        .iter()
        .all(|g| g.memory_used_mib == Some(858) && g.memory_total_mib == Some(65536)));
    assert!(s.processes.is_empty(), "\"no process found\" is an empty table");
}

#[test]
fn mxsmi_2_2_9_board_layout() {
    let s = status(MX_229);
    assert_eq!(s.tool_version.as_deref(), Some("MX-SMI 2.2.9"));
    assert_eq!(
        bus_ids(&s),
        [
            "0000:0e:00.0",
            "0000:0f:00.0",
            "0000:10:00.0",
            "0000:12:00.0",
            "0000:35:00.0",
            "0000:36:00.0",
            "0000:37:00.0",
            "0000:38:00.0"
        ]
    );
    assert!(s.gpus.iter().all(|g| g.name.as_deref() == Some("MetaX C500")));
    let temps: Vec<_> = s.gpus.iter().map(|g| g.temperature_c.unwrap()).collect();
    assert_eq!(temps, [35.0, 37.0, 36.0, 35.0, 33.0, 34.0, 34.0, 36.0]);
    let power: Vec<_> = s.gpus.iter().map(|g| g.power_w.unwrap()).collect();
    assert_eq!(power, [57.0, 58.0, 58.0, 60.0, 57.0, 56.0, 55.0, 56.0]);
    assert!(s
        .gpus
        .iter()
        .all(|g| g.memory_used_mib == Some(826) && g.utilization_pct == Some(0.0)));
    assert!(s.processes.is_empty());
}

#[test]
fn mxsmi_bad_memory_cell_names_line_and_text() {
    let text = fixture(MX_SEED_QWEN).replace("60278/65536 MiB", "60278MiB       ");
    let e = mxsmi::parse(&text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mx-smi: line 13: expected a memory cell like \"60278/65536 MiB\", found \"60278MiB\""
    );
}

#[test]
fn mxsmi_rejects_empty_unknown_and_gpuless_tables() {
    assert!(mxsmi::parse("").unwrap_err().to_string().contains("<empty input>"));
    let e = nvsmi::parse_table("\nNo devices were found\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nvidia-smi: line 2: expected a status table header naming \"bus-id\", found \"No devices were found\""
    );
    // A header with no GPU record below it.
    let text = fixture(MX_SEED_IDLE);
    let lines: Vec<&str> = text.lines().collect();
    let no_rows = [&lines[..13], &lines[25..]].concat().join("\n");
    let e = mxsmi::parse(&no_rows).unwrap_err();
    assert!(e.expected.contains("GPU row"), "{e}");
    // A record with a row missing.
    let short = [&lines[..14], &lines[15..]].concat().join("\n");
    let e = mxsmi::parse(&short).unwrap_err();
    assert_eq!(e.line, 15, "{e}");
}

// ---------------------------------------------------------------- nvidia-smi

#[test]
fn nvsmi_table_driver_575() {
    let s = status(NV_TABLE);
    assert_eq!(s.tool_version.as_deref(), Some("NVIDIA-SMI 575.51.03"));
    assert_eq!(s.driver_version.as_deref(), Some("575.51.03"));
    assert_eq!(bus_ids(&s), ["0000:01:00.0", "0000:41:00.0", "0000:c1:00.0", "0000:e1:00.0"]);
    assert!(s.gpus.iter().all(|g| g.name.as_deref() == Some("NVIDIA RTX 6000 Ada Gene...")));
    let temps: Vec<_> = s.gpus.iter().map(|g| g.temperature_c.unwrap()).collect();
    assert_eq!(temps, [31.0, 34.0, 30.0, 32.0]);
    let power: Vec<_> = s.gpus.iter().map(|g| g.power_w.unwrap()).collect();
    assert_eq!(power, [5.0, 11.0, 7.0, 5.0]);
    assert!(s
        .gpus
        .iter()
        .all(|g| g.memory_used_mib == Some(2) && g.memory_total_mib == Some(49140)));
    assert!(s.gpus.iter().all(|g| g.utilization_pct == Some(0.0)));
    assert!(s.processes.is_empty());
}

#[test]
fn nvsmi_table_with_processes() {
    let text = fixture(NV_TABLE).replace(
        "|  No running processes found                                                             |",
        "|    0   N/A  N/A         4242      C   python3                                 20012MiB |\n\
         |    2   N/A  N/A         4343      C   /usr/bin/python3 -m vllm                  512MiB |",
    );
    let s = nvsmi::parse_table(&text).unwrap();
    let procs: Vec<_> =
        s.processes.iter().map(|p| (p.gpu, p.pid, p.name.as_str(), p.memory_mib)).collect();
    assert_eq!(
        procs,
        [(0, 4242, "python3", Some(20012)), (2, 4343, "/usr/bin/python3 -m vllm", Some(512))]
    );
}

/// The layout of drivers up to ~470 (two header rows, `GPU Memory` on the process title row),
/// typed after the widely published 410-era output; not a capture.
const NV_410_LAYOUT: &str = "\
+-----------------------------------------------------------------------------+
| NVIDIA-SMI 410.48                 Driver Version: 410.48                    |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |
|===============================+======================+======================|
|   0  Tesla V100-PCIE...  Off  | 00000000:18:00.0 Off |                    0 |
| N/A   40C    P0    55W / 250W |  31194MiB / 32480MiB |     44%      Default |
+-------------------------------+----------------------+----------------------+
|   1  Tesla V100-PCIE...  Off  | 00000000:3B:00.0 Off |                    0 |
| N/A   40C    P0    36W / 250W |  30884MiB / 32480MiB |      0%      Default |
+-------------------------------+----------------------+----------------------+

+-----------------------------------------------------------------------------+
| Processes:                                                       GPU Memory |
|  GPU       PID   Type   Process name                             Usage      |
|=============================================================================|
|    0     12345      C   python                                     31183MiB |
+-----------------------------------------------------------------------------+
";

#[test]
fn nvsmi_table_old_two_row_layout() {
    let s = nvsmi::parse_table(NV_410_LAYOUT).unwrap();
    assert_eq!(bus_ids(&s), ["0000:18:00.0", "0000:3b:00.0"]);
    let got: Vec<_> = s
        .gpus
        .iter()
        .map(|g| (g.temperature_c, g.power_w, g.memory_used_mib, g.utilization_pct))
        .collect();
    assert_eq!(
        got,
        [
            (Some(40.0), Some(55.0), Some(31194), Some(44.0)),
            (Some(40.0), Some(36.0), Some(30884), Some(0.0))
        ]
    );
    let procs: Vec<_> =
        s.processes.iter().map(|p| (p.gpu, p.pid, p.name.as_str(), p.memory_mib)).collect();
    assert_eq!(procs, [(0, 12345, "python", Some(31183))]);
}

#[test]
fn nvsmi_sick_gpu_err_cells_are_absent_not_fatal() {
    let text = NV_410_LAYOUT.replace(
        "| N/A   40C    P0    36W / 250W |  30884MiB / 32480MiB |      0%      Default |",
        "| N/A  ERR!    P0   ERR! / 250W |     ERR! / 32480MiB |    ERR!      Default |",
    );
    let s = nvsmi::parse_table(&text).unwrap();
    let g = &s.gpus[1];
    assert_eq!(
        (g.temperature_c, g.power_w, g.memory_used_mib, g.utilization_pct),
        (None, None, None, None)
    );
    assert_eq!(s.gpus[0].memory_used_mib, Some(31194), "the healthy GPU keeps its readings");
    assert_eq!(g.bus_id.as_deref(), Some("0000:3b:00.0"));
}

#[test]
fn nvsmi_mig_devices_table_is_skipped() {
    // The MIG table sits between the GPU table and the process table (layout of driver 5xx).
    let mig = "\n+-----------------------------------------------------------------------------------------+
| MIG devices:                                                                            |
+------------------+----------------------------------+-----------+-----------------------+
| GPU  GI  CI  MIG |                     Memory-Usage |        Vol|        Shared         |
|      ID  ID  Dev |                       BAR1-Usage | SM     Unc| CE ENC  DEC  OFA  JPG |
|                  |                                  |        ECC|                       |
|==================+==================================+===========+=======================|
|  0    1   0   0  |              13MiB / 40192MiB    | 42      0 |  3   0    2    0    0 |
|                  |                 0MiB / 65535MiB  |           |                       |
+------------------+----------------------------------+-----------+-----------------------+
";
    let text = capture("nvidia-smi.load.txt").replacen("\n\n+---", &format!("\n{mig}\n+---"), 1);
    assert!(text.contains("MIG devices"));
    let s = nvsmi::parse_table(&text).unwrap();
    assert_eq!(s.gpus.len(), 2);
    assert_eq!(s.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [584, 585]);
}

const QUERY_CSV: &str = "\
index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]
0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559 MiB, 20517 MiB, 100 %, 45, 402.17 W
1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, 81559 MiB, 1 MiB, 0 %, 31, [N/A]
";

#[test]
fn nvsmi_query_csv_by_header_names() {
    let s = nvsmi::parse_query_csv(QUERY_CSV).unwrap();
    assert_eq!(bus_ids(&s), ["0000:18:00.0", "0000:2a:00.0"]);
    assert_eq!(s.gpus[0].memory_used_mib, Some(20517));
    assert_eq!(s.gpus[0].memory_total_mib, Some(81559));
    assert_eq!(s.gpus[0].utilization_pct, Some(100.0));
    assert_eq!(s.gpus[0].power_w, Some(402.17));
    assert_eq!(s.gpus[1].power_w, None, "[N/A] is absent, not an error");
    assert_eq!(s.gpus[1].line, 3);

    // Any column order, optional columns missing, [Not Supported].
    let shuffled = "pci.bus_id, temperature.gpu, index, utilization.gpu [%]\n\
                    00000000:18:00.0, 45, 0, [Not Supported]\n";
    let s = nvsmi::parse_query_csv(shuffled).unwrap();
    assert_eq!(
        (s.gpus[0].index, s.gpus[0].temperature_c, s.gpus[0].utilization_pct),
        (0, Some(45.0), None)
    );
    assert_eq!(s.gpus[0].memory_total_mib, None);

    // noheader,nounits: columns in QUERY_GPU_FIELDS order.
    let bare = "0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559, 20517, 100, 45, 402.17\n";
    let s = nvsmi::parse_query_csv(bare).unwrap();
    assert_eq!((s.gpus[0].memory_total_mib, s.gpus[0].power_w), (Some(81559), Some(402.17)));
}

#[test]
fn nvsmi_query_csv_errors() {
    let e = nvsmi::parse_query_csv(&QUERY_CSV.replace("20517 MiB", "lots")).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("memory.used"), "{e}");
    let e = nvsmi::parse_query_csv(&QUERY_CSV.replace(", [N/A]", "")).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(nvsmi::parse_query_csv("").is_err());
    assert!(nvsmi::parse_query_csv("index, name\n").is_err(), "a header alone is no GPU");
}

#[test]
fn nvsmi_apps_csv_resolves_gpu_by_bus_id() {
    let apps = "gpu_bus_id, pid, process_name, used_memory [MiB]\n\
                00000000:2A:00.0, 4242, python3, 4096 MiB\n\
                00000000:18:00.0, 4343, /usr/bin/python3, 20480 MiB\n";
    let apps = nvsmi::parse_apps_csv(apps).unwrap();
    assert_eq!(apps[0].bus_id, "0000:2a:00.0");
    let gpus = nvsmi::parse_query_csv(QUERY_CSV).unwrap().gpus;
    let procs = nvsmi::resolve_apps(&apps, &gpus).unwrap();
    let got: Vec<_> = procs.iter().map(|p| (p.gpu, p.pid, p.memory_mib)).collect();
    assert_eq!(got, [(1, 4242, Some(4096)), (0, 4343, Some(20480))]);
    assert!(nvsmi::parse_apps_csv("gpu_bus_id, pid, process_name, used_memory [MiB]\n")
        .unwrap()
        .is_empty());
    let stray = nvsmi::parse_apps_csv(
        "gpu_bus_id, pid, process_name, used_memory [MiB]\n0000:99:00.0, 1, x, 1 MiB\n",
    )
    .unwrap();
    assert!(nvsmi::resolve_apps(&stray, &gpus).is_err());
}

// The 2 x H100 VM (driver 580), captured by scripts/device/capture-nvidia.sh.
#[test]
fn h100_vm_real_captures() {
    let idle = nvsmi::parse_table(&capture("nvidia-smi.idle.txt")).unwrap();
    assert_eq!(idle.tool_version.as_deref(), Some("NVIDIA-SMI 580.159.04"));
    assert_eq!(bus_ids(&idle), ["0000:00:06.0", "0000:00:07.0"]);
    assert!(idle.processes.is_empty());

    let load = nvsmi::parse_table(&capture("nvidia-smi.load.txt")).unwrap();
    assert_eq!(load.gpus[0].name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    let got: Vec<_> = load
        .gpus
        .iter()
        .map(|g| {
            (g.temperature_c, g.power_w, g.memory_used_mib, g.memory_total_mib, g.utilization_pct)
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(62.0), Some(685.0), Some(21653), Some(81559), Some(100.0)),
            (Some(59.0), Some(636.0), Some(4691), Some(81559), Some(100.0))
        ]
    );
    let procs: Vec<_> =
        load.processes.iter().map(|p| (p.gpu, p.pid, p.name.as_str(), p.memory_mib)).collect();
    assert_eq!(procs, [(0, 584, "python3", Some(21644)), (1, 585, "python3", Some(4682))]);

    let q = nvsmi::parse_query_csv(&capture("nvidia-smi-query.load.csv")).unwrap();
    assert_eq!(bus_ids(&q), ["0000:00:06.0", "0000:00:07.0"]);
    assert_eq!((q.gpus[0].memory_used_mib, q.gpus[0].power_w), (Some(21653), Some(685.35)));
    let bare = nvsmi::parse_query_csv(&capture("nvidia-smi-query.noheader.csv")).unwrap();
    assert_eq!(
        (bare.gpus[1].index, bare.gpus[1].temperature_c, bare.gpus[1].power_w),
        (1, Some(34.0), Some(73.15))
    );
    let idle_q = nvsmi::parse_query_csv(&capture("nvidia-smi-query.idle.csv")).unwrap();
    assert_eq!(idle_q.gpus[1].memory_used_mib, Some(0));

    let apps = nvsmi::parse_apps_csv(&capture("nvidia-smi-apps.load.csv")).unwrap();
    let procs = nvsmi::resolve_apps(&apps, &q.gpus).unwrap();
    let got: Vec<_> = procs.iter().map(|p| (p.gpu, p.pid, p.memory_mib)).collect();
    assert_eq!(got, [(0, 584, Some(21644)), (1, 585, Some(4682))], "used_gpu_memory header");
    assert!(nvsmi::parse_apps_csv(&capture("nvidia-smi-apps.idle.csv")).unwrap().is_empty());

    // Header wrapped in ANSI underline even when piped.
    let t = gputopo::parse(&capture("nvidia-smi-topo-m.txt")).unwrap();
    let rows: Vec<_> = t
        .gpus
        .iter()
        .map(|g| (g.index, g.cpu_affinity.clone(), g.numa_affinity, g.gpu_numa_id))
        .collect();
    assert_eq!(rows, [(0, cpus("0-31"), Some(0), None), (1, cpus("0-31"), Some(0), None)]);
    assert_eq!(t.gpus[0].links.get(&1).map(String::as_str), Some("NV18"));
}

// ---------------------------------------------------------------- topo -m

#[test]
fn topo_mx_seed_node_before_cpu() {
    let t = topo(TOPO_MX_SEED);
    assert_eq!(t.gpus.len(), 4);
    for g in &t.gpus {
        assert_eq!(g.numa_affinity, Some(0));
        assert_eq!(g.cpu_affinity, cpus("0-15"));
        assert_eq!(g.links.len(), 3);
        assert!(g.links.values().all(|l| l == "MX"));
    }
    assert_eq!(t.gpus[0].line, 4);
    assert_eq!(t.legend.get("MX").map(String::as_str), Some("Connection traversing MetaXLink"));
}

#[test]
fn topo_mx_swift_two_metaxlink_groups() {
    let t = topo(TOPO_MX_SWIFT);
    assert_eq!(t.gpus.len(), 8);
    for g in &t.gpus {
        assert_eq!((g.numa_affinity, g.cpu_affinity.clone()), (Some(0), cpus("0-31,64-95")));
        for (other, link) in &g.links {
            let same_group = (g.index < 4) == (*other < 4);
            assert_eq!(
                link,
                if same_group { "MX" } else { "NODE" },
                "GPU{} -> GPU{other}",
                g.index
            );
        }
    }
    assert!(t.legend.contains_key("ETH") && t.legend.contains_key("NA"));
}

#[test]
fn topo_dgx_a100_numa_not_in_gpu_order() {
    let t = topo(TOPO_DGX);
    let nodes: Vec<_> = t.gpus.iter().map(|g| g.numa_affinity.unwrap()).collect();
    assert_eq!(nodes, [3, 3, 1, 1, 7, 7, 5, 5]);
    assert_eq!(t.gpus[0].cpu_affinity, cpus("48-63,176-191"));
    assert_eq!(t.gpus[2].cpu_affinity, cpus("16-31,144-159"));
    assert_eq!(t.gpus[4].cpu_affinity, cpus("112-127,240-255"));
    assert_eq!(t.gpus[7].cpu_affinity, cpus("80-95,208-223"));
    assert!(t.gpus.iter().all(|g| g.gpu_numa_id.is_none()));
    assert_eq!(t.nics, (0..12).map(|i| format!("mlx5_{i}")).collect::<Vec<_>>());
    assert_eq!(t.gpus[0].links.get(&1).map(String::as_str), Some("NV12"));
}

#[test]
fn topo_h200_nic_legend_and_na_numa_id() {
    let t = topo(TOPO_H200);
    for g in &t.gpus {
        let (node, list) = if g.index < 4 { (0, "0-55,112-167") } else { (1, "56-111,168-223") };
        assert_eq!(
            (g.numa_affinity, g.cpu_affinity.clone(), g.gpu_numa_id),
            (Some(node), cpus(list), None)
        );
        assert!(g.links.values().all(|l| l == "NV18"));
    }
    assert_eq!(
        t.nics,
        (0..12).map(|i| format!("mlx5_{i}")).collect::<Vec<_>>(),
        "NIC legend resolves NIC0.."
    );
}

#[test]
fn topo_club3090_ragged_rows() {
    let t = topo(TOPO_CLUB);
    assert_eq!(t.gpus.len(), 2);
    for g in &t.gpus {
        assert_eq!(
            (g.numa_affinity, g.cpu_affinity.clone(), g.gpu_numa_id),
            (Some(0), cpus("0-63"), None)
        );
    }
    assert_eq!(t.gpus[0].links.get(&1).map(String::as_str), Some("PHB"));
}

#[test]
fn topo_variations_parse_the_same() {
    for rel in TOPO_FIXTURES {
        let text = fixture(rel);
        let want = topo(rel);
        let mut variants = vec![
            ("tabs expanded", expand_tabs(&text)),
            ("crlf", text.replace('\n', "\r\n")),
            (
                "trailing spaces",
                text.lines().map(|l| format!("{l}   \t")).collect::<Vec<_>>().join("\n"),
            ),
        ];
        // ANSI underline around the header line, as the H100 VM prints it.
        let header_at =
            text.lines().position(|l| l.contains("GPU0") && !l.starts_with("GPU0")).unwrap();
        let ansi: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| if i == header_at { format!("\x1b[4m{l}\x1b[0m") } else { l.to_string() })
            .collect();
        variants.push(("ansi header", ansi.join("\n")));
        // Header wrapped before its affinity names.
        let wrapped: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == header_at {
                    l.replacen("CPU Affinity", "CPU\nAffinity", 1)
                } else {
                    l.to_string()
                }
            })
            .collect();
        variants.push(("wrapped header", wrapped.join("\n")));
        // Header wrapped in the middle of its GPU columns.
        if text.contains("GPU1\tGPU2") || text.contains("GPU1    GPU2") {
            let mid: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == header_at {
                        l.replacen("GPU1\tGPU2", "GPU1\nGPU2", 1).replacen(
                            "GPU1    GPU2",
                            "GPU1\nGPU2",
                            1,
                        )
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            variants.push(("header wrapped mid-columns", mid.join("\n")));
        }
        if text.contains('\t') {
            // Pasted with the tabs lost: names, codes and fields glued (`GPU0GPU1`,
            // `NV12NV12`, `SYS48-63,176-1913`, `0-55,112-1670N/A`).
            variants.push(("tabs removed", text.replace('\t', "")));
        }
        for (what, v) in variants {
            let got = gputopo::parse(&v).unwrap_or_else(|e| panic!("{rel} {what}: {e}"));
            let strip = |t: &GpuTopo| {
                t.gpus
                    .iter()
                    .map(|g| {
                        (
                            g.index,
                            g.links.clone(),
                            g.cpu_affinity.clone(),
                            g.numa_affinity,
                            g.gpu_numa_id,
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&got), strip(&want), "{rel} {what}");
            assert_eq!(got.nics, want.nics, "{rel} {what}");
        }
    }
}

#[test]
fn topo_2018_driver_cpu_affinity_only() {
    let t = topo(TOPO_QUDA);
    assert_eq!(t.nics, ["mlx5_0"]);
    for g in &t.gpus {
        let list = if g.index < 4 { "0-13" } else { "14-27" };
        assert_eq!(
            (g.cpu_affinity.clone(), g.numa_affinity, g.gpu_numa_id),
            (cpus(list), None, None)
        );
    }
    assert_eq!(t.gpus[0].links.get(&1).map(String::as_str), Some("PIX"));
    assert_eq!(t.gpus[4].links.get(&0).map(String::as_str), Some("SYS"));
}

#[test]
fn topo_single_p4_numa_affinity_na() {
    let t = topo(TOPO_P4);
    assert_eq!(t.gpus.len(), 1);
    let g = &t.gpus[0];
    assert_eq!((g.cpu_affinity.clone(), g.numa_affinity, g.gpu_numa_id), (cpus("0-7"), None, None));
    assert!(g.links.is_empty());
}

#[test]
fn topo_five_gpus_two_nodes_spaces() {
    let t = topo(TOPO_4090);
    let got: Vec<_> =
        t.gpus.iter().map(|g| (g.index, g.numa_affinity, g.cpu_affinity.clone())).collect();
    assert_eq!(
        got,
        [
            (0, Some(1), cpus("8-15,24-31")),
            (1, Some(0), cpus("0-7,16-23")),
            (2, Some(0), cpus("0-7,16-23")),
            (3, Some(0), cpus("0-7,16-23")),
            (4, Some(0), cpus("0-7,16-23"))
        ]
    );
    assert_eq!(t.gpus[1].links.get(&2).map(String::as_str), Some("PHB"));
}

#[test]
fn topo_glued_cells() {
    // Tabs lost when pasted: header names, link codes and affinity fields run together.
    let text = "GPU0GPU1GPU2CPU AffinityNUMA AffinityGPU NUMA ID\n\
                GPU0 X NODENODE0-31,64-950 N/A\n\
                GPU1 NODE X NODE0-31,64-950 N/A\n\
                GPU2 SYSSYS X 32-63,96-1271 N/A\n";
    let t = gputopo::parse(text).unwrap();
    assert_eq!(t.gpus[0].links.values().collect::<Vec<_>>(), ["NODE", "NODE"]);
    assert_eq!(
        (t.gpus[0].cpu_affinity.clone(), t.gpus[0].numa_affinity),
        (cpus("0-31,64-95"), Some(0))
    );
    assert_eq!(
        (t.gpus[1].cpu_affinity.clone(), t.gpus[1].numa_affinity),
        (cpus("0-31,64-95"), Some(0))
    );
    assert_eq!(
        (t.gpus[2].cpu_affinity.clone(), t.gpus[2].numa_affinity),
        (cpus("32-63,96-127"), Some(1))
    );
}

#[test]
fn topo_fully_glued_as_scraped_by_a_blog() {
    // As published on a web page that dropped every tab (ai-atlas-a.chatqaq.com, 2026): row
    // names glued to the self cell, `0-310N/A` = `0-31` + `0` + `N/A`.
    let text = "GPU0GPU1GPU2CPU AffinityNUMA AffinityGPU NUMA ID\n\
                GPU0XNODENODE0-310N/A\n\
                GPU1NODEXNODE0-310N/A\n\
                GPU2NODENODEX0-310N/A\n";
    let t = gputopo::parse(text).unwrap();
    for g in &t.gpus {
        assert_eq!(
            (g.cpu_affinity.clone(), g.numa_affinity, g.gpu_numa_id),
            (cpus("0-31"), Some(0), None)
        );
        assert!(g.links.values().all(|l| l == "NODE") && g.links.len() == 2);
    }
}

#[test]
fn topo_legend_declared_codes_are_links() {
    let text = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tQLNK\t0-7\t0\nGPU1\tQLNK\t X \t0-7\t0\n\nLegend:\n  X    = Self\n  QLNK = A future link\n";
    let t = gputopo::parse(text).unwrap();
    assert_eq!(t.gpus[0].links.get(&1).map(String::as_str), Some("QLNK"));
    let undeclared = text.replace("  QLNK = A future link\n", "");
    let e = gputopo::parse(&undeclared).unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.expected.contains("link codes"), "{e}");
}

#[test]
fn topo_errors() {
    assert!(gputopo::parse("").unwrap_err().to_string().contains("<empty input>"));
    assert!(gputopo::parse("Attached GPUs : 4\n").is_err());
    // Truncated after the header: the header names GPUs with no rows.
    let text = fixture(TOPO_MX_SEED);
    let cut: String = text.lines().take(5).collect::<Vec<_>>().join("\n");
    let e = gputopo::parse(&cut).unwrap_err();
    assert!(e.expected.contains("GPU2"), "{e}");
    // A bad CPU affinity is named with its line.
    let bad = text.replace(
        "GPU1    MX      X       MX      MX      0              0-15",
        "GPU1    MX      X       MX      MX      0              zz",
    );
    let e = gputopo::parse(&bad).unwrap_err();
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn rocm_showtopo_numa_per_gpu() {
    let t =
        rocmsmi::parse_showtopo(&fixture("rocm-smi/4gpu-xgmi-numa-per-gpu-0-1-2-3.txt")).unwrap();
    let nodes: Vec<_> = t.gpus.iter().map(|g| g.numa_affinity).collect();
    assert_eq!(nodes, [Some(0), Some(1), Some(2), Some(3)]);
    assert!(t.gpus.iter().all(|g| g.links.len() == 3 && g.links.values().all(|l| l == "XGMI")));
    assert!(rocmsmi::parse_showtopo("").is_err());
}

// ---------------------------------------------------------------- status-table variations

fn status_of(rel: &str, text: &str) -> Result<SmiStatus, nodeagent::host::text::ParseError> {
    if rel.contains("nvidia") {
        nvsmi::parse_table(text)
    } else {
        mxsmi::parse(text)
    }
}

#[test]
fn status_variations_parse_the_same() {
    for rel in STATUS_FIXTURES {
        let text = fixture(rel);
        let want = status(rel);
        let variants = [
            ("crlf", text.replace('\n', "\r\n")),
            (
                "trailing spaces",
                text.lines().map(|l| format!("{l}  ")).collect::<Vec<_>>().join("\n"),
            ),
            ("ansi", text.replace("| GPU ", "|\x1b[1m GPU \x1b[0m")),
            (
                "leading indent",
                text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
            ),
            ("spaces as tabs", text.replace("        ", "\t")),
        ];
        for (what, v) in variants {
            let got = status_of(rel, &v).unwrap_or_else(|e| panic!("{rel} {what}: {e}"));
            assert_eq!(got.gpus.len(), want.gpus.len(), "{rel} {what}");
            for (a, b) in got.gpus.iter().zip(&want.gpus) {
                assert_eq!(
                    (a.index, &a.bus_id, a.memory_used_mib, a.utilization_pct),
                    (b.index, &b.bus_id, b.memory_used_mib, b.utilization_pct),
                    "{rel} {what}"
                );
            }
            assert_eq!(got.processes.len(), want.processes.len(), "{rel} {what}");
        }
    }
}

#[test]
fn truncated_outputs_are_errors_never_panics() {
    for rel in STATUS_FIXTURES {
        let text = fixture(rel);
        let lines: Vec<&str> = text.lines().collect();
        let last_rule = lines.iter().rposition(|l| l.starts_with('+')).unwrap();
        // mx-smi may end after the complete GPU table (2.2.9 with no process table, issue 16):
        // that cut, plus blank lines, parses; every other cut is an error.
        let proc_at = lines.iter().position(|l| l.contains("Process")).unwrap();
        let gpu_end = (0..proc_at - 1).rev().find(|&i| lines[i].starts_with('+')).unwrap();
        for k in 0..last_rule {
            let cut = lines[..k].join("\n");
            let whole_gpu_table =
                k > gpu_end && lines[gpu_end + 1..k].iter().all(|l| l.trim().is_empty());
            if whole_gpu_table && !rel.contains("nvidia") {
                assert!(status_of(rel, &cut).is_ok(), "{rel} cut at {k} lines (whole GPU table)");
                continue;
            }
            assert!(status_of(rel, &cut).is_err(), "{rel} cut at {k} lines parsed");
        }
        // A line cut in the middle is an error too.
        let mid = lines.iter().position(|l| l.contains("0000:")).unwrap();
        let half = format!("{}\n{}", lines[..mid].join("\n"), &lines[mid][..lines[mid].len() / 2]);
        assert!(status_of(rel, &half).is_err(), "{rel} half line");
    }
    for rel in TOPO_FIXTURES {
        let text = fixture(rel);
        let lines: Vec<&str> = text.lines().collect();
        let last_gpu = lines.iter().rposition(|l| l.starts_with("GPU")).unwrap();
        for k in 0..=last_gpu {
            let cut = lines[..k].join("\n");
            assert!(gputopo::parse(&cut).is_err(), "{rel} cut at {k} lines parsed");
        }
    }
}

// ---------------------------------------------------------------- hwloc

#[test]
fn hwloc_xml_32em64t_gpu_under_node_1() {
    let m = hwloc::parse_xml(&fixture("hwloc/32em64t-2n8c2t-pci-normalio.xml")).unwrap();
    assert_eq!(m.nodes.len(), 2);
    assert_eq!(m.nodes[0].cpus, CpuSet::parse_list("0-7,16-23").unwrap());
    assert_eq!(m.nodes[1].distances.get(&0), Some(&20));
    assert!(m.nodes[0].memory_total_mb.unwrap() > 30_000);
    let cuda = m.pci_devices.iter().find(|d| d.os_devices.iter().any(|o| o == "cuda0")).unwrap();
    assert_eq!(
        (cuda.bus_id.as_str(), cuda.numa_node, cuda.class),
        ("0000:84:00.0", Some(1), Some(0x030200))
    );
    assert!(cuda.os_devices.contains(&"card0".to_string()));
    assert_eq!(cuda.local_cpus, cpus("8-15,24-31"));
    let node0_gpus: Vec<_> = m
        .pci_devices
        .iter()
        .filter(|d| d.numa_node == Some(0) && matches!(d.class, Some(0x030200 | 0x030000)))
        .map(|d| d.class.unwrap())
        .collect();
    assert_eq!(node0_gpus, [0x030200, 0x030000], "a 3D controller and a VGA device under node 0");
}

#[test]
fn hwloc_xml_96em64t_card0_under_node_0() {
    let m = hwloc::parse_xml(&fixture("hwloc/96em64t-4n4d3ca2co-pci.xml")).unwrap();
    assert_eq!(m.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(m.nodes[3].distances.get(&0), Some(&26));
    let card = m.pci_devices.iter().find(|d| d.os_devices.contains(&"card0".to_string())).unwrap();
    assert_eq!((card.numa_node, card.class), (Some(0), Some(0x030000)));
}

#[test]
fn hwloc_xml_power8_nvml_gpus() {
    let m = hwloc::parse_xml(&fixture("hwloc/power8gpudistances.xml")).unwrap();
    assert_eq!(m.nodes.len(), 2);
    assert_eq!(m.nodes[0].distances.get(&1), Some(&40));
    let node_of = |name: &str| {
        m.pci_devices
            .iter()
            .find(|d| d.os_devices.iter().any(|o| o == name))
            .and_then(|d| d.numa_node)
    };
    assert_eq!(
        [node_of("nvml0"), node_of("nvml1"), node_of("nvml2"), node_of("nvml3")],
        [Some(0), Some(0), Some(1), Some(1)]
    );
}

#[test]
fn hwloc_bad_documents_are_clean_errors() {
    let v3 = fixture("hwloc/32em64t-2n8c2t-pci-normalio.xml").replacen(
        "version=\"2.0\"",
        "version=\"3.0\"",
        1,
    );
    assert!(matches!(hwloc::parse_xml(&v3), Err(hwloc::HwlocError::UnsupportedVersion { .. })));
    assert!(matches!(hwloc::parse_xml(""), Err(hwloc::HwlocError::NotXml { .. })));
    let garbled = "<?xml version=\"1.0\"?>\n<topology version=\"2.0\">\n<object type=\"Machine\" cpuset=\"zz\">";
    assert!(hwloc::parse_xml(garbled).is_err());
}

#[test]
fn hwloc_checked_and_in_process_imports_agree() {
    for f in [
        "hwloc/32em64t-2n8c2t-pci-normalio.xml",
        "hwloc/96em64t-4n4d3ca2co-pci.xml",
        "hwloc/power8gpudistances.xml",
    ] {
        let text = fixture(f);
        assert_eq!(
            hwloc::parse_xml(&text).unwrap(),
            hwloc::parse_xml_in_process(&text).unwrap(),
            "{f}"
        );
    }
}

// Regression: libhwloc 2.9 segfaults on a PU without `complete_cpuset` (found by the
// property test below); loading it in-process killed the test binary.
#[test]
fn hwloc_document_that_crashes_libhwloc_is_an_error() {
    let text = fixture("hwloc/32em64t-2n8c2t-pci-normalio.xml").replacen(
        "cpuset=\"0x80000000\" complete_cpuset=\"0x80000000\"",
        "cpuset=\"0x80000000\" complete_mkt4cpuset=\"0x80000000\"",
        1,
    );
    let e = hwloc::parse_xml(&text).unwrap_err();
    assert!(matches!(e, hwloc::HwlocError::Crashed { .. }), "{e}");
    assert!(e.to_string().contains("crashed"), "{e}");
}

#[test]
fn hwloc_live_machine_round_trips_through_xml() {
    let (live, xml) = hwloc::live().unwrap();
    assert!(!live.nodes.is_empty(), "at least one NUMA node");
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let total: usize = live.nodes.iter().map(|n| n.cpus.len()).sum();
    assert!(total >= online, "hwloc sees {total} cpus, the OS {online}");
    let again = hwloc::parse_xml(&xml).unwrap();
    assert_eq!(again, live);
}

// ---------------------------------------------------------------- no panics

fn all_parsers(text: &str) {
    let _ = mxsmi::parse(text);
    let _ = mxsmi::parse_json(text);
    let _ = nvsmi::parse_table(text);
    let _ = nvsmi::parse_query_csv(text);
    let _ = nvsmi::parse_apps_csv(text);
    let _ = gputopo::parse(text);
    let _ = rocmsmi::parse_showtopo(text);
}

fn all_fixture_texts() -> Vec<String> {
    STATUS_FIXTURES
        .iter()
        .chain(TOPO_FIXTURES)
        .map(|r| fixture(r))
        .chain([QUERY_CSV.to_string(), fixture("rocm-smi/4gpu-xgmi-numa-per-gpu-0-1-2-3.txt")])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    // hwloc's own XML reader behind hwlocality: truncated or corrupted documents must come
    // back as errors, not crash the probe.
    #[test]
    fn hwloc_truncated_or_corrupted_xml_never_panics(cut in 0usize..20_000, at in 0usize..20_000, junk in "[<>\"= a-z0-9/]{0,8}") {
        let text = fixture("hwloc/32em64t-2n8c2t-pci-normalio.xml");
        let mut cut_at = cut.min(text.len());
        while !text.is_char_boundary(cut_at) { cut_at -= 1; }
        let _ = hwloc::parse_xml(&text[..cut_at]);
        let mut edited = text.clone();
        let mut pos = at.min(edited.len());
        while !edited.is_char_boundary(pos) { pos -= 1; }
        edited.insert_str(pos, &junk);
        let _ = hwloc::parse_xml(&edited);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        all_parsers(&text);
    }

    #[test]
    fn table_alphabet_never_panics(text in "[|+=\\- \t\nGPU0-9X:/.%MiBWC,NAx]{0,400}") {
        all_parsers(&text);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..32,
        deletions in proptest::collection::vec(0usize..64, 0..6),
        edits in proptest::collection::vec((0usize..64, 0usize..200, "[ -~\t]{0,6}"), 0..6),
    ) {
        let texts = all_fixture_texts();
        let mut lines: Vec<String> = texts[which % texts.len()].lines().map(str::to_string).collect();
        for d in deletions {
            if !lines.is_empty() {
                let at = d % lines.len();
                lines.remove(at);
            }
        }
        for (l, col, ins) in edits {
            if lines.is_empty() { break; }
            let at = l % lines.len();
            let line = &mut lines[at];
            let mut cut = col.min(line.len());
            while !line.is_char_boundary(cut) { cut -= 1; }
            line.replace_range(cut..(cut + ins.len()).min(line.len()).max(cut), &ins);
        }
        all_parsers(&lines.join("\n"));
    }
}

// ------------------------------------------- mx-smi tolerance (issue 16: optional sections)

fn mx_testdata(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/mx-smi").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// mx-smi 2.2.9 that ends after the GPU table was refused with "expected the process table
/// after the GPU table": the GPUs are read, the missing table is a warning.
#[test]
fn mxsmi_2_2_9_without_process_table_parses_and_warns() {
    let (s, warnings) =
        mxsmi::parse_with_warnings(&mx_testdata("ms-swift-8xc500-2.2.9-no-process-table.txt"))
            .unwrap();
    assert_eq!(s.gpus.len(), 8);
    assert_eq!(s.gpus[7].bus_id.as_deref(), Some("0000:38:00.0"));
    assert_eq!(s.gpus[7].power_w, Some(56.0));
    assert!(s.processes.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no process table"), "{warnings:?}");
    // The plain entry point accepts it too.
    assert_eq!(
        mxsmi::parse(&mx_testdata("ms-swift-8xc500-2.2.9-no-process-table.txt"))
            .unwrap()
            .gpus
            .len(),
        8
    );
}

/// A header variant: the version banner rows glued to the column header, without the
/// `|----+----|` rule between them.
#[test]
fn mxsmi_banner_glued_to_header_rows() {
    let text = fixture(MX_229).replace(
        "| MACA Version: 3.3.0.15             BIOS Version: 1.30.0.0                       |\n|------------------+-----------------+---------------------+----------------------|\n",
        "| MACA Version: 3.3.0.15             BIOS Version: 1.30.0.0                       |\n",
    );
    assert!(!text.contains("|------------------+"), "the fixture changed");
    let (s, _) = mxsmi::parse_with_warnings(&text).unwrap();
    assert_eq!(s.gpus.len(), 8);
    assert_eq!(s.gpus[0].temperature_c, Some(35.0));
    assert_eq!(s.driver_version.as_deref(), Some("3.4.4"));
}

/// `Available`/`Disabled` where a number is expected (sGPU mode, a GPU being reset) is a value
/// the tool could not give: absent with a warning, and the other GPUs stay intact.
#[test]
fn mxsmi_available_disabled_cells_are_absent_not_garbage() {
    let text = fixture(MX_229)
        .replacen("| 0%          Disabled |", "| Disabled    Disabled |", 1)
        .replacen("| 35C          P0 |", "| Disabled     P0 |", 1);
    let (s, warnings) = mxsmi::parse_with_warnings(&text).unwrap();
    assert_eq!(s.gpus.len(), 8);
    assert_eq!(s.gpus[0].utilization_pct, None);
    assert_eq!(s.gpus[0].temperature_c, None);
    assert_eq!(s.gpus[1].utilization_pct, Some(0.0));
    assert!(warnings.iter().any(|w| w.contains("GPU 0") && w.contains("Disabled")), "{warnings:?}");
}

/// A layout without the power and temperature cells: what is there is read, the rest is
/// named in one warning per missing field.
#[test]
fn mxsmi_missing_power_and_temperature_warn() {
    let text = fixture(MX_224)
        .replace("| Temp        Pwr:Usage/Cap          |", "|                                    |")
        .replace(
            "| 29C         53W / 450W             |",
            "|                                    |",
        );
    let (s, warnings) = mxsmi::parse_with_warnings(&text).unwrap();
    assert_eq!(s.gpus.len(), 8);
    assert!(s.gpus.iter().all(|g| g.temperature_c.is_none() && g.power_w.is_none()));
    assert_eq!(s.gpus[0].memory_used_mib, Some(858));
    assert!(warnings.iter().any(|w| w.contains("temperature")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("power")), "{warnings:?}");
}

/// Nonsense is still refused, with the line.
#[test]
fn mxsmi_nonsense_cell_is_refused_with_line() {
    let text = fixture(MX_229).replacen("| 35C          P0 |", "| hot          P0 |", 1);
    let e = mxsmi::parse(&text).unwrap_err();
    assert_eq!(e.line, 13, "{e}");
    assert!(e.to_string().contains("temperature"), "{e}");
}

/// `mx-smi -j` is recognised wherever an mx-smi output is expected.
#[test]
fn mxsmi_json_is_recognised_by_parse() {
    let text = mx_testdata("mx-smi-j.2.2.12.json.txt");
    let s = mxsmi::parse(&text).unwrap();
    // All three devices keyed by bus id are there; `attached_gpus` (2) counts usable ones only.
    assert_eq!(s.gpus.len(), 3);
    assert_eq!(s.gpus[0].bus_id.as_deref(), Some("0000:0e:00.0"));
    assert_eq!(s.driver_version.as_deref(), Some("2.15.9"));
    let (_, warnings) = mxsmi::parse_with_warnings(&text).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("0000:10:00.0") && w.contains("device is being reset")),
        "{warnings:?}"
    );
    // Garbage after the banner is refused with the line of the fault.
    let e = mxsmi::parse("MetaX System Management Interface Log\n{\n  \"attached_gpus\": ,\n}\n")
        .unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

// ---------------------------------------------------------------- mx-smi dmon CSV

#[test]
fn mxdmon_csv_from_mxtop_columns() {
    let (s, warnings) =
        mxdmon::parse_with_warnings(&mx_testdata("dmon.written-from-mxtop.csv")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(bus_ids(&s), ["0000:0e:00.0", "0000:0f:00.0"]);
    let g1 = &s.gpus[1];
    assert_eq!((g1.index, g1.temperature_c, g1.power_w), (1, Some(61.25), Some(350.5)));
    assert_eq!(g1.utilization_pct, Some(97.0));
    assert_eq!((g1.memory_used_mib, g1.memory_total_mib), (Some(60280), Some(65536)));
    assert!(s.processes.is_empty());
}

#[test]
fn mxdmon_units_row_and_absent_cells() {
    let (s, warnings) =
        mxdmon::parse_with_warnings(&mx_testdata("dmon.units-na.written-from-mxtop.csv")).unwrap();
    assert_eq!(s.gpus.len(), 2);
    assert_eq!((s.gpus[0].temperature_c, s.gpus[0].power_w), (Some(35.0), None));
    assert_eq!(s.gpus[0].utilization_pct, Some(3.0));
    // `vram` percent of `total` (GB) when there is no `used` column.
    assert_eq!(s.gpus[0].memory_used_mib, Some(32768));
    assert_eq!((s.gpus[1].temperature_c, s.gpus[1].power_w), (None, Some(120.0)));
    assert!(
        warnings.iter().any(|w| w.contains("no temperature reading for 1 GPU")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("no power reading for 1 GPU")), "{warnings:?}");
}

#[test]
fn mxdmon_refuses_nonsense_with_line() {
    let text = mx_testdata("dmon.written-from-mxtop.csv").replace("61.25", "hot");
    let e = mxdmon::parse(&text).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.to_string().contains("a temperature"), "{e}");
    let e = mxdmon::parse("name,temp\nx,1\n").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert!(mxdmon::parse("dev,temp\n").is_err());
    assert!(mxdmon::parse("").is_err());
    let e = mxdmon::parse("dev,temp\n0,30\nfoo,31\n").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

/// A GPU missing from a complete output (the process table follows) is a GPU the tool lost:
/// read, with a warning; the same cut with nothing after it is a truncated output.
#[test]
fn mxsmi_fewer_gpus_than_attached() {
    let text = fixture(MX_SEED_IDLE);
    let lines: Vec<&str> = text.lines().collect();
    let gpu3 = lines.iter().position(|l| l.starts_with("| 3 ")).unwrap();
    let lost = [&lines[..gpu3], &lines[gpu3 + 3..]].concat().join("\n");
    let (s, warnings) = mxsmi::parse_with_warnings(&lost).unwrap();
    assert_eq!(s.gpus.len(), 3);
    assert!(
        warnings.iter().any(|w| w.contains("\"Attached GPUs\" says 4, the table lists 3")),
        "{warnings:?}"
    );
    let cut = lines[..gpu3].join("\n");
    let e = mxsmi::parse(&cut).unwrap_err();
    assert!(e.expected.contains("output truncated"), "{e}");
}
