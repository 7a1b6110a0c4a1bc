//! `culprit replay <FILES|DIRS>`: the embedded pipeline over recorded telemetry.

use anyhow::Result;
use culprit_service::{embedded::Replay, CulpritConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// OTLP JSON-lines files (`.json`, `.jsonl`), OTLP protobuf files (`.pb`, `.binpb`),
    /// change-event files, `.gz` of any of these, or folders of them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Seconds of event time at the start that only train the baselines (overrides
    /// `warmup_secs` in the configuration).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Folder for alerts.jsonl and the causal-graph pictures (overrides `output.dir`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Review each incident's final ranking with the LLM agent (`[llm]` settings); the review
    /// is written as the incident's next revision.
    #[arg(long)]
    pub llm: bool,
}

pub fn run(args: Args, config: &CulpritConfig) -> Result<()> {
    let Args {
        paths,
        warmup,
        out,
        llm,
    } = args;
    culprit_service::embedded::replay(
        Replay {
            paths,
            warmup,
            out,
            llm,
        },
        config,
    )
}
