//! The in-process store: exact k-NN by a flat scan over per-(source, service, reference)
//! partitions, persisted as a snapshot plus a write-ahead log.

use crate::persist;
use crate::types::{dot, hour_of_week, normalised_query, validate_point};
use crate::wal::{self, Record, Wal};
use crate::{Filter, Neighbour, Point, PointEntry, PointId, StoreError, VectorStore, DIM};
use async_trait::async_trait;
use culprit_core::SourceKind;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The log is folded into a new snapshot once it is larger than the snapshot and than this, so
/// compaction costs at most about one snapshot write per snapshot's worth of changes.
const COMPACT_FLOOR: u64 = 16 << 20;

/// A full partition grows by an eighth of its rows (at least [`MIN_GROWTH_ROWS`]), not by
/// doubling: its columns hold most of an embedder's memory, and copying them a few more times
/// costs far less than the unused half a doubling leaves.
const GROWTH_DIVISOR: usize = 8;
const MIN_GROWTH_ROWS: usize = 256;

/// Exact, in-process [`VectorStore`], optionally persisted to a file and its write-ahead log.
///
/// Every vector has the store's dimension ([`DIM`] unless opened with another, as the incidents
/// collection is). Points are partitioned by (source, service, reference marker) and each
/// partition keeps its columns contiguous (vectors as one `Vec<f32>` of `rows * dimension`,
/// pre-normalised so cosine
/// similarity is a dot product), so a per-service query scans only that service's rows, and a
/// query for reference points only the service's reference sample. Readers share an `RwLock`;
/// the trait's async methods do their (short, CPU-bound) work without awaiting.
///
/// A persisted store appends every change to its log (`<path>.wal`, see the `wal` module) before
/// applying it, and [`VectorStore::flush`] syncs the log: one `fdatasync` per call, so an
/// acknowledged flush survives `kill -9` and power loss. Once the log outgrows the snapshot
/// (and 16 MiB), a flush also writes a new snapshot (atomically, see `persist`) and empties the
/// log.
pub struct EmbeddedStore {
    path: Option<PathBuf>,
    inner: RwLock<Inner>,
    /// The log and snapshot size; taken after `inner` when both are held.
    log: Option<Mutex<Log>>,
}

struct Log {
    wal: Wal,
    /// Size of the snapshot file; None while there is none.
    snapshot_len: Option<u64>,
}

impl Log {
    fn wants_compaction(&self) -> bool {
        self.snapshot_len
            .is_none_or(|s| self.wal.len() > s.max(COMPACT_FLOOR))
    }
}

pub(crate) struct Inner {
    /// Components of every vector.
    pub(crate) dim: usize,
    pub(crate) partitions: Vec<Partition>,
    /// (source, reference) -> service -> index into `partitions`.
    by_key: HashMap<(SourceKind, bool), HashMap<String, u32>>,
    /// id -> (partition, row).
    locations: HashMap<u64, (u32, u32)>,
    /// Interned environment names; partitions store indexes into this.
    pub(crate) environments: Vec<String>,
    env_ids: HashMap<String, u32>,
}

/// The rows of one (source, service, reference), column by column.
#[derive(Debug, Default)]
pub(crate) struct Partition {
    pub(crate) source: Option<SourceKind>,
    pub(crate) service: String,
    /// Whether the rows are reference points.
    pub(crate) reference: bool,
    /// Components of each vector.
    pub(crate) dim: usize,
    pub(crate) ids: Vec<u64>,
    pub(crate) timestamps: Vec<i64>,
    pub(crate) scores: Vec<f32>,
    pub(crate) normal: Vec<bool>,
    pub(crate) env: Vec<u32>,
    pub(crate) vectors: Vec<f32>,
}

