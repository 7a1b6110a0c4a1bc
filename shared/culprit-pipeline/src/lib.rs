//! The one data path of culprit:
//!
//! ```text
//! events -> DetectStage (per-source detectors) -> Bus (anomalies, dependency edges)
//!        -> CorrelateStage (incidents, ranking) -> RcaAlerts
//! ```
//!
//! The embedded mode runs both stages in one process over an [`InProcessBus`]; the service mode
//! runs each stage as its own Kafka consumer with a Kafka bus between them. Same stages, different
//! wiring: [`Pipeline`] is the embedded wiring, and what replay, demo and eval use.
//!
//! Invariant: all time is event time. The pipeline never reads the wall clock, so replaying the
//! same events gives the same alerts.
#![forbid(unsafe_code)]

mod baselines;
mod bus;
mod stage;

pub use baselines::{AdoptRequest, BaselineBoard, ForgetRequest};
pub use bus::{Bus, BusMessage, InProcessBus};
pub use culprit_knn::{KnnConfig, PointOutbox};
pub use culprit_store::{PointEntry, StoreConfig, VectorStore};
pub use stage::{CorrelateStage, DetectStage, SIMILAR_INCIDENTS};

use culprit_core::{DependencyEdge, Event, RcaAlert, SignalFamily, SourceKind, UnixNanos};
use culprit_correlate::CorrelateConfig;
use culprit_detect::{DetectConfig, Phase};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which detectors run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorMode {
    /// The statistical detectors only.
    Stats,
    /// The k-NN embedding detectors only (changes are still reported).
    Knn,
    /// Both; k-NN distances corroborate the statistical findings (measured in
    /// docs/EVALUATION.md: at least as good as `stats` on every figure).
    #[default]
    Fused,
}

impl std::str::FromStr for DetectorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stats" => Ok(DetectorMode::Stats),
            "knn" => Ok(DetectorMode::Knn),
            "fused" => Ok(DetectorMode::Fused),
            other => Err(format!(
                "unknown detector mode '{other}' (expected stats, knn or fused)"
            )),
        }
    }
}

/// Settings of both stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub detect: DetectConfig,
    pub correlate: CorrelateConfig,
    /// Event time at the start of a stream during which detectors only learn, in seconds.
    pub warmup_secs: u32,
    /// Which detectors run: `stats`, `knn` or `fused`.
    pub detector: DetectorMode,
    /// Settings of the k-NN detectors (used by `knn` and `fused`).
    pub knn: culprit_knn::KnnConfig,
}

impl PipelineConfig {
    /// The correlator settings this pipeline runs with: in `knn` mode the k-NN distance is the
    /// only evidence there is, so it counts fully instead of only corroborating.
    pub fn effective_correlate(&self) -> CorrelateConfig {
        let mut correlate = self.correlate.clone();
        if self.detector == DetectorMode::Knn {
            correlate
                .rank
                .signal_weights
                .insert(SignalFamily::KnnDistance, 1.0);
            correlate
                .rank
                .corroborating_signals
                .retain(|s| *s != SignalFamily::KnnDistance);
        }
        correlate
    }
}

/// Counters a run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineStats {
    pub events: BTreeMap<SourceKind, u64>,
    pub anomalies: u64,
    pub alerts: u64,
}

/// Both stages in one process, connected by an in-process bus.
pub struct Pipeline {
    detect: DetectStage,
    bus: InProcessBus,
    correlate: CorrelateStage,
    warmup: i64,
    learn_until: Option<UnixNanos>,
    stats: PipelineStats,
    /// Every anomaly passed to the correlator, when asked for (diagnostics, eval explanations).
    recorded: Option<Vec<culprit_core::Anomaly>>,
    /// The store the detect stage writes its points to, called synchronously.
    store: Option<culprit_store::SyncStore>,
    /// Failed point writes, for rate-limited warnings.
    write_failures: u64,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Pipeline {
        Pipeline::with_stage(DetectStage::from_config(&config), &config, None)
    }

    /// A pipeline whose k-NN detectors search their reference in `store` and write every
    /// event's point to it as windows close ([`DetectStage::with_store`]). A failed write is
    /// retried with the next one; [`Pipeline::finish`] tries once more and flushes the store.
    pub fn with_store(
        config: PipelineConfig,
        store: std::sync::Arc<dyn VectorStore>,
        retention_nanos: Option<i64>,
    ) -> Pipeline {
        let stage = DetectStage::with_store(&config, store.clone(), retention_nanos);
        Pipeline::with_stage(stage, &config, Some(culprit_store::SyncStore::new(store)))
    }

