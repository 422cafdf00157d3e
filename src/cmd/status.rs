//! `nodeagent status`: ask the running `nodeagent serve` agents over their Unix sockets and
//! print their status records. Every instance under the base state dir is asked
//! (`supervise::statedir::instance_dirs`: the base is instance 0, `BASE/N` instance N), or
//! only `--instance N`. Text lists each one; `--json` prints one record as is (the only
//! instance running, or `--instance N`), `--json --all` an array of every record. Exit 1 when
//! no agent answers.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context};

use crate::cli::StatusArgs;
use crate::exit::{CmdError, ResultExt};
use crate::supervise::ray;
use crate::supervise::status::{query_all, AgentStatus, Found};

pub fn run(args: StatusArgs) -> Result<(), CmdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()?;
    let found = rt.block_on(query_all(&args.state_dir, args.instance, args.timeout));
    let text = render_found(found, &args)?;
    // A closed pipe (`| head`) is an error to report, not a panic.
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout").failed()
}

/// The text to print for what answered, or the error (exit 1) when nothing did or `--json`
/// without `--all` would have to pick among several instances.
fn render_found(found: Vec<Found>, args: &StatusArgs) -> Result<String, CmdError> {
    let mut answered: Vec<(usize, AgentStatus)> = Vec::new();
    let mut silent = Vec::new();
    let mut first_err = None;
    for f in found {
        match f.status {
            Ok(mut s) => {
                // An agent of an older build does not say which instance it is.
                s.instance = f.instance;
                s.state_dir.get_or_insert_with(|| f.state_dir.display().to_string());
                answered.push((f.instance, s));
            }
            Err(e) => {
                silent.push(format!("instance {} ({}): {e}", f.instance, f.state_dir.display()));
                first_err.get_or_insert(e);
            }
        }
    }
    if answered.is_empty() {
        return Err(CmdError::failed(match first_err {
            Some(e) => anyhow!(e),
            None => anyhow!(
                "no nodeagent serve answers under {} (no status.sock there or in an instance \
                 subdirectory); is it running with this --state-dir?",
                args.state_dir.display()
            ),
        }));
    }
    for line in &silent {
        tracing::warn!("{line}");
    }
    if args.json {
        let records: Vec<serde_json::Value> = answered.iter().map(|(_, s)| with_ray(s)).collect();
        let value = if args.all {
            serde_json::to_value(&records)
        } else if let [one] = records.as_slice() {
            serde_json::to_value(one)
        } else {
            let list: Vec<String> = answered.iter().map(|(n, _)| n.to_string()).collect();
            return Err(CmdError::bad_input(anyhow!(
                "{} instances answer ({}): pick one with --instance N, or print all with --all",
                list.len(),
                list.join(", ")
            )));
        };
        let value = value.context("rendering JSON").failed()?;
        return Ok(serde_json::to_string_pretty(&value).context("rendering JSON").failed()? + "\n");
    }
    let several = answered.len() > 1 || !silent.is_empty();
    let mut out = String::new();
    if several {
        out += &summary(&answered);
    }
    for (n, s) in &answered {
        if several {
            out += &format!("\n== instance {n} ({})\n", s.state_dir.as_deref().unwrap_or("-"));
        }
        out += &render(s);
        if let Some(r) = s.state_dir.as_deref().and_then(|d| ray::read_cluster(Path::new(d))) {
            out += &ray::render(&r);
        }
    }
    for line in &silent {
        out += &format!("\n== {line}\n");
    }
    Ok(out)
}

/// The record as JSON, with `ray` (the member's cluster file, `supervise::ray`) when the
/// agent has a Ray role.
fn with_ray(s: &AgentStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    let cluster = s.state_dir.as_deref().and_then(|d| ray::read_cluster(Path::new(d)));
    if let (Some(r), Some(map)) = (cluster, v.as_object_mut()) {
        map.insert("ray".into(), serde_json::to_value(r).unwrap_or_default());
    }
    v
}

