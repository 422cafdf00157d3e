//! GPU load per sweep level, for `verify`: the samples taken while one load level ran, reduced
//! to mean and max utilization and memory per GPU. Pure; the caller collects the samples
//! (from the agent's broadcast channel or its own sampler) and marks the level boundaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sample::Sample;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuLevelStats {
    pub gpu: u32,
    pub samples: u32,
    pub utilization_mean_pct: Option<f64>,
    pub utilization_max_pct: Option<f64>,
    pub memory_used_mean_mib: Option<f64>,
    pub memory_used_max_mib: Option<u64>,
    pub memory_total_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelGpuSummary {
    pub samples: u32,
    /// Ticks that produced no sample during the level.
    pub samples_missing: u32,
    pub gpus: Vec<GpuLevelStats>,
}

/// Reduces the samples of one level.
pub fn summarize(samples: &[Sample]) -> LevelGpuSummary {
    #[derive(Default)]
    struct Acc {
        n: u32,
        util: Vec<f64>,
        mem: Vec<u64>,
        total: Option<u64>,
    }
    let mut acc: BTreeMap<u32, Acc> = BTreeMap::new();
    let mut out = LevelGpuSummary::default();
    for s in samples {
        if s.is_missing() {
            out.samples_missing += 1;
            continue;
        }
        out.samples += 1;
        for g in s.gpus() {
            let a = acc.entry(g.index).or_default();
            a.n += 1;
            a.util.extend(g.utilization_pct);
            a.mem.extend(g.memory_used_mib);
            a.total = g.memory_total_mib.or(a.total);
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    out.gpus = acc
        .into_iter()
        .map(|(gpu, a)| {
            let memf: Vec<f64> = a.mem.iter().map(|&m| m as f64).collect();
            GpuLevelStats {
                gpu,
                samples: a.n,
                utilization_mean_pct: mean(&a.util),
                utilization_max_pct: a.util.iter().copied().reduce(f64::max),
                memory_used_mean_mib: mean(&memf),
                memory_used_max_mib: a.mem.iter().copied().max(),
                memory_total_mib: a.total,
            }
        })
        .collect();
    out
}

/// Samples the GPUs in the background while a sweep runs, and cuts the samples into levels.
/// `verify` calls `begin_level` / `end_level` around each load level and puts `finish`'s JSON
/// into `summary.json`'s `meta.gpu`.
pub struct GpuRecorder {
    sampler_name: String,
    interval: std::time::Duration,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    begin: usize,
    levels: Vec<serde_json::Value>,
}

impl std::fmt::Debug for GpuRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRecorder").field("sampler", &self.sampler_name).finish()
    }
}

impl GpuRecorder {
    /// Starts sampling every `interval` (missed ticks are skipped, a hung tool times out).
    pub fn start(
        sampler: std::sync::Arc<dyn super::sampler::Sampler>,
        interval: std::time::Duration,
    ) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let cancel = tokio_util::sync::CancellationToken::new();
        let (s, c, sm) = (samples.clone(), cancel.clone(), sampler.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let sample = tokio::select! {
                    _ = c.cancelled() => return,
                    x = sm.sample() => x,
                };
                s.lock().unwrap().push(sample);
            }
        });
        Self {
            sampler_name: sampler.describe(),
            interval,
            samples,
            cancel,
            task,
            begin: 0,
            levels: Vec::new(),
        }
    }

    pub fn begin_level(&mut self) {
        self.begin = self.samples.lock().unwrap().len();
    }

    pub fn end_level(&mut self, label: &str) {
        let all = self.samples.lock().unwrap();
        let summary = summarize(&all[self.begin.min(all.len())..]);
        let mut v = serde_json::to_value(summary).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("level".into(), serde_json::Value::from(label));
        }
        self.levels.push(v);
    }

    /// Stops sampling; `{"sampler", "interval_ms", "levels": [{level, samples, gpus: [...]}]}`.
    pub async fn finish(self) -> serde_json::Value {
        self.cancel.cancel();
        let _ = self.task.await;
        serde_json::json!({
            "sampler": self.sampler_name,
            "interval_ms": self.interval.as_millis() as u64,
            "levels": self.levels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::{GpuStatus, SmiStatus};
    use crate::monitor::sample::SampleSource;

    fn s(util: &[f64], mem: &[u64]) -> Sample {
        let gpus = util
            .iter()
            .zip(mem)
            .enumerate()
            .map(|(i, (&u, &m))| GpuStatus {
                index: i as u32,
                utilization_pct: Some(u),
                memory_used_mib: Some(m),
                memory_total_mib: Some(65536),
                ..Default::default()
            })
            .collect();
        Sample {
            at_unix_ms: 0,
            source: SampleSource::MxSmi,
            duration_ms: 0.0,
            status: Some(SmiStatus { gpus, ..Default::default() }),
            missing: None,
            health: vec![],
            degraded: vec![],
        }
    }

    #[test]
    fn mean_and_max_per_gpu() {
        let mut miss = s(&[], &[]);
        miss.status = None;
        let sum = summarize(&[
            s(&[24.0, 36.0], &[59830, 60278]),
            s(&[36.0, 30.0], &[59830, 60000]),
            miss,
        ]);
        assert_eq!((sum.samples, sum.samples_missing), (2, 1));
        assert_eq!(sum.gpus[0].utilization_mean_pct, Some(30.0));
        assert_eq!(sum.gpus[0].utilization_max_pct, Some(36.0));
        assert_eq!(sum.gpus[1].memory_used_max_mib, Some(60278));
        assert_eq!(sum.gpus[1].memory_used_mean_mib, Some(60139.0));
        assert!(summarize(&[]).gpus.is_empty());
    }

    #[tokio::test]
    async fn recorder_cuts_samples_into_levels() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/monitor/seed-load");
        let sampler = std::sync::Arc::new(crate::monitor::DirSampler::new(&dir).unwrap());
        let mut r = GpuRecorder::start(sampler, std::time::Duration::from_millis(10));
        r.begin_level();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r.end_level("c=1");
        let v = r.finish().await;
        let level = &v["levels"][0];
        assert_eq!(level["level"], "c=1");
        assert!(level["samples"].as_u64().unwrap() >= 2, "{v}");
        assert_eq!(level["gpus"][2]["utilization_max_pct"], 24.0);
        assert_eq!(level["gpus"][0]["memory_used_max_mib"], 60278);
    }
}