    /// Every alert carries the similar past incidents `past` knows, as in the services
    /// ([`CorrelateStage::with_past_incidents`]).
    pub fn with_past_incidents(
        mut self,
        past: std::sync::Arc<dyn culprit_core::PastIncidents>,
    ) -> Pipeline {
        self.correlate = self.correlate.with_past_incidents(past);
        self
    }

    fn with_stage(
        detect: DetectStage,
        config: &PipelineConfig,
        store: Option<culprit_store::SyncStore>,
    ) -> Pipeline {
        Pipeline {
            detect,
            bus: InProcessBus::default(),
            correlate: CorrelateStage::new(config.effective_correlate()),
            warmup: i64::from(config.warmup_secs) * culprit_core::NANOS_PER_SEC,
            learn_until: None,
            stats: PipelineStats::default(),
            recorded: None,
            store,
            write_failures: 0,
        }
    }

    /// Writes the points of the windows closed so far, when the pipeline has a store.
    fn write_points(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        if self.detect.pending_points() == 0 {
            return;
        }
        if let Err(e) = store.wait(self.detect.write_points()) {
            self.write_failures += 1;
            // The first failure and then every hundredth: a store that is down fails every write.
            if self.write_failures % 100 == 1 {
                tracing::warn!(
                    failures = self.write_failures,
                    waiting = self.detect.pending_points(),
                    "writing points to the vector store failed; retrying with the next batch: {e}"
                );
            }
        }
    }

    /// Learns a baseline from `events` (any time range, judged by nothing), then resets the
    /// stream clock so the next events may come from before or after them. The log lines are
    /// mined in place (their templates filled).
    pub fn learn<'a>(&mut self, events: impl IntoIterator<Item = &'a mut Event>) {
        for event in events {
            self.detect.observe(event, Phase::Learning, &mut self.bus);
        }
        self.detect.flush(Phase::Learning, &mut self.bus);
        self.write_points();
        self.pump();
    }

    /// Seeds the dependency graph with known edges (from a service catalogue, say).
    pub fn add_dependency(&mut self, edge: DependencyEdge) {
        self.correlate.add_edge(&edge);
    }

    /// Takes the next event of the stream; returns the alerts it led to. A log line is mined in
    /// place (its template filled).
    pub fn push(&mut self, event: &mut Event) -> Vec<RcaAlert> {
        *self.stats.events.entry(event.source()).or_default() += 1;
        let learn_until = *self.learn_until.get_or_insert(event.time + self.warmup);
        let phase = if event.time < learn_until {
            Phase::Learning
        } else {
            Phase::Detecting
        };
        self.detect.observe(event, phase, &mut self.bus);
        if self.detect.tick(event.time, phase, &mut self.bus) {
            self.write_points();
            return self.pump();
        }
        if !self.bus.is_empty() {
            return self.pump();
        }
        Vec::new()
    }

    /// The stream has ended: closes every window and resolves every incident.
    pub fn finish(&mut self) -> Vec<RcaAlert> {
        self.detect.flush(Phase::Detecting, &mut self.bus);
        self.write_points();
        if let Some(store) = &self.store {
            if let Err(e) = store.flush() {
                tracing::warn!("flushing the vector store failed: {e}");
            }
        }
        let mut alerts = self.pump();
        let flushed = self.correlate.flush();
        self.stats.alerts += flushed.len() as u64;
        alerts.extend(flushed);
        alerts
    }

    /// The latest alert of every incident so far.
    pub fn incidents(&self) -> &[RcaAlert] {
        self.correlate.incidents()
    }

    /// Keeps a copy of every anomaly from now on (see [`Pipeline::recorded_anomalies`]).
    pub fn record_anomalies(&mut self) {
        self.recorded.get_or_insert_with(Vec::new);
    }

    pub fn recorded_anomalies(&self) -> &[culprit_core::Anomaly] {
        self.recorded.as_deref().unwrap_or(&[])
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// What the detectors learned, as an embedder's snapshot holds it (for measuring its cost).
    pub fn save_state(&self) -> culprit_detect::state::DetectorStates {
        self.detect.save_state()
    }

    fn pump(&mut self) -> Vec<RcaAlert> {
        let messages = self.bus.drain();
        if let Some(recorded) = &mut self.recorded {
            recorded.extend(messages.iter().filter_map(|m| match m {
                BusMessage::Anomaly(a) => Some(a.clone()),
                _ => None,
            }));
        }
        self.stats.anomalies += messages
            .iter()
            .filter(|m| matches!(m, BusMessage::Anomaly(_)))
            .count() as u64;
        let alerts = self.correlate.handle(messages);
        self.stats.alerts += alerts.len() as u64;
        alerts
    }
}
