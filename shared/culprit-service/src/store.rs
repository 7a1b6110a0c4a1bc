//! Where the embedders write every event's embedding: the vector store (embedded file or Qdrant),
//! tagged with source, service, environment and time, under an id derived from the event's
//! identity so that a redelivered event replaces its own point instead of adding one.

use anyhow::{Context, Result};
use async_trait::async_trait;
use culprit_core::{Event, SourceKind};
use culprit_embed::{featurize, FeatureState};
use culprit_store::{EmbeddedStore, Point, PointId, QdrantConfig, QdrantStore, VectorStore};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `none` (embeddings are not kept), `embedded` (one file at `path`) or `qdrant`.
    pub backend: StoreBackend,
    /// File of the embedded store.
    pub path: PathBuf,
    /// Qdrant gRPC endpoint (`http://qdrant:6334`); the API key comes from `QDRANT_API_KEY`.
    pub qdrant_url: String,
    pub qdrant_collection: String,
    pub qdrant_timeout_secs: u64,
    /// Points older than this (event time) are deleted, in hours; 0 keeps everything.
    pub retention_hours: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    None,
    Embedded,
    Qdrant,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::None,
            path: PathBuf::from("culprit-store.bin"),
            qdrant_url: "http://127.0.0.1:6334".into(),
            qdrant_collection: "culprit_events".into(),
            qdrant_timeout_secs: 10,
            retention_hours: 72,
        }
    }
}

/// Opens the configured store, or None for `backend = "none"`.
pub async fn open_store(config: &StoreConfig) -> Result<Option<Arc<dyn VectorStore>>> {
    Ok(match config.backend {
        StoreBackend::None => None,
        StoreBackend::Embedded => Some(Arc::new(
            EmbeddedStore::open(&config.path)
                .with_context(|| format!("opening {}", config.path.display()))?,
        )),
        StoreBackend::Qdrant => {
            let mut q = QdrantConfig::new(&config.qdrant_url, &config.qdrant_collection);
            q.api_key = std::env::var("QDRANT_API_KEY").ok();
            q.timeout = Duration::from_secs(config.qdrant_timeout_secs);
            Some(Arc::new(QdrantStore::connect(q).await.with_context(
                || format!("connecting to Qdrant at {}", config.qdrant_url),
            )?))
        }
    })
}

/// An embedder's event sink: featurize, embed, upsert.
pub struct StoreSink {
    source: SourceKind,
    store: Arc<dyn VectorStore>,
    embedder: Box<dyn culprit_embed::Embedder>,
    features: Mutex<FeatureState>,
    retention: Option<i64>,
}

impl StoreSink {
    pub fn new(
        source: SourceKind,
        store: Arc<dyn VectorStore>,
        knn: &culprit_pipeline::KnnConfig,
        config: &StoreConfig,
    ) -> StoreSink {
        StoreSink {
            source,
            store,
            embedder: culprit_knn::embedder_for(source, knn),
            features: Mutex::new(FeatureState::default()),
            retention: (config.retention_hours > 0)
                .then(|| config.retention_hours as i64 * 3600 * culprit_core::NANOS_PER_SEC),
        }
    }
}

#[async_trait]
impl culprit_kafka::EventSink for StoreSink {
    async fn write(&self, events: &[Event]) -> anyhow::Result<()> {
        let events: Vec<&Event> = events
            .iter()
            .filter(|e| e.source() == self.source)
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = {
            let mut state = self.features.lock().unwrap_or_else(|p| p.into_inner());
            events.iter().map(|e| featurize(e, &mut state)).collect()
        };
        let embeddings = self.embedder.embed(&rows)?;
        let points: Vec<Point> = events
            .iter()
            .zip(embeddings.rows())
            .map(|(e, v)| Point {
                id: PointId::from_identity(&[&culprit_kafka::event_key(e)], e.time),
                vector: v.to_vec(),
                source: self.source,
                service: e.resource.service.clone(),
                environment: e.resource.environment.clone(),
                timestamp: e.time,
                score: 0.0,
                normal: true,
            })
            .collect();
        let newest = points.iter().map(|p| p.timestamp).max();
        self.store.upsert(points).await?;
        if let (Some(keep), Some(newest)) = (self.retention, newest) {
            self.store.delete_older_than(newest - keep).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_kafka::EventSink;
    use culprit_store::Filter;

    #[test]
    fn a_redelivered_batch_replaces_its_points_instead_of_adding_them() {
        let sim = culprit_sim::simulate(
            culprit_sim::Scenario::NewException,
            &culprit_sim::SimConfig {
                normal_minutes: 1,
                fault_minutes: 1,
                ..Default::default()
            },
        );
        let events = culprit_otlp::traces_to_events(&sim.traces[0]).unwrap();
        assert!(!events.is_empty());
        let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory());
        let config = StoreConfig {
            retention_hours: 0,
            ..StoreConfig::default()
        };
        let sink = StoreSink::new(
            SourceKind::Traces,
            store.clone(),
            &Default::default(),
            &config,
        );
        pollster::block_on(sink.write(&events)).unwrap();
        let once = pollster::block_on(store.count(&Filter::default())).unwrap();
        pollster::block_on(sink.write(&events)).unwrap();
        let twice = pollster::block_on(store.count(&Filter::default())).unwrap();
        assert_eq!(once, events.len() as u64);
        assert_eq!(twice, once, "redelivery must not duplicate points");
        let services = pollster::block_on(store.count(&Filter {
            service: Some(events[0].resource.service.clone()),
            ..Filter::default()
        }))
        .unwrap();
        assert!(services > 0, "points are tagged with their service");
    }
}
