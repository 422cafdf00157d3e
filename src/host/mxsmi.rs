//! Parser for the `mx-smi` status table (MetaX GPUs), in the three layouts seen in the field,
//! all read by header names, never by byte positions:
//!
//! 2.1.6 (the seed host):
//! ```text
//! | MX-SMI 2.1.6                        Kernel Mode Driver Version: 2.5.014         |
//! |------------------------------------+---------------------+----------------------+
//! | GPU         NAME                   | Bus-id              | GPU-Util             |
//! | Temp        Power                  | Memory-Usage        |                      |
//! |====================================+=====================+======================|
//! | 0           MXC500                 | 0000:05:00.0        | 0%                   |
//! | 51C         71W                    | 60982/65536 MiB     |                      |
//! +------------------------------------+---------------------+----------------------+
//! ```
//! 2.2.4 adds a `GPU-State` cell and prints `Pwr:Usage/Cap` (`53W / 450W`); 2.2.9 has four
//! columns:
//! ```text
//! | Board       Name | GPU   Persist-M | Bus-id              | GPU-Util      sGPU-M |
//! | Pwr:Usage/Cap    | Temp       Perf | Memory-Usage        | GPU-State            |
//! |==================+=================+=====================+======================|
//! | 0     MetaX C500 | 0           Off | 0000:0e:00.0        | 0%          Disabled |
//! | 57W / 350W       | 35C          P0 | 826/65536 MiB       | Available            |
//! ```
//! followed in every version by the process table (`GPU  PID  Process Name  GPU Memory
//! Usage(MiB)`, or `no process found`).
//!
//! The same box-table reading serves `nvidia-smi` (see `crate::host::nvsmi`), whose layout
//! differs only in names. `parse_json` reads `mx-smi -j`. This module does not run `mx-smi`.

use std::sync::LazyLock;

use regex::Regex;

use super::facts::{normalize_bus_id, GpuProcess, GpuStatus, SmiStatus};
pub use super::text::ParseError;
use super::text::{
    clean_lines, number_with_unit, parse_box_processes, parse_box_records, BoxRecord, Line,
};

const TOOL: &str = "mx-smi";

/// Parses `mx-smi` (no arguments) output: GPU records and the process table.
pub fn parse(text: &str) -> Result<SmiStatus, ParseError> {
    parse_status_table(TOOL, text)
}

static TOOL_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(MX-SMI|NVIDIA-SMI)\s+([0-9][0-9A-Za-z.\-]*)|mx-smi\s+version:\s*([0-9][0-9A-Za-z.\-]*)")
        .unwrap()
});
static DRIVER_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:Kernel Mode )?Driver Version:\s*([0-9][0-9A-Za-z.\-]*)").unwrap()
});

/// Reads a box-drawn SMI status table (`mx-smi`, `nvidia-smi`) whose header names fields
/// `GPU`, `Name`, `Bus-id`, `Temp`, `Power` or `Pwr:Usage/Cap`, `Memory-Usage`, `GPU-Util`.
pub(crate) fn parse_status_table(tool: &'static str, text: &str) -> Result<SmiStatus, ParseError> {
    let lines = clean_lines(text);
    if lines.iter().all(|l| l.text.trim().is_empty()) {
        return Err(ParseError::at_end(tool, &lines, format!("{tool} status output")));
    }
    let mut status = SmiStatus::default();
    for l in &lines {
        if status.tool_version.is_none() {
            if let Some(c) = TOOL_VERSION.captures(&l.text) {
                status.tool_version = match (c.get(1), c.get(2), c.get(3)) {
                    (Some(name), Some(v), _) => Some(format!("{} {}", name.as_str(), v.as_str())),
                    (_, _, Some(v)) => Some(format!("MX-SMI {}", v.as_str())),
                    _ => None,
                };
            }
        }
        if status.driver_version.is_none() {
            if let Some(c) = DRIVER_VERSION.captures(&l.text) {
                status.driver_version = Some(c[1].to_string());
            }
        }
    }
    let (records, next) = parse_box_records(tool, &lines, "bus-id")?;
    for rec in &records {
        status.gpus.push(gpu_from_record(tool, &lines, rec)?);
    }
    let rows = parse_box_processes(tool, &lines, next)?.ok_or_else(|| {
        ParseError::at_end(
            tool,
            &lines,
            "the process table after the GPU table (output truncated?)",
        )
    })?;
    for row in rows {
        let found = || row.fields.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ");
        let gpu =
            row.get(&["gpu"]).and_then(|v| v.trim().parse::<u32>().ok()).ok_or_else(|| {
                ParseError::new(tool, row.line, &found(), "a process row starting with a GPU index")
            })?;
        let pid =
            row.get(&["pid"]).and_then(|v| v.trim().parse::<u32>().ok()).ok_or_else(|| {
                ParseError::new(tool, row.line, &found(), "a process row with a numeric PID")
            })?;
        let name = row.get(&["process name"]).unwrap_or_default().to_string();
        // Drivers before ~470 put "GPU Memory" on the title row and "Usage" below it.
        let memory_mib = match row.get(&["gpu memory", "gpu memory usage", "usage"]) {
            None => None,
            Some(v) if super::text::is_not_available(v) => None,
            Some(v) => Some(mib(v).ok_or_else(|| {
                ParseError::new(
                    tool,
                    row.line,
                    v,
                    "a process memory size like \"59584\" or \"1234MiB\"",
                )
            })?),
        };
        status.processes.push(GpuProcess { gpu, pid, name, memory_mib, line: row.line });
    }
    Ok(status)
}

