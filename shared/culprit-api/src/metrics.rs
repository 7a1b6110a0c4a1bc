//! The Prometheus metrics every culprit service records, and the handle that records them.

use culprit_core::{IncidentStatus, Severity, SourceKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Prefix of every metric name: `culprit_events_total`, ...
pub const METRIC_PREFIX: &str = "culprit";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeErrorLabels {
    source: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabels {
    source: &'static str,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: from one decoded batch to a full ranking.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Records the service metrics. Cloning is cheap and every clone records into the same series;
/// recording touches atomics only (plus a read lock on the label map).
#[derive(Clone, Debug)]
pub struct Metrics {
    events: Family<SourceLabels, Counter>,
    decode_errors: Family<DecodeErrorLabels, Counter>,
    dlq: Family<SourceLabels, Counter>,
    anomalies: Family<AnomalyLabels, Counter>,
    incidents: Family<StatusLabels, Counter>,
    feedback: Family<CauseLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    recalculations: Family<TriggerLabels, Counter>,
    consumer_lag: Family<LagLabels, Gauge>,
    processing_latency: Family<StageLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            events: Family::default(),
            decode_errors: Family::default(),
            dlq: Family::default(),
            anomalies: Family::default(),
            incidents: Family::default(),
            feedback: Family::default(),
            auth_failures: Family::default(),
            recalculations: Family::default(),
            consumer_lag: Family::default(),
            processing_latency: Family::new_with_constructor(latency_histogram),
        };
        // prometheus-client appends `_total` to counters and the unit to the histogram.
        registry.register(
            "events",
            "Telemetry events decoded, by source",
            m.events.clone(),
        );
        registry.register(
            "decode_errors",
            "Records that could not be decoded, by source and reason",
            m.decode_errors.clone(),
        );
        registry.register(
            "dlq",
            "Records sent to the dead-letter queue, by source",
            m.dlq.clone(),
        );
        registry.register(
            "anomalies",
            "Anomalies emitted, by source and severity",
            m.anomalies.clone(),
        );
        registry.register(
            "incidents",
            "Incident alerts published, by status",
            m.incidents.clone(),
        );
        registry.register(
            "feedback",
            "Operator feedback received, by where the named cause stood: rank1 (culprit's first candidate), ranked (another candidate), unranked (in the graph, not ranked) or other",
            m.feedback.clone(),
        );
        registry.register(
            "api_auth_failures",
            "API requests refused, by status: 401 without a valid token, 403 with too small a scope",
            m.auth_failures.clone(),
        );
        registry.register(
            "baseline_recalculations",
            "Baseline recalculations done, by trigger (api or schedule)",
            m.recalculations.clone(),
        );
        registry.register(
            "consumer_lag",
            "Kafka consumer lag in records, by topic and partition",
            m.consumer_lag.clone(),
        );
        registry.register_with_unit(
            "processing_latency",
            "Processing time per pipeline stage",
            Unit::Seconds,
            m.processing_latency.clone(),
        );
        m
    }

    /// `n` events of `source` decoded.
    pub fn events(&self, source: SourceKind, n: u64) {
        self.events
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .inc_by(n);
    }

    /// One record of `source` that failed to decode; keep `reason` to a small fixed set.
    pub fn decode_error(&self, source: SourceKind, reason: &str) {
        let labels = DecodeErrorLabels {
            source: source.as_str(),
            reason: reason.to_string(),
        };
        self.decode_errors.get_or_create(&labels).inc();
    }

    /// One record of `source` sent to the dead-letter queue.
    pub fn dlq(&self, source: SourceKind) {
        self.dlq
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .inc();
    }

    /// One anomaly emitted.
    pub fn anomaly(&self, source: SourceKind, severity: Severity) {
        self.anomalies
            .get_or_create(&AnomalyLabels {
                source: source.as_str(),
                severity: severity_label(severity),
            })
            .inc();
    }

    /// One incident alert published.
    pub fn incident(&self, status: IncidentStatus) {
        self.incidents
            .get_or_create(&StatusLabels {
                status: status_label(status),
            })
            .inc();
    }

    /// The consumer's current lag on one partition.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&LagLabels {
                topic: topic.to_string(),
                partition,
            })
            .set(lag);
    }

    /// How long one unit of work took in `stage` (`decode`, `detect`, `correlate`, ...).
    pub fn latency(&self, stage: &'static str, elapsed: Duration) {
        self.processing_latency
            .get_or_create(&StageLabels { stage })
            .observe(elapsed.as_secs_f64());
    }

    /// One feedback post; `rank` is where culprit ranked the named service, `other` whether the
    /// cause was outside the graph.
    pub(crate) fn feedback(&self, rank: Option<usize>, other: bool) {
        let cause = match (other, rank) {
            (true, _) => "other",
            (false, Some(1)) => "rank1",
            (false, Some(_)) => "ranked",
            (false, None) => "unranked",
        };
        self.feedback.get_or_create(&CauseLabels { cause }).inc();
    }

    /// One request refused with `status` (401 or 403).
    pub(crate) fn auth_failure(&self, status: u16) {
        let status = if status == 401 { "401" } else { "403" };
        self.auth_failures
            .get_or_create(&AuthLabels { status })
            .inc();
    }

    pub(crate) fn recalculation(&self, scheduled: bool) {
        let trigger = if scheduled { "schedule" } else { "api" };
        self.recalculations
            .get_or_create(&TriggerLabels { trigger })
            .inc();
    }
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Sev1 => "SEV1",
        Severity::Sev2 => "SEV2",
        Severity::Sev3 => "SEV3",
        Severity::Sev4 => "SEV4",
        Severity::Sev5 => "SEV5",
    }
}

pub(crate) fn status_label(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Resolved => "resolved",
    }
}
