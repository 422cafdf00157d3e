//! The command-runner seam: every external tool (`mx-smi`, `nvidia-smi`, `numactl`, ...) is run
//! through [`CommandRunner`], so tests can pass a fake and the live path stays one function.
//! [`SystemRunner`] runs an argv with a timeout and captures stdout, stderr and the exit status.
//! This module does not parse anything and does not decide whether a failure is fatal: callers
//! (`crate::host`) do, per source.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a tool printed, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{tool}: not found (install it or pass its path)")]
    NotFound { tool: String },
    #[error("{tool}: could not start: {source}")]
    Spawn { tool: String, source: std::io::Error },
    #[error("{tool} {args}: exited with {status}{detail}")]
    Failed { tool: String, args: String, status: String, detail: String },
    #[error("{tool} {args}: no answer within {timeout:?} (killed)")]
    TimedOut { tool: String, args: String, timeout: Duration },
    #[error("{tool}: reading its output: {source}")]
    Io { tool: String, source: std::io::Error },
}

impl RunError {
    /// The tool is simply absent (as opposed to present and broken).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RunError::NotFound { .. })
    }
}

/// Runs one tool invocation. Implementations must never block longer than `timeout`.
pub trait CommandRunner {
    fn run(&self, program: &Path, args: &[&str], timeout: Duration)
        -> Result<ToolOutput, RunError>;

    /// Whether `program` can be found (a path that exists, or a name on `PATH`).
    fn exists(&self, program: &Path) -> bool {
        resolve(program).is_some()
    }
}

/// Finds `program` the way `execvp` would: as given when it has a slash, else on `PATH`.
pub fn resolve(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// The real runner: `std::process` with stdin closed, output captured on two reader threads
/// (so a chatty tool cannot fill a pipe and stall), and the child killed at the deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ToolOutput, RunError> {
        let tool = program.display().to_string();
        let argstr = args.join(" ");
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Tools print localised numbers and dates otherwise.
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => RunError::NotFound { tool: tool.clone() },
                _ => RunError::Spawn { tool: tool.clone(), source },
            })?;
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    p.read_to_end(&mut buf).map(|_| buf)
                } else {
                    Ok(buf)
                }
            })
        };
        let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        // Poll instead of a waiter thread: we keep ownership of the child, so the kill below
        // can never hit a reaped (and possibly reused) pid. 1 ms costs nothing next to a tool.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunError::TimedOut { tool, args: argstr, timeout });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(source) => return Err(RunError::Io { tool, source }),
            }
        };
        let join = |h: std::thread::JoinHandle<std::io::Result<Vec<u8>>>| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let stdout = join(out).map_err(|source| RunError::Io { tool: tool.clone(), source })?;
        let stderr = join(err).map_err(|source| RunError::Io { tool: tool.clone(), source })?;
        if !status.success() {
            let first = stderr.lines().chain(stdout.lines()).find(|l| !l.trim().is_empty());
            let detail = first.map(|l| format!(": {}", l.trim())).unwrap_or_default();
            let status = match status.code() {
                Some(code) => format!("status {code}"),
                None => format!("{status}"),
            };
            return Err(RunError::Failed { tool, args: argstr, status, detail });
        }
        Ok(ToolOutput { stdout, stderr, elapsed: start.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn captures_stdout_of_a_real_process() {
        let out = SystemRunner.run(Path::new("sh"), &["-c", "echo hi; echo err >&2"], T).unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn missing_tool_is_not_found() {
        let err = SystemRunner.run(Path::new("no-such-tool-xyz"), &[], T).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("no-such-tool-xyz"));
    }

    #[test]
    fn non_zero_exit_names_tool_and_first_stderr_line() {
        let err =
            SystemRunner.run(Path::new("sh"), &["-c", "echo boom >&2; exit 3"], T).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RunError::Failed { .. }));
        assert!(msg.contains("status 3") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn hanging_tool_is_killed_at_the_timeout() {
        let start = Instant::now();
        let err =
            SystemRunner.run(Path::new("sleep"), &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn resolves_names_on_path() {
        assert!(SystemRunner.exists(Path::new("sh")));
        assert!(!SystemRunner.exists(Path::new("no-such-tool-xyz")));
        assert!(!SystemRunner.exists(Path::new("/nonexistent/dir/tool")));
    }
}
