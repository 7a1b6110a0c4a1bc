//! The k-NN settings and the embedder they pick per source.

use culprit_core::SourceKind;
use culprit_embed::{CachedEmbedder, Embedder, HashingEmbedder, LeanModel};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the k-NN detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Neighbours an event's distance is averaged over.
    pub k: usize,
    /// Reference points kept per (source, service).
    pub reference_per_service: usize,
    /// Reference points a service needs before its events are judged.
    pub min_reference: usize,
    /// Quantile of the normal distance distribution beyond which an event is far.
    pub quantile: f64,
    /// Folder with one trained model per source (`<dir>/<source>/model.json`), from
    /// `culprit train`; sources without one use the deterministic hashing embedding.
    pub model_dir: Option<PathBuf>,
    /// Embeddings cached per source (identical feature rows repeat a lot).
    pub cache_rows: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 5,
            reference_per_service: 1000,
            min_reference: 30,
            quantile: 0.99,
            model_dir: None,
            cache_rows: 65_536,
        }
    }
}

/// The embedder for `source`: the trained model in `config.model_dir` when there is one, else the
/// hashing embedding; cached either way.
pub fn embedder_for(source: SourceKind, config: &KnnConfig) -> Box<dyn Embedder> {
    if let Some(dir) = &config.model_dir {
        let path = dir.join(source.as_str());
        if path.join("model.json").is_file() {
            match LeanModel::load(&path) {
                Ok(model) => return Box::new(CachedEmbedder::new(model, config.cache_rows)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot load the model, using the hashing embedding: {e}")
                }
            }
        }
    }
    Box::new(CachedEmbedder::new(
        HashingEmbedder::new(source),
        config.cache_rows,
    ))
}
