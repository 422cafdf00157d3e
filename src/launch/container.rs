//! The pure translation of container settings (`crate::config::container`) + binding + engine
//! argv into what the Docker Engine API is asked to create. The seed's hand-typed equivalent:
//! `docker run -itd --device=/dev/dri --device=/dev/mxcd --group-add video --network=host
//!  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --shm-size 256gb
//!  --ulimit memlock=-1 -v /data/models:/data IMAGE`
//!
//! Nothing here talks to Docker: [`ContainerSpec::create_body`] yields bollard's request body
//! and `crate::supervise::docker` sends it. Two deliberate differences from the seed's command:
//! no `--restart=always` (the agent is the one that restarts, with backoff and a budget, and a
//! Docker restart policy would fight it), and no `-it` (nobody attaches a terminal).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig, ResourcesUlimits};
use serde::Serialize;

use crate::binding::{Binding, MemPolicy};
use crate::config::container::{
    parse_mem_size, ContainerError, ContainerSettings, Device, GpuDevices, Volume,
};

/// Label on every container this agent creates; leftovers are found by it.
pub const LABEL_MANAGED: &str = "io.nodeagent.managed";
/// Label naming the serving instance (the plan's instance name) a container runs.
pub const LABEL_INSTANCE: &str = "io.nodeagent.instance";
/// Label recording the CPUs of the binding the container was created with (for `status` and
/// for a human reading `docker inspect`).
pub const LABEL_CPUS: &str = "io.nodeagent.cpus";

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

/// Whether a device entry's path in the container is a per-GPU node: anything under
/// `/dev/dri` (or the directory itself), `/dev/nvidiaN`.
fn is_gpu_node(container_path: &str) -> bool {
    let nvidia_n = container_path
        .strip_prefix("/dev/nvidia")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    container_path == "/dev/dri" || container_path.starts_with("/dev/dri/") || nvidia_n
}

/// The `devices` entries with every per-GPU node (and every control node the instance brings)
/// replaced by the instance's own: `HOST_ROOT/dev/dri/card1:/dev/dri/card1`, per GPU, then the
/// control nodes. Entries that are no GPU node (and unparsable ones, refused later by
/// validation) are kept as given.
pub fn instance_devices(devices: &[String], gpus: &GpuDevices) -> Vec<String> {
    let replaced = |entry: &String| {
        Device::parse(entry)
            .is_ok_and(|d| is_gpu_node(&d.container) || gpus.control.contains(&d.container))
    };
    let root = gpus.host_root.display().to_string();
    let root = root.trim_end_matches('/');
    let mut out: Vec<String> = devices.iter().filter(|e| !replaced(e)).cloned().collect();
    for path in gpus.gpus.iter().flatten().chain(&gpus.control) {
        let entry = if root.is_empty() { path.clone() } else { format!("{root}{path}:{path}") };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// The visibility variables the launch set, renumbered for the container: only the
/// instance's `count` GPUs exist there, so they are `0..count` whatever their host indexes
/// (`2,3` on the host is `0,1` inside; the set is every GPU the container has).
pub fn container_numbering(env: &mut BTreeMap<String, String>, count: usize) {
    let local = (0..count).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    for name in VISIBILITY_VARS {
        if let Some(v) = env.get_mut(*name) {
            v.clone_from(&local);
        }
    }
}

/// The GPU visibility variables a launch may set (`crate::launch::spec`).
const VISIBILITY_VARS: &[&str] = &["CUDA_VISIBLE_DEVICES", "MACA_VISIBLE_DEVICES"];

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
        let mut settings = settings.clone();
        if let Some(gpus) = &settings.gpu_devices {
            settings.devices = instance_devices(&settings.devices, gpus);
            container_numbering(&mut merged, gpus.gpus.len());
        }
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_INSTANCE.to_string(), instance.to_string());
        if let Some(c) = &cpuset_cpus {
            labels.insert(LABEL_CPUS.to_string(), c.clone());
        }
        ContainerSpec {
            name: container_name(instance),
            instance: instance.to_string(),
            settings,
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
    use crate::config::container::tests::seed_settings;
    use crate::host::cpuset::CpuSet;

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
    fn only_the_instances_gpu_nodes_and_container_numbering() {
        // The seed's devices (`/dev/dri` whole, `/dev/mxcd`), instance 1 of a TP-2 split: GPUs
        // 2 and 3 of the host, whose nodes sysfs gave.
        let mut settings = seed_settings();
        settings.devices.push("/dev/null:/dev/extra".into());
        settings.gpu_devices = Some(GpuDevices {
            gpus: vec![
                vec!["/dev/dri/card1".into(), "/dev/dri/renderD128".into()],
                vec!["/dev/dri/card4".into(), "/dev/dri/renderD131".into()],
            ],
            control: vec!["/dev/mxcd".into()],
            host_root: "/".into(),
        });
        let env = BTreeMap::from([
            ("CUDA_VISIBLE_DEVICES".to_string(), "2,3".to_string()),
            ("MACA_VISIBLE_DEVICES".to_string(), "2,3".to_string()),
            ("OTHER".to_string(), "2,3".to_string()),
        ]);
        let spec = ContainerSpec::new(&settings, &seed_binding(), seed_argv(), env, "1");
        assert_eq!(
            spec.settings.devices,
            [
                "/dev/null:/dev/extra",
                "/dev/dri/card1",
                "/dev/dri/renderD128",
                "/dev/dri/card4",
                "/dev/dri/renderD131",
                "/dev/mxcd"
            ]
        );
        assert_eq!(spec.env["CUDA_VISIBLE_DEVICES"], "0,1");
        assert_eq!(spec.env["MACA_VISIBLE_DEVICES"], "0,1");
        assert_eq!(spec.env["OTHER"], "2,3");
        // Under a test root (stand-in nodes): host path under the root, container path as in /dev.
        let nvidia = GpuDevices {
            gpus: vec![vec!["/dev/nvidia3".into()]],
            control: vec!["/dev/nvidiactl".into(), "/dev/nvidia-uvm".into()],
            host_root: "/tmp/t/".into(),
        };
        let given = ["/dev/nvidia0", "/dev/nvidia1:/dev/nvidia1:rw", "/dev/nvidiactl", "/dev/fuse"]
            .map(String::from);
        assert_eq!(
            instance_devices(&given, &nvidia),
            [
                "/dev/fuse",
                "/tmp/t/dev/nvidia3:/dev/nvidia3",
                "/tmp/t/dev/nvidiactl:/dev/nvidiactl",
                "/tmp/t/dev/nvidia-uvm:/dev/nvidia-uvm"
            ]
        );
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
    fn create_body_validates_the_settings() {
        let mut s = seed_settings();
        s.image.clear();
        let spec = ContainerSpec::new(&s, &Binding::none(), vec![], BTreeMap::new(), "x");
        assert!(matches!(spec.create_body(), Err(ContainerError::NoImage)));
    }

    proptest::proptest! {
        /// Container names never panic, whatever an instance name holds.
        #[test]
        fn container_name_never_panics(text in "\\PC{0,40}") {
            let _ = container_name(&text);
        }
    }
}
