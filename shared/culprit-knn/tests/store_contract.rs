//! The k-NN score through a store equals brute force on the same points, for every backend: the
//! mean distance to the k nearest normal reference points of one (source, environment, service)
//! and the far/normal verdict, with event points, anomalous points and other services in the
//! store that must not count. Then a whole detector run on the backend finds exactly what the
//! same run finds on the private in-memory store. Qdrant runs only when `QDRANT_URL` is set.

use culprit_core::{Event, EventBody, Resource, SourceKind, SpanEvent, NANOS_PER_SEC};
use culprit_detect::{Detector, Findings, Phase, SharedConfig};
use culprit_knn::{is_far, knn_distance, reference_filter, KnnConfig, KnnDetector};
use culprit_store::{EmbeddedStore, Point, PointEntry, PointId, SyncStore, VectorStore, DIM};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

const K: usize = 5;
const SERVICES: [&str; 2] = ["cart", "checkout"];
const ENVS: [&str; 2] = ["prod", "staging"];
const SOURCES: [SourceKind; 2] = [SourceKind::Traces, SourceKind::Logs];

/// Points clustered around a few centres, so neighbours are meaningful; a mix of reference and
/// event points, normal and anomalous ones, over two sources, environments and services.
fn entries(rng: &mut ChaCha8Rng) -> Vec<PointEntry> {
    let centres: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    (0..600u64)
        .map(|i| {
            let centre = &centres[rng.random_range(0..centres.len())];
            let service = SERVICES[rng.random_range(0..2)];
            let timestamp = 1_700_000_000 * NANOS_PER_SEC + i as i64 * NANOS_PER_SEC;
            PointEntry {
                point: Point {
                    id: PointId::from_identity(&[service, &i.to_string()], timestamp),
                    vector: centre
                        .iter()
                        .map(|c| c + rng.random_range(-0.3f32..0.3))
                        .collect(),
                    source: SOURCES[rng.random_range(0..2)],
                    service: service.to_string(),
                    environment: ENVS[rng.random_range(0..2)].to_string(),
                    timestamp,
                    score: 0.0,
                    normal: rng.random_bool(0.85),
                },
                reference: rng.random_bool(0.5),
            }
        })
        .map(|mut e| {
            if !e.point.normal {
                e.point.score = 0.7;
            }
            e
        })
        .collect()
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

/// The k-NN distance by brute force over every written entry with the reference's tags.
fn brute_force(
    all: &[PointEntry],
    query: &[f32],
    source: SourceKind,
    env: &str,
    service: &str,
) -> Option<f64> {
    let mut d: Vec<f64> = all
        .iter()
        .filter(|e| {
            e.reference
                && e.point.normal
                && e.point.source == source
                && e.point.environment == env
                && e.point.service == service
        })
        .map(|e| cosine_distance(&e.point.vector, query))
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    d.truncate(K);
    Some(d.iter().sum::<f64>() / d.len() as f64)
}

fn span(t: i64, i: i64, ms: f64) -> Event {
    Event {
        time: t,
        resource: Arc::new(Resource::new("cart")),
        body: EventBody::Span(SpanEvent {
            trace_id: format!("{i:032x}"),
            span_id: format!("{i:016x}"),
            parent_span_id: None,
            name: if i % 2 == 0 {
                "GET /cart"
            } else {
                "POST /cart"
            }
            .into(),
            kind: "server".into(),
            duration_ns: (ms * 1e6) as i64,
            is_error: false,
            error_type: None,
            attributes: BTreeMap::new(),
        }),
    }
}

/// Learns 2 minutes, judges 1 normal minute and 30 s of slow calls; every anomaly found.
fn detector_run(d: &mut KnnDetector) -> Vec<(i64, String, Option<f64>)> {
    let mut out = Findings::default();
    for i in 0..2100i64 {
        let t = 1_700_000_000 * NANOS_PER_SEC + i * NANOS_PER_SEC / 10;
        let phase = if i < 1200 {
            Phase::Learning
        } else {
            Phase::Detecting
        };
        let slow = if i >= 1800 && i % 2 == 0 { 50.0 } else { 1.0 };
        let ms = 20.0 * slow * (1.0 + ((i * 7919) % 11) as f64 / 20.0);
        d.observe(&span(t, i, ms), phase, &mut out);
        d.advance(t, phase, &mut out);
    }
    d.flush(Phase::Detecting, &mut out);
    out.anomalies
        .into_iter()
        .map(|a| (a.time, a.signal.to_string(), a.observed))
        .collect()
}

/// The contract. `store` must start empty.
async fn knn_contract(store: Arc<dyn VectorStore>, backend: &str) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let all = entries(&mut rng);
    store.upsert_entries(all.clone()).await.unwrap();
    let sync = SyncStore::new(store.clone());
    let mut compared = 0;
    for _ in 0..20 {
        let query: Vec<f32> = all[rng.random_range(0..all.len())]
            .point
            .vector
            .iter()
            .map(|c| c + rng.random_range(-0.2f32..0.2))
            .collect();
        for source in SOURCES {
            for env in ENVS {
                for service in SERVICES {
                    let filter = reference_filter(source, env, service);
                    let got = knn_distance(&sync, &query, &filter, K).unwrap();
                    let want = brute_force(&all, &query, source, env, service);
                    let (Some(got), Some(want)) = (got, want) else {
                        assert_eq!(got.is_some(), want.is_some(), "{backend}");
                        continue;
                    };
                    assert!(
                        (f64::from(got) - want).abs() < 1e-4,
                        "{backend}: {source}/{env}/{service}: {got} vs {want}"
                    );
                    // The verdict at thresholds around the distance agrees unless within noise.
                    for threshold in [want * 0.9, want - 1e-3, want + 1e-3, want * 1.1] {
                        assert_eq!(is_far(got, threshold), want > threshold, "{backend}");
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 100, "{backend}: only {compared} comparisons");

    // A whole detector on this store finds what it finds on its private in-memory store. The
    // store already holds the points above, of other services and sources: they must not count.
    let mut private = KnnDetector::new(
        SourceKind::Traces,
        KnnConfig::default(),
        SharedConfig::default(),
    );
    let mut shared = KnnDetector::with_store(
        SourceKind::Traces,
        KnnConfig::default(),
        SharedConfig::default(),
        store,
        None,
    );
    let want = detector_run(&mut private);
    assert!(!want.is_empty(), "the slow calls are found");
    assert_eq!(detector_run(&mut shared), want, "{backend}");
}

/// Writes past libtest's output capture, so a skip is visible in every `cargo test` run.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knn_score_through_the_in_memory_store_is_brute_force() {
    knn_contract(Arc::new(EmbeddedStore::in_memory()), "in-memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knn_score_through_the_file_store_is_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("knn.store")).unwrap();
    knn_contract(Arc::new(store), "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knn_score_through_qdrant_is_brute_force_when_qdrant_url_is_set() {
    use culprit_store::{QdrantConfig, QdrantStore};
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        say("skipped: QDRANT_URL not set, the Qdrant k-NN contract test did not run");
        return;
    };
    let unique = format!(
        "culprit_knn_contract_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut config = QdrantConfig::new(url, unique);
    config.api_key = std::env::var("QDRANT_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    config.exact = true;
    let store = Arc::new(
        QdrantStore::connect(config)
            .await
            .expect("connect to qdrant"),
    );
    // Run in a task so the collection is dropped even when an assertion fails.
    let runner = store.clone();
    let outcome = tokio::spawn(async move { knn_contract(runner, "qdrant").await }).await;
    store
        .delete_collection()
        .await
        .expect("drop the test collection");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    say("qdrant k-NN contract passed");
}
