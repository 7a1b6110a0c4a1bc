//! k-NN anomaly scoring: every event is featurized and embedded (`culprit-embed`), and judged by
//! its distance to the nearest *normal* embeddings of the same source and service, kept in a
//! vector store (`culprit-store`'s embedded store).
//!
//! Per service, the distances of newly admitted normal points to their own neighbours form a
//! baseline of "how far a normal event lies"; an event beyond its p99 is far. Like the span
//! detector, a window is judged by how many far events it holds against the number expected
//! (Poisson), so one odd event is not an incident, and only windows judged normal add their
//! points to the reference. Memory stays bounded: each service keeps at most
//! `reference_per_service` reference points, admitted ever more sparsely as it fills (1,000 by default: each judged event is compared with all of them).
//!
//! The detector plugs into the pipeline beside the statistical ones through
//! [`culprit_detect::Detector`]; which of them run is the pipeline's `detector` mode.
#![forbid(unsafe_code)]

use culprit_core::{Event, SourceKind, UnixNanos};
use culprit_detect::baseline::{hour_buckets, Baseline, BaselineConfig};
use culprit_detect::stats::poisson_surprise;
use culprit_detect::window::Windows;
use culprit_detect::{anomaly_id, DetectConfig, Detector, Findings, Phase};
use culprit_embed::{
    featurize, CachedEmbedder, Embedder, FeatureState, HashingEmbedder, LeanModel,
};
use culprit_store::{EmbeddedStore, Filter, Point, PointId, VectorStore, DIM};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// Settings of the k-NN detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Neighbours an event's distance is averaged over.
    pub k: usize,
    /// Reference points kept per (source, service).
    pub reference_per_service: usize,
    /// Reference points a service needs before its events are judged.
    pub min_reference: usize,
    /// Quantile of the normal distance distribution beyond which an event is far.
    pub quantile: f64,
    /// Folder with one trained model per source (`<dir>/<source>/model.json`), from
    /// `culprit train`; sources without one use the deterministic hashing embedding.
    pub model_dir: Option<PathBuf>,
    /// Embeddings cached per source (identical feature rows repeat a lot).
    pub cache_rows: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 5,
            reference_per_service: 1000,
            min_reference: 30,
            quantile: 0.99,
            model_dir: None,
            cache_rows: 65_536,
        }
    }
}

/// The embedder for `source`: the trained model in `config.model_dir` when there is one, else the
/// hashing embedding; cached either way.
pub fn embedder_for(source: SourceKind, config: &KnnConfig) -> Box<dyn Embedder> {
    if let Some(dir) = &config.model_dir {
        let path = dir.join(source.as_str());
        if path.join("model.json").is_file() {
            match LeanModel::load(&path) {
                Ok(model) => return Box::new(CachedEmbedder::new(model, config.cache_rows)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot load the model, using the hashing embedding: {e}")
                }
            }
        }
    }
    Box::new(CachedEmbedder::new(
        HashingEmbedder::new(source),
        config.cache_rows,
    ))
}

#[derive(Debug, Default)]
struct ServiceWindow {
    events: u64,
    far: u64,
    /// (point, distance) of every event, admitted to the reference if the window is normal.
    points: Vec<(Point, f32)>,
}

#[derive(Debug, Default)]
struct ServiceReference {
    stored: usize,
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
}

impl ServiceReference {
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
}

/// Memoised distances kept per service before the memo starts over.
const MEMO_ENTRIES: usize = 4096;

/// k-NN detector of one source.
pub struct KnnDetector {
    source: SourceKind,
    config: KnnConfig,
    detect: DetectConfig,
    features: FeatureState,
    embedder: Box<dyn Embedder>,
    /// Reference points per environment: a search then touches one (source, service) partition
    /// with no per-point environment comparison.
    stores: HashMap<String, EmbeddedStore>,
    services: HashMap<(String, String), ServiceReference>,
    windows: Windows<HashMap<(String, String), ServiceWindow>>,
    sequence: u64,
}

impl KnnDetector {
    pub fn new(source: SourceKind, config: KnnConfig, detect: DetectConfig) -> KnnDetector {
        let windows = Windows::new(detect.window_nanos(), detect.lateness_nanos());
        KnnDetector {
            source,
            embedder: embedder_for(source, &config),
            config,
            detect,
            features: FeatureState::default(),
            stores: HashMap::new(),
            services: HashMap::new(),
            windows,
            sequence: 0,
        }
    }

    /// k-NN detectors of the sources that have numeric behaviour to embed.
    pub fn all(config: &KnnConfig, detect: &DetectConfig) -> Vec<Box<dyn Detector>> {
        [SourceKind::Traces, SourceKind::Logs, SourceKind::Metrics]
            .into_iter()
            .map(|s| {
                Box::new(KnnDetector::new(s, config.clone(), detect.clone())) as Box<dyn Detector>
            })
            .collect()
    }

