//! k-NN anomaly scoring: every event is featurized and embedded (`culprit-embed`), and judged by
//! its distance to the nearest *normal* embeddings of the same source and service, searched in a
//! vector store (`culprit-store`) through the [`VectorStore`] trait.
//!
//! Per service, the distances of newly admitted normal points to their own neighbours form a
//! baseline of "how far a normal event lies"; an event beyond its p99 is far. Like the span
//! detector, a window is judged by how many far events it holds against the number expected
//! (Poisson), so one odd event is not an incident, and only windows judged normal add their
//! points to the reference. Memory stays bounded: each service keeps at most
//! `reference_per_service` reference points, admitted ever more sparsely as it fills (1,000 by
//! default: each judged event is compared with all of them).
//!
//! # The store
//!
//! The reference lives in a store handed to the detector ([`KnnDetector::with_store`]); by
//! default a private in-memory [`EmbeddedStore`] ([`KnnDetector::new`]). An admitted event joins
//! it as a marked copy of its point ([`PointEntry::reference`], id [`PointId::reference_copy`]),
//! so rewriting the event's own point never takes it out again, and searches use
//! [`reference_filter`] (source, service, environment, normal only, reference only), so they
//! never scan the other events a shared store holds. A service the detector meets for the first time adopts the reference
//! points the store already holds for it (a restart against a persisted store): they count
//! towards the cap, and the detector keeps sampling distances until it has `min_reference` of
//! them, unless a snapshot told it what "normal distance" is (below). The detector writes the
//! points it admits itself, so its next search sees them; a store failure never stops it (see
//! `access`).
//!
//! # Snapshots
//!
//! Its state ([`culprit_detect::state`], part `knn_<source>`) is what it learned: the
//! featuriser's memory (metric windows, the span-id cache; the log template miners are the
//! detection stage's, which it saves beside its detectors), and per service
//! the normal distances that calibrate "far", the events observed and the reference's size. With
//! a shared store the reference stays there: a restored service counts the store's points again
//! at its next event, and reference points a failing store had not taken yet are not saved. With
//! a private store ([`KnnDetector::new`]) the snapshot carries the reference points themselves,
//! as the embedder gave them and in admission order, so the restored store answers every search
//! as the saved one did; the detector keeps that copy of them for the purpose (at most
//! `reference_per_service` points per service). The embedding needs nothing: the hashing one is
//! fixed and a trained model is read from `model_dir`, never trained while detecting.
//!
//! With an outbox ([`PointOutbox`]) every event's point is kept until its window closes and then
//! left there with the window's verdict: `normal` when the window was judged normal, `score` the
//! window's anomaly score (0 when normal), followed by the reference copies admitted. Ids derive from the event's
//! identity ([`PointId::of_event`]), so a redelivered event replaces its point. The caller writes
//! them (`culprit_pipeline::DetectStage::write_points`, with the Kafka worker's retry). Without an
//! outbox only the sampled reference candidates are built.
//!
//! The detector plugs into the pipeline beside the statistical ones through
//! [`culprit_detect::Detector`]; which of them run is the pipeline's `detector` mode.
#![forbid(unsafe_code)]

mod access;
mod config;
mod outbox;

pub use access::{is_far, knn_distance, mean_distance, reference_filter, BACKOFF};
pub use config::{embedder_for, KnnConfig};
pub use outbox::PointOutbox;

use access::StoreAccess;
use culprit_core::{Event, SourceKind, UnixNanos};
use culprit_detect::baseline::{hour_buckets, Baseline, BaselineConfig};
use culprit_detect::state::{unversioned, versioned, StateError};
use culprit_detect::stats::poisson_surprise;
use culprit_detect::window::Windows;
use culprit_detect::{anomaly_id, Detector, Findings, Phase, SharedConfig};
use culprit_embed::{featurize, Embedder, FeatureMemory, FeatureState};
use culprit_store::{EmbeddedStore, Filter, Point, PointEntry, PointId, VectorStore, DIM};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// One event's point while its window is open.
#[derive(Debug)]
struct WindowPoint {
    point: Point,
    /// Whether the point may join the reference if its window is judged normal.
    candidate: bool,
    /// Its k-NN distance, NaN when unknown or not needed.
    distance: f32,
}

#[derive(Debug, Default)]
struct ServiceWindow {
    events: u64,
    far: u64,
    /// The points of the window: every event's with an outbox, else the candidates'.
    points: Vec<WindowPoint>,
}

#[derive(Debug)]
struct ServiceReference {
    /// Selects this service's reference in the store.
    filter: Filter,
    /// Reference points in the store (adopted ones included).
    stored: usize,
    /// The reference held points before this detector admitted any (a restart).
    adopted: bool,
    /// Events observed, to pick admission candidates without building a point for every event.
    observed: u64,
    /// Distances of admitted normal points to their neighbours at admission.
    distances: Baseline,
    /// Distances already computed against the reference as it stands, by embedding bits:
    /// identical feature rows repeat a lot, and the scan is most of the k-NN cost. Cleared
    /// whenever the reference changes, so a hit is exactly what a new scan would return.
    memo: HashMap<[u32; DIM], Option<f32>>,
    /// The far-distance threshold as last computed, with the (hour-of-week bucket, distances
    /// seen) it holds for: profiling sorts the baseline, too costly to repeat for every event.
    threshold: Option<((usize, u64), Option<f64>)>,
    /// The reference points as they were admitted, in order, when the store is the detector's
    /// own: the snapshot of a detector without a shared store has to carry them. Empty with a
    /// shared store, which keeps the reference itself.
    own: Vec<SavedPoint>,
    /// Restored from a snapshot with a shared store: `stored` is what the snapshot counted, to
    /// be replaced by the store's count at the service's next event.
    recount: bool,
}

