//! k-NN anomaly scoring: every event is featurized and embedded (`culprit-embed`), and judged by
//! its distance to the nearest *normal* embeddings of the same source and service, kept in a
//! vector store (`culprit-store`'s embedded store).
//!
//! Per service, the distances of newly admitted normal points to their own neighbours form a
//! baseline of "how far a normal event lies"; an event beyond its p99 is far. Like the span
//! detector, a window is judged by how many far events it holds against the number expected
//! (Poisson), so one odd event is not an incident, and only windows judged normal add their
//! points to the reference. Memory stays bounded: each service keeps at most
//! `reference_per_service` reference points, admitted ever more sparsely as it fills.
//!
//! The detector plugs into the pipeline beside the statistical ones through
//! [`culprit_detect::Detector`]; which of them run is the pipeline's `detector` mode.
#![forbid(unsafe_code)]

use culprit_core::{Event, SourceKind, UnixNanos, NANOS_PER_SEC};
use culprit_detect::baseline::{Baseline, BaselineConfig};
use culprit_detect::stats::poisson_surprise;
use culprit_detect::window::Windows;
use culprit_detect::{anomaly_id, DetectConfig, Detector, Findings, Phase};
use culprit_embed::{featurize, CachedEmbedder, Embedder, FeatureState, HashingEmbedder, LeanModel};
use culprit_store::{EmbeddedStore, Filter, Point, PointId, VectorStore};
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
            reference_per_service: 2000,
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
                Err(e) => tracing::warn!(path = %path.display(), "cannot load the model, using the hashing embedding: {e}"),
            }
        }
    }
    Box::new(CachedEmbedder::new(HashingEmbedder::new(source), config.cache_rows))
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
    seen: u64,
    /// Distances of admitted normal points to their neighbours at admission.
    distances: Baseline,
}

/// k-NN detector of one source.
pub struct KnnDetector {
    source: SourceKind,
    config: KnnConfig,
    detect: DetectConfig,
    features: FeatureState,
    embedder: Box<dyn Embedder>,
    store: EmbeddedStore,
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
            store: EmbeddedStore::in_memory(),
            services: HashMap::new(),
            windows,
            sequence: 0,
        }
    }

    /// k-NN detectors of the sources that have numeric behaviour to embed.
    pub fn all(config: &KnnConfig, detect: &DetectConfig) -> Vec<Box<dyn Detector>> {
        [SourceKind::Traces, SourceKind::Logs, SourceKind::Metrics]
            .into_iter()
            .map(|s| Box::new(KnnDetector::new(s, config.clone(), detect.clone())) as Box<dyn Detector>)
            .collect()
    }

    /// Mean distance to the k nearest reference points of the service, if it has enough.
    fn distance(&self, vector: &[f32], environment: &str, service: &str) -> Option<f32> {
        let filter = Filter {
            source: Some(self.source),
            service: Some(service.to_string()),
            environment: Some(environment.to_string()),
            normal_only: true,
            ..Filter::default()
        };
        let neighbours = pollster::block_on(self.store.search(vector, &filter, self.config.k)).ok()?;
        if neighbours.is_empty() {
            return None;
        }
        Some(neighbours.iter().map(|n| n.distance).sum::<f32>() / neighbours.len() as f32)
    }

    /// Admits normal points to the reference, ever more sparsely once a service is full, and
    /// learns how far a normal point lies from its neighbours.
    fn admit(&mut self, key: &(String, String), points: Vec<(Point, f32)>, time: UnixNanos) {
        let cap = self.config.reference_per_service.max(1);
        let reference = self.services.entry(key.clone()).or_default();
        let mut admitted = Vec::new();
        for (point, distance) in points {
            reference.seen += 1;
            if distance.is_finite() {
                reference.distances.observe(time, f64::from(distance), &BaselineConfig::default());
            }
            let stride = (reference.seen / cap as u64).max(1);
            if reference.stored < cap && reference.seen % stride == 0 {
                reference.stored += 1;
                admitted.push(point);
            }
        }
        if !admitted.is_empty() {
            if let Err(e) = pollster::block_on(self.store.upsert(admitted)) {
                tracing::warn!("reference store rejected points: {e}");
            }
        }
    }

    fn close(&mut self, start: UnixNanos, services: HashMap<(String, String), ServiceWindow>, phase: Phase, out: &mut Findings) {
        for (key, window) in services {
            let reference = self.services.get(&key);
            let mut anomalous = false;
            if phase == Phase::Detecting && window.far >= 3 {
                let samples = reference.map_or(0, |r| r.stored);
                let p0 = (1.0 - self.config.quantile).max(2.0 / (samples as f64 + 1.0));
                let expected = window.events as f64 * p0;
                let surprise = poisson_surprise(window.far, expected);
                let levels = &self.detect.surprise_levels;
                if let Some(severity) = levels.severity(surprise).filter(|s| *s <= self.detect.min_severity) {
                    anomalous = true;
                    let signal = format!("knn.distance:{}", self.source);
                    out.anomalies.push(culprit_core::Anomaly {
                        id: anomaly_id(&[self.source.as_str(), &key.1, &key.0, &signal], start),
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
        let Ok(embeddings) = self.embedder.embed(std::slice::from_ref(&row)) else { return };
        if embeddings.is_empty() {
            return;
        }
        let vector = embeddings.row(0).to_vec();
        let key = (event.resource.environment.clone(), event.resource.service.clone());
        self.sequence += 1;
        let distance = self.distance(&vector, &key.0, &key.1);
        let threshold = self.services.get_mut(&key).and_then(|r| {
            if r.stored < self.config.min_reference {
                return None;
            }
            r.distances.profile(event.time, &BaselineConfig::default()).map(|p| p.threshold(self.config.quantile, true))
        });
        let point = Point {
            id: PointId::from_identity(&[self.source.as_str(), &key.0, &key.1, &self.sequence.to_string()], event.time),
            vector,
            source: self.source,
            service: key.1.clone(),
            environment: key.0.clone(),
            timestamp: event.time,
            score: 0.0,
            normal: true,
        };
        let window = self.windows.at(event.time).entry(key).or_default();
        window.events += 1;
        if let (Some(d), Some(t), Phase::Detecting) = (distance, threshold, phase) {
            if f64::from(d) > t {
                window.far += 1;
            }
        }
        window.points.push((point, distance.unwrap_or(f32::NAN)));
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
        // Keep the reference to about the last hour of event time.
        let _ = NANOS_PER_SEC;
    }
}
