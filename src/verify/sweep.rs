//! Sweeps: run each level of a `SweepSpec` (warmup phase, then the measured phase) with the
//! load generator, stream every record to `requests.jsonl` as it finishes, aggregate, and keep
//! `summary.json`, `summary.csv`, `evalscope-summary.txt` and the chart current after each
//! level, so a crash, a dead server or Ctrl-C loses nothing already measured. A sweep runs in
//! named steps: `preflight` (the model, the request bodies, one checked request), `Levels::run`
//! per level (`Levels::phase` per warmup or measured phase) and `finish`. Before the preflight
//! the output directory is checked and an earlier run's files in it are moved aside
//! (`outdir`), so a run that fails early leaves nothing that looks like its results. The
//! run's secrets (`redact`) are kept out of `meta` and of every error detail written.
//!
//! Not here: the run directory's files (`rundir`), printing and exit codes (the command layer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::isolate::{self, Isolation};
use super::outdir;
use super::redact::{Secret, Secrets};
use super::rundir::{RunDir, VerifyError};
use super::scrape::{scrape, LevelScraper};
use super::search::{self, Next, SearchKind, SearchSpec};
use super::server_metrics;
use crate::host::numastat;
use crate::loadgen::client::{Client, Slot};
use crate::loadgen::conn::{Conn, ConnStash};
use crate::loadgen::dataset::Dataset;
use crate::loadgen::record::TokenSource;
use crate::loadgen::request::{Api, BodySettings, ClientError, Endpoint, Timeouts};
use crate::loadgen::schedule::{Arrival, Mode, Pacing, Schedule};
use crate::loadgen::stats::{Aggregator, LevelPlan};
use crate::loadgen::worker::{worker, Phase};
use crate::monitor::levels::GpuRecorder;
use crate::summary::{
    LevelStats, Meta, NumaCounters, SearchSummary, Slo, Summary, PERCENTILE_METHOD,
};

/// One level of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelSpec {
    /// Closed loop: the concurrency. Open loop: the concurrency cap (0 = none).
    pub parallel: u64,
    /// Open loop request rate; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Requests to send in the measured phase.
    pub number: u64,
    /// Trace replay (`--trace`): the speed factor the trace's offsets are divided by; `rate`
    /// is then the replay's mean rate, for the reports.
    pub speed: Option<f64>,
}

/// Everything a sweep needs, already validated by the command layer.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub url: String,
    pub endpoint: Endpoint,
    pub api_key: Option<Secret>,
    /// Every secret of the run (the API key among them), redacted from every output.
    pub secrets: Secrets,
    pub body: BodySettings,
    pub timeouts: Timeouts,
    /// The levels to run; with `search`, one level: the template of every step (its `number`,
    /// and for a rate search its concurrency cap).
    pub levels: Vec<LevelSpec>,
    /// An SLO search (`--search`): the levels are its steps, chosen as it goes.
    pub search: Option<SearchSpec>,
    pub arrival: Arrival,
    /// How an open loop waits for each send (hidden `--pacing exact|spin|coarse`).
    pub pacing: Pacing,
    pub warmup: u64,
    pub duration: Option<Duration>,
    pub seed: u64,
    pub slo: Slo,
    pub out: Option<PathBuf>,
    pub preflight: bool,
    pub progress: bool,
    /// Time in-flight requests get to finish after Ctrl-C before they are cancelled.
    pub grace: Duration,
    /// The command line, as given: `meta.argv` is it with `secrets` redacted.
    pub argv: Vec<String>,
    /// The engine's Prometheus endpoint (`--metrics-url`); `None`: the server's `/metrics` when
    /// it answers with vLLM's or llama.cpp's names.
    pub metrics_url: Option<String>,
    /// Time between scrapes of the engine's metrics while a level runs; zero: no scraping.
    pub metrics_interval: Duration,
    /// GPU sampler for the per-level utilization and memory in `meta.gpu` (engine on this host).
    pub gpu_sampler: Option<std::sync::Arc<dyn crate::monitor::Sampler>>,
    /// The sysfs root whose `devices/system/node/node*/numastat` is read at the start and end of
    /// each measured phase (`/sys`; a fixture tree in tests).
    pub sysfs_root: PathBuf,
    /// The engine's processes when this run started the engine (`verify --compare`): their
    /// memory placement is audited as each measured phase ends. `None`: an engine elsewhere.
    pub engine: Option<EngineProcs>,
    /// Pin the load generator to the CPUs an engine on this host leaves free (`false`:
    /// `--no-isolate`); see `isolate`.
    pub isolate: bool,
    /// The base state dir of the `nodeagent serve` agents asked for the engine's processes
    /// (`/run/nodeagent`); not used when `engine` is set.
    pub serve_state_dir: PathBuf,
}

