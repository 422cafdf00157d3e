//! Reading the engine's threads for the thread placement figures: every thread of every engine
//! process (`/proc/PID/task/TID/stat`, and `sched` where the kernel has it) below a procfs
//! root, into a `Sample` that `crate::host::task_stat::summarize` turns into a
//! `ThreadPlacement`. A process or thread that ended between listing and reading is skipped; an
//! unreadable or garbled file is left out and named in `unread`. It decides no alert: the
//! supervisor compares the outside share with `binding.cpu_outside_alert`.

use std::path::Path;

use crate::host::task_stat::{self, Sample};

/// One reading of the threads of `pids` below the procfs `root`, and `pid/tid: why` of every
/// thread that could not be read or parsed.
pub fn sample(root: &Path, pids: &[i32]) -> (Sample, Vec<String>) {
    let mut out = Sample::new();
    let mut unread = Vec::new();
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for pid in pids {
        let dir = root.join(pid.to_string()).join("task");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Gone since it was listed.
            Err(e) if gone(&e) => continue,
            Err(e) => {
                unread.push(format!("{pid}: {}: {e}", dir.display()));
                continue;
            }
        };
        for e in entries.flatten() {
            let path = e.path().join("stat");
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if gone(&e) => continue,
                Err(e) => {
                    unread.push(format!("{pid}: {}: {e}", path.display()));
                    continue;
                }
            };
            let (tid, mut t) = match task_stat::parse_stat(&text) {
                Ok(x) => x,
                Err(e) => {
                    unread.push(format!("{pid}: {}: {e}", path.display()));
                    continue;
                }
            };
            // Absent on kernels without CONFIG_SCHED_DEBUG: the counts stay unknown.
            let sched = e.path().join("sched");
            if let Ok(text) = std::fs::read_to_string(&sched) {
                match task_stat::parse_sched(&text) {
                    Ok((m, s)) => (t.migrations, t.switches) = (m, s),
                    Err(e) => unread.push(format!("{pid}: {}: {e}", sched.display())),
                }
            }
            out.insert(tid, t);
        }
    }
    (out, unread)
}

/// The kernel's clock tick rate (`CLK_TCK`), the unit of `utime` and `stime`.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cpuset::CpuSet;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/proc-tasks");

    #[test]
    fn reads_every_thread_of_the_fixture_readings() {
        let root = Path::new(FIXTURES);
        let (before, unread) = sample(&root.join("before"), &[1000, 1404]);
        assert!(unread.is_empty(), "{unread:?}");
        assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![1000, 1001]);
        assert_eq!(before[&1000].migrations, Some(12));
        let (after, _) = sample(&root.join("after"), &[1000]);
        let p = task_stat::summarize(
            Some(&before),
            &after,
            100,
            Some(&CpuSet::parse_list("0-3").unwrap()),
        );
        assert_eq!((p.threads, p.last_cpu_changes, p.outside_share), (3, Some(2), Some(0.25)));
    }

    #[test]
    fn garbled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("7/task/8");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("stat"), "garbage\n").unwrap();
        let (s, unread) = sample(dir.path(), &[7]);
        assert!(s.is_empty());
        assert_eq!(unread.len(), 1);
        assert!(
            unread[0].starts_with("7: ")
                && unread[0].ends_with("task stat: no (comm): \"garbage\"")
        );
    }

    #[test]
    fn this_process_threads_are_read_live() {
        let (s, unread) = sample(Path::new("/proc"), &[std::process::id() as i32]);
        assert!(unread.is_empty(), "{unread:?}");
        assert!(s.contains_key(&(std::process::id() as i32)), "{s:?}");
        assert!(ticks_per_second() > 0);
    }
}
