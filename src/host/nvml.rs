//! NVIDIA GPUs through NVML (`libnvidia-ml.so.1`), loaded at run time with `nvml-wrapper`: no
//! link-time dependency, so the binary runs where there is no driver and callers fall back to
//! `nvidia-smi`. One call reads every GPU's status (memory, utilization, temperature, power,
//! compute processes) and health (clocks and their throttle reasons, performance state, ECC,
//! PCIe link, NVLink state); another reads the placement facts `probe` cross-checks (bus id,
//! NUMA node, CPU affinity).
//!
//! Every field degrades on its own: a call that answers "not supported" (or fails) leaves that
//! field `None` and adds a note; the reading as a whole fails only when the GPUs cannot be
//! counted. The library path comes from `NODEAGENT_NVML_LIB` (a path, or `off` to never load
//! NVML), else the driver's `libnvidia-ml.so.1`. Tests point it at a fake library built from
//! `tests/fake-nvml/fake_nvml.c`.
//!
//! Calls block (microseconds, but a sick GPU can stall the driver): callers run them off the
//! async threads with a time limit (`monitor::sampler`). XID events come through an NVML event
//! set on a thread of their own ([`NvmlLib::watch_xids`]): it waits on the set with a short
//! timeout, in a loop that ends when its [`XidWatcher`] is stopped or dropped. This module does
//! not schedule, check or render anything.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PerformanceState, TemperatureSensor,
};
use nvml_wrapper::error::NvmlError as WrapperError;
use nvml_wrapper::Nvml;

use super::cpuset::CpuSet;
use super::facts::{normalize_bus_id, GpuProcess, GpuStatus};
use super::health::{GpuHealth, GpuXids, LinkState, PcieLink, XidEvent, XidLog};

/// The environment variable naming the NVML library to load (`off`: do not load NVML).
pub const LIB_ENV: &str = "NODEAGENT_NVML_LIB";
/// The driver's library name, found through the dynamic loader's search path.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";
/// nvml.h `NVML_NVLINK_MAX_LINKS`.
const MAX_LINKS: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    #[error("NVML is off ({LIB_ENV}=off)")]
    Off,
    #[error("NVML not loaded from {lib}: {reason}")]
    Load { lib: String, reason: String },
    #[error("NVML ({lib}): cannot count the GPUs: {reason}")]
    Count { lib: String, reason: String },
}

/// Where to load NVML from: `NODEAGENT_NVML_LIB` if set (`off` disables it), else the driver's.
pub fn lib_from_env() -> Option<OsString> {
    match std::env::var_os(LIB_ENV) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(v),
        _ => Some(OsString::from(DEFAULT_LIB)),
    }
}

/// A loaded, initialised NVML. `nvmlShutdown` runs when it is dropped.
#[derive(Debug)]
pub struct NvmlLib {
    nvml: Nvml,
    lib: String,
    driver_version: Option<String>,
    /// The health fields that do not change while the driver is loaded, per GPU (index and bus
    /// id, so a GPU that falls off and comes back as another index is read again).
    statics: std::sync::Mutex<std::collections::HashMap<(u32, Option<String>), Statics>>,
}

/// Health fields fixed for the life of a loaded driver: read once per GPU, not every health
/// tick. On a real H100 (testdata/captures/h100-nvml, BENCHMARKS.md) `nvmlDeviceGetMaxClockInfo`
/// costs 1.25 ms of CPU per call and `nvmlDeviceGetEccMode` 0.1 ms: together nine tenths of a
/// health reading. The current ECC mode changes only at a GPU reset, which reloads NVML's state
/// for the GPU; a pending mode is not what the checks read. Only successes are kept: a call
/// that failed is asked again next time.
#[derive(Debug, Clone, Copy, Default)]
struct Statics {
    sm_clock_max_mhz: Option<u32>,
    ecc_enabled: Option<bool>,
    pcie_gen_max: Option<u32>,
    pcie_width_max: Option<u32>,
}

/// One reading of every GPU: what `nvidia-smi`'s queries give, plus health, plus notes on each
/// field that could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NvmlReading {
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuStatus>,
    pub processes: Vec<GpuProcess>,
    /// Empty when the reading was asked without health ([`NvmlLib::read_with`]).
    pub health: Vec<GpuHealth>,
    /// `"gpu 0 power: not supported"`, one per field that degraded (status fields).
    pub degraded: Vec<String>,
    /// The same for the health fields.
    pub health_degraded: Vec<String>,
}