/// The processes of an engine this run started, for the memory placement audit.
#[derive(Debug, Clone)]
pub struct EngineProcs {
    /// The procfs root (`/proc`).
    pub proc_root: PathBuf,
    pub pids: Vec<i32>,
    /// The binding's memory nodes (empty: no memory binding, no off-node share).
    pub memory_nodes: Vec<u32>,
    /// The binding's CPUs (`None`: no CPU binding, no outside share of the threads' CPU time).
    pub cpus: Option<crate::host::cpuset::CpuSet>,
}

impl EngineProcs {
    /// Resident bytes per node of the processes, and the share off `memory_nodes`; `None`
    /// when nothing could be read.
    pub fn audit(&self) -> Option<(BTreeMap<u32, u64>, Option<f64>)> {
        let audit = crate::supervise::placement::audit(&self.proc_root, &self.pids);
        for u in &audit.unread {
            tracing::warn!("memory placement audit: {u}");
        }
        if audit.by_node.is_empty() {
            return None;
        }
        let share = crate::host::numa_maps::off_node_share(&audit.by_node, &self.memory_nodes);
        Some((audit.by_node, share))
    }

    /// One reading of the processes' threads, the start of a thread placement figure.
    pub fn threads(&self) -> crate::host::task_stat::Sample {
        let (sample, unread) = crate::supervise::threads::sample(&self.proc_root, &self.pids);
        for u in &unread {
            tracing::warn!("thread placement: {u}");
        }
        sample
    }

    /// Where the threads ran since the reading `before` (`threads()`); `None` when no thread
    /// can be read now.
    pub fn thread_placement(
        &self,
        before: &crate::host::task_stat::Sample,
    ) -> Option<crate::summary::ThreadPlacement> {
        let after = self.threads();
        if after.is_empty() {
            return None;
        }
        let hz = crate::supervise::threads::ticks_per_second();
        Some(crate::host::task_stat::summarize(Some(before), &after, hz, self.cpus.as_ref()))
    }
}

