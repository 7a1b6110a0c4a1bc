//! The API served on 127.0.0.1:0 and spoken to over real HTTP: probes, metrics, incidents,
//! feedback and its history, and the live event stream.

mod common;

use common::{alert, state, Server};
use culprit_api::{ApiConfig, ApiState, METRICS_CONTENT_TYPE};
use culprit_core::{IncidentStatus, RcaAlert, Severity, SourceKind, NANOS_PER_SEC};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn healthz_answers_ok_and_the_server_stops_on_shutdown() {
    let mut server = Server::start(state()).await;
    let r = server.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    server.stop.take().unwrap().send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve did not return cleanly: {finished:?}"
    );
}

#[tokio::test]
async fn readyz_passes_only_when_every_check_does() {
    let server = Server::start(state()).await;
    let (status, body) = server.get_json("/readyz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "no checks means ready"
    );

    server
        .state
        .add_readiness_check("store", || Box::pin(async { Ok(()) }));
    let (status, body) = server.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"], json!(["store"]));

    server.state.add_readiness_check("broker", || {
        Box::pin(async { Err("no broker reachable at kafka:9092".to_string()) })
    });
    server.state.add_readiness_check("slow", || {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
    });
    let (status, body) = server.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not ready");
    assert_eq!(
        body["failing"],
        json!([
            {"check": "broker", "error": "no broker reachable at kafka:9092"},
            {"check": "slow", "error": "timed out after 200 ms"},
        ])
    );
}

#[tokio::test]
async fn metrics_expose_recorded_samples_in_openmetrics_text() {
    let server = Server::start(state()).await;
    let m = server.state.metrics().clone();
    m.events(SourceKind::Traces, 42);
    m.decode_errors("logs", "malformed_protobuf", 1);
    m.decode_errors(culprit_api::ANOMALIES_INPUT, "malformed_bus_message", 2);
    m.dlq("logs", 1);
    m.anomalies(SourceKind::Metrics, Severity::Sev1, 3);
    m.incident(IncidentStatus::Open);
    m.consumer_lag("otlp_spans", 3, 1500);
    m.consumer_lag_seconds("otlp_spans", 3, Duration::from_millis(2500));
    m.consumer_lag("otlp_logs", 0, 7);
    m.consumer_lag_seconds("otlp_logs", 0, Duration::from_secs(1));
    m.forget_consumer_lag("otlp_logs", 0);
    m.forget_consumer_lag_seconds("otlp_logs", 0);
    m.processing_latency("embedder-traces")
        .observe(Duration::from_millis(3));

    let r = server.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], METRICS_CONTENT_TYPE);
    let text = r.text().await.unwrap();
    for line in [
        "# TYPE culprit_events counter",
        r#"culprit_events_total{source="traces"} 42"#,
        r#"culprit_decode_errors_total{source="logs",reason="malformed_protobuf"} 1"#,
        r#"culprit_decode_errors_total{source="anomalies",reason="malformed_bus_message"} 2"#,
        r#"culprit_dlq_total{source="logs"} 1"#,
        r#"culprit_anomalies_total{source="metrics",severity="SEV1"} 3"#,
        r#"culprit_incidents_total{status="open"} 1"#,
        "# TYPE culprit_consumer_lag gauge",
        r#"culprit_consumer_lag{topic="otlp_spans",partition="3"} 1500"#,
        "# TYPE culprit_consumer_lag_seconds gauge",
        r#"culprit_consumer_lag_seconds{topic="otlp_spans",partition="3"} 2.5"#,
        "# TYPE culprit_processing_latency_seconds histogram",
        r#"culprit_processing_latency_seconds_count{service="embedder-traces"} 1"#,
        r#"culprit_processing_latency_seconds_bucket{le="0.004",service="embedder-traces"} 1"#,
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains(r#"topic="otlp_logs""#),
        "a forgotten partition's lag is gone:\n{text}"
    );
}

