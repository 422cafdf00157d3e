//! `nodeagent doctor`: gather the host facts and plan as `plan` does (live or `--from DIR`),
//! read the host settings below the same roots (`crate::doctor::read`), ask a running `serve`
//! for its engine (live only), run the checks and print them (a table, or `--json` as
//! `{"checks": [...]}`). Exit 1 when any check fails, after printing every check.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};

use crate::cli::DoctorArgs;
use crate::doctor::{self, EngineView, Report};
use crate::exit::{CmdError, ResultExt};
use crate::supervise::status::{query, AgentStatus};

pub fn run(args: &DoctorArgs) -> Result<(), CmdError> {
    let src = &args.plan.source;
    let (_, topo) = super::source::load(src)?;
    let plan = super::source::plan_for(&args.plan, &topo);
    let mut scope = doctor::scope(&topo, plan.as_ref().ok(), args.plan.host_memory_gb);
    if let Err(e) = &plan {
        tracing::warn!(error = %e, "no plan: checking without a binding");
    }
    let (sys, proc) = doctor::read::roots(src.from.as_deref(), &src.sysfs_root, &args.proc_root);
    let buses: Vec<String> = scope.gpus.iter().filter_map(|g| g.bus_id.clone()).collect();
    let settings = doctor::read(&sys, &proc, &buses).bad_input()?;
    match &src.from {
        Some(dir) => {
            scope.engine_note =
                format!("replaying the snapshot {}: no engine to ask", dir.display())
        }
        None => match ask_engine(args) {
            Ok(status) => scope.engine = Some(engine_view(&status)),
            Err(e) => scope.engine_note = format!("no serve status: {e}"),
        },
    }
    let report = Report { checks: doctor::run(&settings, &scope) };
    let text = if args.plan.json {
        serde_json::to_string_pretty(&report).context("rendering JSON").failed()? + "\n"
    } else {
        render(&report)
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout").failed()?;
    let failed = report.failed();
    if !failed.is_empty() {
        return Err(CmdError::failed(anyhow::anyhow!(
            "{} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )));
    }
    Ok(())
}

fn ask_engine(args: &DoctorArgs) -> anyhow::Result<AgentStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(query(&args.state_dir, Duration::from_secs(2)))?)
}

/// The engine as the checks see it: the binding serve applied and its check's verdict.
fn engine_view(s: &AgentStatus) -> EngineView {
    EngineView {
        cpus: s.binding.cpus.clone(),
        memory_nodes: s.binding.memory_nodes(),
        check_ok: s.binding_check.as_ref().map(|c| c.ok),
        escapes: s
            .binding_check
            .iter()
            .flat_map(|c| &c.processes)
            .filter_map(|p| p.escape.as_ref().map(|e| format!("{} {}: {e}", p.pid, p.comm)))
            .collect(),
    }
}

/// The human form: one row per check, the fix under the evidence.
pub fn render(report: &Report) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_width(120);
    t.set_header(["check", "status", "evidence / fix"]);
    for c in &report.checks {
        let mut cell = c.detail.clone();
        if let Some(fix) = &c.fix {
            cell.push_str(&format!("\nfix: {fix}"));
        }
        t.add_row([c.name.clone(), c.status.to_string(), cell]);
    }
    format!("{t}\n")
}
