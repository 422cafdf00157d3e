//! Parsers for the GPU tools' *sampling* outputs: `nvidia-smi --query-gpu/--query-compute-apps
//! --format=csv` and the `mx-smi` status table. Plain functions over `&str`; they never run a
//! tool and never panic. Columns are found by header name, never by position.
//!
//! These exist so the monitor works before the probe parsers (`crate::host::mxsmi`,
//! `crate::host::nvsmi`) land; they produce the same `SmiStatus` records, so the sampler can
//! switch to those parsers without any change elsewhere.

use std::collections::HashMap;

use crate::host::facts::{normalize_bus_id, GpuProcess, GpuStatus, SmiStatus};

/// The `--query-gpu` fields the sampler asks for, in this order.
pub const NVIDIA_QUERY_GPU: &str =
    "index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw";
/// The `--query-compute-apps` fields the sampler asks for.
pub const NVIDIA_QUERY_APPS: &str = "gpu_bus_id,pid,process_name,used_gpu_memory";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("{tool} output, line {line}: {message}: {text:?}")]
    Line { tool: &'static str, line: usize, message: String, text: String },
    #[error("{tool} output: {message}")]
    Whole { tool: &'static str, message: String },
}

fn line_err(tool: &'static str, line: usize, message: &str, text: &str) -> ParseError {
    let text: String = text.chars().take(120).collect();
    ParseError::Line { tool, line, message: message.to_string(), text }
}

/// `81559 MiB` -> 81559; `[N/A]`, `[Not Supported]` -> None.
fn number(cell: &str) -> Option<f64> {
    let t = cell.trim();
    let t = t
        .trim_end_matches("MiB")
        .trim_end_matches('%')
        .trim_end_matches('W')
        .trim_end_matches('C')
        .trim();
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Normalises a CSV header cell: `memory.used [MiB]` -> `memory.used`.
fn header_key(cell: &str) -> String {
    cell.split('[').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Splits CSV into (1-based line number, cells) rows, skipping blank lines.
fn csv_rows(text: &str) -> Vec<(usize, Vec<String>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .trim(csv::Trim::All)
                .flexible(true)
                .from_reader(l.as_bytes());
            let cells = reader
                .records()
                .next()
                .and_then(|r| r.ok())
                .map(|r| r.iter().map(str::to_string).collect())
                .unwrap_or_default();
            (i + 1, cells)
        })
        .collect()
}

/// Parses `nvidia-smi --query-gpu=<NVIDIA_QUERY_GPU> --format=csv` (with the header line; the
/// `noheader` form is read by position in `NVIDIA_QUERY_GPU` order). Sample:
///
/// ```text
/// index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]
/// 0, NVIDIA H100 80GB HBM3, 00000000:00:06.0, 81559 MiB, 21653 MiB, 100 %, 62, 685.35 W
/// ```
pub fn parse_nvidia_query_gpu(text: &str) -> Result<Vec<GpuStatus>, ParseError> {
    const TOOL: &str = "nvidia-smi --query-gpu";
    let rows = csv_rows(text);
    let Some((_, first)) = rows.first() else {
        return Err(ParseError::Whole { tool: TOOL, message: "empty output".into() });
    };
    let has_header = first.first().map(|c| header_key(c) == "index").unwrap_or(false);
    let names: Vec<String> = if has_header {
        first.iter().map(|c| header_key(c)).collect()
    } else {
        NVIDIA_QUERY_GPU.split(',').map(str::to_string).collect()
    };
    let col: HashMap<&str, usize> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let Some(&index_col) = col.get("index") else {
        return Err(ParseError::Whole { tool: TOOL, message: "no `index` column".into() });
    };
    let body = if has_header { &rows[1..] } else { &rows[..] };
    let mut gpus = Vec::new();
    for (line, cells) in body {
        let raw = text.lines().nth(line - 1).unwrap_or("");
        let cell = |name: &str| col.get(name).and_then(|&i| cells.get(i)).map(String::as_str);
        let index = cells
            .get(index_col)
            .and_then(|c| c.parse::<u32>().ok())
            .ok_or_else(|| line_err(TOOL, *line, "no GPU index", raw))?;
        if cells.len() < names.len() {
            return Err(line_err(TOOL, *line, "row has fewer cells than the header", raw));
        }
        gpus.push(GpuStatus {
            index,
            name: cell("name").map(str::to_string).filter(|n| !n.is_empty()),
            bus_id: cell("pci.bus_id").and_then(normalize_bus_id),
            temperature_c: cell("temperature.gpu").and_then(number),
            power_w: cell("power.draw").and_then(number),
            memory_used_mib: cell("memory.used").and_then(number).map(|v| v as u64),
            memory_total_mib: cell("memory.total").and_then(number).map(|v| v as u64),
            utilization_pct: cell("utilization.gpu").and_then(number),
            line: *line,
        });
    }
    if gpus.is_empty() {
        return Err(ParseError::Whole { tool: TOOL, message: "no GPU rows".into() });
    }
    Ok(gpus)
}

/// Parses `nvidia-smi --query-compute-apps=<NVIDIA_QUERY_APPS> --format=csv`; GPUs are named
/// by bus id there, so `gpus` maps them back to indexes. An empty table (header only) is fine.
///
/// ```text
/// gpu_bus_id, pid, process_name, used_gpu_memory [MiB]
/// 00000000:00:06.0, 584, python3, 21644 MiB
/// ```
pub fn parse_nvidia_apps(text: &str, gpus: &[GpuStatus]) -> Result<Vec<GpuProcess>, ParseError> {
    const TOOL: &str = "nvidia-smi --query-compute-apps";
    let rows = csv_rows(text);
    let Some((_, first)) = rows.first() else { return Ok(Vec::new()) };
    let has_header = first.first().map(|c| header_key(c) == "gpu_bus_id").unwrap_or(false);
    let names: Vec<String> = if has_header {
        first.iter().map(|c| header_key(c)).collect()
    } else {
        NVIDIA_QUERY_APPS.split(',').map(str::to_string).collect()
    };
    let col: HashMap<&str, usize> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let body = if has_header { &rows[1..] } else { &rows[..] };
    let mut out = Vec::new();
    for (line, cells) in body {
        let raw = text.lines().nth(line - 1).unwrap_or("");
        let cell = |name: &str| col.get(name).and_then(|&i| cells.get(i)).map(String::as_str);
        let bus = cell("gpu_bus_id").and_then(normalize_bus_id);
        let gpu = bus
            .as_deref()
            .and_then(|b| gpus.iter().find(|g| g.bus_id.as_deref() == Some(b)))
            .map(|g| g.index)
            .ok_or_else(|| line_err(TOOL, *line, "bus id of no listed GPU", raw))?;
        let pid = cell("pid")
            .and_then(|p| p.parse::<u32>().ok())
            .ok_or_else(|| line_err(TOOL, *line, "no pid", raw))?;
        out.push(GpuProcess {
            gpu,
            pid,
            name: cell("process_name").unwrap_or("").to_string(),
            memory_mib: cell("used_gpu_memory").and_then(number).map(|v| v as u64),
            line: *line,
        });
    }
    Ok(out)
}

/// Parses the `mx-smi` status table (the 2.1.6 `Temp Power` layout and the 2.2.x `Board Name`
/// layouts): two table lines per GPU, then the process table. Sample (2.1.6):
///
/// ```text
/// | MX-SMI 2.1.6                        Kernel Mode Driver Version: 2.5.014         |
/// | 0           MXC500                 | 0000:05:00.0        | 36%                  |
/// | 54C         122W                   | 60278/65536 MiB     |                      |
/// ...
/// |  GPU                    PID         Process Name                 GPU Memory     |
/// |  0                   343683         python                       59328          |
/// ```
pub fn parse_mxsmi(text: &str) -> Result<SmiStatus, ParseError> {
    const TOOL: &str = "mx-smi";
    let bus_re = regex::Regex::new(r"\b[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b")
        .expect("static regex");
    let mem_re = regex::Regex::new(r"(\d+)\s*/\s*(\d+)\s*MiB").expect("static regex");
    let temp_re = regex::Regex::new(r"\b(\d+(?:\.\d+)?)C\b").expect("static regex");
    let power_re = regex::Regex::new(r"\b(\d+(?:\.\d+)?)\s*W\b").expect("static regex");
    let util_re = regex::Regex::new(r"\b(\d+(?:\.\d+)?)\s*%").expect("static regex");
    let version_re = regex::Regex::new(r"MX-SMI\s+(\S+)").expect("static regex");
    let driver_re = regex::Regex::new(r"Driver Version:\s*(\S+)").expect("static regex");

    let lines: Vec<&str> = text.lines().collect();
    let mut status = SmiStatus::default();
    let mut in_processes = false;
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.trim();
        if let Some(c) = version_re.captures(line) {
            status.tool_version = Some(format!("MX-SMI {}", &c[1]));
        }
        if let Some(c) = driver_re.captures(line) {
            status.driver_version = Some(c[1].to_string());
        }
        if line.contains("Process:") {
            in_processes = true;
            i += 1;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect::<Vec<_>>();
        if in_processes {
            // `|  0   343683   python   59328  |`; also `no process found` lines.
            let toks: Vec<&str> =
                cells.first().map(|c| c.split_whitespace().collect()).unwrap_or_default();
            if toks.len() >= 3 && line.starts_with('|') {
                if let (Ok(gpu), Ok(pid)) = (toks[0].parse::<u32>(), toks[1].parse::<u32>()) {
                    let last = toks[toks.len() - 1];
                    let (memory_mib, name_end) = match last.trim_end_matches("MiB").parse::<u64>() {
                        Ok(v) if toks.len() >= 4 => (Some(v), toks.len() - 1),
                        _ if last.eq_ignore_ascii_case("N/A") => (None, toks.len() - 1),
                        _ => (None, toks.len()),
                    };
                    status.processes.push(GpuProcess {
                        gpu,
                        pid,
                        name: toks[2..name_end].join(" "),
                        memory_mib,
                        line: i + 1,
                    });
                }
            }
            i += 1;
            continue;
        }
        // A GPU's first row: a first cell that begins with its index, and a bus id cell.
        let first_tok = cells.first().and_then(|c| c.split_whitespace().next());
        let index = first_tok.and_then(|t| t.parse::<u32>().ok());
        if let (Some(index), true, true) = (index, cells.len() >= 3, bus_re.is_match(line)) {
            let next = lines.get(i + 1).copied().unwrap_or("");
            if !mem_re.is_match(next) {
                return Err(line_err(TOOL, i + 2, "expected the GPU's memory row", next));
            }
            let next_cells: Vec<&str> =
                next.trim().trim_matches('|').split('|').map(str::trim).collect();
            let name_cell = cells[0];
            let name: String = name_cell.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
            let mem = mem_re.captures(next);
            // Utilization is the first `NN%` of the last column of the first row.
            let util =
                cells.last().and_then(|c| util_re.captures(c)).and_then(|c| c[1].parse().ok());
            let temp =
                next_cells.iter().find_map(|c| temp_re.captures(c)).and_then(|c| c[1].parse().ok());
            // `122W` (2.1.6) or `57W / 350W` (2.2.x): the first figure is the draw.
            let power = next_cells
                .iter()
                .find_map(|c| power_re.captures(c))
                .and_then(|c| c[1].parse().ok());
            status.gpus.push(GpuStatus {
                index,
                name: Some(name).filter(|n| !n.is_empty()),
                bus_id: bus_re.find(line).and_then(|m| normalize_bus_id(m.as_str())),
                temperature_c: temp,
                power_w: power,
                memory_used_mib: mem.as_ref().and_then(|c| c[1].parse().ok()),
                memory_total_mib: mem.as_ref().and_then(|c| c[2].parse().ok()),
                utilization_pct: util,
                line: i + 1,
            });
            i += 2;
            continue;
        }
        i += 1;
    }
    if status.gpus.is_empty() {
        let first = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
        return Err(line_err(
            TOOL,
            first + 1,
            "no GPU rows found (is this mx-smi's status table?)",
            lines.get(first).copied().unwrap_or(""),
        ));
    }
    Ok(status)
}

/// Parses the two nvidia-smi CSV outputs into one `SmiStatus`.
pub fn parse_nvidia(query_gpu: &str, apps: &str) -> Result<SmiStatus, ParseError> {
    let gpus = parse_nvidia_query_gpu(query_gpu)?;
    let processes = parse_nvidia_apps(apps, &gpus)?;
    Ok(SmiStatus { tool_version: None, driver_version: None, gpus, processes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q_LOAD: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-query.load.csv");
    const Q_NOHDR: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-query.noheader.csv");
    const A_LOAD: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-apps.load.csv");
    const A_IDLE: &str =
        include_str!("../../testdata/captures/h100-2gpu-vm/nvidia-smi-apps.idle.csv");
    const MX_IDLE: &str = include_str!("../../testdata/mx-smi/seed-mx-smi.idle.txt");
    const MX_LOAD: &str = include_str!("../../testdata/mx-smi/seed-mx-smi.load.qwen72b.txt");
    const MX_229: &str =
        include_str!("../../testdata/mx-smi/ms-swift-8xc500-2.2.9-board-layout.txt");
    const MX_224: &str = include_str!("../../testdata/mx-smi/ernie-8xc550-2.2.4-gpu-state.txt");

    #[test]
    fn nvidia_h100_load_capture() {
        let s = parse_nvidia(Q_LOAD, A_LOAD).unwrap();
        assert_eq!(s.gpus.len(), 2);
        let g0 = &s.gpus[0];
        assert_eq!(g0.bus_id.as_deref(), Some("0000:00:06.0"));
        assert_eq!(g0.memory_used_mib, Some(21653));
        assert_eq!(g0.memory_total_mib, Some(81559));
        assert_eq!(g0.utilization_pct, Some(100.0));
        assert_eq!(g0.power_w, Some(685.35));
        assert_eq!(g0.temperature_c, Some(62.0));
        assert_eq!(s.processes.len(), 2);
        assert_eq!((s.processes[1].gpu, s.processes[1].pid), (1, 585));
        assert_eq!(s.processes[1].memory_mib, Some(4682));
        assert!(parse_nvidia_apps(A_IDLE, &s.gpus).unwrap().is_empty());
    }

    #[test]
    fn nvidia_noheader_is_read_in_query_order() {
        let g = parse_nvidia_query_gpu(Q_NOHDR).unwrap();
        assert_eq!(g[1].index, 1);
        assert_eq!(g[1].memory_total_mib, Some(81559));
        assert_eq!(g[1].power_w, Some(73.15));
    }

    #[test]
    fn nvidia_not_supported_cells_are_none() {
        let q = "index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n\
                 0, X, 00000000:01:00.0, 100 MiB, 5 MiB, [N/A], 40, [Not Supported]\n";
        let g = parse_nvidia_query_gpu(q).unwrap();
        assert_eq!(g[0].utilization_pct, None);
        assert_eq!(g[0].power_w, None);
    }

    #[test]
    fn nvidia_garbage_is_an_error_with_line() {
        let err = parse_nvidia_query_gpu("index, name\nzz, oops\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_nvidia_query_gpu("").is_err());
        let gpus = parse_nvidia_query_gpu(Q_LOAD).unwrap();
        let err = parse_nvidia_apps("gpu_bus_id, pid\n00000000:99:00.0, 1\n", &gpus).unwrap_err();
        assert!(err.to_string().contains("bus id of no listed GPU"), "{err}");
    }

    #[test]
    fn mxsmi_seed_idle_and_load() {
        let idle = parse_mxsmi(MX_IDLE).unwrap();
        assert_eq!(idle.gpus.len(), 4);
        assert_eq!(idle.tool_version.as_deref(), Some("MX-SMI 2.1.6"));
        let load = parse_mxsmi(MX_LOAD).unwrap();
        let g0 = &load.gpus[0];
        assert_eq!(g0.bus_id.as_deref(), Some("0000:05:00.0"));
        assert_eq!(g0.name.as_deref(), Some("MXC500"));
        assert_eq!((g0.memory_used_mib, g0.memory_total_mib), (Some(60278), Some(65536)));
        assert_eq!(g0.utilization_pct, Some(36.0));
        assert_eq!(g0.temperature_c, Some(54.0));
        assert_eq!(g0.power_w, Some(122.0));
        assert_eq!(load.gpus[2].utilization_pct, Some(24.0));
        assert_eq!(load.processes.len(), 4);
        assert_eq!(load.processes[1].name, "ray::RayWorkerW");
        assert_eq!(load.processes[1].pid, 350950);
        assert_eq!(load.processes[1].memory_mib, Some(58880));
    }

    #[test]
    fn mxsmi_newer_layouts() {
        let s = parse_mxsmi(MX_229).unwrap();
        assert_eq!(s.gpus.len(), 8);
        assert_eq!(s.gpus[7].bus_id.as_deref(), Some("0000:38:00.0"));
        assert_eq!(s.gpus[0].name.as_deref(), Some("MetaX C500"));
        assert_eq!(s.gpus[0].power_w, Some(57.0));
        assert_eq!(s.gpus[0].temperature_c, Some(35.0));
        assert_eq!(s.gpus[0].memory_used_mib, Some(826));
        assert_eq!(s.gpus[0].utilization_pct, Some(0.0));
        let s = parse_mxsmi(MX_224).unwrap();
        assert_eq!(s.gpus.len(), 8);
        assert_eq!(s.gpus[1].bus_id.as_deref(), Some("0000:34:00.0"));
    }

    #[test]
    fn mxsmi_garbage_is_an_error() {
        let err = parse_mxsmi("segmentation fault\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_mxsmi("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,400}") {
            let _ = parse_mxsmi(&s);
            let _ = parse_nvidia_query_gpu(&s);
            let _ = parse_nvidia(&s, &s);
        }
    }
}
