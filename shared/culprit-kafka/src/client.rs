//! librdkafka clients as the services use them: configuration, the rebalance handling that
//! rewinds newly assigned partitions, topic creation, and producing a batch of records.

use crate::config::{KafkaConfig, Rewind};
use crate::error::ServiceError;
use crate::stats::Stats;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `bootstrap.servers`, `client.id` and the configured properties (`extra`, then `extra_files`):
/// the base of every client culprit creates. Fails when a secret file cannot be read.
pub fn client_config(config: &KafkaConfig) -> Result<ClientConfig, ServiceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set("client.id", &config.client_id);
    set_properties(&mut c, config)?;
    Ok(c)
}

/// [`client_config`] for callers that cannot stop on an error, such as a readiness check: a
/// secret file that cannot be read is logged and left out, so the broker refuses the client and
/// the check reports why. The services themselves read every file when they start, and stop
/// with [`ServiceError::SecretFile`] if one is missing.
pub fn base_client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set("client.id", &config.client_id);
    for (k, v) in &config.extra {
        c.set(k, v);
    }
    for (property, path) in &config.extra_files {
        match read_property_file(config, property, path) {
            Ok(value) => {
                c.set(property, value);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    default_ca_location(&mut c);
    c
}

/// Whether the brokers answer a metadata request within three seconds: the services' readiness.
pub async fn brokers_reachable(config: &KafkaConfig) -> Result<(), String> {
    let config = base_client_config(config);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, std::time::Duration::from_secs(3))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Sets `extra` verbatim and `extra_files` from their files, after culprit's own properties so
/// that an operator's setting wins.
fn set_properties(c: &mut ClientConfig, config: &KafkaConfig) -> Result<(), ServiceError> {
    for (k, v) in &config.extra {
        c.set(k, v);
    }
    for (property, path) in &config.extra_files {
        c.set(property, read_property_file(config, property, path)?);
    }
    default_ca_location(c);
    Ok(())
}

/// With TLS and no CA configured, verifies brokers against the system's CA bundle: librdkafka's
/// OpenSSL is linked statically, and its own default CA directory (`/usr/local/ssl`) exists on
/// no common system, so it is told to probe the usual places instead
/// (`/etc/ssl/certs/ca-certificates.crt`, `/etc/pki/tls/certs/ca-bundle.crt`, ...).
fn default_ca_location(c: &mut ClientConfig) {
    let tls = c
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
    let ca_given = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"]
        .iter()
        .any(|k| c.get(k).is_some());
    if tls && !ca_given {
        c.set("ssl.ca.location", "probe");
    }
}

/// The value of an `extra_files` property: the file's content without its trailing newline
/// (`kubectl create secret --from-file` keeps the one an editor adds).
fn read_property_file(
    config: &KafkaConfig,
    property: &str,
    path: &std::path::Path,
) -> Result<String, ServiceError> {
    let error = |reason: String| ServiceError::SecretFile {
        property: property.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    if config.extra.contains_key(property) {
        return Err(error(
            "it is also set in kafka.extra; set it in one of the two".to_string(),
        ));
    }
    let mut value = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(error("the file is empty".to_string()));
    }
    Ok(value)
}

/// A consumer in `group` subscribed to `topic`, whose rebalance callback rewinds partitions it is
/// newly assigned as `rewind` says; with the partition state that callback shares with the worker.
pub(crate) fn subscribed_consumer(
    config: &KafkaConfig,
    group: &str,
    client_id: &str,
    topic: &str,
    rewind: crate::config::Rewind,
    stats: std::sync::Arc<crate::stats::Stats>,
) -> Result<
    (
        rdkafka::consumer::StreamConsumer<RewindContext>,
        std::sync::Arc<std::sync::Mutex<PartitionState>>,
    ),
    crate::error::ServiceError,
> {
    use rdkafka::config::FromClientConfigAndContext;
    use rdkafka::consumer::Consumer;
    let partitions = std::sync::Arc::new(std::sync::Mutex::new(PartitionState::default()));
    let context = RewindContext {
        rewind,
        state: partitions.clone(),
        stats,
    };
    let consumer = rdkafka::consumer::StreamConsumer::from_config_and_context(
        &consumer_config(config, group, client_id)?,
        context,
    )
    .map_err(|e| crate::error::ServiceError::Client {
        what: "consumer",
        source: e,
    })?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| crate::error::ServiceError::Client {
            what: "subscription",
            source: e,
        })?;
    Ok((consumer, partitions))
}

/// How often librdkafka reports a consumer's statistics (and with them its offset lag).
pub(crate) const STATISTICS_INTERVAL_MS: &str = "5000";

/// What librdkafka may prefetch for one consumer, in KiB: 16 MiB instead of its 64 MiB. A batch
/// of OTLP spans is about 100 KiB, so this is still a second or more of work at full speed, and
/// the rest was resident memory an embedder never needed (`kafka.extra` may change it).
pub(crate) const PREFETCH_KBYTES: &str = "16384";

pub(crate) fn consumer_config(
    config: &KafkaConfig,
    group: &str,
    client_id: &str,
) -> Result<ClientConfig, ServiceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never "latest": a new group starts at the oldest retained message (and tansu answers
        // "latest" lookups wrongly).
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            config.heartbeat_interval_ms.to_string(),
        )
        .set("enable.partition.eof", "false")
        // Statistics carry each partition's committed offset and high watermark: the offset lag
        // of `Stats` (`kafka.extra` may change the interval; "0" turns them off).
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
    set_properties(&mut c, config)?;
    Ok(c)
}

