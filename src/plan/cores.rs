//! Disjoint cores for instances that share CPUs (issue 13, rule 6 of the plan), and the CPUs
//! kept back from every instance (`--reserve-cpus`, rule 7). Pure, over CPU lists only; it
//! knows nothing of instances or the topology (`plan/mod.rs` groups them and passes the host's
//! cores, `topology::Topology::cores`, when a source knew them).
//!
//! With the cores known (hwloc, sysfs `thread_siblings_list`), a shared set is cut by whole
//! cores: the two hardware threads of a core always land in the same part. Without them, the
//! cut is by contiguous ranges: each range of the list (`0-31` and `64-95` of `0-31,64-95`) is
//! cut in the same proportions, and part `i` takes its slice of every range. Where Linux
//! numbers the second hardware thread of core `c` as `c + cores` (the usual x86 and arm64
//! enumeration, which gives such lists), this keeps the siblings of a core in one part; where
//! it does not, siblings may be split, and the plan's reason says the siblings were unknown.

use crate::host::cpuset::CpuSet;

/// The contiguous ranges of `set`, in order.
fn ranges(set: &CpuSet) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    for cpu in set.iter() {
        match out.last_mut() {
            Some(r) if r.last().is_some_and(|&l| l + 1 == cpu) => r.push(cpu),
            _ => out.push(vec![cpu]),
        }
    }
    out
}

