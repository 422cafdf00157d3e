//! The sampling loop: every interval, take a sample (bounded by the sampler's timeout), attribute
//! its processes to the engine's process tree, run the checks, log alerts, and publish the
//! result in the shared `MonitorStatus` (read by `/status`, `/metrics` and the terminal view).
//! The hung-engine verdict goes out on a `watch` channel for the supervisor; every sample goes
//! out on a `broadcast` channel for `verify`.
//!
//! The loop never waits on anything unbounded: the tool has a timeout, the engine's metrics
//! scrape has a timeout, and a late tick is skipped rather than queued.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::attribution::{attribute, name_instances, process_tree, read_instances, EnginePids};
use super::checks::{CheckConfig, CheckEvent, CheckInput, Checks};
use super::metrics::in_flight_from_vllm;
use super::sample::Sample;
use super::sampler::Sampler;
use super::status::{EngineReport, GpuView, MonitorStatus};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub interval: Duration,
    pub checks: CheckConfig,
    /// Root of sysfs, for each GPU's NUMA node (`/sys`).
    pub sysfs_root: PathBuf,
    /// Root of procfs, for the engine's process tree (`/proc`).
    pub proc_root: PathBuf,
    /// Timeout of the engine metrics scrape.
    pub scrape_timeout: Duration,
    /// The agents' base state dir: every instance's pid file under it names the GPU
    /// processes of its engine (`attribution::read_instances`); `None`: not read.
    pub instances_dir: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            checks: CheckConfig::default(),
            sysfs_root: "/sys".into(),
            proc_root: "/proc".into(),
            scrape_timeout: Duration::from_secs(2),
            instances_dir: Some("/run/nodeagent".into()),
        }
    }
}

/// What `/status` and `/metrics` read: the status and the engine's last metrics text.
#[derive(Debug, Default)]
pub struct Shared {
    pub status: RwLock<MonitorStatus>,
    pub engine_metrics: RwLock<Option<String>>,
}

impl Shared {
    pub fn snapshot(&self) -> MonitorStatus {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One monitor: the sampler, the checks' state and what it remembers between ticks.
pub struct Monitor {
    sampler: Arc<dyn Sampler>,
    pub config: AgentConfig,
    checks: Checks,
    /// Every pid ever in the engine's tree: after a stop they identify orphans.
    ever_pids: BTreeSet<u32>,
    numa: HashMap<String, Option<u32>>,
    /// GPU index -> NUMA node from the vendor's `topo -m`, read at the first tick.
    topo_numa: Option<BTreeMap<u32, u32>>,
    status: MonitorStatus,
    engine_metrics: Option<String>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("sampler", &self.sampler.describe()).finish()
    }
}

impl Monitor {
    pub fn new(sampler: Arc<dyn Sampler>, config: AgentConfig) -> Self {
        let status = MonitorStatus {
            sampler: sampler.describe(),
            interval_ms: config.interval.as_millis() as u64,
            ..Default::default()
        };
        Self {
            checks: Checks::new(config.checks.clone()),
            sampler,
            config,
            ever_pids: BTreeSet::new(),
            numa: HashMap::new(),
            topo_numa: None,
            status,
            engine_metrics: None,
        }
    }

    pub fn status(&self) -> &MonitorStatus {
        &self.status
    }

    pub fn engine_metrics(&self) -> Option<&str> {
        self.engine_metrics.as_deref()
    }

    /// A GPU's NUMA node: the vendor's `topo -m` first (what `plan` reads too), else sysfs.
    fn numa_node(&mut self, index: u32, bus_id: Option<&str>) -> Option<u32> {
        if let Some(&n) = self.topo_numa.as_ref().and_then(|m| m.get(&index)) {
            return Some(n);
        }
        self.sysfs_numa_node(bus_id?)
    }

    fn sysfs_numa_node(&mut self, bus_id: &str) -> Option<u32> {
        let root = &self.config.sysfs_root;
        *self.numa.entry(bus_id.to_string()).or_insert_with(|| {
            let p = root.join("bus/pci/devices").join(bus_id).join("numa_node");
            // -1 means the firmware published no proximity: unknown, not node 0.
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok())
        })
    }

    /// One tick: sample, attribute, check. Returns the sample and the alert changes.
    pub async fn tick(&mut self, engine: &EngineReport) -> (Sample, Vec<CheckEvent>) {
        if self.topo_numa.is_none() {
            self.topo_numa = Some(self.sampler.numa_by_index().await);
        }
        let (sample, scraped) = tokio::join!(self.sampler.sample(), async {
            match &engine.metrics_url {
                Some(url) => Some(http_get(url, self.config.scrape_timeout).await),
                None => None,
            }
        });
        let in_flight = match scraped {
            Some(Ok(text)) => {
                let n = in_flight_from_vllm(&text);
                self.engine_metrics = Some(text);
                engine.in_flight.or(n)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "engine metrics scrape failed");
                self.engine_metrics = None;
                engine.in_flight
            }
            None => engine.in_flight,
        };

