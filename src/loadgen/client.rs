//! The HTTP side of one request: building OpenAI-compatible bodies, sending them over a
//! keep-alive HTTP/1.1 connection that the request holds while it runs (taken from the
//! sweep's `ConnStash`, so connections = requests in flight: no pool limit, no hidden cap),
//! and reading the answer, streamed
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
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::record::{ErrorClass, InputTokenSource, RequestRecord, TokenSource};
use crate::rxstamp::{RxClock, StampedTcp};

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

/// What a level's workers share: where to send, how, and the clock. Connections are not
/// here: each worker owns one (`Conn`), so a level at concurrency N holds exactly N
/// connections, with no pool in between to cap or queue them.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// `host:port` to connect to and to send as `Host`.
    authority: String,
    host: HeaderValue,
    /// Origin-form targets (`/v1/chat/completions`), as HTTP/1.1 wants them on the wire.
    path: Uri,
    models_path: Uri,
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

type Failure = (ErrorClass, String);
type Driver = http1::Connection<TokioIo<StampedTcp>, Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection, owned by one worker and driven inside that worker's
/// own task (`driven`): the bytes of a chunk are read from the socket and handed to the
/// request in the same poll, and no task, lock or timer is shared between workers. Reads
/// carry the kernel's receive time (`rxstamp`), so a chunk's time is when it arrived, not
/// when this busy event loop got to it.
#[derive(Default)]
pub struct Conn {
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    driver: Option<Pin<Box<Driver>>>,
    clock: RxClock,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("open", &self.is_open()).finish()
    }
}

/// The open, idle connections of a sweep: a request takes one (the most recently used) and
/// puts it back when done, so connections open = requests in flight at most, and the measured
/// phase reuses the warmup's connections instead of opening hundreds at once (which is what
/// warmup is for). One uncontended lock per request, none per chunk.
#[derive(Debug, Default)]
pub struct ConnStash {
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl ConnStash {
    /// An open connection if one is kept, else a closed one (opened by the first request).
    pub fn take(&self) -> Conn {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    /// Keeps `conn` for a later worker, unless it is closed or `keep` are kept already.
    pub fn put(&self, conn: Conn, keep: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if conn.is_open() && idle.len() < keep {
            idle.push(conn);
        }
    }
}

impl Conn {
    fn is_open(&self) -> bool {
        self.driver.is_some() && self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }

    fn close(&mut self) {
        self.sender = None;
        self.driver = None;
    }
}

/// Runs `fut` with the connection's driver polled beside it, in the calling task. The driver
/// is polled before `fut` (it reads the socket and fills the response body) and again after
/// a pending `fut` (it writes a request `fut` just queued). A finished driver (the server
/// closed, or the socket broke) is dropped; `fut` then sees the end through the response body.
async fn driven<F: Future>(driver: &mut Option<Pin<Box<Driver>>>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let poll_driver = |driver: &mut Option<Pin<Box<Driver>>>, cx: &mut Context<'_>| {
        if let Some(d) = driver.as_mut() {
            if let Poll::Ready(r) = d.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                *driver = None;
            }
        }
    };
    poll_fn(|cx| {
        poll_driver(driver, cx);
        let out = fut.as_mut().poll(cx);
        if out.is_pending() {
            poll_driver(driver, cx);
        }
        out
    })
    .await
}

/// The deadlines of one request, on one timer. The idle deadline moves with every read, but
/// the timer is not touched per chunk: when it fires, the deadlines are computed again and
/// it is re-armed if none has passed (a chunk every few milliseconds would otherwise cost a
/// timer-wheel insert and removal each).
struct Waiter<'p, 't> {
    sleep: Pin<&'p mut Sleep>,
    cancel: Pin<&'p mut WaitForCancellationFuture<'t>>,
    timeouts: Timeouts,
    sent: Instant,
    /// The last read (response headers or a body frame).
    last: Instant,
}

