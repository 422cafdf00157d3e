//! Where per-rank binding learns which pid runs on which GPU: the vendor's management library
//! first (NVML's compute processes, libmxsml's per-GPU process list: no tool started, an answer
//! in microseconds), the vendor tool's process table (`nvidia-smi --query-compute-apps`, the
//! `mx-smi` process table, read by the occupancy preflight's reader) when no library is loaded
//! or its reading fails. Each reading says which source it came from, for `status` and the log.
//!
//! A library reading fails as a whole when the process list of a GPU of the ranks could not be
//! read: an unknown list is not an empty one. The library stays loaded and is asked again at
//! the next reading.
//!
//! Not here: which pids are the engine's, what is bound (`super`).

use std::path::Path;
use std::time::Duration;

use crate::host::facts::GpuProcess;
use crate::host::mxsml::Mxsml;
use crate::host::nvml::NvmlLib;
use crate::host::runner::CommandRunner;
use crate::launch::spec::GpuStack;
use crate::supervise::occupancy::check::{read_table, GpuTool};

/// A vendor management library's list of compute processes per GPU.
pub trait ProcessLibrary: Send + Sync {
    /// How `status` and the log name it: `NVML`, `libmxsml`.
    fn name(&self) -> &'static str;
    /// The processes on `gpus` (host GPU indices); `Err` (one line) when any of their lists
    /// could not be read.
    fn processes(&self, gpus: &[u32]) -> Result<Vec<GpuProcess>, String>;
}

impl ProcessLibrary for NvmlLib {
    fn name(&self) -> &'static str {
        "NVML"
    }

    fn processes(&self, gpus: &[u32]) -> Result<Vec<GpuProcess>, String> {
        let reading = self.read_with(Path::new("/proc"), false).map_err(|e| e.to_string())?;
        unread_gpu(&reading.degraded, gpus).map_or(Ok(reading.processes), Err)
    }
}

/// The first note of an NVML reading saying that the process list of one of `gpus` was not
/// read (the call failed, or the GPU could not be opened). Pure.
pub fn unread_gpu(notes: &[String], gpus: &[u32]) -> Option<String> {
    notes
        .iter()
        .find(|n| {
            gpus.iter().any(|g| {
                n.starts_with(&format!("gpu {g} processes:"))
                    || n.starts_with(&format!("gpu {g}: cannot open"))
            })
        })
        .map(|n| format!("NVML ({n})"))
}

impl ProcessLibrary for Mxsml {
    fn name(&self) -> &'static str {
        "libmxsml"
    }

    fn processes(&self, gpus: &[u32]) -> Result<Vec<GpuProcess>, String> {
        let mut out = Vec::new();
        for &gpu in gpus {
            out.extend(Mxsml::processes(self, gpu).map_err(|e| format!("libmxsml: {e}"))?);
        }
        Ok(out)
    }
}

/// The library of `stack` (CUDA: NVML, MACA: libmxsml, unknown: libmxsml, then NVML), loaded as
/// the monitor loads it (`NODEAGENT_NVML_LIB`, `NODEAGENT_MXSML_LIB`); why none, when none.
pub fn open_library(stack: GpuStack) -> Result<Box<dyn ProcessLibrary>, String> {
    let nvml = || {
        NvmlLib::open_from_env()
            .map(|l| Box::new(l) as Box<dyn ProcessLibrary>)
            .map_err(|e| e.to_string())
    };
    let mxsml = || {
        Mxsml::open_default()
            .map(|l| Box::new(l) as Box<dyn ProcessLibrary>)
            .map_err(|e| e.to_string())
    };
    match stack {
        GpuStack::Cuda => nvml(),
        GpuStack::Maca => mxsml(),
        GpuStack::Unknown => mxsml().or_else(|a| nvml().map_err(|b| format!("{a}; {b}"))),
    }
}

/// The GPU stack a vendor tool belongs to (unknown without one).
pub fn stack_of(tool: Option<&GpuTool>) -> GpuStack {
    match tool {
        Some(GpuTool::NvidiaSmi(_)) => GpuStack::Cuda,
        Some(GpuTool::MxSmi(_)) => GpuStack::Maca,
        None => GpuStack::Unknown,
    }
}

/// How `status` and the log name the tool.
pub fn tool_name(tool: &GpuTool) -> &'static str {
    match tool {
        GpuTool::NvidiaSmi(_) => "nvidia-smi",
        GpuTool::MxSmi(_) => "mx-smi",
    }
}

