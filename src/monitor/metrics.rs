//! Renders a `MonitorStatus` as Prometheus metrics with `prometheus-client` (OpenMetrics text).
//! A fresh registry is built per scrape from the status snapshot: GPUs and processes come and
//! go, and a per-scrape registry never exports a stale label set. Counters are carried in the
//! status (`samples_total`, `restarts`) so nothing is lost between scrapes.
//!
//! Metric names and labels are part of the user interface (dashboards, alert rules): change
//! them only with the README.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use super::checks::CheckKind;
use super::status::{MonitorStatus, ENGINE_STATES};
use crate::supervise::progress::vllm_sum;

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

fn family() -> Family<Labels, GaugeF> {
    Family::default()
}

fn l(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The Prometheus text (format 0.0.4) of `status`, followed by the engine's own metrics
/// re-labelled with `engine="0"` when they were scraped.
pub fn render(status: &MonitorStatus, engine_metrics: Option<&str>) -> String {
    let mut out = openmetrics_to_text(&render_openmetrics(status));
    if let Some(text) = engine_metrics {
        out.push_str(&relabel(text, "0"));
    }
    out
}

/// The OpenMetrics text of `status` (nodeagent's own metrics only).
pub fn render_openmetrics(status: &MonitorStatus) -> String {
    let mut reg = Registry::with_prefix("nodeagent");

    let up = GaugeF::default();
    up.set(if status.missing.is_none() && status.samples_total > 0 { 1.0 } else { 0.0 });
    reg.register(
        "gpu_sample_up",
        "Whether the last GPU sample succeeded (0: the tool failed, hung or printed garbage)",
        up,
    );
    let total: Counter<u64> = Counter::default();
    total.inc_by(status.samples_total);
    reg.register("gpu_samples", "GPU sampler ticks", total);
    let missing: Counter<u64> = Counter::default();
    missing.inc_by(status.samples_missing_total);
    reg.register("gpu_samples_missing", "GPU sampler ticks that produced no sample", missing);
    if let Some(ms) = status.sample_duration_ms {
        let g = GaugeF::default();
        g.set(ms / 1e3);
        reg.register_with_unit(
            "gpu_sample_duration",
            "Time the GPU tool took on the last tick",
            Unit::Seconds,
            g,
        );
    }

    let used = family();
    let total_mem = family();
    let util = family();
    let temp = family();
    let power = family();
    for g in &status.gpus {
        let labels = l(&[
            ("gpu", g.status.index.to_string()),
            ("bus_id", g.status.bus_id.clone().unwrap_or_default()),
            ("numa_node", g.numa_node.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into())),
        ]);
        let mib = 1024.0 * 1024.0;
        if let Some(v) = g.status.memory_used_mib {
            used.get_or_create(&labels).set(v as f64 * mib);
        }
        if let Some(v) = g.status.memory_total_mib {
            total_mem.get_or_create(&labels).set(v as f64 * mib);
        }
        if let Some(v) = g.status.utilization_pct {
            util.get_or_create(&labels).set(v / 100.0);
        }
        if let Some(v) = g.status.temperature_c {
            temp.get_or_create(&labels).set(v);
        }
        if let Some(v) = g.status.power_w {
            power.get_or_create(&labels).set(v);
        }
    }
    reg.register_with_unit("gpu_memory_used", "GPU memory in use", Unit::Bytes, used);
    reg.register_with_unit("gpu_memory_total", "GPU memory in total", Unit::Bytes, total_mem);
    reg.register_with_unit(
        "gpu_utilization",
        "GPU utilization (0-1)",
        Unit::Other("ratio".into()),
        util,
    );
    reg.register_with_unit("gpu_temperature", "GPU temperature", Unit::Celsius, temp);
    reg.register_with_unit("gpu_power", "GPU power draw", Unit::Other("watts".into()), power);

    let proc_mem = family();
    for p in &status.processes {
        if let Some(m) = p.memory_mib {
            let labels = l(&[
                ("gpu", p.gpu.to_string()),
                ("pid", p.pid.to_string()),
                ("process", p.name.clone()),
                ("owner", p.owner.as_str().to_string()),
            ]);
            proc_mem.get_or_create(&labels).inc_by(m as f64 * 1024.0 * 1024.0);
        }
    }
    reg.register_with_unit(
        "gpu_process_memory",
        "GPU memory held per process; owner is engine, foreign, orphan or other",
        Unit::Bytes,
        proc_mem,
    );

    let alerts = family();
    for kind in CheckKind::ALL {
        // Every check exported, 0 when clear, so alert rules can match on `== 1` reliably.
        let n = status.alerts.iter().filter(|a| a.check == kind).count();
        alerts.get_or_create(&l(&[("check", kind.as_str().to_string())])).set(n as f64);
    }
    reg.register(
        "alerts_active",
        "Active alerts per check (number of GPUs or 1 for engine-wide checks)",
        alerts,
    );

    let e = &status.engine;
    let hung = GaugeF::default();
    hung.set(if status.engine_hung { 1.0 } else { 0.0 });
    reg.register("engine_hung", "Requests in flight but the engine's GPUs idle (debounced)", hung);
    if e.supervised {
        let states = family();
        for s in ENGINE_STATES {
            states.get_or_create(&l(&[("state", s.to_string())])).set(if e.state == s {
                1.0
            } else {
                0.0
            });
        }
        reg.register("engine_state", "Engine supervisor state (1 for the current one)", states);
        let restarts: Counter<u64> = Counter::default();
        restarts.inc_by(e.restarts);
        reg.register("engine_restarts", "Engine restarts by the supervisor", restarts);
        if let Some(ok) = e.binding_ok {
            let g = GaugeF::default();
            g.set(if ok { 1.0 } else { 0.0 });
            reg.register(
                "engine_binding_ok",
                "Whether the engine runs with the planned NUMA binding",
                g,
            );
        }
        if let Some(ms) = e.health_latency_ms {
            let g = GaugeF::default();
            g.set(ms / 1e3);
            reg.register_with_unit(
                "engine_health_latency",
                "Latency of the last engine health check",
                Unit::Seconds,
                g,
            );
        }
        if let Some(bytes) = e.memory_bytes {
            let g = GaugeF::default();
            g.set(bytes as f64);
            reg.register_with_unit(
                "engine_memory",
                "Memory of the engine's processes as their cgroup counts it",
                Unit::Bytes,
                g,
            );
        }
        if let Some(by_node) = &e.memory_by_node {
            let fam = family();
            for (node, bytes) in by_node {
                fam.get_or_create(&l(&[("node", node.to_string())])).set(*bytes as f64);
            }
            reg.register_with_unit(
                "engine_node_memory",
                "Resident memory of the engine's processes on each NUMA node (numa_maps)",
                Unit::Bytes,
                fam,
            );
        }
        if let Some(share) = e.placement.memory_off_node_share {
            let g = GaugeF::default();
            g.set(share);
            reg.register_with_unit(
                "engine_memory_off_node",
                "Share of the engine's resident memory off its bound memory nodes (0-1)",
                Unit::Other("ratio".into()),
                g,
            );
            let a = GaugeF::default();
            a.set(if e.placement.memory_off_node_alert { 1.0 } else { 0.0 });
            reg.register(
                "engine_memory_off_node_alert",
                "Whether that share is above binding.memory_off_node_alert",
                a,
            );
        }
        if let Some(t) = &e.placement.thread_placement {
            let g = GaugeF::default();
            g.set(t.threads as f64);
            reg.register("engine_threads", "Threads of the engine's processes", g);
            if let Some(m) = t.migrations {
                let c: Counter<u64> = Counter::default();
                c.inc_by(m);
                reg.register(
                    "engine_thread_migrations",
                    "CPU migrations of the engine's threads (se.nr_migrations of /proc/PID/task/*/sched)",
                    c,
                );
            }
            if let Some(share) = t.outside_share {
                let g = GaugeF::default();
                g.set(share);
                reg.register_with_unit(
                    "engine_cpu_outside",
                    "Share of the engine's CPU time on CPUs outside its binding over the last check interval (0-1)",
                    Unit::Other("ratio".into()),
                    g,
                );
                let a = GaugeF::default();
                a.set(if e.placement.cpu_outside_alert { 1.0 } else { 0.0 });
                reg.register(
                    "engine_cpu_outside_alert",
                    "Whether that share is above binding.cpu_outside_alert",
                    a,
                );
            }
        }
        let gauges = [
            (
                "engine_last_token_age",
                "Time since the engine's token counters last moved (the progress watchdog's signal)",
                e.last_token_age_s.map(|s| s as f64),
                Some(Unit::Seconds),
            ),
            (
                "engine_requests_running",
                "Requests running at the engine (vllm:num_requests_running) at the supervisor's last check",
                e.requests_running,
                None,
            ),
            (
                "engine_requests_waiting",
                "Requests waiting at the engine (vllm:num_requests_waiting) at the supervisor's last check",
                e.requests_waiting,
                None,
            ),
            (
                "engine_canary_ok",
                "Whether the supervisor's last canary completion succeeded",
                e.canary_ok.map(|ok| if ok { 1.0 } else { 0.0 }),
                None,
            ),
            (
                "engine_canary_failures",
                "Failed canary completions in a row",
                e.canary_failures.map(f64::from),
                None,
            ),
            (
                "engine_drain_in_flight",
                "While draining before a stop: requests running plus waiting at the engine",
                e.drain_in_flight,
                None,
            ),
        ];
        for (name, help, value, unit) in gauges {
            if let Some(v) = value {
                let g = GaugeF::default();
                g.set(v);
                match unit {
                    Some(u) => reg.register_with_unit(name, help, u, g),
                    None => reg.register(name, help, g),
                }
            }
        }
        if let Some(secs) = e.cpu_seconds {
            let c: Counter<f64, AtomicU64> = Counter::default();
            c.inc_by(secs);
            reg.register_with_unit(
                "engine_cpu",
                "CPU time the engine's processes used, as their cgroup counts it",
                Unit::Seconds,
                c,
            );
        }
        if let Some(n) = status.in_flight {
            let g = GaugeF::default();
            g.set(n as f64);
            reg.register(
                "engine_requests_in_flight",
                "Requests running or waiting at the engine",
                g,
            );
        }
    }

    source_and_health(&mut reg, status);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    // The health series under DCGM exporter's names (no `nodeagent_` prefix), so dashboards
    // and alert rules written for dcgm-exporter read them as they are.
    let mut dcgm = String::new();
    let _ = encode(&mut dcgm, &dcgm_registry(status));
    if dcgm.lines().any(|l| !l.starts_with('#')) {
        out = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        out.push_str(&dcgm);
    }
    out
}

