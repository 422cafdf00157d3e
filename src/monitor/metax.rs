//! The MetaX arm of the sampler: one tick's reading from the best source there is, each field
//! degrading on its own.
//!
//! Order: `libmxsml` (`crate::host::mxsml`, loaded once when the sampler is made) →
//! `mx-smi dmon ... --format csv -c 1` (`crate::host::mxdmon`) → the `mx-smi` status table
//! (`crate::host::mxsmi`, tolerant). The library answers alone when every reading and the
//! process list came back; a GPU field it could not give (a failing call, a symbol this
//! library version lacks) is filled from `dmon`, then from the table, matched by bus id (else
//! index). Without the library, `dmon` and the table run at once (one tool latency a tick):
//! `dmon` for the readings, the table for the gaps and for the processes, which `dmon` does
//! not list. A `dmon` that fails other than by timing out (an `mx-smi` without `dmon`) is not
//! asked again. The sample's source is the one that gave the GPU list.
//!
//! Health (ECC, clocks, throttle mask, PCIe link, MetaXLink ports) comes from the library
//! alone, when the sampler asks for it ([`MetaxSource::read_all`]): each GPU's
//! `host::mxsml::GpuHealth` in the vendor-neutral record (`GpuHealth::common`), every failed
//! call one note. The tools give no health; without the library there is none.
//!
//! This module does not schedule ticks (`agent`) or interpret readings (`checks`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::host::facts::{GpuStatus, SmiStatus};
use crate::host::health::GpuHealth;
use crate::host::mxsml::Mxsml;
use crate::host::{mxdmon, mxsmi};

use super::sample::SampleSource;

/// One tick of the MetaX arm.
#[derive(Debug)]
pub struct MetaxReading {
    /// The status, or why there is none.
    pub status: Result<SmiStatus, String>,
    /// The source that gave the GPU list.
    pub source: SampleSource,
    /// Each GPU's health when asked for and the library answered; `None` otherwise.
    pub health: Option<Vec<GpuHealth>>,
    /// One note per health call that failed (`libmxsml: mxSmlGetClocks on GPU 1: ...`).
    pub health_notes: Vec<String>,
}

/// MetaX sources for one sampler: the library if it loaded, and `mx-smi`.
pub struct MetaxSource {
    pub lib: Option<Arc<Mxsml>>,
    pub mx_smi: PathBuf,
    dmon_unsupported: AtomicBool,
}

impl std::fmt::Debug for MetaxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl MetaxSource {
    /// Loads `libmxsml` from its known places (`NODEAGENT_MXSML_LIB` first); when it does not
    /// load, says why in the log and goes on with `mx-smi`.
    pub fn new(mx_smi: &Path) -> Self {
        let lib = match Mxsml::open_default() {
            Ok(lib) => {
                tracing::info!(path = %lib.path().display(), "reading MetaX GPUs through libmxsml");
                Some(lib)
            }
            Err(e) => {
                tracing::info!(reason = %e, "libmxsml not used; reading MetaX GPUs with mx-smi");
                None
            }
        };
        Self::with_library(lib, mx_smi)
    }

    /// The sources given: a library already opened (or none) and `mx-smi`.
    pub fn with_library(lib: Option<Mxsml>, mx_smi: &Path) -> Self {
        Self {
            lib: lib.map(Arc::new),
            mx_smi: mx_smi.to_path_buf(),
            dmon_unsupported: AtomicBool::new(false),
        }
    }

    /// For logs and `/status`.
    pub fn describe(&self) -> String {
        match &self.lib {
            Some(lib) => format!(
                "libmxsml ({}), mx-smi dmon and table ({}) for what it lacks",
                lib.path().display(),
                self.mx_smi.display()
            ),
            None => format!("mx-smi dmon and table ({})", self.mx_smi.display()),
        }
    }

    /// One tick: the status and the source that gave the GPU list, or why there is none.
    /// `run_tool(program, args, timeout)` runs `mx-smi` (the sampler passes its own runner, which
    /// kills a hung tool's process group).
    pub async fn read<F, Fut>(
        &self,
        timeout: Duration,
        run_tool: F,
    ) -> (Result<SmiStatus, String>, SampleSource)
    where
        F: Fn(PathBuf, Vec<String>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        let r = self.read_all(timeout, run_tool, false).await;
        (r.status, r.source)
    }