fn line_text(lines: &[Line], no: usize) -> &str {
    lines.get(no.wrapping_sub(1)).map_or("", |l| l.text.as_str())
}

fn gpu_from_record(
    tool: &'static str,
    lines: &[Line],
    rec: &BoxRecord,
) -> Result<GpuStatus, ParseError> {
    let (index, line) = rec.get(&["gpu"]).ok_or_else(|| {
        ParseError::new(
            tool,
            rec.line,
            line_text(lines, rec.line),
            "a GPU index under the \"GPU\" header",
        )
    })?;
    let index = index.trim().parse::<u32>().map_err(|_| {
        ParseError::new(tool, line, index, "a GPU index (a number) under the \"GPU\" header")
    })?;
    let mut gpu = GpuStatus { index, line: rec.line, ..Default::default() };
    gpu.name = rec.get(&["name"]).map(|(v, _)| v.to_string());
    if let Some((v, l)) = rec.get(&["bus-id"]) {
        gpu.bus_id = Some(normalize_bus_id(v).ok_or_else(|| {
            ParseError::new(tool, l, v, "a PCI bus id like \"0000:05:00.0\" under \"Bus-id\"")
        })?);
    }
    gpu.temperature_c = optional(tool, rec, &["temp"], "a temperature like \"51C\"", |v| {
        number_with_unit(v, &["C"])
    })?;
    gpu.power_w = optional(
        tool,
        rec,
        &["power", "pwr:usage/cap"],
        "a power like \"71W\" or \"53W / 450W\"",
        |v| number_with_unit(v.split('/').next().unwrap_or(v), &["W"]),
    )?;
    gpu.utilization_pct = optional(tool, rec, &["gpu-util"], "a utilization like \"36%\"", |v| {
        number_with_unit(v, &["%"])
    })?;
    if let Some((v, l)) = rec.get(&["memory-usage"]) {
        // `ERR! /  40960MiB`: the tool could not read the used amount.
        let unreadable = v.split('/').any(super::text::is_not_available);
        if !unreadable {
            let (used, total) = memory_pair(v).ok_or_else(|| {
                ParseError::new(tool, l, v, "a memory cell like \"60278/65536 MiB\"")
            })?;
            gpu.memory_used_mib = Some(used);
            gpu.memory_total_mib = Some(total);
        }
    }
    Ok(gpu)
}

/// A field that may be absent or `N/A`, but if present must parse.
fn optional(
    tool: &'static str,
    rec: &BoxRecord,
    names: &[&str],
    expected: &str,
    parse: impl Fn(&str) -> Option<f64>,
) -> Result<Option<f64>, ParseError> {
    match rec.get(names) {
        None => Ok(None),
        // `ERR! / 250W`: the reading before the slash is the one we want, and it is unknown.
        Some((v, _))
            if super::text::is_not_available(v)
                || super::text::is_not_available(v.split('/').next().unwrap_or(v)) =>
        {
            Ok(None)
        }
        Some((v, l)) => parse(v).map(Some).ok_or_else(|| ParseError::new(tool, l, v, expected)),
    }
}

/// `60982/65536 MiB`, `2MiB /  49140MiB`, `1.5/64 GiB` -> (used, total) in MiB.
pub(crate) fn memory_pair(text: &str) -> Option<(u64, u64)> {
    let (used, total) = text.split_once('/')?;
    let unit_of = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        ["kib", "mib", "gib", "kb", "mb", "gb"].into_iter().find(|u| s.ends_with(u))
    };
    let default_unit = unit_of(total).unwrap_or("mib");
    let used = size_mib(used, unit_of(used).unwrap_or(default_unit))?;
    let total = size_mib(total, unit_of(total).unwrap_or(default_unit))?;
    Some((used, total))
}

fn size_mib(text: &str, unit: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let body = t.strip_suffix(unit).unwrap_or(&t).trim();
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    let mib = match unit {
        "kib" | "kb" => v / 1024.0,
        "gib" | "gb" => v * 1024.0,
        _ => v,
    };
    (mib.is_finite() && (0.0..1e15).contains(&mib)).then(|| mib.round() as u64)
}

