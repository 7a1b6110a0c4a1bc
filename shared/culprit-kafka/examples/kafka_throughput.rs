//! Embedder throughput against a real broker (`bash scripts/kafka-test-env.sh start`):
//!
//! ```text
//! cargo run --release -p culprit-kafka --example kafka_throughput -- [minutes] [requests_per_second]
//! ```
//!
//! Produces a simulated run's spans and logs as OTLP protobuf (one export request per message,
//! spread over 4 partitions), then measures in one process:
//!
//! 1. the raw consume rate of those messages with a bare consumer (fetch only);
//! 2. the embedders' rate: decoded, detected, anomalies published, store hook called, offsets
//!    committed — one traces and one logs embedder running side by side;
//! 3. the latency from produce to commit at about half the measured rate;
//!
//! and prints the rates, their ratio, the p99 latency (histogram bucket bound) and the RSS.

use anyhow::{Context as _, Result};
use culprit_core::SourceKind;
use culprit_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use culprit_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use culprit_kafka::rdkafka::{Offset, TopicPartitionList};
use culprit_kafka::{run_embedder, EmbedderOptions, KafkaConfig, Stats};
use culprit_pipeline::DetectStage;
use culprit_sim::{Scenario, SimConfig};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let minutes: u32 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(35);
    let rps: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let brokers =
        std::env::var("CULPRIT_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());

    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let mut config = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    let t = &mut config.topics;
    for topic in [
        &mut t.spans,
        &mut t.logs,
        &mut t.metrics,
        &mut t.changes,
        &mut t.anomalies,
        &mut t.alerts,
        &mut t.dlq,
    ] {
        *topic = format!("{topic}.bench{suffix}");
    }
    config.embedder_group_prefix = format!("bench{suffix}");
    if let Ok(ms) = std::env::var("CULPRIT_BENCH_COMMIT_MS") {
        config.commit_interval_ms = ms.parse()?;
    }
    culprit_kafka::ensure_topics(&config, &config.all_topics(), PARTITIONS).await?;

    let run = culprit_sim::simulate(
        Scenario::DeployCpuSpike,
        &SimConfig {
            normal_minutes: minutes.saturating_sub(5).max(1),
            fault_minutes: 5,
            requests_per_second: rps,
            ..SimConfig::default()
        },
    );
    let spans: Vec<Vec<u8>> = run.traces.iter().map(culprit_otlp::to_protobuf).collect();
    let logs: Vec<Vec<u8>> = run.logs.iter().map(culprit_otlp::to_protobuf).collect();
    let count_events = |signal, payloads: &[Vec<u8>]| -> Result<usize> {
        payloads
            .iter()
            .map(|p| Ok(culprit_otlp::decode(signal, culprit_otlp::Encoding::Protobuf, p)?.len()))
            .sum()
    };
    let events = count_events(culprit_otlp::Signal::Traces, &spans)?
        + count_events(culprit_otlp::Signal::Logs, &logs)?;
    let messages = spans.len() + logs.len();
    let bytes: usize = spans.iter().chain(&logs).map(Vec::len).sum();
    println!(
        "input: {messages} messages ({} spans + {} logs requests), {events} events, {:.1} MB of protobuf",
        spans.len(),
        logs.len(),
        bytes as f64 / 1e6
    );

    // 0. The same work without Kafka: decode and detect in this thread, one source after the other.
    let t = Instant::now();
    for (signal, payloads) in [
        (culprit_otlp::Signal::Traces, &spans),
        (culprit_otlp::Signal::Logs, &logs),
    ] {
        let mut stage = DetectStage::new(&Default::default());
        let mut bus = culprit_pipeline::InProcessBus::default();
        let mut learn_until = None;
        for p in payloads.iter() {
            let mut decoded = culprit_otlp::decode(signal, culprit_otlp::Encoding::Protobuf, p)?;
            decoded.sort_by_key(|e| e.time);
            for e in &mut decoded {
                let until =
                    *learn_until.get_or_insert(e.time + 1_200 * culprit_core::NANOS_PER_SEC);
                let phase = if e.time < until {
                    culprit_detect::Phase::Learning
                } else {
                    culprit_detect::Phase::Detecting
                };
                stage.observe(e, phase, &mut bus);
                stage.tick(e.time, phase, &mut bus);
            }
            bus.drain();
        }
    }
    let inproc = t.elapsed();
    println!(
        "no Kafka:     {:>10.0} events/s (decode + detect, one thread, {:.2} s)",
        events as f64 / inproc.as_secs_f64(),
        inproc.as_secs_f64()
    );

    let producer: FutureProducer = {
        let mut c = culprit_kafka::base_client_config(&config);
        c.set("linger.ms", "5");
        c.create()?
    };
    let started = Instant::now();
    produce(&producer, &config.topics.spans, &spans).await?;
    produce(&producer, &config.topics.logs, &logs).await?;
    println!("produce: {:.2} s", started.elapsed().as_secs_f64());

    // 1. Bare consumer: fetch every message, nothing else.
    let raw = raw_consume(&config, messages)?;
    let raw_rate = events as f64 / raw.as_secs_f64();
    println!(
        "raw consume:  {:>10.0} events/s ({:.0} messages/s, {:.2} s)",
        raw_rate,
        messages as f64 / raw.as_secs_f64(),
        raw.as_secs_f64()
    );

    // 2. Embedders: decode, detect, publish anomalies, commit.
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    for source in [SourceKind::Traces, SourceKind::Logs] {
        let s = Arc::new(Stats::new());
        stats.push(s.clone());
        let config = config.clone();
        let mut rx = stop_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let options = EmbedderOptions {
                warmup_secs: 20 * 60,
                stats: s,
                ..Default::default()
            };
            run_embedder(
                &config,
                source,
                DetectStage::new(&Default::default()),
                options,
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            )
            .await
        }));
    }
    let assigned = || {
        stats
            .iter()
            .all(|s| s.assigned_partitions.load(Relaxed) > 0)
    };
    while !assigned() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let committed = || {
        stats
            .iter()
            .map(|s| s.snapshot().latency.count())
            .sum::<u64>()
    };
    while committed() < messages as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(900),
            "embedders did not finish"
        );
    }
    let embed = t0.elapsed();
    let embed_rate = events as f64 / embed.as_secs_f64();
    let anomalies: u64 = stats
        .iter()
        .map(|s| s.anomalies_published.load(Relaxed))
        .sum();
    println!(
        "embedders:    {:>10.0} events/s ({:.0} messages/s, {:.2} s; {anomalies} anomalies published, {} commits)",
        embed_rate,
        messages as f64 / embed.as_secs_f64(),
        embed.as_secs_f64(),
        stats.iter().map(|s| s.commits.load(Relaxed)).sum::<u64>()
    );
    println!(
        "ratio embedders / raw consume: {:.2}",
        embed_rate / raw_rate
    );

    // 3. Latency at about half the embedders' rate: produce paced, measure produce -> commit.
    let before: Vec<Vec<u64>> = stats.iter().map(|s| s.snapshot().latency.counts).collect();
    let msg_rate = messages as f64 / embed.as_secs_f64() / 2.0;
    let gap = Duration::from_secs_f64(1.0 / msg_rate.max(0.1));
    let paced_for = Duration::from_secs(15);
    let t1 = Instant::now();
    let mut sent = 0usize;
    while t1.elapsed() < paced_for {
        let (topic, payload) = if sent % 2 == 0 {
            (&config.topics.spans, &spans[sent / 2 % spans.len()])
        } else {
            (&config.topics.logs, &logs[sent / 2 % logs.len()])
        };
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .payload(payload)
                    .partition(sent as i32 % PARTITIONS),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        sent += 1;
        tokio::time::sleep_until(tokio::time::Instant::from_std(t1 + gap * sent as u32)).await;
    }
    let target = messages as u64 + sent as u64;
    while committed() < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(300),
            "paced messages not finished"
        );
    }
    let mut delta = culprit_kafka::LatencyHistogram {
        bounds_ms: culprit_kafka::LATENCY_BUCKETS_MS.to_vec(),
        counts: vec![0; 17],
        sum_ms: 0,
    };
    for (s, b) in stats.iter().zip(&before) {
        for (i, c) in s.snapshot().latency.counts.iter().enumerate() {
            delta.counts[i] += c - b[i];
        }
    }
    println!(
        "latency at {:.1} messages/s ({sent} messages, commit interval {} ms): p50 <= {} ms, p99 <= {} ms (produce -> anomalies published and offset committed)",
        msg_rate,
        config.commit_interval_ms,
        delta.quantile_upper_bound_ms(0.5).unwrap_or(0),
        delta.quantile_upper_bound_ms(0.99).unwrap_or(0)
    );

    let _ = stop_tx.send(true);
    for task in tasks {
        task.await?.context("embedder")?;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
    {
        println!("{line}");
    }
    Ok(())
}

async fn produce(producer: &FutureProducer, topic: &str, payloads: &[Vec<u8>]) -> Result<()> {
    let mut deliveries = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        deliveries.push(
            producer.send(
                FutureRecord::<(), _>::to(topic)
                    .payload(p)
                    .partition(i as i32 % PARTITIONS),
                Duration::from_secs(30),
            ),
        );
    }
    for d in deliveries {
        d.await.map_err(|(e, _)| e)?;
    }
    Ok(())
}

fn raw_consume(config: &KafkaConfig, messages: usize) -> Result<Duration> {
    let consumer: BaseConsumer = {
        let mut c = culprit_kafka::base_client_config(config);
        c.set("group.id", "bench-raw")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        c.create()?
    };
    let mut tpl = TopicPartitionList::new();
    for topic in [&config.topics.spans, &config.topics.logs] {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut seen = 0;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < messages {
        anyhow::ensure!(
            Instant::now() < deadline,
            "raw consumer saw only {seen} of {messages} messages"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}
