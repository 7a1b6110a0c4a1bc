//! The two stages of the pipeline, each usable on its own (one per service in Kafka mode).

use crate::baselines::BaselineBoard;
use crate::bus::{Bus, BusMessage};
use culprit_core::{DependencyEdge, Event, PastIncidents, RcaAlert, UnixNanos, NANOS_PER_SEC};
use culprit_correlate::{CorrelateConfig, Correlator};
use culprit_detect::{DetectConfig, Detector, Detectors, Findings, Phase};
use culprit_knn::{KnnDetector, PointOutbox};
use culprit_store::{PointEntry, PointWriter, StoreError, VectorStore};
use std::sync::Arc;

/// Runs the detectors over events and publishes their findings.
pub struct DetectStage {
    detectors: Detectors,
    findings: Findings,
    /// Newest event time seen, and the last whole second windows were advanced to.
    newest: UnixNanos,
    advanced_to: UnixNanos,
    /// Every detector's window width and allowed lateness, which bound when an observed event's
    /// window closes ([`Self::settles_at`]).
    window: i64,
    lateness: i64,
    /// Where this stage shows its baselines and takes forget requests, under its name.
    board: Option<(Arc<BaselineBoard>, String)>,
    /// The finished points of the k-NN detectors and where they are written, with a store.
    points: Option<(PointOutbox, PointWriter)>,
    /// The detection settings, for a fresh stage that re-learns ([`Self::relearner`]).
    config: DetectConfig,
}

impl DetectStage {
    pub fn new(config: &DetectConfig) -> DetectStage {
        DetectStage::with_detectors(Detectors::statistical(config), config)
    }

    fn with_detectors(detectors: Detectors, config: &DetectConfig) -> DetectStage {
        DetectStage {
            detectors,
            findings: Findings::default(),
            newest: i64::MIN,
            advanced_to: i64::MIN,
            window: config.shared.window_nanos(),
            lateness: config.shared.lateness_nanos(),
            board: None,
            points: None,
            config: config.clone(),
        }
    }

    /// A fresh stage of this one's detection settings with the statistical detectors, to
    /// re-learn baselines from a stored time range; this stage then adopts what it learned for
    /// one service ([`Self::adopt`]). The k-NN detectors take no part: their reference lives in
    /// the vector store, which a re-learn must not write to, so they keep what they have.
    pub fn relearner(&self) -> DetectStage {
        DetectStage::new(&self.config)
    }

