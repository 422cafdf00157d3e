//! Container mode's device nodes for one instance: the instance's GPU indexes (the vendor
//! tool's numbering) to their PCI bus ids (the tool's own table, through the command-runner
//! seam, so index order and bus order can never be confused), then to each GPU's nodes
//! (`crate::host::drm`: `/dev/dri/cardN` + `renderDN` from sysfs, `/dev/nvidiaN` from the
//! NVIDIA driver's `/proc` file) and the vendor's control nodes. A GPU whose nodes cannot be
//! resolved is a one-line preflight error.
//!
//! Not here: how the nodes replace the configured devices (`crate::launch::container`).

use std::path::Path;
use std::time::Duration;

use crate::config::container::GpuDevices;
use crate::host::drm::{self, DrmError};
use crate::host::facts::Vendor;
use crate::host::runner::CommandRunner;
use crate::launch::spec::Placement;
use crate::supervise::occupancy::check::{read_table, GpuTool};

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error(
        "container devices: the instance's GPUs {gpus:?} need mx-smi or nvidia-smi to find their \
         PCI bus ids (pass --mx-smi/--nvidia-smi)"
    )]
    NoTool { gpus: Vec<u32> },
    #[error("container devices: reading the GPU table: {reason}")]
    Table { reason: String },
    #[error("container devices: gpu {gpu} is not in the GPU tool's table")]
    NoGpu { gpu: u32 },
    /// Printed whole on one line (the field is no `source`, so no chain repeats it).
    #[error("container devices: {error}")]
    Drm { error: DrmError },
}

/// The instance's device nodes; `None` when its GPUs are unknown (every configured device is
/// passed, as before). `sys_root` is `/sys` live; `host_root` is `/` live, and holds `dev/`
/// and `proc/driver/nvidia`.
pub fn instance_devices(
    placement: &Placement,
    tool: Option<&GpuTool>,
    runner: &dyn CommandRunner,
    timeout: Duration,
    sys_root: &Path,
    host_root: &Path,
) -> Result<Option<GpuDevices>, DevicesError> {
    let Some(gpus) = &placement.gpus else { return Ok(None) };
    let Some(tool) = tool else { return Err(DevicesError::NoTool { gpus: gpus.clone() }) };
    let vendor = match tool {
        GpuTool::MxSmi(_) => Vendor::Metax,
        GpuTool::NvidiaSmi(_) => Vendor::Nvidia,
    };
    let table =
        read_table(tool, runner, timeout).map_err(|reason| DevicesError::Table { reason })?;
    let proc_root = host_root.join("proc");
    let mut nodes = Vec::new();
    for &gpu in gpus {
        let row = table.gpus.iter().find(|g| g.index == gpu).ok_or(DevicesError::NoGpu { gpu })?;
        let drm_error = |error| DevicesError::Drm { error };
        let bus_id = row.bus_id.as_deref().ok_or(drm_error(DrmError::NoBusId { gpu }))?;
        nodes.push(drm::gpu_nodes(sys_root, &proc_root, vendor, gpu, bus_id).map_err(drm_error)?);
    }
    Ok(Some(GpuDevices {
        gpus: nodes,
        control: drm::control_nodes(host_root, vendor),
        host_root: host_root.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host::runner::{RunError, ToolOutput};
    use crate::launch::spec::GpuStack;

    /// Answers `mx-smi` with the seed host's idle table (GPUs 0-3 on 05, 08, 0e, 0f:00.0).
    struct SeedMxSmi;

    impl CommandRunner for SeedMxSmi {
        fn run(&self, _: &Path, _: &[&str], _: Duration) -> Result<ToolOutput, RunError> {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mx-smi/seed-mx-smi.idle.txt");
            let stdout = std::fs::read_to_string(path).unwrap();
            Ok(ToolOutput { stdout, stderr: String::new(), elapsed: Duration::ZERO })
        }
    }

    fn placed(gpus: &[u32]) -> Placement {
        Placement { instance: 1, gpus: Some(gpus.to_vec()), stack: GpuStack::Maca }
    }

    #[test]
    fn bus_ids_from_the_tool_nodes_from_sysfs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/drm/metax-4gpu");
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("dev")).unwrap();
        std::fs::write(host.path().join("dev/mxcd"), "").unwrap();
        let tool = GpuTool::MxSmi(PathBuf::from("mx-smi"));
        let t = Duration::from_secs(1);
        let sys = root.join("sys");
        // GPU 2 is 0000:0e:00.0, GPU 0 is 0000:05:00.0; the plan's order is kept.
        let d = instance_devices(&placed(&[2, 0]), Some(&tool), &SeedMxSmi, t, &sys, host.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            d.gpus,
            [["/dev/dri/card1", "/dev/dri/renderD128"], ["/dev/dri/card2", "/dev/dri/renderD129"]]
        );
        assert_eq!(d.control, ["/dev/mxcd"]);
        // GPU 3 (0000:0f:00.0) has no card/render node; GPU 1 (08:00.0) no drm dir; GPU 7 none.
        for (gpu, want) in [
            (3, "container devices: gpu 3 (0000:0f:00.0): no DRM card and render node in"),
            (1, "container devices: gpu 1 (0000:08:00.0): no DRM card and render node in"),
            (7, "container devices: gpu 7 is not in the GPU tool's table"),
        ] {
            let err =
                instance_devices(&placed(&[gpu]), Some(&tool), &SeedMxSmi, t, &sys, host.path())
                    .unwrap_err()
                    .to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let none = Placement { gpus: None, ..placed(&[]) };
        assert_eq!(instance_devices(&none, None, &SeedMxSmi, t, &sys, host.path()).unwrap(), None);
        let err =
            instance_devices(&placed(&[0]), None, &SeedMxSmi, t, &sys, host.path()).unwrap_err();
        assert!(matches!(err, DevicesError::NoTool { .. }), "{err}");
    }
}
