//! Parsers for `nvidia-smi` output: the status table, the `--query-gpu` CSV and the
//! `--query-compute-apps` CSV. The link matrix (`nvidia-smi topo -m`) is `crate::host::gputopo`.
//! This module does not run `nvidia-smi`; the runner uses [`QUERY_GPU_ARGS`] and
//! [`QUERY_APPS_ARGS`] so that what is asked and what is parsed cannot drift apart.
//!
//! Status table (driver 575):
//! ```text
//! | NVIDIA-SMI 575.51.03              Driver Version: 575.51.03      CUDA Version: 12.9     |
//! |-----------------------------------------+------------------------+----------------------+
//! | GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
//! | Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
//! |                                         |                        |               MIG M. |
//! |=========================================+========================+======================|
//! |   0  NVIDIA RTX 6000 Ada Gene...    Off |   00000000:01:00.0 Off |                  Off |
//! | 30%   31C    P8              5W /  300W |       2MiB /  49140MiB |      0%      Default |
//! |                                         |                        |                  N/A |
//! +-----------------------------------------+------------------------+----------------------+
//! | Processes:                                                                              |
//! |  GPU   GI   CI              PID   Type   Process name                        GPU Memory |
//! |        ID   ID                                                               Usage      |
//! |=========================================================================================|
//! |  No running processes found                                                             |
//! ```
//!
//! `--query-gpu=index,name,pci.bus_id,... --format=csv`:
//! ```text
//! index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]
//! 0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 81559 MiB, 0 MiB, 0 %, 31, 69.45 W
//! ```
//! (with `noheader` the columns are taken in [`QUERY_GPU_FIELDS`] order).

use std::collections::HashMap;

use super::facts::{normalize_bus_id, GpuProcess, GpuStatus, SmiStatus};
use super::mxsmi::{mib, parse_status_table};
pub use super::text::ParseError;
use super::text::{is_not_available, number_with_unit};

/// Fields of `nvidia-smi --query-gpu`, in the order the runner asks for them.
pub const QUERY_GPU_FIELDS: &str =
    "index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw";
/// Full argument list for the GPU query.
pub const QUERY_GPU_ARGS: [&str; 2] =
    ["--query-gpu=index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw", "--format=csv"];
/// Fields of `nvidia-smi --query-compute-apps`, in the order the runner asks for them.
pub const QUERY_APPS_FIELDS: &str = "gpu_bus_id,pid,process_name,used_memory";
/// Full argument list for the compute-apps query.
pub const QUERY_APPS_ARGS: [&str; 2] =
    ["--query-compute-apps=gpu_bus_id,pid,process_name,used_memory", "--format=csv"];

/// Parses the `nvidia-smi` status table (no arguments): GPU records and the process table.
pub fn parse_table(text: &str) -> Result<SmiStatus, ParseError> {
    parse_status_table("nvidia-smi", text)
}

const QTOOL: &str = "nvidia-smi --query-gpu";
const ATOOL: &str = "nvidia-smi --query-compute-apps";

/// One CSV record: values by normalised column name (`memory.total [MiB]` -> `memory.total`).
struct CsvRow {
    line: usize,
    values: HashMap<String, String>,
}

/// Reads an `nvidia-smi --format=csv` answer. The header is recognised by naming at least one
/// of `default_fields`; without one (`noheader`) the columns are `default_fields` in order.
fn read_csv(
    tool: &'static str,
    text: &str,
    default_fields: &str,
) -> Result<Vec<CsvRow>, ParseError> {
    let cleaned: String =
        super::text::clean_lines(text).into_iter().map(|l| l.text + "\n").collect();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(cleaned.as_bytes());
    let defaults: Vec<String> = default_fields.split(',').map(str::to_string).collect();
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(1, |p| p.line() as usize);
            ParseError::new(tool, line, "", format!("CSV ({e})"))
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let cols = header.get_or_insert_with(|| {
            let names: Vec<String> = rec.iter().map(normalise_column).collect();
            if names.iter().any(|n| defaults.contains(n)) {
                names
            } else {
                Vec::new()
            }
        });
        if cols.is_empty() {
            *cols = defaults.clone();
        } else if rec.iter().map(normalise_column).collect::<Vec<_>>() == *cols {
            continue;
        }
        let joined = rec.iter().collect::<Vec<_>>().join(", ");
        if rec.len() != cols.len() {
            return Err(ParseError::new(
                tool,
                line,
                &joined,
                format!(
                    "{} comma-separated values as in the header, got {}",
                    cols.len(),
                    rec.len()
                ),
            ));
        }
        let values = cols.iter().cloned().zip(rec.iter().map(str::to_string)).collect();
        rows.push(CsvRow { line, values });
    }
    Ok(rows)
}

/// `memory.total [MiB]` -> `memory.total`; `pci.bus_id` stays; lowercase.
fn normalise_column(name: &str) -> String {
    let n = name.split('[').next().unwrap_or(name).trim().to_ascii_lowercase();
    match n.as_str() {
        "pci.busid" => "pci.bus_id".into(),
        "gpu_busid" => "gpu_bus_id".into(),
        // Asked for as `used_memory`, printed in the header as `used_gpu_memory` (driver 580).
        "used_gpu_memory" => "used_memory".into(),
        _ => n,
    }
}

fn optional_number(
    tool: &'static str,
    row: &CsvRow,
    col: &str,
    units: &[&str],
) -> Result<Option<f64>, ParseError> {
    match row.values.get(col) {
        None => Ok(None),
        Some(v) if is_not_available(v) => Ok(None),
        Some(v) => number_with_unit(v, units).map(Some).ok_or_else(|| {
            ParseError::new(tool, row.line, v, format!("a number for {col} (or [N/A])"))
        }),
    }
}

