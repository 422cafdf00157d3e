//! `nodeagent serve` configuration: a TOML file (default `/etc/nodeagent/nodeagent.toml`) that
//! picks a host profile and a model profile and may override any of their keys. Profiles are the
//! TOML files under `profiles/` (built into the binary; a path works too) and use the same
//! schema as the config file, so "override anything" is a plain deep merge:
//! host profile <- model profile <- config file (later wins; tables merge, other values replace).
//!
//! Every file is type-checked on its own first, so an error names `file:line:column`. This module
//! reads files and merges; it starts nothing. Here: the `Config` schema, its defaults
//! (`SupervisePolicy`) and the checks of the merged result. `load` reads the files and the
//! built-in profiles and merges them; `container` is the `[container]` section, `probe` the
//! `[probe]` section, `ray` the `[ray]` section; `bounds` the limits of every duration and count
//! (checked per file, so an error names the file, line, key and value); `trust` whether root may
//! use a file another user can write.
//! `crate::launch::spec` turns a `Config` into what runs (launch imports config, never the other
//! way round).
//!
//! A config file:
//! ```toml
//! host = "metax-mxc500-4x64g"
//! model = "qwen2.5-72b"
//! [engine]
//! port = 8001
//! ```

pub mod bounds;
pub mod container;
mod load;
mod probe;
pub mod ray;
pub mod trust;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::binding::{Binding, MemPolicy};
use crate::host::cpuset::CpuSet;
use container::ContainerSettings;
pub use load::{builtin_names, load, load_str, parse_layer, Loaded};
pub use probe::{MetricsSeries, ProbeConfig, ProbePaths};

pub const DEFAULT_PATH: &str = "/etc/nodeagent/nodeagent.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is the source: the exit printer joins the chain (`{:#}`), so it is said once.
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("unknown {kind} profile `{name}` (built in: {known}; or give a path to a .toml file)")]
    UnknownProfile { kind: &'static str, name: String, known: String },
    #[error("{file}: `{key}` is only allowed in the config file, not in a profile")]
    KeyInProfile { file: String, key: &'static str },
    #[error("invalid effective config: {message}")]
    Semantic { message: String },
    /// A duration or count out of its bounds (`bounds`): the file that set it, the key, the
    /// value as written, why.
    #[error("{file}: {key}: {value}: {why}")]
    OutOfBounds { file: String, key: &'static str, value: String, why: String },
}

/// How the engine is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchMode {
    /// The engine command runs with the binding applied natively in the child before exec.
    #[default]
    Bare,
    /// The engine command runs under `numactl` with the binding's options.
    Numactl,
    /// The engine runs in a container through the Docker Engine API.
    Container,
}

/// What to do when a process of the engine runs outside its binding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapePolicy {
    /// Log it, stop the engine, end in the failed state.
    #[default]
    Fail,
    /// Log it and keep serving.
    Warn,
}

/// The whole configuration; every file (config and profiles) has this shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Host profile: a built-in name or a path to a TOML file. Config file only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Model profile: a built-in name or a path to a TOML file. Config file only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Free text shown by `--print-config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the agent keeps its pid file and status socket.
    pub state_dir: Option<PathBuf>,
    pub engine: EngineConfig,
    pub launch: LaunchConfig,
    pub binding: BindingConfig,
    pub container: ContainerSettings,
    pub supervise: SuperviseConfig,
    pub probe: ProbeConfig,
    /// `[ray]`: the node's role in a multi-node Ray cluster (`config::ray`, docs/ray.md).
    pub ray: ray::RayConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The engine command, one element per argument (no shell). Placeholders: `{port}`,
    /// `{host}`, `{served_model_name}`, `{model_path}`, `{self}` (this nodeagent binary), and
    /// the instance's `{tp}` (GPU count), `{gpus}` (GPU indexes) and `{instance}`.
    pub argv: Vec<String>,
    /// The model directory as the engine sees it (inside the container in container mode).
    pub model_path: Option<PathBuf>,
    /// The name clients use; readiness waits until `/v1/models` lists it.
    pub served_model_name: Option<String>,
    /// The engine's HTTP port (health checks and clients).
    pub port: Option<u16>,
    /// The address the engine listens on (`{host}`); health checks always use loopback.
    pub host: Option<String>,
    /// Extra environment for the engine.
    pub env: BTreeMap<String, String>,
    /// Variables removed from the engine's environment unless `env` sets them
    /// (default `RAY_ADDRESS`, `VLLM_PORT`: a stray one breaks vLLM).
    pub unset_env: Option<Vec<String>>,
    /// Working directory of the engine (bare and numactl modes).
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaunchConfig {
    pub mode: Option<LaunchMode>,
    /// Path of `numactl` for the numactl mode.
    pub numactl: Option<PathBuf>,
    /// Which plan instance this agent serves (when the binding is `auto`; 0 = the first).
    pub instance: Option<usize>,
    /// GPUs the plan may use (default: all), when the binding is `auto`.
    pub gpus: Option<Vec<u32>>,
    /// Tensor-parallel size per instance for the plan (default: one instance over all GPUs).
    pub tp: Option<u32>,
    /// The engine port of each instance (entry N: instance N); an instance past the list
    /// serves at `engine.port` + N (counted from this config's own `launch.instance`).
    pub ports: Option<Vec<u16>>,
    /// CPUs per NUMA node the plan leaves out of every instance (default: none).
    pub reserve_cpus: Option<u32>,
}