/// `nodeagent_gpu_sample_source{source}` (1 for the last tick's source), the number of fields
/// the last sample could not read, and the GPU link states (no DCGM name exists for them).
fn source_and_health(reg: &mut Registry, status: &MonitorStatus) {
    if let Some(source) = status.source {
        let f = family();
        f.get_or_create(&l(&[("source", source.as_str().to_string())])).set(1.0);
        reg.register(
            "gpu_sample_source",
            "The source of the last GPU sample (nvml, nvidia-smi, mxsml, mx-smi dmon, mx-smi, snapshot)",
            f,
        );
        let g = GaugeF::default();
        g.set(status.degraded.len() as f64);
        reg.register(
            "gpu_fields_degraded",
            "Fields the last GPU sample could not read (not supported or failed), each absent alone",
            g,
        );
    }
    let links = family();
    let pstate = family();
    let vendor_throttle = family();
    let xids: Family<Labels, Counter<u64>> = Family::default();
    let xid_watched = family();
    let pcie_events: Family<Labels, Counter<u64>> = Family::default();
    for h in &status.health {
        for (ty, n) in &h.pcie_events_total {
            let mut labels =
                l(&[("gpu", h.index.to_string()), ("pci_bus_id", bus_of(status, h.index))]);
            labels.push(("type".into(), ty.clone()));
            pcie_events.get_or_create(&labels).inc_by(*n);
        }
        let gpu_bus =
            || l(&[("gpu", h.index.to_string()), ("pci_bus_id", bus_of(status, h.index))]);
        if let Some(w) = h.xid_watched {
            xid_watched.get_or_create(&gpu_bus()).set(if w { 1.0 } else { 0.0 });
        }
        for (code, n) in &h.xid_events_total {
            let mut labels = gpu_bus();
            labels.push(("xid".into(), code.to_string()));
            xids.get_or_create(&labels).inc_by(*n);
        }
        if let Some(bits) = h.vendor_throttle_reasons {
            let labels =
                l(&[("gpu", h.index.to_string()), ("pci_bus_id", bus_of(status, h.index))]);
            vendor_throttle.get_or_create(&labels).set(bits as f64);
        }
        let bus = bus_of(status, h.index);
        for link in h.links.iter().flatten() {
            let labels = l(&[
                ("gpu", h.index.to_string()),
                ("pci_bus_id", bus.clone()),
                ("link", link.link.to_string()),
            ]);
            links.get_or_create(&labels).set(if link.up { 1.0 } else { 0.0 });
        }
        if let Some(p) = h.performance_state {
            pstate
                .get_or_create(&l(&[("gpu", h.index.to_string()), ("pci_bus_id", bus)]))
                .set(f64::from(p));
        }
    }
    reg.register(
        "gpu_link_up",
        "Whether each GPU-to-GPU link (NVLink, MetaXLink) is active",
        links,
    );
    reg.register(
        "gpu_xid_events",
        "XID events the GPU's library reported since the monitor started, by XID code",
        xids,
    );
    reg.register(
        "gpu_pcie_events",
        "PCI events the GPU's library counts by type since the driver loaded (MetaX: aer_ue, aer_ce, synfld, dbe, mmio)",
        pcie_events,
    );
    reg.register(
        "gpu_xid_watched",
        "Whether the GPU's XID events are watched (0: registration refused, e.g. NOT_SUPPORTED on a vGPU)",
        xid_watched,
    );
    reg.register(
        "gpu_vendor_throttle_reasons",
        "A vendor library's own clock throttle bit mask, not NVML's (MetaX libmxsml; 0: not throttled)",
        vendor_throttle,
    );
}

