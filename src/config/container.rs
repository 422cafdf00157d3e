//! The `[container]` section of a host profile or config: [`ContainerSettings`] as TOML gives
//! them, and the checks that need no host (sizes parsed the way `docker run` parses them, device
//! and volume syntax, memlock, env names). The config loader validates it at load time.
//!
//! Not here: turning settings + binding + argv into the Docker API request
//! (`crate::launch::container`), or anything that talks to Docker (`crate::supervise::docker`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// How long `serve` waits for an unreachable Docker daemon (a restart, an upgrade) before
    /// it gives up; the wait spends no restart budget. Humantime (`5m`), within
    /// [`DAEMON_TIMEOUT_MIN`]..=[`DAEMON_TIMEOUT_MAX`]; default [`DAEMON_TIMEOUT_DEFAULT`].
    #[serde(with = "daemon_timeout", skip_serializing_if = "Option::is_none")]
    pub daemon_timeout: Option<Duration>,
    /// The instance's own GPU device nodes, resolved by `serve` from sysfs (never a TOML key):
    /// when set, they replace every GPU node of `devices` (`crate::launch::container`).
    #[serde(skip)]
    pub gpu_devices: Option<GpuDevices>,
}

/// One instance's GPU device nodes (paths as in `/dev`, e.g. `/dev/dri/card1`), found from
/// each GPU's PCI bus id (`crate::host::drm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuDevices {
    /// Per GPU of the instance, in the plan's order: its nodes.
    pub gpus: Vec<Vec<String>>,
    /// The vendor's shared control nodes present on the host (`/dev/mxcd`, `/dev/nvidiactl`).
    pub control: Vec<String>,
    /// The host's root the paths are under: `/` live; a temp dir of stand-in nodes in tests.
    pub host_root: std::path::PathBuf,
}

/// `container.daemon_timeout` when the config leaves it out.
pub const DAEMON_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// The shortest `container.daemon_timeout`: one poll of the daemon.
pub const DAEMON_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// The longest `container.daemon_timeout`: a week (an agent that must never give up is better
/// served by systemd's `Restart=`).
pub const DAEMON_TIMEOUT_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// `daemon_timeout` as a humantime string, its bounds checked where the TOML is read (so the
/// error carries the file and line).
mod daemon_timeout {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        let value = humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration `{text}`: {e}")))?;
        if !(DAEMON_TIMEOUT_MIN..=DAEMON_TIMEOUT_MAX).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "daemon_timeout `{text}` out of range: use 1s to 7days"
            )));
        }
        Ok(Some(value))
    }
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
    /// preflight calls it again (through `crate::launch::container::ContainerSpec::create_body`).
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The seed's `docker-run.sh` (shared seed outputs/docker-run.sh), as settings; also the
    /// fixture of `launch::container`'s tests.
    pub(crate) fn seed_settings() -> ContainerSettings {
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
        let mut s = seed_settings();
        s.env.insert("A=B".into(), "c".into());
        assert!(matches!(s.validate(), Err(ContainerError::EnvName { .. })));
    }

    proptest::proptest! {
        /// Parsers never panic, whatever a config holds.
        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = parse_mem_size(&text);
            let _ = Device::parse(&text);
            let _ = Volume::parse(&text);
        }

        /// Sizes round-trip through the units Docker accepts.
        #[test]
        fn sizes_scale_by_binary_units(n in 1u32..100_000, unit in 0usize..4) {
            let (suffix, mul) = [("", 1i64), ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)][unit];
            proptest::prop_assert_eq!(parse_mem_size(&format!("{n}{suffix}")), Ok(n as i64 * mul));
            proptest::prop_assert_eq!(parse_mem_size(&format!("{n}{}B", suffix.to_uppercase())), Ok(n as i64 * mul));
        }
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

    #[test]
    fn daemon_timeout_is_a_bounded_duration() {
        let parse =
            |v: &str| toml::from_str::<ContainerSettings>(&format!("daemon_timeout = {v:?}"));
        assert_eq!(parse("90s").unwrap().daemon_timeout, Some(Duration::from_secs(90)));
        assert_eq!(toml::from_str::<ContainerSettings>("").unwrap().daemon_timeout, None);
        for bad in ["0s", "500ms", "8days", "18446744073709551615s"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("out of range: use 1s to 7days"), "{bad}: {err}");
        }
        let err = parse("soon").unwrap_err().to_string();
        assert!(err.contains("bad duration `soon`"), "{err}");
        // Round trip (`--print-config` shows the effective config as TOML).
        let s = ContainerSettings {
            daemon_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("daemon_timeout = \"5m\""), "{text}");
        assert_eq!(toml::from_str::<ContainerSettings>(&text).unwrap(), s);
    }
}
