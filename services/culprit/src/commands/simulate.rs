//! `culprit simulate --scenario S --out DIR`: a labelled incident as OTLP JSON files.

use anyhow::{Context, Result};
use culprit_sim::{simulate, write_dir, Scenario, SimConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// One of: deploy-cpu-spike, config-timeout, memory-leak, db-pool-exhaustion,
    /// new-exception, dependency-latency.
    #[arg(long)]
    pub scenario: Scenario,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Minutes of healthy traffic before the fault.
    #[arg(long, default_value_t = 30)]
    pub normal_minutes: u32,
    #[arg(long, default_value_t = 5)]
    pub fault_minutes: u32,
}

pub fn run(args: Args) -> Result<()> {
    let config = SimConfig {
        seed: args.seed,
        normal_minutes: args.normal_minutes,
        fault_minutes: args.fault_minutes,
        ..SimConfig::default()
    };
    let run = simulate(args.scenario, &config);
    let files =
        write_dir(&run, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} MB): root cause {} at {} — {}",
        args.out.display(),
        files.total_bytes / 1_000_000,
        run.label.root_cause_service,
        run.label.fault_start_unix_s,
        run.label.description
    );
    println!("replay it with: culprit replay {}", args.out.display());
    Ok(())
}
