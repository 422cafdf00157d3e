//! [`gather`]: collect every source, live or from a snapshot, into one [`HostFacts`]. The
//! per-source policy (what is fatal, what is a warning) is in the parent module's docs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::facts::{self, GpuTopo, MachineFacts, SmiStatus, Vendor};
use super::runner::{CommandRunner, RunError};
use super::{
    gputopo, hwloc, mxsmi, mxsml, numactl, nvsmi, rocmsmi, snapshot, sysfs, text, HostError,
    HostFacts, SourceOptions, Timing,
};

impl HostError {
    fn parse(file: &str, e: &text::ParseError) -> Self {
        HostError::Parse {
            file: file.to_string(),
            line: e.line,
            what: format!("expected {}, found {:?}", e.expected, e.found),
        }
    }
}

/// Collects host facts live or from `opts.from`.
pub fn gather(opts: &SourceOptions, runner: &dyn CommandRunner) -> Result<HostFacts, HostError> {
    let defaults = SourceOptions::default();
    let mut opts = opts.clone();
    if opts.from.is_none()
        && opts.mx_smi == defaults.mx_smi
        && !runner.exists(&opts.mx_smi)
        && runner.exists(&opts.mx_smi_driver)
    {
        // MetaX installs mx-smi under /opt/mxdriver/bin, often not on PATH.
        opts.mx_smi = opts.mx_smi_driver.clone();
    }
    let opts = &opts;
    let mut gpu_pci = Vec::new();
    for value in &opts.gpu_pci {
        let bus = facts::normalize_bus_id(value)
            .ok_or_else(|| HostError::BadGpuPci { value: value.clone() })?;
        gpu_pci.push(bus);
    }
    // A tool the user named by path must exist; a default name that is not on PATH just means
    // that vendor is absent.
    if opts.from.is_none() {
        for (given, default) in [
            (&opts.mx_smi, &defaults.mx_smi),
            (&opts.nvidia_smi, &defaults.nvidia_smi),
            (&opts.rocm_smi, &defaults.rocm_smi),
            (&opts.numactl, &defaults.numactl),
        ] {
            if given != default && !runner.exists(given) {
                return Err(RunError::NotFound { tool: given.display().to_string() }.into());
            }
        }
    }
    let mut facts = match &opts.from {
        Some(dir) => {
            // The snapshot's own `--gpu-pci` list, plus any given now.
            let path = dir.join(snapshot::GPU_PCI);
            let saved = match snapshot::read_input(&path, snapshot::MAX_SMALL_FILE) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| snapshot::SnapshotError::NotText { path: path.clone() })?;
                    parse_gpu_pci_list(&text, &path.display().to_string())?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(snapshot::SnapshotError::Read { path, source }.into()),
            };
            for bus in saved {
                if !gpu_pci.contains(&bus) {
                    gpu_pci.push(bus);
                }
            }
            from_snapshot(dir, &gpu_pci)?
        }
        None => live(opts, runner, &gpu_pci)?,
    };
    // `probe --save` keeps the list, so replaying the snapshot needs no flag.
    facts.raw.gpu_pci =
        (!gpu_pci.is_empty()).then(|| gpu_pci.iter().map(|b| format!("{b}\n")).collect());
    facts.gpu_pci = gpu_pci;
    Ok(facts)
}

/// `gpu-pci.txt` of a snapshot: one PCI address a line; blank lines and `#` comments skipped.
/// ```text
/// # named with --gpu-pci when the snapshot was taken
/// 0000:41:01.0
/// ```
fn parse_gpu_pci_list(text: &str, file: &str) -> Result<Vec<String>, HostError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bus = facts::normalize_bus_id(line).ok_or_else(|| HostError::Parse {
            file: file.to_string(),
            line: i + 1,
            what: format!("{line:?} is not a PCI bus id (expected e.g. 0000:41:00.0)"),
        })?;
        if !out.contains(&bus) {
            out.push(bus);
        }
    }
    Ok(out)
}

