//! The embedder service: one source's input topic -> decode -> detect -> `culprit.anomalies`.
//!
//! Instances of one source share the consumer group `culprit-embedder-<source>` and split its
//! partitions; each runs its own [`DetectStage`]. Delivery is at least once: offsets are
//! committed in batches, only after the batch's anomalies were acknowledged by the broker, its
//! events accepted by the [`EventSink`] and the points of the windows it closed written to the
//! stage's vector store ([`DetectStage::with_store`], [`DetectStage::write_points`]; see the
//! worker module for the whole protocol). A point is finished when its window closes, so a
//! partition is committed only up to its first message whose events may still sit in an open
//! window ([`DetectStage::settles_at`]): whoever reads the partition next, after a crash or a
//! clean stop, reads those messages again and finishes their windows.
//!
//! Per message:
//!
//! - the payload is decoded with `culprit-otlp` (`decode_changes` on the changes topic), refusing
//!   empty ones and ones over `max_message_bytes`. A message that does not decode goes to the
//!   dead-letter topic with its original key, bytes and headers plus `culprit.reason` (the
//!   decoder's reason code), `culprit.error`, `culprit.source_topic`, `culprit.partition` and
//!   `culprit.offset`; the worker goes on.
//! - its events pass the event-time guard ([`crate::time_guard`]): an event stamped more than
//!   `max_future_skew_secs` ahead of the wall clock, or more than `max_event_time_skew_secs` away
//!   from its partition's current (median) event time, never reaches the detectors, the
//!   watermark or the store. It is dead-lettered with reason `timestamp_out_of_range` and the
//!   bound it broke in `culprit.error`: the original bytes when every event of the message was
//!   refused, otherwise a JSON array of the refused decoded events (header
//!   `culprit.payload = events_json`), since the message's other events were processed.
//! - its events are observed in event-time order, and the stage is ticked with the newest event
//!   time seen so far (partitions interleave, so the clock is the maximum over all of them; an
//!   event older than that still feeds its detector, which decides what lateness it accepts).
//!   The first `warmup_secs` of event time after the first event are learned, not judged,
//!   unless a snapshot of the detectors was restored ([`crate::snapshot`]): then only what
//!   was left of the warm-up when it was saved (nothing, once it passed) is learned, counted
//!   from the first event read, so a stream that resumes behind the snapshot's clock is judged.
//! - the resulting messages go to the anomalies topic as JSON `BusMessage`s keyed by
//!   environment, so one correlator sees a whole environment in order. Watermarks carry no
//!   environment: each one is published once per environment this instance has seen, keyed by
//!   it, so it follows that environment's anomalies in the same partition. Every record carries
//!   the header `culprit.source` (the source), which the correlator uses to hold its clock at the
//!   slowest source.
//!
//! With [`EmbedderOptions::relearners`] the embedder also re-learns a service's baselines from a
//! time range of its topic on request, on a task beside the consumer ([`crate::relearn`]); its
//! stage adopts the result at its next window, or when its input is quiet (the worker's `idle`).

use crate::client::PartitionKey;
use crate::client::{producer, subscribed_consumer, Outgoing};
use crate::config::KafkaConfig;
use crate::error::ServiceError;
use crate::hooks::EventSink;
use crate::relearn::{self, RelearnContext, Relearners};
use crate::snapshot::{self, Snapshot};
use crate::stats::Stats;
use crate::time_guard::{OutOfRange, TimeGuard, TIMESTAMP_OUT_OF_RANGE};
use crate::worker::{self, Handler, Incoming, Worker};
use anyhow::Context as _;
use culprit_core::{Event, SourceKind, UnixNanos, NANOS_PER_SEC};
use culprit_detect::Phase;
use culprit_otlp::{DecodeError, DecodeLimits, Encoding, Signal};
use culprit_pipeline::{Bus, BusMessage, DetectStage};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header naming the source that produced an anomalies-topic record.
pub const SOURCE_HEADER: &str = "culprit.source";

/// What an embedder needs besides its configuration and stage.
#[derive(Clone)]
pub struct EmbedderOptions {
    /// Event time after the first event during which detectors only learn (the pipeline's
    /// `warmup_secs`).
    pub warmup_secs: u32,
    /// Where decoded events are stored (the vector store); [`crate::NoopSink`] by default.
    pub sink: Arc<dyn EventSink>,
    /// Counters of this instance.
    pub stats: Arc<Stats>,
    /// Where this embedder takes requests to re-learn a service from a time range of its topic
    /// ([`crate::relearn`]); none: it takes none. Needs a stage attached to a baseline board.
    pub relearners: Option<Relearners>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            warmup_secs: 0,
            sink: Arc::new(crate::NoopSink),
            stats: Arc::new(Stats::new()),
            relearners: None,
        }
    }
}

