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
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
}

/// The alerts topic as a sink, for alerts produced outside the correlator's consume loop. A
/// payload the broker refuses for its size is rejected for good; anything else may pass later.
#[async_trait::async_trait]
impl culprit_sink::AlertSink for AlertWriter {
    fn name(&self) -> &str {
        &self.topic
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), culprit_sink::SinkError> {
        let payload =
            serde_json::to_vec(alert).map_err(|source| culprit_sink::SinkError::Serialize {
                incident_id: alert.incident_id.clone(),
                source,
            })?;
        let record = FutureRecord::to(&self.topic)
            .key(&alert.incident_id)
            .payload(&payload);
        match self.producer.send(record, Duration::from_secs(0)).await {
            Ok(_) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                Err(culprit_sink::SinkError::Rejected {
                    sink: self.topic.clone(),
                    reason: format!("{} bytes is over the broker's message size", payload.len()),
                })
            }
            Err((e, _)) => Err(culprit_sink::SinkError::Unavailable {
                sink: self.topic.clone(),
                source: Box::new(e),
            }),
        }
    }
}
