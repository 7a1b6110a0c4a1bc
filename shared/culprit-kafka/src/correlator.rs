//! The correlator service: `culprit.anomalies` -> [`CorrelateStage`] -> `culprit.alerts` and an
//! alert sink (`culprit_sink::AlertSink`).
//!
//! Instances share the consumer group `culprit-correlator`; anomalies are keyed by environment,
//! so one instance owns each environment. Every alert the stage returns (an incident opening, a
//! change of its ranking, its resolution) is published as JSON keyed by `incident_id` and handed
//! to the publisher; the batch's offsets are committed only after both succeeded (at least once:
//! after a crash an alert may be published again with the same `incident_id` and `revision`).
//!
//! # Event-time clock
//!
//! Each embedder publishes watermarks of its own source's event time, and sources run at
//! different speeds (a backlog of logs, a quiet changes topic). The correlator keeps the newest
//! watermark per source (header `culprit.source`) and advances the stage to the *oldest* of them,
//! so an incident is not resolved because one fast source ran ahead of the others' anomalies. A
//! source more than `watermark_max_lag_secs` of event time behind the newest (stalled, or gone)
//! stops holding the clock back, and so does the changes source, which only ticks when a change
//! arrives. Several instances of one source count as one: the newest of their watermarks. The
//! clock reads no wall clock, so the stage is a function of the partition's message order.
//!
//! # Restart recovery
//!
//! Incident windows live in memory. A correlator newly assigned a partition re-reads it from
//! before its committed offset (`correlator_rewind`: a number of messages, or the beginning),
//! feeding the stage exactly as the first time, but publishing nothing: every alert those
//! messages caused was published before they were committed. Incidents that opened and closed
//! within the re-read range are thus rebuilt and closed again silently; incidents still open at
//! the committed offset are open again with their anomalies, ranking and revision, and their next
//! alert continues their revision sequence under the same id. Limits: an incident that began
//! before the re-read range is rebuilt from its later anomalies only and gets a new id (size the
//! rewind to cover `max_incident_secs`, or use `"beginning"`); and with several environments on
//! one instance the interleaving of their partitions can differ between the two readings, which
//! can shift when a watermark reaches another environment's incident and hence its revision
//! numbers (never its id). Alert consumers should treat `(incident_id, revision)` as a hint and
//! the latest `updated_at` as the truth.

use crate::client::{producer, subscribed_consumer, Outgoing};
use crate::config::KafkaConfig;
use crate::embedder::SOURCE_HEADER;
use crate::error::ServiceError;
use crate::stats::Stats;
use crate::worker::{self, Handler, Incoming, Worker};
use anyhow::Context as _;
use culprit_core::{RcaAlert, SourceKind, UnixNanos, NANOS_PER_SEC};
use culprit_pipeline::{BusMessage, CorrelateStage};
use culprit_sink::AlertSink;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// What a correlator needs besides its configuration and stage.
#[derive(Clone)]
pub struct CorrelatorOptions {
    /// Receives every published alert (the API's incident list, PagerDuty), under
    /// [`culprit_sink::deliver`]'s policy: a rejected alert is given up, a transient failure
    /// pauses the correlator and is retried. Nothing by default.
    pub publisher: Arc<dyn AlertSink>,
    /// Counters of this instance.
    pub stats: Arc<Stats>,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        CorrelatorOptions {
            publisher: Arc::new(culprit_sink::FanOut::default()),
            stats: Arc::new(Stats::new()),
        }
    }
}

