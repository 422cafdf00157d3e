//! Shared helpers for reading the text tables GPU tools print: cleaning lines (ANSI escapes,
//! CR, tabs, trailing blanks), splitting box-drawn tables (`| a | b |`) into cells and cells
//! into aligned fields, and the one `ParseError` every text parser in `crate::host` returns.
//!
//! Nothing here knows a particular tool: the tool parsers (`mxsmi`, `nvsmi`, `gputopo`,
//! `rocmsmi`) decide which names mean what. Everything works on cleaned, numbered lines so that
//! an error can always cite the 1-based line of the raw output it came from.
//!
//! Also here: [`read_input`], the one way an input file is read whole (snapshot files, sysfs,
//! configs, datasets), so a fifo or a device in a file's place is refused, not waited on.

use std::sync::LazyLock;

use regex::Regex;

/// An error from one of the tool-text parsers: which tool's output, which line, what was found
/// there and what was expected instead. Display:
/// `mx-smi: line 12: expected a memory cell like "60278/65536 MiB", found "60278MiB"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tool}: line {line}: expected {expected}, found \"{found}\"")]
pub struct ParseError {
    /// The tool whose output was being read (`mx-smi`, `nvidia-smi topo -m`, ...).
    pub tool: &'static str,
    /// 1-based line of the raw input; the last line + 1 when the input ended too early.
    pub line: usize,
    /// The offending text, cleaned and truncated to 60 characters.
    pub found: String,
    /// What the parser expected there.
    pub expected: String,
}

impl ParseError {
    pub fn new(tool: &'static str, line: usize, found: &str, expected: impl Into<String>) -> Self {
        Self { tool, line, found: truncate(found.trim(), 60), expected: expected.into() }
    }

    /// The input ended (or held nothing useful) where more was expected.
    pub fn at_end(tool: &'static str, lines: &[Line], expected: impl Into<String>) -> Self {
        let line = lines.last().map_or(1, |l| l.no + 1);
        let found = if lines.iter().all(|l| l.text.is_empty()) {
            "<empty input>"
        } else {
            "<end of input>"
        };
        Self::new(tool, line, found, expected)
    }
}

/// `text` cut to `max` characters, control characters escaped (`\r`, `\n`, `\u{1b}`), so that
/// the error stays on one line whatever the input held (found by fuzzing: a CR inside a JSON
/// string, a CSV record spanning lines).
fn truncate(text: &str, max: usize) -> String {
    let shown: String = text
        .chars()
        .take(max)
        .flat_map(|c| {
            let escaped: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect();
    if text.chars().count() <= max {
        shown
    } else {
        format!("{shown}...")
    }
}

impl ParseError {
    /// Nothing in the input looked like what was expected: cite its first non-blank line (a
    /// tool's own complaint, such as `No devices were found`, is usually there).
    pub fn no_match(tool: &'static str, lines: &[Line], expected: impl Into<String>) -> Self {
        match lines.iter().find(|l| !l.text.trim().is_empty()) {
            Some(l) => Self::new(tool, l.no, &l.text, expected),
            None => Self::at_end(tool, lines, expected),
        }
    }
}

/// One line of tool output after cleaning, with its 1-based number in the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub no: usize,
    pub text: String,
}

// CSI sequences (`ESC [ 4 m`), OSC sequences (`ESC ] ... BEL`), and lone two-byte escapes.
static ANSI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]").unwrap()
});

/// Removes ANSI escape sequences (the H100 VM's `nvidia-smi topo -m` underlines its header
/// even when piped) and any other control character except tab.
pub fn strip_ansi(text: &str) -> String {
    let stripped = ANSI.replace_all(text, "");
    stripped.chars().filter(|c| *c == '\t' || !c.is_control()).collect()
}

/// Splits `text` into cleaned lines: CRLF/CR endings and a BOM removed, ANSI escapes stripped,
/// trailing blanks trimmed. Tabs are kept (callers that care about columns expand them with
/// [`expand_tabs`]; callers that only tokenize treat them as blanks).
pub fn clean_lines(text: &str) -> Vec<Line> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, raw)| {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            Line { no: i + 1, text: strip_ansi(raw).trim_end().to_string() }
        })
        .collect()
}

