//! The agent's state dir (`/run/nodeagent`: the pid file, the status socket) treated as what a
//! root daemon must treat it as: a place someone else may have prepared. [`StateDir::open`]
//! creates it 0700 when missing and refuses one that is a symlink, owned by another user, or
//! writable by group or others (one line naming the path and its mode). Every file is then made
//! relative to the directory's descriptor (`openat`), created with `O_EXCL | O_NOFOLLOW` and
//! read with `O_NOFOLLOW`, so a planted symlink is never followed (an atomic write removes a
//! planted temporary file, never what it points at).
//!
//! [`StateDir::marker`] is the value of the `NODEAGENT_ENGINE` variable the process runtime
//! gives every engine it starts from this state dir: a later run recognises its own leftovers
//! by it (`super::pidfile`).
//!
//! Several instances on one host (`nodeagent serve --instance N`) each have a state dir of
//! their own under one base (the configured `state_dir`, default `/run/nodeagent`): instance 0
//! uses the base itself (the single-instance path of old), instance N >= 1 the subdirectory
//! `BASE/N` ([`instance_dir`]). [`StateDir::open_instance`] applies the rules above to the base
//! and to the instance's directory; [`instance_dirs`] lists them for `nodeagent status`.
//!
//! Not here: what the files mean (`super::pidfile`, `super::status`).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// The largest state file read back (the pid file of a very large engine is a few kB).
const MAX_READ: u64 = 1 << 20;

/// The highest instance number (`launch.instance`'s bound).
pub const MAX_INSTANCE: usize = 1024;

/// The state dir of instance `n` under `base`: `base` for 0, `base/n` otherwise.
pub fn instance_dir(base: &Path, n: usize) -> PathBuf {
    if n == 0 {
        base.to_path_buf()
    } else {
        base.join(n.to_string())
    }
}

/// The instance number a subdirectory name stands for: `1` to `1024`, written canonically
/// (`01`, `+1`, `0` are not instance directories).
fn instance_of(name: &str) -> Option<usize> {
    let n: usize = name.parse().ok()?;
    ((1..=MAX_INSTANCE).contains(&n) && n.to_string() == name).then_some(n)
}

/// The instance state dirs under `base`, by instance number: `(0, base)` when `base` is a
/// directory, then every real subdirectory (not a symlink) whose name is an instance number.
/// A missing or unreadable `base` gives an empty list.
pub fn instance_dirs(base: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(meta) = std::fs::symlink_metadata(base) else { return Vec::new() };
    if !meta.is_dir() {
        return Vec::new();
    }
    let mut out = vec![(0, base.to_path_buf())];
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().and_then(instance_of) else { continue };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state dir {} is a symlink: give the real directory (a symlink can be swapped under the \
         agent)",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("state dir {} is not a directory", path.display())]
    NotDir { path: PathBuf },
    #[error(
        "state dir {} is owned by uid {owner}, not by the agent's uid {me}: use a directory of \
         the agent's own (default /run/nodeagent)",
        path.display()
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "state dir {} has mode {mode:o}: it must not be writable by group or others (chmod 700 {})",
        path.display(),
        path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("state dir {}: {name}: {why}", dir.display())]
    File { dir: PathBuf, name: String, why: String },
}

/// An opened, checked state dir.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
    marker: String,
}

