//! Detection settings, the `[detect]` section: what every detector reads at `[detect]` itself
//! ([`SharedConfig`], with the `[detect.novelty]` table several detectors share), and one table
//! per detector family: `[detect.metrics]`, `[detect.logs]`, `[detect.spans]`.
//!
//! Every field has a default, so an empty `[detect]` section works. The keys that used to sit
//! flat in `[detect]` (`metric_min_z`, `novelty_window_secs`, `edge_horizon_secs`, ...) are
//! refused with an error that names where each one moved ([`MOVED_KEYS`]), not taken silently.

use crate::baseline::{BaselineConfig, SeverityLevels};
use crate::novelty;
use crate::stats::SurpriseLevels;
use culprit_core::Severity;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// Detection settings, the whole `[detect]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DetectFile", into = "DetectFile")]
pub struct DetectConfig {
    /// The keys at `[detect]` itself and the `[detect.novelty]` table: read by every detector.
    pub shared: SharedConfig,
    /// `[detect.metrics]`: the metric detector's gates.
    pub metrics: MetricsConfig,
    /// `[detect.logs]`: the log detector's and the trace-log detector's settings.
    pub logs: LogsConfig,
    /// `[detect.spans]`: the span detector's (and its call edges') settings.
    pub spans: SpansConfig,
}

/// The settings every detector reads, at `[detect]` itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Width of the event-time windows counts and latencies are judged in, in seconds.
    pub window_secs: u32,
    /// How far behind the newest event a window may still receive events, in seconds.
    pub lateness_secs: u32,
    /// Percentile levels for values judged against a baseline (metrics, latency thresholds).
    pub severity_levels: SeverityLevels,
    /// Surprise levels (-log10 p) for counts judged in a window (errors, slow spans).
    pub surprise_levels: SurpriseLevels,
    pub baseline: BaselineConfig,
    /// Anomalies less severe than this are not reported.
    pub min_severity: Severity,
    /// `[detect.novelty]`: when a never-seen thing is new behaviour. Shared rather than in one
    /// detector's table because two detectors judge novelty the same way and should agree: the
    /// log detector (never-seen templates) and the span detector (never-seen error types and
    /// error-handler calls).
    pub novelty: NoveltyConfig,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            window_secs: 10,
            lateness_secs: 5,
            severity_levels: SeverityLevels::default(),
            surprise_levels: SurpriseLevels::default(),
            baseline: BaselineConfig::default(),
            min_severity: Severity::Sev4,
            novelty: NoveltyConfig::default(),
        }
    }
}

impl SharedConfig {
    pub fn window_nanos(&self) -> i64 {
        i64::from(self.window_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
    pub fn lateness_nanos(&self) -> i64 {
        i64::from(self.lateness_secs) * culprit_core::NANOS_PER_SEC
    }
}

/// `[detect.novelty]`, shared by the log and span detectors ([`SharedConfig::novelty`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoveltyConfig {
    /// Sightings within `window_secs` that make a never-seen log template, error type or
    /// error-handler call new behaviour rather than a rare event.
    pub min_count: u32,
    pub window_secs: u32,
}

impl Default for NoveltyConfig {
    fn default() -> Self {
        NoveltyConfig {
            min_count: 3,
            window_secs: 60,
        }
    }
}

impl NoveltyConfig {
    pub fn novelty<K: std::hash::Hash + Eq + Clone>(&self) -> novelty::Novelty<K> {
        novelty::Novelty::new(self.min_count, self.window_nanos())
    }
    pub fn window_nanos(&self) -> i64 {
        i64::from(self.window_secs) * culprit_core::NANOS_PER_SEC
    }
}

/// `[detect.metrics]`: the gates a metric point must pass to be reported, and how a series
/// learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Metric points are reported only beyond this severity: a metric is one test per series
    /// per scrape, so hundreds of series make the milder levels fire by chance.
    pub min_severity: Severity,
    /// A metric anomaly must also move this fraction away from the baseline median.
    pub min_relative_change: f64,
    /// ... and lie this many robust standard deviations away: scrape-level series are heavy
    /// tailed, and a few hundred of them see a 4-sigma point every minute.
    pub min_z: f64,
    /// ... and lie outside everything the baseline bucket has seen by this fraction of its range:
    /// robust scale underestimates the spread of bursty series, their range does not.
    pub min_range_excess: f64,
    /// While learning, this many consecutive points of a series that pass every metric gate are
    /// an earlier incident inside the learning window and are not learned; shorter runs are the
    /// series' normal bursts and are. 0 learns every point.
    pub learning_shift_points: usize,
    /// A series that stays beyond its gates this many seconds has moved for good (a deploy that
    /// raised memory): the run is learned as its new level, in either phase, and stops alerting.
    /// 0: never.
    pub new_normal_secs: u32,
    /// While detecting, a normal point of a series that already has a spread is learned only
    /// this many seconds of event time later. A fault that sets in gradually shows first as
    /// points just under the gates; learned at once, each one would widen the baseline the next
    /// is judged by, and the fault would walk the range up without ever passing it. 0: at once.
    pub learn_delay_secs: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            min_severity: Severity::Sev1,
            min_relative_change: 0.1,
            min_z: 8.0,
            min_range_excess: 0.5,
            learning_shift_points: 3,
            new_normal_secs: 3600,
            learn_delay_secs: 300,
        }
    }
}

