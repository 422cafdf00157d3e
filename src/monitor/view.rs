//! The terminal view of a `MonitorStatus`: GPUs, their processes with owners, the engine and
//! the active alerts, as comfy-table tables rendered into a `String` (the command prints it).
//! XID-like events get one line when there are any, or a GPU is not watched.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::status::MonitorStatus;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn render(status: &MonitorStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!("sampler: {}", status.sampler));
    if let Some(source) = status.source {
        out.push_str(&format!("; source: {}", source.as_str()));
    }
    if let Some(ms) = status.sample_duration_ms {
        out.push_str(&format!(" ({ms:.1} ms)"));
    }
    out.push('\n');
    if !status.degraded.is_empty() {
        out.push_str(&format!("not read: {}\n", status.degraded.join("; ")));
    }
    if let Some(why) = &status.missing {
        out.push_str(&format!("LAST SAMPLE MISSING: {why} (showing the last good one)\n"));
    }

    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "GPU",
        "name",
        "bus id",
        "NUMA",
        "memory MiB",
        "mem %",
        "util %",
        "temp C",
        "power W",
        "engine",
    ]);
    for g in &status.gpus {
        let s = &g.status;
        let pct = match (s.memory_used_mib, s.memory_total_mib) {
            (Some(u), Some(t)) if t > 0 => format!("{:.1}", u as f64 * 100.0 / t as f64),
            _ => "-".into(),
        };
        t.add_row([
            s.index.to_string(),
            s.name.clone().unwrap_or_default(),
            s.bus_id.clone().unwrap_or_default(),
            g.numa_node.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            format!("{} / {}", opt(s.memory_used_mib), opt(s.memory_total_mib)),
            pct,
            opt(s.utilization_pct),
            opt(s.temperature_c),
            opt(s.power_w),
            if status.engine_gpus.contains(&s.index) { "yes".into() } else { String::new() },
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');

    if !status.processes.is_empty() {
        let mut p = Table::new();
        p.load_preset(UTF8_FULL_CONDENSED);
        p.set_header(["GPU", "pid", "process", "memory MiB", "owner"]);
        for pr in &status.processes {
            p.add_row([
                pr.gpu.to_string(),
                pr.pid.to_string(),
                pr.name.clone(),
                opt(pr.memory_mib),
                pr.owner.as_str().to_string(),
            ]);
        }
        out.push_str(&p.to_string());
        out.push('\n');
    }

    let e = &status.engine;
    if e.supervised {
        out.push_str(&format!(
            "engine: {} (pids {:?}), restarts {}, binding {}, health {}, in flight {}{}\n",
            if e.state.is_empty() { "unknown" } else { &e.state },
            e.pids,
            e.restarts,
            match e.binding_ok {
                Some(true) => "ok",
                Some(false) => "WRONG",
                None => "unchecked",
            },
            e.health_latency_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "-".into()),
            opt(status.in_flight),
            if status.engine_hung { ", HUNG" } else { "" }
        ));
    }
    if let Some(line) = xid_line(status) {
        out.push_str(&line);
    }
    if status.alerts.is_empty() {
        out.push_str("alerts: none\n");
    } else {
        for a in &status.alerts {
            out.push_str(&format!("ALERT {}: {}\n", a.check.as_str(), a.message));
        }
    }
    out
}

/// `XID events: GPU 0 last 79 (GPU has fallen off the bus), 3 in all; GPU 1 not watched (...)`,
/// or nothing when no GPU has had one and every watched GPU is.
fn xid_line(status: &MonitorStatus) -> Option<String> {
    let parts: Vec<String> = status
        .health
        .iter()
        .filter_map(|h| {
            if let Some(x) = h.last_xid {
                let n: u64 = h.xid_events_total.values().sum();
                Some(format!(
                    "GPU {} last {} ({}), {n} in all",
                    h.index,
                    x.code,
                    crate::host::health::xid_name(x.code)
                ))
            } else if h.xid_watched == Some(false) {
                let why = h.xid_not_watched.as_deref().unwrap_or("unknown reason");
                Some(format!("GPU {} not watched ({why})", h.index))
            } else {
                None
            }
        })
        .collect();
    (!parts.is_empty()).then(|| format!("XID events: {}\n", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::health::{GpuHealth, XidEvent};

    #[test]
    fn xid_line_names_the_last_event_and_the_unwatched() {
        let mut status = MonitorStatus::default();
        assert_eq!(xid_line(&status), None);
        status.health = vec![
            GpuHealth {
                index: 0,
                last_xid: Some(XidEvent { code: 79, at_unix_ms: 1 }),
                xid_events_total: [(13, 2), (79, 1)].into(),
                xid_watched: Some(true),
                ..Default::default()
            },
            GpuHealth {
                index: 1,
                xid_watched: Some(false),
                xid_not_watched: Some("register events: not supported".into()),
                ..Default::default()
            },
            GpuHealth { index: 2, xid_watched: Some(true), ..Default::default() },
        ];
        assert_eq!(
            xid_line(&status).unwrap(),
            "XID events: GPU 0 last 79 (GPU has fallen off the bus), 3 in all; GPU 1 not watched (register events: not supported)\n"
        );
        assert!(render(&status).contains("XID events: GPU 0 last 79"));
    }
}
