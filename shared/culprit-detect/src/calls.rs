//! What became of the calls a span made: which child spans failed or took far longer than their
//! operation usually does. A log line written inside a span whose call went wrong is a symptom
//! relayed from the callee, whatever its words say (see `logs`).
//!
//! "Far longer" is judged per (environment, callee service, operation) on ln(duration), learned
//! from the calls that were not slow: a call is slow beyond `SLOW_SIGMAS` standard deviations
//! over the mean, once `MIN_CALLS` calls were learned. One slow call in a thousand by chance
//! does not matter: a template counts as relayed only when most of its sightings are.

use culprit_core::hash::Fnv1a;
use culprit_core::{Event, EventBody, UnixNanos};
use std::collections::{HashMap, VecDeque};

/// Standard deviations of ln(duration) over the mean beyond which a call is slow (about 2.5x
/// the usual time for an operation whose durations vary by a factor of 1.35 around their mean).
const SLOW_SIGMAS: f64 = 3.0;
/// Calls learned before an operation's durations are trusted.
const MIN_CALLS: f64 = 30.0;
/// The learned weight is halved beyond this, so an operation's usual time follows slow drift.
const DECAY_AT: f64 = 10_000.0;

/// How a child call went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Failed,
    Slow,
}

/// A call that went wrong, remembered under its parent span.
#[derive(Debug, Clone)]
pub(crate) struct BadCall {
    pub callee: String,
    pub outcome: Outcome,
    time: UnixNanos,
}

/// Decayed mean and variance of ln(duration) of one operation.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Durations {
    weight: f64,
    mean: f64,
    m2: f64,
}

impl Durations {
    fn is_slow(&self, ln_duration: f64) -> bool {
        if self.weight < MIN_CALLS {
            return false;
        }
        // A floor on the spread: an operation that always took the same time is not slow at
        // a few percent more.
        let sd = (self.m2 / self.weight).sqrt().max(0.1);
        ln_duration > self.mean + SLOW_SIGMAS * sd
    }

    fn learn(&mut self, ln_duration: f64) {
        self.weight += 1.0;
        let delta = ln_duration - self.mean;
        self.mean += delta / self.weight;
        self.m2 += delta * (ln_duration - self.mean);
        if self.weight > DECAY_AT {
            self.weight /= 2.0;
            self.m2 /= 2.0;
        }
    }
}

/// Child calls that failed or were slow, by parent span id, kept for `keep_nanos`.
#[derive(Debug, Default)]
pub(crate) struct ChildCalls {
    durations: HashMap<u64, Durations>,
    bad: HashMap<String, BadCall>,
    order: VecDeque<(UnixNanos, String)>,
}

/// What [`ChildCalls`] learned: the usual durations, not the calls remembered lately.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChildCallsState {
    #[serde(with = "crate::state::pairs")]
    durations: HashMap<u64, Durations>,
}

impl ChildCalls {
    pub(crate) fn save_state(&self) -> ChildCallsState {
        ChildCallsState {
            durations: self.durations.clone(),
        }
    }

    pub(crate) fn restore_state(&mut self, state: ChildCallsState) {
        self.durations = state.durations;
    }

    /// Learns a span's duration and, when `remember` holds, remembers it under its parent if it
    /// failed or was slow. Root spans have no caller to relay to.
    pub fn observe(&mut self, event: &Event, remember: bool) {
        let EventBody::Span(span) = &event.body else {
            return;
        };
        let Some(parent) = &span.parent_span_id else {
            return;
        };
        let mut key = Fnv1a::new();
        key.write_field(event.resource.environment.as_bytes());
        key.write_field(event.resource.service.as_bytes());
        key.write_field(span.name.as_bytes());
        let durations = self.durations.entry(key.value()).or_default();
        let ln_duration = (span.duration_ns.max(1) as f64).ln();
        let slow = durations.is_slow(ln_duration);
        if !slow {
            durations.learn(ln_duration);
        }
        let outcome = if span.is_error {
            Outcome::Failed
        } else if slow {
            Outcome::Slow
        } else {
            return;
        };
        if !remember {
            return;
        }
        let call = BadCall {
            callee: event.resource.service.clone(),
            outcome,
            time: event.time,
        };
        // A failure says more than slowness about the same parent: keep it.
        if self
            .bad
            .get(parent)
            .is_some_and(|b| b.outcome == Outcome::Failed && outcome == Outcome::Slow)
        {
            return;
        }
        self.bad.insert(parent.clone(), call);
        self.order.push_back((event.time, parent.clone()));
    }

    /// The call that went wrong under `parent_span_id`, if one did.
    pub fn under(&self, parent_span_id: &str) -> Option<&BadCall> {
        self.bad.get(parent_span_id)
    }

    /// Forgets calls older than `keep_from`.
    pub fn expire(&mut self, keep_from: UnixNanos) {
        while let Some((time, _)) = self.order.front() {
            if *time >= keep_from {
                break;
            }
            let (time, parent) = self.order.pop_front().expect("front exists");
            if self.bad.get(&parent).is_some_and(|b| b.time == time) {
                self.bad.remove(&parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Resource, SpanEvent};

    fn child(parent: &str, millis: i64, is_error: bool) -> Event {
        Event {
            time: 0,
            resource: std::sync::Arc::new(Resource::new("payment")),
            body: EventBody::Span(SpanEvent {
                trace_id: "t".repeat(32),
                span_id: format!("c-{parent}"),
                parent_span_id: Some(parent.to_string()),
                name: "charge".into(),
                kind: "server".into(),
                duration_ns: millis * 1_000_000,
                is_error,
                error_type: None,
                attributes: Default::default(),
            }),
        }
    }

    fn learned() -> ChildCalls {
        let mut calls = ChildCalls::default();
        for i in 0..200 {
            calls.observe(&child(&format!("p{i}"), 20 + i % 7, false), true);
        }
        calls
    }

    #[test]
    fn a_call_far_beyond_its_operations_usual_time_is_slow_and_a_usual_one_is_not() {
        let mut calls = learned();
        assert!(calls.under("p10").is_none(), "usual calls are not kept");
        calls.observe(&child("late", 400, false), true);
        calls.observe(&child("usual", 24, false), true);
        assert_eq!(calls.under("late").map(|c| c.outcome), Some(Outcome::Slow));
        assert_eq!(
            calls.under("late").map(|c| c.callee.as_str()),
            Some("payment")
        );
        assert!(calls.under("usual").is_none());
    }

    #[test]
    fn slowness_is_not_judged_before_the_operation_was_learned() {
        let mut calls = ChildCalls::default();
        calls.observe(&child("first", 20, false), true);
        calls.observe(&child("second", 4000, false), true);
        assert!(calls.under("second").is_none());
    }

    #[test]
    fn a_failure_is_kept_over_a_later_slow_call_and_both_expire() {
        let mut calls = learned();
        calls.observe(&child("p", 20, true), true);
        calls.observe(&child("p", 900, false), true);
        assert_eq!(calls.under("p").map(|c| c.outcome), Some(Outcome::Failed));
        calls.expire(1);
        assert!(calls.under("p").is_none());
    }

    #[test]
    fn slow_calls_do_not_teach_the_usual_time() {
        let mut calls = learned();
        for i in 0..100 {
            calls.observe(&child(&format!("s{i}"), 400, false), true);
        }
        assert_eq!(calls.under("s99").map(|c| c.outcome), Some(Outcome::Slow));
    }
}