/// `[detect.logs]`: read by the log detector and the trace-log detector (the absence settings
/// serve both: each judges a line that stopped appearing, the latter per operation of its spans).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Trailing event time over which a log line that stopped appearing is judged.
    pub absence_horizon_secs: u32,
    /// Report a stopped line again each time its absence reaches a more severe level (at most
    /// SEV2), as spans without it pile up, so a quiet service's line that starts weak still
    /// counts once it is sure (docs/EVALUATION.md). Read by the trace-log detector.
    pub absence_escalation: bool,
    /// Phrases (case-insensitive) that mark an error or warning line as the report of a failed
    /// call to another service: the failure happened elsewhere and this service only relays it.
    /// A new template whose line names another known service or holds one of these is reported
    /// as `log.new_remote_error`, a symptom that travels to callers, not as `log.new_template`,
    /// which is a change in the service's own behaviour.
    pub remote_failure_phrases: Vec<String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            absence_horizon_secs: 60,
            absence_escalation: true,
            remote_failure_phrases: [
                // HTTP clients (Spring, Feign, Go, Node) and service discovery
                "HttpServerErrorException",
                "HttpClientErrorException",
                "ResourceAccessException",
                "FeignException",
                "No instances available",
                "Connection refused",
                "ECONNREFUSED",
                "Connection reset",
                "connect timed out",
                "Read timed out",
                "i/o timeout",
                "502 Bad Gateway",
                "503 Service Unavailable",
                "504 Gateway Timeout",
                // gRPC and service meshes
                "StatusRuntimeException",
                "code = Unavailable",
                "DEADLINE_EXCEEDED",
                "upstream connect error",
                "no healthy upstream",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl LogsConfig {
    /// The trailing span of event time a line's absence is judged over. A span of time rather
    /// than a count of windows: a quiet service or an operation that runs now and then closes no
    /// window in between.
    pub fn absence_horizon_nanos(&self) -> i64 {
        i64::from(self.absence_horizon_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
}

/// `[detect.spans]`: what counts as a slow span, and the horizon of the call edges' waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpansConfig {
    /// Trailing event time over which the waits on a call edge are judged: long enough for a
    /// quiet edge (a few calls a minute) to collect the slow calls that show which endpoint the
    /// slow edges share, short enough to follow a fault (docs/EVALUATION.md measures 30-300 s).
    pub edge_horizon_secs: u32,
    /// Span latency quantile whose exceedance rate is tested.
    pub latency_quantile: f64,
    /// A span only counts as slow when it is also this many times the baseline median: a thin
    /// baseline's p99 can sit barely above its median.
    pub latency_min_ratio: f64,
    /// ... and this many milliseconds above the baseline median: a 1 ms query taking 1.5 ms is
    /// within the jitter of any runtime, not a slowdown anyone would page for.
    pub latency_min_excess_ms: f64,
}

impl Default for SpansConfig {
    fn default() -> Self {
        SpansConfig {
            edge_horizon_secs: 120,
            latency_quantile: 0.99,
            latency_min_ratio: 1.5,
            latency_min_excess_ms: 0.0,
        }
    }
}

impl SpansConfig {
    pub fn edge_horizon_nanos(&self) -> i64 {
        i64::from(self.edge_horizon_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
}

/// The keys that used to sit flat in `[detect]`, each with its new table and key.
pub const MOVED_KEYS: [(&str, &str, &str); 15] = [
    ("metric_min_severity", "metrics", "min_severity"),
    (
        "metric_min_relative_change",
        "metrics",
        "min_relative_change",
    ),
    ("metric_min_z", "metrics", "min_z"),
    ("metric_min_range_excess", "metrics", "min_range_excess"),
    (
        "metric_learning_shift_points",
        "metrics",
        "learning_shift_points",
    ),
    ("metric_new_normal_secs", "metrics", "new_normal_secs"),
    ("novelty_min_count", "novelty", "min_count"),
    ("novelty_window_secs", "novelty", "window_secs"),
    ("absence_horizon_secs", "logs", "absence_horizon_secs"),
    ("absence_escalation", "logs", "absence_escalation"),
    ("remote_failure_phrases", "logs", "remote_failure_phrases"),
    ("edge_horizon_secs", "spans", "edge_horizon_secs"),
    ("latency_quantile", "spans", "latency_quantile"),
    ("latency_min_ratio", "spans", "latency_min_ratio"),
    ("latency_min_excess_ms", "spans", "latency_min_excess_ms"),
];

/// The `[detect]` section as written in a file: the shared keys flat, the tables nested, and the
/// moved keys caught (never written) so that they are refused with their new place rather than
/// as unknown fields.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DetectFile {
    window_secs: u32,
    lateness_secs: u32,
    severity_levels: SeverityLevels,
    surprise_levels: SurpriseLevels,
    baseline: BaselineConfig,
    min_severity: Severity,
    novelty: NoveltyConfig,
    metrics: MetricsConfig,
    logs: LogsConfig,
    spans: SpansConfig,
    // The moved keys, in the order of MOVED_KEYS.
    #[serde(skip_serializing)]
    metric_min_severity: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    metric_min_relative_change: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    metric_min_z: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    metric_min_range_excess: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    metric_learning_shift_points: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    metric_new_normal_secs: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    novelty_min_count: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    novelty_window_secs: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    absence_horizon_secs: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    absence_escalation: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    remote_failure_phrases: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    edge_horizon_secs: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    latency_quantile: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    latency_min_ratio: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    latency_min_excess_ms: Option<IgnoredAny>,
}

impl DetectFile {
    /// Which of [`MOVED_KEYS`] the file set.
    fn moved(&self) -> [bool; 15] {
        [
            self.metric_min_severity.is_some(),
            self.metric_min_relative_change.is_some(),
            self.metric_min_z.is_some(),
            self.metric_min_range_excess.is_some(),
            self.metric_learning_shift_points.is_some(),
            self.metric_new_normal_secs.is_some(),
            self.novelty_min_count.is_some(),
            self.novelty_window_secs.is_some(),
            self.absence_horizon_secs.is_some(),
            self.absence_escalation.is_some(),
            self.remote_failure_phrases.is_some(),
            self.edge_horizon_secs.is_some(),
            self.latency_quantile.is_some(),
            self.latency_min_ratio.is_some(),
            self.latency_min_excess_ms.is_some(),
        ]
    }
}

impl Default for DetectFile {
    fn default() -> Self {
        DetectConfig::default().into()
    }
}

impl From<DetectConfig> for DetectFile {
    fn from(c: DetectConfig) -> Self {
        let s = c.shared;
        DetectFile {
            window_secs: s.window_secs,
            lateness_secs: s.lateness_secs,
            severity_levels: s.severity_levels,
            surprise_levels: s.surprise_levels,
            baseline: s.baseline,
            min_severity: s.min_severity,
            novelty: s.novelty,
            metrics: c.metrics,
            logs: c.logs,
            spans: c.spans,
            metric_min_severity: None,
            metric_min_relative_change: None,
            metric_min_z: None,
            metric_min_range_excess: None,
            metric_learning_shift_points: None,
            metric_new_normal_secs: None,
            novelty_min_count: None,
            novelty_window_secs: None,
            absence_horizon_secs: None,
            absence_escalation: None,
            remote_failure_phrases: None,
            edge_horizon_secs: None,
            latency_quantile: None,
            latency_min_ratio: None,
            latency_min_excess_ms: None,
        }
    }
}

/// A `[detect]` section that still sets keys which moved to a detector's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedKeys(pub Vec<&'static (&'static str, &'static str, &'static str)>);

impl std::fmt::Display for MovedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (old, table, key)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "detect.{old} moved to [detect.{table}] {key} (environment: CULPRIT__DETECT__{}__{})",
                table.to_uppercase(),
                key.to_uppercase()
            )?;
        }
        Ok(())
    }
}

