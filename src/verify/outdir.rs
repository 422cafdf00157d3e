//! Where results go. A given `--out` must be a real directory (created when missing) or
//! nothing: a symlink or a file there is refused, so a planted link cannot redirect what a
//! root run writes. Without `--out`, `demo` and `verify --compare` write into a fresh private
//! directory (`<temp dir>/<prefix>XXXXXX`, mode 0700, never one that existed). Before a sweep
//! writes into a directory that holds an earlier run's files, those are moved into
//! `previous-<its run id>/`, so that a run that fails early (in its preflight, say) never
//! leaves the earlier run's results looking like its own.
//!
//! Not here: writing the run's files (`rundir`).

use std::path::{Path, PathBuf};

/// The files a sweep writes at the top of its directory; an earlier run's are moved aside.
pub const RUN_FILES: [&str; 7] = [
    "summary.json",
    "summary.csv",
    "requests.jsonl",
    "evalscope-summary.txt",
    "chart.svg",
    "chart.png",
    ".summary.json.tmp",
];

#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("output directory {path} is a symlink: refused (give the directory itself)")]
    Symlink { path: PathBuf },
    #[error("output directory {path} is not a directory")]
    NotDir { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot create a private directory in {parent}: {source}")]
    Private { parent: PathBuf, source: std::io::Error },
    #[error("cannot move the earlier run's {path} aside to {to}: {source}")]
    MoveAside { path: PathBuf, to: PathBuf, source: std::io::Error },
}

impl OutDirError {
    /// Whether the fault is the caller's choice of directory (exit 2) rather than the host's.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Symlink { .. } | Self::NotDir { .. })
    }
}

/// Checks a given output directory and creates it when missing: a symlink or anything but a
/// directory is refused (the parents may be symlinks; the directory itself may not).
pub fn given(path: &Path) -> Result<PathBuf, OutDirError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(OutDirError::Symlink { path: path.to_path_buf() })
        }
        Ok(m) if !m.is_dir() => return Err(OutDirError::NotDir { path: path.to_path_buf() }),
        Ok(_) => return Ok(path.to_path_buf()),
        Err(_) => {}
    }
    std::fs::create_dir_all(path)
        .map_err(|source| OutDirError::Create { path: path.to_path_buf(), source })?;
    // Created by someone else between the two calls: check again.
    let m = std::fs::symlink_metadata(path)
        .map_err(|source| OutDirError::Create { path: path.to_path_buf(), source })?;
    if m.file_type().is_symlink() {
        return Err(OutDirError::Symlink { path: path.to_path_buf() });
    }
    Ok(path.to_path_buf())
}

/// A fresh directory `<parent>/<prefix>XXXXXX` with mode 0700, created here (never one that
/// existed), kept after the process ends.
pub fn private_in(parent: &Path, prefix: &str) -> Result<PathBuf, OutDirError> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map(tempfile::TempDir::keep)
        .map_err(|source| OutDirError::Private { parent: parent.to_path_buf(), source })
}

/// `given` when a directory was given, else a fresh private one in the temp directory
/// (`$TMPDIR`, else `/tmp`). The flag says whether it is fresh.
pub fn given_or_private(
    given_dir: Option<&Path>,
    prefix: &str,
) -> Result<(PathBuf, bool), OutDirError> {
    match given_dir {
        Some(d) => given(d).map(|p| (p, false)),
        None => private_in(&std::env::temp_dir(), prefix).map(|p| (p, true)),
    }
}

/// Moves an earlier run's files (`RUN_FILES`) out of the top of `dir` into
/// `dir/previous-<run id>/` (the id from its `summary.json`; `previous-<n>` without one);
/// returns where, or `None` when there was nothing to move.
pub fn move_earlier_run_aside(dir: &Path) -> Result<Option<PathBuf>, OutDirError> {
    let present: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| std::fs::symlink_metadata(dir.join(f)).is_ok())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let run_id = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["meta"]["run_id"].as_str().map(str::to_string))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    let base = format!("previous-{}", run_id.as_deref().unwrap_or("run"));
    let mut n = 1;
    let to = loop {
        let name = if n == 1 && run_id.is_some() { base.clone() } else { format!("{base}-{n}") };
        let to = dir.join(name);
        match std::fs::create_dir(&to) {
            Ok(()) => break to,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(source) => return Err(OutDirError::Create { path: to, source }),
        }
    };
    for f in present {
        let (from, dest) = (dir.join(f), to.join(f));
        std::fs::rename(&from, &dest).map_err(|source| OutDirError::MoveAside {
            path: from.clone(),
            to: dest.clone(),
            source,
        })?;
    }
    Ok(Some(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn given_refuses_symlinks_and_files_and_creates_missing_directories() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(given(&link), Err(OutDirError::Symlink { .. })));
        let dangling = t.path().join("dangling");
        std::os::unix::fs::symlink(t.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(given(&dangling), Err(OutDirError::Symlink { .. })));
        assert!(!t.path().join("nowhere").exists());
        let e = given(&file).unwrap_err();
        assert!(e.is_bad_input() && e.to_string().ends_with("is not a directory"), "{e}");
        assert_eq!(given(&real).unwrap(), real);
        let new = t.path().join("a/b");
        assert!(given(&new).unwrap().is_dir());
    }

    #[test]
    fn private_directories_are_fresh_and_0700() {
        let t = tempfile::tempdir().unwrap();
        let a = private_in(t.path(), "nodeagent-demo-").unwrap();
        let b = private_in(t.path(), "nodeagent-demo-").unwrap();
        assert_ne!(a, b);
        for d in [&a, &b] {
            assert_eq!(d.parent(), Some(t.path()));
            let m = std::fs::symlink_metadata(d).unwrap();
            assert!(m.is_dir() && m.permissions().mode() & 0o777 == 0o700);
        }
    }

    #[test]
    fn an_earlier_run_is_moved_aside_whole() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert_eq!(move_earlier_run_aside(d).unwrap(), None);
        std::fs::write(d.join("summary.json"), r#"{"meta": {"run_id": "0a1b2c3d"}}"#).unwrap();
        std::fs::write(d.join("requests.jsonl"), "{}\n").unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        let to = move_earlier_run_aside(d).unwrap().unwrap();
        assert_eq!(to, d.join("previous-0a1b2c3d"));
        assert!(to.join("summary.json").is_file() && to.join("requests.jsonl").is_file());
        assert!(!d.join("summary.json").exists() && d.join("notes.txt").is_file());
        // No readable summary (a run that died early): numbered.
        std::fs::write(d.join("requests.jsonl"), "{}\n").unwrap();
        assert_eq!(move_earlier_run_aside(d).unwrap().unwrap(), d.join("previous-run-1"));
        std::fs::write(d.join("summary.json"), r#"{"meta": {"run_id": "../../x"}}"#).unwrap();
        assert_eq!(move_earlier_run_aside(d).unwrap().unwrap(), d.join("previous-run-2"));
    }
}
