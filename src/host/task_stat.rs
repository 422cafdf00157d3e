//! Thread placement, pure: one thread's `/proc/PID/task/TID/stat` (through the `procfs`
//! crate's parser) and `sched` text, and the summary of two readings of an engine's threads
//! into a [`ThreadPlacement`]: the CPUs they last ran on, migrations, and the share of the CPU
//! time between the readings spent outside the binding's CPUs.
//!
//! `stat` is one line; after the `(comm)` come the fields from 3 on: 14 `utime` and 15
//! `stime` (clock ticks), 39 `processor` (the CPU the thread last ran on):
//! ```text
//! 20000 (python3) S 19897 19897 15149 0 -1 4194368 3 6515 0 0 7 2 5 3 20 0 3 0 2043245 ... 17 1 0 0 ...
//! ```
//! `sched` exists on kernels built with `CONFIG_SCHED_DEBUG`; the lines kept are
//! ```text
//! se.nr_migrations                             :                   12
//! nr_switches                                  :                  345
//! ```
//! The CPU time share is an approximation, said in the docs: a thread's CPU time between the
//! readings is put on the CPU it last ran on, so a thread that ran outside and came back counts
//! as inside, and one that just moved out counts all its time outside.
//!
//! Not here: listing the tasks and reading the files (`crate::supervise::threads`), which
//! processes form the engine, and what share raises an alert (the supervisor).

use std::collections::{BTreeMap, BTreeSet};

use super::cpuset::CpuSet;
pub use crate::summary::ThreadPlacement;

/// What one reading of one thread gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSample {
    /// The CPU the thread last ran on (`None` on kernels before 2.2.8).
    pub cpu: Option<u32>,
    /// utime + stime, clock ticks.
    pub ticks: u64,
    /// `se.nr_migrations` and `nr_switches` from `sched`, where the kernel has it.
    pub migrations: Option<u64>,
    pub switches: Option<u64>,
}

/// One reading of an engine's threads: thread id -> sample (thread ids are unique host-wide).
pub type Sample = BTreeMap<i32, TaskSample>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskStatError {
    #[error("task stat: {what}: {text:?}")]
    Stat { what: String, text: String },
    #[error("task sched line {line}: bad count: {text:?}")]
    Sched { line: usize, text: String },
}

/// Parses a thread's `stat` line: (thread id, sample without the `sched` counts).
pub fn parse_stat(text: &str) -> Result<(i32, TaskSample), TaskStatError> {
    let bad = |what: &str| TaskStatError::Stat {
        what: what.to_string(),
        text: text.trim().chars().take(120).collect(),
    };
    // procfs slices around the parentheses without checking what is there: it gets only a
    // line with `PID (comm) X` at least, so no input makes it panic.
    let text = text.trim();
    let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
        return Err(bad("no (comm)"));
    };
    // `open` and `close` index ASCII parentheses, so every slice below is on a char boundary.
    let pid_ok = open >= 2
        && text.as_bytes()[open - 1] == b' '
        && text[..open - 1].bytes().all(|b| b.is_ascii_digit());
    if !pid_ok || close < open {
        return Err(bad("no `pid (comm) state` start"));
    }
    if text.len() < close + 3 {
        return Err(bad("nothing after (comm)"));
    }
    if text.as_bytes()[close + 1] != b' ' {
        return Err(bad("no `pid (comm) state` start"));
    }
    let stat: procfs::process::Stat =
        procfs::FromRead::from_read(text.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    let cpu = match stat.processor {
        Some(c) => Some(u32::try_from(c).map_err(|_| bad("negative processor"))?),
        None => None,
    };
    let sample = TaskSample {
        cpu,
        ticks: stat.utime.saturating_add(stat.stime),
        migrations: None,
        switches: None,
    };
    Ok((stat.pid, sample))
}

