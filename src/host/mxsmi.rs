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
//! followed by the process table (`GPU  PID  Process Name  GPU Memory Usage(MiB)`, or
//! `no process found`).
//!
//! Tolerance (issue 16): every optional part of an `mx-smi` output may be absent or varied.
//! [`parse_with_warnings`] reads what is there and says what is missing: no process table
//! (2.2.9 prints none in some modes), version banner rows glued to the column header without
//! a rule, `Available`/`Disabled` (and the like) where a number was expected, no power or
//! temperature cell. It refuses only what makes no sense, with the line: a cell that is
//! neither a reading nor a known "no reading" word, fewer GPU records than the banner's
//! `Attached GPUs` (a truncated output), a table cut in the middle.
//!
//! The same box-table reading serves `nvidia-smi` (see `crate::host::nvsmi`), whose layout
//! differs only in names; for it the strict reading of before is kept. `parse_json` reads
//! `mx-smi -j`, and [`parse`] recognises JSON wherever an `mx-smi` output is expected. This
//! module does not run `mx-smi`.

use std::sync::LazyLock;

use regex::Regex;

use super::facts::{normalize_bus_id, GpuProcess, GpuStatus, SmiStatus};
pub use super::text::ParseError;
use super::text::{
    clean_lines, is_box_row, number_with_unit, parse_box_processes, parse_box_records, BoxRecord,
    Line,
};

const TOOL: &str = "mx-smi";

/// Parses an `mx-smi` output: the status table (no arguments), or `mx-smi -j` JSON, told
/// apart by their first structural line. Warnings are dropped; see [`parse_with_warnings`].
pub fn parse(text: &str) -> Result<SmiStatus, ParseError> {
    parse_with_warnings(text).map(|(s, _)| s)
}

/// [`parse`], plus one line for each thing that was expected but absent or unreadable
/// ("no process table after the GPU table", "GPU 0 line 12: GPU-Util reads \"Disabled\"").
pub fn parse_with_warnings(text: &str) -> Result<(SmiStatus, Vec<String>), ParseError> {
    if looks_like_json(text) {
        return parse_json_with_warnings(text);
    }
    let mut warnings = Vec::new();
    let status = read_status_table(TOOL, text, Some(&mut warnings))?;
    Ok((status, warnings))
}

/// True when the first line that starts a structure starts a JSON object rather than a box
/// table (`mx-smi -j` may print a banner line first).
fn looks_like_json(text: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(['{', '|', '+']))
        .is_some_and(|l| l.starts_with('{'))
}

/// Words a tool prints in a reading's place when it has none: not garbage, just no value.
fn is_status_word(v: &str) -> bool {
    let t = v.trim().to_ascii_lowercase();
    ["available", "unavailable", "disabled", "enabled", "not supported", "unknown", "none"]
        .contains(&t.as_str())
}

static ATTACHED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*Attached GPUs\s*:\s*(\d+)\s*$").unwrap());

static TOOL_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(MX-SMI|NVIDIA-SMI)\s+([0-9][0-9A-Za-z.\-]*)|mx-smi\s+version:\s*([0-9][0-9A-Za-z.\-]*)")
        .unwrap()
});
static DRIVER_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:Kernel Mode )?Driver Version:\s*([0-9][0-9A-Za-z.\-]*)").unwrap()
});

/// Reads a box-drawn SMI status table (`mx-smi`, `nvidia-smi`) whose header names fields
/// `GPU`, `Name`, `Bus-id`, `Temp`, `Power` or `Pwr:Usage/Cap`, `Memory-Usage`, `GPU-Util`,
/// strictly: the process table must follow and every reading must parse.
pub(crate) fn parse_status_table(tool: &'static str, text: &str) -> Result<SmiStatus, ParseError> {
    read_status_table(tool, text, None)
}

