//! Runs culprit's two pipeline stages as Kafka consumer services, and is the only crate that
//! talks to Kafka:
//!
//! ```text
//! otlp_spans / otlp_logs / otlp_metrics / culprit.changes
//!     -> run_embedder (one per source; decode, time guard, DetectStage, EventSink)
//!                                         -> culprit.dlq (bad input, impossible timestamps)
//!     -> culprit.anomalies (JSON BusMessages keyed by environment)
//!     -> run_correlator (CorrelateStage, AlertSink)
//!     -> culprit.alerts (JSON RcaAlerts keyed by incident_id)
//! ```
//!
//! # Delivery guarantee
//!
//! At least once, end to end. Each service commits its input offsets in batches, and only after
//! everything the batch produced was acknowledged by the broker (`acks=all`) and its hook
//! ([`EventSink`] / `culprit_sink::AlertSink`) succeeded; failures pause the consumer and are retried
//! with exponential backoff, never skipped. A crash redelivers at most the uncommitted batches,
//! so consumers of the outputs must tolerate duplicates: anomalies have stable ids, alerts a
//! stable `(incident_id, revision)`, events a stable [`event_key`]. The full protocol is in the
//! `worker` module; rebuilding state after a restart is described on [`Rewind`].
//!
//! # Calling it
//!
//! ```no_run
//! # async fn demo() -> Result<(), culprit_kafka::ServiceError> {
//! use culprit_kafka::{run_embedder, EmbedderOptions, KafkaConfig};
//! let config = KafkaConfig::default();
//! let stage = culprit_pipeline::DetectStage::new(&Default::default());
//! let options = EmbedderOptions { warmup_secs: 1200, ..Default::default() };
//! run_embedder(&config, culprit_core::SourceKind::Logs, stage, options, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! `rdkafka` is re-exported for tests and tools that need a bare client against the same broker.
#![forbid(unsafe_code)]

mod alert_writer;
mod client;
mod config;
mod correlator;
mod embedder;
mod error;
mod hooks;
pub mod relearn;
pub mod snapshot;
mod stats;
mod time_guard;
mod worker;

pub use alert_writer::AlertWriter;
pub use client::{base_client_config, brokers_reachable, client_config, ensure_topics};
pub use config::{EncodingsConfig, KafkaConfig, Rewind, TopicsConfig};
pub use correlator::{run_correlator, CorrelatorOptions};
pub use embedder::{run_embedder, EmbedderOptions, SOURCE_HEADER};
pub use error::ServiceError;
pub use hooks::{event_key, EventSink, NoopSink};
pub use rdkafka;
pub use relearn::{RelearnError, RelearnInbox, RelearnReport, RelearnRequest, Relearners};
pub use stats::{
    LatencyHistogram, LatencyObserver, PartitionLag, Stats, StatsSnapshot, LATENCY_BUCKETS_MS,
};

