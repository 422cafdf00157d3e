//! What a request is made of before it is sent: where it goes (`Endpoint`, from `--url` and
//! `--api`), its JSON body (`BodySettings`, `--extra-body`), its time limits (`Timeouts`), and
//! the errors of setting these up (`ClientError`). No sockets, no clock: sending and measuring
//! are `client`'s.

use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad --url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("bad --api-key: not a valid header value")]
    BadApiKey,
    #[error("bad --extra-body: {reason}")]
    BadExtraBody { reason: String },
    #[error("GET {uri} failed: {reason}")]
    Models { uri: String, reason: String },
}

/// Which OpenAI API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Chat,
    Completions,
}

/// Where requests go. Built from `--url`, which may be the server's base URL
/// (`http://127.0.0.1:8000`, `.../v1`) or a full endpoint URL as in the seed
/// (`http://127.0.0.1:8000/v1/chat/completions`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api: Api,
    pub url: Uri,
    pub models_url: Uri,
}

impl Endpoint {
    /// `api` is what `--api` asked for; a full endpoint URL decides the API itself and
    /// conflicts with a different `--api`.
    pub fn parse(url: &str, api: Option<Api>) -> Result<Self, ClientError> {
        let bad =
            |reason: &str| ClientError::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let uri: Uri =
            url.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!("scheme {other} is not supported (use http://)")))
            }
            None => return Err(bad("no scheme (use http://HOST:PORT)")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let path = uri.path().trim_end_matches('/');
        let (prefix, found) = if let Some(p) = path.strip_suffix("/chat/completions") {
            (p, Some(Api::Chat))
        } else if let Some(p) = path.strip_suffix("/completions") {
            (p, Some(Api::Completions))
        } else {
            (path, None)
        };
        let api = match (found, api) {
            (Some(f), Some(a)) if f != a => {
                return Err(bad(&format!("the URL is the {f:?} endpoint but --api asks for {a:?}")))
            }
            (Some(f), _) => f,
            (None, a) => a.unwrap_or(Api::Chat),
        };
        // A base URL without `/v1` gets it; a path that already ends in it keeps it.
        let prefix = if found.is_none() && !prefix.ends_with("/v1") {
            format!("{prefix}/v1")
        } else {
            prefix.to_string()
        };
        let tail = match api {
            Api::Chat => "chat/completions",
            Api::Completions => "completions",
        };
        let build = |p: String| -> Result<Uri, ClientError> {
            Uri::builder()
                .scheme("http")
                .authority(authority.clone())
                .path_and_query(p)
                .build()
                .map_err(|e| bad(&e.to_string()))
        };
        Ok(Self {
            api,
            url: build(format!("{prefix}/{tail}"))?,
            models_url: build(format!("{prefix}/models"))?,
        })
    }
}

/// What goes into each request body besides the prompt.
#[derive(Debug, Clone, Default)]
pub struct BodySettings {
    pub model: String,
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
    pub ignore_eos: bool,
    pub temperature: Option<f64>,
    pub stream: bool,
    /// Merged last, so it overrides anything above (`{"top_p": 0.9}`).
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
}

impl BodySettings {
    /// The JSON body for `prompt`, built once per distinct prompt.
    pub fn body(&self, api: Api, prompt: &str) -> Bytes {
        match api {
            Api::Chat => {
                self.with("messages", serde_json::json!([{"role": "user", "content": prompt}]))
            }
            Api::Completions => self.with("prompt", prompt.into()),
        }
    }

    /// The chat body of a conversation: `(role, content)` messages, the last the user's turn.
    pub fn chat_body(&self, messages: &[(String, String)]) -> Bytes {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        self.with("messages", messages.into())
    }

    /// The body with the prompt under `key` (`messages` or `prompt`) and these settings.
    fn with(&self, key: &str, prompt: serde_json::Value) -> Bytes {
        let mut m = serde_json::Map::new();
        m.insert("model".into(), self.model.clone().into());
        m.insert(key.into(), prompt);
        if let Some(n) = self.max_tokens {
            m.insert("max_tokens".into(), n.into());
        }
        if let Some(n) = self.min_tokens {
            m.insert("min_tokens".into(), n.into());
        }
        if self.ignore_eos {
            m.insert("ignore_eos".into(), true.into());
        }
        if let Some(t) = self.temperature {
            m.insert("temperature".into(), t.into());
        }
        m.insert("stream".into(), self.stream.into());
        if self.stream {
            m.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
        }
        if let Some(extra) = &self.extra_body {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        Bytes::from(serde_json::to_vec(&m).expect("a JSON map always serialises"))
    }
}

/// Parses `--extra-body`: a JSON object.
pub fn parse_extra_body(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ClientError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(ClientError::BadExtraBody { reason: "not a JSON object".into() }),
        Err(e) => Err(ClientError::BadExtraBody { reason: e.to_string() }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for any read: the response headers, then each body frame.
    pub read: Duration,
    /// Longest wait from the send to the first content token.
    pub first_token: Option<Duration>,
    /// Longest time for the whole request.
    pub total: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_base_or_full_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8000", None).unwrap();
        assert_eq!(e.url.to_string(), "http://127.0.0.1:8000/v1/chat/completions");
        assert_eq!(e.models_url.to_string(), "http://127.0.0.1:8000/v1/models");
        let e = Endpoint::parse("http://127.0.0.1:8000/v1/chat/completions", None).unwrap();
        assert_eq!((e.api, e.url.path()), (Api::Chat, "/v1/chat/completions"));
        let e = Endpoint::parse("http://h:1/v1/completions", None).unwrap();
        assert_eq!((e.api, e.models_url.path()), (Api::Completions, "/v1/models"));
        let e = Endpoint::parse("http://h:1/v1/", Some(Api::Completions)).unwrap();
        assert_eq!(e.url.path(), "/v1/completions");
        assert!(Endpoint::parse("http://h:1/v1/completions", Some(Api::Chat)).is_err());
        assert!(Endpoint::parse("https://h:1", None).unwrap_err().to_string().contains("https"));
        assert!(Endpoint::parse("127.0.0.1:8000", None).is_err());
    }

    #[test]
    fn bodies_carry_settings_and_extra_json_wins() {
        let s = BodySettings {
            model: "m".into(),
            max_tokens: Some(16),
            min_tokens: Some(4),
            ignore_eos: true,
            temperature: Some(0.0),
            stream: true,
            extra_body: Some(parse_extra_body(r#"{"top_p":0.5,"max_tokens":8}"#).unwrap()),
        };
        let v: serde_json::Value = serde_json::from_slice(&s.body(Api::Chat, "hi")).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["max_tokens"], 8);
        assert_eq!(v["min_tokens"], 4);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["top_p"], 0.5);
        let v: serde_json::Value = serde_json::from_slice(&s.body(Api::Completions, "hi")).unwrap();
        assert_eq!(v["prompt"], "hi");
        assert!(parse_extra_body("[1]").is_err());
        let turns = [("user".to_string(), "q1".to_string()), ("assistant".into(), "a1".into())];
        let v: serde_json::Value = serde_json::from_slice(&s.chat_body(&turns)).unwrap();
        assert_eq!(v["messages"][1], serde_json::json!({"role": "assistant", "content": "a1"}));
        assert_eq!((v["model"].as_str(), v["max_tokens"].as_u64()), (Some("m"), Some(8)));
    }
}
