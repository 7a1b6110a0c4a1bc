//! Embedded store at scale: 1,000,000 points over 50 services, then per-service k=10 queries;
//! then durable writes as the embedder makes them: batches of 500 points, each followed by
//! `flush` (one log fsync), against the same batches in memory and appended to the log unsynced.
//!
//! `cargo bench -p culprit-store` (plain `Instant` timing, no harness). Env `STORE_BENCH_POINTS`
//! overrides the point count.

use culprit_core::SourceKind;
use culprit_store::{EmbeddedStore, Filter, Point, PointId, VectorStore, DIM};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

const SERVICES: usize = 50;
const QUERIES: usize = 1000;
const BATCH: usize = 10_000;
/// Points per write in the durable-writes run: a Kafka commit batch's worth.
const DURABLE_BATCH: usize = 500;

/// A uniformly random direction: normalised Gaussian components (Box-Muller).
fn unit_vector(rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM / 2)
        .flat_map(|_| {
            let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.random();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            [(r * t.cos()) as f32, (r * t.sin()) as f32]
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that run tiny.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("STORE_BENCH_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 10_000 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n));
    rt.block_on(durable_writes(if benching { 200_000 } else { 5_000 }));
}

async fn run(n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let services: Vec<String> = (0..SERVICES).map(|i| format!("service-{i:02}")).collect();
    let base = 1_700_000_000_000_000_000i64;
    let rss_before = rss_mib();

    let dir = std::env::temp_dir().join(format!("culprit-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("bench.store");
    let store = EmbeddedStore::open(&path).expect("open");
    let mut upsert_time = Duration::ZERO;
    let mut next = 0usize;
    while next < n {
        let batch: Vec<Point> = (next..(next + BATCH).min(n))
            .map(|i| {
                let service = &services[i % SERVICES];
                let timestamp = base + i as i64 * 1_000_000;
                Point {
                    id: PointId::from_identity(&[service, "bench"], timestamp),
                    vector: unit_vector(&mut rng),
                    source: SourceKind::Traces,
                    service: service.clone(),
                    environment: "prod".into(),
                    timestamp,
                    score: 0.1,
                    // One in ten points of every service is anomalous.
                    normal: (i / SERVICES) % 10 != 0,
                }
            })
            .collect();
        next += batch.len();
        // Time the store only, not the generation of random vectors.
        let t = Instant::now();
        store.upsert(batch).await.expect("upsert");
        upsert_time += t.elapsed();
    }
    println!("points: {n} across {SERVICES} services, dim {DIM}");
    println!(
        "upsert: {:.0} points/s ({:.2} s in batches of {BATCH})",
        n as f64 / upsert_time.as_secs_f64(),
        upsert_time.as_secs_f64()
    );

    let mut latencies = Vec::with_capacity(QUERIES);
    let mut best_of_3 = Vec::with_capacity(QUERIES);
    let mut found = 0usize;
    for i in 0..QUERIES {
        let q = unit_vector(&mut rng);
        let filter = Filter::all()
            .service(services[i % SERVICES].clone())
            .normal_only();
        let t = Instant::now();
        let hits = store.search(&q, &filter, 10).await.expect("search");
        latencies.push(t.elapsed());
        // On a shared 2-core machine wall-clock tails mostly measure preemption; the best of
        // three runs of the same query shows its own cost.
        let mut best = latencies[latencies.len() - 1];
        for _ in 0..2 {
            let t = Instant::now();
            std::hint::black_box(store.search(&q, &filter, 10).await.expect("search"));
            best = best.min(t.elapsed());
        }
        best_of_3.push(best);
        found += hits.len();
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "per-service k=10 search ({QUERIES} queries, ~{} rows each, normal_only): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} hits)",
        n / SERVICES,
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies[latencies.len() - 1]),
        found
    );

    best_of_3.sort();
    println!(
        "  same queries, best of 3 runs each: p50 {:.3} ms, p99 {:.3} ms",
        ms(best_of_3[QUERIES / 2]),
        ms(best_of_3[QUERIES * 99 / 100])
    );

    let q = unit_vector(&mut rng);
    let mut unfiltered = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let hits = store.search(&q, &Filter::all(), 10).await.expect("search");
        unfiltered.push(t.elapsed());
        assert_eq!(hits.len(), 10.min(n));
    }
    unfiltered.sort();
    println!(
        "unfiltered k=10 search over all {n} points: {:.2} ms (median of 5)",
        ms(unfiltered[2])
    );

    if let (Some(before), Some(after)) = (rss_before, rss_mib()) {
        println!(
            "resident memory: {after:.0} MiB (VmRSS; {:.0} MiB for the store)",
            after - before
        );
    }

    let t = Instant::now();
    store.flush().await.expect("flush");
    let flush_time = t.elapsed();
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    drop(store);
    let t = Instant::now();
    let reopened = EmbeddedStore::open(&path).expect("reopen");
    let load_time = t.elapsed();
    println!(
        "persistence: flush {:.2} s, open {:.2} s, file {:.0} MiB, {} points reloaded",
        flush_time.as_secs_f64(),
        load_time.as_secs_f64(),
        file as f64 / (1024.0 * 1024.0),
        reopened.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Points per second written in batches of [`DURABLE_BATCH`] in three ways: in memory (no
/// file), appended to the log without a sync, and appended then flushed (made durable).
async fn durable_writes(n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let base = 1_700_000_000_000_000_000i64;
    let batches: Vec<Vec<Point>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(DURABLE_BATCH)
        .map(|ids| {
            ids.iter()
                .map(|&i| {
                    let service = format!("service-{:02}", i % SERVICES);
                    let timestamp = base + i as i64 * 1_000_000;
                    Point {
                        id: PointId::from_identity(&[&service, "durable"], timestamp),
                        vector: unit_vector(&mut rng),
                        source: SourceKind::Traces,
                        service,
                        environment: "prod".into(),
                        timestamp,
                        score: 0.1,
                        normal: true,
                    }
                })
                .collect()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("culprit-durable-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("durable writes: {n} points, dim {DIM}, batches of {DURABLE_BATCH}");
    for (name, path, flush) in [
        ("in memory, no file", None, false),
        ("logged, no fsync", Some(dir.join("unsynced.store")), false),
        (
            "logged + flush (fsync)",
            Some(dir.join("synced.store")),
            true,
        ),
    ] {
        let store = match &path {
            Some(p) => EmbeddedStore::open(p).expect("open"),
            None => EmbeddedStore::in_memory(),
        };
        let t = Instant::now();
        for batch in &batches {
            store.upsert(batch.clone()).await.expect("upsert");
            if flush {
                store.flush().await.expect("flush");
            }
        }
        let took = t.elapsed();
        println!(
            "  {name:<24} {:>9.0} points/s ({:.3} ms per batch)",
            n as f64 / took.as_secs_f64(),
            ms(took) / batches.len() as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