/// Runs one embedder of `source` until `shutdown` completes (e.g. `tokio::signal::ctrl_c()`
/// combined with SIGTERM), then finishes in-flight work, commits and returns.
pub async fn run_embedder(
    config: &KafkaConfig,
    source: SourceKind,
    stage: DetectStage,
    options: EmbedderOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let group = config.embedder_group(source);
    let client_id = format!("{}-embedder-{}", config.client_id, source.as_str());
    let topic = config.input_topic(source).to_string();
    let (consumer, partitions) = subscribed_consumer(
        config,
        &group,
        &client_id,
        &topic,
        config.embedder_rewind,
        options.stats.clone(),
    )?;
    tracing::info!(%topic, %group, "embedder started");
    let snapshots = (config.snapshot_secs > 0).then(|| {
        Snapshots::open(
            snapshot::path(&config.state_dir, &group, &topic),
            Duration::from_secs(config.snapshot_secs),
            source,
            &group,
            &topic,
            options.warmup_secs,
        )
    });
    let decoder = Decoder::new(config, source);
    // Re-learns from a time range run on a task of their own, beside the consumer.
    let relearning = options.relearners.as_ref().and_then(|relearners| {
        let Some(board) = stage.board() else {
            tracing::warn!(%topic, "the detect stage is attached to no baseline board: re-learning from a time range is off");
            return None;
        };
        let context = RelearnContext {
            config: config.clone(),
            source,
            topic: topic.clone(),
            decoder,
            board: Some(board),
            fresh: Arc::new(stage.relearner_factory()),
        };
        Some(tokio::spawn(relearn::serve(
            context,
            relearners.register(source),
        )))
    });
    let handler = EmbedHandler {
        source,
        encoding: decoder.encoding,
        limits: decoder.limits,
        stage,
        guard: TimeGuard::new(config.max_future_skew_secs, config.max_event_time_skew_secs),
        warmup: i64::from(options.warmup_secs) * NANOS_PER_SEC,
        learn_until: None,
        newest: i64::MIN,
        environments: BTreeSet::new(),
        anomalies_topic: config.topics.anomalies.clone(),
        dlq_topic: config.topics.dlq.clone(),
        dlq_max_payload: config.dlq_max_payload_bytes,
        sink: options.sink,
        pending: Vec::new(),
        stats: options.stats.clone(),
        snapshots,
        unsettled: HashMap::new(),
    };
    let worker = Worker {
        config: config.clone(),
        consumer,
        producer: producer(config, &client_id)?,
        partitions,
        stats: options.stats,
        handler,
    };
    let result = worker::run(worker, shutdown).await;
    if let Some(task) = relearning {
        // A re-learn in flight is dropped; whoever waits for it hears that the embedder stopped.
        task.abort();
    }
    result
}

struct EmbedHandler {
    source: SourceKind,
    encoding: Encoding,
    limits: DecodeLimits,
    stage: DetectStage,
    guard: TimeGuard,
    warmup: i64,
    learn_until: Option<UnixNanos>,
    newest: UnixNanos,
    environments: BTreeSet<String>,
    anomalies_topic: String,
    dlq_topic: String,
    dlq_max_payload: usize,
    sink: Arc<dyn EventSink>,
    /// Events of the current batch, for the sink.
    pending: Vec<Event>,
    stats: Arc<Stats>,
    /// Where the detectors' state is saved and restored from; None with `snapshot_secs = 0`.
    snapshots: Option<Snapshots>,
    /// Per partition, oldest first: handled messages whose events may still sit in open windows,
    /// each with the stage clock at which they all will have closed ([`DetectStage::settles_at`]).
    unsettled: HashMap<PartitionKey, VecDeque<(i64, UnixNanos)>>,
}

/// An embedder's snapshot file and its schedule ([`crate::snapshot`]).
struct Snapshots {
    path: PathBuf,
    interval: Duration,
    source: SourceKind,
    group: String,
    topic: String,
    /// The snapshot read at start, restored at the first message.
    to_restore: Option<Snapshot>,
    last_written: Option<Instant>,
    /// Offsets committed since the last snapshot that was written, when one is owed: a snapshot
    /// not yet due at a commit is written at the next commit or once the input goes quiet.
    owed: Option<HashMap<PartitionKey, i64>>,
    /// Sequence number of the last snapshot taken, and of the newest one on disk. Writes run on
    /// a blocking thread (serialising and syncing a large state must not hold up the consumer),
    /// one at a time; a write whose snapshot is older than the one on disk is dropped, so the
    /// file only ever moves forward.
    taken: u64,
    on_disk: Arc<std::sync::Mutex<u64>>,
}

