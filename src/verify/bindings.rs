//! `verify --compare`'s BINDINGS list: the grammar, parsed into labelled choices, and each
//! choice resolved to a `crate::binding::Binding` against the host's nodes (`HostNodes`, which
//! the caller reads; `auto` is the plan's recommendation, which the caller gives). Pure code.
//!
//! Not here: the schedule, the statistics and the verdict (`compare`), running the trials
//! (`trials`).
//!
//! BINDINGS grammar (a comma followed by a digit continues the list before it, so
//! `nodes=0,2,4,6` is one entry):
//!
//! ```text
//! BINDINGS := ENTRY (',' ENTRY)*
//! ENTRY    := 'none' | 'auto' | 'union' | 'per-rank' | PART ('/' PART)*
//!             (`union`: the plan's binding, the whole engine on its GPUs' nodes, as `auto`;
//!             `per-rank`: the same, then each rank's worker bound to its own GPU's node,
//!             `crate::supervise::ranks`, for an instance whose GPUs span nodes)
//! PART     := 'nodes=' LIST        CPUs of these nodes, memory bound to them (-N LIST -m LIST)
//!           | 'cpus=' LIST         these CPUs (--physcpubind)
//!           | 'mem=' LIST          --membind LIST
//!           | 'preferred=' NODE    --preferred NODE
//!           | 'interleave=' LIST   --interleave LIST
//! LIST     := a cpulist such as 0-3,8
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::binding::{Binding, MemPolicy};
use crate::host::cpuset::CpuSet;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("--compare: empty binding list (e.g. none,auto,nodes=0-3)")]
    Empty,
    #[error("--compare entry `{entry}`: {why}")]
    Entry { entry: String, why: String },
    #[error("--compare entry `{entry}` is given twice")]
    Duplicate { entry: String },
    #[error("binding `{label}`: {why}")]
    Resolve { label: String, why: String },
}

/// One entry of BINDINGS, as the user wrote it (normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BindingChoice {
    None,
    Auto,
    Union,
    #[serde(rename = "per-rank")]
    PerRank,
    Explicit {
        nodes: Option<CpuSet>,
        cpus: Option<CpuSet>,
        memory: Option<MemChoice>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "nodes", rename_all = "lowercase")]
pub enum MemChoice {
    Bind(CpuSet),
    Preferred(u32),
    Interleave(CpuSet),
}

/// A labelled entry: the label names its sub-run directories and table rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    pub choice: BindingChoice,
}

impl Choice {
    /// Directory name of this binding's sub-runs (`/` is not allowed in a file name).
    pub fn dir_name(&self) -> String {
        self.label.replace('/', "+")
    }
}

