//! The files of one sweep's run directory (`--out`): every record appended to
//! `requests.jsonl` as it finishes, and `summary.json`, `summary.csv`, `evalscope-summary.txt`
//! and the chart rewritten after each level. A record's error detail (a server's words, which
//! may echo the request) has the run's secrets redacted before it is written. Also
//! `VerifyError`, the error of a sweep, which sits here, below `sweep`, so that the two
//! modules do not import each other.
//!
//! Not here: running the levels (`sweep`), what the files hold (`report`), checking the
//! directory and moving an earlier run aside (`outdir`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::outdir::OutDirError;
use super::redact::Secrets;
use crate::loadgen::record::RequestRecord;
use crate::loadgen::request::ClientError;
use crate::loadgen::schedule::ScheduleError;
use crate::summary::Summary;

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
    #[error(transparent)]
    OutDir(#[from] OutDirError),
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Write { path: path.to_path_buf(), source }
}

/// The open files of a run directory.
pub(crate) struct RunDir {
    dir: PathBuf,
    requests: BufWriter<File>,
    failed: Option<std::io::Error>,
    secrets: Secrets,
}

impl RunDir {
    /// Opens `dir` (already checked by `outdir::given`) and starts `requests.jsonl`.
    pub(crate) fn create(dir: &Path, secrets: Secrets) -> Result<Self, VerifyError> {
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        let path = dir.join("requests.jsonl");
        let f = File::create(&path).map_err(write_err(&path))?;
        Ok(Self { dir: dir.to_path_buf(), requests: BufWriter::new(f), failed: None, secrets })
    }

    /// Appends one record; the first write error is kept and reported by `summary`.
    pub(crate) fn record(&mut self, r: &RequestRecord) {
        if self.failed.is_some() {
            return;
        }
        let scrubbed;
        let r = match &r.error_detail {
            Some(d) if !self.secrets.is_empty() && self.secrets.text(d) != *d => {
                let mut c = r.clone();
                c.error_detail = Some(self.secrets.text(d));
                scrubbed = c;
                &scrubbed
            }
            _ => r,
        };
        let res = serde_json::to_writer(&mut self.requests, r)
            .map_err(std::io::Error::from)
            .and_then(|()| self.requests.write_all(b"\n"));
        if let Err(e) = res {
            self.failed = Some(e);
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.failed.is_none() {
            if let Err(e) = self.requests.flush() {
                self.failed = Some(e);
            }
        }
    }

    /// Rewrites `summary.json` and `summary.csv` (write to a temp file, then rename).
    pub(crate) fn summary(&mut self, s: &Summary) -> Result<(), VerifyError> {
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
        let svg = crate::report::chart::svg(&s.levels, s.search.as_ref(), &title)?;
        let svg_path = self.dir.join("chart.svg");
        std::fs::write(&svg_path, svg).map_err(write_err(&svg_path))?;
        crate::report::chart::png(
            &s.levels,
            s.search.as_ref(),
            &title,
            &self.dir.join("chart.png"),
        )?;
        Ok(())
    }
}
