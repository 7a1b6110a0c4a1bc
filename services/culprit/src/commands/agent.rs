//! `culprit agent <alerts.jsonl>`: the LLM agent's review of stored alerts.

use anyhow::Result;
use culprit_service::{agent::ReviewFile, CulpritConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A JSON-lines file of RCA alerts (`alerts.jsonl`); the latest revision of each incident is
    /// reviewed.
    pub alerts: PathBuf,
    /// Write the exact requests that would be sent (and every tool's result) instead of calling
    /// the endpoint.
    #[arg(long)]
    pub dry_run: bool,
    /// Review every incident, whatever its confidence (default: only those below
    /// `llm.min_confidence`).
    #[arg(long)]
    pub all: bool,
    /// File for the reviewed alerts (with --dry-run: the requests), one JSON line each; stdout
    /// when unset.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args, config: &CulpritConfig) -> Result<()> {
    let Args {
        alerts,
        dry_run,
        all,
        out,
    } = args;
    culprit_service::agent::review_file(
        ReviewFile {
            alerts,
            dry_run,
            all,
            out,
        },
        config,
    )
}
