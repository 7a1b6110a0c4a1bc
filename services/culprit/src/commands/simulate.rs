//! `culprit simulate --scenario S --out DIR`: a labelled incident as OTLP JSON files;
//! `culprit simulate --all --out DIR`: every scenario as a labelled-case dataset.

use anyhow::{Context, Result};
use culprit_sim::{simulate, write_dataset, write_dir, Scenario, SimConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// One of: deploy-cpu-spike, config-timeout, memory-leak, db-pool-exhaustion,
    /// new-exception, dependency-latency.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub scenario: Option<Scenario>,
    /// Write every scenario as a dataset in the labelled case layout (`cases.csv` and one
    /// folder per case), for `culprit eval cases`.
    #[arg(long, alias = "dataset")]
    pub all: bool,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// When the healthy traffic begins (RFC 3339, e.g. 2026-03-01T10:00:00Z): runs started
    /// apart put several incidents on one timeline.
    #[arg(long, value_parser = parse_start)]
    pub start: Option<i64>,
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
    let config = SimConfig {
        start_unix_s: args.start.unwrap_or(config.start_unix_s),
        ..config
    };
    let Some(scenario) = args.scenario else {
        let written = write_dataset(&args.out, &config, &Scenario::ALL)
            .with_context(|| format!("writing {}", args.out.display()))?;
        for (label, _) in &written.cases {
            println!(
                "  {:<20} root cause {:<12} at {}",
                label.case_id, label.root_cause_service, label.fault_start_unix_s
            );
        }
        println!(
            "wrote {} cases to {} ({} MB)",
            written.cases.len(),
            args.out.display(),
            written.total_bytes / 1_000_000
        );
        println!("score them with: culprit eval cases {}", args.out.display());
        return Ok(());
    };
    let run = simulate(scenario, &config);
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
    println!("score it with:  culprit eval cases {}", args.out.display());
    Ok(())
}

/// An RFC 3339 time as Unix seconds.
fn parse_start(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-03-01T10:00:00Z)"))
}