/// `[binding]`: `auto = true` takes the plan's binding; otherwise the explicit fields below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindingConfig {
    pub auto: Option<bool>,
    /// CPUs the engine may run on (cpulist, e.g. `0-15`).
    pub cpus: Option<CpuSet>,
    /// NUMA nodes whose CPUs are used (informational for bare mode; `--cpunodebind` for numactl
    /// when `cpus` is unset).
    pub cpu_nodes: Option<Vec<u32>>,
    /// `default`, `bind`, `preferred` or `interleave`.
    pub mem_policy: Option<MemPolicyKind>,
    pub mem_nodes: Option<Vec<u32>>,
    /// What happens when a process escapes the binding.
    pub on_escape: Option<EscapePolicy>,
    /// Share (0 to 1) of the engine's resident memory allowed off its bound memory nodes
    /// before the placement alert (status, log, `/metrics`) goes up.
    pub memory_off_node_alert: Option<f64>,
    /// Share (0 to 1) of the engine's CPU time allowed on CPUs outside the binding before the
    /// thread placement alert (status, log, `/metrics`) goes up.
    pub cpu_outside_alert: Option<f64>,
    /// An instance over several NUMA nodes: bind each rank's worker to its GPU's node
    /// (`per-rank`, the default) or keep the whole engine on the union (`union`).
    pub ranks: Option<RankBinding>,
}

/// `binding.ranks`: how the ranks of an instance over several nodes are bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankBinding {
    /// Each rank's worker in a child cgroup on its own GPU's node (docs/serve.md).
    #[default]
    PerRank,
    /// The whole engine on the union of its GPUs' nodes.
    Union,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemPolicyKind {
    Default,
    Bind,
    Preferred,
    Interleave,
}

/// `[supervise]`: timings and restart policy. Durations are humantime strings (`30s`, `5m`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuperviseConfig {
    /// How long the engine may take to become ready (load time of big models: tens of minutes).
    #[serde(with = "opt_duration")]
    pub ready_timeout: Option<Duration>,
    /// Time between liveness checks.
    #[serde(with = "opt_duration")]
    pub health_interval: Option<Duration>,
    /// Timeout of one health request.
    #[serde(with = "opt_duration")]
    pub health_timeout: Option<Duration>,
    /// Consecutive failed health checks that mean "hung": the engine is restarted.
    pub health_failures: Option<u32>,
    /// Requests running yet no token counted in the engine's `/metrics` for this long: stuck
    /// behind a live `/health`; the engine is restarted. `0s` turns the watchdog off.
    #[serde(with = "opt_duration")]
    pub stall_timeout: Option<Duration>,
    /// When the counters are flat and nothing waits or runs: one `max_tokens: 1` completion
    /// this often, to tell an idle engine from one whose completions fail behind a live
    /// `/health`; `health_failures` failed canaries restart it. `0s` (the default) turns it off.
    #[serde(with = "opt_duration")]
    pub canary_interval: Option<Duration>,
    /// How long one canary completion may take.
    #[serde(with = "opt_duration")]
    pub canary_timeout: Option<Duration>,
    /// Time between binding checks of every engine process.
    #[serde(with = "opt_duration")]
    pub binding_check_interval: Option<Duration>,
    /// SIGTERM to SIGKILL.
    #[serde(with = "opt_duration")]
    pub stop_grace: Option<Duration>,
    /// First restart delay; doubles on each restart up to `backoff_max`.
    #[serde(with = "opt_duration")]
    pub backoff_initial: Option<Duration>,
    #[serde(with = "opt_duration")]
    pub backoff_max: Option<Duration>,
    /// Restarts allowed within `restart_window`; one more is a crash loop: failed state.
    pub restart_budget: Option<u32>,
    #[serde(with = "opt_duration")]
    pub restart_window: Option<Duration>,
    /// Uptime after which the backoff resets to `backoff_initial`.
    #[serde(with = "opt_duration")]
    pub stable_after: Option<Duration>,
    /// On a stop or a restart of a live engine: report `draining`, then let in-flight
    /// requests finish (the engine's running and waiting gauges reach 0) for up to this long
    /// before SIGTERM. `0s` (the default) stops at once.
    #[serde(with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
}

mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("bad duration `{text}`: {e}")))
    }
}

/// Supervision settings with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisePolicy {
    pub ready_timeout: Duration,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_failures: u32,
    pub stall_timeout: Duration,
    pub canary_interval: Duration,
    pub canary_timeout: Duration,
    pub binding_check_interval: Duration,
    pub stop_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub restart_budget: u32,
    pub restart_window: Duration,
    pub stable_after: Duration,
    pub on_escape: EscapePolicy,
    pub memory_off_node_alert: f64,
    pub cpu_outside_alert: f64,
    /// The engine's probe paths (`[probe]`).
    pub probe: ProbePaths,
    /// How long in-flight requests may finish before a stop or restart stops the engine.
    pub drain_timeout: Duration,
}

impl Config {
    /// Supervision settings with defaults for what the config leaves out.
    pub fn policy(&self) -> SupervisePolicy {
        let s = &self.supervise;
        let secs = Duration::from_secs;
        SupervisePolicy {
            ready_timeout: s.ready_timeout.unwrap_or(secs(600)),
            health_interval: s.health_interval.unwrap_or(secs(5)),
            health_timeout: s.health_timeout.unwrap_or(secs(5)),
            health_failures: s.health_failures.unwrap_or(3).max(1),
            // A decode step takes well under a second and a chunked prefill counts prompt
            // tokens per chunk: two minutes without a single token is a stuck engine.
            stall_timeout: s.stall_timeout.unwrap_or(secs(120)),
            // Off: a canary is a real request (one token, in the engine's logs and metrics).
            canary_interval: s.canary_interval.unwrap_or(Duration::ZERO),
            canary_timeout: s.canary_timeout.unwrap_or(secs(30)),
            binding_check_interval: s.binding_check_interval.unwrap_or(secs(2)),
            stop_grace: s.stop_grace.unwrap_or(secs(30)),
            backoff_initial: s.backoff_initial.unwrap_or(secs(1)),
            backoff_max: s.backoff_max.unwrap_or(secs(60)),
            restart_budget: s.restart_budget.unwrap_or(5),
            restart_window: s.restart_window.unwrap_or(secs(600)),
            stable_after: s.stable_after.unwrap_or(secs(300)),
            on_escape: self.binding.on_escape.unwrap_or_default(),
            memory_off_node_alert: self.binding.memory_off_node_alert.unwrap_or(0.10),
            cpu_outside_alert: self.binding.cpu_outside_alert.unwrap_or(0.10),
            probe: self.probe.paths(),
            // Off unless set: a stop has always been SIGTERM at once.
            drain_timeout: s.drain_timeout.unwrap_or(Duration::ZERO),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from("/run/nodeagent"))
    }

    pub fn port(&self) -> u16 {
        self.engine.port.unwrap_or(8000)
    }