/// Splits BINDINGS into entries: a comma followed by a digit continues the current list.
fn split_entries(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(',') {
        let piece = piece.trim();
        let continues = piece.starts_with(|c: char| c.is_ascii_digit());
        match out.last_mut() {
            Some(last) if continues && last.contains('=') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

/// Parses BINDINGS (`none,auto,nodes=0-3,nodes=0,2,4,6,cpus=0-15/mem=0`).
pub fn parse_bindings(text: &str) -> Result<Vec<Choice>, CompareError> {
    let mut out: Vec<Choice> = Vec::new();
    for entry in split_entries(text) {
        if entry.is_empty() {
            if text.trim().is_empty() {
                return Err(CompareError::Empty);
            }
            return Err(CompareError::Entry {
                entry: text.to_string(),
                why: "empty entry (two commas in a row?)".into(),
            });
        }
        let choice = parse_entry(&entry)?;
        let label = label(&choice);
        if out.iter().any(|c| c.label == label) {
            return Err(CompareError::Duplicate { entry });
        }
        out.push(Choice { label, choice });
    }
    if out.is_empty() {
        return Err(CompareError::Empty);
    }
    Ok(out)
}

fn parse_entry(entry: &str) -> Result<BindingChoice, CompareError> {
    let bad = |why: String| CompareError::Entry { entry: entry.to_string(), why };
    match entry {
        "none" => return Ok(BindingChoice::None),
        "auto" => return Ok(BindingChoice::Auto),
        "union" => return Ok(BindingChoice::Union),
        "per-rank" => return Ok(BindingChoice::PerRank),
        _ => {}
    }
    let (mut nodes, mut cpus, mut memory) = (None, None, None);
    for part in entry.split('/') {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            bad(format!(
                "`{part}` is not KEY=LIST (keys: nodes, cpus, mem, preferred, interleave; \
                 or the words none, auto, union, per-rank)"
            ))
        })?;
        let list = || {
            let set = CpuSet::parse_list(value).map_err(|e| bad(format!("{key}={value}: {e}")))?;
            if set.is_empty() {
                return Err(bad(format!("{key}= needs at least one id")));
            }
            Ok(set)
        };
        let twice = |what: &str| bad(format!("{what} is given twice"));
        match key {
            "nodes" if nodes.is_none() => nodes = Some(list()?),
            "cpus" if cpus.is_none() => cpus = Some(list()?),
            "mem" | "preferred" | "interleave" if memory.is_some() => {
                return Err(twice("the memory policy"))
            }
            "mem" => memory = Some(MemChoice::Bind(list()?)),
            "interleave" => memory = Some(MemChoice::Interleave(list()?)),
            "preferred" => {
                let n = value
                    .parse::<u32>()
                    .map_err(|_| bad(format!("preferred={value}: expected one node number")))?;
                memory = Some(MemChoice::Preferred(n));
            }
            "nodes" | "cpus" => return Err(twice(key)),
            other => {
                return Err(bad(format!(
                    "unknown key `{other}` (keys: nodes, cpus, mem, preferred, interleave)"
                )))
            }
        }
    }
    if nodes.is_some() && cpus.is_some() {
        return Err(bad("give nodes= or cpus=, not both".into()));
    }
    Ok(BindingChoice::Explicit { nodes, cpus, memory })
}

/// The canonical text of a choice (lists normalised: `nodes=0,1,2,3` -> `nodes=0-3`).
pub fn label(c: &BindingChoice) -> String {
    match c {
        BindingChoice::None => "none".into(),
        BindingChoice::Auto => "auto".into(),
        BindingChoice::Union => "union".into(),
        BindingChoice::PerRank => "per-rank".into(),
        BindingChoice::Explicit { nodes, cpus, memory } => {
            let mut parts = Vec::new();
            if let Some(n) = nodes {
                parts.push(format!("nodes={n}"));
            }
            if let Some(c) = cpus {
                parts.push(format!("cpus={c}"));
            }
            match memory {
                Some(MemChoice::Bind(m)) => parts.push(format!("mem={m}")),
                Some(MemChoice::Preferred(n)) => parts.push(format!("preferred={n}")),
                Some(MemChoice::Interleave(m)) => parts.push(format!("interleave={m}")),
                None => {}
            }
            parts.join("/")
        }
    }
}

/// The host's NUMA nodes and their CPUs, as a binding must fit them (read by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNodes {
    pub nodes: BTreeMap<u32, CpuSet>,
}

impl HostNodes {
    pub fn all_cpus(&self) -> CpuSet {
        self.nodes.values().fold(CpuSet::new(), |a, b| a.union(b))
    }

    fn node_list(&self) -> String {
        self.nodes.keys().copied().collect::<CpuSet>().to_list()
    }
}

