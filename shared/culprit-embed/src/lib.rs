//! Per-source learned embeddings: turns events into feature rows ([`featurize`]) and feature
//! rows into 64-dimensional unit vectors ([`Embedder`]) with a TabularResNet trained
//! self-supervised in candle ([`train`]), served by a lean CPU path ([`LeanModel`]) and backed by
//! a deterministic [`HashingEmbedder`] while no trained model exists.
//!
//! ```
//! use culprit_core::{Event, EventBody, Resource, SpanEvent, SourceKind};
//! use culprit_embed::{featurize, Embedder, FeatureState, HashingEmbedder};
//! use std::sync::Arc;
//!
//! let span = SpanEvent {
//!     trace_id: "ab".repeat(16), span_id: "cd".repeat(8), parent_span_id: None,
//!     name: "GET /cart".into(), kind: "server".into(), duration_ns: 12_000_000,
//!     is_error: false, error_type: None, attributes: Default::default(),
//! };
//! let event = Event { time: 0, resource: Arc::new(Resource::new("cart")), body: EventBody::Span(span) };
//! let row = featurize(&event, &mut FeatureState::default());
//! let emb = HashingEmbedder::new(SourceKind::Traces).embed(&[row]).unwrap();
//! assert_eq!(emb.row(0).len(), 64);
//! ```
#![forbid(unsafe_code)]

mod cache;
mod error;
mod features;
mod hashing;
mod lean;
mod model;

pub use cache::CachedEmbedder;
pub use error::{EmbedError, Result};
pub use features::{
    featurize, featurize_all, FeatureMemory, FeatureRow, FeatureSchema, FeatureState,
    FeatureStateConfig, NONE, ROOT, UNKNOWN,
};
pub use hashing::HashingEmbedder;
pub use lean::LeanModel;
pub use model::{
    train, Model, ModelMeta, Objective, TrainConfig, TrainProgress, TrainingFigures, FORMAT_VERSION,
};

use culprit_core::SourceKind;

/// Width of every embedding, whatever the source and embedder.
pub const EMBED_DIM: usize = 64;

/// Turns feature rows of one source into unit vectors.
pub trait Embedder: Send + Sync {
    fn source(&self) -> SourceKind;
    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings>;
}

impl<E: Embedder + ?Sized> Embedder for &E {
    fn source(&self) -> SourceKind {
        (**self).source()
    }
    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        (**self).embed(rows)
    }
}

impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn source(&self) -> SourceKind {
        (**self).source()
    }
    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        (**self).embed(rows)
    }
}

impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn source(&self) -> SourceKind {
        (**self).source()
    }
    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        (**self).embed(rows)
    }
}

/// Which categorical columns of a row were out of vocabulary (bit `i` = column `i` of the
/// schema). Detectors raise their own signal on these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OovMask(pub u32);

impl OovMask {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, column: usize) -> bool {
        column < 32 && self.0 & (1 << column) != 0
    }
    pub(crate) fn set(&mut self, column: usize) {
        if column < 32 {
            self.0 |= 1 << column;
        }
    }
    /// Indices of the OOV categorical columns, ascending.
    pub fn columns(self) -> impl Iterator<Item = usize> {
        (0..32).filter(move |&c| self.contains(c))
    }
}

/// Row-major embeddings of a batch, with per-row OOV reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    /// `len() * dim` numbers, row after row.
    pub vectors: Vec<f32>,
    pub oov: Vec<OovMask>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.oov.len()
    }
    pub fn is_empty(&self) -> bool {
        self.oov.is_empty()
    }
    /// The vector of row `i`; panics when `i >= len()` like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.vectors.chunks_exact(self.dim.max(1))
    }
}

/// Scales `v` to unit length; leaves an all-zero (or non-finite) vector as zeros.
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n.is_finite() && n > 1e-12 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}
