//! Request traces to replay (`verify --trace FILE --trace-format mooncake|burstgpt`): each row
//! is one request with its arrival time, input and output lengths, and for Mooncake the ids of
//! its 512-token prompt blocks. The parsers are pure functions over the file's text; times come
//! out as offsets from the first row (not yet scaled by `--trace-speed`). Rows must be in time
//! order, as both published traces are: a row earlier than the one before it is an error, as is
//! any row that does not parse, each named by file and line.
//!
//! Not here: the prompt text of a row (`synth`), sending at the offsets (`schedule`).
//!
//! Inputs it expects (field names checked against the traces' publishers, see docs/verify.md):
//! ```text
//! mooncake (JSONL; timestamp in ms since the first request, hash_ids optional):
//!   {"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1, 2]}
//! burstgpt (CSV with a header, read by column name; Timestamp in seconds):
//!   Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
//!   5,ChatGPT,472,18,490,Conversation log
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("trace {path}:{line}: {reason}")]
    Row { path: PathBuf, line: u64, reason: String },
    #[error("trace {path}: no column {column:?} in the header (found: {found})")]
    NoColumn { path: PathBuf, column: &'static str, found: String },
    #[error("trace {path}: no request in it ({skipped} rows with 0 response tokens skipped)")]
    Empty { path: PathBuf, skipped: usize },
}

/// The trace file formats `--trace-format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// Mooncake's JSONL (`timestamp` ms, `input_length`, `output_length`, `hash_ids`).
    Mooncake,
    /// BurstGPT's CSV (`Timestamp` s, `Request tokens`, `Response tokens`, ...).
    BurstGpt,
}

impl TraceFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mooncake => "mooncake",
            Self::BurstGpt => "burstgpt",
        }
    }
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Arrival, counted from the first row's.
    pub offset: Duration,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Ids of the prompt's 512-token blocks (Mooncake); empty: nothing shared.
    pub hash_ids: Vec<u64>,
    /// The line of the file it came from.
    pub line: u64,
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub format: TraceFormat,
    pub rows: Vec<TraceRow>,
    /// Rows left out: BurstGPT's failed requests (0 response tokens).
    pub skipped: usize,
}

impl Trace {
    /// Reads and parses `path`.
    pub fn load(path: &Path, format: TraceFormat) -> Result<Self, TraceError> {
        let err = |source| TraceError::Read { path: path.to_path_buf(), source };
        // A regular file only: a fifo or a device is refused, never waited on or read forever.
        let text = crate::host::snapshot::read_input_text(path, u64::MAX).map_err(err)?;
        match format {
            TraceFormat::Mooncake => parse_mooncake(&text, path),
            TraceFormat::BurstGpt => parse_burstgpt(&text, path),
        }
    }

    /// Time from the first arrival to the last.
    pub fn span(&self) -> Duration {
        self.rows.last().map_or(Duration::ZERO, |r| r.offset)
    }
}

/// Turns absolute times (seconds) into offsets from the first, refusing time going backwards.
fn offsets(
    path: &Path,
    times: Vec<(f64, TraceRow)>,
    format: TraceFormat,
    skipped: usize,
) -> Result<Trace, TraceError> {
    let Some(first) = times.first().map(|t| t.0) else {
        return Err(TraceError::Empty { path: path.to_path_buf(), skipped });
    };
    let mut prev = first;
    let mut rows = Vec::with_capacity(times.len());
    for (t, mut row) in times {
        if t < prev {
            return Err(TraceError::Row {
                path: path.to_path_buf(),
                line: row.line,
                reason: format!(
                    "time {t} is before the previous row's {prev}: the trace must be in time order"
                ),
            });
        }
        prev = t;
        row.offset = Duration::try_from_secs_f64(t - first).map_err(|_| TraceError::Row {
            path: path.to_path_buf(),
            line: row.line,
            reason: format!("time {t} is too far from the first row's {first}"),
        })?;
        rows.push(row);
    }
    Ok(Trace { format, rows, skipped })
}

