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
//! - [`config`]: the `[detect]` settings, shared and per detector;
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
pub mod config;
mod edge_waits;
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
pub use culprit_drain::LogTemplates;
use serde::{Deserialize, Serialize};

pub use baseline::{BaselineConfig, SeverityLevels};
pub use config::{
    DetectConfig, LogsConfig, MetricsConfig, NoveltyConfig, SharedConfig, SpansConfig,
};
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
    /// The sources without which it finds nothing: by default the first of [`Self::sources`]
    /// (the others only add context, as spans do to log lines). A stage fed fewer sources
    /// ([`Detectors::keep_fed_by`]) leaves out the detectors whose needs it cannot meet.
    fn needs(&self) -> &'static [SourceKind] {
        &self.sources()[..1]
    }
    /// Takes one event of this source, in (roughly) event-time order. A log line comes mined:
    /// [`culprit_core::LogEvent::template`] is filled, in place, by [`Detectors::observe`]. A
    /// detector driven on its own may get a line unmined, and must then mine it into the
    /// templates it was given ([`Detector::share_templates`]) rather than drop it.
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
        _learned: &crate::state::RawValue,
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
    fn save_state(&self) -> Option<crate::state::SavedState> {
        None
    }
    /// Replaces what this detector learned with a state [`Detector::save_state`] produced. On an
    /// error (another format version, unreadable) the detector is left as it was.
    fn restore_state(&mut self, _state: &crate::state::RawValue) -> Result<(), state::StateError> {
        Err(state::StateError::Unsupported)
    }
    /// Hands the detector the templates its log lines are mined into ([`Detectors`] does, to
    /// each detector it runs), for the texts of the templates it reports. Detectors that read
    /// no template text ignore it.
    fn share_templates(&mut self, _templates: &LogTemplates) {}
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

/// All the statistical detectors behind one `observe`.
pub struct Detectors {
    /// The one set of log template miners: every log line is mined here, once, and reaches the
    /// detectors with its template, so the log, span-log and k-NN detectors agree on its id.
    templates: LogTemplates,
    detectors: Vec<Box<dyn Detector>>,
    /// Whether any detector takes log lines: only then are they mined and the miners saved.
    takes_logs: bool,
}

impl Detectors {
    /// The name the template miners are saved under, beside the detectors' parts.
    pub const TEMPLATES_STATE: &'static str = "log_templates";

    pub fn statistical(config: &DetectConfig) -> Detectors {
        let shared = &config.shared;
        Detectors::new(vec![
            Box::new(spans::SpanDetector::new(
                shared.clone(),
                config.spans.clone(),
            )),
            Box::new(logs::LogDetector::new(shared.clone(), config.logs.clone())),
            Box::new(metrics::MetricDetector::new(
                shared.clone(),
                config.metrics.clone(),
            )),
            Box::new(changes::ChangeDetector::new(shared.clone())),
            Box::new(trace_logs::TraceLogDetector::new(
                shared.clone(),
                config.logs.clone(),
            )),
            Box::new(versions::VersionDetector::new(shared.clone())),
        ])
    }

    /// Only the given detectors.
    pub fn new(detectors: Vec<Box<dyn Detector>>) -> Detectors {
        let mut all = Detectors {
            templates: LogTemplates::default(),
            detectors: Vec::with_capacity(detectors.len()),
            takes_logs: false,
        };
        for d in detectors {
            all.push(d);
        }
        all
    }

    /// Adds a detector (for example a learned one) beside the statistical ones.
    pub fn push(&mut self, mut detector: Box<dyn Detector>) {
        detector.share_templates(&self.templates);
        self.takes_logs |= detector.sources().contains(&SourceKind::Logs);
        self.detectors.push(detector);
    }

    /// Keeps only the detectors whose [`Detector::needs`] `sources` meet: a stage fed one
    /// source (an embedder of one topic) then spends no memory or time on detectors that
    /// would wait for another source's events for ever.
    pub fn keep_fed_by(&mut self, sources: &[SourceKind]) {
        self.detectors
            .retain(|d| d.needs().iter().all(|s| sources.contains(s)));
        self.takes_logs = sources.contains(&SourceKind::Logs)
            && self
                .detectors
                .iter()
                .any(|d| d.sources().contains(&SourceKind::Logs));
    }

    /// The templates the log lines are mined into.
    pub fn templates(&self) -> &LogTemplates {
        &self.templates
    }

    /// Hands `event` to every detector that takes its source. A log line is mined here, in
    /// place, into this stage's miners ([`LogTemplates::mine_into`], replacing any template it
    /// carried: a line reaching a fresh stage, as in a relearn, must be mined into that stage's
    /// own miners), and every detector that takes it reads that template.
    pub fn observe(&mut self, event: &mut Event, phase: Phase, out: &mut Findings) {
        let source = event.source();
        if source == SourceKind::Logs && self.takes_logs {
            self.templates.mine_into(event);
        }
        let event = &*event;
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
        if self.takes_logs {
            let templates = self.templates.save_state();
            if let Some(value) = state::versioned(LogTemplates::STATE_VERSION, &templates) {
                out.insert(Self::TEMPLATES_STATE.to_string(), value);
            }
        }
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
        if self.takes_logs {
            // The template ids the detectors' parts hold are these miners' own.
            let name = Self::TEMPLATES_STATE.to_string();
            match states.remove(&name) {
                None => report.missing.push(name),
                Some(value) => match state::unversioned(&value, LogTemplates::STATE_VERSION) {
                    Ok(saved) => {
                        self.templates.restore_state(saved);
                        report.restored.push(name);
                    }
                    Err(e) => report.refused.push((name, e.to_string())),
                },
            }
        }
        for d in &mut self.detectors {
            let Some(name) = d.state_name() else {
                continue;
            };
            match states.remove(&name) {
                None => report.missing.push(name),
                Some(value) => match d.restore_state(&value) {
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
            match d.adopt(service, part) {
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

/// The baselines `d` shows for `service` whose signal `keep` admits, as sorted text: what the
/// adopt tests compare between a live, a fresh and an adopting detector.
#[cfg(test)]
pub(crate) fn shown_baselines(
    d: &dyn Detector,
    service: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut all = Vec::new();
    d.baselines(&mut all);
    let mut of: Vec<String> = all
        .into_iter()
        .filter(|s| s.service == service && keep(&s.signal))
        .map(|s| format!("{s:?}"))
        .collect();
    of.sort();
    of
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each detector's saved state is called, as the set of detectors a stage kept.
    fn kept(sources: &[SourceKind]) -> Vec<String> {
        let mut d = Detectors::statistical(&DetectConfig::default());
        d.keep_fed_by(sources);
        d.save_state().into_keys().collect()
    }

    #[test]
    fn a_stage_fed_one_source_keeps_only_the_detectors_that_source_can_feed() {
        // Spans alone: the span and rollout detectors; not the log detector (spans only add
        // context to lines) nor the span-and-log join, which needs both.
        assert_eq!(kept(&[SourceKind::Traces]), ["spans", "versions"]);
        // Lines alone: the log detector and its miners; not the join.
        assert_eq!(kept(&[SourceKind::Logs]), ["log_templates", "logs"]);
        assert_eq!(kept(&[SourceKind::Metrics]), ["metrics"]);
        // Both: the join too.
        assert_eq!(
            kept(&[SourceKind::Traces, SourceKind::Logs]),
            ["log_templates", "logs", "spans", "trace_logs", "versions"]
        );
    }
}
