use crate::event::{incident_link, trigger_payload, Accepted, Event, EventAction, CLIENT};
use crate::{PagerDutyConfig, PagerDutyError};
use culprit_core::{IncidentStatus, RcaAlert};
use culprit_sink::{AlertSink, SinkError};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// What [`PagerDutyClient::handle`] did with one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A `trigger` was accepted: the incident pages.
    Triggered { dedup_key: String },
    /// A repeated `trigger` (same dedup key) because the top root cause changed.
    Updated { dedup_key: String },
    /// A `resolve` was accepted.
    Resolved { dedup_key: String },
    /// Nothing was sent.
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The incident is less severe than `min_severity`.
    BelowMinSeverity,
    /// The incident already paged and this revision needs no new trigger.
    AlreadyTriggered,
    /// The incident never paged, so there is nothing to resolve.
    NotTriggered,
    /// The incident was already resolved (a late or repeated alert).
    AlreadyResolved,
    /// A revision older than one already handled.
    StaleRevision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PageState {
    /// Paged; `top` is the root cause the last trigger named.
    Triggered {
        top: Option<String>,
        revision: u32,
    },
    Resolved,
}

/// Incident id -> page state, forgetting the oldest first-seen incidents beyond `capacity`.
#[derive(Debug)]
struct Tracker {
    states: HashMap<String, PageState>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Tracker {
    fn new(capacity: usize) -> Tracker {
        Tracker {
            states: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, id: &str) -> Option<&PageState> {
        self.states.get(id)
    }

    fn set(&mut self, id: &str, state: PageState) {
        if self.states.insert(id.to_string(), state).is_none() {
            self.order.push_back(id.to_string());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.states.remove(&old);
                }
            }
        }
    }

    /// Puts back what was there before a send that failed, so the next revision retries it.
    fn restore(&mut self, id: &str, previous: Option<PageState>) {
        match previous {
            Some(state) => self.set(id, state),
            None => {
                if self.states.remove(id).is_some() {
                    self.order.retain(|o| o != id);
                }
            }
        }
    }
}

/// Sends RCA alerts to PagerDuty: one page per incident, resolved when the incident closes.
pub struct PagerDutyClient {
    http: reqwest::Client,
    config: PagerDutyConfig,
    routing_key: String,
    source: String,
    tracker: Mutex<Tracker>,
}