/// The table reader; `warnings` present means tolerant (see the module docs).
fn read_status_table(
    tool: &'static str,
    text: &str,
    mut warnings: Option<&mut Vec<String>>,
) -> Result<SmiStatus, ParseError> {
    let mut lines = clean_lines(text);
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
    let tolerant = warnings.is_some();
    if tolerant {
        unglue_banner(&mut lines);
    }
    let (records, next) = parse_box_records(tool, &lines, "bus-id")?;
    for rec in &records {
        status.gpus.push(gpu_from_record(tool, &lines, rec, warnings.as_deref_mut())?);
    }
    let attached = lines.iter().find_map(|l| ATTACHED.captures(&l.text)?[1].parse::<usize>().ok());
    let rows = match (parse_box_processes(tool, &lines, next)?, warnings.as_deref_mut()) {
        (Some(rows), w) => {
            // Complete output (the process table follows): fewer GPUs than the banner's count
            // is a GPU the tool lost, not a truncation.
            if let (Some(n), Some(w)) = (attached.filter(|&n| records.len() < n), w) {
                w.push(format!(
                    "{tool}: \"Attached GPUs\" says {n}, the table lists {}",
                    records.len()
                ));
            }
            rows
        }
        (None, Some(w)) => {
            // Nothing after the GPU table: fewer GPUs than the banner's count is a cut output.
            if let Some(n) = attached.filter(|&n| records.len() < n) {
                return Err(ParseError::at_end(
                    tool,
                    &lines,
                    format!(
                        "{n} GPU records as \"Attached GPUs\" says, got {} (output truncated?)",
                        records.len()
                    ),
                ));
            }
            let rest = lines.get(next..).unwrap_or_default();
            if let Some(l) = rest.iter().find(|l| !l.text.trim().is_empty()) {
                return Err(ParseError::new(
                    tool,
                    l.no,
                    &l.text,
                    "the process table or the end of the output",
                ));
            }
            w.push(format!("{tool}: no process table after the GPU table; processes unknown"));
            Vec::new()
        }
        (None, None) => {
            return Err(ParseError::at_end(
                tool,
                &lines,
                "the process table after the GPU table (output truncated?)",
            ))
        }
    };
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
    if let Some(w) = warnings {
        let missing = |what: &str, absent: &dyn Fn(&GpuStatus) -> bool| {
            let ids: Vec<String> =
                status.gpus.iter().filter(|g| absent(g)).map(|g| g.index.to_string()).collect();
            (!ids.is_empty())
                .then(|| format!("{tool}: no {what} reading for GPU {}", ids.join(", ")))
        };
        w.extend(missing("temperature", &|g| g.temperature_c.is_none()));
        w.extend(missing("power", &|g| g.power_w.is_none()));
        w.extend(missing("utilization", &|g| g.utilization_pct.is_none()));
        w.extend(missing("memory", &|g| g.memory_used_mib.is_none()));
    }
    Ok(status)
}

/// Banner rows (`| MX-SMI 2.2.9 ... |`) glued to the column header without a `|----|` rule
/// would be read as header rows; the header starts at the row naming `Bus-id`, so the box rows
/// right above it become a rule (line numbers kept).
fn unglue_banner(lines: &mut [Line]) {
    let Some(key_at) = lines
        .iter()
        .position(|l| is_box_row(&l.text) && l.text.to_ascii_lowercase().contains("bus-id"))
    else {
        return;
    };
    let mut i = key_at;
    while i > 0 && is_box_row(&lines[i - 1].text) {
        i -= 1;
        lines[i].text = "+---+".to_string();
    }
}

fn line_text(lines: &[Line], no: usize) -> &str {
    lines.get(no.wrapping_sub(1)).map_or("", |l| l.text.as_str())
}

fn gpu_from_record(
    tool: &'static str,
    lines: &[Line],
    rec: &BoxRecord,
    mut warnings: Option<&mut Vec<String>>,
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
    let mut word = |names: &[&str]| -> bool {
        match (rec.get(names), warnings.as_deref_mut()) {
            (Some((v, l)), Some(w)) if is_status_word(v.split('/').next().unwrap_or(v)) => {
                w.push(format!(
                    "{tool}: GPU {index} line {l}: {} reads {v:?}; no reading",
                    names[0]
                ));
                true
            }
            _ => false,
        }
    };
    let (no_temp, no_power, no_util, no_mem) = (
        word(&["temp"]),
        word(&["power", "pwr:usage/cap"]),
        word(&["gpu-util"]),
        word(&["memory-usage"]),
    );
    if !no_temp {
        gpu.temperature_c = optional(tool, rec, &["temp"], "a temperature like \"51C\"", |v| {
            number_with_unit(v, &["C"])
        })?;
    }
    if !no_power {
        gpu.power_w = optional(
            tool,
            rec,
            &["power", "pwr:usage/cap"],
            "a power like \"71W\" or \"53W / 450W\"",
            |v| number_with_unit(v.split('/').next().unwrap_or(v), &["W"]),
        )?;
    }
    if !no_util {
        gpu.utilization_pct =
            optional(tool, rec, &["gpu-util"], "a utilization like \"36%\"", |v| {
                number_with_unit(v, &["%"])
            })?;
    }
    if let Some((v, l)) = rec.get(&["memory-usage"]).filter(|_| !no_mem) {
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
///
/// Real 2.2.12 output (as the issue reports it) prints a banner line before the JSON, counts
/// only usable GPUs in `attached_gpus` (so that count is not checked against the devices) and
/// gives clocks as plain integers. A device with a non-empty `unavailable_reason` is kept (its
/// bus id is real) and named in a warning.
pub fn parse_json(text: &str) -> Result<SmiStatus, ParseError> {
    parse_json_with_warnings(text).map(|(s, _)| s)
}

/// [`parse_json`] with its warnings (unavailable devices).
pub fn parse_json_with_warnings(text: &str) -> Result<(SmiStatus, Vec<String>), ParseError> {
    const JTOOL: &str = "mx-smi -j";
    let mut warnings = Vec::new();
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
        if let Some(why) = dev.get("unavailable_reason").and_then(json_string) {
            if !why.trim().is_empty() {
                warnings
                    .push(format!("{JTOOL}: GPU {index} ({bus_id}) unavailable: {}", why.trim()));
            }
        }
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
    Ok((status, warnings))
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
