//! The kernel's NUMA allocation counters: `/sys/devices/system/node/node*/numastat` (one
//! `name value` per line, counts of pages since boot), read per node under an injectable sysfs
//! root, and the difference of two readings for the five counters that say where memory came
//! from (`numa_hit`, `numa_miss`, `numa_foreign`, `local_node`, `other_node`), per node and
//! summed. `numa_miss` on a node counts pages put there although another node was wanted;
//! `other_node` counts pages put there for a process running on another node.
//!
//! Not here: when the readings are taken (the verify sweep and the compare sub-runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The counters a delta keeps, in this order.
pub const COUNTERS: [&str; 5] =
    ["numa_hit", "numa_miss", "numa_foreign", "local_node", "other_node"];

/// Counter name -> value.
pub type Counters = BTreeMap<String, u64>;

/// One reading: node id -> its counters.
pub type Reading = BTreeMap<u32, Counters>;

#[derive(Debug, thiserror::Error)]
pub enum NumastatError {
    #[error("{path} line {line}: expected `name value`, got {text:?}")]
    Line { path: PathBuf, line: usize, text: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// Parses one node's `numastat` text (`path` only names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Counters, NumastatError> {
    let mut out = Counters::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            || NumastatError::Line { path: path.to_path_buf(), line: i + 1, text: line.into() };
        let mut words = line.split_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        out.insert(name.to_string(), value.parse().map_err(|_| bad())?);
    }
    Ok(out)
}

/// Reads every node's counters under `sysfs_root`; `None` when the tree has no node with a
/// `numastat` (no NUMA support, or not Linux).
pub fn read(sysfs_root: &Path) -> Result<Option<Reading>, NumastatError> {
    let dir = sysfs_root.join("devices/system/node");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(None) };
    let mut out = Reading::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        else {
            continue;
        };
        let path = e.path().join("numastat");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                out.insert(id, parse(&text, &path)?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NumastatError::Read { path, source }),
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `after - before` of the five `COUNTERS` per node (nodes in both readings; a counter that went
/// down, a reset, counts 0), and their sum over the nodes.
pub fn delta(before: &Reading, after: &Reading) -> (Reading, Counters) {
    let mut per_node = Reading::new();
    let mut total: Counters = COUNTERS.iter().map(|c| (c.to_string(), 0)).collect();
    for (node, a) in after {
        let Some(b) = before.get(node) else { continue };
        let mut d = Counters::new();
        for c in COUNTERS {
            let v = a.get(c).copied().unwrap_or(0).saturating_sub(b.get(c).copied().unwrap_or(0));
            d.insert(c.to_string(), v);
            *total.get_mut(c).expect("every counter is in total") += v;
        }
        per_node.insert(*node, d);
    }
    (per_node, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE0: &str = "\
numa_hit 526457087
numa_miss 0
numa_foreign 0
interleave_hit 1080
local_node 526457087
other_node 0
";

    #[test]
    fn parses_the_kernels_file() {
        let c = parse(NODE0, Path::new("n0")).unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(c["numa_hit"], 526457087);
        assert_eq!(c["interleave_hit"], 1080);
        assert_eq!(c["other_node"], 0);
    }

    #[test]
    fn a_bad_line_is_named_with_its_file_and_line() {
        let e = parse("numa_hit 1\nnuma_miss x\n", Path::new("/s/node1/numastat")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/s/node1/numastat line 2: expected `name value`, got \"numa_miss x\""
        );
        let e = parse("numa_hit 1 2\n", Path::new("f")).unwrap_err();
        assert_eq!(e.to_string(), "f line 1: expected `name value`, got \"numa_hit 1 2\"");
    }

    #[test]
    fn deltas_per_node_and_summed() {
        let r = |v: &[(u32, [u64; 5])]| -> Reading {
            v.iter()
                .map(|(n, x)| {
                    (*n, COUNTERS.iter().zip(x).map(|(c, v)| (c.to_string(), *v)).collect())
                })
                .collect()
        };
        let before = r(&[(0, [100, 0, 5, 90, 10]), (1, [50, 7, 0, 50, 0])]);
        let after = r(&[(0, [160, 2, 5, 140, 20]), (1, [51, 9, 3, 51, 0]), (2, [9, 9, 9, 9, 9])]);
        let (per_node, total) = delta(&before, &after);
        assert_eq!(per_node, r(&[(0, [60, 2, 0, 50, 10]), (1, [1, 2, 3, 1, 0])]));
        assert_eq!(total, r(&[(9, [61, 4, 3, 51, 10])])[&9]);
        // A counter that went down (reset) counts 0.
        let (_, total) = delta(&after, &before);
        assert_eq!(total["numa_hit"], 0);
    }

    #[test]
    fn reads_a_tree_and_none_without_nodes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let node = dir.path().join("devices/system/node");
        for n in ["node0", "node1", "possible"] {
            std::fs::create_dir_all(node.join(n)).unwrap();
        }
        std::fs::write(node.join("node0/numastat"), NODE0).unwrap();
        std::fs::write(node.join("node1/numastat"), "numa_hit 3\nnuma_miss 4\n").unwrap();
        let r = read(dir.path()).unwrap().unwrap();
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(r[&1]["numa_miss"], 4);
        std::fs::write(node.join("node1/numastat"), "numa_hit\n").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("node1/numastat line 1: expected `name value`, got \"numa_hit\""),
            "{e}"
        );
    }
}
