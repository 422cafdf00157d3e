//! The Ray cluster's members as the head's dashboard lists them (`GET /api/v0/nodes`, the
//! state API behind `ray list nodes --format json`), and the head's verdicts over them: has
//! the cluster formed (enough alive nodes and GPUs), has a member of the formed cluster been
//! lost. Pure: text in, records and verdicts out.
//!
//! Why the dashboard's REST API: it is the same reading as `ray list nodes` (a dead node stays
//! listed as `DEAD`), one local HTTP GET of a few hundred bytes per node, where `ray status` or
//! `ray list nodes` start a Python interpreter and import Ray each time (seconds of CPU per
//! poll on a small host).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub address: String,
    pub alive: bool,
    pub head: bool,
    /// `resources_total.GPU` (0 when absent).
    pub gpus: f64,
}

/// A node list that is not the dashboard's answer.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("ray node list: not JSON: {source}")]
    Json { source: serde_json::Error },
    #[error("ray node list: the dashboard answered result = false: {msg}")]
    Refused { msg: String },
}

#[derive(Deserialize)]
struct Answer {
    result: bool,
    #[serde(default)]
    msg: String,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    result: Listing,
}

#[derive(Deserialize)]
struct Listing {
    result: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    node_id: String,
    node_ip: String,
    #[serde(default)]
    is_head_node: bool,
    state: String,
    #[serde(default)]
    resources_total: std::collections::BTreeMap<String, f64>,
}

/// The members in the dashboard's `/api/v0/nodes` answer, in its order.
pub fn parse(body: &[u8]) -> Result<Vec<Member>, NodesError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|source| NodesError::Json { source })?;
    let data = match (answer.result, answer.data) {
        (true, Some(d)) => d,
        (_, _) => return Err(NodesError::Refused { msg: answer.msg }),
    };
    Ok(data
        .result
        .result
        .into_iter()
        .map(|n| Member {
            gpus: n.resources_total.get("GPU").copied().unwrap_or(0.0),
            node_id: n.node_id,
            address: n.node_ip,
            alive: n.state == "ALIVE",
            head: n.is_head_node,
        })
        .collect())
}

/// The alive members' count and GPUs.
pub fn alive(members: &[Member]) -> (u32, f64) {
    let live = members.iter().filter(|m| m.alive);
    live.fold((0, 0.0), |(n, g), m| (n + 1, g + m.gpus))
}

/// Formed: at least `nodes` alive and (when `gpus` > 0) at least `gpus` GPUs among them.
pub fn formed(members: &[Member], nodes: u32, gpus: u32) -> bool {
    let (n, g) = alive(members);
    n >= nodes && (gpus == 0 || g + 1e-9 >= f64::from(gpus))
}

/// The ids of the alive members: the cluster the engine was started on.
pub fn alive_ids(members: &[Member]) -> BTreeSet<String> {
    members.iter().filter(|m| m.alive).map(|m| m.node_id.clone()).collect()
}

/// The first member of `formed_on` (the cluster the engine started on) that is no longer
/// alive in `now`, named `id (address)`; a node missing from the list counts as lost.
pub fn lost(formed_on: &BTreeSet<String>, now: &[Member]) -> Option<String> {
    let live = alive_ids(now);
    let gone = formed_on.iter().find(|id| !live.contains(*id))?;
    let address = now.iter().find(|m| &m.node_id == gone).map_or("?", |m| m.address.as_str());
    Some(format!("{} ({address})", short(gone)))
}

/// A node id cut to 12 characters, as messages show it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/ray-engine/nodes/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn head_alone_is_not_formed_for_two() {
        let m = parse(&fixture("head-only.json")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].address, "192.0.2.2");
        assert!(m[0].head && m[0].alive);
        assert_eq!(m[0].gpus, 0.0);
        assert!(!formed(&m, 2, 0));
        assert!(formed(&m, 1, 0));
    }

    #[test]
    fn two_alive_form_with_the_workers_gpus() {
        let m = parse(&fixture("two-alive.json")).unwrap();
        assert_eq!(alive(&m), (2, 2.0));
        assert!(formed(&m, 2, 2));
        assert!(!formed(&m, 2, 3));
        assert_eq!(m[1].node_id, "c25dc11c6e3f9ad2963510ddd58ebc37235ae895f3713a813e7ea80b");
        assert!(!m[1].head);
    }

    #[test]
    fn a_dead_worker_is_lost() {
        let on = alive_ids(&parse(&fixture("two-alive.json")).unwrap());
        let now = parse(&fixture("worker-dead.json")).unwrap();
        assert_eq!(alive(&now), (1, 0.0));
        assert!(!now[1].alive);
        assert_eq!(lost(&on, &now).as_deref(), Some("c25dc11c6e3f (192.0.2.2)"));
        // The same cluster is no loss; a node missing from the list is one.
        assert_eq!(lost(&on, &parse(&fixture("two-alive.json")).unwrap()), None);
        assert_eq!(
            lost(&on, &parse(&fixture("head-only.json")).unwrap()).as_deref(),
            Some("c25dc11c6e3f (?)")
        );
    }

    #[test]
    fn not_the_answer_is_an_error() {
        let e = parse(b"<html>").unwrap_err();
        assert!(e.to_string().starts_with("ray node list: not JSON: "), "{e}");
        let e = parse(br#"{"result": false, "msg": "timeout", "data": null}"#).unwrap_err();
        assert_eq!(e.to_string(), "ray node list: the dashboard answered result = false: timeout");
    }
}
