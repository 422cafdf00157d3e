//! `verify --compare`: the seed's NUMA experiment as data, in pure code (no I/O). It lays out
//! the interleaved trial schedule of the bindings (`super::bindings` parses and resolves them)
//! and computes the statistics across trials (means, Student-t confidence intervals, change
//! against `none`, the verdict) into the `CompareReport` that `compare.json` holds.
//!
//! Not here: the records of `compare.json` and the Student-t estimate (`results`, re-exported
//! here), the BINDINGS grammar (`bindings`), reading the host's nodes (the command layer),
//! starting engines and running sweeps (`trials`), the table and the chart (`render`).

use std::fmt::Write as _;

use super::bindings::{BindingChoice, Choice};
use super::results::tok_s;
pub use super::results::{
    t975, BindingResult, Capacity, CompareReport, Estimate, LevelCompare, LevelFigures,
    PlacementLimits, PlacementVerdict, TrialRun,
};
use crate::binding::Binding;
use crate::host::numa_maps;

/// The interleaved order: for each trial, every binding in the order given, so slow drift
/// (thermal, page cache, other tenants) hits all bindings alike. Pairs of (trial 1-based,
/// binding index).
pub fn schedule(trials: u32, bindings: usize) -> Vec<(u32, usize)> {
    (1..=trials).flat_map(|t| (0..bindings).map(move |b| (t, b))).collect()
}

/// The mean of the values; `None` when there are none.
fn mean_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn pct(a: f64, base: f64) -> Option<f64> {
    (base.is_finite() && base != 0.0 && a.is_finite()).then(|| (a / base - 1.0) * 100.0)
}

/// Builds the report from the sub-runs done so far (`runs` may be partial), judging placement
/// against the default limits.
pub fn analyse(
    choices: &[(Choice, Binding)],
    trials: u32,
    runs: &[TrialRun],
    incomplete: bool,
) -> CompareReport {
    analyse_with(choices, trials, runs, incomplete, PlacementLimits::default())
}

