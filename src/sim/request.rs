//! The body of a generation request as vLLM accepts it, and its validation: `parse` turns the
//! bytes into a `Parsed` (prompt tokens, what was asked, stream options) or a `Refusal` (HTTP
//! status, vLLM's error type, message); `request_id` picks the request's id. It decides no
//! output length or fault (`model`) and sends nothing (`server`, `job`).

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::model::{self, Ask};
use super::prefix;
use super::state::Shared;
use super::Endpoint;

/// The body of both generation endpoints; unknown fields are ignored, as vLLM does for the
/// sampling options it would honour (temperature, top_p, ...). For example:
///
/// `{"model": "qwen2.5", "messages": [{"role": "user", "content": "解释人工智能"}],`
/// ` "max_tokens": 256, "stream": true, "stream_options": {"include_usage": true}}`
/// `{"model": "qwen2.5", "prompt": "你是谁？", "max_tokens": 16, "ignore_eos": true}`
#[derive(Deserialize)]
struct GenRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<Prompt>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    min_tokens: u32,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub(super) include_usage: bool,
    #[serde(default)]
    pub(super) continuous_usage_stats: bool,
}

/// What parsing and validation made of a request.
pub(super) struct Parsed {
    pub(super) prompt_tokens: u32,
    pub(super) ask: Ask,
    pub(super) stream: bool,
    pub(super) opts: StreamOptions,
    /// The prompt's prefix-cache block hashes (empty without a prefix cache).
    pub(super) blocks: Vec<u64>,
}

/// A refusal before any work: the HTTP status, vLLM's error type, and the message.
pub(super) struct Refusal(pub(super) StatusCode, pub(super) &'static str, pub(super) String);

pub(super) fn parse(s: &Shared, endpoint: Endpoint, body: &[u8]) -> Result<Parsed, Refusal> {
    let bad = |msg: String| Refusal(StatusCode::BAD_REQUEST, "BadRequestError", msg);
    let req: GenRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON request body: {e}")))?;
    if let Some(name) = &req.model {
        if *name != s.cfg.served_model_name {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                format!("The model `{name}` does not exist."),
            ));
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad("the simulator supports only n=1".into()));
    }
    let prompt_tokens = match endpoint {
        Endpoint::ChatCompletions => {
            let messages =
                req.messages.as_ref().ok_or_else(|| bad("messages: field required".into()))?;
            let mut texts: Vec<&str> = Vec::with_capacity(messages.len());
            let mut parts_tokens = 0u32;
            for m in messages {
                match &m.content {
                    Some(Content::Text(t)) => texts.push(t),
                    Some(Content::Parts(parts)) => {
                        texts.push("");
                        for p in parts {
                            parts_tokens = parts_tokens
                                .saturating_add(p.text.as_deref().map_or(0, model::count_tokens));
                        }
                    }
                    None => texts.push(""),
                }
            }
            model::chat_prompt_tokens(texts).saturating_add(parts_tokens)
        }
        Endpoint::Completions => match req.prompt.as_ref() {
            None => return Err(bad("prompt: field required".into())),
            Some(Prompt::Text(t)) => model::count_tokens(t),
            Some(Prompt::Ids(ids)) => ids.len() as u32,
            Some(Prompt::Texts(ts)) if ts.len() == 1 => model::count_tokens(&ts[0]),
            Some(Prompt::IdLists(ls)) if ls.len() == 1 => ls[0].len() as u32,
            Some(_) => return Err(bad("the simulator supports one prompt per request".into())),
        },
    };
    let blocks = if s.prefix.is_some() { prompt_blocks(&req, endpoint, s) } else { Vec::new() };
    Ok(Parsed {
        blocks,
        prompt_tokens,
        ask: Ask {
            prompt_tokens,
            max_tokens: req.max_tokens.or(req.max_completion_tokens),
            min_tokens: req.min_tokens,
            ignore_eos: req.ignore_eos,
        },
        stream: req.stream,
        opts: req.stream_options.unwrap_or_default(),
    })
}

/// The prefix-cache blocks of a request already validated by `parse`: its tokens as
/// `prefix` hashes them (token ids as they are), cut into blocks.
fn prompt_blocks(req: &GenRequest, endpoint: Endpoint, s: &Shared) -> Vec<u64> {
    let tokens: Vec<u64> = match (endpoint, &req.messages, &req.prompt) {
        (Endpoint::ChatCompletions, Some(messages), _) => {
            let texts: Vec<(&str, String)> = messages
                .iter()
                .map(|m| {
                    let text = match &m.content {
                        Some(Content::Text(t)) => t.clone(),
                        Some(Content::Parts(parts)) => parts
                            .iter()
                            .filter_map(|p| p.text.as_deref())
                            .collect::<Vec<_>>()
                            .join(" "),
                        None => String::new(),
                    };
                    (m.role.as_str(), text)
                })
                .collect();
            prefix::chat_tokens(texts.iter().map(|(r, t)| (*r, t.as_str())))
        }
        (Endpoint::Completions, _, Some(Prompt::Text(t))) => {
            let mut v = Vec::new();
            prefix::push_text_tokens(t, &mut v);
            v
        }
        (Endpoint::Completions, _, Some(Prompt::Texts(ts))) if ts.len() == 1 => {
            let mut v = Vec::new();
            prefix::push_text_tokens(&ts[0], &mut v);
            v
        }
        (Endpoint::Completions, _, Some(Prompt::Ids(ids))) => {
            ids.iter().map(|&i| u64::from(i)).collect()
        }
        (Endpoint::Completions, _, Some(Prompt::IdLists(ls))) if ls.len() == 1 => {
            ls[0].iter().map(|&i| u64::from(i)).collect()
        }
        _ => Vec::new(),
    };
    prefix::block_hashes(&tokens, s.cfg.prefix_block_tokens)
}

pub(super) fn request_id(s: &Shared, headers: &HeaderMap, index: u64) -> String {
    match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_string(),
        // Derived from seed and arrival index, so reruns give the same ids.
        _ => format!(
            "{:016x}{:016x}",
            model::mix(model::mix(s.cfg.seed) ^ index),
            model::mix(model::mix(!s.cfg.seed) ^ index)
        ),
    }
}