type SmiParser = fn(&str) -> Result<SmiStatus, text::ParseError>;
type TopoParser = fn(&str) -> Result<GpuTopo, text::ParseError>;

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// Parses the tool outputs in `raw` into `facts`; `name` maps a snapshot file name to how
/// errors cite it (a path in a snapshot, the command line live).
fn parse_outputs(facts: &mut HostFacts, name: &dyn Fn(&str) -> String) -> Result<(), HostError> {
    let raw = facts.raw.clone();
    let mut timings = Vec::new();
    let mut time = |source: &str, parse: Duration| {
        timings.push(Timing { source: source.to_string(), tool: Duration::ZERO, parse })
    };
    if let Some(text) = &raw.numactl {
        let (r, t) = timed(|| numactl::parse(text));
        time(snapshot::NUMACTL, t);
        facts.numactl =
            Some(
                r.map_err(|e| match e.line() {
                    Some(line) => HostError::Parse {
                        file: name(snapshot::NUMACTL),
                        line,
                        what: e
                            .to_string()
                            .split_once(": ")
                            .map_or(e.to_string(), |(_, w)| w.to_string()),
                    },
                    None => {
                        HostError::Invalid { file: name(snapshot::NUMACTL), what: e.to_string() }
                    }
                })?,
            );
    }
    // The structured query beats the human table when both are there.
    let smi_sources: [(&str, &Option<String>, SmiParser); 3] = [
        (snapshot::NVIDIA_SMI_QUERY, &raw.nvidia_smi_query, nvsmi::parse_query_csv),
        (snapshot::NVIDIA_SMI, &raw.nvidia_smi, nvsmi::parse_table),
        (snapshot::MX_SMI, &raw.mx_smi, mxsmi::parse),
    ];
    for (file, text, parse) in smi_sources {
        if let Some(text) = text {
            let (r, t) = timed(|| parse(text));
            time(file, t);
            let status = r.map_err(|e| HostError::parse(&name(file), &e))?;
            if facts.smi.is_none() {
                facts.smi = Some((file.to_string(), status));
            }
        }
    }
    // What the tolerant mx-smi reading found missing (no process table, unavailable GPUs).
    if let Some(Ok((_, warnings))) = raw.mx_smi.as_deref().map(mxsmi::parse_with_warnings) {
        let file = name(snapshot::MX_SMI);
        facts.warnings.extend(warnings.into_iter().map(|w| format!("{file}: {w}")));
    }
    let topo_sources: [(&str, &Option<String>, TopoParser); 3] = [
        (snapshot::MX_SMI_TOPO, &raw.mx_smi_topo, gputopo::parse),
        (snapshot::NVIDIA_SMI_TOPO, &raw.nvidia_smi_topo, gputopo::parse),
        (snapshot::ROCM_SMI_TOPO, &raw.rocm_smi_topo, rocmsmi::parse_showtopo),
    ];
    for (file, text, parse) in topo_sources {
        if let Some(text) = text {
            let (r, t) = timed(|| parse(text));
            time(file, t);
            let topo = r.map_err(|e| HostError::parse(&name(file), &e))?;
            if facts.gpu_topo.is_none() {
                facts.gpu_topo = Some((file.to_string(), topo));
            }
        }
    }
    if let Some(text) = &raw.hwloc_xml {
        let (r, t) = timed(|| hwloc::parse_xml(text));
        time(snapshot::HWLOC_XML, t);
        facts.hwloc = Some(r.map_err(|e| HostError::Invalid {
            file: name(snapshot::HWLOC_XML),
            what: e.to_string(),
        })?);
    }
    // Tool time was recorded by the caller for live runs; merge parse time into it.
    for t in timings {
        match facts.timings.iter_mut().find(|x| x.source == t.source) {
            Some(x) => x.parse += t.parse,
            None => facts.timings.push(t),
        }
    }
    Ok(())
}

fn vendor_from_pci(m: Option<&MachineFacts>) -> Option<(Vendor, String)> {
    m?.pci_devices.iter().find_map(|d| {
        let vendor = facts::gpu_vendor(d.vendor?)?;
        d.class
            .is_some_and(sysfs::is_gpu_class)
            .then(|| (vendor, format!("PCI vendor {:#06x} at {}", d.vendor.unwrap_or(0), d.bus_id)))
    })
}

fn from_snapshot(dir: &Path, gpu_pci: &[String]) -> Result<HostFacts, HostError> {
    let raw = snapshot::load(dir)?;
    let mut facts = HostFacts { raw, ..HostFacts::default() };
    let sys_root = dir.join(snapshot::SYSFS_DIR);
    if sys_root.is_dir() {
        let (r, t) = timed(|| sysfs::read(&sys_root, gpu_pci));
        let sys = r?;
        // Kept so `probe --from A --save B` writes B's sysfs/ too.
        facts.raw.sysfs = sys.files;
        facts.sysfs = Some(sys.machine);
        facts.timings.push(Timing { source: "sysfs".into(), tool: t, parse: Duration::ZERO });
    }
    let name = |file: &str| dir.join(file).display().to_string();
    parse_outputs(&mut facts, &name)?;
    let r = &facts.raw;
    (facts.vendor, facts.vendor_evidence) = if r.mx_smi.is_some() || r.mx_smi_topo.is_some() {
        (Vendor::Metax, "mx-smi output in the snapshot".into())
    } else if r.nvidia_smi.is_some() || r.nvidia_smi_topo.is_some() || r.nvidia_smi_query.is_some()
    {
        (Vendor::Nvidia, "nvidia-smi output in the snapshot".into())
    } else if r.rocm_smi_topo.is_some() {
        (Vendor::Amd, "rocm-smi output in the snapshot".into())
    } else {
        vendor_from_pci(facts.sysfs.as_ref())
            .or_else(|| vendor_from_pci(facts.hwloc.as_ref()))
            .unwrap_or((Vendor::Other, "no GPU tool output in the snapshot".into()))
    };
    replay_mxsml(&mut facts, dir)?;
    Ok(facts)
}