impl StateDir {
    /// Creates `path` 0700 if missing (its parents with the default mode), then opens and
    /// checks it: a real directory (not a symlink), owned by the agent's effective uid, not
    /// writable by group or others.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        let io = |source| StateDirError::Io { path: path.to_path_buf(), source };
        if std::fs::symlink_metadata(path).is_err() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let fd = match openat(AT_FDCWD, path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(StateDirError::Symlink { path: path.to_path_buf() }),
            Err(Errno::ENOTDIR) => {
                let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
                return Err(if is_link {
                    StateDirError::Symlink { path: path.to_path_buf() }
                } else {
                    StateDirError::NotDir { path: path.to_path_buf() }
                });
            }
            Err(e) => return Err(io(e.into())),
        };
        let st = fstat(&fd).map_err(|e| io(e.into()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            return Err(StateDirError::Owner { path: path.to_path_buf(), owner: st.st_uid, me });
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StateDirError::Mode { path: path.to_path_buf(), mode });
        }
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let marker = marker_of(&canonical);
        Ok(Self { path: path.to_path_buf(), fd, marker })
    }

    /// Opens the state dir of instance `n` under `base` ([`instance_dir`]): for n >= 1 the
    /// base is opened and checked first (created 0700 when missing), so neither directory can
    /// be another user's or writable by others.
    pub fn open_instance(base: &Path, n: usize) -> Result<Self, StateDirError> {
        if n == 0 {
            return Self::open(base);
        }
        Self::open(base)?;
        Self::open(&instance_dir(base, n))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, for messages and for APIs that need a path (the status socket).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The value of `NODEAGENT_ENGINE` for engines started from this state dir: 16 hex digits
    /// of a hash of its canonical path.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    fn file_err(&self, name: &str, why: impl std::fmt::Display) -> StateDirError {
        StateDirError::File { dir: self.path.clone(), name: name.to_string(), why: why.to_string() }
    }

    /// Replaces `name` atomically with `data` (mode 0600): written to `name.tmp`, created with
    /// `O_EXCL | O_NOFOLLOW` after removing whatever was there (a planted symlink is removed,
    /// its target untouched), then renamed over `name`.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StateDirError> {
        let tmp = format!("{name}.tmp");
        match unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.file_err(&tmp, e)),
        }
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.file_err(&tmp, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data).map_err(|e| self.file_err(&tmp, e))?;
        drop(file);
        renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(|e| self.file_err(name, e))
    }

    /// Reads `name`: `None` when missing. Refuses (an error, nothing read) a symlink, anything
    /// but a regular file, or a file owned by another user.
    pub fn read(&self, name: &str) -> Result<Option<String>, StateDirError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.file_err(name, "is a symlink: not followed")),
            Err(e) => return Err(self.file_err(name, e)),
        };
        let st = fstat(fd.as_fd()).map_err(|e| self.file_err(name, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(self.file_err(name, "is not a regular file"));
        }
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            return Err(self.file_err(name, format!("is owned by uid {}, not {me}", st.st_uid)));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_READ)
            .read_to_string(&mut text)
            .map_err(|e| self.file_err(name, e))?;
        Ok(Some(text))
    }

    /// Removes `name` (a symlink itself, never its target); a missing file is fine.
    pub fn remove(&self, name: &str) -> Result<(), StateDirError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.file_err(name, e)),
        }
    }
}

/// FNV-1a (64 bit) of the path's bytes, as 16 hex digits: stable across runs and builds.
fn marker_of(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_dir_is_created_0700_and_files_are_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/state");
        let dir = StateDir::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        dir.write_atomic("x", b"1\n").unwrap();
        assert_eq!(dir.read("x").unwrap().as_deref(), Some("1\n"));
        assert_eq!(std::fs::metadata(path.join("x")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!path.join("x.tmp").exists());
        dir.remove("x").unwrap();
        dir.remove("x").unwrap();
        assert_eq!(dir.read("x").unwrap(), None);
        assert_eq!(dir.marker().len(), 16);
        assert_eq!(StateDir::open(&path).unwrap().marker(), dir.marker());
    }

    #[test]
    fn writable_by_others_or_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        std::fs::create_dir(&path).unwrap();
        for mode in [0o777, 0o720, 0o702] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = StateDir::open(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("has mode {mode:o}")), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&path).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = StateDir::open(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(StateDir::open(&file), Err(StateDirError::NotDir { .. })));
    }

    #[test]
    fn instance_dirs_are_the_base_and_numbered_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("run");
        assert_eq!(instance_dirs(&base), []);
        assert_eq!(instance_dir(&base, 0), base);
        assert_eq!(instance_dir(&base, 3), base.join("3"));
        let one = StateDir::open_instance(&base, 1).unwrap();
        assert_eq!(one.path(), base.join("1"));
        for p in [&base, &base.join("1")] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o700);
        }
        StateDir::open_instance(&base, 12).unwrap();
        for junk in ["01", "0", "1025", "x", "+2"] {
            std::fs::create_dir(base.join(junk)).unwrap();
        }
        std::fs::write(base.join("7"), "a file").unwrap();
        std::os::unix::fs::symlink(tmp.path(), base.join("9")).unwrap();
        let found: Vec<usize> = instance_dirs(&base).into_iter().map(|(n, _)| n).collect();
        assert_eq!(found, [0, 1, 12]);
        assert_eq!(instance_dirs(&base)[2], (12, base.join("12")));
        // The base's rules hold for every instance: a base writable by others is refused.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open_instance(&base, 1).unwrap_err().to_string();
        assert!(err.contains("has mode 777"), "{err}");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(base.join("1"), std::fs::Permissions::from_mode(0o722)).unwrap();
        let err = StateDir::open_instance(&base, 1).unwrap_err().to_string();
        assert!(err.contains("/1 has mode 722"), "{err}");
    }

    #[test]
    fn planted_symlinks_are_neither_followed_nor_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("s")).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("p.tmp")).unwrap();
        dir.write_atomic("p", b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(dir.read("p").unwrap().as_deref(), Some("mine"));
        std::os::unix::fs::symlink(&victim, dir.join("q")).unwrap();
        let err = dir.read("q").unwrap_err().to_string();
        assert!(err.contains("q: is a symlink"), "{err}");
        dir.remove("q").unwrap();
        assert!(victim.exists());
    }
}
