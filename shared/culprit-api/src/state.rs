use crate::auth::Tokens;
use crate::baselines::{BaselineError, BaselineView, RecalcRange, SCHEDULE_AUTHOR};
use crate::history::{HistoryEntry, HistoryStore, MemoryHistoryStore, RecalculationRecord};
use crate::incident_index::IncidentIndex;
use crate::incidents::IncidentStore;
use crate::metrics::{Metrics, METRIC_PREFIX};
use crate::{ApiConfig, ApiError};
use culprit_core::{IncidentStatus, RcaAlert, SourceKind, UnixNanos};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// A boxed, sendable future; the same type as `futures::future::BoxFuture`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One readiness probe: `Ok` when the dependency is usable, otherwise why not.
pub type ReadinessCheck = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The outcome of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Inner {
    config: ApiConfig,
    checks: RwLock<Vec<(String, Arc<ReadinessCheck>)>>,
    // Locked only to register metrics and to encode a scrape; recording never touches it.
    registry: Mutex<Registry>,
    metrics: Metrics,
    incidents: IncidentStore,
    history: Arc<dyn HistoryStore>,
    tokens: Tokens,
    baselines: RwLock<Option<Arc<dyn BaselineView>>>,
    /// This process's own baselines, without its peers': what a peer's request is answered
    /// from ([`crate::PEER_HEADER`]), so that peers listing each other never loop.
    own_baselines: RwLock<Option<Arc<dyn BaselineView>>>,
    /// Set when the server shuts down, so endless event streams end.
    closing: watch::Sender<bool>,
    /// Wall clock for the times of feedback and recalculations; replaceable in tests.
    clock: fn() -> UnixNanos,
}