pub(crate) fn producer(
    config: &KafkaConfig,
    client_id: &str,
) -> Result<FutureProducer, ServiceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        .set("linger.ms", "5")
        .set("acks", "all")
        // librdkafka retries transient errors itself for this long; after it, culprit's own
        // backoff loop re-sends, so a message is never dropped.
        .set("message.timeout.ms", "30000");
    set_properties(&mut c, config)?;
    c.create().map_err(|e| ServiceError::Client {
        what: "producer",
        source: e,
    })
}

/// Creates the topics that do not exist yet, with `partitions` partitions and replication 1 for
/// a test broker (production topics are usually created by the platform team instead).
pub async fn ensure_topics(
    config: &KafkaConfig,
    names: &[&str],
    partitions: i32,
) -> Result<(), ServiceError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config)?
            .create()
            .map_err(|e| ServiceError::Client {
                what: "admin client",
                source: e,
            })?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|e| ServiceError::Client {
            what: "topic creation",
            source: e,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ServiceError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

pub(crate) type PartitionKey = (String, i32);

/// What the worker and the rebalance callback share about partitions.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    /// Next offset this instance expects per partition it has handled: earlier ones are
    /// redeliveries and skipped. A partition in here is never rewound again.
    pub next: HashMap<PartitionKey, i64>,
    /// Committed offset at assignment of a rewound partition: messages before it are re-read.
    pub boundary: HashMap<PartitionKey, i64>,
    /// The partitions assigned at the last rebalance; None before the first one.
    pub assigned: Option<HashSet<PartitionKey>>,
}

impl PartitionState {
    /// Whether this instance owns `partition` now (assumed before any rebalance).
    pub fn owns(&self, partition: &PartitionKey) -> bool {
        self.assigned.as_ref().is_none_or(|a| a.contains(partition))
    }
}

/// Consumer context: applies [`Rewind`] to partitions this instance is assigned for the first
/// time, by assigning them at an offset before the committed one.
pub(crate) struct RewindContext {
    pub rewind: Rewind,
    pub state: Arc<Mutex<PartitionState>>,
    pub stats: Arc<Stats>,
}

impl ClientContext for RewindContext {
    /// librdkafka's statistics: keeps the offset lag of every partition it fetches for this
    /// instance (high watermark minus committed offset, both as the broker last reported them).
    fn stats(&self, statistics: Statistics) {
        self.stats.set_offset_lag(offset_lags(&statistics));
    }
}

/// Records between the committed offset and the high watermark (the last stable offset under
/// `isolation.level=read_committed`) of every partition this consumer fetches, as librdkafka
/// computed them; partitions without a committed offset yet, or not assigned here, are left out.
pub(crate) fn offset_lags(statistics: &Statistics) -> BTreeMap<PartitionKey, i64> {
    let mut lags = BTreeMap::new();
    for (topic, t) in &statistics.topics {
        for (&partition, p) in &t.partitions {
            // Partition -1 is librdkafka's internal "unassigned" queue.
            if partition < 0 || !p.desired || p.consumer_lag < 0 {
                continue;
            }
            lags.insert((topic.clone(), partition), p.consumer_lag);
        }
    }
    lags
}

