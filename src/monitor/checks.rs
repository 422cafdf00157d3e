//! The checks, as a pure state machine: fed one sample (with its attribution, the engine's
//! state and the number of requests in flight) per tick, it raises and clears alerts with
//! hysteresis (a condition must hold for `raise_after` consecutive samples to raise and be
//! absent for `clear_after` samples to clear). No I/O, no clock: the caller logs the events,
//! exports the active alerts and passes `engine_hung()` to the supervisor.
//!
//! A missing sample is no evidence about the GPUs: it advances only the `sample-missing` check.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::attribution::{Attribution, Owner};
use super::sample::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// GPU memory used above the threshold.
    MemoryHigh,
    /// Requests in flight, yet every engine GPU at 0 % utilization: a hung engine.
    EngineHung,
    /// A GPU seen before is gone from the tool's list.
    GpuGone,
    /// The engine is not running, yet processes that were its still hold GPU memory.
    OrphanMemory,
    /// A process that is not the engine's holds memory on one of the engine's GPUs.
    ForeignProcess,
    /// The GPU tool failed or hung on consecutive ticks.
    SampleMissing,
    /// Uncorrectable ECC errors since the driver loaded (volatile count above zero).
    EccUncorrected,
    /// Clocks held down by a hardware slowdown, thermal limit or power brake.
    ClocksThrottled,
    /// The PCIe link runs with fewer lanes than its maximum, or below its generation while busy.
    PcieDegraded,
    /// A GPU-to-GPU link (NVLink, MetaXLink) is inactive.
    LinkDown,
    /// An XID-like event that means a GPU fault, within the quiet period.
    Xid,
}

impl CheckKind {
    pub const ALL: [CheckKind; 11] = [
        CheckKind::MemoryHigh,
        CheckKind::EngineHung,
        CheckKind::GpuGone,
        CheckKind::OrphanMemory,
        CheckKind::ForeignProcess,
        CheckKind::SampleMissing,
        CheckKind::EccUncorrected,
        CheckKind::ClocksThrottled,
        CheckKind::PcieDegraded,
        CheckKind::LinkDown,
        CheckKind::Xid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::MemoryHigh => "memory-high",
            CheckKind::EngineHung => "engine-hung",
            CheckKind::GpuGone => "gpu-gone",
            CheckKind::OrphanMemory => "orphan-memory",
            CheckKind::ForeignProcess => "foreign-process",
            CheckKind::SampleMissing => "sample-missing",
            CheckKind::EccUncorrected => "ecc-uncorrected",
            CheckKind::ClocksThrottled => "clocks-throttled",
            CheckKind::PcieDegraded => "pcie-degraded",
            CheckKind::LinkDown => "link-down",
            CheckKind::Xid => "xid",
        }
    }
}

/// The `xid` alert's quiet period: ten minutes. A fault XID asks for the GPU to be drained and
/// reset; the alert stays up long enough for a scrape every minute and a `for: 1m` rule to see
/// it, and a fault that repeats keeps it up.
pub const XID_QUIET_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckConfig {
    /// Memory-high threshold, percent of the GPU's total.
    pub memory_high_pct: f64,
    /// Consecutive samples of zero utilization with requests in flight before `engine-hung`.
    pub hung_after: u32,
    /// Consecutive missing samples before `sample-missing`.
    pub missing_after: u32,
    /// Consecutive samples for the other checks to raise.
    pub raise_after: u32,
    /// Consecutive clean samples for any check to clear.
    pub clear_after: u32,
    /// Utilization (percent) at or above which a PCIe generation below its maximum counts as
    /// degraded (idle GPUs lower their link generation to save power).
    pub pcie_busy_pct: f64,
    /// How long after a GPU's last fault XID the `xid` alert holds (then clears after
    /// `clear_after` samples without a new one).
    pub xid_quiet_ms: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        // vLLM preallocates ~90 % of GPU memory (gpu_memory_utilization 0.9; the seed shows
        // 60278/65536 = 92 %), so the default threshold sits above that.
        Self {
            memory_high_pct: 97.0,
            hung_after: 3,
            missing_after: 3,
            raise_after: 2,
            clear_after: 2,
            pcie_busy_pct: 50.0,
            xid_quiet_ms: XID_QUIET_MS,
        }
    }
}

