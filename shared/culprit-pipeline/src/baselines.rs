//! A board where detect stages show their baselines and take requests to forget or replace them.
//!
//! Each [`DetectStage`](crate::DetectStage) runs inside one embedder and owns its detectors, so
//! nothing outside can lock them while they work. A stage attached to a [`BaselineBoard`] instead
//! posts a summary of its baselines there at most once per [`BaselineBoard::REFRESH_SECS`] of
//! event time, and applies the requests waiting for it at its next window (or when its input
//! goes quiet): forget a service ([`ForgetRequest`]), or adopt what a fresh stage re-learned for
//! it ([`AdoptRequest`]). The API reads the board; it never waits on a detector.

use culprit_core::{SourceKind, UnixNanos};
use culprit_detect::state::{AdoptReport, DetectorStates};
use culprit_detect::SignalSummary;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A request to forget what a service learned (from one source, when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetRequest {
    pub service: String,
    pub source: Option<SourceKind>,
}

/// A request to replace what a service learned (from one source, when given) with what a fresh
/// stage of the same configuration learned for it ([`crate::DetectStage::save_state`]).
pub struct AdoptRequest {
    pub service: String,
    pub source: Option<SourceKind>,
    pub learned: DetectorStates,
    /// Called with what the stage did, once it did it.
    pub done: Box<dyn FnOnce(AdoptReport) + Send>,
}

impl std::fmt::Debug for AdoptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptRequest")
            .field("service", &self.service)
            .field("source", &self.source)
            .field("learned", &self.learned.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Stage {
    summaries: Vec<SignalSummary>,
    /// Event time of the stage's last post.
    posted_at: Option<UnixNanos>,
    pending: Vec<ForgetRequest>,
    adoptions: Vec<AdoptRequest>,
    /// Baselines forgotten by the stage on request, in all.
    forgotten: usize,
}

/// Shared between the detect stages of one process and the API.
#[derive(Default)]
pub struct BaselineBoard {
    stages: Mutex<BTreeMap<String, Stage>>,
}

impl BaselineBoard {
    /// Event time between two posts of one stage: summarising sorts every bucket, too much work
    /// for every window.
    pub const REFRESH_SECS: i64 = 30;

    pub fn new() -> BaselineBoard {
        BaselineBoard::default()
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stage>> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `stage` known, so requests queue for it before its first post.
    pub fn register(&self, stage: &str) {
        self.stages().entry(stage.to_string()).or_default();
    }

    /// Whether `stage` should post at event time `now`.
    pub fn due(&self, stage: &str, now: UnixNanos) -> bool {
        self.stages().get(stage).is_none_or(|s| {
            s.posted_at.is_none_or(|t| {
                now.saturating_sub(t) >= Self::REFRESH_SECS * culprit_core::NANOS_PER_SEC || now < t
            })
        })
    }

    /// Replaces `stage`'s summaries.
    pub fn post(&self, stage: &str, now: UnixNanos, summaries: Vec<SignalSummary>) {
        let mut stages = self.stages();
        let s = stages.entry(stage.to_string()).or_default();
        s.summaries = summaries;
        s.posted_at = Some(now);
    }

    /// The requests waiting for `stage`, which it applies now.
    pub fn take_requests(&self, stage: &str) -> Vec<ForgetRequest> {
        self.stages()
            .get_mut(stage)
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default()
    }

    /// Queues `request` for `stage`; gives it back when no such stage is attached to the board.
    pub fn request_adopt(&self, stage: &str, request: AdoptRequest) -> Result<(), AdoptRequest> {
        match self.stages().get_mut(stage) {
            Some(s) => {
                s.adoptions.push(request);
                Ok(())
            }
            None => Err(request),
        }
    }

    /// The adoptions waiting for `stage`, which it applies now.
    pub fn take_adoptions(&self, stage: &str) -> Vec<AdoptRequest> {
        self.stages()
            .get_mut(stage)
            .map(|s| std::mem::take(&mut s.adoptions))
            .unwrap_or_default()
    }

    /// Replaces `stage`'s summaries at once, outside its posting schedule (after an adoption,
    /// so the API shows the new baselines as soon as the recalculation returns).
    pub fn refresh(&self, stage: &str, summaries: Vec<SignalSummary>) {
        if let Some(s) = self.stages().get_mut(stage) {
            s.summaries = summaries;
        }
    }

    /// Records that `stage` applied a request and dropped `n` baselines, and removes them from
    /// its summaries at once (its next post would anyway).
    pub fn applied(&self, stage: &str, request: &ForgetRequest, n: usize) {
        if let Some(s) = self.stages().get_mut(stage) {
            s.forgotten += n;
            s.summaries.retain(|b| {
                b.service != request.service || request.source.is_some_and(|src| src != b.source)
            });
        }
    }

    /// Queues a forget request for every stage; returns how many baselines it will drop as the
    /// board knows them now. Nothing is queued when the board shows none of them.
    pub fn request_forget(&self, request: ForgetRequest) -> usize {
        let mut stages = self.stages();
        let affected = stages
            .values()
            .flat_map(|s| &s.summaries)
            .filter(|b| {
                b.service == request.service && request.source.is_none_or(|src| src == b.source)
            })
            .count();
        if affected > 0 {
            for s in stages.values_mut() {
                s.pending.push(request.clone());
            }
        }
        affected
    }

    /// Every stage's latest summaries, sorted by service, source, environment and signal.
    pub fn summaries(&self) -> Vec<SignalSummary> {
        let mut all: Vec<SignalSummary> = self
            .stages()
            .values()
            .flat_map(|s| s.summaries.iter().cloned())
            .collect();
        all.sort_by(|a, b| {
            (&a.service, a.source, &a.environment, &a.signal).cmp(&(
                &b.service,
                b.source,
                &b.environment,
                &b.signal,
            ))
        });
        all
    }

    /// Baselines forgotten on request so far, by all stages.
    pub fn forgotten(&self) -> usize {
        self.stages().values().map(|s| s.forgotten).sum()
    }
}