impl Partition {
    pub(crate) fn new(
        source: SourceKind,
        service: String,
        reference: bool,
        dim: usize,
    ) -> Partition {
        Partition {
            source: Some(source),
            service,
            reference,
            dim,
            ..Partition::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    fn push(&mut self, p: &Point, env: u32) -> usize {
        if self.ids.len() == self.ids.capacity() {
            self.reserve_rows(self.ids.len() / GROWTH_DIVISOR + MIN_GROWTH_ROWS);
        }
        self.ids.push(p.id.0);
        self.timestamps.push(p.timestamp);
        self.scores.push(p.score);
        self.normal.push(p.normal);
        self.env.push(env);
        self.vectors.extend_from_slice(&p.vector);
        self.ids.len() - 1
    }

    fn overwrite(&mut self, row: usize, p: &Point, env: u32) {
        self.timestamps[row] = p.timestamp;
        self.scores[row] = p.score;
        self.normal[row] = p.normal;
        self.env[row] = env;
        let dim = self.dim;
        self.vectors[row * dim..(row + 1) * dim].copy_from_slice(&p.vector);
    }

    /// Removes a row by moving the last row into its place; returns the id of the moved row.
    fn swap_remove(&mut self, row: usize) -> Option<u64> {
        let (last, dim) = (self.ids.len() - 1, self.dim);
        self.ids.swap_remove(row);
        self.timestamps.swap_remove(row);
        self.scores.swap_remove(row);
        self.normal.swap_remove(row);
        self.env.swap_remove(row);
        if row != last {
            self.vectors
                .copy_within(last * dim..(last + 1) * dim, row * dim);
        }
        self.vectors.truncate(last * dim);
        (row != last).then(|| self.ids[row])
    }

    fn copy_row(&mut self, from: usize, to: usize) {
        self.ids[to] = self.ids[from];
        self.timestamps[to] = self.timestamps[from];
        self.scores[to] = self.scores[from];
        self.normal[to] = self.normal[from];
        self.env[to] = self.env[from];
        let dim = self.dim;
        self.vectors
            .copy_within(from * dim..(from + 1) * dim, to * dim);
    }

    /// Room for `rows` more rows in every column, and no more: a column that doubled would
    /// leave up to half of the store's largest allocations unused.
    fn reserve_rows(&mut self, rows: usize) {
        self.ids.reserve_exact(rows);
        self.timestamps.reserve_exact(rows);
        self.scores.reserve_exact(rows);
        self.normal.reserve_exact(rows);
        self.env.reserve_exact(rows);
        self.vectors.reserve_exact(rows * self.dim);
    }

    /// Keeps the first `len` rows; gives memory back once most of it is unused (retention).
    fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        self.timestamps.truncate(len);
        self.scores.truncate(len);
        self.normal.truncate(len);
        self.env.truncate(len);
        self.vectors.truncate(len * self.dim);
        if self.ids.capacity() > 2 * len + MIN_GROWTH_ROWS {
            let rows = len + len / GROWTH_DIVISOR;
            self.ids.shrink_to(rows);
            self.timestamps.shrink_to(rows);
            self.scores.shrink_to(rows);
            self.normal.shrink_to(rows);
            self.env.shrink_to(rows);
            self.vectors.shrink_to(rows * self.dim);
        }
    }
}

impl Inner {
    /// An empty store of `dim`-component vectors.
    pub(crate) fn new(dim: usize) -> Inner {
        Inner {
            dim,
            partitions: Vec::new(),
            by_key: HashMap::new(),
            locations: HashMap::new(),
            environments: Vec::new(),
            env_ids: HashMap::new(),
        }
    }

    /// Rebuilds the lookup maps from loaded partitions, rejecting duplicate ids and keys.
    pub(crate) fn from_parts(
        dim: usize,
        partitions: Vec<Partition>,
        environments: Vec<String>,
    ) -> Result<Inner, String> {
        let mut inner = Inner {
            environments,
            ..Inner::new(dim)
        };
        for (i, env) in inner.environments.iter().enumerate() {
            if inner.env_ids.insert(env.clone(), i as u32).is_some() {
                return Err(format!("environment '{env}' listed twice"));
            }
        }
        for (pi, part) in partitions.iter().enumerate() {
            let source = part.source.ok_or("partition without a source")?;
            let slot = inner.by_key.entry((source, part.reference)).or_default();
            if slot.insert(part.service.clone(), pi as u32).is_some() {
                return Err(format!("partition {source}/{} listed twice", part.service));
            }
            for (row, &id) in part.ids.iter().enumerate() {
                if inner
                    .locations
                    .insert(id, (pi as u32, row as u32))
                    .is_some()
                {
                    return Err(format!("point {} stored twice", PointId(id)));
                }
            }
        }
        inner.partitions = partitions;
        Ok(inner)
    }

