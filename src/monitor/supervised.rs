//! The monitor under `nodeagent serve`: the bridge from the supervisor's status record to the
//! monitor's `EngineReport` (state, pids, restarts, binding check, the engine's metrics URL),
//! the monitor's status copied back into the record (so `nodeagent status` shows GPUs and
//! alerts), the `/metrics` endpoint, and the hung-engine verdict handed to the supervisor.
//! It starts tasks; it never touches the engine itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::supervise::status::{AgentStatus, Shared as AgentShared, State};

use super::agent::{self, http_get, AgentChannels, AgentConfig, Monitor, Shared};
use super::sampler::Sampler;
use super::server::{self, ServerError};
use super::status::EngineReport;

/// The GPU indexes an engine is restricted to by its environment (`CUDA_VISIBLE_DEVICES`,
/// `MACA_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`), when they are plain indexes.
pub fn visible_gpus(env: &BTreeMap<String, String>) -> Option<Vec<u32>> {
    ["CUDA_VISIBLE_DEVICES", "MACA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"].iter().find_map(|k| {
        let v = env.get(*k)?;
        v.split(',').map(|s| s.trim().parse::<u32>().ok()).collect::<Option<Vec<_>>>()
    })
}

/// The monitor's view of the engine, from the supervisor's record.
pub fn engine_report(status: &AgentStatus, gpus: Option<&[u32]>) -> EngineReport {
    let running = engine_running(status);
    let live = status.liveness.as_ref();
    EngineReport {
        supervised: true,
        state: status.state.to_string(),
        running,
        pids: status.pids.iter().filter_map(|&p| u32::try_from(p).ok()).collect(),
        gpus: gpus.map(<[u32]>::to_vec),
        restarts: u64::from(status.restarts),
        binding_ok: status.binding_check.as_ref().map(|b| b.ok),
        health_latency_ms: None,
        in_flight: None,
        memory_bytes: status.engine_memory_bytes,
        cpu_seconds: status.engine_cpu_seconds,
        memory_by_node: status.memory_by_node.clone(),
        placement: status.placement.clone(),
        last_token_age_s: live.and_then(|l| l.last_token_s_ago),
        requests_running: live.and_then(|l| l.running),
        requests_waiting: live.and_then(|l| l.waiting),
        canary_ok: live.and_then(|l| l.canary.as_ref()).map(|c| c == "ok"),
        canary_failures: live.filter(|l| l.canary.is_some()).map(|l| l.canary_failures),
        drain_in_flight: status
            .drain
            .as_ref()
            .filter(|_| status.state == State::Draining)
            .and_then(|d| d.in_flight),
        metrics_url: Some(format!("http://127.0.0.1:{}/metrics", status.port)),
    }
}

/// Whether the record names a running engine (pids, in a state that has one).
fn engine_running(status: &AgentStatus) -> bool {
    !matches!(status.state, State::Stopped | State::Failed) && !status.pids.is_empty()
}

/// What `spawn` started.
#[derive(Debug)]
pub struct Supervised {
    /// Where `/metrics` and `/status` answer.
    pub addr: SocketAddr,
    /// The debounced hung-engine verdict (true: requests in flight, GPUs idle).
    pub hung: watch::Receiver<bool>,
    pub shared: Arc<Shared>,
}

