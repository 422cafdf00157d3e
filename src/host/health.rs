//! Plain records of a GPU's health as a vendor library reports it: clocks and the reasons they
//! are held down, performance state, ECC error counts, the PCIe link against its maximum, the
//! GPU-to-GPU links (NVLink, MetaXLink) and the last XID-like event. Filled by the library
//! readers (`host::nvml`, and the MetaX one), read by the monitor's checks and `/metrics` and by
//! the interconnect preflight. Nothing here reads a device; it imports nothing from the crate.
//!
//! Every field is optional on its own: a library that answers "not supported" for one reading
//! leaves that field `None` and the others stand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One GPU's health readings. `index` is the vendor's GPU index (the one in `GpuStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuHealth {
    pub index: u32,
    /// SM (graphics) clock and memory clock now, MHz.
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    /// The SM clock's maximum, MHz.
    pub sm_clock_max_mhz: Option<u32>,
    /// NVML's clock event (throttle) reason bits, as the library returns them.
    pub throttle_reasons: Option<u64>,
    /// A vendor's own throttle bit mask whose bits are not NVML's (MetaX's
    /// `mxSmlGetCurrentClocksThrottleReason`: the bindings publish no bit names, so it is
    /// exported as it is and no alert reads it; 0 means not throttled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_throttle_reasons: Option<u64>,
    /// Performance state: 0 (P0, maximum) to 15 (minimum).
    pub performance_state: Option<u32>,
    /// Whether ECC is enabled now.
    pub ecc_enabled: Option<bool>,
    /// ECC errors since the driver loaded (volatile counters).
    pub ecc_corrected: Option<u64>,
    pub ecc_uncorrected: Option<u64>,
    pub pcie: PcieLink,
    /// GPU-to-GPU links; `None` when the GPU has none or the library cannot say.
    pub links: Option<Vec<LinkState>>,
    /// The last XID-like event the library reported for this GPU since the monitor started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_xid: Option<XidEvent>,
    /// The last of them that means a GPU fault ([`is_fault_xid`]): what the `xid` alert reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fault_xid: Option<XidEvent>,
    /// XID-like events since the monitor started, by code.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xid_events_total: BTreeMap<u64, u64>,
    /// Whether the library watches this GPU's XID-like events: `None` when the source watches
    /// none (a tool, a replay); `Some(false)` with the reason in `xid_not_watched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid_watched: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid_not_watched: Option<String>,
    /// PCI events a library counts by type (MetaX `mxSmlGetPciEventInfo`: `aer_ue`, `aer_ce`,
    /// `synfld`, `dbe`, `mmio`), as it reports them (since the driver loaded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pcie_events_total: BTreeMap<String, u64>,
    /// Sampler ticks since these readings were taken: 0 when read this tick. The sampler reads
    /// health every few ticks (`monitor::sampler::HEALTH_PERIOD`) and repeats the last
    /// readings in between; the checks judge only fresh ones, so their hysteresis counts
    /// readings, not repeats.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub age_ticks: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One XID-like event: its code and when the monitor received it (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidEvent {
    pub code: u64,
    pub at_unix_ms: u64,
}

/// The XIDs that mean a fault of the GPU or its links, from NVIDIA's XID catalogue
/// (docs.nvidia.com/deploy/xid-errors): 48 double-bit ECC error; 62 internal micro-controller
/// halt; 63/64 ECC page retirement or row remapping event / failure; 74 NVLink error; 79 GPU
/// fallen off the bus; 92 high single-bit ECC rate; 94/95 contained / uncontained ECC error;
/// 119/120 GSP RPC timeout / GSP error; 140 ECC unrecovered error. Application XIDs (13 graphics
/// engine exception, 31 MMU fault, 43 GPU stopped processing, 45 preemptive cleanup) follow a
/// program's own fault: counted, not alerted.
pub const FAULT_XIDS: [u64; 12] = [48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140];

/// A short name of an XID from NVIDIA's catalogue (the faults and the common application ones).
pub fn xid_name(code: u64) -> &'static str {
    match code {
        13 => "graphics engine exception",
        31 => "GPU memory page fault",
        43 => "GPU stopped processing",
        45 => "preemptive cleanup",
        48 => "double-bit ECC error",
        62 => "internal micro-controller halt",
        63 => "ECC page retirement or row remapping recorded",
        64 => "ECC page retirement or row remapping failure",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error",
        95 => "uncontained ECC error",
        119 => "GSP RPC timeout",
        120 => "GSP error",
        140 => "unrecovered ECC error",
        999 => "unknown XID",
        _ => "see NVIDIA's XID catalogue",
    }
}

/// The PCI event types whose increase means a GPU fault (MetaX): AER uncorrectable errors,
/// a sync flood, double-bit ECC errors and MMIO errors. AER correctable errors are counted,
/// not alerted.
pub const FAULT_PCIE_EVENTS: [&str; 4] = ["aer_ue", "synfld", "dbe", "mmio"];

/// Whether `code` is in [`FAULT_XIDS`].
pub fn is_fault_xid(code: u64) -> bool {
    FAULT_XIDS.contains(&code)
}

/// Every GPU's XID-like events as a watcher accumulates them, by GPU index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XidLog {
    pub gpus: BTreeMap<u32, GpuXids>,
}

/// One GPU's XID-like events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuXids {
    /// Why the GPU is not watched; `None`: watched.
    pub not_watched: Option<String>,
    pub last: Option<XidEvent>,
    pub last_fault: Option<XidEvent>,
    pub totals: BTreeMap<u64, u64>,
}

impl XidLog {
    /// Counts one event of `gpu`.
    pub fn record(&mut self, gpu: u32, event: XidEvent) {
        let g = self.gpus.entry(gpu).or_default();
        g.last = Some(event);
        if is_fault_xid(event.code) {
            g.last_fault = Some(event);
        }
        *g.totals.entry(event.code).or_default() += 1;
    }

