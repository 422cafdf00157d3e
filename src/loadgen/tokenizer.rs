//! The prompt tokenizer behind `verify --tokenizer`: a Hugging Face `tokenizer.json` (the file
//! in the model directory vLLM serves from), loaded once, used at dataset load time to count
//! prompt tokens (for the length filter and for `input_tokens` when the server sends no
//! `usage`) and to build random prompts of an exact token length. It never runs per request.
//!
//! Counts are of the prompt text alone: encoded without special tokens (no BOS/`[CLS]`), the
//! chat template NOT applied, padding and truncation from the file switched off. A chat
//! request's server-side prompt is therefore longer by the template's tokens.
//!
//! Input it expects (the top of a `tokenizer.json`):
//! ```text
//! {"version": "1.0", "truncation": null, "padding": null, "added_tokens": [...],
//!  "normalizer": {...}, "pre_tokenizer": {...}, "post_processor": {...}, "decoder": {...},
//!  "model": {"type": "BPE", "vocab": {...}, "merges": [...]}}
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer {path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("tokenizer {path}: not JSON: {reason}")]
    NotJson { path: PathBuf, reason: String },
    #[error("tokenizer {path}: not a Hugging Face tokenizer.json: {reason}")]
    NotTokenizer { path: PathBuf, reason: String },
    #[error("tokenizer {path}: cannot encode prompt {prompt}: {reason}")]
    Encode { path: PathBuf, prompt: usize, reason: String },
    #[error("tokenizer {path}: cannot decode token ids: {reason}")]
    Decode { path: PathBuf, reason: String },
}

/// A loaded `tokenizer.json` and the path it came from (for messages and `summary.json`).
pub struct PromptTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The tokenizers crate's messages may span lines; ours are one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

impl PromptTokenizer {
    /// Loads `path`, or `path/tokenizer.json` when `path` is a directory (a model directory,
    /// as `vllm serve` and `vllm bench --tokenizer` take it).
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let joined;
        let path = if path.is_dir() {
            joined = path.join("tokenizer.json");
            joined.as_path()
        } else {
            path
        };
        let read = |e| TokenizerError::Read { path: path.to_path_buf(), reason: one_line(e) };
        let text = crate::host::snapshot::read_input_text(path, u64::MAX).map_err(read)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `tokenizer.json`; `path` is only named in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokenizerError> {
        // Two steps so that "not JSON at all" and "JSON, but not a tokenizer" read differently.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            TokenizerError::NotJson { path: path.to_path_buf(), reason: one_line(e) }
        })?;
        let mut inner: tokenizers::Tokenizer = serde_json::from_value(value).map_err(|e| {
            TokenizerError::NotTokenizer { path: path.to_path_buf(), reason: one_line(e) }
        })?;
        // A file made for training may pad or truncate to a fixed length; a count must not.
        inner.with_truncation(None).map_err(|e| TokenizerError::NotTokenizer {
            path: path.to_path_buf(),
            reason: one_line(e),
        })?;
        inner.with_padding(None);
        Ok(Self { path: path.to_path_buf(), inner })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, without special tokens. `prompt` is only named in errors.
    pub fn ids(&self, text: &str, prompt: usize) -> Result<Vec<u32>, TokenizerError> {
        self.inner.encode_fast(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| {
            TokenizerError::Encode { path: self.path.clone(), prompt, reason: one_line(e) }
        })
    }

    /// Number of tokens of `text`, without special tokens.
    pub fn count(&self, text: &str, prompt: usize) -> Result<usize, TokenizerError> {
        self.inner.encode_fast(text, false).map(|e| e.len()).map_err(|e| TokenizerError::Encode {
            path: self.path.clone(),
            prompt,
            reason: one_line(e),
        })
    }

    /// Token counts of many prompts (in parallel across cores for big datasets).
    pub fn count_all(&self, prompts: &[String]) -> Result<Vec<usize>, TokenizerError> {
        let mut out = Vec::with_capacity(prompts.len());
        // Batches bound the memory of the encodings held at once (a ShareGPT file has ~90k).
        for (b, chunk) in prompts.chunks(1024).enumerate() {
            let inputs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match self.inner.encode_batch_fast(inputs, false) {
                Ok(encodings) => out.extend(encodings.iter().map(|e| e.len())),
                // The batch error does not say which prompt; find it one by one.
                Err(_) => {
                    for (i, p) in chunk.iter().enumerate() {
                        out.push(self.count(p, b * 1024 + i)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode { path: self.path.clone(), reason: one_line(e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tokenizers/wordpiece.json");

    #[test]
    fn counts_exclude_special_tokens_and_split_words_into_pieces() {
        let t = PromptTokenizer::load(Path::new(FIXTURE)).unwrap();
        // The fixture's post-processor adds [CLS] .. [SEP]; a count must not include them.
        assert_eq!(t.count("what is NUMA", 0).unwrap(), 3);
        assert_eq!(t.count("latency", 0).unwrap(), 2);
        assert_eq!(t.ids("what is numa", 0).unwrap(), vec![5, 6, 7]);
        assert_eq!(t.decode(&t.ids("memory latency", 0).unwrap()).unwrap(), "memory latency");
        let all =
            t.count_all(&["what is numa".into(), "".into(), "network latency".into()]).unwrap();
        assert_eq!(all, vec![3, 0, 4]);
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        let e = PromptTokenizer::load(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("tokenizer {}: cannot read:", missing.display())), "{e}");
        // A model directory stands for its tokenizer.json.
        let e = PromptTokenizer::load(dir.path()).unwrap_err().to_string();
        let inside = dir.path().join("tokenizer.json");
        assert!(e.starts_with(&format!("tokenizer {}: cannot read:", inside.display())), "{e}");
        std::fs::copy(FIXTURE, &inside).unwrap();
        assert_eq!(PromptTokenizer::load(dir.path()).unwrap().path(), inside);
        let p = dir.path().join("t.json");
        std::fs::write(&p, "<html>not found</html>").unwrap();
        let e = PromptTokenizer::load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("tokenizer {}: not JSON:", p.display())), "{e}");
        std::fs::write(&p, r#"{"model_type": "qwen2", "vocab_size": 151936}"#).unwrap();
        let e = PromptTokenizer::load(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "tokenizer {}: not a Hugging Face tokenizer.json:",
                p.display()
            )),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