/// Result of a sweep; `summary.meta.interrupted` says whether Ctrl-C cut it short.
#[derive(Debug)]
pub struct SweepOutcome {
    pub summary: Summary,
    /// Where the run's files are, when `--out` was given.
    pub out: Option<PathBuf>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn progress_bar(enabled: bool, len: u64, label: &str) -> ProgressBar {
    let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
        )
        .expect("the template is valid"),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// Runs the sweep. `on_level` sees each level's stats as soon as it ends (for printing).
/// `interrupt` is cancelled by the caller on Ctrl-C: scheduling stops at once, requests in
/// flight get `spec.grace` to finish, the partial level is summarised and the sweep ends.
pub async fn run_sweep(
    spec: &SweepSpec,
    dataset: &Dataset,
    interrupt: CancellationToken,
    mut on_level: impl FnMut(&LevelStats),
) -> Result<SweepOutcome, VerifyError> {
    let anchor = Instant::now();
    let run_id = format!("{:08x}", rand::random::<u32>());
    let mut meta = meta(spec, dataset, &run_id);
    let moved = match spec.out.as_deref() {
        Some(out) => outdir::move_earlier_run_aside(&outdir::given(out)?)?,
        None => None,
    };
    if let Some(to) = &moved {
        tracing::warn!("moved the earlier run's files in this run's directory to {}", to.display());
    }
    let max_pool = match spec.search {
        // The steps are not known yet: keep whatever connections the highest may need.
        Some(_) => search::MAX_CONCURRENCY as usize,
        None => spec.levels.iter().map(pool_for).max().unwrap_or(1),
    };
    // Placed before the preflight, which is load too; the guard undoes it when the sweep ends.
    let isolation = isolate::start(
        isolate::Target {
            enabled: spec.isolate,
            url: &spec.endpoint.url,
            engine: spec.engine.as_ref().map(|e| (e.proc_root.as_path(), e.pids.as_slice())),
            sysfs_root: &spec.sysfs_root,
            state_dir: &spec.serve_state_dir,
        },
        &mut meta.warnings,
    )
    .await;
    meta.loadgen = Some(isolation.placement.clone());
    // Open connections, from the preflight's to the last level's.
    let conns = Arc::new(ConnStash::default());
    let prepared = preflight(spec, dataset, anchor, &run_id, &conns, max_pool, &mut meta).await?;
    for w in &meta.warnings {
        tracing::warn!("{w}");
    }
    if let Some(to) = moved {
        meta.warnings.push(format!("an earlier run's files were moved to {}", to.display()));
    }
    let metrics_url = server_metrics_url(spec, &mut meta).await;
    let mut dir =
        spec.out.as_deref().map(|d| RunDir::create(d, spec.secrets.clone())).transpose()?;
    let mut summary = Summary {
        levels: Vec::new(),
        meta,
        search: spec.search.map(|s| SearchSummary {
            kind: s.kind.name().into(),
            slo: spec.slo,
            attainment: s.attainment,
            max_steps: s.max_steps,
            ..SearchSummary::default()
        }),
    };
    tracing::debug!(max_pool, "sweep starting");
    let levels = Levels {
        spec,
        anchor,
        run_id,
        prepared,
        conns,
        max_pool,
        metrics_url,
        isolation: &isolation,
        abort: abort_after_grace(&interrupt, spec.grace),
        interrupt: interrupt.clone(),
    };
    let mut gpu = spec.gpu_sampler.clone().map(|s| GpuRecorder::start(s, Duration::from_secs(1)));
    for i in 0.. {
        if interrupt.is_cancelled() {
            if let Some(s) = summary.search.as_mut() {
                s.stop = Some("interrupted".into());
            }
            break;
        }
        let Some(level) = next_level(spec, &mut summary, i) else { break };
        let stats = levels.run(i, &level, dir.as_mut(), gpu.as_mut()).await?;
        on_level(&stats);
        if let (Some(s), Some(spec)) = (summary.search.as_mut(), spec.search.as_ref()) {
            s.steps.push(search::step_of(spec, i, &stats));
            s.best = search::best(spec.kind, &s.steps).cloned();
        }
        summary.levels.push(stats);
        summary.meta.interrupted = interrupt.is_cancelled();
        if let Some(d) = dir.as_mut() {
            d.summary(&summary)?;
        }
    }
    if let (Some(s), Some(spec)) = (summary.search.as_ref(), spec.search.as_ref()) {
        tracing::info!(
            stop = s.stop.as_deref().unwrap_or(""),
            best = ?s.best.as_ref().map(|b| search::load(spec.kind, b)),
            "SLO search ended"
        );
    }
    finish(summary, gpu, dir, &interrupt, spec.out.clone()).await
}

/// Level `i` of the sweep: the given level, or the search's next step (`None` when the levels
/// or the search are done; a finished search's reason goes into `summary.search.stop`).
fn next_level(spec: &SweepSpec, summary: &mut Summary, i: usize) -> Option<LevelSpec> {
    let (Some(search), Some(out)) = (spec.search.as_ref(), summary.search.as_mut()) else {
        return spec.levels.get(i).copied();
    };
    let template = spec.levels.first().copied().unwrap_or(LevelSpec {
        parallel: 1,
        rate: None,
        number: 100,
        speed: None,
    });
    match search::next(search, &out.steps) {
        Next::Done(stop) => {
            out.stop = Some(stop.name().into());
            None
        }
        Next::Try(x) => Some(match search.kind {
            // At least two requests per worker, so each step holds its concurrency a while.
            SearchKind::Concurrency => LevelSpec {
                parallel: x as u64,
                rate: None,
                number: template.number.max(2 * x as u64),
                speed: None,
            },
            SearchKind::Rate => LevelSpec { rate: Some(x), ..template },
        }),
    }
}

/// The run's metadata before anything is sent (the preflight may add the model and warnings).
fn meta(spec: &SweepSpec, dataset: &Dataset, run_id: &str) -> Meta {
    Meta {
        tool: "nodeagent verify".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        run_id: run_id.to_string(),
        started_at: now_rfc3339(),
        url: spec.secrets.text(&spec.url),
        endpoint: spec.secrets.text(&spec.endpoint.url.to_string()),
        api: match spec.endpoint.api {
            Api::Chat => "chat".into(),
            Api::Completions => "completions".into(),
        },
        model: spec.body.model.clone(),
        stream: spec.body.stream,
        dataset: dataset.source.clone(),
        prompts: dataset.prompts.len() as u64,
        prompt_length_unit: dataset.unit.to_string(),
        min_prompt_length: dataset.filter.min as u64,
        max_prompt_length: dataset.filter.max.map(|m| m as u64),
        tokenizer: dataset.tokenizer.as_ref().map(|p| p.display().to_string()),
        seed: spec.seed,
        max_tokens: spec.body.max_tokens,
        arrival: spec.levels.iter().any(|l| l.rate.is_some()).then(|| match spec.arrival {
            _ if spec.levels.iter().any(|l| l.speed.is_some()) => "trace".to_string(),
            Arrival::Constant => "constant".to_string(),
            Arrival::Poisson => "poisson".to_string(),
            Arrival::Gamma { burstiness } => format!("gamma({burstiness})"),
        }),
        percentile_method: PERCENTILE_METHOD.into(),
        interrupted: false,
        warnings: Vec::new(),
        argv: spec.secrets.argv(&spec.argv),
        gpu: None,
        loadgen: None,
    }
}

/// Workers of a level: its concurrency, or for an uncapped open loop one per request.
fn pool_for(l: &LevelSpec) -> usize {
    if l.parallel == 0 {
        l.number.clamp(1, 65_536) as usize
    } else {
        l.parallel as usize
    }
}

fn client(spec: &SweepSpec, anchor: Instant, run_id: &str) -> Result<Client, ClientError> {
    Client::new(
        spec.endpoint.clone(),
        spec.api_key.as_ref().map(Secret::expose),
        spec.timeouts,
        spec.body.stream,
        anchor,
        run_id.to_string(),
    )
}

/// What the preflight settles for every level: the request bodies (with the model filled in)
/// and their prompts' token counts.
struct Prepared {
    bodies: Arc<Vec<Bytes>>,
    prompt_tokens: Option<Arc<Vec<u32>>>,
    /// A replayed trace's send offsets (`Dataset::offsets`), before the level's speed.
    offsets: Option<Arc<Vec<Duration>>>,
    /// Multi-turn: each conversation's first body and turns (`Dialogues::spans`).
    conversations: Option<Arc<Vec<(usize, usize)>>>,
    /// Multi-turn: requests sent for `n` tickets (conversations).
    dialogues: Option<crate::loadgen::dataset::Dialogues>,
}

/// Settles the model (the first one `/v1/models` lists when none was given; a warning when the
/// given one is not listed), builds the request bodies, and with `spec.preflight` sends one
/// request: a failure there ends the sweep before any level; a stream without usage adds a
/// warning on how tokens are counted. The preflight's connection joins `conns`.
async fn preflight(
    spec: &SweepSpec,
    dataset: &Dataset,
    anchor: Instant,
    run_id: &str,
    conns: &ConnStash,
    max_pool: usize,
    meta: &mut Meta,
) -> Result<Prepared, VerifyError> {
    let probe = client(spec, anchor, run_id)?;
    let mut body = spec.body.clone();
    if body.model.is_empty() || spec.preflight {
        let models = probe.models().await?;
        if body.model.is_empty() {
            body.model = models.first().cloned().ok_or_else(|| VerifyError::NoModel {
                models_url: spec.secrets.text(&spec.endpoint.models_url.to_string()),
            })?;
            meta.model = body.model.clone();
        } else if !models.contains(&body.model) {
            meta.warnings.push(format!(
                "model {:?} is not in {} ({})",
                body.model,
                spec.secrets.text(&spec.endpoint.models_url.to_string()),
                models.join(", ")
            ));
        }
    }
    // A trace gives each prompt its output length (`--max-tokens` still wins).
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        dataset
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // A turn of a conversation carries the conversation so far.
                if let Some(d) = &dataset.dialogues {
                    return body.chat_body(d.request_messages(i));
                }
                match dataset.max_tokens.as_ref().and_then(|m| m.get(i)) {
                    Some(&n) if spec.body.max_tokens.is_none() => {
                        BodySettings { max_tokens: Some(n), ignore_eos: true, ..body.clone() }
                            .body(spec.endpoint.api, p)
                    }
                    _ => body.body(spec.endpoint.api, p),
                }
            })
            .collect(),
    );
    let prompt_tokens = dataset.prompt_tokens.clone().map(Arc::new);
    if spec.preflight {
        let slot = Slot {
            level: 0,
            seq: 0,
            warmup: true,
            preflight: true,
            prompt: 0,
            prompt_tokens: prompt_tokens.as_ref().and_then(|t| t.first().copied()),
            scheduled: Instant::now(),
        };
        let mut conn = Conn::default();
        let r = probe.execute(&mut conn, bodies[0].clone(), slot, &CancellationToken::new()).await;
        conns.put(conn, max_pool);
        if let Some(class) = r.error {
            return Err(VerifyError::Preflight {
                url: spec.secrets.text(&spec.endpoint.url.to_string()),
                class: r.failure_key().unwrap_or_else(|| class.as_str().into()),
                detail: spec.secrets.text(&r.error_detail.unwrap_or_default()),
            });
        }
        if spec.body.stream && r.tokens_from == TokenSource::CountedChunks {
            let input = match &dataset.tokenizer {
                Some(t) => format!(
                    "input tokens are counted with the tokenizer {} (prompt text only, without the chat template)",
                    t.display()
                ),
                None => "input tokens are unknown (give --tokenizer to count them)".into(),
            };
            meta.warnings.push(format!("the server sent no usage in its stream: output tokens are counted from content chunks (one per chunk) and {input}"));
        }
    }
    Ok(Prepared {
        bodies,
        prompt_tokens,
        offsets: dataset.offsets.clone().map(Arc::new),
        conversations: dataset.dialogues.as_ref().map(|d| Arc::new(d.spans.clone())),
        dialogues: dataset.dialogues.clone(),
    })
}