/// One raised alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub check: CheckKind,
    /// The GPU it concerns; `None` for engine- or tool-wide alerts.
    pub gpu: Option<u32>,
    pub message: String,
    pub since_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckEvent {
    Raised(Alert),
    Cleared(Alert),
}

/// What one tick feeds the checks.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub sample: &'a Sample,
    pub attribution: &'a Attribution,
    /// Whether an engine is supervised, and whether it runs now.
    pub engine_supervised: bool,
    pub engine_running: bool,
    /// Requests in flight at the engine (running + waiting), if known.
    pub in_flight: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct Streak {
    bad: u32,
    good: u32,
}

type Key = (CheckKind, Option<u32>);

#[derive(Debug, Default)]
pub struct Checks {
    pub config: CheckConfig,
    streaks: BTreeMap<Key, Streak>,
    active: BTreeMap<Key, Alert>,
    /// Every GPU index seen, with its bus id, for `gpu-gone`.
    known_gpus: BTreeMap<u32, Option<String>>,
    /// Per GPU, the PCI event counts last read and the last increase of a fault type (when,
    /// and what), for `xid`.
    pcie_seen: BTreeMap<u32, PcieSeen>,
}

type PcieSeen = (BTreeMap<String, u64>, Option<(u64, String)>);

impl Checks {
    pub fn new(config: CheckConfig) -> Self {
        Self { config, ..Default::default() }
    }

    pub fn active(&self) -> Vec<Alert> {
        self.active.values().cloned().collect()
    }

    /// The hung-engine verdict for the supervisor's restart decision (already debounced).
    pub fn engine_hung(&self) -> bool {
        self.active.contains_key(&(CheckKind::EngineHung, None))
    }

