//! Ground truth for culprit: seeded, labelled incidents on a small shop of microservices,
//! emitted as OTLP traces, logs and metrics plus native change events.
//!
//! [`simulate`] plays `normal_minutes` of healthy traffic followed by `fault_minutes` of one
//! [`Scenario`], and returns the telemetry with a [`Label`] naming the root-cause service and
//! the fault window. Symptoms propagate the way they do in production: a caller's span contains
//! its callee's, callers fail and log errors naming the callee, retries multiply load, so the
//! root cause is rarely the only anomalous service. The same seed always yields the same run
//! (ChaCha8); [`write_dir`] stores a run as the OpenTelemetry Collector's file exporter would.
//!
//! Volume: metrics count every request, but spans and logs are exported for at most
//! [`EXPORTED_TRACES_PER_SECOND`] requests a second (uniform head sampling), which keeps the
//! default 35-minute run near 45 MB of OTLP/JSON.
//!
//! The crate knows nothing of detection or correlation, so it can judge them.
#![forbid(unsafe_code)]

mod changes;
mod metrics;
mod otlp;
mod scenario;
mod topology;
mod traffic;
mod write;

pub use scenario::{Scenario, UnknownScenario};
pub use topology::{DEPENDENCIES, ENVIRONMENT, NAMESPACE, SERVICES};
pub use traffic::EXPORTED_TRACES_PER_SECOND;
pub use write::{
    read_jsonl, write_dataset, write_dir, WrittenDataset, WrittenFiles, CASES_FILE, CHANGES_FILE,
    LABEL_FILE, LOGS_FILE, METRICS_FILE, TRACES_FILE,
};

use culprit_otlp::build;
use culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scenario::{FaultWindow, NANOS};
use serde::{Deserialize, Serialize};

/// Monday 2024-06-03 10:00:00 UTC: a business-hours start with a stable diurnal phase.
pub const DEFAULT_START_UNIX_S: i64 = 1_717_408_800;

/// How long, how busy and from which seed a simulation runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub seed: u64,
    pub start_unix_s: i64,
    /// Healthy traffic before the fault (the detectors' baseline).
    pub normal_minutes: u32,
    pub fault_minutes: u32,
    /// Requests entering at the frontend, on average.
    pub requests_per_second: u32,
    /// Telemetry is grouped into one OTLP request per signal per batch of this many seconds.
    pub batch_seconds: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            start_unix_s: DEFAULT_START_UNIX_S,
            normal_minutes: 30,
            fault_minutes: 5,
            requests_per_second: 20,
            batch_seconds: 10,
        }
    }
}

/// The `system` every simulated case is labelled with.
pub const SYSTEM: &str = "culprit-sim-shop";

/// What really happened in a run: the answer a root-cause analysis should find. Its first six
/// fields are those of the labelled case layout (`cases.csv`, `label.json`), so a folder written
/// by [`write_dir`] is a one-case dataset for `culprit eval cases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The scenario's name: one case per scenario in a dataset.
    pub case_id: String,
    /// When symptoms start and stop (a change, if any, precedes the start by 30-60 s).
    pub fault_start_unix_s: i64,
    pub fault_end_unix_s: i64,
    pub root_cause_service: String,
    /// The scenario's kebab-case name (every scenario is its own kind of fault).
    pub fault_type: String,
    /// [`SYSTEM`].
    pub system: String,
    /// The scenario's kebab-case name.
    pub scenario: String,
    pub description: String,
}

/// One simulated run. Requests are in time order; each holds one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRun {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    /// Native change events (`{"id", "time", "type", "service", ...}`), in time order.
    pub changes: Vec<serde_json::Value>,
    pub label: Label,
}

