//! The HTTP side of one request: building OpenAI-compatible bodies, sending them over a hyper
//! connection pool sized to the concurrency (no hidden cap), and reading the answer, streamed
//! (SSE parsed incrementally over body frames, each event stamped with the arrival time of its
//! frame) or not. It turns every outcome into a `RequestRecord`; it never panics on what a
//! server sends. It does not schedule requests (`schedule`) or aggregate them (`stats`).
//!
//! A streamed answer looks like:
//! ```text
//! data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}
//!
//! data: {"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}
//!
//! data: [DONE]
//! ```

use std::borrow::Cow;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::{ErrorClass, InputTokenSource, RequestRecord, TokenSource};

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
        let mut m = serde_json::Map::new();
        m.insert("model".into(), self.model.clone().into());
        match api {
            Api::Chat => {
                m.insert(
                    "messages".into(),
                    serde_json::json!([{"role": "user", "content": prompt}]),
                );
            }
            Api::Completions => {
                m.insert("prompt".into(), prompt.into());
            }
        }
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

/// The request's place in the sweep, copied into its record.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub level: u32,
    pub seq: u64,
    pub warmup: bool,
    /// The preflight request (its `x-request-id` is `RUNID-preflight`).
    pub preflight: bool,
    pub prompt: u32,
    /// The tokenizer's count of the prompt (`--tokenizer`), for a server that sends no `usage`.
    pub prompt_tokens: Option<u32>,
    pub scheduled: StdInstant,
}

/// One connection pool for a level, shared by its workers.
#[derive(Debug, Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    endpoint: Endpoint,
    auth: Option<HeaderValue>,
    timeouts: Timeouts,
    stream: bool,
    anchor: StdInstant,
    run_id: String,
}

/// Why a wait ended early.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Idle,
    FirstToken,
    Total,
    Cancelled,
}

impl Stop {
    fn class(self) -> ErrorClass {
        match self {
            Self::Idle => ErrorClass::IdleTimeout,
            Self::FirstToken => ErrorClass::FirstTokenTimeout,
            Self::Total => ErrorClass::TotalTimeout,
            Self::Cancelled => ErrorClass::Cancelled,
        }
    }
}

