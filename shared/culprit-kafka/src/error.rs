use rdkafka::error::KafkaError;
use std::time::Duration;

/// Why a service stopped. Transient broker, store and alert-hook failures never surface here:
/// they are retried with backoff while the consumer is paused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A client could not be created or subscribed (bad configuration, unknown property in
    /// `extra`, unreachable bootstrap list is *not* one of these: librdkafka keeps retrying).
    #[error("cannot set up the Kafka {what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: KafkaError,
    },

    /// A property of `extra_files` could not be read, or is also set in `extra`.
    #[error("cannot set the Kafka property {property} from {path}: {reason}")]
    SecretFile {
        property: String,
        path: std::path::PathBuf,
        reason: String,
    },

    /// A topic could not be created.
    #[error("cannot create topic {topic}: {reason}")]
    Topic { topic: String, reason: String },

    /// Shutdown was asked for while work could not be finished (broker or hook down); nothing of
    /// that work was committed, so the next instance does it again.
    #[error("shutdown gave up after {0:?} with work not yet published; it will be redelivered")]
    ShutdownTimeout(Duration),

    /// A bug or an impossible state inside the worker.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}
