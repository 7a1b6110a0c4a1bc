//! A local stand-in for `events.pagerduty.com` that checks each request against the Events API
//! v2 rules and answers like PagerDuty does; tests script failures per request.

#![allow(dead_code)] // each test binary uses a different part of this module

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use culprit_core::{
    Anomaly, CausalGraph, IncidentStatus, RcaAlert, RootCause, Severity, SourceKind, NANOS_PER_SEC,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const ROUTING_KEY: &str = "R0123456789abcdef0123456789abcde";

/// One scripted answer; when the script is empty the server accepts valid events with 202.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub body: Value,
    /// Why the body is not a valid Events API v2 event, if it is not.
    pub invalid: Vec<String>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

#[derive(Clone, Default)]
pub struct FakePagerDuty {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakePagerDuty {
    pub async fn start() -> FakePagerDuty {
        let mut fake = FakePagerDuty::default();
        let app = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Every request must have been a valid event, whatever the server answered.
    pub fn assert_all_valid(&self) {
        for r in self.received() {
            assert!(
                r.invalid.is_empty(),
                "invalid event {:?}: {}",
                r.invalid,
                r.body
            );
        }
    }

    pub fn actions(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.body["event_action"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

pub fn reply(status: u16) -> Reply {
    let body = match status {
        400 => {
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["scripted"]})
        }
        429 => {
            json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly."})
        }
        _ => json!({"status": "error", "message": "scripted failure"}),
    };
    Reply {
        status,
        retry_after: None,
        body,
    }
}

async fn enqueue(State(fake): State<FakePagerDuty>, headers: HeaderMap, body: String) -> Response {
    let json_content = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed: Result<Value, _> = serde_json::from_str(&body);
    let (value, mut invalid) = match parsed {
        Ok(v) => {
            let errors = validate(&v);
            (v, errors)
        }
        Err(e) => (Value::Null, vec![format!("body is not JSON: {e}")]),
    };
    if !json_content {
        invalid.push("content-type is not application/json".into());
    }
    let scripted = {
        let mut inner = fake.inner.lock().unwrap();
        inner.received.push(Received {
            at: Instant::now(),
            body: value.clone(),
            invalid: invalid.clone(),
        });
        inner.script.pop_front()
    };
    if let Some(r) = scripted {
        let mut response = (StatusCode::from_u16(r.status).unwrap(), Json(r.body)).into_response();
        if let Some(ra) = r.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static(ra));
        }
        return response;
    }
    if !invalid.is_empty() {
        let body = json!({"status": "invalid event", "message": "Event object is invalid", "errors": invalid});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let body =
        json!({"status": "success", "message": "Event processed", "dedup_key": value["dedup_key"]});
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The Events API v2 rules PagerDuty enforces on an event.
fn validate(v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let str_of = |v: &Value| v.as_str().map(str::to_string);
    match str_of(&v["routing_key"]) {
        Some(k) if k.len() == 32 => {}
        other => errors.push(format!("routing_key must be 32 characters, got {other:?}")),
    }
    let action = str_of(&v["event_action"]).unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action.as_str()) {
        errors.push(format!(
            "event_action {action:?} is not trigger, acknowledge or resolve"
        ));
    }
    match str_of(&v["dedup_key"]) {
        Some(k) if !k.is_empty() && k.len() <= 255 => {}
        other => errors.push(format!("dedup_key missing or too long: {other:?}")),
    }
    if action == "trigger" {
        let p = &v["payload"];
        match str_of(&p["summary"]) {
            Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
            other => errors.push(format!(
                "payload.summary missing or longer than 1024: {:?}",
                other.map(|s| s.len())
            )),
        }
        if str_of(&p["source"]).is_none_or(|s| s.is_empty()) {
            errors.push("payload.source is required".into());
        }
        let severity = str_of(&p["severity"]).unwrap_or_default();
        if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
            errors.push(format!("payload.severity {severity:?} is invalid"));
        }
        if let Some(ts) = p.get("timestamp") {
            if ts.as_str().is_none_or(|t| chrono_like_rfc3339(t).is_none()) {
                errors.push(format!("payload.timestamp {ts} is not ISO 8601"));
            }
        }
        if let Some(links) = v.get("links") {
            let ok = links
                .as_array()
                .is_some_and(|ls| ls.iter().all(|l| l["href"].is_string()));
            if !ok {
                errors.push("links must be [{href, text}]".into());
            }
        }
    }
    errors
}

/// Enough of RFC 3339 to catch a wrong format: `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
fn chrono_like_rfc3339(t: &str) -> Option<()> {
    let b = t.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (t.ends_with('Z') || t[t.len() - 6..].starts_with(['+', '-']));
    ok.then_some(())
}

pub fn anomaly(service: &str, signal: &str, severity: Severity) -> Anomaly {
    Anomaly {
        id: format!("{service}-{signal}"),
        time: 1_700_000_000 * NANOS_PER_SEC,
        source: SourceKind::Traces,
        service: service.into(),
        environment: "prod".into(),
        instance: None,
        signal: signal.into(),
        description: format!("{signal} on {service} left its baseline"),
        severity,
        score: 0.9,
        observed: Some(950.0),
        expected: Some(120.0),
    }
}

pub fn alert(
    id: &str,
    revision: u32,
    status: IncidentStatus,
    severity: Severity,
    top: &str,
) -> RcaAlert {
    let cause = |rank: usize, service: &str| RootCause {
        rank,
        service: service.into(),
        score: 1.0 / rank as f64,
        evidence_score: 0.8,
        pagerank: 0.7,
        evidence: vec![anomaly(service, "span.latency:GET /cart", severity)],
        evidence_by_source: BTreeMap::from([(SourceKind::Traces, 0.8)]),
        chain: vec![service.into(), "frontend".into()],
        explanation: format!("{service} is anomalous and its callers are too"),
    };
    let other = if top == "cartservice" {
        "redis"
    } else {
        "cartservice"
    };
    RcaAlert {
        schema_version: 1,
        incident_id: id.into(),
        revision,
        status,
        environment: "prod".into(),
        started_at: 1_700_000_000 * NANOS_PER_SEC + 123_000_000,
        updated_at: 1_700_000_060 * NANOS_PER_SEC,
        severity,
        confidence: 0.8,
        summary: format!("{severity} in prod: {top} is the likely root cause"),
        root_causes: vec![cause(1, top), cause(2, other)],
        graph: CausalGraph::default(),
        anomaly_count: 4,
        affected_services: BTreeMap::from([(
            SourceKind::Traces,
            vec![top.to_string(), other.to_string()],
        )]),
        llm_review: None,
        similar_incidents: Vec::new(),
    }
}
