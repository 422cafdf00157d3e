//! The simulator's HTTP side: the axum routes, the listener whose reads carry the kernel's
//! receive time, the fault cues (hang, freeze, exit), and `generate`, which parses a request
//! (`request`), decides its outcome (`model`) and hands it to a `Job` (`job`). Streamed, each
//! event becomes an SSE chunk as hyper polls the body (so "first token written" is recorded
//! when the bytes go to the connection); not streamed, the events are collected. When nothing
//! takes time (zero-delay mode) the whole response is built in one buffer and sent as one body:
//! no timers, no per-chunk polling. Shared state and the truth log live in `state`.
//!
//! What it does not do: decide output lengths or faults (`model`), or anything process-level.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::FutureExt;
use serde::Deserialize;

use super::job::{Ev, Job};
use super::model::{self, AskError, Fault};
use super::request::{parse, request_id, Refusal};
use super::state::{error_response, json_response, Shared};
use super::{Endpoint, RequestStatus, RequestTruth, StopReason};
use crate::rxstamp::{RxClock, StampedTcp};

pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    if let Some(after) = shared.cfg.hang_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(after_ms = after.as_millis() as u64, "simulated hang: no more answers");
            s.hung.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.freeze_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(
                after_ms = after.as_millis() as u64,
                "simulated stuck engine: no more tokens, /health still answers"
            );
            s.frozen.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.stop_admitting_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(
                after_ms = after.as_millis() as u64,
                "simulated dead scheduler: new requests wait forever, /health still answers"
            );
            s.not_admitting.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.fail_completions_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(
                after_ms = after.as_millis() as u64,
                "simulated broken engine: completions answer 500, /health still answers"
            );
            s.failing_completions.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.exit_after {
        on_cue(&shared, after, |s| {
            s.stop_tx.send_replace(Some(StopReason::ExitAfterTime));
        });
    }
    let token = shared.shutdown.clone();
    let app = Router::new()
        .route("/health", get(health))
        // vLLM builds with a liveness endpoint apart from /health.
        .route("/live", get(health))
        .route("/ping", get(health).post(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/sim/requests", get(sim_requests))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), hang_gate))
        .with_state(shared);
    tokio::spawn(async move {
        axum::serve(StampedListener(listener), app.into_make_service_with_connect_info::<RxClock>())
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    })
}

/// Runs `act` `after` this long, unless the simulator shuts down first (a simulated fault).
fn on_cue(shared: &Arc<Shared>, after: Duration, act: impl FnOnce(&Shared) + Send + 'static) {
    let s = shared.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(after) => act(&s),
            _ = s.shutdown.cancelled() => {}
        }
    });
}

/// Accepts connections whose reads carry the kernel's receive time (`rxstamp`); the
/// connection's `RxClock` reaches the handlers as `ConnectInfo`.
struct StampedListener(tokio::net::TcpListener);

impl axum::serve::Listener for StampedListener {
    type Io = StampedTcp;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    // Tokens are small writes: send each at once, as vLLM's server does.
                    let _ = tcp.set_nodelay(true);
                    return (StampedTcp::new(tcp), addr);
                }
                // A connection that died in the backlog is the client's business.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StampedListener>>
    for RxClock
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StampedListener>) -> Self {
        stream.io().clock()
    }
}

/// Once hung, nothing is answered (the connection stays open) until shutdown.
async fn hang_gate(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if s.hung.load(Ordering::Relaxed) {
        s.shutdown.cancelled().await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if s.failing_completions.load(Ordering::Relaxed)
        && req.method() == axum::http::Method::POST
        && req.uri().path().ends_with("completions")
    {
        let (status, kind) = (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError");
        return error_response(status, kind, "simulated engine failure");
    }
    next.run(req).await
}

async fn health(State(s): State<Arc<Shared>>) -> StatusCode {
    if s.cfg.no_health {
        // llama-cpp-python's server: no /health at all.
        return StatusCode::NOT_FOUND;
    }
    StatusCode::OK
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFoundError", "Not Found")
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let created = s.started_unix_secs();
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": s.cfg.served_model_name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": s.cfg.served_model_name,
            "parent": null,
            "max_model_len": s.cfg.max_model_len,
        }],
    });
    json_response(StatusCode::OK, body.to_string())
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn sim_requests(State(s): State<Arc<Shared>>, q: Query<SinceQuery>) -> Response {
    let records = s.truth_since(q.since.unwrap_or(0));
    match serde_json::to_string(&records) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", &e.to_string())
        }
    }
}

