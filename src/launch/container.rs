//! Container launch settings (the `[container]` section of a host profile / config) and the
//! pure translation of settings + binding + engine argv into what the Docker Engine API is
//! asked to create. The seed's hand-typed equivalent:
//! `docker run -itd --device=/dev/dri --device=/dev/mxcd --group-add video --network=host
//!  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --shm-size 256gb
//!  --ulimit memlock=-1 -v /data/models:/data IMAGE`
//!
//! Nothing here talks to Docker: [`ContainerSpec::create_body`] yields bollard's request body
//! and `crate::launch::docker` sends it. Two deliberate differences from the seed's command:
//! no `--restart=always` (the agent is the one that restarts, with backoff and a budget, and a
//! Docker restart policy would fight it), and no `-it` (nobody attaches a terminal).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig, ResourcesUlimits};
use serde::{Deserialize, Serialize};

use crate::binding::{Binding, MemPolicy};

/// Label on every container this agent creates; leftovers are found by it.
pub const LABEL_MANAGED: &str = "io.nodeagent.managed";
/// Label naming the serving instance (the plan's instance name) a container runs.
pub const LABEL_INSTANCE: &str = "io.nodeagent.instance";
/// Label recording the CPUs of the binding the container was created with (for `status` and
/// for a human reading `docker inspect`).
pub const LABEL_CPUS: &str = "io.nodeagent.cpus";

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
    /// Default: on (vLLM forks Ray workers; without an init their zombies pile up).
    pub init: Option<bool>,
    /// Seconds Docker waits after SIGTERM before SIGKILL.
    pub stop_timeout_s: Option<u64>,
    /// Container hostname (`--hostname vllm` in the seed).
    pub hostname: Option<String>,
    /// IPC namespace mode (`host`, as many MetaX launch scripts use instead of a big shm).
    pub ipc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("container settings: bad shm_size {value:?}: {reason} (e.g. \"256gb\", \"512m\")")]
    ShmSize { value: String, reason: String },
    #[error(
        "container settings: bad device {value:?}: expected HOST[:CONTAINER[:PERMISSIONS]] \
         with absolute paths and permissions made of r, w, m"
    )]
    Device { value: String },
    #[error("container settings: bad volume {value:?}: expected HOST:CONTAINER[:OPTIONS]")]
    Volume { value: String },
    #[error("container settings: bad memlock {value}: use -1 (unlimited) or a byte count >= 0")]
    Memlock { value: i64 },
    #[error("container settings: no image given (container.image)")]
    NoImage,
    #[error("container settings: bad env name {name:?}: names must be non-empty without '='")]
    EnvName { name: String },
}

/// One `--device` entry, parsed (`/dev/null:/dev/mxcd` -> host `/dev/null`, container
/// `/dev/mxcd`, permissions `rwm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub host: String,
    pub container: String,
    pub permissions: String,
}

impl Device {
    /// Parses Docker's `--device` syntax: `HOST`, `HOST:CONTAINER`, `HOST:CONTAINER:PERMS`,
    /// or `HOST:PERMS` (as the Docker CLI accepts).
    pub fn parse(value: &str) -> Result<Device, ContainerError> {
        let bad = || ContainerError::Device { value: value.to_string() };
        let is_perms = |s: &str| {
            !s.is_empty() && s.len() <= 3 && s.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        };
        let parts: Vec<&str> = value.split(':').collect();
        let (host, container, permissions) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, p] if is_perms(p) => (*h, *h, *p),
            [h, c] => (*h, *c, "rwm"),
            [h, c, p] if is_perms(p) => (*h, *c, *p),
            _ => return Err(bad()),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            return Err(bad());
        }
        Ok(Device {
            host: host.to_string(),
            container: container.to_string(),
            permissions: permissions.to_string(),
        })
    }
}

/// One `-v` entry whose host side is a path (named volumes have no host path to check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// `HOST:CONTAINER[:OPTIONS]` exactly as Docker's `Binds` takes it.
    pub bind: String,
    /// The host path when the source is a path (starts with `/`), `None` for a named volume.
    pub host_path: Option<String>,
}

