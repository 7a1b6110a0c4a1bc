//! The day-one embedder: no training, no model file, same output everywhere.

use crate::error::Result;
use crate::features::{hash_str, FeatureSchema};
use crate::{Embedder, Embeddings, FeatureRow, OovMask, EMBED_DIM};
use culprit_core::SourceKind;

/// Deterministic fallback used while no trained model exists for a source.
///
/// Each categorical value `v` of column `c` adds ±1 to bucket `hash(c, v) mod 64` (the sign from
/// another bit of the hash, so collisions tend to cancel rather than pile up); each numeric column
/// adds `0.5 * clamp(x, -32, 32)` to two fixed buckets of its own. The sum is L2-normalised (a zero
/// vector stays zero). Numerics are already on log / cyclic scales from the featurizer, which is
/// why a fixed scale is good enough here. It knows no vocabulary, so it reports no OOV column.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    schema: FeatureSchema,
    /// Per numeric column: two (bucket, sign) slots.
    numeric_slots: Vec<[(usize, f32); 2]>,
}

const CAT_SEED: u64 = 0x5eed_ca7e;
const NUM_SEED: u64 = 0x5eed_0000_0a11;

fn slot(h: u64) -> (usize, f32) {
    (
        (h % EMBED_DIM as u64) as usize,
        if (h >> 32) & 1 == 0 { 1.0 } else { -1.0 },
    )
}

impl HashingEmbedder {
    pub fn new(source: SourceKind) -> Self {
        let schema = FeatureSchema::for_source(source);
        let numeric_slots = schema
            .numeric
            .iter()
            .map(|name| {
                [
                    slot(hash_str(NUM_SEED, name)),
                    slot(hash_str(NUM_SEED + 1, name)),
                ]
            })
            .collect();
        Self {
            schema,
            numeric_slots,
        }
    }

    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    fn embed_row(&self, row: &FeatureRow, out: &mut [f32]) {
        for (c, v) in row.categorical.iter().enumerate() {
            let (b, s) = slot(hash_str(CAT_SEED ^ c as u64, v));
            out[b] += s;
        }
        for (x, slots) in row.numeric.iter().zip(&self.numeric_slots) {
            let x = if x.is_finite() {
                x.clamp(-32.0, 32.0)
            } else {
                0.0
            };
            for &(b, s) in slots {
                out[b] += 0.5 * s * x;
            }
        }
        crate::l2_normalize(out);
    }
}

impl Embedder for HashingEmbedder {
    fn source(&self) -> SourceKind {
        self.schema.source
    }

    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        self.schema.check(rows)?;
        let mut vectors = vec![0.0f32; rows.len() * EMBED_DIM];
        for (row, out) in rows.iter().zip(vectors.chunks_exact_mut(EMBED_DIM)) {
            self.embed_row(row, out);
        }
        Ok(Embeddings {
            dim: EMBED_DIM,
            vectors,
            oov: vec![OovMask::default(); rows.len()],
        })
    }
}
