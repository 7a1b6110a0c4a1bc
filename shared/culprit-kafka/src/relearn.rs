//! Re-learning one service's baselines from a time range of an embedder's input topic: the
//! `Range` form of a baseline recalculation.
//!
//! The API hands a [`RelearnRequest`] to the embedders of the sources concerned through
//! [`Relearners`]. Each embedder serves its requests one at a time on a task of its own, beside
//! its consumer, which keeps going:
//!
//! 1. A standalone consumer, in no group and committing nothing, is assigned every partition of
//!    the topic, seeks each with `offsets_for_times` to `from` (less `max_future_skew_secs`, since
//!    a producer stamps a message after the events in it, up to that skew early) and reads up to
//!    the high watermarks taken when the re-learn starts, so a busy topic cannot keep it going.
//! 2. Messages are decoded with the live path's decoder; one that does not decode is skipped and
//!    counted (the live consumer dead-lettered it already). Events with an event time in
//!    `[from, to)` feed a fresh detect stage of the same settings ([`DetectStage::relearner`]) in
//!    its learning phase, its clock held at the slowest partition still being read so that
//!    interleaved partitions land in their own windows; then it is flushed.
//! 3. The live stage adopts what the fresh one learned, for that service only
//!    ([`culprit_pipeline::AdoptRequest`] on its board), at its next window or once its input
//!    is quiet.
//!
//! The reading, decoding and learning run on a blocking thread; the request is dropped, and the
//! reading stops, when whoever asked stops waiting. What a re-read learned serves the requests
//! for the same range in the next ten minutes: a scheduled run asks once per service, and the
//! topic is read once for them all.

use crate::client::client_config;
use crate::config::KafkaConfig;
use crate::embedder::Decoder;
use culprit_core::{SourceKind, UnixNanos, NANOS_PER_SEC};
use culprit_detect::state::DetectorStates;
use culprit_detect::Phase;
use culprit_pipeline::{AdoptRequest, BaselineBoard, Bus, BusMessage, DetectStage};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What one embedder's re-learn did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelearnReport {
    pub source: SourceKind,
    pub topic: String,
    pub from: UnixNanos,
    pub to: UnixNanos,
    /// Messages read from the topic (all partitions).
    pub messages: u64,
    /// Events in `[from, to)` the fresh stage learned from, of every service.
    pub events: u64,
    /// Messages that did not decode, skipped.
    pub skipped: u64,
    /// Baselines the service has now in this embedder's stage.
    pub baselines: usize,
}

/// Why a re-learn failed.
#[derive(Debug, thiserror::Error)]
pub enum RelearnError {
    #[error("reading {topic} for the re-learn: {what}: {source}")]
    Kafka {
        topic: String,
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("the {0} embedder stopped before the re-learn finished")]
    Stopped(SourceKind),
    #[error("the {0} embedder's stage is attached to no baseline board, so it cannot adopt")]
    NoBoard(SourceKind),
    #[error("the re-learn was abandoned: nobody waits for it any more")]
    Abandoned,
    #[error("the Kafka client configuration: {0}")]
    Config(String),
    #[error("the re-learn thread failed: {0}")]
    Thread(String),
}

/// One request to re-learn `service` from `[from, to)`.
pub struct RelearnRequest {
    pub service: String,
    pub from: UnixNanos,
    pub to: UnixNanos,
    pub reply: oneshot::Sender<Result<RelearnReport, RelearnError>>,
}

/// The embedders of this process that take re-learn requests, by source. Cloned freely: every
/// clone reaches the same embedders.
#[derive(Clone, Default)]
pub struct Relearners {
    inboxes: Arc<Mutex<Vec<Inbox>>>,
}

/// The answer to one request.
pub type Reply = oneshot::Receiver<Result<RelearnReport, RelearnError>>;

/// Where one embedder takes its requests.
type Inbox = (SourceKind, mpsc::UnboundedSender<RelearnRequest>);

/// The receiving end of one embedder's re-learn requests.
pub struct RelearnInbox(mpsc::UnboundedReceiver<RelearnRequest>);

impl RelearnInbox {
    /// The next request; None once every [`Relearners`] clone is gone.
    pub async fn recv(&mut self) -> Option<RelearnRequest> {
        self.0.recv().await
    }
}

impl Relearners {
    pub fn new() -> Relearners {
        Relearners::default()
    }

