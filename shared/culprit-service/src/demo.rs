//! `culprit demo`: simulated incidents through the whole embedded pipeline, with the answer to
//! check against.

use crate::embedded::{run_events, Outputs};
use crate::CulpritConfig;
use anyhow::Result;
use culprit_core::Event;
use culprit_sim::{simulate, Scenario, SimConfig, SimRun};
use std::path::PathBuf;

/// Decodes a simulated run through the same conversions production data takes.
pub fn sim_events(run: &SimRun) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for req in &run.traces {
        events.extend(culprit_otlp::traces_to_events(req)?);
    }
    for req in &run.logs {
        events.extend(culprit_otlp::logs_to_events(req)?);
    }
    for req in &run.metrics {
        events.extend(culprit_otlp::metrics_to_events(req)?);
    }
    for change in &run.changes {
        events.extend(culprit_otlp::changes::decode_changes(&serde_json::to_vec(
            change,
        )?)?);
    }
    Ok(events)
}

/// Runs each of `scenarios` (simulated with `seed`) through the embedded pipeline, writes its
/// outputs under `out` (default: `output.dir`/demo), and says whether culprit named the
/// injected root cause first. Returns how many it did.
pub fn demo(
    scenarios: &[Scenario],
    seed: u64,
    out: Option<PathBuf>,
    config: &CulpritConfig,
) -> Result<usize> {
    let base = out.unwrap_or_else(|| config.output.dir.join("demo"));
    let sim_config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let mut pipeline_config = config.pipeline.clone();
    if pipeline_config.warmup_secs == 0 {
        // The simulated shop runs 30 healthy minutes before its fault: learn from 20 of them.
        pipeline_config.warmup_secs = 20 * 60;
    }
    let mut correct = 0;
    for scenario in scenarios {
        let run = simulate(*scenario, &sim_config);
        eprintln!("== {scenario}: {}", run.label.description);
        let dir = base.join(scenario.as_str());
        let outputs = Outputs::new(&dir, config)?;
        let report = run_events(sim_events(&run)?, &pipeline_config, &outputs, false)?;
        outputs.finish(&report)?;
        let fault = (run.label.fault_start_unix_s - 120) * 1_000_000_000;
        let named = report
            .incidents
            .iter()
            .find(|i| i.updated_at >= fault)
            .and_then(|i| i.root_causes.first())
            .map(|c| c.service.clone());
        let verdict = if named.as_deref() == Some(run.label.root_cause_service.as_str()) {
            correct += 1;
            "correct"
        } else {
            "WRONG"
        };
        eprintln!(
            "   injected root cause: {}; culprit's first candidate: {} ({verdict})\n",
            run.label.root_cause_service,
            named.as_deref().unwrap_or("none")
        );
    }
    eprintln!(
        "{correct} of {} scenarios named the injected root cause first; outputs in {}",
        scenarios.len(),
        base.display()
    );
    Ok(correct)
}
