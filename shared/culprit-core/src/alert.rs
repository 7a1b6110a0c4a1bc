use crate::{Anomaly, Severity, SourceKind, UnixNanos};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The product of culprit: one incident with its ranked root-cause candidates.
///
/// Serialised as JSON it is the RCA alert of `schemas/rca-alert.json`, published on
/// `culprit.alerts`, written to JSONL files and sent (abridged) to PagerDuty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RcaAlert {
    /// Always `1` for this layout; bumped on incompatible changes.
    pub schema_version: u32,
    /// Stable for the life of the incident; PagerDuty's dedup key.
    pub incident_id: String,
    /// Increases each time the incident is republished with a changed ranking.
    pub revision: u32,
    pub status: IncidentStatus,
    pub environment: String,
    /// Event time of the first and the latest anomaly in the incident.
    pub started_at: UnixNanos,
    pub updated_at: UnixNanos,
    /// The worst severity among the incident's anomalies.
    pub severity: Severity,
    /// How sure the ranking is of its first candidate, in [0, 1].
    pub confidence: f64,
    /// One line a person can read.
    pub summary: String,
    /// Candidates, best first (at least five when the incident touches that many services).
    pub root_causes: Vec<RootCause>,
    /// The causal graph the ranking ran on.
    pub graph: CausalGraph,
    pub anomaly_count: usize,
    /// Services whose anomalies are in the incident, by source.
    pub affected_services: BTreeMap<SourceKind, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub rank: usize,
    pub service: String,
    /// Fused score in [0, 1]; candidates are sorted by it.
    pub score: f64,
    /// The service's own anomaly evidence in [0, 1] (before propagation).
    pub evidence_score: f64,
    /// Its personalised PageRank in [0, 1] (normalised to the best service).
    pub pagerank: f64,
    /// The strongest anomalies of this service, worst first (a handful, not all).
    pub evidence: Vec<Anomaly>,
    /// Evidence strength per source.
    pub evidence_by_source: BTreeMap<SourceKind, f64>,
    /// From this cause to the symptoms it explains: `[cause, caller, caller's caller, ...]`.
    pub chain: Vec<String>,
    /// Why this service ranks where it does, in a sentence.
    pub explanation: String,
}

/// Nodes are services; an edge `from -> to` means "a fault in `from` can explain symptoms in `to`".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CausalGraph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub service: String,
    /// Evidence in [0, 1]; 0 for services on a path with no anomaly of their own.
    pub evidence_score: f64,
    pub severity: Option<Severity>,
    /// Rank among root causes, when the service is one of them.
    pub rank: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Learned from trace parent/child spans: callee -> caller.
    Dependency,
    /// A change precedes everything later on the same or a dependent service.
    Change,
    /// Metrics -> traces -> logs on one service, collapsed to the service node.
    SameService,
}
