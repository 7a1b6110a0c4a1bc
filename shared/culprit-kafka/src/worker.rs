//! The consume -> handle -> publish -> commit loop both services share.
//!
//! # Delivery guarantee: at least once
//!
//! Messages are handled in batches. A batch ends after `commit_batch_messages` messages,
//! `commit_batch_events` events waiting for the store, or `commit_interval_ms`, and is then
//! finished in this order:
//!
//! 1. every record the batch produced (anomalies, alerts, dead letters) is sent and its delivery
//!    report awaited; failed records are re-sent;
//! 2. the handler's side effects run (the embedder's store write, the correlator's alert hook);
//! 3. only then are the batch's offsets committed (`CommitMode::Async`; `Sync` for the last batch
//!    at shutdown), each partition's only up to the first message whose effects the handler
//!    has not finished yet ([`Handler::settled`]: the embedder's events in windows still open);
//!    the rest is committed by a later batch once it settles, or read again by the next owner.
//!
//! While step 1 or 2 fails, the worker pauses all its partitions (`consumer.pause`, so nothing
//! more is fetched and in-flight work stays bounded to one batch), retries with exponential
//! backoff (`retry_initial_backoff_ms` doubling up to `retry_max_backoff_ms`) and keeps polling
//! the consumer so that it stays in its group; it resumes once the step succeeded. Nothing is
//! ever skipped. A crash between steps 1 and 3 redelivers the batch to the next owner of its
//! partitions, so outputs and hooks can see a message twice — never zero times.
//!
//! Within one instance a redelivered message (offset below the next expected one of its
//! partition) is skipped, so a rebalance that hands a partition back to its previous owner does
//! not duplicate work. A message below an offset the instance already *committed* is no
//! redelivery: the partition's offsets went backwards (topic recreated, group offsets reset). It
//! is logged, counted (`offset_resets`) and processed, and the partition starts afresh.
//!
//! # Rewind
//!
//! Partitions an instance is assigned for the first time may be assigned before their committed
//! offset ([`crate::Rewind`]). Messages before the committed offset are *re-read*: the handler
//! rebuilds its in-memory state from them but produces nothing and commits nothing, because all
//! of it happened before the commit. What they rebuild for the handler's hook (the correlator's
//! restored alerts, the embedder's points) is handed over at the next flush.
//!
//! # Shutdown
//!
//! When the shutdown future completes the worker pauses its partitions (stops fetching), handles
//! the messages already delivered, finishes the batch (publish, hooks, synchronous commit) within
//! `shutdown_timeout_ms`, and flushes the producer.

use crate::client::{produce_all, Outgoing, PartitionKey, PartitionState, RewindContext};
use crate::config::KafkaConfig;
use crate::error::ServiceError;
use crate::stats::Stats;
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One consumed message, as the handlers see it.
pub(crate) struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub timestamp_ms: Option<i64>,
}

impl<'a> Incoming<'a> {
    /// This message for the dead-letter topic: its key, bytes and headers, plus why
    /// (`culprit.reason`, a stable code; `culprit.error`, the message) and where it came from.
    /// A payload over `max_payload` bytes is dropped and its size recorded instead, so one
    /// oversized message cannot be refused by the broker forever.
    pub(crate) fn dead_letter(
        &self,
        dlq_topic: &str,
        reason: &str,
        error: &str,
        max_payload: usize,
    ) -> crate::client::Outgoing {
        self.dead_letter_with(dlq_topic, reason, error, self.payload, max_payload)
    }

    /// [`Incoming::dead_letter`] with `payload` in place of the message's own bytes (part of
    /// the message, re-encoded).
    pub(crate) fn dead_letter_with(
        &self,
        dlq_topic: &str,
        reason: &str,
        error: &str,
        payload: &[u8],
        max_payload: usize,
    ) -> crate::client::Outgoing {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        headers.push((
            "culprit.source_topic".into(),
            self.topic.as_bytes().to_vec(),
        ));
        headers.push((
            "culprit.partition".into(),
            self.partition.to_string().into_bytes(),
        ));
        headers.push((
            "culprit.offset".into(),
            self.offset.to_string().into_bytes(),
        ));
        crate::client::Outgoing::dead_letter(
            dlq_topic,
            self.key.map(|k| String::from_utf8_lossy(k).into_owned()),
            payload,
            headers,
            (reason, error),
            max_payload,
        )
    }

