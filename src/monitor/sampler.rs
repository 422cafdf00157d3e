//! Where samples come from: the `Sampler` seam, the live sampler (`ToolSampler`) and replay
//! from a snapshot directory (`DirSampler`). A sampler never fails: a source that hangs, is
//! missing or answers garbage yields a *missing* sample with the reason, so the agent never
//! stalls on it.
//!
//! The live sampler has one arm per vendor, each an ordered list of sources, and every sample
//! says which source gave it (`Sample::source`, shown by `/status`, `/metrics` and the view):
//! - NVIDIA: NVML (`host::nvml`, loaded at run time, called off the async threads with the
//!   tool timeout) first; `nvidia-smi`'s CSV queries when NVML cannot be loaded (said once, at
//!   start) or fails a whole tick;
//! - MetaX: `libmxsml` (loaded at run time), then `mx-smi dmon`, then the `mx-smi` status
//!   table, field by field (`super::metax`).
//!
//! NVIDIA's XID events come from NVML's event set on a thread the sampler owns
//! (`host::nvml::XidWatcher`, started with the sampler, stopped when the last clone of it is
//! dropped); every NVML tick copies what it has seen into the health readings (fresh or
//! repeated), so the `xid` check and `/metrics` see an event on the next tick.
//!
//! Health readings (clocks, throttle reasons, ECC, PCIe link, NVLink/MetaXLink state) come
//! from the vendor libraries and cost most of a tick's library calls; they change slowly, so
//! they are read on the first tick and then once every [`HEALTH_PERIOD`] (every 10th tick at
//! 1 s sampling, every 2nd at the default 5 s), and the ticks between repeat the last readings
//! with their age (`GpuHealth::age_ticks`). Memory, utilization, temperature, power and the
//! processes are read every tick.
//!
//! This module does not interpret samples (that is `checks`) and does not schedule them
//! (that is `agent`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::parse::{self, NVIDIA_QUERY_APPS_ARGS, NVIDIA_QUERY_GPU_ARGS};
use super::sample::{now_unix_ms, Sample, SampleSource};
use crate::host::facts::SmiStatus;
use crate::host::health::GpuHealth;
use crate::host::nvml::{NvmlLib, XidWatcher};

/// How often the health readings are taken (see the module header), unless
/// [`HEALTH_PERIOD_ENV`] says otherwise.
pub const HEALTH_PERIOD: Duration = Duration::from_secs(10);
/// The environment variable that sets the health period (`30s`, `0s`: every tick).
pub const HEALTH_PERIOD_ENV: &str = "NODEAGENT_HEALTH_PERIOD";

/// The health period `value` (of [`HEALTH_PERIOD_ENV`]) asks for; [`HEALTH_PERIOD`] when unset.
pub fn health_period(value: Option<&str>) -> Result<Duration, SamplerError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(HEALTH_PERIOD),
        Some(v) => humantime::parse_duration(v).map_err(|e| SamplerError::BadHealthPeriod {
            value: v.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// The last health readings and when they were taken.
#[derive(Debug, Default)]
struct HealthCache {
    at: Option<Instant>,
    health: Vec<GpuHealth>,
    notes: Vec<String>,
}

/// Whether health is due: never read, or read at least `period` ago. Half a second of slack so
/// that ticks a few milliseconds early still land on the period (10 ticks of 1 s, not 11).
fn health_due(last: Option<Instant>, now: Instant, period: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) + Duration::from_millis(500) >= period)
}

/// Produces one sample per call. Implementations must bound their own run time.
pub trait Sampler: Send + Sync + std::fmt::Debug {
    fn sample(&self) -> BoxFuture<'_, Sample>;
    /// For logs and `/status`: `nvml (libnvidia-ml.so.1), else nvidia-smi (/usr/bin/nvidia-smi)`.
    fn describe(&self) -> String;
    /// Each GPU's NUMA node as the vendor states it (NVML, or `topo -m`'s `NUMA Affinity`),
    /// keyed by the vendor's GPU index; empty when unknown. Asked once: the topology does not
    /// change.
    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async { BTreeMap::new() })
    }
}

