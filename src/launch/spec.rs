//! The launch spec: effective config + binding -> exactly what runs (argv vector, environment,
//! binding, how it is applied, where health is asked). Pure data with no effects; `--print-config`
//! prints it and the supervisor's runtimes execute it. No shell ever sees these strings: every
//! placeholder is substituted inside one argv element.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::binding::Binding;
use crate::config::{Config, LaunchMode};

/// Removed from the engine's environment unless configured (VLLM-NOTES.md: a stray
/// `RAY_ADDRESS` joins a foreign Ray cluster, a stray `VLLM_PORT` breaks startup).
pub const DEFAULT_UNSET_ENV: &[&str] = &["RAY_ADDRESS", "VLLM_PORT"];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("engine.argv[{index}] `{arg}`: unknown placeholder `{{{name}}}` (known: port, host, served_model_name, model_path, self, tp, gpus, instance)")]
    UnknownPlaceholder { index: usize, arg: String, name: String },
    #[error("engine.argv[{index}] uses {{{name}}} but {key} is not set")]
    MissingValue { index: usize, name: String, key: &'static str },
    #[error("engine.env {name} = `{value}` but the plan gives this instance GPUs {expected}: remove it or make it match")]
    VisibilityMismatch { name: String, value: String, expected: String },
    #[error("engine.env CUDA_DEVICE_ORDER = `{value}` but the GPU indexes are nvidia-smi's (PCI bus order): set PCI_BUS_ID or remove it")]
    DeviceOrderMismatch { value: String },
    #[error("engine.port is 0: the engine needs a fixed port for health checks and clients")]
    ZeroPort,
}

/// The GPU software stack of the instance's GPUs: which visibility variables it honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuStack {
    /// NVIDIA CUDA: `CUDA_VISIBLE_DEVICES`, with `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    Cuda,
    /// MetaX MACA: `CUDA_VISIBLE_DEVICES` (its CUDA-compatible layer) and `MACA_VISIBLE_DEVICES`.
    Maca,
    /// Unknown vendor (or unknown GPUs): no visibility variable is set.
    #[default]
    Unknown,
}

impl GpuStack {
    /// The variables that restrict the engine to the instance's GPUs, by the vendor tool's
    /// index (`nvidia-smi`/`mx-smi` numbering, which is PCI bus order).
    pub fn visibility_vars(self) -> &'static [&'static str] {
        match self {
            GpuStack::Cuda => &["CUDA_VISIBLE_DEVICES"],
            GpuStack::Maca => &["CUDA_VISIBLE_DEVICES", "MACA_VISIBLE_DEVICES"],
            GpuStack::Unknown => &[],
        }
    }
}

/// Where the instance sits: its index and its GPUs (the plan's, or `launch.gpus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The instance index (`launch.instance`, 0 by default): `{instance}`.
    pub instance: usize,
    /// The instance's GPU indexes in the vendor tool's numbering; `None` when unknown.
    pub gpus: Option<Vec<u32>>,
    pub stack: GpuStack,
}

impl Placement {
    /// No plan: GPUs from `launch.gpus` when set (stack unknown), instance from `launch.instance`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            instance: config.launch.instance.unwrap_or(0),
            gpus: config.launch.gpus.clone(),
            stack: GpuStack::Unknown,
        }
    }
}

fn join(gpus: &[u32]) -> String {
    gpus.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",")
}

