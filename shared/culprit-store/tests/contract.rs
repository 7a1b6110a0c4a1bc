//! One contract for every `VectorStore` backend, checked against a brute-force reference.
//!
//! The embedded store must match brute force exactly (same ids, same order, distances within
//! float noise), which makes it the reference answer for the other backends: they run the same
//! suite. Qdrant runs only when `QDRANT_URL` is set.

use culprit_core::SourceKind;
use culprit_store::{
    hour_of_week, EmbeddedStore, Filter, Neighbour, Point, PointEntry, PointId, StoreError,
    VectorStore, DIM,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

const BASE: i64 = 1_700_000_000 * 1_000_000_000;
const SEC: i64 = 1_000_000_000;
const TOL: f32 = 1e-4;
const SERVICES: [&str; 6] = ["checkout", "cart", "payment", "frontend", "ads", "email"];
const ENVS: [&str; 2] = ["prod", "staging"];
const SOURCES: [SourceKind; 3] = [SourceKind::Traces, SourceKind::Logs, SourceKind::Metrics];

fn random_vector(rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn random_point(rng: &mut ChaCha8Rng, i: u64) -> Point {
    let service = SERVICES[rng.random_range(0..SERVICES.len())];
    // Whole seconds: Qdrant's f64 range bounds are exact on these. Three hours of the week.
    let timestamp = BASE + rng.random_range(0..1000) * SEC + rng.random_range(0..3) * 3600 * SEC;
    Point {
        id: PointId::from_identity(&[service, "event", &i.to_string()], timestamp),
        vector: random_vector(rng),
        source: SOURCES[rng.random_range(0..SOURCES.len())],
        service: service.to_string(),
        environment: ENVS[rng.random_range(0..ENVS.len())].to_string(),
        timestamp,
        score: rng.random_range(0.0..=1.0),
        normal: rng.random_bool(0.7),
    }
}

fn unit(v: &[f32]) -> Vec<f64> {
    let n = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|&x| f64::from(x) / n).collect()
}

/// Every fourth point of a batch as a reference point.
fn mark_references(points: &[Point]) -> Vec<PointEntry> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| PointEntry {
            point: p.clone(),
            reference: i % 4 == 0,
        })
        .collect()
}

/// What every store must hold: the last upsert of each id.
#[derive(Default)]
struct Model {
    points: HashMap<PointId, PointEntry>,
}

impl Model {
    fn upsert(&mut self, points: &[Point]) {
        for p in points {
            self.points.insert(p.id, PointEntry::event(p.clone()));
        }
    }

    fn upsert_entries(&mut self, entries: &[PointEntry]) {
        for e in entries {
            self.points.insert(e.point.id, e.clone());
        }
    }

    fn admitted<'a>(&'a self, f: &'a Filter) -> impl Iterator<Item = &'a Point> + 'a {
        self.points
            .values()
            .filter(move |e| f.matches_entry(e))
            .map(|e| &e.point)
    }

    fn search(&self, query: &[f32], f: &Filter, k: usize) -> Vec<(PointId, f32)> {
        let q = unit(query);
        let mut all: Vec<(PointId, f32)> = self
            .admitted(f)
            .map(|p| {
                let sim: f64 = unit(&p.vector).iter().zip(&q).map(|(a, b)| a * b).sum();
                (p.id, (1.0 - sim) as f32)
            })
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    fn count(&self, f: &Filter) -> u64 {
        self.admitted(f).count() as u64
    }
}

