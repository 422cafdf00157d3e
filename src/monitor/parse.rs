//! The monitor's view of the GPU tools' outputs: thin adapters over the probe parsers
//! (`crate::host::mxsmi`, `crate::host::nvsmi`) that turn one tick's raw text into one
//! `SmiStatus`. Plain functions over `&str`; they never run a tool and never panic. The tests
//! here pin what the monitor relies on, on the real captures in `testdata/`.

use crate::host::facts::{GpuProcess, GpuStatus, SmiStatus};
use crate::host::{mxsmi, nvsmi};

pub use crate::host::text::ParseError;

/// The `--query-gpu` arguments the sampler passes (`--query-gpu=...`, `--format=csv`).
pub const NVIDIA_QUERY_GPU_ARGS: [&str; 2] = nvsmi::QUERY_GPU_ARGS;
/// The `--query-compute-apps` arguments the sampler passes.
pub const NVIDIA_QUERY_APPS_ARGS: [&str; 2] = nvsmi::QUERY_APPS_ARGS;

/// The `mx-smi` status table (every layout `host::mxsmi` knows).
pub fn parse_mxsmi(text: &str) -> Result<SmiStatus, ParseError> {
    mxsmi::parse(text)
}

pub fn parse_nvidia_query_gpu(text: &str) -> Result<Vec<GpuStatus>, ParseError> {
    nvsmi::parse_query_csv(text).map(|s| s.gpus)
}

/// Processes of `--query-compute-apps`, their GPUs resolved by bus id against `gpus`.
pub fn parse_nvidia_apps(text: &str, gpus: &[GpuStatus]) -> Result<Vec<GpuProcess>, ParseError> {
    nvsmi::resolve_apps(&nvsmi::parse_apps_csv(text)?, gpus)
}

/// Parses the two nvidia-smi CSV outputs of one tick into one `SmiStatus`.
pub fn parse_nvidia(query_gpu: &str, apps: &str) -> Result<SmiStatus, ParseError> {
    let mut status = nvsmi::parse_query_csv(query_gpu)?;
    status.processes = parse_nvidia_apps(apps, &status.gpus)?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q_LOAD: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-query.load.csv");
    const Q_NOHDR: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-query.noheader.csv");
    const A_LOAD: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-apps.load.csv");
    const A_IDLE: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-apps.idle.csv");
    const MX_IDLE: &str = include_str!("../../testdata/mx-smi/seed-mx-smi.idle.txt");
    const MX_LOAD: &str = include_str!("../../testdata/mx-smi/seed-mx-smi.load.qwen72b.txt");
    const MX_229: &str =
        include_str!("../../testdata/mx-smi/ms-swift-8xc500-2.2.9-board-layout.txt");
    const MX_224: &str = include_str!("../../testdata/mx-smi/ernie-8xc550-2.2.4-gpu-state.txt");

    #[test]
    fn nvidia_h100_load_capture() {
        let s = parse_nvidia(Q_LOAD, A_LOAD).unwrap();
        assert_eq!(s.gpus.len(), 2);
        let g0 = &s.gpus[0];
        assert_eq!(g0.bus_id.as_deref(), Some("0000:00:06.0"));
        assert_eq!(g0.memory_used_mib, Some(21653));
        assert_eq!(g0.memory_total_mib, Some(81559));
        assert_eq!(g0.utilization_pct, Some(100.0));
        assert_eq!(g0.power_w, Some(685.35));
        assert_eq!(g0.temperature_c, Some(62.0));
        assert_eq!(s.processes.len(), 2);
        assert_eq!((s.processes[1].gpu, s.processes[1].pid), (1, 585));
        assert_eq!(s.processes[1].memory_mib, Some(4682));
        assert!(parse_nvidia_apps(A_IDLE, &s.gpus).unwrap().is_empty());
    }

    #[test]
    fn nvidia_noheader_is_read_in_query_order() {
        let g = parse_nvidia_query_gpu(Q_NOHDR).unwrap();
        assert_eq!(g[1].index, 1);
        assert_eq!(g[1].memory_total_mib, Some(81559));
        assert_eq!(g[1].power_w, Some(73.15));
    }

    #[test]
    fn nvidia_not_supported_cells_are_none() {
        let q = "index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n\
                 0, X, 00000000:01:00.0, 100 MiB, 5 MiB, [N/A], 40, [Not Supported]\n";
        let g = parse_nvidia_query_gpu(q).unwrap();
        assert_eq!(g[0].utilization_pct, None);
        assert_eq!(g[0].power_w, None);
    }

    #[test]
    fn nvidia_garbage_is_an_error_with_line() {
        let err = parse_nvidia_query_gpu("index, name\nzz, oops\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_nvidia_query_gpu("").is_err());
        let gpus = parse_nvidia_query_gpu(Q_LOAD).unwrap();
        let err = parse_nvidia_apps("gpu_bus_id, pid\n00000000:99:00.0, 1\n", &gpus).unwrap_err();
        assert!(err.to_string().contains("the bus id of a GPU"), "{err}");
    }

    #[test]
    fn mxsmi_seed_idle_and_load() {
        let idle = parse_mxsmi(MX_IDLE).unwrap();
        assert_eq!(idle.gpus.len(), 4);
        assert_eq!(idle.tool_version.as_deref(), Some("MX-SMI 2.1.6"));
        let load = parse_mxsmi(MX_LOAD).unwrap();
        let g0 = &load.gpus[0];
        assert_eq!(g0.bus_id.as_deref(), Some("0000:05:00.0"));
        assert_eq!(g0.name.as_deref(), Some("MXC500"));
        assert_eq!((g0.memory_used_mib, g0.memory_total_mib), (Some(60278), Some(65536)));
        assert_eq!(g0.utilization_pct, Some(36.0));
        assert_eq!(g0.temperature_c, Some(54.0));
        assert_eq!(g0.power_w, Some(122.0));
        assert_eq!(load.gpus[2].utilization_pct, Some(24.0));
        assert_eq!(load.processes.len(), 4);
        assert_eq!(load.processes[1].name, "ray::RayWorkerW");
        assert_eq!(load.processes[1].pid, 350950);
        assert_eq!(load.processes[1].memory_mib, Some(58880));
    }

    #[test]
    fn mxsmi_newer_layouts() {
        let s = parse_mxsmi(MX_229).unwrap();
        assert_eq!(s.gpus.len(), 8);
        assert_eq!(s.gpus[7].bus_id.as_deref(), Some("0000:38:00.0"));
        assert_eq!(s.gpus[0].name.as_deref(), Some("MetaX C500"));
        assert_eq!(s.gpus[0].power_w, Some(57.0));
        assert_eq!(s.gpus[0].temperature_c, Some(35.0));
        assert_eq!(s.gpus[0].memory_used_mib, Some(826));
        assert_eq!(s.gpus[0].utilization_pct, Some(0.0));
        let s = parse_mxsmi(MX_224).unwrap();
        assert_eq!(s.gpus.len(), 8);
        assert_eq!(s.gpus[1].bus_id.as_deref(), Some("0000:34:00.0"));
    }

    #[test]
    fn mxsmi_garbage_is_an_error() {
        let err = parse_mxsmi("segmentation fault\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_mxsmi("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,400}") {
            let _ = parse_mxsmi(&s);
            let _ = parse_nvidia_query_gpu(&s);
            let _ = parse_nvidia(&s, &s);
        }
    }
}
