//! The pid file (`engine.pids` in the state dir: one `PID START_TIME` line per engine process
//! ever seen) and what a later run may do with it. A line is a hint, never an order: before a
//! process it names is treated as a leftover, [`Leftovers::find`] checks that it is still the
//! process that started then, that it is not protected (PID 1, the agent, any ancestor of the
//! agent), and that it is really an engine of this state dir: it carries the marker
//! `NODEAGENT_ENGINE=<marker>` in `/proc/PID/environ` (the process runtime sets it at spawn,
//! and children inherit it), or its command line is exactly the engine's. Others are refused
//! with a warning. Processes that carry the marker but never reached the pid file (an agent
//! killed before its first scan) are leftovers too.
//!
//! Not here: writing the file (`super::process` through `super::statedir`), killing
//! (`super::process::kill_leftovers`, `super::guard`).

use std::collections::{BTreeMap, BTreeSet};

use crate::supervise::procs::ProcFs;
use crate::supervise::statedir::StateDir;

pub const PID_FILE: &str = "engine.pids";

/// The variable every engine started by the process runtime carries; its value is
/// [`StateDir::marker`].
pub const MARKER_VAR: &str = "NODEAGENT_ENGINE";

/// The pid file's text for `known` (pid -> start time).
pub fn render(known: &BTreeMap<i32, u64>) -> String {
    known.iter().map(|(p, t)| format!("{p} {t}\n")).collect()
}

/// The `(pid, start time)` entries of a pid file; bad lines are logged and skipped.
pub fn parse(text: &str, file: &str) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let pid = f.next().and_then(|p| p.parse::<i32>().ok());
        let start = f.next().and_then(|t| t.parse::<u64>().ok());
        match (pid, start, f.next()) {
            (Some(pid), Some(start), None) if pid > 0 => out.push((pid, start)),
            _ => tracing::warn!(file, line = n + 1, text = line, "ignoring bad pid file line"),
        }
    }
    out
}

/// PID 1, the agent and every ancestor of the agent: never a leftover, whatever a file says.
pub fn protected(proc: &ProcFs) -> BTreeSet<i32> {
    let mut out = BTreeSet::from([0, 1]);
    let mut pid = std::process::id() as i32;
    while pid > 1 && out.insert(pid) {
        match proc.stat(pid) {
            Some(s) => pid = s.ppid,
            None => break,
        }
    }
    out
}

/// What a process must show to count as an engine of this state dir.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `NODEAGENT_ENGINE=<marker>`.
    pub marker: String,
    /// The engine's full command line as launched (compared exactly; empty: not used).
    pub argv: Vec<String>,
}

impl Identity {
    pub fn new(dir: &StateDir, argv: &[String]) -> Self {
        Self { marker: dir.marker().to_string(), argv: argv.to_vec() }
    }

    fn env_entry(&self) -> String {
        format!("{MARKER_VAR}={}", self.marker)
    }

    /// Whether `pid` carries the marker or runs exactly the engine's command line.
    pub fn matches(&self, proc: &ProcFs, pid: i32) -> bool {
        if has_entry(proc, pid, &self.env_entry()) {
            return true;
        }
        !self.argv.is_empty() && proc.cmdline(pid).is_some_and(|c| c == self.argv)
    }
}

/// Whether the environment of `pid` holds exactly `entry` (`NAME=value`).
fn has_entry(proc: &ProcFs, pid: i32, entry: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    proc.environ(pid).is_some_and(|env| env.iter().any(|v| v.as_bytes() == entry.as_bytes()))
}

/// The roots of what an earlier run left, with the reasons lines were refused.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub roots: BTreeSet<i32>,
    /// `pid N: why` for each pid file line that named a live process not taken as ours.
    pub refused: Vec<String>,
}

