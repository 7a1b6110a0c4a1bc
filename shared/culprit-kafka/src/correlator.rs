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
//! One watermark cannot move the clock far: a watermark more than `max_event_time_skew_secs`
//! ahead of its source's previous one (for a source's first, of the newest source's) is held
//! until it is confirmed, by another source's watermark reaching it or by its own source's next
//! watermark moving on from it, and forgotten when its source goes on from before it. A bad
//! timestamp that got past the embedder's guard in one source then resolves no incident, while a
//! real gap in event time that the sources share, or a lone source's, costs one watermark's
//! delay. Bad stamps in two sources at once confirm each other: the embedder's guard is the
//! defence against those.
//!
//! # Restart recovery
//!
//! Incident windows live in memory. A correlator newly assigned a partition re-reads it from
//! before its committed offset (`correlator_rewind`: a number of messages, or the beginning),
//! feeding the stage exactly as the first time, but publishing nothing: every alert those
//! messages caused was published before they were committed. Incidents that opened and closed
//! within the re-read range are thus rebuilt and closed again silently; incidents still open at
//! the committed offset are open again with their anomalies, ranking and revision, and their next
//! alert continues their revision sequence under the same id. The alerts the re-reading produces
//! go to the `restore` sink only (the API's incident list: local state, which a restart emptied),
//! never to the alerts topic or the publisher, which would page again. Limits: an incident that began
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
    /// Receives the alerts of incidents rebuilt from re-read messages (see Restart recovery):
    /// destinations holding local state, such as the API's incident list, never ones that page
    /// or publish. Same delivery policy as `publisher`. Nothing by default.
    pub restore: Arc<dyn AlertSink>,
    /// Counters of this instance.
    pub stats: Arc<Stats>,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        CorrelatorOptions {
            publisher: Arc::new(culprit_sink::FanOut::default()),
            restore: Arc::new(culprit_sink::FanOut::default()),
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
        clock: SourceClock::new(
            config.watermark_max_lag_secs,
            config.max_event_time_skew_secs,
        ),
        alerts_topic: config.topics.alerts.clone(),
        dlq_topic: config.topics.dlq.clone(),
        dlq_max_payload: config.dlq_max_payload_bytes,
        publisher: options.publisher,
        restore: options.restore,
        pending: VecDeque::new(),
        restoring: VecDeque::new(),
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
    restore: Arc<dyn AlertSink>,
    /// Alerts of the current batch not yet handed to the publisher, oldest first.
    pending: VecDeque<RcaAlert>,
    /// Alerts of re-read messages not yet handed to the restore sink, oldest first.
    restoring: VecDeque<RcaAlert>,
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
            self.restoring.extend(alerts);
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

    fn pending(&self) -> usize {
        self.pending.len() + self.restoring.len()
    }

    async fn before_commit(&mut self) -> anyhow::Result<()> {
        while let Some(alert) = self.restoring.front() {
            culprit_sink::deliver(self.restore.as_ref(), alert).await?;
            self.restoring.pop_front();
        }
        while let Some(alert) = self.pending.front() {
            culprit_sink::deliver(self.publisher.as_ref(), alert).await?;
            self.pending.pop_front();
        }
        Ok(())
    }
}

/// The correlator's event-time clock: the oldest of the sources' newest watermarks, leaving out
/// sources more than `max_lag` behind the newest one, and the changes source (its embedder only
/// ticks when a change arrives, and a late change merely joins the next incident). Watermarks
/// jumping further than `max_jump` wait for confirmation (see the module documentation).
///
/// It depends on nothing but the order of the watermarks it is shown, so re-reading a partition
/// rebuilds exactly the state (incidents, revisions) the first reading had.
#[derive(Debug)]
pub(crate) struct SourceClock {
    max_lag: UnixNanos,
    max_jump: Option<UnixNanos>,
    /// The newest trusted watermark of each source.
    sources: BTreeMap<String, UnixNanos>,
    /// Per source: a watermark that jumped further than `max_jump`, until it is confirmed.
    jumps: BTreeMap<String, UnixNanos>,
    forwarded: UnixNanos,
}

