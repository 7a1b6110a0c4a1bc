//! The detector's calls to its store: blocking, and failing soft. A failed call pauses every
//! call for [`BACKOFF`] of event time (a store that is down would otherwise cost a timeout per
//! event) and warns once per pause; searches in the meantime have no distance, so nothing is
//! judged far. Reference points the store did not take are kept and written again.

use culprit_core::{SourceKind, UnixNanos, NANOS_PER_SEC};
use culprit_store::{Filter, Neighbour, PointEntry, StoreError, SyncStore, VectorStore};
use std::sync::Arc;

/// Event time during which the store is left alone after a failed call.
pub const BACKOFF: i64 = 30 * NANOS_PER_SEC;

/// The filter that selects the reference of one service: its normal reference points of this
/// source and environment, never every stored event.
pub fn reference_filter(source: SourceKind, environment: &str, service: &str) -> Filter {
    Filter::all()
        .source(source)
        .environment(environment)
        .service(service)
        .normal_only()
        .reference_only()
}

/// Mean distance to the neighbours found, or None when there are none.
pub fn mean_distance(neighbours: &[Neighbour]) -> Option<f32> {
    if neighbours.is_empty() {
        return None;
    }
    Some(neighbours.iter().map(|n| n.distance).sum::<f32>() / neighbours.len() as f32)
}

/// The k-NN distance of `vector`: its mean distance to the `k` nearest points `filter` admits.
pub fn knn_distance(
    store: &SyncStore,
    vector: &[f32],
    filter: &Filter,
    k: usize,
) -> Result<Option<f32>, StoreError> {
    Ok(mean_distance(&store.search(vector, filter, k)?))
}

/// Whether an event at `distance` lies beyond the far threshold.
pub fn is_far(distance: f32, threshold: f64) -> bool {
    f64::from(distance) > threshold
}

pub(crate) struct StoreAccess {
    store: SyncStore,
    /// Event time before which the store is not called, after a failure.
    paused_until: Option<UnixNanos>,
    failures: u64,
    /// Reference points the store has not taken yet.
    unconfirmed: Vec<PointEntry>,
}

impl StoreAccess {
    pub(crate) fn new(store: Arc<dyn VectorStore>) -> StoreAccess {
        StoreAccess {
            store: SyncStore::new(store),
            paused_until: None,
            failures: 0,
            unconfirmed: Vec::new(),
        }
    }

    /// The store searched, for tests.
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &dyn VectorStore {
        &**self.store.store()
    }

    fn available(&self, now: UnixNanos) -> bool {
        self.paused_until.is_none_or(|t| now >= t)
    }

    fn failed(&mut self, now: UnixNanos, op: &'static str, e: &StoreError) {
        self.failures += 1;
        self.paused_until = Some(now.saturating_add(BACKOFF));
        tracing::warn!(
            op,
            failures = self.failures,
            "k-NN reference store failed; store calls pause for {} s of event time, events meanwhile have no distance: {e}",
            BACKOFF / NANOS_PER_SEC
        );
    }

    /// Whether the store holds every reference point written so far: only then does a search
    /// answer what the detector's own view of the reference would.
    pub(crate) fn settled(&self) -> bool {
        self.unconfirmed.is_empty()
    }

    /// The k-NN distance, or Err(()) when the store could not answer (not memoisable).
    pub(crate) fn distance(
        &mut self,
        now: UnixNanos,
        vector: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Option<f32>, ()> {
        if !self.available(now) {
            return Err(());
        }
        knn_distance(&self.store, vector, filter, k).map_err(|e| self.failed(now, "search", &e))
    }

    /// Points `filter` admits; 0 when the store cannot tell.
    pub(crate) fn count(&mut self, now: UnixNanos, filter: &Filter) -> u64 {
        if !self.available(now) {
            return 0;
        }
        match self.store.count(filter) {
            Ok(n) => n,
            Err(e) => {
                self.failed(now, "count", &e);
                0
            }
        }
    }

    /// Writes newly admitted reference points, keeping them for [`Self::retry`] on failure.
    pub(crate) fn write_reference(&mut self, now: UnixNanos, entries: Vec<PointEntry>) {
        self.unconfirmed.extend(entries);
        self.retry(now);
    }

    /// Writes the reference points the store has not taken yet.
    pub(crate) fn retry(&mut self, now: UnixNanos) {
        if self.unconfirmed.is_empty() || !self.available(now) {
            return;
        }
        let entries = std::mem::take(&mut self.unconfirmed);
        // The store takes the batch by value: keep a copy to write again if it fails.
        if let Err(e) = self.store.upsert_entries(entries.clone()) {
            self.unconfirmed = entries;
            self.failed(now, "upsert", &e);
        }
    }
}
