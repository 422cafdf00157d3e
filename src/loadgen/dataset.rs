//! Prompt datasets for the load sweep: openqa JSONL (one JSON object a line, the prompt in a
//! selectable field), line-by-line text, ShareGPT JSON and random synthetic prompts; and the
//! workloads whose prompts are made from lengths (`synth`): a replayed trace (`trace`: each
//! prompt with its own output length and send offset, in trace order, never filtered or
//! shuffled) and the shared-prefix generator (one of K prefixes + a unique suffix). Loading
//! filters by prompt length and shuffles with a seed, so two runs with the same seed send the
//! same prompts in the same order. Lengths are in characters, or in tokens when a
//! `tokenizer.json` is given (`super::tokenizer`: prompt text only, no special tokens, no chat
//! template); then every kept prompt's token count is computed here, once, for the records of
//! servers that send no `usage`. It does not build request bodies (`client`).
//!
//! Inputs it expects:
//! ```text
//! openqa:   {"question": "什么是NUMA?", "human_answers": [...], ...}      (HC3 open_qa.jsonl)
//! line:     Explain NUMA in one paragraph.
//! sharegpt: [{"id": "x", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", ...}]}]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::synth;
use super::tokenizer::{PromptTokenizer, TokenizerError};
use super::trace::{Trace, TraceError, TraceFormat};

/// The longest random prompt, in words or tokens (16 Mi: longer than any model's context).
pub const MAX_INPUT_LEN: usize = 1 << 24;
/// The most words a random dataset generates, all prompts together (1 Gi: several GiB).
pub const MAX_RANDOM_WORDS: usize = 1 << 30;

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
    #[error("dataset {path}: no prompt left after the length filter ({total} read, {min}..={max} {unit} kept)")]
    Empty { path: PathBuf, total: usize, min: usize, max: String, unit: LengthUnit },
    #[error("the {kind} dataset needs --dataset-path")]
    NoPath { kind: &'static str },
    #[error("random dataset: --input-len must be at least 1")]
    ZeroLength,
    #[error("synthetic dataset: prompts of {input_len} words are over {max}, longer than any model's context (--input-len, --prefix-len)")]
    TooLong { input_len: usize, max: usize },
    #[error("synthetic dataset: {count} prompts of {input_len} words are over {max} words in all (fewer requests, or shorter prompts)")]
    TooLarge { input_len: usize, count: usize, max: usize },
    #[error("random dataset: tokenizer {tokenizer}: found no text of exactly {tokens} tokens (the last try re-encoded to {got})")]
    RandomLength { tokenizer: PathBuf, tokens: usize, got: usize },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("shared prefixes: --num-prefixes must be at least 1")]
    NoPrefixes,
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
    /// `count` random prompts of `input_len` words each (roughly that many tokens), or of
    /// exactly `input_len` tokens when loaded with a tokenizer.
    Random { input_len: usize, count: usize },
    /// ShareGPT full dialogues (`--multi-turn`): every human turn of each conversation (at most
    /// `max_turns` a conversation), sent in order with the conversation so far.
    ShareGptDialogues { path: PathBuf, max_turns: Option<usize> },
    /// A request trace (`--trace`): one prompt per row, in trace order.
    Trace { path: PathBuf, format: TraceFormat },
    /// `count` prompts, prompt `i` = shared prefix `i % num_prefixes` of `prefix_len` words +
    /// a unique suffix of `suffix_len` words (each word one simulator token).
    SharedPrefix { prefix_len: u32, num_prefixes: u64, suffix_len: u32, count: usize },
}

/// The unit of prompt lengths: the length filter's limits and the random prompts' length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthUnit {
    /// Unicode scalar values (no tokenizer given); random prompts count words instead.
    #[default]
    Characters,
    /// Tokens of the given tokenizer (prompt text only, no special tokens, no chat template).
    Tokens,
}

impl std::fmt::Display for LengthUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Characters => "characters",
            Self::Tokens => "tokens",
        })
    }
}

/// Prompt length limits, in the dataset's `LengthUnit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LengthFilter {
    pub min: usize,
    pub max: Option<usize>,
}

