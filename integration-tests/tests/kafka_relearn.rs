//! Re-learning a service's baselines from a time range of the spans topic, against a real broker
//! (`bash scripts/kafka-test-env.sh start`).

use anyhow::{ensure, Context as _, Result};
use culprit_core::{SourceKind, NANOS_PER_SEC};
use culprit_detect::baseline::Tier;
use culprit_integration_tests::*;
use culprit_kafka::{run_embedder, EmbedderOptions, Relearners, Stats};
use culprit_otlp::build;
use culprit_pipeline::{BaselineBoard, BusMessage, DetectStage};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const CART_SIGNAL: &str = "span.latency:GET /cart (ms)";
const PAY_SIGNAL: &str = "span.latency:POST /pay (ms)";

/// One message per second of event time from `start_s` for `secs` seconds: two root spans of
/// `service`'s `operation`, each about `ms` long. Keyed by service, so each service keeps to one
/// partition in event-time order.
fn spans(service: &str, operation: &str, t0: i64, start_s: i64, secs: i64, ms: f64) -> Vec<Record> {
    (start_s..start_s + secs)
        .map(|s| {
            let spans = (0..2)
                .map(|k| {
                    let start = t0 + s * NANOS_PER_SEC + k * NANOS_PER_SEC / 2;
                    // A spread of +-20 % around the level, the same at every level.
                    let jitter = 0.8 + 0.4 * (((s * 7 + k * 3) % 11) as f64 / 10.0);
                    let duration = (ms * jitter * 1e6) as i64;
                    let id = (s * 2 + k) as u64;
                    let mut trace = [0u8; 16];
                    trace[..8].copy_from_slice(&id.to_be_bytes());
                    trace[8] = service.len() as u8;
                    let span_id = (id | (service.len() as u64) << 56).to_be_bytes();
                    build::span(
                        trace,
                        span_id,
                        operation,
                        start as u64,
                        (start + duration) as u64,
                    )
                    .kind(build::SpanKind::Server)
                    .build()
                })
                .collect();
            let request = build::trace_request(vec![build::resource_spans(
                build::resource(service, &[]),
                build::scope("test", "1"),
                spans,
            )]);
            Record {
                key: Some(service.to_string()),
                ..Record::new(culprit_otlp::to_protobuf(&request))
            }
        })
        .collect()
}

/// The median of the `signal` baseline of `service` the board shows (its global bucket), and its
/// samples; None while it shows none.
fn median(board: &BaselineBoard, service: &str, signal: &str) -> Option<(f64, u64)> {
    let shown = board
        .summaries()
        .into_iter()
        .find(|s| s.service == service && s.signal == signal)?;
    let global = shown
        .baseline
        .buckets
        .iter()
        .find(|b| b.tier == Tier::Global)?;
    Some((global.median, shown.baseline.samples))
}

