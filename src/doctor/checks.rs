//! The checks, pure: each takes the host settings and the scope and returns one [`Check`]
//! with its evidence and fix. The rules (what passes, warns, fails) are documented per check
//! in docs/doctor.md; keep the two in step.

use super::read::{HostSettings, PciSettings};
use super::{node_cpus, Check, Scope, Status};
use crate::host::cpuset::CpuSet;

/// Every check, in [`super::CHECK_NAMES`] order.
pub fn run(host: &HostSettings, scope: &Scope) -> Vec<Check> {
    vec![
        numa_balancing(host, scope),
        transparent_hugepages(host),
        cpu_governor(host, scope),
        gpu_irq_affinity(host, scope),
        pcie_link(host, scope),
        offline_cpus(host, scope),
        memory_headroom(scope),
        engine_outside_plan(scope),
    ]
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { name: name.into(), status, detail: detail.into(), fix }
}

/// The CPUs a check looks at: the planned binding's, else every online CPU.
fn cpus_in_scope(host: &HostSettings, scope: &Scope) -> Option<(CpuSet, &'static str)> {
    match (&scope.bound_cpus, &host.online_cpus) {
        (Some(b), _) => Some((b.clone(), "bound")),
        (None, Some(online)) => Some((online.clone(), "online")),
        (None, None) => None,
    }
}

fn numa_balancing(host: &HostSettings, scope: &Scope) -> Check {
    const NAME: &str = "numa_balancing";
    let fix = "sysctl -w kernel.numa_balancing=0 && echo kernel.numa_balancing=0 > /etc/sysctl.d/90-numa-balancing.conf";
    match host.numa_balancing.as_deref() {
        None => check(
            NAME,
            Status::Unknown,
            "/proc/sys/kernel/numa_balancing absent (kernel without NUMA balancing, or a snapshot without procfs/)",
            None,
        ),
        Some("0") => check(NAME, Status::Pass, "kernel.numa_balancing = 0 (off)", None),
        Some(v) => {
            let bound = !scope.bound_nodes.is_empty();
            check(
                NAME,
                if bound { Status::Fail } else { Status::Warn },
                format!(
                    "kernel.numa_balancing = {v}: the kernel unmaps and migrates pages behind the engine's back (latency spikes of 16 ms and more){}",
                    if bound { ", against a binding that already places them" } else { "" }
                ),
                Some(fix.into()),
            )
        }
    }
}

fn transparent_hugepages(host: &HostSettings) -> Check {
    const NAME: &str = "transparent_hugepages";
    let (Some(enabled), Some(defrag)) = (&host.thp_enabled, &host.thp_defrag) else {
        return check(
            NAME,
            Status::Unknown,
            "/sys/kernel/mm/transparent_hugepage/{enabled,defrag} absent (kernel without THP, or a snapshot without them)",
            None,
        );
    };
    let detail = format!("enabled [{enabled}], defrag [{defrag}]");
    if enabled != "never" && defrag == "always" {
        check(
            NAME,
            Status::Warn,
            format!("{detail}: every huge-page fault may stall in direct compaction"),
            Some("echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag".into()),
        )
    } else {
        check(NAME, Status::Pass, detail, None)
    }
}

fn cpu_governor(host: &HostSettings, scope: &Scope) -> Check {
    const NAME: &str = "cpu_governor";
    let Some((cpus, which)) = cpus_in_scope(host, scope) else {
        return check(
            NAME,
            Status::Unknown,
            "no bound CPUs and no devices/system/cpu/online",
            None,
        );
    };
    let known: Vec<(u32, &str)> =
        cpus.iter().filter_map(|c| host.governors.get(&c).map(|g| (c, g.as_str()))).collect();
    if known.is_empty() {
        return check(
            NAME,
            Status::Unknown,
            format!("no cpufreq/scaling_governor for the {which} CPUs {cpus} (no frequency scaling driver, e.g. a VM)"),
            None,
        );
    }
    let mut by_governor: std::collections::BTreeMap<&str, CpuSet> = Default::default();
    for (cpu, g) in &known {
        by_governor.entry(g).or_default().insert(*cpu);
    }
    let detail =
        by_governor.iter().map(|(g, c)| format!("{g} on {c}")).collect::<Vec<_>>().join(", ");
    let slow: CpuSet = by_governor
        .iter()
        .filter(|(g, _)| **g != "performance")
        .fold(CpuSet::new(), |acc, (_, c)| acc.union(c));
    if slow.is_empty() {
        check(NAME, Status::Pass, format!("{which} CPUs: {detail}"), None)
    } else {
        check(
            NAME,
            Status::Warn,
            format!("{which} CPUs: {detail}: the engine's host threads may run below full clock"),
            Some(format!("cpupower -c {slow} frequency-set -g performance")),
        )
    }
}

