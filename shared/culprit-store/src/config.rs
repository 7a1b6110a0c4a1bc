//! The `[store]` section of the configuration and opening the store it names.

use crate::{EmbeddedStore, StoreError, VectorStore, DIM};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where event embeddings are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `none` (embeddings are not kept), `embedded` (one file at `path`) or `qdrant`.
    pub backend: StoreBackend,
    /// Snapshot file of the embedded store; its write-ahead log is `<path>.wal` beside it.
    pub path: PathBuf,
    /// Qdrant gRPC endpoint (`http://qdrant:6334`); the API key comes from `QDRANT_API_KEY`.
    pub qdrant_url: String,
    pub qdrant_collection: String,
    /// The collection of closed incidents' evidence profiles, with their confirmed causes: a
    /// Qdrant collection of this name, or the embedded file `<name>.bin` beside `path`.
    pub incidents_collection: String,
    pub qdrant_timeout_secs: u64,
    /// Event points older than this (event time) behind the newest time 16 written points
    /// reached, capped at the wall clock, are deleted, in hours; 0 keeps everything. Reference
    /// points are kept.
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
            incidents_collection: "culprit_incidents".into(),
            qdrant_timeout_secs: 10,
            retention_hours: 72,
        }
    }
}

impl StoreConfig {
    /// `retention_hours` in nanoseconds, or None to keep everything.
    pub fn retention_nanos(&self) -> Option<i64> {
        (self.retention_hours > 0).then(|| {
            (self.retention_hours as i64).saturating_mul(3600 * culprit_core::NANOS_PER_SEC)
        })
    }

    /// Opens the configured store of event embeddings, or None for `backend = "none"`.
    pub async fn open(&self) -> Result<Option<Arc<dyn VectorStore>>, StoreError> {
        self.open_collection(&self.path, &self.qdrant_collection, DIM)
            .await
    }

    /// Opens the incidents collection (`incidents_collection`) of `dimension`-component
    /// profiles in the configured backend, or None for `backend = "none"`.
    pub async fn open_incidents(
        &self,
        dimension: usize,
    ) -> Result<Option<Arc<dyn VectorStore>>, StoreError> {
        let file = format!("{}.bin", self.incidents_collection);
        self.open_collection(
            &self.path.with_file_name(file),
            &self.incidents_collection,
            dimension,
        )
        .await
    }

    async fn open_collection(
        &self,
        path: &Path,
        collection: &str,
        dimension: usize,
    ) -> Result<Option<Arc<dyn VectorStore>>, StoreError> {
        Ok(match self.backend {
            StoreBackend::None => None,
            StoreBackend::Embedded => Some(Arc::new(EmbeddedStore::open_with_dimension(
                path, dimension,
            )?)),
            StoreBackend::Qdrant => Some(self.open_qdrant(collection, dimension).await?),
        })
    }

    #[cfg(feature = "qdrant")]
    async fn open_qdrant(
        &self,
        collection: &str,
        dimension: usize,
    ) -> Result<Arc<dyn VectorStore>, StoreError> {
        let mut q = crate::QdrantConfig::new(&self.qdrant_url, collection);
        q.dimension = dimension;
        q.api_key = std::env::var("QDRANT_API_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        q.timeout = std::time::Duration::from_secs(self.qdrant_timeout_secs);
        Ok(Arc::new(crate::QdrantStore::connect(q).await?))
    }

    #[cfg(not(feature = "qdrant"))]
    async fn open_qdrant(&self, _: &str, _: usize) -> Result<Arc<dyn VectorStore>, StoreError> {
        Err(StoreError::Backend {
            backend: "qdrant",
            op: "connect",
            message: "this build has no Qdrant backend (cargo feature `qdrant`)".into(),
        })
    }
}
