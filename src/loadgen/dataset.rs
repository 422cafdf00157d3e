//! Prompt datasets for the load sweep: openqa JSONL (one JSON object a line, the prompt in a
//! selectable field), line-by-line text, ShareGPT JSON and random synthetic prompts. Loading
//! filters by prompt length (in characters) and shuffles with a seed, so two runs with the same
//! seed send the same prompts in the same order. It does not build request bodies (`client`).
//!
//! Inputs it expects:
//! ```text
//! openqa:   {"question": "什么是NUMA?", "human_answers": [...], ...}      (HC3 open_qa.jsonl)
//! line:     Explain NUMA in one paragraph.
//! sharegpt: [{"id": "x", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", ...}]}]
//! ```

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read dataset {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("dataset {path}, line {line}: not a JSON object: {source}")]
    JsonLine { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("dataset {path}, line {line}: no string field \"{field}\" (pick another with --dataset-field)")]
    MissingField { path: PathBuf, line: usize, field: String },
    #[error("dataset {path}: not a ShareGPT JSON array: {source}")]
    ShareGpt { path: PathBuf, source: serde_json::Error },
    #[error("dataset {path}: no prompt left after the length filter ({total} read, {min}..={max} characters kept)")]
    Empty { path: PathBuf, total: usize, min: usize, max: String },
    #[error("the {kind} dataset needs --dataset-path")]
    NoPath { kind: &'static str },
    #[error("random dataset: --input-len must be at least 1")]
    ZeroLength,
}

/// Which kind of dataset, and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// JSON lines, the prompt in `field` (the seed's HC3 `open_qa.jsonl` uses `question`).
    OpenQa { path: PathBuf, field: String },
    /// One prompt per non-empty line.
    Lines { path: PathBuf },
    /// ShareGPT JSON: the first human turn of each conversation.
    ShareGpt { path: PathBuf },
    /// `count` random prompts of `input_len` words each (roughly that many tokens).
    Random { input_len: usize, count: usize },
}

/// Prompt length limits, in characters (Unicode scalar values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LengthFilter {
    pub min_chars: usize,
    pub max_chars: Option<usize>,
}

/// The loaded prompts in send order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub prompts: Vec<String>,
    /// Prompts read before filtering.
    pub read: usize,
    /// Description for reports (`openqa:/data/open_qa.jsonl`).
    pub source: String,
}

impl Dataset {
    pub fn load(spec: &DatasetSpec, filter: LengthFilter, seed: u64) -> Result<Self, DatasetError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (raw, source, path) = match spec {
            DatasetSpec::OpenQa { path, field } => (
                parse_openqa(&read(path)?, field, path)?,
                format!("openqa:{}", path.display()),
                path.clone(),
            ),
            DatasetSpec::Lines { path } => {
                (parse_lines(&read(path)?), format!("line:{}", path.display()), path.clone())
            }
            DatasetSpec::ShareGpt { path } => (
                parse_sharegpt(&read(path)?, path)?,
                format!("sharegpt:{}", path.display()),
                path.clone(),
            ),
            DatasetSpec::Random { input_len, count } => {
                if *input_len == 0 {
                    return Err(DatasetError::ZeroLength);
                }
                let prompts = (0..*count).map(|_| random_prompt(&mut rng, *input_len)).collect();
                (prompts, format!("random:{input_len} words"), PathBuf::from("(random)"))
            }
        };
        let read = raw.len();
        let mut prompts: Vec<String> = raw
            .into_iter()
            .filter(|p| {
                let n = p.chars().count();
                n >= filter.min_chars.max(1) && filter.max_chars.is_none_or(|m| n <= m)
            })
            .collect();
        if prompts.is_empty() {
            return Err(DatasetError::Empty {
                path,
                total: read,
                min: filter.min_chars,
                max: filter.max_chars.map_or_else(|| "any".into(), |m| m.to_string()),
            });
        }
        prompts.shuffle(&mut rng);
        Ok(Self { prompts, read, source })
    }

    /// The prompt for the `i`-th request (the dataset repeats when the sweep needs more).
    pub fn index(&self, i: u64) -> usize {
        (i % self.prompts.len() as u64) as usize
    }
}

fn read(path: &Path) -> Result<String, DatasetError> {
    std::fs::read_to_string(path)
        .map_err(|source| DatasetError::Read { path: path.to_path_buf(), source })
}

