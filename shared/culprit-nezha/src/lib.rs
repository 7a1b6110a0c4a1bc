//! Reads the Nezha root-cause-analysis dataset layout (labelled fault cases plus per-minute logs and
//! traces and per-day metrics, as published with the Nezha FSE'23 artifact) into OpenTelemetry OTLP
//! requests, and writes a dataset out as OTLP JSON files the way the OpenTelemetry Collector's file
//! exporter does, so the rest of culprit only ever sees OTLP.
//!
//! Layout read (one dataset root):
//!
//! ```text
//! labels/cases.csv                                  one row per labelled case
//! rca_data/<date>/log/<HH_MM>_log.csv.gz            logs, one file per minute
//! rca_data/<date>/trace/<HH_MM>_trace.csv.gz        spans, one file per minute
//! rca_data/<date>/metric/<pod>_metric.csv.gz        one row per minute for the whole day
//! rca_data/<date>/metric/front_service.csv.gz       entry-point SLIs
//! rca_data/<date>/metric/{source,destination}_50.csv.gz   per call-edge P50 latency
//! rca_data/<date>/metric/dependency.csv.gz          service edges (`Source,Target`)
//! construct_data/<date>/{log,trace}/<HH_MM>_*.csv.gz      fault-free reference minutes
//! ```
//!
//! Nothing here knows particular case ids, dates, pods or services: everything is discovered from
//! the files. Rows that cannot be used are reported in [`ReadOutcome::skipped`], never panicked on.
#![forbid(unsafe_code)]

mod csvio;
mod dataset;
mod error;
mod import;
mod logs;
mod metrics;
mod otlp;
mod traces;

pub use dataset::{Case, Dataset, Kind};
pub use error::{NezhaError, Result};
pub use import::{import, ImportProgress, ImportSummary};
pub use logs::{parse_level, read_logs};
pub use metrics::{dependency_edges, read_metrics, MetricOptions, MetricStore};
pub use otlp::service_of_pod;
pub use traces::read_spans;

/// What one reader produced from one file (or one metric window).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOutcome<T> {
    pub request: T,
    /// Data rows read, including the skipped ones.
    pub rows: usize,
    /// One reason per row that could not be used at all, naming the file and line.
    pub skipped: Vec<String>,
    /// Metric cells that were empty or NaN (no traffic), left out without being errors; 0 for logs
    /// and traces.
    pub empty_cells: usize,
}
