//! The HTTP operations API every culprit service exposes.
//!
//! `GET /healthz` (liveness), `GET /readyz` (every registered readiness check passes),
//! `GET /metrics` (Prometheus, OpenMetrics text), `GET /incidents[?status=open|resolved&limit=N]`,
//! `GET /incidents/{id}`, `POST /incidents/{id}/feedback`, `GET /incidents/{id}/similar` and
//! `GET /history[?service=X&limit=N]`.
//!
//! The service owns an [`ApiState`]: it records metrics through [`Metrics`], stores each
//! published alert with [`IncidentStore::upsert`], and registers readiness checks. Operator
//! feedback that confirms a root cause becomes a [`HistoryRecord`] in a [`FeedbackStore`], so
//! later incidents can be matched against confirmed ones.
#![forbid(unsafe_code)]

mod feedback;
mod incidents;
mod metrics;
mod routes;
mod state;

pub use feedback::{Feedback, FeedbackStore, HistoryRecord, MemoryFeedbackStore, Verdict};
pub use incidents::IncidentStore;
pub use metrics::{Metrics, METRIC_PREFIX};
pub use routes::{router, METRICS_CONTENT_TYPE};
pub use state::{ApiState, BoxFuture, CheckResult, ReadinessCheck};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The usual port for a Prometheus exporter-style endpoint.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";
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
    /// JSON-lines file that keeps confirmed root causes across restarts; memory only when unset.
    pub history_path: Option<PathBuf>,
    /// Confirmed incidents kept in memory; the oldest confirmations are dropped first.
    pub max_history: usize,
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
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operations API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