/// Runs one correlator until `shutdown` completes, then finishes in-flight work, commits and
/// returns. Open incidents are not resolved at shutdown: the next owner rebuilds them.
pub async fn run_correlator(
    config: &KafkaConfig,
    stage: CorrelateStage,
    options: CorrelatorOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let group = config.correlator_group.clone();
    let client_id = format!("{}-correlator", config.client_id);
    let (consumer, partitions) = subscribed_consumer(
        config,
        &group,
        &client_id,
        &config.topics.anomalies,
        config.correlator_rewind,
        options.stats.clone(),
    )?;
    tracing::info!(topic = %config.topics.anomalies, %group, "correlator started");
    let handler = CorrelateHandler {
        stage,
        clock: SourceClock::new(config.watermark_max_lag_secs),
        alerts_topic: config.topics.alerts.clone(),
        dlq_topic: config.topics.dlq.clone(),
        dlq_max_payload: config.dlq_max_payload_bytes,
        publisher: options.publisher,
        pending: VecDeque::new(),
        stats: options.stats.clone(),
    };
    let worker = Worker {
        config: config.clone(),
        consumer,
        producer: producer(config, &client_id)?,
        partitions,
        stats: options.stats,
        handler,
    };
    worker::run(worker, shutdown).await
}

/// Reason code of an anomalies-topic record that is not a `BusMessage`.
const MALFORMED_BUS_MESSAGE: &str = "malformed_bus_message";

struct CorrelateHandler {
    stage: CorrelateStage,
    clock: SourceClock,
    alerts_topic: String,
    dlq_topic: String,
    dlq_max_payload: usize,
    publisher: Arc<dyn AlertSink>,
    /// Alerts of the current batch not yet handed to the publisher, oldest first.
    pending: VecDeque<RcaAlert>,
    stats: Arc<Stats>,
}

impl CorrelateHandler {
    fn emit(
        &mut self,
        alerts: Vec<RcaAlert>,
        replay: bool,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        if replay {
            return Ok(());
        }
        for alert in alerts {
            out.push(Outgoing {
                topic: self.alerts_topic.clone(),
                key: Some(alert.incident_id.clone()),
                payload: serde_json::to_vec(&alert).context("serialising an alert")?,
                headers: Vec::new(),
            });
            self.stats.alerts_published.fetch_add(1, Relaxed);
            self.pending.push_back(alert);
        }
        Ok(())
    }

    fn advance(&mut self, replay: bool, out: &mut Vec<Outgoing>) -> anyhow::Result<()> {
        if let Some(time) = self.clock.take_advance() {
            let alerts = self.stage.handle([BusMessage::Watermark { time }]);
            self.emit(alerts, replay, out)?;
        }
        Ok(())
    }
}

impl Handler for CorrelateHandler {
    fn handle(
        &mut self,
        msg: &Incoming<'_>,
        replay: bool,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        let message: BusMessage = match serde_json::from_slice(msg.payload) {
            Ok(m) => m,
            Err(e) => {
                if !replay {
                    self.stats.add_decode_error(MALFORMED_BUS_MESSAGE);
                    self.stats.dlq_messages.fetch_add(1, Relaxed);
                    out.push(msg.dead_letter(
                        &self.dlq_topic,
                        MALFORMED_BUS_MESSAGE,
                        &e.to_string(),
                        self.dlq_max_payload,
                    ));
                }
                return Ok(());
            }
        };
        match message {
            BusMessage::Watermark { time } => {
                let source = msg
                    .header(SOURCE_HEADER)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default();
                self.clock.observe(&source, time);
                self.advance(replay, out)
            }
            other => {
                let alerts = self.stage.handle([other]);
                self.emit(alerts, replay, out)
            }
        }
    }

    async fn before_commit(&mut self) -> anyhow::Result<()> {
        while let Some(alert) = self.pending.front() {
            culprit_sink::deliver(self.publisher.as_ref(), alert).await?;
            self.pending.pop_front();
        }
        Ok(())
    }
}

/// The correlator's event-time clock: the oldest of the sources' newest watermarks, leaving out
/// sources more than `max_lag` behind the newest one, and the changes source (its embedder only
/// ticks when a change arrives, and a late change merely joins the next incident).
///
/// It depends on nothing but the order of the watermarks it is shown, so re-reading a partition
/// rebuilds exactly the state (incidents, revisions) the first reading had.
#[derive(Debug)]
pub(crate) struct SourceClock {
    max_lag: UnixNanos,
    sources: BTreeMap<String, UnixNanos>,
    forwarded: UnixNanos,
}