/// The GPUs with a single NUMA node in a `topo -m` text (MetaX or NVIDIA: one parser).
fn numa_from_topo(text: &str) -> Result<BTreeMap<u32, u32>, String> {
    let topo = crate::host::gputopo::parse(text).map_err(|e| e.to_string())?;
    Ok(topo.gpus.iter().filter_map(|r| Some((r.index, r.numa_affinity?))).collect())
}

/// The vendor tool a `ToolSampler` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    MxSmi(PathBuf),
    NvidiaSmi(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("no GPU tool found: neither {mx_smi} nor {nvidia_smi} is on PATH and {nvml} (use --mx-smi/--nvidia-smi PATH, or --from DIR)")]
    NoTool { mx_smi: String, nvidia_smi: String, nvml: String },
    #[error("{path}: not found or not executable")]
    ToolMissing { path: String },
    #[error("{path}: not found or not executable, and {nvml}")]
    NoNvidiaSource { path: String, nvml: String },
    #[error(
        "{HEALTH_PERIOD_ENV}={value:?}: not a duration ({reason}); e.g. 10s, 1m, 0s for every tick"
    )]
    BadHealthPeriod { value: String, reason: String },
    #[error("snapshot {dir}: has neither mx-smi.txt, nvidia-smi-query.csv nor nvidia-smi.txt")]
    EmptySnapshot { dir: String },
}

/// The live sampler: a vendor library when it loads, else the vendor tool, each bounded by
/// `timeout` on every call.
#[derive(Debug, Clone)]
pub struct ToolSampler {
    /// The vendor tool: the only source, or the fallback of a library (`None` for NVIDIA when
    /// only NVML is there).
    pub tool: Option<Tool>,
    /// NVIDIA's library, the first choice when it loaded.
    pub nvml: Option<Arc<NvmlLib>>,
    /// NVIDIA's XID events, watched on a thread of their own while the sampler lives (the last
    /// clone dropped stops it).
    pub xid: Option<Arc<XidWatcher>>,
    /// Why the library is not used (`NVML not loaded from ...`), shown by `describe`.
    pub library_note: Option<String>,
    pub timeout: Duration,
    /// Set while a library call runs on a blocking thread: a call that outlives its timeout is
    /// not stacked on by the next tick.
    busy: Arc<AtomicBool>,
    /// MetaX: libmxsml, then `mx-smi dmon`, then the table (`super::metax`).
    pub metax: Option<Arc<super::metax::MetaxSource>>,
    /// How often the health readings are taken ([`HEALTH_PERIOD`]; zero: every tick).
    pub health_period: Duration,
    health: Arc<std::sync::Mutex<HealthCache>>,
}

/// Finds `name` as given (contains a `/`) or on `PATH`.
pub fn find_tool(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.components().count() > 1 {
        return executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| executable(p))
}

/// What one tick of a source read: the status, health and degraded-field notes.
type Reading = (SmiStatus, Vec<GpuHealth>, Vec<String>);

impl ToolSampler {
    /// A sampler over one vendor tool only.
    pub fn for_tool(tool: Tool, timeout: Duration) -> Self {
        let metax = match &tool {
            Tool::MxSmi(p) => Some(Arc::new(super::metax::MetaxSource::new(p))),
            Tool::NvidiaSmi(_) => None,
        };
        Self {
            tool: Some(tool),
            nvml: None,
            xid: None,
            library_note: None,
            timeout,
            busy: Arc::default(),
            metax,
            health_period: HEALTH_PERIOD,
            health: Arc::default(),
        }
    }