/// openqa JSONL: `{"question": "..."}` per line; blank lines are skipped.
pub fn parse_openqa(text: &str, field: &str, path: &Path) -> Result<Vec<String>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|source| {
            DatasetError::JsonLine { path: path.to_path_buf(), line: i + 1, source }
        })?;
        match v.get(field).and_then(|q| q.as_str()) {
            Some(q) => out.push(q.to_string()),
            None => {
                return Err(DatasetError::MissingField {
                    path: path.to_path_buf(),
                    line: i + 1,
                    field: field.into(),
                })
            }
        }
    }
    Ok(out)
}

/// Line-by-line text: each non-blank line is a prompt.
pub fn parse_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// ShareGPT: the first `human`/`user` turn of each conversation with one.
pub fn parse_sharegpt(text: &str, path: &Path) -> Result<Vec<String>, DatasetError> {
    #[derive(serde::Deserialize)]
    struct Conv {
        #[serde(default)]
        conversations: Vec<Turn>,
    }
    #[derive(serde::Deserialize)]
    struct Turn {
        #[serde(default)]
        from: String,
        #[serde(default)]
        value: String,
    }
    let convs: Vec<Conv> = serde_json::from_str(text)
        .map_err(|source| DatasetError::ShareGpt { path: path.to_path_buf(), source })?;
    Ok(convs
        .into_iter()
        .filter_map(|c| c.conversations.into_iter().find(|t| t.from == "human" || t.from == "user"))
        .map(|t| t.value)
        .collect())
}

const WORDS: &[&str] = &[
    "the", "model", "server", "memory", "node", "token", "batch", "cache", "latency", "request",
    "stream", "kernel", "thread", "socket", "queue", "value", "system", "network", "device",
    "process", "signal", "buffer", "table", "vector", "matrix", "layer", "weight", "answer",
    "question", "number", "river", "mountain", "city", "light",
];

fn random_prompt(rng: &mut impl Rng, words: usize) -> String {
    let mut s = String::with_capacity(words * 7);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openqa_reads_the_selected_field_and_names_bad_lines() {
        let p = Path::new("x.jsonl");
        let text = "{\"question\": \"a\"}\n\n{\"question\": \"b\", \"other\": 1}\n";
        assert_eq!(parse_openqa(text, "question", p).unwrap(), vec!["a", "b"]);
        let err = parse_openqa("{\"input\": \"a\"}\n", "question", p).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("--dataset-field"), "{err}");
        assert_eq!(parse_openqa("{\"input\": \"a\"}\n", "input", p).unwrap(), vec!["a"]);
        let err = parse_openqa("{\"question\": \"a\"}\nnot json\n", "question", p).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn sharegpt_takes_the_first_human_turn() {
        let text = r#"[{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q1"},{"from":"gpt","value":"a"}]},
                      {"conversations":[]}, {"conversations":[{"from":"user","value":"q2"}]}]"#;
        assert_eq!(parse_sharegpt(text, Path::new("s.json")).unwrap(), vec!["q1", "q2"]);
        assert!(parse_sharegpt("{}", Path::new("s.json")).is_err());
    }

    #[test]
    fn same_seed_same_order_and_filter_counts_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.txt");
        let lines: String = (0..50).map(|i| format!("{}\n", "é".repeat(i + 1))).collect();
        std::fs::write(&path, lines).unwrap();
        let spec = DatasetSpec::Lines { path };
        let filter = LengthFilter { min_chars: 10, max_chars: Some(20) };
        let a = Dataset::load(&spec, filter, 7).unwrap();
        let b = Dataset::load(&spec, filter, 7).unwrap();
        let c = Dataset::load(&spec, filter, 8).unwrap();
        assert_eq!(a.prompts, b.prompts);
        assert_ne!(a.prompts, c.prompts);
        assert_eq!(a.prompts.len(), 11);
        assert_eq!(a.read, 50);
        assert!(a.prompts.iter().all(|p| (10..=20).contains(&p.chars().count())));
        let err =
            Dataset::load(&spec, LengthFilter { min_chars: 100, max_chars: None }, 7).unwrap_err();
        assert!(matches!(err, DatasetError::Empty { total: 50, .. }));
    }

    #[test]
    fn random_prompts_have_the_requested_word_count() {
        let d = Dataset::load(
            &DatasetSpec::Random { input_len: 32, count: 5 },
            LengthFilter::default(),
            1,
        )
        .unwrap();
        assert_eq!(d.prompts.len(), 5);
        assert!(d.prompts.iter().all(|p| p.split(' ').count() == 32));
        assert_eq!(d.index(7), 2);
    }

    #[test]
    fn missing_file_is_named() {
        let spec = DatasetSpec::Lines { path: "/nonexistent/x.txt".into() };
        let err = Dataset::load(&spec, LengthFilter::default(), 0).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.txt"), "{err}");
    }
}
