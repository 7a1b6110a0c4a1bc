//! Settings of the Kafka services, in the `[kafka]` section of culprit's configuration.
//!
//! Every field has a default that works against a local broker; `extra` carries anything else
//! librdkafka understands (TLS, SASL, compression) verbatim to every client, and `extra_files`
//! the secret ones (passwords) from files, so that they never appear in a config file.

use culprit_core::SourceKind;
use culprit_otlp::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Connection, topics, groups and batching of the embedder and correlator services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// `client.id` of every client; the service and source are appended (`culprit-embedder-logs`).
    pub client_id: String,
    /// Topic names.
    pub topics: TopicsConfig,
    /// How the OTLP input topics are encoded (change events are always JSON).
    pub encodings: EncodingsConfig,
    /// Consumer group of an embedder is `<embedder_group_prefix>-<source>`, e.g.
    /// `culprit-embedder-traces`; instances of one source share the group and split its partitions.
    pub embedder_group_prefix: String,
    /// Consumer group of the correlators.
    pub correlator_group: String,
    /// Offsets are committed after at most this many input messages have been fully handled...
    pub commit_batch_messages: usize,
    /// ...or once this many decoded events wait for the store hook...
    pub commit_batch_events: usize,
    /// ...or after this many milliseconds, whichever comes first.
    pub commit_interval_ms: u64,
    /// Input messages larger than this go to the dead-letter topic unread (reason `too_large`).
    pub max_message_bytes: usize,
    /// Dead-lettered payloads larger than this are replaced by an empty payload with a
    /// `culprit.payload_dropped` header giving the size, so the DLQ cannot refuse them.
    pub dlq_max_payload_bytes: usize,
    /// `session.timeout.ms` of the consumers (tansu needs about half of it to join a group).
    pub session_timeout_ms: u32,
    /// `heartbeat.interval.ms` of the consumers.
    pub heartbeat_interval_ms: u32,
    /// First delay before retrying a failed produce, store write or alert hook; doubles per try.
    pub retry_initial_backoff_ms: u64,
    /// Longest delay between two retries.
    pub retry_max_backoff_ms: u64,
    /// How long a shutdown may spend finishing in-flight work before giving up (the work is then
    /// redelivered to the next instance, as nothing of it was committed).
    pub shutdown_timeout_ms: u64,
    /// What an embedder re-reads, state only, from partitions it is newly assigned (see
    /// [`Rewind`]); lets a restarted embedder relearn its baselines.
    pub embedder_rewind: Rewind,
    /// What a correlator re-reads, state only, from partitions it is newly assigned, to rebuild
    /// the incidents open at the last commit without re-publishing their alerts.
    pub correlator_rewind: Rewind,
    /// A source whose watermark is this many seconds of event time behind the newest source's no
    /// longer holds back the correlator's clock (a stalled or removed embedder).
    pub watermark_max_lag_secs: u32,
    /// A worker with records waiting on its partitions that handled none for this many seconds
    /// is reported not ready (`/readyz`), with the reason; 0 turns the check off.
    pub stall_secs: u64,
    /// Events stamped more than this many seconds ahead of the wall clock are dead-lettered
    /// (reason `timestamp_out_of_range`): no producer knows the future, and one such stamp would
    /// carry the watermarks and the store's retention with it. 0 turns the check off.
    pub max_future_skew_secs: u64,
    /// Events more than this many seconds of event time away from their partition's current
    /// event time (robust: a median over its recent messages) are dead-lettered (reason
    /// `timestamp_out_of_range`); the correlator also waits for a second opinion before a
    /// watermark jumps further than this. 0 turns both off.
    pub max_event_time_skew_secs: u64,
    /// Directory where each embedder keeps the snapshot of what its detectors learned
    /// (`<group>.<topic>.state.json`), so a restart continues from it instead of warming up
    /// again. One directory per instance: instances of one source sharing it overwrite each
    /// other's snapshot. Relative paths are from the working directory.
    pub state_dir: PathBuf,
    /// Wall-clock seconds between two snapshots of an embedder's detectors, each written right
    /// after an offset commit (and once more at a clean shutdown). 0: no snapshots are written
    /// or restored, and a restarted embedder warms up again.
    pub snapshot_secs: u64,
    /// librdkafka properties passed verbatim to every client, after culprit's own, e.g.
    /// `security.protocol = "SASL_SSL"`, `sasl.mechanisms = "PLAIN"`, `ssl.ca.location = "..."`.
    pub extra: BTreeMap<String, String>,
    /// librdkafka properties whose value is the content of a file, read each time a client is
    /// created (one trailing newline dropped): secrets mounted from a Kubernetes Secret, e.g.
    /// `"sasl.password" = "/etc/culprit/secrets/kafka/password"`. A property may be set here or
    /// in `extra`, not in both.
    pub extra_files: BTreeMap<String, PathBuf>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            client_id: "culprit".to_string(),
            topics: TopicsConfig::default(),
            encodings: EncodingsConfig::default(),
            embedder_group_prefix: "culprit-embedder".to_string(),
            correlator_group: "culprit-correlator".to_string(),
            commit_batch_messages: 100,
            commit_batch_events: 100_000,
            commit_interval_ms: 1_000,
            max_message_bytes: culprit_otlp::DecodeLimits::DEFAULT_MAX_BYTES,
            dlq_max_payload_bytes: 900_000,
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 1_000,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 30_000,
            shutdown_timeout_ms: 30_000,
            embedder_rewind: Rewind::None,
            correlator_rewind: Rewind::Messages(10_000),
            watermark_max_lag_secs: 300,
            stall_secs: 120,
            max_future_skew_secs: 300,
            // A day: far beyond collector retries and backlogs, well within the store's
            // retention, and it catches wrong units, zero stamps and wrong years or days.
            max_event_time_skew_secs: 86_400,
            state_dir: PathBuf::from("culprit-state"),
            snapshot_secs: 60,
            extra: BTreeMap::new(),
            extra_files: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The input topic of a source.
    pub fn input_topic(&self, source: SourceKind) -> &str {
        match source {
            SourceKind::Traces => &self.topics.spans,
            SourceKind::Logs => &self.topics.logs,
            SourceKind::Metrics => &self.topics.metrics,
            SourceKind::Changes => &self.topics.changes,
        }
    }

    /// The consumer group of a source's embedders.
    pub fn embedder_group(&self, source: SourceKind) -> String {
        format!("{}-{}", self.embedder_group_prefix, source.as_str())
    }

    /// Every topic the services read or write.
    pub fn all_topics(&self) -> Vec<&str> {
        let t = &self.topics;
        vec![
            &t.spans,
            &t.logs,
            &t.metrics,
            &t.changes,
            &t.anomalies,
            &t.alerts,
            &t.dlq,
        ]
    }
}

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// OTLP trace export requests (the Collector Kafka exporter's default `otlp_spans`).
    pub spans: String,
    /// OTLP log export requests.
    pub logs: String,
    /// OTLP metric export requests.
    pub metrics: String,
    /// Change events (CDEvents or culprit's native JSON).
    pub changes: String,
    /// Detector findings, JSON `BusMessage`s keyed by environment.
    pub anomalies: String,
    /// RCA alerts, JSON keyed by incident id.
    pub alerts: String,
    /// Dead letters: input messages that could not be decoded, with the reason in headers.
    pub dlq: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            spans: "otlp_spans".to_string(),
            logs: "otlp_logs".to_string(),
            metrics: "otlp_metrics".to_string(),
            changes: "culprit.changes".to_string(),
            anomalies: "culprit.anomalies".to_string(),
            alerts: "culprit.alerts".to_string(),
            dlq: "culprit.dlq".to_string(),
        }
    }
}