/// One reading of pid -> GPU.
#[derive(Debug)]
pub struct Reading {
    /// The processes listed, with the name of the source that listed them; `Err`: why no
    /// source answered (one line).
    pub processes: Result<(Vec<GpuProcess>, &'static str), String>,
    /// The library's failure when the tool answered instead (warned about by the caller).
    pub fell_back: Option<String>,
}

/// Asks `library` for the processes on `gpus`, else the `tool` through `runner`.
pub fn read(
    library: Option<&dyn ProcessLibrary>,
    tool: Option<&GpuTool>,
    runner: &dyn CommandRunner,
    timeout: Duration,
    gpus: &[u32],
) -> Reading {
    let mut failed = None;
    if let Some(lib) = library {
        match lib.processes(gpus) {
            Ok(p) => return Reading { processes: Ok((p, lib.name())), fell_back: None },
            Err(e) => failed = Some(format!("{}'s process list failed: {e}", lib.name())),
        }
    }
    let from_tool = match tool {
        None => {
            Err("no vendor tool (nvidia-smi, mx-smi) found to tell which pid runs on which GPU"
                .to_string())
        }
        Some(t) => read_table(t, runner, timeout)
            .map(|s| (s.processes, tool_name(t)))
            .map_err(|e| format!("reading the GPU process table: {e}")),
    };
    match (from_tool, failed) {
        (Ok(p), failed) => Reading { processes: Ok(p), fell_back: failed },
        (Err(e), Some(lib)) => Reading { processes: Err(format!("{lib}; {e}")), fell_back: None },
        (Err(e), None) => Reading { processes: Err(e), fell_back: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{RunError, ToolOutput};

    /// A library whose answer the test sets.
    struct Lib(Result<Vec<GpuProcess>, String>);

    impl ProcessLibrary for Lib {
        fn name(&self) -> &'static str {
            "NVML"
        }
        fn processes(&self, _: &[u32]) -> Result<Vec<GpuProcess>, String> {
            self.0.clone()
        }
    }

    /// `mx-smi` printing the seed host's table with its Ray workers, or failing.
    struct Smi(bool);

    impl CommandRunner for Smi {
        fn run(&self, p: &Path, a: &[&str], _: Duration) -> Result<ToolOutput, RunError> {
            if !self.0 {
                return Err(RunError::Failed {
                    tool: p.display().to_string(),
                    args: a.join(" "),
                    status: "exit status: 1".into(),
                    detail: String::new(),
                });
            }
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/mx-smi/seed-mx-smi.load.qwen72b.txt");
            let stdout = std::fs::read_to_string(path).unwrap();
            Ok(ToolOutput { stdout, stderr: String::new(), elapsed: Duration::ZERO })
        }
    }

    fn proc(gpu: u32, pid: u32) -> GpuProcess {
        GpuProcess { gpu, pid, name: "python3".into(), memory_mib: None, line: 0 }
    }

    #[test]
    fn the_library_first_the_tool_when_it_fails_or_is_missing() {
        let tool = GpuTool::MxSmi("mx-smi".into());
        let t = Duration::from_secs(1);
        let ok = Lib(Ok(vec![proc(0, 7)]));
        let r = read(Some(&ok), Some(&tool), &Smi(true), t, &[0]);
        assert_eq!(r.processes, Ok((vec![proc(0, 7)], "NVML")));
        assert_eq!(r.fell_back, None);

        let broken = Lib(Err("NVML (gpu 0 processes: Unknown Error)".into()));
        let r = read(Some(&broken), Some(&tool), &Smi(true), t, &[0]);
        let (procs, source) = r.processes.unwrap();
        assert_eq!(source, "mx-smi");
        assert!(!procs.is_empty(), "the seed table lists its Ray workers");
        assert_eq!(
            r.fell_back.as_deref(),
            Some("NVML's process list failed: NVML (gpu 0 processes: Unknown Error)")
        );

        let r = read(Some(&broken), Some(&tool), &Smi(false), t, &[0]);
        assert_eq!(
            r.processes.unwrap_err(),
            "NVML's process list failed: NVML (gpu 0 processes: Unknown Error); reading the GPU \
             process table: mx-smi : exited with exit status: 1"
        );
        let r = read(None, None, &Smi(true), t, &[0]);
        assert_eq!(
            r.processes.unwrap_err(),
            "no vendor tool (nvidia-smi, mx-smi) found to tell which pid runs on which GPU"
        );
    }

    #[test]
    fn an_nvml_note_on_a_ranks_gpu_makes_the_reading_unknown() {
        let notes = vec![
            "gpu 1 power: Not Supported".to_string(),
            "gpu 3 processes: Unknown Error".to_string(),
            "gpu 5: cannot open: GPU is lost".to_string(),
        ];
        assert_eq!(unread_gpu(&notes, &[0, 1, 2]), None);
        assert_eq!(
            unread_gpu(&notes, &[2, 3]).as_deref(),
            Some("NVML (gpu 3 processes: Unknown Error)")
        );
        assert_eq!(
            unread_gpu(&notes, &[5]).as_deref(),
            Some("NVML (gpu 5: cannot open: GPU is lost)")
        );
        // "gpu 1" is no prefix of "gpu 13".
        assert_eq!(unread_gpu(&["gpu 13 processes: x".to_string()], &[1]), None);
    }

    #[test]
    fn the_stack_of_a_tool() {
        assert_eq!(stack_of(Some(&GpuTool::NvidiaSmi("x".into()))), GpuStack::Cuda);
        assert_eq!(stack_of(Some(&GpuTool::MxSmi("x".into()))), GpuStack::Maca);
        assert_eq!(stack_of(None), GpuStack::Unknown);
    }
}