    fn of<M: Message>(m: &'a M) -> Incoming<'a> {
        let mut headers = Vec::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                headers.push((header.key, header.value.unwrap_or(&[])));
            }
        }
        Incoming {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload().unwrap_or(&[]),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// What a service does with its messages.
pub(crate) trait Handler: Send {
    /// Handles one message, appending what it produces to `out`. With `replay` set it only
    /// rebuilds state: `out` is discarded, and only state that was lost with the previous owner
    /// (restored alerts for local views) may be queued for [`Handler::before_commit`].
    fn handle(
        &mut self,
        msg: &Incoming<'_>,
        replay: bool,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()>;

    /// Work waiting for [`Handler::before_commit`] (events for the store), for batch sizing.
    fn pending(&self) -> usize {
        0
    }

    /// Side effects to finish before the batch is committed; called again after an error until
    /// it succeeds, so it must resume where it failed.
    fn before_commit(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The offset to commit for `partition` when the messages before `next` were handled: the
    /// first whose effects are not finished yet (the embedder's events whose windows are still
    /// open: their points and verdicts come only when those close), or `next`. What lies beyond
    /// it is handled again by whoever next reads the partition from the commit.
    fn settled(&mut self, _partition: &PartitionKey, next: i64) -> i64 {
        next
    }

    /// The instance no longer works `partition` from where it was (revoked, or its offsets
    /// went back): forget what [`Handler::settled`] keeps for it.
    fn forget_partition(&mut self, _partition: &PartitionKey) {}

    /// Called right after offsets were committed (asynchronously, or synchronously when `last`),
    /// with every offset this instance committed on the partitions it still has: the point a
    /// snapshot of the handler's state corresponds to.
    fn after_commit(&mut self, _committed: &HashMap<PartitionKey, i64>, _last: bool) {}

    /// A commit interval passed without a message: work held back for a later commit (a
    /// snapshot not yet due) can be done now.
    fn idle(&mut self) {}
}

pub(crate) struct Worker<H> {
    pub config: KafkaConfig,
    pub consumer: StreamConsumer<RewindContext>,
    pub producer: FutureProducer,
    pub partitions: Arc<Mutex<PartitionState>>,
    pub stats: Arc<Stats>,
    pub handler: H,
}

#[derive(Default)]
struct Batch {
    outbox: Vec<Outgoing>,
    offsets: HashMap<PartitionKey, i64>,
    messages: usize,
    timestamps_ms: Vec<i64>,
    opened: Option<Instant>,
}

struct Core<H> {
    config: KafkaConfig,
    producer: FutureProducer,
    partitions: Arc<Mutex<PartitionState>>,
    stats: Arc<Stats>,
    handler: H,
    batch: Batch,
    /// Offsets committed (or being committed) by this instance, for the final synchronous commit.
    committed: HashMap<PartitionKey, i64>,
    /// Per partition, the offset after its last handled message while that is beyond what was
    /// committed: messages the handler holds back ([`Handler::settled`]) until they settle.
    handled: HashMap<PartitionKey, i64>,
    /// Messages delivered while paused, handled once the consumer resumes.
    held: VecDeque<OwnedMessage>,
    paused: bool,
    stop_requested: Option<Instant>,
}

pub(crate) async fn run<H: Handler, S: Future<Output = ()>>(
    worker: Worker<H>,
    shutdown: S,
) -> Result<(), ServiceError> {
    let Worker {
        config,
        consumer,
        producer,
        partitions,
        stats,
        handler,
    } = worker;
    let interval = Duration::from_millis(config.commit_interval_ms.max(1));
    let mut core = Core {
        config,
        producer,
        partitions,
        stats,
        handler,
        batch: Batch::default(),
        committed: HashMap::new(),
        handled: HashMap::new(),
        held: VecDeque::new(),
        paused: false,
        stop_requested: None,
    };
    let shutdown = shutdown.fuse();
    futures_util::pin_mut!(shutdown);

    loop {
        while let Some(m) = core.held.pop_front() {
            core.process(&Incoming::of(&m))?;
            if core.batch_full() {
                core.flush(&consumer, &mut shutdown, false).await?;
            }
        }
        if shutdown.is_terminated() {
            break;
        }
        let wait = match core.batch.opened {
            Some(t) => interval
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(1)),
            None => interval,
        };
        let due = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            received = tokio::time::timeout(wait, consumer.recv()) => match received {
                Ok(Ok(m)) => {
                    core.process(&Incoming::of(&m))?;
                    core.batch_full()
                }
                Ok(Err(e)) => {
                    tracing::warn!("consumer error: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
                Err(_) => {
                    // The commit interval passed without a message.
                    if core.batch.opened.is_none() {
                        core.handler.idle();
                    }
                    false
                }
            },
        };
        if due || core.batch.opened.is_some_and(|t| t.elapsed() >= interval) {
            core.flush(&consumer, &mut shutdown, false).await?;
        }
    }

    tracing::info!("shutting down: finishing in-flight work");
    core.stop_requested.get_or_insert_with(Instant::now);
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    while let Some(m) = core.held.pop_front() {
        core.process(&Incoming::of(&m))?;
    }
    core.flush(&consumer, &mut shutdown, true).await?;
    if let Err(e) = core
        .producer
        .flush(Duration::from_millis(core.config.shutdown_timeout_ms))
    {
        tracing::warn!("producer flush at shutdown: {e}");
    }
    Ok(())
}

type Shutdown<'a, S> = Pin<&'a mut Fuse<S>>;

impl<H: Handler> Core<H> {
    fn process(&mut self, msg: &Incoming<'_>) -> Result<(), ServiceError> {
        let key = (msg.topic.to_string(), msg.partition);
        if self
            .committed
            .get(&key)
            .is_some_and(|&done| msg.offset < done)
        {
            self.offsets_went_back(&key, msg.offset);
        }
        let replay = {
            let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            if p.next.get(&key).is_some_and(|&next| msg.offset < next) {
                return Ok(()); // redelivered to the instance that already handled it
            }
            p.next.insert(key.clone(), msg.offset + 1);
            match p.boundary.get(&key) {
                Some(&boundary) if msg.offset < boundary => true,
                Some(_) => {
                    p.boundary.remove(&key);
                    false
                }
                None => false,
            }
        };
        if replay {
            let mut discard = Vec::new();
            self.handler.handle(msg, true, &mut discard)?;
            self.stats.replayed_messages.fetch_add(1, Relaxed);
            self.stats
                .last_progress_ms
                .store(culprit_core::wall_clock_ms() as u64, Relaxed);
            if self.handler.pending() > 0 {
                // State rebuilt for a hook (restored alerts, points of re-read events) is handed
                // over within a commit interval, not only once a new message arrives.
                self.batch.opened.get_or_insert_with(Instant::now);
            }
            return Ok(());
        }
        self.handler.handle(msg, false, &mut self.batch.outbox)?;
        self.batch.offsets.insert(key, msg.offset + 1);
        self.batch.messages += 1;
        self.batch.opened.get_or_insert_with(Instant::now);
        self.stats.messages.fetch_add(1, Relaxed);
        let now = culprit_core::wall_clock_ms();
        self.stats.last_progress_ms.store(now as u64, Relaxed);
        if let Some(ts) = msg.timestamp_ms {
            self.batch.timestamps_ms.push(ts);
            let lag = now.saturating_sub(ts).max(0) as u64;
            self.stats.last_lag_ms.store(lag, Relaxed);
            self.stats.set_time_lag_ms(msg.topic, msg.partition, lag);
        }
        Ok(())
    }

    /// A message below an offset this instance committed cannot be a redelivery (consumers
    /// resume at the committed offset): the partition was recreated, truncated or its group
    /// offsets were reset, and its offsets start again lower. Without this the message would be
    /// skipped as already handled, and so would everything after it, silently.
    fn offsets_went_back(&mut self, key: &PartitionKey, offset: i64) {
        let done = self.committed.remove(key).unwrap_or_default();
        self.handled.remove(key);
        self.handler.forget_partition(key);
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.next.remove(key);
        p.boundary.remove(key);
        self.stats.offset_resets.fetch_add(1, Relaxed);
        tracing::warn!(
            topic = %key.0,
            partition = key.1,
            offset,
            committed = done,
            "offsets went backwards (the topic was recreated or truncated, or the group's offsets were reset): processing from here"
        );
    }

    fn batch_full(&self) -> bool {
        self.batch.messages >= self.config.commit_batch_messages.max(1)
            || self.handler.pending() >= self.config.commit_batch_events.max(1)
    }

    /// Publishes, runs the hooks, commits: see the module documentation.
    async fn flush<S: Future<Output = ()>>(
        &mut self,
        consumer: &StreamConsumer<RewindContext>,
        shutdown: &mut Shutdown<'_, S>,
        last: bool,
    ) -> Result<(), ServiceError> {
        let mut attempt = 0u32;
        let mut records = std::mem::take(&mut self.batch.outbox);
        while !records.is_empty() {
            let failed = produce_all(&self.producer, records).await;
            let failed = self.dead_letter_refused(failed);
            if let Some((r, e)) = failed.first() {
                self.stats.produce_failures.fetch_add(1, Relaxed);
                tracing::warn!(topic = %r.topic, failed = failed.len(), "produce failed, retrying: {e}");
                records = failed.into_iter().map(|(r, _)| r).collect();
                self.backoff(consumer, shutdown, &mut attempt).await?;
            } else {
                records = Vec::new();
            }
        }
        loop {
            match self.handler.before_commit().await {
                Ok(()) => break,
                Err(e) => {
                    self.stats.hook_failures.fetch_add(1, Relaxed);
                    tracing::warn!("hook failed, retrying: {e:#}");
                    self.backoff(consumer, shutdown, &mut attempt).await?;
                }
            }
        }
        if self.paused && !last {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            self.paused = false;
            self.stats.paused.store(0, Relaxed);
            tracing::info!("resumed");
        }
        self.commit(consumer, last);
        let now = culprit_core::wall_clock_ms();
        for ts in self.batch.timestamps_ms.drain(..) {
            self.stats
                .record_latency_ms(now.saturating_sub(ts).max(0) as u64);
        }
        self.batch = Batch::default();
        Ok(())
    }

    /// Records the broker refuses for good (too large, invalid) would be retried forever and stall
    /// the partition: each is replaced by a dead letter naming its topic and the error, which the
    /// retry loop then produces. A refused dead letter is logged and dropped, as nothing else
    /// could take it. Retriable failures are returned unchanged.
    fn dead_letter_refused(
        &self,
        failed: Vec<(Outgoing, KafkaError)>,
    ) -> Vec<(Outgoing, KafkaError)> {
        let mut retry = Vec::with_capacity(failed.len());
        for (record, error) in failed {
            if !crate::client::is_refused_for_good(&error) {
                retry.push((record, error));
                continue;
            }
            self.stats.produce_refused.fetch_add(1, Relaxed);
            if record.topic == self.config.topics.dlq {
                tracing::error!(
                    bytes = record.payload.len(),
                    "the dead-letter topic refuses a record for good ({error}); dropped"
                );
                continue;
            }
            tracing::error!(
                topic = %record.topic,
                bytes = record.payload.len(),
                "the broker refuses a record for good ({error}); sent to {} with reason produce_refused",
                self.config.topics.dlq
            );
            self.stats.dlq_messages.fetch_add(1, Relaxed);
            let mut headers = record.headers;
            headers.push((
                "culprit.target_topic".into(),
                record.topic.as_bytes().to_vec(),
            ));
            let letter = Outgoing::dead_letter(
                &self.config.topics.dlq,
                record.key,
                &record.payload,
                headers,
                ("produce_refused", &error.to_string()),
                self.config.dlq_max_payload_bytes,
            );
            retry.push((letter, error));
        }
        retry
    }

    fn commit(&mut self, consumer: &StreamConsumer<RewindContext>, last: bool) {
        for (key, next) in self.batch.offsets.drain() {
            let at = self.handled.entry(key).or_insert(next);
            *at = (*at).max(next);
        }
        // A partition this instance lost is its new owner's to commit; what it held back there
        // is read again by that owner.
        let lost: Vec<PartitionKey> = {
            let p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            self.handled
                .keys()
                .filter(|k| !p.owns(k))
                .cloned()
                .collect()
        };
        for key in &lost {
            self.handled.remove(key);
            self.handler.forget_partition(key);
        }
        let mut offsets: Vec<(PartitionKey, i64)> = Vec::new();
        let mut held = BTreeMap::new();
        for (key, next) in &self.handled {
            let settled = self.handler.settled(key, *next).min(*next);
            if self.committed.get(key).is_none_or(|&done| settled > done) {
                offsets.push((key.clone(), settled));
            }
            held.insert(key.clone(), *next - settled);
        }
        self.handled
            .retain(|key, _| held.get(key).is_some_and(|&h| h > 0));
        self.stats.set_held_back(held);
        self.committed.extend(offsets.iter().cloned());
        if last {
            // The final commit is synchronous and covers everything still assigned, so that an
            // asynchronous commit still in flight cannot be lost.
            let assigned: Vec<PartitionKey> = consumer
                .assignment()
                .map(|a| {
                    a.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect()
                })
                .unwrap_or_default();
            offsets = self
                .committed
                .iter()
                .filter(|(k, _)| assigned.contains(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
        }
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!("bad offset {topic}/{partition}@{offset}: {e}");
            }
        }
        let mode = if last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Relaxed);
                self.handler.after_commit(&self.committed, last);
            }
            Err(e) => {
                // Not fatal: a later commit covers these offsets, or the partitions moved and
                // their new owner redoes the work (at least once).
                self.stats.commit_failures.fetch_add(1, Relaxed);
                tracing::warn!("commit failed: {e}");
            }
        }
    }

    /// Pauses the partitions and waits before the next retry, polling the consumer meanwhile.
    async fn backoff<S: Future<Output = ()>>(
        &mut self,
        consumer: &StreamConsumer<RewindContext>,
        shutdown: &mut Shutdown<'_, S>,
        attempt: &mut u32,
    ) -> Result<(), ServiceError> {
        self.stats.retries.fetch_add(1, Relaxed);
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        if !self.paused {
            self.paused = true;
            self.stats.paused.store(1, Relaxed);
            tracing::warn!("paused for backpressure");
        }
        let limit = Duration::from_millis(self.config.shutdown_timeout_ms);
        if self.stop_requested.is_some_and(|t| t.elapsed() >= limit) {
            return Err(ServiceError::ShutdownTimeout(limit));
        }
        let initial = self.config.retry_initial_backoff_ms.max(1);
        let delay = initial
            .saturating_mul(1u64 << (*attempt).min(20))
            .min(self.config.retry_max_backoff_ms.max(initial));
        *attempt += 1;
        let until = tokio::time::Instant::now() + Duration::from_millis(delay);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = shutdown.as_mut(), if !shutdown.is_terminated() => {
                    self.stop_requested.get_or_insert_with(Instant::now);
                }
                received = consumer.recv() => {
                    if let Ok(m) = received {
                        self.held.push_back(m.detach());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Drops every message; its pre-commit step (a store write, say) fails `failing_hooks`
    /// times, then succeeds.
    #[derive(Default)]
    struct Discard {
        failing_hooks: u32,
    }

    impl Handler for Discard {
        fn handle(
            &mut self,
            _msg: &Incoming<'_>,
            _replay: bool,
            _out: &mut Vec<Outgoing>,
        ) -> anyhow::Result<()> {
            Ok(())
        }

        async fn before_commit(&mut self) -> anyhow::Result<()> {
            if self.failing_hooks == 0 {
                return Ok(());
            }
            self.failing_hooks -= 1;
            anyhow::bail!("store unavailable")
        }
    }

    fn message(partition: i32, offset: i64, timestamp_ms: i64) -> Incoming<'static> {
        Incoming {
            topic: "otlp_logs",
            partition,
            offset,
            key: None,
            payload: b"",
            headers: Vec::new(),
            timestamp_ms: Some(timestamp_ms),
        }
    }

    /// A worker core and its consumer against a broker that is not there (commits are
    /// asynchronous, so they do not wait for it).
    fn offline_core<H: Handler>(
        stats: Arc<Stats>,
        handler: H,
    ) -> (Core<H>, StreamConsumer<RewindContext>) {
        let config = KafkaConfig {
            brokers: "127.0.0.1:9".to_string(),
            ..KafkaConfig::default()
        };
        let (consumer, partitions) = crate::client::subscribed_consumer(
            &config,
            "g",
            "c",
            "otlp_logs",
            crate::Rewind::None,
            stats.clone(),
        )
        .unwrap();
        let core = Core {
            producer: crate::client::producer(&config, "c").unwrap(),
            config,
            partitions,
            stats,
            handler,
            batch: Batch::default(),
            committed: HashMap::new(),
            handled: HashMap::new(),
            held: VecDeque::new(),
            paused: false,
            stop_requested: None,
        };
        (core, consumer)
    }

    /// Messages handled and committed (against a broker that is not there: the commit is
    /// asynchronous) record their time lag per partition, and their latency once committed.
    #[tokio::test]
    async fn handled_messages_record_their_partition_time_lag_and_their_latency_at_commit() {
        let observed = Arc::new(AtomicUsize::new(0));
        let seen = observed.clone();
        let stats = Arc::new(Stats::with_latency_observer(Arc::new(move |d| {
            assert!(d >= Duration::from_secs(60), "{d:?}");
            seen.fetch_add(1, Relaxed);
        })));
        let (mut core, consumer) = offline_core(stats.clone(), Discard::default());
        let minute_ago = culprit_core::wall_clock_ms() - 60_000;
        core.process(&message(0, 0, minute_ago)).unwrap();
        core.process(&message(3, 0, minute_ago - 60_000)).unwrap();
        let lags = stats.snapshot().partitions;
        let time_lags: Vec<(i32, bool)> = lags
            .iter()
            .map(|p| (p.partition, p.time_ms.is_some_and(|ms| ms >= 60_000)))
            .collect();
        assert_eq!(time_lags, vec![(0, true), (3, true)]);
        assert!(lags[1].time_ms > lags[0].time_ms);
        assert_eq!(observed.load(Relaxed), 0, "nothing committed yet");

        let shutdown = std::future::pending::<()>().fuse();
        futures_util::pin_mut!(shutdown);
        core.flush(&consumer, &mut shutdown, false).await.unwrap();
        assert_eq!(observed.load(Relaxed), 2);
        assert_eq!(stats.snapshot().latency.count(), 2);
    }

    /// Each failed pre-commit call is counted (it is what `culprit_output_failures_total` shows
    /// an operator whose store is down) and retried until it succeeds.
    #[tokio::test]
    async fn failed_pre_commit_steps_are_counted_and_retried() {
        let stats = Arc::new(Stats::new());
        let (mut core, consumer) = offline_core(stats.clone(), Discard { failing_hooks: 2 });
        core.config.retry_initial_backoff_ms = 1;
        core.process(&message(0, 0, culprit_core::wall_clock_ms()))
            .unwrap();
        let shutdown = std::future::pending::<()>().fuse();
        futures_util::pin_mut!(shutdown);
        core.flush(&consumer, &mut shutdown, false).await.unwrap();
        let s = stats.snapshot();
        assert_eq!((s.hook_failures, s.retries, s.produce_failures), (2, 2, 0));
        assert!(!s.paused, "resumed once the step succeeded");
    }

    /// A record refused for good becomes a dead letter naming its topic and the error; a refused
    /// dead letter is dropped; a retriable failure is kept for the retry loop as it was.
    #[tokio::test]
    async fn records_the_broker_refuses_for_good_are_dead_lettered_and_the_rest_retried() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let stats = Arc::new(Stats::new());
        let (core, _consumer) = offline_core(stats.clone(), Discard::default());
        let config = core.config.clone();
        let record = |topic: &str| Outgoing {
            topic: topic.to_string(),
            key: Some("prod".into()),
            payload: vec![b'x'; 2_000_000],
            headers: Vec::new(),
        };
        let too_large = || KafkaError::MessageProduction(C::MessageSizeTooLarge);
        let retry = core.dead_letter_refused(vec![
            (record(&config.topics.anomalies), too_large()),
            (record(&config.topics.dlq), too_large()),
            (
                record(&config.topics.anomalies),
                KafkaError::MessageProduction(C::RequestTimedOut),
            ),
        ]);
        assert_eq!(retry.len(), 2, "the refused dead letter is dropped");
        let (letter, _) = &retry[0];
        assert_eq!(letter.topic, config.topics.dlq);
        assert!(
            letter.payload.is_empty(),
            "its payload is over the DLQ bound"
        );
        let header = |k: &str| letter.header(k);
        assert_eq!(header("culprit.reason").as_deref(), Some("produce_refused"));
        assert_eq!(
            header("culprit.target_topic").as_deref(),
            Some(config.topics.anomalies.as_str())
        );
        assert_eq!(retry[1].0.topic, config.topics.anomalies);
        assert_eq!(retry[1].0.payload.len(), 2_000_000, "retried unchanged");
        let s = stats.snapshot();
        assert_eq!((s.produce_refused, s.dlq_messages), (2, 1));
    }

    /// A redelivery of uncommitted work is skipped; a message below what this instance already
    /// committed means the partition's offsets went backwards, and it is processed.
    #[tokio::test]
    async fn offsets_that_go_back_below_the_committed_one_are_processed_and_counted() {
        let stats = Arc::new(Stats::new());
        let (mut core, consumer) = offline_core(stats.clone(), Discard::default());
        let now = culprit_core::wall_clock_ms();
        for offset in 0..6 {
            core.process(&message(0, offset, now)).unwrap();
        }
        let shutdown = std::future::pending::<()>().fuse();
        futures_util::pin_mut!(shutdown);
        core.flush(&consumer, &mut shutdown, false).await.unwrap();
        core.process(&message(0, 6, now)).unwrap();
        core.process(&message(0, 7, now)).unwrap();
        let handled = |s: &Stats| s.snapshot().messages;
        assert_eq!(handled(&stats), 8);

        core.process(&message(0, 6, now)).unwrap();
        assert_eq!(handled(&stats), 8, "an uncommitted redelivery is skipped");
        assert_eq!(stats.snapshot().offset_resets, 0);

        core.process(&message(0, 0, now)).unwrap();
        core.process(&message(0, 1, now)).unwrap();
        assert_eq!(
            handled(&stats),
            10,
            "the recreated partition's messages are handled"
        );
        assert_eq!(stats.snapshot().offset_resets, 1);
        core.process(&message(0, 1, now)).unwrap();
        assert_eq!(
            handled(&stats),
            10,
            "and redeliveries after it are skipped again"
        );
    }
}
