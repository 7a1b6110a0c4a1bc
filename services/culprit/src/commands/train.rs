//! `culprit train --source S --input <files|dir> --out <model dir>`: a per-source embedding model
//! trained self-supervised on (normal) telemetry, for the k-NN detector.

use anyhow::Result;
use culprit_core::SourceKind;
use culprit_service::train::Train;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// traces, logs or metrics.
    #[arg(long)]
    pub source: SourceKind,
    /// OTLP files or folders of them (as for `culprit replay`), ideally from a healthy period.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Model folder; `knn.model_dir` expects `<model_dir>/<source>/`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    culprit_service::train::train_model(Train {
        source: args.source,
        input: args.input,
        out: args.out,
        epochs: args.epochs,
        seed: args.seed,
    })
}