/// Mooncake JSONL; blank lines are skipped, unknown fields (`session_id`, ...) ignored.
pub fn parse_mooncake(text: &str, path: &Path) -> Result<Trace, TraceError> {
    #[derive(serde::Deserialize)]
    struct Row {
        timestamp: f64,
        input_length: u32,
        output_length: u32,
        #[serde(default)]
        hash_ids: Vec<u64>,
    }
    let mut times = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        let bad =
            |reason: String| TraceError::Row { path: path.to_path_buf(), line: line_no, reason };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let r: Row = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        check(r.timestamp, r.input_length, r.output_length).map_err(bad)?;
        times.push((
            r.timestamp / 1000.0,
            TraceRow {
                offset: Duration::ZERO,
                input_tokens: r.input_length,
                output_tokens: r.output_length,
                hash_ids: r.hash_ids,
                line: line_no,
            },
        ));
    }
    offsets(path, times, TraceFormat::Mooncake, 0)
}

/// A row's time and lengths are usable: a finite non-negative time, at least one token each way.
fn check(time: f64, input: u32, output: u32) -> Result<(), String> {
    if !(time.is_finite() && time >= 0.0) {
        return Err(format!("timestamp {time} is not a non-negative number"));
    }
    if input == 0 {
        return Err("the input length is 0".into());
    }
    if output == 0 {
        return Err("the output length is 0".into());
    }
    Ok(())
}

