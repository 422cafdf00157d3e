//! The agent's HTTP endpoint on loopback: `/metrics` (Prometheus text of the GPU gauges, engine
//! state and alerts, then the engine's own metrics re-labelled), `/metrics/engine` (only those),
//! `/status` (the `MonitorStatus` JSON `nodeagent status` reads) and `/ready` (200 while the
//! engine serves, 503 while it drains, starts or restarts). It only reads `Shared`;
//! the sampling loop writes it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use super::agent::Shared;
use super::metrics::{relabel, render};

/// Prometheus text format 0.0.4: what vLLM serves too, so its metrics can follow ours.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/engine", get(engine_metrics))
        .route("/status", get(status))
        .route("/ready", get(ready))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let engine = shared.engine_metrics.read().ok().and_then(|m| m.clone());
    let text = render(&shared.snapshot(), engine.as_deref());
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

async fn engine_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.engine_metrics.read().ok().and_then(|m| m.clone());
    match text {
        Some(t) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], relabel(&t, "0"))
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "engine metrics not scraped (no engine metrics URL, or the last scrape failed)\n",
        )
            .into_response(),
    }
}

/// The agent's readiness for a router or a Kubernetes probe: 200 while the supervised engine
/// is `ready` or `degraded`, 503 with the state otherwise (`draining` before a stop, starting,
/// restarting, ...).
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.snapshot().engine.state;
    if matches!(state.as_str(), "ready" | "degraded") {
        (StatusCode::OK, format!("{state}\n")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n")).into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<super::status::MonitorStatus> {
    Json(shared.snapshot())
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks one) and returns the bound address and the serving future,
/// which ends when `cancel` fires.
pub async fn bind(
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let app = router(shared);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    };
    Ok((bound, fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/ready` follows the supervised engine's state: 200 while it serves, 503 while it
    /// drains before a stop (a router stops sending), starts or restarts.
    #[tokio::test]
    async fn ready_answers_200_only_while_the_engine_serves() {
        let shared = Arc::new(Shared::default());
        let cancel = CancellationToken::new();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (bound, serve) = bind(addr, shared.clone(), cancel.clone()).await.unwrap();
        let server = tokio::spawn(serve);
        let t = std::time::Duration::from_secs(2);
        for (state, want) in
            [("ready", 200), ("degraded", 200), ("draining", 503), ("starting", 503)]
        {
            shared.status.write().unwrap().engine.state = state.to_string();
            let (code, body) = crate::supervise::health::get_tcp(bound, "/ready", t).await.unwrap();
            assert_eq!((code, String::from_utf8_lossy(&body).trim()), (want, state));
        }
        cancel.cancel();
        let _ = server.await;
    }
}