/// Starts the monitor for a supervised engine: the sampling loop (which reads the engine report
/// from the agent's record right before each tick), the endpoint on `listen`, and a bridge task
/// that measures the engine's `/health` latency every half interval and copies the monitor's
/// status into the agent's record.
pub async fn spawn(
    sampler: Arc<dyn Sampler>,
    config: AgentConfig,
    listen: SocketAddr,
    agent_status: AgentShared,
    gpus: Option<Vec<u32>>,
    cancel: CancellationToken,
) -> Result<Supervised, ServerError> {
    let shared = Arc::new(Shared::default());
    let (addr, serve) = server::bind(listen, shared.clone(), cancel.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    // The engine's `/health` latency, measured by the bridge; the rest of the report is read
    // from the record right before each tick.
    let latency: Arc<Mutex<Option<f64>>> = Arc::default();
    let engine = {
        let (agent_status, latency) = (agent_status.clone(), latency.clone());
        Box::new(move || {
            let mut r = engine_report(&agent_status.lock().unwrap().snapshot(), gpus.as_deref());
            if r.running {
                r.health_latency_ms = *latency.lock().unwrap();
            }
            r
        })
    };
    let (hung_tx, hung_rx) = watch::channel(false);
    let interval = config.interval;
    let monitor = Monitor::new(sampler, config);
    let channels = AgentChannels { engine, hung: Some(hung_tx), samples: None };
    tokio::spawn(agent::run(monitor, shared.clone(), channels, cancel.clone()));

    let bridge_shared = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (running, port) = {
                let st = agent_status.lock().unwrap();
                (engine_running(&st), st.port)
            };
            let measured = if running {
                let url = format!("http://127.0.0.1:{port}/health");
                let started = Instant::now();
                let ok = http_get(&url, Duration::from_secs(2)).await.is_ok();
                ok.then(|| started.elapsed().as_secs_f64() * 1e3)
            } else {
                None
            };
            *latency.lock().unwrap() = measured;
            let snapshot = bridge_shared.snapshot();
            if snapshot.samples_total > 0 {
                match serde_json::to_value(&snapshot) {
                    Ok(v) => agent_status.lock().unwrap().monitor = Some(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "monitor status not copied to the agent's")
                    }
                }
            }
        }
    });
    Ok(Supervised { addr, hung: hung_rx, shared })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_gpus_from_env() {
        let env: BTreeMap<String, String> =
            [("MACA_VISIBLE_DEVICES".to_string(), "0,2".to_string())].into();
        assert_eq!(visible_gpus(&env), Some(vec![0, 2]));
        let env: BTreeMap<String, String> =
            [("CUDA_VISIBLE_DEVICES".to_string(), "GPU-1234".to_string())].into();
        assert_eq!(visible_gpus(&env), None);
    }

    #[test]
    fn the_liveness_signals_reach_the_engine_report() {
        use crate::supervise::status::Liveness;
        let mut st =
            AgentStatus::new("bare".into(), vec![], 8000, None, crate::binding::Binding::none());
        let r = engine_report(&st, None);
        assert_eq!((r.last_token_age_s, r.requests_waiting, r.canary_ok), (None, None, None));
        st.liveness = Some(Liveness {
            last_token_s_ago: Some(130),
            running: Some(0.0),
            waiting: Some(3.0),
            canary: Some("failed: HTTP 500".into()),
            canary_failures: 2,
            ..Default::default()
        });
        let r = engine_report(&st, None);
        assert_eq!(r.last_token_age_s, Some(130));
        assert_eq!((r.requests_running, r.requests_waiting), (Some(0.0), Some(3.0)));
        assert_eq!((r.canary_ok, r.canary_failures), (Some(false), Some(2)));
        // The drain's in-flight count is reported while draining only.
        st.drain = Some(crate::supervise::status::Drain {
            since: "2026-01-01T00:00:00Z".into(),
            timeout_s: 30.0,
            in_flight: Some(2.0),
            result: None,
        });
        assert_eq!(engine_report(&st, None).drain_in_flight, None, "state starting");
        st.state = State::Draining;
        let r = engine_report(&st, None);
        assert_eq!((r.state.as_str(), r.drain_in_flight), ("draining", Some(2.0)));
    }

    /// The placement figures (memory off the binding's nodes, threads outside its CPUs, their
    /// alerts) keep their keys and places in both JSON documents, the status record and the
    /// monitor's engine report, byte for byte; and both read back.
    #[test]
    fn placement_figures_keep_their_place_in_both_json_documents() {
        let mut st =
            AgentStatus::new("bare".into(), vec![], 8000, None, crate::binding::Binding::none());
        (st.agent_pid, st.started_at) = (1, None);
        (st.state_since, st.agent_started) = ("t0".into(), "t0".into());
        st.memory_by_node = Some([(0, 4096), (1, 1024)].into());
        st.placement.memory_off_node_share = Some(0.2);
        st.placement.memory_off_node_alert = true;
        st.placement.thread_placement = Some(crate::host::task_stat::ThreadPlacement {
            threads: 3,
            last_cpus: vec![0, 5],
            last_cpus_outside: vec![5],
            outside_share: Some(0.5),
            ..Default::default()
        });
        st.placement.cpu_outside_alert = true;
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(
            json,
            r#"{"instance":0,"gpus":null,"state_dir":null,"agent_pid":1,"state":"starting","message":"starting","state_since":"t0","agent_started":"t0","uptime_s":0,"engine_uptime_s":null,"runtime":"bare","argv":[],"port":8000,"served_model_name":null,"main_pid":null,"pids":[],"containment":null,"engine_memory_bytes":null,"engine_cpu_seconds":null,"binding":{"cpu_nodes":[],"cpus":null,"memory":{"mode":"default"}},"binding_check":null,"memory_by_node":{"0":4096,"1":1024},"memory_off_node_share":0.2,"memory_off_node_alert":true,"thread_placement":{"threads":3,"last_cpus":[0,5],"last_cpus_outside":[5],"migrations":null,"migrations_delta":null,"switches":null,"last_cpu_changes":null,"cpu_seconds":null,"outside_share":0.5},"cpu_outside_alert":true,"health":null,"liveness":null,"probe_notes":[],"drain":null,"restarts":0,"last_exit":null}"#
        );
        assert_eq!(serde_json::from_str::<AgentStatus>(&json).unwrap(), st);
        let report = engine_report(&st, Some(&[0]));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"supervised":true,"state":"starting","running":false,"pids":[],"gpus":[0],"restarts":0,"binding_ok":null,"health_latency_ms":null,"in_flight":null,"memory_bytes":null,"cpu_seconds":null,"memory_by_node":{"0":4096,"1":1024},"memory_off_node_share":0.2,"memory_off_node_alert":true,"thread_placement":{"threads":3,"last_cpus":[0,5],"last_cpus_outside":[5],"migrations":null,"migrations_delta":null,"switches":null,"last_cpu_changes":null,"cpu_seconds":null,"outside_share":0.5},"cpu_outside_alert":true,"last_token_age_s":null,"requests_running":null,"requests_waiting":null,"canary_ok":null,"canary_failures":null,"drain_in_flight":null,"metrics_url":"http://127.0.0.1:8000/metrics"}"#
        );
        assert_eq!(serde_json::from_str::<EngineReport>(&json).unwrap(), report);
    }
}
