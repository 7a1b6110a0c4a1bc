//! Throughput of decode -> detect -> correlate on simulated data (`culprit bench`).

use crate::CulpritConfig;
use anyhow::Result;
use culprit_pipeline::{DetectorMode, Pipeline};
use culprit_sim::{simulate, Scenario, SimConfig};
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Bench {
    pub scenario: Scenario,
    /// Simulated requests per second (more events per simulated minute).
    pub rps: u32,
    /// Which detectors run (overrides `detector` in the configuration).
    pub detector: Option<DetectorMode>,
}

/// Measures one run and returns its figures as one JSON object (events per second of decode,
/// of detect + correlate, and end to end, on one core).
pub fn bench(args: Bench, config: &CulpritConfig) -> Result<serde_json::Value> {
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
    for e in &mut events {
        pipeline.push(e);
    }
    pipeline.finish();
    let processed = detect_started.elapsed();
    // An embedder takes this snapshot of its detectors on its consumer task every
    // `kafka.snapshot_secs` (the file is written on a blocking thread): what that pause costs.
    let snapshot_started = Instant::now();
    let state = pipeline.save_state();
    let snapshot = snapshot_started.elapsed();
    let snapshot_bytes = serde_json::to_vec(&state).map_or(0, |b| b.len());
    let total = decoded + processed;
    let n = events.len() as f64;
    let figures = serde_json::json!({
        "events": events.len(),
        "protobuf_bytes": bytes,
        "decode_events_per_s": n / decoded.as_secs_f64(),
        "detect_correlate_events_per_s": n / processed.as_secs_f64(),
        "end_to_end_events_per_s": n / total.as_secs_f64(),
        "seconds": total.as_secs_f64(),
        "snapshot_ms": snapshot.as_secs_f64() * 1e3,
        "snapshot_bytes": snapshot_bytes,
        "incidents": pipeline.incidents().len(),
        "detector": format!("{:?}", pipeline_config.detector).to_lowercase(),
    });
    Ok(figures)
}
