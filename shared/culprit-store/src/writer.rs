//! Writes finished points to a store in batches, keeping a batch until the store took it and made
//! it durable, and deletes event points past their retention.

use crate::{Filter, PointEntry, StoreError, VectorStore};
use culprit_core::{UnixNanos, NANOS_PER_SEC};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

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

    /// Writes every queued point and makes the store durable ([`VectorStore::flush`]), so Ok
    /// means the points survive a crash and the offsets covering them may be committed. On error
    /// the points not yet taken stay queued and the caller retries; the retry flushes again even
    /// when nothing is left queued. Returns how many were written.
    pub async fn write(&mut self) -> Result<usize, StoreError> {
        let written = self.upsert_waiting().await?;
        self.store.flush().await?;
        Ok(written)
    }

    async fn upsert_waiting(&mut self) -> Result<usize, StoreError> {
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
        Some(quorum.min(culprit_core::wall_clock()))
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
        let now = culprit_core::wall_clock();
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

#[cfg(test)]
mod durability_tests {
    use super::*;
    use crate::{EmbeddedStore, Neighbour, Point, PointId, DIM};
    use async_trait::async_trait;
    use culprit_core::SourceKind;
    use std::sync::Mutex;

    /// An in-memory store that logs the calls that change or persist it, and can fail a flush.
    struct Recording {
        store: EmbeddedStore,
        calls: Mutex<Vec<&'static str>>,
        fail_flushes: Mutex<u32>,
    }

    impl Recording {
        fn new(fail_flushes: u32) -> Arc<Recording> {
            Arc::new(Recording {
                store: EmbeddedStore::in_memory(),
                calls: Mutex::default(),
                fail_flushes: Mutex::new(fail_flushes),
            })
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
        fn log(&self, call: &'static str) {
            self.calls.lock().unwrap().push(call);
        }
    }

    #[async_trait]
    impl VectorStore for Recording {
        async fn upsert_entries(&self, entries: Vec<PointEntry>) -> Result<(), StoreError> {
            self.log("upsert");
            self.store.upsert_entries(entries).await
        }
        async fn search(
            &self,
            query: &[f32],
            filter: &Filter,
            k: usize,
        ) -> Result<Vec<Neighbour>, StoreError> {
            self.store.search(query, filter, k).await
        }
        async fn delete_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
            self.log("delete");
            self.store.delete_matching(filter).await
        }
        async fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
            self.store.count(filter).await
        }
        async fn flush(&self) -> Result<(), StoreError> {
            let mut fail = self.fail_flushes.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                self.log("flush failed");
                return Err(StoreError::Backend {
                    backend: "test",
                    op: "flush",
                    message: "disk full".into(),
                });
            }
            self.log("flush");
            Ok(())
        }
        async fn health(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn entry(i: u64, timestamp: i64) -> PointEntry {
        let mut vector = vec![0.0; DIM];
        vector[i as usize % DIM] = 1.0;
        PointEntry::event(Point {
            id: PointId(i),
            vector,
            source: SourceKind::Logs,
            service: "a".into(),
            environment: "prod".into(),
            timestamp,
            score: 0.0,
            normal: true,
        })
    }

    #[tokio::test]
    async fn a_write_returns_only_after_the_store_made_it_durable() {
        let store = Recording::new(0);
        let mut writer = PointWriter::new(store.clone(), Some(NANOS_PER_SEC));
        writer.push([entry(1, 0)]);
        assert_eq!(writer.write().await.unwrap(), 1);
        writer.push([entry(2, 120 * NANOS_PER_SEC)]);
        assert_eq!(writer.write().await.unwrap(), 1);
        // Too few points for retention to trust their newest time: nothing is deleted, and each
        // write ends with the flush.
        assert_eq!(store.calls(), ["upsert", "flush", "upsert", "flush"]);
        assert_eq!(store.count(&Filter::all()).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_flush_fails_the_write_and_the_retry_flushes_again() {
        let store = Recording::new(1);
        let mut writer = PointWriter::new(store.clone(), None);
        writer.push([entry(1, 0)]);
        assert!(writer.write().await.is_err());
        // The points reached the store; only their durability is owed, and the retry pays it.
        assert_eq!(writer.write().await.unwrap(), 0);
        assert_eq!(store.calls(), ["upsert", "flush failed", "flush"]);
    }
}
