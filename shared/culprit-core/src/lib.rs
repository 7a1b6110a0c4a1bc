//! The shared vocabulary of culprit: telemetry [`Event`]s after decoding, the [`Anomaly`]
//! records detectors emit, and [`Severity`].
//!
//! Invariant: this crate knows no wire format and does no I/O. Decoders (`culprit-otlp`) build
//! these types; detectors, the correlator and sinks only ever read them.
#![forbid(unsafe_code)]

mod alert;
mod anomaly;
mod event;
pub mod hash;
mod severity;
mod signal;

pub use alert::{
    CausalGraph, EdgeKind, GraphEdge, GraphNode, IncidentStatus, LlmReview, LlmReviewStatus,
    LlmVerdict, PastIncidents, RankChange, RcaAlert, RootCause, SimilarIncident, VerdictKind,
};
pub use anomaly::{bound_text, Anomaly, DependencyEdge};
pub use event::{
    ChangeEvent, ChangeKind, Event, EventBody, LineTemplate, LogEvent, LogLevel, MetricPoint,
    Resource, SourceKind, SpanEvent,
};
pub use severity::Severity;
pub use signal::{Signal, SignalFamily};

/// Nanoseconds since the Unix epoch, UTC. All windows in culprit run on event time in this unit.
pub type UnixNanos = i64;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// How long a span's id is remembered, in event time, for children to find their parent (the
/// span detector's joiner, the k-NN featuriser's parent operation): parent and child end within
/// one trace, seconds apart; a minute covers slow traces and exporters that batch, and keeps a
/// low-traffic stream from holding its span ids for hours.
pub const SPAN_ID_HORIZON: i64 = 60 * NANOS_PER_SEC;

/// The wall clock in the event-time unit (0 before 1970, saturating in 2262): what the services
/// compare event time with, and stamp their own records with.
pub fn wall_clock() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall clock in Unix milliseconds, the unit of Kafka timestamps.
pub fn wall_clock_ms() -> i64 {
    wall_clock() / 1_000_000
}
