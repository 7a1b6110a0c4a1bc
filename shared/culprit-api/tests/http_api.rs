//! The API served on 127.0.0.1:0 and spoken to over real HTTP.

use culprit_api::{serve, ApiConfig, ApiState, METRICS_CONTENT_TYPE};
use culprit_core::{
    Anomaly, CausalGraph, IncidentStatus, RcaAlert, RootCause, Severity, SourceKind, NANOS_PER_SEC,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;

struct Server {
    base: String,
    state: ApiState,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(state: ApiState) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            base,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

fn state() -> ApiState {
    ApiState::new(ApiConfig {
        readiness_timeout_ms: 200,
        ..ApiConfig::default()
    })
    .unwrap()
}

fn anomaly(service: &str, signal: &str) -> Anomaly {
    Anomaly {
        id: format!("{service}:{signal}"),
        time: 0,
        source: SourceKind::Traces,
        service: service.into(),
        environment: "prod".into(),
        instance: None,
        signal: signal.into(),
        description: String::new(),
        severity: Severity::Sev2,
        score: 0.9,
        observed: None,
        expected: None,
    }
}

fn alert(
    id: &str,
    started_secs: i64,
    revision: u32,
    status: IncidentStatus,
    causes: &[(&str, &str)],
) -> RcaAlert {
    let root_causes = causes
        .iter()
        .enumerate()
        .map(|(i, (service, signal))| RootCause {
            rank: i + 1,
            service: service.to_string(),
            score: 1.0 / (i + 1) as f64,
            evidence_score: 0.5,
            pagerank: 0.5,
            evidence: vec![anomaly(service, signal)],
            evidence_by_source: BTreeMap::new(),
            chain: vec![service.to_string(), "frontend".into()],
            explanation: String::new(),
        })
        .collect();
    let mut services: Vec<String> = causes.iter().map(|(s, _)| s.to_string()).collect();
    services.push("frontend".into());
    RcaAlert {
        schema_version: 1,
        incident_id: id.into(),
        revision,
        status,
        environment: "prod".into(),
        started_at: started_secs * NANOS_PER_SEC,
        updated_at: started_secs * NANOS_PER_SEC,
        severity: Severity::Sev2,
        confidence: 0.7,
        summary: format!("incident {id}"),
        root_causes,
        graph: CausalGraph::default(),
        anomaly_count: causes.len(),
        affected_services: BTreeMap::from([(SourceKind::Traces, services)]),
        llm_review: None,
    }
}

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
    m.decode_error(SourceKind::Logs, "bad_protobuf");
    m.dlq(SourceKind::Logs);
    m.anomaly(SourceKind::Metrics, Severity::Sev1);
    m.incident(IncidentStatus::Open);
    m.consumer_lag("otlp_spans", 3, 1500);
    m.latency("detect", Duration::from_millis(3));

    let r = server.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], METRICS_CONTENT_TYPE);
    let text = r.text().await.unwrap();
    for line in [
        "# TYPE culprit_events counter",
        r#"culprit_events_total{source="traces"} 42"#,
        r#"culprit_decode_errors_total{source="logs",reason="bad_protobuf"} 1"#,
        r#"culprit_dlq_total{source="logs"} 1"#,
        r#"culprit_anomalies_total{source="metrics",severity="SEV1"} 1"#,
        r#"culprit_incidents_total{status="open"} 1"#,
        r#"culprit_consumer_lag{topic="otlp_spans",partition="3"} 1500"#,
        "# TYPE culprit_processing_latency_seconds histogram",
        r#"culprit_processing_latency_seconds_count{stage="detect"} 1"#,
        r#"culprit_processing_latency_seconds_bucket{le="0.004",stage="detect"} 1"#,
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
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
async fn the_incident_store_forgets_the_earliest_incidents_beyond_capacity() {
    let state = ApiState::new(ApiConfig {
        max_incidents: 2,
        ..ApiConfig::default()
    })
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
async fn feedback_is_validated() {
    let server = Server::start(state()).await;
    server.state.incidents().upsert(alert(
        "inc-1",
        100,
        0,
        IncidentStatus::Resolved,
        &[("redis", "span.error")],
    ));
    let ok = r#"{"root_cause_service":"redis","verdict":"confirmed","operator":"ana"}"#;

    let (status, body) = server.post("/incidents/unknown/feedback", ok).await;
    assert_eq!(status, 404, "{body}");

    for (bad, expect) in [
        ("{not json", "invalid feedback JSON"),
        (
            r#"{"root_cause_service":"redis","verdict":"maybe","operator":"ana"}"#,
            "unknown variant `maybe`",
        ),
        (
            r#"{"verdict":"confirmed","operator":"ana"}"#,
            "missing field `root_cause_service`",
        ),
        (
            r#"{"root_cause_service":"redis","verdict":"confirmed","operator":"ana","score":1}"#,
            "unknown field `score`",
        ),
        (
            r#"{"root_cause_service":" ","verdict":"confirmed","operator":"ana"}"#,
            "root_cause_service must not be empty",
        ),
    ] {
        let (status, body) = server.post("/incidents/inc-1/feedback", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(expect),
            "{bad}: {body}"
        );
    }
    let (status, body) = server.get_json("/history").await;
    assert_eq!(
        (status, body),
        (200, json!([])),
        "invalid feedback must record nothing"
    );
}

#[tokio::test]
async fn confirmed_feedback_becomes_searchable_history() {
    let server = Server::start(state()).await;
    let incidents = server.state.incidents();
    incidents.upsert(alert(
        "inc-1",
        100,
        3,
        IncidentStatus::Resolved,
        &[("redis", "span.error:GET"), ("cart", "span.latency")],
    ));
    incidents.upsert(alert(
        "inc-2",
        200,
        1,
        IncidentStatus::Resolved,
        &[("db", "log.new_template:E17")],
    ));
    incidents.upsert(alert(
        "inc-3",
        300,
        0,
        IncidentStatus::Open,
        &[("cart", "span.latency"), ("redis", "span.error:GET")],
    ));

    let confirm = r#"{"root_cause_service":"redis","verdict":"confirmed","operator":"ana","note":"maxmemory"}"#;
    let (status, body) = server.post("/incidents/inc-1/feedback", confirm).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ranked"], 1);
    assert_eq!(body["history"]["confirmed_by"], "ana");
    let reject = r#"{"root_cause_service":"db","verdict":"rejected","operator":"bo"}"#;
    assert_eq!(
        server.post("/incidents/inc-2/feedback", reject).await.0,
        201
    );

    let (status, history) = server.get_json("/history?service=redis").await;
    assert_eq!(status, 200);
    let records = history.as_array().unwrap();
    assert_eq!(
        records.len(),
        1,
        "rejected feedback is not history: {history}"
    );
    let r = &records[0];
    assert_eq!(r["incident_id"], "inc-1");
    assert_eq!(r["environment"], "prod");
    assert_eq!(r["root_cause_service"], "redis");
    assert_eq!(r["started_at"], 100 * NANOS_PER_SEC);
    assert_eq!(r["summary"], "incident inc-1");
    assert_eq!(r["evidence_signals"], json!(["span.error:GET"]));
    assert_eq!(r["note"], "maxmemory");
    assert_eq!(server.get_json("/history?service=db").await.1, json!([]));

    // The open incident on the same services finds it, through the API and the trait.
    let (status, similar) = server.get_json("/incidents/inc-3/similar").await;
    assert_eq!(status, 200);
    assert_eq!(similar[0]["incident_id"], "inc-1");
    let store = server.state.feedback();
    let found = store
        .similar("prod", &["redis".to_string()], 5)
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| r.incident_id.as_str())
            .collect::<Vec<_>>(),
        ["inc-1"]
    );
    assert!(store
        .similar("prod", &["payments".to_string()], 5)
        .await
        .unwrap()
        .is_empty());

    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"culprit_feedback_total{verdict="confirmed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"culprit_feedback_total{verdict="rejected"} 1"#),
        "{text}"
    );
}