/// Placement facts of one GPU as NVML states them (for `probe`'s cross-check).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NvmlGpuFacts {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// sysfs form.
    pub bus_id: Option<String>,
    pub numa_node: Option<u32>,
    pub cpu_affinity: Option<CpuSet>,
}

fn why(e: &WrapperError) -> String {
    match e {
        WrapperError::NotSupported => "not supported".into(),
        WrapperError::FailedToLoadSymbol(s) => format!("symbol missing in this library ({s})"),
        e => e.to_string(),
    }
}

/// A field's value, or `None` with a note saying why.
fn field<T>(
    notes: &mut Vec<String>,
    gpu: u32,
    what: &str,
    r: Result<T, WrapperError>,
) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("gpu {gpu} {what}: {}", why(&e)));
            None
        }
    }
}

/// The value kept in `slot`, else `read()`'s, kept when it is one.
fn once<T: Copy>(slot: &mut Option<T>, read: impl FnOnce() -> Option<T>) -> Option<T> {
    if slot.is_none() {
        *slot = read();
    }
    *slot
}

fn pstate_number(p: PerformanceState) -> Option<u32> {
    use PerformanceState::*;
    Some(match p {
        Zero => 0,
        One => 1,
        Two => 2,
        Three => 3,
        Four => 4,
        Five => 5,
        Six => 6,
        Seven => 7,
        Eight => 8,
        Nine => 9,
        Ten => 10,
        Eleven => 11,
        Twelve => 12,
        Thirteen => 13,
        Fourteen => 14,
        Fifteen => 15,
        Unknown => return None,
    })
}

impl NvmlLib {
    /// Loads and initialises NVML from `lib` (a name the loader searches, or a path).
    pub fn open(lib: &OsStr) -> Result<Self, NvmlError> {
        let name = Path::new(lib).display().to_string();
        let nvml = Nvml::builder()
            .lib_path(lib)
            .init()
            .map_err(|e| NvmlError::Load { lib: name.clone(), reason: why(&e) })?;
        let driver_version = nvml.sys_driver_version().ok();
        Ok(Self { nvml, lib: name, driver_version, statics: Default::default() })
    }

    /// Loads NVML as `NODEAGENT_NVML_LIB` says (see [`lib_from_env`]).
    pub fn open_from_env() -> Result<Self, NvmlError> {
        let lib = lib_from_env().ok_or(NvmlError::Off)?;
        Self::open(&lib)
    }

    /// The library as it was named (`libnvidia-ml.so.1`, or the path given).
    pub fn lib(&self) -> &str {
        &self.lib
    }

    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    fn count(&self) -> Result<u32, NvmlError> {
        self.nvml
            .device_count()
            .map_err(|e| NvmlError::Count { lib: self.lib.clone(), reason: why(&e) })
    }

    /// Reads every GPU: status, processes (named from `<proc_root>/<pid>/comm`) and health.
    /// Every note is in `degraded` (`health_degraded` is left empty).
    pub fn read(&self, proc_root: &Path) -> Result<NvmlReading, NvmlError> {
        let mut r = self.read_with(proc_root, true)?;
        let h = std::mem::take(&mut r.health_degraded);
        r.degraded.extend(h);
        Ok(r)
    }

