//! The embedder's event-time guard: events whose timestamp cannot be right are refused before
//! they reach the detectors, the watermark or the store.
//!
//! An event is out of range when it is stamped more than `max_future_skew_secs` ahead of the
//! wall clock (no producer can know the future; replays of old data are behind it, never ahead),
//! or more than `max_event_time_skew_secs` away from its partition's current event time.
//!
//! A partition's current event time is robust: per message the guard records how far the
//! message's median event time is from its Kafka timestamp, and expects the next message's events
//! near its Kafka timestamp plus the median of the last [`WINDOW`] such offsets. Measuring against
//! the Kafka timestamp keeps quiet partitions working (a deployment after a weekend without one
//! arrives a weekend later too), and the median means one message — or a few in a row — cannot
//! move it; [`WINDOW`] / 2 + 1 messages that agree with each other can (a replay that skips a
//! gap), at the cost of those messages. Until a partition has [`MIN_MESSAGES`] messages, a
//! message's events are measured against their own median. Replays of old data pass: only the
//! future is compared with the wall clock.

use culprit_core::{Event, UnixNanos, NANOS_PER_SEC};
use std::collections::{HashMap, VecDeque};

/// Reason code of a dead letter holding events with impossible timestamps.
pub(crate) const TIMESTAMP_OUT_OF_RANGE: &str = "timestamp_out_of_range";

/// Messages per partition whose offsets make its current event time.
const WINDOW: usize = 9;
/// Messages a partition needs before its own history is the reference.
const MIN_MESSAGES: usize = 3;

/// Decides which events of a message are in range; one per embedder.
#[derive(Debug)]
pub(crate) struct TimeGuard {
    max_future: Option<i64>,
    max_skew: Option<i64>,
    /// Per topic and partition: event time minus Kafka timestamp of its latest messages.
    offsets: HashMap<(String, i32), VecDeque<i64>>,
}

/// An event refused, and why.
#[derive(Debug)]
pub(crate) struct OutOfRange {
    pub event: Event,
    pub detail: String,
}

impl TimeGuard {
    /// A guard with the two bounds in seconds; 0 turns a bound off.
    pub(crate) fn new(max_future_skew_secs: u64, max_event_time_skew_secs: u64) -> TimeGuard {
        let nanos = |secs: u64| {
            (secs > 0)
                .then(|| i64::try_from(secs).map_or(i64::MAX, |s| s.saturating_mul(NANOS_PER_SEC)))
        };
        TimeGuard {
            max_future: nanos(max_future_skew_secs),
            max_skew: nanos(max_event_time_skew_secs),
            offsets: HashMap::new(),
        }
    }

    /// Splits one message's events into those in range and those refused, and records the
    /// message in its partition's history. `kafka_ms` is the message's Kafka timestamp, `now`
    /// the wall clock.
    pub(crate) fn split(
        &mut self,
        topic: &str,
        partition: i32,
        kafka_ms: Option<i64>,
        events: Vec<Event>,
        now: UnixNanos,
    ) -> (Vec<Event>, Vec<OutOfRange>) {
        let mut refused = Vec::new();
        let mut plausible = Vec::with_capacity(events.len());
        for event in events {
            match self.max_future {
                Some(bound) if event.time > now.saturating_add(bound) => {
                    let detail = format!(
                        "event time {} is {} s ahead of the wall clock {} (max_future_skew_secs = {})",
                        secs(event.time),
                        (event.time - now) / NANOS_PER_SEC,
                        secs(now),
                        bound / NANOS_PER_SEC
                    );
                    refused.push(OutOfRange { event, detail });
                }
                _ => plausible.push(event),
            }
        }
        let (Some(bound), Some(own)) = (self.max_skew, median(plausible.iter().map(|e| e.time)))
        else {
            return (plausible, refused);
        };
        // Without a Kafka timestamp the offsets are plain event times: still a robust median.
        let kafka = kafka_ms.map_or(0, |ms| ms.saturating_mul(1_000_000));
        let history = self
            .offsets
            .entry((topic.to_string(), partition))
            .or_default();
        let reference = if history.len() >= MIN_MESSAGES {
            median(history.iter().copied()).map_or(own, |offset| kafka.saturating_add(offset))
        } else {
            own
        };
        history.push_back(own.saturating_sub(kafka));
        if history.len() > WINDOW {
            history.pop_front();
        }
        let mut accepted = Vec::with_capacity(plausible.len());
        for event in plausible {
            if event.time.abs_diff(reference) > bound.unsigned_abs() {
                let detail = format!(
                    "event time {} is {} s from the partition's current event time {} (max_event_time_skew_secs = {})",
                    secs(event.time),
                    (event.time.saturating_sub(reference) / NANOS_PER_SEC).abs(),
                    secs(reference),
                    bound / NANOS_PER_SEC
                );
                refused.push(OutOfRange { event, detail });
            } else {
                accepted.push(event);
            }
        }
        (accepted, refused)
    }
}

