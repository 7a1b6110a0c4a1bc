//! Counters of a running service, lock-free, for the HTTP server to render for Prometheus.
//!
//! One [`Stats`] per service instance, shared behind an `Arc`: the worker increments, readers
//! call [`Stats::snapshot`] whenever they like.

use culprit_core::{Severity, SourceKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (milliseconds, inclusive) of the latency histogram buckets; a last, unbounded
/// bucket follows them.
pub const LATENCY_BUCKETS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Called with each message's processing latency as [`Stats`] records it (the binary feeds its
/// Prometheus histogram from here).
pub type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

#[derive(Clone, Default)]
struct Observer(Option<LatencyObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// A topic and partition.
type Partition = (String, i32);

/// Counters of one embedder or correlator.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input messages handled (not counting re-read ones).
    pub messages: AtomicU64,
    /// Input messages re-read to rebuild state after an assignment (see `Rewind`).
    pub replayed_messages: AtomicU64,
    /// Input messages that decoded into events.
    pub decoded_messages: AtomicU64,
    events: [AtomicU64; 4],
    /// Input messages sent to the dead-letter topic.
    pub dlq_messages: AtomicU64,
    /// Records the broker refused for good (too large, invalid); each is dead-lettered instead
    /// (and counted in `dlq_messages`) unless it was itself a dead letter.
    pub produce_refused: AtomicU64,
    /// Times a partition's offsets went backwards (topic recreated, offsets reset).
    pub offset_resets: AtomicU64,
    /// Wall-clock milliseconds when the worker last handled (or re-read) a message; 0: never.
    pub last_progress_ms: AtomicU64,
    /// Events refused for their timestamp (their messages are counted under `decode_errors`).
    pub out_of_range_events: AtomicU64,
    /// Input messages that did not decode, and ones with events out of time range
    /// (`timestamp_out_of_range`), by reason code; each of them is also dead-lettered.
    decode_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Anomalies published, by source and severity.
    anomalies: [[AtomicU64; 5]; 4],
    /// Anomalies, dependency edges and watermarks published on the anomalies topic.
    pub anomalies_published: AtomicU64,
    pub edges_published: AtomicU64,
    pub watermarks_published: AtomicU64,
    /// Alerts published (topic and hook).
    pub alerts_published: AtomicU64,
    /// Offset commits issued, and the ones that failed.
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Retries of produces, store writes and alert hooks.
    pub retries: AtomicU64,
    /// Batches of records the broker did not take (each retried), and failed calls of the
    /// handler's pre-commit step (the embedder's store write, the correlator's alert hooks).
    pub produce_failures: AtomicU64,
    pub hook_failures: AtomicU64,
    /// 1 while the consumer is paused for backpressure.
    pub paused: AtomicU64,
    /// Partitions currently assigned to this instance.
    pub assigned_partitions: AtomicU64,
    /// Wall-clock time from the Kafka timestamp of the latest handled message to its handling.
    pub last_lag_ms: AtomicU64,
    /// Per assigned partition: records between the committed offset and the high watermark, as
    /// librdkafka last reported them (its statistics, every `statistics.interval.ms`).
    offset_lag: Mutex<BTreeMap<Partition, i64>>,
    /// Per partition: records handled but not committed yet because the windows holding their
    /// events are still open, as of the last commit.
    held_back: Mutex<BTreeMap<Partition, i64>>,
    /// Per assigned partition: wall-clock time from the Kafka timestamp of its latest handled
    /// message to that message's handling, in milliseconds.
    time_lag_ms: Mutex<BTreeMap<String, BTreeMap<i32, u64>>>,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
    latency_observer: Observer,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Stats that also hand every recorded latency to `observer`.
    pub fn with_latency_observer(observer: LatencyObserver) -> Stats {
        Stats {
            latency_observer: Observer(Some(observer)),
            ..Stats::default()
        }
    }

    /// One input message that did not decode, with the decoder's reason code.
    pub(crate) fn add_decode_error(&self, reason: &'static str) {
        *lock(&self.decode_errors).entry(reason).or_default() += 1;
    }

    /// Input messages that did not decode with `reason` so far.
    pub fn decode_errors(&self, reason: &str) -> u64 {
        lock(&self.decode_errors).get(reason).copied().unwrap_or(0)
    }

    /// One anomaly published.
    pub(crate) fn add_anomaly(&self, source: SourceKind, severity: Severity) {
        self.anomalies[source_index(source)][severity_index(severity)].fetch_add(1, Relaxed);
    }

    /// Anomalies of `source` and `severity` published so far.
    pub fn anomalies(&self, source: SourceKind, severity: Severity) -> u64 {
        self.anomalies[source_index(source)][severity_index(severity)].load(Relaxed)
    }

    /// The offset lag of every partition librdkafka reports one for; replaces the last report.
    /// Why this worker is stuck, if it is: records wait on its partitions (offset lag as the
    /// broker last reported it, less what the worker handled and holds back from the commit
    /// itself) and it has handled no message for `window_ms`, or never since `started_ms`. A
    /// consumer that reconnected but no longer fetches looks healthy otherwise.
    pub fn stalled(&self, now_ms: u64, started_ms: u64, window_ms: u64) -> Option<String> {
        let held = lock(&self.held_back);
        let waiting: i64 = lock(&self.offset_lag)
            .iter()
            .map(|(key, lag)| lag - held.get(key).copied().unwrap_or(0))
            .filter(|&l| l > 0)
            .sum();
        if waiting == 0 {
            return None;
        }
        let since = self.last_progress_ms.load(Relaxed).max(started_ms);
        let idle = now_ms.saturating_sub(since);
        (idle >= window_ms).then(|| {
            format!(
                "no message handled for {} s while {waiting} records wait on its partitions",
                idle / 1000
            )
        })
    }

    /// Records handled but held back from the commit, per partition (replaces the last report).
    pub(crate) fn set_held_back(&self, held: BTreeMap<Partition, i64>) {
        *lock(&self.held_back) = held.into_iter().filter(|(_, h)| *h > 0).collect();
    }

    pub(crate) fn set_offset_lag(&self, lags: BTreeMap<Partition, i64>) {
        *lock(&self.offset_lag) = lags;
    }

    /// The time lag of one partition, from its latest handled message.
    pub(crate) fn set_time_lag_ms(&self, topic: &str, partition: i32, ms: u64) {
        let mut lags = lock(&self.time_lag_ms);
        match lags.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, ms);
            }
            None => {
                lags.insert(topic.to_string(), BTreeMap::from([(partition, ms)]));
            }
        }
    }

    /// The partitions were revoked: their lags no longer belong to this instance.
    pub(crate) fn clear_lags(&self) {
        lock(&self.offset_lag).clear();
        lock(&self.held_back).clear();
        lock(&self.time_lag_ms).clear();
    }

    /// Decoded events of `source` handled (not counting re-read ones).
    pub fn events(&self, source: SourceKind) -> u64 {
        self.events[source_index(source)].load(Relaxed)
    }

    pub(crate) fn add_events(&self, source: SourceKind, n: u64) {
        self.events[source_index(source)].fetch_add(n, Relaxed);
    }

    /// Records one message's processing latency: from its Kafka timestamp until its output was
    /// published and its offset committed.
    pub fn record_latency_ms(&self, ms: u64) {
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(ms, Relaxed);
        if let Some(observe) = &self.latency_observer.0 {
            observe(Duration::from_millis(ms));
        }
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut counts = Vec::with_capacity(self.latency.len());
        for c in &self.latency {
            counts.push(c.load(Relaxed));
        }
        StatsSnapshot {
            messages: self.messages.load(Relaxed),
            replayed_messages: self.replayed_messages.load(Relaxed),
            decoded_messages: self.decoded_messages.load(Relaxed),
            events: SourceKind::ALL
                .iter()
                .map(|&s| (s, self.events(s)))
                .collect(),
            dlq_messages: self.dlq_messages.load(Relaxed),
            produce_refused: self.produce_refused.load(Relaxed),
            offset_resets: self.offset_resets.load(Relaxed),
            out_of_range_events: self.out_of_range_events.load(Relaxed),
            decode_errors: lock(&self.decode_errors)
                .iter()
                .map(|(r, n)| (*r, *n))
                .collect(),
            anomalies: SourceKind::ALL
                .iter()
                .flat_map(|&s| Severity::ALL.iter().map(move |&v| (s, v)))
                .map(|(s, v)| (s, v, self.anomalies(s, v)))
                .filter(|(_, _, n)| *n > 0)
                .collect(),
            anomalies_published: self.anomalies_published.load(Relaxed),
            edges_published: self.edges_published.load(Relaxed),
            watermarks_published: self.watermarks_published.load(Relaxed),
            alerts_published: self.alerts_published.load(Relaxed),
            commits: self.commits.load(Relaxed),
            commit_failures: self.commit_failures.load(Relaxed),
            retries: self.retries.load(Relaxed),
            produce_failures: self.produce_failures.load(Relaxed),
            hook_failures: self.hook_failures.load(Relaxed),
            paused: self.paused.load(Relaxed) != 0,
            assigned_partitions: self.assigned_partitions.load(Relaxed),
            last_lag_ms: self.last_lag_ms.load(Relaxed),
            partitions: self.partition_lags(),
            latency: LatencyHistogram {
                bounds_ms: LATENCY_BUCKETS_MS.to_vec(),
                counts,
                sum_ms: self.latency_sum_ms.load(Relaxed),
            },
        }
    }
}