fn bus_of(status: &MonitorStatus, index: u32) -> String {
    status
        .gpus
        .iter()
        .find(|g| g.status.index == index)
        .and_then(|g| g.status.bus_id.clone())
        .unwrap_or_default()
}

/// The health readings as DCGM exporter names them (`DCGM_FI_DEV_*`, labels `gpu`,
/// `pci_bus_id`, `model_name`); a reading the source did not give is not exported.
fn dcgm_registry(status: &MonitorStatus) -> Registry {
    use crate::host::health::GpuHealth;
    type Pick = fn(&GpuHealth) -> Option<f64>;
    let fields: [(&str, &str, Pick); 12] = [
        ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)", |h| h.sm_clock_mhz.map(f64::from)),
        ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz)", |h| {
            h.mem_clock_mhz.map(f64::from)
        }),
        ("DCGM_FI_DEV_MAX_SM_CLOCK", "Maximum SM clock (in MHz)", |h| {
            h.sm_clock_max_mhz.map(f64::from)
        }),
        (
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "Current clock throttle reasons (NVML bitmask)",
            |h| h.throttle_reasons.map(|b| b as f64),
        ),
        ("DCGM_FI_DEV_PSTATE", "Performance state (P-State) 0-15, 0 highest", |h| {
            h.performance_state.map(f64::from)
        }),
        (
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            "Corrected (single-bit) ECC errors since the driver loaded",
            |h| h.ecc_corrected.map(|n| n as f64),
        ),
        (
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "Uncorrected (double-bit) ECC errors since the driver loaded",
            |h| h.ecc_uncorrected.map(|n| n as f64),
        ),
        ("DCGM_FI_DEV_PCIE_LINK_GEN", "PCIe current link generation", |h| {
            h.pcie.gen.map(f64::from)
        }),
        ("DCGM_FI_DEV_PCIE_LINK_WIDTH", "PCIe current link width", |h| h.pcie.width.map(f64::from)),
        ("DCGM_FI_DEV_PCIE_MAX_LINK_GEN", "PCIe maximum link generation", |h| {
            h.pcie.gen_max.map(f64::from)
        }),
        ("DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH", "PCIe maximum link width", |h| {
            h.pcie.width_max.map(f64::from)
        }),
        ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered", |h| {
            h.last_xid.map(|x| x.code as f64)
        }),
    ];
    let mut reg = Registry::default();
    for (name, help, pick) in fields {
        let f = family();
        for h in &status.health {
            if let Some(v) = pick(h) {
                let g = status.gpus.iter().find(|g| g.status.index == h.index);
                let labels = l(&[
                    ("gpu", h.index.to_string()),
                    ("pci_bus_id", bus_of(status, h.index)),
                    ("model_name", g.and_then(|g| g.status.name.clone()).unwrap_or_default()),
                ]);
                f.get_or_create(&labels).set(v);
            }
        }
        reg.register(name, help, f);
    }
    reg
}