    /// Picks the sources: `vendor` forces one; otherwise `mx-smi` if found, else NVIDIA (NVML
    /// if it loads, `nvidia-smi` if found). NVML's library comes from `NODEAGENT_NVML_LIB`.
    pub fn detect(
        vendor: Option<crate::host::facts::Vendor>,
        mx_smi: &Path,
        nvidia_smi: &Path,
        timeout: Duration,
    ) -> Result<Self, SamplerError> {
        let period = health_period(std::env::var(HEALTH_PERIOD_ENV).ok().as_deref())?;
        Self::detect_sources(vendor, mx_smi, nvidia_smi, timeout).map(|mut s| {
            s.health_period = period;
            s
        })
    }

    fn detect_sources(
        vendor: Option<crate::host::facts::Vendor>,
        mx_smi: &Path,
        nvidia_smi: &Path,
        timeout: Duration,
    ) -> Result<Self, SamplerError> {
        use crate::host::facts::Vendor;
        let missing = |p: &Path| SamplerError::ToolMissing { path: p.display().to_string() };
        let nvidia = || -> Result<Self, String> {
            let smi = find_tool(nvidia_smi);
            match NvmlLib::open_from_env() {
                Ok(lib) => {
                    let lib = Arc::new(lib);
                    Ok(Self {
                        tool: smi.map(Tool::NvidiaSmi),
                        xid: Some(Arc::new(lib.watch_xids())),
                        nvml: Some(lib),
                        library_note: None,
                        timeout,
                        busy: Arc::default(),
                        metax: None,
                        health_period: HEALTH_PERIOD,
                        health: Arc::default(),
                    })
                }
                Err(e) => {
                    let Some(smi) = smi else { return Err(e.to_string()) };
                    tracing::warn!(reason = %e, "NVML not used; reading the GPUs with {}", smi.display());
                    let mut s = Self::for_tool(Tool::NvidiaSmi(smi), timeout);
                    s.library_note = Some(e.to_string());
                    Ok(s)
                }
            }
        };
        match vendor {
            Some(Vendor::Metax) => Ok(Self::for_tool(
                Tool::MxSmi(find_tool(mx_smi).ok_or_else(|| missing(mx_smi))?),
                timeout,
            )),
            Some(Vendor::Nvidia) => nvidia().map_err(|nvml| SamplerError::NoNvidiaSource {
                path: nvidia_smi.display().to_string(),
                nvml,
            }),
            _ => match find_tool(mx_smi) {
                Some(p) => Ok(Self::for_tool(Tool::MxSmi(p), timeout)),
                None => nvidia().map_err(|nvml| SamplerError::NoTool {
                    mx_smi: mx_smi.display().to_string(),
                    nvidia_smi: nvidia_smi.display().to_string(),
                    nvml,
                }),
            },
        }
    }

    async fn run_tool_arm(&self, tool: &Tool) -> Result<SmiStatus, String> {
        match tool {
            Tool::MxSmi(path) => {
                let out = run_tool(path, &[], self.timeout).await?;
                parse::parse_mxsmi(&out).map_err(|e| e.to_string())
            }
            Tool::NvidiaSmi(path) => {
                // Both queries run at once: one tick costs one tool latency, not two.
                let (gpus, apps) = tokio::join!(
                    run_tool(path, &NVIDIA_QUERY_GPU_ARGS, self.timeout),
                    run_tool(path, &NVIDIA_QUERY_APPS_ARGS, self.timeout)
                );
                parse::parse_nvidia(&gpus?, &apps?).map_err(|e| e.to_string())
            }
        }
    }

