use culprit_core::SourceKind;
use std::path::PathBuf;

/// Everything that can go wrong while training, saving, loading or embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("row {row} has {got} {kind} columns, the {source_kind} schema has {expected}")]
    RowShape {
        row: usize,
        kind: &'static str,
        got: usize,
        expected: usize,
        source_kind: SourceKind,
    },
    #[error("cannot train on an empty set of rows")]
    NoRows,
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("model is for {model} but rows are {rows}")]
    SourceMismatch { model: SourceKind, rows: SourceKind },
    #[error("model format version {found} in {path} is not supported (expected {expected})")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("model in {path} was trained on a different {source_kind} feature schema: {detail}")]
    Schema {
        path: PathBuf,
        source_kind: SourceKind,
        detail: String,
    },
    #[error("model weights are inconsistent: {0}")]
    Weights(String),
    #[error("training diverged: loss is {0} at epoch {1}")]
    Diverged(f32, usize),
    #[error("i/o on {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("model metadata in {path}: {err}")]
    Json {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