impl SourceClock {
    /// `max_jump_secs` 0 trusts every watermark.
    pub(crate) fn new(max_lag_secs: u32, max_jump_secs: u64) -> SourceClock {
        SourceClock {
            max_lag: i64::from(max_lag_secs) * NANOS_PER_SEC,
            max_jump: (max_jump_secs > 0).then(|| {
                i64::try_from(max_jump_secs).map_or(i64::MAX, |s| s.saturating_mul(NANOS_PER_SEC))
            }),
            sources: BTreeMap::new(),
            jumps: BTreeMap::new(),
            forwarded: i64::MIN,
        }
    }

    pub(crate) fn observe(&mut self, source: &str, time: UnixNanos) {
        let Some(jump) = self.max_jump else {
            self.trust(source, time);
            return;
        };
        let base = self
            .sources
            .get(source)
            .copied()
            .or_else(|| self.sources.values().copied().max());
        let moves_on = self
            .jumps
            .get(source)
            .is_some_and(|&held| time > held && time <= held.saturating_add(jump));
        if base.is_some_and(|b| time > b.saturating_add(jump)) && !moves_on {
            self.jumps.insert(source.to_string(), time);
        } else {
            // Moving on from a held jump confirms it; going on from before it forgets it.
            self.jumps.remove(source);
            self.trust(source, time);
        }
        // Another source's watermark (trusted or held) at or near a held jump confirms it.
        let confirmed: Vec<(String, UnixNanos)> = self
            .jumps
            .iter()
            .filter(|(s, held)| {
                self.sources
                    .iter()
                    .chain(&self.jumps)
                    .any(|(other, t)| other != *s && *t >= held.saturating_sub(jump))
            })
            .map(|(s, held)| (s.clone(), *held))
            .collect();
        for (s, held) in confirmed {
            self.jumps.remove(&s);
            self.trust(&s, held);
        }
    }

    fn trust(&mut self, source: &str, time: UnixNanos) {
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
        let mut clock = SourceClock::new(300, 86_400);
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
        let mut clock = SourceClock::new(300, 86_400);
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

    const DAY: i64 = 86_400 * S;
    const YEAR_2100: i64 = 4_102_444_800 * S;

    #[test]
    fn one_watermark_from_2100_does_not_move_the_clock() {
        let mut clock = SourceClock::new(300, 86_400);
        for source in ["traces", "logs", "metrics"] {
            clock.observe(source, 1_000 * S);
        }
        assert_eq!(clock.take_advance(), Some(1_000 * S));
        clock.observe("traces", YEAR_2100);
        assert_eq!(clock.take_advance(), None, "held, not trusted");
        clock.observe("logs", 1_010 * S);
        clock.observe("metrics", 1_020 * S);
        clock.observe("traces", 1_030 * S);
        assert_eq!(clock.take_advance(), Some(1_010 * S), "the others go on");
        // traces went on from before its jump, which is forgotten; a source seen for the first
        // time far ahead of the others is held too, and nothing confirms it.
        clock.observe("changes", YEAR_2100);
        clock.observe("changes", YEAR_2100);
        assert_eq!(clock.take_advance(), None);
    }

    #[test]
    fn a_jump_every_source_makes_or_one_source_moves_on_from_is_followed() {
        let mut clock = SourceClock::new(300, 86_400);
        clock.observe("traces", 1_000 * S);
        clock.observe("logs", 1_000 * S);
        assert_eq!(clock.take_advance(), Some(1_000 * S));
        // Both sources resume two days later: the second confirms the first.
        clock.observe("traces", 2 * DAY);
        assert_eq!(clock.take_advance(), None);
        clock.observe("logs", 2 * DAY + 5 * S);
        assert_eq!(clock.take_advance(), Some(2 * DAY));

        // A lone source skipping two days: its next watermark confirms it.
        let mut lone = SourceClock::new(300, 86_400);
        lone.observe("traces", 1_000 * S);
        assert_eq!(lone.take_advance(), Some(1_000 * S));
        lone.observe("traces", 3 * DAY);
        assert_eq!(lone.take_advance(), None);
        lone.observe("traces", 3 * DAY + S);
        assert_eq!(lone.take_advance(), Some(3 * DAY + S));
    }

    #[test]
    fn zero_max_jump_trusts_every_watermark() {
        let mut clock = SourceClock::new(300, 0);
        clock.observe("traces", 1_000 * S);
        clock.observe("traces", YEAR_2100);
        assert_eq!(clock.take_advance(), Some(YEAR_2100));
    }

    #[test]
    fn only_changes_still_move_the_clock() {
        let mut clock = SourceClock::new(300, 86_400);
        clock.observe("changes", 10 * S);
        assert_eq!(clock.take_advance(), Some(10 * S));
    }
}

#[cfg(test)]
mod handler_tests {
    use super::*;
    use culprit_core::{Anomaly, Severity};
    use std::sync::Mutex;