/// One line per instance: number, state, port, GPUs, engine pids.
pub fn summary(answered: &[(usize, AgentStatus)]) -> String {
    let mut out = format!(
        "{:<9}{:<11}{:<7}{:<12}{:<8}{}\n",
        "INSTANCE", "STATE", "PORT", "GPUS", "AGENT", "ENGINE PIDS"
    );
    for (n, s) in answered {
        let gpus = s.gpus.as_ref().map_or("-".to_string(), |g| {
            g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        });
        let pids: Vec<String> = s.pids.iter().map(i32::to_string).collect();
        let pids = if pids.is_empty() { "-".to_string() } else { pids.join(" ") };
        out += &format!(
            "{:<9}{:<11}{:<7}{:<12}{:<8}{}\n",
            n,
            s.state.to_string(),
            s.port,
            gpus,
            s.agent_pid,
            pids
        );
    }
    out
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The human view of a status record.
/// One rank of the per-rank binding (docs/serve.md, "Per-rank binding"): pids, GPU, node,
/// CPUs, cgroup, resident memory per node, or why it is not bound.
fn rank_line(r: &crate::supervise::ranks::RankStatus) -> String {
    let pids = if r.pids.is_empty() {
        "-".to_string()
    } else {
        r.pids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
    };
    let mut l =
        format!("  rank {:<3} GPU{} node {} cpus {} pids {pids}", r.rank, r.gpu, r.node, r.cpus);
    if let Some(src) = r.source.as_ref().filter(|_| !r.pids.is_empty()) {
        l.push_str(&format!(" (from {src})"));
    }
    if let Some(cg) = &r.cgroup {
        l.push_str(&format!(" cgroup {cg}"));
    }
    if !r.memory_by_node.is_empty() {
        let nodes: Vec<String> = r
            .memory_by_node
            .iter()
            .map(|(n, b)| format!("node {n} {:.1} MiB", *b as f64 / 1048576.0))
            .collect();
        l.push_str(&format!(" memory {}", nodes.join(", ")));
    }
    if let Some(left) = r.pages_left.filter(|n| *n > 0) {
        l.push_str(&format!(" ({left} pages left off node)"));
    }
    if let Some(p) = &r.problem {
        l.push_str(&format!(": {p}"));
    }
    l.push('\n');
    l
}

pub fn render(s: &AgentStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line(&mut out, "instance", s.instance.to_string());
    if let Some(gpus) = &s.gpus {
        let list: Vec<String> = gpus.iter().map(u32::to_string).collect();
        line(&mut out, "gpus", list.join(","));
    }
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
    if let Some(by_node) = &s.memory_by_node {
        let nodes: Vec<String> = by_node
            .iter()
            .map(|(n, b)| format!("node {n} {:.1} MiB", *b as f64 / 1048576.0))
            .collect();
        let share = s.placement.memory_off_node_share.map_or(String::new(), |x| {
            let alert = if s.placement.memory_off_node_alert { " ALERT" } else { "" };
            format!(", {:.1} % off the bound nodes{alert}", x * 100.0)
        });
        line(&mut out, "memory/node", format!("{}{share}", nodes.join(", ")));
    }
    if let Some(t) = &s.placement.thread_placement {
        let alert = if s.placement.cpu_outside_alert { " ALERT" } else { "" };
        line(&mut out, "threads", format!("{}{alert}", crate::host::task_stat::describe(t)));
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
    for r in &s.ranks {
        out.push_str(&rank_line(r));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::ranks::RankStatus;

    #[test]
    fn a_rank_shows_its_worker_cgroup_and_memory_or_why_not() {
        let bound = RankStatus {
            rank: 1,
            gpu: 5,
            node: 1,
            cpus: "8-11".into(),
            memory_node: Some(1),
            pids: vec![4242],
            source: Some("NVML".into()),
            cgroup: Some("/sys/fs/cgroup/nodeagent-0-ab/rank-1".into()),
            memory_by_node: [(0, 1 << 20), (1, 512 << 20)].into(),
            pages_left: Some(3),
            problem: None,
        };
        assert_eq!(
            rank_line(&bound),
            "  rank 1   GPU5 node 1 cpus 8-11 pids 4242 (from NVML) cgroup /sys/fs/cgroup/nodeagent-0-ab/rank-1 memory node 0 1.0 MiB, node 1 512.0 MiB (3 pages left off node)\n"
        );
        let waiting = RankStatus {
            rank: 0,
            gpu: 2,
            cpus: "0-3".into(),
            source: Some("nvidia-smi".into()),
            problem: Some(
                "GPU2 shows no process of the engine yet in the vendor's process list".into(),
            ),
            ..RankStatus::default()
        };
        assert_eq!(
            rank_line(&waiting),
            "  rank 0   GPU2 node 0 cpus 0-3 pids -: GPU2 shows no process of the engine yet in the vendor's process list\n"
        );
    }
}
