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
    /// What the optional LLM agent (`culprit-agent`) made of this incident; absent on every
    /// deterministic revision. A reviewed alert is the next revision of the one it reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_review: Option<LlmReview>,
    /// Past incidents most like this one, with the cause an operator confirmed for each, best
    /// first (at most three); filled when the alert is published, from the feedback history
    /// ([`PastIncidents`]), and absent when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub similar_incidents: Vec<SimilarIncident>,
}

/// A resolved past incident like the one an alert describes, and what its cause turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarIncident {
    pub incident_id: String,
    pub started_at: UnixNanos,
    pub summary: String,
    /// The cause an operator confirmed: a service, or `other: <text>`.
    pub confirmed_cause: String,
    /// How alike the two incidents' evidence is, in [0, 1]. Past incidents come from the alert's
    /// environment, except records from before evidence profiles (0.5 at most for another one).
    pub similarity: f64,
}

/// Where published alerts find their similar past incidents: the operators' feedback history.
/// Synchronous, since it is asked on the correlator's path for every published revision; an
/// implementation answers from memory.
pub trait PastIncidents: Send + Sync {
    /// The `limit` confirmed past incidents most like `alert`, best first, never `alert` itself.
    fn most_similar(&self, alert: &RcaAlert, limit: usize) -> Vec<SimilarIncident>;
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

/// The LLM agent's review of a ranking: how it went and what it changed.
///
/// The ranking it sits beside is already the merged one; `rank_changes` says what moved. Anything
/// other than [`LlmReviewStatus::Reviewed`] means the deterministic ranking stands unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmReview {
    pub status: LlmReviewStatus,
    /// Why the review ended the way it did, in a few words (an error, the limit that was hit).
    pub detail: Option<String>,
    /// The revision of the deterministic alert that was reviewed.
    pub reviewed_revision: u32,
    pub model: String,
    /// `tools`, `json_schema` or `prompt-only`.
    pub mode: String,
    /// Chat-completion calls made.
    pub steps: u32,
    /// Tool calls the model asked for (including duplicates and invalid ones).
    pub tool_calls: u32,
    /// Tool calls identical to an earlier one, answered without running the tool again.
    pub duplicate_tool_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wall-clock time of the review, milliseconds.
    pub latency_ms: u64,
    /// The limit that ended the tool loop and forced a final verdict call, if any:
    /// `tool_calls`, `tokens` or `deadline`.
    pub limit_hit: Option<String>,
    /// Verdicts that passed validation, in the order the model gave them.
    pub verdicts: Vec<LlmVerdict>,
    /// Verdicts dropped for naming a service outside the graph, citing evidence no tool
    /// returned, or repeating a service.
    pub dropped_verdicts: u32,
    /// Candidates whose place changed, best first by their new rank.
    pub rank_changes: Vec<RankChange>,
    /// The model's own explanation. Not checked against anything: read it as a hint.
    pub unverified_rationale: Option<String>,
}

/// How a review ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmReviewStatus {
    /// Verdicts were merged into the ranking (which may still be unchanged).
    Reviewed,
    /// The model answered but gave no usable verdict.
    Inconclusive,
    /// `llm.mode = "prompt-only"`: the requests were written, nothing was sent.
    PromptOnly,
    /// A call or the whole review ran out of time.
    Timeout,
    /// The endpoint could not be reached.
    Unreachable,
    /// The endpoint answered with an error status.
    EndpointError,
    /// The endpoint's answer was not a chat completion culprit could read.
    InvalidResponse,
    /// Recent reviews failed repeatedly; this one was not attempted.
    CircuitOpen,
}

impl LlmReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmReviewStatus::Reviewed => "reviewed",
            LlmReviewStatus::Inconclusive => "inconclusive",
            LlmReviewStatus::PromptOnly => "prompt_only",
            LlmReviewStatus::Timeout => "timeout",
            LlmReviewStatus::Unreachable => "unreachable",
            LlmReviewStatus::EndpointError => "endpoint_error",
            LlmReviewStatus::InvalidResponse => "invalid_response",
            LlmReviewStatus::CircuitOpen => "circuit_open",
        }
    }
}

/// The model's judgement of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmVerdict {
    pub service: String,
    pub verdict: VerdictKind,
    /// The model's confidence in [0, 1].
    pub confidence: f64,
    /// The evidence it cites: anomaly ids, or `template:`, `metric:`, `past:` references to
    /// what a tool returned.
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Supports,
    Refutes,
    Insufficient,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Supports => "supports",
            VerdictKind::Refutes => "refutes",
            VerdictKind::Insufficient => "insufficient",
        }
    }
}

/// A candidate that moved when the verdicts were merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankChange {
    pub service: String,
    pub from_rank: usize,
    pub to_rank: usize,
    pub score_before: f64,
    pub score_after: f64,
}