    fn env_id(&mut self, env: &str) -> u32 {
        if let Some(&id) = self.env_ids.get(env) {
            return id;
        }
        let id = self.environments.len() as u32;
        self.environments.push(env.to_string());
        self.env_ids.insert(env.to_string(), id);
        id
    }

    fn partition_id(&mut self, source: SourceKind, service: &str, reference: bool) -> u32 {
        if let Some(&id) = self
            .by_key
            .get(&(source, reference))
            .and_then(|m| m.get(service))
        {
            return id;
        }
        let id = self.partitions.len() as u32;
        self.partitions.push(Partition::new(
            source,
            service.to_string(),
            reference,
            self.dim,
        ));
        self.by_key
            .entry((source, reference))
            .or_default()
            .insert(service.to_string(), id);
        id
    }

    fn upsert(&mut self, entry: &PointEntry) {
        let point = &entry.point;
        let env = self.env_id(&point.environment);
        let target = self.partition_id(point.source, &point.service, entry.reference);
        match self.locations.get(&point.id.0).copied() {
            Some((part, row)) if part == target => {
                self.partitions[part as usize].overwrite(row as usize, point, env);
            }
            Some((part, row)) => {
                // The id moved to another (source, service, reference): take it out of the old
                // partition.
                if let Some(moved) = self.partitions[part as usize].swap_remove(row as usize) {
                    self.locations.insert(moved, (part, row));
                }
                let new_row = self.partitions[target as usize].push(point, env);
                self.locations.insert(point.id.0, (target, new_row as u32));
            }
            None => {
                let new_row = self.partitions[target as usize].push(point, env);
                self.locations.insert(point.id.0, (target, new_row as u32));
            }
        }
    }

    fn delete_matching(&mut self, filter: &Filter) -> u64 {
        let Some(rows) = self.row_filter(filter) else {
            return 0;
        };
        let doomed: Vec<usize> = self
            .candidate_ids(filter)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let mut removed = 0u64;
        for pi in doomed {
            let part = &mut self.partitions[pi];
            let mut kept = 0;
            for row in 0..part.len() {
                if !rows.matches(part, row) {
                    if kept != row {
                        part.copy_row(row, kept);
                        self.locations
                            .insert(part.ids[kept], (pi as u32, kept as u32));
                    }
                    kept += 1;
                } else {
                    self.locations.remove(&part.ids[row]);
                    removed += 1;
                }
            }
            part.truncate(kept);
        }
        removed
    }

