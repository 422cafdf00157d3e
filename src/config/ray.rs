//! `[ray]`: the agent's role in a multi-node Ray cluster (docs/ray.md). Unset (the default), the
//! engine runs as configured. `role = "head"` runs `ray start --head --block` as the node's
//! supervised process, waits for `expected_nodes` (and `expected_gpus`) to join, then launches
//! the engine command as the cluster's driver; `role = "worker"` runs `ray start --address
//! HEAD:PORT --block` and follows its head. `serve --role` overrides `role`.
//!
//! Plain settings and their checks only: `crate::supervise::ray` runs the roles.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's part in the Ray cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RayRole {
    /// `ray start --head`; the engine (the driver) starts once every node joined.
    Head,
    /// `ray start --address HEAD:PORT`; no engine of its own.
    Worker,
}

impl RayRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RayRole::Head => "head",
            RayRole::Worker => "worker",
        }
    }
}

/// `[ray]` as written; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RayConfig {
    /// `head` or `worker`; unset: no Ray role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RayRole>,
    /// The `ray` program (a path, or a name looked up on PATH). Default `ray`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ray: Option<PathBuf>,
    /// The head node's address (an IP the workers reach). Both roles: the head advertises it
    /// (`--node-ip-address`) and the driver joins it; a worker connects to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The head's GCS port (`ray start --port`). Default 6379.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// This node's address as Ray advertises it (`--node-ip-address`); head default: `head`;
    /// worker default: what Ray picks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    /// The head's dashboard port, on 127.0.0.1: the head reads the node list there. Default 8265.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_port: Option<u16>,
    /// Head: the nodes (itself included) that must be alive before the engine starts, and
    /// whose loss stops it. Default 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_nodes: Option<u32>,
    /// Head: the GPUs the cluster must have before the engine starts (0: not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_gpus: Option<u32>,
    /// This node's `--num-gpus`; default: the instance's GPU count from the plan (0 unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_gpus: Option<u32>,
    /// Head: how long the nodes may take to join; worker: how long one `ray start` may take
    /// to join a head that answers. Default 10m.
    #[serde(with = "super::opt_duration", skip_serializing_if = "Option::is_none")]
    pub join_timeout: Option<Duration>,
    /// More arguments for `ray start` (`--num-cpus`, `--object-store-memory`, `--temp-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_args: Option<Vec<String>>,
}

/// `[ray]` with every default filled in, for a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaySettings {
    pub role: RayRole,
    pub ray: PathBuf,
    pub head: String,
    pub port: u16,
    pub node_ip: Option<String>,
    pub dashboard_port: u16,
    pub expected_nodes: u32,
    pub expected_gpus: u32,
    pub num_gpus: Option<u32>,
    pub join_timeout: Duration,
    pub start_args: Vec<String>,
}

/// A `[ray]` section that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RayConfigError {
    #[error("ray.role = \"{role}\" needs ray.head (the head node's address)")]
    NoHead { role: &'static str },
    #[error("ray.head = {head:?}: not an IP address or host name")]
    BadHead { head: String },
    #[error("ray.{key} = 0: must be between 1 and 65535")]
    PortZero { key: &'static str },
    #[error("ray.expected_nodes = 0: at least 1 (the head itself)")]
    NoNodes,
    #[error("ray.join_timeout = 0s: at least 1s")]
    NoJoinTime,
    #[error("ray.role = \"{role}\" with launch.mode = \"container\": Ray roles run in bare or numactl mode")]
    Container { role: &'static str },
}

impl RayConfig {
    /// The settings for the configured role, or `None` without one.
    pub fn settings(&self) -> Result<Option<RaySettings>, RayConfigError> {
        let Some(role) = self.role else { return Ok(None) };
        let head = self.head.clone().ok_or(RayConfigError::NoHead { role: role.as_str() })?;
        let host_ok = !head.is_empty()
            && head.chars().all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
        if !host_ok {
            return Err(RayConfigError::BadHead { head });
        }
        for (key, port) in [("port", self.port), ("dashboard_port", self.dashboard_port)] {
            if port == Some(0) {
                return Err(RayConfigError::PortZero { key });
            }
        }
        let expected_nodes = self.expected_nodes.unwrap_or(2);
        if expected_nodes == 0 {
            return Err(RayConfigError::NoNodes);
        }
        let join_timeout = self.join_timeout.unwrap_or(Duration::from_secs(600));
        if join_timeout < Duration::from_secs(1) {
            return Err(RayConfigError::NoJoinTime);
        }
        Ok(Some(RaySettings {
            role,
            ray: self.ray.clone().unwrap_or_else(|| PathBuf::from("ray")),
            head,
            port: self.port.unwrap_or(6379),
            node_ip: self.node_ip.clone(),
            dashboard_port: self.dashboard_port.unwrap_or(8265),
            expected_nodes,
            expected_gpus: self.expected_gpus.unwrap_or(0),
            num_gpus: self.num_gpus,
            join_timeout,
            start_args: self.start_args.clone().unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RayConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn no_role_is_no_settings() {
        assert_eq!(parse("head = \"10.0.0.1\"").settings(), Ok(None));
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse("role = \"worker\"\nhead = \"10.213.0.1\"").settings().unwrap().unwrap();
        assert_eq!(s.role, RayRole::Worker);
        assert_eq!(s.ray, PathBuf::from("ray"));
        assert_eq!(
            (s.port, s.dashboard_port, s.expected_nodes, s.expected_gpus),
            (6379, 8265, 2, 0)
        );
        assert_eq!(s.join_timeout, Duration::from_secs(600));
        assert_eq!(s.num_gpus, None);
    }

    #[test]
    fn refusals_name_the_key() {
        let e = parse("role = \"head\"").settings().unwrap_err();
        assert_eq!(e.to_string(), "ray.role = \"head\" needs ray.head (the head node's address)");
        let e = parse("role = \"head\"\nhead = \"a b\"").settings().unwrap_err();
        assert_eq!(e.to_string(), "ray.head = \"a b\": not an IP address or host name");
        // Port 0 (audit of wave 9): `ray start --port 0` picks a random port no worker knows.
        let e = parse("role = \"head\"\nhead = \"h\"\nport = 0").settings().unwrap_err();
        assert_eq!(e.to_string(), "ray.port = 0: must be between 1 and 65535");
        let e = parse("role = \"head\"\nhead = \"h\"\ndashboard_port = 0").settings().unwrap_err();
        assert_eq!(e.to_string(), "ray.dashboard_port = 0: must be between 1 and 65535");
        let e = parse("role = \"head\"\nhead = \"h\"\nexpected_nodes = 0").settings().unwrap_err();
        assert_eq!(e, RayConfigError::NoNodes);
        let e =
            parse("role = \"head\"\nhead = \"h\"\njoin_timeout = \"0s\"").settings().unwrap_err();
        assert_eq!(e, RayConfigError::NoJoinTime);
        assert!(toml::from_str::<RayConfig>("role = \"boss\"").is_err());
    }
}