/// Expands tabs to 8-column stops, so that positions within a cell mean something.
pub fn expand_tabs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut col = 0usize;
    for c in text.chars() {
        if c == '\t' {
            let n = 8 - col % 8;
            out.extend(std::iter::repeat_n(' ', n));
            col += n;
        } else {
            out.push(c);
            col += 1;
        }
    }
    out
}

/// A field inside a table cell: its text and the char span it occupies in the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

impl Field {
    fn center2(&self) -> usize {
        self.start + self.end
    }
}

// A field is words joined by single spaces, by a bare slash (`60982/65536`, `/usr/bin`), or
// by a slash with blanks on both sides (`53W / 450W`, `2MiB /  49140MiB`); two or more blanks
// separate fields, so `C   /usr/bin/python3` is two.
static FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"/?[^\s/]+(?:(?: |/| +/ +)[^\s/]+)*/?|/").unwrap());

/// Splits a cell into fields separated by two or more blanks (see `FIELD`).
pub fn split_fields(cell: &str) -> Vec<Field> {
    let cell = expand_tabs(cell);
    FIELD
        .find_iter(&cell)
        .map(|m| {
            let start = cell[..m.start()].chars().count();
            Field { text: m.as_str().to_string(), start, end: start + m.as_str().chars().count() }
        })
        .collect()
}

/// Pairs the values of one data cell with the names of its header cell. When the counts agree
/// they pair in order; otherwise each value goes to the name whose span is nearest to it
/// (tools align some values left and some right under their names). Names without a value are
/// left out.
pub fn pair_fields(names: &[Field], values: &[Field]) -> Vec<(String, String)> {
    if names.is_empty() {
        return Vec::new();
    }
    if names.len() == values.len() {
        return names.iter().zip(values).map(|(n, v)| (n.text.clone(), v.text.clone())).collect();
    }
    // nvidia-smi separates some fields by one blank only (`00000000:01:00.0 Off` under
    // `Bus-Id  Disp.A`): when splitting at every blank gives exactly one word per name, use it.
    if values.len() < names.len() {
        let words: Vec<&str> = values.iter().flat_map(|v| v.text.split_whitespace()).collect();
        if words.len() == names.len() && !values.iter().any(|v| v.text.contains('/')) {
            return names.iter().zip(words).map(|(n, w)| (n.text.clone(), w.to_string())).collect();
        }
    }
    values
        .iter()
        .map(|v| {
            let nearest = names
                .iter()
                .min_by_key(|n| n.center2().abs_diff(v.center2()))
                .expect("names is not empty");
            (nearest.text.clone(), v.text.clone())
        })
        .collect()
}

/// True for a box-table rule line: `+-----+----+`, `|=====+====|`, `|-----+----|`.
pub fn is_rule(text: &str) -> bool {
    let t = text.trim();
    t.len() >= 3
        && (t.starts_with('+') || t.starts_with('|'))
        && t.chars().all(|c| matches!(c, '+' | '-' | '=' | '|'))
        && t.contains(['-', '='])
}

/// True for a `|====|` rule (the line between a box table's header and its body).
pub fn is_double_rule(text: &str) -> bool {
    is_rule(text) && text.contains('=')
}

/// True for a box-table content line `| ... |`.
pub fn is_box_row(text: &str) -> bool {
    let t = text.trim();
    t.starts_with('|') && !is_rule(t)
}

/// The cells of a box-table row `| a | b |`: the text between bars, untrimmed (positions inside
/// a cell matter to [`split_fields`]). Returns `None` when the row is not closed by a bar, which
/// is how a truncated line shows.
pub fn box_cells(text: &str) -> Option<Vec<String>> {
    let t = text.trim();
    let inner = t.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::to_string).collect())
}

/// Parses a number with an optional unit suffix: `51C` -> 51, `71W` -> 71, `36%` -> 36,
/// `49140MiB` -> 49140. Returns `None` for `N/A`, `[N/A]`, `[Not Supported]` and anything
/// else that is not a number followed by `suffix` (case-insensitive).
pub fn number_with_unit(text: &str, suffixes: &[&str]) -> Option<f64> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let mut body = lower.as_str();
    for s in suffixes {
        if let Some(b) = lower.strip_suffix(&s.to_ascii_lowercase()) {
            body = b;
            break;
        }
    }
    let body = body.trim();
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
        return None;
    }
    body.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// True for the markers tools print for a value they cannot read: `N/A`, `[N/A]`,
