//! Exit statuses, decided in one place: 0 ok, 1 the job failed, 2 bad usage or bad input.
//! Command handlers return `CmdError`; `main` prints it on one line and exits with its code.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// The job ran and failed (a sweep with failures over the limit, an engine that crash-loops).
    Failed = 1,
    /// Bad usage or bad input (malformed tool output, bad config, missing tool or file).
    BadInput = 2,
}

#[derive(Debug)]
pub struct CmdError {
    pub kind: ExitKind,
    pub error: anyhow::Error,
}

impl CmdError {
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self { kind: ExitKind::Failed, error: error.into() }
    }
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Self { kind: ExitKind::BadInput, error: error.into() }
    }
    pub fn code(&self) -> u8 {
        self.kind as u8
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` joins the context chain on one line: "reading x: line 4: bad field".
        write!(f, "{:#}", self.error)
    }
}

/// Marks a `Result` as failing with bad input (exit 2) or as a failed job (exit 1).
pub trait ResultExt<T> {
    fn bad_input(self) -> Result<T, CmdError>;
    fn failed(self) -> Result<T, CmdError>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn bad_input(self) -> Result<T, CmdError> {
        self.map_err(CmdError::bad_input)
    }
    fn failed(self) -> Result<T, CmdError> {
        self.map_err(CmdError::failed)
    }
}
