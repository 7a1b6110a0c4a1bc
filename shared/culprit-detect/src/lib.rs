//! Per-source anomaly detection: turns a time-ordered stream of [`Event`]s into [`Anomaly`]s
//! (and the service dependency edges seen in traces) using time-aware statistical baselines.
//!
//! Module map:
//! - [`baseline`]: hour-of-week / hour-of-day / global baselines, robust scale, percentile
//!   thresholds mapped to severities;
//! - [`stats`]: binomial and Poisson tail tests for counts in a window;
//! - [`spans`], [`logs`], [`metrics`], [`changes`]: one detector per source;
//! - [`trace_logs`]: a joint detector of spans and the log lines written inside them;
//! - [`versions`]: a rollout's new pods against its old pods serving beside them;
//! - [`window`]: event-time tumbling windows shared by the detectors;
//! - [`state`]: what a detector learned, saved and restored across restarts.
//!
//! The [`Detector`] trait is the model seam: learned detectors (embeddings + k-NN) implement it
//! beside the statistical ones, and the pipeline fuses their findings.
//!
//! Invariant: detectors do no I/O and read no wall clock; all time is event time, advanced by
//! [`Detector::advance`] with a watermark.
#![forbid(unsafe_code)]

pub mod baseline;
mod calls;
pub mod changes;
mod edges;
pub mod logs;
pub mod metrics;
pub mod novelty;
pub mod spans;
pub mod state;
pub mod stats;
pub mod template_mix;
pub mod trace_logs;
pub mod versions;
pub mod window;

use culprit_core::{Anomaly, DependencyEdge, Event, Severity, Signal, SourceKind, UnixNanos};
use serde::{Deserialize, Serialize};

pub use baseline::{BaselineConfig, SeverityLevels};
pub use stats::SurpriseLevels;

/// What detectors report while observing events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub anomalies: Vec<Anomaly>,
    pub edges: Vec<DependencyEdge>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.anomalies.is_empty() && self.edges.is_empty()
    }
}

/// Whether detectors only learn (the baseline phase) or also report. Learning still judges where
/// a baseline must not absorb an earlier incident (the metric detector's runs), but reports nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Learning,
    Detecting,
}

/// A detector of one source (or, for joint detectors, of several).
pub trait Detector: Send {
    /// The sources whose events this detector takes.
    fn sources(&self) -> &'static [SourceKind];
    /// Takes one event of this source, in (roughly) event-time order.
    fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings);
    /// Event time has reached `watermark`: close the windows that end before it.
    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings);
    /// Closes every open window and forgets the stream's clock, keeping what was learned: the
    /// next events may come from any time (a baseline recorded after the data it judges).
    fn flush(&mut self, phase: Phase, out: &mut Findings);
    /// What this detector has learned as normal, per signal, for operators (the API's baseline
    /// view). Detectors without per-signal thresholds add nothing.
    fn baselines(&self, _out: &mut Vec<SignalSummary>) {}
    /// Forgets what `service` learned, so it re-learns from the events that follow; returns how
    /// many baselines were dropped.
    fn forget(&mut self, _service: &str) -> usize {
        0
    }
    /// Replaces what `service` learned with what another detector of the same kind and
    /// configuration learned for it, given as that detector's [`Detector::save_state`] (a
    /// re-learn from a time range trains a fresh detector, then the live one adopts its part);
    /// other services keep theirs. Returns how many baselines `service` has now. The default
    /// only forgets: a detector whose state is not kept per service cannot take one service's
    /// part, and the service re-learns from the events that follow.
    fn adopt(
        &mut self,
        service: &str,
        _learned: serde_json::Value,
    ) -> Result<usize, state::StateError> {
        self.forget(service);
        Ok(0)
    }
    /// The stable name this detector's part of a state snapshot is filed under, unique among the
    /// detectors of one stage; None for a detector that learns nothing worth keeping.
    fn state_name(&self) -> Option<String> {
        None
    }
    /// What this detector learned (baselines, templates, things seen), not its configuration nor
    /// its open windows, for a restart to continue from ([`state`]). None: nothing to save.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Replaces what this detector learned with a state [`Detector::save_state`] produced. On an
    /// error (another format version, unreadable) the detector is left as it was.
    fn restore_state(&mut self, _state: serde_json::Value) -> Result<(), state::StateError> {
        Err(state::StateError::Unsupported)
    }
}

/// One signal's baseline of one service, as [`Detector::baselines`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSummary {
    pub source: SourceKind,
    pub environment: String,
    pub service: String,
    /// The signal in the anomalies' form (`span.latency:GET /cart`, `metric:cpu`), with the unit
    /// its values are shown in when that is not obvious.
    pub signal: String,
    pub baseline: baseline::BaselineSummary,
}