/// Parses `nvidia-smi --query-gpu=<QUERY_GPU_FIELDS> --format=csv` (with or without header and
/// units, columns in any order, optional columns missing, `[N/A]`/`[Not Supported]` values).
/// `index` is required.
pub fn parse_query_csv(text: &str) -> Result<SmiStatus, ParseError> {
    let rows = read_csv(QTOOL, text, QUERY_GPU_FIELDS)?;
    if rows.is_empty() {
        let lines = super::text::clean_lines(text);
        return Err(ParseError::at_end(QTOOL, &lines, "one CSV row per GPU"));
    }
    let mut status = SmiStatus::default();
    for row in &rows {
        let index = row
            .values
            .get("index")
            .ok_or_else(|| ParseError::new(QTOOL, row.line, "", "an index column"))?;
        let index = index
            .parse::<u32>()
            .map_err(|_| ParseError::new(QTOOL, row.line, index, "a GPU index (a number)"))?;
        let bus_id = match row.values.get("pci.bus_id") {
            Some(v) if !is_not_available(v) => Some(normalize_bus_id(v).ok_or_else(|| {
                ParseError::new(QTOOL, row.line, v, "a PCI bus id like \"00000000:18:00.0\"")
            })?),
            _ => None,
        };
        let mem = |col: &str| -> Result<Option<u64>, ParseError> {
            match row.values.get(col) {
                None => Ok(None),
                Some(v) if is_not_available(v) => Ok(None),
                Some(v) => mib(v).map(Some).ok_or_else(|| {
                    ParseError::new(
                        QTOOL,
                        row.line,
                        v,
                        format!("a size like \"81559 MiB\" for {col}"),
                    )
                }),
            }
        };
        status.gpus.push(GpuStatus {
            index,
            name: row.values.get("name").filter(|v| !is_not_available(v)).cloned(),
            bus_id,
            temperature_c: optional_number(QTOOL, row, "temperature.gpu", &["C"])?,
            power_w: optional_number(QTOOL, row, "power.draw", &["W"])?,
            memory_used_mib: mem("memory.used")?,
            memory_total_mib: mem("memory.total")?,
            utilization_pct: optional_number(QTOOL, row, "utilization.gpu", &["%"])?,
            line: row.line,
        });
    }
    Ok(status)
}

/// A process from `--query-compute-apps`: the CSV names the GPU by bus id only, so the index
/// is resolved against the GPU query with [`resolve_apps`].
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeApp {
    /// Normalised (`0000:18:00.0`).
    pub bus_id: String,
    pub pid: u32,
    pub name: String,
    pub memory_mib: Option<u64>,
    pub line: usize,
}

/// Parses `nvidia-smi --query-compute-apps=<QUERY_APPS_FIELDS> --format=csv`. No processes is
/// a header alone (or nothing), which gives an empty list.
pub fn parse_apps_csv(text: &str) -> Result<Vec<ComputeApp>, ParseError> {
    let mut apps = Vec::new();
    for row in read_csv(ATOOL, text, QUERY_APPS_FIELDS)? {
        let get = |c: &str| {
            row.values
                .get(c)
                .map(String::as_str)
                .ok_or_else(|| ParseError::new(ATOOL, row.line, "", format!("a {c} column")))
        };
        let bus = get("gpu_bus_id")?;
        let bus_id = normalize_bus_id(bus).ok_or_else(|| {
            ParseError::new(ATOOL, row.line, bus, "a PCI bus id like \"00000000:18:00.0\"")
        })?;
        let pid = get("pid")?;
        let pid = pid
            .parse::<u32>()
            .map_err(|_| ParseError::new(ATOOL, row.line, pid, "a numeric pid"))?;
        let memory_mib = match row.values.get("used_memory") {
            Some(v) if !is_not_available(v) => Some(mib(v).ok_or_else(|| {
                ParseError::new(ATOOL, row.line, v, "a size like \"1234 MiB\" for used_memory")
            })?),
            _ => None,
        };
        let name = row.values.get("process_name").cloned().unwrap_or_default();
        apps.push(ComputeApp { bus_id, pid, name, memory_mib, line: row.line });
    }
    Ok(apps)
}

/// Gives each app the index of the GPU with its bus id. An app on a bus id that no GPU has is
/// an error (the two queries disagree, e.g. a GPU fell off the bus between them).
pub fn resolve_apps(
    apps: &[ComputeApp],
    gpus: &[GpuStatus],
) -> Result<Vec<GpuProcess>, ParseError> {
    apps.iter()
        .map(|a| {
            let gpu = gpus
                .iter()
                .find(|g| g.bus_id.as_deref() == Some(a.bus_id.as_str()))
                .ok_or_else(|| {
                    ParseError::new(
                        ATOOL,
                        a.line,
                        &a.bus_id,
                        "the bus id of a GPU in the --query-gpu answer",
                    )
                })?;
            Ok(GpuProcess {
                gpu: gpu.index,
                pid: a.pid,
                name: a.name.clone(),
                memory_mib: a.memory_mib,
                line: a.line,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_match_fields() {
        assert_eq!(QUERY_GPU_ARGS[0], format!("--query-gpu={QUERY_GPU_FIELDS}"));
        assert_eq!(QUERY_APPS_ARGS[0], format!("--query-compute-apps={QUERY_APPS_FIELDS}"));
    }
}