/// Resolves a choice to the binding applied. `auto` is the plan's recommendation, given by the
/// caller (planning needs the host's GPUs).
pub fn resolve(
    c: &Choice,
    host: &HostNodes,
    auto: Option<&Binding>,
) -> Result<Binding, CompareError> {
    let err = |why: String| CompareError::Resolve { label: c.label.clone(), why };
    let check_nodes = |set: &CpuSet| -> Result<(), CompareError> {
        match set.iter().find(|n| !host.nodes.contains_key(n)) {
            Some(n) => Err(err(format!(
                "NUMA node {n} does not exist on this host (nodes {})",
                host.node_list()
            ))),
            None => Ok(()),
        }
    };
    match &c.choice {
        BindingChoice::None => Ok(Binding::none()),
        BindingChoice::Auto | BindingChoice::Union | BindingChoice::PerRank => {
            auto.cloned().ok_or_else(|| {
                err(format!(
                    "no plan recommendation is available for `{}` (see the plan error above)",
                    c.label
                ))
            })
        }
        BindingChoice::Explicit { nodes, cpus, memory } => {
            let mut b = Binding::none();
            if let Some(n) = nodes {
                check_nodes(n)?;
                b.cpu_nodes = n.iter().collect();
                b.cpus = Some(n.iter().fold(CpuSet::new(), |a, id| a.union(&host.nodes[&id])));
                b.memory = MemPolicy::Bind(n.iter().collect());
            }
            if let Some(set) = cpus {
                let all = host.all_cpus();
                if !set.is_subset(&all) {
                    return Err(err(format!(
                        "CPUs {} do not exist on this host (CPUs {all})",
                        set.difference(&all)
                    )));
                }
                b.cpus = Some(set.clone());
            }
            match memory {
                Some(MemChoice::Bind(m)) => {
                    check_nodes(m)?;
                    b.memory = MemPolicy::Bind(m.iter().collect());
                }
                Some(MemChoice::Interleave(m)) => {
                    check_nodes(m)?;
                    b.memory = MemPolicy::Interleave(m.iter().collect());
                }
                Some(MemChoice::Preferred(n)) => {
                    check_nodes(&std::iter::once(*n).collect())?;
                    b.memory = MemPolicy::Preferred(*n);
                }
                None => {}
            }
            Ok(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    #[test]
    fn commas_inside_nodes_lists_continue_the_entry() {
        let c = parse_bindings("none,auto,nodes=0-3,nodes=0,2,4,6").unwrap();
        let labels: Vec<&str> = c.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["none", "auto", "nodes=0-3", "nodes=0,2,4,6"]);
        assert_eq!(
            c[3].choice,
            BindingChoice::Explicit { nodes: Some(cs("0,2,4,6")), cpus: None, memory: None }
        );
        let c = parse_bindings("cpus=0-15/mem=0, cpus=1").unwrap();
        assert_eq!(c[0].label, "cpus=0-15/mem=0");
        assert_eq!(c[0].dir_name(), "cpus=0-15+mem=0");
        assert_eq!(c[1].label, "cpus=1");
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry() {
        for (text, want) in [
            ("", "empty"),
            ("none,,auto", "empty entry"),
            ("fast", "not KEY=LIST"),
            ("nodes=x", "nodes=x"),
            ("cpus=1/nodes=0", "not both"),
            ("mem=0/preferred=1", "twice"),
            ("bogus=1", "unknown key"),
            ("none,none", "twice"),
            ("nodes=0,1,nodes=0-1", "twice"),
        ] {
            let e = parse_bindings(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn resolve_against_the_host() {
        let host = HostNodes { nodes: BTreeMap::from([(0, cs("0-3")), (1, cs("4-7"))]) };
        let c = parse_bindings("nodes=1,cpus=0-1/mem=0,none,preferred=1").unwrap();
        let b = resolve(&c[0], &host, None).unwrap();
        assert_eq!(b.numactl_args(), ["--cpunodebind=1", "--membind=1"]);
        assert_eq!(b.cpus, Some(cs("4-7")));
        let b = resolve(&c[1], &host, None).unwrap();
        assert_eq!(b.numactl_args(), ["--physcpubind=0-1", "--membind=0"]);
        assert!(resolve(&c[2], &host, None).unwrap().is_none());
        assert_eq!(resolve(&c[3], &host, None).unwrap().memory, MemPolicy::Preferred(1));
        // `union` and `per-rank` both start from the plan's binding (per-rank then binds ranks).
        let plan = resolve(&c[0], &host, None).unwrap();
        let c2 = parse_bindings("union,per-rank").unwrap();
        assert_eq!(c2[1].choice, BindingChoice::PerRank);
        assert_eq!((c2[0].label.as_str(), c2[1].dir_name().as_str()), ("union", "per-rank"));
        assert_eq!(resolve(&c2[0], &host, Some(&plan)).unwrap(), plan);
        assert_eq!(resolve(&c2[1], &host, Some(&plan)).unwrap(), plan);
        let e = resolve(&c2[1], &host, None).unwrap_err().to_string();
        assert!(e.contains("for `per-rank`"), "{e}");
        let c = parse_bindings("nodes=2,cpus=9,auto").unwrap();
        assert!(resolve(&c[0], &host, None).unwrap_err().to_string().contains("node 2"));
        assert!(resolve(&c[1], &host, None).unwrap_err().to_string().contains("CPUs 9"));
        assert!(resolve(&c[2], &host, None).is_err());
    }
}