/// The loaded prompts in send order.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub prompts: Vec<String>,
    /// Token count of each prompt (same order), when loaded with a tokenizer: the input tokens
    /// of a request whose server sends no `usage`.
    pub prompt_tokens: Option<Vec<u32>>,
    /// Prompts read before filtering.
    pub read: usize,
    /// Description for reports (`openqa:/data/open_qa.jsonl`).
    pub source: String,
    /// The unit of `filter` (and of a random dataset's `input_len`).
    pub unit: LengthUnit,
    pub filter: LengthFilter,
    /// The `tokenizer.json` the lengths were counted with.
    pub tokenizer: Option<PathBuf>,
    /// `max_tokens` of each prompt's request (a trace's output lengths), same order.
    pub max_tokens: Option<Vec<u32>>,
    /// When each prompt is sent, from the first (a trace's arrivals, before `--trace-speed`).
    pub offsets: Option<Vec<Duration>>,
    /// Multi-turn dialogues: `prompts` are then every user turn, conversation by conversation.
    pub dialogues: Option<Dialogues>,
}

/// Conversations whose user turns are sent one after the other, each with the conversation
/// before it (the dataset's own answers as the assistant's turns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dialogues {
    /// Each conversation's messages, `(role, content)` with roles `system`, `user`, `assistant`.
    pub messages: Vec<Vec<(String, String)>>,
    /// Per prompt (user turn): its conversation and the index of its message there.
    pub turns: Vec<(usize, usize)>,
    /// Per conversation: its first prompt and its number of turns.
    pub spans: Vec<(usize, usize)>,
}

impl Dialogues {
    /// The messages of prompt `i`'s request: its conversation up to and including its turn.
    pub fn request_messages(&self, i: usize) -> &[(String, String)] {
        let (c, m) = self.turns[i];
        &self.messages[c][..=m]
    }

    /// Requests sent for tickets `0..tickets` (ticket `k` runs conversation `k % len`).
    pub fn requests_for(&self, tickets: u64) -> u64 {
        let n = self.spans.len() as u64;
        if n == 0 {
            return 0;
        }
        let per_round: u64 = self.spans.iter().map(|s| s.1 as u64).sum();
        let rest: u64 = self.spans[..(tickets % n) as usize].iter().map(|s| s.1 as u64).sum();
        tickets / n * per_round + rest
    }
}

