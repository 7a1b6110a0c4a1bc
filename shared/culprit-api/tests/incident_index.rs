//! The incidents collection behind similar incidents: a final answer puts its incident there, a
//! later one replaces it, searches stay in their environment, a restart refills an empty
//! collection from the history file, and a failing store loses no feedback.
//!
//! The same scenario runs on the embedded store and, when `QDRANT_URL` is set, on Qdrant.

use culprit_api::{
    ApiConfig, ApiError, ApiState, Cause, FeedbackRecord, HistoryEntry, HistoryFilter,
    HistoryStore, IncidentIndex, IncidentProfile, MemoryHistoryStore, SimilarQuery,
    PROFILE_DIMENSIONS, SIMILAR_UNAVAILABLE,
};
use culprit_core::{IncidentStatus, PastIncidents, RcaAlert, UnixNanos};
use culprit_store::{EmbeddedStore, Filter, Neighbour, PointEntry, StoreError, VectorStore};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;

const EVIDENCE: [(&str, &str); 2] = [("redis", "span.latency:GET /get"), ("cart", "log.errors")];

fn alert_in(env: &str, id: &str, status: IncidentStatus, causes: &[(&str, &str)]) -> RcaAlert {
    let mut a = common::alert(id, 1_000, 1, status, causes);
    a.environment = env.into();
    a
}

fn answer(alert: &RcaAlert, cause: &str, at: UnixNanos) -> HistoryEntry {
    HistoryEntry::Feedback(FeedbackRecord::new(
        alert,
        Cause::Service(cause.into()),
        "ana",
        at,
        None,
    ))
}

/// A new incident in `env` whose evidence is [`EVIDENCE`] and a little more.
fn new_incident(env: &str) -> RcaAlert {
    alert_in(
        env,
        "now",
        IncidentStatus::Open,
        &[EVIDENCE[0], EVIDENCE[1], ("frontend", "span.error")],
    )
}

fn ids(records: &[FeedbackRecord]) -> Vec<&str> {
    records.iter().map(|r| r.incident_id.as_str()).collect()
}

/// Where fresh, empty incidents collections come from.
enum Backend {
    Embedded(tempfile::TempDir),
    Qdrant {
        url: String,
        created: Mutex<Vec<Arc<culprit_store::QdrantStore>>>,
    },
}

impl Backend {
    async fn fresh(&self) -> (IncidentIndex, Arc<dyn VectorStore>) {
        let store: Arc<dyn VectorStore> = match self {
            Backend::Embedded(dir) => {
                let n = std::fs::read_dir(dir.path()).unwrap().count();
                Arc::new(
                    EmbeddedStore::open_with_dimension(
                        dir.path().join(format!("incidents-{n}.bin")),
                        PROFILE_DIMENSIONS,
                    )
                    .unwrap(),
                )
            }
            Backend::Qdrant { url, created } => {
                let name = format!(
                    "culprit_incidents_test_{}_{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                );
                let mut config = culprit_store::QdrantConfig::new(url, name);
                config.api_key = std::env::var("QDRANT_API_KEY")
                    .ok()
                    .filter(|k| !k.is_empty());
                config.dimension = PROFILE_DIMENSIONS;
                config.exact = true;
                let store = Arc::new(
                    culprit_store::QdrantStore::connect(config)
                        .await
                        .expect("connect to qdrant"),
                );
                created.lock().unwrap().push(store.clone());
                store
            }
        };
        (IncidentIndex::new(store.clone()), store)
    }
}

async fn nearest_point(store: &dyn VectorStore, alert: &RcaAlert) -> Vec<Neighbour> {
    let profile = IncidentProfile::of(alert);
    store
        .search(
            profile.values(),
            &Filter::all().environment(alert.environment.clone()),
            10,
        )
        .await
        .unwrap()
}

/// Every rule of the collection, on collections from `backend`.
async fn similar_incidents_scenario(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let (index, store) = backend.fresh().await;
    let history = MemoryHistoryStore::open_with_index(&path, 100, index).unwrap();
    let count = || async { store.count(&Filter::all()).await.unwrap() };

    // Feedback given while the incident is open is provisional: not in the collection yet.
    let past = alert_in("prod", "past", IncidentStatus::Open, &EVIDENCE);
    history.append(answer(&past, "redis", 1)).await.unwrap();
    assert_eq!(count().await, 0, "provisional feedback is not learned from");
    // Resolving makes it final: one point, tagged with the confirmed cause.
    assert_eq!(history.resolve("past", 2).await.unwrap(), 1);
    assert_eq!(count().await, 1);
    let unrelated = alert_in(
        "prod",
        "unrelated",
        IncidentStatus::Resolved,
        &[
            ("payments", "metric:cpu"),
            ("ledger", "log.new_template:E7"),
        ],
    );
    history
        .append(answer(&unrelated, "payments", 3))
        .await
        .unwrap();
    assert_eq!(count().await, 2);

    let now = new_incident("prod");
    let hits = nearest_point(store.as_ref(), &now).await;
    assert_eq!(hits[0].id, IncidentIndex::point_id("past"));
    assert_eq!(
        hits[0].service, "redis",
        "the point carries the confirmed cause"
    );
    let found = history
        .similar(&SimilarQuery::of_alert(&now), 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&found),
        ["past"],
        "the unrelated incident is not similar"
    );
    assert_eq!(found[0].cause, Cause::Service("redis".into()));
    let offered = history.most_similar(&now, 3);
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!(
        (
            offered[0].incident_id.as_str(),
            offered[0].confirmed_cause.as_str()
        ),
        ("past", "redis")
    );
    assert!(offered[0].similarity > 0.8, "{}", offered[0].similarity);

