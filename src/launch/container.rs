//! Container launch settings (the `[container]` section of a host profile / config) and the
//! pure translation of settings + binding + engine argv into what the Docker Engine API is
//! asked to create. The seed's hand-typed equivalent:
//! `docker run -itd --device=/dev/dri --device=/dev/mxcd --group-add video --network=host
//!  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --shm-size 256gb
//!  --ulimit memlock=-1 -v /data/models:/data IMAGE`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[container]` in a profile or config. Every field is optional in TOML; defaults follow the
/// MetaX container conventions where one exists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerSettings {
    /// Image reference, e.g. `cr.metax-tech.com/public-ai-release/c500/vllm:maca2.27.0.9-...`.
    pub image: String,
    /// Host device paths passed through (`/dev/mxcd`, `/dev/dri`), optionally `HOST:CONTAINER`.
    pub devices: Vec<String>,
    /// Supplementary groups (`video`).
    pub group_add: Vec<String>,
    /// Network mode (`host`).
    pub network: Option<String>,
    /// `/dev/shm` size, e.g. `256gb`.
    pub shm_size: Option<String>,
    /// Locked-memory limit; `-1` is unlimited.
    pub memlock: Option<i64>,
    /// Bind mounts `HOST:CONTAINER[:ro]`.
    pub volumes: Vec<String>,
    /// `--security-opt` values (`seccomp=unconfined`, `apparmor=unconfined`).
    pub security_opt: Vec<String>,
    /// Extra environment inside the container.
    pub env: BTreeMap<String, String>,
    /// Run an init process as PID 1 (`--init`), so the engine's children are reaped.
    pub init: Option<bool>,
    /// Seconds Docker waits after SIGTERM before SIGKILL.
    pub stop_timeout_s: Option<u64>,
}