fn gpu_irq_affinity(host: &HostSettings, scope: &Scope) -> Check {
    const NAME: &str = "gpu_irq_affinity";
    let nodes = node_cpus(scope);
    let mut unknown = Vec::new();
    let mut off_node = Vec::new();
    let mut fixes = Vec::new();
    let mut checked = 0;
    for gpu in &scope.gpus {
        let Some(bus) = &gpu.bus_id else {
            unknown.push(format!("GPU {}: no PCI address", gpu.index));
            continue;
        };
        let Some(node_cpus) = gpu.node.and_then(|n| nodes.get(&n)).filter(|c| !c.is_empty()) else {
            unknown.push(format!("GPU {} ({bus}): NUMA node unknown", gpu.index));
            continue;
        };
        let Some(irqs) = host.pci.get(bus).and_then(|p| p.msi_irqs.as_ref()) else {
            unknown.push(format!("GPU {} ({bus}): no msi_irqs", gpu.index));
            continue;
        };
        let pci = &host.pci[bus];
        let mut bad = Vec::new();
        for irq in irqs {
            checked += 1;
            match pci.irq_affinity.get(irq).cloned().flatten() {
                Some(aff) if aff.is_subset(node_cpus) => {}
                Some(aff) => bad.push(format!("{irq}→{aff}")),
                None => unknown.push(format!("irq {irq}: no smp_affinity_list")),
            }
        }
        if !bad.is_empty() {
            off_node.push(format!(
                "GPU {} ({bus}, node {} CPUs {node_cpus}): irq {}",
                gpu.index,
                gpu.node.unwrap_or_default(),
                bad.join(" ")
            ));
            let irq_list = irqs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            fixes.push(format!(
                "for i in {irq_list}; do echo {node_cpus} > /proc/irq/$i/smp_affinity_list; done"
            ));
        }
    }
    let balancer = match host.irqbalance {
        Some(true) => "irqbalance runs (it moves interrupts unless banned)",
        Some(false) => "irqbalance not running",
        None => "irqbalance unknown",
    };
    if scope.gpus.is_empty() {
        return check(NAME, Status::Unknown, format!("no GPUs to check; {balancer}"), None);
    }
    if !off_node.is_empty() {
        let mut fix = String::new();
        if host.irqbalance == Some(true) {
            fix.push_str("systemctl stop irqbalance && ");
        }
        fix.push_str(&fixes.join(" && "));
        return check(
            NAME,
            Status::Warn,
            format!("interrupts off the GPU's node: {}; {balancer}", off_node.join("; ")),
            Some(fix),
        );
    }
    if checked == 0 {
        return check(NAME, Status::Unknown, format!("{}; {balancer}", unknown.join("; ")), None);
    }
    let mut detail =
        format!("{checked} MSI interrupts of {} GPU(s) on their node's CPUs", scope.gpus.len());
    if !unknown.is_empty() {
        detail.push_str(&format!(" (unknown: {})", unknown.join("; ")));
    }
    if host.irqbalance == Some(true) {
        check(
            NAME,
            Status::Warn,
            format!("{detail}; {balancer}"),
            Some(
                "systemctl stop irqbalance (or set IRQBALANCE_BANNED_CPULIST to the bound CPUs)"
                    .into(),
            ),
        )
    } else {
        check(NAME, Status::Pass, format!("{detail}; {balancer}"), None)
    }
}