impl Dataset {
    /// Loads, filters by length and shuffles. With `tokenizer`, the filter's limits are
    /// tokens, random prompts are exactly `input_len` tokens, and every kept prompt's token
    /// count is kept in `prompt_tokens`.
    pub fn load(
        spec: &DatasetSpec,
        filter: LengthFilter,
        tokenizer: Option<&PromptTokenizer>,
        seed: u64,
    ) -> Result<Self, DatasetError> {
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
                check_synthetic_size(*input_len, *count)?;
                let (prompts, unit) = match tokenizer {
                    None => (
                        (0..*count).map(|_| random_prompt(&mut rng, *input_len)).collect(),
                        "words",
                    ),
                    Some(t) => (
                        (0..*count)
                            .map(|_| random_prompt_tokens(&mut rng, *input_len, t))
                            .collect::<Result<_, _>>()?,
                        "tokens",
                    ),
                };
                (prompts, format!("random:{input_len} {unit}"), PathBuf::from("(random)"))
            }
            DatasetSpec::Trace { path, format } => return Self::trace(path, *format, tokenizer),
            DatasetSpec::ShareGptDialogues { path, max_turns } => {
                let mut convs = parse_sharegpt_dialogues(&read(path)?, path, *max_turns)?;
                if convs.is_empty() {
                    return Err(DatasetError::Empty {
                        path: path.clone(),
                        total: 0,
                        min: 0,
                        max: "any".into(),
                        unit: LengthUnit::Characters,
                    });
                }
                convs.shuffle(&mut rng);
                let mut d = Dialogues::default();
                let mut prompts = Vec::new();
                for (c, msgs) in convs.into_iter().enumerate() {
                    let first = prompts.len();
                    for (m, (role, text)) in msgs.iter().enumerate() {
                        if role == "user" {
                            d.turns.push((c, m));
                            prompts.push(text.clone());
                        }
                    }
                    d.spans.push((first, prompts.len() - first));
                    d.messages.push(msgs);
                }
                let source = format!("sharegpt-multi-turn:{}", path.display());
                let mut made = Self::made(prompts, None, None, source, tokenizer)?;
                made.dialogues = Some(d);
                return Ok(made);
            }
            DatasetSpec::SharedPrefix { prefix_len, num_prefixes, suffix_len, count } => {
                if *num_prefixes == 0 {
                    return Err(DatasetError::NoPrefixes);
                }
                let len = *prefix_len as usize + *suffix_len as usize;
                if len == 0 {
                    return Err(DatasetError::ZeroLength);
                }
                check_synthetic_size(len, *count)?;
                let prompts = (0..*count as u64)
                    .map(|i| {
                        synth::prefixed_prompt(i, *prefix_len, *num_prefixes, *suffix_len, seed)
                    })
                    .collect();
                let source = format!(
                    "shared-prefix:{num_prefixes} x {prefix_len} words + {suffix_len} words"
                );
                return Self::made(prompts, None, None, source, tokenizer);
            }
        };
        let read = raw.len();
        let unit = if tokenizer.is_some() { LengthUnit::Tokens } else { LengthUnit::Characters };
        // Token counts are computed once here, for every prompt read (the filter needs them
        // all); the request path only looks them up.
        let lengths: Vec<usize> = match (tokenizer, spec) {
            // Built and re-checked to exactly `input_len` tokens already.
            (Some(_), DatasetSpec::Random { input_len, .. }) => vec![*input_len; raw.len()],
            (Some(t), _) => t.count_all(&raw)?,
            (None, _) => raw.iter().map(|p| p.chars().count()).collect(),
        };
        let keep = |n: usize, p: &str| {
            !p.is_empty() && n >= filter.min.max(1) && filter.max.is_none_or(|m| n <= m)
        };
        let mut kept: Vec<(String, usize)> =
            raw.into_iter().zip(lengths).filter(|(p, n)| keep(*n, p)).collect();
        if kept.is_empty() {
            return Err(DatasetError::Empty {
                path,
                total: read,
                min: filter.min,
                max: filter.max.map_or_else(|| "any".into(), |m| m.to_string()),
                unit,
            });
        }
        // Shuffling the pairs draws the same numbers as shuffling the prompts alone did, so a
        // seed gives the same order with or without a tokenizer (for the same kept set).
        kept.shuffle(&mut rng);
        let prompt_tokens = tokenizer
            .map(|_| kept.iter().map(|(_, n)| u32::try_from(*n).unwrap_or(u32::MAX)).collect());
        Ok(Self {
            prompts: kept.into_iter().map(|(p, _)| p).collect(),
            prompt_tokens,
            read,
            source,
            unit,
            filter,
            tokenizer: tokenizer.map(|t| t.path().to_path_buf()),
            max_tokens: None,
            offsets: None,
            dialogues: None,
        })
    }

    /// A trace's prompts, output lengths and offsets, in trace order.
    fn trace(
        path: &Path,
        format: TraceFormat,
        tokenizer: Option<&PromptTokenizer>,
    ) -> Result<Self, DatasetError> {
        let t = Trace::load(path, format)?;
        if t.skipped > 0 {
            tracing::info!(
                skipped = t.skipped,
                "trace rows with 0 response tokens (failed requests) left out"
            );
        }
        let prompts = t
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| synth::trace_prompt(i as u64, r.input_tokens, &r.hash_ids))
            .collect();
        Self::made(
            prompts,
            Some(t.rows.iter().map(|r| r.output_tokens).collect()),
            Some(t.rows.iter().map(|r| r.offset).collect()),
            format!("{}:{}", format.name(), path.display()),
            tokenizer,
        )
    }

    /// A dataset made from lengths (a trace, shared prefixes): in its own order, neither
    /// filtered nor shuffled. With a tokenizer, each prompt's tokens are counted for the
    /// records (the words are one token each for the simulator, about one for a real
    /// vocabulary).
    fn made(
        prompts: Vec<String>,
        max_tokens: Option<Vec<u32>>,
        offsets: Option<Vec<Duration>>,
        source: String,
        tokenizer: Option<&PromptTokenizer>,
    ) -> Result<Self, DatasetError> {
        let prompt_tokens = tokenizer
            .map(|t| t.count_all(&prompts))
            .transpose()?
            .map(|v| v.into_iter().map(|n| u32::try_from(n).unwrap_or(u32::MAX)).collect());
        Ok(Self {
            read: prompts.len(),
            prompts,
            prompt_tokens,
            source,
            unit: if tokenizer.is_some() { LengthUnit::Tokens } else { LengthUnit::Characters },
            filter: LengthFilter::default(),
            tokenizer: tokenizer.map(|t| t.path().to_path_buf()),
            max_tokens,
            offsets,
            dialogues: None,
        })
    }

    /// The prompt for the `i`-th request (the dataset repeats when the sweep needs more).
    pub fn index(&self, i: u64) -> usize {
        (i % self.prompts.len() as u64) as usize
    }
}