/// Runs one tool and records its own time under the snapshot file name of its output.
fn run_tool(
    runner: &dyn CommandRunner,
    opts: &SourceOptions,
    facts: &mut HostFacts,
    program: &Path,
    args: &[&str],
    file: &'static str,
) -> Result<Option<String>, RunError> {
    let out = runner.run(program, args, opts.timeout)?;
    facts.timings.push(Timing { source: file.into(), tool: out.elapsed, parse: Duration::ZERO });
    Ok(Some(out.stdout))
}

fn live(
    opts: &SourceOptions,
    runner: &dyn CommandRunner,
    gpu_pci: &[String],
) -> Result<HostFacts, HostError> {
    let mut facts = HostFacts::default();
    let (r, t) = timed(|| sysfs::read(&opts.sysfs_root, gpu_pci));
    let sys = r?;
    facts.timings.push(Timing { source: "sysfs".into(), tool: t, parse: Duration::ZERO });
    facts.raw.sysfs = sys.files;
    facts.sysfs = Some(sys.machine);

    let numactl_cmd = format!("{} --hardware", opts.numactl.display());
    match run_tool(runner, opts, &mut facts, &opts.numactl, &["--hardware"], snapshot::NUMACTL) {
        Ok(out) => facts.raw.numactl = out,
        Err(e @ RunError::NotFound { .. }) => {
            facts.warnings.push(format!("{e}; NUMA nodes read from sysfs only"))
        }
        Err(RunError::Failed { detail, .. }) if detail.contains("No NUMA") => facts
            .warnings
            .push(format!("{numactl_cmd}: no NUMA available on this system; using sysfs")),
        Err(e) => return Err(e.into()),
    }

    // Vendor: the tool on PATH, the MetaX device node, or a GPU-class PCI device of the vendor.
    let pci = vendor_from_pci(facts.sysfs.as_ref());
    (facts.vendor, facts.vendor_evidence) = if runner.exists(&opts.mx_smi) {
        (Vendor::Metax, format!("{} found", opts.mx_smi.display()))
    } else if opts.dev_root.join("mxcd").exists() {
        (Vendor::Metax, format!("{} exists", opts.dev_root.join("mxcd").display()))
    } else if runner.exists(&opts.nvidia_smi) {
        (Vendor::Nvidia, format!("{} found", opts.nvidia_smi.display()))
    } else if runner.exists(&opts.rocm_smi) {
        (Vendor::Amd, format!("{} found", opts.rocm_smi.display()))
    } else if let Some((v, why)) = pci {
        (v, why)
    } else {
        (Vendor::Other, "no GPU tool and no GPU-class PCI device of a known vendor".into())
    };

    let calls: Vec<(&Path, Vec<&str>, &'static str)> = match facts.vendor {
        Vendor::Metax => {
            // `mx-smi -j` is the structured reading; the status table when it fails or is
            // not JSON (older mx-smi). Either is saved as mx-smi.txt: `mxsmi::parse` knows both.
            let json = match runner.run(&opts.mx_smi, &["-j"], opts.timeout) {
                Ok(out) if mxsmi::parse_json(&out.stdout).is_ok() => {
                    facts.timings.push(Timing {
                        source: snapshot::MX_SMI.into(),
                        tool: out.elapsed,
                        parse: Duration::ZERO,
                    });
                    facts.raw.mx_smi = Some(out.stdout);
                    true
                }
                _ => false,
            };
            let mut calls =
                vec![(opts.mx_smi.as_path(), vec!["topo", "-m"], snapshot::MX_SMI_TOPO)];
            if !json {
                calls.insert(0, (opts.mx_smi.as_path(), vec![], snapshot::MX_SMI));
            }
            calls
        }
        Vendor::Nvidia => vec![
            (&opts.nvidia_smi, nvsmi::QUERY_GPU_ARGS.to_vec(), snapshot::NVIDIA_SMI_QUERY),
            (&opts.nvidia_smi, vec![], snapshot::NVIDIA_SMI),
            (&opts.nvidia_smi, vec!["topo", "-m"], snapshot::NVIDIA_SMI_TOPO),
        ],
        Vendor::Amd => vec![(&opts.rocm_smi, vec!["--showtopo"], snapshot::ROCM_SMI_TOPO)],
        Vendor::Other => vec![],
    };
    for (program, args, file) in calls {
        match run_tool(runner, opts, &mut facts, program, &args, file) {
            Ok(out) => {
                let slot = match file {
                    snapshot::MX_SMI => &mut facts.raw.mx_smi,
                    snapshot::MX_SMI_TOPO => &mut facts.raw.mx_smi_topo,
                    snapshot::NVIDIA_SMI_QUERY => &mut facts.raw.nvidia_smi_query,
                    snapshot::NVIDIA_SMI => &mut facts.raw.nvidia_smi,
                    snapshot::NVIDIA_SMI_TOPO => &mut facts.raw.nvidia_smi_topo,
                    _ => &mut facts.raw.rocm_smi_topo,
                };
                *slot = out;
            }
            Err(e @ RunError::NotFound { .. }) => {
                facts.warnings.push(format!(
                    "{e}; GPU placement from sysfs/hwloc only ({})",
                    facts.vendor_evidence
                ));
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }

    if opts.hwloc {
        let (r, t) = timed(hwloc::live);
        match r {
            Ok((machine, xml)) => {
                facts.raw.hwloc_xml = Some(xml);
                facts.timings.push(Timing {
                    source: "hwloc".into(),
                    tool: t,
                    parse: Duration::ZERO,
                });
                facts.hwloc = Some(machine);
            }
            Err(e) => facts.warnings.push(format!("{e}; continuing without hwloc")),
        }
    }
    // The live hwloc topology is already parsed: do not parse its XML export again.
    let xml = facts.raw.hwloc_xml.take();
    let name = |file: &str| live_name(opts, file);
    parse_outputs(&mut facts, &name)?;
    facts.raw.hwloc_xml = xml;
    if facts.vendor == Vendor::Metax {
        probe_mxsml(&mut facts);
    }
    Ok(facts)
}

/// libmxsml as one more source of MetaX facts (bus id, NUMA node), cross-checked against
/// the tool's table and sysfs. A library that is not installed is no warning (most hosts);
/// one that loads but fails is.
fn probe_mxsml(facts: &mut HostFacts) {
    let start = Instant::now();
    let lib = match mxsml::Mxsml::open_default() {
        Ok(lib) => lib,
        Err(mxsml::MxsmlError::NotFound { .. }) => return,
        Err(e) => {
            facts.warnings.push(format!("{e}; MetaX facts from mx-smi and sysfs only"));
            return;
        }
    };
    match lib.probe() {
        Ok((gpus, mut warnings)) => {
            let links = match lib.links() {
                Ok(l) => Some(l),
                Err(e) => {
                    warnings.push(format!("libmxsml: {e}"));
                    None
                }
            };
            let path = lib.path().display().to_string();
            facts.timings.push(Timing {
                source: format!("libmxsml ({path})"),
                tool: start.elapsed(),
                parse: Duration::ZERO,
            });
            let record = mxsml::MxsmlRecord { library: path, gpus, links, warnings };
            // Kept in the snapshot (`probe --save`), so a replay shows the same source.
            facts.raw.mxsml_json = serde_json::to_string_pretty(&record).ok().map(|t| t + "\n");
            use_mxsml_record(facts, record, "");
        }
        Err(e) => facts.warnings.push(format!("{e}; MetaX facts from mx-smi and sysfs only")),
    }
}

/// The library's facts as a source: its warnings, the cross-check against the tool's table
/// and sysfs, and the facts under `libmxsml (<library><note>)`.
fn use_mxsml_record(facts: &mut HostFacts, record: mxsml::MxsmlRecord, note: &str) {
    facts.warnings.extend(record.warnings);
    let smi = facts.smi.as_ref().map(|(_, s)| s);
    facts.warnings.extend(cross_check_mxsml(&record.gpus, smi, facts.sysfs.as_ref()));
    facts.mxsml = Some((format!("{}{note}", record.library), record.gpus));
}

/// Replay: the library's facts a live probe recorded (`mxsml.json`), named as recorded.
fn replay_mxsml(facts: &mut HostFacts, dir: &Path) -> Result<(), HostError> {
    let Some(text) = facts.raw.mxsml_json.as_deref() else { return Ok(()) };
    let record: mxsml::MxsmlRecord =
        serde_json::from_str(text).map_err(|e| HostError::Invalid {
            file: dir.join(snapshot::MXSML_JSON).display().to_string(),
            what: format!("not a libmxsml record ({e})"),
        })?;
    use_mxsml_record(facts, record, &format!(", recorded in {}", snapshot::MXSML_JSON));
    Ok(())
}

/// Pure: where libmxsml disagrees with the tool's table (bus id of a GPU index) or with sysfs
/// (the NUMA node of a bus id), one line each.
fn cross_check_mxsml(
    lib: &[mxsml::GpuFacts],
    smi: Option<&SmiStatus>,
    sysfs: Option<&MachineFacts>,
) -> Vec<String> {
    let mut out = Vec::new();
    for g in lib {
        let Some(bus) = &g.bus_id else { continue };
        if let Some(other) = smi
            .and_then(|s| s.gpus.iter().find(|t| t.index == g.index))
            .and_then(|t| t.bus_id.as_ref())
            .filter(|b| *b != bus)
        {
            out.push(format!("libmxsml puts GPU {} at {bus}, mx-smi at {other}", g.index));
        }
        let dev = sysfs.and_then(|m| m.pci_devices.iter().find(|d| &d.bus_id == bus));
        match (dev.and_then(|d| d.numa_node), g.numa_nodes.as_slice()) {
            (Some(n), nodes) if !nodes.is_empty() && !nodes.contains(&n) => out.push(format!(
                "libmxsml gives GPU {} ({bus}) NUMA node {nodes:?}, sysfs numa_node {n}",
                g.index
            )),
            (None, [n]) if dev.is_some() => out.push(format!(
                "sysfs has no NUMA node for GPU {} ({bus}); libmxsml says node {n}",
                g.index
            )),
            _ => {}
        }
    }
    out
}

/// How a live tool output is cited in errors: the command line that produced it.
fn live_name(opts: &SourceOptions, file: &str) -> String {
    let (tool, args) = match file {
        snapshot::NUMACTL => (&opts.numactl, "--hardware"),
        snapshot::MX_SMI => (&opts.mx_smi, ""),
        snapshot::MX_SMI_TOPO => (&opts.mx_smi, "topo -m"),
        snapshot::NVIDIA_SMI => (&opts.nvidia_smi, ""),
        snapshot::NVIDIA_SMI_TOPO => (&opts.nvidia_smi, "topo -m"),
        snapshot::NVIDIA_SMI_QUERY => (&opts.nvidia_smi, "--query-gpu"),
        snapshot::ROCM_SMI_TOPO => (&opts.rocm_smi, "--showtopo"),
        other => return other.to_string(),
    };
    format!("{} {}", tool.display(), args).trim_end().to_string()
}

#[cfg(test)]
mod mxsml_tests {
    use super::*;
    use crate::host::facts::{GpuStatus, PciDeviceFacts};

    #[test]
    fn cross_check_names_disagreements() {
        let lib = vec![
            mxsml::GpuFacts {
                index: 0,
                bus_id: Some("0000:0e:00.0".into()),
                numa_nodes: vec![1],
                ..Default::default()
            },
            mxsml::GpuFacts {
                index: 1,
                bus_id: Some("0000:0f:00.0".into()),
                numa_nodes: vec![0],
                ..Default::default()
            },
        ];
        let smi = SmiStatus {
            gpus: vec![
                GpuStatus { index: 0, bus_id: Some("0000:0e:00.0".into()), ..Default::default() },
                GpuStatus { index: 1, bus_id: Some("0000:10:00.0".into()), ..Default::default() },
            ],
            ..Default::default()
        };
        let dev = |bus: &str, numa| PciDeviceFacts {
            bus_id: bus.into(),
            numa_node: numa,
            ..Default::default()
        };
        let sys = MachineFacts {
            nodes: vec![],
            pci_devices: vec![dev("0000:0e:00.0", Some(0)), dev("0000:0f:00.0", None)],
            ..Default::default()
        };
        assert_eq!(
            cross_check_mxsml(&lib, Some(&smi), Some(&sys)),
            [
                "libmxsml gives GPU 0 (0000:0e:00.0) NUMA node [1], sysfs numa_node 0",
                "libmxsml puts GPU 1 at 0000:0f:00.0, mx-smi at 0000:10:00.0",
                "sysfs has no NUMA node for GPU 1 (0000:0f:00.0); libmxsml says node 0",
            ]
        );
        assert!(cross_check_mxsml(&lib[..1], None, None).is_empty());
    }
}