/// The number at the start of a link speed or width: `32.0 GT/s PCIe` → 32.0, `16` → 16.
fn leading_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

fn link_of(bus: &str, pci: &PciSettings) -> Result<(String, bool, bool), String> {
    let (Some(cw), Some(cs), Some(mw), Some(ms)) = (
        &pci.current_link_width,
        &pci.current_link_speed,
        &pci.max_link_width,
        &pci.max_link_speed,
    ) else {
        return Err(format!("{bus}: no current/max_link_* files"));
    };
    let num = |t: &String| leading_number(t).ok_or_else(|| format!("{bus}: link value {t:?}"));
    let narrow = num(cw)? < num(mw)?;
    let slow = num(cs)? < num(ms)?;
    Ok((format!("{bus} x{cw} of x{mw}, {cs} of {ms}"), narrow, slow))
}

fn pcie_link(host: &HostSettings, scope: &Scope) -> Check {
    const NAME: &str = "pcie_link";
    let mut lines = Vec::new();
    let mut unknown = Vec::new();
    let (mut narrow, mut slow) = (Vec::new(), Vec::new());
    for gpu in &scope.gpus {
        let Some(bus) = &gpu.bus_id else {
            unknown.push(format!("GPU {}: no PCI address", gpu.index));
            continue;
        };
        match host.pci.get(bus).map(|p| link_of(bus, p)) {
            Some(Ok((line, n, s))) => {
                if n {
                    narrow.push(bus.clone());
                }
                if s {
                    slow.push(bus.clone());
                }
                lines.push(format!("GPU {}: {line}", gpu.index));
            }
            Some(Err(e)) => unknown.push(e),
            None => unknown.push(format!("{bus}: not read")),
        }
    }
    if lines.is_empty() {
        let why =
            if scope.gpus.is_empty() { "no GPUs to check".into() } else { unknown.join("; ") };
        return check(NAME, Status::Unknown, why, None);
    }
    let mut detail = lines.join("; ");
    if !unknown.is_empty() {
        detail.push_str(&format!(" (unknown: {})", unknown.join("; ")));
    }
    if !narrow.is_empty() {
        check(
            NAME,
            Status::Fail,
            format!("link narrower than the device's maximum: {detail}"),
            Some(format!(
                "reseat the card or check the slot and riser of {}; then: lspci -vv -s {} | grep -E 'LnkCap|LnkSta'",
                narrow.join(", "),
                narrow[0]
            )),
        )
    } else if !slow.is_empty() {
        check(
            NAME,
            Status::Warn,
            format!("link below its maximum speed (GPUs train down when idle; check under load): {detail}"),
            Some(format!("lspci -vv -s {} | grep -E 'LnkCap|LnkSta'  (under load)", slow[0])),
        )
    } else {
        check(NAME, Status::Pass, detail, None)
    }
}

fn offline_cpus(host: &HostSettings, scope: &Scope) -> Check {
    const NAME: &str = "offline_cpus";
    let Some(bound) = &scope.bound_cpus else {
        return check(NAME, Status::Pass, "no binding planned: no bound CPU can be offline", None);
    };
    let Some(online) = &host.online_cpus else {
        return check(NAME, Status::Unknown, "devices/system/cpu/online absent", None);
    };
    let offline = bound.difference(online);
    if offline.is_empty() {
        check(NAME, Status::Pass, format!("bound CPUs {bound} all online (online {online})"), None)
    } else {
        let ids = offline.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ");
        check(
            NAME,
            Status::Fail,
            format!("bound CPUs {offline} are offline (online {online}): the engine gets fewer CPUs than planned"),
            Some(format!("for c in {ids}; do echo 1 > /sys/devices/system/cpu/cpu$c/online; done")),
        )
    }
}