        let current: BTreeSet<u32> = if engine.running && !engine.pids.is_empty() {
            process_tree(&self.config.proc_root, &engine.pids)
        } else {
            BTreeSet::new()
        };
        self.ever_pids.extend(current.iter().copied());
        let pids = EnginePids {
            supervised: engine.supervised,
            running: engine.running,
            current,
            ever: self.ever_pids.clone(),
            gpus: engine.gpus.as_ref().map(|g| g.iter().copied().collect()),
        };
        let mut attribution = attribute(sample.processes(), &pids);
        if let Some(base) = &self.config.instances_dir {
            name_instances(&mut attribution, &read_instances(base, &self.config.proc_root));
        }
        let events = self.checks.update(CheckInput {
            sample: &sample,
            attribution: &attribution,
            engine_supervised: engine.supervised,
            engine_running: engine.running,
            in_flight,
        });
        for ev in &events {
            match ev {
                CheckEvent::Raised(a) => {
                    tracing::warn!(check = a.check.as_str(), gpu = ?a.gpu, "alert: {}", a.message)
                }
                CheckEvent::Cleared(a) => {
                    tracing::info!(check = a.check.as_str(), gpu = ?a.gpu, "alert cleared: {}", a.message)
                }
            }
        }

        self.status.samples_total += 1;
        self.status.last_tick_unix_ms = Some(sample.at_unix_ms);
        self.status.sample_duration_ms = Some(sample.duration_ms);
        self.status.missing = sample.missing.clone();
        self.status.source = Some(sample.source);
        if let Some(s) = &sample.status {
            let gpus: Vec<_> = s.gpus.clone();
            self.status.gpus = gpus
                .into_iter()
                .map(|g| {
                    let numa_node = self.numa_node(g.index, g.bus_id.as_deref());
                    GpuView { status: g, numa_node }
                })
                .collect();
            self.status.processes = attribution.processes;
            self.status.engine_gpus = attribution.engine_gpus.into_iter().collect();
            self.status.health = sample.health.clone();
            self.status.degraded = sample.degraded.clone();
            self.status.last_good_unix_ms = Some(sample.at_unix_ms);
        } else {
            // Keep the last good GPU view (stale, with `missing` saying so): losing it would
            // blank dashboards on one slow tick.
            self.status.samples_missing_total += 1;
        }
        self.status.alerts = self.checks.active();
        self.status.engine_hung = self.checks.engine_hung();
        self.status.engine = engine.clone();
        self.status.in_flight = in_flight;
        (sample, events)
    }
}

/// Reads the engine's report; called right before each tick, so that no tick describes an
/// engine older than the tick (a death between two ticks shows in the next one).
pub type EngineSource = Box<dyn FnMut() -> EngineReport + Send>;

/// What the loop reads and where it tells what it saw.
pub struct AgentChannels {
    pub engine: EngineSource,
    pub hung: Option<watch::Sender<bool>>,
    pub samples: Option<broadcast::Sender<Sample>>,
}

impl std::fmt::Debug for AgentChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentChannels")
            .field("hung", &self.hung.is_some())
            .field("samples", &self.samples.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs the loop until `cancel` fires. Ticks that come due while one is still running are
/// skipped (a slow tool must not cause a burst of runs after it recovers).
pub async fn run(
    mut monitor: Monitor,
    shared: Arc<Shared>,
    mut ch: AgentChannels,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(monitor.config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let engine = (ch.engine)();
        let (sample, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = monitor.tick(&engine) => r,
        };
        if let Ok(mut s) = shared.status.write() {
            *s = monitor.status().clone();
        }
        if let Ok(mut m) = shared.engine_metrics.write() {
            *m = monitor.engine_metrics().map(str::to_string);
        }
        if let Some(tx) = &ch.hung {
            tx.send_if_modified(|v| std::mem::replace(v, monitor.status().engine_hung) != *v);
        }
        if let Some(tx) = &ch.samples {
            // No receivers is fine: verify subscribes only while a sweep runs.
            let _ = tx.send(sample);
        }
    }
}

/// Checks a URL given for `http_get` before anything starts: `http://HOST[:PORT]/...` (the
/// client speaks plain HTTP only); the error names `flag` and the URL.
pub fn check_http_url(flag: &str, url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{flag} {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{flag} {url:?}: not an http:// URL (e.g. http://127.0.0.1:8000/metrics)"
        ));
    }
    Ok(())
}

/// GET `url` (plain http on loopback) with a timeout; the body as text.
pub async fn http_get(url: &str, timeout: Duration) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: bad URL: {e}"))?;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let fut = async {
        let resp = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let body = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: body is not UTF-8"))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{url}: timed out after {}", humantime::format_duration(timeout)))?
}