/// The engine's metrics URL to scrape during the levels: `--metrics-url` (a warning when it
/// does not answer with known metric names), else the server's `/metrics` when it does.
async fn server_metrics_url(spec: &SweepSpec, meta: &mut Meta) -> Option<String> {
    if spec.metrics_interval.is_zero() {
        return None;
    }
    let u = &spec.endpoint.url;
    let default = format!(
        "{}://{}/metrics",
        u.scheme_str().unwrap_or("http"),
        u.authority().map_or("", |a| a.as_str())
    );
    let given = spec.metrics_url.is_some();
    let url = spec.metrics_url.clone().unwrap_or(default);
    let shown = spec.secrets.text(&url);
    match scrape(&url).await {
        Some(s) if server_metrics::known(&s) => {
            tracing::info!(url = %shown, "scraping the server's metrics during each level");
            Some(url)
        }
        Some(_) if given => {
            meta.warnings.push(format!(
                "{shown} has neither vLLM's nor llama.cpp's metric names: no server metrics"
            ));
            None
        }
        None if given => {
            meta.warnings.push(format!("cannot read {shown}: no server metrics"));
            None
        }
        _ => None,
    }
}

/// A token cancelled `grace` after `interrupt`: it cancels the requests still in flight.
fn abort_after_grace(interrupt: &CancellationToken, grace: Duration) -> CancellationToken {
    let abort = CancellationToken::new();
    let (interrupt, on_grace) = (interrupt.clone(), abort.clone());
    tokio::spawn(async move {
        interrupt.cancelled().await;
        tokio::time::sleep(grace).await;
        on_grace.cancel();
    });
    abort
}