impl Volume {
    pub fn parse(value: &str) -> Result<Volume, ContainerError> {
        let parts: Vec<&str> = value.split(':').collect();
        let ok = matches!(parts.len(), 2 | 3)
            && !parts[0].is_empty()
            && parts[1].starts_with('/')
            && parts.get(2).is_none_or(|o| !o.is_empty());
        if !ok {
            return Err(ContainerError::Volume { value: value.to_string() });
        }
        let host_path = parts[0].starts_with('/').then(|| parts[0].to_string());
        Ok(Volume { bind: value.to_string(), host_path })
    }
}

/// Parses a Docker memory size the way `docker run --shm-size` does (go-units `RAMInBytes`):
/// a number, an optional unit k/m/g/t/p with optional `i` and `b`, case-insensitive, binary
/// multiples. `256gb` = 256 GiB = 274877906944; `64m` = 67108864; `1024` = 1024 bytes.
pub fn parse_mem_size(text: &str) -> Result<i64, ContainerError> {
    let err =
        |reason: &str| ContainerError::ShmSize { value: text.to_string(), reason: reason.into() };
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(err("no number"));
    }
    let value: f64 = number.parse().map_err(|_| err("not a number"))?;
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(err("unknown unit")),
    };
    let bytes = value * multiplier;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(err("out of range"));
    }
    Ok(bytes as i64)
}

impl ContainerSettings {
    /// Checks what can be checked without a host: sizes, device and volume syntax, memlock.
    /// The config loader calls it so that a typo is reported at load time; the Docker
    /// preflight calls it again (through [`ContainerSpec::create_body`]).
    pub fn validate(&self) -> Result<(), ContainerError> {
        if self.image.trim().is_empty() {
            return Err(ContainerError::NoImage);
        }
        if let Some(s) = &self.shm_size {
            parse_mem_size(s)?;
        }
        if let Some(m) = self.memlock {
            if m < -1 {
                return Err(ContainerError::Memlock { value: m });
            }
        }
        for d in &self.devices {
            Device::parse(d)?;
        }
        for v in &self.volumes {
            Volume::parse(v)?;
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') {
                return Err(ContainerError::EnvName { name: name.clone() });
            }
        }
        Ok(())
    }
}

/// Everything needed to create one engine container: what `plan` + profile say, flattened.
/// Plain data; [`ContainerSpec::create_body`] is its one translation into the API request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    /// Container name, `nodeagent-<instance>` with characters Docker refuses replaced by `-`.
    pub name: String,
    pub instance: String,
    pub settings: ContainerSettings,
    /// `--cpuset-cpus`, from the binding's CPUs.
    pub cpuset_cpus: Option<String>,
    /// `--cpuset-mems`, from a bind or interleave memory policy (a cpuset can only restrict,
    /// so `preferred` has no container equivalent and leaves this empty).
    pub cpuset_mems: Option<String>,
    /// The engine command inside the container (the image's entrypoint is replaced by it).
    pub argv: Vec<String>,
    /// Environment: the settings' `env` overlaid with the launch's own (the launch wins).
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Docker container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn container_name(instance: &str) -> String {
    let clean: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    if clean.is_empty() {
        "nodeagent".to_string()
    } else {
        format!("nodeagent-{clean}")
    }
}

impl ContainerSpec {
    pub fn new(
        settings: &ContainerSettings,
        binding: &Binding,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        instance: &str,
    ) -> ContainerSpec {
        let cpuset_cpus = binding.cpus.as_ref().filter(|c| !c.is_empty()).map(|c| c.to_list());
        let cpuset_mems = match &binding.memory {
            MemPolicy::Bind(n) | MemPolicy::Interleave(n) if !n.is_empty() => {
                Some(n.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
            }
            _ => None,
        };
        let mut merged = settings.env.clone();
        merged.extend(env);
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_INSTANCE.to_string(), instance.to_string());
        if let Some(c) = &cpuset_cpus {
            labels.insert(LABEL_CPUS.to_string(), c.clone());
        }
        ContainerSpec {
            name: container_name(instance),
            instance: instance.to_string(),
            settings: settings.clone(),
            cpuset_cpus,
            cpuset_mems,
            argv,
            env: merged,
            labels,
        }
    }