/// Checks `got` is a correct top-k: the same distance profile as brute force, and every hit
/// admitted by the filter with its true distance and tags. Near-ties may swap order, nothing else.
fn assert_top_k(
    model: &Model,
    query: &[f32],
    filter: &Filter,
    k: usize,
    got: &[Neighbour],
    ctx: &str,
) {
    let want = model.search(query, filter, k);
    assert_eq!(got.len(), want.len(), "{ctx}: result count for {filter:?}");
    let mut seen = std::collections::HashSet::new();
    for (i, (n, (_, want_d))) in got.iter().zip(&want).enumerate() {
        assert!(
            (n.distance - want_d).abs() < TOL,
            "{ctx}: rank {i} distance {} vs {want_d}",
            n.distance
        );
        let entry = model
            .points
            .get(&n.id)
            .unwrap_or_else(|| panic!("{ctx}: unknown id {}", n.id));
        let p = &entry.point;
        assert!(seen.insert(n.id), "{ctx}: id {} returned twice", n.id);
        assert!(
            filter.matches_entry(entry),
            "{ctx}: id {} violates {filter:?}",
            n.id
        );
        assert_eq!(
            (n.service.as_str(), n.timestamp),
            (p.service.as_str(), p.timestamp),
            "{ctx}: tags of {}",
            n.id
        );
        let true_d = model
            .search(query, &Filter::all(), usize::MAX)
            .into_iter()
            .find(|(id, _)| *id == n.id)
            .map(|x| x.1);
        assert!(
            true_d.is_some_and(|d| (d - n.distance).abs() < TOL),
            "{ctx}: distance of {} is wrong",
            n.id
        );
    }
}

fn filters() -> Vec<Filter> {
    vec![
        Filter::all(),
        Filter::all().service("checkout"),
        Filter::all().service("cart").source(SourceKind::Logs),
        Filter::all().source(SourceKind::Metrics),
        Filter::all().environment("staging"),
        Filter::all().normal_only(),
        Filter::all().service("payment").normal_only(),
        Filter::all().time_range(BASE + 200 * SEC, BASE + 400 * SEC),
        Filter::all()
            .service("frontend")
            .environment("prod")
            .time_range(BASE, BASE + 500 * SEC)
            .normal_only(),
        Filter {
            time_from: Some(BASE + 900 * SEC),
            ..Filter::default()
        },
        Filter {
            time_to: Some(BASE + 100 * SEC),
            ..Filter::default()
        },
        Filter::all().service("no-such-service"),
        Filter::all().environment("no-such-env"),
        Filter::all().reference_only(),
        Filter {
            reference: Some(false),
            ..Filter::default()
        },
        // What a k-NN detector asks for: one service's normal reference points.
        Filter::all()
            .source(SourceKind::Traces)
            .service("cart")
            .environment("prod")
            .normal_only()
            .reference_only(),
        Filter::all().hour_of_week(hour_of_week(BASE + 3600 * SEC)),
        Filter::all()
            .service("ads")
            .reference_only()
            .hour_of_week(hour_of_week(BASE)),
    ]
}

async fn check_queries(store: &impl VectorStore, model: &Model, rng: &mut ChaCha8Rng, ctx: &str) {
    for filter in filters() {
        assert_eq!(
            store.count(&filter).await.unwrap(),
            model.count(&filter),
            "{ctx}: count of {filter:?}"
        );
        for k in [1, 10] {
            let q = random_vector(rng);
            let got = store.search(&q, &filter, k).await.unwrap();
            assert_top_k(model, &q, &filter, k, &got, ctx);
        }
    }
}