/// The kernel's NUMA counters now; `None` (with a warning when the file is bad) when the host
/// has none.
pub fn read_numastat(sysfs_root: &Path) -> Option<numastat::Reading> {
    numastat::read(sysfs_root).unwrap_or_else(|e| {
        tracing::warn!("no NUMA counters: {e}");
        None
    })
}

/// The NUMA counters' deltas from `before` to now.
pub fn numa_since(sysfs_root: &Path, before: &numastat::Reading) -> Option<NumaCounters> {
    let after = read_numastat(sysfs_root)?;
    let (per_node, total) = numastat::delta(before, &after);
    Some(NumaCounters { per_node, total })
}

/// What every level of one sweep shares.
struct Levels<'a> {
    spec: &'a SweepSpec,
    anchor: Instant,
    run_id: String,
    prepared: Prepared,
    conns: Arc<ConnStash>,
    max_pool: usize,
    /// Where the engine's metrics are scraped during each measured phase.
    metrics_url: Option<String>,
    /// Where the load generator runs; its CPU time is read around each measured phase.
    isolation: &'a Isolation,
    interrupt: CancellationToken,
    abort: CancellationToken,
}

impl Levels<'_> {
    /// One level: the warmup phase (closed loop), then the measured phase; its stats.
    async fn run(
        &self,
        i: usize,
        level: &LevelSpec,
        mut dir: Option<&mut RunDir>,
        mut gpu: Option<&mut GpuRecorder>,
    ) -> Result<LevelStats, VerifyError> {
        let spec = self.spec;
        let pool = pool_for(level);
        let client = client(spec, self.anchor, &self.run_id)?;
        let mode = match level.rate {
            Some(rate) => Mode::Open { rate, arrival: spec.arrival },
            None => Mode::Closed,
        };
        // A multi-turn level's number is of conversations; it plans every turn of them.
        let planned = |tickets: u64| match &self.prepared.dialogues {
            Some(d) => d.requests_for(tickets),
            None => tickets,
        };
        let plan = LevelPlan {
            parallel: level.parallel,
            rate: level.rate,
            planned: planned(level.number),
        };
        let mut agg = Aggregator::new(plan, spec.slo);
        let label = match (level.speed, level.rate) {
            (Some(x), _) => format!("trace x{x}"),
            (None, Some(r)) => format!("rate={r}/s"),
            (None, None) => format!("c={}", level.parallel),
        };
        // A replay sends request `i` at the trace's offset `i` divided by the speed.
        let replay = match (level.speed, &self.prepared.offsets) {
            (Some(x), Some(o)) => Some(o.iter().map(|d| d.div_f64(x)).collect::<Vec<_>>()),
            _ => None,
        };
        let mut scraper = None;
        let mut numa_before = None;
        let mut threads_before = None;
        let mut cpu_mark = None;
        for (warmup, total) in [(true, spec.warmup), (false, level.number)] {
            if total == 0 || self.interrupt.is_cancelled() {
                continue;
            }
            if !warmup {
                if let Some(g) = gpu.as_deref_mut() {
                    g.begin_level();
                }
                if let Some(url) = &self.metrics_url {
                    scraper = Some(LevelScraper::start(url, spec.metrics_interval).await);
                }
                numa_before = read_numastat(&spec.sysfs_root);
                threads_before = spec.engine.as_ref().map(EngineProcs::threads);
                cpu_mark = Isolation::mark();
            }
            let mut schedule = Schedule::new(
                if warmup || replay.is_some() { Mode::Closed } else { mode },
                total,
                spec.seed.wrapping_add(i as u64),
                if warmup { None } else { spec.duration },
                self.interrupt.child_token(),
            )?
            .with_pacing(spec.pacing);
            if let (false, Some(offsets)) = (warmup, &replay) {
                schedule = schedule.with_offsets(offsets.clone());
            }
            let phase = Arc::new(Phase {
                level: i as u32,
                warmup,
                client: client.clone(),
                schedule,
                bodies: self.prepared.bodies.clone(),
                prompt_tokens: self.prepared.prompt_tokens.clone(),
                abort: self.abort.clone(),
                conns: self.conns.clone(),
                keep: self.max_pool,
                conversations: self.prepared.conversations.clone(),
                turn_seq: Default::default(),
            });
            let pb = progress_bar(
                spec.progress,
                planned(total),
                &if warmup { format!("{label} warmup") } else { label.clone() },
            );
            Self::phase(phase, pool.min(total as usize), &pb, &mut agg, dir.as_deref_mut()).await;
            pb.finish_and_clear();
        }
        let loadgen_cpu = cpu_mark.and_then(|m| self.isolation.cpu_since(m));
        if let Some(g) = gpu {
            g.end_level(&label);
        }
        let mut stats = agg.finish();
        stats.loadgen_cpu = loadgen_cpu;
        stats.numa = numa_before.and_then(|before| numa_since(&spec.sysfs_root, &before));
        if let Some((by_node, share)) = spec.engine.as_ref().and_then(EngineProcs::audit) {
            stats.memory_by_node = Some(by_node);
            stats.memory_off_node_share = share;
        }
        if let (Some(engine), Some(before)) = (&spec.engine, &threads_before) {
            stats.threads = engine.thread_placement(before);
        }
        if let Some(s) = scraper {
            stats.server = s.finish().await.map(|mut server| {
                server.url = spec.secrets.text(&server.url);
                let output = stats.output_tokens_mean * stats.succeeded as f64;
                server.warnings = server_metrics::shortfalls(&server, stats.succeeded, output);
                for w in &server.warnings {
                    tracing::warn!("level {label}: {w}");
                }
                server
            });
        }
        Ok(stats)
    }

    /// One phase: `workers` load workers send records over a channel; each is written to the
    /// run directory and pushed into the aggregator as it arrives.
    async fn phase(
        phase: Arc<Phase>,
        workers: usize,
        pb: &ProgressBar,
        agg: &mut Aggregator,
        mut dir: Option<&mut RunDir>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            handles.push(tokio::spawn(worker(phase.clone(), tx.clone())));
        }
        drop(tx);
        while let Some(rec) = rx.recv().await {
            if let Some(d) = dir.as_deref_mut() {
                d.record(&rec);
                if rx.is_empty() {
                    d.flush();
                }
            }
            agg.push(&rec);
            pb.inc(1);
            if rec.error.is_some() {
                pb.set_message(format!("{} failed", agg.failed()));
            }
        }
        for h in handles {
            // A worker only ends by returning; a panic there is a bug worth surfacing.
            if let Err(e) = h.await {
                tracing::error!("load worker ended abnormally: {e}");
            }
        }
    }
}

/// Marks the summary interrupted or not, adds the GPU figures, rewrites the files a last time.
async fn finish(
    mut summary: Summary,
    gpu: Option<GpuRecorder>,
    dir: Option<RunDir>,
    interrupt: &CancellationToken,
    out: Option<PathBuf>,
) -> Result<SweepOutcome, VerifyError> {
    summary.meta.interrupted = interrupt.is_cancelled();
    if let Some(g) = gpu {
        summary.meta.gpu = Some(g.finish().await);
    }
    if let Some(mut d) = dir {
        d.summary(&summary)?;
    }
    Ok(SweepOutcome { summary, out })
}
