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
    #[error("engine.argv[{index}] `{arg}`: unknown placeholder `{{{name}}}` (known: port, host, served_model_name, model_path, self)")]
    UnknownPlaceholder { index: usize, arg: String, name: String },
    #[error("engine.argv[{index}] uses {{{name}}} but {key} is not set")]
    MissingValue { index: usize, name: String, key: &'static str },
    #[error("engine.port is 0: the engine needs a fixed port for health checks and clients")]
    ZeroPort,
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
    /// Builds the spec. `self_exe` replaces `{self}` (the running nodeagent binary).
    pub fn build(config: &Config, binding: Binding, self_exe: &str) -> Result<Self, SpecError> {
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
        Ok(Self {
            mode,
            argv,
            engine_argv,
            env: e.env.clone(),
            unset_env,
            native_binding: mode == LaunchMode::Bare && !binding.is_none(),
            binding,
            workdir: e.workdir.clone(),
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

    #[test]
    fn configured_env_is_not_unset() {
        let c = cfg("model = \"sim\"\n[engine.env]\nRAY_ADDRESS = \"auto\"\n");
        let s = LaunchSpec::build(&c, Binding::none(), "x").unwrap();
        assert_eq!(s.unset_env, ["VLLM_PORT"]);
    }
}
