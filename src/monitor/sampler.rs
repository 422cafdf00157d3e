//! Where samples come from: the `Sampler` seam, the real tool-running sampler (`ToolSampler`:
//! `nvidia-smi` CSV queries or the `mx-smi` table, each run with a timeout), and replay from a
//! snapshot directory (`DirSampler`). A sampler never fails: a tool that hangs, is missing or
//! prints garbage yields a *missing* sample with the reason, so the agent never stalls on it.
//!
//! This module does not interpret samples (that is `checks`) and does not schedule them
//! (that is `agent`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::parse::{self, NVIDIA_QUERY_APPS_ARGS, NVIDIA_QUERY_GPU_ARGS};
use super::sample::{now_unix_ms, Sample, SampleSource};

/// Produces one sample per call. Implementations must bound their own run time.
pub trait Sampler: Send + Sync + std::fmt::Debug {
    fn sample(&self) -> BoxFuture<'_, Sample>;
    /// For logs and `/status`: `nvidia-smi (/usr/bin/nvidia-smi)`.
    fn describe(&self) -> String;
    /// Each GPU's NUMA node as the vendor's `topo -m` states it (`NUMA Affinity`), keyed by
    /// the tool's GPU index; empty when unknown. Asked once: the topology does not change.
    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async { BTreeMap::new() })
    }
}

/// The GPUs with a single NUMA node in a `topo -m` text (MetaX or NVIDIA: one parser).
fn numa_from_topo(text: &str) -> Result<BTreeMap<u32, u32>, String> {
    let topo = crate::host::gputopo::parse(text).map_err(|e| e.to_string())?;
    Ok(topo.gpus.iter().filter_map(|r| Some((r.index, r.numa_affinity?))).collect())
}

/// The vendor tool a `ToolSampler` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    MxSmi(PathBuf),
    NvidiaSmi(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("no GPU tool found: neither {mx_smi} nor {nvidia_smi} is on PATH (use --mx-smi/--nvidia-smi PATH, or --from DIR)")]
    NoTool { mx_smi: String, nvidia_smi: String },
    #[error("{path}: not found or not executable")]
    ToolMissing { path: String },
    #[error("snapshot {dir}: has neither mx-smi.txt, nvidia-smi-query.csv nor nvidia-smi.txt")]
    EmptySnapshot { dir: String },
}

/// Runs the vendor tool with a timeout on every call.
#[derive(Debug, Clone)]
pub struct ToolSampler {
    pub tool: Tool,
    pub timeout: Duration,
    /// MetaX: libmxsml, then `mx-smi dmon`, then the table (`super::metax`).
    pub metax: Option<std::sync::Arc<super::metax::MetaxSource>>,
}

/// Finds `name` as given (contains a `/`) or on `PATH`.
pub fn find_tool(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.components().count() > 1 {
        return executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| executable(p))
}

impl ToolSampler {
    /// Picks the tool: `vendor` forces one; otherwise `mx-smi` if found, else `nvidia-smi`.
    pub fn detect(
        vendor: Option<crate::host::facts::Vendor>,
        mx_smi: &Path,
        nvidia_smi: &Path,
        timeout: Duration,
    ) -> Result<Self, SamplerError> {
        use crate::host::facts::Vendor;
        let missing = |p: &Path| SamplerError::ToolMissing { path: p.display().to_string() };
        let tool = match vendor {
            Some(Vendor::Metax) => Tool::MxSmi(find_tool(mx_smi).ok_or_else(|| missing(mx_smi))?),
            Some(Vendor::Nvidia) => {
                Tool::NvidiaSmi(find_tool(nvidia_smi).ok_or_else(|| missing(nvidia_smi))?)
            }
            _ => match (find_tool(mx_smi), find_tool(nvidia_smi)) {
                (Some(p), _) => Tool::MxSmi(p),
                (None, Some(p)) => Tool::NvidiaSmi(p),
                (None, None) => {
                    return Err(SamplerError::NoTool {
                        mx_smi: mx_smi.display().to_string(),
                        nvidia_smi: nvidia_smi.display().to_string(),
                    })
                }
            },
        };
        let metax = match &tool {
            Tool::MxSmi(p) => Some(std::sync::Arc::new(super::metax::MetaxSource::new(p))),
            Tool::NvidiaSmi(_) => None,
        };
        Ok(Self { tool, timeout, metax })
    }

    async fn run_all(&self) -> Result<crate::host::facts::SmiStatus, String> {
        match &self.tool {
            Tool::MxSmi(path) => {
                let out = run_tool(path, &[], self.timeout).await?;
                parse::parse_mxsmi(&out).map_err(|e| e.to_string())
            }
            Tool::NvidiaSmi(path) => {
                // Both queries run at once: one tick costs one tool latency, not two.
                let (gpus, apps) = tokio::join!(
                    run_tool(path, &NVIDIA_QUERY_GPU_ARGS, self.timeout),
                    run_tool(path, &NVIDIA_QUERY_APPS_ARGS, self.timeout)
                );
                parse::parse_nvidia(&gpus?, &apps?).map_err(|e| e.to_string())
            }
        }
    }
}

