use crate::feedback::{FeedbackStore, MemoryFeedbackStore};
use crate::incidents::IncidentStore;
use crate::metrics::{Metrics, METRIC_PREFIX};
use crate::{ApiConfig, ApiError};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
    feedback: Arc<dyn FeedbackStore>,
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
    /// State with the embedded feedback store (persisted to `config.history_path` when set).
    pub fn new(config: ApiConfig) -> Result<ApiState, ApiError> {
        config.validate()?;
        let store = match &config.history_path {
            Some(path) => MemoryFeedbackStore::open(path, config.max_history)?,
            None => MemoryFeedbackStore::in_memory(config.max_history),
        };
        Ok(ApiState::with_feedback_store(config, Arc::new(store)))
    }

    /// State with another feedback store.
    pub fn with_feedback_store(config: ApiConfig, feedback: Arc<dyn FeedbackStore>) -> ApiState {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let metrics = Metrics::register(&mut registry);
        ApiState {
            inner: Arc::new(Inner {
                incidents: IncidentStore::new(config.max_incidents),
                checks: RwLock::default(),
                registry: Mutex::new(registry),
                metrics,
                feedback,
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

    pub fn feedback(&self) -> &Arc<dyn FeedbackStore> {
        &self.inner.feedback
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

    pub(crate) fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
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
