use std::path::PathBuf;

pub type Result<T, E = NezhaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NezhaError {
    #[error("no labels at {path}: a nezha dataset root holds labels/cases.csv")]
    MissingLabels { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path} at line {line}: {source}")]
    Csv {
        path: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: missing column '{column}'")]
    MissingColumn { path: PathBuf, column: String },
    #[error("{path}: line {line}: {reason}")]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode otlp json for {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