    /// Reads every GPU's status and processes, and its health when `health` (the clocks,
    /// throttle reasons, ECC, PCIe and NVLink calls: most of a tick's calls, read less often
    /// by the sampler).
    pub fn read_with(&self, proc_root: &Path, health: bool) -> Result<NvmlReading, NvmlError> {
        let n = self.count()?;
        let mut out =
            NvmlReading { driver_version: self.driver_version.clone(), ..Default::default() };
        let notes = &mut out.degraded;
        let hnotes = &mut out.health_degraded;
        for index in 0..n {
            let dev = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    // A GPU NVML cannot open (fallen off the bus): absent from this reading,
                    // which is what `gpu-gone` watches for.
                    notes.push(format!("gpu {index}: cannot open: {}", why(&e)));
                    continue;
                }
            };
            let mem = field(notes, index, "memory", dev.memory_info());
            let util = field(notes, index, "utilization", dev.utilization_rates());
            let pci = field(notes, index, "pci info", dev.pci_info());
            let bus_id = pci.as_ref().and_then(|p| normalize_bus_id(&p.bus_id));
            out.gpus.push(GpuStatus {
                index,
                name: field(notes, index, "name", dev.name()),
                bus_id: bus_id.clone(),
                temperature_c: field(
                    notes,
                    index,
                    "temperature",
                    dev.temperature(TemperatureSensor::Gpu),
                )
                .map(f64::from),
                power_w: field(notes, index, "power", dev.power_usage()).map(|mw| mw as f64 / 1e3),
                memory_used_mib: mem.as_ref().map(|m| m.used / (1024 * 1024)),
                memory_total_mib: mem.as_ref().map(|m| m.total / (1024 * 1024)),
                utilization_pct: util.map(|u| f64::from(u.gpu)),
                line: 0,
            });
            if let Some(procs) = field(notes, index, "processes", dev.running_compute_processes()) {
                for p in procs {
                    let name =
                        std::fs::read_to_string(proc_root.join(p.pid.to_string()).join("comm"))
                            .map(|s| s.trim().to_string())
                            .unwrap_or_default();
                    let memory_mib = match p.used_gpu_memory {
                        nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => {
                            Some(b / (1024 * 1024))
                        }
                        nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                    };
                    out.processes.push(GpuProcess {
                        gpu: index,
                        pid: p.pid,
                        name,
                        memory_mib,
                        line: 0,
                    });
                }
            }
            if !health {
                continue;
            }
            let notes = &mut *hnotes;
            let mut statics = self.statics.lock().unwrap_or_else(|p| p.into_inner());
            let known = statics.entry((index, bus_id.clone())).or_default();
            let ecc_enabled = once(&mut known.ecc_enabled, || {
                field(notes, index, "ecc mode", dev.is_ecc_enabled()).map(|m| m.currently_enabled)
            });
            let sm_clock_max_mhz = once(&mut known.sm_clock_max_mhz, || {
                field(notes, index, "sm clock max", dev.max_clock_info(Clock::SM))
            });
            let gen_max = once(&mut known.pcie_gen_max, || {
                field(notes, index, "pcie gen max", dev.max_pcie_link_gen())
            });
            let width_max = once(&mut known.pcie_width_max, || {
                field(notes, index, "pcie width max", dev.max_pcie_link_width())
            });
            drop(statics);
            let ecc = |t| {
                if ecc_enabled == Some(true) {
                    dev.total_ecc_errors(t, EccCounter::Volatile).map(Some)
                } else {
                    Ok(None)
                }
            };
            let ecc_corrected =
                field(notes, index, "ecc corrected", ecc(MemoryError::Corrected)).flatten();
            let ecc_uncorrected =
                field(notes, index, "ecc uncorrected", ecc(MemoryError::Uncorrected)).flatten();
            out.health.push(GpuHealth {
                index,
                sm_clock_mhz: field(notes, index, "sm clock", dev.clock_info(Clock::SM)),
                mem_clock_mhz: field(notes, index, "memory clock", dev.clock_info(Clock::Memory)),
                sm_clock_max_mhz,
                throttle_reasons: field(
                    notes,
                    index,
                    "throttle reasons",
                    dev.current_throttle_reasons(),
                )
                .map(|r| r.bits()),
                performance_state: field(
                    notes,
                    index,
                    "performance state",
                    dev.performance_state(),
                )
                .and_then(pstate_number),
                ecc_enabled,
                ecc_corrected,
                ecc_uncorrected,
                pcie: PcieLink {
                    gen: field(notes, index, "pcie gen", dev.current_pcie_link_gen()),
                    gen_max,
                    width: field(notes, index, "pcie width", dev.current_pcie_link_width()),
                    width_max,
                },
                links: links(&dev, index, notes),
                ..GpuHealth::default()
            });
        }
        Ok(out)
    }

    /// Every GPU's index, bus id and NVLinks (`None`: no NVLink), for the interconnect
    /// preflight. A GPU NVML cannot open is left out.
    #[allow(clippy::type_complexity)]
    pub fn links(&self) -> Result<Vec<(u32, Option<String>, Option<Vec<LinkState>>)>, NvmlError> {
        let n = self.count()?;
        let mut notes = Vec::new();
        let mut out = Vec::new();
        for index in 0..n {
            let Ok(dev) = self.nvml.device_by_index(index) else { continue };
            let bus = dev.pci_info().ok().and_then(|p| normalize_bus_id(&p.bus_id));
            out.push((index, bus, links(&dev, index, &mut notes)));
        }
        Ok(out)
    }

    /// Placement facts of every GPU (bus id, NUMA node, CPU affinity), for `probe`.
    pub fn facts(&self) -> Result<(Vec<NvmlGpuFacts>, Vec<String>), NvmlError> {
        let n = self.count()?;
        let mut notes = Vec::new();
        let mut out = Vec::new();
        let words =
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1024) / 64;
        for index in 0..n {
            let Some(dev) = field(&mut notes, index, "handle", self.nvml.device_by_index(index))
            else {
                continue;
            };
            let cpu_affinity = field(&mut notes, index, "cpu affinity", dev.cpu_affinity(words))
                .map(|masks| {
                    let bits = std::mem::size_of::<std::ffi::c_ulong>() * 8;
                    masks
                        .iter()
                        .enumerate()
                        .flat_map(|(w, &m)| {
                            (0..bits)
                                .filter(move |b| (m >> b) & 1 == 1)
                                .map(move |b| (w * bits + b) as u32)
                        })
                        .collect::<CpuSet>()
                });
            out.push(NvmlGpuFacts {
                index,
                name: field(&mut notes, index, "name", dev.name()),
                uuid: field(&mut notes, index, "uuid", dev.uuid()),
                bus_id: field(&mut notes, index, "pci info", dev.pci_info())
                    .and_then(|p| normalize_bus_id(&p.bus_id)),
                numa_node: field(&mut notes, index, "numa node", dev.numa_node_id()),
                cpu_affinity: cpu_affinity.filter(|c| !c.is_empty()),
            });
        }
        Ok((out, notes))
    }
}