    /// Mean distance to the k nearest reference points of the service, if it has enough.
    fn distance(&self, vector: &[f32], environment: &str, service: &str) -> Option<f32> {
        let store = self.stores.get(environment)?;
        let filter = Filter {
            source: Some(self.source),
            service: Some(service.to_string()),
            ..Filter::default()
        };
        let neighbours = pollster::block_on(store.search(vector, &filter, self.config.k)).ok()?;
        if neighbours.is_empty() {
            return None;
        }
        Some(neighbours.iter().map(|n| n.distance).sum::<f32>() / neighbours.len() as f32)
    }

    /// [`Self::distance`], answered from the service's memo when the same embedding was scored
    /// against the same reference before.
    fn memoised_distance(&mut self, vector: &[f32], key: &(String, String)) -> Option<f32> {
        // A fixed-size key: no allocation per event. Other widths are the store's to reject.
        let Ok(bits) = <[f32; DIM]>::try_from(vector).map(|v| v.map(f32::to_bits)) else {
            return self.distance(vector, &key.0, &key.1);
        };
        if let Some(&known) = self.services.get(key).and_then(|r| r.memo.get(&bits)) {
            return known;
        }
        let distance = self.distance(vector, &key.0, &key.1);
        if let Some(reference) = self.services.get_mut(key) {
            if reference.memo.len() >= MEMO_ENTRIES {
                reference.memo.clear();
            }
            reference.memo.insert(bits, distance);
        }
        distance
    }

    /// Admits normal points to the reference, ever more sparsely once a service is full, and
    /// learns how far a normal point lies from its neighbours.
    fn admit(&mut self, key: &(String, String), points: Vec<(Point, f32)>, time: UnixNanos) {
        let cap = self.config.reference_per_service.max(1);
        let reference = self.services.entry(key.clone()).or_default();
        let mut admitted = Vec::new();
        for (point, distance) in points {
            if distance.is_finite() {
                reference
                    .distances
                    .observe(time, f64::from(distance), &BaselineConfig::default());
            }
            if reference.stored < cap {
                reference.stored += 1;
                admitted.push(point);
            }
        }
        if !admitted.is_empty() {
            reference.memo.clear();
            let store = self
                .stores
                .entry(key.0.clone())
                .or_insert_with(EmbeddedStore::in_memory);
            if let Err(e) = pollster::block_on(store.upsert(admitted)) {
                tracing::warn!("reference store rejected points: {e}");
            }
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
            let mut anomalous = false;
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
                    anomalous = true;
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
                        score: levels.score(surprise),
                        observed: Some(window.far as f64),
                        expected: Some(expected),
                    });
                }
            }
            if !anomalous {
                self.admit(&key, window.points, start);
            }
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
        let reference = self.services.entry(key.clone()).or_default();
        reference.observed += 1;
        // Only every stride-th event can still join a full reference: build points for those.
        let stride = (reference.observed / cap).max(1);
        let candidate = reference.stored < cap as usize && reference.observed % stride == 0;
        let threshold = reference.threshold(event.time, &self.config);
        let judged = phase == Phase::Detecting && threshold.is_some();
        let distance = if judged || candidate {
            self.memoised_distance(vector, &key)
        } else {
            None
        };
        let point = candidate.then(|| {
            self.sequence += 1;
            Point {
                id: PointId::from_identity(
                    &[self.source.as_str(), &key.0, &key.1],
                    event.time ^ self.sequence as i64,
                ),
                vector: vector.to_vec(),
                source: self.source,
                service: key.1.clone(),
                environment: key.0.clone(),
                timestamp: event.time,
                score: 0.0,
                normal: true,
            }
        });
        let window = self.windows.at(event.time).entry(key).or_default();
        window.events += 1;
        if let (Some(d), Some(t), true) = (distance, threshold, judged) {
            if f64::from(d) > t {
                window.far += 1;
            }
        }
        if let Some(point) = point {
            window.points.push((point, distance.unwrap_or(f32::NAN)));
        }
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        for (start, services) in self.windows.close_until(watermark) {
            self.close(start, services, phase, out);
        }
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        for (start, services) in self.windows.close_all() {
            self.close(start, services, phase, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::NANOS_PER_SEC;
    use culprit_core::{EventBody, Resource, SpanEvent};
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
            DetectConfig::default(),
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
            DetectConfig::default(),
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
        let before = d.memoised_distance(&vector, &key);
        assert!(before.is_some());
        assert_eq!(d.memoised_distance(&vector, &key), before);
        // Slower traffic joins the reference: the probe now has closer neighbours.
        traffic(&mut d, 20, 60, 8.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let after = d.memoised_distance(&vector, &key);
        assert_eq!(after, d.distance(&vector, &key.0, &key.1));
        assert!(after.unwrap() < before.unwrap(), "{after:?} vs {before:?}");
    }

    #[test]
    fn the_cached_threshold_follows_new_normal_distances() {
        let config = KnnConfig::default();
        let mut reference = ServiceReference {
            stored: config.min_reference,
            ..ServiceReference::default()
        };
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
        let mut d = KnnDetector::new(SourceKind::Traces, config, DetectConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 1.0, Phase::Learning, &mut out);
        d.flush(Phase::Learning, &mut out);
        let stored = pollster::block_on(d.stores["default"].count(&Filter::default())).unwrap();
        assert_eq!(stored, 50);
    }
}
