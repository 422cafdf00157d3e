//! The plain records `super` returns (device facts, health, MetaXLink state) and the pure
//! preflight verdict over them ([`LinkReport::problems`]). No FFI here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What `probe` takes from the library for one GPU (the source of facts with provenance).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuFacts {
    pub index: u32,
    pub bus_id: Option<String>,
    pub name: Option<String>,
    /// `mxSmlGetNodeAffinity`; empty when the call failed.
    pub numa_nodes: Vec<u32>,
}

/// What `probe` read from the library, as a snapshot keeps it (`mxsml.json`, written by
/// `probe --save` and replayed by `--from`): the library file, each GPU's facts, the MetaXLink
/// picture (`None` when the library could not give it) and the calls that failed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxsmlRecord {
    pub library: String,
    pub gpus: Vec<GpuFacts>,
    #[serde(default)]
    pub links: Option<LinkReport>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One GPU as `mxSmlGetDeviceInfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub index: u32,
    /// sysfs form (`0000:0e:00.0`); `None` when the library's text is not a bus id.
    pub bus_id: Option<String>,
    pub name: String,
    pub uuid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EccCounts {
    pub sram_correctable: u32,
    pub sram_uncorrectable: u32,
    pub dram_correctable: u32,
    pub dram_uncorrectable: u32,
    pub retired_pages: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PcieLink {
    pub speed_gts: f32,
    pub width: u32,
}

/// `mxSmlMetaXLinkState_t`: whether MetaXLink is enabled on a GPU, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkEnable {
    Enabled,
    /// Disabled through `mx-smi`.
    SmiDisabled,
    /// Disabled because the GPU runs virtual functions.
    VfDisabled,
    /// Disabled because of the number of GPUs.
    GpuNumDisabled,
    /// Disabled because link training failed.
    TrainingDisabled,
    Other(u32),
}

impl LinkEnable {
    pub(super) fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Enabled,
            1 => Self::SmiDisabled,
            2 => Self::VfDisabled,
            3 => Self::GpuNumDisabled,
            4 => Self::TrainingDisabled,
            n => Self::Other(n),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Enabled => "enabled".into(),
            Self::SmiDisabled => "disabled by mx-smi".into(),
            Self::VfDisabled => "disabled (virtual functions)".into(),
            Self::GpuNumDisabled => "disabled (GPU count)".into(),
            Self::TrainingDisabled => "disabled (link training failed)".into(),
            Self::Other(n) => format!("state {n}"),
        }
    }
}

/// `mxSmlMxlkPortState_t`: one MetaXLink port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortState {
    NoTraining,
    Up,
    DownOpticalInPlace,
    DownOpticalOutPlace,
    DownOpticalNoUse,
    NoUse,
    Other(u32),
}

impl PortState {
    pub(super) fn from_code(code: u32) -> Self {
        match code {
            0 => Self::NoTraining,
            1 => Self::Up,
            2 => Self::DownOpticalInPlace,
            3 => Self::DownOpticalOutPlace,
            4 => Self::DownOpticalNoUse,
            5 => Self::NoUse,
            n => Self::Other(n),
        }
    }

    /// A port that is wired but not carrying traffic.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            Self::DownOpticalInPlace | Self::DownOpticalOutPlace | Self::DownOpticalNoUse
        )
    }
}

/// `mxSmlGpuTopologyLevel_t` between two GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopoLevel {
    Internal,
    Single,
    Multiple,
    HostBridge,
    Node,
    MetaXLink,
    System,
    Other(u32),
}

impl TopoLevel {
    pub(super) fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Internal,
            1 => Self::Single,
            2 => Self::Multiple,
            3 => Self::HostBridge,
            4 => Self::Node,
            5 => Self::MetaXLink,
            6 => Self::System,
            n => Self::Other(n),
        }
    }
}

/// Health readings of one GPU; each `None` when its call failed or the library lacks it (the
/// reason is in `warnings`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuHealth {
    pub index: u32,
    pub ecc_enabled: Option<bool>,
    pub ecc: Option<EccCounts>,
    pub xcore_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// `mxSmlGetCurrentClocksThrottleReason`'s bit mask (0: not throttled).
    pub throttle_reasons: Option<u64>,
    pub pcie: Option<PcieLink>,
    pub pcie_max: Option<PcieLink>,
    pub metaxlink: Option<LinkEnable>,
    pub metaxlink_ports: Option<Vec<PortState>>,
    /// `mxSmlGetPciEventInfo`'s event counts by type (`aer_ue`, `aer_ce`, `synfld`, `dbe`,
    /// `mmio`).
    #[serde(default)]
    pub pci_events: Option<std::collections::BTreeMap<String, u64>>,
    pub warnings: Vec<String>,
}

impl GpuHealth {
    /// The same readings as the vendor-neutral record the monitor checks and exports (what
    /// `host::nvml` fills for NVIDIA): the XCORE clock as the SM clock, SRAM and DRAM ECC
    /// counts summed into corrected and uncorrected, the PCIe speed as its generation, and
    /// every wired MetaXLink port (not `NoUse`) as a link, up when its state is `Up`. The
    /// throttle mask goes to `vendor_throttle_reasons` (its bits are not NVML's).
    pub fn common(&self) -> crate::host::health::GpuHealth {
        use crate::host::health::{pcie_gen_of_gts, LinkState};
        let links = self.metaxlink_ports.as_ref().map(|ports| {
            ports
                .iter()
                .enumerate()
                .filter(|(_, s)| **s != PortState::NoUse)
                .map(|(i, s)| LinkState {
                    link: i as u32,
                    up: *s == PortState::Up,
                    remote_bus_id: None,
                })
                .collect::<Vec<_>>()
        });
        crate::host::health::GpuHealth {
            index: self.index,
            sm_clock_mhz: self.xcore_clock_mhz,
            mem_clock_mhz: self.memory_clock_mhz,
            vendor_throttle_reasons: self.throttle_reasons,
            ecc_enabled: self.ecc_enabled,
            ecc_corrected: self
                .ecc
                .map(|e| u64::from(e.sram_correctable) + u64::from(e.dram_correctable)),
            ecc_uncorrected: self
                .ecc
                .map(|e| u64::from(e.sram_uncorrectable) + u64::from(e.dram_uncorrectable)),
            pcie: crate::host::health::PcieLink {
                gen: self.pcie.and_then(|p| pcie_gen_of_gts(p.speed_gts)),
                gen_max: self.pcie_max.and_then(|p| pcie_gen_of_gts(p.speed_gts)),
                width: self.pcie.map(|p| p.width),
                width_max: self.pcie_max.map(|p| p.width),
            },
            links: links.filter(|l| !l.is_empty()),
            pcie_events_total: self.pci_events.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// True when the PCIe link runs below its maximum speed or width.
    pub fn pcie_degraded(&self) -> Option<bool> {
        let (now, max) = (self.pcie?, self.pcie_max?);
        Some(now.width < max.width || now.speed_gts + 0.05 < max.speed_gts)
    }
}

/// One MetaXLink port of a GPU and the GPU at its other end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLink {
    pub gpu: u32,
    pub port: u32,
    pub state: PortState,
    /// The library's index of the GPU at the other end, when it says.
    pub peer: Option<u32>,
}

/// The MetaXLink picture of a host: each GPU's enable state and its ports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LinkReport {
    pub enable: BTreeMap<u32, LinkEnable>,
    pub ports: Vec<PortLink>,
    /// Calls that failed while reading the links.
    pub warnings: Vec<String>,
}

impl LinkReport {
    /// Pure: what is wrong with the MetaXLinks between the GPUs `gpus` (the instance's), one
    /// line each, naming the GPUs and the link. Empty when nothing is reported wrong, or when
    /// the library could not say (then `warnings` has why). A pair with no port between them is
    /// no problem here (their traffic goes over PCIe); a GPU whose MetaXLink is not enabled,
    /// or a port between two of them that is down, is.
    pub fn problems(&self, gpus: &[u32]) -> Vec<String> {
        let set: BTreeSet<u32> = gpus.iter().copied().collect();
        let mut out = Vec::new();
        if set.len() < 2 {
            return out;
        }
        for &g in &set {
            if let Some(e) = self.enable.get(&g).filter(|e| **e != LinkEnable::Enabled) {
                let others: Vec<String> =
                    set.iter().filter(|&&o| o != g).map(|o| format!("GPU {o}")).collect();
                out.push(format!(
                    "MetaXLink of GPU {g} is {} (needed to reach {})",
                    e.describe(),
                    others.join(", ")
                ));
            }
        }
        let mut pairs: BTreeMap<(u32, u32), Vec<&PortLink>> = BTreeMap::new();
        for p in &self.ports {
            if let Some(peer) = p.peer.filter(|peer| set.contains(&p.gpu) && set.contains(peer)) {
                pairs.entry((p.gpu.min(peer), p.gpu.max(peer))).or_default().push(p);
            }
        }
        for ((a, b), ports) in pairs {
            if ports.iter().any(|p| p.state == PortState::Up) {
                continue;
            }
            let down: Vec<String> = ports
                .iter()
                .map(|p| format!("GPU {} port {} {:?}", p.gpu, p.port, p.state))
                .collect();
            out.push(format!(
                "MetaXLink between GPU {a} and GPU {b} is down ({})",
                down.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(gpu: u32, port: u32, state: PortState, peer: u32) -> PortLink {
        PortLink { gpu, port, state, peer: Some(peer) }
    }

    #[test]
    fn problems_name_the_gpus_and_the_link() {
        let mut r = LinkReport::default();
        r.enable.insert(0, LinkEnable::Enabled);
        r.enable.insert(1, LinkEnable::SmiDisabled);
        r.enable.insert(2, LinkEnable::Enabled);
        r.enable.insert(3, LinkEnable::Enabled);
        r.ports = vec![
            port(0, 0, PortState::Up, 1),
            port(2, 0, PortState::DownOpticalInPlace, 3),
            port(3, 0, PortState::DownOpticalInPlace, 2),
            port(0, 1, PortState::Up, 2),
        ];
        assert_eq!(
            r.problems(&[0, 1]),
            ["MetaXLink of GPU 1 is disabled by mx-smi (needed to reach GPU 0)"]
        );
        assert_eq!(
            r.problems(&[2, 3]),
            ["MetaXLink between GPU 2 and GPU 3 is down (GPU 2 port 0 DownOpticalInPlace, GPU 3 port 0 DownOpticalInPlace)"]
        );
        assert!(r.problems(&[0, 2]).is_empty());
        assert!(r.problems(&[1]).is_empty(), "one GPU needs no link");
    }

    #[test]
    fn common_record_sums_ecc_and_turns_ports_into_links() {
        let h = GpuHealth {
            index: 3,
            ecc_enabled: Some(true),
            ecc: Some(EccCounts {
                sram_correctable: 3,
                sram_uncorrectable: 1,
                dram_correctable: 7,
                dram_uncorrectable: 2,
                retired_pages: 9,
            }),
            xcore_clock_mhz: Some(1600),
            memory_clock_mhz: Some(1800),
            throttle_reasons: Some(4),
            pcie: Some(PcieLink { speed_gts: 16.0, width: 8 }),
            pcie_max: Some(PcieLink { speed_gts: 32.0, width: 16 }),
            metaxlink: Some(LinkEnable::Enabled),
            metaxlink_ports: Some(vec![
                PortState::Up,
                PortState::DownOpticalInPlace,
                PortState::NoUse,
            ]),
            pci_events: Some([("aer_ce".to_string(), 5), ("dbe".to_string(), 1)].into()),
            warnings: vec![],
        };
        let c = h.common();
        assert_eq!(c.pcie_events_total, [("aer_ce".to_string(), 5), ("dbe".to_string(), 1)].into());
        assert_eq!(c.index, 3);
        assert_eq!((c.sm_clock_mhz, c.mem_clock_mhz), (Some(1600), Some(1800)));
        assert_eq!((c.ecc_corrected, c.ecc_uncorrected), (Some(10), Some(3)));
        assert_eq!((c.throttle_reasons, c.vendor_throttle_reasons), (None, Some(4)));
        assert_eq!(
            (c.pcie.gen, c.pcie.gen_max, c.pcie.width, c.pcie.width_max),
            (Some(4), Some(5), Some(8), Some(16))
        );
        assert!(c.pcie.width_degraded());
        let links = c.links.unwrap();
        assert_eq!(
            links.iter().map(|l| (l.link, l.up)).collect::<Vec<_>>(),
            [(0, true), (1, false)]
        );
        let none = GpuHealth { index: 1, ..GpuHealth::default() }.common();
        assert_eq!(none, crate::host::health::GpuHealth { index: 1, ..Default::default() });
        let unwired =
            GpuHealth { metaxlink_ports: Some(vec![PortState::NoUse; 7]), ..GpuHealth::default() };
        assert_eq!(unwired.common().links, None);
    }

    #[test]
    fn pcie_degradation() {
        let mut h = GpuHealth::default();
        assert_eq!(h.pcie_degraded(), None);
        h.pcie = Some(PcieLink { speed_gts: 16.0, width: 8 });
        h.pcie_max = Some(PcieLink { speed_gts: 16.0, width: 16 });
        assert_eq!(h.pcie_degraded(), Some(true));
        h.pcie = Some(PcieLink { speed_gts: 16.0, width: 16 });
        assert_eq!(h.pcie_degraded(), Some(false));
    }
}