/// The GPU's NVLinks: `None` when the first link is not supported (a GPU without NVLink).
fn links(
    dev: &nvml_wrapper::Device<'_>,
    index: u32,
    notes: &mut Vec<String>,
) -> Option<Vec<LinkState>> {
    let mut out = Vec::new();
    for link in 0..MAX_LINKS {
        let w = dev.link_wrapper_for(link);
        match w.is_active() {
            Ok(up) => {
                let remote_bus_id = if up {
                    w.remote_pci_info().ok().and_then(|p| normalize_bus_id(&p.bus_id))
                } else {
                    None
                };
                out.push(LinkState { link, up, remote_bus_id });
            }
            // Past the GPU's last link, or no NVLink at all.
            Err(WrapperError::NotSupported | WrapperError::InvalidArg) => break,
            Err(e) => {
                notes.push(format!("gpu {index} nvlink {link}: {}", why(&e)));
                break;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// How long one wait on the event set lasts: the longest a stop waits for the thread.
pub const XID_WAIT_MS: u32 = 250;

/// The XID watcher's thread and what it has seen. Stopping it (or dropping it) ends the
/// thread and frees the event set.
#[derive(Debug)]
pub struct XidWatcher {
    log: std::sync::Arc<std::sync::Mutex<XidLog>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl XidWatcher {
    /// What the watcher has seen so far.
    pub fn log(&self) -> XidLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends the thread (within one wait, [`XID_WAIT_MS`]) and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for XidWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NvmlLib {
    /// Starts a thread that registers every GPU for XID events and records them as they come.
    /// A GPU whose registration fails (NOT_SUPPORTED on vGPU and some VMs, a library without
    /// the event functions) is recorded as not watched, with the reason, logged once.
    pub fn watch_xids(self: &std::sync::Arc<Self>) -> XidWatcher {
        let log = std::sync::Arc::new(std::sync::Mutex::new(XidLog::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (lib, l, s) = (self.clone(), log.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("nvml-xid".into())
            .spawn(move || lib.xid_loop(&l, &s))
            .map_err(|e| tracing::warn!(error = %e, "XID events not watched: no thread"))
            .ok();
        XidWatcher { log, stop, thread: std::sync::Mutex::new(thread) }
    }

    fn xid_loop(&self, log: &std::sync::Mutex<XidLog>, stop: &std::sync::atomic::AtomicBool) {
        use nvml_wrapper::bitmasks::event::EventTypes;
        use nvml_wrapper::enums::event::XidError;
        let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
        let n = match self.count() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "XID events not watched");
                return;
            }
        };
        let not_watched = |gpu: u32, why: String| {
            tracing::warn!(gpu, reason = %why, "XID events of this GPU not watched");
            lock().gpus.insert(gpu, GpuXids { not_watched: Some(why), ..Default::default() });
        };
        // The GPUs' handles, to name the GPU of an event; the ones registered so far.
        let mut handles = Vec::new();
        let mut watched: Vec<u32> = Vec::new();
        let mut set = None;
        for index in 0..n {
            let dev = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    not_watched(index, format!("cannot open: {}", why(&e)));
                    continue;
                }
            };
            match dev.supported_event_types() {
                Ok(t) if t.contains(EventTypes::CRITICAL_XID_ERROR) => {}
                Ok(_) => {
                    not_watched(index, "xid events not supported".into());
                    continue;
                }
                Err(e) => {
                    not_watched(index, format!("event types: {}", why(&e)));
                    continue;
                }
            }
            let current = match set.take() {
                Some(s) => s,
                None => match self.nvml.create_event_set() {
                    Ok(s) => s,
                    Err(e) => {
                        // No event set at all (an old library): no GPU can be watched.
                        let why = format!("event set: {}", why(&e));
                        for gpu in index..n {
                            not_watched(gpu, why.clone());
                        }
                        break;
                    }
                },
            };
            match dev.register_events(EventTypes::CRITICAL_XID_ERROR, current) {
                Ok(s) => {
                    set = Some(s);
                    watched.push(index);
                    // SAFETY: the handle is only compared with the ones events carry.
                    handles.push((unsafe { dev.handle() } as usize, index));
                    lock().gpus.insert(index, GpuXids::default());
                }
                Err(e) => {
                    // The wrapper frees the set on a failed registration: build it again
                    // with the GPUs registered before.
                    not_watched(index, format!("register events: {}", why(&e.error)));
                    set = self.reregister(&watched);
                    if set.is_none() {
                        for gpu in watched.drain(..) {
                            not_watched(gpu, "event set lost on another GPU's failure".into());
                        }
                        handles.clear();
                    }
                }
            }
        }
        let Some(set) = set else { return };
        tracing::info!(gpus = ?watched, "watching XID events");
        let mut failing = false;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            match set.wait(XID_WAIT_MS) {
                Ok(ev) => {
                    failing = false;
                    let code = match ev.event_data {
                        Some(XidError::Value(v)) => v,
                        Some(XidError::Unknown) => 999,
                        None => continue,
                    };
                    // SAFETY: compared only, as above.
                    let h = unsafe { ev.device.handle() } as usize;
                    let Some(&(_, gpu)) = handles.iter().find(|(k, _)| *k == h) else { continue };
                    tracing::warn!(gpu, xid = code, "XID event");
                    let at_unix_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    lock().record(gpu, XidEvent { code, at_unix_ms });
                }
                Err(WrapperError::Timeout) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(reason = %why(&e), "waiting for XID events failed");
                    }
                    failing = true;
                    std::thread::sleep(std::time::Duration::from_millis(XID_WAIT_MS.into()));
                }
            }
        }
    }

    /// A fresh event set with `gpus` registered for XIDs (`None` when it cannot be built).
    fn reregister(&self, gpus: &[u32]) -> Option<nvml_wrapper::EventSet<'_>> {
        use nvml_wrapper::bitmasks::event::EventTypes;
        let mut set = self.nvml.create_event_set().ok()?;
        for &gpu in gpus {
            let dev = self.nvml.device_by_index(gpu).ok()?;
            set = dev.register_events(EventTypes::CRITICAL_XID_ERROR, set).ok()?;
        }
        Some(set)
    }
}