/// BurstGPT CSV, columns found by header name (any order, extra columns ignored). Rows with 0
/// `Response tokens` are BurstGPT's failed requests: skipped and counted.
pub fn parse_burstgpt(text: &str, path: &Path) -> Result<Trace, TraceError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let bad =
        |line: u64, reason: String| TraceError::Row { path: path.to_path_buf(), line, reason };
    let header = reader.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let column = |name: &'static str| {
        header.iter().position(|h| h == name).ok_or_else(|| TraceError::NoColumn {
            path: path.to_path_buf(),
            column: name,
            found: header.iter().collect::<Vec<_>>().join(", "),
        })
    };
    let (time_col, input_col, output_col) =
        (column("Timestamp")?, column("Request tokens")?, column("Response tokens")?);
    let mut times = Vec::new();
    let mut skipped = 0;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            bad(line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let field = |col: usize, name: &str| -> Result<&str, TraceError> {
            record.get(col).ok_or_else(|| bad(line, format!("no {name:?} field")))
        };
        let number = |col: usize, name: &str| -> Result<u32, TraceError> {
            let v = field(col, name)?;
            // Pandas writes whole numbers of float columns as `18.0`.
            let x: f64 = v
                .parse()
                .map_err(|_| bad(line, format!("{name} {v:?} is not a number of tokens")))?;
            if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= f64::from(u32::MAX)) {
                return Err(bad(line, format!("{name} {v:?} is not a number of tokens")));
            }
            Ok(x as u32)
        };
        let t = field(time_col, "Timestamp")?;
        let time: f64 =
            t.parse().map_err(|_| bad(line, format!("Timestamp {t:?} is not a number")))?;
        let input = number(input_col, "Request tokens")?;
        let output = number(output_col, "Response tokens")?;
        if output == 0 {
            skipped += 1;
            continue;
        }
        check(time, input, output).map_err(|r| bad(line, r))?;
        let row = TraceRow {
            offset: Duration::ZERO,
            input_tokens: input,
            output_tokens: output,
            hash_ids: Vec::new(),
            line,
        };
        times.push((time, row));
    }
    offsets(path, times, TraceFormat::BurstGpt, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.jsonl")
    }

    #[test]
    fn mooncake_rows_become_offsets_from_the_first() {
        let text = r#"{"timestamp": 1000, "input_length": 655, "output_length": 52, "hash_ids": [46, 47]}

{"timestamp": 1000, "input_length": 20, "output_length": 3, "session_id": "a"}
{"timestamp": 11535, "input_length": 672, "output_length": 26, "hash_ids": [46, 47]}
"#;
        let t = parse_mooncake(text, p()).unwrap();
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].offset, Duration::ZERO);
        assert_eq!(t.rows[1].offset, Duration::ZERO);
        assert_eq!(t.rows[2].offset, Duration::from_millis(10_535));
        assert_eq!(t.rows[2].line, 4);
        assert_eq!((t.rows[0].input_tokens, t.rows[0].output_tokens), (655, 52));
        assert_eq!(t.rows[0].hash_ids, vec![46, 47]);
        assert!(t.rows[1].hash_ids.is_empty());
        assert_eq!(t.span(), Duration::from_millis(10_535));
    }

    #[test]
    fn bad_mooncake_rows_are_named_by_file_and_line() {
        let err = |text: &str| parse_mooncake(text, p()).unwrap_err().to_string();
        let ok = r#"{"timestamp": 5, "input_length": 1, "output_length": 1}"#;
        let e = err(&format!("{ok}\n{{\"timestamp\": 6, \"output_length\": 1}}\n"));
        assert!(e.starts_with("trace t.jsonl:2: missing field `input_length`"), "{e}");
        let e = err(&format!("{ok}\nnot json\n"));
        assert!(e.starts_with("trace t.jsonl:2: "), "{e}");
        let e = err(&format!("{ok}\n{}", ok.replace("5,", "4,")));
        assert!(e.contains("t.jsonl:2: time 0.004 is before the previous row's 0.005"), "{e}");
        let e = err(&ok.replace("\"output_length\": 1", "\"output_length\": 0"));
        assert!(e.contains("t.jsonl:1: the output length is 0"), "{e}");
        let e = err(&ok.replace("5,", "-5,"));
        assert!(e.contains("t.jsonl:1: timestamp -5 is not"), "{e}");
        let e = err(&ok.replace("\"input_length\": 1", "\"input_length\": -1"));
        assert!(e.starts_with("trace t.jsonl:1: invalid value"), "{e}");
        let e = err("\n\n");
        assert!(e.contains("no request in it"), "{e}");
    }

    #[test]
    fn burstgpt_columns_are_found_by_name_and_failures_skipped() {
        // The published column order, then a shuffled one with an extra column.
        let text = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
                    5,ChatGPT,472,18,490,Conversation log\n\
                    5.5,GPT-4,1000,0,1000,Conversation log\n\
                    7,ChatGPT,100,200.0,300,API log\n";
        let t = parse_burstgpt(text, Path::new("b.csv")).unwrap();
        assert_eq!(t.skipped, 1);
        assert_eq!(t.rows.len(), 2);
        assert_eq!((t.rows[0].input_tokens, t.rows[0].output_tokens), (472, 18));
        assert_eq!((t.rows[1].offset, t.rows[1].line), (Duration::from_secs(2), 4));
        assert_eq!(t.rows[1].output_tokens, 200);
        let shuffled = "Log Type,Response tokens,extra,Request tokens,Timestamp\n\
                        API log,18,x,472,10\nAPI log,3,y,9,12.25\n";
        let t = parse_burstgpt(shuffled, Path::new("b.csv")).unwrap();
        assert_eq!((t.rows[0].input_tokens, t.rows[0].output_tokens), (472, 18));
        assert_eq!(t.rows[1].offset, Duration::from_millis(2250));
    }

    #[test]
    fn bad_burstgpt_rows_and_headers_are_named() {
        let err = |text: &str| parse_burstgpt(text, Path::new("b.csv")).unwrap_err().to_string();
        let e = err("Timestamp,Model,Request tokens,Total tokens\n1,m,2,3\n");
        assert!(e.contains("b.csv: no column \"Response tokens\" in the header (found: Timestamp, Model, Request tokens, Total tokens)"), "{e}");
        let h = "Timestamp,Request tokens,Response tokens\n";
        let e = err(&format!("{h}1,2,3\n2,abc,3\n"));
        assert!(e.contains("b.csv:3: Request tokens \"abc\" is not a number of tokens"), "{e}");
        let e = err(&format!("{h}1,2,3\nx,2,3\n"));
        assert!(e.contains("b.csv:3: Timestamp \"x\" is not a number"), "{e}");
        let e = err(&format!("{h}1,2,3\n2,2\n"));
        assert!(e.starts_with("trace b.csv:3: "), "{e}");
        let e = err(&format!("{h}3,2,3\n2,2,3\n"));
        assert!(e.contains("b.csv:3: time 2 is before"), "{e}");
        let e = err(&format!("{h}1,2.5,3\n"));
        assert!(e.contains("b.csv:2: Request tokens \"2.5\""), "{e}");
        let e = err(&format!("{h}1,2,0\n"));
        assert!(e.contains("no request in it (1 rows with 0 response tokens skipped)"), "{e}");
    }
}
