//! The Kafka services end to end against a real broker: `bash scripts/kafka-test-env.sh start`.

use anyhow::{Context as _, Result};
use culprit_core::{RcaAlert, SourceKind};
use culprit_integration_tests::*;
use culprit_kafka::{
    run_correlator, run_embedder, CorrelatorOptions, EmbedderOptions, KafkaConfig, Rewind,
    ServiceError, Stats,
};
use culprit_otlp::{Encoding, Signal};
use culprit_pipeline::{BusMessage, CorrelateStage, DetectStage};
use culprit_sim::{Scenario, SimConfig};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Services running as tasks of the test's runtime, stopped together.
struct Services {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<Result<(), ServiceError>>)>,
}

impl Services {
    fn new() -> Services {
        Services {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn embedder(&mut self, config: &KafkaConfig, source: SourceKind, options: EmbedderOptions) {
        let config = config.clone();
        let shutdown = self.shutdown_signal();
        let task = tokio::spawn(async move {
            run_embedder(
                &config,
                source,
                DetectStage::new(&Default::default()),
                options,
                shutdown,
            )
            .await
        });
        self.tasks.push((format!("embedder {source}"), task));
    }

    fn correlator(&mut self, config: &KafkaConfig, options: CorrelatorOptions) {
        let config = config.clone();
        let shutdown = self.shutdown_signal();
        let task = tokio::spawn(async move {
            run_correlator(
                &config,
                CorrelateStage::new(Default::default()),
                options,
                shutdown,
            )
            .await
        });
        self.tasks.push(("correlator".to_string(), task));
    }

    /// Asks every service to stop and checks each returned cleanly.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .with_context(|| format!("{name} did not stop"))?;
            result
                .with_context(|| format!("{name} panicked"))?
                .with_context(|| format!("{name} failed"))?;
        }
        Ok(())
    }
}

fn options(
    warmup_secs: u32,
    sink: Arc<dyn culprit_kafka::EventSink>,
    stats: Arc<Stats>,
) -> EmbedderOptions {
    EmbedderOptions {
        warmup_secs,
        sink,
        stats,
        relearners: None,
    }
}

/// The logs, metrics and changes embedders and the correlator, in process, for tests that run
/// the traces embedder as a child process they kill.
fn other_sources_and_correlator(env: &TestEnv) -> Services {
    let mut services = Services::new();
    for source in [SourceKind::Logs, SourceKind::Metrics, SourceKind::Changes] {
        services.embedder(
            &env.config,
            source,
            options(
                WARMUP_SECS,
                Arc::new(culprit_kafka::NoopSink),
                Arc::new(Stats::new()),
            ),
        );
    }
    services.correlator(&env.config, CorrelatorOptions::default());
    services
}

async fn produce_run(env: &TestEnv, run: &culprit_sim::SimRun) -> Result<()> {
    // One key per environment, as the exporter partitioning by resource would: each source's
    // requests stay in event-time order in one partition.
    for (topic, payloads) in run_records(run, &env.config) {
        let records: Vec<Record> = payloads
            .into_iter()
            .map(|p| Record {
                key: Some(culprit_sim::ENVIRONMENT.to_string()),
                ..Record::new(p)
            })
            .collect();
        env.produce(&topic, &records).await?;
    }
    Ok(())
}

/// Reads the alerts topic until an incident after the fault names `service` first.
async fn wait_for_alert_naming(
    env: &TestEnv,
    service: &str,
    since_ns: i64,
    timeout: Duration,
) -> Result<Vec<RcaAlert>> {
    let reader = TestEnv {
        config: env.config.clone(),
    };
    let topic = env.config.topics.alerts.clone();
    let service = service.to_string();
    let received = tokio::task::spawn_blocking(move || {
        reader.read_until(&topic, timeout, |records| {
            let alerts: Vec<RcaAlert> = records
                .iter()
                .filter_map(|r| serde_json::from_slice(&r.payload).ok())
                .collect();
            alerts.iter().any(|a| {
                a.updated_at >= since_ns
                    && a.root_causes.first().is_some_and(|c| c.service == service)
            })
        })
    })
    .await??;
    received
        .iter()
        .map(|r| {
            serde_json::from_slice(&r.payload)
                .context("an alert on the alerts topic is not an RcaAlert")
        })
        .collect()
}