impl SimRun {
    /// The run's traces, logs and metrics as culprit events, in time order: what a replay of
    /// its OTLP batches decodes (change events are left out).
    pub fn events(&self) -> Vec<culprit_core::Event> {
        let simulated = "simulated OTLP converts";
        let mut events = Vec::new();
        for r in &self.traces {
            events.extend(culprit_otlp::traces_to_events(r).expect(simulated));
        }
        for r in &self.logs {
            events.extend(culprit_otlp::logs_to_events(r).expect(simulated));
        }
        for r in &self.metrics {
            events.extend(culprit_otlp::metrics_to_events(r).expect(simulated));
        }
        events.sort_by_key(|e| e.time);
        events
    }
}

/// Runs `scenario` under `config`. Deterministic: equal inputs give equal runs.
pub fn simulate(scenario: Scenario, config: &SimConfig) -> SimRun {
    let start_ns = config.start_unix_s * NANOS;
    let fault_start_ns = start_ns + i64::from(config.normal_minutes) * 60 * NANOS;
    let end_ns = fault_start_ns + i64::from(config.fault_minutes) * 60 * NANOS;
    let batch_ns = i64::from(config.batch_seconds.max(1)) * NANOS;
    let window = FaultWindow {
        start_ns: fault_start_ns,
        end_ns,
    };

    // Independent streams per concern, so that e.g. a scenario's change events cannot shift
    // the traffic: the normal period is the same for every scenario under one seed.
    let stream = |n: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(n);
        rng
    };
    let mut setup_rng = stream(0);
    let pods = traffic::make_pods(&mut setup_rng);
    let planned = changes::plan_changes(scenario, start_ns, fault_start_ns, &mut setup_rng);
    let versions = changes::Versions::new(&planned);

    let traffic = traffic::simulate_traffic(
        &traffic::TrafficParams {
            scenario,
            window,
            start_ns,
            end_ns,
            batch_ns,
            requests_per_second: f64::from(config.requests_per_second.max(1)),
        },
        &pods,
        stream(1),
    );
    let metrics = metrics::simulate_metrics(
        &metrics::MetricParams {
            scenario,
            window,
            start_ns,
            end_ns,
            batch_ns,
            versions: &versions,
        },
        &pods,
        &traffic.windows,
        stream(2),
    );

    let mut traces = Vec::new();
    for (b, per_pod) in traffic.spans.into_iter().enumerate() {
        let batch_start = start_ns + b as i64 * batch_ns;
        let resource_spans: Vec<_> = pods
            .iter()
            .zip(per_pod)
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(pod, spans)| {
                let version = versions.at(pod.svc, batch_start);
                let resource = otlp::resource(pod.svc.name(), version, &pod.name);
                build::resource_spans(resource, otlp::scope(), spans)
            })
            .collect();
        if !resource_spans.is_empty() {
            traces.push(build::trace_request(resource_spans));
        }
    }
    let mut logs = Vec::new();
    for (b, per_pod) in traffic.logs.into_iter().enumerate() {
        let batch_start = start_ns + b as i64 * batch_ns;
        let resource_logs: Vec<_> = pods
            .iter()
            .zip(per_pod)
            .filter(|(_, records)| !records.is_empty())
            .map(|(pod, records)| {
                let version = versions.at(pod.svc, batch_start);
                let resource = otlp::resource(pod.svc.name(), version, &pod.name);
                build::resource_logs(resource, otlp::scope(), records)
            })
            .collect();
        if !resource_logs.is_empty() {
            logs.push(build::logs_request(resource_logs));
        }
    }

    SimRun {
        traces,
        logs,
        metrics,
        changes: planned.iter().map(changes::to_json).collect(),
        label: Label {
            case_id: scenario.as_str().to_string(),
            fault_start_unix_s: fault_start_ns / NANOS,
            fault_end_unix_s: end_ns / NANOS,
            root_cause_service: scenario.root_cause_service().to_string(),
            fault_type: scenario.as_str().to_string(),
            system: SYSTEM.to_string(),
            scenario: scenario.as_str().to_string(),
            description: scenario.description().to_string(),
        },
    }
}