/// Converts the OpenMetrics text `prometheus-client` writes into the Prometheus text format
/// 0.0.4 (what `promtool check metrics`, vLLM and most scrapers speak, and what lets the
/// engine's own metrics be appended): counter families take their `_total` name in `# HELP`
/// and `# TYPE`, `# UNIT` and `# EOF` go, and the series of each family are sorted so the
/// output is stable from scrape to scrape.
///
/// ```text
/// # TYPE nodeagent_gpu_samples counter        # TYPE nodeagent_gpu_samples_total counter
/// # UNIT nodeagent_x_bytes bytes         ->   (dropped)
/// nodeagent_gpu_samples_total 2               nodeagent_gpu_samples_total 2
/// ```
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    let mut series: Vec<&str> = Vec::new();
    let flush = |series: &mut Vec<&str>, out: &mut String| {
        series.sort_unstable();
        for s in series.drain(..) {
            out.push_str(s);
            out.push('\n');
        }
    };
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            flush(&mut series, &mut out);
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = &line[..7];
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        series.push(line);
    }
    flush(&mut series, &mut out);
    out
}

/// Re-labels the engine's own metrics (Prometheus text format) with `engine="<name>"`, so
/// they can be scraped from the agent next to its own. Comment lines pass through.
///
/// ```text
/// vllm:num_requests_running{model_name="qwen"} 3.0   ->  vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
/// ```
pub fn relabel(text: &str, engine: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let label = format!("engine=\"{}\"", engine.replace('\\', "\\\\").replace('"', "\\\""));
    for line in text.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            out.push_str(line);
        } else if let Some(brace) = t.find('{').filter(|&b| t[..b].find(' ').is_none()) {
            let inner_empty = t[brace + 1..].starts_with('}');
            out.push_str(&t[..=brace]);
            out.push_str(&label);
            if !inner_empty {
                out.push(',');
            }
            out.push_str(&t[brace + 1..]);
        } else if let Some(space) = t.find(' ') {
            out.push_str(&format!("{}{{{label}}}{}", &t[..space], &t[space..]));
        } else {
            continue; // not a sample line
        }
        out.push('\n');
    }
    out
}