/// `se.nr_migrations` and `nr_switches` of a thread's `sched` text (`None` for a counter the
/// text lacks); other lines are skipped.
pub fn parse_sched(text: &str) -> Result<(Option<u64>, Option<u64>), TaskStatError> {
    let (mut migrations, mut switches) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let slot = match key.trim() {
            "se.nr_migrations" => &mut migrations,
            "nr_switches" => &mut switches,
            _ => continue,
        };
        let n = value
            .trim()
            .parse::<u64>()
            .map_err(|_| TaskStatError::Sched { line: i + 1, text: line.trim().to_string() })?;
        *slot = Some(n);
    }
    Ok((migrations, switches))
}

/// Summarises the reading `after` (and, given the earlier reading `before`, what changed in
/// between) against the binding's CPUs `bound` (`None`: no CPU binding). `ticks_per_s` is the
/// kernel's clock tick rate (`CLK_TCK`, 100 on Linux).
pub fn summarize(
    before: Option<&Sample>,
    after: &Sample,
    ticks_per_s: u64,
    bound: Option<&CpuSet>,
) -> ThreadPlacement {
    let last: BTreeSet<u32> = after.values().filter_map(|t| t.cpu).collect();
    let outside_cpus: Vec<u32> = match bound {
        Some(b) => last.iter().copied().filter(|c| !b.contains(*c)).collect(),
        None => Vec::new(),
    };
    let sum = |f: fn(&TaskSample) -> Option<u64>| -> Option<u64> {
        after.values().filter_map(f).reduce(u64::saturating_add)
    };
    let mut out = ThreadPlacement {
        threads: after.len() as u64,
        last_cpus: last.into_iter().collect(),
        last_cpus_outside: outside_cpus,
        migrations: sum(|t| t.migrations),
        switches: sum(|t| t.switches),
        ..ThreadPlacement::default()
    };
    let Some(before) = before else { return out };
    let (mut ticks, mut outside, mut moved) = (0u64, 0u64, 0u64);
    let mut migrations: Option<u64> = None;
    for (tid, now) in after {
        let was = before.get(tid);
        // A thread id seen again with fewer ticks is a new thread under a reused id.
        let was = was.filter(|w| w.ticks <= now.ticks);
        let delta = now.ticks - was.map_or(0, |w| w.ticks);
        ticks = ticks.saturating_add(delta);
        if let (Some(b), Some(cpu)) = (bound, now.cpu) {
            if !b.contains(cpu) {
                outside = outside.saturating_add(delta);
            }
        }
        if let Some(w) = was {
            moved += u64::from(w.cpu.is_some() && now.cpu.is_some() && w.cpu != now.cpu);
        }
        if let Some(m) = now.migrations {
            let prev = was.and_then(|w| w.migrations).filter(|p| *p <= m).unwrap_or(0);
            migrations = Some(migrations.unwrap_or(0).saturating_add(m - prev));
        }
    }
    out.migrations_delta = migrations;
    out.last_cpu_changes = Some(moved);
    out.cpu_seconds = Some(ticks as f64 / ticks_per_s.max(1) as f64);
    out.outside_share = (bound.is_some() && ticks > 0).then(|| outside as f64 / ticks as f64);
    out
}