async fn chat(
    State(s): State<Arc<Shared>>,
    ConnectInfo(rx): ConnectInfo<RxClock>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(s, Endpoint::ChatCompletions, &rx, &headers, &body).await
}

async fn completions(
    State(s): State<Arc<Shared>>,
    ConnectInfo(rx): ConnectInfo<RxClock>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(s, Endpoint::Completions, &rx, &headers, &body).await
}

async fn generate(
    s: Arc<Shared>,
    endpoint: Endpoint,
    rx: &RxClock,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let index = s.arrivals.fetch_add(1, Ordering::Relaxed);
    let (arrival_unix_ns, arrival_offset_ns) = s.arrival(rx);
    let request_id = request_id(&s, headers, index);
    let mut truth = RequestTruth {
        index,
        request_id,
        endpoint,
        status: RequestStatus::Aborted,
        http_status: 200,
        arrival_unix_ns,
        arrival_offset_ns,
        ..RequestTruth::default()
    };
    let refuse = |mut truth: RequestTruth, Refusal(status, kind, msg): Refusal| {
        truth.status = if status == StatusCode::NOT_FOUND {
            RequestStatus::NotFound
        } else {
            RequestStatus::BadRequest
        };
        truth.http_status = status.as_u16();
        (truth.end_unix_ns, truth.end_offset_ns) = s.now();
        s.record(truth);
        error_response(status, kind, &msg)
    };
    let parsed = match parse(&s, endpoint, body) {
        Ok(p) => p,
        Err(refusal) => return refuse(truth, refusal),
    };
    truth.stream = parsed.stream;
    truth.prompt_tokens = parsed.prompt_tokens;
    let outcome = match model::decide(
        s.cfg.seed,
        index,
        &parsed.ask,
        s.cfg.max_model_len,
        &s.cfg.output_len,
        &s.cfg.faults,
    ) {
        Ok(o) => o,
        Err(e @ (AskError::TooLong { .. } | AskError::PromptTooLong { .. })) => {
            return refuse(
                truth,
                Refusal(StatusCode::BAD_REQUEST, "BadRequestError", e.to_string()),
            )
        }
        Err(e) => {
            return refuse(
                truth,
                Refusal(StatusCode::BAD_REQUEST, "BadRequestError", e.to_string()),
            )
        }
    };
    truth.output_tokens = outcome.output_tokens;
    truth.fault = outcome.fault.map(|f| f.name().to_string());
    if outcome.fault == Some(Fault::Http500) {
        truth.status = RequestStatus::ServerError;
        truth.http_status = 500;
        (truth.end_unix_ns, truth.end_offset_ns) = s.now();
        s.record(truth);
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "simulated engine failure (fault-500-rate)",
        );
    }

    let echo_id = headers.get("x-request-id").cloned();
    let fast = s.cfg.latency.is_zero() && s.slots.is_none() && outcome.fault.is_none();
    let mut job = Job::new(s, truth, outcome, parsed.opts);
    job.prefix_blocks = parsed.blocks;
    let mut response = if parsed.stream {
        if fast {
            // Nothing can wait: build the whole event stream in one buffer.
            let mut buf = String::with_capacity(256 + 200 * job.outcome.output_tokens as usize);
            while let Some(Some(ev)) = job.next_event().now_or_never() {
                job.write_sse(&mut buf, ev);
            }
            sse_response(Body::from(buf))
        } else {
            let stream = futures_util::stream::unfold(job, |mut job| async move {
                let ev = job.next_event().await?;
                if let Ev::Drop = ev {
                    let err = std::io::Error::other("simulated dropped stream (fault-drop-rate)");
                    return Some((Err(err), job));
                }
                if let Ev::Aborted = ev {
                    return Some((Err(std::io::Error::other("response aborted")), job));
                }
                let mut buf = String::with_capacity(320);
                job.write_sse(&mut buf, ev);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), job))
            });
            sse_response(Body::from_stream(stream))
        }
    } else {
        job.run_to_end().await
    };
    if let Some(id) = echo_id {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
