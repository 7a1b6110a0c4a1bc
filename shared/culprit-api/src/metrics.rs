//! The Prometheus metrics every culprit service records, and the handle that records them.

use culprit_core::{IncidentStatus, Severity, SourceKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Prefix of every metric name: `culprit_events_total`, ...
pub const METRIC_PREFIX: &str = "culprit";

/// The `source` label of the correlator's input (the anomalies topic) on `decode_errors` and
/// `dlq`; the embedders' inputs are their sources.
pub const ANOMALIES_INPUT: &str = "anomalies";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeErrorLabels {
    source: &'static str,
    reason: &'static str,
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
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    service: String,
    output: &'static str,
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
    // 1 ms .. ~9 min in doublings: a batch commits within `commit_interval_ms` of a message's
    // arrival, and a backlog adds its wait on top.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
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
    consumer_lag_seconds: Family<LagLabels, Gauge<f64, AtomicU64>>,
    consumer_held_back: Family<LagLabels, Gauge>,
    output_failures: Family<OutputLabels, Counter>,
    commit_failures: Family<ServiceLabels, Counter>,
    consumer_paused: Family<ServiceLabels, Gauge>,
    processing_latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
}

/// Records into one series of `culprit_processing_latency_seconds` (see
/// [`Metrics::processing_latency`]); cheap to clone, no allocation per observation.
#[derive(Clone, Debug)]
pub struct LatencyRecorder(Histogram);

impl LatencyRecorder {
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
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
            consumer_lag_seconds: Family::default(),
            consumer_held_back: Family::default(),
            output_failures: Family::default(),
            commit_failures: Family::default(),
            consumer_paused: Family::default(),
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
            "Input records that could not be decoded (and went to the dead-letter topic), by input (traces, logs, metrics, changes; anomalies for the correlator) and reason code",
            m.decode_errors.clone(),
        );
        registry.register(
            "dlq",
            "Input records sent to the dead-letter topic, by input (traces, logs, metrics, changes; anomalies for the correlator)",
            m.dlq.clone(),
        );
        registry.register(
            "anomalies",
            "Anomalies the detectors emitted and the embedders published, by source and severity",
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
            "Records between the consumer group's committed offset and the high watermark, by topic and partition, as librdkafka's statistics last reported them (every 5 s; none before the group's first commit)",
            m.consumer_lag.clone(),
        );
        registry.register_with_unit(
            "consumer_lag",
            "Wall-clock time from the Kafka timestamp of a partition's latest handled message to its handling (producer clock against this host's), by topic and partition",
            Unit::Seconds,
            m.consumer_lag_seconds.clone(),
        );
        registry.register(
            "consumer_held_back",
            "Records of consumer_lag that an embedder has read but not committed because their events may still sit in an open window (committed once the window closes; read again after a restart), by topic and partition",
            m.consumer_held_back.clone(),
        );
        registry.register(
            "output_failures",
            "Failed attempts to hand a batch's outputs on before committing its offsets, by service and output: kafka (a produce the broker did not take), store (an embedder's write to the vector store) or alert_hooks (the correlator's PagerDuty, files and API); each is retried with backoff while the consumer is paused",
            m.output_failures.clone(),
        );
        registry.register(
            "commit_failures",
            "Offset commits that failed, by service (a later commit covers them)",
            m.commit_failures.clone(),
        );
        registry.register(
            "consumer_paused",
            "1 while a service's consumer is paused, waiting for a failed output to succeed, by service",
            m.consumer_paused.clone(),
        );
        registry.register_with_unit(
            "processing_latency",
            "Wall-clock time from a message's Kafka timestamp until its outputs were acknowledged and its offset committed, by service (embedder-traces, ..., correlator)",
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

    /// `n` input records of `input` (a source, or [`ANOMALIES_INPUT`] for the correlator) that
    /// failed to decode with the decoder's reason code `reason` (a small fixed set).
    pub fn decode_errors(&self, input: &'static str, reason: &'static str, n: u64) {
        let labels = DecodeErrorLabels {
            source: input,
            reason,
        };
        self.decode_errors.get_or_create(&labels).inc_by(n);
    }

    /// `n` input records of `input` (a source, or [`ANOMALIES_INPUT`]) sent to the dead-letter
    /// topic.
    pub fn dlq(&self, input: &'static str, n: u64) {
        self.dlq
            .get_or_create(&SourceLabels { source: input })
            .inc_by(n);
    }

    /// `n` anomalies of `source` and `severity` emitted.
    pub fn anomalies(&self, source: SourceKind, severity: Severity, n: u64) {
        self.anomalies
            .get_or_create(&AnomalyLabels {
                source: source.as_str(),
                severity: severity_label(severity),
            })
            .inc_by(n);
    }

    /// One incident alert published.
    pub fn incident(&self, status: IncidentStatus) {
        self.incidents
            .get_or_create(&StatusLabels {
                status: status_label(status),
            })
            .inc();
    }

    /// The consumer's offset lag on one partition: records between its committed offset and
    /// the partition's high watermark.
    pub fn consumer_lag(&self, topic: &str, partition: i32, records: i64) {
        self.consumer_lag
            .get_or_create(&lag_labels(topic, partition))
            .set(records);
    }

    /// The consumer's time lag on one partition: from the Kafka timestamp of its latest handled
    /// message to that message's handling.
    pub fn consumer_lag_seconds(&self, topic: &str, partition: i32, lag: Duration) {
        self.consumer_lag_seconds
            .get_or_create(&lag_labels(topic, partition))
            .set(lag.as_secs_f64());
    }

    /// Drops the offset lag of a partition this process no longer reports one for.
    pub fn forget_consumer_lag(&self, topic: &str, partition: i32) {
        self.consumer_lag.remove(&lag_labels(topic, partition));
    }

    /// The records of one partition's offset lag that the embedder holds back uncommitted
    /// because their windows are still open.
    pub fn consumer_held_back(&self, topic: &str, partition: i32, records: i64) {
        self.consumer_held_back
            .get_or_create(&lag_labels(topic, partition))
            .set(records);
    }

    /// Drops the held-back count of a partition that holds nothing back any more.
    pub fn forget_consumer_held_back(&self, topic: &str, partition: i32) {
        self.consumer_held_back
            .remove(&lag_labels(topic, partition));
    }

    /// Drops the time lag of a partition this process no longer reports one for.
    pub fn forget_consumer_lag_seconds(&self, topic: &str, partition: i32) {
        self.consumer_lag_seconds
            .remove(&lag_labels(topic, partition));
    }

    /// `n` failed attempts of `service` to hand its outputs to `output` (`kafka`, `store`,
    /// `alert_hooks`).
    pub fn output_failures(&self, service: &str, output: &'static str, n: u64) {
        self.output_failures
            .get_or_create(&OutputLabels {
                service: service.to_string(),
                output,
            })
            .inc_by(n);
    }

    /// `n` failed offset commits of `service`.
    pub fn commit_failures(&self, service: &str, n: u64) {
        self.commit_failures
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .inc_by(n);
    }

    /// Whether `service`'s consumer is paused for a failing output.
    pub fn consumer_paused(&self, service: &str, paused: bool) {
        self.consumer_paused
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .set(i64::from(paused));
    }

    /// The processing latency series of `service` (`embedder-traces`, ..., `correlator`): each
    /// observation is one message, from its Kafka timestamp until its outputs were acknowledged
    /// and its offset committed.
    pub fn processing_latency(&self, service: &str) -> LatencyRecorder {
        LatencyRecorder(
            self.processing_latency
                .get_or_create(&ServiceLabels {
                    service: service.to_string(),
                })
                .clone(),
        )
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

fn lag_labels(topic: &str, partition: i32) -> LagLabels {
    LagLabels {
        topic: topic.to_string(),
        partition,
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