/// Cuts `shared` into `weights.len()` disjoint parts sized by `weights` (GPU counts): part `i`
/// gets, of every contiguous range, the slice from `len * sum(w[..i]) / total` to
/// `len * sum(w[..=i]) / total`. `None` when some part would get no CPU (too few CPUs to
/// split: the caller keeps the shared set).
pub fn split(shared: &CpuSet, weights: &[usize]) -> Option<Vec<CpuSet>> {
    let total: usize = weights.iter().sum();
    if weights.is_empty() || total == 0 {
        return None;
    }
    let mut parts = vec![CpuSet::new(); weights.len()];
    for range in ranges(shared) {
        let len = range.len();
        let mut before = 0;
        for (i, w) in weights.iter().enumerate() {
            let (from, to) = (len * before / total, len * (before + w) / total);
            for &cpu in &range[from..to] {
                parts[i].insert(cpu);
            }
            before += w;
        }
    }
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

/// The units a split or a reserve moves whole: each known core's CPUs within `set`, and every
/// CPU of `set` no known core holds on its own; ordered by their first CPU.
fn units(set: &CpuSet, cores: &[CpuSet]) -> Vec<CpuSet> {
    let mut covered = CpuSet::new();
    let mut out: Vec<CpuSet> = Vec::new();
    for core in cores {
        let part = core.intersection(set);
        if !part.is_empty() {
            covered = covered.union(&part);
            out.push(part);
        }
    }
    for cpu in set.iter().filter(|c| !covered.contains(*c)) {
        let mut one = CpuSet::new();
        one.insert(cpu);
        out.push(one);
    }
    out.sort_by_key(CpuSet::first);
    out
}

/// Cuts `shared` into `weights.len()` disjoint parts sized by `weights` (GPU counts), by whole
/// cores: of the `n` cores in `shared` (in CPU order), part `i` gets those from
/// `n * sum(w[..i]) / total` to `n * sum(w[..=i]) / total`. `None` when some part would get no
/// core.
pub fn split_by_cores(shared: &CpuSet, cores: &[CpuSet], weights: &[usize]) -> Option<Vec<CpuSet>> {
    let total: usize = weights.iter().sum();
    if weights.is_empty() || total == 0 {
        return None;
    }
    let units = units(shared, cores);
    let n = units.len();
    let mut parts = vec![CpuSet::new(); weights.len()];
    let mut before = 0;
    for (i, w) in weights.iter().enumerate() {
        for unit in &units[n * before / total..n * (before + w) / total] {
            parts[i] = parts[i].union(unit);
        }
        before += w;
    }
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

/// Without known cores, the cores the usual enumeration implies: when the set is several
/// contiguous ranges of one length (`0-31,64-95`), the `j`-th CPU of every range (`0,64`);
/// otherwise none (every CPU on its own).
fn presumed_cores(set: &CpuSet) -> Vec<CpuSet> {
    let ranges = ranges(set);
    let len = ranges.first().map_or(0, Vec::len);
    if ranges.len() < 2 || ranges.iter().any(|r| r.len() != len) {
        return Vec::new();
    }
    (0..len)
        .map(|j| {
            let mut core = CpuSet::new();
            ranges.iter().for_each(|r| core.insert(r[j]));
            core
        })
        .collect()
}

/// The reserve of one node: its first CPUs, at least `count` of them, taken by whole cores
/// where `cores` knows them (a core is never half reserved). Without them, by the cores the
/// ranges imply (`0,64` of `0-31,64-95`, as the range split presumes), else the lowest CPUs.
pub fn reserve(node_cpus: &CpuSet, cores: Option<&[CpuSet]>, count: usize) -> CpuSet {
    let presumed;
    let cores = match cores {
        Some(c) => c,
        None => {
            presumed = presumed_cores(node_cpus);
            &presumed
        }
    };
    let mut out = CpuSet::new();
    for unit in units(node_cpus, cores) {
        if out.len() >= count {
            break;
        }
        out = out.union(&unit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    fn lists(parts: Option<Vec<CpuSet>>) -> Vec<String> {
        parts.unwrap().iter().map(CpuSet::to_list).collect()
    }

    #[test]
    fn each_range_is_cut_in_the_same_proportions() {
        assert_eq!(lists(split(&set("0-31,64-95"), &[4, 4])), ["0-15,64-79", "16-31,80-95"]);
        assert_eq!(lists(split(&set("0-15"), &[2, 2])), ["0-7", "8-15"]);
        assert_eq!(lists(split(&set("0-11"), &[1, 2])), ["0-3", "4-11"]);
        assert_eq!(lists(split(&set("0-3,8-11"), &[1, 1, 1, 1])), ["0,8", "1,9", "2,10", "3,11"]);
    }

    /// hwloc-32em64t-2n8c2t: core `c` of node 1 is CPUs `c` and `c + 16`.
    fn node1_cores() -> Vec<CpuSet> {
        (8..16).map(|c| set(&format!("{c},{}", c + 16))).collect()
    }

    #[test]
    fn whole_cores_keep_siblings_together() {
        let parts = split_by_cores(&set("8-15,24-31"), &node1_cores(), &[1, 1, 1]);
        assert_eq!(lists(parts), ["8-9,24-25", "10-12,26-28", "13-15,29-31"]);
        // Siblings numbered side by side (0,1 one core): a range cut would split core 1,2.
        let cores: Vec<CpuSet> = (0..3).map(|c| set(&format!("{},{}", 2 * c, 2 * c + 1))).collect();
        assert_eq!(lists(split_by_cores(&set("0-5"), &cores, &[1, 1])), ["0-1", "2-5"]);
        assert_eq!(lists(split(&set("0-5"), &[1, 1])), ["0-2", "3-5"]);
        // A CPU no known core holds is a unit of its own.
        assert_eq!(lists(split_by_cores(&set("0-1,7"), &cores[..1], &[1, 1])), ["0-1", "7"]);
        assert_eq!(split_by_cores(&set("8,24"), &node1_cores(), &[1, 1]), None);
    }

    #[test]
    fn the_reserve_takes_the_first_whole_cores() {
        let cores = node1_cores();
        assert_eq!(reserve(&set("8-15,24-31"), Some(&cores), 1).to_list(), "8,24");
        assert_eq!(reserve(&set("8-15,24-31"), Some(&cores), 3).to_list(), "8-9,24-25");
        // Unknown cores: the ranges' presumed siblings, else the lowest CPUs.
        assert_eq!(reserve(&set("8-15,24-31"), None, 3).to_list(), "8-9,24-25");
        assert_eq!(reserve(&set("0-31,64-95"), None, 2).to_list(), "0,64");
        assert_eq!(reserve(&set("0-15"), None, 3).to_list(), "0-2");
        assert_eq!(reserve(&set("0-3,8-9"), None, 3).to_list(), "0-2");
        assert_eq!(reserve(&set("8-15,24-31"), None, 0).to_list(), "");
        assert_eq!(reserve(&set("0-3"), None, 9).to_list(), "0-3");
    }

    #[test]
    fn too_few_cpus_is_no_split() {
        assert_eq!(split(&set("0"), &[1, 1]), None);
        assert_eq!(split(&set("0-7"), &[]), None);
    }
}
