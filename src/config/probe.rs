//! The `[probe]` section: which of the engine's HTTP paths tell readiness, liveness and progress
//! (vLLM's by default, each profile's own otherwise), checked when the config is validated.
//! Plain settings: `crate::supervise::health` and `crate::supervise::progress` ask the paths.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[probe]`: which of the engine's HTTP paths tell readiness and liveness, per engine
/// (docs/serve.md, "Probes"). Unset keys take vLLM's paths; `""` turns a path off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Answers `expect_status` while the engine is up (default `/health`); a 404 falls back to
    /// `models`, with a note.
    pub health: Option<String>,
    /// Asked instead of `health` once the engine is ready (vLLM builds with `/live`); a 404
    /// falls back to `health`, with a note. Default: none.
    pub live: Option<String>,
    /// Lists the served model name once loaded (default `/v1/models`).
    pub models: Option<String>,
    /// Prometheus text the progress watchdog reads (default `/metrics`).
    pub metrics: Option<String>,
    /// Whose series `metrics` carries: `vllm` (default), `sglang` or `llamacpp`.
    pub metrics_series: Option<MetricsSeries>,
    /// The status `health` and `live` answer when well (default 200).
    pub expect_status: Option<u16>,
    /// The engine's own drain option, given the drain time in seconds when the engine is
    /// started (vLLM's `--shutdown-timeout`): on SIGTERM the engine then finishes in-flight
    /// requests itself. Default: none.
    pub shutdown_timeout_arg: Option<String>,
}

/// The names of the progress series in an engine's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsSeries {
    /// `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:prompt_tokens_total`,
    /// `vllm:generation_tokens_total`.
    #[default]
    Vllm,
    /// `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:prompt_tokens_total`,
    /// `sglang:generation_tokens_total`.
    Sglang,
    /// llama.cpp's `llama-server --metrics`: `llamacpp:requests_processing`,
    /// `llamacpp:requests_deferred`, `llamacpp:prompt_tokens_total`,
    /// `llamacpp:tokens_predicted_total`.
    Llamacpp,
}

/// The probe paths with defaults filled in; `None`: not asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbePaths {
    pub health: Option<String>,
    pub live: Option<String>,
    pub models: Option<String>,
    pub metrics: Option<String>,
    pub metrics_series: MetricsSeries,
    pub expect_status: u16,
    pub shutdown_timeout_arg: Option<String>,
}

impl ProbeConfig {
    /// The paths with vLLM's defaults for what is unset; `""` is off.
    pub fn paths(&self) -> ProbePaths {
        let path = |v: &Option<String>, default: Option<&str>| match v.as_deref() {
            Some("") => None,
            Some(p) => Some(p.to_string()),
            None => default.map(str::to_string),
        };
        ProbePaths {
            health: path(&self.health, Some("/health")),
            live: path(&self.live, None),
            models: path(&self.models, Some("/v1/models")),
            metrics: path(&self.metrics, Some("/metrics")),
            metrics_series: self.metrics_series.unwrap_or_default(),
            expect_status: self.expect_status.unwrap_or(200),
            shutdown_timeout_arg: path(&self.shutdown_timeout_arg, None),
        }
    }

    /// Every path set must start with `/`; the status must be a real HTTP status.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let paths = [
            ("probe.health", &self.health),
            ("probe.live", &self.live),
            ("probe.models", &self.models),
            ("probe.metrics", &self.metrics),
        ];
        for (key, value) in paths {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                if !v.starts_with('/') || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ConfigError::Semantic {
                        message: format!(
                            "{key} = \"{}\": must be a path starting with `/` (or \"\" for none)",
                            v.escape_debug()
                        ),
                    });
                }
            }
        }
        if let Some(code) = self.expect_status.filter(|c| !(100..=599).contains(c)) {
            return Err(ConfigError::Semantic {
                message: format!(
                    "probe.expect_status = {code}: must be an HTTP status, 100 to 599"
                ),
            });
        }
        if self.health.as_deref() == Some("") && self.models.as_deref() == Some("") {
            return Err(ConfigError::Semantic {
                message: "probe.health and probe.models are both off: nothing tells readiness"
                    .into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::load_text;

    #[test]
    fn probe_paths_default_to_vllm_and_bad_ones_are_refused() {
        let p = load_text("model = \"sim\"\n").unwrap().config.policy().probe;
        assert_eq!(
            (p.health.as_deref(), p.live.as_deref(), p.models.as_deref(), p.metrics.as_deref()),
            (Some("/health"), Some("/live"), Some("/v1/models"), Some("/metrics"))
        );
        assert_eq!((p.metrics_series, p.expect_status), (MetricsSeries::Vllm, 200));
        let l = load_text("model = \"llama-cpp-python\"\n").unwrap().config.policy().probe;
        assert_eq!((l.health, l.metrics, l.models.as_deref()), (None, None, Some("/v1/models")));
        let s = load_text("model = \"sglang\"\n").unwrap().config.policy().probe;
        assert_eq!(s.live.as_deref(), Some("/health_generate"));
        assert_eq!(s.metrics_series, MetricsSeries::Sglang);
        let msg = load_text("model = \"sim\"\n[probe]\nhealth = \"health\"\n").unwrap_err();
        assert!(msg.to_string().contains("probe.health = \"health\": must be a path"), "{msg}");
        let msg = load_text("model = \"sim\"\n[probe]\nexpect_status = 42\n").unwrap_err();
        assert!(msg.to_string().contains("probe.expect_status = 42"), "{msg}");
        let off = "model = \"sim\"\n[probe]\nhealth = \"\"\nmodels = \"\"\n";
        assert!(load_text(off).unwrap_err().to_string().contains("nothing tells readiness"));
        let msg = load_text("model = \"sim\"\n[probe]\nmetrics_series = \"tgi\"\n").unwrap_err();
        assert!(msg.to_string().starts_with("test.toml:3:"), "{msg}");
    }
}