    /// Feeds one tick; returns the alerts raised and cleared by it.
    pub fn update(&mut self, input: CheckInput<'_>) -> Vec<CheckEvent> {
        let now = input.sample.at_unix_ms;
        // Conditions that hold this tick: key -> message. Keys evaluated but not in here are
        // clean this tick; keys not evaluated keep their streaks.
        let mut evaluated: BTreeSet<Key> = BTreeSet::new();
        let mut holding: BTreeMap<Key, String> = BTreeMap::new();

        let missing_key = (CheckKind::SampleMissing, None);
        evaluated.insert(missing_key);
        if let Some(why) = &input.sample.missing {
            holding.insert(missing_key, format!("GPU sample missing: {why}"));
        }

        if input.sample.status.is_some() {
            let gpus = input.sample.gpus();
            for g in gpus {
                self.known_gpus.insert(g.index, g.bus_id.clone());
                let key = (CheckKind::MemoryHigh, Some(g.index));
                evaluated.insert(key);
                if let (Some(used), Some(total)) = (g.memory_used_mib, g.memory_total_mib) {
                    let pct = if total > 0 { used as f64 * 100.0 / total as f64 } else { 0.0 };
                    if pct > self.config.memory_high_pct {
                        holding.insert(
                            key,
                            format!(
                                "GPU {} memory {used}/{total} MiB ({pct:.1} %) above {} %",
                                g.index, self.config.memory_high_pct
                            ),
                        );
                    }
                }
            }
            for (&index, bus) in &self.known_gpus {
                let key = (CheckKind::GpuGone, Some(index));
                evaluated.insert(key);
                if !gpus.iter().any(|g| g.index == index) {
                    let bus = bus.as_deref().unwrap_or("unknown bus id");
                    holding
                        .insert(key, format!("GPU {index} ({bus}) is gone from the tool's list"));
                }
            }

            self.health_conditions(input.sample, &mut evaluated, &mut holding);

            // Engine hung: requests in flight, every engine GPU at exactly 0 %.
            let key = (CheckKind::EngineHung, None);
            evaluated.insert(key);
            let engine_gpus: Vec<_> = if input.attribution.engine_gpus.is_empty() {
                gpus.iter().collect()
            } else {
                gpus.iter().filter(|g| input.attribution.engine_gpus.contains(&g.index)).collect()
            };
            let in_flight = input.in_flight.unwrap_or(0);
            if input.engine_running
                && in_flight > 0
                && !engine_gpus.is_empty()
                && engine_gpus.iter().all(|g| g.utilization_pct == Some(0.0))
            {
                holding.insert(
                    key,
                    format!("{in_flight} requests in flight but the engine's GPUs are at 0 % utilization"),
                );
            }

            if input.engine_supervised {
                let orphan_mem = input.attribution.memory_by_gpu(Owner::Orphan);
                for (&gpu, &mib) in &orphan_mem {
                    let key = (CheckKind::OrphanMemory, Some(gpu));
                    evaluated.insert(key);
                    let pids: Vec<String> = input
                        .attribution
                        .with_owner(Owner::Orphan)
                        .filter(|p| p.gpu == gpu)
                        .map(|p| format!("{} ({})", p.pid, p.name))
                        .collect();
                    holding.insert(
                        key,
                        format!(
                            "GPU {gpu}: {mib} MiB still held by former engine processes {}{}",
                            pids.join(", "),
                            if input.engine_running {
                                " (left over from an earlier run)"
                            } else {
                                " after the engine stopped"
                            }
                        ),
                    );
                }
                for p in input.attribution.with_owner(Owner::Foreign) {
                    let key = (CheckKind::ForeignProcess, Some(p.gpu));
                    evaluated.insert(key);
                    let msg = holding.entry(key).or_insert_with(|| {
                        format!("GPU {} is shared with processes that are not the engine's:", p.gpu)
                    });
                    msg.push_str(&format!(
                        " {} ({}, {} MiB)",
                        p.pid,
                        p.name,
                        p.memory_mib.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                    ));
                }
                // A per-GPU orphan/foreign check with no such process this tick is clean.
                for key in self.streaks.keys().chain(self.active.keys()) {
                    if matches!(key.0, CheckKind::OrphanMemory | CheckKind::ForeignProcess) {
                        evaluated.insert(*key);
                    }
                }
            }
        }

        let mut events = Vec::new();
        // A hung verdict means nothing once the engine is not running: clear it at once, so
        // the supervisor never restarts an engine it has just stopped.
        if !input.engine_running {
            let key = (CheckKind::EngineHung, None);
            self.streaks.remove(&key);
            evaluated.remove(&key);
            if let Some(alert) = self.active.remove(&key) {
                events.push(CheckEvent::Cleared(alert));
            }
        }
        for key in evaluated {
            let streak = self.streaks.entry(key).or_default();
            match holding.remove(&key) {
                Some(message) => {
                    streak.bad += 1;
                    streak.good = 0;
                    let need = match key.0 {
                        CheckKind::EngineHung => self.config.hung_after,
                        CheckKind::SampleMissing => self.config.missing_after,
                        CheckKind::GpuGone | CheckKind::Xid => 1,
                        _ => self.config.raise_after,
                    }
                    .max(1);
                    if let Some(alert) = self.active.get_mut(&key) {
                        alert.message = message;
                    } else if streak.bad >= need {
                        let alert = Alert { check: key.0, gpu: key.1, message, since_unix_ms: now };
                        self.active.insert(key, alert.clone());
                        events.push(CheckEvent::Raised(alert));
                    }
                }
                None => {
                    streak.good += 1;
                    streak.bad = 0;
                    if streak.good >= self.config.clear_after.max(1) {
                        if let Some(alert) = self.active.remove(&key) {
                            events.push(CheckEvent::Cleared(alert));
                        }
                    }
                }
            }
        }
        events
    }

