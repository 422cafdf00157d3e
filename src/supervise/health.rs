//! Asking the engine over HTTP: one GET with a timeout over any byte stream (TCP to the engine,
//! or the agent's Unix status socket for `nodeagent status`), and the readiness rule of
//! VLLM-NOTES.md: `/health` answers 200 and `/v1/models` lists the served model name.
//! Connection refused means "still loading", not an error of the engine.
//!
//! The paths are the engine's (`[probe]`, `config::ProbePaths`): `Prober` asks them and falls
//! back where an engine lacks one: a 404 on `live` (vLLM's `/live`) falls back to `health`, a
//! 404 on `health` (llama-cpp-python has none) to `models`, each with a note said once.
//!
//! Not here: what a failed probe leads to (`super::supervisor`).

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

/// Asks an engine's probe paths, remembering which of them the engine lacks (a 404), so the
/// fallback is decided once per engine life.
#[derive(Debug)]
pub struct Prober {
    paths: crate::config::ProbePaths,
    /// `live` answered 404: liveness asks `health` instead.
    live_missing: bool,
    /// `health` answered 404: readiness and liveness ask `models` instead.
    health_missing: bool,
    /// Fallback notes not yet taken by the caller.
    notes: Vec<String>,
}

impl Prober {
    pub fn new(paths: crate::config::ProbePaths) -> Self {
        Self { paths, live_missing: false, health_missing: false, notes: Vec::new() }
    }

