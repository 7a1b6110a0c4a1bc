//! `culprit bench`: throughput of decode -> detect -> correlate on simulated data.

use crate::config::CulpritConfig;
use anyhow::Result;
use culprit_pipeline::Pipeline;
use culprit_sim::{simulate, Scenario, SimConfig};
use std::time::Instant;

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
    let run = simulate(
        args.scenario,
        &SimConfig {
            requests_per_second: args.rps,
            ..SimConfig::default()
        },
    );
    // The wire form is what a consumer receives: encode first (untimed), then time from bytes.
    let traces: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let logs: Vec<Vec<u8>> = run.logs.iter().map(culprit_otlp::to_protobuf).collect();
    let metrics: Vec<Vec<u8>> = run.metrics.iter().map(culprit_otlp::to_protobuf).collect();
    let bytes: usize = traces
        .iter()
        .chain(&logs)
        .chain(&metrics)
        .map(Vec::len)
        .sum();

    let started = Instant::now();
    let mut events = Vec::new();
    use culprit_otlp::{decode, Encoding, Signal};
    for b in &traces {
        events.extend(decode(Signal::Traces, Encoding::Protobuf, b)?);
    }
    for b in &logs {
        events.extend(decode(Signal::Logs, Encoding::Protobuf, b)?);
    }
    for b in &metrics {
        events.extend(decode(Signal::Metrics, Encoding::Protobuf, b)?);
    }
    let decoded = started.elapsed();
    events.sort_by_key(|e| e.time);
    let mut pipeline_config = config.pipeline.clone();
    pipeline_config.warmup_secs = pipeline_config.warmup_secs.max(20 * 60);
    if let Some(mode) = args.detector {
        pipeline_config.detector = mode;
    }
    let mut pipeline = Pipeline::new(pipeline_config.clone());
    let detect_started = Instant::now();
    for e in &events {
        pipeline.push(e);
    }
    pipeline.finish();
    let processed = detect_started.elapsed();
    let total = decoded + processed;
    let n = events.len() as f64;
    let figures = serde_json::json!({
        "events": events.len(),
        "protobuf_bytes": bytes,
        "decode_events_per_s": n / decoded.as_secs_f64(),
        "detect_correlate_events_per_s": n / processed.as_secs_f64(),
        "end_to_end_events_per_s": n / total.as_secs_f64(),
        "seconds": total.as_secs_f64(),
        "incidents": pipeline.incidents().len(),
        "detector": format!("{:?}", pipeline_config.detector).to_lowercase(),
    });
    println!(
        "{} events ({:.1} MB protobuf): decode {:.0} ev/s, detect+correlate {:.0} ev/s, end to end {:.0} ev/s on one core",
        events.len(),
        bytes as f64 / 1e6,
        figures["decode_events_per_s"].as_f64().unwrap_or(0.0),
        figures["detect_correlate_events_per_s"].as_f64().unwrap_or(0.0),
        figures["end_to_end_events_per_s"].as_f64().unwrap_or(0.0)
    );
    if args.json {
        println!("{figures}");
    }
    Ok(())
}
