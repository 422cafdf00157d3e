//! Listing a container's host PIDs without the daemon's help where possible: the container's
//! cgroup directories from its main process's `/proc/<pid>/cgroup` and their `cgroup.procs`,
//! and the parse of the daemon's `docker top` answer, the fallback. Pure reads and parses.
//!
//! Not here: asking the daemon (`super`).

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Candidate cgroup directories (relative to [`CGROUP_ROOT`]) of a container, in order of
/// preference, from its main process's `/proc/<pid>/cgroup`; only paths naming the container
/// id count. cgroup v1 (and hybrid), then v2:
/// ```text
/// 8:pids:/docker/500074fa4bee...c432
/// 3:cpuset:/docker/500074fa4bee...c432
/// 1:name=systemd:/docker/500074fa4bee...c432
/// 0::/system.slice/docker-500074fa4bee...c432.scope
/// ```
pub(super) fn cgroup_dirs(proc_cgroup: &str, container_id: &str) -> Vec<PathBuf> {
    let mut v1: Vec<(usize, PathBuf)> = Vec::new();
    let mut v2 = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if container_id.is_empty() || !path.contains(container_id) {
            continue;
        }
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            v2.push(PathBuf::from(rel));
            v2.push(Path::new("unified").join(rel));
            continue;
        }
        let rank = ["pids", "cpuset", "memory", "name=systemd"]
            .iter()
            .position(|c| controllers.split(',').any(|x| x == *c));
        if let Some(rank) = rank {
            let dir = controllers.trim_start_matches("name=");
            v1.push((rank, Path::new(dir).join(rel)));
        }
    }
    v1.sort_by_key(|(rank, _)| *rank);
    v1.into_iter().map(|(_, p)| p).chain(v2).collect()
}

/// `cgroup.procs` of `dir` and of every cgroup below it (an engine may create sub-cgroups).
pub(super) fn read_procs(dir: &Path, out: &mut Vec<i32>) -> std::io::Result<()> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            read_procs(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// The `docker top` answer with `ps -eo pid`, e.g.
/// `{"Titles":["PID"],"Processes":[["41234"],["41290"],["41291"]]}`.
pub(super) fn parse_top(titles: Vec<String>, rows: Vec<Vec<String>>) -> Result<Vec<i32>, String> {
    let col = titles
        .iter()
        .position(|t| t.trim() == "PID")
        .ok_or_else(|| format!("docker top answered without a PID column (titles {titles:?})"))?;
    let mut pids = rows
        .iter()
        .map(|row| {
            let cell = row.get(col).map(|s| s.trim()).unwrap_or("");
            cell.parse::<i32>()
                .map_err(|_| format!("docker top answered a bad pid {cell:?} in row {row:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn top_output_parses_to_sorted_pids() {
        let pids =
            parse_top(s(&["PID"]), vec![s(&["41291"]), s(&["41234"]), s(&["41290"])]).unwrap();
        assert_eq!(pids, [41234, 41290, 41291]);
        // Default `docker top` columns, in case a daemon ignores ps_args.
        let pids = parse_top(
            s(&["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]),
            vec![s(&["root", "7", "1", "0", "20:01", "?", "00:00:00", "sleep 5"])],
        )
        .unwrap();
        assert_eq!(pids, [7]);
    }

    #[test]
    fn bad_top_output_is_an_error_not_a_panic() {
        let err = parse_top(s(&["USER"]), vec![]).unwrap_err();
        assert!(err.contains("without a PID column"), "{err}");
        let err = parse_top(s(&["PID"]), vec![s(&["x1"])]).unwrap_err();
        assert!(err.contains("bad pid \"x1\""), "{err}");
        let err = parse_top(s(&["PID"]), vec![vec![]]).unwrap_err();
        assert!(err.contains("bad pid \"\""), "{err}");
    }

    #[test]
    fn cgroup_dirs_prefer_v1_pids_then_cpuset_then_v2_and_need_the_id() {
        let id = "500074fa4beeef875fac067b5b4a1357df6389919b0a5e86f8a2791aace3c432";
        // A real /proc/<pid>/cgroup of a container on this Debian 12 host (cgroup v1, hybrid).
        let hybrid = format!(
            "9:name=systemd:/docker/{id}\n8:pids:/docker/{id}\n3:cpuset:/docker/{id}\n\
             2:cpuacct:/docker/{id}\n1:cpu:/docker/{id}\n0::/docker/{id}\n"
        );
        let dirs = cgroup_dirs(&hybrid, id);
        let want: Vec<PathBuf> = [
            format!("pids/docker/{id}"),
            format!("cpuset/docker/{id}"),
            format!("systemd/docker/{id}"),
            format!("docker/{id}"),
            format!("unified/docker/{id}"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, want);
        let v2 = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(
            cgroup_dirs(&v2, id)[0],
            PathBuf::from(format!("system.slice/docker-{id}.scope"))
        );
        // A reused PID in another cgroup: nothing.
        assert!(cgroup_dirs("0::/user.slice/session-1.scope\n8:pids:/user.slice\n", id).is_empty());
        // Garbage: nothing, no panic.
        assert!(cgroup_dirs("garbage\n::\n", id).is_empty());
        assert!(cgroup_dirs(&hybrid, "").is_empty());
    }

    proptest::proptest! {
        /// The cgroup table and `docker top` answers never panic the parsers.
        #[test]
        fn parsers_never_panic(
            table in "\\PC{0,200}",
            id in "[0-9a-f]{0,64}",
            titles in proptest::collection::vec("\\PC{0,8}", 0..4),
            rows in proptest::collection::vec(proptest::collection::vec("\\PC{0,8}", 0..4), 0..4),
        ) {
            let _ = cgroup_dirs(&table, &id);
            let _ = parse_top(titles, rows);
        }
    }
}
