//! `/proc/PID/numa_maps`: resident bytes per NUMA node of one process. Pure, over text.
//!
//! One line per mapping: start address, memory policy, then `key=value` words. `N<node>=<pages>`
//! counts the mapping's pages resident on that node; `kernelpagesize_kB=` is the page size of
//! the mapping (4 for base pages, 2048 or 1048576 for huge pages), so huge pages count at
//! their size:
//! ```text
//! 5588a647a000 default file=/usr/bin/head anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4
//! 7f2a00000000 bind:1 anon=512 dirty=512 N1=512 kernelpagesize_kB=4
//! 7f4000000000 default file=/anon_hugepage\040(deleted) huge anon=2 dirty=2 N0=1 N1=1 kernelpagesize_kB=2048
//! ```
//! A mapping without `kernelpagesize_kB` (kernels before 3.7 did not print it) counts at 4 KiB.
//! It does not read files or know which processes form an engine: `supervise::placement` does.

use std::collections::BTreeMap;

/// Bytes per NUMA node.
pub type NodeBytes = BTreeMap<u32, u64>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumaMapsError {
    #[error("numa_maps line {line}: {what}: {text:?}")]
    Parse { line: usize, what: &'static str, text: String },
}

/// Resident bytes per node of every mapping of `text`.
pub fn parse(text: &str) -> Result<NodeBytes, NumaMapsError> {
    let mut out = NodeBytes::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |what| NumaMapsError::Parse {
            line: i + 1,
            what,
            text: line.chars().take(120).collect(),
        };
        let mut words = line.split_whitespace();
        let addr = words.next().unwrap_or_default();
        if u64::from_str_radix(addr, 16).is_err() {
            return Err(err("not a mapping address"));
        }
        let mut page_kb: u64 = 4;
        let mut pages: Vec<(u32, u64)> = Vec::new();
        for word in words {
            if let Some(v) = word.strip_prefix("kernelpagesize_kB=") {
                page_kb = v.parse().map_err(|_| err("bad kernelpagesize_kB"))?;
            } else if let Some((key, v)) = word.strip_prefix('N').and_then(|w| w.split_once('=')) {
                // `N0=12`; other words starting with N are no node counts.
                let Ok(node) = key.parse::<u32>() else { continue };
                let count: u64 = v.parse().map_err(|_| err("bad page count"))?;
                pages.push((node, count));
            }
        }
        for (node, count) in pages {
            let bytes = count.saturating_mul(page_kb).saturating_mul(1024);
            let slot = out.entry(node).or_default();
            *slot = slot.saturating_add(bytes);
        }
    }
    Ok(out)
}

/// Adds `b` into `a`, node by node.
pub fn add(a: &mut NodeBytes, b: &NodeBytes) {
    for (node, bytes) in b {
        let slot = a.entry(*node).or_default();
        *slot = slot.saturating_add(*bytes);
    }
}

/// The share of the bytes that sit on nodes outside `bound` (`None` when there are no bytes or
/// no bound nodes: nothing to judge).
pub fn off_node_share(bytes: &NodeBytes, bound: &[u32]) -> Option<f64> {
    let total: u64 = bytes.values().sum();
    if total == 0 || bound.is_empty() {
        return None;
    }
    let off: u64 = bytes.iter().filter(|(n, _)| !bound.contains(n)).map(|(_, b)| b).sum();
    Some(off as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
5588a647a000 default file=/usr/bin/head anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4
7f2a00000000 bind:1 anon=512 dirty=512 N1=512 kernelpagesize_kB=4
7f4000000000 default file=/anon_hugepage\\040(deleted) huge anon=2 dirty=2 N0=1 N1=1 kernelpagesize_kB=2048
7ffd1e9f2000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
7ffd1ea3b000 default
";

    #[test]
    fn sums_pages_times_page_size_per_node_huge_pages_included() {
        let b = parse(SAMPLE).unwrap();
        assert_eq!(b[&0], 4 * 4096 + 2048 * 1024);
        assert_eq!(b[&1], 512 * 4096 + 2048 * 1024);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn off_node_share_of_a_binding() {
        let b: NodeBytes = [(0, 300), (1, 700)].into();
        assert_eq!(off_node_share(&b, &[1]), Some(0.3));
        assert_eq!(off_node_share(&b, &[0, 1]), Some(0.0));
        assert_eq!(off_node_share(&b, &[]), None);
        assert_eq!(off_node_share(&NodeBytes::new(), &[1]), None);
        let mut sum = b.clone();
        add(&mut sum, &[(2, 1)].into());
        assert_eq!(sum, [(0, 300), (1, 700), (2, 1)].into());
    }

    #[test]
    fn garbage_names_the_line() {
        let e = parse("5588a647a000 default N0=x kernelpagesize_kB=4\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "numa_maps line 1: bad page count: \"5588a647a000 default N0=x kernelpagesize_kB=4\""
        );
        let e = parse("\nzz default N0=1\n").unwrap_err();
        assert!(e.to_string().starts_with("numa_maps line 2: not a mapping address"), "{e}");
    }

    #[test]
    fn own_process_has_resident_memory() {
        let text = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
        let b = parse(&text).unwrap();
        assert!(b.values().sum::<u64>() > 0, "{b:?}");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