/// A memory size in MiB: `59584` (the mx-smi column is in MiB), `1234MiB`, `2 GiB`.
pub(crate) fn mib(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let unit = ["kib", "mib", "gib", "kb", "mb", "gb"]
        .into_iter()
        .find(|u| t.ends_with(u))
        .unwrap_or("mib");
    size_mib(&t, unit)
}

/// Parses `mx-smi -j` output. The shape (METAX-NOTES): top-level `maca_version`,
/// `driver_version`, `attached_gpus`, and one object per device keyed by its bus id, holding
/// `device_id` and per-device readings; a non-JSON preamble may come first, so parsing starts
/// at the first `{`.
///
/// ```text
/// {"maca_version": "2.23.0.1018", "driver_version": "2.5.014", "attached_gpus": 4,
///  "0000:05:00.0": {"device_id": 0, "unavailable_reason": "", ...}, ...}
/// ```
///
/// Only what that shape states for certain is read: index (`device_id`) and bus id (the key),
/// plus a name, temperature, power, memory and utilization where a field with an obvious name
/// holds a number. Processes are not part of the known shape and come back empty.
pub fn parse_json(text: &str) -> Result<SmiStatus, ParseError> {
    const JTOOL: &str = "mx-smi -j";
    let start = text.find('{').ok_or_else(|| {
        let lines = clean_lines(text);
        ParseError::at_end(JTOOL, &lines, "a JSON object starting with \"{\"")
    })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let value: serde_json::Value = serde_json::from_str(&text[start..]).map_err(|e| {
        let lineno = line_of(start) + e.line().saturating_sub(1);
        let found = text.lines().nth(lineno - 1).unwrap_or("");
        ParseError::new(JTOOL, lineno, found, format!("valid JSON ({e})"))
    })?;
    let obj = value.as_object().ok_or_else(|| {
        ParseError::new(JTOOL, line_of(start), "", "a JSON object at the top level")
    })?;
    let mut status = SmiStatus {
        tool_version: None,
        driver_version: obj.get("driver_version").and_then(json_string),
        ..Default::default()
    };
    for (key, dev) in obj {
        let Some(bus_id) = normalize_bus_id(key) else { continue };
        let line = text.find(&format!("\"{key}\"")).map_or(line_of(start), line_of);
        let dev = dev.as_object().ok_or_else(|| {
            ParseError::new(JTOOL, line, key, "an object of readings under the device's bus id")
        })?;
        let index = dev
            .get("device_id")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                ParseError::new(JTOOL, line, key, "a numeric \"device_id\" for the device")
            })?;
        let num = |names: &[&str]| {
            names.iter().find_map(|n| {
                dev.get(*n).and_then(|v| {
                    v.as_f64().or_else(|| {
                        v.as_str().and_then(|s| number_with_unit(s, &["C", "W", "%", "MiB", "MB"]))
                    })
                })
            })
        };
        status.gpus.push(GpuStatus {
            index,
            name: ["name", "board_name", "product_name"]
                .iter()
                .find_map(|n| dev.get(*n).and_then(json_string)),
            bus_id: Some(bus_id),
            temperature_c: num(&["temperature", "temp", "gpu_temp"]),
            power_w: num(&["power", "board_power", "power_usage"]),
            memory_used_mib: num(&["memory_used", "vram_used"]).map(|v| v as u64),
            memory_total_mib: num(&["memory_total", "vram_total"]).map(|v| v as u64),
            utilization_pct: num(&["gpu_util", "utilization", "usage"]),
            line,
        });
    }
    if status.gpus.is_empty() {
        return Err(ParseError::new(
            JTOOL,
            line_of(start),
            "",
            "at least one device keyed by a bus id",
        ));
    }
    status.gpus.sort_by_key(|g| g.index);
    Ok(status)
}

fn json_string(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_pairs() {
        assert_eq!(memory_pair("60982/65536 MiB"), Some((60982, 65536)));
        assert_eq!(memory_pair("2MiB /  49140MiB"), Some((2, 49140)));
        assert_eq!(memory_pair("1/64 GiB"), Some((1024, 65536)));
        assert_eq!(memory_pair("60278MiB"), None);
    }

    #[test]
    fn json_from_first_brace() {
        let text = "warning: something\n{\"driver_version\": \"2.5.014\", \"attached_gpus\": 1,\n \"0000:05:00.0\": {\"device_id\": 0}}";
        let s = parse_json(text).unwrap();
        assert_eq!(s.driver_version.as_deref(), Some("2.5.014"));
        assert_eq!(s.gpus[0].bus_id.as_deref(), Some("0000:05:00.0"));
        assert_eq!(s.gpus[0].line, 3);
        assert!(parse_json("no json here").is_err());
        assert!(parse_json("{\"a\": ").unwrap_err().expected.starts_with("valid JSON"));
    }
}
