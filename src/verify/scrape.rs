//! Scrapes the engine's `/metrics` during a level: one scrape as the measured phase begins,
//! one every `interval` while it runs (for the gauges), one after it ends; `server_metrics`
//! turns them into the level's `ServerLevel`. A scrape that fails is skipped (the level goes
//! on); the level's figures then rest on the scrapes that answered.
//!
//! Not here: parsing and summarising (`server_metrics`), deciding which URL (`sweep`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::server_metrics::{self, Snapshot};
use crate::monitor::agent::http_get;
use crate::summary::ServerLevel;

/// Longest wait for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One GET of `url`, parsed; `None` when it failed.
pub async fn scrape(url: &str) -> Option<Snapshot> {
    match http_get(url, SCRAPE_TIMEOUT).await {
        Ok(body) => match server_metrics::parse(&body) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!("the server's metrics at {url} do not parse: {e}");
                None
            }
        },
        Err(e) => {
            tracing::debug!("scraping the server's metrics failed: {e}");
            None
        }
    }
}

/// The scrapes of one level in progress.
pub struct LevelScraper {
    url: String,
    interval: Duration,
    first: Option<Snapshot>,
    during: Arc<Mutex<Vec<Snapshot>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl LevelScraper {
    /// Takes the first scrape, then one every `interval` until `finish`.
    pub async fn start(url: &str, interval: Duration) -> Self {
        let first = scrape(url).await;
        let during = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let (url, during, stop) = (url.to_string(), during.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if let Some(s) = scrape(&url).await {
                        if let Ok(mut v) = during.lock() {
                            v.push(s);
                        }
                    }
                }
            })
        };
        Self { url: url.to_string(), interval, first, during, stop, task }
    }

    /// Stops the periodic scrapes, takes the last one and summarises the level.
    pub async fn finish(self) -> Option<ServerLevel> {
        self.stop.cancel();
        let _ = self.task.await;
        // The client has every response; let the server's counters catch up with its writes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let last = scrape(&self.url).await?;
        let during = self.during.lock().map(|v| v.clone()).unwrap_or_default();
        server_metrics::summarize(
            &self.url,
            self.interval.as_secs_f64(),
            self.first.as_ref()?,
            &during,
            &last,
        )
    }
}