/// `[Not Supported]`, `[Unknown Error]`, `ERR!` (nvidia-smi on a GPU in trouble), `-`, or an
/// empty cell. Such a value is absent, not garbage: one sick GPU must not hide the others.
pub fn is_not_available(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || t == "-"
        || t.eq_ignore_ascii_case("n/a")
        || t.eq_ignore_ascii_case("na")
        || t.eq_ignore_ascii_case("err!")
        || t.eq_ignore_ascii_case("unknown error")
        || (t.starts_with('[') && t.ends_with(']'))
}

/// One GPU's record in a box-drawn status table: `(name, value, line)` for every field, names
/// lowercased as the header spells them (`bus-id`, `pwr:usage/cap`, `memory-usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRecord {
    /// Line of the record's first row.
    pub line: usize,
    pub fields: Vec<(String, String, usize)>,
}

impl BoxRecord {
    /// The first field whose name is one of `names` (lowercase), with its line.
    pub fn get(&self, names: &[&str]) -> Option<(&str, usize)> {
        names.iter().find_map(|want| {
            self.fields.iter().find(|(n, _, _)| n == want).map(|(_, v, l)| (v.as_str(), *l))
        })
    }
}

/// Reads the per-GPU block of a box-drawn status table (`mx-smi`, `nvidia-smi`):
///
/// ```text
/// |------------------------------------+---------------------+----------------------+
/// | GPU         NAME                   | Bus-id              | GPU-Util             |   <- header
/// | Temp        Power                  | Memory-Usage        |                      |   <- rows
/// |====================================+=====================+======================|
/// | 0           MXC500                 | 0000:05:00.0        | 0%                   |   <- one
/// | 51C         71W                    | 60982/65536 MiB     |                      |   <- record
/// +------------------------------------+---------------------+----------------------+
/// ```
///
/// The header is the run of box rows just above the first `|===|` rule that follows a row
/// naming `header_key` (e.g. `bus-id`); every record has as many rows as the header, each row
/// as many cells as its header row, and ends with a rule. Values pair with the names of the
/// same cell ([`pair_fields`]). Returns the records and the index of the line after the table.
pub fn parse_box_records(
    tool: &'static str,
    lines: &[Line],
    header_key: &str,
) -> Result<(Vec<BoxRecord>, usize), ParseError> {
    let key_at = lines
        .iter()
        .position(|l| is_box_row(&l.text) && l.text.to_ascii_lowercase().contains(header_key))
        .ok_or_else(|| {
            ParseError::no_match(
                tool,
                lines,
                format!("a status table header naming \"{header_key}\""),
            )
        })?;
    let rule_at =
        (key_at..lines.len()).find(|&i| is_double_rule(&lines[i].text)).ok_or_else(|| {
            ParseError::at_end(tool, lines, "a \"|====|\" rule below the table header")
        })?;
    let mut head_start = rule_at;
    while head_start > 0 && is_box_row(&lines[head_start - 1].text) {
        head_start -= 1;
    }
    if head_start > key_at {
        let l = &lines[rule_at];
        return Err(ParseError::new(
            tool,
            l.no,
            &l.text,
            "the table header directly above this rule",
        ));
    }
    let mut header: Vec<Vec<Vec<Field>>> = Vec::new();
    for l in &lines[head_start..rule_at] {
        let cells = box_cells(&l.text)
            .ok_or_else(|| ParseError::new(tool, l.no, &l.text, "a header row closed by \"|\""))?;
        header.push(cells.iter().map(|c| split_fields(c)).collect());
    }

    let mut records = Vec::new();
    let mut i = rule_at + 1;
    let mut rows: Vec<&Line> = Vec::new();
    loop {
        let Some(l) = lines.get(i) else {
            if rows.is_empty() && !records.is_empty() {
                break;
            }
            return Err(ParseError::at_end(
                tool,
                lines,
                "a \"+----+\" rule closing the GPU record",
            ));
        };
        if is_box_row(&l.text) {
            if rows.len() == header.len() {
                return Err(ParseError::new(
                    tool,
                    l.no,
                    &l.text,
                    format!("a rule after {} rows of a GPU record", header.len()),
                ));
            }
            rows.push(l);
        } else if is_rule(&l.text) {
            if rows.is_empty() {
                if records.is_empty() {
                    return Err(ParseError::new(tool, l.no, &l.text, "a GPU row below the header"));
                }
                break;
            }
            if rows.len() != header.len() {
                return Err(ParseError::new(
                    tool,
                    l.no,
                    &l.text,
                    format!(
                        "{} rows per GPU record as in the header, got {}",
                        header.len(),
                        rows.len()
                    ),
                ));
            }
            records.push(record_from_rows(tool, &header, &rows)?);
            rows.clear();
        } else if rows.is_empty() && !records.is_empty() {
            break;
        } else if rows.is_empty() {
            return Err(ParseError::new(tool, l.no, &l.text, "a GPU row below the header"));
        } else {
            return Err(ParseError::new(tool, l.no, &l.text, "the rest of the GPU record"));
        }
        i += 1;
    }
    Ok((records, i))
}