/// Detection settings; every field has a default, so an empty `[detect]` section works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
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
    /// Metric points are reported only beyond this severity: a metric is one test per series
    /// per scrape, so hundreds of series make the milder levels fire by chance.
    pub metric_min_severity: Severity,
    /// A metric anomaly must also move this fraction away from the baseline median.
    pub metric_min_relative_change: f64,
    /// ... and lie this many robust standard deviations away: scrape-level series are heavy
    /// tailed, and a few hundred of them see a 4-sigma point every minute.
    pub metric_min_z: f64,
    /// ... and lie outside everything the baseline bucket has seen by this fraction of its range:
    /// robust scale underestimates the spread of bursty series, their range does not.
    pub metric_min_range_excess: f64,
    /// While learning, this many consecutive points of a series that pass every metric gate are
    /// an earlier incident inside the learning window and are not learned; shorter runs are the
    /// series' normal bursts and are. 0 learns every point.
    pub metric_learning_shift_points: usize,
    /// A series that stays beyond its gates this many seconds has moved for good (a deploy that
    /// raised memory): the run is learned as its new level, in either phase, and stops alerting.
    /// 0: never.
    pub metric_new_normal_secs: u32,
    /// Sightings within `novelty_window_secs` that make a never-seen log template, error type or
    /// error-handler call new behaviour rather than a rare event.
    pub novelty_min_count: u32,
    pub novelty_window_secs: u32,
    /// Trailing event time over which a log line that stopped appearing is judged.
    pub absence_horizon_secs: u32,
    /// Report a stopped line again each time its absence reaches a more severe level (at most
    /// SEV2), as spans without it pile up, so a quiet service's line that starts weak still
    /// counts once it is sure (docs/EVALUATION.md).
    pub absence_escalation: bool,
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
    /// Phrases (case-insensitive) that mark an error or warning line as the report of a failed
    /// call to another service: the failure happened elsewhere and this service only relays it.
    /// A new template whose line names another known service or holds one of these is reported
    /// as `log.new_remote_error`, a symptom that travels to callers, not as `log.new_template`,
    /// which is a change in the service's own behaviour.
    pub remote_failure_phrases: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            window_secs: 10,
            lateness_secs: 5,
            severity_levels: SeverityLevels::default(),
            surprise_levels: SurpriseLevels::default(),
            baseline: BaselineConfig::default(),
            min_severity: Severity::Sev4,
            metric_min_severity: Severity::Sev1,
            metric_min_relative_change: 0.1,
            metric_min_z: 8.0,
            metric_min_range_excess: 0.5,
            metric_learning_shift_points: 3,
            metric_new_normal_secs: 3600,
            novelty_min_count: 3,
            novelty_window_secs: 60,
            absence_horizon_secs: 60,
            absence_escalation: true,
            edge_horizon_secs: 120,
            latency_quantile: 0.99,
            latency_min_ratio: 1.5,
            latency_min_excess_ms: 0.0,
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

