//! The seam between the detect stage and the correlate stage.

use culprit_core::{Anomaly, DependencyEdge, UnixNanos};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the detect stage tells the correlate stage. In Kafka mode these are the records of the
/// `culprit.anomalies` topic, keyed by environment so one correlator sees all of an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    Anomaly(Anomaly),
    Edge(DependencyEdge),
    /// Event time the detect stage has closed its windows up to: lets the correlator resolve
    /// quiet incidents even when no anomaly arrives.
    Watermark {
        time: UnixNanos,
    },
}

/// Where the detect stage publishes.
pub trait Bus {
    fn publish(&mut self, message: BusMessage);
}

/// The embedded mode's bus: a queue drained by the correlate stage in the same thread.
#[derive(Debug, Default)]
pub struct InProcessBus {
    queue: VecDeque<BusMessage>,
}

impl InProcessBus {
    pub fn drain(&mut self) -> Vec<BusMessage> {
        self.queue.drain(..).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Bus for InProcessBus {
    fn publish(&mut self, message: BusMessage) {
        self.queue.push_back(message);
    }
}