/// `analyse` with the placement limits of the configuration.
pub fn analyse_with(
    choices: &[(Choice, Binding)],
    trials: u32,
    runs: &[TrialRun],
    incomplete: bool,
    limits: PlacementLimits,
) -> CompareReport {
    let ok = |label: &str| -> Vec<&TrialRun> {
        runs.iter().filter(|r| r.binding == label && r.error.is_none()).collect()
    };
    // Level labels in the order of the first successful run.
    let levels: Vec<String> = runs
        .iter()
        .find(|r| r.error.is_none())
        .map(|r| r.levels.iter().map(|(l, _)| l.clone()).collect())
        .unwrap_or_default();
    // With a search, bindings are ranked by the capacity each trial found.
    let capacity_kind = runs.iter().find_map(|r| r.capacity.as_ref().map(|c| c.kind.clone()));
    let score_of = |r: &TrialRun| -> f64 {
        if capacity_kind.is_some() {
            return r.capacity.as_ref().map_or(f64::NAN, |c| c.value);
        }
        let v: Vec<f64> = r.levels.iter().map(|(_, f)| f.output_throughput).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let base_label = choices.iter().find(|(c, _)| c.choice == BindingChoice::None);
    let base_runs = base_label.map(|(c, _)| ok(&c.label)).unwrap_or_default();
    let mut bindings = Vec::new();
    for (c, b) in choices {
        let mine = ok(&c.label);
        let series = |level: &str, f: fn(&LevelFigures) -> f64| -> Estimate {
            let v: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.levels.iter().find(|(l, _)| l == level).map(|(_, x)| f(x)))
                .collect();
            Estimate::of(&v)
        };
        let base_mean = |level: &str, f: fn(&LevelFigures) -> f64| -> Option<f64> {
            let v: Vec<f64> = base_runs
                .iter()
                .filter_map(|r| r.levels.iter().find(|(l, _)| l == level).map(|(_, x)| f(x)))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let lv = levels
            .iter()
            .map(|l| {
                let thr = series(l, |f| f.output_throughput);
                let lat = series(l, |f| f.latency_s);
                LevelCompare {
                    level: l.clone(),
                    qps: series(l, |f| f.qps),
                    throughput_vs_none_pct: base_mean(l, |f| f.output_throughput)
                        .and_then(|b| pct(thr.mean, b)),
                    latency_vs_none_pct: base_mean(l, |f| f.latency_s)
                        .and_then(|b| pct(lat.mean, b)),
                    latency_s: lat,
                    output_throughput: thr,
                    ttft_p50_s: series(l, |f| f.ttft_p50_s),
                    ttft_p99_s: series(l, |f| f.ttft_p99_s),
                    failed: series(l, |f| f.failed),
                }
            })
            .collect();
        let score = Estimate::of(&mine.iter().map(|r| score_of(r)).collect::<Vec<_>>());
        // Paired by trial: trial k of this binding against trial k of `none`, which ran right
        // next to it, so drift between trials cancels out.
        let paired: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let b = base_runs.iter().find(|x| x.trial == r.trial)?;
                pct(score_of(r), score_of(b))
            })
            .collect();
        let score_vs_none_pct =
            (base_label.is_some() && !paired.is_empty()).then(|| Estimate::of(&paired));
        let nodes = b.memory_nodes();
        let off_pct = |rs: &[&TrialRun]| {
            mean_of(rs.iter().filter_map(|r| {
                numa_maps::off_node_share(r.memory_by_node.as_ref()?, &nodes).map(|s| s * 100.0)
            }))
        };
        let memory_off_node_pct = off_pct(&mine);
        let cpu_outside_pct = mean_of(
            mine.iter().filter_map(|r| r.threads.as_ref()?.outside_share.map(|s| s * 100.0)),
        );
        let placement = (!b.is_none() && !mine.is_empty())
            .then(|| PlacementVerdict::of(memory_off_node_pct, cpu_outside_pct, limits));
        bindings.push(BindingResult {
            label: c.label.clone(),
            numactl: b.numactl_args(),
            binding: b.clone(),
            trials_ok: mine.len(),
            levels: lv,
            score,
            score_vs_none_pct,
            memory_off_node_pct,
            none_memory_off_node_pct: if base_label.is_some() { off_pct(&base_runs) } else { None },
            numa_miss: mean_of(mine.iter().filter_map(|r| {
                r.numa.as_ref().and_then(|n| n.total.get("numa_miss")).map(|&v| v as f64)
            })),
            thread_migrations: mean_of(
                mine.iter().filter_map(|r| r.threads.as_ref()?.migrations_delta.map(|m| m as f64)),
            ),
            cpu_outside_pct,
            placement,
        });
    }
    let score_unit = capacity_kind.as_deref().map_or_else(tok_s, Capacity::unit);
    let (best, within_noise, verdict) =
        verdict(&bindings, base_label.is_some(), trials, &score_unit);
    CompareReport {
        trials,
        order: choices.iter().map(|(c, _)| c.label.clone()).collect(),
        bindings,
        runs: runs.to_vec(),
        best,
        within_noise,
        verdict,
        incomplete,
        score_unit,
    }
}

/// The smallest gain worth a binding: a difference that is real at 95 % but smaller than this
/// is reported as "alike in practice" (a real server's run-to-run drift is of this order, and
/// the seed's NUMA gain was 13 %).
pub const PRACTICAL_GAIN_PCT: f64 = 1.0;