impl Client {
    /// `pool` is the most connections the level keeps open (its concurrency); `anchor` is
    /// the sweep's time zero; `run_id` prefixes every `x-request-id`.
    pub fn new(
        endpoint: Endpoint,
        api_key: Option<&str>,
        timeouts: Timeouts,
        stream: bool,
        pool: usize,
        anchor: StdInstant,
        run_id: String,
    ) -> Result<Self, ClientError> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeouts.connect));
        conn.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn);
        let auth = api_key
            .map(|k| {
                HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| ClientError::BadApiKey)
            })
            .transpose()?;
        Ok(Self { http, endpoint, auth, timeouts, stream, anchor, run_id })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn secs(&self, t: StdInstant) -> f64 {
        t.saturating_duration_since(self.anchor).as_secs_f64()
    }

    /// The model ids of `GET /v1/models`, in the server's order.
    pub async fn models(&self) -> Result<Vec<String>, ClientError> {
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Model>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        let uri = self.endpoint.models_url.clone();
        let err = |reason: String| ClientError::Models { uri: uri.to_string(), reason };
        let mut req = Request::builder().method(Method::GET).uri(uri.clone());
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| err(e.to_string()))?;
        let fut = async {
            let resp = self.http.request(req).await.map_err(|e| err(describe_send_error(&e).1))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
            if status != StatusCode::OK {
                return Err(err(format!("HTTP {status}: {}", snippet(&body))));
            }
            let m: Models = serde_json::from_slice(&body)
                .map_err(|e| err(format!("not an OpenAI model list: {e}")))?;
            Ok(m.data.into_iter().map(|m| m.id).collect())
        };
        tokio::time::timeout(self.timeouts.connect + self.timeouts.read, fut)
            .await
            .map_err(|_| err("timed out".into()))?
    }

    /// Sends one request and measures it. Never fails: every outcome is a record.
    pub async fn execute(
        &self,
        body: Bytes,
        slot: Slot,
        abort: &CancellationToken,
    ) -> RequestRecord {
        let request_id = if slot.preflight {
            format!("{}-preflight", self.run_id)
        } else {
            let w = if slot.warmup { "w" } else { "" };
            format!("{}-{}-{w}{}", self.run_id, slot.level, slot.seq)
        };
        let mut m = Measure::default();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-request-id", request_id.as_str());
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req.body(Full::new(body)).expect("method, URI and headers are valid");
        let sent = Instant::now();
        let outcome = self.run(req, sent, &mut m, abort).await;
        let done = StdInstant::now();
        let (error, error_detail) = match outcome {
            Ok(()) => (None, None),
            Err((class, detail)) => (Some(class), Some(detail)),
        };
        let (output_tokens, tokens_from) = match m.usage_output {
            Some(n) => (n, TokenSource::Usage),
            None => (m.chunk_s.len() as u64, TokenSource::CountedChunks),
        };
        let (input_tokens, input_tokens_from) = match (m.usage_input, slot.prompt_tokens) {
            (Some(n), _) => (Some(n), Some(InputTokenSource::Usage)),
            (None, Some(n)) => (Some(u64::from(n)), Some(InputTokenSource::Tokenizer)),
            (None, None) => (None, None),
        };
        RequestRecord {
            level: slot.level,
            seq: slot.seq,
            request_id,
            warmup: slot.warmup,
            prompt: slot.prompt,
            scheduled_s: self.secs(slot.scheduled),
            sent_s: self.secs(sent.into_std()),
            first_byte_s: m.first_byte.map(|t| self.secs(t)),
            first_token_s: m.chunk_s.first().map(|&t| self.secs(t)),
            last_token_s: m.chunk_s.last().map(|&t| self.secs(t)),
            done_s: self.secs(done),
            chunk_s: m.chunk_s.iter().map(|&t| self.secs(t)).collect(),
            input_tokens,
            input_tokens_from,
            output_tokens,
            tokens_from,
            status: m.status,
            finish_reason: m.finish_reason,
            error,
            error_detail,
        }
    }

    async fn run(
        &self,
        req: Request<Full<Bytes>>,
        sent: Instant,
        m: &mut Measure,
        abort: &CancellationToken,
    ) -> Result<(), (ErrorClass, String)> {
        let total = self.timeouts.total.map(|t| sent + t);
        let first = self.timeouts.first_token.map(|t| sent + t);
        let deadlines = |m: &Measure| Deadlines {
            idle: Instant::now() + self.timeouts.read,
            first: if m.chunk_s.is_empty() { first } else { None },
            total,
        };
        let resp = match wait(self.http.request(req), deadlines(m), abort).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(describe_send_error(&e)),
            Err(stop) => {
                return Err((stop.class(), stop_detail(stop, "waiting for the response headers")))
            }
        };
        m.first_byte = Some(StdInstant::now());
        let status = resp.status();
        m.status = Some(status.as_u16());
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            // Keep a snippet of the error body; a server that never finishes it costs one read timeout.
            let text = match wait(body.collect(), deadlines(m), abort).await {
                Ok(Ok(b)) => snippet(&b.to_bytes()),
                _ => String::new(),
            };
            return Err((ErrorClass::HttpStatus, format!("HTTP {status}: {text}")));
        }
        let mut sse = SseParser::default();
        let mut whole = Vec::new();
        loop {
            let frame = match wait(body.frame(), deadlines(m), abort).await {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => {
                    return Err((ErrorClass::StreamCut, format!("body read failed: {e}")))
                }
                Ok(None) => break,
                Err(stop) => return Err((stop.class(), stop_detail(stop, "reading the body"))),
            };
            let Ok(data) = frame.into_data() else { continue };
            let t = StdInstant::now();
            if self.stream {
                sse.feed(&data, |ev| m.on_event(ev, t))?;
            } else {
                whole.extend_from_slice(&data);
            }
        }
        if self.stream {
            sse.finish(|ev| m.on_event(ev, StdInstant::now()))?;
            if !m.done && m.finish_reason.is_none() {
                return Err((
                    ErrorClass::StreamCut,
                    "the stream ended without [DONE] or a finish_reason".into(),
                ));
            }
        } else {
            m.on_whole(&whole, StdInstant::now())?;
        }
        if m.chunk_s.is_empty() && m.usage_output.unwrap_or(0) == 0 {
            return Err((ErrorClass::EmptyOutput, "the answer has no output tokens".into()));
        }
        Ok(())
    }
}

