//! Asking the engine over HTTP: one GET with a timeout over any byte stream (TCP to the engine,
//! or the agent's Unix status socket for `nodeagent status`), and the readiness rule of
//! VLLM-NOTES.md: `/health` answers 200 and `/v1/models` lists the served model name.
//! Connection refused means "still loading", not an error of the engine.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {target}{path}: {message}")]
    Request { target: String, path: String, message: String },
    #[error("GET {target}{path}: no answer within {timeout:?}")]
    Timeout { target: String, path: String, timeout: Duration },
}

/// One HTTP/1.1 GET over `io`; returns status and body.
async fn get_over<IO>(io: IO, target: &str, path: &str) -> Result<(u16, Bytes), HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |message: String| HttpError::Request {
        target: target.to_string(),
        path: path.to_string(),
        message,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| err(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| err(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

/// GET `http://ADDR/PATH` with an overall timeout.
pub async fn get_tcp(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let target = addr.to_string();
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect { target: target.clone(), source })?;
        get_over(stream, &target, path).await
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
        Err(HttpError::Timeout { target: target.clone(), path: path.to_string(), timeout })
    })
}

/// GET `PATH` over the Unix socket at `socket` with an overall timeout.
pub async fn get_unix(
    socket: &Path,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let target = socket.display().to_string();
    let fut = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| HttpError::Connect { target: target.clone(), source })?;
        get_over(stream, &target, path).await
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
        Err(HttpError::Timeout { target: target.clone(), path: path.to_string(), timeout })
    })
}

/// The answer of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `/health` 200 (and, for readiness, the model listed).
    Healthy,
    /// Nothing listens yet (connection refused): loading.
    NotListening,
    /// Listening but not healthy: the reason.
    Unhealthy(String),
}

/// Whether the `/v1/models` body lists `name` (OpenAI list shape: `{"data":[{"id":"qwen2.5"}]}`).
pub fn models_lists(body: &[u8], name: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("data")?
                .as_array()
                .map(|a| a.iter().any(|m| m.get("id").and_then(|i| i.as_str()) == Some(name)))
        })
        .unwrap_or(false)
}

/// Probes `/health`, and with `model` set, `/v1/models` too.
pub async fn probe(addr: SocketAddr, model: Option<&str>, timeout: Duration) -> Probe {
    match get_tcp(addr, "/health", timeout).await {
        Err(HttpError::Connect { .. }) => return Probe::NotListening,
        Err(e) => return Probe::Unhealthy(e.to_string()),
        Ok((200, _)) => {}
        Ok((code, _)) => return Probe::Unhealthy(format!("/health answered {code}")),
    }
    let Some(model) = model else { return Probe::Healthy };
    match get_tcp(addr, "/v1/models", timeout).await {
        Ok((200, body)) if models_lists(&body, model) => Probe::Healthy,
        Ok((200, _)) => Probe::Unhealthy(format!("/v1/models does not list `{model}`")),
        Ok((code, _)) => Probe::Unhealthy(format!("/v1/models answered {code}")),
        Err(e) => Probe::Unhealthy(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_list_parsing() {
        assert!(models_lists(br#"{"object":"list","data":[{"id":"qwen2.5"}]}"#, "qwen2.5"));
        assert!(!models_lists(br#"{"data":[{"id":"other"}]}"#, "qwen2.5"));
        assert!(!models_lists(b"not json", "qwen2.5"));
    }

    #[tokio::test]
    async fn probe_against_a_real_loopback_server() {
        use axum::routing::get;
        let app = axum::Router::new()
            .route("/health", get(|| async { "" }))
            .route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let t = Duration::from_secs(2);
        assert_eq!(probe(addr, Some("m"), t).await, Probe::Healthy);
        assert!(matches!(probe(addr, Some("x"), t).await, Probe::Unhealthy(_)));
        server.abort();
        let _ = server.await;
        // A port bound but not listening refuses connections; holding it keeps a parallel test
        // from taking it in between (reusing the server's freed port did, once, under load).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = socket.local_addr().unwrap();
        assert_eq!(probe(closed, None, t).await, Probe::NotListening);
    }
}