impl SourceClock {
    pub(crate) fn new(max_lag_secs: u32) -> SourceClock {
        SourceClock {
            max_lag: i64::from(max_lag_secs) * NANOS_PER_SEC,
            sources: BTreeMap::new(),
            forwarded: i64::MIN,
        }
    }

    pub(crate) fn observe(&mut self, source: &str, time: UnixNanos) {
        let newest = self.sources.entry(source.to_string()).or_insert(time);
        *newest = (*newest).max(time);
    }

    /// The new clock value, when it moved forward since the last call.
    pub(crate) fn take_advance(&mut self) -> Option<UnixNanos> {
        let changes = SourceKind::Changes.as_str();
        let holding: Vec<UnixNanos> = self
            .sources
            .iter()
            .filter(|(s, _)| s.as_str() != changes)
            .map(|(_, t)| *t)
            .collect();
        let candidates = if holding.is_empty() {
            self.sources.values().copied().collect()
        } else {
            holding
        };
        let newest = candidates.iter().copied().max()?;
        let clock = candidates
            .into_iter()
            .filter(|t| *t >= newest.saturating_sub(self.max_lag))
            .min()?;
        if clock > self.forwarded {
            self.forwarded = clock;
            Some(clock)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS_PER_SEC;

    #[test]
    fn clock_follows_the_slowest_source_within_the_lag() {
        let mut clock = SourceClock::new(300);
        clock.observe("traces", 100 * S);
        assert_eq!(clock.take_advance(), Some(100 * S));
        clock.observe("logs", 50 * S);
        assert_eq!(
            clock.take_advance(),
            None,
            "a slower source holds the clock back"
        );
        clock.observe("traces", 300 * S);
        clock.observe("logs", 200 * S);
        assert_eq!(clock.take_advance(), Some(200 * S));
        assert_eq!(clock.take_advance(), None, "nothing moved");
    }

    #[test]
    fn sources_far_behind_and_the_changes_source_do_not_hold_the_clock_back() {
        let mut clock = SourceClock::new(300);
        clock.observe("changes", 10 * S);
        clock.observe("metrics", 100 * S);
        clock.observe("logs", 90 * S);
        assert_eq!(clock.take_advance(), Some(90 * S));
        clock.observe("metrics", 1_000 * S);
        assert_eq!(
            clock.take_advance(),
            Some(1_000 * S),
            "logs stalled 910 s behind"
        );
    }

    #[test]
    fn only_changes_still_move_the_clock() {
        let mut clock = SourceClock::new(300);
        clock.observe("changes", 10 * S);
        assert_eq!(clock.take_advance(), Some(10 * S));
    }
}

#[cfg(test)]
mod handler_tests {
    use super::*;

    #[test]
    fn a_record_that_is_no_bus_message_counts_as_a_decode_error_and_a_dead_letter() {
        let stats = Arc::new(Stats::new());
        let mut h = CorrelateHandler {
            stage: CorrelateStage::new(Default::default()),
            clock: SourceClock::new(300),
            alerts_topic: "culprit.alerts".to_string(),
            dlq_topic: "culprit.dlq".to_string(),
            dlq_max_payload: 1 << 20,
            publisher: Arc::new(culprit_sink::FanOut::default()),
            pending: VecDeque::new(),
            stats: stats.clone(),
        };
        let msg = Incoming {
            topic: "culprit.anomalies",
            partition: 2,
            offset: 11,
            key: None,
            payload: b"{\"kind\": \"no such kind\"}",
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let mut out = Vec::new();
        h.handle(&msg, false, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "culprit.dlq");
        assert_eq!(stats.decode_errors(MALFORMED_BUS_MESSAGE), 1);
        assert_eq!(stats.dlq_messages.load(Relaxed), 1);
    }
}