#[tokio::test]
async fn incidents_list_newest_first_filter_by_status_and_404_when_unknown() {
    let server = Server::start(state()).await;
    let store = server.state.incidents();
    store.upsert(alert(
        "inc-a",
        100,
        0,
        IncidentStatus::Resolved,
        &[("redis", "span.error")],
    ));
    store.upsert(alert(
        "inc-b",
        200,
        0,
        IncidentStatus::Open,
        &[("cart", "span.latency")],
    ));
    store.upsert(alert(
        "inc-c",
        300,
        0,
        IncidentStatus::Open,
        &[("db", "log.new_template")],
    ));
    store.upsert(alert(
        "inc-b",
        200,
        2,
        IncidentStatus::Resolved,
        &[("cart", "span.latency")],
    ));
    // A redelivered older revision does not replace the newer one.
    assert!(!store.upsert(alert(
        "inc-b",
        200,
        1,
        IncidentStatus::Open,
        &[("cart", "span.latency")]
    )));

    let ids = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["incident_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (status, all) = server.get_json("/incidents").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), ["inc-c", "inc-b", "inc-a"]);
    assert_eq!(
        server.get_json("/incidents?status=open").await.1,
        json!([all[0]])
    );
    assert_eq!(
        ids(&server.get_json("/incidents?status=resolved").await.1),
        ["inc-b", "inc-a"]
    );
    assert_eq!(
        ids(&server
            .get_json("/incidents?status=resolved&limit=1")
            .await
            .1),
        ["inc-b"]
    );

    let (status, one) = server.get_json("/incidents/inc-b").await;
    assert_eq!(status, 200);
    assert_eq!(one["revision"], 2);
    let parsed: RcaAlert = serde_json::from_value(one).unwrap();
    assert_eq!(parsed.root_causes[0].service, "cart");

    let (status, body) = server.get_json("/incidents/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (status, body) = server.get_json("/incidents?status=maybe").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("status"), "{body}");
}

#[tokio::test]
async fn incidents_filter_by_severity_environment_and_service() {
    let server = Server::start(state()).await;
    let mut staging = alert(
        "inc-s",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    );
    staging.environment = "staging".into();
    staging.severity = Severity::Sev1;
    server.state.incidents().upsert(staging);
    server.state.incidents().upsert(alert(
        "inc-p",
        200,
        1,
        IncidentStatus::Open,
        &[("cart", "span.latency")],
    ));
    let ids = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["incident_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    for (query, expect) in [
        ("severity=SEV1", vec!["inc-s"]),
        ("severity=SEV2", vec!["inc-p"]),
        ("environment=prod", vec!["inc-p"]),
        // Any service the incident names, not only its first candidate.
        ("service=frontend", vec!["inc-p", "inc-s"]),
        ("service=redis&environment=staging", vec!["inc-s"]),
        ("service=redis&environment=prod", vec![]),
        // A form's "any" arrives as an empty value.
        ("service=&environment=", vec!["inc-p", "inc-s"]),
    ] {
        let (status, body) = server.get_json(&format!("/incidents?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(body), expect, "{query}");
    }
    let (status, body) = server.get_json("/incidents?severity=SEV9").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("severity"),
        "{body}"
    );
}

#[tokio::test]
async fn the_incident_store_forgets_the_earliest_incidents_beyond_capacity() {
    let state = ApiState::new(
        ApiConfig {
            max_incidents: 2,
            ..ApiConfig::default()
        },
        common::tokens(),
    )
    .unwrap();
    for (i, id) in ["old", "mid", "new"].into_iter().enumerate() {
        state
            .incidents()
            .upsert(alert(id, i as i64, 0, IncidentStatus::Open, &[("a", "s")]));
    }
    assert_eq!(state.incidents().len(), 2);
    assert!(state.incidents().get("old").is_none());
    let ids: Vec<_> = state
        .incidents()
        .list(None, 10)
        .iter()
        .map(|a| a.incident_id.clone())
        .collect();
    assert_eq!(ids, ["new", "mid"]);
}

#[tokio::test]
async fn feedback_must_name_a_service_of_the_graph_or_other() {
    let server = Server::start(state()).await;
    server.state.incidents().upsert(alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Resolved,
        &[("redis", "span.error"), ("cart", "span.latency")],
    ));
    let (status, body) = server
        .post("/incidents/unknown/feedback", r#"{"cause":"redis"}"#)
        .await;
    assert_eq!(status, 404, "{body}");

    for (bad, code, expect) in [
        ("{not json", 400, "invalid feedback JSON"),
        (r#"{"note":"x"}"#, 400, "missing field `cause`"),
        (
            r#"{"cause":"redis","operator":"mallory"}"#,
            400,
            "unknown field `operator`",
        ),
        (
            r#"{"cause":"totally-not-inventory"}"#,
            422,
            "not a service of incident inc-1; name one of [cart, frontend, redis]",
        ),
        (r#"{"cause":" "}"#, 422, "cause must not be empty"),
        (r#"{"cause":"other:  "}"#, 422, "needs a description"),
    ] {
        let (status, body) = server.post("/incidents/inc-1/feedback", bad).await;
        assert_eq!(status, code, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(expect),
            "{bad}: {body}"
        );
    }
    let (status, body) = server.get_json("/history").await;
    assert_eq!(
        (status, body),
        (200, json!([])),
        "refused feedback must record nothing"
    );

    // A service the graph holds but culprit did not rank, and a cause outside the graph.
    let (status, body) = server
        .post("/incidents/inc-1/feedback", r#"{"cause":"frontend"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["feedback"]["cause"], "frontend");
    assert!(body["feedback"].get("rank").is_none(), "{body}");
    let (status, body) = server
        .post(
            "/incidents/inc-1/feedback",
            r#"{"cause":"other: the payment provider's outage","note":"status page confirmed"}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["feedback"]["cause"],
        "other: the payment provider's outage"
    );
    assert_eq!(body["feedback"]["author"], "ana");
    let text = server.metrics().await;
    for line in [
        r#"culprit_feedback_total{cause="unranked"} 1"#,
        r#"culprit_feedback_total{cause="other"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn every_post_is_kept_with_its_author_and_the_latest_counts() {
    let server = Server::start(state()).await;
    server.state.incidents().upsert(alert(
        "inc-1",
        100,
        3,
        IncidentStatus::Resolved,
        &[("redis", "span.error:GET"), ("cart", "span.latency")],
    ));
    server.state.incidents().upsert(alert(
        "inc-2",
        300,
        0,
        IncidentStatus::Open,
        &[("cart", "span.latency"), ("redis", "span.error:GET")],
    ));

    let (status, first) = server
        .post("/incidents/inc-1/feedback", r#"{"cause":"cart"}"#)
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["feedback"]["rank"], 2);
    let (status, second) = server
        .post(
            "/incidents/inc-1/feedback",
            r#"{"cause":"redis","note":"maxmemory reached"}"#,
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["feedback"]["rank"], 1);
    assert_eq!(
        second["feedback"]["provisional"], false,
        "inc-1 is resolved"
    );

    let (status, posts) = server.get_json("/incidents/inc-1/feedback").await;
    assert_eq!(status, 200);
    let posts = posts.as_array().unwrap();
    assert_eq!(posts.len(), 2, "both posts are kept: {posts:?}");
    assert_eq!(
        (&posts[0]["cause"], &posts[0]["latest"], &posts[0]["author"]),
        (&json!("redis"), &json!(true), &json!("ana"))
    );
    assert_eq!(
        (&posts[1]["cause"], &posts[1]["latest"]),
        (&json!("cart"), &json!(false))
    );
    assert_eq!(posts[0]["evidence_signals"], json!(["span.error:GET"]));
    assert_eq!(posts[0]["started_at"], 100 * NANOS_PER_SEC);
    assert_eq!(posts[0]["kind"], "feedback");

    // The later answer is the one later incidents are matched against.
    let (status, similar) = server.get_json("/incidents/inc-2/similar").await;
    assert_eq!(status, 200);
    let similar = similar.as_array().unwrap();
    assert_eq!(similar.len(), 1, "{similar:?}");
    assert_eq!(
        (&similar[0]["incident_id"], &similar[0]["cause"]),
        (&json!("inc-1"), &json!("redis"))
    );
    let (_, by_service) = server
        .get_json("/history?service=redis&kind=feedback")
        .await;
    assert_eq!(by_service.as_array().unwrap().len(), 2);
    let (status, body) = server.get_json("/history?kind=opinion").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn feedback_on_an_open_incident_is_provisional_until_it_resolves() {
    let server = Server::start(state()).await;
    let open = alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error"), ("cart", "span.latency")],
    );
    assert!(server.state.publish(open.clone()).await);
    server.state.incidents().upsert(alert(
        "inc-2",
        300,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    ));

    let (status, body) = server
        .post("/incidents/inc-1/feedback", r#"{"cause":"redis"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["feedback"]["provisional"], true);
    let (_, similar) = server.get_json("/incidents/inc-2/similar").await;
    assert_eq!(
        similar,
        json!([]),
        "provisional feedback is not learned from"
    );

    let mut resolved = open;
    resolved.revision = 2;
    resolved.status = IncidentStatus::Resolved;
    assert!(server.state.publish(resolved).await);
    let (_, posts) = server.get_json("/incidents/inc-1/feedback").await;
    assert_eq!(posts[0]["provisional"], false, "{posts}");
    let (_, similar) = server.get_json("/incidents/inc-2/similar").await;
    assert_eq!(similar[0]["incident_id"], "inc-1");

    let text = server.metrics().await;
    for line in [
        r#"culprit_incidents_total{status="open"} 1"#,
        r#"culprit_incidents_total{status="resolved"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn the_event_stream_announces_changes_and_ends_at_shutdown() {
    let mut server = Server::start(state()).await;
    let mut response = server.get("/events").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let mut read_until = async |response: &mut reqwest::Response, needle: &str| {
        while !seen.contains(needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream is still open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until(&mut response, "event: ready").await;
    server.state.incidents().upsert(alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    ));
    read_until(&mut response, "event: incidents\ndata: 1").await;

    // Shutdown ends the open stream instead of waiting for it forever.
    server.stop.take().unwrap().send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve did not return with a stream open: {finished:?}"
    );
}

#[tokio::test]
async fn history_survives_a_restart_with_provisional_state_and_older_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    // A confirmation as files held it before every post was kept.
    std::fs::write(
        &path,
        r#"{"incident_id":"old-1","environment":"prod","root_cause_service":"db","confirmed_by":"bo","confirmed_at":5,"started_at":1,"summary":"db broke","evidence_signals":["log.new_template:E1"],"services":["db","frontend"]}"#
            .to_string()
            + "\n",
    )
    .unwrap();
    let config = ApiConfig {
        history_path: Some(path.clone()),
        ..ApiConfig::default()
    };
    let open = alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    );
    {
        let server = Server::start(ApiState::new(config.clone(), common::tokens()).unwrap()).await;
        server.state.publish(open.clone()).await;
        let (status, body) = server
            .post("/incidents/inc-1/feedback", r#"{"cause":"redis"}"#)
            .await;
        assert_eq!(status, 201, "{body}");
        let mut resolved = open.clone();
        resolved.revision = 2;
        resolved.status = IncidentStatus::Resolved;
        server.state.publish(resolved).await;
    }
    let state = ApiState::new(config, common::tokens()).unwrap();
    let items = state
        .history()
        .entries(&Default::default(), 10)
        .await
        .unwrap();
    let shown: Vec<Value> = items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        (
            &shown[0]["incident_id"],
            &shown[0]["provisional"],
            &shown[0]["author"]
        ),
        (&json!("inc-1"), &json!(false), &json!("ana")),
        "the resolution was kept: {shown:?}"
    );
    assert_eq!(
        (
            &shown[1]["incident_id"],
            &shown[1]["cause"],
            &shown[1]["author"]
        ),
        (&json!("old-1"), &json!("db"), &json!("bo"))
    );
}
