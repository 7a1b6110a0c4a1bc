//! Publishes alerts that arise outside the correlator's consume loop (the LLM agent's reviews,
//! which finish after the batch that caused them was committed) to the alerts topic, keyed by
//! incident id like every other alert.
//!
//! No offset depends on these writes: a review lost to a broker outage leaves the deterministic
//! revision as the incident's latest, which is a complete alert on its own.

use crate::client::producer;
use crate::config::KafkaConfig;
use crate::error::ServiceError;
use culprit_core::RcaAlert;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// A producer for `topics.alerts`.
#[derive(Clone)]
pub struct AlertWriter {
    producer: FutureProducer,
    topic: String,
}

impl AlertWriter {
    pub fn new(config: &KafkaConfig) -> Result<AlertWriter, ServiceError> {
        Ok(AlertWriter {
            producer: producer(config, &format!("{}-alert-writer", config.client_id))?,
            topic: config.topics.alerts.clone(),
        })
    }

    /// Sends `alert` and waits for the broker's acknowledgement (librdkafka retries within
    /// `message.timeout.ms`).
    pub async fn publish(&self, alert: &RcaAlert) -> Result<(), String> {
        let payload = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        let record = FutureRecord::to(&self.topic)
            .key(&alert.incident_id)
            .payload(&payload);
        self.producer
            .send(record, Duration::from_secs(0))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}