/// Requests in flight from vLLM's metrics: `vllm:num_requests_running` + `..._waiting`,
/// summed over label sets. `None` if neither is present.
pub fn in_flight_from_vllm(text: &str) -> Option<u64> {
    vllm_sum(text, &["vllm:num_requests_running", "vllm:num_requests_waiting"])
        .map(|n| n.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_names_and_units_go() {
        let om = "# HELP a_x A.\n# TYPE a_x counter\na_x_total 2\n# HELP b_bytes B.\n# TYPE b_bytes gauge\n# UNIT b_bytes bytes\nb_bytes{g=\"1\"} 1\nb_bytes{g=\"0\"} 0\n# EOF\n";
        let t = openmetrics_to_text(om);
        assert_eq!(
            t,
            "# HELP a_x_total A.\n# TYPE a_x_total counter\na_x_total 2\n# HELP b_bytes B.\n# TYPE b_bytes gauge\nb_bytes{g=\"0\"} 0\nb_bytes{g=\"1\"} 1\n"
        );
    }

    #[test]
    fn relabels_with_and_without_labels() {
        let t = "# HELP a x\n# TYPE a gauge\na 1\nb{x=\"y\"} 2.0\nc{} 3\n";
        let r = relabel(t, "0");
        assert!(r.contains("a{engine=\"0\"} 1\n"), "{r}");
        assert!(r.contains("b{engine=\"0\",x=\"y\"} 2.0\n"), "{r}");
        assert!(r.contains("c{engine=\"0\"} 3\n"), "{r}");
        assert!(r.starts_with("# HELP a x\n"));
    }

    #[test]
    fn engine_cgroup_usage_is_exported_only_when_known() {
        let mut st = MonitorStatus::default();
        st.engine.supervised = true;
        st.engine.state = "ready".into();
        let t = render(&st, None);
        assert!(!t.contains("nodeagent_engine_memory") && !t.contains("nodeagent_engine_cpu"));
        st.engine.memory_bytes = Some(1 << 30);
        st.engine.cpu_seconds = Some(12.5);
        let t = render(&st, None);
        assert!(t.contains("# TYPE nodeagent_engine_memory_bytes gauge\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_memory_bytes 1073741824.0\n"), "{t}");
        assert!(t.contains("# TYPE nodeagent_engine_cpu_seconds_total counter\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_cpu_seconds_total 12.5\n"), "{t}");
        assert!(!t.contains("engine_node_memory"), "{t}");
        st.engine.memory_by_node = Some([(0, 4096), (1, 1 << 20)].into());
        st.engine.placement.memory_off_node_share = Some(0.25);
        st.engine.placement.memory_off_node_alert = true;
        let t = render(&st, None);
        assert!(t.contains("\nnodeagent_engine_node_memory_bytes{node=\"0\"} 4096.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_node_memory_bytes{node=\"1\"} 1048576.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_memory_off_node_ratio 0.25\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_memory_off_node_alert 1.0\n"), "{t}");
        assert!(!t.contains("nodeagent_engine_thread"), "{t}");
        st.engine.placement.thread_placement = Some(crate::host::task_stat::ThreadPlacement {
            threads: 12,
            migrations: Some(340),
            outside_share: Some(0.125),
            ..Default::default()
        });
        st.engine.placement.cpu_outside_alert = true;
        let t = render(&st, None);
        assert!(t.contains("\nnodeagent_engine_threads 12.0\n"), "{t}");
        assert!(t.contains("# TYPE nodeagent_engine_thread_migrations_total counter\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_thread_migrations_total 340\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_cpu_outside_ratio 0.125\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_cpu_outside_alert 1.0\n"), "{t}");
        assert!(!t.contains("nodeagent_engine_last_token") && !t.contains("canary"), "{t}");
        st.engine.last_token_age_s = Some(7);
        st.engine.requests_running = Some(0.0);
        st.engine.requests_waiting = Some(3.0);
        st.engine.canary_ok = Some(false);
        st.engine.canary_failures = Some(2);
        let t = render(&st, None);
        assert!(t.contains("\nnodeagent_engine_last_token_age_seconds 7.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_requests_running 0.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_requests_waiting 3.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_canary_ok 0.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_canary_failures 2.0\n"), "{t}");
        assert!(!t.contains("nodeagent_engine_drain_in_flight"), "{t}");
        st.engine.state = "draining".into();
        st.engine.drain_in_flight = Some(1.0);
        let t = render(&st, None);
        assert!(t.contains("\nnodeagent_engine_drain_in_flight 1.0\n"), "{t}");
        assert!(t.contains("\nnodeagent_engine_state{state=\"draining\"} 1.0\n"), "{t}");
    }

    #[test]
    fn in_flight_sums_running_and_waiting() {
        let t = "vllm:num_requests_running{model_name=\"m\"} 3.0\nvllm:num_requests_waiting{model_name=\"m\"} 2.0\nvllm:num_requests_running_total 99\n";
        assert_eq!(in_flight_from_vllm(t), Some(5));
        assert_eq!(in_flight_from_vllm("other 1\n"), None);
    }
}
