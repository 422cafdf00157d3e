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
}