impl TryFrom<DetectFile> for DetectConfig {
    type Error = MovedKeys;

    fn try_from(f: DetectFile) -> Result<Self, MovedKeys> {
        let moved: Vec<_> = MOVED_KEYS
            .iter()
            .zip(f.moved())
            .filter(|(_, set)| *set)
            .map(|(k, _)| k)
            .collect();
        if !moved.is_empty() {
            return Err(MovedKeys(moved));
        }
        Ok(DetectConfig {
            shared: SharedConfig {
                window_secs: f.window_secs,
                lateness_secs: f.lateness_secs,
                severity_levels: f.severity_levels,
                surprise_levels: f.surprise_levels,
                baseline: f.baseline,
                min_severity: f.min_severity,
                novelty: f.novelty,
            },
            metrics: f.metrics,
            logs: f.logs,
            spans: f.spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_the_flat_section_they_replace() {
        let c = DetectConfig::default();
        let s = &c.shared;
        assert_eq!((s.window_secs, s.lateness_secs), (10, 5));
        assert_eq!(s.min_severity, Severity::Sev4);
        assert_eq!((s.novelty.min_count, s.novelty.window_secs), (3, 60));
        let m = &c.metrics;
        assert_eq!(m.min_severity, Severity::Sev1);
        assert_eq!(
            (m.min_relative_change, m.min_z, m.min_range_excess),
            (0.1, 8.0, 0.5)
        );
        assert_eq!((m.learning_shift_points, m.new_normal_secs), (3, 3600));
        let l = &c.logs;
        assert_eq!((l.absence_horizon_secs, l.absence_escalation), (60, true));
        assert_eq!(l.remote_failure_phrases.len(), 19);
        let p = &c.spans;
        assert_eq!(
            (
                p.edge_horizon_secs,
                p.latency_quantile,
                p.latency_min_ratio,
                p.latency_min_excess_ms
            ),
            (120, 0.99, 1.5, 0.0)
        );
    }

    #[test]
    fn the_section_round_trips_in_its_nested_layout() {
        let mut c = DetectConfig::default();
        c.metrics.min_z = 6.0;
        c.shared.novelty.window_secs = 30;
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["metrics"]["min_z"], 6.0);
        assert_eq!(json["novelty"]["window_secs"], 30);
        assert_eq!(json["window_secs"], 10);
        assert!(json.get("shared").is_none() && json.get("metric_min_z").is_none());
        let back: DetectConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let empty: DetectConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, DetectConfig::default());
    }

    #[test]
    fn a_moved_key_is_refused_naming_its_new_place() {
        let err = serde_json::from_str::<DetectConfig>(r#"{"metric_min_z": 8}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("detect.metric_min_z moved to [detect.metrics] min_z"),
            "{err}"
        );
        let err = serde_json::from_str::<DetectConfig>(
            r#"{"novelty_window_secs": 30, "edge_horizon_secs": 60}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("detect.novelty_window_secs moved to [detect.novelty] window_secs")
                && err
                    .contains("detect.edge_horizon_secs moved to [detect.spans] edge_horizon_secs"),
            "{err}"
        );
        // Every moved key is caught, and a key that never existed is still an unknown field.
        for (old, table, key) in MOVED_KEYS {
            let err = serde_json::from_str::<DetectConfig>(&format!(r#"{{"{old}": 1}}"#))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("detect.{old} moved to [detect.{table}] {key}")),
                "{err}"
            );
        }
        let err = serde_json::from_str::<DetectConfig>(r#"{"metric_min_zz": 8}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `metric_min_zz`"), "{err}");
    }
}