impl Sampler for ToolSampler {
    fn sample(&self) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let at_unix_ms = now_unix_ms();
            let started = Instant::now();
            let (result, source) = match (&self.tool, &self.metax) {
                (Tool::MxSmi(_), Some(metax)) => metax.read(self.timeout, run_tool_owned).await,
                (Tool::MxSmi(_), None) => (self.run_all().await, SampleSource::MxSmi),
                (Tool::NvidiaSmi(_), _) => (self.run_all().await, SampleSource::NvidiaSmi),
            };
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok(status) => {
                    Sample { at_unix_ms, source, duration_ms, status: Some(status), missing: None }
                }
                Err(why) => {
                    tracing::warn!(tool = %self.describe(), reason = %why, "GPU sample missing");
                    Sample { at_unix_ms, source, duration_ms, status: None, missing: Some(why) }
                }
            }
        })
    }

    fn describe(&self) -> String {
        match &self.tool {
            Tool::MxSmi(_) if self.metax.is_some() => {
                self.metax.as_ref().map(|m| m.describe()).unwrap_or_default()
            }
            Tool::MxSmi(p) => format!("mx-smi ({})", p.display()),
            Tool::NvidiaSmi(p) => format!("nvidia-smi ({})", p.display()),
        }
    }

    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async move {
            let path = match &self.tool {
                Tool::MxSmi(p) | Tool::NvidiaSmi(p) => p,
            };
            match run_tool(path, &["topo", "-m"], self.timeout)
                .await
                .and_then(|t| numa_from_topo(&t))
            {
                Ok(map) => map,
                Err(why) => {
                    tracing::debug!(tool = %self.describe(), reason = %why, "no NUMA affinity from topo -m; sysfs only");
                    BTreeMap::new()
                }
            }
        })
    }
}

/// [`run_tool`] with owned arguments (what `super::metax` takes).
pub async fn run_tool_owned(
    path: PathBuf,
    args: Vec<String>,
    timeout: Duration,
) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool(&path, &args, timeout).await
}

/// Runs `path args` in its own process group and returns stdout. On timeout the whole group is
/// killed, so a hung tool (or a script's hung child) cannot pile up across ticks.
pub async fn run_tool(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("{}: cannot run: {e}", path.display()))?;
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            String::from_utf8(out.stdout).map_err(|_| format!("{name}: output is not UTF-8"))
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("").trim();
            Err(format!(
                "{name} {}: {}{}",
                args.join(" "),
                out.status,
                if first.is_empty() { String::new() } else { format!(": {first}") }
            ))
        }
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                // The child was dropped (kill_on_drop kills it); its group may hold helpers.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("{name} timed out after {}", humantime::format_duration(timeout)))
        }
    }
}

/// Replays a snapshot directory (`probe --save` names): `mx-smi.txt`; or `nvidia-smi-query.csv`
/// plus (optionally) `nvidia-smi-apps.csv`; or the `nvidia-smi.txt` status table.
#[derive(Debug, Clone)]
pub struct DirSampler {
    pub dir: PathBuf,
}

impl DirSampler {
    pub fn new(dir: &Path) -> Result<Self, SamplerError> {
        let has = |n: &str| dir.join(n).is_file();
        if !has("mx-smi.txt") && !has("nvidia-smi-query.csv") && !has("nvidia-smi.txt") {
            return Err(SamplerError::EmptySnapshot { dir: dir.display().to_string() });
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn read(&self) -> Result<crate::host::facts::SmiStatus, String> {
        let read = |n: &str| {
            let p = self.dir.join(n);
            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        if self.dir.join("mx-smi.txt").is_file() {
            let text = read("mx-smi.txt")?;
            return parse::parse_mxsmi(&text)
                .map_err(|e| format!("{}: {e}", self.dir.join("mx-smi.txt").display()));
        }
        if !self.dir.join("nvidia-smi-query.csv").is_file() {
            // A `probe --save` snapshot of an NVIDIA host may hold only the status table.
            let text = read("nvidia-smi.txt")?;
            return crate::host::nvsmi::parse_table(&text)
                .map_err(|e| format!("{}: {e}", self.dir.join("nvidia-smi.txt").display()));
        }
        let q = read("nvidia-smi-query.csv")?;
        let a = if self.dir.join("nvidia-smi-apps.csv").is_file() {
            read("nvidia-smi-apps.csv")?
        } else {
            String::new()
        };
        parse::parse_nvidia(&q, &a).map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}

impl Sampler for DirSampler {
    fn sample(&self) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let started = Instant::now();
            let at_unix_ms = now_unix_ms();
            let r = self.read();
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(s) => Sample {
                    at_unix_ms,
                    source: SampleSource::Snapshot,
                    duration_ms,
                    status: Some(s),
                    missing: None,
                },
                Err(e) => Sample {
                    at_unix_ms,
                    source: SampleSource::Snapshot,
                    duration_ms,
                    status: None,
                    missing: Some(e),
                },
            }
        })
    }

    fn describe(&self) -> String {
        format!("snapshot {}", self.dir.display())
    }

    fn numa_by_index(&self) -> BoxFuture<'_, BTreeMap<u32, u32>> {
        Box::pin(async move {
            ["mx-smi-topo-m.txt", "nvidia-smi-topo-m.txt"]
                .iter()
                .map(|n| self.dir.join(n))
                .find(|p| p.is_file())
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| numa_from_topo(&t).ok())
                .unwrap_or_default()
        })
    }
}