/// Unix seconds, for messages.
fn secs(time: UnixNanos) -> String {
    format!("{}s", time.div_euclid(NANOS_PER_SEC))
}

/// The lower median.
fn median(values: impl Iterator<Item = i64>) -> Option<i64> {
    let mut values: Vec<i64> = values.collect();
    if values.is_empty() {
        return None;
    }
    let middle = (values.len() - 1) / 2;
    Some(*values.select_nth_unstable(middle).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{EventBody, LogEvent, Resource};
    use std::sync::Arc;

    const S: i64 = NANOS_PER_SEC;
    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600 * S;
    const YEAR_2100: i64 = 4_102_444_800 * S;

    fn event(time: UnixNanos) -> Event {
        Event {
            time,
            resource: Arc::new(Resource::new("cart")),
            body: EventBody::Log(LogEvent {
                level: None,
                body: "checkout".into(),
                trace_id: None,
                span_id: None,
                attributes: Default::default(),
                template: None,
            }),
        }
    }

    /// One message of `times`, produced `lag` after the first of them.
    fn message(guard: &mut TimeGuard, times: &[i64], lag: i64) -> (Vec<i64>, Vec<i64>) {
        let kafka_ms = (times[0] + lag) / 1_000_000;
        let events = times.iter().map(|t| event(*t)).collect();
        let (ok, refused) = guard.split("otlp_spans", 0, Some(kafka_ms), events, NOW);
        assert!(refused.iter().all(|r| !r.detail.is_empty()));
        (
            ok.iter().map(|e| e.time).collect(),
            refused.iter().map(|r| r.event.time).collect(),
        )
    }

    #[test]
    fn a_future_stamp_is_refused_against_the_wall_clock_and_the_past_is_not() {
        let mut guard = TimeGuard::new(300, 86_400);
        // A replay of 2020, in the partition's first message; one event from 2100 among them.
        let old = NOW - 6 * 365 * 86_400 * S;
        let (ok, refused) = message(&mut guard, &[old, old + S, YEAR_2100, NOW + 299 * S], 0);
        assert_eq!(
            refused,
            vec![YEAR_2100, NOW + 299 * S],
            "NOW + 299 s is 6 years off the partition"
        );
        assert_eq!(ok, vec![old, old + S]);

        let mut live = TimeGuard::new(300, 86_400);
        let (ok, refused) = message(&mut live, &[NOW - S, NOW + 299 * S, NOW + 301 * S], S);
        assert_eq!(
            (ok, refused),
            (vec![NOW - S, NOW + 299 * S], vec![NOW + 301 * S])
        );
    }

    #[test]
    fn one_message_far_off_cannot_move_the_partitions_event_time_but_several_agreeing_can() {
        let mut guard = TimeGuard::new(300, 86_400);
        let day = 86_400 * S;
        let start = NOW - 30 * day;
        for i in 0..5 {
            let t = start + i * 10 * S;
            assert_eq!(message(&mut guard, &[t, t + S], 2 * S).1, Vec::<i64>::new());
        }
        // Two days behind in event time (a wrong clock), produced in line with the others.
        let wrong = start + 50 * S - 2 * day;
        let (ok, refused) = message(&mut guard, &[wrong], 2 * day + 2 * S);
        assert_eq!((ok.len(), refused), (0, vec![wrong]));
        let t = start + 60 * S;
        assert_eq!(
            message(&mut guard, &[t], 2 * S).0,
            vec![t],
            "the reference held"
        );

        // A replay that skips two days of event time, produced without a pause: refused until
        // most of the window agrees.
        let resumed = start + 2 * day;
        let refused_before = (0..WINDOW as i64)
            .position(|i| {
                let t = resumed + i * 10 * S;
                !message(&mut guard, &[t], 70 * S - 2 * day).0.is_empty()
            })
            .expect("the partition follows the replay");
        assert_eq!(refused_before, WINDOW / 2 + 1);
    }

    #[test]
    fn a_quiet_partition_resumes_with_its_kafka_timestamps() {
        let mut guard = TimeGuard::new(300, 86_400);
        let day = 86_400 * S;
        for i in 0..5 {
            let t = NOW - 10 * day + i * S;
            assert!(message(&mut guard, &[t], S).1.is_empty());
        }
        // A deployment a week later, produced a week later.
        let later = NOW - 3 * day;
        assert_eq!(message(&mut guard, &[later], S).0, vec![later]);
    }

    #[test]
    fn zero_turns_the_bounds_off() {
        let mut guard = TimeGuard::new(0, 0);
        for _ in 0..5 {
            assert!(message(&mut guard, &[NOW], 0).1.is_empty());
        }
        assert_eq!(message(&mut guard, &[YEAR_2100], 0).0, vec![YEAR_2100]);
    }
}