impl Snapshots {
    fn open(
        path: PathBuf,
        interval: Duration,
        source: SourceKind,
        group: &str,
        topic: &str,
        warmup_secs: u32,
    ) -> Snapshots {
        let to_restore = match snapshot::read(&path) {
            Ok(Some(s)) if s.group == group && s.topic == topic => Some(s),
            Ok(Some(s)) => {
                tracing::warn!(path = %path.display(), snapshot_group = %s.group, snapshot_topic = %s.topic, "the state snapshot belongs to another group or topic; not restored, warming up for {warmup_secs} s of event time");
                None
            }
            Ok(None) => {
                tracing::info!(path = %path.display(), "no state snapshot; warming up for {warmup_secs} s of event time");
                None
            }
            Err(e) => {
                tracing::warn!("{e}; not restored, warming up for {warmup_secs} s of event time");
                None
            }
        };
        Snapshots {
            path,
            interval,
            source,
            group: group.to_string(),
            topic: topic.to_string(),
            to_restore,
            last_written: None,
            owed: None,
            taken: 0,
            on_disk: Arc::new(std::sync::Mutex::new(0)),
        }
    }
}

/// Collects what the stage publishes.
#[derive(Default)]
struct VecBus(Vec<BusMessage>);

impl Bus for VecBus {
    fn publish(&mut self, message: BusMessage) {
        self.0.push(message);
    }
}

/// Turns a message of one source's topic into events: the live path and a re-learn share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoder {
    pub source: SourceKind,
    pub encoding: Encoding,
    pub limits: DecodeLimits,
}

impl Decoder {
    pub(crate) fn new(config: &KafkaConfig, source: SourceKind) -> Decoder {
        Decoder {
            source,
            encoding: match source {
                SourceKind::Traces => config.encodings.spans,
                SourceKind::Logs => config.encodings.logs,
                SourceKind::Metrics => config.encodings.metrics,
                SourceKind::Changes => Encoding::Json,
            },
            limits: DecodeLimits {
                max_bytes: config.max_message_bytes,
            },
        }
    }

    pub(crate) fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, DecodeError> {
        match self.source {
            SourceKind::Traces => culprit_otlp::decode_with_limits(
                Signal::Traces,
                self.encoding,
                payload,
                &self.limits,
            ),
            SourceKind::Logs => {
                culprit_otlp::decode_with_limits(Signal::Logs, self.encoding, payload, &self.limits)
            }
            SourceKind::Metrics => culprit_otlp::decode_with_limits(
                Signal::Metrics,
                self.encoding,
                payload,
                &self.limits,
            ),
            SourceKind::Changes => {
                culprit_otlp::changes::decode_changes_with_limits(payload, &self.limits)
            }
        }
    }
}

impl EmbedHandler {
    fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, DecodeError> {
        Decoder {
            source: self.source,
            encoding: self.encoding,
            limits: self.limits,
        }
        .decode(payload)
    }

    fn phase(&mut self, time: UnixNanos) -> Phase {
        let learn_until = *self
            .learn_until
            .get_or_insert(time.saturating_add(self.warmup));
        if time < learn_until {
            Phase::Learning
        } else {
            Phase::Detecting
        }
    }

    /// Restores the snapshot read at start, whichever partition `partition` (the first
    /// message's) is: baselines are per service, not per partition, so after a rebalance that
    /// handed this instance other partitions they are still better than a new warm-up.
    fn restore(&mut self, partition: i32) {
        let Some(snapshots) = &mut self.snapshots else {
            return;
        };
        let Some(saved) = snapshots.to_restore.take() else {
            return;
        };
        let path = snapshots.path.display();
        if !saved.offsets.contains_key(&partition) {
            tracing::info!(%path, snapshot_partitions = ?saved.offsets.keys().collect::<Vec<_>>(), partition, "the state snapshot was taken on other partitions; restoring it all the same (baselines are per service): services it never saw are learned as they come");
        }
        let report = self.stage.restore_state(saved.detectors);
        for (name, reason) in &report.refused {
            tracing::warn!(%path, detector = %name, "a detector's saved state was refused ({reason}); it learns afresh");
        }
        // What is left of the warm-up is a property of what the detectors learned, not a point
        // on the event clock: a stream that resumes behind the snapshot's clock (a topic
        // recreated, offsets reset, older data replayed) must not be learned again until it
        // passes that clock. The rest of the warm-up runs from the first event read now.
        let remaining = match saved.learn_until {
            Some(until) => until.saturating_sub(saved.newest).max(0),
            None => self.warmup,
        };
        self.warmup = remaining;
        self.learn_until = None;
        let warmed_up = remaining == 0;
        tracing::info!(
            %path,
            offsets = ?saved.offsets,
            restored = ?report.restored,
            missing = ?report.missing,
            warmed_up,
            "restored the detectors' state from the snapshot; no new warm-up"
        );
    }

