//! The HTTP operations API every culprit service exposes, and the on-call dashboard.
//!
//! Open to anyone who can reach the port: `GET /healthz` (liveness), `GET /readyz` (every
//! registered readiness check passes), `GET /metrics` (Prometheus, OpenMetrics text) and the
//! dashboard's page shell `GET /` with its static assets under `/ui/assets/`.
//!
//! Everything else needs a bearer token ([`auth`]): a read-scoped one for the incidents
//! (`GET /incidents[?status=&severity=&environment=&service=&limit=]`, `GET /incidents/{id}`,
//! `GET /incidents/{id}/similar`, `GET /incidents/{id}/feedback`, `GET /incidents/events`), the
//! history (`GET /history`), the baselines (`GET /baselines`, `GET /baselines/{service}`), the
//! dashboard's HTML fragments (`GET /ui/...`) and `GET /whoami`; a write-scoped one for
//! `POST /incidents/{id}/feedback` and `POST /baselines/{service}/recalculate`. The latter's body
//! is empty or `{}` to forget and re-learn from now on, or `{"from": "<RFC 3339>", "to": "<RFC
//! 3339>"}` to replace the service's baselines with what the events of that range teach (both
//! with an optional `"source"`); a range that is not `from < to` or starts in the future is a
//! 400, a range where nothing can re-read it (no Kafka) a 422, one that takes too long a 504.
//! The answer is the recalculation as recorded in the history, its `detail` saying what was
//! re-read. `GET /incidents/{id}/similar` answers `[]` with the reason in its
//! `culprit-similar-unavailable` header when the incidents collection cannot be searched.
//!
//! The service owns an [`ApiState`]: it records metrics through [`Metrics`], hands each published
//! alert to [`ApiState::publish`], and registers readiness checks and, where it has detectors,
//! a [`BaselineView`]. Operator feedback and baseline recalculations are appended to a
//! [`HistoryStore`]; confirmed causes of resolved incidents are what later incidents are
//! matched against.
//!
//! Modules: [`auth`] tokens and scopes; `history` the append-only record of feedback and
//! recalculations; `incident_index` the incidents collection similar incidents are searched in; `feedback` the rules a confirmed cause must meet; `baselines` the seam to the
//! detectors' baselines and the recalculation schedule; `incidents` the latest revision per
//! incident; `routes` the JSON API; `ui` the dashboard; `metrics` and `state`.
#![forbid(unsafe_code)]

pub mod auth;
mod baselines;
mod feedback;
mod history;
mod incident_index;
mod incidents;
mod metrics;
mod peers;
mod profile;
mod routes;
mod state;
mod ui;

pub use auth::{Caller, Scope, Tokens, TOKENS_ENV};
pub use baselines::{
    run_recalculation_schedule, BaselineError, BaselineView, BaselinesConfig, Bucket,
    BucketThresholds, RecalcOutcome, RecalcRange, SignalBaseline, Threshold,
};
pub use feedback::{Cause, FeedbackRequest};
pub use history::{
    FeedbackRecord, HistoryEntry, HistoryFilter, HistoryItem, HistoryKind, HistoryStore,
    MemoryHistoryStore, RecalculationRecord, SimilarQuery, MIN_PROFILE_SIMILARITY,
};
pub use incident_index::IncidentIndex;
pub use incidents::{IncidentFilter, IncidentStore};
pub use metrics::{LatencyRecorder, Metrics, ANOMALIES_INPUT, METRIC_PREFIX};
pub use peers::{PeerBaselines, PEER_HEADER, PEER_TOKEN_ENV};
pub use profile::{IncidentProfile, DIMENSIONS as PROFILE_DIMENSIONS};
pub use routes::{router, METRICS_CONTENT_TYPE, SIMILAR_UNAVAILABLE};
pub use state::{ApiState, BoxFuture, CheckResult, ReadinessCheck};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The usual port for a Prometheus exporter-style endpoint, on loopback only: reaching it from
/// elsewhere is a deliberate choice (the Helm chart sets `0.0.0.0` with tokens and a
/// NetworkPolicy).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_MAX_INCIDENTS: usize = 1_000;
pub const DEFAULT_LIMIT: usize = 100;
pub const DEFAULT_MAX_LIMIT: usize = 1_000;
pub const DEFAULT_READINESS_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_MAX_HISTORY: usize = 10_000;

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port the API listens on.
    pub listen: SocketAddr,
    /// Incidents kept for `/incidents`; the earliest-started are dropped first.
    pub max_incidents: usize,
    /// Items a list returns when the request gives no `limit`.
    pub default_limit: usize,
    /// Largest `limit` honoured; larger requests are cut to it.
    pub max_limit: usize,
    /// Time a single readiness check may take before it counts as failed, milliseconds.
    pub readiness_timeout_ms: u64,
    /// JSON-lines file that keeps the history (operator feedback, baseline recalculations)
    /// across restarts; memory only when unset.
    pub history_path: Option<PathBuf>,
    /// History entries kept in memory; the oldest are dropped first.
    pub max_history: usize,
    /// File of bearer tokens, one `name:scope:secret` a line (scope `read` or `write`), read when
    /// `CULPRIT_API_TOKENS` is unset. Tokens never go in this configuration file.
    pub tokens_file: Option<PathBuf>,
    /// Base URLs of other culprit APIs whose baselines this one shows and recalculates beside
    /// its own ([`PeerBaselines`]): in a split deployment, the correlator lists the embedders'.
    /// Requests to them carry the secret in `CULPRIT_API_PEER_TOKEN`.
    pub baseline_peers: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            max_incidents: DEFAULT_MAX_INCIDENTS,
            default_limit: DEFAULT_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            readiness_timeout_ms: DEFAULT_READINESS_TIMEOUT_MS,
            history_path: None,
            max_history: DEFAULT_MAX_HISTORY,
            tokens_file: None,
            baseline_peers: Vec::new(),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError::Config(m.to_string()));
        if self.max_incidents == 0 || self.max_history == 0 {
            return bad("api.max_incidents and api.max_history must be positive");
        }
        if self.default_limit == 0 || self.default_limit > self.max_limit {
            return bad("api.default_limit must be between 1 and api.max_limit");
        }
        if self.readiness_timeout_ms == 0 {
            return bad("api.readiness_timeout_ms must be positive");
        }
        for peer in &self.baseline_peers {
            peers::peer_url(peer)
                .map_err(|why| ApiError::Config(format!("api.baseline_peers: {why}")))?;
        }
        Ok(())
    }

    /// Binds [`listen`](Self::listen).
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, ApiError> {
        tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| ApiError::Bind {
                addr: self.listen,
                source,
            })
    }
}

/// Why the API could not start or store feedback.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid API configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("incident history file {}", path.display())]
    History {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("incident history file {} line {line} is not a history record", path.display())]
    HistoryLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("API tokens file {}", path.display())]
    TokensFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed token entry; never holds the secret itself.
    #[error("API tokens from {origin}: {message}")]
    Tokens { origin: String, message: String },
    /// The incidents collection could not be searched; similar incidents are unavailable.
    #[error("the incidents collection cannot be searched: {0}")]
    IncidentSearch(#[source] culprit_store::StoreError),
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// Live event streams (`GET /incidents/events`) never finish on their own, so shutdown first
/// tells them to end, then waits for the rest.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operations API listening");
    }
    let closing = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.close_streams();
        })
        .await
}
