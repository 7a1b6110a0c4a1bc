//! Stores tagged event embeddings and answers filtered k-NN queries, behind one trait.
//!
//! Every event becomes a [`Point`]: a [`DIM`]-dimensional vector tagged with its source,
//! service, environment, event time, anomaly score and whether it may serve as a "normal
//! neighbour". Detectors score a new event by its cosine distance to normal neighbours found with
//! [`VectorStore::search`]. Two backends implement [`VectorStore`]:
//!
//! - [`EmbeddedStore`] (always built, the default): exact search over a flat, per-service
//!   partitioned scan, in memory or persisted to a snapshot file and its write-ahead log.
//! - `QdrantStore` (cargo feature `qdrant`, on by default): a Qdrant collection over gRPC.
//!
//! A point is either an event's embedding or, marked as a reference point ([`PointEntry`]), part
//! of the capped sample a k-NN detector scores events against: searches for neighbours filter on
//! that marker ([`Filter::reference_only`]), so they never scan every stored event. Every point
//! can also be selected by the [`hour_of_week`] of its event time.
//!
//! [`SyncStore`] calls a store from synchronous code (the detectors), [`PointWriter`] writes
//! finished points in batches with retention, [`StoreConfig`] opens the configured backend, and
//! [`event_key`] / [`PointId::of_event`] give an event's point its id.
//!
//! A store holds vectors of one dimension: [`DIM`] for event embeddings, another where it is
//! opened with one ([`EmbeddedStore::open_with_dimension`], `QdrantConfig::dimension`), as the
//! incidents collection of evidence profiles is ([`StoreConfig::open_incidents`]).
//!
//! Both validate points the same way (exactly the store's dimension of finite components, not
//! all zero, score in [0, 1]), normalise vectors to unit length, and report cosine distance (`1 - similarity`).
//! Upserts are idempotent by [`PointId`]; time ranges are half-open (`from <= t < to`).
//!
//! ```
//! use culprit_store::{EmbeddedStore, Filter, Point, PointId, VectorStore, DIM};
//! use culprit_core::SourceKind;
//!
//! # tokio_test_block_on(async {
//! let store = EmbeddedStore::in_memory();
//! let mut vector = vec![0.0; DIM];
//! vector[0] = 1.0;
//! store.upsert(vec![Point {
//!     id: PointId::from_identity(&["checkout", "GET /cart"], 1_000),
//!     vector: vector.clone(),
//!     source: SourceKind::Traces,
//!     service: "checkout".into(),
//!     environment: "prod".into(),
//!     timestamp: 1_000,
//!     score: 0.1,
//!     normal: true,
//! }]).await?;
//! let hits = store.search(&vector, &Filter::all().service("checkout").normal_only(), 10).await?;
//! assert_eq!(hits.len(), 1);
//! assert!(hits[0].distance < 1e-6);
//! # Ok::<(), culprit_store::StoreError>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
#![forbid(unsafe_code)]

mod blocking;
mod config;
mod embedded;
mod error;
mod event;
mod persist;
#[cfg(feature = "qdrant")]
mod qdrant;
mod types;
mod wal;
mod writer;

pub use blocking::SyncStore;
pub use config::{StoreBackend, StoreConfig};
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use event::event_key;
pub use persist::FORMAT_VERSION;
#[cfg(feature = "qdrant")]
pub use qdrant::{QdrantConfig, QdrantStore};
pub use types::{
    hour_of_week, normalised_query, validate_point, Filter, Neighbour, Point, PointEntry, PointId,
};
pub use wal::WAL_VERSION;
pub use writer::PointWriter;

use async_trait::async_trait;
use culprit_core::UnixNanos;

/// Dimensions of every event embedding.
pub const DIM: usize = 64;

/// A store of tagged vectors answering filtered k-NN queries.
///
/// Async because remote backends do network I/O; the embedded store never awaits.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Inserts or replaces points by id, as event points (not reference points). The whole
    /// batch is validated first: one bad point rejects the batch with an error naming it.
    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError> {
        self.upsert_entries(points.into_iter().map(PointEntry::event).collect())
            .await
    }

    /// Inserts or replaces points by id, each marked as a reference point or not; a later entry
    /// with the same id replaces the point, marker included. Validated like [`Self::upsert`].
    async fn upsert_entries(&self, entries: Vec<PointEntry>) -> Result<(), StoreError>;

    /// The `k` points nearest to `query` (cosine distance) among those `filter` admits, nearest
    /// first.
    async fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Neighbour>, StoreError>;

    /// Removes every point with `timestamp < timestamp`; returns how many were removed.
    async fn delete_older_than(&self, timestamp: UnixNanos) -> Result<u64, StoreError> {
        self.delete_matching(&Filter {
            time_to: Some(timestamp),
            ..Filter::default()
        })
        .await
    }

    /// Removes every point `filter` admits; returns how many were removed.
    async fn delete_matching(&self, filter: &Filter) -> Result<u64, StoreError>;

    /// How many points `filter` admits.
    async fn count(&self, filter: &Filter) -> Result<u64, StoreError>;

    /// Makes every acknowledged write durable. Called after every batch of points before the
    /// Kafka offsets covering it are committed, so it must be cheap: one log sync (embedded), a
    /// no-op where writes already wait for the server (Qdrant).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Ok when the store can serve requests.
    async fn health(&self) -> Result<(), StoreError>;
}