fn verdict(
    bindings: &[BindingResult],
    has_none: bool,
    trials: u32,
    unit: &str,
) -> (Option<String>, Option<bool>, String) {
    let Some(best) = bindings
        .iter()
        .filter(|b| b.trials_ok > 0 && b.score.mean.is_finite())
        .max_by(|a, b| a.score.mean.total_cmp(&b.score.mean))
    else {
        return (None, None, "no binding produced a result: nothing to compare".into());
    };
    let over = if unit == "output tok/s" { "levels and " } else { "" };
    let mut text = format!(
        "best: {} at {:.1} {unit} (mean over {over}{} trial(s))",
        best.label, best.score.mean, best.trials_ok
    );
    let noise = if !has_none {
        // Without `none`, compare the best with the runner-up, unpaired.
        let second = bindings
            .iter()
            .filter(|b| b.label != best.label && b.trials_ok > 0)
            .max_by(|a, b| a.score.mean.total_cmp(&b.score.mean));
        match second {
            None => None,
            Some(s) => match (best.score.ci95, s.score.ci95) {
                (Some(a), Some(b)) => {
                    let overlap = best.score.mean - a <= s.score.mean + b;
                    let gap_pct = (best.score.mean - s.score.mean) / s.score.mean * 100.0;
                    let small = !overlap && gap_pct < PRACTICAL_GAIN_PCT;
                    let _ = write!(
                        text,
                        "; runner-up {} at {:.1} ({})",
                        s.label,
                        s.score.mean,
                        if overlap {
                            "the 95 % intervals overlap: the difference is within noise".to_string()
                        } else if small {
                            format!(
                                "the 95 % intervals do not overlap, but the gap of {gap_pct:.1} % is under {PRACTICAL_GAIN_PCT} %, too small to matter"
                            )
                        } else {
                            "the 95 % intervals do not overlap".to_string()
                        }
                    );
                    Some(overlap || small)
                }
                _ => {
                    let _ = write!(
                        text,
                        "; runner-up {} at {:.1}; with one trial there is no confidence \
                         interval: run --trials 3 or more to tell a difference from noise",
                        s.label, s.score.mean
                    );
                    None
                }
            },
        }
    } else if best.binding.is_none() {
        let others: Vec<String> = bindings
            .iter()
            .filter(|b| b.label != best.label)
            .filter_map(|b| {
                let e = b.score_vs_none_pct.as_ref()?;
                Some(match e.ci95 {
                    Some(ci) => format!("{} {:+.1} % ± {:.1}", b.label, e.mean, ci),
                    None => format!("{} {:+.1} %", b.label, e.mean),
                })
            })
            .collect();
        let _ = write!(text, "; no binding beat none ({})", others.join(", "));
        let any_significant = bindings.iter().any(|b| {
            b.score_vs_none_pct.as_ref().is_some_and(|e| e.ci95.is_some_and(|ci| e.mean.abs() > ci))
        });
        if trials >= 2 {
            Some(!any_significant)
        } else {
            None
        }
    } else {
        match &best.score_vs_none_pct {
            Some(e) => match e.ci95 {
                Some(ci) => {
                    let within = e.mean.abs() <= ci;
                    let small = !within && e.mean - ci < PRACTICAL_GAIN_PCT;
                    let _ = write!(
                        text,
                        ", {:+.1} % against none (95 % interval {:+.1} % to {:+.1} %, paired over {} trials): {}",
                        e.mean,
                        e.mean - ci,
                        e.mean + ci,
                        e.n,
                        if within {
                            "the difference is WITHIN NOISE; keep the simpler setup or run more trials".to_string()
                        } else if small {
                            format!(
                                "the difference is real at 95 % but may be under {PRACTICAL_GAIN_PCT} %, too small to matter"
                            )
                        } else {
                            "the difference is real at 95 %".to_string()
                        }
                    );
                    Some(within || small)
                }
                None => {
                    let _ = write!(
                        text,
                        ", {:+.1} % against none from one trial: no confidence interval; run \
                         --trials 3 or more to tell a difference from noise",
                        e.mean
                    );
                    None
                }
            },
            None => None,
        }
    };
    for b in bindings {
        match b.placement {
            Some(PlacementVerdict::MemoryDidNotFollow) => {
                let _ = write!(
                    text,
                    "; {} held in /proc but memory did not follow ({:.1} % of the engine's memory on remote nodes)",
                    b.label,
                    b.memory_off_node_pct.unwrap_or_default()
                );
            }
            Some(PlacementVerdict::ThreadsOutside) => {
                let _ = write!(
                    text,
                    "; {} held in /proc but the threads did not ({:.1} % of the engine's CPU time outside its CPUs)",
                    b.label,
                    b.cpu_outside_pct.unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    if noise == Some(true) {
        text.push_str(" — recommendation: the bindings perform alike on this workload");
    } else if noise == Some(false) {
        let _ = write!(text, " — recommendation: serve with {}", best.label);
        if !best.numactl.is_empty() {
            let _ = write!(text, " (numactl {})", best.numactl.join(" "));
        }
    }
    (Some(best.label.clone()), noise, text)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::host::cpuset::CpuSet;
    use crate::verify::bindings::{parse_bindings, resolve, HostNodes};

    fn cs(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    #[test]
    fn schedule_interleaves_bindings_within_each_trial() {
        assert_eq!(schedule(2, 3), [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]);
        assert!(schedule(0, 3).is_empty());
    }

    /// One successful sub-run at level `c=8` with output throughput `thr` (also for `render`).
    pub(in crate::verify) fn run(binding: &str, trial: u32, thr: f64) -> TrialRun {
        let f = LevelFigures {
            qps: thr / 100.0,
            latency_s: 1000.0 / thr,
            output_throughput: thr,
            ttft_p50_s: 0.1,
            ttft_p99_s: 0.2,
            failed: 0.0,
            loadgen_cores: None,
        };
        TrialRun {
            levels: vec![("c=8".into(), f)],
            ..TrialRun::new(binding, trial, &format!("{binding}/trial-{trial}"))
        }
    }

    /// `none` and `nodes=0` on a one-node host (also for `render`).
    pub(in crate::verify) fn choices() -> Vec<(Choice, Binding)> {
        let host = HostNodes { nodes: BTreeMap::from([(0, cs("0-3"))]) };
        parse_bindings("none,nodes=0")
            .unwrap()
            .into_iter()
            .map(|c| {
                let b = resolve(&c, &host, None).unwrap();
                (c, b)
            })
            .collect()
    }

    #[test]
    fn placement_verdicts_are_named_against_the_limits() {
        let l = PlacementLimits { memory_off_node: 0.10, cpu_outside: 0.05 };
        assert_eq!(PlacementVerdict::of(Some(10.0), Some(5.0), l), PlacementVerdict::Held);
        assert_eq!(
            PlacementVerdict::of(Some(38.0), Some(50.0), l),
            PlacementVerdict::MemoryDidNotFollow
        );
        assert_eq!(PlacementVerdict::of(Some(0.4), Some(5.1), l), PlacementVerdict::ThreadsOutside);
        assert_eq!(PlacementVerdict::of(None, Some(0.0), l), PlacementVerdict::Held);
        assert_eq!(PlacementVerdict::of(None, None, l), PlacementVerdict::NotAudited);
        // The threads' share over the sub-runs decides a CPU-only binding.
        let mut runs = clear_gain_runs();
        for r in runs.iter_mut().filter(|r| r.binding != "none") {
            let share = if r.trial == 1 { 0.30 } else { 0.0 };
            r.threads = Some(crate::summary::ThreadPlacement {
                outside_share: Some(share),
                migrations_delta: Some(30 * u64::from(r.trial)),
                ..Default::default()
            });
        }
        let r = analyse_with(&choices(), 3, &runs, false, l);
        let b = &r.bindings[1];
        assert_eq!((b.cpu_outside_pct, b.thread_migrations), (Some(10.0), Some(60.0)));
        assert_eq!(b.placement, Some(PlacementVerdict::ThreadsOutside));
        assert!(
            r.verdict.contains("nodes=0 held in /proc but the threads did not (10.0 %"),
            "{}",
            r.verdict
        );
        let r = analyse(&choices(), 3, &runs, false);
        assert_eq!(r.bindings[1].placement, Some(PlacementVerdict::Held));
    }

    #[test]
    fn a_real_but_tiny_gain_is_not_worth_a_binding() {
        // +0.1 % in every trial: real at 95 % (the interval is narrow), but too small to matter.
        let runs = vec![
            run("none", 1, 500.0),
            run("nodes=0", 1, 500.5),
            run("none", 2, 520.0),
            run("nodes=0", 2, 520.52),
            run("none", 3, 510.0),
            run("nodes=0", 3, 510.51),
        ];
        let r = analyse(&choices(), 3, &runs, false);
        assert_eq!(r.best.as_deref(), Some("nodes=0"));
        assert_eq!(r.within_noise, Some(true));
        assert!(r.verdict.contains("too small to matter"), "{}", r.verdict);
        assert!(r.verdict.contains("the bindings perform alike"), "{}", r.verdict);
        assert!(!r.verdict.contains("serve with"), "{}", r.verdict);
    }

    #[test]
    fn a_clear_gain_is_recommended() {
        let r = analyse(&choices(), 3, &clear_gain_runs(), false);
        assert_eq!(r.best.as_deref(), Some("nodes=0"));
        assert_eq!(r.within_noise, Some(false));
        assert!(r.verdict.contains("serve with nodes=0"), "{}", r.verdict);
        let e = r.bindings[1].score_vs_none_pct.as_ref().unwrap();
        assert!((e.mean - 12.4).abs() < 0.5, "{e:?}");
        let l = &r.bindings[1].levels[0];
        assert!((l.throughput_vs_none_pct.unwrap() - (585.0 / 520.0 - 1.0) * 100.0).abs() < 1e-9);
    }

    /// The sub-runs of `a_clear_gain_is_recommended` (also for `render`).
    pub(in crate::verify) fn clear_gain_runs() -> Vec<TrialRun> {
        vec![
            run("none", 1, 500.0),
            run("nodes=0", 1, 560.0),
            run("none", 2, 540.0),
            run("nodes=0", 2, 610.0),
            run("none", 3, 520.0),
            run("nodes=0", 3, 585.0),
        ]
    }

    #[test]
    fn overlapping_results_are_called_noise() {
        let runs = vec![
            run("none", 1, 500.0),
            run("nodes=0", 1, 560.0),
            run("none", 2, 560.0),
            run("nodes=0", 2, 500.0),
        ];
        let r = analyse(&choices(), 2, &runs, false);
        assert_eq!(r.within_noise, Some(true));
        assert!(r.verdict.contains("WITHIN NOISE") || r.verdict.contains("alike"), "{}", r.verdict);
    }

    #[test]
    fn one_trial_says_it_cannot_tell() {
        let runs = vec![run("none", 1, 500.0), run("nodes=0", 1, 560.0)];
        let r = analyse(&choices(), 1, &runs, false);
        assert_eq!(r.within_noise, None);
        assert!(r.verdict.contains("--trials 3"), "{}", r.verdict);
    }

    /// `none` ran; `nodes=0`'s engine failed, and the comparison stopped early (also for
    /// `render`).
    pub(in crate::verify) fn failed_run_report() -> CompareReport {
        let mut bad = run("nodes=0", 1, 0.0);
        bad.error = Some("engine exited with code 1".into());
        bad.levels.clear();
        let runs = vec![run("none", 1, 500.0), bad];
        analyse(&choices(), 1, &runs, true)
    }

    #[test]
    fn with_a_search_bindings_are_ranked_by_capacity_under_the_slo() {
        // Throughput says none is better; the capacity under the SLO says nodes=0.
        let cap = |binding: &str, trial: u32, thr: f64, c: f64| {
            let mut r = run(binding, trial, thr);
            r.capacity = Some(Capacity {
                kind: "concurrency".into(),
                value: c,
                stop: Some("bracketed".into()),
            });
            r
        };
        let runs = vec![
            cap("none", 1, 600.0, 8.0),
            cap("nodes=0", 1, 500.0, 12.0),
            cap("none", 2, 600.0, 9.0),
            cap("nodes=0", 2, 500.0, 12.0),
            cap("none", 3, 600.0, 8.0),
            cap("nodes=0", 3, 500.0, 13.0),
        ];
        let r = analyse(&choices(), 3, &runs, false);
        assert_eq!(r.score_unit, "concurrency under the SLO");
        assert_eq!(r.best.as_deref(), Some("nodes=0"));
        assert_eq!(r.bindings[1].score.values, [12.0, 12.0, 13.0]);
        let e = r.bindings[1].score_vs_none_pct.as_ref().unwrap();
        // Paired per trial: +50 %, +33.3 %, +62.5 %.
        assert!((e.mean - (50.0 + 100.0 / 3.0 + 62.5) / 3.0).abs() < 1e-9, "{e:?}");
        assert!(
            r.verdict.starts_with(
                "best: nodes=0 at 12.3 concurrency under the SLO (mean over 3 trial(s))"
            ),
            "{}",
            r.verdict
        );
        assert!(r.verdict.contains("serve with nodes=0"), "{}", r.verdict);
        // Read back from an older compare.json without the unit: output tok/s.
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("score_unit");
        let back: CompareReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.score_unit, "output tok/s");
    }

    #[test]
    fn failed_runs_are_listed_and_do_not_count() {
        let r = failed_run_report();
        assert_eq!(r.best.as_deref(), Some("none"));
        assert_eq!(r.bindings[1].trials_ok, 0);
        assert!(r.runs[1].error.is_some() && r.incomplete);
    }
}