impl Waiter<'_, '_> {
    /// The earliest deadline and what it stands for; on a tie the wider one is reported
    /// (total > first > idle).
    fn deadline(&self, first_seen: bool) -> (Instant, Stop) {
        let mut at = self.last + self.timeouts.read;
        let mut why = Stop::Idle;
        if let Some(f) = self.timeouts.first_token.filter(|_| !first_seen).map(|f| self.sent + f) {
            if f <= at {
                (at, why) = (f, Stop::FirstToken);
            }
        }
        if let Some(t) = self.timeouts.total.map(|t| self.sent + t) {
            if t <= at {
                (at, why) = (t, Stop::Total);
            }
        }
        (at, why)
    }

    /// Notes a read at `t` (pushes the idle deadline).
    fn touch(&mut self, t: StdInstant) {
        self.last = Instant::from_std(t);
    }

    /// Awaits `fut` unless a deadline passes or the request is aborted first.
    async fn wait<F: Future>(&mut self, fut: F, first_seen: bool) -> Result<F::Output, Stop> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if self.cancel.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Stop::Cancelled));
            }
            while self.sleep.as_mut().poll(cx).is_ready() {
                let (at, why) = self.deadline(first_seen);
                if at <= Instant::now() {
                    return Poll::Ready(Err(why));
                }
                self.sleep.as_mut().reset(at);
            }
            Poll::Pending
        })
        .await
    }
}

/// How one exchange on a connection ended, if not with an answer read to its end.
enum Exchange {
    /// The connection was closed before the request went out (a keep-alive connection the
    /// server had already dropped): safe to send again on a new one.
    Stale(String),
    Failed(Failure),
}