    /// Where health checks and sweeps reach the engine: its listen address, or loopback when
    /// it listens on all addresses (or none is configured).
    pub fn engine_addr(&self) -> std::net::SocketAddr {
        use std::net::{IpAddr, Ipv4Addr};
        let ip = self
            .engine
            .host
            .as_deref()
            .and_then(|h| h.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        std::net::SocketAddr::new(ip, self.port())
    }

    pub fn mode(&self) -> LaunchMode {
        self.launch.mode.unwrap_or_default()
    }

    pub fn wants_auto_binding(&self) -> bool {
        self.binding.auto.unwrap_or(false)
    }

    /// The explicit binding of `[binding]` (`Binding::none()` when nothing is set).
    pub fn explicit_binding(&self) -> Result<Binding, ConfigError> {
        let b = &self.binding;
        let nodes = b.mem_nodes.clone().unwrap_or_default();
        let kind = b.mem_policy.unwrap_or(if nodes.is_empty() {
            MemPolicyKind::Default
        } else {
            MemPolicyKind::Bind
        });
        let need_nodes = |what: &str| -> Result<(), ConfigError> {
            if nodes.is_empty() {
                return Err(ConfigError::Semantic {
                    message: format!("binding.mem_policy = \"{what}\" needs binding.mem_nodes"),
                });
            }
            Ok(())
        };
        let memory = match kind {
            MemPolicyKind::Default => MemPolicy::Default,
            MemPolicyKind::Bind => {
                need_nodes("bind")?;
                MemPolicy::Bind(nodes.clone())
            }
            MemPolicyKind::Interleave => {
                need_nodes("interleave")?;
                MemPolicy::Interleave(nodes.clone())
            }
            MemPolicyKind::Preferred => {
                need_nodes("preferred")?;
                if nodes.len() != 1 {
                    return Err(ConfigError::Semantic {
                        message: "binding.mem_policy = \"preferred\" takes exactly one node".into(),
                    });
                }
                MemPolicy::Preferred(nodes[0])
            }
        };
        if let Some(cpus) = &b.cpus {
            if cpus.is_empty() {
                return Err(ConfigError::Semantic { message: "binding.cpus is empty".into() });
            }
        }
        Ok(Binding {
            cpu_nodes: b.cpu_nodes.clone().unwrap_or_default(),
            cpus: b.cpus.clone(),
            memory,
        })
    }

    /// Checks what a merged config must hold before anything runs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |message: String| Err(ConfigError::Semantic { message });
        if let Some(v) = bounds::violations(self).into_iter().next() {
            let file = "effective config".to_string();
            return Err(ConfigError::OutOfBounds { file, key: v.key, value: v.value, why: v.why });
        }
        let p = self.policy();
        if p.backoff_max < p.backoff_initial {
            return bad(format!(
                "supervise.backoff_max ({}) is shorter than supervise.backoff_initial ({})",
                humantime::format_duration(p.backoff_max),
                humantime::format_duration(p.backoff_initial)
            ));
        }
        if !(0.0..=1.0).contains(&p.memory_off_node_alert) {
            return bad(format!(
                "binding.memory_off_node_alert = {}: must be a share from 0 to 1 (0.1 = 10 %)",
                p.memory_off_node_alert
            ));
        }
        if !(0.0..=1.0).contains(&p.cpu_outside_alert) {
            return bad(format!(
                "binding.cpu_outside_alert = {}: must be a share from 0 to 1 (0.1 = 10 %)",
                p.cpu_outside_alert
            ));
        }
        if self.engine.argv.is_empty() {
            return bad("engine.argv is empty: pick a model profile (`model = ...`) or set \
                        [engine] argv"
                .into());
        }
        if self.engine.argv[0].is_empty() {
            return bad("engine.argv[0] is empty".into());
        }
        // What the kernel cannot pass to a process: refused now, not at every spawn.
        if let Some(i) = self.engine.argv.iter().position(|a| a.contains('\0')) {
            return bad(format!("engine.argv[{i}] holds a NUL byte"));
        }
        for (k, v) in &self.engine.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return bad(format!("engine.env: bad name {k:?}: non-empty, without '=' or NUL"));
            }
            if v.contains('\0') {
                return bad(format!("engine.env.{k} holds a NUL byte"));
            }
        }
        if self.state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return bad("state_dir is empty: leave it out for /run/nodeagent".into());
        }
        // `{host}` and `{served_model_name}` reach the engine's argv and the readiness check.
        if let Some(h) = &self.engine.host {
            let ok = !h.is_empty()
                && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:_[]".contains(c));
            if !ok {
                return bad(format!("engine.host = {h:?}: not an IP address or host name"));
            }
        }
        if self.engine.served_model_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return bad("engine.served_model_name is empty: clients name the model with it".into());
        }
        let ray =
            self.ray.settings().map_err(|e| ConfigError::Semantic { message: e.to_string() })?;
        if let (Some(r), LaunchMode::Container) = (&ray, self.mode()) {
            let role = r.role.as_str();
            return bad(ray::RayConfigError::Container { role }.to_string());
        }
        if self.mode() == LaunchMode::Container && self.container.image.is_empty() {
            return bad("launch.mode = \"container\" needs container.image".into());
        }
        // The settings `docker run` would refuse, refused now (not first at the Docker preflight).
        if self.mode() == LaunchMode::Container {
            self.container
                .validate()
                .map_err(|e| ConfigError::Semantic { message: e.to_string() })?;
        }
        if self.wants_auto_binding()
            && (self.binding.cpus.is_some() || self.binding.mem_nodes.is_some())
        {
            return bad("binding.auto = true conflicts with binding.cpus / binding.mem_nodes \
                        (set auto = false to give an explicit binding)"
                .into());
        }
        for k in self.engine.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return bad(format!("engine.env: bad variable name `{k}`"));
            }
        }
        self.explicit_binding()?;
        self.probe.check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::load::tests::load_text;
    use super::*;

    #[test]
    fn semantic_checks() {
        let msg = load_text("host = \"local\"\n").unwrap_err().to_string();
        assert!(msg.contains("engine.argv is empty"), "{msg}");
        let msg = load_text("model = \"sim\"\n[binding]\nmem_policy = \"bind\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("needs binding.mem_nodes"), "{msg}");
        let msg = load_text("model = \"sim\"\n[binding]\nauto = true\ncpus = \"1\"\n").unwrap_err();
        assert!(msg.to_string().contains("conflicts"), "{msg}");
    }

    #[test]
    fn empty_engine_host_or_served_name_is_refused() {
        for (key, text) in [
            ("engine.host", "model = \"sim\"\n[engine]\nhost = \"\"\n"),
            ("engine.host", "model = \"sim\"\n[engine]\nhost = \"not an address!\"\n"),
            ("engine.served_model_name", "model = \"sim\"\n[engine]\nserved_model_name = \"\"\n"),
        ] {
            let msg = load_text(text).unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
    }

    #[test]
    fn nul_bytes_bad_env_names_and_an_empty_state_dir_are_refused() {
        // Audit of wave 9: each was accepted, and failed only when the engine was spawned
        // (a NUL: "nul byte found in provided data", on every restart) or the state dir made.
        for (key, text) in [
            ("engine.env", "model = \"sim\"\n[engine.env]\nA = \"x\\u0000y\"\n"),
            ("engine.env", "model = \"sim\"\n[engine.env]\n\"A=B\" = \"1\"\n"),
            ("engine.env", "model = \"sim\"\n[engine.env]\n\"\" = \"1\"\n"),
            ("engine.argv", "[engine]\nargv = [\"vllm\", \"a\\u0000b\"]\n"),
            ("state_dir", "model = \"sim\"\nstate_dir = \"\"\n"),
        ] {
            let msg = load_text(text).unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
        load_text("model = \"sim\"\n[engine.env]\nA = \"x y=z\"\n").unwrap();
    }

    #[test]
    fn container_settings_are_checked_at_load_time() {
        let msg = load_text(
            "model = \"sim\"\n[launch]\nmode = \"container\"\n[container]\nimage = \"x\"\n\
             shm_size = \"lots\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("bad shm_size \"lots\""), "{msg}");
        let msg = load_text(
            "model = \"sim\"\n[launch]\nmode = \"container\"\n[container]\nimage = \"x\"\n\
             volumes = [\"nocolon\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("nocolon"), "{msg}");
    }

    #[test]
    fn explicit_binding_is_built() {
        let l = load_text(
            "host = \"local\"\nmodel = \"sim\"\n[binding]\ncpus = \"1\"\nmem_nodes = [0]\n",
        )
        .unwrap();
        let b = l.config.explicit_binding().unwrap();
        assert_eq!(b.cpus.unwrap().to_list(), "1");
        assert_eq!(b.memory, MemPolicy::Bind(vec![0]));
    }
}
