//! The embedded mode: the pipeline in one process over recorded telemetry (`culprit replay`,
//! `demo`, `eval`), alerts to files and stdout.

use crate::config::CulpritConfig;
use anyhow::{Context, Result};
use culprit_core::{Anomaly, Event, RcaAlert};
use culprit_pagerduty::PagerDutyClient;
use culprit_pipeline::{Pipeline, PipelineConfig, PipelineStats};
use culprit_sink::{AlertSink, FanOut, GraphFilesSink, JsonLinesSink, SummarySink};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `culprit replay` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// OTLP JSON-lines files (`.json`, `.jsonl`), OTLP protobuf files (`.pb`, `.binpb`),
    /// change-event files, `.gz` of any of these, or folders of them.
    pub paths: Vec<PathBuf>,
    /// Seconds of event time at the start that only train the baselines (overrides
    /// `warmup_secs` in the configuration).
    pub warmup: Option<u32>,
    /// Folder for alerts.jsonl and the causal-graph pictures (overrides `output.dir`).
    pub out: Option<PathBuf>,
    /// Review each incident's final ranking with the LLM agent.
    pub llm: bool,
}

/// The embedded pipeline over recorded telemetry: reads every file, runs the pipeline in
/// event-time order and writes the alerts to the configured outputs.
pub fn replay(args: Replay, config: &CulpritConfig) -> Result<()> {
    let mut events = read_events(&args.paths)?;
    anyhow::ensure!(!events.is_empty(), "no events found in {:?}", args.paths);
    let mut pipeline_config = config.pipeline.clone();
    if let Some(w) = args.warmup {
        pipeline_config.warmup_secs = w;
    }
    let out = args.out.unwrap_or_else(|| config.output.dir.clone());
    let sinks = Outputs::new(&out, config)?;
    let llm = args.llm || config.llm.enabled;
    // A configured store holds the k-NN reference and every event's point, as in the services.
    // Its runtime drives a remote store's calls and lives as long as the run.
    let runtime = tokio::runtime::Runtime::new().context("starting the store's runtime")?;
    let pipeline = match runtime
        .block_on(config.store.open())
        .with_context(|| format!("opening the {:?} vector store", config.store.backend))?
    {
        Some(store) => {
            let _in_runtime = runtime.enter();
            Pipeline::with_store(pipeline_config, store, config.store.retention_nanos())
        }
        None => Pipeline::new(pipeline_config),
    };
    // With the operators' feedback history (`api.history_path`), alerts name their similar past
    // incidents as the services' do.
    let pipeline = match &config.api.history_path {
        Some(path) => {
            let history = culprit_api::MemoryHistoryStore::open(path, config.api.max_history)
                .with_context(|| format!("reading the history {}", path.display()))?;
            pipeline.with_past_incidents(std::sync::Arc::new(history))
        }
        None => pipeline,
    };
    let mut report = run_sorted(&mut events, pipeline, &sinks, true, llm)?;
    if llm {
        report.incidents = crate::agent::review_replay(
            config,
            &out,
            &report.incidents,
            &report.anomalies,
            &events,
            &sinks,
        )?;
        sinks.flush()?;
    }
    sinks.finish(&report)?;
    Ok(())
}

