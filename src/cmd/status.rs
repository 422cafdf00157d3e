//! `nodeagent status`: ask the running `nodeagent serve` over its Unix socket in the state dir
//! and print its status record (text, or `--json` as is). Exit 1 when no agent answers.

use std::io::Write;

use anyhow::Context;

use crate::cli::StatusArgs;
use crate::exit::{CmdError, ResultExt};
use crate::supervise::status::{query, AgentStatus};

pub fn run(args: StatusArgs) -> Result<(), CmdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()?;
    let status = rt.block_on(query(&args.state_dir, args.timeout)).failed()?;
    let text = if args.json {
        serde_json::to_string_pretty(&status).context("rendering JSON").failed()? + "\n"
    } else {
        render(&status)
    };
    // A closed pipe (`| head`) is an error to report, not a panic.
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout").failed()
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The human view of a status record.
pub fn render(s: &AgentStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line(&mut out, "state", format!("{} since {} ({})", s.state, s.state_since, s.message));
    line(&mut out, "agent", format!("pid {}, up {} s", s.agent_pid, s.uptime_s));
    line(&mut out, "runtime", s.runtime.clone());
    line(&mut out, "engine", format!("{} on port {}", opt(&s.served_model_name), s.port));
    line(&mut out, "command", s.argv.join(" "));
    line(
        &mut out,
        "engine pids",
        if s.pids.is_empty() {
            "-".to_string()
        } else {
            let pids: Vec<String> = s.pids.iter().map(i32::to_string).collect();
            format!("{} (main {})", pids.join(" "), opt(&s.main_pid))
        },
    );
    line(&mut out, "engine up", s.engine_uptime_s.map_or("-".to_string(), |u| format!("{u} s")));
    line(&mut out, "containment", opt(&s.containment));
    if s.engine_memory_bytes.is_some() || s.engine_cpu_seconds.is_some() {
        let mem = s
            .engine_memory_bytes
            .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let cpu = s.engine_cpu_seconds.map_or("-".into(), |c| format!("{c:.1} s"));
        line(&mut out, "engine use", format!("memory {mem}, cpu {cpu}"));
    }
    let binding =
        if s.binding.is_none() { "none".to_string() } else { s.binding.numactl_args().join(" ") };
    line(&mut out, "binding", binding);
    if let Some(check) = &s.binding_check {
        let verdict = if check.ok { "ok" } else { "ESCAPED" };
        line(
            &mut out,
            "binding check",
            format!("{verdict} at {}, {} processes", check.at, check.processes.len()),
        );
        for p in &check.processes {
            let mut l = format!(
                "    {:>7} {:<16} cpus {:<10} mems {:<6} policy {}",
                p.pid,
                p.comm,
                p.cpus_allowed,
                p.mems_allowed,
                p.mempolicy.as_deref().unwrap_or("-")
            );
            if let Some(e) = &p.escape {
                l.push_str(&format!("  ESCAPED: {e}"));
            }
            out.push_str(&l);
            out.push('\n');
        }
    }
    if let Some(h) = &s.health {
        line(
            &mut out,
            "health",
            format!("{} at {} ({} consecutive failures)", h.last, h.at, h.consecutive_failures),
        );
    }
    if let Some(l) = &s.liveness {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
        let ago = l.last_token_s_ago.map_or("-".to_string(), |a| format!("{a} s ago"));
        let canary = match (&l.canary, &l.canary_at) {
            (Some(c), Some(at)) => {
                format!("canary {c} at {at} ({} failed in a row)", l.canary_failures)
            }
            _ => "no canary".to_string(),
        };
        line(
            &mut out,
            "liveness",
            format!(
                "last token {ago}, {} running, {} waiting; {canary}",
                num(l.running),
                num(l.waiting)
            ),
        );
    }
    for note in &s.probe_notes {
        line(&mut out, "probe", note.clone());
    }
    if let Some(d) = &s.drain {
        let in_flight = d.in_flight.map_or("-".to_string(), |n| n.to_string());
        let result = d.result.as_deref().unwrap_or("going on");
        line(
            &mut out,
            "drain",
            format!("since {} (up to {} s), {in_flight} in flight; {result}", d.since, d.timeout_s),
        );
    }
    line(&mut out, "restarts", s.restarts.to_string());
    line(&mut out, "last exit", opt(&s.last_exit));
    out
}