/// Adds the visibility variables of `placement` to `env`; a value the user set is kept and
/// must name the same GPUs in the same order.
fn visibility_env(
    env: &mut BTreeMap<String, String>,
    placement: &Placement,
) -> Result<(), SpecError> {
    let Some(gpus) = &placement.gpus else { return Ok(()) };
    let expected = join(gpus);
    for name in placement.stack.visibility_vars() {
        match env.get(*name) {
            Some(value) => {
                let given: Vec<&str> =
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
                let want: Vec<String> = gpus.iter().map(|g| g.to_string()).collect();
                if given != want {
                    return Err(SpecError::VisibilityMismatch {
                        name: name.to_string(),
                        value: value.clone(),
                        expected,
                    });
                }
            }
            None => {
                env.insert(name.to_string(), expected.clone());
            }
        }
    }
    if placement.stack == GpuStack::Cuda {
        match env.get("CUDA_DEVICE_ORDER") {
            Some(v) if v != "PCI_BUS_ID" => {
                return Err(SpecError::DeviceOrderMismatch { value: v.clone() })
            }
            Some(_) => {}
            None => {
                env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchSpec {
    pub mode: LaunchMode,
    /// The full command; in numactl mode it starts with `numactl` and the binding's options.
    pub argv: Vec<String>,
    /// The engine command alone (what runs inside the container in container mode).
    pub engine_argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub unset_env: Vec<String>,
    pub binding: Binding,
    /// Bare mode: the binding is applied in the child before exec.
    pub native_binding: bool,
    pub workdir: Option<PathBuf>,
    /// The instance and its GPUs (what `{instance}`, `{gpus}`, `{tp}` and the visibility
    /// variables were made from).
    pub placement: Placement,
    pub port: u16,
    pub served_model_name: Option<String>,
    /// The model directory as the engine sees it.
    pub model_path: Option<PathBuf>,
    /// The same directory on the host (through the container's volumes in container mode):
    /// preflight checks it exists.
    pub model_path_host: Option<PathBuf>,
}

/// Substitutes `{name}` placeholders of one argv element; `{{` and `}}` are literal braces.
fn substitute(
    index: usize,
    arg: &str,
    values: &BTreeMap<&str, Option<String>>,
) -> Result<String, SpecError> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
            continue;
        }
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let name = &tail[1..end];
        match values.get(name) {
            None => {
                return Err(SpecError::UnknownPlaceholder {
                    index,
                    arg: arg.to_string(),
                    name: name.to_string(),
                })
            }
            Some(None) => {
                let key = match name {
                    "served_model_name" => "engine.served_model_name",
                    "model_path" => "engine.model_path",
                    "gpus" => "launch.gpus (or binding.auto)",
                    "tp" => "launch.gpus or launch.tp (or binding.auto)",
                    _ => "its value",
                };
                return Err(SpecError::MissingValue { index, name: name.to_string(), key });
            }
            Some(Some(v)) => out.push_str(v),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Maps a path inside the container to the host through `HOST:CONTAINER[:opts]` volumes.
fn host_path(path: &std::path::Path, volumes: &[String]) -> Option<PathBuf> {
    volumes.iter().find_map(|v| {
        let mut parts = v.split(':');
        let host = parts.next()?;
        let inside = parts.next()?;
        let rel = path.strip_prefix(inside).ok()?;
        Some(PathBuf::from(host).join(rel))
    })
}

impl LaunchSpec {
    /// Builds the spec without a plan: the placement comes from the config
    /// ([`Placement::from_config`]). `self_exe` replaces `{self}` (the running nodeagent binary).
    pub fn build(config: &Config, binding: Binding, self_exe: &str) -> Result<Self, SpecError> {
        Self::build_placed(config, binding, &Placement::from_config(config), self_exe)
    }

    /// Builds the spec for one placed instance: `{tp}` is its GPU count (else `launch.tp`),
    /// `{gpus}` its GPU list, `{instance}` its index; the visibility variables of its GPU
    /// stack are added to the environment unless set (then they must match).
    pub fn build_placed(
        config: &Config,
        binding: Binding,
        placement: &Placement,
        self_exe: &str,
    ) -> Result<Self, SpecError> {
        let port = config.port();
        if port == 0 {
            return Err(SpecError::ZeroPort);
        }
        let e = &config.engine;
        let values: BTreeMap<&str, Option<String>> = BTreeMap::from([
            ("port", Some(port.to_string())),
            ("host", Some(e.host.clone().unwrap_or_else(|| "0.0.0.0".to_string()))),
            ("served_model_name", e.served_model_name.clone()),
            ("model_path", e.model_path.as_ref().map(|p| p.display().to_string())),
            ("self", Some(self_exe.to_string())),
            ("instance", Some(placement.instance.to_string())),
            ("gpus", placement.gpus.as_deref().map(join)),
            (
                "tp",
                placement
                    .gpus
                    .as_ref()
                    .map(|g| g.len().to_string())
                    .or_else(|| config.launch.tp.map(|t| t.to_string())),
            ),
        ]);
        let engine_argv = e
            .argv
            .iter()
            .enumerate()
            .map(|(i, a)| substitute(i, a, &values))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = config.mode();
        let mut argv = Vec::new();
        if mode == LaunchMode::Numactl && !binding.is_none() {
            let numactl = config.launch.numactl.clone().unwrap_or_else(|| "numactl".into());
            argv.push(numactl.display().to_string());
            argv.extend(binding.numactl_args());
            argv.push("--".to_string());
        }
        argv.extend(engine_argv.iter().cloned());
        let unset_env = e
            .unset_env
            .clone()
            .unwrap_or_else(|| DEFAULT_UNSET_ENV.iter().map(|s| s.to_string()).collect())
            .into_iter()
            .filter(|k| !e.env.contains_key(k))
            .collect();
        let model_path_host = match (&e.model_path, mode) {
            (Some(p), LaunchMode::Container) => host_path(p, &config.container.volumes),
            (Some(p), _) => Some(p.clone()),
            (None, _) => None,
        };
        let mut env = e.env.clone();
        visibility_env(&mut env, placement)?;
        Ok(Self {
            mode,
            argv,
            engine_argv,
            env,
            unset_env,
            native_binding: mode == LaunchMode::Bare && !binding.is_none(),
            binding,
            workdir: e.workdir.clone(),
            placement: placement.clone(),
            port,
            served_model_name: e.served_model_name.clone(),
            model_path: e.model_path.clone(),
            model_path_host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::MemPolicy;
    use crate::config::load_str;
    use crate::host::cpuset::CpuSet;

    fn cfg(text: &str) -> Config {
        load_str("t.toml", text, std::path::Path::new(".")).unwrap().config
    }

    fn seed_binding() -> Binding {
        Binding {
            cpu_nodes: vec![0],
            cpus: Some(CpuSet::parse_list("0-15").unwrap()),
            memory: MemPolicy::Bind(vec![0]),
        }
    }

    #[test]
    fn numactl_mode_reproduces_the_seed_command() {
        let c = cfg("host = \"nvidia\"\nmodel = \"qwen2.5-72b\"\n[launch]\nmode = \"numactl\"\n");
        let s = LaunchSpec::build(&c, seed_binding(), "/x/nodeagent").unwrap();
        assert_eq!(
            s.argv[..10],
            [
                "numactl",
                "--cpunodebind=0",
                "--membind=0",
                "--",
                "vllm",
                "serve",
                "/data/Qwen2.5-72B-Instruct",
                "--served-model-name",
                "qwen2.5",
                "--tensor-parallel-size"
            ]
        );
        assert!(s.argv.ends_with(&["--port".into(), "8000".into()]));
        assert!(!s.native_binding);
        assert_eq!(s.unset_env, ["RAY_ADDRESS", "VLLM_PORT"]);
    }

    #[test]
    fn bare_mode_binds_natively_and_container_maps_model_path() {
        let c = cfg("host = \"local\"\nmodel = \"sim\"\n");
        let s = LaunchSpec::build(&c, seed_binding(), "/x/nodeagent").unwrap();
        assert!(s.native_binding);
        assert_eq!(s.argv[0], "/x/nodeagent");
        let c = cfg("host = \"metax-mxc500-4x64g\"\nmodel = \"deepseek-r1-distill-qwen-32b\"\n");
        let s = LaunchSpec::build(&c, seed_binding(), "x").unwrap();
        assert_eq!(
            s.model_path_host.unwrap(),
            PathBuf::from("/data/models/DeepSeek-R1-Distill-Qwen-32B")
        );
        assert_eq!(s.argv[0], "vllm");
    }

    #[test]
    fn placeholders_stay_inside_one_argument() {
        let c = cfg(
            "model = \"sim\"\n[engine]\nargv = [\"x\", \"--a={port};rm -rf {{/}}\"]\nport = 9\n",
        );
        let s = LaunchSpec::build(&c, Binding::none(), "x").unwrap();
        assert_eq!(s.argv, ["x", "--a=9;rm -rf {/}"]);
        let c = cfg("model = \"sim\"\n[engine]\nargv = [\"x\", \"{nope}\"]\n");
        let err = LaunchSpec::build(&c, Binding::none(), "x").unwrap_err().to_string();
        assert!(err.contains("argv[1]") && err.contains("{nope}"), "{err}");
    }

    fn placed(gpus: &[u32], instance: usize, stack: GpuStack) -> Placement {
        Placement { instance, gpus: Some(gpus.to_vec()), stack }
    }

    #[test]
    fn placeholders_tp_gpus_instance_come_from_the_placement() {
        let c = cfg("model = \"sim\"\n[engine]\nargv = [\"x\", \"--tp={tp}\", \"{gpus}\", \"i{instance}\"]\n");
        let p = placed(&[2, 3], 1, GpuStack::Unknown);
        let s = LaunchSpec::build_placed(&c, Binding::none(), &p, "x").unwrap();
        assert_eq!(s.argv, ["x", "--tp=2", "2,3", "i1"]);
        // Unknown GPUs: {tp} falls back to launch.tp, {gpus} is an error naming the key.
        let c = cfg("model = \"sim\"\n[launch]\ntp = 4\n[engine]\nargv = [\"x\", \"{tp}\"]\n");
        assert_eq!(LaunchSpec::build(&c, Binding::none(), "x").unwrap().argv, ["x", "4"]);
        let c = cfg("model = \"sim\"\n[engine]\nargv = [\"x\", \"{tp}\", \"{gpus}\"]\n");
        let err = LaunchSpec::build(&c, Binding::none(), "x").unwrap_err().to_string();
        assert_eq!(
            err,
            "engine.argv[1] uses {tp} but launch.gpus or launch.tp (or binding.auto) is not set"
        );
        // launch.gpus without a plan gives both.
        let c = cfg("model = \"sim\"\n[launch]\ngpus = [5, 7]\n[engine]\nargv = [\"x\", \"{tp}\", \"{gpus}\"]\n");
        assert_eq!(LaunchSpec::build(&c, Binding::none(), "x").unwrap().argv, ["x", "2", "5,7"]);
    }

    #[test]
    fn bundled_model_profiles_take_tp_from_the_instance() {
        let c = cfg("host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n");
        let s =
            LaunchSpec::build_placed(&c, Binding::none(), &placed(&[2, 3], 1, GpuStack::Maca), "x")
                .unwrap();
        let at = s.argv.iter().position(|a| a == "--tensor-parallel-size").unwrap();
        assert_eq!(s.argv[at + 1], "2");
    }

    #[test]
    fn visibility_variables_per_stack() {
        let c = cfg("model = \"sim\"\n");
        let s =
            LaunchSpec::build_placed(&c, Binding::none(), &placed(&[2, 3], 1, GpuStack::Cuda), "x")
                .unwrap();
        assert_eq!(s.env.get("CUDA_VISIBLE_DEVICES").unwrap(), "2,3");
        assert_eq!(s.env.get("CUDA_DEVICE_ORDER").unwrap(), "PCI_BUS_ID");
        assert!(!s.env.contains_key("MACA_VISIBLE_DEVICES"));
        let s =
            LaunchSpec::build_placed(&c, Binding::none(), &placed(&[0, 1], 0, GpuStack::Maca), "x")
                .unwrap();
        assert_eq!(s.env.get("CUDA_VISIBLE_DEVICES").unwrap(), "0,1");
        assert_eq!(s.env.get("MACA_VISIBLE_DEVICES").unwrap(), "0,1");
        assert!(!s.env.contains_key("CUDA_DEVICE_ORDER"));
        let s =
            LaunchSpec::build_placed(&c, Binding::none(), &placed(&[0], 0, GpuStack::Unknown), "x")
                .unwrap();
        assert!(s.env.is_empty(), "{:?}", s.env);
        // No GPUs known: nothing is set.
        let s = LaunchSpec::build(&c, Binding::none(), "x").unwrap();
        assert!(!s.env.contains_key("CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn an_explicit_visibility_value_is_kept_and_checked() {
        let p = placed(&[2, 3], 1, GpuStack::Cuda);
        let c = cfg("model = \"sim\"\n[engine.env]\nCUDA_VISIBLE_DEVICES = \"2, 3\"\n");
        let s = LaunchSpec::build_placed(&c, Binding::none(), &p, "x").unwrap();
        assert_eq!(s.env.get("CUDA_VISIBLE_DEVICES").unwrap(), "2, 3");
        let c = cfg("model = \"sim\"\n[engine.env]\nCUDA_VISIBLE_DEVICES = \"3,2\"\n");
        let err = LaunchSpec::build_placed(&c, Binding::none(), &p, "x").unwrap_err().to_string();
        assert_eq!(
            err,
            "engine.env CUDA_VISIBLE_DEVICES = `3,2` but the plan gives this instance GPUs 2,3: remove it or make it match"
        );
        let c = cfg("model = \"sim\"\n[engine.env]\nCUDA_DEVICE_ORDER = \"FASTEST_FIRST\"\n");
        let err = LaunchSpec::build_placed(&c, Binding::none(), &p, "x").unwrap_err().to_string();
        assert!(err.starts_with("engine.env CUDA_DEVICE_ORDER = `FASTEST_FIRST`"), "{err}");
        let m = placed(&[0, 1], 0, GpuStack::Maca);
        let c = cfg("model = \"sim\"\n[engine.env]\nMACA_VISIBLE_DEVICES = \"1\"\n");
        let err = LaunchSpec::build_placed(&c, Binding::none(), &m, "x").unwrap_err().to_string();
        assert!(err.starts_with("engine.env MACA_VISIBLE_DEVICES = `1`"), "{err}");
    }

    #[test]
    fn configured_env_is_not_unset() {
        let c = cfg("model = \"sim\"\n[engine.env]\nRAY_ADDRESS = \"auto\"\n");
        let s = LaunchSpec::build(&c, Binding::none(), "x").unwrap();
        assert_eq!(s.unset_env, ["VLLM_PORT"]);
    }
}