impl Client {
    /// `anchor` is the sweep's time zero; `run_id` prefixes every `x-request-id`.
    pub fn new(
        endpoint: Endpoint,
        api_key: Option<&str>,
        timeouts: Timeouts,
        stream: bool,
        anchor: StdInstant,
        run_id: String,
    ) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: endpoint.url.to_string(),
            reason: reason.to_string(),
        };
        let authority = endpoint.url.authority().ok_or_else(|| bad("no host"))?;
        // `http://h` has no port in the URI; the connection needs one.
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let host = HeaderValue::from_str(endpoint.url.authority().map_or("", |a| a.as_str()))
            .map_err(|_| bad("the host is not a valid header value"))?;
        let origin = |u: &Uri| -> Uri {
            u.path_and_query().map_or_else(|| Uri::from_static("/"), |p| p.clone().into())
        };
        let auth = api_key
            .map(|k| {
                HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| ClientError::BadApiKey)
            })
            .transpose()?;
        Ok(Self {
            path: origin(&endpoint.url),
            models_path: origin(&endpoint.models_url),
            endpoint,
            authority,
            host,
            auth,
            timeouts,
            stream,
            anchor,
            run_id,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn secs(&self, t: StdInstant) -> f64 {
        t.saturating_duration_since(self.anchor).as_secs_f64()
    }

    /// Opens a connection within `--connect-timeout`.
    async fn open(&self) -> Result<Conn, Failure> {
        let addr = self.authority.as_str();
        // An IP literal needs no resolver (a name costs a getaddrinfo on the blocking pool).
        let connect = async {
            match addr.parse::<std::net::SocketAddr>() {
                Ok(sa) => TcpStream::connect(sa).await,
                Err(_) => TcpStream::connect(addr).await,
            }
        };
        let tcp = match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let class = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorClass::ConnectRefused,
                    std::io::ErrorKind::TimedOut => ErrorClass::ConnectTimeout,
                    _ => ErrorClass::ConnectError,
                };
                return Err((class, format!("tcp connect to {addr}: {e}")));
            }
            Err(_) => {
                return Err((
                    ErrorClass::ConnectTimeout,
                    format!(
                        "tcp connect to {addr}: no answer within {}",
                        humantime::format_duration(self.timeouts.connect)
                    ),
                ))
            }
        };
        // Small writes (a request) go out at once rather than after Nagle's delay.
        let _ = tcp.set_nodelay(true);
        let tcp = StampedTcp::new(tcp);
        let clock = tcp.clock();
        let (sender, driver) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| {
            (ErrorClass::ConnectError, format!("HTTP/1.1 handshake with {addr}: {e}"))
        })?;
        Ok(Conn { sender: Some(sender), driver: Some(Box::pin(driver)), clock })
    }

    fn request(
        &self,
        method: Method,
        path: &Uri,
        body: Bytes,
        id: Option<&str>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req.body(Full::new(body)).expect("method, URI and headers are valid")
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
        let req = self.request(Method::GET, &self.models_path, Bytes::new(), None);
        let fut = async {
            let mut conn = self.open().await.map_err(|(_, detail)| err(detail))?;
            let Conn { sender: Some(sender), driver, .. } = &mut conn else {
                return Err(err("the connection closed as it opened".into()));
            };
            let (status, body) = driven(driver, async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                Ok::<_, hyper::Error>((status, resp.into_body().collect().await?.to_bytes()))
            })
            .await
            .map_err(|e| err(describe_hyper_error(&e).1))?;
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

    /// Sends one request on `conn` (opening it first if it is not open) and measures it.
    /// Never fails: every outcome is a record. `conn` is closed after any failure, so the
    /// next request never reads the rest of a broken answer.
    pub async fn execute(
        &self,
        conn: &mut Conn,
        body: Bytes,
        slot: Slot,
        abort: &CancellationToken,
    ) -> RequestRecord {
        let request_id = request_id(&self.run_id, slot);
        let mut m = Measure::default();
        let sent = Instant::now();
        let outcome = self.run(conn, &body, &request_id, sent, &mut m, abort).await;
        let done = StdInstant::now();
        let (error, error_detail) = match outcome {
            Ok(()) => (None, None),
            Err((class, detail)) => {
                conn.close();
                (Some(class), Some(detail))
            }
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
            connect_s: m.connect.map(|d| d.as_secs_f64()),
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
        conn: &mut Conn,
        body: &Bytes,
        id: &str,
        sent: Instant,
        m: &mut Measure,
        abort: &CancellationToken,
    ) -> Result<(), Failure> {
        let cancel = pin!(abort.cancelled());
        let sleep = pin!(tokio::time::sleep_until(sent + self.timeouts.read));
        let mut w = Waiter { sleep, cancel, timeouts: self.timeouts, sent, last: sent };
        let first = w.deadline(false).0;
        w.sleep.as_mut().reset(first);
        loop {
            // A reused connection may turn out closed by the server (`Stale`): then once more on
            // a fresh one. A fresh connection that fails is the answer.
            let fresh = if conn.is_open() {
                false
            } else {
                let started = StdInstant::now();
                *conn = match w.wait(self.open(), false).await {
                    Ok(c) => c?,
                    Err(stop) => return Err((stop.class(), stop_detail(stop, "connecting"))),
                };
                m.connect = Some(m.connect.unwrap_or_default() + started.elapsed());
                true
            };
            let Conn { sender: Some(sender), driver, clock } = conn else {
                return Err((
                    ErrorClass::ConnectError,
                    "the connection closed as it opened".into(),
                ));
            };
            let arrived = |clock: &RxClock| clock.instant(StdInstant::now(), sent.into_std());
            let exchange = self.exchange(sender, body, id, m, &mut w, || arrived(clock));
            match driven(driver, exchange).await {
                Ok(()) => return Ok(()),
                Err(Exchange::Stale(_)) if !fresh => conn.close(),
                Err(Exchange::Stale(detail)) => return Err((ErrorClass::ConnectError, detail)),
                Err(Exchange::Failed(f)) => return Err(f),
            }
        }
    }

    /// Sends the request on an open connection and reads the answer to its end.
    async fn exchange(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        body: &Bytes,
        id: &str,
        m: &mut Measure,
        w: &mut Waiter<'_, '_>,
        arrived: impl Fn() -> StdInstant,
    ) -> Result<(), Exchange> {
        let failed =
            |stop: Stop, what: &str| Exchange::Failed((stop.class(), stop_detail(stop, what)));
        match w.wait(sender.ready(), false).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Exchange::Stale(format!("connection closed: {e}"))),
            Err(stop) => return Err(failed(stop, "waiting for the connection")),
        }
        let req = self.request(Method::POST, &self.path, body.clone(), Some(id));
        let resp = match w.wait(sender.send_request(req), false).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_canceled() => {
                return Err(Exchange::Stale(format!("connection closed: {e}")))
            }
            Ok(Err(e)) => return Err(Exchange::Failed(describe_hyper_error(&e))),
            Err(stop) => return Err(failed(stop, "waiting for the response headers")),
        };
        let t = arrived();
        m.first_byte = Some(t);
        w.touch(t);
        let status = resp.status();
        m.status = Some(status.as_u16());
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            // Keep a snippet of the error body; a server that never finishes it costs one read timeout.
            let text = match w.wait(body.collect(), false).await {
                Ok(Ok(b)) => snippet(&b.to_bytes()),
                _ => String::new(),
            };
            return Err(Exchange::Failed((
                ErrorClass::HttpStatus,
                format!("HTTP {status}: {text}"),
            )));
        }
        let mut sse = SseParser::default();
        let mut whole = Vec::new();
        loop {
            let frame = match w.wait(body.frame(), !m.chunk_s.is_empty()).await {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => {
                    return Err(Exchange::Failed((
                        ErrorClass::StreamCut,
                        format!("body read failed: {e}"),
                    )))
                }
                Ok(None) => break,
                Err(stop) => return Err(failed(stop, "reading the body")),
            };
            let Ok(data) = frame.into_data() else { continue };
            let t = arrived();
            w.touch(t);
            if self.stream {
                sse.feed(&data, |ev| m.on_event(ev, t)).map_err(Exchange::Failed)?;
            } else {
                whole.extend_from_slice(&data);
            }
        }
        if self.stream {
            sse.finish(|ev| m.on_event(ev, StdInstant::now())).map_err(Exchange::Failed)?;
            // Every complete OpenAI-style stream ends its last choice with a finish_reason.
            // `[DONE]` alone is not enough: llama.cpp's server ends a stream it cut short
            // (another request arrived) with `[DONE]` and no finish_reason.
            if m.finish_reason.is_none() {
                let detail = if m.done {
                    "the stream ended with [DONE] but no finish_reason: the server cut it short"
                } else {
                    "the stream ended without [DONE] or a finish_reason"
                };
                return Err(Exchange::Failed((ErrorClass::StreamCut, detail.into())));
            }
        } else {
            m.on_whole(&whole, StdInstant::now()).map_err(Exchange::Failed)?;
        }
        if m.chunk_s.is_empty() && m.usage_output.unwrap_or(0) == 0 {
            return Err(Exchange::Failed((
                ErrorClass::EmptyOutput,
                "the answer has no output tokens".into(),
            )));
        }
        Ok(())
    }
}