fn memory_headroom(scope: &Scope) -> Check {
    const NAME: &str = "memory_headroom";
    if scope.bound_nodes.is_empty() {
        return check(
            NAME,
            Status::Pass,
            "no memory nodes bound: allocations may use every node",
            None,
        );
    }
    let mut parts = Vec::new();
    let (mut free, mut total) = (0u64, 0u64);
    for id in &scope.bound_nodes {
        let node = scope.node(*id);
        let (Some(f), Some(t)) =
            (node.and_then(|n| n.memory_free_mb), node.and_then(|n| n.memory_total_mb))
        else {
            return check(NAME, Status::Unknown, format!("node {id}: no meminfo"), None);
        };
        free += f;
        total += t;
        parts.push(format!("node {id} {f} of {t} MB free"));
    }
    let detail = parts.join(", ");
    let nodes = scope.bound_nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let drop_caches = "sync && echo 1 > /proc/sys/vm/drop_caches".to_string();
    if let Some(gb) = scope.host_memory_gb {
        let need = (gb * 1024.0).round() as u64;
        if free < need {
            return check(
                NAME,
                Status::Fail,
                format!("{detail}: {free} MB free on nodes {nodes}, the engine needs {need} MB (--host-memory-gb {gb})"),
                Some(format!("{drop_caches}, or stop what holds memory on nodes {nodes}")),
            );
        }
    }
    if free * 10 < total {
        check(
            NAME,
            Status::Warn,
            format!("{detail}: under 10 % free on the bound nodes; a --membind allocation fails or swaps when they fill"),
            Some(drop_caches),
        )
    } else {
        check(NAME, Status::Pass, detail, None)
    }
}

