//! Disjoint cores for instances that share CPUs (issue 13, rule 6 of the plan): a shared CPU
//! set is cut into one part per instance, sized by each instance's GPU count. Pure, over CPU
//! lists only; it knows nothing of instances or the topology (`plan/mod.rs` groups them).
//!
//! The host facts carry no SMT sibling lists, so the cut is by contiguous ranges: each range of
//! the list (`0-31` and `64-95` of `0-31,64-95`) is cut in the same proportions, and part `i`
//! takes its slice of every range. Where Linux numbers the second hardware thread of core `c`
//! as `c + cores` (the usual x86 and arm64 enumeration, which gives such lists), this keeps the
//! siblings of a core in one part; where it does not, siblings may be split.

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

    #[test]
    fn too_few_cpus_is_no_split() {
        assert_eq!(split(&set("0"), &[1, 1]), None);
        assert_eq!(split(&set("0-7"), &[]), None);
    }
}
