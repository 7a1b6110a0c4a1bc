//! `culprit bench`: throughput of decode -> detect -> correlate on simulated data.

use anyhow::Result;
use culprit_service::bench::Bench;
use culprit_service::CulpritConfig;
use culprit_sim::Scenario;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "deploy-cpu-spike")]
    pub scenario: Scenario,
    /// Simulated requests per second (more events per simulated minute).
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// End with one JSON line of the figures.
    #[arg(long)]
    pub json: bool,
    /// Which detectors run: stats, knn (featurize + embed + k-NN against the reference store)
    /// or fused.
    #[arg(long)]
    pub detector: Option<culprit_pipeline::DetectorMode>,
}

pub fn run(args: Args, config: &CulpritConfig) -> Result<()> {
    let figures = culprit_service::bench::bench(
        Bench {
            scenario: args.scenario,
            rps: args.rps,
            detector: args.detector,
        },
        config,
    )?;
    let rate = |key: &str| figures[key].as_f64().unwrap_or(0.0);
    println!(
        "{} events ({:.1} MB protobuf): decode {:.0} ev/s, detect+correlate {:.0} ev/s, end to end {:.0} ev/s on one core",
        figures["events"],
        rate("protobuf_bytes") / 1e6,
        rate("decode_events_per_s"),
        rate("detect_correlate_events_per_s"),
        rate("end_to_end_events_per_s")
    );
    println!(
        "detectors' state snapshot (an embedder takes one on its consumer task every kafka.snapshot_secs): {:.0} ms, {:.1} MB",
        rate("snapshot_ms"),
        rate("snapshot_bytes") / 1e6
    );
    if args.json {
        println!("{figures}");
    }
    Ok(())
}
