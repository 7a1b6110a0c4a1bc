//! A small, fixed incident for tests and examples: `payment` fails, `checkout` (its caller) and
//! `frontend` (checkout's caller) show the symptoms, `cart` is noise, and `payment` was deployed
//! two minutes before. Ranked payment, checkout, frontend, cart with confidence 0.42.

use crate::evidence::IncidentEvidence;
use culprit_core::{
    Anomaly, CausalGraph, EdgeKind, Event, EventBody, GraphEdge, GraphNode, IncidentStatus,
    LogEvent, LogLevel, MetricPoint, RcaAlert, Resource, RootCause, Severity, SourceKind,
    UnixNanos, NANOS_PER_SEC,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Event time of the incident's first anomaly.
pub const START: UnixNanos = 1_700_000_000 * NANOS_PER_SEC;

fn anomaly(
    service: &str,
    source: SourceKind,
    signal: &str,
    severity: Severity,
    offset_s: i64,
    description: &str,
) -> Anomaly {
    Anomaly {
        id: format!(
            "{:016x}",
            culprit_core::hash::Fnv1a::of(format!("{service}{signal}{offset_s}").as_bytes())
        ),
        time: START + offset_s * NANOS_PER_SEC,
        source,
        service: service.into(),
        environment: "prod".into(),
        instance: None,
        signal: signal.into(),
        description: description.into(),
        severity,
        score: 0.9,
        observed: None,
        expected: None,
    }
}

/// The incident's anomalies, changes included.
pub fn anomalies() -> Vec<Anomaly> {
    vec![
        anomaly(
            "payment",
            SourceKind::Changes,
            "change:deployment",
            Severity::Sev3,
            -120,
            "deploy payment v2.4.0",
        ),
        anomaly(
            "payment",
            SourceKind::Traces,
            "span.errors",
            Severity::Sev1,
            0,
            "42 of 60 spans failed (expected 0.5)",
        ),
        anomaly(
            "payment",
            SourceKind::Logs,
            "log.new_template:E3",
            Severity::Sev1,
            2,
            "new ERROR log template: ERROR card processor rejected request <*>",
        ),
        anomaly(
            "checkout",
            SourceKind::Traces,
            "span.errors",
            Severity::Sev2,
            5,
            "failed calls into payment",
        ),
        anomaly(
            "frontend",
            SourceKind::Traces,
            "span.latency:GET /checkout",
            Severity::Sev3,
            10,
            "p99 latency 2.1 s (expected 0.3 s)",
        ),
        anomaly(
            "cart",
            SourceKind::Metrics,
            "metric:cpu",
            Severity::Sev4,
            30,
            "cpu 61% (expected 40%)",
        ),
    ]
}

fn cause(
    rank: usize,
    service: &str,
    score: f64,
    evidence: Vec<Anomaly>,
    chain: &[&str],
) -> RootCause {
    RootCause {
        rank,
        service: service.into(),
        score,
        evidence_score: score,
        pagerank: score,
        evidence,
        evidence_by_source: BTreeMap::new(),
        chain: chain.iter().map(|s| s.to_string()).collect(),
        explanation: format!("{service} ranks {rank}"),
    }
}

/// The deterministic alert of the incident.
pub fn alert() -> RcaAlert {
    let all = anomalies();
    let of = |s: &str| -> Vec<Anomaly> { all.iter().filter(|a| a.service == s).cloned().collect() };
    let root_causes = vec![
        cause(
            1,
            "payment",
            0.80,
            of("payment"),
            &["payment", "checkout", "frontend"],
        ),
        cause(
            2,
            "checkout",
            0.70,
            of("checkout"),
            &["checkout", "frontend"],
        ),
        cause(3, "frontend", 0.40, of("frontend"), &["frontend"]),
        cause(
            4,
            "cart",
            0.20,
            of("cart"),
            &["cart", "checkout", "frontend"],
        ),
    ];
    let node = |s: &str, e: f64, rank| GraphNode {
        service: s.into(),
        evidence_score: e,
        severity: Some(Severity::Sev2),
        rank: Some(rank),
    };
    let edge = |from: &str, to: &str, kind| GraphEdge {
        from: from.into(),
        to: to.into(),
        kind,
        weight: 1.0,
    };
    RcaAlert {
        schema_version: 1,
        incident_id: format!("inc-{}-test0001", START / NANOS_PER_SEC),
        revision: 1,
        status: IncidentStatus::Open,
        environment: "prod".into(),
        started_at: START,
        updated_at: START + 30 * NANOS_PER_SEC,
        severity: Severity::Sev1,
        confidence: 0.42,
        summary: "SEV1 in prod: payment is the likely root cause (6 anomalies across 4 services, confidence 42%)".into(),
        root_causes,
        graph: CausalGraph {
            nodes: vec![
                node("payment", 0.8, 1),
                node("checkout", 0.7, 2),
                node("frontend", 0.4, 3),
                node("cart", 0.2, 4),
            ],
            edges: vec![
                edge("payment", "checkout", EdgeKind::Dependency),
                edge("cart", "checkout", EdgeKind::Dependency),
                edge("checkout", "frontend", EdgeKind::Dependency),
            ],
        },
        anomaly_count: all.len(),
        affected_services: BTreeMap::new(),
        llm_review: None,
        similar_incidents: Vec::new(),
    }
}

/// A log line of `service` at `offset_s` seconds from the incident start.
pub fn log(service: &str, offset_s: i64, level: LogLevel, body: &str) -> Event {
    Event {
        time: START + offset_s * NANOS_PER_SEC,
        resource: Arc::new(Resource::new(service).with_environment("prod")),
        body: EventBody::Log(LogEvent {
            level: Some(level),
            body: body.into(),
            trace_id: None,
            span_id: None,
            attributes: BTreeMap::new(),
            template: None,
        }),
    }
}

/// A metric point of `service`.
pub fn metric(service: &str, offset_s: i64, name: &str, value: f64) -> Event {
    Event {
        time: START + offset_s * NANOS_PER_SEC,
        resource: Arc::new(Resource::new(service).with_environment("prod")),
        body: EventBody::Metric(MetricPoint {
            name: name.into(),
            value,
            attributes: BTreeMap::new(),
        }),
    }
}

/// Ordinary logs and a CPU series around the incident.
pub fn events() -> Vec<Event> {
    let mut events = Vec::new();
    for s in (-240..60).step_by(5) {
        events.push(log(
            "checkout",
            s,
            LogLevel::Info,
            &format!("order {s} placed in 12 ms"),
        ));
        events.push(metric("cart", s, "cpu", if s >= 30 { 61.0 } else { 40.0 }));
    }
    for s in (0..30).step_by(3) {
        events.push(log(
            "payment",
            s,
            LogLevel::Error,
            &format!("card processor rejected request {s}"),
        ));
    }
    events
}

/// The incident's evidence with its anomalies and events.
pub fn incident() -> IncidentEvidence {
    IncidentEvidence::from_alert(alert())
        .with_anomalies(&anomalies())
        .with_events(&events())
}