/// The span latency anomalies of `service` on the anomalies topic at or after `since`.
fn latency_anomalies(env: &TestEnv, service: &str, since: i64) -> Result<usize> {
    let read = env.read_until(&env.config.topics.anomalies, Duration::from_secs(5), |_| {
        false
    })?;
    let mut n = 0;
    for r in read {
        if let Ok(BusMessage::Anomaly(a)) = serde_json::from_slice::<BusMessage>(&r.payload) {
            if a.service == service
                && a.signal.as_str().starts_with("span.latency")
                && a.time >= since
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// An embedder learns cart at about 30 ms and pay at about 10 ms. Later cart runs at about 300 ms
/// (a planned change) and is reported slow. A recalculation over that later period makes the
/// embedder adopt cart's new level, re-read from the topic by a standalone consumer, while the
/// live consumer goes on: the board shows the new median, the next spans at that level are no
/// longer reported, and pay's baseline is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_recalculation_relearns_a_services_new_latency_from_the_topic_and_leaves_the_others(
) -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    let env = TestEnv::new(&brokers, "relearn").await?;
    let topic = env.config.topics.spans.clone();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
    // Two hours ago, on a whole hour: each phase below lies in one hour bucket.
    let t0 = (now / (3600 * NANOS_PER_SEC) - 2) * 3600 * NANOS_PER_SEC;
    let min = 60;

    let board = Arc::new(BaselineBoard::new());
    let relearners = Relearners::new();
    let mut stage = DetectStage::new(&Default::default());
    stage.attach_board(board.clone(), "traces");
    let stats = Arc::new(Stats::new());
    let options = EmbedderOptions {
        warmup_secs: 10 * 60,
        stats: stats.clone(),
        relearners: Some(relearners.clone()),
        ..Default::default()
    };
    let (stop, mut stopped) = watch::channel(false);
    let config = env.config.clone();
    let embedder = tokio::spawn(async move {
        run_embedder(&config, SourceKind::Traces, stage, options, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    let consumed = |messages: u64| {
        let stats = stats.clone();
        move || stats.decoded_messages.load(Ordering::Relaxed) >= messages
    };

    // The warm-up: cart at 30 ms, pay at 10 ms. Then cart at 300 ms and pay at 60 ms, both
    // reported slow against what was learned.
    // Each phase is consumed before the next is produced: partitions are read in batches of
    // their own, and one service's later phase must not overtake the other's earlier one.
    let mut produced = 0;
    for (cart_ms, pay_ms, start) in [(30.0, 10.0, 0), (300.0, 60.0, 15 * min)] {
        let mut records = spans("cart", "GET /cart", t0, start, 10 * min, cart_ms);
        records.extend(spans("pay", "POST /pay", t0, start, 10 * min, pay_ms));
        produced += records.len() as u64;
        env.produce(&topic, &records).await?;
        ensure!(
            wait_for(Duration::from_secs(120), consumed(produced)).await,
            "the embedder consumed {} of {produced} messages",
            stats.decoded_messages.load(Ordering::Relaxed)
        );
    }
    let slow_at = t0 + 15 * min * NANOS_PER_SEC;
    ensure!(
        wait_for(Duration::from_secs(30), || median(
            &board,
            "cart",
            CART_SIGNAL
        )
        .is_some_and(|(m, _)| m < 50.0))
        .await,
        "cart's warm-up baseline is on the board: {:?}",
        median(&board, "cart", CART_SIGNAL)
    );
    let reported = latency_anomalies(&env, "cart", slow_at)?;
    ensure!(reported > 0, "cart at 300 ms is slow against its warm-up");
    let pay_before = median(&board, "pay", PAY_SIGNAL).context("pay's baseline")?;
    ensure!(pay_before.0 < 15.0, "pay learned at 10 ms: {pay_before:?}");

    // Re-learn cart from its new period, as `POST /baselines/cart/recalculate` with a range does.
    let (from, to) = (slow_at, t0 + 25 * min * NANOS_PER_SEC);
    let replies = relearners.request("cart", Some(SourceKind::Traces), from, to);
    ensure!(replies.len() == 1, "one embedder of traces takes requests");
    let (_, reply) = replies.into_iter().next().unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), reply)
        .await
        .context("the re-learn did not answer within two minutes")?
        .context("the embedder dropped the request")??;
    assert_eq!(report.topic, topic);
    assert_eq!((report.from, report.to), (from, to));
    assert_eq!(report.skipped, 0);
    assert_eq!(
        report.events,
        2 * 2 * 10 * min as u64,
        "the spans of both services in the range, none outside it: {report:?}"
    );
    assert!(report.messages >= 2 * 10 * min as u64, "{report:?}");
    assert!(report.baselines > 0, "{report:?}");

    let (cart_median, _) = median(&board, "cart", CART_SIGNAL).context("cart's baseline")?;
    assert!(
        (240.0..=360.0).contains(&cart_median),
        "cart's baseline is its new level: {cart_median} ms"
    );
    assert_eq!(
        median(&board, "pay", PAY_SIGNAL),
        Some(pay_before),
        "pay keeps its baseline"
    );

    // Cart at the new level from now on, then a later span of pay that closes every window.
    let again_at = t0 + 35 * min * NANOS_PER_SEC;
    let mut records = spans("cart", "GET /cart", t0, 35 * min, 5 * min, 300.0);
    records.extend(spans("pay", "POST /pay", t0, 45 * min, 1, 10.0));
    produced += records.len() as u64;
    env.produce(&topic, &records).await?;
    ensure!(
        wait_for(Duration::from_secs(120), consumed(produced)).await,
        "the embedder consumed the spans after the re-learn"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        latency_anomalies(&env, "cart", again_at)?,
        0,
        "cart at its re-learned level is normal"
    );

    // Another service over the same range: the topic read for cart serves it (the spans
    // produced since are not read again), and pay takes its own level of that period.
    let (_, reply) = relearners
        .request("pay", Some(SourceKind::Traces), from, to)
        .pop()
        .context("the traces embedder")?;
    let pay = tokio::time::timeout(Duration::from_secs(120), reply)
        .await
        .context("the second re-learn did not answer")???;
    assert_eq!(
        (pay.messages, pay.events),
        (report.messages, report.events),
        "one read for both"
    );
    let (pay_median, _) = median(&board, "pay", PAY_SIGNAL).context("pay's baseline")?;
    assert!(
        (48.0..=72.0).contains(&pay_median),
        "pay's baseline is its level of the range: {pay_median} ms"
    );

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), embedder)
        .await
        .context("the embedder did not stop")???;
    Ok(())
}