    /// Runs `f` on a blocking thread, bounded by the timeout; one call at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(format!("{what}: the previous call has not returned yet"));
        }
        let busy = self.busy.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = f();
            busy.store(false, Ordering::Release);
            r
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => {
                Err(format!("{what} timed out after {}", humantime::format_duration(self.timeout)))
            }
        }
    }

    fn health_is_due(&self) -> bool {
        let cache = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health_due(cache.at, Instant::now(), self.health_period)
    }

    /// Keeps fresh health readings (`Some`), or repeats the last ones a tick older (`None`);
    /// returns the readings and their notes for this tick's sample.
    fn health_for_tick(
        &self,
        fresh: Option<(Vec<GpuHealth>, Vec<String>)>,
    ) -> (Vec<GpuHealth>, Vec<String>) {
        let mut cache = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match fresh {
            Some((health, notes)) => {
                cache.at = Some(Instant::now());
                cache.health = health;
                cache.notes = notes;
            }
            None => {
                for h in &mut cache.health {
                    h.age_ticks = h.age_ticks.saturating_add(1);
                }
            }
        }
        (cache.health.clone(), cache.notes.clone())
    }

    async fn read_nvml(&self, lib: &Arc<NvmlLib>) -> Result<Reading, String> {
        let lib = lib.clone();
        let due = self.health_is_due();
        let r = self.blocking("NVML", move || lib.read_with(Path::new("/proc"), due)).await?;
        let r = r.map_err(|e| e.to_string())?;
        let status = SmiStatus {
            tool_version: Some("NVML".into()),
            driver_version: r.driver_version,
            gpus: r.gpus,
            processes: r.processes,
        };
        let (mut health, notes) =
            self.health_for_tick(due.then_some((r.health, r.health_degraded)));
        if let Some(x) = &self.xid {
            x.log().apply(&mut health);
        }
        let mut degraded = r.degraded;
        degraded.extend(notes);
        Ok((status, health, degraded))
    }

    /// One tick through the arm's sources in order: the source used, and what it read.
    async fn read(&self) -> (SampleSource, Result<Reading, String>) {
        let tool_source = |t: &Tool| match t {
            Tool::MxSmi(_) => SampleSource::MxSmi,
            Tool::NvidiaSmi(_) => SampleSource::NvidiaSmi,
        };
        if let (Some(metax), Some(Tool::MxSmi(_))) = (&self.metax, &self.tool) {
            let due = self.health_is_due();
            let m = metax.read_all(self.timeout, run_tool_owned, due).await;
            if m.health.is_none() && due {
                // No library (or it failed): no health this tick; nothing to repeat either.
                return (m.source, m.status.map(|s| (s, vec![], vec![])));
            }
            let (health, notes) = self.health_for_tick(m.health.map(|h| (h, m.health_notes)));
            return (m.source, m.status.map(|s| (s, health, notes)));
        }
        if let Some(lib) = &self.nvml {
            match (self.read_nvml(lib).await, &self.tool) {
                (Ok(r), _) => return (SampleSource::Nvml, Ok(r)),
                (Err(why), Some(tool)) => {
                    tracing::warn!(reason = %why, "NVML failed this tick; reading nvidia-smi");
                    let r = self
                        .run_tool_arm(tool)
                        .await
                        .map(|s| (s, Vec::new(), vec![format!("NVML failed this tick: {why}")]));
                    return (tool_source(tool), r);
                }
                (Err(why), None) => return (SampleSource::Nvml, Err(why)),
            }
        }
        match &self.tool {
            Some(tool) => {
                (tool_source(tool), self.run_tool_arm(tool).await.map(|s| (s, vec![], vec![])))
            }
            None => (SampleSource::NvidiaSmi, Err("no GPU source".into())),
        }
    }
}

