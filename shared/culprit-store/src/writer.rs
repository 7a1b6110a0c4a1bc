//! Writes finished points to a store in batches, keeping a batch until the store took it, and
//! deletes event points past their retention.

use crate::{Filter, PointEntry, StoreError, VectorStore};
use culprit_core::{UnixNanos, NANOS_PER_SEC};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Retention runs again only once its cutoff moved this far: each run scans (embedded) or
/// counts and deletes (Qdrant) across the whole store.
const RETENTION_STEP: i64 = 60 * NANOS_PER_SEC;

/// Retention measures age from the newest time at least this many written points reached, so a
/// few points with a wrong timestamp (the year 2100) cannot make every real point look old.
const NEWEST_QUORUM: usize = 16;

/// Points waiting to be written, and where they go.
pub struct PointWriter {
    store: Arc<dyn VectorStore>,
    /// Event points older than the newest written point minus this are deleted.
    retention: Option<i64>,
    waiting: Vec<PointEntry>,
    /// The [`NEWEST_QUORUM`] newest timestamps written; the oldest of them is on top.
    newest: BinaryHeap<Reverse<UnixNanos>>,
    last_cutoff: UnixNanos,
}

impl PointWriter {
    /// A writer to `store` that deletes event points `retention_nanos` older than the newest
    /// written time (`None` keeps everything): the newest time [`NEWEST_QUORUM`] points reached,
    /// and never later than the wall clock. Reference points are never deleted by retention:
    /// they are the capped sample detectors score against.
    pub fn new(store: Arc<dyn VectorStore>, retention_nanos: Option<i64>) -> PointWriter {
        PointWriter {
            store,
            retention: retention_nanos.filter(|r| *r > 0),
            waiting: Vec::new(),
            newest: BinaryHeap::with_capacity(NEWEST_QUORUM + 1),
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
        self.store.upsert_entries(self.waiting.clone()).await?;
        let written = self.waiting.len();
        for entry in self.waiting.drain(..) {
            self.newest.push(Reverse(entry.point.timestamp));
            if self.newest.len() > NEWEST_QUORUM {
                self.newest.pop();
            }
        }
        if let (Some(keep), Some(newest)) = (self.retention, self.robust_newest()) {
            let cutoff = newest.saturating_sub(keep);
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

    /// The time retention counts back from: the newest time [`NEWEST_QUORUM`] written points
    /// reached, capped at the wall clock (replays of old data are far behind it; a batch of
    /// future-stamped points is not). `None` until that many points were written.
    fn robust_newest(&self) -> Option<UnixNanos> {
        if self.newest.len() < NEWEST_QUORUM {
            return None;
        }
        let quorum = self.newest.peek()?.0;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Some(quorum.min(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedStore, Point, PointId, DIM};
    use culprit_core::SourceKind;

    const HOUR: i64 = 3_600 * NANOS_PER_SEC;

    fn entry(id: u64, timestamp: UnixNanos) -> PointEntry {
        let mut vector = vec![0.0; DIM];
        vector[0] = 1.0;
        PointEntry::event(Point {
            id: PointId(id),
            vector,
            source: SourceKind::Traces,
            service: "cart".into(),
            environment: "prod".into(),
            timestamp,
            score: 0.0,
            normal: true,
        })
    }

    async fn stored(store: &Arc<dyn VectorStore>) -> u64 {
        store.count(&Filter::default()).await.unwrap()
    }

    async fn stored_since(store: &Arc<dyn VectorStore>, from: UnixNanos) -> u64 {
        let filter = Filter {
            time_from: Some(from),
            ..Filter::default()
        };
        store.count(&filter).await.unwrap()
    }

    #[tokio::test]
    async fn retention_deletes_by_the_time_many_points_reached_not_by_one_outlier() {
        let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory());
        let mut writer = PointWriter::new(store.clone(), Some(72 * HOUR));
        // 100 real points one hour apart, the last one half an hour ago: 72 are within 72 h.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let first = now - 99 * HOUR - HOUR / 2;
        writer.push((0..100).map(|i| entry(i, first + i as i64 * HOUR)));
        writer.write().await.unwrap();
        let recent = now - 72 * HOUR;
        assert_eq!(stored_since(&store, recent).await, 72);

        // A few points stamped in the year 2100 move nothing.
        let year_2100 = 4_102_444_800 * NANOS_PER_SEC;
        writer.push((0..5).map(|i| entry(1_000 + i, year_2100)));
        writer.write().await.unwrap();
        assert_eq!(stored_since(&store, recent).await, 72 + 5);

        // Neither do enough of them to make a quorum: the wall clock caps the newest time.
        writer.push((0..NEWEST_QUORUM as u64).map(|i| entry(2_000 + i, year_2100)));
        writer.write().await.unwrap();
        assert_eq!(
            stored_since(&store, recent).await,
            72 + 5 + NEWEST_QUORUM as u64
        );
        assert_eq!(
            stored(&store).await,
            stored_since(&store, recent).await,
            "what is older than 72 h went"
        );
    }
}