impl Leftovers {
    /// The verified live entries of the pid file in `dir`, plus live processes that carry this
    /// state dir's marker. A pid file that is a symlink, not a regular file or not ours is
    /// ignored with a warning (its entries are not trusted at all).
    pub fn find(proc: &ProcFs, dir: &StateDir, id: &Identity) -> Leftovers {
        let entries = match dir.read(PID_FILE) {
            Ok(Some(text)) => parse(&text, &dir.join(PID_FILE).display().to_string()),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("ignoring the pid file: {e}");
                Vec::new()
            }
        };
        Self::from_entries(proc, &entries, id)
    }

    pub fn from_entries(proc: &ProcFs, entries: &[(i32, u64)], id: &Identity) -> Leftovers {
        let protected = protected(proc);
        let mut out = Leftovers::default();
        for &(pid, start) in entries {
            if !proc.alive_as(pid, start) {
                continue;
            }
            let why = if protected.contains(&pid) {
                Some("PID 1, the agent itself or one of its ancestors")
            } else if !id.matches(proc, pid) {
                Some("no NODEAGENT_ENGINE marker of this state dir and not the engine's command")
            } else {
                None
            };
            match why {
                Some(why) => {
                    tracing::warn!(pid, "pid file names a process that is not an engine of this agent ({why}): left alone");
                    out.refused.push(format!("pid {pid}: {why}"));
                }
                None => {
                    out.roots.insert(pid);
                }
            }
        }
        let entry = id.env_entry();
        for s in proc.all() {
            if s.state == 'Z' || protected.contains(&s.pid) || out.roots.contains(&s.pid) {
                continue;
            }
            if has_entry(proc, s.pid, &entry) {
                out.roots.insert(s.pid);
            }
        }
        out
    }
}

/// Every process in the trees under `roots`, minus the protected ones, as
/// `(pid, start time, comm)`.
pub fn victims(proc: &ProcFs, roots: &BTreeSet<i32>) -> Vec<(i32, u64, String)> {
    let protected = protected(proc);
    let all = proc.all();
    let tree = ProcFs::tree(&all, roots);
    all.iter()
        .filter(|s| tree.contains(&s.pid) && !protected.contains(&s.pid) && s.state != 'Z')
        .map(|s| (s.pid, s.start_time, s.comm.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn start_of(pid: i32) -> u64 {
        ProcFs::default().stat(pid).unwrap().start_time
    }

    #[test]
    fn bad_lines_are_skipped() {
        let e = parse("12 34\nx 1\n-3 4\n5\n6 7 8\n9 10\n", "f");
        assert_eq!(e, [(12, 34), (9, 10)]);
        let text = render(&BTreeMap::from([(9, 10), (12, 34)]));
        assert_eq!(parse(&text, "f"), [(9, 10), (12, 34)]);
    }

    #[test]
    fn the_agent_its_ancestors_and_pid_1_are_protected() {
        let proc = ProcFs::default();
        let p = protected(&proc);
        let me = std::process::id() as i32;
        assert!(p.contains(&1) && p.contains(&me));
        let parent = proc.stat(me).unwrap().ppid;
        assert!(p.contains(&parent));
        let id = Identity { marker: "m".into(), argv: Vec::new() };
        let entries = [(me, start_of(me)), (parent, start_of(parent)), (1, start_of(1))];
        let found = Leftovers::from_entries(&proc, &entries, &id);
        assert!(found.roots.is_empty(), "{found:?}");
        assert_eq!(found.refused.len(), 3, "{found:?}");
    }

    #[test]
    fn only_processes_with_the_marker_or_the_engines_command_are_taken() {
        let proc = ProcFs::default();
        let mut stranger = Command::new("sleep").arg("300").spawn().unwrap();
        let mut ours = Command::new("sleep").arg("301").env(MARKER_VAR, "abc").spawn().unwrap();
        let mut other_agent =
            Command::new("sleep").arg("302").env(MARKER_VAR, "other").spawn().unwrap();
        let (s, o, a) = (stranger.id() as i32, ours.id() as i32, other_agent.id() as i32);
        // Wait for the exec (the environment and command line are the child's after it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while [s, o, a].iter().any(|p| proc.cmdline(*p).is_none_or(|c| c[0] != "sleep")) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let id = Identity { marker: "abc".into(), argv: Vec::new() };
        let entries = [(s, start_of(s)), (o, start_of(o)), (a, start_of(a))];
        let found = Leftovers::from_entries(&proc, &entries, &id);
        assert!(found.roots.contains(&o), "{found:?}");
        assert!(!found.roots.contains(&s) && !found.roots.contains(&a), "{found:?}");
        assert_eq!(found.refused.len(), 2);
        // The marker alone finds it, even without a pid file line.
        assert!(Leftovers::from_entries(&proc, &[], &id).roots.contains(&o));
        // A wrong start time is a reused pid: not even looked at.
        let found = Leftovers::from_entries(&proc, &[(s, start_of(s) + 1)], &id);
        assert!(found.refused.is_empty());
        // The exact command line is enough.
        let by_cmd = Identity { marker: "zzz".into(), argv: vec!["sleep".into(), "300".into()] };
        assert!(Leftovers::from_entries(&proc, &[(s, start_of(s))], &by_cmd).roots.contains(&s));
        for c in [&mut stranger, &mut ours, &mut other_agent] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
