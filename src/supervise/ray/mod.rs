//! Multi-node Ray roles (docs/ray.md): with `[ray] role` set, the engine the supervisor runs is
//! `nodeagent __ray-member` (the member process), so Ray's daemons run under the node's
//! binding and in the engine's cgroup, and every supervisor rule (restarts, leftovers, clean
//! stop) applies to them unchanged.
//!
//! - head: `ray start --head --block`; waits until `expected_nodes` (and `expected_gpus`) are
//!   alive in the dashboard's node list (`nodes`), then starts the engine command as the
//!   cluster's driver (`RAY_ADDRESS` set to the head); ready when the driver is. Losing any node
//!   of the cluster the driver started on (or `ray start`, or the driver) stops the driver and
//!   Ray, and the member exits 1: the supervisor restarts the group from the head, and the
//!   driver starts again only after every worker rejoined. No half cluster answers `/health`.
//! - worker: `ray start --address HEAD:PORT --block`, answering the agent's `/health` itself
//!   (200 once joined); when the head's GCS stops answering or `ray start` ends (its raylet
//!   died), Ray is stopped and started again once the head answers. SIGTERM stops it all.
//!
//! `member` holds the effects (processes, HTTP, the cluster file); `nodes` the pure reading of
//! the node list; this file the pure parts the agent shares with `status`: the member's argv
//! and the cluster file (`ray-cluster.json` in the state dir) with its rendering. Not here:
//! the `[ray]` keys (`crate::config::ray`).

pub mod member;
pub mod nodes;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ray::{RayRole, RaySettings};

pub use nodes::Member;

/// The cluster file the member writes in the state dir and `status` reads.
pub const CLUSTER_FILE: &str = "ray-cluster.json";

/// What the member last saw of the cluster (`ray-cluster.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub role: RayRole,
    /// `HEAD:PORT`.
    pub head: String,
    /// What the member is doing: head `starting`, `waiting for nodes`, `serving`, `lost a
    /// member`, `stopping`; worker `waiting for the head`, `joining`, `joined`, `rejoining`,
    /// `stopping`.
    pub phase: String,
    pub expected_nodes: u32,
    pub expected_gpus: u32,
    /// The head's last node list (a worker lists none: the head's dashboard is the head's).
    pub members: Vec<Member>,
    /// RFC 3339 time of this record.
    pub updated: String,
}

