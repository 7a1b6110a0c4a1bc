//! The embedded feedback store: ranking and JSON-lines persistence.

use culprit_api::{ApiError, FeedbackStore, HistoryRecord, MemoryFeedbackStore};
use std::io::Write;

fn record(
    id: &str,
    env: &str,
    root: &str,
    services: &[&str],
    signals: &[&str],
    started_at: i64,
) -> HistoryRecord {
    HistoryRecord {
        incident_id: id.into(),
        environment: env.into(),
        root_cause_service: root.into(),
        confirmed_by: "ana".into(),
        confirmed_at: 0,
        started_at,
        summary: format!("{root} broke"),
        evidence_signals: signals.iter().map(|s| s.to_string()).collect(),
        services: services.iter().map(|s| s.to_string()).collect(),
        note: None,
    }
}

fn terms(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn ids(records: &[HistoryRecord]) -> Vec<&str> {
    records.iter().map(|r| r.incident_id.as_str()).collect()
}

#[tokio::test]
async fn similar_ranks_by_overlap_prefers_the_same_root_cause_and_environment() {
    let store = MemoryFeedbackStore::in_memory(100);
    store
        .record(record(
            "same-root",
            "prod",
            "redis",
            &["redis", "cart", "frontend"],
            &["span.error"],
            1,
        ))
        .await
        .unwrap();
    store
        .record(record(
            "touched",
            "prod",
            "db",
            &["db", "cart", "frontend"],
            &[],
            2,
        ))
        .await
        .unwrap();
    store
        .record(record(
            "staging",
            "staging",
            "redis",
            &["redis", "cart", "frontend"],
            &["span.error"],
            3,
        ))
        .await
        .unwrap();
    store
        .record(record(
            "unrelated",
            "prod",
            "payments",
            &["payments"],
            &[],
            4,
        ))
        .await
        .unwrap();

    let found = store
        .similar("prod", &terms(&["redis", "cart", "frontend"]), 10)
        .await
        .unwrap();
    assert_eq!(ids(&found), ["same-root", "staging", "touched"]);
    // Signals count as overlap too.
    let by_signal = store
        .similar("prod", &terms(&["span.error"]), 10)
        .await
        .unwrap();
    assert_eq!(ids(&by_signal), ["same-root", "staging"]);
    assert_eq!(
        store
            .similar("prod", &terms(&["redis", "cart"]), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn history_lists_root_cause_matches_before_mere_involvement() {
    let store = MemoryFeedbackStore::in_memory(100);
    store
        .record(record(
            "touched-new",
            "prod",
            "db",
            &["db", "redis"],
            &[],
            9,
        ))
        .await
        .unwrap();
    store
        .record(record("root-old", "prod", "redis", &["redis"], &[], 1))
        .await
        .unwrap();
    store
        .record(record("root-new", "prod", "redis", &["redis"], &[], 5))
        .await
        .unwrap();
    assert_eq!(
        ids(&store.history(Some("redis"), 10).await.unwrap()),
        ["root-new", "root-old", "touched-new"]
    );
    assert_eq!(
        ids(&store.history(None, 2).await.unwrap()),
        ["touched-new", "root-new"]
    );
}

#[tokio::test]
async fn history_survives_a_restart_through_the_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    {
        let store = MemoryFeedbackStore::open(&path, 100).unwrap();
        store
            .record(record("inc-1", "prod", "redis", &["redis"], &[], 1))
            .await
            .unwrap();
        store
            .record(record("inc-2", "prod", "db", &["db"], &[], 2))
            .await
            .unwrap();
        // Re-confirmed with another cause: the later record wins.
        store
            .record(record("inc-1", "prod", "cart", &["cart"], &[], 1))
            .await
            .unwrap();
    }
    // A crash mid-append leaves a torn last line; loading keeps everything before it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"incident_id\":\"inc-")
        .unwrap();

    let store = MemoryFeedbackStore::open(&path, 100).unwrap();
    let all = store.history(None, 10).await.unwrap();
    assert_eq!(ids(&all), ["inc-2", "inc-1"]);
    assert_eq!(all[1].root_cause_service, "cart");
}

#[test]
fn a_corrupt_history_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, "not json\n{}\n").unwrap();
    let err = MemoryFeedbackStore::open(&path, 100).unwrap_err();
    assert!(
        matches!(err, ApiError::HistoryLine { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("history.jsonl line 1"), "{err}");
}

#[tokio::test]
async fn the_store_keeps_at_most_max_records() {
    let store = MemoryFeedbackStore::in_memory(2);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        store
            .record(record(id, "prod", "redis", &["redis"], &[], i as i64))
            .await
            .unwrap();
    }
    assert_eq!(ids(&store.history(None, 10).await.unwrap()), ["c", "b"]);
}
