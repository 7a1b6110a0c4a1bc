//! An embedder as its own process, for tests that `kill -9` it: stores event keys in an
//! append-only file (see `FileStore`), runs until SIGTERM/Ctrl-C, then prints its final
//! `StatsSnapshot` as JSON on stdout. Given a vector store file, the detect stage writes every
//! event's point to an embedded store there (`DetectStage::with_store`, no retention).
//!
//! Usage: `culprit-test-embedder <kafka-config.json> <source> <store-file> <warmup-secs>
//! [<vector-store-file>]`
#![forbid(unsafe_code)]

use anyhow::{Context as _, Result};
use culprit_integration_tests::FileStore;
use culprit_kafka::{run_embedder, EmbedderOptions, KafkaConfig};
use std::sync::Arc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        matches!(args.len(), 5 | 6),
        "usage: culprit-test-embedder <kafka-config.json> <source> <store-file> <warmup-secs> [<vector-store-file>]"
    );
    let config: KafkaConfig =
        serde_json::from_slice(&std::fs::read(&args[1]).context("reading the config")?)?;
    let source = args[2].parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let store = FileStore::open(args[3].clone().into())?;
    let warmup_secs: u32 = args[4].parse()?;
    let vectors = match args.get(5) {
        Some(path) => Some(Arc::new(
            culprit_store::EmbeddedStore::open(path).context("opening the vector store")?,
        )),
        None => None,
    };
    let stage = match &vectors {
        Some(vectors) => {
            culprit_pipeline::DetectStage::with_store(&Default::default(), vectors.clone(), None)
        }
        None => culprit_pipeline::DetectStage::new(&Default::default()),
    };
    let stats = Arc::new(culprit_kafka::Stats::new());
    let options = EmbedderOptions {
        warmup_secs,
        sink: Arc::new(store),
        stats: stats.clone(),
        relearners: None,
    };
    run_embedder(
        &config,
        source,
        stage,
        options,
        culprit_kafka::shutdown_signal(),
    )
    .await?;
    if let Some(vectors) = &vectors {
        culprit_store::VectorStore::flush(vectors.as_ref()).await?;
    }
    println!("{}", serde_json::to_string(&stats.snapshot())?);
    Ok(())
}