fn stop_detail(stop: Stop, what: &str) -> String {
    match stop {
        Stop::Idle => format!("read timeout {what}"),
        Stop::FirstToken => format!("first-token timeout {what}"),
        Stop::Total => format!("total timeout {what}"),
        Stop::Cancelled => format!("cancelled {what}"),
    }
}

/// Classifies a failure of `Client::request` (no response headers).
fn describe_send_error(e: &hyper_util::client::legacy::Error) -> (ErrorClass, String) {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut text = e.to_string();
    while let Some(s) = src {
        text = format!("{text}: {s}");
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return (ErrorClass::ConnectRefused, text),
                std::io::ErrorKind::TimedOut if e.is_connect() => {
                    return (ErrorClass::ConnectTimeout, text)
                }
                _ => {}
            }
        }
        src = s.source();
    }
    if e.is_connect() {
        (ErrorClass::ConnectError, text)
    } else {
        (ErrorClass::StreamCut, text)
    }
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.replace(['\n', '\r'], " ")
}

#[derive(Debug, Clone, Copy)]
struct Deadlines {
    idle: Instant,
    first: Option<Instant>,
    total: Option<Instant>,
}

/// Awaits `fut` unless a deadline passes or the request is aborted first.
async fn wait<F: std::future::Future>(
    fut: F,
    d: Deadlines,
    abort: &CancellationToken,
) -> Result<F::Output, Stop> {
    // The earliest deadline decides; on a tie the wider one is reported (total > first > idle).
    let mut at = d.idle;
    let mut why = Stop::Idle;
    if let Some(f) = d.first.filter(|f| *f <= at) {
        at = f;
        why = Stop::FirstToken;
    }
    if let Some(t) = d.total.filter(|t| *t <= at) {
        at = t;
        why = Stop::Total;
    }
    tokio::select! {
        biased;
        out = fut => Ok(out),
        () = tokio::time::sleep_until(at) => Err(why),
        () = abort.cancelled() => Err(Stop::Cancelled),
    }
}

/// What the body of one request showed so far.
#[derive(Debug, Default)]
struct Measure {
    first_byte: Option<StdInstant>,
    status: Option<u16>,
    chunk_s: Vec<StdInstant>,
    usage_input: Option<u64>,
    usage_output: Option<u64>,
    finish_reason: Option<String>,
    done: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Message<'a>>,
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn nonempty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

impl Measure {
    /// One SSE event's data.
    fn on_event(&mut self, data: &[u8], t: StdInstant) -> Result<(), (ErrorClass, String)> {
        if data == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        let has_content = self.on_json(data)?;
        if has_content {
            self.chunk_s.push(t);
        }
        Ok(())
    }

    /// A non-streamed answer: one JSON document; the first token "arrives" with it.
    fn on_whole(&mut self, data: &[u8], t: StdInstant) -> Result<(), (ErrorClass, String)> {
        if self.on_json(data)? {
            self.chunk_s.push(t);
        }
        Ok(())
    }

    /// Parses one JSON chunk; true when it carries output text.
    fn on_json(&mut self, data: &[u8]) -> Result<bool, (ErrorClass, String)> {
        let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|e| {
            (ErrorClass::ParseError, format!("bad JSON in the answer ({e}): {}", snippet(data)))
        })?;
        if let Some(err) = chunk.error {
            return Err((
                ErrorClass::ServerError,
                format!("error in the stream: {}", snippet(err.to_string().as_bytes())),
            ));
        }
        if let Some(u) = chunk.usage {
            self.usage_input = u.prompt_tokens.or(self.usage_input);
            self.usage_output = u.completion_tokens.or(self.usage_output);
        }
        let mut content = false;
        for c in &chunk.choices {
            for msg in [&c.delta, &c.message].into_iter().flatten() {
                content |= nonempty(&msg.content) || nonempty(&msg.reasoning_content);
            }
            content |= nonempty(&c.text);
            if let Some(f) = &c.finish_reason {
                self.finish_reason = Some(f.to_string());
            }
        }
        Ok(content)
    }
}