    /// The health checks of one sample: only GPUs with health readings are evaluated (a tool
    /// source without them leaves these checks as they were).
    fn health_conditions(
        &mut self,
        sample: &Sample,
        evaluated: &mut BTreeSet<Key>,
        holding: &mut BTreeMap<Key, String>,
    ) {
        use crate::host::health::{throttle_reason_names, FAULT_PCIE_EVENTS, SLOWDOWN_REASONS};
        // XIDs are events, not readings: judged on every sample that carries them (the watcher
        // copies them into repeated readings too), against the sample's time. MetaX's PCI event
        // counters are readings: an increase of a fault type between two fresh readings is the
        // event (the first reading is the baseline).
        for h in &sample.health {
            if h.age_ticks == 0 && !h.pcie_events_total.is_empty() {
                let seen = self.pcie_seen.entry(h.index).or_default();
                let up: Vec<String> = FAULT_PCIE_EVENTS
                    .iter()
                    .filter_map(|t| {
                        let (now, before) = (h.pcie_events_total.get(*t)?, seen.0.get(*t)?);
                        (now > before).then(|| format!("{t} +{}", now - before))
                    })
                    .collect();
                seen.0 = h.pcie_events_total.clone();
                if !up.is_empty() {
                    seen.1 = Some((sample.at_unix_ms, up.join(", ")));
                }
            }
            let pcie = self.pcie_seen.get(&h.index);
            if h.xid_watched != Some(true) && pcie.is_none() {
                continue;
            }
            let key = (CheckKind::Xid, Some(h.index));
            evaluated.insert(key);
            let recent = |at: u64| sample.at_unix_ms.saturating_sub(at) < self.config.xid_quiet_ms;
            if let Some(x) = h.last_fault_xid.filter(|x| recent(x.at_unix_ms)) {
                let n = h.xid_events_total.get(&x.code).copied().unwrap_or(1);
                holding.insert(
                    key,
                    format!(
                        "GPU {}: XID {} ({}), {n} since the monitor started",
                        h.index,
                        x.code,
                        crate::host::health::xid_name(x.code)
                    ),
                );
            } else if let Some((_, what)) = pcie.and_then(|p| p.1.as_ref()).filter(|p| recent(p.0))
            {
                holding.insert(key, format!("GPU {}: PCI events {what}", h.index));
            }
        }
        // Readings repeated from an earlier tick were judged when they were read.
        for h in sample.health.iter().filter(|h| h.age_ticks == 0) {
            let gpu = Some(h.index);
            let util =
                sample.gpus().iter().find(|g| g.index == h.index).and_then(|g| g.utilization_pct);

            let key = (CheckKind::EccUncorrected, gpu);
            evaluated.insert(key);
            if let Some(n) = h.ecc_uncorrected.filter(|&n| n > 0) {
                holding.insert(
                    key,
                    format!(
                        "GPU {}: {n} uncorrectable ECC errors since the driver loaded",
                        h.index
                    ),
                );
            }

            let key = (CheckKind::ClocksThrottled, gpu);
            evaluated.insert(key);
            if let Some(bits) = h.throttle_reasons.filter(|b| b & SLOWDOWN_REASONS != 0) {
                let clock =
                    h.sm_clock_mhz.map(|c| format!(" (SM clock {c} MHz)")).unwrap_or_default();
                holding.insert(
                    key,
                    format!(
                        "GPU {} clocks held down by {}{clock}",
                        h.index,
                        throttle_reason_names(bits & SLOWDOWN_REASONS).join(", ")
                    ),
                );
            }

            let key = (CheckKind::PcieDegraded, gpu);
            evaluated.insert(key);
            let p = &h.pcie;
            let busy = util.is_some_and(|u| u >= self.config.pcie_busy_pct);
            if p.width_degraded() || (busy && p.gen_below_max()) {
                let show = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
                holding.insert(
                    key,
                    format!(
                        "GPU {} PCIe link at gen {} x{} (maximum gen {} x{})",
                        h.index,
                        show(p.gen),
                        show(p.width),
                        show(p.gen_max),
                        show(p.width_max)
                    ),
                );
            }

            if let Some(links) = &h.links {
                let key = (CheckKind::LinkDown, gpu);
                evaluated.insert(key);
                let down: Vec<String> =
                    links.iter().filter(|l| !l.up).map(|l| l.link.to_string()).collect();
                if !down.is_empty() {
                    holding.insert(
                        key,
                        format!(
                            "GPU {} links {} inactive ({} of {})",
                            h.index,
                            down.join(", "),
                            down.len(),
                            links.len()
                        ),
                    );
                }
            }
        }
    }
}