impl Sampler for ToolSampler {
    fn sample(&self) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let at_unix_ms = now_unix_ms();
            let started = Instant::now();
            let (source, result) = self.read().await;
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            let mut sample = Sample {
                at_unix_ms,
                source,
                duration_ms,
                status: None,
                missing: None,
                health: vec![],
                degraded: vec![],
            };
            match result {
                Ok((status, health, degraded)) => {
                    sample.status = Some(status);
                    sample.health = health;
                    sample.degraded = degraded;
                }
                Err(why) => {
                    tracing::warn!(source = source.as_str(), reason = %why, "GPU sample missing");
                    sample.missing = Some(why);
                }
            }
            sample
        })
    }

    fn describe(&self) -> String {
        if let Some(metax) = &self.metax {
            return metax.describe();
        }
        let tool = self.tool.as_ref().map(|t| match t {
            Tool::MxSmi(p) => format!("mx-smi ({})", p.display()),
            Tool::NvidiaSmi(p) => format!("nvidia-smi ({})", p.display()),
        });
        match (&self.nvml, tool) {
            (Some(lib), Some(tool)) => format!("nvml ({}), else {tool}", lib.lib()),
            (Some(lib), None) => format!("nvml ({})", lib.lib()),
            (None, Some(tool)) => match &self.library_note {
                Some(note) => format!("{tool}; {note}"),
                None => tool,
            },
            (None, None) => "none".into(),
        }
    }

    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async move {
            if let Some(lib) = &self.nvml {
                let lib = lib.clone();
                if let Ok(Ok((facts, _))) = self.blocking("NVML", move || lib.facts()).await {
                    let map: BTreeMap<u32, u32> =
                        facts.iter().filter_map(|f| Some((f.index, f.numa_node?))).collect();
                    if !map.is_empty() {
                        return map;
                    }
                }
            }
            let Some(Tool::MxSmi(path) | Tool::NvidiaSmi(path)) = &self.tool else {
                return BTreeMap::new();
            };
            match run_tool(path, &["topo", "-m"], self.timeout)
                .await
                .and_then(|t| numa_from_topo(&t))
            {
                Ok(map) => map,
                Err(why) => {
                    tracing::debug!(tool = %self.describe(), reason = %why, "no NUMA affinity from topo -m; sysfs only");
                    BTreeMap::new()
                }
            }
        })
    }
}

/// [`run_tool`] with owned arguments (what `super::metax` takes).
pub async fn run_tool_owned(
    path: PathBuf,
    args: Vec<String>,
    timeout: Duration,
) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool(&path, &args, timeout).await
}

/// Runs `path args` in its own process group and returns stdout. On timeout the whole group is
/// killed, so a hung tool (or a script's hung child) cannot pile up across ticks.
pub async fn run_tool(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("{}: cannot run: {e}", path.display()))?;
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            String::from_utf8(out.stdout).map_err(|_| format!("{name}: output is not UTF-8"))
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("").trim();
            Err(format!(
                "{name} {}: {}{}",
                args.join(" "),
                out.status,
                if first.is_empty() { String::new() } else { format!(": {first}") }
            ))
        }
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                // The child was dropped (kill_on_drop kills it); its group may hold helpers.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("{name} timed out after {}", humantime::format_duration(timeout)))
        }
    }
}

/// Replays a snapshot directory (`probe --save` names): `mx-smi.txt`; or `nvidia-smi-query.csv`
/// plus (optionally) `nvidia-smi-apps.csv`; or the `nvidia-smi.txt` status table.
#[derive(Debug, Clone)]
pub struct DirSampler {
    pub dir: PathBuf,
}

impl DirSampler {
    pub fn new(dir: &Path) -> Result<Self, SamplerError> {
        let s = Self { dir: dir.to_path_buf() };
        if !s.has("mx-smi.txt") && !s.has("nvidia-smi-query.csv") && !s.has("nvidia-smi.txt") {
            return Err(SamplerError::EmptySnapshot { dir: dir.display().to_string() });
        }
        Ok(s)
    }

    /// Whether the snapshot names this file, whatever it is: a file that is no regular file
    /// (a fifo, a device) is then refused by name when read, not taken for absent.
    fn has(&self, name: &str) -> bool {
        self.dir.join(name).symlink_metadata().is_ok()
    }