/// Incremental server-sent-events parser: feed it body frames as they come; it calls back
/// with the data of each complete event (several `data:` lines joined by `\n`). Comments,
/// `event:`, `id:` and `retry:` lines are skipped; CRLF and LF both end lines.
#[derive(Debug, Default)]
pub struct SseParser {
    partial: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    pub fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                None => {
                    self.partial.extend_from_slice(bytes);
                    return Ok(());
                }
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&bytes[..i]);
                    self.line(&line, &mut on_event)?;
                    line.clear();
                    self.partial = line;
                    bytes = &bytes[i + 1..];
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            self.line(&bytes[..i], &mut on_event)?;
            bytes = &bytes[i + 1..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// The body ended: a last line without newline and a last event without blank line count.
    pub fn finish<E>(&mut self, mut on_event: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut on_event)?;
        }
        self.line(b"", &mut on_event)
    }

    fn line<E>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let r = on_event(&self.data);
                self.data.clear();
                return r;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for f in frames {
            p.feed::<()>(f, |e| {
                out.push(String::from_utf8(e.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
        }
        p.finish::<()>(|e| {
            out.push(String::from_utf8(e.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn sse_events_split_across_frames_are_joined() {
        let got = events(&[b"data: {\"a\"", b":1}\n", b"\ndata: [DO", b"NE]\n\n"]);
        assert_eq!(got, vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn sse_handles_crlf_comments_multiline_and_a_missing_final_blank_line() {
        let got =
            events(&[b": ping\r\n\r\nevent: x\r\nid: 3\r\ndata: a\r\ndata:b\r\n\r\ndata: last"]);
        assert_eq!(got, vec!["a\nb", "last"]);
    }

    proptest::proptest! {
        #[test]
        fn sse_result_does_not_depend_on_frame_boundaries(cuts in proptest::collection::vec(0usize..120, 0..8)) {
            let text: &[u8] = b"data: one\n\n: c\ndata: two\r\n\r\ndata: th\ndata: ree\n\ndata: [DONE]\n\n";
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % text.len()).collect();
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut prev = 0;
            for c in cuts { frames.push(&text[prev..c]); prev = c; }
            frames.push(&text[prev..]);
            proptest::prop_assert_eq!(events(&frames), vec!["one", "two", "th\nree", "[DONE]"]);
        }

        #[test]
        fn measure_never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut m = Measure::default();
            let _ = m.on_event(&data, StdInstant::now());
        }
    }

    #[test]
    fn chunks_usage_and_finish_reason_are_read() {
        let mut m = Measure::default();
        let t = StdInstant::now();
        m.on_event(br#"{"choices":[{"delta":{"role":"assistant"}}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[{"delta":{"content":"Hi \"x\""}}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[{"text":"yo","finish_reason":"length"}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16}}"#, t)
            .unwrap();
        m.on_event(b"[DONE]", t).unwrap();
        assert_eq!(m.chunk_s.len(), 2);
        assert_eq!((m.usage_input, m.usage_output), (Some(9), Some(16)));
        assert_eq!(m.finish_reason.as_deref(), Some("length"));
        assert!(m.done);
    }

    #[test]
    fn errors_in_the_stream_are_classified() {
        let mut m = Measure::default();
        let t = StdInstant::now();
        let e = m.on_event(b"{not json", t).unwrap_err();
        assert_eq!(e.0, ErrorClass::ParseError);
        let e = m.on_event(br#"{"error":{"message":"boom","code":500}}"#, t).unwrap_err();
        assert_eq!(e.0, ErrorClass::ServerError);
        assert!(e.1.contains("boom"));
    }

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
    }
}
