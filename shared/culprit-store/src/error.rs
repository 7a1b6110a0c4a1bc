use crate::PointId;
use std::path::PathBuf;

/// Everything a [`VectorStore`](crate::VectorStore) can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("point {id}: vector has {len} dimensions, expected {expected}")]
    WrongDimension {
        id: PointId,
        len: usize,
        expected: usize,
    },
    #[error("point {id}: vector component {index} is not finite")]
    NonFinite { id: PointId, index: usize },
    #[error("point {id}: vector has zero norm, so its cosine distance is undefined")]
    ZeroNorm { id: PointId },
    #[error("point {id}: anomaly score {score} is outside [0, 1]")]
    InvalidScore { id: PointId, score: f32 },
    #[error("query vector: {0}")]
    InvalidQuery(String),
    #[error("i/o error on {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store file {path} is corrupt: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("store file {path} has format version {found}, this build reads version {expected}", path = path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The remote backend failed; `op` names the call (`upsert`, `search`, ...).
    #[error("{backend} {op} failed: {message}")]
    Backend {
        backend: &'static str,
        op: &'static str,
        message: String,
    },
    /// The remote collection exists but cannot hold culprit's vectors.
    #[error("collection {collection} is incompatible: {reason}")]
    IncompatibleCollection { collection: String, reason: String },
}
