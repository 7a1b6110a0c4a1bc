use crate::{Severity, Signal, SourceKind, UnixNanos};
use serde::{Deserialize, Serialize};

/// One detector finding: a signal of one service that left its baseline during a window.
///
/// Anomalies are what crosses from the embedders to the correlator (on the bus, and in Kafka mode
/// on `culprit.anomalies`), so they carry everything the correlator and the alert need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable id: the same finding on a redelivered event gets the same id.
    pub id: String,
    /// Event time of the finding (the window start, or the event's own time).
    pub time: UnixNanos,
    pub source: SourceKind,
    pub service: String,
    pub environment: String,
    /// Pod or host, when the signal is per instance.
    pub instance: Option<String>,
    /// What moved: its family, typed, and on the wire a stable machine form such as
    /// `span.latency:GET /cart`, `log.new_template:E17`, `metric:CpuUsageRate(%)`,
    /// `change:deployment:chg-1`.
    pub signal: Signal,
    /// A sentence a person can read.
    pub description: String,
    pub severity: Severity,
    /// Strength in [0, 1]: 1 is certainly abnormal. Used as evidence by the ranker.
    pub score: f64,
    /// The observed value and the baseline it was compared with, where the signal has them.
    pub observed: Option<f64>,
    pub expected: Option<f64>,
}

/// A caller -> callee edge between two services seen in one trace, reported by the span detector
/// so the correlator can learn the dependency graph online.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DependencyEdge {
    pub environment: String,
    pub caller: String,
    pub callee: String,
}
