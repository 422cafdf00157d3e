//! The engine's memory placement audit: resident bytes per NUMA node of every engine process,
//! from `/proc/PID/numa_maps` (parsed by `crate::host::numa_maps`), summed over the engine's
//! processes, and the share of them off the binding's memory nodes. Reads files under a procfs
//! root; a process that ended between listing and reading is skipped, an unreadable or garbled
//! `numa_maps` is left out and named in the result's `unread`. It decides no alert: the
//! supervisor compares the share with `binding.memory_off_node_alert`.

use std::path::Path;

use crate::host::numa_maps::{self, NodeBytes};

/// What the audit found for one engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub by_node: NodeBytes,
    /// `pid: why` of every process whose `numa_maps` could not be read or parsed.
    pub unread: Vec<String>,
}

/// Sums the resident bytes per node of `pids` below the procfs `root`.
pub fn audit(root: &Path, pids: &[i32]) -> Placement {
    let mut out = Placement::default();
    for pid in pids {
        let path = root.join(pid.to_string()).join("numa_maps");
        match std::fs::read_to_string(&path) {
            Ok(text) => match numa_maps::parse(&text) {
                Ok(b) => numa_maps::add(&mut out.by_node, &b),
                Err(e) => out.unread.push(format!("{pid}: {}: {e}", path.display())),
            },
            // Gone since it was listed: nothing of it is resident any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.unread.push(format!("{pid}: {}: {e}", path.display())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_processes_and_names_the_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let put = |pid: &str, text: &str| {
            std::fs::create_dir_all(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("numa_maps"), text).unwrap();
        };
        put("10", "7f2a00000000 bind:1 anon=512 N1=512 kernelpagesize_kB=4\n");
        put("11", "7f2a00000000 default anon=2 N0=1 N1=1 kernelpagesize_kB=2048\n");
        put("12", "garbage\n");
        let p = audit(dir.path(), &[10, 11, 12, 13]);
        assert_eq!(p.by_node, [(0, 2 << 20), (1, (512 << 12) + (2 << 20))].into());
        assert_eq!(p.unread.len(), 1);
        assert!(p.unread[0].starts_with("12: "), "{:?}", p.unread);
        assert!(p.unread[0].ends_with("numa_maps line 1: not a mapping address: \"garbage\""));
    }

    #[test]
    fn this_process_is_audited_live() {
        let p = audit(Path::new("/proc"), &[std::process::id() as i32]);
        assert!(p.unread.is_empty(), "{:?}", p.unread);
        assert!(p.by_node.values().sum::<u64>() > 1 << 20, "{:?}", p.by_node);
    }
}