/// The `x-request-id` of a request: UUID-shaped (8-4-4-4-12 hex digits, version 4 and
/// variant bits set) because some servers refuse anything else (llama.cpp's Python server
/// answers 400 to an id that is not a UUID), yet readable and unique within the run:
/// `RRRRRRRR-LLLL-4K00-8000-SSSSSSSSSSSS` = run id, level, kind (0 measured, 1 warmup,
/// 2 preflight), sequence number, all hex.
fn request_id(run_id: &str, slot: Slot) -> String {
    let kind = match (slot.preflight, slot.warmup) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    };
    format!(
        "{run_id}-{:04x}-4{kind}00-8000-{:012x}",
        slot.level & 0xffff,
        slot.seq & 0xffff_ffff_ffff
    )
}

fn stop_detail(stop: Stop, what: &str) -> String {
    match stop {
        Stop::Idle => format!("read timeout {what}"),
        Stop::FirstToken => format!("first-token timeout {what}"),
        Stop::Total => format!("total timeout {what}"),
        Stop::Cancelled => format!("cancelled {what}"),
    }
}

/// Classifies a failure of `send_request` (no response headers): the connection broke.
fn describe_hyper_error(e: &hyper::Error) -> Failure {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text = format!("{text}: {s}");
        src = s.source();
    }
    (ErrorClass::StreamCut, text)
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.replace(['\n', '\r'], " ")
}

/// What the body of one request showed so far.
#[derive(Debug, Default)]
struct Measure {
    first_byte: Option<StdInstant>,
    /// Time spent opening a new connection for this request.
    connect: Option<Duration>,
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

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

