//! The seam between the API and the detectors' baselines: what an operator can see of them and
//! how they are rebuilt.
//!
//! The baselines themselves live in the detectors of `culprit-detect`, inside the embedder that
//! runs them. This module only defines what the API needs ([`BaselineView`]): the thresholds of
//! each of a service's signals per hour bucket with the time each was last learned, and a
//! recalculation that forgets what a service learned and re-learns from a stored time range or
//! from now on. A service that runs detectors registers a view with
//! [`ApiState::set_baselines`](crate::ApiState::set_baselines); without one the baseline
//! endpoints answer 501.
//!
//! [`run_recalculation_schedule`] rebuilds baselines every `baselines.interval_secs` from the
//! trailing `baselines.lookback_secs`; each run is recorded in the history like an operator's.

use crate::ApiState;
use culprit_core::{Severity, SourceKind, UnixNanos, NANOS_PER_SEC};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// Which values a threshold was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "tier", rename_all = "snake_case")]
pub enum Bucket {
    /// One hour of the week, Monday 00:00 UTC = 0.
    HourOfWeek { hour: u8 },
    /// One hour of the day, UTC.
    HourOfDay { hour: u8 },
    /// Every value, whatever its hour.
    Global,
}

/// The value beyond which an observation is reported at `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub severity: Severity,
    /// Values above this are abnormal (signals that may rise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Values below this are abnormal (signals that may fall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

/// One bucket of one signal's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketThresholds {
    #[serde(flatten)]
    pub bucket: Bucket,
    pub samples: usize,
    pub median: f64,
    /// Most severe first.
    pub thresholds: Vec<Threshold>,
    /// Event time of the last value this bucket learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_at: Option<UnixNanos>,
}

/// What culprit has learned as normal for one signal of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalBaseline {
    pub source: SourceKind,
    pub environment: String,
    /// The signal in the anomalies' form: `span.latency:GET /cart`, `metric:cpu`.
    pub signal: String,
    /// Values learned in total since the baseline was (re)started.
    pub samples: u64,
    /// Event time of the last value learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_at: Option<UnixNanos>,
    /// Wall-clock time of the last recalculation, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalculated_at: Option<UnixNanos>,
    pub buckets: Vec<BucketThresholds>,
}

/// What a recalculation re-learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RecalcRange {
    /// Forget, then learn from the events that arrive from now on (the service is not judged
    /// until it has enough of them again).
    FromNow,
    /// Forget, then learn from the stored events of `[from, to)` (nanoseconds since the epoch).
    Range { from: UnixNanos, to: UnixNanos },
}

/// What a recalculation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecalcOutcome {
    /// Baselines that were reset.
    pub baselines: usize,
    /// A sentence for the history, for example how many events were replayed.
    #[serde(default)]
    pub detail: String,
}

/// Why a baseline request failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No [`BaselineView`] is registered in this process.
    #[error("this service exposes no baselines (no detectors run in this process)")]
    NotExposed,
    #[error("no baselines for service {0:?}")]
    UnknownService(String),
    /// The request is valid but these detectors cannot do it (for example re-learning from a
    /// range when no source is read from Kafka).
    #[error("{0}")]
    Unsupported(String),
    /// The recalculation did not finish in time (a re-learn from a long range).
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Failed(String),
}

/// The detectors' baselines as the API sees them.
#[async_trait::async_trait]
pub trait BaselineView: Send + Sync {
    /// Services that have at least one baseline, sorted.
    async fn services(&self) -> Result<Vec<String>, BaselineError>;
    /// Every baseline of `service`, sorted by source, environment and signal.
    async fn baselines(&self, service: &str) -> Result<Vec<SignalBaseline>, BaselineError>;
    /// Forgets what `service` learned (from `source` only, when given) and re-learns from `range`.
    async fn recalculate(
        &self,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
    ) -> Result<RecalcOutcome, BaselineError>;
}

/// The `[baselines]` section: scheduled recalculation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselinesConfig {
    /// Recalculate every this many seconds; 0 never does.
    pub interval_secs: u64,
    /// Each scheduled run re-learns from this many trailing seconds of stored events.
    pub lookback_secs: u64,
    /// Services the schedule covers; every service with a baseline when empty.
    pub services: Vec<String>,
}

impl Default for BaselinesConfig {
    fn default() -> Self {
        BaselinesConfig {
            interval_secs: 0,
            lookback_secs: 7 * 24 * 3600,
            services: Vec::new(),
        }
    }
}

impl BaselinesConfig {
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        // Forgetting everything on a schedule with nothing to re-learn from would leave every
        // service unjudged after each run.
        if self.interval_secs > 0 && self.lookback_secs == 0 {
            return Err(crate::ApiError::Config(
                "baselines.lookback_secs must be positive when baselines.interval_secs is set"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Author of the history entries the schedule writes.
pub const SCHEDULE_AUTHOR: &str = "schedule";

/// Recalculates on `config`'s schedule until `shutdown`. Returns at once when the schedule is
/// off. A failing service is logged and retried at the next run; the others go on.
pub async fn run_recalculation_schedule(
    state: ApiState,
    config: BaselinesConfig,
    shutdown: impl Future<Output = ()>,
) {
    if config.interval_secs == 0 {
        return;
    }
    let period = Duration::from_secs(config.interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        let services = if config.services.is_empty() {
            match state.baseline_view() {
                Some(view) => match view.services().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled baseline recalculation: cannot list services");
                        continue;
                    }
                },
                None => {
                    tracing::warn!(
                        "scheduled baseline recalculation: this service has no baselines"
                    );
                    continue;
                }
            }
        } else {
            config.services.clone()
        };
        let to = state.now();
        let lookback = i64::try_from(config.lookback_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        let range = RecalcRange::Range {
            from: to.saturating_sub(lookback),
            to,
        };
        for service in services {
            match state
                .recalculate_baselines(&service, None, range, SCHEDULE_AUTHOR)
                .await
            {
                Ok(record) => {
                    tracing::info!(%service, baselines = record.baselines, "scheduled baseline recalculation")
                }
                Err(e) => {
                    tracing::error!(%service, error = %e, "scheduled baseline recalculation failed")
                }
            }
        }
    }
}