    /// Makes [`Self::relearner`]s, for a caller that no longer holds this stage.
    pub fn relearner_factory(&self) -> impl Fn() -> DetectStage + Send + Sync + 'static {
        let config = self.config.clone();
        move || DetectStage::new(&config)
    }

    /// The board this stage is attached to ([`Self::attach_board`]), and its name there.
    pub fn board(&self) -> Option<(Arc<BaselineBoard>, String)> {
        self.board.clone()
    }

    /// Replaces what `service` learned, in the detectors that take `source` (all when None),
    /// with their part of `learned` (a [`Self::relearner`]'s [`Self::save_state`]).
    pub fn adopt(
        &mut self,
        service: &str,
        source: Option<culprit_core::SourceKind>,
        learned: &culprit_detect::state::DetectorStates,
    ) -> culprit_detect::state::AdoptReport {
        self.detectors.adopt(service, source, learned)
    }

    /// The detectors `config.detector` asks for; each k-NN detector keeps its reference in a
    /// private in-memory store and no point leaves it.
    pub fn from_config(config: &crate::PipelineConfig) -> DetectStage {
        let knn = || KnnDetector::all(&config.knn, &config.detect.shared);
        DetectStage::with_detectors(Self::detectors(config, knn), &config.detect)
    }

    /// The detectors `config.detector` asks for, the k-NN ones keeping their reference in
    /// `store` and handing out every event's finished point (its window's verdict, the
    /// reference marker) for [`Self::write_points`] to write to `store`; event points older
    /// than `retention_nanos` behind the newest are deleted (reference points are kept).
    ///
    /// Embedding is the k-NN detectors' job: with `detector = "stats"` nothing is embedded, so
    /// nothing is written.
    pub fn with_store(
        config: &crate::PipelineConfig,
        store: Arc<dyn VectorStore>,
        retention_nanos: Option<i64>,
    ) -> DetectStage {
        let outbox = PointOutbox::new();
        let knn = || {
            KnnDetector::all_with_store(
                &config.knn,
                &config.detect.shared,
                store.clone(),
                Some(outbox.clone()),
            )
        };
        let mut stage = DetectStage::with_detectors(Self::detectors(config, knn), &config.detect);
        stage.points = Some((outbox, PointWriter::new(store, retention_nanos)));
        stage
    }

    fn detectors(
        config: &crate::PipelineConfig,
        knn: impl Fn() -> Vec<Box<dyn Detector>>,
    ) -> Detectors {
        use culprit_detect::changes::ChangeDetector;
        let detect = &config.detect;
        match config.detector {
            crate::DetectorMode::Stats => Detectors::statistical(detect),
            crate::DetectorMode::Knn => {
                let mut d = knn();
                d.push(Box::new(ChangeDetector::new(detect.shared.clone())));
                Detectors::new(d)
            }
            crate::DetectorMode::Fused => {
                let mut all = Detectors::statistical(detect);
                for d in knn() {
                    all.push(d);
                }
                all
            }
        }
    }

    /// The clock reading ([`Self::closed_through`]) from which every event observed so far has
    /// had its window closed: judged, learned from, its point finished. The newest event's window
    /// ends last, and an older event observed later joins the oldest window still open, never an
    /// earlier one, so the newest event's window end plus the allowed lateness bounds them all.
    /// `i64::MIN` before the first event.
    pub fn settles_at(&self) -> UnixNanos {
        if self.newest == i64::MIN {
            return i64::MIN;
        }
        let start = self.newest.div_euclid(self.window) * self.window;
        start
            .saturating_add(self.window)
            .saturating_add(self.lateness)
    }

    /// The event time the windows were last advanced to: every window that ends, lateness
    /// included, at or before it is closed.
    pub fn closed_through(&self) -> UnixNanos {
        self.advanced_to
    }

    /// The finished points of windows closed so far that were not written yet, taken out of the
    /// stage (for a caller that writes them itself; [`Self::write_points`] does it otherwise).
    /// Empty for a stage made without a store.
    pub fn take_points(&mut self) -> Vec<PointEntry> {
        match &mut self.points {
            Some((outbox, writer)) => {
                let mut taken = writer.take_waiting();
                taken.extend(outbox.take());
                taken
            }
            None => Vec::new(),
        }
    }

    /// Points waiting to be written.
    pub fn pending_points(&self) -> usize {
        self.points
            .as_ref()
            .map_or(0, |(outbox, writer)| outbox.len() + writer.waiting())
    }

    /// Writes the finished points to the stage's store (and runs retention); on error they stay
    /// for the next call, which the caller makes (the Kafka worker pauses and retries before
    /// committing). Returns how many were written; 0 for a stage made without a store.
    pub async fn write_points(&mut self) -> Result<usize, StoreError> {
        let Some((outbox, writer)) = &mut self.points else {
            return Ok(0);
        };
        writer.push(outbox.take());
        writer.write().await
    }

    /// Shows this stage's baselines on `board` under `name` and applies the requests posted there
    /// to forget them, both as event time advances.
    pub fn attach_board(&mut self, board: Arc<BaselineBoard>, name: &str) {
        board.register(name);
        self.board = Some((board, name.to_string()));
    }

    /// Every detector's baselines, sorted by service, source, environment and signal.
    pub fn baselines(&self) -> Vec<culprit_detect::SignalSummary> {
        self.detectors.baselines()
    }

    fn serve_board(&mut self, now: UnixNanos) {
        self.serve_requests();
        let Some((board, name)) = &self.board else {
            return;
        };
        if board.due(name, now) {
            board.post(name, now, self.detectors.baselines());
        }
    }

    /// Applies the requests waiting on the board: at every window, and from the embedder when its
    /// input is quiet, so a recalculation does not wait for the next event.
    pub fn serve_requests(&mut self) {
        let Some((board, name)) = &self.board else {
            return;
        };
        for request in board.take_requests(name) {
            let n = self.detectors.forget(&request.service, request.source);
            tracing::info!(service = %request.service, source = ?request.source, baselines = n, "baselines forgotten on request; re-learning from the events that follow");
            board.applied(name, &request, n);
        }
        let adoptions = board.take_adoptions(name);
        if adoptions.is_empty() {
            return;
        }
        for request in adoptions {
            let report = self
                .detectors
                .adopt(&request.service, request.source, &request.learned);
            for (detector, reason) in &report.refused {
                tracing::warn!(service = %request.service, %detector, "a detector refused the re-learned state ({reason}); it keeps what it had");
            }
            tracing::info!(service = %request.service, source = ?request.source, baselines = report.baselines, adopted = ?report.adopted, kept = ?report.kept, "baselines replaced by the ones re-learned from a time range");
            (request.done)(report);
        }
        board.refresh(name, self.detectors.baselines());
    }

    /// What every detector learned, by detector name ([`culprit_detect::state`]), for a snapshot.
    pub fn save_state(&self) -> culprit_detect::state::DetectorStates {
        self.detectors.save_state()
    }

    /// Restores each detector from its part of `states`; a part that does not fit is refused
    /// (that detector learns afresh) and reported.
    pub fn restore_state(
        &mut self,
        states: culprit_detect::state::DetectorStates,
    ) -> culprit_detect::state::RestoreReport {
        self.detectors.restore_state(states)
    }

    /// Keeps only the detectors `sources` can feed ([`Detectors::keep_fed_by`]), for a stage
    /// that will only ever see those sources' events.
    pub fn keep_fed_by(&mut self, sources: &[culprit_core::SourceKind]) {
        self.detectors.keep_fed_by(sources);
    }

    /// Adds a detector (a learned model, say) beside the statistical ones.
    pub fn add_detector(&mut self, detector: Box<dyn culprit_detect::Detector>) {
        self.detectors.push(detector);
    }

    /// Takes one event; a log line is mined in place ([`culprit_detect::Detectors::observe`]).
    pub fn observe(&mut self, event: &mut Event, phase: Phase, bus: &mut impl Bus) {
        self.newest = self.newest.max(event.time);
        self.detectors.observe(event, phase, &mut self.findings);
        self.publish(bus);
    }

    /// Advances windows when event time has moved on by a second or more; returns whether it did.
    pub fn tick(&mut self, now: UnixNanos, phase: Phase, bus: &mut impl Bus) -> bool {
        let now = now.max(self.newest);
        if now < self.advanced_to.saturating_add(NANOS_PER_SEC) {
            return false;
        }
        self.advanced_to = now;
        self.detectors.advance(now, phase, &mut self.findings);
        self.publish(bus);
        self.serve_board(now);
        bus.publish(BusMessage::Watermark { time: now });
        true
    }

    pub fn flush(&mut self, phase: Phase, bus: &mut impl Bus) {
        self.detectors.flush(phase, &mut self.findings);
        self.publish(bus);
        if phase == Phase::Learning {
            // The learned data may lie after the stream that follows: forget its clock.
            self.newest = i64::MIN;
            self.advanced_to = i64::MIN;
        } else if self.newest > i64::MIN {
            bus.publish(BusMessage::Watermark { time: self.newest });
        }
    }

    fn publish(&mut self, bus: &mut impl Bus) {
        // Detectors keep their state in hash maps, so findings of one window come out in an
        // arbitrary order; sorting them keeps replays deterministic (the correlator's incidents
        // depend on the order anomalies arrive in).
        self.findings.edges.sort_by(|a, b| {
            (&a.environment, &a.caller, &a.callee).cmp(&(&b.environment, &b.caller, &b.callee))
        });
        self.findings.anomalies.sort_by(|a, b| {
            (a.time, a.source, &a.service, &a.signal, &a.id)
                .cmp(&(b.time, b.source, &b.service, &b.signal, &b.id))
        });
        for edge in self.findings.edges.drain(..) {
            bus.publish(BusMessage::Edge(edge));
        }
        for mut anomaly in self.findings.anomalies.drain(..) {
            anomaly.bound();
            bus.publish(BusMessage::Anomaly(anomaly));
        }
    }
}

