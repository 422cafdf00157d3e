//! A GPU's device nodes, from its PCI bus id, over injectable roots (`/sys` and `/` live, a
//! snapshot or a temp dir in tests):
//! ```text
//! sys/bus/pci/devices/0000:05:00.0/drm/card1         -> /dev/dri/card1
//! sys/bus/pci/devices/0000:05:00.0/drm/renderD128    -> /dev/dri/renderD128
//! proc/driver/nvidia/gpus/0000:18:00.0/information   "Device Minor: \t 2" -> /dev/nvidia2
//! ```
//! MetaX and AMD GPUs are reached through their DRM nodes (a card and a render node each); an
//! NVIDIA GPU through `/dev/nvidiaN` (its DRM nodes, present only with `nvidia-drm` loaded, go
//! along when there). [`control_nodes`] are the vendor's shared nodes that exist on the host
//! (`/dev/mxcd`; `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`,
//! `/dev/nvidia-modeset`; `/dev/kfd`). Paths returned are the paths inside `/dev` as a
//! container sees them; the caller puts the host's root in front.
//!
//! Not here: which GPUs an instance has (the plan), or passing the nodes to Docker
//! (`crate::launch::container`).

use std::path::{Path, PathBuf};

use crate::host::facts::Vendor;

#[derive(Debug, thiserror::Error)]
pub enum DrmError {
    #[error(
        "gpu {gpu} ({bus_id}): no DRM card and render node in {} (is the driver loaded?)",
        dir.display()
    )]
    NoDrmNodes { gpu: u32, bus_id: String, dir: PathBuf },
    #[error(
        "gpu {gpu} ({bus_id}): no `Device Minor` in {} (is the nvidia driver loaded?)",
        file.display()
    )]
    NoNvidiaMinor { gpu: u32, bus_id: String, file: PathBuf },
    #[error("gpu {gpu}: the GPU tool gives no PCI bus id for it, so its device nodes are unknown")]
    NoBusId { gpu: u32 },
}

/// The DRM node names of a device's `drm/` directory that a container needs: `cardN` and
/// `renderDN` (not the legacy `controlD*`), sorted.
pub fn drm_names<'a>(entries: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let numbered = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut out: Vec<String> = entries
        .into_iter()
        .filter(|n| numbered(n, "card") || numbered(n, "renderD"))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// The minor number in the NVIDIA driver's per-GPU `information` file:
/// `Device Minor: \t 2` -> 2.
pub fn parse_nvidia_minor(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Device Minor:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The device nodes of one GPU (paths as in `/dev`): DRM nodes from
/// `sys_root/bus/pci/devices/<bus_id>/drm/`, and for NVIDIA `/dev/nvidiaN` with N from
/// `proc_root/driver/nvidia/gpus/<bus_id>/information`.
pub fn gpu_nodes(
    sys_root: &Path,
    proc_root: &Path,
    vendor: Vendor,
    gpu: u32,
    bus_id: &str,
) -> Result<Vec<String>, DrmError> {
    let dir = sys_root.join("bus/pci/devices").join(bus_id).join("drm");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let drm: Vec<String> = drm_names(names.iter().map(String::as_str))
        .into_iter()
        .map(|n| format!("/dev/dri/{n}"))
        .collect();
    if vendor == Vendor::Nvidia {
        let file = proc_root.join("driver/nvidia/gpus").join(bus_id).join("information");
        let minor = std::fs::read_to_string(&file).ok().and_then(|t| parse_nvidia_minor(&t));
        let Some(minor) = minor else {
            return Err(DrmError::NoNvidiaMinor { gpu, bus_id: bus_id.to_string(), file });
        };
        return Ok(std::iter::once(format!("/dev/nvidia{minor}")).chain(drm).collect());
    }
    let has = |p: &str| drm.iter().any(|n| n.starts_with(p));
    if !has("/dev/dri/card") || !has("/dev/dri/renderD") {
        return Err(DrmError::NoDrmNodes { gpu, bus_id: bus_id.to_string(), dir });
    }
    Ok(drm)
}

/// The vendor's shared control nodes, as in `/dev`, whether or not they exist.
pub fn control_node_names(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        Vendor::Metax => &["/dev/mxcd"],
        Vendor::Nvidia => {
            &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
        }
        Vendor::Amd => &["/dev/kfd"],
        Vendor::Other => &[],
    }
}