fn engine_outside_plan(scope: &Scope) -> Check {
    const NAME: &str = "engine_outside_plan";
    let Some(engine) = &scope.engine else {
        return check(NAME, Status::Unknown, scope.engine_note.clone(), None);
    };
    let fix = Some(
        "restart the engine under the plan: systemctl restart nodeagent (or nodeagent serve)"
            .to_string(),
    );
    if engine.check_ok == Some(false) {
        return check(
            NAME,
            Status::Fail,
            format!(
                "the binding check found engine processes outside the binding: {}",
                engine.escapes.join("; ")
            ),
            fix,
        );
    }
    let running = (engine.cpus.clone(), engine.memory_nodes.clone());
    let as_text = |(c, m): &(Option<CpuSet>, Vec<u32>)| {
        let nodes = m.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        format!(
            "CPUs {} memory {}",
            c.as_ref().map_or("unbound".into(), |c| c.to_list()),
            if nodes.is_empty() { "default".into() } else { nodes }
        )
    };
    if !scope.planned.is_empty() && !scope.planned.contains(&running) {
        let planned = scope.planned.iter().map(as_text).collect::<Vec<_>>().join(" | ");
        return check(
            NAME,
            Status::Warn,
            format!("the engine runs with {} but the plan gives {planned}", as_text(&running)),
            fix,
        );
    }
    match engine.check_ok {
        Some(_) => check(
            NAME,
            Status::Pass,
            format!("engine inside its binding ({})", as_text(&running)),
            None,
        ),
        None => check(NAME, Status::Unknown, "the engine's binding check has not run yet", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{EngineView, ScopeGpu, ScopeNode};

    fn cpus(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    /// Two nodes of 4 CPUs, a GPU on node 1, a binding of node 1.
    fn scope() -> Scope {
        Scope {
            bound_cpus: Some(cpus("4-7")),
            bound_nodes: vec![1],
            planned: vec![(Some(cpus("4-7")), vec![1])],
            nodes: vec![
                ScopeNode {
                    id: 0,
                    cpus: cpus("0-3"),
                    memory_total_mb: Some(8192),
                    memory_free_mb: Some(4096),
                },
                ScopeNode {
                    id: 1,
                    cpus: cpus("4-7"),
                    memory_total_mb: Some(8192),
                    memory_free_mb: Some(6000),
                },
            ],
            gpus: vec![ScopeGpu { index: 0, bus_id: Some("0000:18:00.0".into()), node: Some(1) }],
            host_memory_gb: None,
            engine: None,
            engine_note: "no agent answers at /run/nodeagent".into(),
        }
    }

    fn healthy() -> HostSettings {
        let mut h = HostSettings {
            numa_balancing: Some("0".into()),
            thp_enabled: Some("madvise".into()),
            thp_defrag: Some("madvise".into()),
            online_cpus: Some(cpus("0-7")),
            irqbalance: Some(false),
            ..HostSettings::default()
        };
        for c in 0..8 {
            h.governors.insert(c, "performance".into());
        }
        let mut pci = PciSettings {
            current_link_width: Some("16".into()),
            current_link_speed: Some("32.0 GT/s PCIe".into()),
            max_link_width: Some("16".into()),
            max_link_speed: Some("32.0 GT/s PCIe".into()),
            msi_irqs: Some(vec![140, 141]),
            ..PciSettings::default()
        };
        pci.irq_affinity.insert(140, Some(cpus("4")));
        pci.irq_affinity.insert(141, Some(cpus("5-7")));
        h.pci.insert("0000:18:00.0".into(), pci);
        h
    }

    fn get<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_healthy_host_passes_every_check_but_the_engine() {
        let checks = run(&healthy(), &scope());
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, crate::doctor::CHECK_NAMES);
        for c in &checks[..7] {
            assert_eq!(c.status, Status::Pass, "{c:?}");
            assert_eq!(c.fix, None);
        }
        assert_eq!(
            get(&checks, "gpu_irq_affinity").detail,
            "2 MSI interrupts of 1 GPU(s) on their node's CPUs; irqbalance not running"
        );
        assert_eq!(
            get(&checks, "pcie_link").detail,
            "GPU 0: 0000:18:00.0 x16 of x16, 32.0 GT/s PCIe of 32.0 GT/s PCIe"
        );
        assert_eq!(get(&checks, "memory_headroom").detail, "node 1 6000 of 8192 MB free");
        let e = get(&checks, "engine_outside_plan");
        assert_eq!(
            (e.status, e.detail.as_str()),
            (Status::Unknown, "no agent answers at /run/nodeagent")
        );
    }

    #[test]
    fn numa_balancing_fails_under_a_binding_and_warns_without() {
        let mut h = healthy();
        h.numa_balancing = Some("1".into());
        let c = numa_balancing(&h, &scope());
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.starts_with("kernel.numa_balancing = 1: "), "{}", c.detail);
        assert!(c.fix.unwrap().starts_with("sysctl -w kernel.numa_balancing=0"));
        let unbound = Scope { bound_cpus: None, bound_nodes: vec![], ..scope() };
        assert_eq!(numa_balancing(&h, &unbound).status, Status::Warn);
        h.numa_balancing = None;
        assert_eq!(numa_balancing(&h, &scope()).status, Status::Unknown);
    }

    #[test]
    fn thp_defrag_always_warns() {
        let mut h = healthy();
        h.thp_enabled = Some("always".into());
        h.thp_defrag = Some("always".into());
        let c = transparent_hugepages(&h);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.fix.as_deref(),
            Some("echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag")
        );
        h.thp_enabled = Some("never".into());
        assert_eq!(transparent_hugepages(&h).status, Status::Pass);
        h.thp_defrag = None;
        assert_eq!(transparent_hugepages(&h).status, Status::Unknown);
    }

    #[test]
    fn governor_looks_at_bound_cpus_only() {
        let mut h = healthy();
        h.governors.insert(0, "powersave".into());
        assert_eq!(cpu_governor(&h, &scope()).status, Status::Pass, "CPU 0 is not bound");
        h.governors.insert(5, "powersave".into());
        h.governors.insert(6, "schedutil".into());
        let c = cpu_governor(&h, &scope());
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.detail, "bound CPUs: performance on 4,7, powersave on 5, schedutil on 6: the engine's host threads may run below full clock");
        assert_eq!(c.fix.as_deref(), Some("cpupower -c 5-6 frequency-set -g performance"));
        h.governors.clear();
        assert_eq!(cpu_governor(&h, &scope()).status, Status::Unknown);
    }

    #[test]
    fn irqs_off_the_gpus_node_warn_with_the_fix() {
        let mut h = healthy();
        h.irqbalance = Some(true);
        h.pci.get_mut("0000:18:00.0").unwrap().irq_affinity.insert(141, Some(cpus("0-7")));
        let c = gpu_irq_affinity(&h, &scope());
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.detail, "interrupts off the GPU's node: GPU 0 (0000:18:00.0, node 1 CPUs 4-7): irq 141→0-7; irqbalance runs (it moves interrupts unless banned)");
        assert_eq!(c.fix.as_deref(), Some("systemctl stop irqbalance && for i in 140 141; do echo 4-7 > /proc/irq/$i/smp_affinity_list; done"));
        let mut h = healthy();
        h.irqbalance = Some(true);
        assert_eq!(gpu_irq_affinity(&h, &scope()).status, Status::Warn, "irqbalance alone warns");
        h.pci.clear();
        assert_eq!(gpu_irq_affinity(&h, &scope()).status, Status::Unknown);
    }

    #[test]
    fn a_narrow_link_fails_a_slow_one_warns() {
        let mut h = healthy();
        let pci = h.pci.get_mut("0000:18:00.0").unwrap();
        pci.current_link_speed = Some("2.5 GT/s PCIe".into());
        let c = pcie_link(&h, &scope());
        assert_eq!(c.status, Status::Warn, "{c:?}");
        let pci = h.pci.get_mut("0000:18:00.0").unwrap();
        pci.current_link_width = Some("8".into());
        let c = pcie_link(&h, &scope());
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail, "link narrower than the device's maximum: GPU 0: 0000:18:00.0 x8 of x16, 2.5 GT/s PCIe of 32.0 GT/s PCIe");
        h.pci.get_mut("0000:18:00.0").unwrap().max_link_speed = Some("Unknown".into());
        assert_eq!(pcie_link(&h, &scope()).status, Status::Unknown);
    }

    #[test]
    fn offline_bound_cpus_fail() {
        let mut h = healthy();
        h.online_cpus = Some(cpus("0-5"));
        let c = offline_cpus(&h, &scope());
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("for c in 6 7; do echo 1 > /sys/devices/system/cpu/cpu$c/online; done")
        );
        let unbound = Scope { bound_cpus: None, ..scope() };
        assert_eq!(offline_cpus(&h, &unbound).status, Status::Pass);
    }

    #[test]
    fn headroom_fails_below_the_need_and_warns_below_ten_percent() {
        let mut s = scope();
        s.host_memory_gb = Some(8.0);
        let c = memory_headroom(&s);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail, "node 1 6000 of 8192 MB free: 6000 MB free on nodes 1, the engine needs 8192 MB (--host-memory-gb 8)");
        s.host_memory_gb = None;
        s.nodes[1].memory_free_mb = Some(800);
        assert_eq!(memory_headroom(&s).status, Status::Warn);
        s.nodes[1].memory_free_mb = None;
        assert_eq!(memory_headroom(&s).status, Status::Unknown);
    }

    #[test]
    fn engine_escaped_or_off_plan() {
        let mut s = scope();
        s.engine = Some(EngineView {
            cpus: Some(cpus("4-7")),
            memory_nodes: vec![1],
            check_ok: Some(true),
            escapes: vec![],
        });
        assert_eq!(engine_outside_plan(&s).status, Status::Pass);
        s.engine.as_mut().unwrap().cpus = Some(cpus("0-3"));
        let c = engine_outside_plan(&s);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.detail,
            "the engine runs with CPUs 0-3 memory 1 but the plan gives CPUs 4-7 memory 1"
        );
        let e = s.engine.as_mut().unwrap();
        e.check_ok = Some(false);
        e.escapes = vec!["812 python3: cpus 0-7 not within 0-3".into()];
        assert_eq!(engine_outside_plan(&s).status, Status::Fail);
    }
}
