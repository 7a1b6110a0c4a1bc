//! The pluggable ends of the services: where decoded events are stored (the vector store) and
//! where alerts go besides the alerts topic (any `culprit_sink::AlertSink`: the API's incident
//! list, PagerDuty).
//!
//! Both hooks are called before the offsets of the messages they concern are committed, and are
//! retried with backoff while they fail, so they see every message at least once. After a crash
//! or a rebalance they may see some twice: implementations must be idempotent, e.g. a store
//! keyed by [`event_key`], an alert sink deduplicating on `(incident_id, revision)`.

use async_trait::async_trait;
use culprit_core::Event;

/// Receives every decoded event of an embedder, in batches.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Stores `events`. An error makes the embedder pause its partitions and retry the same
    /// batch with exponential backoff until it succeeds.
    async fn write(&self, events: &[culprit_core::Event]) -> anyhow::Result<()>;
}

/// The default sink: stores nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

#[async_trait]
impl EventSink for NoopSink {
    async fn write(&self, _events: &[Event]) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A stable identity of an event (moved to `culprit-store`, which derives point ids from it).
pub use culprit_store::event_key;
