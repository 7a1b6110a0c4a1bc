//! The embedded history store: similarity ranking, the latest answer per incident, provisional
//! feedback and JSON-lines persistence.

use culprit_api::{
    ApiError, Cause, FeedbackRecord, HistoryEntry, HistoryFilter, HistoryItem, HistoryKind,
    HistoryStore, MemoryHistoryStore, RecalcRange, RecalculationRecord, SimilarQuery,
};
use culprit_core::{IncidentStatus, PastIncidents};
use std::io::Write;

mod common;

fn record(
    id: &str,
    env: &str,
    root: &str,
    services: &[&str],
    signals: &[&str],
    at: i64,
) -> HistoryEntry {
    HistoryEntry::Feedback(FeedbackRecord {
        incident_id: id.into(),
        environment: env.into(),
        started_at: at,
        summary: format!("{root} broke"),
        cause: Cause::Service(root.into()),
        rank: Some(1),
        author: "ana".into(),
        at,
        provisional: false,
        evidence_signals: signals.iter().map(|s| s.to_string()).collect(),
        services: services.iter().map(|s| s.to_string()).collect(),
        note: None,
        profile: None,
    })
}

fn provisional(entry: HistoryEntry) -> HistoryEntry {
    match entry {
        HistoryEntry::Feedback(mut f) => {
            f.provisional = true;
            HistoryEntry::Feedback(f)
        }
        other => other,
    }
}

fn recalculation(service: &str, at: i64) -> HistoryEntry {
    HistoryEntry::Recalculation(RecalculationRecord {
        service: service.into(),
        source: None,
        range: RecalcRange::FromNow,
        author: "ana".into(),
        at,
        baselines: 3,
        detail: String::new(),
    })
}

