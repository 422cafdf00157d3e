//! Parser for `mx-smi dmon ... --format csv -c 1` (MetaX): one CSV row per GPU, the
//! structured reading `metax-mxtop` falls back to when `libmxsml` is not there. Written from the
//! column names mxtop reads (no real capture of this format was at hand: see
//! docs/gpu-sources.md), with [`DMON_ARGS`] exactly mxtop's command line:
//!
//! ```text
//! dev,bdfid,hottemp,power,gpu,vram,total,used,xcoreclk,mcclk
//! 0,0000:0e:00.0,35,57,0,1,64,826,1600,1800
//! ```
//!
//! Columns are found by name (case, blanks, `-`/`_` and a `(unit)`/`[unit]` suffix ignored;
//! a leading `#` on the header tolerated), never by position: index `dev`/`gpu`/`id`, bus id
//! `bdfid`/`bdf`/`busid`, temperature `hottemp`/`temp`/`temperature`, power `power`/
//! `boardpower`, utilization `gpu`/`gpuutil`/`util`/`usage` (when `dev` holds the index),
//! memory `used` (MiB unless a unit says otherwise) and `total` (GiB unless a unit says
//! otherwise, as mxtop reads it), or `vram` (percent) with `total`. A row of units below the
//! header is skipped. `N/A`, `-` and empty cells are absent (a warning); any other cell that is
//! not a number (with an optional unit) is refused with its line. This module runs nothing.

use super::facts::{normalize_bus_id, GpuStatus, SmiStatus};
pub use super::text::ParseError;
use super::text::{clean_lines, is_not_available};

const TOOL: &str = "mx-smi dmon";

/// The arguments the sampler passes: one sample of every reading, as CSV.
pub const DMON_ARGS: [&str; 12] = [
    "dmon",
    "--show-temperature",
    "--show-board-power",
    "--show-usage",
    "--show-memory",
    "--total-memory",
    "--show-bdf",
    "--show-clock",
    "--format",
    "csv",
    "-c",
    "1",
];

/// A header cell: normalised name and the unit in its `(unit)` suffix, if any.
fn column(cell: &str) -> (String, Option<String>) {
    let c = cell.trim().trim_start_matches('#').trim();
    let (name, unit) = match c.find(['(', '[']) {
        Some(i) => {
            let unit = c[i + 1..].trim_end_matches([')', ']']).trim().to_ascii_lowercase();
            (&c[..i], (!unit.is_empty()).then_some(unit))
        }
        None => (c, None),
    };
    let name: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '-' { '_' } else { c })
        .collect();
    (name, unit)
}

/// A number with an optional unit suffix (`35`, `35C`, `57.5 W`, `826MiB`): the number and the
/// unit (lowercase, maybe empty).
fn number(cell: &str) -> Option<(f64, String)> {
    let t = cell.trim();
    let end = t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '-'))
        .map_or(t.len(), |(i, _)| i);
    let v: f64 = t[..end].parse().ok().filter(|v: &f64| v.is_finite())?;
    let unit = t[end..].trim().trim_start_matches('%').to_ascii_lowercase();
    unit.chars().all(|c| c.is_ascii_alphabetic()).then_some((v, unit))
}

fn to_mib(v: f64, unit: &str) -> Option<u64> {
    let mib = match unit {
        "" | "mib" | "mb" | "m" => v,
        "kib" | "kb" | "k" => v / 1024.0,
        "gib" | "gb" | "g" => v * 1024.0,
        "b" => v / 1048576.0,
        _ => return None,
    };
    (0.0..1e12).contains(&mib).then(|| mib.round() as u64)
}

