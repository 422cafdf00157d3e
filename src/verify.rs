//! Sweeps: run each level of a `SweepSpec` (warmup phase, then the measured phase) with the
//! load generator, stream every record to `requests.jsonl` as it finishes, aggregate, and keep
//! `summary.json`, `summary.csv`, `evalscope-summary.txt` and the chart current after each
//! level, so a crash, a dead server or Ctrl-C loses nothing already measured. Printing and exit
//! codes are the command layer's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::loadgen::client::{Client, Slot};
use crate::loadgen::conn::{Conn, ConnStash};
use crate::loadgen::dataset::Dataset;
use crate::loadgen::record::{RequestRecord, TokenSource};
use crate::loadgen::request::{Api, BodySettings, ClientError, Endpoint, Timeouts};
use crate::loadgen::schedule::{Arrival, Mode, Schedule, ScheduleError};
use crate::loadgen::stats::{Aggregator, LevelPlan};
use crate::loadgen::worker::{worker, Phase};
use crate::summary::{LevelStats, Meta, Slo, Summary, PERCENTILE_METHOD};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("{models_url} lists no model; pass --model")]
    NoModel { models_url: String },
    #[error("preflight request to {url} failed: {class}: {detail}")]
    Preflight { url: String, class: String, detail: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error(transparent)]
    Chart(#[from] crate::report::chart::ChartError),
}

/// One level of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelSpec {
    /// Closed loop: the concurrency. Open loop: the concurrency cap (0 = none).
    pub parallel: u64,
    /// Open loop request rate; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Requests to send in the measured phase.
    pub number: u64,
}

/// Everything a sweep needs, already validated by the command layer.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub url: String,
    pub endpoint: Endpoint,
    pub api_key: Option<String>,
    pub body: BodySettings,
    pub timeouts: Timeouts,
    pub levels: Vec<LevelSpec>,
    pub arrival: Arrival,
    pub warmup: u64,
    pub duration: Option<Duration>,
    pub seed: u64,
    pub slo: Slo,
    pub out: Option<PathBuf>,
    pub preflight: bool,
    pub progress: bool,
    /// Time in-flight requests get to finish after Ctrl-C before they are cancelled.
    pub grace: Duration,
    pub argv: Vec<String>,
    /// GPU sampler for the per-level utilization and memory in `meta.gpu` (engine on this host).
    pub gpu_sampler: Option<std::sync::Arc<dyn crate::monitor::Sampler>>,
}

/// Result of a sweep; `summary.meta.interrupted` says whether Ctrl-C cut it short.
#[derive(Debug)]
pub struct SweepOutcome {
    pub summary: Summary,
    /// Where the run's files are, when `--out` was given.
    pub out: Option<PathBuf>,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Write { path: path.to_path_buf(), source }
}

/// The open files of a run directory.
struct RunDir {
    dir: PathBuf,
    requests: BufWriter<File>,
    failed: Option<std::io::Error>,
}

impl RunDir {
    fn create(dir: &Path) -> Result<Self, VerifyError> {
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        let path = dir.join("requests.jsonl");
        let f = File::create(&path).map_err(write_err(&path))?;
        Ok(Self { dir: dir.to_path_buf(), requests: BufWriter::new(f), failed: None })
    }

    fn record(&mut self, r: &RequestRecord) {
        if self.failed.is_some() {
            return;
        }
        let res = serde_json::to_writer(&mut self.requests, r)
            .map_err(std::io::Error::from)
            .and_then(|()| self.requests.write_all(b"\n"));
        if let Err(e) = res {
            self.failed = Some(e);
        }
    }

    fn flush(&mut self) {
        if self.failed.is_none() {
            if let Err(e) = self.requests.flush() {
                self.failed = Some(e);
            }
        }
    }