impl DetectConfig {
    pub fn window_nanos(&self) -> i64 {
        i64::from(self.window_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
    pub fn novelty<K: std::hash::Hash + Eq + Clone>(&self) -> novelty::Novelty<K> {
        novelty::Novelty::new(self.novelty_min_count, self.novelty_window_nanos())
    }

    pub fn lateness_nanos(&self) -> i64 {
        i64::from(self.lateness_secs) * culprit_core::NANOS_PER_SEC
    }
    pub fn novelty_window_nanos(&self) -> i64 {
        i64::from(self.novelty_window_secs) * culprit_core::NANOS_PER_SEC
    }
    /// The trailing span of event time a line's absence is judged over. A span of time rather
    /// than a count of windows: a quiet service or an operation that runs now and then closes no
    /// window in between.
    pub fn absence_horizon_nanos(&self) -> i64 {
        i64::from(self.absence_horizon_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
    pub fn edge_horizon_nanos(&self) -> i64 {
        i64::from(self.edge_horizon_secs.max(1)) * culprit_core::NANOS_PER_SEC
    }
}

/// All the statistical detectors behind one `observe`.
pub struct Detectors {
    detectors: Vec<Box<dyn Detector>>,
}

impl Detectors {
    pub fn statistical(config: &DetectConfig) -> Detectors {
        Detectors {
            detectors: vec![
                Box::new(spans::SpanDetector::new(config.clone())),
                Box::new(logs::LogDetector::new(config.clone())),
                Box::new(metrics::MetricDetector::new(config.clone())),
                Box::new(changes::ChangeDetector::new(config.clone())),
                Box::new(trace_logs::TraceLogDetector::new(config.clone())),
                Box::new(versions::VersionDetector::new(config.clone())),
            ],
        }
    }

    /// Only the given detectors.
    pub fn new(detectors: Vec<Box<dyn Detector>>) -> Detectors {
        Detectors { detectors }
    }

    /// Adds a detector (for example a learned one) beside the statistical ones.
    pub fn push(&mut self, detector: Box<dyn Detector>) {
        self.detectors.push(detector);
    }

    pub fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings) {
        let source = event.source();
        for d in self
            .detectors
            .iter_mut()
            .filter(|d| d.sources().contains(&source))
        {
            d.observe(event, phase, out);
        }
    }

    pub fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        for d in &mut self.detectors {
            d.advance(watermark, phase, out);
        }
    }

    pub fn flush(&mut self, phase: Phase, out: &mut Findings) {
        for d in &mut self.detectors {
            d.flush(phase, out);
        }
    }

    /// Every detector's baselines, sorted by service, source, environment and signal.
    pub fn baselines(&self) -> Vec<SignalSummary> {
        let mut out = Vec::new();
        for d in &self.detectors {
            d.baselines(&mut out);
        }
        out.sort_by(|a, b| {
            (&a.service, a.source, &a.environment, &a.signal).cmp(&(
                &b.service,
                b.source,
                &b.environment,
                &b.signal,
            ))
        });
        out
    }

    /// Every detector's learned state, by [`Detector::state_name`].
    pub fn save_state(&self) -> state::DetectorStates {
        let mut out = state::DetectorStates::new();
        for d in &self.detectors {
            if let (Some(name), Some(value)) = (d.state_name(), d.save_state()) {
                out.insert(name, value);
            }
        }
        out
    }

    /// Restores each detector from its part of `states`, independently: a part that does not fit
    /// (another format version) is refused and that detector learns afresh, the others are restored.
    pub fn restore_state(&mut self, mut states: state::DetectorStates) -> state::RestoreReport {
        let mut report = state::RestoreReport::default();
        for d in &mut self.detectors {
            let Some(name) = d.state_name() else {
                continue;
            };
            match states.remove(&name) {
                None => report.missing.push(name),
                Some(value) => match d.restore_state(value) {
                    Ok(()) => report.restored.push(name),
                    Err(e) => report.refused.push((name, e.to_string())),
                },
            }
        }
        report.unknown = states.into_keys().collect();
        report
    }

    /// Replaces what `service` learned, in the detectors that take `source` (all when None), with
    /// their part of `learned` (the states of a fresh set of detectors of the same configuration,
    /// [`Detectors::save_state`]). A detector `learned` has no part for keeps what it has.
    pub fn adopt(
        &mut self,
        service: &str,
        source: Option<SourceKind>,
        learned: &state::DetectorStates,
    ) -> state::AdoptReport {
        let mut report = state::AdoptReport::default();
        for d in self
            .detectors
            .iter_mut()
            .filter(|d| source.is_none_or(|s| d.sources().contains(&s)))
        {
            let Some(name) = d.state_name() else {
                continue;
            };
            let Some(part) = learned.get(&name) else {
                report.kept.push(name);
                continue;
            };
            match d.adopt(service, part.clone()) {
                Ok(n) => {
                    report.baselines += n;
                    report.adopted.push(name);
                }
                Err(e) => report.refused.push((name, e.to_string())),
            }
        }
        report
    }

    /// Forgets what `service` learned in the detectors that take `source` (all when None).
    pub fn forget(&mut self, service: &str, source: Option<SourceKind>) -> usize {
        self.detectors
            .iter_mut()
            .filter(|d| source.is_none_or(|s| d.sources().contains(&s)))
            .map(|d| d.forget(service))
            .sum()
    }
}

/// A stable anomaly id: the same finding computed twice (for example after a redelivery) gets
/// the same id. FNV-1a over the identifying parts.
pub fn anomaly_id(parts: &[&str], time: UnixNanos) -> String {
    let mut h = culprit_core::hash::Fnv1a::new();
    for p in parts {
        h.write_field(p.as_bytes());
    }
    h.write_field(&time.to_le_bytes());
    format!("{:016x}", h.value())
}

/// The pieces every detector fills in the same way.
pub(crate) struct AnomalyDraft<'a> {
    pub source: SourceKind,
    pub service: &'a str,
    pub environment: &'a str,
    pub instance: Option<&'a str>,
    pub time: UnixNanos,
    pub signal: Signal,
}

impl<'a> AnomalyDraft<'a> {
    /// A draft about one event, placed on the resource that sent it.
    pub fn of_event(event: &'a Event, source: SourceKind, signal: Signal) -> AnomalyDraft<'a> {
        AnomalyDraft {
            source,
            service: &event.resource.service,
            environment: &event.resource.environment,
            instance: event.resource.instance.as_deref(),
            time: event.time,
            signal,
        }
    }

    pub fn finish(
        self,
        severity: Severity,
        score: f64,
        observed: Option<f64>,
        expected: Option<f64>,
        description: String,
    ) -> Anomaly {
        Anomaly {
            id: anomaly_id(
                &[
                    self.source.as_str(),
                    self.service,
                    self.environment,
                    self.instance.unwrap_or(""),
                    self.signal.as_str(),
                ],
                self.time,
            ),
            time: self.time,
            source: self.source,
            service: self.service.to_string(),
            environment: self.environment.to_string(),
            instance: self.instance.map(str::to_string),
            signal: self.signal,
            description,
            severity,
            score: score.clamp(0.0, 1.0),
            observed,
            expected,
        }
    }
}