    fn handler(
        publisher: Arc<dyn AlertSink>,
        restore: Arc<dyn AlertSink>,
        stats: Arc<Stats>,
    ) -> CorrelateHandler {
        CorrelateHandler {
            stage: CorrelateStage::new(Default::default()),
            clock: SourceClock::new(300, 86_400),
            alerts_topic: "culprit.alerts".to_string(),
            dlq_topic: "culprit.dlq".to_string(),
            dlq_max_payload: 1 << 20,
            publisher,
            restore,
            pending: VecDeque::new(),
            restoring: VecDeque::new(),
            stats,
        }
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<RcaAlert>>);

    #[async_trait::async_trait]
    impl AlertSink for Collect {
        fn name(&self) -> &str {
            "collect"
        }

        async fn emit(&self, alert: &RcaAlert) -> Result<(), culprit_sink::SinkError> {
            self.0.lock().unwrap().push(alert.clone());
            Ok(())
        }
    }

    impl Collect {
        fn ids(&self) -> Vec<(String, u32)> {
            let alerts = self.0.lock().unwrap();
            alerts
                .iter()
                .map(|a| (a.incident_id.clone(), a.revision))
                .collect()
        }
    }

    /// An incident's anomalies, then event time moving on past it.
    fn incident_records() -> Vec<Vec<u8>> {
        let anomaly = |service: &str, signal: &str, secs: i64| {
            BusMessage::Anomaly(Anomaly {
                id: format!("{service}-{secs}"),
                time: secs * NANOS_PER_SEC,
                source: SourceKind::Traces,
                service: service.into(),
                environment: "prod".into(),
                instance: None,
                signal: signal.into(),
                description: String::new(),
                severity: Severity::Sev1,
                score: 1.0,
                observed: None,
                expected: None,
            })
        };
        let mut messages = vec![
            anomaly("inventory", "span.errors", 1_000),
            anomaly("inventory", "span.latency", 1_001),
            anomaly("cart", "span.latency", 1_002),
            anomaly("checkout", "span.errors", 1_003),
        ];
        messages.push(BusMessage::Watermark {
            time: 1_100 * NANOS_PER_SEC,
        });
        messages
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap())
            .collect()
    }

    fn feed(h: &mut CorrelateHandler, records: &[Vec<u8>], replay: bool) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (offset, payload) in records.iter().enumerate() {
            let msg = Incoming {
                topic: "culprit.anomalies",
                partition: 0,
                offset: offset as i64,
                key: Some(b"prod"),
                payload,
                headers: vec![(SOURCE_HEADER, b"traces")],
                timestamp_ms: None,
            };
            h.handle(&msg, replay, &mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn incidents_rebuilt_from_re_read_messages_go_to_the_restore_sink_only() {
        let records = incident_records();
        let (published, restored) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let mut live = handler(published.clone(), restored.clone(), Arc::new(Stats::new()));
        let out = feed(&mut live, &records, false);
        live.before_commit().await.unwrap();
        let alerts = published.ids();
        assert!(!alerts.is_empty(), "the records open an incident");
        assert_eq!(out.len(), alerts.len(), "each alert on the topic too");

        let (published, restored) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let mut rebuilt = handler(published.clone(), restored.clone(), Arc::new(Stats::new()));
        let out = feed(&mut rebuilt, &records, true);
        assert!(out.is_empty(), "nothing published");
        assert_eq!(rebuilt.pending(), alerts.len(), "waiting for the hook");
        rebuilt.before_commit().await.unwrap();
        assert_eq!(restored.ids(), alerts, "the same incidents, rebuilt");
        assert!(published.ids().is_empty(), "nothing paged again");
        assert_eq!(rebuilt.pending(), 0);
    }

    #[test]
    fn a_record_that_is_no_bus_message_counts_as_a_decode_error_and_a_dead_letter() {
        let stats = Arc::new(Stats::new());
        let noop = Arc::new(culprit_sink::FanOut::default());
        let mut h = handler(noop.clone(), noop, stats.clone());
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