/// The behaviour every backend promises. `store` must start empty.
async fn contract_suite(store: &impl VectorStore) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut model = Model::default();
    store.health().await.expect("healthy store");
    assert_eq!(
        store.count(&Filter::all()).await.unwrap(),
        0,
        "store must start empty"
    );

    // Bulk load, bigger than one Qdrant upsert chunk, a quarter as reference points.
    let points: Vec<Point> = (0..700).map(|i| random_point(&mut rng, i)).collect();
    let entries = mark_references(&points);
    store.upsert_entries(entries.clone()).await.unwrap();
    model.upsert_entries(&entries);
    assert_eq!(store.count(&Filter::all()).await.unwrap(), 700);
    assert_eq!(
        store.count(&Filter::all().reference_only()).await.unwrap(),
        175
    );
    check_queries(store, &model, &mut rng, "after load").await;

    // Idempotent upsert: replaying a batch changes nothing.
    store.upsert_entries(entries[..300].to_vec()).await.unwrap();
    assert_eq!(
        store.count(&Filter::all()).await.unwrap(),
        700,
        "re-upsert must not duplicate"
    );
    assert_eq!(
        store.count(&Filter::all().reference_only()).await.unwrap(),
        175
    );

    // A later write replaces the marker too: these reference points become event points.
    store.upsert(points[..100].to_vec()).await.unwrap();
    model.upsert(&points[..100]);
    assert_eq!(
        store.count(&Filter::all().reference_only()).await.unwrap(),
        150
    );

    // Re-upserting an id replaces it, including moving it to another service and source.
    let mut moved = points[0].clone();
    moved.service = "moved-service".into();
    moved.source = SourceKind::Changes;
    moved.normal = !moved.normal;
    moved.vector = random_vector(&mut rng);
    let mut edited: Vec<Point> = points[1..50]
        .iter()
        .map(|p| Point {
            vector: random_vector(&mut rng),
            normal: !p.normal,
            ..p.clone()
        })
        .collect();
    edited.push(moved.clone());
    store.upsert(edited.clone()).await.unwrap();
    model.upsert(&edited);
    assert_eq!(
        store.count(&Filter::all()).await.unwrap(),
        700,
        "replacement must not duplicate"
    );
    let hit = store
        .search(&moved.vector, &Filter::all(), 1)
        .await
        .unwrap();
    assert_eq!(hit[0].id, moved.id);
    assert!(hit[0].distance < TOL);
    assert_eq!(hit[0].service, "moved-service");
    assert_eq!(
        store
            .count(
                &Filter::all()
                    .service(&points[0].service)
                    .source(points[0].source)
            )
            .await
            .unwrap(),
        model.count(
            &Filter::all()
                .service(&points[0].service)
                .source(points[0].source)
        )
    );
    check_queries(store, &model, &mut rng, "after replace").await;

    // Bad input is rejected whole, names the point, and leaves the store as it was.
    let mut bad = random_point(&mut rng, 10_000);
    bad.vector.pop();
    let bad_id = bad.id;
    let err = store
        .upsert(vec![random_point(&mut rng, 10_001), bad])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongDimension { id, len: 63, expected: DIM } if id == bad_id),
        "{err}"
    );
    assert!(err.to_string().contains(&bad_id.to_string()), "{err}");
    let mut nan = random_point(&mut rng, 10_002);
    nan.vector[3] = f32::NAN;
    assert!(matches!(
        store.upsert(vec![nan]).await,
        Err(StoreError::NonFinite { index: 3, .. })
    ));
    assert_eq!(
        store.count(&Filter::all()).await.unwrap(),
        700,
        "a rejected batch must write nothing"
    );
    assert!(matches!(
        store.search(&[1.0; 3], &Filter::all(), 5).await,
        Err(StoreError::InvalidQuery(_))
    ));
    assert!(matches!(
        store.search(&[0.0; DIM], &Filter::all(), 5).await,
        Err(StoreError::InvalidQuery(_))
    ));

    // k edge cases.
    let q = random_vector(&mut rng);
    assert!(store
        .search(&q, &Filter::all(), 0)
        .await
        .unwrap()
        .is_empty());
    let few = Filter::all()
        .service("email")
        .source(SourceKind::Traces)
        .normal_only();
    let got = store.search(&q, &few, 10_000).await.unwrap();
    assert_eq!(
        got.len() as u64,
        model.count(&few),
        "k beyond the matches returns every match"
    );

    // Retention by event time.
    let cutoff = BASE + 300 * SEC;
    let expected_removed = model.count(&Filter {
        time_to: Some(cutoff),
        ..Filter::default()
    });
    assert!(expected_removed > 0);
    assert_eq!(
        store.delete_older_than(cutoff).await.unwrap(),
        expected_removed
    );
    model.points.retain(|_, e| e.point.timestamp >= cutoff);
    assert_eq!(
        store.count(&Filter::all()).await.unwrap(),
        model.points.len() as u64
    );
    assert_eq!(
        store.delete_older_than(cutoff).await.unwrap(),
        0,
        "retention is idempotent"
    );
    check_queries(store, &model, &mut rng, "after retention").await;

    // Retention that spares the reference sample: only event points go.
    let spare = Filter {
        time_to: Some(BASE + 3600 * SEC),
        reference: Some(false),
        ..Filter::default()
    };
    let expected_removed = model.count(&spare);
    let references = model.count(&Filter::all().reference_only());
    assert!(expected_removed > 0 && references > 0);
    assert_eq!(
        store.delete_matching(&spare).await.unwrap(),
        expected_removed
    );
    model.points.retain(|_, e| !spare.matches_entry(e));
    assert_eq!(
        store.count(&Filter::all().reference_only()).await.unwrap(),
        references
    );
    check_queries(store, &model, &mut rng, "after sparing retention").await;

    store.flush().await.unwrap();
    store.health().await.unwrap();
}