fn terms(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn ids(records: &[FeedbackRecord]) -> Vec<&str> {
    records.iter().map(|r| r.incident_id.as_str()).collect()
}

/// (incident or service, latest) of each listed item.
fn listed(items: &[HistoryItem]) -> Vec<(String, Option<bool>)> {
    items
        .iter()
        .map(|i| match &i.entry {
            HistoryEntry::Feedback(f) => (format!("{}={}", f.incident_id, f.cause), i.latest),
            HistoryEntry::Recalculation(r) => (format!("recalc {}", r.service), i.latest),
        })
        .collect()
}

#[tokio::test]
async fn similar_ranks_by_overlap_prefers_the_same_root_cause_and_environment() {
    let store = MemoryHistoryStore::in_memory(100);
    for entry in [
        record(
            "same-root",
            "prod",
            "redis",
            &["redis", "cart", "frontend"],
            &["span.error"],
            1,
        ),
        record("touched", "prod", "db", &["db", "cart", "frontend"], &[], 2),
        record(
            "staging",
            "staging",
            "redis",
            &["redis", "cart", "frontend"],
            &["span.error"],
            3,
        ),
        record("unrelated", "prod", "payments", &["payments"], &[], 4),
    ] {
        store.append(entry).await.unwrap();
    }

    let found = store
        .similar(
            &SimilarQuery::terms("prod", &terms(&["redis", "cart", "frontend"])),
            10,
        )
        .await
        .unwrap();
    assert_eq!(ids(&found), ["same-root", "staging", "touched"]);
    // Signals count as overlap too.
    let by_signal = store
        .similar(&SimilarQuery::terms("prod", &terms(&["span.error"])), 10)
        .await
        .unwrap();
    assert_eq!(ids(&by_signal), ["same-root", "staging"]);
    assert_eq!(
        store
            .similar(&SimilarQuery::terms("prod", &terms(&["redis", "cart"])), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn similar_uses_each_incidents_latest_final_answer_only() {
    let store = MemoryHistoryStore::in_memory(100);
    store
        .append(record("inc-1", "prod", "redis", &["redis", "cart"], &[], 1))
        .await
        .unwrap();
    // Re-answered: cart, not redis.
    store
        .append(record("inc-1", "prod", "cart", &["redis", "cart"], &[], 2))
        .await
        .unwrap();
    store
        .append(provisional(record(
            "inc-2",
            "prod",
            "redis",
            &["redis"],
            &[],
            3,
        )))
        .await
        .unwrap();
    let found = store
        .similar(&SimilarQuery::terms("prod", &terms(&["redis", "cart"])), 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].cause, Cause::Service("cart".into()));

    assert_eq!(store.resolve("inc-2", 4).await.unwrap(), 1);
    assert_eq!(store.resolve("inc-2", 5).await.unwrap(), 0, "already final");
    let found = store
        .similar(&SimilarQuery::terms("prod", &terms(&["redis"])), 10)
        .await
        .unwrap();
    assert_eq!(ids(&found), ["inc-2", "inc-1"]);
}

#[tokio::test]
async fn entries_list_newest_first_with_the_latest_answer_marked_and_filters() {
    let store = MemoryHistoryStore::in_memory(100);
    store
        .append(record("inc-1", "prod", "db", &["db", "redis"], &[], 1))
        .await
        .unwrap();
    store.append(recalculation("redis", 2)).await.unwrap();
    store
        .append(record("inc-1", "prod", "redis", &["db", "redis"], &[], 3))
        .await
        .unwrap();
    store.append(recalculation("db", 4)).await.unwrap();

    let all = store.entries(&HistoryFilter::default(), 10).await.unwrap();
    assert_eq!(
        listed(&all),
        [
            ("recalc db".to_string(), None),
            ("inc-1=redis".to_string(), Some(true)),
            ("recalc redis".to_string(), None),
            ("inc-1=db".to_string(), Some(false)),
        ]
    );
    let redis = store
        .entries(
            &HistoryFilter {
                service: Some("redis".into()),
                ..HistoryFilter::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        redis.len(),
        3,
        "both posts touched redis, and its recalculation"
    );
    let recalcs = store
        .entries(
            &HistoryFilter {
                kind: Some(HistoryKind::Recalculation),
                ..HistoryFilter::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(listed(&recalcs), [("recalc db".to_string(), None)]);
}

#[tokio::test]
async fn history_survives_a_restart_through_the_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    {
        let store = MemoryHistoryStore::open(&path, 100).unwrap();
        store
            .append(record("inc-1", "prod", "redis", &["redis"], &[], 1))
            .await
            .unwrap();
        store
            .append(provisional(record("inc-2", "prod", "db", &["db"], &[], 2)))
            .await
            .unwrap();
        store
            .append(provisional(record("inc-3", "prod", "db", &["db"], &[], 3)))
            .await
            .unwrap();
        store
            .append(record("inc-1", "prod", "cart", &["cart"], &[], 4))
            .await
            .unwrap();
        store.append(recalculation("db", 5)).await.unwrap();
        store.resolve("inc-2", 6).await.unwrap();
    }
    // A crash mid-append leaves a torn last line; loading keeps everything before it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"kind\":\"feedback\",\"incident_id\":\"inc-")
        .unwrap();

    let store = MemoryHistoryStore::open(&path, 100).unwrap();
    let all = store.entries(&HistoryFilter::default(), 10).await.unwrap();
    assert_eq!(
        listed(&all),
        [
            ("recalc db".to_string(), None),
            ("inc-1=cart".to_string(), Some(true)),
            ("inc-3=db".to_string(), Some(true)),
            ("inc-2=db".to_string(), Some(true)),
            ("inc-1=redis".to_string(), Some(false)),
        ]
    );
    let provisional: Vec<bool> = all
        .iter()
        .filter_map(|i| match &i.entry {
            HistoryEntry::Feedback(f) if f.incident_id != "inc-1" => Some(f.provisional),
            _ => None,
        })
        .collect();
    assert_eq!(
        provisional,
        [true, false],
        "inc-3 still open, inc-2 resolved"
    );
}

#[test]
fn a_corrupt_history_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, "not json\n{}\n").unwrap();
    let err = MemoryHistoryStore::open(&path, 100).unwrap_err();
    assert!(
        matches!(err, ApiError::HistoryLine { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("history.jsonl line 1"), "{err}");
    std::fs::write(&path, "{\"kind\":\"opinion\"}\n").unwrap();
    let err = MemoryHistoryStore::open(&path, 100).unwrap_err();
    assert!(
        matches!(err, ApiError::HistoryLine { line: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_store_keeps_at_most_max_entries() {
    let store = MemoryHistoryStore::in_memory(2);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        store
            .append(record(id, "prod", "redis", &["redis"], &[], i as i64))
            .await
            .unwrap();
    }
    let all = store.entries(&HistoryFilter::default(), 10).await.unwrap();
    assert_eq!(
        listed(&all),
        [
            ("c=redis".to_string(), Some(true)),
            ("b=redis".to_string(), Some(true))
        ]
    );
}

#[tokio::test]
async fn by_profile_the_incident_with_the_same_evidence_ranks_first_and_unrelated_ones_are_left_out(
) {
    let store = MemoryHistoryStore::in_memory(100);
    let past = |id: &str, causes: &[(&str, &str)], at: i64| {
        let alert = common::alert(id, at, 1, IncidentStatus::Resolved, causes);
        HistoryEntry::Feedback(FeedbackRecord::new(
            &alert,
            Cause::Service(causes[0].0.into()),
            "ana",
            at,
            None,
        ))
    };
    for entry in [
        past(
            "same-evidence",
            &[("redis", "span.latency:GET /get"), ("cart", "log.errors")],
            1,
        ),
        past(
            "same-service-other-failure",
            &[("redis", "metric:memory")],
            2,
        ),
        past(
            "unrelated",
            &[
                ("payments", "metric:cpu"),
                ("ledger", "log.new_template:E7"),
            ],
            3,
        ),
    ] {
        store.append(entry).await.unwrap();
    }
    let now = common::alert(
        "now",
        10,
        1,
        IncidentStatus::Open,
        &[("redis", "span.latency:GET /get"), ("cart", "log.errors")],
    );
    let query = SimilarQuery::of_alert(&now);
    let found = store.similar(&query, 10).await.unwrap();
    assert_eq!(
        ids(&found).first(),
        Some(&"same-evidence"),
        "{:?}",
        ids(&found)
    );
    assert!(!ids(&found).contains(&"unrelated"), "{:?}", ids(&found));
    let best = found[0].similarity(&query);
    assert!(best > 0.99, "the same evidence profile: cosine {best}");
    if let Some(second) = found.get(1) {
        assert!(second.similarity(&query) < best);
    }
}

#[tokio::test]
async fn an_alert_is_offered_the_confirmed_causes_of_its_most_similar_past_incidents_never_itself()
{
    let store = MemoryHistoryStore::in_memory(100);
    let evidence = [("redis", "span.latency:GET /get"), ("cart", "log.errors")];
    let feedback = |id: &str, cause: Cause, at: i64, status: IncidentStatus| {
        let alert = common::alert(id, at, 1, status, &evidence);
        let mut record = FeedbackRecord::new(&alert, cause, "ana", at, None);
        record.provisional = status == IncidentStatus::Open;
        HistoryEntry::Feedback(record)
    };
    for entry in [
        feedback(
            "confirmed",
            Cause::Service("redis".into()),
            1,
            IncidentStatus::Resolved,
        ),
        feedback(
            "other-cause",
            Cause::Other("expired certificate".into()),
            2,
            IncidentStatus::Resolved,
        ),
        // Still open: provisional, not learned from.
        feedback(
            "provisional",
            Cause::Service("cart".into()),
            3,
            IncidentStatus::Open,
        ),
        // The incident being published, confirmed once before (a later revision of it).
        feedback(
            "now",
            Cause::Service("cart".into()),
            4,
            IncidentStatus::Resolved,
        ),
    ] {
        store.append(entry).await.unwrap();
    }
    let now = common::alert("now", 10, 2, IncidentStatus::Open, &evidence);
    let similar = store.most_similar(&now, 3);
    let got: Vec<(&str, &str)> = similar
        .iter()
        .map(|s| (s.incident_id.as_str(), s.confirmed_cause.as_str()))
        .collect();
    // Equal evidence, so the newer past incident first.
    assert_eq!(
        got,
        [
            ("other-cause", "other: expired certificate"),
            ("confirmed", "redis")
        ]
    );
    assert!(similar
        .iter()
        .all(|s| s.similarity > 0.99 && s.similarity <= 1.0));
    assert_eq!(store.most_similar(&now, 1).len(), 1, "the limit holds");
}