/// The member's argv: `self_exe __ray-member ...` with the settings, `num_gpus` (the plan's GPU
/// count unless `ray.num_gpus` is set), the address a worker's `/health` listens on, the state
/// dir (for the cluster file) and, after `--`, the engine command (the head's driver).
pub fn member_argv(
    self_exe: &str,
    s: &RaySettings,
    plan_gpus: u32,
    health: std::net::SocketAddr,
    state_dir: &Path,
    engine: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = [
        self_exe,
        "__ray-member",
        "--role",
        s.role.as_str(),
        "--ray",
        &s.ray.display().to_string(),
        "--head",
        &s.head,
        "--port",
        &s.port.to_string(),
        "--dashboard-port",
        &s.dashboard_port.to_string(),
        "--expected-nodes",
        &s.expected_nodes.to_string(),
        "--expected-gpus",
        &s.expected_gpus.to_string(),
        "--num-gpus",
        &s.num_gpus.unwrap_or(plan_gpus).to_string(),
        "--join-timeout",
        &humantime::format_duration(s.join_timeout).to_string(),
        "--health-listen",
        &health.to_string(),
        "--state-dir",
        &state_dir.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    if let Some(ip) = &s.node_ip {
        argv.extend(["--node-ip".to_string(), ip.clone()]);
    }
    for a in &s.start_args {
        // `=` form: a value that starts with `-` stays one argument.
        argv.push(format!("--start-arg={a}"));
    }
    argv.push("--".into());
    if s.role == RayRole::Head {
        argv.extend(engine.iter().cloned());
    }
    argv
}

/// Reads the cluster file of a state dir; `None` when there is none (no Ray role) or it is
/// unreadable (a member that never wrote one).
pub fn read_cluster(state_dir: &Path) -> Option<ClusterRecord> {
    let text = std::fs::read(state_dir.join(CLUSTER_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The record as `status` prints it: the role line, then one line per member.
pub fn render(r: &ClusterRecord) -> String {
    let (n, g) = nodes::alive(&r.members);
    let mut out = format!("ray:           {} of {} ({})\n", r.role.as_str(), r.head, r.phase);
    if r.role == RayRole::Head {
        out += &format!(
            "ray nodes:     {n} alive of {} expected, {g} GPU(s) of {} expected\n",
            r.expected_nodes, r.expected_gpus
        );
        for m in &r.members {
            out += &format!(
                "  {:<14}{:<17}{:<7}{:<6}{}\n",
                nodes::short(&m.node_id),
                m.address,
                if m.alive { "alive" } else { "dead" },
                m.gpus,
                if m.head { "head" } else { "worker" }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(role: RayRole) -> RaySettings {
        RaySettings {
            role,
            ray: "/venv/bin/ray".into(),
            head: "10.213.0.1".into(),
            port: 6380,
            node_ip: None,
            dashboard_port: 8266,
            expected_nodes: 2,
            expected_gpus: 0,
            num_gpus: None,
            join_timeout: Duration::from_secs(120),
            start_args: vec!["--num-cpus".into(), "1".into()],
        }
    }

    #[test]
    fn head_argv_carries_the_driver_after_the_settings() {
        let engine = ["python".to_string(), "engine.py".into(), "--port".into(), "8000".into()];
        let argv = member_argv(
            "/bin/nodeagent",
            &settings(RayRole::Head),
            4,
            "127.0.0.1:8000".parse().unwrap(),
            Path::new("/run/nodeagent"),
            &engine,
        );
        let text = argv.join(" ");
        assert_eq!(
            text,
            "/bin/nodeagent __ray-member --role head --ray /venv/bin/ray --head 10.213.0.1 \
             --port 6380 --dashboard-port 8266 --expected-nodes 2 --expected-gpus 0 \
             --num-gpus 4 --join-timeout 2m --health-listen 127.0.0.1:8000 \
             --state-dir /run/nodeagent --start-arg=--num-cpus --start-arg=1 -- python \
             engine.py --port 8000"
        );
    }

    #[test]
    fn worker_argv_has_no_driver_and_the_configured_gpus_win() {
        let mut s = settings(RayRole::Worker);
        s.num_gpus = Some(8);
        s.node_ip = Some("10.213.0.2".into());
        let argv = member_argv(
            "na",
            &s,
            2,
            "127.0.0.1:9000".parse().unwrap(),
            Path::new("/s"),
            &["python".into()],
        );
        assert_eq!(argv.last().unwrap(), "--");
        let gpus = argv.iter().position(|a| a == "--num-gpus").unwrap();
        assert_eq!(argv[gpus + 1], "8");
        assert!(argv.join(" ").contains("--node-ip 10.213.0.2"));
    }

    #[test]
    fn render_lists_members() {
        let r = ClusterRecord {
            role: RayRole::Head,
            head: "10.213.0.1:6380".into(),
            phase: "serving".into(),
            expected_nodes: 2,
            expected_gpus: 0,
            members: vec![
                Member {
                    node_id: "27474896ca2a307ac74edfc1".into(),
                    address: "10.213.0.1".into(),
                    alive: true,
                    head: true,
                    gpus: 0.0,
                },
                Member {
                    node_id: "c25dc11c6e3f9ad2963510dd".into(),
                    address: "10.213.0.2".into(),
                    alive: false,
                    head: false,
                    gpus: 2.0,
                },
            ],
            updated: "2026-12-06T18:00:00Z".into(),
        };
        assert_eq!(
            render(&r),
            "ray:           head of 10.213.0.1:6380 (serving)\n\
             ray nodes:     1 alive of 2 expected, 0 GPU(s) of 0 expected\n\
             \x20 27474896ca2a  10.213.0.1       alive  0     head\n\
             \x20 c25dc11c6e3f  10.213.0.2       dead   2     worker\n"
        );
    }
}