/// A reference point of a private store as a snapshot carries it. An admitted point is normal
/// with score 0 and its service's tags, so its id, time and vector (as the embedder gave it,
/// before the store normalised it) are all there is to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedPoint {
    id: u64,
    timestamp: UnixNanos,
    vector: Vec<f32>,
}

/// What a [`KnnDetector`] learned ([`culprit_detect::state`]): its featuriser's memory and, per
/// service, the normal distances that calibrate "far", how many events it observed, and how
/// large its reference is (the points themselves only with a private store).
#[derive(Serialize, Deserialize)]
struct KnnState {
    features: FeatureMemory,
    services: Vec<ServiceState>,
}

impl KnnState {
    /// 2: the featuriser's span cache holds span ids by their hash. 3: its log template miners
    /// left for the detection stage's shared ones.
    const VERSION: u32 = 3;
}

#[derive(Serialize, Deserialize)]
struct ServiceState {
    environment: String,
    service: String,
    stored: usize,
    adopted: bool,
    observed: u64,
    distances: Baseline,
    /// The reference points in admission order when the store was private; None when it was
    /// shared (the store keeps them).
    points: Option<Vec<SavedPoint>>,
}

impl ServiceReference {
    fn new(filter: Filter, stored: usize) -> ServiceReference {
        ServiceReference {
            filter,
            stored,
            adopted: stored > 0,
            observed: 0,
            distances: Baseline::default(),
            memo: HashMap::new(),
            threshold: None,
            own: Vec::new(),
            recount: false,
        }
    }

    /// Distance beyond which an event is far, or None while the reference is too small.
    fn threshold(&mut self, time: UnixNanos, config: &KnnConfig) -> Option<f64> {
        if self.stored < config.min_reference {
            return None;
        }
        let at = (hour_buckets(time).0, self.distances.seen());
        if let Some((cached_at, threshold)) = self.threshold {
            if cached_at == at {
                return threshold;
            }
        }
        let threshold = self
            .distances
            .profile(time, &BaselineConfig::default())
            .map(|p| p.threshold(config.quantile, true));
        self.threshold = Some((at, threshold));
        threshold
    }

    /// An adopted reference whose normal distances are still being learned: it samples
    /// candidates for their distances although it is full.
    fn learning_distances(&self, config: &KnnConfig) -> bool {
        self.adopted && self.distances.seen() < config.min_reference as u64
    }
}

/// Memoised distances kept per service before the memo starts over.
const MEMO_ENTRIES: usize = 4096;

/// k-NN detector of one source.
pub struct KnnDetector {
    source: SourceKind,
    config: KnnConfig,
    detect: SharedConfig,
    features: FeatureState,
    embedder: Box<dyn Embedder>,
    store: StoreAccess,
    /// Whether the store is the detector's own in-memory one ([`KnnDetector::new`]), so that its
    /// snapshot must carry the reference points.
    private: bool,
    outbox: Option<PointOutbox>,
    services: HashMap<(String, String), ServiceReference>,
    windows: Windows<HashMap<(String, String), ServiceWindow>>,
}

impl KnnDetector {
    /// A detector with a private in-memory reference store.
    pub fn new(source: SourceKind, config: KnnConfig, detect: SharedConfig) -> KnnDetector {
        let mut detector = KnnDetector::with_store(
            source,
            config,
            detect,
            Arc::new(EmbeddedStore::in_memory()),
            None,
        );
        detector.private = true;
        detector
    }

    /// A detector whose reference lives in `store` (shared with other detectors and writers),
    /// leaving every event's finished point in `outbox` when there is one.
    pub fn with_store(
        source: SourceKind,
        config: KnnConfig,
        detect: SharedConfig,
        store: Arc<dyn VectorStore>,
        outbox: Option<PointOutbox>,
    ) -> KnnDetector {
        let windows = Windows::new(detect.window_nanos(), detect.lateness_nanos());
        KnnDetector {
            source,
            embedder: embedder_for(source, &config),
            config,
            detect,
            features: FeatureState::default(),
            store: StoreAccess::new(store),
            private: false,
            outbox,
            services: HashMap::new(),
            windows,
        }
    }

    /// The sources that have numeric behaviour to embed.
    pub const SOURCES: [SourceKind; 3] =
        [SourceKind::Traces, SourceKind::Logs, SourceKind::Metrics];

    /// k-NN detectors of [`Self::SOURCES`], each with a private in-memory store.
    pub fn all(config: &KnnConfig, detect: &SharedConfig) -> Vec<Box<dyn Detector>> {
        Self::SOURCES
            .into_iter()
            .map(|s| {
                Box::new(KnnDetector::new(s, config.clone(), detect.clone())) as Box<dyn Detector>
            })
            .collect()
    }

    /// k-NN detectors of [`Self::SOURCES`] sharing `store` and `outbox`.
    pub fn all_with_store(
        config: &KnnConfig,
        detect: &SharedConfig,
        store: Arc<dyn VectorStore>,
        outbox: Option<PointOutbox>,
    ) -> Vec<Box<dyn Detector>> {
        Self::SOURCES
            .into_iter()
            .map(|s| {
                Box::new(KnnDetector::with_store(
                    s,
                    config.clone(),
                    detect.clone(),
                    store.clone(),
                    outbox.clone(),
                )) as Box<dyn Detector>
            })
            .collect()
    }

