//! What the API tests share: a server on 127.0.0.1:0 spoken to over real HTTP, tokens, alerts
//! and an in-memory stand-in for the detectors' baselines.
#![allow(dead_code)]

use culprit_api::{
    serve, ApiConfig, ApiState, BaselineError, BaselineView, Bucket, BucketThresholds,
    RecalcOutcome, RecalcRange, SignalBaseline, Threshold, Tokens,
};
use culprit_core::{
    Anomaly, CausalGraph, EdgeKind, GraphEdge, GraphNode, IncidentStatus, RcaAlert, RootCause,
    Severity, SourceKind, NANOS_PER_SEC,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

pub const WRITER: &str = "writer-secret-0123456789";
pub const READER: &str = "reader-secret-0123456789";

/// `ana` may write, `viewer` may only read.
pub fn tokens() -> Tokens {
    Tokens::parse(&format!("ana:write:{WRITER}\nviewer:read:{READER}"), "test").unwrap()
}

pub fn state() -> ApiState {
    ApiState::new(
        ApiConfig {
            readiness_timeout_ms: 200,
            ..ApiConfig::default()
        },
        tokens(),
    )
    .unwrap()
}

pub struct Server {
    pub base: String,
    pub state: ApiState,
    pub http: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(state: ApiState) -> Server {
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

    /// A request with `token` as bearer (none when `None`).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        request.send().await.unwrap()
    }

    /// GET with the read-only token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, Some(READER), None)
            .await
    }

    /// GET with the read-only token, as JSON.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// POST with the write token, as JSON.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_as(WRITER, path, body).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .send(reqwest::Method::POST, path, Some(token), Some(body))
            .await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.send(reqwest::Method::GET, "/metrics", None, None)
            .await
            .text()
            .await
            .unwrap()
    }
}

pub fn anomaly(service: &str, signal: &str) -> Anomaly {
    Anomaly {
        id: format!("{service}:{signal}"),
        time: 0,
        source: if signal.starts_with("change:") {
            SourceKind::Changes
        } else {
            SourceKind::Traces
        },
        service: service.into(),
        environment: "prod".into(),
        instance: None,
        signal: signal.into(),
        description: format!("{signal} on {service}"),
        severity: Severity::Sev2,
        score: 0.9,
        observed: None,
        expected: None,
    }
}

/// An incident in `prod` whose candidates are `causes` (service, signal) in rank order, all
/// explaining `frontend`; the graph holds every candidate and `frontend`.
pub fn alert(
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
    let nodes = services
        .iter()
        .map(|s| GraphNode {
            service: s.clone(),
            evidence_score: 0.5,
            severity: Some(Severity::Sev2),
            rank: causes.iter().position(|(c, _)| c == s).map(|i| i + 1),
        })
        .collect();
    let edges = causes
        .iter()
        .map(|(s, _)| GraphEdge {
            from: s.to_string(),
            to: "frontend".into(),
            kind: EdgeKind::Dependency,
            weight: 0.8,
        })
        .collect();
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
        graph: CausalGraph { nodes, edges },
        anomaly_count: causes.len(),
        affected_services: BTreeMap::from([(SourceKind::Traces, services)]),
        llm_review: None,
        similar_incidents: Vec::new(),
    }
}

/// One recalculation the stand-in was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RecalcCall {
    pub service: String,
    pub source: Option<SourceKind>,
    pub range: RecalcRange,
}

/// Baselines held in memory, as a detector would report them; a recalculation empties the
/// service's buckets, the way forgetting does.
#[derive(Debug, Default)]
pub struct FakeBaselines {
    pub baselines: Mutex<Vec<(String, SignalBaseline)>>,
    pub calls: Mutex<Vec<RecalcCall>>,
}

impl FakeBaselines {
    /// `checkout` with latency baselines over 24 hour-of-day buckets and a global one, and
    /// `cart` with one error-rate baseline.
    pub fn shop() -> FakeBaselines {
        let hour = 3600 * NANOS_PER_SEC;
        let learned = 1_767_225_600 * NANOS_PER_SEC; // 2026-01-01T00:00:00Z
        let thresholds = |base: f64| {
            Severity::ALL
                .iter()
                .enumerate()
                .map(|(i, s)| Threshold {
                    severity: *s,
                    above: Some(base * (3.0 - 0.4 * i as f64)),
                    below: None,
                })
                .collect::<Vec<_>>()
        };
        let latency = SignalBaseline {
            source: SourceKind::Traces,
            environment: "prod".into(),
            signal: "span.latency:POST /checkout".into(),
            samples: 24 * 512,
            learned_at: Some(learned + 23 * hour),
            recalculated_at: None,
            buckets: (0..24u8)
                .map(|h| BucketThresholds {
                    bucket: Bucket::HourOfDay { hour: h },
                    samples: 512,
                    median: 120.0 + f64::from(h) * 5.0,
                    thresholds: thresholds(120.0 + f64::from(h) * 5.0),
                    learned_at: Some(learned + i64::from(h) * hour),
                })
                .chain([BucketThresholds {
                    bucket: Bucket::Global,
                    samples: 512,
                    median: 180.0,
                    thresholds: thresholds(180.0),
                    learned_at: Some(learned + 23 * hour),
                }])
                .collect(),
        };
        let errors = SignalBaseline {
            source: SourceKind::Logs,
            environment: "prod".into(),
            signal: "log.error_rate".into(),
            samples: 300,
            learned_at: Some(learned),
            recalculated_at: None,
            buckets: vec![BucketThresholds {
                bucket: Bucket::Global,
                samples: 300,
                median: 0.5,
                thresholds: thresholds(0.5),
                learned_at: Some(learned),
            }],
        };
        FakeBaselines {
            baselines: Mutex::new(vec![("checkout".into(), latency), ("cart".into(), errors)]),
            calls: Mutex::default(),
        }
    }

    pub fn calls(&self) -> Vec<RecalcCall> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl BaselineView for FakeBaselines {
    async fn services(&self) -> Result<Vec<String>, BaselineError> {
        let mut s: Vec<String> = self
            .baselines
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect();
        s.sort();
        s.dedup();
        Ok(s)
    }

    async fn baselines(&self, service: &str) -> Result<Vec<SignalBaseline>, BaselineError> {
        Ok(self
            .baselines
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, b)| b.clone())
            .collect())
    }

    async fn recalculate(
        &self,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
    ) -> Result<RecalcOutcome, BaselineError> {
        self.calls.lock().unwrap().push(RecalcCall {
            service: service.to_string(),
            source,
            range,
        });
        let mut all = self.baselines.lock().unwrap();
        let mut reset = 0;
        for (s, b) in all.iter_mut() {
            if s == service && source.is_none_or(|src| src == b.source) {
                b.buckets.clear();
                b.samples = 0;
                reset += 1;
            }
        }
        if reset == 0 {
            return Err(BaselineError::UnknownService(service.to_string()));
        }
        Ok(RecalcOutcome {
            baselines: reset,
            detail: format!("{reset} baselines of {service} forgotten (test double)"),
        })
    }
}