    /// The partitions a filter can match, so per-service queries skip every other service and
    /// reference queries every event point.
    fn candidates<'a>(&'a self, filter: &Filter) -> Vec<&'a Partition> {
        self.candidate_ids(filter)
            .into_iter()
            .map(|i| &self.partitions[i as usize])
            .collect()
    }

    fn candidate_ids(&self, filter: &Filter) -> Vec<u32> {
        let sources: &[SourceKind] = match &filter.source {
            Some(s) => std::slice::from_ref(s),
            None => &SourceKind::ALL,
        };
        let markers: &[bool] = match &filter.reference {
            Some(r) => std::slice::from_ref(r),
            None => &[false, true],
        };
        match &filter.service {
            Some(service) => sources
                .iter()
                .flat_map(|&s| markers.iter().map(move |&r| (s, r)))
                .filter_map(|key| self.by_key.get(&key)?.get(service.as_str()).copied())
                .collect(),
            None => self
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    filter.source.is_none_or(|s| p.source == Some(s))
                        && filter.reference.is_none_or(|r| p.reference == r)
                })
                .map(|(i, _)| i as u32)
                .collect(),
        }
    }

    /// Row-level conditions of a filter, resolved once per query.
    fn row_filter(&self, filter: &Filter) -> Option<RowFilter> {
        let env = match &filter.environment {
            Some(e) => Some(*self.env_ids.get(e.as_str())?),
            None => None,
        };
        Some(RowFilter {
            env,
            from: filter.time_from.unwrap_or(i64::MIN),
            to: filter.time_to,
            normal_only: filter.normal_only,
            hour_of_week: filter.hour_of_week,
        })
    }

    fn search(&self, query: &[f32], filter: &Filter, k: usize) -> Vec<Neighbour> {
        if k == 0 {
            return Vec::new();
        }
        let Some(rows) = self.row_filter(filter) else {
            return Vec::new();
        };
        let parts = self.candidates(filter);
        let mut top = TopK::new(k);
        for (pi, part) in parts.iter().enumerate() {
            for row in 0..part.len() {
                if !rows.matches(part, row) {
                    continue;
                }
                let distance = 1.0 - dot(part.vector(row), query);
                top.offer(Candidate {
                    distance,
                    id: part.ids[row],
                    part: pi as u32,
                    row: row as u32,
                });
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|c| {
                let part = parts[c.part as usize];
                Neighbour {
                    id: PointId(c.id),
                    distance: c.distance.clamp(0.0, 2.0),
                    service: part.service.clone(),
                    timestamp: part.timestamps[c.row as usize],
                }
            })
            .collect()
    }

    fn count(&self, filter: &Filter) -> u64 {
        let Some(rows) = self.row_filter(filter) else {
            return 0;
        };
        self.candidates(filter)
            .into_iter()
            .map(|part| (0..part.len()).filter(|&r| rows.matches(part, r)).count() as u64)
            .sum()
    }

    /// Replays one change read back from the log.
    fn apply(&mut self, record: Record) {
        match record {
            Record::Upsert(entries) => entries.iter().for_each(|e| self.upsert(e)),
            Record::Delete(filter) => {
                self.delete_matching(&filter);
            }
        }
    }
}

struct RowFilter {
    env: Option<u32>,
    from: i64,
    to: Option<i64>,
    normal_only: bool,
    hour_of_week: Option<u8>,
}

impl RowFilter {
    #[inline]
    fn matches(&self, part: &Partition, row: usize) -> bool {
        let ts = part.timestamps[row];
        ts >= self.from
            && self.to.is_none_or(|to| ts < to)
            && (!self.normal_only || part.normal[row])
            && self.env.is_none_or(|e| part.env[row] == e)
            && self.hour_of_week.is_none_or(|h| hour_of_week(ts) == h)
    }
}

/// Ordered by (distance, id) so ties break the same way in every run.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    distance: f32,
    id: u64,
    part: u32,
    row: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.id.cmp(&other.id))
    }
}

/// The k best candidates seen so far, in a max-heap whose top is the worst kept one.
struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    #[inline]
    fn offer(&mut self, c: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if c < *worst {
                *worst = c;
            }
        }
    }

    fn into_sorted(self) -> Vec<Candidate> {
        self.heap.into_sorted_vec()
    }
}

impl EmbeddedStore {
    /// A store of event embeddings ([`DIM`]) that lives and dies with the process; `flush`
    /// does nothing.
    pub fn in_memory() -> EmbeddedStore {
        EmbeddedStore::in_memory_with_dimension(DIM)
    }

    /// An in-memory store of `dimension`-component vectors.
    pub fn in_memory_with_dimension(dimension: usize) -> EmbeddedStore {
        EmbeddedStore {
            path: None,
            inner: RwLock::new(Inner::new(dimension)),
            log: None,
        }
    }