    fn save(&mut self, committed: &HashMap<PartitionKey, i64>, last: bool) {
        let Some(snapshots) = &mut self.snapshots else {
            return;
        };
        if snapshots.to_restore.is_some() {
            return;
        }
        if !last
            && snapshots
                .last_written
                .is_some_and(|t| t.elapsed() < snapshots.interval)
        {
            snapshots.owed = Some(committed.clone());
            return;
        }
        snapshots.last_written = Some(Instant::now());
        snapshots.owed = None;
        let offsets = committed
            .iter()
            .filter(|((topic, _), _)| *topic == snapshots.topic)
            .map(|((_, partition), offset)| (*partition, *offset))
            .collect();
        let saved = Snapshot {
            format: snapshot::FORMAT,
            source: snapshots.source.as_str().to_string(),
            topic: snapshots.topic.clone(),
            group: snapshots.group.clone(),
            offsets,
            written_at_ms: culprit_core::wall_clock_ms().max(0) as u64,
            learn_until: self.learn_until,
            newest: self.newest,
            detectors: self.stage.save_state(),
        };
        snapshots.taken += 1;
        let (seq, path, on_disk) = (
            snapshots.taken,
            snapshots.path.clone(),
            snapshots.on_disk.clone(),
        );
        let write = move || {
            let mut newest = on_disk.lock().unwrap_or_else(|e| e.into_inner());
            if *newest > seq {
                return; // a later snapshot was written first
            }
            match snapshot::write(&path, &saved) {
                Ok(()) => {
                    *newest = seq;
                    if last {
                        tracing::info!(path = %path.display(), offsets = ?saved.offsets, "state snapshot written at shutdown")
                    } else {
                        tracing::debug!(path = %path.display(), offsets = ?saved.offsets, "state snapshot written")
                    }
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "writing the state snapshot failed ({e}); a restart from here would warm up again"
                ),
            }
        };
        // The last one is written before the worker returns (after any still in flight, which
        // the lock waits for); outside a runtime (unit tests) every one is.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !last => drop(runtime.spawn_blocking(write)),
            _ => write(),
        }
    }

    fn dead_letter(&self, msg: &Incoming<'_>, error: &DecodeError) -> Outgoing {
        msg.dead_letter(
            &self.dlq_topic,
            error.reason_code(),
            &error.to_string(),
            self.dlq_max_payload,
        )
    }

    /// The dead letter of a message's out-of-range events: the message itself when they were all
    /// of it, else the refused events as a JSON array.
    fn out_of_range_letter(
        &self,
        msg: &Incoming<'_>,
        refused: &[OutOfRange],
        whole: bool,
    ) -> anyhow::Result<Outgoing> {
        let mut detail = refused[0].detail.clone();
        if refused.len() > 1 {
            detail.push_str(&format!(" (and {} more events)", refused.len() - 1));
        }
        if whole {
            return Ok(msg.dead_letter(
                &self.dlq_topic,
                TIMESTAMP_OUT_OF_RANGE,
                &detail,
                self.dlq_max_payload,
            ));
        }
        let events: Vec<&Event> = refused.iter().map(|r| &r.event).collect();
        let payload = serde_json::to_vec(&events).context("serialising refused events")?;
        let mut letter = msg.dead_letter_with(
            &self.dlq_topic,
            TIMESTAMP_OUT_OF_RANGE,
            &detail,
            &payload,
            self.dlq_max_payload,
        );
        letter
            .headers
            .push(("culprit.payload".into(), b"events_json".to_vec()));
        Ok(letter)
    }

    fn record(&self, key: &str, message: &BusMessage) -> anyhow::Result<Outgoing> {
        Ok(Outgoing {
            topic: self.anomalies_topic.clone(),
            key: Some(key.to_string()),
            payload: serde_json::to_vec(message).context("serialising a bus message")?,
            headers: vec![(
                SOURCE_HEADER.to_string(),
                self.source.as_str().as_bytes().to_vec(),
            )],
        })
    }
}