/// Encoding of each OTLP input topic: `protobuf` (alias `otlp_proto`) or `json` (`otlp_json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodingsConfig {
    /// Encoding of the spans topic.
    pub spans: Encoding,
    /// Encoding of the logs topic.
    pub logs: Encoding,
    /// Encoding of the metrics topic.
    pub metrics: Encoding,
}

impl Default for EncodingsConfig {
    fn default() -> Self {
        EncodingsConfig {
            spans: Encoding::Protobuf,
            logs: Encoding::Protobuf,
            metrics: Encoding::Protobuf,
        }
    }
}

/// How far back a service re-reads a partition it has just been assigned, before its committed
/// offset. Re-read messages rebuild in-memory state only: they produce nothing and are not
/// committed again, because everything before the committed offset was already published (the
/// correlator hands the incidents it rebuilt to its local `restore` sink only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewind {
    /// Start at the committed offset with empty state.
    None,
    /// Re-read up to this many messages per partition (TOML: `{ messages = 10000 }`).
    Messages(u64),
    /// Re-read each partition from its first retained message (TOML: `"beginning"`).
    Beginning,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_defaults_print_as_docs_configuration_shows_them() {
        let printed = toml::to_string(&KafkaConfig::default()).unwrap();
        assert!(
            printed.contains(
                "max_event_time_skew_secs = 86400\nstate_dir = \"culprit-state\"\nsnapshot_secs = 60\n"
            ),
            "{printed}"
        );
    }
}
