//! Choosing the runtime: [`runtime_for`] turns a launch spec into the one [`EngineRuntime`] that
//! runs it (a process tree, bare with the binding applied natively or under `numactl`, or a
//! Docker container), for `serve`, `verify --compare` and `demo` alike, so the choice is made
//! in one place. The seam's types (`EngineRuntime`, `EngineExit`, `RuntimeError`) are defined
//! in `super::engine` and re-exported here, so `supervise::runtime` is the one path callers use.
//!
//! Not here: running anything (`super::process`, `super::docker`) or deciding when to restart
//! (`super::supervisor`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use crate::supervise::engine::{
    DockerError, EngineExit, EngineRuntime, PortHolder, RuntimeError,
};

use crate::config::container::ContainerSettings;
use crate::config::LaunchMode;
use crate::launch::container::ContainerSpec;
use crate::launch::spec::LaunchSpec;
use crate::supervise::docker::{DockerRuntime, LogSink};
use crate::supervise::process::ProcessRuntime;

/// How a runtime is set up beyond what the launch spec says: where its state goes and where the
/// engine's output goes. `serve` and the comparison differ only here.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The state dir (the process runtime keeps its pid file there).
    pub state_dir: PathBuf,
    /// The instance a container runs, in its name and labels (`nodeagent-<instance>`).
    pub instance: String,
    /// Append the engine's stdout and stderr to this file (created if missing) instead of
    /// sharing the agent's.
    pub engine_log: Option<PathBuf>,
    /// Without `engine_log`: send the engine's stdout to the agent's stderr (`verify --compare`
    /// and `demo`, whose stdout is the report). Containers always write to stderr.
    pub stdout_to_stderr: bool,
    /// Process runtimes: make the agent a child subreaper, so orphaned workers (a Ray worker
    /// whose parent died) re-parent to it instead of PID 1 and stay visible, countable and
    /// killable; count them as the engine's (`serve`). Process-wide: for a long-lived agent.
    pub adopt_orphans: bool,
}

/// The runtime that runs `spec`: a process tree for `bare` (the binding applied natively
/// before exec when `spec.native_binding`) and `numactl` modes, a container built from
/// `container` for `container` mode. Starts nothing; errors are setting up the subreaper or
/// opening the engine log.
pub fn runtime_for(
    spec: LaunchSpec,
    container: &ContainerSettings,
    options: &RuntimeOptions,
) -> Result<Box<dyn EngineRuntime>, RuntimeError> {
    match spec.mode {
        LaunchMode::Bare | LaunchMode::Numactl => {
            if options.adopt_orphans {
                nix::sys::prctl::set_child_subreaper(true)
                    .map_err(|source| RuntimeError::Subreaper { source })?;
            }
            Ok(Box::new(
                ProcessRuntime::new(spec, options.state_dir.clone())
                    .instance(&options.instance)
                    .adopt_children(options.adopt_orphans)
                    .stdout_to_stderr(options.stdout_to_stderr)
                    .log_to(options.engine_log.clone()),
            ))
        }
        LaunchMode::Container => {
            let runtime = DockerRuntime::new(ContainerSpec::new(
                container,
                &spec.binding,
                spec.engine_argv,
                spec.env,
                &options.instance,
            ));
            Ok(Box::new(match &options.engine_log {
                Some(path) => {
                    let file =
                        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(
                            |source| RuntimeError::EngineLog { path: path.clone(), source },
                        )?;
                    let sink: LogSink = Arc::new(Mutex::new(file));
                    runtime.with_log_sink(Some(sink))
                }
                None => runtime,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::Binding;
    use crate::config::load_str;

    fn spec(text: &str) -> LaunchSpec {
        let c = load_str("t.toml", text, std::path::Path::new(".")).unwrap().config;
        LaunchSpec::build(&c, Binding::none(), "/x/nodeagent").unwrap()
    }

    #[test]
    fn the_mode_chooses_the_runtime() {
        let opts = RuntimeOptions { instance: "0".into(), ..Default::default() };
        let settings = ContainerSettings { image: "img:1".into(), ..Default::default() };
        let bare = spec("model = \"sim\"\n");
        assert_eq!(runtime_for(bare, &settings, &opts).unwrap().describe(), "process");
        let numactl = spec("model = \"sim\"\n[launch]\nmode = \"numactl\"\n");
        assert_eq!(runtime_for(numactl, &settings, &opts).unwrap().describe(), "process (numactl)");
        let container =
            spec("model = \"sim\"\n[launch]\nmode = \"container\"\n[container]\nimage = \"i:1\"\n");
        assert_eq!(
            runtime_for(container, &settings, &opts).unwrap().describe(),
            "container nodeagent-0"
        );
    }

    #[test]
    fn an_engine_log_that_cannot_be_opened_is_a_preflight_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = RuntimeOptions {
            instance: "compare".into(),
            engine_log: Some(dir.path().join("no/such/dir/engine.log")),
            ..Default::default()
        };
        let settings = ContainerSettings { image: "img:1".into(), ..Default::default() };
        let container =
            spec("model = \"sim\"\n[launch]\nmode = \"container\"\n[container]\nimage = \"i:1\"\n");
        let err = runtime_for(container, &settings, &opts).err().expect("no log dir");
        assert!(matches!(err, RuntimeError::EngineLog { .. }), "{err}");
        assert!(err.is_preflight());
    }
}
