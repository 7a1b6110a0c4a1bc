//! The baseline endpoints against a stand-in for the detectors, and the recalculation schedule.

mod common;

use common::{FakeBaselines, RecalcCall, Server};
use culprit_api::{
    run_recalculation_schedule, ApiConfig, ApiState, BaselinesConfig, HistoryEntry, HistoryFilter,
    RecalcRange,
};
use culprit_core::{SourceKind, NANOS_PER_SEC};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// 2026-03-01T12:00:00Z.
const NOW: i64 = 1_772_366_400 * NANOS_PER_SEC;

fn pinned_state(baselines: &Arc<FakeBaselines>) -> ApiState {
    let state = ApiState::with_clock(ApiConfig::default(), common::tokens(), || NOW);
    state.set_baselines(baselines.clone());
    state
}

#[tokio::test]
async fn without_detectors_the_baseline_routes_answer_501() {
    let server = Server::start(common::state()).await;
    for path in ["/baselines", "/baselines/checkout"] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, 501, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("exposes no baselines"),
            "{body}"
        );
    }
    let (status, _) = server.post("/baselines/checkout/recalculate", "{}").await;
    assert_eq!(status, 501);
    assert_eq!(server.get_json("/history").await.1, json!([]));
}

#[tokio::test]
async fn baselines_show_thresholds_per_hour_bucket_and_when_learned() {
    let baselines = Arc::new(FakeBaselines::shop());
    let server = Server::start(pinned_state(&baselines)).await;
    let (status, body) = server.get_json("/baselines").await;
    assert_eq!(
        (status, body),
        (200, json!({"services": ["cart", "checkout"]}))
    );

    let (status, body) = server.get_json("/baselines/checkout").await;
    assert_eq!(status, 200, "{body}");
    let b = &body["baselines"][0];
    assert_eq!(b["source"], "traces");
    assert_eq!(b["signal"], "span.latency:POST /checkout");
    let buckets = b["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 25);
    assert_eq!(
        (
            &buckets[9]["tier"],
            &buckets[9]["hour"],
            &buckets[9]["median"]
        ),
        (&json!("hour_of_day"), &json!(9), &json!(165.0))
    );
    assert_eq!(buckets[9]["thresholds"][0]["severity"], "SEV1");
    assert_eq!(buckets[9]["thresholds"][0]["above"], 495.0);
    assert!(buckets[9]["learned_at"].is_i64());
    assert_eq!(buckets[24]["tier"], "global");

    let (status, body) = server.get_json("/baselines/nope").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn recalculation_relearns_from_now_or_a_range_and_is_recorded() {
    let baselines = Arc::new(FakeBaselines::shop());
    let server = Server::start(pinned_state(&baselines)).await;

    let r = server
        .send(
            reqwest::Method::POST,
            "/baselines/checkout/recalculate",
            Some(common::WRITER),
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "an empty body re-learns from now on");
    let (status, body) = server
        .post(
            "/baselines/cart/recalculate",
            r#"{"from":"2026-02-28T12:00:00Z","to":"2026-03-01T12:00:00+00:00","source":"logs"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recalculation"]["baselines"], 1);
    assert_eq!(body["recalculation"]["author"], "ana");
    assert_eq!(
        body["recalculation"]["range"],
        json!({"mode": "range", "from": NOW - 24 * 3600 * NANOS_PER_SEC, "to": NOW})
    );
    assert_eq!(
        baselines.calls(),
        [
            RecalcCall {
                service: "checkout".into(),
                source: None,
                range: RecalcRange::FromNow
            },
            RecalcCall {
                service: "cart".into(),
                source: Some(SourceKind::Logs),
                range: RecalcRange::Range {
                    from: NOW - 24 * 3600 * NANOS_PER_SEC,
                    to: NOW
                }
            },
        ]
    );
    // The forgetting shows in the view.
    let (_, body) = server.get_json("/baselines/checkout").await;
    assert_eq!(body["baselines"][0]["buckets"], json!([]));

    let (_, history) = server.get_json("/history?kind=recalculation").await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        (
            &history[0]["service"],
            &history[0]["at"],
            &history[0]["source"]
        ),
        (&json!("cart"), &json!(NOW), &json!("logs"))
    );
    assert_eq!(history[1]["range"], json!({"mode": "from_now"}));

    for (body, code, expect) in [
        ("{nope", 400, "invalid recalculation JSON"),
        (r#"{"range":"all"}"#, 400, "unknown field `range`"),
        (
            r#"{"from":"2026-02-28T12:00:00Z"}"#,
            400,
            "give both from and to",
        ),
        (
            r#"{"from":"2026-03-01T12:00:00Z","to":"2026-02-28T12:00:00Z"}"#,
            400,
            "from must be before to",
        ),
        (
            r#"{"from":"yesterday","to":"2026-02-28T12:00:00Z"}"#,
            400,
            "not an RFC 3339 time",
        ),
        (
            r#"{"from":"2027-01-01T00:00:00Z","to":"2027-01-02T00:00:00Z"}"#,
            400,
            "starts in the future",
        ),
    ] {
        let (status, response) = server.post("/baselines/checkout/recalculate", body).await;
        assert_eq!(status, code, "{body}: {response}");
        assert!(
            response["error"].as_str().unwrap().contains(expect),
            "{body}: {response}"
        );
    }
    let (status, _) = server.post("/baselines/nope/recalculate", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(
        baselines.calls().len(),
        3,
        "refused requests reach no detector"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"culprit_baseline_recalculations_total{trigger="api"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_schedule_recalculates_every_interval_from_the_lookback_and_records_it() {
    let baselines = Arc::new(FakeBaselines::shop());
    let state = pinned_state(&baselines);
    let config = BaselinesConfig {
        interval_secs: 600,
        lookback_secs: 3600,
        services: vec![],
    };
    config.validate().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_recalculation_schedule(state.clone(), config, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert!(
        baselines.calls().is_empty(),
        "nothing before the first interval"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let range = RecalcRange::Range {
        from: NOW - 3600 * NANOS_PER_SEC,
        to: NOW,
    };
    let services: Vec<(String, RecalcRange)> = baselines
        .calls()
        .into_iter()
        .map(|c| (c.service, c.range))
        .collect();
    assert_eq!(
        services,
        [("cart".to_string(), range), ("checkout".to_string(), range)]
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(baselines.calls().len(), 4, "a second run");

    let recorded = state
        .history()
        .entries(&HistoryFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 4);
    assert!(recorded
        .iter()
        .all(|i| matches!(&i.entry, HistoryEntry::Recalculation(r) if r.author == "schedule")));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the schedule stops on shutdown")
        .unwrap();
}

#[test]
fn a_schedule_without_lookback_is_refused() {
    let config = BaselinesConfig {
        interval_secs: 3600,
        lookback_secs: 0,
        services: vec![],
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("baselines.lookback_secs"), "{err}");
    assert!(BaselinesConfig::default().validate().is_ok());
}