impl Handler for EmbedHandler {
    fn handle(
        &mut self,
        msg: &Incoming<'_>,
        replay: bool,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        self.restore(msg.partition);
        let events = match self.decode(msg.payload) {
            Ok(events) => events,
            Err(error) => {
                if !replay {
                    tracing::debug!(
                        topic = msg.topic,
                        partition = msg.partition,
                        offset = msg.offset,
                        "dead letter: {error}"
                    );
                    self.stats.add_decode_error(error.reason_code());
                    self.stats.dlq_messages.fetch_add(1, Relaxed);
                    out.push(self.dead_letter(msg, &error));
                }
                return Ok(());
            }
        };
        let (mut events, refused) = self.guard.split(
            msg.topic,
            msg.partition,
            msg.timestamp_ms,
            events,
            culprit_core::wall_clock(),
        );
        if !refused.is_empty() && !replay {
            tracing::debug!(
                topic = msg.topic,
                partition = msg.partition,
                offset = msg.offset,
                refused = refused.len(),
                "dead letter: {}",
                refused[0].detail
            );
            self.stats.add_decode_error(TIMESTAMP_OUT_OF_RANGE);
            self.stats.dlq_messages.fetch_add(1, Relaxed);
            self.stats
                .out_of_range_events
                .fetch_add(refused.len() as u64, Relaxed);
            out.push(self.out_of_range_letter(msg, &refused, events.is_empty())?);
        }
        if events.is_empty() && !refused.is_empty() {
            return Ok(()); // all of it dead-lettered
        }
        events.sort_by_key(|e| e.time);
        let mut bus = VecBus::default();
        for event in &mut events {
            self.environments.insert(event.resource.environment.clone());
            let phase = self.phase(event.time);
            self.stage.observe(event, phase, &mut bus);
            self.newest = self.newest.max(event.time);
            let phase = self.phase(self.newest);
            self.stage.tick(self.newest, phase, &mut bus);
        }
        if replay {
            return Ok(());
        }
        self.stats.decoded_messages.fetch_add(1, Relaxed);
        self.stats.add_events(self.source, events.len() as u64);
        for message in &bus.0 {
            match message {
                BusMessage::Anomaly(a) => {
                    out.push(self.record(&a.environment, message)?);
                    self.stats.anomalies_published.fetch_add(1, Relaxed);
                    self.stats.add_anomaly(a.source, a.severity);
                }
                BusMessage::Edge(e) => {
                    out.push(self.record(&e.environment, message)?);
                    self.stats.edges_published.fetch_add(1, Relaxed);
                }
                BusMessage::Watermark { .. } => {
                    for env in &self.environments {
                        out.push(self.record(env, message)?);
                    }
                    self.stats.watermarks_published.fetch_add(1, Relaxed);
                }
            }
        }
        self.pending.extend(events);
        self.unsettled
            .entry((msg.topic.to_string(), msg.partition))
            .or_default()
            .push_back((msg.offset, self.stage.settles_at()));
        Ok(())
    }

    fn settled(&mut self, partition: &PartitionKey, next: i64) -> i64 {
        let Some(waiting) = self.unsettled.get_mut(partition) else {
            return next;
        };
        let clock = self.stage.closed_through();
        while waiting.front().is_some_and(|(_, at)| *at <= clock) {
            waiting.pop_front();
        }
        match waiting.front() {
            Some((offset, _)) => *offset,
            None => {
                self.unsettled.remove(partition);
                next
            }
        }
    }

    fn forget_partition(&mut self, partition: &PartitionKey) {
        self.unsettled.remove(partition);
    }

    fn pending(&self) -> usize {
        self.pending.len() + self.stage.pending_points()
    }

    async fn before_commit(&mut self) -> anyhow::Result<()> {
        if !self.pending.is_empty() {
            self.sink.write(&self.pending).await?;
            self.pending.clear();
        }
        self.stage
            .write_points()
            .await
            .context("writing points to the vector store")?;
        Ok(())
    }

    fn after_commit(&mut self, committed: &HashMap<PartitionKey, i64>, last: bool) {
        self.save(committed, last);
    }

