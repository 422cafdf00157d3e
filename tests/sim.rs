//! Tests of the engine simulator over real HTTP on loopback (port 0): the library in-process
//! for the wire format, latency model, queueing, faults and determinism; the `nodeagent
//! simulate` binary for process behaviour (startup delay, crash, hang, workers, signals).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nodeagent::sim::model::{self, count_tokens};
use nodeagent::sim::{
    self, Fault, FaultRates, LatencyModel, OutputLen, OutputLenDist, RequestStatus, SimConfig,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

// ---------------------------------------------------------------------------------------------
// a minimal client that timestamps what arrives

#[derive(Debug)]
struct Reply {
    status: u16,
    /// SSE `data:` payloads, each with the unix time (ns) its frame arrived.
    events: Vec<(u64, String)>,
    body: String,
    /// The body ended cleanly (not cut).
    complete: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn chunks(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|(_, d)| d != "[DONE]")
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect()
    }
    fn has_done(&self) -> bool {
        self.events.last().is_some_and(|(_, d)| d == "[DONE]")
    }
    /// Concatenated content (chat) or text (completions) of every chunk.
    fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|c| {
                let ch = c["choices"].get(0)?;
                ch["delta"]["content"].as_str().or(ch["text"].as_str()).map(str::to_string)
            })
            .collect()
    }
    /// Arrival time of the first chunk with non-empty content.
    fn first_content_ns(&self) -> Option<u64> {
        self.events.iter().find_map(|(t, d)| {
            let v: Value = serde_json::from_str(d).ok()?;
            let ch = v["choices"].get(0)?;
            let s = ch["delta"]["content"].as_str().or(ch["text"].as_str())?;
            (!s.is_empty()).then_some(*t)
        })
    }
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn post_with(base: &str, path: &str, body: String, request_id: Option<&str>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req =
        hyper::Request::post(format!("{base}{path}")).header("content-type", "application/json");
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let resp = client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut raw = String::new();
    let mut events = Vec::new();
    let mut complete = true;
    let mut pending = String::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => {
                complete = false;
                break;
            }
            Some(Ok(frame)) => {
                let now = unix_ns();
                if let Ok(data) = frame.into_data() {
                    let s = String::from_utf8(data.to_vec()).unwrap();
                    raw.push_str(&s);
                    pending.push_str(&s);
                    while let Some(end) = pending.find("\n\n") {
                        let ev: String = pending.drain(..end + 2).collect();
                        if let Some(d) = ev.trim_end().strip_prefix("data: ") {
                            events.push((now, d.to_string()));
                        }
                    }
                }
            }
        }
    }
    Reply { status, events, body: raw, complete }
}