fn record_from_rows(
    tool: &'static str,
    header: &[Vec<Vec<Field>>],
    rows: &[&Line],
) -> Result<BoxRecord, ParseError> {
    let mut fields = Vec::new();
    for (head, l) in header.iter().zip(rows) {
        let cells = box_cells(&l.text)
            .ok_or_else(|| ParseError::new(tool, l.no, &l.text, "a row closed by \"|\""))?;
        if cells.len() != head.len() {
            return Err(ParseError::new(
                tool,
                l.no,
                &l.text,
                format!("{} cells as in the header, got {}", head.len(), cells.len()),
            ));
        }
        for (names, cell) in head.iter().zip(&cells) {
            for (n, v) in pair_fields(names, &split_fields(cell)) {
                fields.push((n.to_ascii_lowercase(), v, l.no));
            }
        }
    }
    Ok(BoxRecord { line: rows[0].no, fields })
}

/// One row of a box-drawn process table: `(name, value)` pairs with lowercased names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

impl ProcessRow {
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|want| self.fields.iter().find(|(n, _)| n == want).map(|(_, v)| v.as_str()))
    }
}

/// Reads the process table that follows the GPU table, starting the search at line index
/// `from`:
///
/// ```text
/// +---------------------------------------------------------------------------------+
/// | Process:                                                                        |
/// |  GPU                    PID         Process Name                 GPU Memory     |
/// |                                                                  Usage(MiB)     |
/// |=================================================================================|
/// |  0                    15652         python                       60032          |
/// |  no process found                                                               |   <- idle
/// +---------------------------------------------------------------------------------+
/// ```
///
/// Names come from the first header row after the title. Rows saying there is no process
/// (`no process found`, `No running processes found`) yield nothing. `Ok(None)` when there is
/// no process table at all.
pub fn parse_box_processes(
    tool: &'static str,
    lines: &[Line],
    from: usize,
) -> Result<Option<Vec<ProcessRow>>, ParseError> {
    let Some(title) = (from..lines.len()).find(|&i| {
        box_cells(&lines[i].text).is_some_and(|c| {
            c.len() == 1 && c[0].trim_start().to_ascii_lowercase().starts_with("process")
        })
    }) else {
        return Ok(None);
    };
    let rule = (title..lines.len()).find(|&i| is_double_rule(&lines[i].text)).ok_or_else(|| {
        ParseError::at_end(tool, lines, "a \"|====|\" rule below the process header")
    })?;
    let head = lines.get(title + 1).filter(|_| title + 1 < rule).ok_or_else(|| {
        let l = &lines[title];
        ParseError::new(tool, l.no, &l.text, "a process table header row (GPU, PID, ...)")
    })?;
    let names = split_fields(&box_cells(&head.text).map(|c| c.join(" ")).unwrap_or_default());
    let mut rows = Vec::new();
    for l in &lines[rule + 1..] {
        if is_rule(&l.text) {
            return Ok(Some(rows));
        }
        let Some(cells) = box_cells(&l.text) else {
            return Err(ParseError::new(tool, l.no, &l.text, "a process row closed by \"|\""));
        };
        let joined = cells.join(" ");
        let lower = joined.trim().to_ascii_lowercase();
        if lower.starts_with("no ") && lower.contains("process") {
            continue;
        }
        rows.push(ProcessRow { line: l.no, fields: process_fields(&names, &joined) });
    }
    Err(ParseError::at_end(tool, lines, "a \"+----+\" rule closing the process table"))
}