    // A later final answer replaces the point: still one per incident, with the new cause.
    let resolved = alert_in("prod", "past", IncidentStatus::Resolved, &EVIDENCE);
    history.append(answer(&resolved, "cart", 4)).await.unwrap();
    assert_eq!(count().await, 2);
    let hits = nearest_point(store.as_ref(), &now).await;
    assert_eq!(hits[0].id, IncidentIndex::point_id("past"));
    assert_eq!(hits[0].service, "cart");
    let found = history
        .similar(&SimilarQuery::of_alert(&now), 3)
        .await
        .unwrap();
    assert_eq!(found[0].cause, Cause::Service("cart".into()));

    // The same evidence in another environment is found only from that environment.
    let twin = alert_in(
        "staging",
        "staging-twin",
        IncidentStatus::Resolved,
        &EVIDENCE,
    );
    history.append(answer(&twin, "db", 5)).await.unwrap();
    assert_eq!(count().await, 3);
    let found = history
        .similar(&SimilarQuery::of_alert(&now), 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&found),
        ["past"],
        "another environment's incident is left out"
    );
    assert!(history
        .most_similar(&now, 3)
        .iter()
        .all(|s| s.incident_id != "staging-twin"));
    let from_staging = history
        .similar(&SimilarQuery::of_alert(&new_incident("staging")), 3)
        .await
        .unwrap();
    assert_eq!(ids(&from_staging), ["staging-twin"]);
    drop(history);

    // A restart on an empty collection refills it from the history file.
    let (index, store) = backend.fresh().await;
    assert_eq!(store.count(&Filter::all()).await.unwrap(), 0);
    let history = MemoryHistoryStore::open_with_index(&path, 100, index).unwrap();
    assert_eq!(store.count(&Filter::all()).await.unwrap(), 3);
    let found = history
        .similar(&SimilarQuery::of_alert(&now), 3)
        .await
        .unwrap();
    assert_eq!(ids(&found), ["past"]);
    assert_eq!(found[0].cause, Cause::Service("cart".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_incidents_come_from_the_incidents_collection_in_the_embedded_store() {
    let backend = Backend::Embedded(tempfile::tempdir().unwrap());
    similar_incidents_scenario(&backend).await;
}

/// Writes past libtest's output capture, so a skip is visible in every `cargo test` run.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_incidents_come_from_the_incidents_collection_in_qdrant_when_qdrant_url_is_set() {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        say("skipped: QDRANT_URL not set, the incidents collection was not tested on Qdrant");
        return;
    };
    let backend = Arc::new(Backend::Qdrant {
        url,
        created: Mutex::new(Vec::new()),
    });
    // In a task, so the test collections are dropped even when an assertion fails.
    let runner = backend.clone();
    let outcome = tokio::spawn(async move { similar_incidents_scenario(&runner).await }).await;
    if let Backend::Qdrant { created, .. } = backend.as_ref() {
        let stores: Vec<_> = created.lock().unwrap().drain(..).collect();
        for store in stores {
            store
                .delete_collection()
                .await
                .expect("drop a test collection");
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    say("the incidents collection passed on qdrant");
}

/// A store whose every call fails, as an unreachable Qdrant does.
struct DownStore;

fn down(op: &'static str) -> StoreError {
    StoreError::Backend {
        backend: "test",
        op,
        message: "down".into(),
    }
}

#[async_trait::async_trait]
impl VectorStore for DownStore {
    async fn upsert_entries(&self, _: Vec<PointEntry>) -> Result<(), StoreError> {
        Err(down("upsert"))
    }
    async fn search(&self, _: &[f32], _: &Filter, _: usize) -> Result<Vec<Neighbour>, StoreError> {
        Err(down("search"))
    }
    async fn delete_matching(&self, _: &Filter) -> Result<u64, StoreError> {
        Err(down("delete"))
    }
    async fn count(&self, _: &Filter) -> Result<u64, StoreError> {
        Err(down("count"))
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Err(down("flush"))
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(down("health"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collection_loses_no_feedback_and_similar_answers_empty_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let config = ApiConfig {
        history_path: Some(path.clone()),
        ..ApiConfig::default()
    };
    let index = IncidentIndex::new(Arc::new(DownStore));
    let state = ApiState::with_incident_index(config, common::tokens(), index).unwrap();
    let past = alert_in("prod", "past", IncidentStatus::Resolved, &EVIDENCE);
    state.publish(past).await;
    state.publish(new_incident("prod")).await;
    let server = common::Server::start(state.clone()).await;

    let (status, body) = server
        .post("/incidents/past/feedback", r#"{"cause":"redis"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    let kept = state
        .history()
        .entries(&HistoryFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "the feedback is kept");
    assert!(file_mentions(&path, "\"incident_id\":\"past\""));

    let response = server.get("/incidents/now/similar").await;
    assert_eq!(response.status(), 200);
    let reason = response
        .headers()
        .get(SIMILAR_UNAVAILABLE)
        .expect("the reason header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("incidents collection"), "{reason}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!([]));
    assert!(matches!(
        state
            .history()
            .similar(&SimilarQuery::of_alert(&new_incident("prod")), 3)
            .await,
        Err(ApiError::IncidentSearch(_))
    ));
    assert!(state
        .past_incidents()
        .most_similar(&new_incident("prod"), 3)
        .is_empty());
    let page = server.get("/ui/incidents/now").await.text().await.unwrap();
    assert!(
        page.contains("Similar incidents are unavailable"),
        "the dashboard says why"
    );
}

fn file_mentions(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).unwrap().contains(needle)
}
