//! A realistic alert shared by the integration tests: a bad cartservice deployment in an
//! online shop, felt by checkout and the frontend.
#![allow(dead_code)] // each test binary uses a different part

use culprit_core::{
    Anomaly, CausalGraph, EdgeKind, GraphEdge, GraphNode, IncidentStatus, RcaAlert, RootCause,
    Severity, SourceKind, NANOS_PER_SEC,
};
use std::collections::BTreeMap;

pub const T0: i64 = 1_714_564_800 * NANOS_PER_SEC; // 2024-05-01T12:00:00Z

#[allow(clippy::too_many_arguments)]
fn anomaly(
    id: &str,
    secs: i64,
    source: SourceKind,
    service: &str,
    signal: &str,
    description: &str,
    severity: Severity,
    score: f64,
    values: Option<(f64, f64)>,
) -> Anomaly {
    Anomaly {
        id: id.into(),
        time: T0 + secs * NANOS_PER_SEC,
        source,
        service: service.into(),
        environment: "prod".into(),
        instance: (source != SourceKind::Changes).then(|| format!("{service}-7d9f8b6c4-x2k9p")),
        signal: signal.into(),
        description: description.into(),
        severity,
        score,
        observed: values.map(|v| v.0),
        expected: values.map(|v| v.1),
    }
}

fn node(
    service: &str,
    evidence: f64,
    severity: Option<Severity>,
    rank: Option<usize>,
) -> GraphNode {
    GraphNode {
        service: service.into(),
        evidence_score: evidence,
        severity,
        rank,
    }
}

fn edge(from: &str, to: &str, kind: EdgeKind, weight: f64) -> GraphEdge {
    GraphEdge {
        from: from.into(),
        to: to.into(),
        kind,
        weight,
    }
}

#[allow(clippy::too_many_arguments)]
fn cause(
    rank: usize,
    service: &str,
    score: f64,
    evidence_score: f64,
    evidence: Vec<Anomaly>,
    by_source: &[(SourceKind, f64)],
    chain: &[&str],
    explanation: &str,
) -> RootCause {
    RootCause {
        rank,
        service: service.into(),
        score,
        evidence_score,
        pagerank: (score * 1.1).min(1.0),
        evidence,
        evidence_by_source: by_source.iter().copied().collect(),
        chain: chain.iter().map(|s| s.to_string()).collect(),
        explanation: explanation.into(),
    }
}