impl ConsumerContext for RewindContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assignment = tpl.clone();
                if self.rewind != Rewind::None {
                    if let Err(e) = self.rewind_fresh(consumer, &mut assignment) {
                        tracing::warn!("could not rewind newly assigned partitions, starting at committed offsets: {e}");
                    }
                }
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!("assigning partitions failed: {e}");
                }
                self.stats
                    .assigned_partitions
                    .store(assignment.count() as u64, Relaxed);
                self.state().assigned = Some(
                    assignment
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect(),
                );
                tracing::info!(partitions = ?assignment.to_topic_map().keys().collect::<Vec<_>>(), "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = consumer.unassign() {
                    tracing::error!("unassigning partitions failed: {e}");
                }
                self.stats.assigned_partitions.store(0, Relaxed);
                self.stats.clear_lags();
                self.state().assigned = Some(HashSet::new());
                tracing::info!("partitions revoked");
            }
            other => {
                tracing::error!("rebalance error: {}", RDKafkaErrorCode::from(other));
                let _ = consumer.unassign();
                self.stats.assigned_partitions.store(0, Relaxed);
                self.stats.clear_lags();
                self.state().assigned = Some(HashSet::new());
            }
        }
    }
}

impl RewindContext {
    fn state(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rewind_fresh(
        &self,
        consumer: &BaseConsumer<Self>,
        assignment: &mut TopicPartitionList,
    ) -> Result<(), KafkaError> {
        let mut state = self.state();
        let mut fresh = TopicPartitionList::new();
        for e in assignment.elements() {
            if !state
                .next
                .contains_key(&(e.topic().to_string(), e.partition()))
            {
                fresh.add_partition(e.topic(), e.partition());
            }
        }
        if fresh.count() == 0 {
            return Ok(());
        }
        let committed = consumer.committed_offsets(fresh, Duration::from_secs(10))?;
        for e in committed.elements() {
            let Offset::Offset(at) = e.offset() else {
                continue;
            };
            if at <= 0 {
                continue;
            }
            let target = match self.rewind {
                Rewind::Messages(n) if at > n as i64 => Offset::Offset(at - n as i64),
                Rewind::Messages(_) | Rewind::Beginning => Offset::Beginning,
                Rewind::None => continue,
            };
            assignment.set_partition_offset(e.topic(), e.partition(), target)?;
            state
                .boundary
                .insert((e.topic().to_string(), e.partition()), at);
            tracing::info!(
                topic = e.topic(),
                partition = e.partition(),
                committed = at,
                ?target,
                "rewinding to rebuild state"
            );
        }
        Ok(())
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    /// The value of header `key` as text, for tests that read what a record carries.
    #[cfg(test)]
    pub(crate) fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(h, _)| h == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// A record for the dead-letter topic: `payload` with `headers`, plus why (`culprit.reason`, a
    /// stable code; `culprit.error`, the message). A payload over `max_payload` bytes is dropped
    /// and its size recorded instead (`culprit.payload_dropped`), so the dead letter itself cannot
    /// be refused as too large.
    pub(crate) fn dead_letter(
        dlq_topic: &str,
        key: Option<String>,
        payload: &[u8],
        mut headers: Vec<(String, Vec<u8>)>,
        (reason, error): (&str, &str),
        max_payload: usize,
    ) -> Outgoing {
        headers.push(("culprit.reason".into(), reason.as_bytes().to_vec()));
        headers.push(("culprit.error".into(), error.as_bytes().to_vec()));
        let payload = if payload.len() > max_payload {
            headers.push((
                "culprit.payload_dropped".into(),
                payload.len().to_string().into_bytes(),
            ));
            Vec::new()
        } else {
            payload.to_vec()
        };
        Outgoing {
            topic: dlq_topic.to_string(),
            key,
            payload,
            headers,
        }
    }
}

/// Whether the broker (or the client, before sending) refuses a record in a way no retry can
/// change: it is too large or malformed. Everything else (timeouts, leader changes, a broker
/// that is down, authorisation an operator may still grant) is worth retrying.
pub(crate) fn is_refused_for_good(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
    )
}

/// Produces every record and waits for all deliveries; returns the records that failed.
pub(crate) async fn produce_all(
    producer: &FutureProducer,
    records: Vec<Outgoing>,
) -> Vec<(Outgoing, KafkaError)> {
    let mut failed: HashMap<usize, KafkaError> = HashMap::new();
    let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
    for (i, r) in records.iter().enumerate() {
        loop {
            let mut record = FutureRecord::to(&r.topic).payload(&r.payload);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            if !r.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in &r.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                record = record.headers(headers);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back((i, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Bounded in flight: wait for the oldest delivery, then try again.
                    match pending.pop_front() {
                        Some((j, delivery)) => {
                            if let Some(e) = delivery_error(delivery.await) {
                                failed.insert(j, e);
                            }
                        }
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => {
                    failed.insert(i, e);
                    break;
                }
            }
        }
    }
    for (i, delivery) in pending {
        if let Some(e) = delivery_error(delivery.await) {
            failed.insert(i, e);
        }
    }
    if failed.is_empty() {
        return Vec::new();
    }
    let indices: HashSet<usize> = failed.keys().copied().collect();
    records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| indices.contains(i))
        .map(|(i, r)| {
            let e = failed.remove(&i).expect("failed index");
            (r, e)
        })
        .collect()
}

fn delivery_error<E>(
    result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Option<KafkaError> {
    match result {
        Ok(Ok(_)) => None,
        Ok(Err((e, _))) => Some(e),
        Err(_) => Some(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};

    fn partition(id: i32, desired: bool, consumer_lag: i64) -> Partition {
        Partition {
            partition: id,
            desired,
            hi_offset: 100,
            committed_offset: 100 - consumer_lag,
            consumer_lag,
            ..Partition::default()
        }
    }

    #[test]
    fn librdkafka_statistics_become_the_offset_lag_of_the_assigned_partitions() {
        let mut statistics = Statistics::default();
        statistics.topics.insert(
            "otlp_spans".to_string(),
            Topic {
                topic: "otlp_spans".to_string(),
                partitions: HashMap::from([
                    (0, partition(0, true, 40)),
                    (1, partition(1, true, -1)),  // nothing committed yet
                    (2, partition(2, false, 5)),  // not assigned here
                    (-1, partition(-1, true, 3)), // librdkafka's internal partition
                ]),
                ..Topic::default()
            },
        );
        let stats = Arc::new(Stats::new());
        let context = RewindContext {
            rewind: Rewind::None,
            state: Arc::default(),
            stats: stats.clone(),
        };
        context.stats(statistics);
        let lags = stats.snapshot().partitions;
        assert_eq!(lags.len(), 1, "{lags:?}");
        assert_eq!(
            (lags[0].topic.as_str(), lags[0].partition, lags[0].offsets),
            ("otlp_spans", 0, Some(40))
        );

        // A later report replaces the earlier one.
        context.stats(Statistics::default());
        assert!(stats.snapshot().partitions.is_empty());
    }

    #[test]
    fn consumers_ask_librdkafka_for_statistics_and_an_operator_may_change_the_interval() {
        let config = KafkaConfig::default();
        let c = consumer_config(&config, "g", "c").unwrap();
        assert_eq!(
            c.get("statistics.interval.ms"),
            Some(STATISTICS_INTERVAL_MS)
        );
        let mut config = KafkaConfig::default();
        config
            .extra
            .insert("statistics.interval.ms".to_string(), "0".to_string());
        let c = consumer_config(&config, "g", "c").unwrap();
        assert_eq!(c.get("statistics.interval.ms"), Some("0"));
    }

    #[test]
    fn consumers_prefetch_less_than_librdkafkas_default_unless_told_otherwise() {
        let c = consumer_config(&KafkaConfig::default(), "g", "c").unwrap();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some(PREFETCH_KBYTES));
        let mut config = KafkaConfig::default();
        config.extra.insert(
            "queued.max.messages.kbytes".to_string(),
            "65536".to_string(),
        );
        let c = consumer_config(&config, "g", "c").unwrap();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("65536"));
    }

    #[test]
    fn only_records_too_large_or_malformed_are_refused_for_good() {
        use RDKafkaErrorCode as C;
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidMessageSize,
            C::InvalidRecord,
        ] {
            assert!(
                is_refused_for_good(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            C::QueueFull,
            C::RequestTimedOut,
            C::NotLeaderForPartition,
            C::BrokerTransportFailure,
        ] {
            assert!(
                !is_refused_for_good(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        assert!(!is_refused_for_good(&KafkaError::Canceled));
    }

    #[test]
    fn a_dead_letter_says_why_and_drops_a_payload_over_its_bound() {
        let letter = Outgoing::dead_letter(
            "dlq",
            Some("k".into()),
            &[1u8; 100],
            vec![("origin".into(), b"x".to_vec())],
            ("produce_refused", "too large"),
            10,
        );
        assert_eq!(letter.topic, "dlq");
        assert!(letter.payload.is_empty());
        let header = |k: &str| letter.header(k);
        assert_eq!(header("culprit.reason").as_deref(), Some("produce_refused"));
        assert_eq!(header("culprit.payload_dropped").as_deref(), Some("100"));
        assert_eq!(header("origin").as_deref(), Some("x"));
        let kept = Outgoing::dead_letter("dlq", None, b"abc", vec![], ("r", "e"), 10);
        assert_eq!(kept.payload, b"abc");
    }
}
