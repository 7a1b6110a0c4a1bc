//! `culprit demo`: simulated incidents through the whole pipeline, with the answer to check
//! against.

use anyhow::Result;
use culprit_service::CulpritConfig;
use culprit_sim::Scenario;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A scenario name, or `all`.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Folder for alerts and pictures (overrides `output.dir`); one subfolder per scenario.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args, config: &CulpritConfig) -> Result<()> {
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![args.scenario.parse().map_err(|e| anyhow::anyhow!("{e}"))?]
    };
    culprit_service::demo::demo(&scenarios, args.seed, args.out, config).map(|_| ())
}