    /// The service's k-NN distance, answered from its memo when the same embedding was scored
    /// against the same reference before.
    fn memoised_distance(
        &mut self,
        vector: &[f32],
        key: &(String, String),
        now: UnixNanos,
    ) -> Option<f32> {
        let k = self.config.k;
        let reference = self.services.get_mut(key)?;
        // A fixed-size key: no allocation per event. Other widths are the store's to reject.
        let bits = <[f32; DIM]>::try_from(vector)
            .ok()
            .map(|v| v.map(f32::to_bits));
        if let Some(&known) = bits.as_ref().and_then(|b| reference.memo.get(b)) {
            return known;
        }
        let distance = self
            .store
            .distance(now, vector, &reference.filter, k)
            .ok()?;
        // Only an answer from a store that holds the whole reference may be reused.
        if let (Some(bits), true) = (bits, self.store.settled()) {
            if reference.memo.len() >= MEMO_ENTRIES {
                reference.memo.clear();
            }
            reference.memo.insert(bits, distance);
        }
        distance
    }

    /// Finishes a closed window's points: a normal window teaches how far normal points lie and
    /// admits candidates to the reference, ever more sparsely once a service is full; every
    /// point gets the window's verdict and goes to the outbox.
    fn finish_points(
        &mut self,
        key: &(String, String),
        points: Vec<WindowPoint>,
        verdict: Option<f32>,
        time: UnixNanos,
    ) {
        let cap = self.config.reference_per_service.max(1);
        let Some(reference) = self.services.get_mut(key) else {
            return;
        };
        let normal = verdict.is_none();
        let keep_all = self.outbox.is_some();
        let private = self.private;
        let mut admitted = Vec::new();
        let mut finished = Vec::with_capacity(if keep_all { points.len() } else { 0 });
        for WindowPoint {
            mut point,
            candidate,
            distance,
        } in points
        {
            point.normal = normal;
            point.score = verdict.unwrap_or(0.0);
            let mut joins = false;
            if normal && candidate {
                if distance.is_finite() {
                    reference.distances.observe(
                        time,
                        f64::from(distance),
                        &BaselineConfig::default(),
                    );
                }
                if reference.stored < cap {
                    reference.stored += 1;
                    joins = true;
                }
            }
            if joins {
                if private {
                    reference.own.push(SavedPoint {
                        id: point.id.reference_copy().0,
                        timestamp: point.timestamp,
                        vector: point.vector.clone(),
                    });
                }
                let copy = Point {
                    id: point.id.reference_copy(),
                    ..point.clone()
                };
                admitted.push(PointEntry::reference(copy));
            }
            if keep_all {
                finished.push(PointEntry::event(point));
            }
        }
        if !admitted.is_empty() {
            reference.memo.clear();
            if keep_all {
                finished.extend(admitted.iter().cloned());
            }
            self.store.write_reference(time, admitted);
        }
        if let Some(outbox) = &self.outbox {
            outbox.extend(finished);
        }
    }

    fn close(
        &mut self,
        start: UnixNanos,
        services: HashMap<(String, String), ServiceWindow>,
        phase: Phase,
        out: &mut Findings,
    ) {
        for (key, window) in services {
            let reference = self.services.get(&key);
            // The window's anomaly score when it was judged anomalous.
            let mut verdict = None;
            if phase == Phase::Detecting && window.far >= 3 {
                let samples = reference.map_or(0, |r| r.stored);
                let p0 = (1.0 - self.config.quantile).max(2.0 / (samples as f64 + 1.0));
                let expected = window.events as f64 * p0;
                let surprise = poisson_surprise(window.far, expected);
                let levels = &self.detect.surprise_levels;
                if let Some(severity) = levels
                    .severity(surprise)
                    .filter(|s| *s <= self.detect.min_severity)
                {
                    let score = levels.score(surprise);
                    verdict = Some(score as f32);
                    let signal = culprit_core::SignalFamily::KnnDistance.on(self.source);
                    out.anomalies.push(culprit_core::Anomaly {
                        id: anomaly_id(
                            &[self.source.as_str(), &key.1, &key.0, signal.as_str()],
                            start,
                        ),
                        time: start,
                        source: self.source,
                        service: key.1.clone(),
                        environment: key.0.clone(),
                        instance: None,
                        signal,
                        description: format!(
                            "{} of {} {} events lie farther from their normal neighbours than 99% of normal ones (expected {:.1})",
                            window.far, window.events, self.source, expected
                        ),
                        severity,
                        score,
                        observed: Some(window.far as f64),
                        expected: Some(expected),
                    });
                }
            }
            self.finish_points(&key, window.points, verdict, start);
        }
    }
}