    /// Parsed devices (validated).
    pub fn devices(&self) -> Result<Vec<Device>, ContainerError> {
        self.settings.devices.iter().map(|d| Device::parse(d)).collect()
    }

    /// Parsed volumes (validated).
    pub fn volumes(&self) -> Result<Vec<Volume>, ContainerError> {
        self.settings.volumes.iter().map(|v| Volume::parse(v)).collect()
    }

    /// The `POST /containers/create` body. The argv goes in as `Entrypoint` with an empty
    /// `Cmd`, so an image's own entrypoint (vendor images often have a shell script one) does
    /// not wrap it, and no shell ever parses a user string.
    pub fn create_body(&self) -> Result<ContainerCreateBody, ContainerError> {
        let s = &self.settings;
        s.validate()?;
        let devices = self
            .devices()?
            .into_iter()
            .map(|d| DeviceMapping {
                path_on_host: Some(d.host),
                path_in_container: Some(d.container),
                cgroup_permissions: Some(d.permissions),
            })
            .collect::<Vec<_>>();
        let binds = self.volumes()?.into_iter().map(|v| v.bind).collect::<Vec<_>>();
        let shm_size = s.shm_size.as_deref().map(parse_mem_size).transpose()?;
        let ulimits = s.memlock.map(|m| {
            vec![ResourcesUlimits { name: Some("memlock".into()), soft: Some(m), hard: Some(m) }]
        });
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let host_config = HostConfig {
            devices: (!devices.is_empty()).then_some(devices),
            group_add: non_empty(&s.group_add),
            network_mode: s.network.clone(),
            ipc_mode: s.ipc.clone(),
            shm_size,
            ulimits,
            binds: (!binds.is_empty()).then_some(binds),
            security_opt: non_empty(&s.security_opt),
            init: Some(s.init.unwrap_or(true)),
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            ..Default::default()
        };
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        Ok(ContainerCreateBody {
            image: Some(s.image.clone()),
            hostname: s.hostname.clone(),
            entrypoint: Some(self.argv.clone()),
            cmd: Some(Vec::new()),
            env: (!env.is_empty()).then_some(env),
            labels: Some(
                self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>(),
            ),
            stop_timeout: s.stop_timeout_s.map(|t| t.min(i64::MAX as u64) as i64),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            open_stdin: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cpuset::CpuSet;

    /// The seed's `docker-run.sh` (shared seed outputs/docker-run.sh), as settings.
    fn seed_settings() -> ContainerSettings {
        ContainerSettings {
            image:
                "cr.metax-tech.com/public-ai-release/c500/vllm:maca2.27.0.9-py310-kylin2309a-arm64"
                    .into(),
            devices: vec!["/dev/dri".into(), "/dev/mxcd".into()],
            group_add: vec!["video".into()],
            network: Some("host".into()),
            shm_size: Some("256gb".into()),
            memlock: Some(-1),
            volumes: vec!["/data/models:/data".into()],
            security_opt: vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
            hostname: Some("vllm".into()),
            ..Default::default()
        }
    }

    fn seed_binding() -> Binding {
        Binding {
            cpu_nodes: vec![0],
            cpus: Some(CpuSet::parse_list("0-15").unwrap()),
            memory: MemPolicy::Bind(vec![0]),
        }
    }

    fn seed_argv() -> Vec<String> {
        ["vllm", "serve", "/data/Qwen2.5-72B-Instruct", "--served-model-name", "qwen2.5"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn seed_docker_run_translates_to_the_api_body() {
        let mut env = BTreeMap::new();
        env.insert("SET_DEVICE_NUMA_PREFERRED".to_string(), "1".to_string());
        let spec =
            ContainerSpec::new(&seed_settings(), &seed_binding(), seed_argv(), env, "qwen2.5-0");
        assert_eq!(spec.name, "nodeagent-qwen2.5-0");
        let body = spec.create_body().unwrap();
        assert_eq!(body.image.as_deref(), seed_settings().image.as_str().into());
        assert_eq!(body.hostname.as_deref(), Some("vllm"));
        assert_eq!(body.entrypoint.as_ref().unwrap(), &seed_argv());
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(body.env, Some(vec!["SET_DEVICE_NUMA_PREFERRED=1".to_string()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels.get("io.nodeagent.managed").map(String::as_str), Some("true"));
        assert_eq!(labels.get("io.nodeagent.instance").map(String::as_str), Some("qwen2.5-0"));
        assert_eq!(labels.get("io.nodeagent.cpus").map(String::as_str), Some("0-15"));
        let hc = body.host_config.unwrap();
        let devices = hc.devices.unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].path_on_host.as_deref(), Some("/dev/dri"));
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/dri"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rwm"));
        assert_eq!(devices[1].path_on_host.as_deref(), Some("/dev/mxcd"));
        assert_eq!(hc.group_add, Some(vec!["video".to_string()]));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.shm_size, Some(274_877_906_944));
        let ul = hc.ulimits.unwrap();
        assert_eq!(ul.len(), 1);
        assert_eq!(ul[0].name.as_deref(), Some("memlock"));
        assert_eq!((ul[0].soft, ul[0].hard), (Some(-1), Some(-1)));
        assert_eq!(hc.binds, Some(vec!["/data/models:/data".to_string()]));
        assert_eq!(
            hc.security_opt,
            Some(vec!["seccomp=unconfined".to_string(), "apparmor=unconfined".to_string()])
        );
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.cpuset_cpus.as_deref(), Some("0-15"));
        assert_eq!(hc.cpuset_mems.as_deref(), Some("0"));
        // The agent restarts; a Docker restart policy would fight it.
        assert_eq!(hc.restart_policy, None);
        assert_eq!(hc.privileged, None);
    }

    #[test]
    fn launch_env_overrides_settings_env() {
        let mut s = seed_settings();
        s.env.insert("A".into(), "settings".into());
        s.env.insert("B".into(), "settings".into());
        let mut env = BTreeMap::new();
        env.insert("B".to_string(), "launch".to_string());
        let spec = ContainerSpec::new(&s, &Binding::none(), vec!["x".into()], env, "0");
        assert_eq!(
            spec.create_body().unwrap().env,
            Some(vec!["A=settings".into(), "B=launch".into()])
        );
    }

    #[test]
    fn unbound_and_preferred_bindings_set_no_cpuset() {
        let spec =
            ContainerSpec::new(&seed_settings(), &Binding::none(), vec![], BTreeMap::new(), "a");
        let hc = spec.create_body().unwrap().host_config.unwrap();
        assert_eq!((hc.cpuset_cpus, hc.cpuset_mems), (None, None));
        assert!(!spec.labels.contains_key(LABEL_CPUS));

        let preferred = Binding {
            cpu_nodes: vec![1],
            cpus: Some(CpuSet::parse_list("16-31,48-63").unwrap()),
            memory: MemPolicy::Preferred(1),
        };
        let spec = ContainerSpec::new(&seed_settings(), &preferred, vec![], BTreeMap::new(), "b");
        assert_eq!(spec.cpuset_cpus.as_deref(), Some("16-31,48-63"));
        assert_eq!(spec.cpuset_mems, None);

        let interleave =
            Binding { cpu_nodes: vec![], cpus: None, memory: MemPolicy::Interleave(vec![0, 2]) };
        let spec = ContainerSpec::new(&seed_settings(), &interleave, vec![], BTreeMap::new(), "c");
        assert_eq!(spec.cpuset_mems.as_deref(), Some("0,2"));
        assert_eq!(spec.cpuset_cpus, None);
    }

    #[test]
    fn container_names_are_what_docker_accepts() {
        assert_eq!(container_name("qwen2.5/0 a"), "nodeagent-qwen2.5-0-a");
        assert_eq!(container_name(""), "nodeagent");
        assert_eq!(container_name("inst_1"), "nodeagent-inst_1");
    }

    #[test]
    fn mem_sizes_parse_like_docker() {
        assert_eq!(parse_mem_size("256gb"), Ok(256 * (1 << 30)));
        assert_eq!(parse_mem_size("256GB"), Ok(256 * (1 << 30)));
        assert_eq!(parse_mem_size("64m"), Ok(64 << 20));
        assert_eq!(parse_mem_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_mem_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_mem_size("1024"), Ok(1024));
        assert_eq!(parse_mem_size("16 k"), Ok(16 << 10));
        for bad in ["", "gb", "12x", "-5m", "1..2g", "0", "99999999999p"] {
            assert!(matches!(parse_mem_size(bad), Err(ContainerError::ShmSize { .. })), "{bad}");
        }
    }

    #[test]
    fn devices_parse_like_docker() {
        let d = Device::parse("/dev/null:/dev/mxcd").unwrap();
        assert_eq!(
            (d.host.as_str(), d.container.as_str(), d.permissions.as_str()),
            ("/dev/null", "/dev/mxcd", "rwm")
        );
        let d = Device::parse("/dev/zero:/dev/dri/renderD128:rw").unwrap();
        assert_eq!(d.permissions, "rw");
        let d = Device::parse("/dev/mxcd:r").unwrap();
        assert_eq!((d.container.as_str(), d.permissions.as_str()), ("/dev/mxcd", "r"));
        for bad in ["", "dev/mxcd", "/dev/a:b", "/dev/a:/dev/b:x", "/a:/b:rw:extra"] {
            assert!(matches!(Device::parse(bad), Err(ContainerError::Device { .. })), "{bad}");
        }
    }

    #[test]
    fn volumes_parse_and_name_their_host_path() {
        assert_eq!(
            Volume::parse("/data/models:/data").unwrap().host_path.as_deref(),
            Some("/data/models")
        );
        assert_eq!(Volume::parse("/m:/data:ro").unwrap().bind, "/m:/data:ro");
        assert_eq!(Volume::parse("models:/data").unwrap().host_path, None);
        for bad in ["/data", ":/data", "/a:b", "/a:/b:", "/a:/b:ro:x"] {
            assert!(matches!(Volume::parse(bad), Err(ContainerError::Volume { .. })), "{bad}");
        }
    }

    #[test]
    fn validate_rejects_bad_settings_with_the_value_named() {
        let mut s = seed_settings();
        s.shm_size = Some("lots".into());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "container settings: bad shm_size \"lots\": no number (e.g. \"256gb\", \"512m\")"
        );
        let mut s = seed_settings();
        s.memlock = Some(-2);
        assert!(matches!(s.validate(), Err(ContainerError::Memlock { value: -2 })));
        let mut s = seed_settings();
        s.image.clear();
        assert!(matches!(s.validate(), Err(ContainerError::NoImage)));
        let spec = ContainerSpec::new(&s, &Binding::none(), vec![], BTreeMap::new(), "x");
        assert!(matches!(spec.create_body(), Err(ContainerError::NoImage)));
        let mut s = seed_settings();
        s.env.insert("A=B".into(), "c".into());
        assert!(matches!(s.validate(), Err(ContainerError::EnvName { .. })));
    }

    #[test]
    fn settings_parse_from_toml_and_reject_unknown_keys() {
        let s: ContainerSettings = toml::from_str(
            r#"
            image = "img:1"
            devices = ["/dev/dri", "/dev/mxcd"]
            group_add = ["video"]
            network = "host"
            shm_size = "256gb"
            memlock = -1
            volumes = ["/data/models:/data"]
            security_opt = ["seccomp=unconfined", "apparmor=unconfined"]
            stop_timeout_s = 30
            [env]
            MACA_SMALL_PAGESIZE_ENABLE = "1"
            "#,
        )
        .unwrap();
        assert_eq!(s.memlock, Some(-1));
        assert_eq!(s.env.get("MACA_SMALL_PAGESIZE_ENABLE").map(String::as_str), Some("1"));
        assert!(s.validate().is_ok());
        let err = toml::from_str::<ContainerSettings>("imagee = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `imagee`"), "{err}");
    }
}