fn fault_start_ns(run: &culprit_sim::SimRun) -> i64 {
    (run.label.fault_start_unix_s - 120) * 1_000_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_deploy_cpu_spike_produces_an_alert_naming_inventory_first() -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "e2e").await?;
    let run = short_incident(Scenario::DeployCpuSpike);
    assert_eq!(run.label.root_cause_service, "inventory");
    produce_run(&env, &run).await?;

    let mut services = Services::new();
    let mut stats = Vec::new();
    for source in SourceKind::ALL {
        let s = Arc::new(Stats::new());
        stats.push((source, s.clone()));
        services.embedder(
            &env.config,
            source,
            options(WARMUP_SECS, Arc::new(culprit_kafka::NoopSink), s),
        );
    }
    let publisher = Arc::new(CollectingPublisher::default());
    let correlator_stats = Arc::new(Stats::new());
    services.correlator(
        &env.config,
        CorrelatorOptions {
            publisher: publisher.clone(),
            stats: correlator_stats.clone(),
            ..Default::default()
        },
    );

    let alerts = wait_for_alert_naming(
        &env,
        "inventory",
        fault_start_ns(&run),
        Duration::from_secs(400),
    )
    .await?;
    for (source, s) in &stats {
        eprintln!("{source}: {:?}", s.snapshot());
    }
    eprintln!("correlator: {:?}", correlator_stats.snapshot());
    let named = first_candidate(&alerts, fault_start_ns(&run));
    assert_eq!(
        named.as_deref(),
        Some("inventory"),
        "alerts on the topic: {:#?}",
        alerts.iter().map(|a| &a.summary).collect::<Vec<_>>()
    );
    // The publisher hook saw the same alerts as the topic (it runs before the commit).
    assert!(
        wait_for(Duration::from_secs(10), || !publisher
            .alerts
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    services.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stamped_in_2100_go_to_the_dlq_and_the_real_incident_still_names_inventory(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "future").await?;
    let run = short_incident(Scenario::DeployCpuSpike);
    // One message per topic from a run stamped in the year 2100, mixed into the real ones.
    let future = culprit_sim::simulate(
        Scenario::DeployCpuSpike,
        &SimConfig {
            start_unix_s: 4_102_444_800,
            normal_minutes: 1,
            fault_minutes: 1,
            ..SimConfig::default()
        },
    );
    let bad: Vec<(String, Vec<u8>)> = run_records(&future, &env.config)
        .into_iter()
        .map(|(topic, payloads)| (topic, payloads[0].clone()))
        .collect();
    for ((topic, payloads), (bad_topic, bad_payload)) in
        run_records(&run, &env.config).into_iter().zip(&bad)
    {
        assert_eq!(&topic, bad_topic);
        let mut records: Vec<Record> = payloads.into_iter().map(Record::new).collect();
        let middle = records.len() / 2;
        records.insert(
            middle,
            Record {
                headers: vec![("origin".into(), b"2100".to_vec())],
                ..Record::new(bad_payload.clone())
            },
        );
        for r in &mut records {
            r.key = Some(culprit_sim::ENVIRONMENT.to_string());
        }
        env.produce(&topic, &records).await?;
    }

    let mut services = Services::new();
    let mut stats = Vec::new();
    for source in SourceKind::ALL {
        let s = Arc::new(Stats::new());
        stats.push((source, s.clone()));
        services.embedder(
            &env.config,
            source,
            options(WARMUP_SECS, Arc::new(culprit_kafka::NoopSink), s),
        );
    }
    services.correlator(&env.config, CorrelatorOptions::default());

    let alerts = wait_for_alert_naming(
        &env,
        "inventory",
        fault_start_ns(&run),
        Duration::from_secs(400),
    )
    .await?;
    let dlq_topic = env.config.topics.dlq.clone();
    let reader = TestEnv {
        config: env.config.clone(),
    };
    let dead = tokio::task::spawn_blocking(move || {
        reader.read_until(&dlq_topic, Duration::from_secs(30), |r| r.len() >= 4)
    })
    .await??;
    services.stop().await?;

    assert_eq!(
        first_candidate(&alerts, fault_start_ns(&run)).as_deref(),
        Some("inventory"),
        "alerts on the topic: {:#?}",
        alerts
            .iter()
            .map(|a| (&a.summary, a.updated_at))
            .collect::<Vec<_>>()
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.updated_at < 4_102_444_800 * 1_000_000_000),
        "no alert lives in 2100"
    );
    assert_eq!(dead.len(), 4, "one dead letter per topic");
    for (topic, payload) in &bad {
        let d = dead
            .iter()
            .find(|d| d.header("culprit.source_topic").as_deref() == Some(topic.as_str()))
            .with_context(|| format!("no dead letter from {topic}"))?;
        assert_eq!(
            d.header("culprit.reason").as_deref(),
            Some("timestamp_out_of_range")
        );
        assert_eq!(d.header("origin").as_deref(), Some("2100"));
        assert!(
            d.header("culprit.error")
                .is_some_and(|e| e.contains("max_future_skew_secs")),
            "{:?}",
            d.header("culprit.error")
        );
        assert_eq!(&d.payload, payload, "the whole message, as it came");
    }
    for (source, s) in &stats {
        assert_eq!(
            s.decode_errors("timestamp_out_of_range"),
            1,
            "{source}: {:?}",
            s.snapshot()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dlq_with_reasons_while_valid_ones_around_them_are_processed(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let mut env = TestEnv::new(&brokers, "dlq").await?;
    let run = culprit_sim::simulate(
        Scenario::NewException,
        &SimConfig {
            normal_minutes: 1,
            fault_minutes: 1,
            batch_seconds: 5,
            ..SimConfig::default()
        },
    );
    let spans: Vec<Vec<u8>> = run
        .traces
        .iter()
        .take(6)
        .map(culprit_otlp::to_protobuf)
        .collect();
    let logs: Vec<Vec<u8>> = run.logs.iter().take(4).map(culprit_otlp::to_json).collect();
    let largest = spans.iter().chain(&logs).map(Vec::len).max().unwrap_or(0);
    env.config.max_message_bytes = largest + 1;
    env.config.encodings.logs = Encoding::Json;

    // A protobuf cut where it no longer parses.
    let whole = &spans[5];
    let truncated = (whole.len() / 2..whole.len())
        .map(|n| whole[..n].to_vec())
        .find(|t| culprit_otlp::decode(Signal::Traces, Encoding::Protobuf, t).is_err())
        .expect("some prefix is malformed");
    let tagged = |tag: &str, payload: Vec<u8>| Record {
        headers: vec![("origin".into(), tag.as_bytes().to_vec())],
        ..Record::new(payload)
    };
    let span_records = vec![
        tagged("valid", spans[0].clone()),
        tagged("truncated", truncated.clone()),
        tagged("valid", spans[1].clone()),
        tagged("oversized", vec![7u8; largest + 100]),
        tagged("valid", spans[2].clone()),
        tagged("empty", Vec::new()),
        tagged("valid", spans[3].clone()),
    ];
    let wrong_schema =
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":{"nested":true}}]}]}]}"#
            .to_vec();
    let log_records = vec![
        tagged("valid", logs[0].clone()),
        tagged("invalid_json", b"{\"resourceLogs\": [".to_vec()),
        tagged("valid", logs[1].clone()),
        tagged("wrong_schema", wrong_schema.clone()),
        tagged("valid", logs[2].clone()),
    ];
    env.produce(&env.config.topics.spans, &span_records).await?;
    env.produce(&env.config.topics.logs, &log_records).await?;

    let store = Arc::new(MemoryStore::default());
    let (span_stats, log_stats) = (Arc::new(Stats::new()), Arc::new(Stats::new()));
    let mut services = Services::new();
    services.embedder(
        &env.config,
        SourceKind::Traces,
        options(0, store.clone(), span_stats.clone()),
    );
    services.embedder(
        &env.config,
        SourceKind::Logs,
        options(0, store.clone(), log_stats.clone()),
    );

    let dlq_topic = env.config.topics.dlq.clone();
    let reader = TestEnv {
        config: env.config.clone(),
    };
    let dead = tokio::task::spawn_blocking(move || {
        reader.read_until(&dlq_topic, Duration::from_secs(90), |r| r.len() >= 5)
    })
    .await??;

    let mut expected = expected_keys(Signal::Traces, &spans[..4]);
    for p in &logs[..3] {
        for e in culprit_otlp::decode(Signal::Logs, Encoding::Json, p)? {
            *expected.entry(culprit_kafka::event_key(&e)).or_default() += 1;
        }
    }
    let all_stored = wait_for(Duration::from_secs(60), || store.counts() == expected).await;
    services.stop().await?;

    assert_eq!(
        dead.len(),
        5,
        "dead letters: {:?}",
        dead.iter().map(|d| d.header("origin")).collect::<Vec<_>>()
    );
    let by_origin: HashMap<String, &Received> = dead
        .iter()
        .map(|d| (d.header("origin").unwrap_or_default(), d))
        .collect();
    let cases = [
        (
            "truncated",
            "malformed_protobuf",
            &env.config.topics.spans,
            truncated,
        ),
        (
            "oversized",
            "too_large",
            &env.config.topics.spans,
            vec![7u8; largest + 100],
        ),
        ("empty", "empty", &env.config.topics.spans, Vec::new()),
        (
            "invalid_json",
            "malformed_json",
            &env.config.topics.logs,
            b"{\"resourceLogs\": [".to_vec(),
        ),
        (
            "wrong_schema",
            "malformed_json",
            &env.config.topics.logs,
            wrong_schema,
        ),
    ];
    for (origin, reason, topic, payload) in cases {
        let d = by_origin
            .get(origin)
            .with_context(|| format!("no dead letter for the {origin} message"))?;
        assert_eq!(
            d.header("culprit.reason").as_deref(),
            Some(reason),
            "{origin}"
        );
        assert!(
            !d.header("culprit.error").unwrap_or_default().is_empty(),
            "{origin} has an error message"
        );
        assert_eq!(
            d.header("culprit.source_topic").as_deref(),
            Some(topic.as_str()),
            "{origin}"
        );
        assert!(
            d.header("culprit.partition")
                .and_then(|p| p.parse::<i32>().ok())
                .is_some(),
            "{origin}"
        );
        assert!(
            d.header("culprit.offset")
                .and_then(|p| p.parse::<i64>().ok())
                .is_some(),
            "{origin}"
        );
        assert_eq!(d.payload, payload, "{origin}: the original bytes are kept");
    }
    assert!(
        all_stored,
        "valid events stored: {} of {} distinct",
        store.distinct(),
        expected.len()
    );
    assert_eq!(span_stats.dlq_messages.load(Ordering::Relaxed), 3);
    assert_eq!(log_stats.dlq_messages.load(Ordering::Relaxed), 2);
    assert_eq!(span_stats.decoded_messages.load(Ordering::Relaxed), 4);
    assert_eq!(log_stats.decoded_messages.load(Ordering::Relaxed), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedders_in_one_group_split_the_partitions_and_process_every_event_once() -> Result<()>
{
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "group").await?;
    let store = Arc::new(MemoryStore::default());
    let (a, b) = (Arc::new(Stats::new()), Arc::new(Stats::new()));
    let mut services = Services::new();
    services.embedder(
        &env.config,
        SourceKind::Traces,
        options(0, store.clone(), a.clone()),
    );
    services.embedder(
        &env.config,
        SourceKind::Traces,
        options(0, store.clone(), b.clone()),
    );
    // tansu takes about half the session timeout per join, and the second member triggers a
    // rebalance: wait for the split before producing so no batch straddles it.
    let assigned = |s: &Stats| s.assigned_partitions.load(Ordering::SeqCst);
    let split = wait_for(Duration::from_secs(90), || {
        assigned(&a) > 0 && assigned(&b) > 0 && assigned(&a) + assigned(&b) == PARTITIONS as u64
    })
    .await;
    assert!(
        split,
        "partitions not split: {} + {}",
        assigned(&a),
        assigned(&b)
    );

    let run = culprit_sim::simulate(
        Scenario::ConfigTimeout,
        &SimConfig {
            normal_minutes: 3,
            fault_minutes: 1,
            ..SimConfig::default()
        },
    );
    let payloads: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let records: Vec<Record> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Record {
            partition: Some(i as i32 % PARTITIONS),
            ..Record::new(p.clone())
        })
        .collect();
    env.produce(&env.config.topics.spans, &records).await?;
    let expected = expected_keys(Signal::Traces, &payloads);

    let complete = wait_for(Duration::from_secs(120), || {
        store.distinct() == expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // room for a duplicate to show up
    services.stop().await?;
    assert!(
        complete,
        "stored {} of {} distinct events",
        store.distinct(),
        expected.len()
    );
    assert_eq!(
        store.counts(),
        expected,
        "every event stored exactly as often as it was produced"
    );
    let (ma, mb) = (
        a.messages.load(Ordering::SeqCst),
        b.messages.load(Ordering::SeqCst),
    );
    assert!(
        ma > 0 && mb > 0,
        "both instances worked: {ma} and {mb} messages"
    );
    assert_eq!(
        ma + mb,
        records.len() as u64,
        "each message handled by exactly one instance"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_pauses_the_embedder_which_resumes_without_losing_events() -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "outage").await?;
    let run = culprit_sim::simulate(
        Scenario::MemoryLeak,
        &SimConfig {
            normal_minutes: 3,
            fault_minutes: 1,
            ..SimConfig::default()
        },
    );
    let payloads: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let records: Vec<Record> = payloads.iter().map(|p| Record::new(p.clone())).collect();
    env.produce(&env.config.topics.spans, &records).await?;
    let expected = expected_keys(Signal::Traces, &payloads);

    let store = Arc::new(MemoryStore::default());
    store.fail.store(true, Ordering::SeqCst);
    let stats = Arc::new(Stats::new());
    let mut services = Services::new();
    services.embedder(
        &env.config,
        SourceKind::Traces,
        options(0, store.clone(), stats.clone()),
    );

    let paused = wait_for(Duration::from_secs(60), || {
        stats.paused.load(Ordering::SeqCst) == 1 && store.failed_writes.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        paused,
        "the embedder did not pause while the store failed: {:?}",
        stats.snapshot()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled_during_outage = stats.messages.load(Ordering::SeqCst);
    assert!(
        handled_during_outage <= env.config.commit_batch_messages as u64,
        "in-flight work is bounded by one batch while paused, handled {handled_during_outage}"
    );
    assert_eq!(store.distinct(), 0);
    assert_eq!(
        stats.commits.load(Ordering::SeqCst),
        0,
        "nothing committed while the store is down"
    );

    // The broker's offset lag (librdkafka statistics) shows the records waiting, or nothing yet
    // where the partition has no commit; never a caught-up partition.
    let waiting = stats.snapshot().partitions;
    assert!(
        waiting.iter().all(|p| p.offsets.is_none_or(|lag| lag > 0)),
        "a partition with records waiting reports no lag: {waiting:?}"
    );

    store.fail.store(false, Ordering::SeqCst);
    let complete = wait_for(Duration::from_secs(90), || {
        store.distinct() == expected.len()
    })
    .await;
    // Once everything is committed, the offset lag the broker reports (with the next
    // statistics, every few seconds) on every partition of the topic is only what the embedder
    // itself holds back: the messages of the windows still open at the end of the stream.
    let spans = env.config.topics.spans.clone();
    let caught_up = wait_for(Duration::from_secs(30), || {
        let lags = stats.snapshot().partitions;
        let of_topic: Vec<_> = lags.iter().filter(|p| p.topic == spans).collect();
        !of_topic.is_empty()
            && of_topic
                .iter()
                .all(|p| p.offsets == Some(p.held_back.unwrap_or(0)))
    })
    .await;
    let lags = stats.snapshot().partitions;
    services.stop().await?;
    assert!(
        caught_up,
        "the offset lag did not fall to what the embedder holds back: {lags:?}"
    );
    assert!(
        complete,
        "stored {} of {} distinct events after the outage",
        store.distinct(),
        expected.len()
    );
    let counts = store.counts();
    assert!(
        expected
            .iter()
            .all(|(k, n)| counts.get(k).is_some_and(|c| c >= n)),
        "no event lost"
    );
    assert_eq!(stats.paused.load(Ordering::SeqCst), 0, "resumed");
    assert!(stats.retries.load(Ordering::SeqCst) >= 3);
    assert_eq!(stats.messages.load(Ordering::SeqCst), records.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_killed_mid_stream_restarts_without_losing_events_and_the_alert_still_appears(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let mut env = TestEnv::new(&brokers, "kill").await?;
    // The restarted embedder re-reads its partitions to relearn baselines (state only); no
    // snapshot, so that this is the path tested (the next test restores one instead).
    env.config.embedder_rewind = Rewind::Beginning;
    env.config.snapshot_secs = 0;
    env.config.commit_batch_messages = 5;
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("kafka.json");
    std::fs::write(&config_path, serde_json::to_vec(&env.config)?)?;
    let store_path = dir.path().join("traces-store.txt");

    let run = short_incident(Scenario::DeployCpuSpike);
    produce_run(&env, &run).await?;
    let trace_payloads: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let expected = expected_keys(Signal::Traces, &trace_payloads);

    let services = other_sources_and_correlator(&env);

    let spawn = || {
        test_embedder(
            env!("CARGO_BIN_EXE_culprit-test-embedder"),
            &config_path,
            "traces",
            &store_path,
            WARMUP_SECS,
            None,
        )
    };
    let stored = || FileStore::read(&store_path);
    let mut at_kill = 0;
    let child = kill_when_and_restart(
        spawn,
        Duration::from_secs(180),
        || stored().len() >= expected.values().sum::<u32>() as usize / 3,
        || at_kill = stored().len(),
    )
    .await?;
    let distinct = || {
        stored()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
    };
    let complete = wait_for(Duration::from_secs(300), || {
        distinct().len() >= expected.len()
    })
    .await;
    let alerts = wait_for_alert_naming(
        &env,
        "inventory",
        fault_start_ns(&run),
        Duration::from_secs(300),
    )
    .await?;

    let output = terminate(child).await?;
    services.stop().await?;
    let status = output.status;
    let final_stats: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the restarted embedder's stats")?;

    let written = stored();
    let distinct = distinct();
    eprintln!(
        "stored {} keys before the kill, {} writes in all, {} distinct",
        at_kill,
        written.len(),
        distinct.len()
    );
    assert!(
        complete,
        "after the restart {} of {} distinct events were stored",
        distinct.len(),
        expected.len()
    );
    assert!(
        expected.keys().all(|k| distinct.contains(k)),
        "every event stored at least once"
    );
    assert_eq!(
        distinct.len(),
        expected.len(),
        "keyed by event, the store holds nothing twice and nothing foreign"
    );
    assert!(at_kill < expected.len(), "the kill happened mid-stream");
    assert!(
        status.success(),
        "the restarted embedder shut down cleanly on SIGTERM: {status}"
    );
    assert!(
        final_stats["replayed_messages"].as_u64().unwrap_or(0) > 0,
        "the restarted embedder re-read its committed messages to relearn: {final_stats}"
    );
    assert_eq!(
        first_candidate(&alerts, fault_start_ns(&run)).as_deref(),
        Some("inventory")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_killed_mid_stream_keeps_every_committed_point_in_the_embedded_store() -> Result<()>
{
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let mut env = TestEnv::new(&brokers, "durable").await?;
    let run = short_incident(Scenario::DeployCpuSpike);
    // No rewind: the killed process committed only up to the first message whose windows were
    // still open, so the restart reads those again and finishes their points; the points of
    // the messages before the commit exist only if the killed process made them durable first.
    env.config.embedder_rewind = Rewind::None;
    env.config.commit_batch_messages = 5;
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("kafka.json");
    std::fs::write(&config_path, serde_json::to_vec(&env.config)?)?;
    let keys_path = dir.path().join("traces-keys.txt");
    let vectors_path = dir.path().join("traces.store");

    produce_run(&env, &run).await?;
    let events: Vec<culprit_core::Event> = run
        .traces
        .iter()
        .flat_map(|r| {
            culprit_otlp::decode(
                Signal::Traces,
                Encoding::Protobuf,
                &culprit_otlp::to_protobuf(r),
            )
            .expect("simulated data decodes")
        })
        .collect();
    let total_keys = expected_keys(
        Signal::Traces,
        &run.traces
            .iter()
            .map(culprit_otlp::to_protobuf)
            .collect::<Vec<_>>(),
    )
    .len();
    // The windows of the last events never close (nothing newer arrives): count the points of
    // events well before them.
    let cutoff =
        events.iter().map(|e| e.time).max().context("no events")? - 10 * 60 * 1_000_000_000;
    let expected_points = events
        .iter()
        .filter(|e| e.time < cutoff)
        .map(culprit_store::PointId::of_event)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;

    let spawn = || {
        test_embedder(
            env!("CARGO_BIN_EXE_culprit-test-embedder"),
            &config_path,
            "traces",
            &keys_path,
            WARMUP_SECS,
            Some(&vectors_path),
        )
    };
    let consumed = || FileStore::read(&keys_path);
    let mut at_kill = 0;
    let child = kill_when_and_restart(
        spawn,
        Duration::from_secs(180),
        || consumed().len() >= events.len() / 3,
        || at_kill = consumed().len(),
    )
    .await?;
    let distinct = || {
        consumed()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let complete = wait_for(Duration::from_secs(300), || distinct() >= total_keys).await;
    // Messages read again after the kill may come after other partitions' newer ones and join
    // the last windows: a tail of the last spans 15 minutes later moves the clock past them.
    let tail_consumed = produce_later_tail(&env, &run, &keys_path).await?;
    let output = terminate(child).await?;
    assert!(tail_consumed, "the tail was consumed");
    assert!(
        complete,
        "the restarted embedder consumed {} of {total_keys} events",
        distinct()
    );
    assert!(
        output.status.success(),
        "the restarted embedder: {}",
        output.status
    );
    assert!(at_kill < events.len(), "the kill happened mid-stream");

    let store = culprit_store::EmbeddedStore::open(&vectors_path)?;
    let stored = culprit_store::VectorStore::count(
        &store,
        &culprit_store::Filter {
            reference: Some(false),
            time_to: Some(cutoff),
            ..Default::default()
        },
    )
    .await?;
    eprintln!(
        "{at_kill} of {} events consumed before the kill; {stored} of {expected_points} event points before the cutoff stored",
        events.len()
    );
    assert_eq!(
        stored, expected_points,
        "every event before the cutoff has its point, killed run included"
    );
    Ok(())
}

/// Messages of [`produce_later_tail`].
const TAIL_MESSAGES: usize = 8;

/// Produces the last [`TAIL_MESSAGES`] trace requests of `run` again, every span 15 minutes
/// later, once the embedder consumed the rest: the clock moves past every window still open, so
/// their points are finished. Returns whether the embedder consumed the tail (its keys appended
/// to `keys`) within a minute.
async fn produce_later_tail(
    env: &TestEnv,
    run: &culprit_sim::SimRun,
    keys: &std::path::Path,
) -> Result<bool> {
    let tail: Vec<Record> = run.traces[run.traces.len() - TAIL_MESSAGES..]
        .iter()
        .map(|r| {
            Record::new(culprit_otlp::to_protobuf(&later(
                r,
                15 * 60 * 1_000_000_000,
            )))
        })
        .collect();
    let events: usize = tail
        .iter()
        .map(|r| {
            culprit_otlp::decode(Signal::Traces, Encoding::Protobuf, &r.payload)
                .map_or(0, |e| e.len())
        })
        .sum();
    let before = FileStore::read(keys).len();
    env.produce(&env.config.topics.spans, &tail).await?;
    Ok(wait_for(Duration::from_secs(60), || {
        FileStore::read(keys).len() >= before + events
    })
    .await)
}

/// `request` with every span moved `by` nanoseconds later.
fn later(
    request: &culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest,
    by: u64,
) -> culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest {
    let mut moved = request.clone();
    for span in moved
        .resource_spans
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut())
        .flat_map(|s| s.spans.iter_mut())
    {
        span.start_time_unix_nano += by;
        span.end_time_unix_nano += by;
    }
    moved
}

/// A point is finished when its window closes, so the events of the windows still open at a
/// shutdown have none yet. Their messages used to be committed all the same, and with the
/// default `embedder_rewind = "none"` nothing wrote those points ever after (879 in the soak
/// benchmark). The embedder now commits only up to the first message whose windows are still
/// open: stopped cleanly mid-stream, it leaves those messages to the next start, which writes
/// their points once the stream moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_stopped_with_windows_open_leaves_their_messages_uncommitted_and_the_restart_writes_their_points(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "open-windows").await?;
    assert_eq!(env.config.embedder_rewind, Rewind::None);
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("kafka.json");
    std::fs::write(&config_path, serde_json::to_vec(&env.config)?)?;
    let keys_path = dir.path().join("traces-keys.txt");
    let vectors_path = dir.path().join("traces.store");

    let run = short_incident(Scenario::DeployCpuSpike);
    let payloads: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let decode = |p: &[u8]| {
        culprit_otlp::decode(Signal::Traces, Encoding::Protobuf, p).expect("simulated data decodes")
    };
    let half = payloads.len() / 2;
    let first: Vec<culprit_core::Event> = payloads[..half].iter().flat_map(|p| decode(p)).collect();
    let point_ids = |events: &[culprit_core::Event]| {
        events
            .iter()
            .map(culprit_store::PointId::of_event)
            .collect::<std::collections::HashSet<_>>()
    };
    let stored_points = |before: i64| {
        let path = vectors_path.clone();
        async move {
            let store = culprit_store::EmbeddedStore::open(&path)?;
            culprit_store::VectorStore::count(
                &store,
                &culprit_store::Filter {
                    reference: Some(false),
                    time_to: Some(before),
                    ..Default::default()
                },
            )
            .await
            .map_err(anyhow::Error::from)
        }
    };
    let spawn = || {
        let mut command = test_embedder(
            env!("CARGO_BIN_EXE_culprit-test-embedder"),
            &config_path,
            "traces",
            &keys_path,
            WARMUP_SECS,
            Some(&vectors_path),
        );
        command.stdout(std::process::Stdio::piped());
        command
    };
    let consumed = || {
        FileStore::read(&keys_path)
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    };

    let records = |payloads: &[Vec<u8>]| -> Vec<Record> {
        payloads.iter().map(|p| Record::new(p.clone())).collect()
    };
    env.produce(&env.config.topics.spans, &records(&payloads[..half]))
        .await?;
    let first_keys = expected_keys(Signal::Traces, &payloads[..half]).len();
    let child = spawn().spawn().context("starting the embedder")?;
    let reached = wait_for(Duration::from_secs(180), || consumed() >= first_keys).await;
    let stopped = terminate(child).await?;
    anyhow::ensure!(
        reached,
        "the first run consumed {} of {first_keys} events",
        consumed()
    );
    assert!(stopped.status.success(), "first run: {}", stopped.status);
    let newest_first = first.iter().map(|e| e.time).max().context("no events")?;
    let at_stop = stored_points(newest_first + 1).await?;
    let first_points = point_ids(&first).len() as u64;
    eprintln!("first run: {at_stop} of {first_points} points written");
    assert!(
        at_stop < first_points,
        "the last windows were open at the stop, so some points were not written yet"
    );

    env.produce(&env.config.topics.spans, &records(&payloads[half..]))
        .await?;
    let total_keys = expected_keys(Signal::Traces, &payloads).len();
    let child = spawn().spawn().context("restarting the embedder")?;
    let complete = wait_for(Duration::from_secs(180), || consumed() >= total_keys).await;
    // The re-read messages may come after the other partitions' new ones and join the last
    // windows, which close only when newer events arrive.
    let tail_consumed = produce_later_tail(&env, &run, &keys_path).await?;
    let output = terminate(child).await?;
    assert!(
        complete && tail_consumed,
        "the restart consumed {} of {total_keys} events (tail: {tail_consumed})",
        consumed()
    );
    assert!(output.status.success(), "restart: {}", output.status);
    let restarted: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        restarted["replayed_messages"].as_u64(),
        Some(0),
        "nothing re-read before the commit: the held-back messages come after it"
    );
    let after = stored_points(newest_first + 1).await?;
    eprintln!(
        "after the restart: {after} of {first_points} points of the first run's events; restart handled {} messages",
        restarted["messages"]
    );
    assert_eq!(
        after, first_points,
        "every event of the first run has its point, the open windows' included"
    );
    assert!(
        restarted["messages"].as_u64().unwrap_or(0) as usize
            > payloads.len() - half + TAIL_MESSAGES,
        "the restart handled the held-back messages again besides the new ones"
    );
    Ok(())
}

/// Issue 16, defect 3: with `embedder_rewind = "none"` a restarted embedder used to start a new
/// warm-up, so an incident in progress at the restart produced no anomaly and no alert. The
/// traces embedder runs as a child process; it is killed inside the fault, once a snapshot
/// written after its warm-up and after the fault started exists, and the spans after a minute
/// into the fault are produced only after its restart. Those spans are seen by the restarted
/// process alone: without the restored state they fall inside a new warm-up and it finds nothing
/// on inventory in them (checked by running this test with the restore switched off). The other
/// sources' embedders run in-process and are not restarted, so the alert naming inventory shows
/// the end-to-end result, but is no proof by itself: traces alone do not rank inventory first
/// here, and the incident may open before the kill (the correlator republishes an open incident
/// only when its ranking changes), so the traces anomalies after the kill point are the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_killed_mid_incident_restores_its_snapshot_and_detects_the_rest_of_the_fault_without_a_new_warm_up(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let mut env = TestEnv::new(&brokers, "snapshot").await?;
    assert_eq!(env.config.embedder_rewind, Rewind::None, "the default");
    env.config.commit_batch_messages = 5;
    env.config.snapshot_secs = 1;
    let dir = tempfile::tempdir()?;
    env.config.state_dir = dir.path().join("state");
    let config_path = dir.path().join("kafka.json");
    std::fs::write(&config_path, serde_json::to_vec(&env.config)?)?;
    let keys_path = dir.path().join("traces-keys.txt");
    let snapshot_path = culprit_kafka::snapshot::path(
        &env.config.state_dir,
        &env.config.embedder_group(SourceKind::Traces),
        &env.config.topics.spans,
    );

    let run = short_incident(Scenario::DeployCpuSpike);
    let fault_ns = run.label.fault_start_unix_s * 1_000_000_000;
    let split_ns = fault_ns + 60 * 1_000_000_000;
    let (before, after): (Vec<Record>, Vec<Record>) = {
        let mut before = Vec::new();
        let mut after = Vec::new();
        for request in &run.traces {
            let payload = culprit_otlp::to_protobuf(request);
            let newest = culprit_otlp::decode(Signal::Traces, Encoding::Protobuf, &payload)?
                .iter()
                .map(|e| e.time)
                .max()
                .unwrap_or(i64::MIN);
            let record = Record {
                key: Some(culprit_sim::ENVIRONMENT.to_string()),
                ..Record::new(payload)
            };
            if newest < split_ns {
                before.push(record);
            } else {
                after.push(record);
            }
        }
        (before, after)
    };
    assert!(!after.is_empty(), "the fault goes on after the kill");
    env.produce(&env.config.topics.spans, &before).await?;
    for (topic, payloads) in run_records(&run, &env.config) {
        if topic != env.config.topics.spans {
            let records: Vec<Record> = payloads
                .into_iter()
                .map(|p| Record {
                    key: Some(culprit_sim::ENVIRONMENT.to_string()),
                    ..Record::new(p)
                })
                .collect();
            env.produce(&topic, &records).await?;
        }
    }

    let services = other_sources_and_correlator(&env);
    let spawn = || {
        test_embedder(
            env!("CARGO_BIN_EXE_culprit-test-embedder"),
            &config_path,
            "traces",
            &keys_path,
            WARMUP_SECS,
            None,
        )
    };
    // Killed once a snapshot from after the warm-up and inside the fault was written.
    let mut at_kill = None;
    let child = kill_when_and_restart(
        spawn,
        Duration::from_secs(240),
        || {
            culprit_kafka::snapshot::read(&snapshot_path)
                .ok()
                .flatten()
                .is_some_and(|s| {
                    s.learn_until.is_some_and(|t| t <= s.newest) && s.newest >= fault_ns
                })
        },
        || at_kill = culprit_kafka::snapshot::read(&snapshot_path).ok().flatten(),
    )
    .await?;
    let at_kill = at_kill.context("the snapshot at the kill")?;
    env.produce(&env.config.topics.spans, &after).await?;

    // What the restarted embedder found after the kill point: only it saw those events.
    let reader = TestEnv {
        config: env.config.clone(),
    };
    let anomalies_topic = env.config.topics.anomalies.clone();
    let after_restart = move |records: &[Received]| -> Vec<culprit_core::Anomaly> {
        records
            .iter()
            .filter_map(|r| serde_json::from_slice::<BusMessage>(&r.payload).ok())
            .filter_map(|m| match m {
                BusMessage::Anomaly(a) if a.time >= split_ns && a.source == SourceKind::Traces => {
                    Some(a)
                }
                _ => None,
            })
            .collect()
    };
    let found = tokio::task::spawn_blocking(move || {
        reader.read_until(&anomalies_topic, Duration::from_secs(180), |records| {
            after_restart(records)
                .iter()
                .any(|a| a.service == "inventory")
        })
    })
    .await??;
    let found = after_restart(&found);
    let alerts = wait_for_alert_naming(
        &env,
        "inventory",
        fault_start_ns(&run),
        Duration::from_secs(120),
    )
    .await;
    let output = terminate(child).await?;
    services.stop().await?;
    let final_stats: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the restarted embedder's stats")?;
    eprintln!(
        "snapshot at the kill: offsets {:?}, newest {} s after the fault start, detectors {:?}; restarted embedder: {final_stats}",
        at_kill.offsets,
        (at_kill.newest - fault_ns) / 1_000_000_000,
        at_kill.detectors.keys().collect::<Vec<_>>()
    );
    assert!(
        output.status.success(),
        "the restarted embedder: {}",
        output.status
    );
    assert_eq!(
        final_stats["replayed_messages"].as_u64(),
        Some(0),
        "nothing re-read: the state came from the snapshot"
    );
    let mut services_found: Vec<&str> = found.iter().map(|a| a.service.as_str()).collect();
    services_found.sort_unstable();
    services_found.dedup();
    eprintln!(
        "{} anomalies after the kill point, on {services_found:?}",
        found.len()
    );
    assert!(
        services_found.contains(&"inventory"),
        "the restarted embedder found the fault on inventory without a new warm-up: {services_found:?}"
    );
    let alerts = alerts?;
    assert_eq!(
        first_candidate(&alerts, fault_start_ns(&run)).as_deref(),
        Some("inventory"),
        "the incident's alert names the injected cause"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_correlator_rebuilds_open_incidents_without_republishing_alerts() -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let mut env = TestEnv::new(&brokers, "recover").await?;
    env.config.correlator_rewind = Rewind::Beginning;
    let run = short_incident(Scenario::DeployCpuSpike);
    produce_run(&env, &run).await?;
    let inputs: Vec<(SourceKind, u64)> = run_records(&run, &env.config)
        .iter()
        .zip([
            SourceKind::Traces,
            SourceKind::Logs,
            SourceKind::Metrics,
            SourceKind::Changes,
        ])
        .map(|((_, payloads), source)| (source, payloads.len() as u64))
        .collect();

    // First correlator: runs over the whole incident, then stops (committing everything).
    let mut services = Services::new();
    let mut embedder_stats = Vec::new();
    for &(source, count) in &inputs {
        let s = Arc::new(Stats::new());
        embedder_stats.push((s.clone(), count));
        services.embedder(
            &env.config,
            source,
            options(WARMUP_SECS, Arc::new(culprit_kafka::NoopSink), s),
        );
    }
    let first = Arc::new(Stats::new());
    services.correlator(
        &env.config,
        CorrelatorOptions {
            publisher: Arc::new(CollectingPublisher::default()),
            stats: first.clone(),
            ..Default::default()
        },
    );
    let embedded = wait_for(Duration::from_secs(300), || {
        embedder_stats
            .iter()
            .all(|(s, n)| s.snapshot().latency.count() == *n)
    })
    .await;
    assert!(embedded, "embedders did not finish");
    // The correlator has caught up once its count stops moving for a few commit intervals.
    let mut last = u64::MAX;
    while first.messages.load(Ordering::SeqCst) != last {
        last = first.messages.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    services.stop().await?;
    let published: Vec<RcaAlert> = {
        let reader = TestEnv {
            config: env.config.clone(),
        };
        let topic = env.config.topics.alerts.clone();
        let expected = first.alerts_published.load(Ordering::SeqCst) as usize;
        tokio::task::spawn_blocking(move || {
            reader.read_until(&topic, Duration::from_secs(30), |r| r.len() >= expected)
        })
        .await??
        .iter()
        .map(|r| serde_json::from_slice(&r.payload))
        .collect::<Result<_, _>>()?
    };
    let open = published
        .iter()
        .rev()
        .find(|a| {
            published
                .iter()
                .filter(|b| b.incident_id == a.incident_id)
                .all(|b| b.revision <= a.revision)
        })
        .filter(|a| a.status == culprit_core::IncidentStatus::Open)
        .cloned()
        .context("the incident should still be open at the end of the data")?;

    // Second correlator, same group: re-reads the topic, publishes nothing already published.
    let mut services = Services::new();
    let publisher = Arc::new(CollectingPublisher::default());
    let restored = Arc::new(CollectingPublisher::default());
    let second = Arc::new(Stats::new());
    services.correlator(
        &env.config,
        CorrelatorOptions {
            publisher: publisher.clone(),
            restore: restored.clone(),
            stats: second.clone(),
        },
    );
    let total = first.messages.load(Ordering::SeqCst);
    let replayed = wait_for(Duration::from_secs(120), || {
        second.replayed_messages.load(Ordering::SeqCst) >= total
    })
    .await;
    assert!(
        replayed,
        "re-read {} of {total} messages",
        second.replayed_messages.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        publisher.alerts.lock().unwrap().is_empty(),
        "nothing is re-published on restart"
    );
    // The local views (the API's incident list) get the rebuilt state, within a commit interval.
    let restored_open = wait_for(Duration::from_secs(10), || {
        restored
            .alerts
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.incident_id == open.incident_id && a.revision == open.revision)
    })
    .await;
    assert!(
        restored_open,
        "the open incident was not restored: {:?}",
        restored
            .alerts
            .lock()
            .unwrap()
            .iter()
            .map(|a| (&a.incident_id, a.revision, a.status))
            .collect::<Vec<_>>()
    );

    // Event time moves far on for every source: the rebuilt incident resolves under its old id.
    let far = culprit_pipeline::BusMessage::Watermark {
        time: open.updated_at + 3_600 * 1_000_000_000,
    };
    let records: Vec<Record> = SourceKind::ALL
        .iter()
        .map(|s| Record {
            key: Some(open.environment.clone()),
            headers: vec![(
                culprit_kafka::SOURCE_HEADER.to_string(),
                s.as_str().as_bytes().to_vec(),
            )],
            ..Record::new(serde_json::to_vec(&far).expect("json"))
        })
        .collect();
    env.produce(&env.config.topics.anomalies, &records).await?;
    let resolved = wait_for(Duration::from_secs(30), || {
        !publisher.alerts.lock().unwrap().is_empty()
    })
    .await;
    services.stop().await?;
    assert!(resolved, "the rebuilt incident did not resolve");
    let alerts = publisher.alerts.lock().unwrap().clone();
    assert_eq!(
        alerts.len(),
        1,
        "{:#?}",
        alerts
            .iter()
            .map(|a| (&a.incident_id, a.revision, a.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        alerts[0].incident_id, open.incident_id,
        "same incident, rebuilt"
    );
    assert_eq!(
        alerts[0].revision,
        open.revision + 1,
        "its revisions continue"
    );
    assert_eq!(alerts[0].status, culprit_core::IncidentStatus::Resolved);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_valid_change_event_is_processed_with_its_finding_cut_to_size_and_the_changes_after_it_too(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "huge-change").await?;
    let huge_summary = "rolled out ".repeat(500_000); // 5.5 MB of valid text
    let base = 1_700_000_000i64;
    let changes: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let summary = if i == 2 {
                huge_summary.clone()
            } else {
                format!("deploy cart v1.{i}")
            };
            serde_json::to_vec(&serde_json::json!({
                "id": format!("chg-{i}"),
                "time": chrono::DateTime::from_timestamp(base + i * 60, 0)
                    .expect("a valid time")
                    .to_rfc3339(),
                "type": "deployment",
                "service": format!("svc-{i}"),
                "environment": "prod",
                "summary": summary,
                "attributes": {"version": format!("1.{i}")},
            }))
            .unwrap()
        })
        .collect();
    // Only the test's own producer may send a message this large; the services keep the
    // client default (about 1 MB), which the unbounded finding used to exceed for good.
    let mut producing = env.config.clone();
    producing
        .extra
        .insert("message.max.bytes".into(), "8000000".into());
    let producer = TestEnv { config: producing };
    let records: Vec<Record> = changes.into_iter().map(Record::new).collect();
    producer
        .produce(&env.config.topics.changes, &records)
        .await?;

    let stats = Arc::new(Stats::new());
    let mut services = Services::new();
    services.embedder(
        &env.config,
        SourceKind::Changes,
        options(0, Arc::new(culprit_kafka::NoopSink), stats.clone()),
    );
    let topic = env.config.topics.anomalies.clone();
    let reader = TestEnv {
        config: env.config.clone(),
    };
    let findings = |records: &[Received]| -> Vec<culprit_core::Anomaly> {
        records
            .iter()
            .filter_map(|r| serde_json::from_slice::<culprit_pipeline::BusMessage>(&r.payload).ok())
            .filter_map(|m| match m {
                culprit_pipeline::BusMessage::Anomaly(a) => Some(a),
                _ => None,
            })
            .collect()
    };
    let received = tokio::task::spawn_blocking(move || {
        reader.read_until(&topic, Duration::from_secs(90), |r| findings(r).len() >= 6)
    })
    .await??;
    services.stop().await?;

    let anomalies = findings(&received);
    let mut services_seen: Vec<&str> = anomalies.iter().map(|a| a.service.as_str()).collect();
    services_seen.sort();
    services_seen.dedup();
    assert_eq!(
        services_seen,
        ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-5"],
        "every change event, before and after the huge one, gave its finding"
    );
    let huge = anomalies
        .iter()
        .find(|a| a.service == "svc-2")
        .expect("the huge change's finding");
    assert!(huge.description.len() <= culprit_core::Anomaly::MAX_DESCRIPTION_BYTES);
    assert!(
        huge.description.ends_with(" bytes cut]"),
        "the cut is marked: {}",
        &huge.description[huge.description.len().saturating_sub(60)..]
    );
    let largest = received.iter().map(|r| r.payload.len()).max().unwrap_or(0);
    assert!(
        largest < 64 * 1024,
        "a finding of {largest} bytes was published"
    );
    assert_eq!(stats.snapshot().decoded_messages, 6);
    assert_eq!(stats.snapshot().produce_refused, 0);
    Ok(())
}

// librdkafka 2.12.1 (rdkafka-sys 4.10) crashes in about half of these runs: SIGSEGV in its
// metadata cache (`rd_kafka_metadata_cache_find` from `rd_kafka_metadata_update_op`, thread
// rdk:main) when tansu comes back without its topics, taking every test of this binary with it.
// tansu's fetch responses name the partitions' new leaders with a zero topic id, and librdkafka
// then looks the topic up by a name its fetch path never sets (docs/DEPLOYMENT.md).
// Run it alone with `cargo test -p culprit-integration-tests --test kafka -- --ignored`.
#[ignore = "librdkafka segfaults in its metadata cache after tansu restarts, in about half the runs"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_restarts_and_loses_its_topics_the_embedder_processes_the_new_messages(
) -> Result<()> {
    if broker_or_skip().is_none() {
        return Ok(());
    }
    let broker = TestBroker::start()?;
    let env = TestEnv::new(&broker.address, "broker-restart").await?;
    let run = culprit_sim::simulate(
        Scenario::NewException,
        &SimConfig {
            normal_minutes: 2,
            fault_minutes: 1,
            batch_seconds: 5,
            ..SimConfig::default()
        },
    );
    let mut env_config = env.config.clone();
    env_config.encodings.logs = Encoding::Json;
    let records: Vec<Record> = run
        .logs
        .iter()
        .take(30)
        .map(|r| Record {
            // One key, one partition: the restarted topic's offsets stay below the old ones.
            key: Some(culprit_sim::ENVIRONMENT.to_string()),
            ..Record::new(culprit_otlp::to_json(r))
        })
        .collect();
    let (before, after) = records.split_at(20);
    env.produce(&env.config.topics.logs, before).await?;

    let stats = Arc::new(Stats::new());
    let mut services = Services::new();
    services.embedder(
        &env_config,
        SourceKind::Logs,
        options(0, Arc::new(culprit_kafka::NoopSink), stats.clone()),
    );
    let handled = |n: u64| {
        let stats = stats.clone();
        move || stats.snapshot().messages >= n && stats.snapshot().commits > 0
    };
    assert!(
        wait_for(Duration::from_secs(90), handled(20)).await,
        "the first 20 messages were not handled and committed"
    );

    broker.script("stop")?;
    broker.script("start")?;
    culprit_kafka::ensure_topics(&env.config, &env.config.all_topics(), PARTITIONS).await?;
    env.produce(&env.config.topics.logs, after).await?;
    let all = wait_for(Duration::from_secs(120), handled(30)).await;
    services.stop().await?;
    let s = stats.snapshot();
    assert!(
        all,
        "{} of the 10 messages produced after the restart were handled",
        s.messages.saturating_sub(20)
    );
    assert!(s.offset_resets >= 1);
    Ok(())
}