/// The text of a dataset file: a regular file (a fifo or a device is refused, never waited on
/// or read without end) of UTF-8 text.
fn read(path: &Path) -> Result<String, DatasetError> {
    let err = |source| DatasetError::Read { path: path.to_path_buf(), source };
    crate::host::snapshot::read_input_text(path, u64::MAX).map_err(err)
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

/// One ShareGPT conversation: its turns, each with its speaker (`from`) and text.
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

fn read_sharegpt(text: &str, path: &Path) -> Result<Vec<Conv>, DatasetError> {
    serde_json::from_str(text)
        .map_err(|source| DatasetError::ShareGpt { path: path.to_path_buf(), source })
}

/// ShareGPT: the first `human`/`user` turn of each conversation with one.
pub fn parse_sharegpt(text: &str, path: &Path) -> Result<Vec<String>, DatasetError> {
    let convs = read_sharegpt(text, path)?;
    Ok(convs
        .into_iter()
        .filter_map(|c| c.conversations.into_iter().find(|t| t.from == "human" || t.from == "user"))
        .map(|t| t.value)
        .collect())
}

/// ShareGPT full dialogues: each conversation's messages with roles `system`, `user` (`human`,
/// `user`) and `assistant` (`gpt`, `assistant`, `chatgpt`, `bard`, `bing`), cut after its
/// `max_turns`-th user message and after its last one (a trailing answer is never sent);
/// messages of other roles are skipped, and conversations without a user message left out.
pub fn parse_sharegpt_dialogues(
    text: &str,
    path: &Path,
    max_turns: Option<usize>,
) -> Result<Vec<Vec<(String, String)>>, DatasetError> {
    let convs = read_sharegpt(text, path)?;
    let mut out = Vec::new();
    for c in convs {
        let mut msgs: Vec<(String, String)> = Vec::new();
        let mut users = 0;
        for t in c.conversations {
            let role = match t.from.as_str() {
                "system" => "system",
                "human" | "user" => "user",
                "gpt" | "assistant" | "chatgpt" | "bard" | "bing" => "assistant",
                _ => continue,
            };
            if role == "user" {
                if max_turns.is_some_and(|m| users >= m) {
                    break;
                }
                users += 1;
            }
            msgs.push((role.to_string(), t.value));
        }
        while msgs.last().is_some_and(|m| m.0 != "user") {
            msgs.pop();
        }
        if users > 0 && !msgs.is_empty() {
            out.push(msgs);
        }
    }
    Ok(out)
}

const WORDS: &[&str] = &[
    "the", "model", "server", "memory", "node", "token", "batch", "cache", "latency", "request",
    "stream", "kernel", "thread", "socket", "queue", "value", "system", "network", "device",
    "process", "signal", "buffer", "table", "vector", "matrix", "layer", "weight", "answer",
    "question", "number", "river", "mountain", "city", "light",
];

/// `words` random words from `WORDS`, space-separated.
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

/// Decode/re-encode rounds before giving up on one draw of words, and draws before giving up.
const ROUNDS: usize = 10;
const DRAWS: usize = 5;

/// A random prompt of exactly `tokens` tokens by `t`: draw words, encode, cut the ids to
/// `tokens`, decode, and re-encode to check, since a cut can re-encode differently (a word cut
/// to a piece, merges across the cut). Short: append more words; long: cut again.
/// For comparison, `vllm bench serve --dataset-name random` draws random token ids from the
/// vocabulary instead of words, then runs the same decode/re-encode/pad-or-cut loop
/// (`gen_prompt_decode_to_target_len`, 10 rounds) and only warns about a length still off;
/// words keep our prompts readable, and a length still off here is an error, not a warning.
fn random_prompt_tokens(
    rng: &mut impl Rng,
    tokens: usize,
    t: &PromptTokenizer,
) -> Result<String, DatasetError> {
    let mut got = 0;
    for _ in 0..DRAWS {
        let mut ids = t.ids(&random_prompt(rng, tokens), 0)?;
        for _ in 0..ROUNDS {
            while ids.len() < tokens {
                let more = t.ids(&random_prompt(rng, tokens - ids.len()), 0)?;
                if more.is_empty() {
                    break;
                }
                ids.extend(more);
            }
            ids.truncate(tokens);
            let text = t.decode(&ids)?;
            let again = t.ids(&text, 0)?;
            got = again.len();
            if got == tokens {
                return Ok(text);
            }
            ids = again;
        }
    }
    Err(DatasetError::RandomLength { tokenizer: t.path().to_path_buf(), tokens, got })
}

/// A synthetic dataset of `count` prompts of `len` words (or tokens) each is one the host can
/// make: no prompt over `MAX_INPUT_LEN`, not over `MAX_RANDOM_WORDS` in all. Each word is a
/// few bytes: past that the prompts alone would take gigabytes, and minutes, before the first
/// request is sent.
fn check_synthetic_size(len: usize, count: usize) -> Result<(), DatasetError> {
    if len > MAX_INPUT_LEN {
        return Err(DatasetError::TooLong { input_len: len, max: MAX_INPUT_LEN });
    }
    if len.saturating_mul(count) > MAX_RANDOM_WORDS {
        return Err(DatasetError::TooLarge { input_len: len, count, max: MAX_RANDOM_WORDS });
    }
    Ok(())
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
    fn sharegpt_dialogues_keep_every_turn_with_its_history() {
        let text = r#"[
          {"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q1"},
            {"from":"gpt","value":"a1"},{"from":"tool","value":"x"},{"from":"human","value":"q2"},
            {"from":"gpt","value":"a2"}]},
          {"conversations":[{"from":"gpt","value":"only an answer"}]},
          {"conversations":[{"from":"user","value":"r1"},{"from":"assistant","value":"b1"},
            {"from":"user","value":"r2"},{"from":"assistant","value":"b2"},{"from":"user","value":"r3"}]}]"#;
        let p = Path::new("s.json");
        let all = parse_sharegpt_dialogues(text, p, None).unwrap();
        let roles = |c: &[(String, String)]| c.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
        assert_eq!(all.len(), 2);
        assert_eq!(roles(&all[0]), ["system", "user", "assistant", "user"]);
        assert_eq!(all[0][3].1, "q2");
        assert_eq!(all[1].len(), 5);
        let two = parse_sharegpt_dialogues(text, p, Some(2)).unwrap();
        assert_eq!(roles(&two[1]), ["user", "assistant", "user"]);
        assert!(parse_sharegpt_dialogues("{}", p, None).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).unwrap();
        let spec = DatasetSpec::ShareGptDialogues { path, max_turns: None };
        let d = Dataset::load(&spec, LengthFilter::default(), None, 3).unwrap();
        let dl = d.dialogues.as_ref().unwrap();
        assert_eq!(d.prompts.len(), 5);
        let mut spans = dl.spans.iter().map(|s| s.1).collect::<Vec<_>>();
        spans.sort();
        assert_eq!(spans, [2, 3]);
        for (i, p) in d.prompts.iter().enumerate() {
            let m = dl.request_messages(i);
            assert_eq!(m.last().unwrap(), &("user".to_string(), p.clone()));
        }
        // Ticket k runs conversation k % 2: 2 tickets, one of each; 3, one more of the first.
        let first = dl.spans[0].1 as u64;
        assert_eq!(dl.requests_for(2), 5);
        assert_eq!(dl.requests_for(3), 5 + first);
        assert_eq!(dl.requests_for(0), 0);
    }

    #[test]
    fn same_seed_same_order_and_filter_counts_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.txt");
        let lines: String = (0..50).map(|i| format!("{}\n", "é".repeat(i + 1))).collect();
        std::fs::write(&path, lines).unwrap();
        let spec = DatasetSpec::Lines { path };
        let filter = LengthFilter { min: 10, max: Some(20) };
        let a = Dataset::load(&spec, filter, None, 7).unwrap();
        let b = Dataset::load(&spec, filter, None, 7).unwrap();
        let c = Dataset::load(&spec, filter, None, 8).unwrap();
        assert_eq!(a.prompts, b.prompts);
        assert_ne!(a.prompts, c.prompts);
        assert_eq!(a.prompts.len(), 11);
        assert_eq!(a.read, 50);
        assert!(a.prompts.iter().all(|p| (10..=20).contains(&p.chars().count())));
        let err = Dataset::load(&spec, LengthFilter { min: 100, max: None }, None, 7).unwrap_err();
        assert!(matches!(err, DatasetError::Empty { total: 50, .. }));
        assert!(err.to_string().contains("(50 read, 100..=any characters kept)"), "{err}");
        assert_eq!(a.unit, LengthUnit::Characters);
        assert_eq!(a.prompt_tokens, None);
    }

    fn fixture() -> PromptTokenizer {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tokenizers/wordpiece.json");
        PromptTokenizer::load(Path::new(p)).unwrap()
    }

    /// Prompts whose character and token lengths rank differently (see the fixture's README:
    /// `latency` and `network` are two tokens each, `?` one).
    const PROMPTS: &str =
        "what is numa\nlatency\nnetwork latency\nhow does the memory node work?\nNUMA\n";

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn filter_counts_tokens_with_a_tokenizer_and_characters_without() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.txt");
        std::fs::write(&path, PROMPTS).unwrap();
        let spec = DatasetSpec::Lines { path: path.clone() };
        let filter = LengthFilter { min: 3, max: Some(12) };
        let t = fixture();
        // Characters: 12, 7, 15, 30, 4. Tokens: 3, 2, 4, 7 ("work" is [UNK]; "?" counts), 1.
        let chars = Dataset::load(&spec, filter, None, 1).unwrap();
        assert_eq!(sorted(chars.prompts), vec!["NUMA", "latency", "what is numa"]);
        let tokens = Dataset::load(&spec, filter, Some(&t), 1).unwrap();
        assert_eq!(
            sorted(tokens.prompts.clone()),
            vec!["how does the memory node work?", "network latency", "what is numa"]
        );
        assert_eq!(tokens.unit, LengthUnit::Tokens);
        assert_eq!(tokens.tokenizer.as_deref(), Some(t.path()));
        // Counts travel with their prompts through the shuffle.
        let counts: Vec<(&str, u32)> = tokens
            .prompts
            .iter()
            .map(String::as_str)
            .zip(tokens.prompt_tokens.clone().unwrap())
            .collect();
        for (p, n) in
            [("what is numa", 3), ("network latency", 4), ("how does the memory node work?", 7)]
        {
            assert!(counts.contains(&(p, n)), "{counts:?}");
        }
        let err =
            Dataset::load(&spec, LengthFilter { min: 8, max: Some(40) }, Some(&t), 1).unwrap_err();
        assert!(err.to_string().ends_with("(5 read, 8..=40 tokens kept)"), "{err}");
    }

    #[test]
    fn random_prompts_have_exactly_the_requested_tokens() {
        let t = fixture();
        let spec = DatasetSpec::Random { input_len: 25, count: 20 };
        let d = Dataset::load(&spec, LengthFilter::default(), Some(&t), 3).unwrap();
        assert_eq!(d.prompts.len(), 20);
        assert_eq!(d.source, "random:25 tokens");
        for p in &d.prompts {
            assert_eq!(t.count(p, 0).unwrap(), 25, "{p}");
        }
        assert_eq!(d.prompt_tokens.as_deref(), Some(&[25u32; 20][..]));
        // Words split into pieces, so some prompt has fewer words than tokens: the word
        // generator alone would not pass this test.
        assert!(d.prompts.iter().any(|p| p.split(' ').count() < 25), "{:?}", d.prompts);
    }

    #[test]
    fn real_bpe_counts_match_the_reference_and_random_prompts_are_exact() {
        // Counts by the Python `tokenizers` package (testdata/tokenizers/README.md).
        for (file, expected) in
            [("bytelevel-bpe.json", [7, 14, 20]), ("metaspace-bpe.json", [6, 15, 20])]
        {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tokenizers").join(file);
            let t = PromptTokenizer::load(&p).unwrap();
            let counts = t
                .count_all(&[
                    "what is numa".into(),
                    "什么是NUMA?".into(),
                    "Explain NUMA in one paragraph.".into(),
                ])
                .unwrap();
            assert_eq!(counts, expected, "{file}");
            // Words cut mid-way by the id cut still re-encode to exactly n here.
            for n in [1, 2, 7, 64] {
                let spec = DatasetSpec::Random { input_len: n, count: 30 };
                let d = Dataset::load(&spec, LengthFilter::default(), Some(&t), 5).unwrap();
                for p in &d.prompts {
                    assert_eq!(t.count(p, 0).unwrap(), n, "{file}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn random_prompts_stay_exact_when_a_cut_does_not_re_encode_the_same() {
        // Without five of the words, the fixture encodes them as [UNK], which decoding leaves
        // out: every such draw re-encodes short, and only the pad-and-recheck loop gets it exact.
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tokenizers/wordpiece.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        for w in ["the", "model", "server", "memory", "node"] {
            vocab.remove(w).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let t = PromptTokenizer::load(&path).unwrap();
        let spec = DatasetSpec::Random { input_len: 12, count: 40 };
        let d = Dataset::load(&spec, LengthFilter::default(), Some(&t), 9).unwrap();
        for p in &d.prompts {
            assert_eq!(t.count(p, 0).unwrap(), 12, "{p:?}");
            assert!(!p.contains("[UNK]") && !p.contains(" the "), "{p:?}");
        }
    }

    #[test]
    fn a_tokenizer_that_cannot_encode_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("t.json");
        // A WordLevel model whose unk token is not in its vocabulary cannot encode an unknown word.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
            "decoder":null,"model":{"type":"WordLevel","vocab":{"numa":0},"unk_token":"[UNK]"}}"#;
        std::fs::write(&tok, json).unwrap();
        let t = PromptTokenizer::load(&tok).unwrap();
        let path = dir.path().join("d.txt");
        std::fs::write(&path, "numa\nnuma numa\nwhat\n").unwrap();
        let err = Dataset::load(&DatasetSpec::Lines { path }, LengthFilter::default(), Some(&t), 0)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("tokenizer {}: cannot encode prompt 2:", tok.display())),
            "{msg}"
        );
        let err = Dataset::load(
            &DatasetSpec::Random { input_len: 4, count: 1 },
            LengthFilter::default(),
            Some(&t),
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot encode"), "{err}");
    }

    #[test]
    fn synthetic_datasets_too_large_to_make_are_refused_before_any_prompt() {
        // Audit of wave 9: --input-len 999999999 built prompts until it was killed.
        let load = |spec: &DatasetSpec| {
            Dataset::load(spec, LengthFilter::default(), None, 1).unwrap_err().to_string()
        };
        let e = load(&DatasetSpec::Random { input_len: 999_999_999, count: 1 });
        assert_eq!(
            e,
            "synthetic dataset: prompts of 999999999 words are over 16777216, longer than any model's \
             context (--input-len, --prefix-len)"
        );
        let e = load(&DatasetSpec::Random { input_len: 1 << 20, count: 100_000 });
        assert!(
            e.starts_with("synthetic dataset: 100000 prompts of 1048576 words are over"),
            "{e}"
        );
        let e = load(&DatasetSpec::SharedPrefix {
            prefix_len: u32::MAX,
            num_prefixes: 1,
            suffix_len: u32::MAX,
            count: 1,
        });
        assert!(e.starts_with("synthetic dataset: prompts of 8589934590 words are over"), "{e}");
    }

    #[test]
    fn random_prompts_have_the_requested_word_count() {
        let d = Dataset::load(
            &DatasetSpec::Random { input_len: 32, count: 5 },
            LengthFilter::default(),
            None,
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
        let err = Dataset::load(&spec, LengthFilter::default(), None, 0).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.txt"), "{err}");
    }
}
