//! The interconnect preflight: before an engine spans several GPUs (tensor parallel > 1), the
//! GPU-to-GPU links between the instance's GPUs must be up. A pair of the instance's GPUs with
//! no active link between them while links of theirs are reported inactive (down, or not
//! enabled) is refused with one line naming the GPUs and the links, instead of an engine that
//! hangs in its first collective until the ready timeout (vLLM-metax #142: MetaXLinks not
//! enabled, a TP2 start hung). `serve --skip-link-check` turns the refusal into a warning for
//! hosts that run without the links.
//!
//! `check` is pure (link states in, verdict out); `preflight` reads the links through the
//! vendor library (NVML) and calls it. GPUs without links (PCIe-only boards) pass with a note;
//! so does a host where the library cannot be loaded: the check says it was not made. This
//! module starts nothing.

use crate::host::health::LinkState;

/// One GPU's links, as the vendor library reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuLinks {
    pub index: u32,
    /// sysfs form.
    pub bus_id: Option<String>,
    /// `None`: the GPU has no such links (or the library cannot say).
    pub links: Option<Vec<LinkState>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterconnectError {
    #[error("interconnect preflight: {pair}: no active {kind} between them ({detail}); the engine would hang in its first collective (pass --skip-link-check to start anyway)")]
    LinksDown { pair: String, kind: String, detail: String },
    #[error("interconnect preflight: {problems}; the engine would hang in its first collective (vLLM-metax #142; enable the links with mx-smi, or pass --skip-link-check to start anyway)")]
    MetaxLinks { problems: String },
}

fn name(g: &GpuLinks) -> String {
    match &g.bus_id {
        Some(b) => format!("GPU {} ({b})", g.index),
        None => format!("GPU {}", g.index),
    }
}

fn inactive(g: &GpuLinks) -> Vec<u32> {
    g.links.iter().flatten().filter(|l| !l.up).map(|l| l.link).collect()
}

/// Whether `a` and `b` are joined by an active link: one leading from one to the other, or
/// both with active links to something that is none of the host's GPUs (a switch), or an
/// active link whose far end the library does not name (given the benefit of the doubt).
fn joined(a: &GpuLinks, b: &GpuLinks, gpu_buses: &[&str]) -> bool {
    let to = |x: &GpuLinks, y: &GpuLinks| {
        x.links.iter().flatten().any(|l| {
            l.up && match (&l.remote_bus_id, &y.bus_id) {
                (Some(r), Some(yb)) => r == yb,
                (None, _) => true,
                (Some(_), None) => false,
            }
        })
    };
    let switched = |x: &GpuLinks| {
        x.links
            .iter()
            .flatten()
            .any(|l| l.up && l.remote_bus_id.as_deref().is_some_and(|r| !gpu_buses.contains(&r)))
    };
    to(a, b) || to(b, a) || (switched(a) && switched(b))
}

/// The verdict for an instance's GPUs (`instance`, vendor indexes) over the host's GPUs'
/// links: `Ok(notes)` to start (notes say what was not checked or is degraded), or the refusal.
/// `kind` names the links in messages (`NVLink`, `MetaXLink`).
pub fn check(
    instance: &[u32],
    host: &[GpuLinks],
    kind: &str,
) -> Result<Vec<String>, InterconnectError> {
    let mut notes = Vec::new();
    let gpus: Vec<&GpuLinks> =
        instance.iter().filter_map(|i| host.iter().find(|g| g.index == *i)).collect();
    for i in instance {
        if !gpus.iter().any(|g| g.index == *i) {
            notes.push(format!("GPU {i}: not reported by the library; its links are not checked"));
        }
    }
    let buses: Vec<&str> = host.iter().filter_map(|g| g.bus_id.as_deref()).collect();
    let without: Vec<String> =
        gpus.iter().filter(|g| g.links.is_none()).map(|g| g.index.to_string()).collect();
    if !without.is_empty() {
        notes.push(format!("GPUs {}: no {kind} reported; not checked", without.join(", ")));
    }
    let linked: Vec<&&GpuLinks> = gpus.iter().filter(|g| g.links.is_some()).collect();
    for (n, a) in linked.iter().enumerate() {
        for b in &linked[n + 1..] {
            let (da, db) = (inactive(a), inactive(b));
            if joined(a, b, &buses) {
                continue;
            }
            if da.is_empty() && db.is_empty() {
                notes.push(format!(
                    "{} and {}: every {kind} is up but none joins them",
                    name(a),
                    name(b)
                ));
                continue;
            }
            let list = |g: &GpuLinks, d: &[u32]| {
                let l: Vec<String> = d.iter().map(u32::to_string).collect();
                format!("GPU {} {kind} {} inactive", g.index, l.join(", "))
            };
            let detail: Vec<String> = [(a, &da), (b, &db)]
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(g, d)| list(g, d))
                .collect();
            return Err(InterconnectError::LinksDown {
                pair: format!("{} and {}", name(a), name(b)),
                kind: kind.to_string(),
                detail: detail.join("; "),
            });
        }
    }
    for g in &linked {
        let d = inactive(g);
        if !d.is_empty() {
            let l: Vec<String> = d.iter().map(u32::to_string).collect();
            notes.push(format!(
                "{}: {kind} {} inactive (fewer links, less bandwidth)",
                name(g),
                l.join(", ")
            ));
        }
    }
    Ok(notes)
}