    /// Loads the store file at `path` and replays its log (`<path>.wal`) on top, or starts
    /// empty when there is none yet. A log whose last record was torn by a crash is cut back to
    /// its last whole record (with a warning); a damaged snapshot is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with_dimension(path, DIM)
    }

    /// [`EmbeddedStore::open`] for `dimension`-component vectors; files of another dimension
    /// are refused.
    pub fn open_with_dimension(
        path: impl AsRef<Path>,
        dimension: usize,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut inner = persist::read(&path, dimension)?.unwrap_or_else(|| Inner::new(dimension));
        let snapshot_len = match std::fs::metadata(&path) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let wal = Wal::open(&Wal::path_for(&path), dimension, |record| {
            inner.apply(record)
        })?;
        Ok(EmbeddedStore {
            path: Some(path),
            inner: RwLock::new(inner),
            log: Some(Mutex::new(Log { wal, snapshot_len })),
        })
    }

    /// The file this store persists to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Components of every vector this store holds.
    pub fn dimension(&self) -> usize {
        self.read().dim
    }

    /// Number of stored points.
    pub fn len(&self) -> usize {
        self.read().locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a point with this id is stored.
    pub fn contains(&self, id: PointId) -> bool {
        self.read().locations.contains_key(&id.0)
    }

    // A panic while holding the lock cannot leave half-applied rows behind (upserts are validated
    // before the lock is taken), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> Option<MutexGuard<'_, Log>> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn upsert_now(&self, mut entries: Vec<PointEntry>) -> Result<(), StoreError> {
        // Validate the whole batch first so a bad point leaves the store untouched.
        let dim = self.dimension();
        for e in &mut entries {
            validate_point(&mut e.point, dim)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        // Encoded before taking the lock; appended under it, so the log's order is memory's.
        let record = self.log.as_ref().map(|_| wal::upsert_record(&entries));
        let mut inner = self.write();
        if let (Some(mut log), Some(record)) = (self.log(), record) {
            log.wal.append(&record)?;
        }
        for e in &entries {
            inner.upsert(e);
        }
        Ok(())
    }

    fn delete_now(&self, filter: &Filter) -> Result<u64, StoreError> {
        let record = self.log.as_ref().map(|_| wal::delete_record(filter));
        let mut inner = self.write();
        if let (Some(mut log), Some(record)) = (self.log(), record) {
            log.wal.append(&record)?;
        }
        Ok(inner.delete_matching(filter))
    }

    /// Syncs the log, then compacts it into a new snapshot when it has grown past its bound.
    fn flush_now(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let pending = self
            .log()
            .and_then(|log| log.wal.pending_sync().transpose());
        if let Some(pending) = pending {
            let (file, len) = pending?;
            // Outside the lock: writers keep appending while the disk catches up.
            file.sync_data().map_err(|e| {
                self.log()
                    .expect("a persisted store has a log")
                    .wal
                    .io_err(e)
            })?;
            if let Some(mut log) = self.log() {
                log.wal.synced_to(len);
            }
        }
        if !self.log().is_some_and(|log| log.wants_compaction()) {
            return Ok(());
        }
        // A read lock keeps writers out between the snapshot and emptying the log.
        let inner = self.read();
        let Some(mut log) = self.log() else {
            return Ok(());
        };
        if !log.wants_compaction() {
            return Ok(()); // a concurrent flush compacted it
        }
        persist::write(path, &inner)?;
        log.snapshot_len = Some(
            std::fs::metadata(path)
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?
                .len(),
        );
        log.wal.reset()
    }
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    async fn upsert_entries(&self, entries: Vec<PointEntry>) -> Result<(), StoreError> {
        self.upsert_now(entries)
    }

    async fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Neighbour>, StoreError> {
        let inner = self.read();
        let query = normalised_query(query, inner.dim)?;
        Ok(inner.search(&query, filter, k))
    }

    async fn delete_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        self.delete_now(filter)
    }

    async fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        Ok(self.read().count(filter))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flush_now()
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: u64, service: &str, timestamp: i64, axis: usize) -> Point {
        let mut vector = vec![0.0; DIM];
        vector[axis % DIM] = 1.0;
        Point {
            id: PointId(id),
            vector,
            source: SourceKind::Logs,
            service: service.into(),
            environment: "prod".into(),
            timestamp,
            score: 0.0,
            normal: true,
        }
    }

    fn entries(points: Vec<Point>) -> Vec<PointEntry> {
        points.into_iter().map(PointEntry::event).collect()
    }

    /// Every stored id must point at the row that holds it.
    fn assert_index_consistent(store: &EmbeddedStore) {
        let inner = store.read();
        let rows: usize = inner.partitions.iter().map(Partition::len).sum();
        assert_eq!(rows, inner.locations.len());
        for (&id, &(p, r)) in &inner.locations {
            assert_eq!(inner.partitions[p as usize].ids[r as usize], id);
        }
    }

    #[test]
    fn index_survives_partition_moves_and_retention_compaction() {
        let store = EmbeddedStore::in_memory();
        let first: Vec<Point> = (0..40)
            .map(|i| point(i, ["a", "b"][i as usize % 2], i as i64, i as usize))
            .collect();
        store.upsert_now(entries(first)).unwrap();
        // Move every third point to service "c": swap_remove reshuffles rows in a and b.
        let moved: Vec<Point> = (0..40)
            .step_by(3)
            .map(|i| point(i, "c", i as i64, i as usize))
            .collect();
        store.upsert_now(entries(moved)).unwrap();
        assert_index_consistent(&store);
        assert_eq!(store.len(), 40);

        let inner_removed = store.write().delete_matching(&Filter {
            time_to: Some(25),
            ..Filter::default()
        });
        assert_eq!(inner_removed, 25);
        assert_index_consistent(&store);
        assert!(!store.contains(PointId(24)));
        assert!(store.contains(PointId(25)) && store.contains(PointId(39)));
        assert!(!store.contains(PointId(40)));

        // Each survivor is still found at distance 0 under its current service.
        for i in 25..40u64 {
            let q = normalised_query(&point(i, "x", 0, i as usize).vector, DIM).unwrap();
            let service = if i % 3 == 0 {
                "c"
            } else {
                ["a", "b"][i as usize % 2]
            };
            let hits = store.read().search(&q, &Filter::all().service(service), 1);
            assert_eq!(hits[0].id, PointId(i));
            assert!(hits[0].distance < 1e-6);
        }
    }

    #[test]
    fn duplicate_ids_within_one_batch_keep_the_last() {
        let store = EmbeddedStore::in_memory();
        store
            .upsert_now(entries(vec![point(1, "a", 1, 0), point(1, "b", 2, 1)]))
            .unwrap();
        assert_eq!(store.len(), 1);
        let q = normalised_query(&point(0, "", 0, 1).vector, DIM).unwrap();
        let hit = &store.read().search(&q, &Filter::all(), 1)[0];
        assert_eq!((hit.service.as_str(), hit.timestamp), ("b", 2));
        assert_index_consistent(&store);
    }

    #[test]
    fn columns_grow_by_an_eighth_and_shrink_after_retention() {
        let store = EmbeddedStore::in_memory();
        let n = 20_000u64;
        let points: Vec<Point> = (0..n)
            .map(|i| point(i, "a", i as i64, i as usize))
            .collect();
        store.upsert_now(entries(points)).unwrap();
        let capacity = |store: &EmbeddedStore| {
            let inner = store.read();
            let part = &inner.partitions[0];
            (part.ids.capacity(), part.vectors.capacity() / DIM)
        };
        let bound = n as usize + n as usize / GROWTH_DIVISOR + MIN_GROWTH_ROWS;
        let (ids, vectors) = capacity(&store);
        assert!(
            ids >= n as usize && ids <= bound,
            "ids capacity {ids} for {n} rows"
        );
        assert!(vectors <= bound, "vector capacity {vectors} rows for {n}");

        let removed = store.write().delete_matching(&Filter {
            time_to: Some(19_000),
            ..Filter::default()
        });
        assert_eq!(removed, 19_000);
        let (ids, vectors) = capacity(&store);
        assert!(
            ids <= 1_000 + 1_000 / GROWTH_DIVISOR,
            "ids capacity {ids} after retention"
        );
        assert!(vectors <= 1_000 + 1_000 / GROWTH_DIVISOR);
        assert_index_consistent(&store);
    }
}