/// Every event of `paths`: files, or folders of them (OTLP JSON or protobuf, change events,
/// gzipped or not).
pub fn read_events(paths: &[PathBuf]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for path in paths {
        let read = if path.is_dir() {
            culprit_otlp::files::read_dir(path)
        } else {
            culprit_otlp::files::read_path(path)
        };
        events.extend(read.with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(events)
}

/// What a run of the embedded pipeline produced.
pub struct RunReport {
    pub stats: PipelineStats,
    /// The final alert of every incident.
    pub incidents: Vec<RcaAlert>,
    /// Every anomaly of the run, when it was asked to record them (for the LLM agent).
    pub anomalies: Vec<Anomaly>,
}

/// Sorts `events` by event time and streams them through a fresh pipeline, sending each alert to
/// `sinks`.
pub fn run_events(
    mut events: Vec<Event>,
    config: &PipelineConfig,
    sinks: &Outputs,
    progress: bool,
) -> Result<RunReport> {
    run_sorted(
        &mut events,
        Pipeline::new(config.clone()),
        sinks,
        progress,
        false,
    )
}

/// [`run_events`] on borrowed events (sorted in place), optionally recording every anomaly.
fn run_sorted(
    events: &mut [Event],
    mut pipeline: Pipeline,
    sinks: &Outputs,
    progress: bool,
    record: bool,
) -> Result<RunReport> {
    events.sort_by_key(|e| e.time);
    let bar = if progress && events.len() > 100_000 {
        ProgressBar::new(events.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec}")
                .expect("static template"),
        )
    } else {
        ProgressBar::hidden()
    };
    if record {
        pipeline.record_anomalies();
    }
    for (i, event) in events.iter_mut().enumerate() {
        for alert in pipeline.push(event) {
            sinks.emit(&alert)?;
        }
        if i % 4096 == 0 {
            bar.set_position(i as u64);
        }
    }
    for alert in pipeline.finish() {
        sinks.emit(&alert)?;
    }
    sinks.flush()?;
    bar.finish_and_clear();
    Ok(RunReport {
        stats: pipeline.stats().clone(),
        incidents: pipeline.incidents().to_vec(),
        anomalies: pipeline.recorded_anomalies().to_vec(),
    })
}

/// The embedded mode's outputs: alerts.jsonl and graph pictures in a folder, optionally JSON on
/// stdout and PagerDuty (the same sinks as the services'); the terminal summary is printed once
/// per incident at the end, not per revision. The pipeline runs synchronously, so the sinks run
/// on a runtime of their own.
pub struct Outputs {
    sinks: FanOut,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Outputs {
    pub fn new(dir: &Path, config: &CulpritConfig) -> Result<Outputs> {
        // Each run writes its own alerts: a file appended across runs would mix their incidents.
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let alerts = dir.join("alerts.jsonl");
        let file = std::fs::File::create(&alerts)
            .with_context(|| format!("creating {}", alerts.display()))?;
        let mut sinks = FanOut::new(vec![
            Arc::new(JsonLinesSink::new(
                "alerts.jsonl",
                Box::new(std::io::BufWriter::new(file)),
            )),
            Arc::new(GraphFilesSink::new(dir)),
        ]);
        if config.output.stdout_json {
            sinks.push(Arc::new(JsonLinesSink::stdout()));
        }
        if config.pagerduty_enabled {
            sinks.push(Arc::new(
                PagerDutyClient::new(config.pagerduty.clone()).context("setting up PagerDuty")?,
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime of the outputs")?;
        Ok(Outputs {
            sinks,
            dir: dir.to_path_buf(),
            runtime,
        })
    }

    /// Sends `alert` to every output; an alert an output rejected is logged and given up, a
    /// failing output fails the run.
    pub fn emit(&self, alert: &RcaAlert) -> Result<()> {
        Ok(self.runtime.block_on(self.sinks.emit(alert))?)
    }

    pub fn flush(&self) -> Result<()> {
        Ok(self.runtime.block_on(self.sinks.flush())?)
    }

    /// Prints each incident's final summary and where its files are.
    pub fn finish(&self, report: &RunReport) -> Result<()> {
        let summary = SummarySink::stderr();
        for incident in &report.incidents {
            self.runtime.block_on(summary.emit(incident))?;
            eprintln!(
                "  picture: {}\n  graph:   {}\n",
                self.dir
                    .join(format!("{}.html", incident.incident_id))
                    .display(),
                self.dir
                    .join(format!("{}.dot", incident.incident_id))
                    .display()
            );
        }
        let events: u64 = report.stats.events.values().sum();
        eprintln!(
            "{} events, {} anomalies, {} incidents; alerts in {}",
            events,
            report.stats.anomalies,
            report.incidents.len(),
            self.dir.join("alerts.jsonl").display()
        );
        Ok(())
    }
}