    fn inboxes(&self) -> std::sync::MutexGuard<'_, Vec<Inbox>> {
        self.inboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new inbox for an embedder of `source` ([`crate::run_embedder`] registers its own when
    /// given [`crate::EmbedderOptions::relearners`]).
    pub fn register(&self, source: SourceKind) -> RelearnInbox {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inboxes().push((source, tx));
        RelearnInbox(rx)
    }

    /// The sources whose embedders take requests now, sorted.
    pub fn sources(&self) -> Vec<SourceKind> {
        let mut inboxes = self.inboxes();
        inboxes.retain(|(_, tx)| !tx.is_closed());
        let mut sources: Vec<SourceKind> = inboxes.iter().map(|(s, _)| *s).collect();
        sources.sort();
        sources.dedup();
        sources
    }

    /// Sends the request to every running embedder of `source` (all when None); one reply per
    /// embedder reached, none when no embedder takes requests.
    pub fn request(
        &self,
        service: &str,
        source: Option<SourceKind>,
        from: UnixNanos,
        to: UnixNanos,
    ) -> Vec<(
        SourceKind,
        oneshot::Receiver<Result<RelearnReport, RelearnError>>,
    )> {
        let mut replies = Vec::new();
        for (s, tx) in self.inboxes().iter() {
            if source.is_some_and(|wanted| wanted != *s) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let request = RelearnRequest {
                service: service.to_string(),
                from,
                to,
                reply,
            };
            if tx.send(request).is_ok() {
                replies.push((*s, rx));
            }
        }
        replies
    }
}

/// What an embedder's re-learn task needs.
pub(crate) struct RelearnContext {
    pub config: KafkaConfig,
    pub source: SourceKind,
    pub topic: String,
    pub decoder: Decoder,
    /// Where the live stage takes adoptions, and its name there.
    pub board: Option<(Arc<BaselineBoard>, String)>,
    /// Makes the fresh stage of each re-learn.
    pub fresh: Arc<dyn Fn() -> DetectStage + Send + Sync>,
}

/// What the last re-read learned, kept a while: a scheduled run asks for the same range once per
/// service, and the topic is read once for all of them.
struct Learned {
    range: (UnixNanos, UnixNanos),
    at: Instant,
    states: Arc<DetectorStates>,
    read: Read,
}

impl Learned {
    /// How long a re-read serves later requests for the same range.
    const REUSE: Duration = Duration::from_secs(600);
}

/// Serves `inbox` until it closes (the task is aborted when the embedder stops).
pub(crate) async fn serve(context: RelearnContext, mut inbox: RelearnInbox) {
    let context = Arc::new(context);
    let mut last: Option<Learned> = None;
    while let Some(request) = inbox.0.recv().await {
        let RelearnRequest {
            service,
            from,
            to,
            mut reply,
        } = request;
        let cancelled = Arc::new(AtomicBool::new(false));
        let work = relearn(
            context.clone(),
            &service,
            (from, to),
            &mut last,
            cancelled.clone(),
        );
        let result = tokio::select! {
            result = work => result,
            _ = reply.closed() => {
                cancelled.store(true, Ordering::Relaxed);
                tracing::warn!(%service, topic = %context.topic, "re-learn abandoned: the caller stopped waiting");
                Err(RelearnError::Abandoned)
            }
        };
        match &result {
            Ok(r) => {
                tracing::info!(%service, topic = %r.topic, messages = r.messages, events = r.events, skipped = r.skipped, baselines = r.baselines, "re-learned from a time range")
            }
            Err(e) => tracing::warn!(%service, topic = %context.topic, "re-learn failed: {e}"),
        }
        let _ = reply.send(result);
    }
}

async fn relearn(
    context: Arc<RelearnContext>,
    service: &str,
    (from, to): (UnixNanos, UnixNanos),
    last: &mut Option<Learned>,
    cancelled: Arc<AtomicBool>,
) -> Result<RelearnReport, RelearnError> {
    let Some((board, stage_name)) = context.board.clone() else {
        return Err(RelearnError::NoBoard(context.source));
    };
    // Dropped with this future (the caller gave up, the embedder stopped): the read stops too.
    let _stop_reading = CancelOnDrop(cancelled.clone());
    let reusable = last
        .as_ref()
        .filter(|l| l.range == (from, to) && l.at.elapsed() < Learned::REUSE);
    let (states, read) = match reusable {
        Some(l) => {
            tracing::info!(%service, topic = %context.topic, from, to, "re-learning from the range the topic was just re-read for");
            (l.states.clone(), l.read.clone())
        }
        None => {
            tracing::info!(%service, topic = %context.topic, from, to, "re-learning from a time range of the topic");
            let reader = context.clone();
            let (states, read) = tokio::task::spawn_blocking(move || {
                let stage = (reader.fresh)();
                read_range(&reader, from, to, stage, &cancelled)
            })
            .await
            .map_err(|e| RelearnError::Thread(e.to_string()))??;
            let states = Arc::new(states);
            *last = Some(Learned {
                range: (from, to),
                at: Instant::now(),
                states: states.clone(),
                read: read.clone(),
            });
            (states, read)
        }
    };
    let learned = (*states).clone();

    let (done, adopted) = oneshot::channel();
    let adopt = AdoptRequest {
        service: service.to_string(),
        source: Some(context.source),
        learned,
        done: Box::new(move |report| {
            let _ = done.send(report);
        }),
    };
    if board.request_adopt(&stage_name, adopt).is_err() {
        return Err(RelearnError::NoBoard(context.source));
    }
    let report = adopted
        .await
        .map_err(|_| RelearnError::Stopped(context.source))?;
    Ok(RelearnReport {
        source: context.source,
        topic: context.topic.clone(),
        from,
        to,
        messages: read.messages,
        events: read.events,
        skipped: read.skipped,
        baselines: report.baselines,
    })
}

#[derive(Debug, Default, Clone)]
struct Read {
    messages: u64,
    events: u64,
    skipped: u64,
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A bus that drops what the fresh stage publishes: it only learns.
struct Discard;

impl Bus for Discard {
    fn publish(&mut self, _message: BusMessage) {}
}

/// A consumer in no group: offsets are neither read from nor committed to the broker.
fn standalone_consumer(config: &KafkaConfig, topic: &str) -> Result<BaseConsumer, RelearnError> {
    let kafka = |what, source| RelearnError::Kafka {
        topic: topic.to_string(),
        what,
        source,
    };
    let mut c = client_config(config).map_err(|e| RelearnError::Config(e.to_string()))?;
    // librdkafka refuses to assign without a group id, but assigning (unlike subscribing)
    // joins no group, and with explicit start offsets and no commits the group is never used.
    c.set("client.id", format!("{}-relearn", config.client_id))
        .set("group.id", format!("{}-relearn-unjoined", config.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    c.create().map_err(|e| kafka("creating the consumer", e))
}

/// Reads `[from, to)` of the topic into `stage`; returns what it learned.
fn read_range(
    context: &RelearnContext,
    from: UnixNanos,
    to: UnixNanos,
    mut stage: DetectStage,
    cancelled: &AtomicBool,
) -> Result<(DetectorStates, Read), RelearnError> {
    let topic = context.topic.as_str();
    let kafka = |what, source| RelearnError::Kafka {
        topic: topic.to_string(),
        what,
        source,
    };
    let timeout = Duration::from_secs(10);
    let consumer = standalone_consumer(&context.config, topic)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka("fetching its partitions", e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();

    // The end of each partition is where it stands now.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut lows: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| kafka("fetching the high watermarks", e))?;
        if high > low {
            ends.insert(p, high);
            lows.insert(p, low);
        }
    }
    let skew = i64::try_from(context.config.max_future_skew_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SEC);
    let seek_ms = from.saturating_sub(skew).div_euclid(1_000_000).max(0);
    let mut lookup = TopicPartitionList::new();
    for &p in ends.keys() {
        lookup
            .add_partition_offset(topic, p, Offset::Offset(seek_ms))
            .map_err(|e| kafka("seeking by time", e))?;
    }
    let starts: HashMap<i32, Offset> = match consumer.offsets_for_times(lookup, timeout) {
        Ok(found) => found
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect(),
        Err(e) => {
            // Only a shortcut: the event-time filter below is what bounds the range.
            tracing::warn!(%topic, "looking offsets up by time failed ({e}); reading the partitions from their start");
            HashMap::new()
        }
    };
    let mut assignment = TopicPartitionList::new();
    let mut reading: HashSet<i32> = HashSet::new();
    for (&p, &end) in &ends {
        let start = match starts.get(&p) {
            Some(Offset::Offset(o)) => (*o).max(lows[&p]),
            // No message stamped at or after the time: nothing of the range in this partition.
            Some(Offset::End) => end,
            _ => lows[&p],
        };
        if start >= end {
            continue;
        }
        assignment
            .add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| kafka("assigning", e))?;
        reading.insert(p);
    }
    tracing::info!(%topic, partitions = reading.len(), from, to, "re-learn: reading up to the current end of each partition");
    let mut read = Read::default();
    if !reading.is_empty() {
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning", e))?;
    }
    let mut merge = Merge::default();
    let mut bus = Discard;
    let mut last_progress = Instant::now();
    while !reading.is_empty() {
        if cancelled.load(Ordering::Relaxed) {
            return Err(RelearnError::Abandoned);
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            tracing::info!(%topic, messages = read.messages, events = read.events, partitions_left = reading.len(), "re-learn in progress");
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                reading.remove(&p);
                merge.feed(&reading, &mut stage, &mut bus);
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(%topic, "re-learn: consumer error: {e}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let (p, offset) = (message.partition(), message.offset());
        if !reading.contains(&p) || ends.get(&p).is_none_or(|&end| offset >= end) {
            reading.remove(&p);
            merge.feed(&reading, &mut stage, &mut bus);
            continue;
        }
        read.messages += 1;
        match context
            .decoder
            .decode(message.payload().unwrap_or_default())
        {
            Ok(mut events) => {
                events.retain(|e| e.time >= from && e.time < to);
                read.events += events.len() as u64;
                merge.push(p, events);
            }
            Err(_) => read.skipped += 1,
        }
        if offset + 1 >= ends[&p] {
            reading.remove(&p);
        }
        merge.feed(&reading, &mut stage, &mut bus);
        // A partition far ahead of the others waits for them, so what is held stays bounded.
        let (pause, resume) = merge.flow(&reading);
        for (list, paused) in [(pause, true), (resume, false)] {
            if list.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in list {
                tpl.add_partition(topic, p);
            }
            let done = if paused {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
            if let Err(e) = done {
                tracing::warn!(%topic, "re-learn: pausing or resuming partitions failed: {e}");
            }
        }
    }
    merge.drain(&mut stage, &mut bus);
    stage.flush(Phase::Learning, &mut bus);
    Ok((stage.save_state(), read))
}

/// The decoded messages of each partition not yet fed, merged into one stream in event-time
/// order: partitions are read in batches of their own, and a stage fed one partition's hour
/// before another's would put the second's events in the wrong windows.
#[derive(Default)]
struct Merge {
    /// Per partition, oldest first: each message's events, sorted by event time.
    held: HashMap<i32, VecDeque<Vec<culprit_core::Event>>>,
    paused: HashSet<i32>,
}

impl Merge {
    /// Messages a partition may hold before it is paused; resumed at half.
    const MAX_HELD: usize = 2000;

    fn push(&mut self, partition: i32, mut events: Vec<culprit_core::Event>) {
        if events.is_empty() {
            return;
        }
        events.sort_by_key(|e| e.time);
        self.held.entry(partition).or_default().push_back(events);
    }

    /// Feeds messages in event-time order for as long as every partition still being read has
    /// one held, so that none of them can still bring an earlier one.
    fn feed(&mut self, reading: &HashSet<i32>, stage: &mut DetectStage, bus: &mut Discard) {
        while reading
            .iter()
            .all(|p| self.held.get(p).is_some_and(|q| !q.is_empty()))
        {
            if !self.feed_oldest(stage, bus) {
                break;
            }
        }
    }

    /// Feeds everything held: the reading is over.
    fn drain(&mut self, stage: &mut DetectStage, bus: &mut Discard) {
        while self.feed_oldest(stage, bus) {}
    }

    fn feed_oldest(&mut self, stage: &mut DetectStage, bus: &mut Discard) -> bool {
        let oldest = self
            .held
            .iter()
            .filter_map(|(p, q)| q.front().map(|events| (events[0].time, *p)))
            .min();
        let Some((_, p)) = oldest else {
            return false;
        };
        let Some(mut events) = self.held.get_mut(&p).and_then(VecDeque::pop_front) else {
            return false;
        };
        for event in &mut events {
            stage.observe(event, Phase::Learning, bus);
        }
        if let Some(last) = events.last() {
            stage.tick(last.time, Phase::Learning, bus);
        }
        true
    }

    /// The partitions to pause now and those to resume.
    fn flow(&mut self, reading: &HashSet<i32>) -> (Vec<i32>, Vec<i32>) {
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for &p in reading {
            let held = self.held.get(&p).map_or(0, VecDeque::len);
            if held >= Self::MAX_HELD && self.paused.insert(p) {
                pause.push(p);
            } else if held <= Self::MAX_HELD / 2 && self.paused.remove(&p) {
                resume.push(p);
            }
        }
        (pause, resume)
    }
}
