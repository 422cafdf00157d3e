//! The mutator of the fuzz harness: deterministic, seeded edits of a seed input (a captured
//! tool output, a snapshot file, a config). Bytes in, bytes out: a byte flip may leave invalid
//! UTF-8, which the file-reading entry points must refuse and the `&str` ones see through
//! `from_utf8_lossy`. It knows nothing of the parsers.

use rand::rngs::StdRng;
use rand::{Rng, RngCore};

/// Numbers that overflow or underflow every integer width a parser might use.
const HUGE: &[&str] = &[
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "2147483648",
    "9223372036854775807",
    "65536",
    "1e308",
    "NaN",
    "inf",
    "0x7fffffffffffffff",
];
const NEGATIVE: &[&str] = &["-1", "-0", "-2147483649", "-9223372036854775809", "-4294967295", "-"];
/// CPU lists no kernel prints.
const ODD_CPULISTS: &[&str] = &[
    "0-4294967295",
    "15-0",
    "0-",
    "-",
    "-3",
    "0,,1",
    ",",
    "0-3:2",
    "0-1048576",
    "1-1-1",
    " , ",
    "0x",
    "0xffffffff,ffffffff,ffffffff",
    "٣",
    "0-3,2-5,4-7",
    "4294967295",
    "1-2,",
];
const UNICODE: &[&str] = &[
    "é",
    "\u{202e}",
    "\u{feff}",
    "🦀",
    "Ⅻ",
    "１２",
    "e\u{301}",
    "\u{2028}",
    "\u{85}",
    "ß",
    "ǅ",
    "\u{0}",
    "\u{1b}[31m",
    "\r",
    "\t",
    "│",
    "═",
];

/// Which edit was made, for the report of a finding.
pub type What = String;

fn pos(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        rng.random_range(0..=len)
    }
}

/// Line spans `(start, end)` of `b` (end excludes the newline).
fn lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            out.push((start, i));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// Spans of ASCII digit runs.
fn numbers(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Spans that look like a CPU list (`0-15,32-47`) or, failing that, any number.
fn cpulists(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'-' || b[i] == b',') {
                i += 1;
            }
            if b[s..i].contains(&b'-') || b[s..i].contains(&b',') {
                out.push((s, i));
            }
        } else {
            i += 1;
        }
    }
    if out.is_empty() {
        numbers(b)
    } else {
        out
    }
}

fn replace_span(
    b: &mut Vec<u8>,
    rng: &mut StdRng,
    spans: &[(usize, usize)],
    with: &[&str],
) -> bool {
    if spans.is_empty() {
        return false;
    }
    let (s, e) = spans[rng.random_range(0..spans.len())];
    let w = with[rng.random_range(0..with.len())];
    b.splice(s..e, w.bytes());
    true
}

/// One edit of `b`; returns what it did.
fn edit(b: &mut Vec<u8>, rng: &mut StdRng) -> What {
    let kind = rng.random_range(0..100u32);
    match kind {
        0..=14 => {
            let n = rng.random_range(1..=8);
            for _ in 0..n {
                if b.is_empty() {
                    break;
                }
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            format!("flip {n} bytes")
        }
        15..=24 => {
            let at = pos(rng, b.len());
            b.truncate(at);
            format!("truncate at {at}")
        }
        25..=34 => {
            let ls = lines(b);
            if ls.is_empty() {
                return "duplicate (no line)".into();
            }
            let (s, e) = ls[rng.random_range(0..ls.len())];
            let times = if rng.random_bool(0.1) {
                rng.random_range(50..2000)
            } else {
                rng.random_range(1..4)
            };
            // At most ~2 MB of copies: a 1 MB line duplicated 2000 times tests the machine's
            // memory, not the parser.
            let times = times.min((2 << 20) / (e - s + 1)).max(1);
            let mut line = b[s..e].to_vec();
            line.push(b'\n');
            let copies: Vec<u8> = line.iter().copied().cycle().take(line.len() * times).collect();
            b.splice(s..s, copies);
            format!("duplicate line at {s} x{times}")
        }
        35..=41 => {
            let ls = lines(b);
            if ls.is_empty() {
                return "delete (no line)".into();
            }
            let i = rng.random_range(0..ls.len());
            let j = (i + rng.random_range(1..4)).min(ls.len());
            let (s, _) = ls[i];
            let end = if j < ls.len() { ls[j].0 } else { b.len() };
            b.drain(s..end);
            format!("delete lines {}..{}", i + 1, j + 1)
        }
        42..=51 => {
            let done = replace_span(b, rng, &numbers(b), HUGE);
            format!("huge number{}", if done { "" } else { " (none)" })
        }
        52..=58 => {
            let done = replace_span(b, rng, &numbers(b), NEGATIVE);
            format!("negative number{}", if done { "" } else { " (none)" })
        }
        59..=67 => {
            let done = replace_span(b, rng, &cpulists(b), ODD_CPULISTS);
            format!("odd cpulist{}", if done { "" } else { " (none)" })
        }
        68..=76 => {
            let at = pos(rng, b.len());
            let u = UNICODE[rng.random_range(0..UNICODE.len())];
            // Insert at a char boundary or not: both are inputs a file can hold.
            b.splice(at..at, u.bytes());
            format!("unicode {u:?} at {at}")
        }
        77..=83 => {
            let ls = lines(b);
            if ls.len() < 2 {
                return "swap (too few lines)".into();
            }
            let i = rng.random_range(0..ls.len());
            let j = rng.random_range(0..ls.len());
            let (a, z) = (ls[i.min(j)], ls[i.max(j)]);
            if a == z {
                return "swap (same line)".into();
            }
            let first = b[a.0..a.1].to_vec();
            let second = b[z.0..z.1].to_vec();
            b.splice(z.0..z.1, first);
            b.splice(a.0..a.1, second);
            format!("swap lines {} and {}", i.min(j) + 1, i.max(j) + 1)
        }
        84..=91 => {
            // Splice a chunk of the input elsewhere (column shifts, repeated headers).
            if b.is_empty() {
                return "splice (empty)".into();
            }
            let s = rng.random_range(0..b.len());
            let e = (s + rng.random_range(1..64)).min(b.len());
            let chunk = b[s..e].to_vec();
            let at = pos(rng, b.len());
            b.splice(at..at, chunk);
            format!("splice {s}..{e} at {at}")
        }
        92..=95 => {
            let at = pos(rng, b.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random::<u8>()).collect();
            b.splice(at..at, junk);
            format!("random bytes at {at}")
        }
        96..=97 => {
            b.clear();
            "empty".into()
        }
        _ => {
            // A 1 MB line, of a character the input already uses (or digits and spaces).
            let at = pos(rng, b.len());
            let unit: &[u8] = match rng.random_range(0..4) {
                0 => b"1 ",
                1 => b"0-1,",
                2 => b"|",
                _ => b"x",
            };
            let line: Vec<u8> = unit.iter().copied().cycle().take(1 << 20).collect();
            b.splice(at..at, line);
            format!("1 MB line at {at}")
        }
    }
}

/// A mutated copy of `seed`: 1 to 3 edits (empty and 1 MB inputs included).
pub fn mutate(seed: &[u8], rng: &mut StdRng) -> (Vec<u8>, What) {
    let mut b = seed.to_vec();
    let n = 1 + (rng.next_u32() % 3) as usize;
    let mut what = Vec::with_capacity(n);
    for _ in 0..n {
        what.push(edit(&mut b, rng));
    }
    (b, what.join("; "))
}
