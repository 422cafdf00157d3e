//! CPU and node lists in the kernel's "cpulist" form (`0-15,32-47`), as printed by sysfs,
//! `numactl`, `mx-smi topo -m` and `nvidia-smi topo -m`, plus the hex mask form
//! (`ffff0000,0000ffff`, most significant 32-bit word first) of `cpumap` files.
//!
//! This module only parses and formats; it knows nothing about where a list came from.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest CPU or node id accepted. Linux's `NR_CPUS` tops out at 8192; anything beyond is a
/// garbled field (for instance a CPU list glued to a node id), not a real CPU.
pub const MAX_ID: u32 = 65_535;

/// A set of CPU (or NUMA node) ids. Serialises as the cpulist string (`"0-15,32-47"`).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuSet(BTreeSet<u32>);

/// Why a cpulist or mask could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetError {
    #[error("invalid cpu list {text:?}: {reason}")]
    Invalid { text: String, reason: &'static str },
}

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `0-15,32-47`, `3`, `0-0,8-8`, with surrounding whitespace. An empty (or
    /// all-whitespace) string is the empty set: sysfs prints that for CPU-less nodes.
    pub fn parse_list(text: &str) -> Result<Self, CpuSetError> {
        let invalid = |reason| CpuSetError::Invalid { text: text.to_string(), reason };
        let mut set = BTreeSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Self(set));
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(invalid("empty element"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (parse_id(a.trim()), parse_id(b.trim())),
                None => (parse_id(part), parse_id(part)),
            };
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return Err(invalid("not a number or range"));
            };
            if lo > hi {
                return Err(invalid("range runs backwards"));
            }
            if hi > MAX_ID {
                return Err(invalid("id too large"));
            }
            set.extend(lo..=hi);
        }
        Ok(Self(set))
    }

    /// Parses a kernel bitmap mask such as `00000000,0000ffff` (`cpumap`, `/proc/PID/status`
    /// `Cpus_allowed`): comma-separated 32-bit hex words, most significant first.
    pub fn parse_mask(text: &str) -> Result<Self, CpuSetError> {
        let invalid = |reason| CpuSetError::Invalid { text: text.to_string(), reason };
        let trimmed = text.trim().trim_start_matches("0x");
        if trimmed.is_empty() {
            return Err(invalid("empty mask"));
        }
        let words: Vec<&str> = trimmed.split(',').collect();
        let mut set = BTreeSet::new();
        for (i, word) in words.iter().rev().enumerate() {
            let value = u32::from_str_radix(word.trim(), 16).map_err(|_| invalid("not hex"))?;
            for bit in 0..32u32 {
                if value & (1 << bit) != 0 {
                    let id = u32::try_from(i)
                        .ok()
                        .and_then(|i| i.checked_mul(32))
                        .and_then(|b| b.checked_add(bit))
                        .filter(|id| *id <= MAX_ID)
                        .ok_or_else(|| invalid("mask too wide"))?;
                    set.insert(id);
                }
            }
        }
        Ok(Self(set))
    }

    pub fn insert(&mut self, id: u32) {
        self.0.insert(id);
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.union(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.difference(&other.0).copied().collect())
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The cpulist form: `0-15,32-47`; the empty set is the empty string.
    pub fn to_list(&self) -> String {
        let mut out = String::new();
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !out.is_empty() {
                out.push(',');
            }
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(s)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({:?})", self.to_list())
    }
}

impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_list())
    }
}

impl<'de> Deserialize<'de> for CpuSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CpuSet::parse_list(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_ranges() {
        let set = CpuSet::parse_list("0-15,32-47").unwrap();
        assert_eq!(set.len(), 32);
        assert_eq!(set.to_list(), "0-15,32-47");
        assert_eq!(CpuSet::parse_list("0-0,8-8").unwrap().to_list(), "0,8");
        assert_eq!(CpuSet::parse_list(" 3 \n").unwrap().to_list(), "3");
        assert!(CpuSet::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(CpuSet::parse_list("0-").is_err());
        assert!(CpuSet::parse_list("5-3").is_err());
        assert!(CpuSet::parse_list("a,b").is_err());
        assert!(CpuSet::parse_list("1,,2").is_err());
        // A CPU list glued to a node id by tab expansion: "0-31,64-950".
        assert!(CpuSet::parse_list("0-31,64-950000").is_err());
    }

    #[test]
    fn parses_masks_most_significant_word_first() {
        assert_eq!(CpuSet::parse_mask("0000ffff").unwrap().to_list(), "0-15");
        assert_eq!(CpuSet::parse_mask("00000001,00000000").unwrap().to_list(), "32");
        assert_eq!(CpuSet::parse_mask("ffff0000,0000ffff").unwrap().to_list(), "0-15,48-63");
        assert!(CpuSet::parse_mask("zz").is_err());
    }

    proptest! {
        #[test]
        fn list_round_trips(ids in proptest::collection::btree_set(0u32..512, 0..64)) {
            let set: CpuSet = ids.iter().copied().collect();
            let again = CpuSet::parse_list(&set.to_list()).unwrap();
            prop_assert_eq!(set, again);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = CpuSet::parse_list(&s);
            let _ = CpuSet::parse_mask(&s);
        }
    }
}