    fn idle(&mut self) {
        // A recalculation waits for the stage: with no event to close a window, serve it now.
        self.stage.serve_requests();
        if let Some(owed) = self.snapshots.as_mut().and_then(|s| s.owed.take()) {
            self.save(&owed, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::Severity;

    fn handler(source: SourceKind, stats: Arc<Stats>) -> EmbedHandler {
        EmbedHandler {
            source,
            encoding: Encoding::Protobuf,
            limits: DecodeLimits::default(),
            stage: DetectStage::new(&Default::default()),
            guard: TimeGuard::new(300, 86_400),
            warmup: 0,
            learn_until: None,
            newest: i64::MIN,
            environments: BTreeSet::new(),
            anomalies_topic: "culprit.anomalies".to_string(),
            dlq_topic: "culprit.dlq".to_string(),
            dlq_max_payload: 1 << 20,
            sink: Arc::new(crate::NoopSink),
            pending: Vec::new(),
            stats,
            snapshots: None,
            unsettled: HashMap::new(),
        }
    }

    fn incoming(topic: &'static str, payload: &'static [u8]) -> Incoming<'static> {
        Incoming {
            topic,
            partition: 0,
            offset: 7,
            key: None,
            payload,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn a_payload_that_does_not_decode_counts_as_a_decode_error_with_its_reason_and_a_dead_letter() {
        let stats = Arc::new(Stats::new());
        let mut h = handler(SourceKind::Traces, stats.clone());
        let mut out = Vec::new();
        h.handle(
            &incoming("otlp_spans", b"\xff\xff not protobuf"),
            false,
            &mut out,
        )
        .unwrap();
        h.handle(&incoming("otlp_spans", b""), false, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2, "both dead-lettered");
        assert_eq!(stats.decode_errors("malformed_protobuf"), 1);
        assert_eq!(stats.decode_errors("empty"), 1);
        assert_eq!(stats.dlq_messages.load(Relaxed), 2);
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot.decode_errors,
            vec![("empty", 1), ("malformed_protobuf", 1)]
        );

        // Re-read messages rebuild state only: nothing counted twice.
        h.handle(&incoming("otlp_spans", b"\xff"), true, &mut out)
            .unwrap();
        assert_eq!(stats.decode_errors("malformed_protobuf"), 1);
    }

    #[test]
    fn every_published_anomaly_is_counted_by_source_and_severity() {
        let stats = Arc::new(Stats::new());
        let mut h = handler(SourceKind::Changes, stats.clone());
        let mut out = Vec::new();
        let change = br#"{"id": "d-1", "type": "deployment", "service": "cart", "time": "2026-01-01T00:00:00Z"}"#;
        h.handle(&incoming("culprit.changes", change), false, &mut out)
            .unwrap();
        assert_eq!(stats.anomalies(SourceKind::Changes, Severity::Sev3), 1);
        assert_eq!(
            stats.snapshot().anomalies,
            vec![(SourceKind::Changes, Severity::Sev3, 1)]
        );
        assert_eq!(stats.anomalies_published.load(Relaxed), 1);
        assert_eq!(stats.decode_errors("malformed_json"), 0);
    }

    #[test]
    fn events_stamped_in_2100_are_dead_lettered_and_the_others_in_their_message_processed() {
        let stats = Arc::new(Stats::new());
        let mut h = handler(SourceKind::Changes, stats.clone());
        let mut out = Vec::new();
        let mixed = br#"[
            {"id": "d-1", "type": "deployment", "service": "cart", "time": "2026-01-01T00:00:00Z"},
            {"id": "d-2", "type": "deployment", "service": "cart", "time": "2100-01-01T00:00:00Z"}
        ]"#;
        h.handle(&incoming("culprit.changes", mixed), false, &mut out)
            .unwrap();
        let only_2100 = br#"{"id": "d-3", "type": "deployment", "service": "cart", "time": "2100-01-01T00:00:00Z"}"#;
        h.handle(&incoming("culprit.changes", only_2100), false, &mut out)
            .unwrap();

        let dead: Vec<&Outgoing> = out.iter().filter(|o| o.topic == "culprit.dlq").collect();
        assert_eq!(dead.len(), 2);
        let header = |o: &Outgoing, key: &str| {
            o.headers
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        for d in &dead {
            assert_eq!(
                header(d, "culprit.reason").as_deref(),
                Some(TIMESTAMP_OUT_OF_RANGE)
            );
            let error = header(d, "culprit.error").unwrap();
            assert!(
                error.contains("4102444800s") && error.contains("max_future_skew_secs = 300"),
                "{error}"
            );
        }
        // Part of a message: the refused events, re-encoded; all of it: the original bytes.
        let refused: Vec<Event> = serde_json::from_slice(&dead[0].payload).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].time, 4_102_444_800 * NANOS_PER_SEC);
        assert_eq!(
            header(dead[0], "culprit.payload").as_deref(),
            Some("events_json")
        );
        assert_eq!(dead[1].payload, only_2100.to_vec());

        assert_eq!(
            stats.anomalies(SourceKind::Changes, Severity::Sev3),
            1,
            "d-1 only"
        );
        assert_eq!(
            h.newest,
            1_767_225_600 * NANOS_PER_SEC,
            "the watermark stayed"
        );
        assert_eq!(h.pending.len(), 1, "only d-1 goes to the store");
        assert_eq!(stats.decode_errors(TIMESTAMP_OUT_OF_RANGE), 2);
        assert_eq!(stats.out_of_range_events.load(Relaxed), 2);
        assert_eq!(stats.dlq_messages.load(Relaxed), 2);
        assert_eq!(stats.decoded_messages.load(Relaxed), 1);
    }

    const AT_0: &[u8] = br#"{"id": "d-1", "type": "deployment", "service": "cart", "time": "2026-01-01T00:00:00Z"}"#;
    const AT_10_MIN: &[u8] = br#"{"id": "d-3", "type": "deployment", "service": "cart", "time": "2026-01-01T00:10:00Z"}"#;
    const AT_25_MIN: &[u8] = br#"{"id": "d-2", "type": "deployment", "service": "cart", "time": "2026-01-01T00:25:00Z"}"#;
    const AT_26_MIN: &[u8] = br#"{"id": "d-3", "type": "deployment", "service": "cart", "time": "2026-01-01T00:26:00Z"}"#;

    fn at(offset: i64, payload: &'static [u8]) -> Incoming<'static> {
        Incoming {
            offset,
            ..incoming("culprit.changes", payload)
        }
    }

    /// A message is held back from the commit while a window holding its events may be open,
    /// and released once newer events close it; a message refused whole holds nothing back.
    #[test]
    fn the_commit_stops_at_the_first_message_whose_windows_are_still_open() {
        let mut h = handler(SourceKind::Changes, Arc::new(Stats::new()));
        let partition = ("culprit.changes".to_string(), 0);
        let mut out = Vec::new();
        assert_eq!(h.settled(&partition, 3), 3, "nothing handled, nothing held");
        h.handle(&at(3, AT_0), false, &mut out).unwrap();
        h.handle(&at(4, b"not json"), false, &mut out).unwrap();
        assert_eq!(h.settled(&partition, 5), 3, "d-1's window is open");
        assert_eq!(
            h.settled(&("culprit.changes".to_string(), 1), 9),
            9,
            "another partition holds nothing back"
        );
        h.handle(&at(5, AT_25_MIN), false, &mut out).unwrap();
        assert_eq!(
            h.settled(&partition, 6),
            5,
            "d-1's window closed as the clock moved 25 minutes on; d-2's is open"
        );
        h.forget_partition(&partition);
        assert_eq!(
            h.settled(&partition, 6),
            6,
            "a partition forgotten holds nothing"
        );
    }

    /// A changes handler with a 20-minute warm-up and snapshots in `dir`.
    fn snapshotting(dir: &std::path::Path, stats: Arc<Stats>) -> EmbedHandler {
        let mut h = handler(SourceKind::Changes, stats);
        h.warmup = 1200 * NANOS_PER_SEC;
        h.snapshots = Some(Snapshots::open(
            snapshot::path(dir, "g", "culprit.changes"),
            Duration::from_secs(60),
            SourceKind::Changes,
            "g",
            "culprit.changes",
            1200,
        ));
        h
    }

    #[test]
    fn a_snapshot_written_after_a_commit_lets_the_restarted_handler_detect_without_a_new_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut first = snapshotting(dir.path(), Arc::new(Stats::new()));
        first
            .handle(&incoming("culprit.changes", AT_0), false, &mut out)
            .unwrap();
        first
            .handle(&incoming("culprit.changes", AT_25_MIN), false, &mut out)
            .unwrap();
        let committed = HashMap::from([(("culprit.changes".to_string(), 0), 8)]);
        first.after_commit(&committed, false);
        let saved = snapshot::read(&snapshot::path(dir.path(), "g", "culprit.changes"))
            .unwrap()
            .expect("written after the commit");
        assert_eq!(saved.offsets, std::collections::BTreeMap::from([(0, 8)]));
        assert_eq!(
            saved.learn_until,
            Some(1_767_225_600 * NANOS_PER_SEC + 1200 * NANOS_PER_SEC)
        );

        // Restarted: the first event it sees is already past the warm-up it restored.
        let mut restarted = snapshotting(dir.path(), Arc::new(Stats::new()));
        restarted
            .handle(&incoming("culprit.changes", AT_26_MIN), false, &mut out)
            .unwrap();
        let t26 = 1_767_225_600 * NANOS_PER_SEC + 26 * 60 * NANOS_PER_SEC;
        assert_eq!(
            restarted.learn_until,
            Some(t26),
            "the warm-up was over: nothing of it is left"
        );
        assert_eq!(restarted.phase(t26), Phase::Detecting);

        // Without the snapshot the same event would start a new warm-up.
        let mut fresh = handler(SourceKind::Changes, Arc::new(Stats::new()));
        fresh.warmup = 1200 * NANOS_PER_SEC;
        fresh
            .handle(&incoming("culprit.changes", AT_26_MIN), false, &mut out)
            .unwrap();
        assert_eq!(fresh.phase(t26), Phase::Learning);
    }

    /// A folder holding the snapshot a changes handler wrote after `payloads` and a commit.
    fn saved_after(payloads: &[&'static [u8]]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut first = snapshotting(dir.path(), Arc::new(Stats::new()));
        for payload in payloads {
            first
                .handle(
                    &incoming("culprit.changes", payload),
                    false,
                    &mut Vec::new(),
                )
                .unwrap();
        }
        first.after_commit(
            &HashMap::from([(("culprit.changes".to_string(), 0), 8)]),
            false,
        );
        dir
    }

    #[test]
    fn a_snapshot_taken_on_other_partitions_is_restored_after_a_rebalance() {
        let dir = saved_after(&[AT_0, AT_25_MIN]);
        let mut out = Vec::new();

        // Restarted, and handed partition 3 only: the snapshot of partition 0 still carries the
        // warm-up, so the first event is judged.
        let mut restarted = snapshotting(dir.path(), Arc::new(Stats::new()));
        let mut elsewhere = incoming("culprit.changes", AT_26_MIN);
        elsewhere.partition = 3;
        restarted.handle(&elsewhere, false, &mut out).unwrap();
        let t26 = 1_767_225_600 * NANOS_PER_SEC + 26 * 60 * NANOS_PER_SEC;
        assert_eq!(
            restarted.learn_until,
            Some(t26),
            "the warm-up restored as over, not a new one from this event"
        );
        assert_eq!(restarted.phase(t26), Phase::Detecting);
    }

    /// A stream that resumes behind the snapshot's clock (a topic recreated, offsets reset)
    /// is judged at once after a finished warm-up, and finishes an unfinished one from its own
    /// first event: the warm-up left is what the detectors lack, not a time on the old clock.
    #[test]
    fn a_stream_behind_the_snapshots_clock_is_not_learned_until_it_passes_that_clock() {
        let dir = saved_after(&[AT_0, AT_25_MIN]);
        let mut out = Vec::new();
        let mut restarted = snapshotting(dir.path(), Arc::new(Stats::new()));
        restarted
            .handle(&incoming("culprit.changes", AT_0), false, &mut out)
            .unwrap();
        let t0 = 1_767_225_600 * NANOS_PER_SEC;
        assert_eq!(restarted.phase(t0), Phase::Detecting);

        // Saved ten minutes into its 20-minute warm-up: ten minutes are left, from now on.
        let dir = saved_after(&[AT_0, AT_10_MIN]);
        let mut restarted = snapshotting(dir.path(), Arc::new(Stats::new()));
        restarted
            .handle(&incoming("culprit.changes", AT_0), false, &mut out)
            .unwrap();
        assert_eq!(restarted.learn_until, Some(t0 + 600 * NANOS_PER_SEC));
        assert_eq!(restarted.phase(t0 + 599 * NANOS_PER_SEC), Phase::Learning);
        assert_eq!(restarted.phase(t0 + 600 * NANOS_PER_SEC), Phase::Detecting);
    }

    /// In the service a snapshot is written on a blocking thread; the one taken at shutdown is
    /// on disk when the handler returns, and an earlier write still in flight never replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_written_off_the_consumer_and_the_shutdown_one_is_the_one_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot::path(dir.path(), "g", "culprit.changes");
        let mut out = Vec::new();
        let mut h = snapshotting(dir.path(), Arc::new(Stats::new()));
        h.handle(&incoming("culprit.changes", AT_0), false, &mut out)
            .unwrap();
        let at = |offset| HashMap::from([(("culprit.changes".to_string(), 0), offset)]);
        h.after_commit(&at(8), false);
        let written = wait_until(|| snapshot::read(&path).ok().flatten().is_some()).await;
        assert!(written, "the first snapshot reaches the disk");
        for offset in 9..40 {
            h.snapshots.as_mut().unwrap().last_written = None; // due at every commit
            h.after_commit(&at(offset), false);
        }
        h.after_commit(&at(40), true);
        let saved = snapshot::read(&path).unwrap().unwrap();
        assert_eq!(saved.offsets, std::collections::BTreeMap::from([(0, 40)]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let later = snapshot::read(&path).unwrap().unwrap();
        assert_eq!(
            later.offsets, saved.offsets,
            "no earlier write landed after the shutdown one"
        );
    }

    async fn wait_until(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[test]
    fn a_corrupt_snapshot_means_a_warm_up_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot::path(dir.path(), "g", "culprit.changes");
        std::fs::write(&path, b"\0 not json").unwrap();
        let mut h = snapshotting(dir.path(), Arc::new(Stats::new()));
        assert!(h.snapshots.as_ref().unwrap().to_restore.is_none());
        let mut out = Vec::new();
        h.handle(&incoming("culprit.changes", AT_26_MIN), false, &mut out)
            .unwrap();
        let t26 = 1_767_225_600 * NANOS_PER_SEC + 26 * 60 * NANOS_PER_SEC;
        assert_eq!(h.phase(t26), Phase::Learning, "warming up");
    }
}