    /// Rewrites `summary.json` and `summary.csv` (write to a temp file, then rename).
    fn summary(&mut self, s: &Summary) -> Result<(), VerifyError> {
        self.flush();
        if let Some(e) = self.failed.take() {
            return Err(VerifyError::Write { path: self.dir.join("requests.jsonl"), source: e });
        }
        let json = self.dir.join("summary.json");
        let tmp = self.dir.join(".summary.json.tmp");
        let f = File::create(&tmp).map_err(write_err(&tmp))?;
        s.write_json(BufWriter::new(f)).map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, &json).map_err(write_err(&json))?;
        let csv = self.dir.join("summary.csv");
        let f = File::create(&csv).map_err(write_err(&csv))?;
        crate::report::csv::write_csv(&s.levels, f)
            .map_err(|source| VerifyError::Csv { path: csv.clone(), source })?;
        let txt = self.dir.join("evalscope-summary.txt");
        let mut f = BufWriter::new(File::create(&txt).map_err(write_err(&txt))?);
        for l in &s.levels {
            crate::report::evalscope::benchmarking_summary(l, &mut f).map_err(write_err(&txt))?;
            writeln!(f).map_err(write_err(&txt))?;
        }
        f.flush().map_err(write_err(&txt))?;
        let title = format!("{} {} ({})", s.meta.model, s.meta.endpoint, s.meta.started_at);
        let svg = crate::report::chart::svg(&s.levels, &title)?;
        let svg_path = self.dir.join("chart.svg");
        std::fs::write(&svg_path, svg).map_err(write_err(&svg_path))?;
        crate::report::chart::png(&s.levels, &title, &self.dir.join("chart.png"))?;
        Ok(())
    }
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
    let mut meta = Meta {
        tool: "nodeagent verify".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        run_id: run_id.clone(),
        started_at: now_rfc3339(),
        url: spec.url.clone(),
        endpoint: spec.endpoint.url.to_string(),
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
            Arrival::Constant => "constant".to_string(),
            Arrival::Poisson => "poisson".to_string(),
            Arrival::Gamma { burstiness } => format!("gamma({burstiness})"),
        }),
        percentile_method: PERCENTILE_METHOD.into(),
        interrupted: false,
        warnings: Vec::new(),
        argv: spec.argv.clone(),
        gpu: None,
    };
    let pool_for = |l: &LevelSpec| if l.parallel == 0 { l.number.clamp(1, 65_536) } else { l.parallel } as usize;
    let max_pool = spec.levels.iter().map(pool_for).max().unwrap_or(1);
    let probe = Client::new(
        spec.endpoint.clone(),
        spec.api_key.as_deref(),
        spec.timeouts,
        spec.body.stream,
        anchor,
        run_id.clone(),
    )?;
    let mut body = spec.body.clone();
    if body.model.is_empty() || spec.preflight {
        let models = probe.models().await?;
        if body.model.is_empty() {
            body.model = models.first().cloned().ok_or_else(|| VerifyError::NoModel {
                models_url: spec.endpoint.models_url.to_string(),
            })?;
            meta.model = body.model.clone();
        } else if !models.contains(&body.model) {
            meta.warnings.push(format!(
                "model {:?} is not in {} ({})",
                body.model,
                spec.endpoint.models_url,
                models.join(", ")
            ));
        }
    }
    let bodies: Arc<Vec<Bytes>> =
        Arc::new(dataset.prompts.iter().map(|p| body.body(spec.endpoint.api, p)).collect());
    let prompt_tokens = dataset.prompt_tokens.clone().map(Arc::new);
    // Open connections, from the preflight's to the last level's.
    let conns = Arc::new(ConnStash::default());
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
                url: spec.endpoint.url.to_string(),
                class: r.failure_key().unwrap_or_else(|| class.as_str().into()),
                detail: r.error_detail.unwrap_or_default(),
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
    for w in &meta.warnings {
        tracing::warn!("{w}");
    }
    let mut dir = spec.out.as_deref().map(RunDir::create).transpose()?;
    let mut summary = Summary { levels: Vec::new(), meta };
    tracing::debug!(max_pool, "sweep starting");
    // Requests in flight are cancelled `grace` after the interrupt.
    let abort = CancellationToken::new();
    {
        let (interrupt, abort, grace) = (interrupt.clone(), abort.clone(), spec.grace);
        tokio::spawn(async move {
            interrupt.cancelled().await;
            tokio::time::sleep(grace).await;
            abort.cancel();
        });
    }
    let mut gpu = spec
        .gpu_sampler
        .clone()
        .map(|s| crate::monitor::levels::GpuRecorder::start(s, Duration::from_secs(1)));
    for (i, level) in spec.levels.iter().enumerate() {
        if interrupt.is_cancelled() {
            break;
        }
        let pool = pool_for(level);
        let client = Client::new(
            spec.endpoint.clone(),
            spec.api_key.as_deref(),
            spec.timeouts,
            spec.body.stream,
            anchor,
            run_id.clone(),
        )?;
        let mode = match level.rate {
            Some(rate) => Mode::Open { rate, arrival: spec.arrival },
            None => Mode::Closed,
        };
        let plan = LevelPlan { parallel: level.parallel, rate: level.rate, planned: level.number };
        let mut agg = Aggregator::new(plan, spec.slo);
        let label = match level.rate {
            Some(r) => format!("rate={r}/s"),
            None => format!("c={}", level.parallel),
        };
        for (warmup, total) in [(true, spec.warmup), (false, level.number)] {
            if total == 0 || interrupt.is_cancelled() {
                continue;
            }
            if !warmup {
                if let Some(g) = gpu.as_mut() {
                    g.begin_level();
                }
            }
            let schedule = Schedule::new(
                if warmup { Mode::Closed } else { mode },
                total,
                spec.seed.wrapping_add(i as u64),
                if warmup { None } else { spec.duration },
                interrupt.child_token(),
            )?;
            let phase = Arc::new(Phase {
                level: i as u32,
                warmup,
                client: client.clone(),
                schedule,
                bodies: bodies.clone(),
                prompt_tokens: prompt_tokens.clone(),
                abort: abort.clone(),
                conns: conns.clone(),
                keep: max_pool,
            });
            let pb = progress_bar(
                spec.progress,
                total,
                &if warmup { format!("{label} warmup") } else { label.clone() },
            );
            let (tx, mut rx) = mpsc::unbounded_channel();
            let workers = pool.min(total as usize);
            let mut handles = Vec::with_capacity(workers);
            for _ in 0..workers {
                handles.push(tokio::spawn(worker(phase.clone(), tx.clone())));
            }
            drop(tx);
            while let Some(rec) = rx.recv().await {
                if let Some(d) = dir.as_mut() {
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
            pb.finish_and_clear();
        }
        if let Some(g) = gpu.as_mut() {
            g.end_level(&label);
        }
        let stats = agg.finish();
        on_level(&stats);
        summary.levels.push(stats);
        summary.meta.interrupted = interrupt.is_cancelled();
        if let Some(d) = dir.as_mut() {
            d.summary(&summary)?;
        }
    }
    summary.meta.interrupted = interrupt.is_cancelled();
    if let Some(g) = gpu {
        summary.meta.gpu = Some(g.finish().await);
    }
    if let Some(d) = dir.as_mut() {
        d.summary(&summary)?;
    }
    Ok(SweepOutcome { summary, out: spec.out.clone() })
}