impl Detector for KnnDetector {
    fn sources(&self) -> &'static [SourceKind] {
        match self.source {
            SourceKind::Traces => &[SourceKind::Traces],
            SourceKind::Logs => &[SourceKind::Logs],
            SourceKind::Metrics => &[SourceKind::Metrics],
            SourceKind::Changes => &[SourceKind::Changes],
        }
    }

    fn observe(&mut self, event: &Event, phase: Phase, _out: &mut Findings) {
        let row = featurize(event, &mut self.features);
        let Ok(embeddings) = self.embedder.embed(std::slice::from_ref(&row)) else {
            return;
        };
        if embeddings.is_empty() {
            return;
        }
        let vector = embeddings.row(0);
        let key = (
            event.resource.environment.clone(),
            event.resource.service.clone(),
        );
        let cap = self.config.reference_per_service.max(1) as u64;
        let (source, store) = (self.source, &mut self.store);
        let reference = self.services.entry(key.clone()).or_insert_with(|| {
            // First sight of the service: adopt what the store already holds for it.
            let filter = reference_filter(source, &key.0, &key.1);
            let stored = store.count(event.time, &filter);
            ServiceReference::new(filter, stored as usize)
        });
        if reference.recount {
            // Restored with a shared store: the reference is what the store holds now.
            let stored = store.count(event.time, &reference.filter) as usize;
            reference.adopted |= stored != reference.stored;
            reference.stored = stored;
            reference.recount = false;
        }
        reference.observed += 1;
        // Only every stride-th event can still join a full reference: build points for those.
        let stride = (reference.observed / cap).max(1);
        let candidate = reference.observed % stride == 0
            && ((reference.stored as u64) < cap || reference.learning_distances(&self.config));
        let threshold = reference.threshold(event.time, &self.config);
        let judged = phase == Phase::Detecting && threshold.is_some();
        let distance = if judged || candidate {
            self.memoised_distance(vector, &key, event.time)
        } else {
            None
        };
        let point = (candidate || self.outbox.is_some()).then(|| Point {
            id: PointId::of_event(event),
            vector: vector.to_vec(),
            source: self.source,
            service: key.1.clone(),
            environment: key.0.clone(),
            timestamp: event.time,
            score: 0.0,
            normal: true,
        });
        let window = self.windows.at(event.time).entry(key).or_default();
        window.events += 1;
        if let (Some(d), Some(t), true) = (distance, threshold, judged) {
            if is_far(d, t) {
                window.far += 1;
            }
        }
        if let Some(point) = point {
            window.points.push(WindowPoint {
                point,
                candidate,
                distance: distance.unwrap_or(f32::NAN),
            });
        }
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        for (start, services) in self.windows.close_until(watermark) {
            self.close(start, services, phase, out);
        }
        if !self.store.settled() {
            self.store.retry(watermark);
        }
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        for (start, services) in self.windows.close_all() {
            self.close(start, services, phase, out);
        }
    }

    fn share_templates(&mut self, templates: &culprit_detect::LogTemplates) {
        // The lines arrive mined; the featuriser reads their template texts from these miners.
        self.features.share_templates(templates);
    }

    fn state_name(&self) -> Option<String> {
        Some(format!("knn_{}", self.source.as_str()))
    }

    fn save_state(&self) -> Option<culprit_detect::state::SavedState> {
        let mut services: Vec<ServiceState> = self
            .services
            .iter()
            .map(|((environment, service), r)| ServiceState {
                environment: environment.clone(),
                service: service.clone(),
                stored: r.stored,
                adopted: r.adopted,
                observed: r.observed,
                distances: r.distances.clone(),
                points: self.private.then(|| r.own.clone()),
            })
            .collect();
        services.sort_by(|a, b| (&a.environment, &a.service).cmp(&(&b.environment, &b.service)));
        versioned(
            KnnState::VERSION,
            &KnnState {
                features: self.features.memory(),
                services,
            },
        )
    }

    fn restore_state(&mut self, state: &culprit_detect::state::RawValue) -> Result<(), StateError> {
        let state: KnnState = unversioned(state, KnnState::VERSION)?;
        self.features.restore(state.features);
        if self.private {
            // A private store holds nothing but the reference: start it again from the points.
            self.store = StoreAccess::new(Arc::new(EmbeddedStore::in_memory()));
        }
        self.services.clear();
        for saved in state.services {
            let filter = reference_filter(self.source, &saved.environment, &saved.service);
            let mut reference = ServiceReference::new(filter, saved.stored);
            reference.adopted = saved.adopted;
            reference.observed = saved.observed;
            reference.distances = saved.distances;
            if self.private {
                // Written as they were admitted, so the store holds the same rows in the same
                // order and answers every search as before.
                let points = saved.points.unwrap_or_default();
                reference.stored = points.len();
                reference.adopted = saved.adopted && !points.is_empty();
                let entries = points
                    .iter()
                    .map(|p| {
                        PointEntry::reference(Point {
                            id: PointId(p.id),
                            vector: p.vector.clone(),
                            source: self.source,
                            service: saved.service.clone(),
                            environment: saved.environment.clone(),
                            timestamp: p.timestamp,
                            score: 0.0,
                            normal: true,
                        })
                    })
                    .collect::<Vec<_>>();
                if !entries.is_empty() {
                    // No event time yet; the earliest lets a failed write be retried at once.
                    self.store.write_reference(UnixNanos::MIN, entries);
                }
                reference.own = points;
            } else {
                reference.recount = true;
            }
            self.services
                .insert((saved.environment, saved.service), reference);
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::NANOS_PER_SEC;
    use culprit_core::{EventBody, Resource, SpanEvent};
    use culprit_detect::Detectors;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn span(t: i64, i: i64, service: &str, op: &str, ms: f64) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Span(SpanEvent {
                trace_id: format!("{i:032x}"),
                span_id: format!("{i:016x}"),
                parent_span_id: None,
                name: op.into(),
                kind: "server".into(),
                duration_ns: (ms * 1e6) as i64,
                is_error: false,
                error_type: None,
                attributes: BTreeMap::new(),
            }),
        }
    }

    /// 10 spans a second of two operations with jittered durations; `slow` multiplies cart's.
    fn traffic(
        d: &mut KnnDetector,
        from_s: i64,
        secs: i64,
        slow: f64,
        phase: Phase,
        out: &mut Findings,
    ) {
        for i in 0..secs * 10 {
            let t = from_s * NANOS_PER_SEC + i * NANOS_PER_SEC / 10;
            let jitter = 1.0 + ((i * 7919) % 11) as f64 / 20.0;
            let (op, ms) = if i % 2 == 0 {
                ("GET /cart", 20.0 * slow)
            } else {
                ("POST /cart", 35.0)
            };
            d.observe(
                &span(t, from_s * 1000 + i, "cart", op, ms * jitter),
                phase,
                out,
            );
            d.advance(t, phase, out);
        }
    }

    #[test]
    fn events_far_from_their_normal_neighbours_raise_an_anomaly_and_normal_ones_do_not() {
        let mut d = KnnDetector::new(
            SourceKind::Traces,
            KnnConfig::default(),
            SharedConfig::default(),
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 1.0, Phase::Learning, &mut out);
        let mut normal = Findings::default();
        traffic(&mut d, 120, 60, 1.0, Phase::Detecting, &mut normal);
        assert!(normal.anomalies.is_empty(), "{:?}", normal.anomalies);
        let mut slow = Findings::default();
        traffic(&mut d, 180, 30, 50.0, Phase::Detecting, &mut slow);
        let found: Vec<_> = slow
            .anomalies
            .iter()
            .filter(|a| a.signal == "knn.distance:traces" && a.service == "cart")
            .collect();
        assert!(!found.is_empty(), "{:?}", slow.anomalies);
        assert!(found[0].observed.unwrap() > found[0].expected.unwrap() * 3.0);
    }

    #[test]
    fn a_memoised_distance_is_what_a_fresh_scan_returns_even_after_the_reference_grows() {
        let mut d = KnnDetector::new(
            SourceKind::Traces,
            KnnConfig::default(),
            SharedConfig::default(),
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 20, 1.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let probe = span(1_000 * NANOS_PER_SEC, 99, "cart", "GET /cart", 400.0);
        let row = featurize(&probe, &mut d.features);
        let vector = d
            .embedder
            .embed(std::slice::from_ref(&row))
            .unwrap()
            .row(0)
            .to_vec();
        let key = ("default".to_string(), "cart".to_string());
        let before = d.memoised_distance(&vector, &key, 0);
        assert!(before.is_some());
        assert_eq!(d.memoised_distance(&vector, &key, 0), before);
        // Slower traffic joins the reference: the probe now has closer neighbours.
        traffic(&mut d, 20, 60, 8.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let after = d.memoised_distance(&vector, &key, 0);
        let filter = d.services[&key].filter.clone();
        assert_eq!(Ok(after), d.store.distance(0, &vector, &filter, 5));
        assert!(after.unwrap() < before.unwrap(), "{after:?} vs {before:?}");
    }

    #[test]
    fn the_cached_threshold_follows_new_normal_distances() {
        let config = KnnConfig::default();
        let mut reference = ServiceReference::new(Filter::default(), config.min_reference);
        let t = 1_700_000_000 * NANOS_PER_SEC;
        for i in 0..100 {
            reference.distances.observe(
                t,
                0.1 + f64::from(i % 10) * 0.001,
                &BaselineConfig::default(),
            );
        }
        let before = reference.threshold(t, &config).unwrap();
        assert_eq!(
            reference.threshold(t + NANOS_PER_SEC, &config),
            Some(before)
        );
        for _ in 0..100 {
            reference
                .distances
                .observe(t, 0.5, &BaselineConfig::default());
        }
        let after = reference.threshold(t + NANOS_PER_SEC, &config).unwrap();
        assert!(after > before, "{after} vs {before}");
    }

    #[test]
    fn the_reference_stays_within_its_cap() {
        let config = KnnConfig {
            reference_per_service: 50,
            ..KnnConfig::default()
        };
        let store = Arc::new(EmbeddedStore::in_memory());
        let mut d = KnnDetector::with_store(
            SourceKind::Traces,
            config,
            SharedConfig::default(),
            store.clone(),
            None,
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 1.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let stored = pollster::block_on(store.count(&Filter::default())).unwrap();
        assert_eq!(stored, 50);
    }

    /// A store that fails every call while `down` is set.
    struct FlakyStore {
        inner: EmbeddedStore,
        down: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicU64,
    }

    impl FlakyStore {
        fn check(&self) -> Result<(), culprit_store::StoreError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(culprit_store::StoreError::Backend {
                    backend: "test",
                    op: "any",
                    message: "down".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl VectorStore for FlakyStore {
        async fn upsert_entries(
            &self,
            entries: Vec<PointEntry>,
        ) -> Result<(), culprit_store::StoreError> {
            self.check()?;
            self.inner.upsert_entries(entries).await
        }
        async fn search(
            &self,
            query: &[f32],
            filter: &Filter,
            k: usize,
        ) -> Result<Vec<culprit_store::Neighbour>, culprit_store::StoreError> {
            self.check()?;
            self.inner.search(query, filter, k).await
        }
        async fn delete_matching(&self, filter: &Filter) -> Result<u64, culprit_store::StoreError> {
            self.check()?;
            self.inner.delete_matching(filter).await
        }
        async fn count(&self, filter: &Filter) -> Result<u64, culprit_store::StoreError> {
            self.check()?;
            self.inner.count(filter).await
        }
        async fn flush(&self) -> Result<(), culprit_store::StoreError> {
            self.check()
        }
        async fn health(&self) -> Result<(), culprit_store::StoreError> {
            self.check()
        }
    }

    fn reference_count(store: &dyn VectorStore) -> u64 {
        pollster::block_on(store.count(&Filter::all().reference_only())).unwrap()
    }

    #[test]
    fn every_event_leaves_one_point_with_its_windows_verdict_and_reference_points_are_marked() {
        let store = Arc::new(EmbeddedStore::in_memory());
        let outbox = PointOutbox::new();
        let mut d = KnnDetector::with_store(
            SourceKind::Traces,
            KnnConfig::default(),
            SharedConfig::default(),
            store.clone(),
            Some(outbox.clone()),
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 1.0, Phase::Learning, &mut out);
        traffic(&mut d, 120, 60, 1.0, Phase::Detecting, &mut out);
        traffic(&mut d, 180, 30, 50.0, Phase::Detecting, &mut out);
        d.flush(Phase::Detecting, &mut out);
        let anomalous: Vec<i64> = out
            .anomalies
            .iter()
            .filter(|a| a.signal == "knn.distance:traces")
            .map(|a| a.time)
            .collect();
        assert!(!anomalous.is_empty(), "the slow traffic is found");
        let entries = outbox.take();
        assert!(outbox.is_empty());
        let (references, points): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.reference);
        assert_eq!(points.len(), 210 * 10, "one point per event");
        let window = SharedConfig::default().window_nanos();
        for entry in &points {
            let p = &entry.point;
            let start = p.timestamp.div_euclid(window) * window;
            let judged_anomalous = anomalous.contains(&start);
            assert_eq!(p.normal, !judged_anomalous, "verdict of {}", p.id);
            if judged_anomalous {
                assert!(p.score > 0.0);
            } else {
                assert_eq!(p.score, 0.0);
            }
        }
        // Ids are the events' own: the first span of the run.
        let first = span(0, 0, "cart", "GET /cart", 20.0);
        assert!(points
            .iter()
            .any(|e| e.point.id == PointId::of_event(&first)));
        // The reference copies handed out are the ones the detector searches, each a copy of a
        // point of a normal window.
        let marked = references.len() as u64;
        assert!(marked >= 30);
        for copy in &references {
            let event = points
                .iter()
                .find(|e| e.point.id.reference_copy() == copy.point.id)
                .expect("a reference point copies an event's point");
            assert!(event.point.normal && copy.point.normal);
            assert_eq!(event.point.vector, copy.point.vector);
        }
        assert_eq!(reference_count(&*store), marked);
        assert_eq!(
            pollster::block_on(store.count(&Filter::all())).unwrap(),
            marked,
            "the detector writes its reference only; the rest is the caller's to write"
        );
    }

    #[test]
    fn a_search_ignores_event_points_that_are_not_in_the_reference() {
        let store = Arc::new(EmbeddedStore::in_memory());
        let mut d = KnnDetector::with_store(
            SourceKind::Traces,
            KnnConfig::default(),
            SharedConfig::default(),
            store.clone(),
            None,
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 60, 1.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let probe = span(1_000 * NANOS_PER_SEC, 99, "cart", "GET /cart", 400.0);
        let row = featurize(&probe, &mut d.features);
        let vector = d
            .embedder
            .embed(std::slice::from_ref(&row))
            .unwrap()
            .row(0)
            .to_vec();
        let key = ("default".to_string(), "cart".to_string());
        let before = d.memoised_distance(&vector, &key, 0).unwrap();
        assert!(before > 0.0);
        // The probe's own point, written as an event point, must not become its neighbour.
        let mut point = Point {
            id: PointId(7),
            vector: vector.clone(),
            source: SourceKind::Traces,
            service: "cart".into(),
            environment: "default".into(),
            timestamp: 0,
            score: 0.0,
            normal: true,
        };
        pollster::block_on(store.upsert(vec![point.clone()])).unwrap();
        let filter = d.services[&key].filter.clone();
        assert_eq!(d.store.distance(0, &vector, &filter, 5), Ok(Some(before)));
        point.id = PointId(8);
        pollster::block_on(store.upsert_entries(vec![PointEntry::reference(point)])).unwrap();
        let with_it = d.store.distance(0, &vector, &filter, 5).unwrap().unwrap();
        assert!(with_it < before, "{with_it} vs {before}");
    }

    #[test]
    fn a_restarted_detector_adopts_the_stored_reference_and_learns_its_distances_again() {
        let config = KnnConfig {
            reference_per_service: 200,
            ..KnnConfig::default()
        };
        let store = Arc::new(EmbeddedStore::in_memory());
        let detector = || {
            KnnDetector::with_store(
                SourceKind::Traces,
                config.clone(),
                SharedConfig::default(),
                store.clone(),
                None,
            )
        };
        let mut first = detector();
        let mut out = Findings::default();
        traffic(&mut first, 0, 180, 1.0, Phase::Learning, &mut out);
        first.flush(Phase::Learning, &mut out);
        assert_eq!(reference_count(&*store), 200);
        drop(first);

        let mut second = detector();
        traffic(&mut second, 200, 120, 1.0, Phase::Learning, &mut out);
        assert_eq!(
            reference_count(&*store),
            200,
            "the cap holds across restarts"
        );
        let key = ("default".to_string(), "cart".to_string());
        assert!(second.services[&key].distances.seen() >= 30);
        let mut normal = Findings::default();
        traffic(&mut second, 320, 60, 1.0, Phase::Detecting, &mut normal);
        assert!(normal.anomalies.is_empty(), "{:?}", normal.anomalies);
        let mut slow = Findings::default();
        traffic(&mut second, 380, 30, 50.0, Phase::Detecting, &mut slow);
        assert!(
            slow.anomalies
                .iter()
                .any(|a| a.signal == "knn.distance:traces"),
            "{:?}",
            slow.anomalies
        );
    }

    #[test]
    fn a_failing_store_costs_distances_not_a_crash_and_its_reference_is_written_once_it_returns() {
        let store = Arc::new(FlakyStore {
            inner: EmbeddedStore::in_memory(),
            down: std::sync::atomic::AtomicBool::new(true),
            calls: std::sync::atomic::AtomicU64::new(0),
        });
        // Room in the reference after the outage, so its distances are learned then.
        let config = KnnConfig {
            reference_per_service: 5000,
            ..KnnConfig::default()
        };
        let mut d = KnnDetector::with_store(
            SourceKind::Traces,
            config,
            SharedConfig::default(),
            store.clone(),
            None,
        );
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 1.0, Phase::Learning, &mut out);
        let calls = store.calls.load(std::sync::atomic::Ordering::Relaxed);
        // 1,200 events over 120 s: the backoff keeps the store calls to a handful.
        assert!(calls <= 120 / 30 + 2, "{calls} calls");
        assert!(!d.store.settled(), "admitted points wait for the store");
        let key = ("default".to_string(), "cart".to_string());
        let stored = d.services[&key].stored as u64;
        assert!(stored > 0);
        store
            .down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        traffic(&mut d, 120, 40, 1.0, Phase::Learning, &mut out);
        assert!(d.store.settled());
        assert_eq!(
            reference_count(&store.inner),
            d.services[&key].stored as u64
        );
        let mut slow = Findings::default();
        traffic(&mut d, 160, 60, 1.0, Phase::Detecting, &mut slow);
        traffic(&mut d, 220, 30, 50.0, Phase::Detecting, &mut slow);
        assert!(slow
            .anomalies
            .iter()
            .any(|a| a.signal == "knn.distance:traces"));
    }

    /// The anomalies of a restored detector, of the detector it was saved from and of a fresh
    /// one, on the same next events: 30 s of slow cart traffic, then 30 s of normal traffic.
    fn next_verdicts(
        original: &mut KnnDetector,
        restored: &mut KnnDetector,
        fresh: &mut KnnDetector,
    ) -> [Vec<culprit_core::Anomaly>; 3] {
        [original, restored, fresh].map(|d| {
            let mut out = Findings::default();
            traffic(d, 1_000, 30, 50.0, Phase::Detecting, &mut out);
            traffic(d, 1_030, 30, 1.0, Phase::Detecting, &mut out);
            d.flush(Phase::Detecting, &mut out);
            out.anomalies
        })
    }

    /// Runs [`next_verdicts`] and checks that the restored detector judges as the original
    /// did, which found the slow traffic, and the fresh one does not (`why`).
    fn assert_restored_judges_as_the_original(
        original: &mut KnnDetector,
        restored: &mut KnnDetector,
        fresh: &mut KnnDetector,
        why: &str,
    ) {
        let [after_original, after_restored, after_fresh] =
            next_verdicts(original, restored, fresh);
        assert!(
            after_original
                .iter()
                .any(|a| a.signal == "knn.distance:traces"),
            "{after_original:?}"
        );
        assert_eq!(after_restored, after_original);
        assert_ne!(after_fresh, after_original, "{why}");
    }

    /// The detector's state through JSON text, as a snapshot file holds it.
    fn through_text(d: &KnnDetector) -> culprit_detect::state::SavedState {
        let text = serde_json::to_string(&d.save_state().expect("a k-NN detector saves")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_restored_detector_without_a_store_judges_the_next_events_as_the_one_it_was_saved_from() {
        let config = KnnConfig {
            reference_per_service: 300,
            ..KnnConfig::default()
        };
        let make = || KnnDetector::new(SourceKind::Traces, config.clone(), SharedConfig::default());
        let mut original = make();
        let mut out = Findings::default();
        // Past the cap, so points are admitted ever more sparsely.
        traffic(&mut original, 0, 120, 1.0, Phase::Learning, &mut out);
        original.flush(Phase::Learning, &mut out);
        let state = through_text(&original);
        assert_eq!(original.state_name().as_deref(), Some("knn_traces"));

        let mut restored = make();
        restored.restore_state(&state).unwrap();
        let key = ("default".to_string(), "cart".to_string());
        assert_eq!(restored.services[&key].stored, 300);
        assert_eq!(
            reference_count(restored_store(&restored)),
            300,
            "the private reference comes back with the state"
        );
        let mut fresh = make();
        assert_restored_judges_as_the_original(
            &mut original,
            &mut restored,
            &mut fresh,
            "without the state the verdicts differ, or the test proves nothing",
        );
    }

    /// The store a detector searches, for tests of detectors made by [`KnnDetector::new`].
    fn restored_store(d: &KnnDetector) -> &dyn VectorStore {
        d.store.inner()
    }

    #[test]
    fn a_restored_detector_with_a_store_adopts_its_reference_and_keeps_its_calibration() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let store = Arc::new(EmbeddedStore::open(path("original")).unwrap());
        let make = |store: Arc<EmbeddedStore>| {
            KnnDetector::with_store(
                SourceKind::Traces,
                KnnConfig::default(),
                SharedConfig::default(),
                store,
                None,
            )
        };
        let mut original = make(store.clone());
        let mut out = Findings::default();
        traffic(&mut original, 0, 120, 1.0, Phase::Learning, &mut out);
        original.flush(Phase::Learning, &mut out);
        let state = through_text(&original);
        let parsed: serde_json::Value = serde_json::from_str(state.get()).unwrap();
        assert!(
            parsed["state"]["services"][0]["points"].is_null(),
            "the reference is the store's, not the snapshot's"
        );
        // The restored and the fresh detector each get a copy of the store as it was saved.
        pollster::block_on(store.flush()).unwrap();
        let copy = |name: &str| {
            for suffix in ["", ".wal"] {
                let from = dir.path().join(format!("original{suffix}"));
                if from.exists() {
                    std::fs::copy(from, dir.path().join(format!("{name}{suffix}"))).unwrap();
                }
            }
            Arc::new(EmbeddedStore::open(path(name)).unwrap())
        };
        let (restored_copy, fresh_copy) = (copy("restored"), copy("fresh"));
        let held = reference_count(&*store);
        assert!(held >= 30);
        assert_eq!(reference_count(&*restored_copy), held);

        let mut restored = make(restored_copy.clone());
        restored.restore_state(&state).unwrap();
        let mut fresh = make(fresh_copy);
        assert_restored_judges_as_the_original(
            &mut original,
            &mut restored,
            &mut fresh,
            "adopting the reference without the calibration judges differently",
        );
        assert_eq!(reference_count(&*restored_copy), reference_count(&*store));
    }

    #[test]
    fn a_state_of_another_format_version_is_refused_and_the_detector_stays_fresh() {
        let make = || {
            KnnDetector::new(
                SourceKind::Traces,
                KnnConfig::default(),
                SharedConfig::default(),
            )
        };
        let mut learned = make();
        let mut out = Findings::default();
        traffic(&mut learned, 0, 120, 1.0, Phase::Learning, &mut out);
        learned.flush(Phase::Learning, &mut out);
        let mut state: serde_json::Value =
            serde_json::from_str(through_text(&learned).get()).unwrap();
        state["version"] = serde_json::json!(KnnState::VERSION + 1);

        let mut refused = make();
        let err = refused
            .restore_state(&serde_json::value::to_raw_value(&state).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, StateError::Version { found, expected }
                if found == KnnState::VERSION + 1 && expected == KnnState::VERSION),
            "{err}"
        );
        assert!(refused.services.is_empty());
        assert_eq!(refused.features.sizes(), (0, 0, 0));
        assert_eq!(reference_count(restored_store(&refused)), 0);
        let (mut fresh, mut unused) = (make(), make());
        let [after_refused, after_fresh, _] = next_verdicts(&mut refused, &mut fresh, &mut unused);
        assert_eq!(after_refused, after_fresh);
    }

    /// 10 log lines a second of `cart`, of two templates; with `failing`, every other line is
    /// an error of a third.
    fn log_traffic(d: &mut Detectors, from_s: i64, secs: i64, failing: bool, out: &mut Findings) {
        let phase = if from_s < 1_000 {
            Phase::Learning
        } else {
            Phase::Detecting
        };
        for i in 0..secs * 10 {
            let t = from_s * NANOS_PER_SEC + i * NANOS_PER_SEC / 10;
            let n = from_s * 10 + i;
            let body = if failing && i % 2 == 0 {
                format!(
                    "ERROR payment {n} declined: gateway timeout after {} ms",
                    3000 + n % 7
                )
            } else if n % 3 == 0 {
                format!("WARN cache miss for key user-{}", n % 97)
            } else {
                format!("INFO order {n} placed in {} ms", 20 + n % 13)
            };
            let mut event = Event {
                time: t,
                resource: Arc::new(Resource::new("cart")),
                body: EventBody::Log(culprit_core::LogEvent {
                    level: None,
                    body,
                    trace_id: None,
                    span_id: None,
                    attributes: BTreeMap::new(),
                    template: None,
                }),
            };
            d.observe(&mut event, phase, out);
            d.advance(t, phase, out);
        }
    }

    #[test]
    fn a_restored_log_detector_and_its_stages_miners_judge_the_next_lines_as_before() {
        // The lines are mined by the stage (`Detectors`), which saves the miners beside the
        // detector: the two parts together restore what the featuriser saw.
        let make = || {
            Detectors::new(vec![Box::new(KnnDetector::new(
                SourceKind::Logs,
                KnnConfig::default(),
                SharedConfig::default(),
            ))])
        };
        let mut original = make();
        let mut out = Findings::default();
        log_traffic(&mut original, 0, 120, false, &mut out);
        original.flush(Phase::Learning, &mut out);
        let text = serde_json::to_string(&original.save_state()).unwrap();
        let states: culprit_detect::state::DetectorStates = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = states.keys().map(String::as_str).collect();
        assert_eq!(names, ["knn_logs", Detectors::TEMPLATES_STATE]);
        let knn_logs: serde_json::Value = serde_json::from_str(states["knn_logs"].get()).unwrap();
        assert!(knn_logs["state"]["features"].get("logs").is_none());
        let mut restored = make();
        let report = restored.restore_state(states);
        assert_eq!(report.restored.len(), 2, "{report:?}");
        assert_eq!(restored.templates().services(), 1);
        let mut fresh = make();
        let [after_original, after_restored, after_fresh] =
            [&mut original, &mut restored, &mut fresh].map(|d| {
                let mut out = Findings::default();
                log_traffic(d, 1_000, 30, false, &mut out);
                log_traffic(d, 1_030, 30, true, &mut out);
                d.flush(Phase::Detecting, &mut out);
                out.anomalies
            });
        assert!(
            after_original
                .iter()
                .any(|a| a.signal == "knn.distance:logs" && a.time >= 1_030 * NANOS_PER_SEC),
            "{after_original:?}"
        );
        assert_eq!(after_restored, after_original);
        assert_ne!(after_fresh, after_original);
    }
}