impl Stats {
    fn partition_lags(&self) -> Vec<PartitionLag> {
        fn at<'a>(
            lags: &'a mut BTreeMap<Partition, PartitionLag>,
            key: &Partition,
        ) -> &'a mut PartitionLag {
            lags.entry(key.clone()).or_insert_with(|| PartitionLag {
                topic: key.0.clone(),
                partition: key.1,
                offsets: None,
                held_back: None,
                time_ms: None,
            })
        }
        let mut lags = BTreeMap::new();
        for (key, lag) in lock(&self.offset_lag).iter() {
            at(&mut lags, key).offsets = Some(*lag);
        }
        for (key, held) in lock(&self.held_back).iter() {
            at(&mut lags, key).held_back = Some(*held);
        }
        for (topic, partitions) in lock(&self.time_lag_ms).iter() {
            for (partition, ms) in partitions {
                at(&mut lags, &(topic.clone(), *partition)).time_ms = Some(*ms);
            }
        }
        lags.into_values().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn severity_index(severity: Severity) -> usize {
    usize::from(severity.level() - 1)
}

fn source_index(source: SourceKind) -> usize {
    match source {
        SourceKind::Traces => 0,
        SourceKind::Logs => 1,
        SourceKind::Metrics => 2,
        SourceKind::Changes => 3,
    }
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub messages: u64,
    pub replayed_messages: u64,
    pub decoded_messages: u64,
    pub events: Vec<(SourceKind, u64)>,
    pub dlq_messages: u64,
    pub produce_refused: u64,
    pub offset_resets: u64,
    pub out_of_range_events: u64,
    /// Input messages that did not decode or had events out of time range, by reason code.
    pub decode_errors: Vec<(&'static str, u64)>,
    /// Anomalies published, by source and severity (only the non-zero ones).
    pub anomalies: Vec<(SourceKind, Severity, u64)>,
    pub anomalies_published: u64,
    pub edges_published: u64,
    pub watermarks_published: u64,
    pub alerts_published: u64,
    pub commits: u64,
    pub commit_failures: u64,
    pub retries: u64,
    pub produce_failures: u64,
    pub hook_failures: u64,
    pub paused: bool,
    pub assigned_partitions: u64,
    pub last_lag_ms: u64,
    /// Lag of every partition this instance knows one for.
    pub partitions: Vec<PartitionLag>,
    pub latency: LatencyHistogram,
}

/// How far this instance is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Records between the committed offset and the high watermark, when librdkafka reported
    /// both (statistics every `statistics.interval.ms`; none before the first commit).
    pub offsets: Option<i64>,
    /// Of those, records this instance handled but holds back from the commit because the
    /// windows holding their events are still open (none when it holds none back).
    pub held_back: Option<i64>,
    /// Wall-clock time from the Kafka timestamp of the partition's latest handled message to its
    /// handling (producer clock vs. this host's clock).
    pub time_ms: Option<u64>,
}

