//! Caches embeddings of repeated identical rows: many events (same log line shape, same change,
//! same span at the same duration bucket...) featurise to exactly the same row.

use crate::error::Result;
use crate::{Embedder, Embeddings, FeatureRow, OovMask};
use culprit_core::SourceKind;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    row: FeatureRow,
    vector: Box<[f32]>,
    oov: OovMask,
}

/// Two generations approximate LRU in O(1) with no linked list: hits in the old generation are
/// promoted to the new one; when the new one fills, the old one (everything not used since the
/// last swap) is dropped. At most `2 * capacity / 2 = capacity` entries are held.
struct Generations {
    hot: HashMap<u64, Entry>,
    cold: HashMap<u64, Entry>,
    half: usize,
    hits: u64,
    misses: u64,
}

impl Generations {
    fn get(&mut self, key: u64, row: &FeatureRow) -> Option<(&[f32], OovMask)> {
        if !self.hot.contains_key(&key) {
            let e = self.cold.remove(&key)?;
            self.insert(key, e);
        }
        // The full row is compared, so a 64-bit hash collision costs a miss, never a wrong vector.
        let e = self.hot.get(&key).filter(|e| e.row == *row)?;
        Some((&e.vector, e.oov))
    }

    fn insert(&mut self, key: u64, e: Entry) {
        if self.hot.len() >= self.half {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.hot.insert(key, e);
    }
}

/// Wraps any [`Embedder`] with a bounded cache keyed by [`FeatureRow::stable_hash`].
pub struct CachedEmbedder<E> {
    inner: E,
    cache: Mutex<Generations>,
}

impl<E: Embedder> CachedEmbedder<E> {
    /// `capacity` rows at most (at least 2).
    pub fn new(inner: E, capacity: usize) -> Self {
        let half = (capacity / 2).max(1);
        Self {
            inner,
            cache: Mutex::new(Generations {
                hot: HashMap::with_capacity(half),
                cold: HashMap::new(),
                half,
                hits: 0,
                misses: 0,
            }),
        }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// `(hits, misses)` so far.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (g.hits, g.misses)
    }
}

impl<E: Embedder> Embedder for CachedEmbedder<E> {
    fn source(&self) -> SourceKind {
        self.inner.source()
    }

    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        let dim = crate::EMBED_DIM;
        let mut vectors = vec![0f32; rows.len() * dim];
        let mut oov = vec![OovMask::default(); rows.len()];
        let keys: Vec<u64> = rows.iter().map(FeatureRow::stable_hash).collect();
        let mut missing: Vec<usize> = Vec::new();
        {
            // A poisoned lock only means another thread panicked mid-update of plain maps; the
            // worst case is a stale entry that is still a correct vector, so carry on.
            let mut g = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (i, (row, &key)) in rows.iter().zip(&keys).enumerate() {
                match g.get(key, row) {
                    Some((v, m)) => {
                        vectors[i * dim..(i + 1) * dim].copy_from_slice(v);
                        oov[i] = m;
                    }
                    None => missing.push(i),
                }
            }
            g.hits += (rows.len() - missing.len()) as u64;
            g.misses += missing.len() as u64;
        }
        if missing.is_empty() {
            return Ok(Embeddings { dim, vectors, oov });
        }
        let miss_rows: Vec<FeatureRow> = missing.iter().map(|&i| rows[i].clone()).collect();
        let fresh = self.inner.embed(&miss_rows)?;
        let mut g = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (j, (&i, row)) in missing.iter().zip(miss_rows).enumerate() {
            let v = fresh.row(j);
            vectors[i * dim..(i + 1) * dim].copy_from_slice(v);
            oov[i] = fresh.oov[j];
            g.insert(
                keys[i],
                Entry {
                    row,
                    vector: v.into(),
                    oov: fresh.oov[j],
                },
            );
        }
        Ok(Embeddings { dim, vectors, oov })
    }
}