    /// One tick, with each GPU's health from the library when `health` (read in the same
    /// blocking call as the status, after it).
    pub async fn read_all<F, Fut>(
        &self,
        timeout: Duration,
        run_tool: F,
        health: bool,
    ) -> MetaxReading
    where
        F: Fn(PathBuf, Vec<String>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut got: Option<(SmiStatus, SampleSource)> = None;
        let mut processes_known = false;
        let mut errors = Vec::new();
        let mut healths: Option<Vec<GpuHealth>> = None;
        let mut health_notes = Vec::new();
        if let Some(lib) = self.lib.clone() {
            // FFI calls block: off the runtime's threads, bounded like a tool run.
            let call = tokio::task::spawn_blocking(move || {
                let status = lib.status()?;
                let h = health.then(|| {
                    (0..status.0.gpus.len() as u32).map(|i| lib.health(i)).collect::<Vec<_>>()
                });
                Ok::<_, crate::host::mxsml::MxsmlError>((status, h))
            });
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(Ok(((status, warnings), h)))) => {
                    if let Some(h) = h {
                        healths = Some(
                            h.iter()
                                .zip(&status.gpus)
                                .map(|(h, g)| GpuHealth { index: g.index, ..h.common() })
                                .collect(),
                        );
                        health_notes = h.into_iter().flat_map(|h| h.warnings).collect();
                    }
                    processes_known = !warnings.iter().any(|w| w.contains("Process"));
                    for w in &warnings {
                        tracing::debug!(warning = %w, "libmxsml reading missing");
                    }
                    got = Some((status, SampleSource::Mxsml));
                }
                Ok(Ok(Err(e))) => errors.push(format!("libmxsml: {e}")),
                Ok(Err(e)) => errors.push(format!("libmxsml: {e}")),
                Err(_) => errors.push(format!(
                    "libmxsml timed out after {}",
                    humantime::format_duration(timeout)
                )),
            }
        }
        if needs_more(got.as_ref().map(|g| &g.0), processes_known) {
            let use_dmon = !self.dmon_unsupported.load(Ordering::Relaxed)
                && got.as_ref().is_none_or(|(s, _)| s.gpus.iter().any(incomplete));
            let dmon = async {
                if !use_dmon {
                    return None;
                }
                Some(
                    run_tool(self.mx_smi.clone(), args(&mxdmon::DMON_ARGS), timeout)
                        .await
                        .and_then(|t| {
                            mxdmon::parse(&t)
                                .map_err(|e| format!("{} dmon: {e}", self.mx_smi.display()))
                        }),
                )
            };
            let table = async {
                run_tool(self.mx_smi.clone(), Vec::new(), timeout).await.and_then(|t| {
                    mxsmi::parse_with_warnings(&t)
                        .map_err(|e| format!("{}: {e}", self.mx_smi.display()))
                })
            };
            let (dmon, table) = tokio::join!(dmon, table);
            match dmon {
                Some(Ok(s)) => merge(&mut got, s, SampleSource::MxSmiDmon, false),
                Some(Err(e)) => {
                    if !e.contains("timed out") {
                        self.dmon_unsupported.store(true, Ordering::Relaxed);
                        tracing::info!(reason = %e, "mx-smi dmon not usable; not asked again");
                    }
                    errors.push(e);
                }
                None => {}
            }
            match table {
                Ok((s, warnings)) => {
                    let has_processes = !warnings.iter().any(|w| w.contains("no process table"));
                    merge(&mut got, s, SampleSource::MxSmi, !processes_known && has_processes);
                }
                Err(e) => errors.push(e),
            }
        }
        let (status, source) = match got {
            Some((status, source)) => (Ok(status), source),
            None => (Err(errors.join("; ")), SampleSource::MxSmi),
        };
        MetaxReading { status, source, health: healths, health_notes }
    }
}

fn incomplete(g: &GpuStatus) -> bool {
    g.bus_id.is_none()
        || g.temperature_c.is_none()
        || g.power_w.is_none()
        || g.utilization_pct.is_none()
        || g.memory_used_mib.is_none()
        || g.memory_total_mib.is_none()
}

fn needs_more(status: Option<&SmiStatus>, processes_known: bool) -> bool {
    status.is_none_or(|s| !processes_known || s.gpus.iter().any(incomplete))
}

/// Fills what `got` lacks from `more`: the whole status when there is none yet, else each GPU's
/// absent fields (GPUs matched by bus id, else by index), and the processes when `processes`.
fn merge(
    got: &mut Option<(SmiStatus, SampleSource)>,
    more: SmiStatus,
    source: SampleSource,
    processes: bool,
) {
    let Some((status, _)) = got else {
        *got = Some((more, source));
        return;
    };
    for g in &mut status.gpus {
        let other = more
            .gpus
            .iter()
            .find(|o| o.bus_id.is_some() && o.bus_id == g.bus_id)
            .or_else(|| more.gpus.iter().find(|o| o.index == g.index));
        let Some(o) = other else { continue };
        g.bus_id = g.bus_id.take().or_else(|| o.bus_id.clone());
        g.name = g.name.take().or_else(|| o.name.clone());
        g.temperature_c = g.temperature_c.or(o.temperature_c);
        g.power_w = g.power_w.or(o.power_w);
        g.utilization_pct = g.utilization_pct.or(o.utilization_pct);
        g.memory_used_mib = g.memory_used_mib.or(o.memory_used_mib);
        g.memory_total_mib = g.memory_total_mib.or(o.memory_total_mib);
    }
    if processes {
        status.processes = more.processes;
    }
    status.driver_version = status.driver_version.take().or(more.driver_version);
    status.tool_version = status.tool_version.take().or(more.tool_version);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, bus: &str, temp: Option<f64>) -> GpuStatus {
        GpuStatus {
            index,
            bus_id: Some(bus.into()),
            temperature_c: temp,
            power_w: Some(50.0),
            ..GpuStatus::default()
        }
    }

    #[test]
    fn merge_fills_gaps_by_bus_id_and_keeps_the_first_source() {
        let mut got = Some((
            SmiStatus { gpus: vec![gpu(0, "0000:0e:00.0", None)], ..SmiStatus::default() },
            SampleSource::Mxsml,
        ));
        let more = SmiStatus {
            gpus: vec![gpu(5, "0000:0f:00.0", Some(1.0)), gpu(7, "0000:0e:00.0", Some(40.0))],
            ..SmiStatus::default()
        };
        merge(&mut got, more, SampleSource::MxSmiDmon, false);
        let (s, src) = got.unwrap();
        assert_eq!(src, SampleSource::Mxsml);
        assert_eq!(s.gpus[0].temperature_c, Some(40.0));
        assert_eq!(s.gpus[0].index, 0);
        assert!(needs_more(Some(&s), true), "utilization and memory still missing");
        assert!(needs_more(None, true));
    }
}