    /// A snapshot file's text: a regular file of at most `MAX_SMALL_FILE`, UTF-8; the error
    /// names the file.
    fn text(&self, name: &str) -> Result<String, String> {
        let p = self.dir.join(name);
        crate::host::text::read_input_text(&p, crate::host::text::MAX_SMALL_FILE)
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    fn read(&self) -> Result<crate::host::facts::SmiStatus, String> {
        if self.has("mx-smi.txt") {
            let text = self.text("mx-smi.txt")?;
            return parse::parse_mxsmi(&text)
                .map_err(|e| format!("{}: {e}", self.dir.join("mx-smi.txt").display()));
        }
        if !self.has("nvidia-smi-query.csv") {
            // A `probe --save` snapshot of an NVIDIA host may hold only the status table.
            let text = self.text("nvidia-smi.txt")?;
            return crate::host::nvsmi::parse_table(&text)
                .map_err(|e| format!("{}: {e}", self.dir.join("nvidia-smi.txt").display()));
        }
        let q = self.text("nvidia-smi-query.csv")?;
        let a = if self.has("nvidia-smi-apps.csv") {
            self.text("nvidia-smi-apps.csv")?
        } else {
            String::new()
        };
        parse::parse_nvidia(&q, &a).map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}

impl Sampler for DirSampler {
    fn sample(&self) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let started = Instant::now();
            let at_unix_ms = now_unix_ms();
            let r = self.read();
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(s) => Sample {
                    at_unix_ms,
                    source: SampleSource::Snapshot,
                    duration_ms,
                    status: Some(s),
                    missing: None,
                    health: vec![],
                    degraded: vec![],
                },
                Err(e) => Sample {
                    at_unix_ms,
                    source: SampleSource::Snapshot,
                    duration_ms,
                    status: None,
                    missing: Some(e),
                    health: vec![],
                    degraded: vec![],
                },
            }
        })
    }

    fn describe(&self) -> String {
        format!("snapshot {}", self.dir.display())
    }

    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async move {
            ["mx-smi-topo-m.txt", "nvidia-smi-topo-m.txt"]
                .iter()
                .find(|n| self.has(n))
                .and_then(|n| self.text(n).ok())
                .and_then(|t| numa_from_topo(&t).ok())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_due_first_then_once_a_period_with_slack() {
        let t0 = Instant::now();
        let p = Duration::from_secs(10);
        assert!(health_due(None, t0, p));
        assert!(!health_due(Some(t0), t0 + Duration::from_secs(9), p));
        // The tenth 1 s tick, arriving a little early, is due.
        assert!(health_due(Some(t0), t0 + Duration::from_millis(9_980), p));
        assert!(health_due(Some(t0), t0 + Duration::from_secs(11), p));
        assert!(health_due(Some(t0), t0, Duration::ZERO), "zero: every tick");
    }

    #[test]
    fn health_period_from_the_environment_value() {
        assert_eq!(health_period(None).unwrap(), HEALTH_PERIOD);
        assert_eq!(health_period(Some(" ")).unwrap(), HEALTH_PERIOD);
        assert_eq!(health_period(Some("30s")).unwrap(), Duration::from_secs(30));
        assert_eq!(health_period(Some("0s")).unwrap(), Duration::ZERO);
        let e = health_period(Some("often")).unwrap_err().to_string();
        assert!(e.starts_with("NODEAGENT_HEALTH_PERIOD=\"often\": not a duration"), "{e}");
    }

    #[test]
    fn repeated_health_ages_by_one_tick_each_and_fresh_resets_it() {
        let s = ToolSampler::for_tool(Tool::NvidiaSmi("/bin/true".into()), Duration::from_secs(1));
        let h = |i| GpuHealth { index: i, sm_clock_mhz: Some(1000 + i), ..Default::default() };
        let (got, notes) = s.health_for_tick(Some((vec![h(0), h(1)], vec!["gpu 1 x: y".into()])));
        assert_eq!(got.iter().map(|h| h.age_ticks).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(notes, ["gpu 1 x: y"]);
        let _ = s.health_for_tick(None);
        let (got, notes) = s.health_for_tick(None);
        assert_eq!(got.iter().map(|h| h.age_ticks).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(got[1].sm_clock_mhz, Some(1001));
        assert_eq!(notes, ["gpu 1 x: y"], "the notes of the readings repeated");
        let (got, _) = s.health_for_tick(Some((vec![h(0)], vec![])));
        assert_eq!(got.iter().map(|h| h.age_ticks).collect::<Vec<_>>(), [0]);
        assert!(!s.health_is_due(), "just read");
    }
}