pub fn alert() -> RcaAlert {
    use SourceKind::*;
    let cart_evidence = vec![
        anomaly("a2", 40, Traces, "cartservice", "span.latency:GetCart", "p99 latency of GetCart 1840 ms against a baseline of 95 ms", Severity::Sev1, 0.97, Some((1840.0, 95.0))),
        anomaly("a3", 55, Logs, "cartservice", "log.new_template:E17", "new error template: Can't access cart storage. StackExchange.Redis.RedisTimeoutException <*>", Severity::Sev1, 0.93, None),
        anomaly("a1", 0, Changes, "cartservice", "change:deployment", "cartservice deployed v2.3.1 (was v2.3.0)", Severity::Sev2, 0.9, None),
        anomaly("a4", 70, Metrics, "cartservice", "metric:CpuUsageRate(%)", "CPU usage 94% against a baseline of 31%", Severity::Sev3, 0.61, Some((94.0, 31.0))),
    ];
    let checkout_evidence = vec![anomaly(
        "a5",
        65,
        Traces,
        "checkoutservice",
        "span.error_rate:PlaceOrder",
        "error rate of PlaceOrder 38% against a baseline of 0.2%",
        Severity::Sev2,
        0.81,
        Some((0.38, 0.002)),
    )];
    let frontend_evidence = vec![
        anomaly(
            "a6",
            80,
            Traces,
            "frontend",
            "span.error_rate:POST /cart/checkout",
            "error rate of POST /cart/checkout 35% against a baseline of 0.1%",
            Severity::Sev2,
            0.78,
            Some((0.35, 0.001)),
        ),
        anomaly(
            "a7",
            95,
            Logs,
            "frontend",
            "log.level_burst:ERROR",
            "ERROR logs 412/min against a baseline of 3/min",
            Severity::Sev3,
            0.55,
            Some((412.0, 3.0)),
        ),
    ];
    let redis_evidence = vec![anomaly(
        "a8",
        50,
        Metrics,
        "redis-cart",
        "metric:ConnectedClients",
        "connected clients 512 against a baseline of 40",
        Severity::Sev3,
        0.47,
        Some((512.0, 40.0)),
    )];
    let payment_evidence = vec![anomaly(
        "a9",
        120,
        Metrics,
        "paymentservice",
        "metric:MemoryUsage(MB)",
        "memory 310 MB against a baseline of 280 MB",
        Severity::Sev5,
        0.15,
        Some((310.0, 280.0)),
    )];

    let root_causes = vec![
        cause(1, "cartservice", 0.91, 0.92, cart_evidence, &[(Traces, 0.97), (Logs, 0.93), (Metrics, 0.61), (Changes, 0.9)], &["cartservice", "checkoutservice", "frontend"], "cartservice was deployed 40 s before its own latency and errors began, and explains the errors of checkoutservice and frontend."),
        cause(2, "redis-cart", 0.52, 0.41, redis_evidence, &[(Metrics, 0.47)], &["redis-cart", "cartservice", "checkoutservice", "frontend"], "redis-cart is called by cartservice, but its anomaly is weaker and later than cartservice's deployment."),
        cause(3, "checkoutservice", 0.38, 0.55, checkout_evidence, &[(Traces, 0.81)], &["checkoutservice", "frontend"], "checkoutservice errors are explained by its dependency cartservice."),
        cause(4, "frontend", 0.21, 0.48, frontend_evidence, &[(Traces, 0.78), (Logs, 0.55)], &["frontend"], "frontend shows symptoms only; every anomaly follows one of its dependencies."),
        cause(5, "paymentservice", 0.07, 0.12, payment_evidence, &[(Metrics, 0.15)], &["paymentservice", "checkoutservice", "frontend"], "paymentservice drifted slightly and explains nothing else."),
        cause(6, "productcatalogservice", 0.04, 0.0, vec![], &[], &["productcatalogservice", "frontend"], "productcatalogservice has no anomaly of its own."),
    ];

    let graph = CausalGraph {
        nodes: vec![
            node("frontend", 0.48, Some(Severity::Sev2), Some(4)),
            node("checkoutservice", 0.55, Some(Severity::Sev2), Some(3)),
            node("cartservice", 0.92, Some(Severity::Sev1), Some(1)),
            node("redis-cart", 0.41, Some(Severity::Sev3), Some(2)),
            node("paymentservice", 0.12, Some(Severity::Sev5), Some(5)),
            node("productcatalogservice", 0.0, None, Some(6)),
            node("currencyservice", 0.0, None, None),
        ],
        edges: vec![
            edge("redis-cart", "cartservice", EdgeKind::Dependency, 0.7),
            edge("cartservice", "checkoutservice", EdgeKind::Dependency, 0.9),
            edge("cartservice", "checkoutservice", EdgeKind::Change, 0.6),
            edge("cartservice", "frontend", EdgeKind::Dependency, 0.8),
            edge("checkoutservice", "frontend", EdgeKind::Dependency, 0.85),
            edge(
                "paymentservice",
                "checkoutservice",
                EdgeKind::Dependency,
                0.3,
            ),
            edge(
                "currencyservice",
                "checkoutservice",
                EdgeKind::Dependency,
                0.2,
            ),
            edge("currencyservice", "frontend", EdgeKind::Dependency, 0.2),
            edge(
                "productcatalogservice",
                "frontend",
                EdgeKind::Dependency,
                0.4,
            ),
            edge("cartservice", "cartservice", EdgeKind::SameService, 0.5),
        ],
    };

    let mut affected_services = BTreeMap::new();
    affected_services.insert(
        Traces,
        vec![
            "cartservice".into(),
            "checkoutservice".into(),
            "frontend".into(),
        ],
    );
    affected_services.insert(Logs, vec!["cartservice".into(), "frontend".into()]);
    affected_services.insert(
        Metrics,
        vec![
            "cartservice".into(),
            "paymentservice".into(),
            "redis-cart".into(),
        ],
    );
    affected_services.insert(Changes, vec!["cartservice".into()]);

    RcaAlert {
        schema_version: 1,
        incident_id: "prod-cartservice-1714564800".into(),
        revision: 3,
        status: IncidentStatus::Open,
        environment: "prod".into(),
        started_at: T0,
        updated_at: T0 + 330 * NANOS_PER_SEC,
        severity: Severity::Sev1,
        confidence: 0.82,
        summary: "SEV1 in prod: cartservice (deployed v2.3.1) is the most likely cause of errors in checkoutservice and frontend".into(),
        root_causes,
        graph,
        anomaly_count: 37,
        affected_services,
        llm_review: None,
        similar_incidents: Vec::new(),
    }
}

/// Renames a service everywhere the graph and the ranking mention it.
pub fn rename_service(alert: &mut RcaAlert, from: &str, to: &str) {
    let swap = |s: &mut String| {
        if s == from {
            *s = to.to_string();
        }
    };
    for n in &mut alert.graph.nodes {
        swap(&mut n.service);
    }
    for e in &mut alert.graph.edges {
        swap(&mut e.from);
        swap(&mut e.to);
    }
    for c in &mut alert.root_causes {
        swap(&mut c.service);
        for s in &mut c.chain {
            swap(s);
        }
    }
}
