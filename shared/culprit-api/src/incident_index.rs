//! The incidents collection: one point per incident with a final answer, its evidence profile
//! ([`IncidentProfile`]) tagged with its environment, start and confirmed cause, searched for the
//! past incidents nearest a new one.
//!
//! It lives in the configured vector store beside the event embeddings (`store.backend`,
//! collection `store.incidents_collection`), or in memory without one. The history stays the
//! record: the collection is filled from it at start when it holds fewer incidents than the
//! history has final answers, and a search's hits are read back from it.

use crate::history::FeedbackRecord;
use crate::profile::{IncidentProfile, DIMENSIONS};
use culprit_core::SourceKind;
use culprit_store::{EmbeddedStore, Filter, Point, PointId, StoreError, SyncStore, VectorStore};
use std::sync::Arc;

/// The store tags every point with a source; an incident spans all of them, so its point
/// carries this one, which no search of the collection filters on.
const INCIDENT_SOURCE: SourceKind = SourceKind::Traces;

/// The incidents collection, through the [`VectorStore`] seam. Cheap to clone.
#[derive(Clone)]
pub struct IncidentIndex {
    store: SyncStore,
}

impl std::fmt::Debug for IncidentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentIndex").finish_non_exhaustive()
    }
}

impl IncidentIndex {
    /// The collection in `store`, whose vectors must have [`DIMENSIONS`] components. Made
    /// inside a multi-thread tokio runtime, a remote store is also usable from threads outside
    /// it (see [`SyncStore`]).
    pub fn new(store: Arc<dyn VectorStore>) -> IncidentIndex {
        IncidentIndex {
            store: SyncStore::new(store),
        }
    }

    /// A collection in this process's memory (no `store.backend`), filled from the history.
    pub fn in_memory() -> IncidentIndex {
        IncidentIndex::new(Arc::new(EmbeddedStore::in_memory_with_dimension(
            DIMENSIONS,
        )))
    }

    /// The point id of an incident: the same in every process, so a later answer replaces it.
    pub fn point_id(incident_id: &str) -> PointId {
        PointId::from_identity(&["incident", incident_id], 0)
    }

    /// The point of a final answer, or None when it has no profile to search by (records from
    /// before profiles, incidents without evidence, profiles of another length).
    fn point(record: &FeedbackRecord) -> Option<Point> {
        let profile = record.profile.as_ref().filter(|p| searchable(p))?;
        Some(Point {
            id: IncidentIndex::point_id(&record.incident_id),
            vector: profile.values().to_vec(),
            source: INCIDENT_SOURCE,
            service: record.cause.to_string(),
            environment: record.environment.clone(),
            timestamp: record.started_at,
            score: 0.0,
            normal: false,
        })
    }

    /// Whether `record` has a point in the collection (else it is matched in memory).
    pub fn indexes(record: &FeedbackRecord) -> bool {
        IncidentIndex::point(record).is_some()
    }

    /// Writes (or replaces) the point of an incident's latest final answer and makes it
    /// durable. Does nothing for a record without a profile.
    pub async fn put(&self, record: &FeedbackRecord) -> Result<(), StoreError> {
        let Some(point) = IncidentIndex::point(record) else {
            return Ok(());
        };
        let store = self.store.store();
        store.upsert(vec![point]).await?;
        store.flush().await
    }

    /// The `k` incidents of `environment` nearest `profile`, nearest first, with their cosine
    /// similarity.
    pub async fn nearest(
        &self,
        profile: &IncidentProfile,
        environment: &str,
        k: usize,
    ) -> Result<Vec<(PointId, f64)>, StoreError> {
        if !searchable(profile) || k == 0 {
            return Ok(Vec::new());
        }
        let filter = Filter::all().environment(environment);
        let hits = self
            .store
            .store()
            .search(profile.values(), &filter, k)
            .await?;
        Ok(hits
            .into_iter()
            .map(|n| (n.id, 1.0 - f64::from(n.distance)))
            .collect())
    }

    /// [`IncidentIndex::nearest`] for synchronous callers (the correlator's `PastIncidents`).
    pub fn nearest_blocking(
        &self,
        profile: &IncidentProfile,
        environment: &str,
        k: usize,
    ) -> Result<Vec<(PointId, f64)>, StoreError> {
        self.store.wait(self.nearest(profile, environment, k))
    }

    /// Writes the points of `answers` (each incident's latest final answer) when the collection
    /// holds fewer points than they make: a new or emptied collection, or writes that failed.
    /// Returns how many points were written. Blocking: called once, at start.
    pub fn fill(&self, answers: &[&FeedbackRecord]) -> Result<usize, StoreError> {
        let points: Vec<Point> = answers
            .iter()
            .filter_map(|r| IncidentIndex::point(r))
            .collect();
        if self.store.count(&Filter::all())? >= points.len() as u64 {
            return Ok(0);
        }
        let written = points.len();
        self.store.wait(self.store.store().upsert(points))?;
        self.store.flush()?;
        Ok(written)
    }
}

/// A profile the store can hold: the collection's length and not all zeros (an incident without
/// evidence has no direction to be near anything).
fn searchable(profile: &IncidentProfile) -> bool {
    profile.values().len() == DIMENSIONS && profile.values().iter().any(|x| *x != 0.0)
}