/// One line for people: `12 threads last on CPUs 0-3,8 (8 outside the binding); 340
/// migrations, 12 since the last reading; 3.2 s CPU, 1.0 % outside the binding`.
pub fn describe(t: &ThreadPlacement) -> String {
    let list = |cpus: &[u32]| cpus.iter().copied().collect::<CpuSet>().to_list();
    let mut out = format!("{} threads last on CPUs {}", t.threads, list(&t.last_cpus));
    if !t.last_cpus_outside.is_empty() {
        out += &format!(" ({} outside the binding)", list(&t.last_cpus_outside));
    }
    match (t.migrations, t.migrations_delta) {
        (Some(m), Some(d)) => out += &format!("; {m} migrations, {d} since the last reading"),
        (Some(m), None) => out += &format!("; {m} migrations"),
        _ => {}
    }
    if let Some(c) = t.last_cpu_changes {
        out += &format!("; {c} changed CPU");
    }
    if let Some(s) = t.cpu_seconds {
        out += &format!("; {s:.1} s CPU");
        if let Some(o) = t.outside_share {
            out += &format!(", {:.1} % outside the binding", o * 100.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/proc-tasks");

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{path}")).unwrap()
    }

    #[test]
    fn stat_gives_the_last_cpu_and_the_cpu_ticks() {
        let (tid, t) = parse_stat(&read("before/1000/task/1001/stat")).unwrap();
        assert_eq!(tid, 1001);
        assert_eq!(t, TaskSample { cpu: Some(1), ticks: 40 + 10, ..TaskSample::default() });
        // comm with spaces and parentheses
        let (tid, t) = parse_stat(&read("after/1000/task/1002/stat")).unwrap();
        assert_eq!((tid, t.cpu, t.ticks), (1002, Some(6), 75 + 25));
    }

    #[test]
    fn sched_gives_migrations_and_switches() {
        assert_eq!(
            parse_sched(&read("before/1000/task/1000/sched")).unwrap(),
            (Some(12), Some(345))
        );
        assert_eq!(parse_sched("policy : 0\n").unwrap(), (None, None));
        let e = parse_sched("x\nse.nr_migrations :  many\n").unwrap_err();
        assert_eq!(e.to_string(), "task sched line 2: bad count: \"se.nr_migrations :  many\"");
    }

    #[test]
    fn garbage_stat_is_an_error_naming_it() {
        let e = parse_stat("1 (x)").unwrap_err();
        assert_eq!(e.to_string(), "task stat: nothing after (comm): \"1 (x)\"");
        let e = parse_stat("(x) S 1").unwrap_err();
        assert!(e.to_string().starts_with("task stat: no `pid (comm) state` start"), "{e}");
        assert!(parse_stat("12 (x) S 1 2").is_err());
        // Found by `never_panics`: a multi-byte character before `(` made the slice before
        // it fall inside the character.
        assert!(parse_stat("®()").is_err());
        assert!(parse_stat("1® (x) S").is_err());
    }

    fn sample(threads: &[(i32, Option<u32>, u64, Option<u64>)]) -> Sample {
        threads
            .iter()
            .map(|&(tid, cpu, ticks, migrations)| {
                (tid, TaskSample { cpu, ticks, migrations, switches: migrations.map(|m| m * 10) })
            })
            .collect()
    }

    #[test]
    fn cpu_time_between_readings_counts_on_each_thread_last_cpu() {
        let before =
            sample(&[(1, Some(0), 100, Some(5)), (2, Some(1), 50, Some(1)), (3, Some(2), 9, None)]);
        // Thread 2 moved to CPU 5 (outside 0-3); thread 3 ended; thread 4 is new.
        let after = sample(&[
            (1, Some(0), 160, Some(7)),
            (2, Some(5), 70, Some(4)),
            (4, Some(3), 20, Some(1)),
        ]);
        let bound = CpuSet::parse_list("0-3").unwrap();
        let p = summarize(Some(&before), &after, 100, Some(&bound));
        assert_eq!(
            p,
            ThreadPlacement {
                threads: 3,
                last_cpus: vec![0, 3, 5],
                last_cpus_outside: vec![5],
                migrations: Some(12),
                migrations_delta: Some(2 + 3 + 1),
                switches: Some(120),
                last_cpu_changes: Some(1),
                cpu_seconds: Some(1.0),
                outside_share: Some(0.2),
            }
        );
    }

    #[test]
    fn describe_says_it_in_one_line() {
        let mut t = ThreadPlacement {
            threads: 12,
            last_cpus: vec![0, 1, 2, 3, 8],
            last_cpus_outside: vec![8],
            migrations: Some(340),
            ..ThreadPlacement::default()
        };
        assert_eq!(
            describe(&t),
            "12 threads last on CPUs 0-3,8 (8 outside the binding); 340 migrations"
        );
        t.migrations_delta = Some(12);
        t.last_cpu_changes = Some(2);
        t.cpu_seconds = Some(3.21);
        t.outside_share = Some(0.01);
        assert_eq!(
            describe(&t),
            "12 threads last on CPUs 0-3,8 (8 outside the binding); 340 migrations, 12 since the \
             last reading; 2 changed CPU; 3.2 s CPU, 1.0 % outside the binding"
        );
    }

    #[test]
    fn one_reading_or_no_binding_leaves_the_deltas_and_share_out() {
        let after = sample(&[(1, Some(0), 160, None)]);
        let p = summarize(None, &after, 100, Some(&CpuSet::parse_list("1").unwrap()));
        assert_eq!((p.last_cpus_outside, p.cpu_seconds, p.outside_share), (vec![0], None, None));
        assert_eq!(p.migrations, None);
        let p = summarize(Some(&after), &after, 100, None);
        assert_eq!((p.cpu_seconds, p.outside_share, p.migrations_delta), (Some(0.0), None, None));
        // A reused thread id with fewer ticks counts as a new thread.
        let reused = sample(&[(1, Some(0), 30, None)]);
        let p = summarize(Some(&after), &reused, 100, None);
        assert_eq!(p.cpu_seconds, Some(0.3));
    }

    #[test]
    fn the_fixture_readings_summarise_to_literal_figures() {
        let load = |dir: &str| -> Sample {
            ["1000/task/1000", "1000/task/1001", "1000/task/1002"]
                .iter()
                .filter_map(|t| {
                    let stat =
                        std::fs::read_to_string(format!("{FIXTURES}/{dir}/{t}/stat")).ok()?;
                    let (tid, mut s) = parse_stat(&stat).unwrap();
                    let sched = std::fs::read_to_string(format!("{FIXTURES}/{dir}/{t}/sched"));
                    if let Ok(text) = sched {
                        (s.migrations, s.switches) = parse_sched(&text).unwrap();
                    }
                    Some((tid, s))
                })
                .collect()
        };
        let bound = CpuSet::parse_list("0-3").unwrap();
        let p = summarize(Some(&load("before")), &load("after"), 100, Some(&bound));
        assert_eq!(p.last_cpus, vec![2, 6]);
        assert_eq!(p.last_cpus_outside, vec![6]);
        assert_eq!(p.migrations, Some(15 + 4));
        assert_eq!(p.migrations_delta, Some(3 + 4));
        assert_eq!(p.cpu_seconds, Some(4.0));
        assert_eq!(p.outside_share, Some(0.25));
    }

    #[test]
    fn this_process_threads_parse_live() {
        let dir = format!("/proc/{}/task", std::process::id());
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let (tid, t) = parse_stat(&text).unwrap();
            assert_eq!(tid.to_string(), e.file_name().to_string_lossy());
            assert!(t.cpu.is_some(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_stat(&text);
            let _ = parse_sched(&text);
        }

        #[test]
        fn summarize_never_panics(
            a in proptest::collection::btree_map(0i32..8, (proptest::option::of(0u32..8), any::<u64>(), proptest::option::of(any::<u64>())), 0..6),
            b in proptest::collection::btree_map(0i32..8, (proptest::option::of(0u32..8), any::<u64>(), proptest::option::of(any::<u64>())), 0..6),
        ) {
            let to = |m: &BTreeMap<i32, (Option<u32>, u64, Option<u64>)>| -> Sample {
                m.iter().map(|(t, &(cpu, ticks, migrations))| (*t, TaskSample { cpu, ticks, migrations, switches: migrations })).collect()
            };
            let bound = CpuSet::parse_list("0-3").unwrap();
            let p = summarize(Some(&to(&a)), &to(&b), 100, Some(&bound));
            prop_assert!(p.outside_share.is_none_or(|s| (0.0..=1.0).contains(&s)));
        }

        #[test]
        fn never_panics_on_near_stat_lines(rest in "[ 0-9a-zA-Z()-]{0,120}") {
            let _ = parse_stat(&format!("12 (x) {rest}"));
            let _ = parse_stat(&format!("12 ({rest}"));
        }
    }
}