/// Reads the links of the host's NVIDIA GPUs through NVML and checks `instance`. With `skip`,
/// a refusal is logged as a warning and the start goes on. One GPU, or no NVML: nothing to
/// check (logged).
pub fn preflight_nvidia(instance: &[u32], skip: bool) -> Result<(), InterconnectError> {
    if instance.len() < 2 {
        return Ok(());
    }
    let host = match crate::host::nvml::NvmlLib::open_from_env().map(|lib| lib.links()) {
        Ok(Ok(host)) => host,
        Ok(Err(e)) => {
            tracing::warn!(reason = %e, "interconnect preflight not made");
            return Ok(());
        }
        Err(e) => {
            tracing::info!(reason = %e, "interconnect preflight not made");
            return Ok(());
        }
    };
    let host: Vec<GpuLinks> =
        host.into_iter().map(|(index, bus_id, links)| GpuLinks { index, bus_id, links }).collect();
    match check(instance, &host, "NVLink") {
        Ok(notes) => {
            for n in notes {
                tracing::info!("interconnect preflight: {n}");
            }
            tracing::info!(gpus = ?instance, "interconnect preflight passed");
            Ok(())
        }
        Err(e) if skip => {
            tracing::warn!("{e} (--skip-link-check: starting anyway)");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The verdict on the MetaXLink problems the library reported for an instance (from
/// `host::mxsml::metaxlink_problems`): none passes; some refuse, or with `skip` warn.
pub fn metax_verdict(problems: &[String], skip: bool) -> Result<(), InterconnectError> {
    if problems.is_empty() {
        return Ok(());
    }
    let e = InterconnectError::MetaxLinks { problems: problems.join("; ") };
    if skip {
        tracing::warn!("{e} (--skip-link-check: starting anyway)");
        return Ok(());
    }
    Err(e)
}

/// The MetaX side of the preflight: the MetaXLinks between the instance's GPUs through
/// libmxsml. One GPU, or no library: nothing to check (logged).
pub fn preflight_metax(instance: &[u32], skip: bool) -> Result<(), InterconnectError> {
    if instance.len() < 2 {
        return Ok(());
    }
    match crate::host::mxsml::metaxlink_problems(instance) {
        Ok((problems, warnings)) => {
            for w in warnings {
                tracing::warn!("interconnect preflight: {w}");
            }
            metax_verdict(&problems, skip)?;
            tracing::info!(gpus = ?instance, "interconnect preflight passed (MetaXLink)");
            Ok(())
        }
        Err(e) => {
            tracing::info!(reason = %e, "interconnect preflight not made (MetaXLink)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metaxlink_problems_refuse_in_one_line_unless_skipped() {
        assert!(metax_verdict(&[], false).is_ok());
        let p = vec![
            "MetaXLink of GPU 1 is disabled by mx-smi (needed to reach GPU 0)".to_string(),
            "MetaXLink between GPU 2 and GPU 3 is down".to_string(),
        ];
        let e = metax_verdict(&p, false).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("interconnect preflight: MetaXLink of GPU 1 is disabled by mx-smi (needed to reach GPU 0); MetaXLink between GPU 2 and GPU 3 is down;"), "{e}");
        assert!(metax_verdict(&p, true).is_ok());
    }

    fn link(link: u32, up: bool, remote: &str) -> LinkState {
        LinkState { link, up, remote_bus_id: (!remote.is_empty()).then(|| remote.to_string()) }
    }

    fn gpu(index: u32, links: Option<Vec<LinkState>>) -> GpuLinks {
        GpuLinks { index, bus_id: Some(format!("0000:1{index}:00.0")), links }
    }

    #[test]
    fn direct_links_up_pass_and_down_refuse_naming_gpus_and_links() {
        let up = [
            gpu(0, Some(vec![link(0, true, "0000:11:00.0"), link(1, true, "0000:11:00.0")])),
            gpu(1, Some(vec![link(0, true, "0000:10:00.0"), link(1, true, "0000:10:00.0")])),
        ];
        assert_eq!(check(&[0, 1], &up, "NVLink"), Ok(vec![]));
        let down = [
            gpu(0, Some(vec![link(0, false, ""), link(1, false, "")])),
            gpu(1, Some(vec![link(0, false, ""), link(1, false, "")])),
        ];
        let err = check(&[0, 1], &down, "MetaXLink").unwrap_err();
        assert_eq!(
            err.to_string(),
            "interconnect preflight: GPU 0 (0000:10:00.0) and GPU 1 (0000:11:00.0): no active \
             MetaXLink between them (GPU 0 MetaXLink 0, 1 inactive; GPU 1 MetaXLink 0, 1 \
             inactive); the engine would hang in its first collective (pass --skip-link-check \
             to start anyway)"
        );
        // One link of two down: still joined, a note about the bandwidth.
        let half = [
            gpu(0, Some(vec![link(0, true, "0000:11:00.0"), link(1, false, "")])),
            gpu(1, Some(vec![link(0, true, "0000:10:00.0"), link(1, true, "0000:10:00.0")])),
        ];
        let notes = check(&[0, 1], &half, "NVLink").unwrap();
        assert_eq!(
            notes,
            ["GPU 0 (0000:10:00.0): NVLink 1 inactive (fewer links, less bandwidth)"]
        );
    }

    #[test]
    fn switches_pcie_only_gpus_and_other_instances() {
        // NVSwitch: links lead to a switch (a bus id that is no GPU's).
        let sw = [
            gpu(0, Some(vec![link(0, true, "0000:f0:00.0")])),
            gpu(1, Some(vec![link(0, true, "0000:f1:00.0")])),
            gpu(2, Some(vec![link(0, false, "")])),
        ];
        assert_eq!(check(&[0, 1], &sw, "NVLink"), Ok(vec![]));
        let err = check(&[0, 2], &sw, "NVLink").unwrap_err();
        assert!(matches!(&err, InterconnectError::LinksDown { pair, detail, .. }
            if pair == "GPU 0 (0000:10:00.0) and GPU 2 (0000:12:00.0)" && detail == "GPU 2 NVLink 0 inactive"));
        // PCIe-only boards: nothing to check, said so.
        let pcie = [gpu(0, None), gpu(1, None)];
        assert_eq!(
            check(&[0, 1], &pcie, "NVLink").unwrap(),
            ["GPUs 0, 1: no NVLink reported; not checked"]
        );
        // A GPU the library does not list is named, not refused.
        let notes = check(&[0, 5], &pcie, "NVLink").unwrap();
        assert_eq!(notes[0], "GPU 5: not reported by the library; its links are not checked");
        // Links all up but leading elsewhere: a topology fact, not a fault.
        let elsewhere = [
            gpu(0, Some(vec![link(0, true, "0000:13:00.0")])),
            gpu(1, Some(vec![link(0, true, "0000:12:00.0")])),
            gpu(2, Some(vec![link(0, true, "0000:11:00.0")])),
            gpu(3, Some(vec![link(0, true, "0000:10:00.0")])),
        ];
        let notes = check(&[0, 1], &elsewhere, "NVLink").unwrap();
        assert!(notes[0].contains("every NVLink is up but none joins them"), "{notes:?}");
    }
}