/// The control nodes of [`control_node_names`] that exist under `dev_root` (`/` live).
pub fn control_nodes(dev_root: &Path, vendor: Vendor) -> Vec<String> {
    control_node_names(vendor)
        .iter()
        .filter(|p| dev_root.join(p.trim_start_matches('/')).exists())
        .map(|p| p.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/drm").join(rel)
    }

    #[test]
    fn names_and_minor() {
        assert_eq!(
            drm_names(["controlD64", "renderD129", "card1", "card", "cardx", "renderD128"]),
            ["card1", "renderD128", "renderD129"]
        );
        let info = "Model: \t\t NVIDIA H100 80GB HBM3\nBus Location: \t 0000:18:00.0\nDevice Minor: \t 3\n";
        assert_eq!(parse_nvidia_minor(info), Some(3));
        assert_eq!(parse_nvidia_minor("Model: x\n"), None);
        assert_eq!(parse_nvidia_minor("Device Minor: \t x\n"), None);
    }

    #[test]
    fn metax_gpus_resolve_to_their_card_and_render_node() {
        let (sys, proc) = (fixture("metax-4gpu/sys"), fixture("metax-4gpu/proc"));
        // Bus order and DRM numbering disagree on this host: gpu 2 (0e:00.0) probed first.
        let nodes = |gpu, bus| gpu_nodes(&sys, &proc, Vendor::Metax, gpu, bus).unwrap();
        assert_eq!(nodes(0, "0000:05:00.0"), ["/dev/dri/card2", "/dev/dri/renderD129"]);
        assert_eq!(nodes(2, "0000:0e:00.0"), ["/dev/dri/card1", "/dev/dri/renderD128"]);
        let err = gpu_nodes(&sys, &proc, Vendor::Metax, 3, "0000:0f:00.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "gpu 3 (0000:0f:00.0): no DRM card and render node in {}/bus/pci/devices/0000:0f:00.0/drm (is the driver loaded?)",
                sys.display()
            )
        );
    }

    #[test]
    fn nvidia_gpus_resolve_to_their_minor() {
        let (sys, proc) = (fixture("nvidia-2gpu/sys"), fixture("nvidia-2gpu/proc"));
        let nodes = gpu_nodes(&sys, &proc, Vendor::Nvidia, 1, "0000:2a:00.0").unwrap();
        assert_eq!(nodes, ["/dev/nvidia1", "/dev/dri/card2", "/dev/dri/renderD129"]);
        // No nvidia-drm: /dev/nvidiaN alone.
        assert_eq!(
            gpu_nodes(&sys, &proc, Vendor::Nvidia, 0, "0000:18:00.0").unwrap(),
            ["/dev/nvidia0"]
        );
        let err = gpu_nodes(&sys, &proc, Vendor::Nvidia, 5, "0000:99:00.0").unwrap_err();
        assert!(matches!(err, DrmError::NoNvidiaMinor { gpu: 5, .. }), "{err}");
    }

    #[test]
    fn control_nodes_that_exist() {
        let dev = tempfile::tempdir().unwrap();
        std::fs::create_dir(dev.path().join("dev")).unwrap();
        for n in ["nvidiactl", "nvidia-uvm"] {
            std::fs::write(dev.path().join("dev").join(n), "").unwrap();
        }
        assert_eq!(
            control_nodes(dev.path(), Vendor::Nvidia),
            ["/dev/nvidiactl", "/dev/nvidia-uvm"]
        );
        assert!(control_nodes(dev.path(), Vendor::Metax).is_empty());
    }
}