    /// Copies the events into the health readings of the GPUs the log knows.
    pub fn apply(&self, health: &mut [GpuHealth]) {
        for h in health {
            let Some(g) = self.gpus.get(&h.index) else { continue };
            h.last_xid = g.last;
            h.last_fault_xid = g.last_fault;
            h.xid_events_total = g.totals.clone();
            h.xid_watched = Some(g.not_watched.is_none());
            h.xid_not_watched = g.not_watched.clone();
        }
    }
}

/// The PCIe generation of a link running at `gts` GT/s per lane (2.5 → 1 ... 64 → 6); `None`
/// for a speed that is no generation's.
pub fn pcie_gen_of_gts(gts: f32) -> Option<u32> {
    [(2.5, 1), (5.0, 2), (8.0, 3), (16.0, 4), (32.0, 5), (64.0, 6)]
        .iter()
        .find(|(s, _)| (gts - s).abs() < 0.05)
        .map(|&(_, g)| g)
}

/// The PCIe link now and at most: generation and lanes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcieLink {
    pub gen: Option<u32>,
    pub gen_max: Option<u32>,
    pub width: Option<u32>,
    pub width_max: Option<u32>,
}

impl PcieLink {
    /// Fewer lanes than the link's maximum: a degraded link (a seating or riser fault). The
    /// generation alone is not judged here, as GPUs lower it when idle to save power.
    pub fn width_degraded(&self) -> bool {
        matches!((self.width, self.width_max), (Some(w), Some(m)) if w > 0 && w < m)
    }

    /// A generation below the maximum (meaningful only while the GPU is busy).
    pub fn gen_below_max(&self) -> bool {
        matches!((self.gen, self.gen_max), (Some(g), Some(m)) if g > 0 && g < m)
    }
}

/// One GPU-to-GPU link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The link's number on its GPU.
    pub link: u32,
    /// Active (up and enabled).
    pub up: bool,
    /// The PCI bus id at the other end (a GPU, or a switch), sysfs form, when known.
    pub remote_bus_id: Option<String>,
}

/// NVML's clock event reason bits (nvml.h `nvmlClocksEventReason*`), with their names.
pub const THROTTLE_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// Reasons that mean the hardware or the thermal limits are slowing the GPU down, as opposed
/// to idling or a power cap the operator set.
pub const SLOWDOWN_REASONS: u64 = 0x8 | 0x20 | 0x40 | 0x80;

/// The names of the reason bits set in `bits` (unknown bits as `0x...`).
pub fn throttle_reason_names(bits: u64) -> Vec<String> {
    let mut names: Vec<String> = THROTTLE_REASONS
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known: u64 = THROTTLE_REASONS.iter().map(|(b, _)| b).sum();
    if bits & !known != 0 {
        names.push(format!("{:#x}", bits & !known));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_and_unknown_bits() {
        assert_eq!(throttle_reason_names(0), Vec::<String>::new());
        assert_eq!(throttle_reason_names(0x41), ["gpu_idle", "hw_thermal_slowdown"]);
        assert_eq!(throttle_reason_names(0x1004), ["sw_power_cap", "0x1000"]);
    }

    #[test]
    fn xid_log_counts_by_code_and_keeps_the_last_fault() {
        let mut log = XidLog::default();
        log.gpus
            .insert(2, GpuXids { not_watched: Some("not supported".into()), ..Default::default() });
        log.record(0, XidEvent { code: 79, at_unix_ms: 10 });
        log.record(0, XidEvent { code: 13, at_unix_ms: 20 });
        log.record(0, XidEvent { code: 13, at_unix_ms: 30 });
        let mut health: Vec<GpuHealth> =
            (0..3).map(|index| GpuHealth { index, ..Default::default() }).collect();
        log.apply(&mut health);
        assert_eq!(health[0].last_xid, Some(XidEvent { code: 13, at_unix_ms: 30 }));
        assert_eq!(health[0].last_fault_xid, Some(XidEvent { code: 79, at_unix_ms: 10 }));
        assert_eq!(health[0].xid_events_total, BTreeMap::from([(13, 2), (79, 1)]));
        assert_eq!(health[0].xid_watched, Some(true));
        assert_eq!(health[1], GpuHealth { index: 1, ..Default::default() }, "not in the log");
        assert_eq!(health[2].xid_watched, Some(false));
        assert_eq!(health[2].xid_not_watched.as_deref(), Some("not supported"));
        assert!(is_fault_xid(48) && is_fault_xid(79) && is_fault_xid(119));
        assert!(!is_fault_xid(13) && !is_fault_xid(31) && !is_fault_xid(43) && !is_fault_xid(0));
    }

    #[test]
    fn pcie_degradation() {
        let full =
            PcieLink { gen: Some(5), gen_max: Some(5), width: Some(16), width_max: Some(16) };
        assert!(!full.width_degraded() && !full.gen_below_max());
        let narrow = PcieLink { width: Some(8), ..full };
        assert!(narrow.width_degraded());
        let idle = PcieLink { gen: Some(1), ..full };
        assert!(idle.gen_below_max() && !idle.width_degraded());
        assert!(!PcieLink::default().width_degraded());
    }

    #[test]
    fn pcie_generation_from_transfer_rate() {
        assert_eq!(pcie_gen_of_gts(2.5), Some(1));
        assert_eq!(pcie_gen_of_gts(16.0), Some(4));
        assert_eq!(pcie_gen_of_gts(32.0), Some(5));
        assert_eq!(pcie_gen_of_gts(0.0), None);
        assert_eq!(pcie_gen_of_gts(12.0), None);
    }
}