    /// The fallback notes since the last call (each said once per life).
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Readiness: `health` answers `expect_status` (or, where the engine has no `health`,
    /// `models` answers 200), and with `model` set `models` lists it.
    pub async fn ready(&mut self, addr: SocketAddr, model: Option<&str>, t: Duration) -> Probe {
        self.ask(addr, model, t, false).await
    }

    /// Liveness: like readiness, with `live` asked first where the profile names one.
    pub async fn live(&mut self, addr: SocketAddr, model: Option<&str>, t: Duration) -> Probe {
        self.ask(addr, model, t, true).await
    }

    async fn ask(
        &mut self,
        addr: SocketAddr,
        model: Option<&str>,
        timeout: Duration,
        live: bool,
    ) -> Probe {
        let expect = self.paths.expect_status;
        let mut asked_models = false;
        // The first path the engine has: `live` (liveness only), `health`, else `models`.
        let live_path = self.paths.live.clone().filter(|_| live && !self.live_missing);
        let health_path = self.paths.health.clone().filter(|_| !self.health_missing);
        for (is_live, path) in [(true, live_path), (false, health_path)] {
            let Some(path) = path else { continue };
            match get_tcp(addr, &path, timeout).await {
                Err(HttpError::Connect { .. }) => return Probe::NotListening,
                Err(e) => return Probe::Unhealthy(e.to_string()),
                Ok((code, _)) if code == expect => break,
                Ok((404, _)) => {
                    let next = if is_live {
                        self.live_missing = true;
                        self.paths.health.clone().filter(|_| !self.health_missing)
                    } else {
                        self.health_missing = true;
                        None
                    };
                    let instead = next.or(self.paths.models.clone()).unwrap_or_default();
                    self.notes.push(format!(
                        "GET {path} answered 404: this engine has no {path}; {} {instead} \
                         instead ([probe] in docs/serve.md)",
                        if is_live { "liveness uses" } else { "readiness and liveness use" }
                    ));
                    if !is_live {
                        match self.models_probe(addr, model, timeout).await {
                            Some(p) => return p,
                            None => return Probe::Unhealthy(format!("{path} answered 404")),
                        }
                    }
                }
                Ok((code, _)) => return Probe::Unhealthy(format!("{path} answered {code}")),
            }
        }
        let no_health = self.health_missing || self.paths.health.is_none();
        if no_health && !asked_models {
            asked_models = true;
            if let Some(p) = self.models_probe(addr, model, timeout).await {
                return p;
            }
        }
        if asked_models || model.is_none() {
            return Probe::Healthy;
        }
        self.models_probe(addr, model, timeout).await.unwrap_or(Probe::Healthy)
    }

    /// GET `models`: 200 (and `model` listed, when given); `None` when there is no such path.
    async fn models_probe(
        &self,
        addr: SocketAddr,
        model: Option<&str>,
        timeout: Duration,
    ) -> Option<Probe> {
        let path = self.paths.models.as_deref()?;
        Some(match get_tcp(addr, path, timeout).await {
            Err(HttpError::Connect { .. }) => Probe::NotListening,
            Err(e) => Probe::Unhealthy(e.to_string()),
            Ok((200, body)) => match model {
                Some(m) if !models_lists(&body, m) => {
                    Probe::Unhealthy(format!("{path} does not list `{m}`"))
                }
                _ => Probe::Healthy,
            },
            Ok((code, _)) => Probe::Unhealthy(format!("{path} answered {code}")),
        })
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

    fn paths(toml: &str) -> crate::config::ProbePaths {
        toml::from_str::<crate::config::ProbeConfig>(toml).unwrap().paths()
    }

    /// llama-cpp-python: `/v1/models`, no `/health`. Readiness falls back to `/v1/models` with
    /// one note; the model must still be listed.
    #[tokio::test]
    async fn a_404_on_health_falls_back_to_the_models_list_with_one_note() {
        use axum::routing::get;
        let app =
            axum::Router::new().route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let t = Duration::from_secs(2);
        // What the old rule said: never ready.
        assert_eq!(
            probe(addr, Some("m"), t).await,
            Probe::Unhealthy("/health answered 404".into())
        );
        let mut p = Prober::new(paths(""));
        assert_eq!(p.ready(addr, Some("m"), t).await, Probe::Healthy);
        assert_eq!(
            p.take_notes(),
            ["GET /health answered 404: this engine has no /health; readiness and liveness use \
              /v1/models instead ([probe] in docs/serve.md)"]
        );
        assert_eq!(p.live(addr, Some("m"), t).await, Probe::Healthy);
        assert_eq!(
            p.ready(addr, Some("x"), t).await,
            Probe::Unhealthy("/v1/models does not list `x`".into())
        );
        assert!(p.take_notes().is_empty(), "the note is said once");
        server.abort();
    }

    /// A profile with `live = "/live"`: liveness asks `/live`; an engine without it falls back
    /// to `/health` (one note); a failing `/live` is unhealthy; `expect_status` is honoured.
    #[tokio::test]
    async fn live_is_asked_for_liveness_and_a_404_falls_back_to_health() {
        use axum::http::StatusCode;
        use axum::routing::get;
        let with_live = axum::Router::new()
            .route("/health", get(|| async { StatusCode::NO_CONTENT }))
            .route("/live", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }));
        let without = axum::Router::new()
            .route("/health", get(|| async { StatusCode::NO_CONTENT }))
            .route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }));
        let mut addrs = Vec::new();
        for app in [with_live, without] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let t = Duration::from_secs(2);
        let live = paths("live = \"/live\"\nexpect_status = 204\n");
        let mut p = Prober::new(live.clone());
        assert_eq!(p.ready(addrs[0], Some("m"), t).await, Probe::Healthy, "/live not asked");
        assert_eq!(
            p.live(addrs[0], Some("m"), t).await,
            Probe::Unhealthy("/live answered 503".into())
        );
        let mut p = Prober::new(live);
        assert_eq!(p.live(addrs[1], Some("m"), t).await, Probe::Healthy);
        assert_eq!(
            p.take_notes(),
            ["GET /live answered 404: this engine has no /live; liveness uses /health instead \
              ([probe] in docs/serve.md)"]
        );
        // The default expects 200: 204 is not it.
        let mut p = Prober::new(paths(""));
        assert_eq!(
            p.ready(addrs[1], None, t).await,
            Probe::Unhealthy("/health answered 204".into())
        );
    }
}