async fn post(base: &str, path: &str, body: Value) -> Reply {
    post_with(base, path, body.to_string(), None).await
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client.get(format!("{base}{path}").parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn chat(max_tokens: Option<u32>, stream: bool, include_usage: bool) -> Value {
    let mut v = json!({
        "model": "qwen2.5",
        "messages": [
            {"role": "system", "content": "你是人工智能专家。"},
            {"role": "user", "content": "解释人工智能"}
        ],
        "stream": stream,
    });
    if let Some(m) = max_tokens {
        v["max_tokens"] = json!(m);
    }
    if include_usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

/// How late a timed event may be on a loaded 2-core machine shared with compilers. Timing
/// assertions check "never early" exactly and "late" only against this.
const SLACK: Duration = Duration::from_millis(500);

fn fixed(ttft_ms: u64, tpot_ms: u64) -> SimConfig {
    SimConfig::fixed(Duration::from_millis(ttft_ms), Duration::from_millis(tpot_ms))
}

// ---------------------------------------------------------------------------------------------
// wire format

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_has_vllm_layout_with_usage() {
    for cfg in [SimConfig::zero_delay(), fixed(5, 1)] {
        let sim = sim::start(cfg).await.unwrap();
        let r = post(&sim.base_url(), "/v1/chat/completions", chat(Some(16), true, true)).await;
        assert_eq!(r.status, 200);
        assert!(r.complete && r.has_done(), "{r:?}");
        let chunks = r.chunks();
        // role chunk + 16 content chunks + usage chunk
        assert_eq!(chunks.len(), 18, "{}", r.body);
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        for (k, c) in chunks[1..17].iter().enumerate() {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "qwen2.5");
            let delta = c["choices"][0]["delta"]["content"].as_str().unwrap();
            assert_eq!(count_tokens(delta), 1);
            let finish = &c["choices"][0]["finish_reason"];
            if k == 15 {
                assert_eq!(finish, "length");
            } else {
                assert!(finish.is_null());
            }
        }
        let usage = &chunks[17];
        assert_eq!(usage["choices"], json!([]));
        // (9 + 4) + (6 + 4) + 3 with the documented tokenizer
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 26, "completion_tokens": 16, "total_tokens": 42})
        );
        let ids: Vec<_> = chunks.iter().map(|c| c["id"].clone()).collect();
        assert!(
            ids.iter().all(|i| *i == ids[0]) && ids[0].as_str().unwrap().starts_with("chatcmpl-")
        );

        // Without include_usage: no usage chunk.
        let r = post(&sim.base_url(), "/v1/chat/completions", chat(Some(3), true, false)).await;
        assert_eq!(r.chunks().len(), 4);
        assert!(r.chunks().iter().all(|c| c.get("usage").is_none()));
        assert!(r.has_done());
        sim.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_and_completions() {
    let sim = sim::start(fixed(1, 1)).await.unwrap();
    let base = sim.base_url();
    let r = post(&base, "/v1/chat/completions", chat(Some(7), false, false)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(count_tokens(text), 7);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["prompt_tokens"], 26);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Completions, not streaming, the seed's curl body (no max_tokens: seeded length).
    let r = post(&base, "/v1/completions", json!({"model": "qwen2.5", "prompt": "你是谁？"})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=511).contains(&n), "{n}");
    assert_eq!(u64::from(count_tokens(v["choices"][0]["text"].as_str().unwrap())), n);
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    // Completions, streaming: text chunks, no role chunk; token-id prompts count their ids.
    let r = post(
        &base,
        "/v1/completions",
        json!({"prompt": [1, 2, 3, 4, 5], "max_tokens": 5, "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await;
    let chunks = r.chunks();
    assert_eq!(chunks.len(), 6, "{}", r.body);
    assert!(chunks[..5].iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(count_tokens(&r.text()), 5);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 5);
    assert!(r.has_done());

    // min_tokens / ignore_eos are accepted; ignore_eos runs to max_tokens.
    let mut body = chat(Some(600), false, false);
    body["ignore_eos"] = json!(true);
    body["min_tokens"] = json!(10);
    let v = post(&base, "/v1/chat/completions", body).await.json();
    assert_eq!(v["usage"]["completion_tokens"], 600);

    let (status, models) = get(&base, "/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "qwen2.5");
    assert_eq!(get(&base, "/health").await.0, 200);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_vllm_errors_and_records() {
    let cfg = SimConfig { max_model_len: 100, ..SimConfig::zero_delay() };
    let sim = sim::start(cfg).await.unwrap();
    let base = sim.base_url();
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid JSON"),
        (json!({"model": "qwen2.5"}).to_string(), 400, "messages"),
        (chat(Some(0), false, false).to_string(), 400, "max_tokens"),
        (chat(Some(90), false, false).to_string(), 400, "maximum context length is 100 tokens"),
        (json!({"model": "llama", "messages": []}).to_string(), 404, "does not exist"),
    ];
    for (body, status, needle) in &cases {
        let r = post_with(&base, "/v1/chat/completions", body.clone(), None).await;
        assert_eq!(r.status, *status, "{body}");
        let v = r.json();
        assert_eq!(v["object"], "error");
        assert_eq!(v["code"], *status);
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let long = json!({"prompt": "word ".repeat(150), "max_tokens": 1});
    assert_eq!(post(&base, "/v1/completions", long).await.status, 400);
    assert_eq!(get(&base, "/v1/nothing").await.0, 404);
    let truth = sim.ground_truth();
    assert_eq!(truth.len(), 6);
    assert_eq!(truth.iter().filter(|t| t.status == RequestStatus::BadRequest).count(), 5);
    assert_eq!(truth.iter().filter(|t| t.status == RequestStatus::NotFound).count(), 1);
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// latency model, queueing, ground truth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_ground_truth_matches_model_and_client() {
    let sim = sim::start(fixed(100, 10)).await.unwrap();
    let r = post_with(
        &sim.base_url(),
        "/v1/chat/completions",
        chat(Some(11), true, true).to_string(),
        Some("req-ttft-1"),
    )
    .await;
    assert!(r.complete && r.has_done());
    let truth = sim.ground_truth();
    assert_eq!(truth.len(), 1);
    let t = &truth[0];
    assert_eq!(t.request_id, "req-ttft-1");
    assert_eq!(r.chunks()[0]["id"], "chatcmpl-req-ttft-1");
    assert_eq!((t.status, t.tokens_sent, t.output_tokens), (RequestStatus::Ok, 11, 11));
    let ttft = t.ttft().unwrap();
    // Never early; late only by what a loaded machine adds.
    assert!(
        ttft >= Duration::from_millis(100) && ttft < Duration::from_millis(100) + SLACK,
        "{ttft:?}"
    );
    // Decode time runs from the first token: 10 further tokens take at least 10 × 10 ms, and the last
    // comes at least 100 ms + 100 ms after the slot was taken; later only on a loaded machine.
    let decode = t.last_token_offset_ns.unwrap() - t.first_token_offset_ns.unwrap();
    assert!(decode >= 100_000_000 && decode < 100_000_000 + SLACK.as_nanos() as u64, "{decode}");
    let last = t.last_token_offset_ns.unwrap() - t.scheduled_offset_ns.unwrap();
    assert!(last >= 200_000_000 && last < 200_000_000 + SLACK.as_nanos() as u64, "{last}");
    // The client saw the first content token after the server wrote it, and soon after.
    let seen = r.first_content_ns().unwrap();
    let wrote = t.first_token_unix_ns.unwrap();
    assert!(seen >= wrote && seen - wrote < SLACK.as_nanos() as u64, "seen {seen} wrote {wrote}");
    // The role chunk came before any content, at once (it is not the first token).
    let role_at = r.events[0].0;
    assert!(seen - role_at >= 90_000_000, "role chunk must not wait for prefill");
    // Same record over HTTP.
    let (_, body) = get(&sim.base_url(), "/sim/requests").await;
    let over_http: Vec<sim::RequestTruth> = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http, truth);
    let (_, body) = get(&sim.base_url(), "/sim/requests?since=1").await;
    assert_eq!(body, "[]");
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_num_seqs_queue_in_fifo_order() {
    // Each request: 100 ms to the first token + 4 × 20 ms = 180 ms holding a slot.
    let cfg = SimConfig { max_num_seqs: 2, ..fixed(100, 20) };
    let sim = sim::start(cfg).await.unwrap();
    let base = sim.base_url();
    let mut tasks = Vec::new();
    for k in 0..6 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("q{k}");
            post_with(
                &base,
                "/v1/chat/completions",
                chat(Some(5), true, false).to_string(),
                Some(&id),
            )
            .await
        }));
        // Space arrivals so arrival order is certain.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Mid-run the metrics show 2 running and the rest waiting.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (_, metrics) = get(&base, "/metrics").await;
    assert!(metrics.contains("vllm:num_requests_running{model_name=\"qwen2.5\"} 2"), "{metrics}");
    assert!(metrics.contains("vllm:num_requests_waiting{model_name=\"qwen2.5\"} 4"), "{metrics}");
    for t in tasks {
        assert!(t.await.unwrap().has_done());
    }
    let mut truth = sim.ground_truth();
    truth.sort_by_key(|t| t.index);
    // FIFO: scheduled in arrival order.
    let scheduled: Vec<u64> = truth.iter().map(|t| t.scheduled_offset_ns.unwrap()).collect();
    assert!(scheduled.windows(2).all(|w| w[0] <= w[1]), "{scheduled:?}");
    // Never more than 2 holding a slot at once.
    for t in &truth {
        let at = t.scheduled_offset_ns.unwrap();
        let overlapping = truth
            .iter()
            .filter(|o| o.scheduled_offset_ns.unwrap() <= at && o.end_offset_ns > at)
            .count();
        assert!(overlapping <= 2, "{overlapping} running at {at}");
    }
    // A queued request gets the next slot freed (FIFO: the k-th request, k >= 2, the
    // (k-1)-th end of all; usually the request two places ahead of it, but on a loaded machine
    // two running requests may end in either order), and each holds its slot for the model's
    // 180 ms: queue times ~0, 0, 160, 160, 320, 320 ms.
    let mut ends: Vec<u64> = truth.iter().map(|t| t.end_offset_ns).collect();
    ends.sort_unstable();
    for (k, t) in truth.iter().enumerate().skip(2) {
        let freed = ends[k - 2];
        let sched = t.scheduled_offset_ns.unwrap();
        assert!(
            sched >= freed && sched - freed < SLACK.as_nanos() as u64,
            "request {k}: {sched} vs {freed}"
        );
    }
    for (k, t) in truth.iter().enumerate() {
        let held = (t.end_offset_ns - t.scheduled_offset_ns.unwrap()) / 1_000_000;
        assert!(
            held >= 180 && held < 180 + SLACK.as_millis() as u64,
            "request {k} held its slot {held} ms, model 180"
        );
        // The first two ran at once; the others waited for a slot.
        let q = t.queue_time().unwrap();
        if k < 2 {
            assert!(q < Duration::from_millis(50), "request {k} queued {q:?}");
        } else {
            assert!(q > Duration::from_millis(100), "request {k} queued only {q:?}");
        }
    }
    sim.shutdown().await.unwrap();
}

/// `stop_admitting_after`: a dead scheduler behind a live API server (vLLM #39863). The
/// request running at the cue finishes; new ones wait, counted in `vllm:num_requests_waiting`,
/// the token counters stop, and `/health` still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_admitting_leaves_requests_waiting_with_none_running() {
    let cfg = SimConfig { stop_admitting_after: Some(Duration::from_millis(200)), ..fixed(50, 20) };
    let sim = sim::start(cfg).await.unwrap();
    let base = sim.base_url();
    // Admitted before the cue: runs to the end (50 + 9 × 20 ms, past the cue).
    let b = base.clone();
    let before =
        tokio::spawn(
            async move { post(&b, "/v1/chat/completions", chat(Some(10), true, false)).await },
        );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(before.await.unwrap().has_done(), "the running request finishes");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let base = base.clone();
        waiting.push(tokio::spawn(async move {
            post(&base, "/v1/chat/completions", chat(Some(5), true, false)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, m1) = get(&base, "/metrics").await;
    assert!(m1.contains("vllm:num_requests_running{model_name=\"qwen2.5\"} 0"), "{m1}");
    assert!(m1.contains("vllm:num_requests_waiting{model_name=\"qwen2.5\"} 3"), "{m1}");
    assert_eq!(get(&base, "/health").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, m2) = get(&base, "/metrics").await;
    let tokens = |m: &str| {
        nodeagent::supervise::progress::vllm_sum(
            m,
            &["vllm:prompt_tokens_total", "vllm:generation_tokens_total"],
        )
    };
    assert_eq!(tokens(&m1), tokens(&m2), "no token counted while nothing is admitted");
    assert!(waiting.iter().all(|t| !t.is_finished()), "nobody admitted");
    sim.shutdown().await.unwrap();
    for t in waiting {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_time_grows_with_running_requests() {
    let cfg = SimConfig {
        max_num_seqs: 0,
        latency: LatencyModel {
            prefill_base: Duration::from_millis(10),
            prefill_per_token: Duration::ZERO,
            decode_base: Duration::from_millis(5),
            decode_per_running: Duration::from_millis(5),
        },
        ..SimConfig::default()
    };
    let sim = sim::start(cfg).await.unwrap();
    let base = sim.base_url();
    let alone = post(&base, "/v1/completions", json!({"prompt": "a", "max_tokens": 21})).await;
    assert_eq!(alone.status, 200);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            post(&base, "/v1/completions", json!({"prompt": "a", "max_tokens": 21})).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let truth = sim.ground_truth();
    // From slot to last token: 10 ms prefill, then 20 steps. Alone: 20 × (5 + 5×1) ms = 200 ms.
    // Four together: 20 × (5 + 5×4) = 500 ms.
    let decode = |t: &sim::RequestTruth| {
        t.last_token_offset_ns.unwrap() - t.scheduled_offset_ns.unwrap() - 10_000_000
    };
    let alone_ns = decode(&truth[0]);
    assert!(
        alone_ns >= 200_000_000 && alone_ns < 200_000_000 + SLACK.as_nanos() as u64,
        "{alone_ns}"
    );
    for t in &truth[1..] {
        assert!(decode(t) >= 400_000_000, "{}", decode(t));
    }
    // Prefill grows with the prompt.
    let cfg = SimConfig {
        latency: LatencyModel { prefill_per_token: Duration::from_millis(1), ..LatencyModel::ZERO },
        ..SimConfig::default()
    };
    let sim2 = sim::start(cfg).await.unwrap();
    post(&sim2.base_url(), "/v1/completions", json!({"prompt": vec![0; 200], "max_tokens": 1}))
        .await;
    let ttft = sim2.ground_truth()[0].ttft().unwrap();
    assert!(
        ttft >= Duration::from_millis(200) && ttft < Duration::from_millis(200) + SLACK,
        "{ttft:?}"
    );
    sim.shutdown().await.unwrap();
    sim2.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// faults and determinism

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_happen_as_drawn_and_at_the_configured_rates() {
    let faults = FaultRates { http_500: 0.1, drop: 0.1, stall: 0.1, stream_error: 0.1 };
    let cfg =
        SimConfig { seed: 11, faults, stall: Duration::from_millis(30), ..SimConfig::zero_delay() };
    let sim = sim::start(cfg.clone()).await.unwrap();
    let n = 300u64;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for index in 0..n {
        let r = post(&sim.base_url(), "/v1/chat/completions", chat(Some(8), true, true)).await;
        let ask =
            model::Ask { prompt_tokens: 26, max_tokens: Some(8), min_tokens: 0, ignore_eos: false };
        let expected = model::decide(11, index, &ask, cfg.max_model_len, &cfg.output_len, &faults)
            .unwrap()
            .fault;
        let seen = match (r.status, r.complete, r.has_done()) {
            (500, _, _) => "http_500",
            (200, false, false) => "drop",
            (200, true, true) if r.events.iter().any(|(_, d)| d.starts_with("{\"error\"")) => {
                "stream_error"
            }
            (200, true, true) => "none",
            other => panic!("unexpected reply {other:?}: {}", r.body),
        };
        match expected {
            Some(Fault::Http500) => assert_eq!(seen, "http_500"),
            Some(Fault::Drop { .. }) => {
                assert_eq!(seen, "drop");
                // Cut half-way: 4 of 8 tokens were sent.
                assert_eq!(count_tokens(&r.text()), 4);
            }
            Some(Fault::StreamError { .. }) => assert_eq!(seen, "stream_error"),
            Some(Fault::Stall { .. }) | None => assert_eq!(seen, "none"),
        }
        *counts.entry(expected.map_or("none", |f| f.name())).or_default() += 1;
    }
    for kind in ["http_500", "drop", "stall", "stream_error"] {
        let got = counts.get(kind).copied().unwrap_or(0) as f64 / n as f64;
        assert!((got - 0.1).abs() < 0.05, "{kind}: {got}");
    }
    // Stalls show in the ground truth: the gap between tokens includes the 30 ms stall.
    let truth = sim.ground_truth();
    let stalled: Vec<_> = truth.iter().filter(|t| t.fault.as_deref() == Some("stall")).collect();
    assert_eq!(stalled.len() as u64, counts["stall"]);
    for t in stalled {
        assert_eq!(t.status, RequestStatus::Ok);
        let span = t.last_token_offset_ns.unwrap() - t.first_token_offset_ns.unwrap();
        assert!(span >= 30_000_000, "{span}");
    }
    let dropped = truth.iter().filter(|t| t.status == RequestStatus::Dropped).count() as u64;
    assert_eq!(dropped, counts["drop"]);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_faults() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Drop: the connection closes with no reply at all.
    let cfg = SimConfig {
        faults: FaultRates { drop: 1.0, ..FaultRates::default() },
        ..SimConfig::zero_delay()
    };
    let sim = sim::start(cfg).await.unwrap();
    let body = json!({"prompt": "hi", "max_tokens": 4}).to_string();
    let mut conn = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut reply)).await.unwrap();
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    let t = &sim.ground_truth()[0];
    assert_eq!(
        (t.status, t.http_status, t.fault.as_deref()),
        (RequestStatus::Dropped, 0, Some("drop"))
    );
    sim.shutdown().await.unwrap();

    // Stream error: a non-streaming request gets HTTP 500 with vLLM's error body.
    let cfg = SimConfig {
        faults: FaultRates { stream_error: 1.0, ..FaultRates::default() },
        ..SimConfig::zero_delay()
    };
    let sim = sim::start(cfg).await.unwrap();
    let r =
        post(&sim.base_url(), "/v1/completions", json!({"prompt": "hi", "max_tokens": 4})).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["type"], "InternalServerError");
    assert_eq!(sim.ground_truth()[0].status, RequestStatus::StreamError);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_requests_same_answers() {
    async fn run(seed: u64) -> Vec<(u16, String, u64)> {
        let cfg = SimConfig {
            seed,
            output_len: OutputLen { dist: OutputLenDist::Exponential, mean: 20 },
            faults: FaultRates { http_500: 0.2, ..FaultRates::default() },
            ..SimConfig::zero_delay()
        };
        let sim = sim::start(cfg).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..30 {
            let r = post(&sim.base_url(), "/v1/chat/completions", chat(None, false, false)).await;
            if r.status == 200 {
                let v = r.json();
                out.push((
                    200,
                    v["choices"][0]["message"]["content"].as_str().unwrap().to_string(),
                    v["usage"]["completion_tokens"].as_u64().unwrap(),
                ));
            } else {
                out.push((r.status, String::new(), 0));
            }
        }
        sim.shutdown().await.unwrap();
        out
    }
    let a = run(5).await;
    assert_eq!(a, run(5).await);
    assert_ne!(a, run(6).await);
    assert!(a.iter().any(|r| r.0 == 500) && a.iter().any(|r| r.0 == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_vllm_names_and_count_tokens() {
    let sim = sim::start(fixed(1, 1)).await.unwrap();
    let base = sim.base_url();
    for _ in 0..3 {
        post(&base, "/v1/chat/completions", chat(Some(5), true, true)).await;
    }
    let (status, text) = get(&base, "/metrics").await;
    assert_eq!(status, 200);
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(series.contains("model_name=\"qwen2.5\""), "{line}");
        values.insert(series.to_string(), value);
    }
    let v = |s: &str| values[&format!("{s}{{model_name=\"qwen2.5\"}}")];
    assert_eq!(v("vllm:prompt_tokens_total"), 78.0);
    assert_eq!(v("vllm:generation_tokens_total"), 15.0);
    assert_eq!(v("vllm:request_success_total"), 3.0);
    assert_eq!(v("vllm:num_requests_running"), 0.0);
    assert_eq!(v("vllm:num_requests_waiting"), 0.0);
    assert_eq!(v("vllm:gpu_cache_usage_perc"), 0.0);
    assert_eq!(v("vllm:time_to_first_token_seconds_count"), 3.0);
    assert_eq!(v("vllm:e2e_request_latency_seconds_count"), 3.0);
    assert!(text.contains("# TYPE vllm:prompt_tokens_total counter"));
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_streams_in_flight() {
    let sim = sim::start(fixed(10, 50)).await.unwrap();
    let base = sim.base_url();
    let task = tokio::spawn(async move {
        post(&base, "/v1/chat/completions", chat(Some(1000), true, false)).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let truth_handle = sim.ground_truth_since(0).len();
    assert_eq!(truth_handle, 0);
    let base = sim.base_url();
    sim.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let r = task.await.unwrap();
    assert!(!r.has_done(), "an aborted stream must not end with [DONE]");
    assert!(r.text().len() > 1);
    // The listener is closed.
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    assert!(TcpStream::connect(addr).is_err());
}

// ---------------------------------------------------------------------------------------------
// the `nodeagent simulate` process

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc {
    child: tokio::process::Child,
    base: String,
}

async fn spawn_sim(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .arg("simulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Starts the simulator and waits for its `listening on` line.
async fn start_proc(args: &[&str]) -> Proc {
    let mut child = spawn_sim(args).await;
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no listening line in 20 s")
        .unwrap()
        .expect("stdout closed before the listening line");
    let base = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
    Proc { child, base }
}

fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id().unwrap() as i32), sig).unwrap();
}

async fn wait_exit(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not exit")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_delay_refuses_connections_then_serves() {
    let port = free_port();
    let port_s = port.to_string();
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("sim.pid");
    let mut child = spawn_sim(&[
        "--port",
        &port_s,
        "--startup-delay-ms",
        "800",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let err = TcpStream::connect(addr).expect_err("must refuse while loading");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(child.try_wait().unwrap().is_none(), "alive while loading");
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_eq!(pid, child.id().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(line.as_deref(), Some(format!("listening on http://127.0.0.1:{port}").as_str()));
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&base, "/health").await.0, 200);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    assert!(!pid_file.exists(), "a graceful stop removes the pid file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_requests_and_after_time_crash_with_the_code() {
    let mut p = start_proc(&[
        "--port",
        "0",
        "--zero-delay",
        "--exit-after-requests",
        "2",
        "--exit-code",
        "3",
    ])
    .await;
    for _ in 0..2 {
        let r = post(&p.base, "/v1/chat/completions", chat(Some(2), false, false)).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(wait_exit(&mut p.child).await.code(), Some(3));

    let started = Instant::now();
    let mut p = start_proc(&["--port", "0", "--exit-after-ms", "300", "--exit-code", "0"]).await;
    assert_eq!(get(&p.base, "/health").await.0, 200);
    assert_eq!(wait_exit(&mut p.child).await.code(), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_stops_answering_but_stays_alive() {
    let mut p = start_proc(&["--port", "0", "--hang-after-ms", "300"]).await;
    assert_eq!(get(&p.base, "/health").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let hung = tokio::time::timeout(Duration::from_millis(700), get(&p.base, "/health")).await;
    assert!(hung.is_err(), "a hung server must not answer /health");
    assert!(p.child.try_wait().unwrap().is_none(), "a hung server stays alive");
    // SIGTERM still stops it.
    signal(&p.child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut p.child).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_aborts_streams_in_flight_and_exits_0() {
    let mut p =
        start_proc(&["--port", "0", "--prefill-base-ms", "10", "--decode-base-ms", "50"]).await;
    let base = p.base.clone();
    let stream = tokio::spawn(async move {
        post(&base, "/v1/chat/completions", chat(Some(1000), true, true)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&p.child, nix::sys::signal::Signal::SIGINT);
    assert_eq!(wait_exit(&mut p.child).await.code(), Some(0));
    let r = tokio::time::timeout(Duration::from_secs(5), stream).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.has_done() && !r.complete, "an aborted stream is cut, not finished");
    assert!(count_tokens(&r.text()) >= 1);
}

/// Pids of `simulate-worker` processes whose `--parent-pid` is `parent`.
fn workers_of(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "simulate-worker")
            && args.windows(2).any(|w| w[0] == "--parent-pid" && w[1] == parent.to_string())
        {
            out.push(pid);
        }
    }
    out.sort();
    out
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; count it as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

async fn wait_gone(pids: &[i32]) -> bool {
    for _ in 0..100 {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_in_their_own_sessions_and_stop_with_the_parent() {
    use nix::sys::signal::Signal;
    use nix::unistd::{getpgid, getsid, Pid};

    // Graceful: SIGTERM to the parent stops the workers too.
    let mut p = start_proc(&["--port", "0", "--workers", "3"]).await;
    let parent = p.child.id().unwrap();
    let workers = workers_of(parent);
    assert_eq!(workers.len(), 3, "{workers:?}");
    let parent_sid = getsid(Some(Pid::from_raw(parent as i32))).unwrap();
    for w in &workers {
        let pid = Pid::from_raw(*w);
        assert_eq!(getsid(Some(pid)).unwrap(), pid, "worker {w} leads its own session");
        assert_eq!(getpgid(Some(pid)).unwrap(), pid);
        assert_ne!(getsid(Some(pid)).unwrap(), parent_sid);
        // The worker names itself right after exec: give it a moment.
        let mut comm = String::new();
        for _ in 0..100 {
            comm = std::fs::read_to_string(format!("/proc/{w}/comm")).unwrap();
            if comm.starts_with("sim::Worker_TP") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(comm.starts_with("sim::Worker_TP"), "{comm}");
    }
    signal(&p.child, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut p.child).await.code(), Some(0));
    assert!(wait_gone(&workers).await, "workers outlived a graceful stop");

    // SIGKILL of the parent: workers notice and exit.
    let mut p = start_proc(&["--port", "0", "--workers", "2"]).await;
    let workers = workers_of(p.child.id().unwrap());
    assert_eq!(workers.len(), 2);
    signal(&p.child, Signal::SIGKILL);
    wait_exit(&mut p.child).await;
    assert!(wait_gone(&workers).await, "workers outlived their parent");

    // --orphan-workers: they survive the parent's SIGKILL (leftovers), until killed.
    let mut p = start_proc(&["--port", "0", "--workers", "2", "--orphan-workers"]).await;
    let workers = workers_of(p.child.id().unwrap());
    assert_eq!(workers.len(), 2);
    signal(&p.child, Signal::SIGKILL);
    wait_exit(&mut p.child).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let survivors: Vec<_> = workers.iter().copied().filter(|w| alive(*w)).collect();
    for w in &workers {
        let _ = nix::sys::signal::kill(Pid::from_raw(*w), Signal::SIGKILL);
    }
    assert_eq!(survivors, workers, "orphan workers must survive the parent");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["simulate", "--port", "0", "--fault-500-rate", "0.7", "--fault-drop-rate", "0.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: bad simulator configuration: fault rates add up to"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["simulate", "--port", "0", "--decode-base-ms=-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--decode-base-ms"));
}

/// Pins `nodeagent simulate --help`; regenerate with `UPDATE_SNAPSHOTS=1 cargo test --test sim`.
#[test]
fn simulate_help_is_pinned() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["simulate", "--help"])
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sim/simulate-help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &help).unwrap();
    }
    let pinned =
        std::fs::read_to_string(path).expect("missing snapshot; run with UPDATE_SNAPSHOTS=1");
    assert_eq!(help, pinned, "simulate --help changed; rerun with UPDATE_SNAPSHOTS=1 if intended");
}

// ---------------------------------------------------------------------------------------------
// the listen backlog

/// Regression (issue 17): the listener took tokio's default backlog of 128, so a burst of 300
/// clients connecting at once had all but ~129 of its SYNs dropped while the server was busy,
/// and they came back a second later. The simulator here is started on a runtime that is then
/// left idle, so nothing accepts: every connection must still complete its handshake in the
/// kernel's accept queue (at least 4096 long, or `somaxconn`).
#[test]
fn a_burst_of_connections_fits_the_listen_backlog() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let handle = rt.block_on(sim::start(SimConfig::zero_delay())).unwrap();
    let addr = handle.addr();
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let burst = 300.min(somaxconn);
    let started = Instant::now();
    let threads: Vec<_> = (0..burst)
        .map(|_| {
            std::thread::spawn(move || {
                // Kept open until the end: the queue holds every one of them.
                TcpStream::connect_timeout(&addr, Duration::from_millis(700))
            })
        })
        .collect();
    let conns: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = conns.iter().filter(|c| c.is_err()).count();
    assert_eq!(
        refused,
        0,
        "{refused} of {burst} connections did not complete within 700 ms ({:?} in all)",
        started.elapsed()
    );
    assert!(handle.listen_backlog() >= burst as u32, "{}", handle.listen_backlog());
    drop((conns, handle));
}

#[test]
fn the_backlog_is_clamped_by_somaxconn() {
    use nodeagent::sim::{effective_backlog, LISTEN_BACKLOG};
    assert_eq!(LISTEN_BACKLOG, 4096);
    assert_eq!(effective_backlog(4096, Some("4096\n")), 4096);
    assert_eq!(effective_backlog(4096, Some("128\n")), 128);
    assert_eq!(effective_backlog(4096, Some("65535")), 4096);
    // Unreadable or nonsense: the kernel is assumed to grant what was asked.
    assert_eq!(effective_backlog(4096, None), 4096);
    assert_eq!(effective_backlog(4096, Some("lots")), 4096);
    assert_eq!(effective_backlog(4096, Some("0")), 4096);
}