impl fmt::Debug for PagerDutyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The routing key is a secret: keep it out of debug output.
        f.debug_struct("PagerDutyClient")
            .field("url", &self.config.url)
            .field("source", &self.source)
            .field("routing_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl PagerDutyClient {
    /// Builds the client, reading the routing key from `CULPRIT_PAGERDUTY_ROUTING_KEY` or
    /// `routing_key_file`; fails when neither yields a key.
    pub fn new(config: PagerDutyConfig) -> Result<PagerDutyClient, PagerDutyError> {
        let key = config.routing_key()?;
        PagerDutyClient::with_routing_key(config, key)
    }

    /// Builds the client with a routing key obtained elsewhere.
    pub fn with_routing_key(
        config: PagerDutyConfig,
        routing_key: String,
    ) -> Result<PagerDutyClient, PagerDutyError> {
        config.validate()?;
        let routing_key = config.routing_key_with(|_| Some(routing_key.clone()))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            .user_agent(concat!("culprit-pagerduty/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(PagerDutyError::Client)?;
        Ok(PagerDutyClient {
            http,
            source: config.resolved_source(),
            tracker: Mutex::new(Tracker::new(config.max_tracked_incidents)),
            routing_key,
            config,
        })
    }

    /// Pages, updates or resolves for one alert; see [`Outcome`] for what can happen.
    ///
    /// A resolve is sent when this process paged the incident, and also when it does not know
    /// the incident (after a restart or eviction) but its severity would have paged: resolving a
    /// dedup key PagerDuty does not know is a no-op there, while a missed resolve leaves a page
    /// open.
    pub async fn handle(&self, alert: &RcaAlert) -> Result<Outcome, PagerDutyError> {
        let id = alert.incident_id.as_str();
        let pages = alert.severity <= self.config.min_severity;
        let top = alert.root_causes.first().map(|c| c.service.clone());
        let (action, previous) = {
            let mut tracker = self.lock();
            let previous = tracker.get(id).cloned();
            let action = match (alert.status, &previous) {
                (IncidentStatus::Open, Some(PageState::Resolved)) => {
                    return Ok(Outcome::Skipped(SkipReason::AlreadyResolved))
                }
                (IncidentStatus::Open, Some(PageState::Triggered { revision, .. }))
                    if alert.revision < *revision =>
                {
                    return Ok(Outcome::Skipped(SkipReason::StaleRevision))
                }
                (IncidentStatus::Open, Some(PageState::Triggered { top: sent, .. })) => {
                    if !(self.config.update_on_revision && *sent != top) {
                        return Ok(Outcome::Skipped(SkipReason::AlreadyTriggered));
                    }
                    Action::Update
                }
                (IncidentStatus::Open, None) if !pages => {
                    return Ok(Outcome::Skipped(SkipReason::BelowMinSeverity))
                }
                (IncidentStatus::Open, None) => Action::Trigger,
                (IncidentStatus::Resolved, Some(PageState::Resolved)) => {
                    return Ok(Outcome::Skipped(SkipReason::AlreadyResolved))
                }
                (IncidentStatus::Resolved, Some(PageState::Triggered { .. })) => Action::Resolve,
                (IncidentStatus::Resolved, None) if !pages => {
                    return Ok(Outcome::Skipped(SkipReason::NotTriggered))
                }
                (IncidentStatus::Resolved, None) => Action::Resolve,
            };
            // Claimed before sending so a concurrent revision of the same incident does not page twice.
            let next = match action {
                Action::Resolve => PageState::Resolved,
                Action::Trigger | Action::Update => PageState::Triggered {
                    top: top.clone(),
                    revision: alert.revision,
                },
            };
            tracker.set(id, next);
            (action, previous)
        };
        let result = match action {
            Action::Trigger | Action::Update => self.send(self.trigger_event(alert)).await,
            Action::Resolve => self.send(self.resolve_event(alert)).await,
        };
        if let Err(e) = result {
            self.lock().restore(id, previous);
            return Err(e);
        }
        let dedup_key = id.to_string();
        Ok(match action {
            Action::Trigger => Outcome::Triggered { dedup_key },
            Action::Update => Outcome::Updated { dedup_key },
            Action::Resolve => Outcome::Resolved { dedup_key },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trigger_event<'a>(&'a self, alert: &'a RcaAlert) -> Event<'a> {
        Event {
            routing_key: &self.routing_key,
            event_action: EventAction::Trigger,
            dedup_key: &alert.incident_id,
            payload: Some(trigger_payload(alert, &self.source)),
            client: Some(CLIENT),
            links: self.links(alert),
        }
    }

    fn resolve_event<'a>(&'a self, alert: &'a RcaAlert) -> Event<'a> {
        Event {
            routing_key: &self.routing_key,
            event_action: EventAction::Resolve,
            dedup_key: &alert.incident_id,
            payload: None,
            client: None,
            links: Vec::new(),
        }
    }

    fn links(&self, alert: &RcaAlert) -> Vec<crate::event::Link> {
        self.config
            .incident_url_base
            .iter()
            .map(|base| incident_link(base, &alert.incident_id))
            .collect()
    }

    /// Posts one event, retrying 429, 5xx and transport errors with jittered exponential backoff.
    async fn send(&self, event: Event<'_>) -> Result<(), PagerDutyError> {
        let dedup_key = event.dedup_key.to_string();
        let attempts = self.config.max_retries + 1;
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let retry_after = match self.http.post(&self.config.url).json(&event).send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return check_accepted(status, &body, &dedup_key);
                    }
                    if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                        tracing::warn!(%status, %body, dedup_key, "PagerDuty rejected the event");
                        return Err(PagerDutyError::Rejected {
                            dedup_key,
                            status: status.as_u16(),
                            body,
                        });
                    }
                    last_error = format!("HTTP {status}: {body}");
                    retry_after_header(&headers)
                }
                Err(e) => {
                    last_error = error_chain(&e);
                    None
                }
            };
            if attempt + 1 == attempts {
                break;
            }
            let delay = self.delay(attempt, retry_after);
            tracing::warn!(dedup_key, attempt = attempt + 1, error = %last_error, ?delay, "PagerDuty send failed; retrying");
            tokio::time::sleep(delay).await;
        }
        Err(PagerDutyError::GaveUp {
            dedup_key,
            attempts,
            last_error,
        })
    }

    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let max = Duration::from_millis(self.config.backoff_max_ms);
        if let Some(wait) = retry_after {
            return wait.min(max);
        }
        let base = self
            .config
            .backoff_initial_ms
            .saturating_mul(1u64 << attempt.min(30))
            .min(self.config.backoff_max_ms);
        // Jitter in [50%, 100%] so replicas that failed together do not retry together.
        let factor = rand::rng().random_range(0.5..=1.0);
        Duration::from_millis((base as f64 * factor) as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Trigger,
    Update,
    Resolve,
}

fn check_accepted(status: StatusCode, body: &str, dedup_key: &str) -> Result<(), PagerDutyError> {
    match serde_json::from_str::<Accepted>(body) {
        Ok(a) if a.status == "success" => {
            if a.dedup_key.as_deref().is_some_and(|k| k != dedup_key) {
                tracing::warn!(sent = dedup_key, answered = ?a.dedup_key, "PagerDuty answered another dedup key");
            }
            Ok(())
        }
        _ => Err(PagerDutyError::BadResponse {
            dedup_key: dedup_key.to_string(),
            status: status.as_u16(),
            body: body.to_string(),
        }),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(wait)
}

/// reqwest's top-level message hides the cause ("error sending request"); keep the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[async_trait::async_trait]
impl AlertSink for PagerDutyClient {
    fn name(&self) -> &str {
        "pagerduty"
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError> {
        match self.handle(alert).await {
            Ok(outcome) => {
                tracing::debug!(
                    incident_id = alert.incident_id,
                    revision = alert.revision,
                    ?outcome,
                    "PagerDuty"
                );
                Ok(())
            }
            Err(e @ PagerDutyError::Rejected { .. }) => Err(SinkError::Rejected {
                sink: "pagerduty".into(),
                reason: e.to_string(),
            }),
            Err(e) => Err(SinkError::Unavailable {
                sink: "pagerduty".into(),
                source: Box::new(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_forgets_the_oldest_incident_beyond_capacity() {
        let mut t = Tracker::new(2);
        for id in ["a", "b", "c"] {
            t.set(id, PageState::Resolved);
        }
        assert!(t.get("a").is_none());
        assert!(t.get("b").is_some() && t.get("c").is_some());
        t.restore("c", None);
        assert!(t.get("c").is_none());
        assert_eq!(t.order, ["b"]);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_header(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_header(&h), None);
    }
}
