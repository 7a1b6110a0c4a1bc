//! Configuration: defaults, then an optional TOML file, then `CULPRIT__SECTION__KEY` environment
//! variables (for example `CULPRIT__CORRELATE__QUIET_GAP_SECS=300`).

use anyhow::{Context, Result};
use culprit_pipeline::PipelineConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CulpritConfig {
    #[serde(flatten)]
    pub pipeline: PipelineConfig,
    pub output: OutputConfig,
    /// Brokers, topics and groups of the Kafka services (`culprit embedder|correlator|serve`).
    pub kafka: culprit_kafka::KafkaConfig,
    /// The operations API and dashboard of the services (tokens come from
    /// `CULPRIT_API_TOKENS` or `api.tokens_file`, never from this file).
    pub api: culprit_api::ApiConfig,
    /// Scheduled recalculation of the detectors' baselines.
    pub baselines: culprit_api::BaselinesConfig,
    /// Page through PagerDuty's Events API v2 (the routing key comes from
    /// `CULPRIT_PAGERDUTY_ROUTING_KEY` or `pagerduty.routing_key_file`, never from this file).
    pub pagerduty_enabled: bool,
    pub pagerduty: culprit_pagerduty::PagerDutyConfig,
    /// Where the embedder services keep every event's embedding.
    pub store: culprit_store::StoreConfig,
    /// The optional LLM review of low-confidence rankings (off by default; the API key comes
    /// from the environment variable `llm.api_key_env` names or `llm.api_key_file`).
    pub llm: culprit_agent::LlmConfig,
}

/// Where alerts go in the embedded mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Folder for `alerts.jsonl` and the causal-graph pictures (`<incident>.dot`, `.html`).
    pub dir: PathBuf,
    /// Also print each alert as one JSON line on stdout.
    pub stdout_json: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("culprit-out"),
            stdout_json: false,
        }
    }
}

pub fn load(path: Option<&Path>) -> Result<CulpritConfig> {
    load_with_env(path, None)
}

/// [`load`], with the environment variables taken from `env` instead of the process when given.
fn load_with_env(
    path: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<CulpritConfig> {
    let defaults = config::Config::try_from(&CulpritConfig::default())
        .context("building default configuration")?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        let mut file: toml::Table = text
            .parse()
            .with_context(|| format!("parsing configuration file {}", path.display()))?;
        whole_floats_to_integers(&mut file);
        builder = builder.add_source(config::File::from_str(
            &toml::to_string(&file).context("re-encoding the configuration file")?,
            config::FileFormat::Toml,
        ));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("CULPRIT")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // The one list set from the environment (the Helm chart gives the correlator its
            // peers): comma-separated.
            .list_separator(",")
            .with_list_parse_key("api.baseline_peers")
            .source(env),
    );
    let merged = builder.build().context("reading configuration")?;
    merged.try_deserialize().context("invalid configuration")
}

/// Templating tools write every number as a float (Helm's `toToml` renders `300` from a values
/// file as `300.0`); a whole float is read as the integer it spells, so integer settings take it.
/// Fractions stay floats and are refused where an integer is wanted.
fn whole_floats_to_integers(table: &mut toml::Table) {
    fn fix(value: &mut toml::Value) {
        match value {
            toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                *value = toml::Value::Integer(*f as i64);
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| fix(v)),
            toml::Value::Array(a) => a.iter_mut().for_each(fix),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(_, v)| fix(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_from_a_templating_tool_fill_integer_settings_and_fractions_do_not() {
        let dir = std::env::temp_dir().join(format!("culprit-config-f-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rendered = dir.join("helm.toml");
        std::fs::write(
            &rendered,
            "warmup_secs = 1800.0\n[correlate]\nquiet_gap_secs = 300.0\n[correlate.rank]\nevidence_weight = 1.0\n",
        )
        .unwrap();
        let c = load(Some(&rendered)).unwrap();
        assert_eq!(c.pipeline.warmup_secs, 1800);
        assert_eq!(c.pipeline.correlate.quiet_gap_secs, 300);
        assert_eq!(c.pipeline.correlate.rank.evidence_weight, 1.0);
        let fraction = dir.join("fraction.toml");
        std::fs::write(&fraction, "warmup_secs = 1800.5\n").unwrap();
        let err = format!("{:#}", load(Some(&fraction)).unwrap_err());
        assert!(err.contains("1800.5"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_baseline_peers_come_from_the_environment_as_a_comma_separated_list() {
        let env = config::Map::from([(
            "CULPRIT__API__BASELINE_PEERS".to_string(),
            "http://culprit-embedder-traces:9464,http://culprit-embedder-logs:9464".to_string(),
        )]);
        let c = load_with_env(None, Some(env)).unwrap();
        assert_eq!(
            c.api.baseline_peers,
            [
                "http://culprit-embedder-traces:9464",
                "http://culprit-embedder-logs:9464"
            ]
        );
    }

    #[test]
    fn defaults_load_without_a_file() {
        let c = load(None).unwrap();
        assert_eq!(c, CulpritConfig::default());
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("culprit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "warmup_secs = 42\n[correlate]\nquiet_gap_secs = 300\n",
        )
        .unwrap();
        let c = load(Some(&good)).unwrap();
        assert_eq!(c.pipeline.warmup_secs, 42);
        assert_eq!(c.pipeline.correlate.quiet_gap_secs, 300);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[correlate]\nquiet_gap = 300\n").unwrap();
        let err = format!("{:#}", load(Some(&bad)).unwrap_err());
        assert!(err.contains("quiet_gap"), "{err}");
    }

    #[test]
    fn detector_settings_load_from_their_tables_and_the_old_flat_keys_say_where_they_moved() {
        let dir = std::env::temp_dir().join(format!("culprit-config-d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[detect]\nwindow_secs = 20\n[detect.metrics]\nmin_z = 6\n[detect.novelty]\nwindow_secs = 30\n\
             [detect.logs]\nabsence_escalation = false\n[detect.spans]\nedge_horizon_secs = 60\n",
        )
        .unwrap();
        let d = load(Some(&good)).unwrap().pipeline.detect;
        assert_eq!(d.shared.window_secs, 20);
        assert_eq!(d.metrics.min_z, 6.0);
        assert_eq!(
            d.metrics.min_range_excess, 0.5,
            "the rest keep their defaults"
        );
        assert_eq!(d.shared.novelty.window_secs, 30);
        assert!(!d.logs.absence_escalation);
        assert_eq!(d.spans.edge_horizon_secs, 60);

        let old = dir.join("old.toml");
        std::fs::write(&old, "[detect]\nmetric_min_z = 8\n").unwrap();
        let err = format!("{:#}", load(Some(&old)).unwrap_err());
        assert!(
            err.contains("detect.metric_min_z moved to [detect.metrics] min_z"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();

        // The same through the environment: the new place is taken, the old name refused.
        let env = |k: &str, v: &str| Some([(k.to_string(), v.to_string())].into());
        let d = load_with_env(None, env("CULPRIT__DETECT__METRICS__MIN_Z", "6"))
            .unwrap()
            .pipeline
            .detect;
        assert_eq!(d.metrics.min_z, 6.0);
        let err = format!(
            "{:#}",
            load_with_env(None, env("CULPRIT__DETECT__LATENCY_QUANTILE", "0.95")).unwrap_err()
        );
        assert!(
            err.contains("detect.latency_quantile moved to [detect.spans] latency_quantile")
                && err.contains("CULPRIT__DETECT__SPANS__LATENCY_QUANTILE"),
            "{err}"
        );
    }
}
