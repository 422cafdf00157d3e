//! Whether root may use a file another user could have written. `nodeagent serve` runs as root
//! and executes what its config, its profiles and the engine program say: a file, or a directory
//! on its path, that another user can write is a way to run anything as root. [`check`] refuses
//! (one line naming the path and its mode) a file or any directory above it that is writable by
//! group or others (a directory with the sticky bit, like `/tmp`, is fine: others cannot
//! replace what root owns there) or owned by a user other than root and the agent's own.
//! `serve --allow-insecure-files` turns the refusal into a warning (labs).
//!
//! Not here: the state dir, which has stricter rules of its own (`crate::supervise::statedir`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "{what} {}: mode {mode:o}, {why}: another user could change what root runs (chmod \
         go-w / chown root, or pass --allow-insecure-files)",
        path.display()
    )]
    Insecure { what: String, path: PathBuf, mode: u32, why: String },
    #[error("{what} {}: {source}", path.display())]
    Stat {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the agent runs as root (effective uid 0): the only case the checks apply to.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why `meta` makes a file or directory unsafe for root, or `None`.
fn unsafe_because(meta: &std::fs::Metadata, dir: bool) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode();
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!("owned by uid {}", meta.uid()));
    }
    let sticky = dir && mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        return Some("writable by everyone".into());
    }
    if mode & 0o020 != 0 && !sticky {
        return Some(format!("writable by its group (gid {})", meta.gid()));
    }
    None
}

/// Checks `path` (`what` names it in the message: `config`, `model profile`, `engine
/// program`): the file itself (symlinks followed), every directory above the real file, and
/// the directory of the path as given (whoever can write it can swap a symlink).
pub fn check(what: &str, path: &Path) -> Result<(), TrustError> {
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|source| TrustError::Stat {
            what: what.to_string(),
            path: p.to_path_buf(),
            source,
        })
    };
    let insecure = |p: &Path, meta: &std::fs::Metadata, why: String| TrustError::Insecure {
        what: what.to_string(),
        path: p.to_path_buf(),
        mode: meta.mode() & 0o7777,
        why,
    };
    let real = std::fs::canonicalize(path).map_err(|source| TrustError::Stat {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let meta = stat(&real)?;
    if let Some(why) = unsafe_because(&meta, meta.is_dir()) {
        return Err(insecure(&real, &meta, why));
    }
    let given_parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let given_parent = given_parent.and_then(|p| std::fs::canonicalize(p).ok());
    let mut dirs: Vec<PathBuf> = real.ancestors().skip(1).map(Path::to_path_buf).collect();
    if let Some(p) = given_parent {
        dirs.extend(p.ancestors().map(Path::to_path_buf));
    }
    for dir in dirs {
        let meta = stat(&dir)?;
        if let Some(why) = unsafe_because(&meta, true) {
            return Err(insecure(&dir, &meta, why));
        }
    }
    Ok(())
}

/// Resolves a program the way `execvp` does (`PATH` when the name has no `/`); `None` when not
/// found (the runtime's preflight reports that).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let exec =
        |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return exec(&p).then_some(p);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| exec(p))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn group_or_world_writable_files_and_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let file = dir.join("c.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        check("config", &file).unwrap();
        chmod(&file, 0o666);
        let err = check("config", &file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config {}: mode 666, writable by everyone", file.display())),
            "{err}"
        );
        chmod(&file, 0o664);
        assert!(check("config", &file).unwrap_err().to_string().contains("writable by its group"));
        chmod(&file, 0o644);
        chmod(&dir, 0o777);
        let err = check("config", &file).unwrap_err().to_string();
        assert!(err.contains(&format!("{}: mode 777", dir.display())), "{err}");
        // The sticky bit (like /tmp) keeps others from replacing the file.
        chmod(&dir, 0o1777);
        check("config", &file).unwrap();
        chmod(&dir, 0o755);
        // A symlink in a directory others can write is refused even when its target is safe.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let link = open.join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = check("config", &link).unwrap_err().to_string();
        assert!(err.contains(&format!("{}: mode 777", open.display())), "{err}");
    }

    #[test]
    fn programs_resolve_like_execvp() {
        assert!(resolve_program("sh").is_some_and(|p| p.is_absolute()));
        assert_eq!(resolve_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_program("no-such-program-here"), None);
    }
}