/// Parses the CSV; warnings name the readings that were absent.
pub fn parse_with_warnings(text: &str) -> Result<(SmiStatus, Vec<String>), ParseError> {
    let lines = clean_lines(text);
    let mut rows = lines.iter().filter(|l| !l.text.trim().is_empty());
    let head = rows.next().ok_or_else(|| ParseError::at_end(TOOL, &lines, "a CSV header"))?;
    let cols: Vec<(String, Option<String>)> = head.text.split(',').map(column).collect();
    let find = |names: &[&str]| names.iter().find_map(|n| cols.iter().position(|(c, _)| c == n));
    let idx = find(&["dev", "gpu_id", "index", "id", "idx"])
        .map(|i| (i, false))
        .or_else(|| find(&["gpu"]).map(|i| (i, true)))
        .ok_or_else(|| {
            ParseError::new(TOOL, head.no, &head.text, "a header with a \"dev\" (GPU index) column")
        })?;
    let (idx, gpu_is_index) = idx;
    let bus = find(&["bdfid", "bdf", "busid", "bus_id", "pci", "pci_bus_id"]);
    let temp = find(&["hottemp", "temperature", "temp", "coretemp", "soctemp"]);
    let power = find(&["power", "powerdraw", "boardpower", "pwr"]);
    let util = if gpu_is_index {
        find(&["gpuutil", "util", "usage"])
    } else {
        find(&["gpu", "gpuutil", "util", "usage"])
    };
    let used = find(&["used", "usedmemory", "memoryused", "vramused"]);
    let total = find(&["total", "totalmemory", "memorytotal", "vramtotal"]);
    let vram_pct = find(&["vram", "memory", "mem", "memutil"]);

    let mut status = SmiStatus::default();
    let mut warnings = Vec::new();
    let mut first_data = true;
    for l in rows {
        let cells: Vec<&str> = l.text.split(',').map(str::trim).collect();
        let cell = |i: Option<usize>| i.and_then(|i| cells.get(i).copied());
        let index_cell = cell(Some(idx)).unwrap_or("");
        let Ok(index) = index_cell.trim_start_matches('#').trim().parse::<u32>() else {
            // A units row right below the header (`Idx, C, W, %`) carries no reading.
            if first_data && cells.iter().all(|c| number(c).is_none()) {
                first_data = false;
                continue;
            }
            return Err(ParseError::new(TOOL, l.no, &l.text, "a row starting with a GPU index"));
        };
        first_data = false;
        let read = |i: Option<usize>, what: &str| -> Result<Option<(f64, String)>, ParseError> {
            match cell(i) {
                None => Ok(None),
                Some(c) if is_not_available(c) => Ok(None),
                Some(c) => number(c).map(Some).ok_or_else(|| {
                    ParseError::new(TOOL, l.no, c, format!("{what} (a number, maybe with a unit)"))
                }),
            }
        };
        let unit_of = |i: Option<usize>, from_value: String| {
            if from_value.is_empty() {
                i.and_then(|i| cols[i].1.clone()).unwrap_or_default()
            } else {
                from_value
            }
        };
        let mut g = GpuStatus { index, line: l.no, ..GpuStatus::default() };
        if let Some(c) = cell(bus).filter(|c| !is_not_available(c)) {
            g.bus_id = Some(normalize_bus_id(c).ok_or_else(|| {
                ParseError::new(TOOL, l.no, c, "a PCI bus id like \"0000:0e:00.0\"")
            })?);
        }
        g.temperature_c = read(temp, "a temperature")?.map(|(v, _)| v);
        g.power_w = read(power, "a power")?.map(|(v, _)| v);
        g.utilization_pct = read(util, "a utilization")?.map(|(v, _)| v);
        let total_mib = match read(total, "a memory total")? {
            Some((v, u)) => {
                let u = unit_of(total, u);
                let u = if u.is_empty() { "gib".to_string() } else { u };
                Some(to_mib(v, &u).ok_or_else(|| {
                    ParseError::new(TOOL, l.no, cell(total).unwrap_or(""), "a memory size")
                })?)
            }
            None => None,
        };
        let used_mib = match read(used, "a memory used")? {
            Some((v, u)) => Some(to_mib(v, &unit_of(used, u)).ok_or_else(|| {
                ParseError::new(TOOL, l.no, cell(used).unwrap_or(""), "a memory size")
            })?),
            None => match (read(vram_pct, "a memory utilization")?, total_mib) {
                (Some((pct, _)), Some(t)) => Some((t as f64 * pct / 100.0).round() as u64),
                _ => None,
            },
        };
        g.memory_total_mib = total_mib;
        g.memory_used_mib = used_mib;
        status.gpus.push(g);
    }
    if status.gpus.is_empty() {
        return Err(ParseError::at_end(TOOL, &lines, "a row per GPU below the header"));
    }
    for (what, absent) in [
        ("bus id", status.gpus.iter().filter(|g| g.bus_id.is_none()).count()),
        ("temperature", status.gpus.iter().filter(|g| g.temperature_c.is_none()).count()),
        ("power", status.gpus.iter().filter(|g| g.power_w.is_none()).count()),
        ("utilization", status.gpus.iter().filter(|g| g.utilization_pct.is_none()).count()),
        ("memory", status.gpus.iter().filter(|g| g.memory_used_mib.is_none()).count()),
    ] {
        if absent > 0 {
            warnings.push(format!("{TOOL}: no {what} reading for {absent} GPU(s)"));
        }
    }
    Ok((status, warnings))
}

/// [`parse_with_warnings`] without the warnings.
pub fn parse(text: &str) -> Result<SmiStatus, ParseError> {
    parse_with_warnings(text).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_numbers() {
        assert_eq!(column(" Hot-Temp (C) "), ("hot_temp".into(), Some("c".into())));
        assert_eq!(column("# dev"), ("dev".into(), None));
        assert_eq!(number("57.5 W"), Some((57.5, "w".into())));
        assert_eq!(number("36%"), Some((36.0, String::new())));
        assert_eq!(number("hot"), None);
        assert_eq!(number("1x2"), None);
        assert_eq!(to_mib(64.0, "gb"), Some(65536));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s);
        }
    }
}
