//! Writes finished points to a store in batches, keeping a batch until the store took it, and
//! deletes event points past their retention.

use crate::{Filter, PointEntry, StoreError, VectorStore};
use culprit_core::{UnixNanos, NANOS_PER_SEC};
use std::sync::Arc;

/// Retention runs again only once its cutoff moved this far: each run scans (embedded) or
/// counts and deletes (Qdrant) across the whole store.
const RETENTION_STEP: i64 = 60 * NANOS_PER_SEC;

/// Points waiting to be written, and where they go.
pub struct PointWriter {
    store: Arc<dyn VectorStore>,
    /// Event points older than the newest written point minus this are deleted.
    retention: Option<i64>,
    waiting: Vec<PointEntry>,
    newest: UnixNanos,
    last_cutoff: UnixNanos,
}

impl PointWriter {
    /// A writer to `store` that deletes event points `retention_nanos` older than the newest
    /// written one (`None` keeps everything). Reference points are never deleted by retention:
    /// they are the capped sample detectors score against.
    pub fn new(store: Arc<dyn VectorStore>, retention_nanos: Option<i64>) -> PointWriter {
        PointWriter {
            store,
            retention: retention_nanos.filter(|r| *r > 0),
            waiting: Vec::new(),
            newest: i64::MIN,
            last_cutoff: i64::MIN,
        }
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// Queues points for the next [`PointWriter::write`].
    pub fn push(&mut self, entries: impl IntoIterator<Item = PointEntry>) {
        self.waiting.extend(entries);
    }

    /// Points queued and not yet written.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the queued points back out, unwritten.
    pub fn take_waiting(&mut self) -> Vec<PointEntry> {
        std::mem::take(&mut self.waiting)
    }

    /// Writes every queued point; on error they stay queued for the next call (the caller
    /// retries). Returns how many were written.
    pub async fn write(&mut self) -> Result<usize, StoreError> {
        if self.waiting.is_empty() {
            return Ok(0);
        }
        let newest = self.waiting.iter().map(|e| e.point.timestamp).max();
        self.store.upsert_entries(self.waiting.clone()).await?;
        let written = std::mem::take(&mut self.waiting).len();
        self.newest = self.newest.max(newest.unwrap_or(i64::MIN));
        if let Some(keep) = self.retention {
            let cutoff = self.newest.saturating_sub(keep);
            if cutoff >= self.last_cutoff.saturating_add(RETENTION_STEP) {
                // Points are written; a failed deletion is retried with the next batch.
                let events = Filter {
                    time_to: Some(cutoff),
                    reference: Some(false),
                    ..Filter::default()
                };
                self.store.delete_matching(&events).await?;
                self.last_cutoff = cutoff;
            }
        }
        Ok(written)
    }
}