/// A percentage threshold given on the command line (`flag`): a number from 0 to 100 (NaN is
/// none); the error names the flag and the value.
pub fn check_percentage(flag: &str, v: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{flag} {v} is not a percentage (0-100)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::{GpuProcess, GpuStatus, SmiStatus};
    use crate::monitor::attribution::{attribute, EnginePids};
    use crate::monitor::sample::SampleSource;

    fn gpu(index: u32, used: u64, util: f64) -> GpuStatus {
        GpuStatus {
            index,
            bus_id: Some(format!("0000:0{index}:00.0")),
            memory_used_mib: Some(used),
            memory_total_mib: Some(1000),
            utilization_pct: Some(util),
            ..Default::default()
        }
    }

    fn sample(t: u64, gpus: Vec<GpuStatus>, procs: Vec<GpuProcess>) -> Sample {
        Sample {
            at_unix_ms: t,
            source: SampleSource::MxSmi,
            duration_ms: 1.0,
            status: Some(SmiStatus { gpus, processes: procs, ..Default::default() }),
            missing: None,
            health: vec![],
            degraded: vec![],
        }
    }

    fn missing(t: u64) -> Sample {
        Sample {
            at_unix_ms: t,
            source: SampleSource::MxSmi,
            duration_ms: 1.0,
            status: None,
            missing: Some("mx-smi timed out after 5s".into()),
            health: vec![],
            degraded: vec![],
        }
    }

    fn feed(c: &mut Checks, s: &Sample, engine: &EnginePids, in_flight: u64) -> Vec<CheckEvent> {
        let a = attribute(s.processes(), engine);
        c.update(CheckInput {
            sample: s,
            attribution: &a,
            engine_supervised: engine.supervised,
            engine_running: engine.running,
            in_flight: Some(in_flight),
        })
    }

    fn engine(running: bool) -> EnginePids {
        EnginePids {
            supervised: true,
            running,
            current: if running { [7].into() } else { BTreeSet::new() },
            ever: [7].into(),
            gpus: Some([0].into()),
        }
    }

    #[test]
    fn hung_engine_raises_after_hung_after_and_clears_with_hysteresis() {
        let mut c = Checks::new(CheckConfig::default());
        let e = engine(true);
        let zero = sample(0, vec![gpu(0, 500, 0.0)], vec![]);
        let busy = sample(0, vec![gpu(0, 500, 30.0)], vec![]);
        assert!(feed(&mut c, &zero, &e, 4).is_empty());
        assert!(feed(&mut c, &zero, &e, 4).is_empty());
        // A missing sample is no evidence either way: the streak survives it.
        assert!(feed(&mut c, &missing(0), &e, 4).is_empty());
        let ev = feed(&mut c, &zero, &e, 4);
        assert!(matches!(&ev[..], [CheckEvent::Raised(a)] if a.check == CheckKind::EngineHung));
        assert!(c.engine_hung());
        // One busy tick does not clear it; two do.
        assert!(feed(&mut c, &busy, &e, 4).is_empty());
        assert!(c.engine_hung());
        let ev = feed(&mut c, &busy, &e, 4);
        assert!(matches!(&ev[..], [CheckEvent::Cleared(a)] if a.check == CheckKind::EngineHung));
        assert!(!c.engine_hung());
        // Hung again, then the engine stops: cleared on the very next tick.
        for _ in 0..3 {
            feed(&mut c, &zero, &e, 4);
        }
        assert!(c.engine_hung());
        let ev = feed(&mut c, &zero, &engine(false), 4);
        assert!(ev
            .iter()
            .any(|e| matches!(e, CheckEvent::Cleared(a) if a.check == CheckKind::EngineHung)));
        assert!(!c.engine_hung());
    }

    #[test]
    fn idle_engine_at_zero_is_not_hung() {
        let mut c = Checks::new(CheckConfig::default());
        let zero = sample(0, vec![gpu(0, 500, 0.0)], vec![]);
        for _ in 0..10 {
            feed(&mut c, &zero, &engine(true), 0);
        }
        assert!(!c.engine_hung());
    }

    #[test]
    fn memory_high_gpu_gone_and_missing() {
        let mut c = Checks::new(CheckConfig::default());
        let e = EnginePids::default();
        feed(&mut c, &sample(0, vec![gpu(0, 990, 5.0), gpu(1, 10, 5.0)], vec![]), &e, 0);
        let ev = feed(&mut c, &sample(0, vec![gpu(0, 990, 5.0)], vec![]), &e, 0);
        let kinds: Vec<_> = ev
            .iter()
            .map(|e| match e {
                CheckEvent::Raised(a) => (a.check, a.gpu),
                CheckEvent::Cleared(a) => panic!("unexpected clear {a:?}"),
            })
            .collect();
        assert_eq!(kinds, [(CheckKind::MemoryHigh, Some(0)), (CheckKind::GpuGone, Some(1))]);
        for _ in 0..2 {
            assert!(feed(&mut c, &missing(0), &e, 0).is_empty());
        }
        let ev = feed(&mut c, &missing(0), &e, 0);
        assert!(
            matches!(&ev[..], [CheckEvent::Raised(a)] if a.check == CheckKind::SampleMissing && a.message.contains("timed out"))
        );
        assert_eq!(c.active().len(), 3);
    }

    #[test]
    fn orphan_memory_after_stop_and_foreign_process() {
        let mut c = Checks::new(CheckConfig::default());
        let procs = vec![
            GpuProcess { gpu: 0, pid: 7, name: "python".into(), memory_mib: Some(400), line: 0 },
            GpuProcess { gpu: 0, pid: 8, name: "intruder".into(), memory_mib: Some(20), line: 0 },
        ];
        let s = sample(0, vec![gpu(0, 500, 5.0)], procs);
        for _ in 0..2 {
            feed(&mut c, &s, &engine(false), 0);
        }
        let active: Vec<_> = c.active().iter().map(|a| (a.check, a.gpu)).collect();
        assert_eq!(
            active,
            [(CheckKind::OrphanMemory, Some(0)), (CheckKind::ForeignProcess, Some(0))]
        );
        assert!(c.active()[0].message.contains("7 (python)"));
        // Both go once the processes do.
        let clean = sample(0, vec![gpu(0, 0, 0.0)], vec![]);
        feed(&mut c, &clean, &engine(false), 0);
        feed(&mut c, &clean, &engine(false), 0);
        assert!(c.active().is_empty(), "{:?}", c.active());
    }

    fn with_health(mut s: Sample, h: crate::host::health::GpuHealth) -> Sample {
        s.health = vec![h];
        s
    }

    #[test]
    fn fault_xid_raises_at_once_holds_through_repeats_and_clears_after_the_quiet_period() {
        use crate::host::health::{GpuHealth, XidEvent};
        let mut c = Checks::new(CheckConfig { xid_quiet_ms: 60_000, ..CheckConfig::default() });
        let e = EnginePids::default();
        let at = |t: u64, h: &GpuHealth| {
            with_health(sample(t, vec![gpu(0, 10, 0.0)], vec![]), h.clone())
        };
        let mut h = GpuHealth { index: 0, xid_watched: Some(true), ..Default::default() };
        assert!(feed(&mut c, &at(1_000, &h), &e, 0).is_empty());
        // An application XID is counted, not alerted.
        h.last_xid = Some(XidEvent { code: 13, at_unix_ms: 1_500 });
        h.xid_events_total = [(13, 1)].into();
        assert!(feed(&mut c, &at(2_000, &h), &e, 0).is_empty());
        // A fault XID raises on the first sample that carries it, even a repeated reading.
        let x79 = XidEvent { code: 79, at_unix_ms: 2_500 };
        h.last_xid = Some(x79);
        h.last_fault_xid = Some(x79);
        h.xid_events_total = [(13, 1), (79, 1)].into();
        h.age_ticks = 3;
        let ev = feed(&mut c, &at(3_000, &h), &e, 0);
        assert!(
            matches!(&ev[..], [CheckEvent::Raised(a)] if a.check == CheckKind::Xid && a.gpu == Some(0)
                && a.message == "GPU 0: XID 79 (GPU has fallen off the bus), 1 since the monitor started"),
            "{ev:?}"
        );
        // Within the quiet period it holds, whatever came after it.
        h.last_xid = Some(XidEvent { code: 13, at_unix_ms: 40_000 });
        assert!(feed(&mut c, &at(61_000, &h), &e, 0).is_empty());
        // Past it: cleared after `clear_after` (2) samples.
        assert!(feed(&mut c, &at(62_500, &h), &e, 0).is_empty());
        let ev = feed(&mut c, &at(63_000, &h), &e, 0);
        assert!(matches!(&ev[..], [CheckEvent::Cleared(a)] if a.check == CheckKind::Xid), "{ev:?}");
        // A GPU not watched is not judged.
        let unwatched = GpuHealth { xid_watched: Some(false), ..h.clone() };
        assert!(feed(
            &mut c,
            &at(
                63_500,
                &GpuHealth {
                    last_fault_xid: Some(XidEvent { code: 48, at_unix_ms: 63_400 }),
                    ..unwatched
                }
            ),
            &e,
            0
        )
        .is_empty());
    }

    #[test]
    fn pci_event_increase_of_a_fault_type_raises_xid_after_the_baseline() {
        use crate::host::health::GpuHealth;
        let mut c = Checks::new(CheckConfig { xid_quiet_ms: 60_000, ..CheckConfig::default() });
        let e = EnginePids::default();
        let at = |t: u64, counts: &[(&str, u64)], age: u32| {
            let h = GpuHealth {
                index: 1,
                pcie_events_total: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                age_ticks: age,
                ..Default::default()
            };
            with_health(sample(t, vec![gpu(1, 10, 0.0)], vec![]), h)
        };
        // Counts from before the monitor started are the baseline, not an event.
        assert!(feed(&mut c, &at(1_000, &[("aer_ue", 4), ("aer_ce", 1)], 0), &e, 0).is_empty());
        // A corrected AER error is counted, not alerted.
        assert!(feed(&mut c, &at(2_000, &[("aer_ue", 4), ("aer_ce", 9)], 0), &e, 0).is_empty());
        let ev = feed(&mut c, &at(3_000, &[("aer_ue", 6), ("aer_ce", 9)], 0), &e, 0);
        assert!(
            matches!(&ev[..], [CheckEvent::Raised(a)] if a.message == "GPU 1: PCI events aer_ue +2"),
            "{ev:?}"
        );
        // Repeated readings hold it; past the quiet period it clears after two samples.
        assert!(feed(&mut c, &at(50_000, &[("aer_ue", 6)], 5), &e, 0).is_empty());
        assert!(feed(&mut c, &at(63_000, &[("aer_ue", 6)], 0), &e, 0).is_empty());
        assert_eq!(feed(&mut c, &at(64_000, &[("aer_ue", 6)], 0), &e, 0).len(), 1);
        assert!(c.active().is_empty());
    }

    #[test]
    fn health_checks_raise_with_hysteresis_and_clear() {
        use crate::host::health::{GpuHealth, LinkState, PcieLink};
        let mut c = Checks::new(CheckConfig::default());
        let e = EnginePids::default();
        let full =
            PcieLink { gen: Some(5), gen_max: Some(5), width: Some(16), width_max: Some(16) };
        let link = |link, up| LinkState { link, up, remote_bus_id: None };
        let good = GpuHealth {
            index: 0,
            throttle_reasons: Some(0x1), // idle is no slowdown
            ecc_uncorrected: Some(0),
            pcie: PcieLink { gen: Some(1), ..full }, // idle, lower gen: not degraded
            links: Some(vec![link(0, true), link(1, true)]),
            ..Default::default()
        };
        let bad = GpuHealth {
            index: 0,
            sm_clock_mhz: Some(900),
            throttle_reasons: Some(0x40 | 0x4),
            ecc_uncorrected: Some(2),
            pcie: PcieLink { width: Some(8), ..full },
            links: Some(vec![link(0, true), link(1, false)]),
            ..Default::default()
        };
        let s_good = with_health(sample(0, vec![gpu(0, 10, 0.0)], vec![]), good.clone());
        let s_bad = with_health(sample(0, vec![gpu(0, 10, 90.0)], vec![]), bad);
        for _ in 0..3 {
            assert!(feed(&mut c, &s_good, &e, 0).is_empty());
        }
        assert!(feed(&mut c, &s_bad, &e, 0).is_empty(), "one bad tick raises nothing");
        let ev = feed(&mut c, &s_bad, &e, 0);
        let raised: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                CheckEvent::Raised(a) => Some(a.check),
                CheckEvent::Cleared(_) => None,
            })
            .collect();
        assert_eq!(
            raised,
            [
                CheckKind::EccUncorrected,
                CheckKind::ClocksThrottled,
                CheckKind::PcieDegraded,
                CheckKind::LinkDown
            ]
        );
        let msg = |k| c.active().into_iter().find(|a| a.check == k).unwrap().message;
        assert_eq!(
            msg(CheckKind::ClocksThrottled),
            "GPU 0 clocks held down by hw_thermal_slowdown (SM clock 900 MHz)"
        );
        assert_eq!(msg(CheckKind::PcieDegraded), "GPU 0 PCIe link at gen 5 x8 (maximum gen 5 x16)");
        assert_eq!(msg(CheckKind::LinkDown), "GPU 0 links 1 inactive (1 of 2)");
        assert!(msg(CheckKind::EccUncorrected).contains("2 uncorrectable"));
        // A tool sample without health readings is no evidence: nothing clears.
        assert!(feed(&mut c, &sample(0, vec![gpu(0, 10, 0.0)], vec![]), &e, 0).is_empty());
        assert!(feed(&mut c, &sample(0, vec![gpu(0, 10, 0.0)], vec![]), &e, 0).is_empty());
        assert_eq!(c.active().len(), 4);
        // Two good ticks clear all four.
        assert!(feed(&mut c, &s_good, &e, 0).is_empty());
        assert_eq!(feed(&mut c, &s_good, &e, 0).len(), 4);
        assert!(c.active().is_empty());
        // A busy GPU below its PCIe generation is degraded.
        let slow = GpuHealth { pcie: PcieLink { gen: Some(3), ..full }, ..good };
        let s_slow = with_health(sample(0, vec![gpu(0, 10, 80.0)], vec![]), slow);
        feed(&mut c, &s_slow, &e, 0);
        feed(&mut c, &s_slow, &e, 0);
        assert_eq!(
            c.active().iter().map(|a| a.check).collect::<Vec<_>>(),
            [CheckKind::PcieDegraded]
        );
    }
}
