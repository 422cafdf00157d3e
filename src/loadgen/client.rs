//! The HTTP side of one request: sending an OpenAI-compatible body over a keep-alive HTTP/1.1
//! connection that the request holds while it runs (taken from the sweep's `ConnStash`, so
//! connections = requests in flight: no pool limit, no hidden cap), and reading the answer,
//! streamed (SSE parsed incrementally over body frames, each event stamped with the arrival
//! time of its frame) or not. It turns every outcome into a `RequestRecord`; it never panics on
//! what a server sends. It does not schedule requests (`schedule`) or aggregate them (`stats`).
//!
//! Built from `request` (endpoint, body, timeouts), `conn` (the connection, its driver and
//! deadlines) and `sse` (the answer's parser and what it measured).

use std::pin::pin;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{driven, stop_detail, Conn, Failure, Stop, Waiter};
use super::record::{ErrorClass, InputTokenSource, RequestRecord, TokenSource};
use super::request::{ClientError, Endpoint, Timeouts};
use super::sse::{snippet, Measure, SseParser};
use crate::rxstamp::{RxClock, StampedTcp};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

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
}