    /// A server on loopback that reads one request per connection, answers it with `answer`
    /// (or nothing, if `None`) and closes the connection without saying so beforehand (no
    /// `Connection: close`), as a server's keep-alive timeout does. Returns its URL and the
    /// count of connections it accepted.
    async fn one_shot_server(answer: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
                    while !request_complete(&got) {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Some(body) = answer {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = tcp.write_all(format!("{head}{body}").as_bytes()).await;
                    }
                });
            }
        });
        (url, accepted)
    }

    fn request_complete(got: &[u8]) -> bool {
        let text = String::from_utf8_lossy(got);
        let Some(end) = text.find("\r\n\r\n") else { return false };
        let len = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        got.len() >= end + 4 + len
    }

    const ANSWER: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
        data: [DONE]\n\n";

    fn test_client(url: &str) -> Client {
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(2),
            first_token: None,
            total: None,
        };
        let endpoint = Endpoint::parse(url, None).unwrap();
        Client::new(endpoint, None, timeouts, true, StdInstant::now(), "0badc0de".into()).unwrap()
    }

    /// One request on a new connection.
    async fn send_once(url: &str) -> RequestRecord {
        let body = Bytes::from_static(b"{}");
        let abort = CancellationToken::new();
        test_client(url).execute(&mut Conn::default(), body, test_slot(0), &abort).await
    }

    fn test_slot(seq: u64) -> Slot {
        Slot {
            level: 0,
            seq,
            warmup: false,
            preflight: false,
            prompt: 0,
            prompt_tokens: None,
            scheduled: StdInstant::now(),
        }
    }

    #[tokio::test]
    async fn a_keep_alive_connection_the_server_dropped_is_reopened_and_the_request_sent_again() {
        let (url, accepted) = one_shot_server(Some(ANSWER)).await;
        let client = test_client(&url);
        let mut conn = Conn::default();
        let abort = CancellationToken::new();
        let body = Bytes::from_static(b"{}");
        for seq in 0..3 {
            let r = client.execute(&mut conn, body.clone(), test_slot(seq), &abort).await;
            assert_eq!((r.error, r.output_tokens, r.chunk_s.len()), (None, 1, 1), "{r:?}");
            // Let the server's FIN arrive before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "one new connection per request");
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_without_answering_is_a_stream_cut_sent_once() {
        let (url, accepted) = one_shot_server(None).await;
        let r = send_once(&url).await;
        assert_eq!(r.error, Some(ErrorClass::StreamCut), "{r:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "a fresh connection is not retried");
    }

    #[tokio::test]
    async fn a_stream_with_done_but_no_finish_reason_was_cut_short() {
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
        let (url, _) = one_shot_server(Some(cut)).await;
        let r = send_once(&url).await;
        assert_eq!(r.error, Some(ErrorClass::StreamCut), "{r:?}");
        assert!(r.error_detail.unwrap().contains("[DONE] but no finish_reason"));
        assert_eq!(r.chunk_s.len(), 1, "what arrived is still recorded");
    }

    #[tokio::test]
    async fn nothing_listening_is_connect_refused() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = send_once(&format!("http://127.0.0.1:{port}")).await;
        assert_eq!(r.error, Some(ErrorClass::ConnectRefused), "{r:?}");
        assert!(r.error_detail.unwrap().contains(&format!("127.0.0.1:{port}")));
    }

    #[test]
    fn request_ids_are_uuids_that_say_level_kind_and_sequence() {
        let slot = |level, seq, warmup, preflight| Slot {
            level,
            seq,
            warmup,
            preflight,
            prompt: 0,
            prompt_tokens: None,
            scheduled: StdInstant::now(),
        };
        assert_eq!(
            request_id("0badc0de", slot(3, 41, false, false)),
            "0badc0de-0003-4000-8000-000000000029"
        );
        assert_eq!(
            request_id("0badc0de", slot(0, 7, true, false)),
            "0badc0de-0000-4100-8000-000000000007"
        );
        assert_eq!(
            request_id("0badc0de", slot(0, 0, true, true)),
            "0badc0de-0000-4200-8000-000000000000"
        );
        let re = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        assert!(re.is_match(&request_id("ffffffff", slot(70_000, u64::MAX, false, false))));
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