/// Message latency in fixed buckets, Prometheus style (`counts` are per bucket, not cumulative;
/// the last count is the unbounded bucket).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyHistogram {
    pub bounds_ms: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum_ms: u64,
}

impl LatencyHistogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (None when empty; `u64::MAX` when it
    /// lies in the unbounded bucket).
    pub fn quantile_upper_bound_ms(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds_ms.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_report_the_bucket_bound_that_holds_them() {
        let stats = Stats::new();
        for _ in 0..98 {
            stats.record_latency_ms(3);
        }
        stats.record_latency_ms(400);
        stats.record_latency_ms(1_000_000);
        let h = stats.snapshot().latency;
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_upper_bound_ms(0.5), Some(5));
        assert_eq!(h.quantile_upper_bound_ms(0.99), Some(500));
        assert_eq!(h.quantile_upper_bound_ms(1.0), Some(u64::MAX));
        assert_eq!(h.sum_ms, 98 * 3 + 400 + 1_000_000);
    }

    #[test]
    fn events_are_counted_per_source() {
        let stats = Stats::new();
        stats.add_events(SourceKind::Logs, 5);
        stats.add_events(SourceKind::Logs, 2);
        assert_eq!(stats.events(SourceKind::Logs), 7);
        assert_eq!(stats.events(SourceKind::Traces), 0);
    }

    #[test]
    fn a_worker_is_stalled_only_when_records_wait_and_it_handled_none_for_the_window() {
        let stats = Stats::new();
        assert_eq!(stats.stalled(100_000, 0, 60_000), None, "nothing waits");
        stats.set_offset_lag(BTreeMap::from([(("t".to_string(), 0), 169)]));
        assert_eq!(
            stats.stalled(50_000, 0, 60_000),
            None,
            "not idle long enough"
        );
        let why = stats
            .stalled(100_000, 0, 60_000)
            .expect("stalled since start");
        assert!(why.contains("169 records wait"), "{why}");
        stats.last_progress_ms.store(90_000, Relaxed);
        assert_eq!(
            stats.stalled(100_000, 0, 60_000),
            None,
            "it handled one lately"
        );
        assert!(stats.stalled(150_000, 0, 60_000).is_some());
        // Records it handled and holds back until their windows close wait on nobody else.
        stats.set_held_back(BTreeMap::from([(("t".to_string(), 0), 169)]));
        assert_eq!(
            stats.stalled(150_000, 0, 60_000),
            None,
            "what waits is its own held-back work"
        );
        stats.set_held_back(BTreeMap::from([(("t".to_string(), 0), 100)]));
        let why = stats.stalled(150_000, 0, 60_000).expect("69 others wait");
        assert!(why.contains("69 records wait"), "{why}");
        stats.set_offset_lag(BTreeMap::from([(("t".to_string(), 0), 0)]));
        assert_eq!(stats.stalled(150_000, 0, 60_000), None, "caught up");
    }
}
