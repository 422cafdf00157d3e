//! Where the load generator runs, decided: pure code over CPU lists. When `verify` targets an
//! engine on this host, the load generator belongs on the CPUs the engine's binding leaves
//! free, so the two do not compete for the engine's cores; when the binding leaves none free
//! it runs where it is, and says so. Also the arithmetic of its own CPU use per level.
//!
//! Not here: finding the engine's CPUs (`crate::verify::isolate` reads `/proc`), setting the
//! affinity and reading CPU time (`super::pin`).

use crate::host::cpuset::CpuSet;
use crate::summary::LoadgenCpu;

/// Where the load generator should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pin every thread to these CPUs.
    Pin(CpuSet),
    /// Stay where it is; the reason is recorded (`meta.loadgen.unpinned`) and warned once.
    NoneFree { reason: String },
}

/// The CPUs free of the engine: `online` ∩ `allowed` (what this process may use now: a
/// `taskset` around `verify` is respected, never widened) minus `engine` (the union of the
/// engine processes' allowed CPUs). None free: `NoneFree`, naming the engine's CPUs.
pub fn decide(online: &CpuSet, allowed: &CpuSet, engine: &CpuSet) -> Decision {
    let usable = online.intersection(allowed);
    let free = usable.difference(engine);
    if free.is_empty() {
        let usable_text = if usable.is_empty() { "none".to_string() } else { usable.to_list() };
        return Decision::NoneFree {
            reason: format!(
                "no CPU is free of the engine's binding (engine on cpus {}, this process may use \
                 cpus {usable_text})",
                engine.to_list()
            ),
        };
    }
    Decision::Pin(free)
}

/// The CPU use of a phase: `cpu_s` of process CPU time over `wall_s` of wall time, on
/// `allowed_cpus` CPUs. A zero wall time or CPU count gives zero shares, never a division by
/// zero.
pub fn cpu_use(cpu_s: f64, wall_s: f64, allowed_cpus: u32) -> LoadgenCpu {
    let cores = if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 };
    let allowed_share = if allowed_cpus > 0 { cores / f64::from(allowed_cpus) } else { 0.0 };
    LoadgenCpu { cpu_s, wall_s, cores, allowed_share, allowed_cpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    #[test]
    fn the_load_generator_goes_to_the_cpus_the_engine_leaves_free() {
        // The 2-core test machine: engine on 0, load generator on 1.
        assert_eq!(decide(&cpus("0-1"), &cpus("0-1"), &cpus("0")), Decision::Pin(cpus("1")));
        // A two-socket host, the engine on node 0's cores.
        assert_eq!(
            decide(&cpus("0-63"), &cpus("0-63"), &cpus("0-15,32-47")),
            Decision::Pin(cpus("16-31,48-63"))
        );
        // The engine elsewhere: every usable CPU is free.
        assert_eq!(decide(&cpus("0-3"), &cpus("0-3"), &cpus("8-9")), Decision::Pin(cpus("0-3")));
        // A taskset around verify is kept, not widened.
        assert_eq!(decide(&cpus("0-7"), &cpus("4-5"), &cpus("0-4")), Decision::Pin(cpus("5")));
        // An offline CPU in the inherited mask is not used.
        assert_eq!(decide(&cpus("0-2"), &cpus("0-3"), &cpus("0")), Decision::Pin(cpus("1-2")));
    }

    #[test]
    fn an_engine_on_every_cpu_leaves_the_load_generator_unpinned_with_the_binding_named() {
        let d = decide(&cpus("0-1"), &cpus("0-1"), &cpus("0-1"));
        assert_eq!(
            d,
            Decision::NoneFree {
                reason: "no CPU is free of the engine's binding (engine on cpus 0-1, this \
                         process may use cpus 0-1)"
                    .into()
            }
        );
        // Free CPUs exist on the host, but not among those this process may use.
        let Decision::NoneFree { reason } = decide(&cpus("0-3"), &cpus("0"), &cpus("0-1")) else {
            panic!("a taskset inside the engine's cpus leaves nothing free");
        };
        assert!(reason.contains("engine on cpus 0-1, this process may use cpus 0)"), "{reason}");
    }

    #[test]
    fn cpu_use_is_a_share_of_one_core_and_of_the_allowed_cpus() {
        let u = cpu_use(1.5, 3.0, 2);
        assert_eq!((u.cores, u.allowed_share, u.allowed_cpus), (0.5, 0.25, 2));
        let u = cpu_use(4.0, 2.0, 4);
        assert_eq!((u.cores, u.allowed_share), (2.0, 0.5));
        let zero = cpu_use(1.0, 0.0, 0);
        assert_eq!((zero.cores, zero.allowed_share), (0.0, 0.0));
    }
}