/// Consumes the bus and turns anomalies into incidents and alerts.
pub struct CorrelateStage {
    correlator: Correlator,
    /// Where published alerts find their similar past incidents; none without a history.
    past: Option<Arc<dyn PastIncidents>>,
}

/// How many similar past incidents an alert carries.
pub const SIMILAR_INCIDENTS: usize = 3;

impl CorrelateStage {
    pub fn new(config: CorrelateConfig) -> CorrelateStage {
        CorrelateStage {
            correlator: Correlator::new(config),
            past: None,
        }
    }

    /// Every alert this stage returns carries the [`SIMILAR_INCIDENTS`] past incidents most like
    /// it, with their confirmed causes, from `past` (the operators' feedback history).
    pub fn with_past_incidents(mut self, past: Arc<dyn PastIncidents>) -> CorrelateStage {
        self.past = Some(past);
        self
    }

    fn with_similar(&self, mut alerts: Vec<RcaAlert>) -> Vec<RcaAlert> {
        if let Some(past) = &self.past {
            for alert in &mut alerts {
                alert.similar_incidents = past.most_similar(alert, SIMILAR_INCIDENTS);
            }
        }
        alerts
    }

    pub fn add_edge(&mut self, edge: &DependencyEdge) {
        self.correlator.add_edge(edge);
    }