/// Everything the API serves, shared with the service that fills it. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State with the embedded history store (persisted to `config.history_path` when set),
    /// accepting `tokens`; its incidents collection is kept in memory.
    pub fn new(config: ApiConfig, tokens: Tokens) -> Result<ApiState, ApiError> {
        ApiState::with_incident_index(config, tokens, IncidentIndex::in_memory())
    }

    /// [`ApiState::new`] with the incidents collection `index` (the configured vector store's).
    pub fn with_incident_index(
        config: ApiConfig,
        tokens: Tokens,
        index: IncidentIndex,
    ) -> Result<ApiState, ApiError> {
        config.validate()?;
        let store = match &config.history_path {
            Some(path) => MemoryHistoryStore::open_with_index(path, config.max_history, index)?,
            None => MemoryHistoryStore::in_memory_with_index(config.max_history, index),
        };
        Ok(ApiState::with_history_store(
            config,
            tokens,
            Arc::new(store),
        ))
    }

    /// State with another history store.
    pub fn with_history_store(
        config: ApiConfig,
        tokens: Tokens,
        history: Arc<dyn HistoryStore>,
    ) -> ApiState {
        ApiState::build(config, tokens, history, culprit_core::wall_clock)
    }

    /// State whose wall clock is `clock` (tests pin the times of feedback and recalculations).
    pub fn with_clock(config: ApiConfig, tokens: Tokens, clock: fn() -> UnixNanos) -> ApiState {
        let history = Arc::new(MemoryHistoryStore::in_memory(config.max_history));
        ApiState::build(config, tokens, history, clock)
    }

    fn build(
        config: ApiConfig,
        tokens: Tokens,
        history: Arc<dyn HistoryStore>,
        clock: fn() -> UnixNanos,
    ) -> ApiState {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let metrics = Metrics::register(&mut registry);
        ApiState {
            inner: Arc::new(Inner {
                incidents: IncidentStore::new(config.max_incidents),
                checks: RwLock::default(),
                registry: Mutex::new(registry),
                metrics,
                history,
                tokens,
                baselines: RwLock::default(),
                own_baselines: RwLock::default(),
                closing: watch::Sender::new(false),
                clock,
                config,
            }),
        }
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn incidents(&self) -> &IncidentStore {
        &self.inner.incidents
    }

    pub fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.inner.history
    }

    /// The history as the correlator asks it for each published alert's similar incidents.
    pub fn past_incidents(&self) -> Arc<dyn culprit_core::PastIncidents> {
        self.inner.history.clone()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The wall-clock time, nanoseconds since the Unix epoch.
    pub fn now(&self) -> UnixNanos {
        (self.inner.clock)()
    }

    /// Exposes the detectors' baselines through `/baselines` and the dashboard.
    pub fn set_baselines(&self, view: Arc<dyn BaselineView>) {
        self.set_baselines_with_peers(Some(view.clone()), view);
    }

    /// Exposes `shown` (this process's baselines and its peers', [`crate::PeerBaselines`]) to
    /// operators, and only `own` to the peers' own requests.
    pub fn set_baselines_with_peers(
        &self,
        own: Option<Arc<dyn BaselineView>>,
        shown: Arc<dyn BaselineView>,
    ) {
        *self
            .inner
            .baselines
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(shown);
        *self
            .inner
            .own_baselines
            .write()
            .unwrap_or_else(|p| p.into_inner()) = own;
    }

    pub fn baseline_view(&self) -> Option<Arc<dyn BaselineView>> {
        self.inner
            .baselines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The view a request is answered from: this process's own baselines for a peer's request,
    /// the baselines it shows (its own and its peers') for anyone else's.
    pub fn baseline_view_for(&self, from_peer: bool) -> Option<Arc<dyn BaselineView>> {
        if !from_peer {
            return self.baseline_view();
        }
        self.inner
            .own_baselines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a published alert: keeps it for `/incidents` (unless a later revision is there),
    /// counts new and resolved incidents, and makes feedback given while it was open final
    /// once it resolves. Returns whether the alert was kept.
    pub async fn publish(&self, alert: RcaAlert) -> bool {
        let (id, status, revision) = (alert.incident_id.clone(), alert.status, alert.revision);
        if !self.inner.incidents.upsert(alert) {
            return false;
        }
        if revision == 1 || status == IncidentStatus::Resolved {
            self.inner.metrics.incident(status);
        }
        if status == IncidentStatus::Resolved {
            match self.inner.history.resolve(&id, self.now()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(incident_id = %id, entries = n, "provisional feedback is final")
                }
                Err(e) => {
                    tracing::error!(incident_id = %id, error = %e, "cannot finalise feedback")
                }
            }
        }
        true
    }

    /// Recalculates `service`'s baselines through the registered view and records it in the
    /// history under `author`.
    pub async fn recalculate_baselines(
        &self,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
        author: &str,
    ) -> Result<RecalculationRecord, BaselineError> {
        self.recalculate_baselines_for(false, service, source, range, author)
            .await
    }

    /// [`ApiState::recalculate_baselines`] through [`ApiState::baseline_view_for`].
    pub(crate) async fn recalculate_baselines_for(
        &self,
        from_peer: bool,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
        author: &str,
    ) -> Result<RecalculationRecord, BaselineError> {
        let view = self
            .baseline_view_for(from_peer)
            .ok_or(BaselineError::NotExposed)?;
        let outcome = view.recalculate(service, source, range).await?;
        self.inner.metrics.recalculation(author == SCHEDULE_AUTHOR);
        let record = RecalculationRecord {
            service: service.to_string(),
            source,
            range,
            author: author.to_string(),
            at: self.now(),
            baselines: outcome.baselines,
            detail: outcome.detail,
        };
        self.inner
            .history
            .append(HistoryEntry::Recalculation(record.clone()))
            .await
            .map_err(|e| {
                BaselineError::Failed(format!("recalculated, but cannot record it: {e}"))
            })?;
        Ok(record)
    }

    /// Ends every live event stream (the server is shutting down).
    pub(crate) fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// A receiver that turns `true` when the server shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Registers service-specific metrics next to the shared ones (same `culprit_` prefix).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a named readiness check; `/readyz` passes only when all of them do.
    pub fn add_readiness_check<F>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        let check: ReadinessCheck = Box::new(check);
        self.inner
            .checks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.into(), Arc::new(check)));
    }

    /// Runs every check concurrently, each bounded by `readiness_timeout_ms`; in registration order.
    pub async fn check_readiness(&self) -> Vec<CheckResult> {
        let checks = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let timeout = Duration::from_millis(self.inner.config.readiness_timeout_ms);
        let running: Vec<_> = checks
            .into_iter()
            .map(|(name, check)| {
                // Spawned so a slow check does not delay the others, and a panicking one fails alone.
                let task = tokio::spawn(tokio::time::timeout(timeout, check()));
                (name, task)
            })
            .collect();
        let mut results = Vec::with_capacity(running.len());
        for (check, task) in running {
            let error = match task.await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(e),
                Ok(Err(_)) => Some(format!("timed out after {} ms", timeout.as_millis())),
                Err(e) => Some(format!("check failed: {e}")),
            };
            results.push(CheckResult { check, error });
        }
        results
    }

    /// Every registered metric in OpenMetrics text, as `GET /metrics` answers.
    pub fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self
                .inner
                .registry
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )?;
        Ok(out)
    }
}

/// The incident list as an alert sink: what `/incidents` and the dashboard show. Never fails:
/// an older revision than the one kept is simply not kept.
#[async_trait::async_trait]
impl culprit_sink::AlertSink for ApiState {
    fn name(&self) -> &str {
        "api"
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), culprit_sink::SinkError> {
        self.publish(alert.clone()).await;
        Ok(())
    }
}
