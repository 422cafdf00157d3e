//! Applying a `Binding` natively in the engine's process between fork and exec: CPU affinity
//! with `sched_setaffinity` (nix) and the memory policy with the `set_mempolicy` system call
//! (libc), checked right after. Everything that allocates happens in `NativeBinding::new`
//! before the fork; `apply` only makes system calls, so it is safe in a `pre_exec` hook. An
//! error in `apply` makes the spawn fail and reaches the parent as the spawn's `io::Error`
//! (std sends it back over its exec pipe): nothing runs unbound.
//!
//! Not here: numactl mode (an argv prefix, `crate::launch::spec`) and container cpusets.

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet as NixCpuSet};
use nix::unistd::Pid;

use crate::binding::{Binding, MemPolicy};

// From <linux/mempolicy.h>.
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;
const MPOL_INTERLEAVE: libc::c_int = 3;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("cpu {cpu} is beyond what sched_setaffinity can address ({max} cpus)")]
    CpuOutOfRange { cpu: u32, max: usize },
    #[error("memory node {node} is out of range (max 1023)")]
    NodeOutOfRange { node: u32 },
}

/// A binding prepared for the child: plain values, no allocation left to do after fork.
#[derive(Debug, Clone)]
pub struct NativeBinding {
    cpus: Option<NixCpuSet>,
    mempolicy: Option<(libc::c_int, Vec<libc::c_ulong>)>,
}

impl NativeBinding {
    pub fn new(binding: &Binding) -> Result<Self, NativeError> {
        let cpus = match &binding.cpus {
            None => None,
            Some(set) => {
                let mut nix_set = NixCpuSet::new();
                for cpu in set.iter() {
                    nix_set
                        .set(cpu as usize)
                        .map_err(|_| NativeError::CpuOutOfRange { cpu, max: NixCpuSet::count() })?;
                }
                Some(nix_set)
            }
        };
        let (mode, nodes) = match &binding.memory {
            MemPolicy::Default => (0, Vec::new()),
            MemPolicy::Bind(n) => (MPOL_BIND, n.clone()),
            MemPolicy::Preferred(n) => (MPOL_PREFERRED, vec![*n]),
            MemPolicy::Interleave(n) => (MPOL_INTERLEAVE, n.clone()),
        };
        let mempolicy = if mode == 0 {
            None
        } else {
            let bits = libc::c_ulong::BITS;
            let mut mask = vec![0 as libc::c_ulong; 1024 / bits as usize];
            for node in nodes {
                if node >= 1024 {
                    return Err(NativeError::NodeOutOfRange { node });
                }
                mask[(node / bits) as usize] |= 1 << (node % bits);
            }
            Some((mode, mask))
        };
        Ok(Self { cpus, mempolicy })
    }

    /// Applies the binding to the calling process and checks the affinity took. Only system
    /// calls: meant for `CommandExt::pre_exec`.
    pub fn apply(&self) -> io::Result<()> {
        if let Some(cpus) = &self.cpus {
            sched_setaffinity(Pid::from_raw(0), cpus).map_err(io::Error::from)?;
            let now = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
            if now != *cpus {
                return Err(io::Error::other("cpu affinity did not take"));
            }
        }
        if let Some((mode, mask)) = &self.mempolicy {
            // The kernel reads `maxnode - 1` bits (a long-standing off-by-one that libnuma also
            // compensates for), hence the + 1.
            let maxnode = (mask.len() * libc::c_ulong::BITS as usize + 1) as libc::c_ulong;
            // SAFETY: `mask` is a live, properly aligned buffer of `mask.len()` c_ulongs and
            // `maxnode - 1` bits fit in it; set_mempolicy only reads it.
            let rc =
                unsafe { libc::syscall(libc::SYS_set_mempolicy, *mode, mask.as_ptr(), maxnode) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cpuset::CpuSet;

    #[test]
    fn out_of_range_cpu_is_an_error_not_a_panic() {
        let b = Binding {
            cpu_nodes: vec![],
            cpus: Some(CpuSet::parse_list("4095").unwrap()),
            memory: MemPolicy::Default,
        };
        assert!(matches!(NativeBinding::new(&b), Err(NativeError::CpuOutOfRange { .. })));
        let b = Binding { cpu_nodes: vec![], cpus: None, memory: MemPolicy::Bind(vec![5000]) };
        assert!(matches!(NativeBinding::new(&b), Err(NativeError::NodeOutOfRange { .. })));
    }

    #[test]
    fn none_prepares_nothing() {
        let n = NativeBinding::new(&Binding::none()).unwrap();
        assert!(n.cpus.is_none() && n.mempolicy.is_none());
    }
}