/// A GPU as the other sources (the vendor tool, sysfs, hwloc) placed it, with where each fact
/// came from, for [`cross_check`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacedGpu {
    pub index: u32,
    pub bus_id: Option<String>,
    pub numa_node: Option<(u32, String)>,
    pub cpu_affinity: Option<(CpuSet, String)>,
}

/// One GPU's facts from NVML next to the other sources': one line each, saying whether they
/// agree. NVML's `not supported` NUMA node (most x86 hosts) is said as such, not as a
/// disagreement.
pub fn cross_check(nvml: &[NvmlGpuFacts], placed: &[PlacedGpu]) -> Vec<String> {
    let mut lines = Vec::new();
    for f in nvml {
        let other = placed.iter().find(|p| p.bus_id.is_some() && p.bus_id == f.bus_id);
        let bus = f.bus_id.as_deref().unwrap_or("no bus id");
        let Some(p) = other else {
            lines.push(format!("GPU {} ({bus}): NVML lists it, no other source does", f.index));
            continue;
        };
        let mut parts = Vec::new();
        if p.index != f.index {
            parts.push(format!("index {} (the tool's {})", f.index, p.index));
        }
        parts.push(match (f.numa_node, &p.numa_node) {
            (Some(a), Some((b, src))) if a == *b => format!("NUMA {a} (agrees with {src})"),
            (Some(a), Some((b, src))) => format!("NUMA {a} (DISAGREES: {src} says {b})"),
            (Some(a), None) => format!("NUMA {a} (no other source)"),
            (None, Some((b, src))) => format!("NUMA not reported by NVML ({src}: {b})"),
            (None, None) => "NUMA unknown".into(),
        });
        parts.push(match (&f.cpu_affinity, &p.cpu_affinity) {
            (Some(a), Some((b, src))) if a == b => format!("CPUs {a} (agrees with {src})"),
            (Some(a), Some((b, src))) => format!("CPUs {a} (DISAGREES: {src} says {b})"),
            (Some(a), None) => format!("CPUs {a} (no other source)"),
            (None, Some((b, src))) => format!("CPUs not reported by NVML ({src}: {b})"),
            (None, None) => "CPUs unknown".into(),
        });
        lines.push(format!("GPU {} ({bus}): {}", f.index, parts.join(", ")));
    }
    for p in placed {
        if p.bus_id.is_some() && !nvml.iter().any(|f| f.bus_id == p.bus_id) {
            let bus = p.bus_id.as_deref().unwrap_or_default();
            lines.push(format!("GPU {} ({bus}): not listed by NVML", p.index));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    #[test]
    fn cross_check_names_agreement_disagreement_and_gaps() {
        let nvml = [
            NvmlGpuFacts {
                index: 0,
                bus_id: Some("0000:18:00.0".into()),
                numa_node: Some(0),
                cpu_affinity: Some(cpus("0-7")),
                ..Default::default()
            },
            NvmlGpuFacts {
                index: 1,
                bus_id: Some("0000:2a:00.0".into()),
                numa_node: None,
                cpu_affinity: Some(cpus("8-15")),
                ..Default::default()
            },
            NvmlGpuFacts { index: 2, bus_id: Some("0000:3b:00.0".into()), ..Default::default() },
        ];
        let placed = [
            PlacedGpu {
                index: 0,
                bus_id: Some("0000:18:00.0".into()),
                numa_node: Some((0, "nvidia-smi-topo-m.txt line 2".into())),
                cpu_affinity: Some((cpus("0-7"), "sysfs".into())),
            },
            PlacedGpu {
                index: 1,
                bus_id: Some("0000:2a:00.0".into()),
                numa_node: Some((1, "sysfs".into())),
                cpu_affinity: Some((cpus("8-14"), "sysfs".into())),
            },
            PlacedGpu { index: 3, bus_id: Some("0000:4c:00.0".into()), ..Default::default() },
        ];
        assert_eq!(
            cross_check(&nvml, &placed),
            [
                "GPU 0 (0000:18:00.0): NUMA 0 (agrees with nvidia-smi-topo-m.txt line 2), CPUs 0-7 (agrees with sysfs)",
                "GPU 1 (0000:2a:00.0): NUMA not reported by NVML (sysfs: 1), CPUs 8-15 (DISAGREES: sysfs says 8-14)",
                "GPU 2 (0000:3b:00.0): NVML lists it, no other source does",
                "GPU 3 (0000:4c:00.0): not listed by NVML",
            ]
        );
    }
}