/// A future that completes on Ctrl-C or, on Unix, SIGTERM: the usual `shutdown` argument.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Compile-time check: the service futures can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn service_futures_are_send(config: &KafkaConfig) {
    fn send<T: Send>(_: T) {}
    send(run_embedder(
        config,
        culprit_core::SourceKind::Logs,
        culprit_pipeline::DetectStage::new(&Default::default()),
        EmbedderOptions::default(),
        shutdown_signal(),
    ));
    send(run_correlator(
        config,
        culprit_pipeline::CorrelateStage::new(Default::default()),
        CorrelatorOptions::default(),
        shutdown_signal(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_name_the_documented_topics_and_groups() {
        let c = KafkaConfig::default();
        assert_eq!(
            c.all_topics(),
            [
                "otlp_spans",
                "otlp_logs",
                "otlp_metrics",
                "culprit.changes",
                "culprit.anomalies",
                "culprit.alerts",
                "culprit.dlq"
            ]
        );
        assert_eq!(
            c.embedder_group(culprit_core::SourceKind::Traces),
            "culprit-embedder-traces"
        );
        assert_eq!(c.correlator_group, "culprit-correlator");
    }

    #[test]
    fn config_reads_collector_encodings_rewinds_and_extra_properties_from_toml() {
        let c: KafkaConfig = toml::from_str(
            r#"
            brokers = "kafka-1:9093"
            embedder_rewind = "beginning"
            correlator_rewind = { messages = 500 }
            [encodings]
            logs = "otlp_json"
            spans = "otlp_proto"
            [extra]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanisms" = "PLAIN"
            "#,
        )
        .unwrap();
        assert_eq!(c.brokers, "kafka-1:9093");
        assert_eq!(c.encodings.logs, culprit_otlp::Encoding::Json);
        assert_eq!(c.encodings.spans, culprit_otlp::Encoding::Protobuf);
        assert_eq!(c.embedder_rewind, Rewind::Beginning);
        assert_eq!(c.correlator_rewind, Rewind::Messages(500));
        assert_eq!(c.extra["security.protocol"], "SASL_SSL");
        assert_eq!(
            c.topics.alerts, "culprit.alerts",
            "unset fields keep their defaults"
        );
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let err = toml::from_str::<KafkaConfig>("broker = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn extra_properties_reach_the_client_configuration() {
        let mut c = KafkaConfig::default();
        c.extra.insert("security.protocol".into(), "SSL".into());
        let client = base_client_config(&c);
        assert_eq!(client.get("security.protocol"), Some("SSL"));
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn tls_without_a_configured_ca_probes_the_system_ca_bundle() {
        let mut c = KafkaConfig::default();
        assert_eq!(client_config(&c).unwrap().get("ssl.ca.location"), None);
        c.extra
            .insert("security.protocol".into(), "SASL_SSL".into());
        assert_eq!(
            client_config(&c).unwrap().get("ssl.ca.location"),
            Some("probe")
        );
        assert_eq!(base_client_config(&c).get("ssl.ca.location"), Some("probe"));
        c.extra
            .insert("ssl.ca.location".into(), "/etc/kafka/ca.pem".into());
        assert_eq!(
            client_config(&c).unwrap().get("ssl.ca.location"),
            Some("/etc/kafka/ca.pem")
        );
        c.extra.remove("ssl.ca.location");
        c.extra.insert("ssl.ca.pem".into(), "-----BEGIN ...".into());
        assert_eq!(client_config(&c).unwrap().get("ssl.ca.location"), None);
    }

    fn secret_file(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("culprit-kafka-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn secret_properties_are_read_from_their_files_without_the_trailing_newline() {
        let path = secret_file("password", "s3cret with spaces \n");
        let c: KafkaConfig = toml::from_str(&format!(
            "[extra]\n\"sasl.username\" = \"culprit\"\n[extra_files]\n\"sasl.password\" = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        let client = client_config(&c).unwrap();
        assert_eq!(client.get("sasl.username"), Some("culprit"));
        assert_eq!(client.get("sasl.password"), Some("s3cret with spaces "));
        assert_eq!(
            base_client_config(&c).get("sasl.password"),
            Some("s3cret with spaces ")
        );
    }

    #[test]
    fn a_missing_or_empty_secret_file_or_a_property_set_twice_is_an_error_naming_it() {
        let mut c = KafkaConfig::default();
        c.extra_files.insert(
            "sasl.password".into(),
            "/nonexistent/culprit/password".into(),
        );
        let err = client_config(&c).unwrap_err().to_string();
        assert!(
            err.contains("sasl.password") && err.contains("/nonexistent/culprit/password"),
            "{err}"
        );
        // The lenient variant leaves the property out instead of stopping.
        assert_eq!(base_client_config(&c).get("sasl.password"), None);

        c.extra_files
            .insert("sasl.password".into(), secret_file("empty", "\n"));
        let err = client_config(&c).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");

        c.extra_files
            .insert("sasl.password".into(), secret_file("set-twice", "x"));
        c.extra.insert("sasl.password".into(), "plain".into());
        let err = client_config(&c).unwrap_err().to_string();
        assert!(err.contains("also set in kafka.extra"), "{err}");
    }
}
