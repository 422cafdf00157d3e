//! A Node Feature Discovery local feature file (`nodeagent plan --format nfd`): the node's GPU
//! and NUMA layout, the recommended binding, and the last measured gain of that binding (from a
//! `verify --compare` run's `compare.json`), as labels NFD publishes on the Kubernetes node.
//!
//! NFD reads every file in `/etc/kubernetes/node-feature-discovery/features.d/` on the node
//! (the DaemonSet in `deploy/kubernetes/` writes this one there); each line is `name=value`.
//! The names use the `nodeagent.feature.node.kubernetes.io/` namespace, a subdomain of NFD's
//! own, which nfd-master accepts without configuration. Every value is a valid label value
//! (at most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric): lists are
//! joined with `_` (`0_1`), and a loss is `binding-loss-percent`, never a leading `-`.

use std::collections::BTreeMap;

use super::ExportError;
use crate::plan::Plan;
use crate::topology::Topology;

pub const PREFIX: &str = "nodeagent.feature.node.kubernetes.io/";

/// What a `verify --compare` run measured for the plan's binding (`auto`) against `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredGain {
    /// Mean throughput change of `auto` against `none`, in percent.
    pub percent: f64,
    /// The comparison's recommended binding, when it recommended one.
    pub best: Option<String>,
    /// Whether the differences were within noise.
    pub within_noise: Option<bool>,
}

/// Reads the gain of `auto` against `none` from a `compare.json` text (`file` names it in
/// errors): `bindings[label = "auto"].score_vs_none_pct.mean`, `best`, `within_noise`.
pub fn gain_from_compare(text: &str, file: &str) -> Result<MeasuredGain, ExportError> {
    let bad = |reason: String| ExportError::BadCompare { file: file.to_string(), reason };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let bindings =
        v["bindings"].as_array().ok_or_else(|| bad("no \"bindings\" list".to_string()))?;
    let auto = bindings
        .iter()
        .find(|b| b["label"] == "auto")
        .ok_or_else(|| bad("no binding labelled \"auto\" (compare none,auto)".to_string()))?;
    let percent = auto["score_vs_none_pct"]["mean"].as_f64().ok_or_else(|| {
        bad("\"auto\" has no score_vs_none_pct.mean (was \"none\" compared, and did auto run?)"
            .to_string())
    })?;
    Ok(MeasuredGain {
        percent,
        best: v["best"].as_str().map(str::to_string),
        within_noise: v["within_noise"].as_bool(),
    })
}

/// The feature file's text: a header comment, then one `name=value` per line, sorted.
pub fn feature_file(
    topo: &Topology,
    plan: &Plan,
    gain: Option<&MeasuredGain>,
    source_desc: &str,
) -> Result<String, ExportError> {
    if topo.gpus.is_empty() {
        return Err(ExportError::NoGpus { what: "nfd", source_desc: source_desc.to_string() });
    }
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        labels.insert(format!("{PREFIX}{k}"), label_value(&v));
    };
    put("gpu-vendor", format!("{:?}", topo.vendor).to_lowercase());
    put("gpu-count", topo.gpus.len().to_string());
    if let Some(gpu) = topo.gpus.first() {
        put("gpu-model", super::slurm::gres_type(gpu));
    }
    let cpu_nodes = topo.nodes.iter().filter(|n| n.has_cpus()).count();
    put("numa-nodes", cpu_nodes.to_string());
    let mut per_node: BTreeMap<u32, usize> = BTreeMap::new();
    for gpu in &topo.gpus {
        if let Some(n) = &gpu.numa_node {
            *per_node.entry(n.value).or_default() += 1;
        }
    }
    for (node, n) in &per_node {
        put(&format!("gpus-numa-node-{node}"), n.to_string());
    }
    let unknown = topo.gpus.iter().filter(|g| g.numa_node.is_none()).count();
    if unknown > 0 {
        put("gpus-numa-node-unknown", unknown.to_string());
    }
    put("instances", plan.instances.len().to_string());
    let bound = plan.instances.iter().any(|i| i.numactl.is_some());
    put("binding-recommended", bound.to_string());
    for (i, inst) in plan.instances.iter().enumerate() {
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("_");
        put(&format!("instance-{i}-gpus"), join(&inst.gpus));
        if !inst.numa_nodes.is_empty() {
            put(&format!("instance-{i}-numa-nodes"), join(&inst.numa_nodes));
        }
    }
    if let Some(g) = gain {
        let pct = format!("{:.1}", g.percent.abs());
        if g.percent >= 0.0 {
            put("binding-gain-percent", pct);
        } else {
            put("binding-loss-percent", pct);
        }
        if let Some(noise) = g.within_noise {
            put("binding-gain-within-noise", noise.to_string());
        }
        put("binding-best", g.best.clone().unwrap_or_else(|| "none-recommended".into()));
    }
    let mut out = format!(
        "# Node Feature Discovery local features of {source_desc}, written by nodeagent {}\n\
         # (plan --format nfd); NFD publishes each line as a node label.\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in labels {
        out.push_str(&format!("{k}={v}\n"));
    }
    Ok(out)
}

/// `text` as a valid Kubernetes label value: characters outside `[A-Za-z0-9._-]` become `_`,
/// leading and trailing non-alphanumerics are dropped, at most 63 characters.
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let mut v: String =
        mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(63).collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("-23.1"), "23.1");
        assert_eq!(label_value("nodes=0,1"), "nodes_0_1");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("a-"), "a");
    }

    #[test]
    fn compare_json_errors_name_the_file() {
        let e = gain_from_compare("{}", "runs/compare.json").unwrap_err().to_string();
        assert_eq!(e, "runs/compare.json: not a compare summary: no \"bindings\" list");
        let e = gain_from_compare("nope", "c.json").unwrap_err().to_string();
        assert!(e.starts_with("c.json: not a compare summary: not JSON"), "{e}");
        let e = gain_from_compare(r#"{"bindings":[{"label":"none"}]}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no binding labelled \"auto\""), "{e}");
    }
}