    pub fn handle(&mut self, messages: impl IntoIterator<Item = BusMessage>) -> Vec<RcaAlert> {
        let mut alerts = Vec::new();
        for message in messages {
            match message {
                BusMessage::Edge(edge) => self.correlator.add_edge(&edge),
                BusMessage::Anomaly(anomaly) => alerts.extend(self.correlator.add(anomaly)),
                BusMessage::Watermark { time } => alerts.extend(self.correlator.advance(time)),
            }
        }
        self.with_similar(alerts)
    }

    pub fn flush(&mut self) -> Vec<RcaAlert> {
        let alerts = self.correlator.flush();
        self.with_similar(alerts)
    }

    pub fn incidents(&self) -> &[RcaAlert] {
        self.correlator.incidents()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Anomaly, Severity, SimilarIncident, SourceKind};
    use std::sync::Mutex;

    /// A history that answers one fixed incident and records whom it was asked about.
    #[derive(Default)]
    struct OnePastIncident {
        asked: Mutex<Vec<(String, u32)>>,
    }

    impl PastIncidents for OnePastIncident {
        fn most_similar(&self, alert: &RcaAlert, limit: usize) -> Vec<SimilarIncident> {
            self.asked
                .lock()
                .unwrap()
                .push((alert.incident_id.clone(), alert.revision));
            let past = SimilarIncident {
                incident_id: "last-week".into(),
                started_at: 1,
                summary: "errors on checkout".into(),
                confirmed_cause: "cart".into(),
                similarity: 0.8,
            };
            vec![past; limit.min(1)]
        }
    }

    fn anomaly(service: &str, secs: i64) -> BusMessage {
        BusMessage::Anomaly(Anomaly {
            id: format!("{service}-{secs}"),
            time: secs * NANOS_PER_SEC,
            source: SourceKind::Traces,
            service: service.into(),
            environment: "prod".into(),
            instance: None,
            signal: "span.errors".into(),
            description: String::new(),
            severity: Severity::Sev1,
            score: 1.0,
            observed: None,
            expected: None,
        })
    }

    #[test]
    fn every_revision_the_stage_returns_carries_the_similar_past_incidents() {
        let past = Arc::new(OnePastIncident::default());
        let mut stage =
            CorrelateStage::new(CorrelateConfig::default()).with_past_incidents(past.clone());
        let opened = stage.handle([anomaly("cart", 1000), anomaly("checkout", 1001)]);
        assert_eq!(opened.len(), 1, "two SEV1s open an incident");
        assert_eq!(opened[0].similar_incidents.len(), 1);
        assert_eq!(opened[0].similar_incidents[0].confirmed_cause, "cart");
        let last = stage.flush();
        assert!(!last.is_empty());
        assert!(last.iter().all(|a| a.similar_incidents.len() == 1));
        let asked = past.asked.lock().unwrap();
        assert_eq!(
            asked.len(),
            1 + last.len(),
            "asked once per published revision"
        );

        let mut without = CorrelateStage::new(CorrelateConfig::default());
        let opened = without.handle([anomaly("cart", 1000), anomaly("checkout", 1001)]);
        assert!(opened[0].similar_incidents.is_empty(), "no history, none");
    }

    #[test]
    fn a_fused_stage_saves_every_detector_that_learns_and_a_new_one_restores_them_all() {
        let config = crate::PipelineConfig {
            detector: crate::DetectorMode::Fused,
            ..crate::PipelineConfig::default()
        };
        let states = DetectStage::from_config(&config).save_state();
        let names: Vec<&str> = states.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "knn_logs",
                "knn_metrics",
                "knn_traces",
                "log_templates",
                "logs",
                "metrics",
                "spans",
                "trace_logs",
                "versions"
            ]
        );
        let text = serde_json::to_string(&states).unwrap();
        let report =
            DetectStage::from_config(&config).restore_state(serde_json::from_str(&text).unwrap());
        assert_eq!(report.restored.len(), names.len(), "{report:?}");
        assert!(
            report.refused.is_empty() && report.missing.is_empty() && report.unknown.is_empty()
        );
    }
}