#[tokio::test]
async fn embedded_in_memory_store_meets_the_contract() {
    contract_suite(&EmbeddedStore::in_memory()).await;
}

#[tokio::test]
async fn embedded_file_store_meets_the_contract_and_reopens_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors.culprit");
    let store = EmbeddedStore::open(&path).unwrap();
    contract_suite(&store).await;
    store.flush().await.unwrap();

    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(reopened.len(), store.len());
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for filter in filters() {
        assert_eq!(
            reopened.count(&filter).await.unwrap(),
            store.count(&filter).await.unwrap()
        );
        let q = random_vector(&mut rng);
        assert_eq!(
            reopened.search(&q, &filter, 10).await.unwrap(),
            store.search(&q, &filter, 10).await.unwrap(),
            "{filter:?}"
        );
    }
    assert!(
        !dir.path().join("vectors.culprit.tmp").exists(),
        "temp file must be renamed away"
    );
}

/// Writes past libtest's output capture (which only catches the print macros), so a skip is
/// visible in every `cargo test` run.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test]
async fn qdrant_store_meets_the_contract_when_qdrant_url_is_set() {
    #[cfg(not(feature = "qdrant"))]
    say("skipped: built without the qdrant feature, Qdrant contract tests did not run");
    #[cfg(feature = "qdrant")]
    {
        use culprit_store::{QdrantConfig, QdrantStore};
        let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
            say("skipped: QDRANT_URL not set, Qdrant contract tests did not run");
            return;
        };
        let unique = format!(
            "culprit_contract_{}_{}",
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
        let store = QdrantStore::connect(config.clone())
            .await
            .expect("connect to qdrant");
        // Run in a task so the collection is dropped even when an assertion fails.
        let outcome = {
            let store = std::sync::Arc::new(store);
            let runner = store.clone();
            let result = tokio::spawn(async move { contract_suite(&*runner).await }).await;
            // Bootstrapping an existing collection must be a no-op.
            if result.is_ok() {
                QdrantStore::connect(config)
                    .await
                    .expect("reconnect to an existing collection");
            }
            store
                .delete_collection()
                .await
                .expect("drop the test collection");
            result
        };
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
        say("qdrant contract suite passed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_and_a_writer_see_consistent_counts() {
    let store = std::sync::Arc::new(EmbeddedStore::in_memory());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let batches: Vec<Vec<Point>> = (0..20)
        .map(|b| {
            (0..100)
                .map(|i| random_point(&mut rng, b * 100 + i))
                .collect()
        })
        .collect();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for batch in batches {
                store.upsert(batch).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let q = vec![0.5; DIM];
                for _ in 0..50 {
                    // Batches land whole, so a reader only ever sees multiples of 100.
                    assert_eq!(store.count(&Filter::all()).await.unwrap() % 100, 0);
                    let hits = store.search(&q, &Filter::all(), 5).await.unwrap();
                    assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(store.len(), 2000);
}

#[cfg(feature = "qdrant")]
#[tokio::test]
async fn qdrant_connect_to_an_unreachable_server_is_an_error_not_a_hang() {
    use culprit_store::{QdrantConfig, QdrantStore};
    let mut config = QdrantConfig::new("http://127.0.0.1:1", "unused");
    config.timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    match QdrantStore::connect(config).await {
        Err(StoreError::Backend { op, .. }) => assert_eq!(op, "health check"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