fn process_fields(names: &[Field], row: &str) -> Vec<(String, String)> {
    pair_fields(names, &split_fields(row))
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect()
}

/// Largest file of a snapshot, and largest config or profile: tool outputs and configs are a few
/// KiB to a few MiB (hwloc XML of a large host); more is not what the file should hold.
pub const MAX_SMALL_FILE: u64 = 64 << 20;

/// Reads a whole input file (a snapshot file, a config, a dataset) that must be a regular file:
/// a fifo would block the read forever and `/dev/zero` would fill memory, so anything else is
/// refused with `InvalidInput` ("not a regular file (a fifo)"), without blocking (the file is
/// opened non-blocking, then checked with fstat). At most `limit` bytes: more is `InvalidData`.
/// A missing file stays `NotFound`.
pub fn read_input(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a fifo")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        return Err(Error::new(ErrorKind::InvalidInput, format!("not a regular file ({what})")));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let mib = limit >> 20;
        return Err(Error::new(ErrorKind::InvalidData, format!("larger than {mib} MiB")));
    }
    Ok(bytes)
}

/// [`read_input`] of UTF-8 text: bytes that are no UTF-8 are `InvalidData` ("not UTF-8 text").
pub fn read_input_text(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_input(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_text_stays_on_one_line() {
        let e = ParseError::new("t", 2, "a\rb\nc\u{1b}d", "x");
        assert_eq!(e.found, "a\\rb\\nc\\u{1b}d");
        assert!(!e.to_string().contains(['\n', '\r']), "{e}");
    }

    #[test]
    fn strips_ansi_underline_and_cr() {
        let lines = clean_lines("\x1b[4m\tGPU0\tCPU Affinity\x1b[0m\r\nGPU0\t X \t0-7  \r\n");
        assert_eq!(lines[0].text, "\tGPU0\tCPU Affinity");
        assert_eq!(lines[1].text, "GPU0\t X \t0-7");
        assert_eq!(lines[1].no, 2);
    }

    #[test]
    fn fields_keep_single_spaces_and_slashes_together() {
        let f: Vec<_> = split_fields(" 30%   31C    P8              5W /  300W ")
            .into_iter()
            .map(|f| f.text)
            .collect();
        assert_eq!(f, ["30%", "31C", "P8", "5W /  300W"]);
        let f: Vec<_> = split_fields(" 0     MetaX C500 ").into_iter().map(|f| f.text).collect();
        assert_eq!(f, ["0", "MetaX C500"]);
    }

    #[test]
    fn pairs_fewer_values_by_position() {
        let names = split_fields(" GPU-Util      sGPU-M ");
        let values = split_fields("             Disabled ");
        assert_eq!(pair_fields(&names, &values), [("sGPU-M".into(), "Disabled".into())]);
    }

    #[test]
    fn numbers_with_units() {
        assert_eq!(number_with_unit("51C", &["C"]), Some(51.0));
        assert_eq!(number_with_unit("49140MiB", &["MiB"]), Some(49140.0));
        assert_eq!(number_with_unit("[N/A]", &["W"]), None);
        assert_eq!(number_with_unit("W", &["W"]), None);
    }

    #[test]
    fn error_message_names_tool_line_and_text() {
        let e = ParseError::new("mx-smi", 12, "60278MiB", "a memory cell like \"60278/65536 MiB\"");
        assert_eq!(
            e.to_string(),
            "mx-smi: line 12: expected a memory cell like \"60278/65536 MiB\", found \"60278MiB\""
        );
    }
}
