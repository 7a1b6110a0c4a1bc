//! `culprit embedder`, `culprit correlator` and `culprit serve`: which roles this process runs.

use anyhow::{Context, Result};
use culprit_core::SourceKind;
use culprit_service::{CulpritConfig, Role};

#[derive(clap::Args)]
pub struct EmbedderArgs {
    /// traces, logs, metrics or changes.
    #[arg(long)]
    pub source: SourceKind,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Sources to run embedders for (default: all four).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<SourceKind>,
}

pub fn embedder(args: EmbedderArgs, config: &CulpritConfig) -> Result<()> {
    run(vec![Role::Embedder(args.source)], config)
}

pub fn correlator(config: &CulpritConfig) -> Result<()> {
    run(vec![Role::Correlator], config)
}

pub fn serve(args: ServeArgs, config: &CulpritConfig) -> Result<()> {
    run(Role::all(&args.sources), config)
}

/// Runs `roles` until SIGINT or SIGTERM.
fn run(roles: Vec<Role>, config: &CulpritConfig) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(culprit_service::services::run(
            roles,
            config,
            culprit_kafka::shutdown_signal(),
        ))
}
