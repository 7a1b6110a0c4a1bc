//! Reviews in the background, for the correlator service: the deterministic alert has already
//! been published when it is offered here, so a page never waits for the model.
//!
//! [`BackgroundReviewer::offer`] never blocks: alerts queue up to `llm.queue_capacity` (beyond
//! it an alert is dropped and counted; it was published anyway). One review runs at a time;
//! queued revisions of the same incident collapse to the newest. An incident is reviewed at most
//! `llm.max_reviews_per_incident` times, and again only when its candidates changed order.

use crate::evidence::{IncidentEvidence, PastIncident};
use crate::review::Reviewer;
use culprit_core::{LlmReviewStatus, RcaAlert};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Looks up the confirmed past incidents most like an alert's (the feedback history).
pub type PastIncidentsFn = Arc<dyn Fn(RcaAlert) -> BoxFuture<Vec<PastIncident>> + Send + Sync>;
/// Publishes a reviewed alert (the next revision) wherever deterministic alerts go.
pub type PublishFn = Arc<dyn Fn(RcaAlert) -> BoxFuture<()> + Send + Sync>;

/// Incidents whose review history is remembered; the oldest are forgotten first.
const MAX_TRACKED_INCIDENTS: usize = 10_000;

/// Which alerts get a review: at most `max_reviews` per incident, each on a new candidate order.
#[derive(Debug, Default)]
pub struct ReviewPolicy {
    max_reviews: u32,
    seen: HashMap<String, (u32, Vec<String>)>,
    order: VecDeque<String>,
}

impl ReviewPolicy {
    pub fn new(max_reviews: u32) -> ReviewPolicy {
        ReviewPolicy {
            max_reviews,
            ..ReviewPolicy::default()
        }
    }

    /// Whether to review `alert` now; records the review when it says yes.
    pub fn admit(&mut self, alert: &RcaAlert) -> bool {
        let top: Vec<String> = alert
            .root_causes
            .iter()
            .map(|c| c.service.clone())
            .collect();
        match self.seen.get_mut(&alert.incident_id) {
            Some((count, last)) => {
                if *count >= self.max_reviews || *last == top {
                    return false;
                }
                *count += 1;
                *last = top;
            }
            None => {
                if self.max_reviews == 0 {
                    return false;
                }
                self.seen.insert(alert.incident_id.clone(), (1, top));
                self.order.push_back(alert.incident_id.clone());
                while self.order.len() > MAX_TRACKED_INCIDENTS {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
            }
        }
        true
    }
}

/// A queue of alerts to review and the task that works through it.
#[derive(Clone)]
pub struct BackgroundReviewer {
    reviewer: Arc<Reviewer>,
    tx: mpsc::Sender<RcaAlert>,
}

impl std::fmt::Debug for BackgroundReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundReviewer")
            .field("reviewer", &self.reviewer)
            .finish_non_exhaustive()
    }
}

impl BackgroundReviewer {
    /// Starts the review task on the current tokio runtime. It ends when every clone of the
    /// returned handle is dropped.
    pub fn spawn(
        reviewer: Arc<Reviewer>,
        past: PastIncidentsFn,
        publish: PublishFn,
    ) -> BackgroundReviewer {
        let (tx, rx) = mpsc::channel(reviewer.config().queue_capacity);
        tokio::spawn(work(reviewer.clone(), rx, past, publish));
        BackgroundReviewer { reviewer, tx }
    }

    /// Queues `alert` for review when the reviewer wants it; never waits.
    pub fn offer(&self, alert: &RcaAlert) {
        if !self.reviewer.wants(alert) {
            return;
        }
        if self.tx.try_send(alert.clone()).is_err() {
            self.reviewer.metrics().dropped_alert();
            tracing::warn!(incident = %alert.incident_id, "llm review queue full: alert not reviewed");
        }
    }
}

async fn work(
    reviewer: Arc<Reviewer>,
    mut rx: mpsc::Receiver<RcaAlert>,
    past: PastIncidentsFn,
    publish: PublishFn,
) {
    let mut policy = ReviewPolicy::new(reviewer.config().max_reviews_per_incident);
    while let Some(first) = rx.recv().await {
        // Newest revision per incident among everything queued, oldest incident first.
        let mut batch: BTreeMap<String, RcaAlert> = BTreeMap::new();
        let mut arrival: Vec<String> = Vec::new();
        let mut take = |alert: RcaAlert| {
            if !batch.contains_key(&alert.incident_id) {
                arrival.push(alert.incident_id.clone());
            }
            match batch.get(&alert.incident_id) {
                Some(old) if old.revision > alert.revision => {}
                _ => {
                    batch.insert(alert.incident_id.clone(), alert);
                }
            }
        };
        take(first);
        while let Ok(more) = rx.try_recv() {
            take(more);
        }
        for id in arrival {
            let Some(alert) = batch.remove(&id) else {
                continue;
            };
            if !policy.admit(&alert) {
                continue;
            }
            let history = past(alert.clone()).await;
            let evidence = IncidentEvidence::from_alert(alert).with_past_incidents(history);
            let review = reviewer.review(&evidence).await;
            if review.status() == LlmReviewStatus::PromptOnly {
                continue; // written to the request log; nothing to publish
            }
            publish(review.alert).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::alert;

    #[test]
    fn an_incident_is_reviewed_again_only_when_its_order_changed_and_at_most_n_times() {
        let mut p = ReviewPolicy::new(2);
        let a = alert();
        assert!(p.admit(&a));
        assert!(!p.admit(&a), "same order");
        let mut b = a.clone();
        b.root_causes.swap(0, 1);
        assert!(p.admit(&b));
        let mut c = a.clone();
        c.root_causes.swap(1, 2);
        assert!(!p.admit(&c), "limit of two reached");
    }
}
