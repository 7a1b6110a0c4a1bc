//! The identity of an event, from which its point's id is derived: the same record decoded twice
//! (redelivery, replay) maps to the same id, so writing it again replaces its point.

use crate::PointId;
use culprit_core::{Event, EventBody};

/// A stable identity of an event, equal for the same record decoded twice (redelivery, replay):
/// `span:<trace_id>:<span_id>` and `change:<id>` for records that carry ids, otherwise
/// `log:` / `metric:` and a 64-bit FNV-1a hash of the record's time, resource and content.
/// Suitable as the primary key of an idempotent store.
pub fn event_key(event: &Event) -> String {
    match &event.body {
        EventBody::Span(s) => format!("span:{}:{}", s.trace_id, s.span_id),
        EventBody::Change(c) => format!("change:{}", c.id),
        EventBody::Log(l) => {
            let mut h = Fnv::new();
            h.resource(event);
            h.str(&l.body);
            h.str(l.trace_id.as_deref().unwrap_or(""));
            h.str(l.span_id.as_deref().unwrap_or(""));
            h.str(l.level.map(|v| format!("{v:?}")).as_deref().unwrap_or(""));
            for (k, v) in &l.attributes {
                h.str(k);
                h.str(v);
            }
            format!("log:{}:{:016x}", event.time, h.0.value())
        }
        EventBody::Metric(m) => {
            let mut h = Fnv::new();
            h.resource(event);
            h.str(&m.name);
            for (k, v) in &m.attributes {
                h.str(k);
                h.str(v);
            }
            // The value is not part of the identity: a point is one series at one time.
            format!("metric:{}:{:016x}", event.time, h.0.value())
        }
    }
}

impl PointId {
    /// The id of `event`'s point: [`event_key`] and the event time, hashed.
    pub fn of_event(event: &Event) -> PointId {
        PointId::from_identity(&[&event_key(event)], event.time)
    }
}

struct Fnv(culprit_core::hash::Fnv1a);

impl Fnv {
    fn new() -> Fnv {
        Fnv(culprit_core::hash::Fnv1a::new())
    }

    fn str(&mut self, s: &str) {
        self.0.write_field(s.as_bytes());
    }

    fn resource(&mut self, event: &Event) {
        self.str(&event.resource.service);
        self.str(&event.resource.environment);
        self.str(event.resource.instance.as_deref().unwrap_or(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{LogEvent, Resource};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn log(body: &str, time: i64) -> Event {
        Event {
            time,
            resource: Arc::new(Resource::new("cart").with_instance("cart-1")),
            body: EventBody::Log(LogEvent {
                level: None,
                body: body.to_string(),
                trace_id: None,
                span_id: None,
                attributes: BTreeMap::new(),
                template: None,
            }),
        }
    }

    #[test]
    fn event_keys_are_equal_for_equal_records_and_differ_otherwise() {
        assert_eq!(event_key(&log("a", 1)), event_key(&log("a", 1)));
        assert_ne!(event_key(&log("a", 1)), event_key(&log("b", 1)));
        assert_ne!(event_key(&log("a", 1)), event_key(&log("a", 2)));
        // Field boundaries count: "ab"+"" is not "a"+"b".
        let mut x = log("ab", 1);
        let mut y = log("a", 1);
        if let (EventBody::Log(lx), EventBody::Log(ly)) = (&mut x.body, &mut y.body) {
            lx.trace_id = Some(String::new());
            ly.trace_id = Some("b".to_string());
        }
        assert_ne!(event_key(&x), event_key(&y));
    }

    #[test]
    fn a_point_id_is_the_event_key_and_time_hashed_as_the_store_sink_always_did() {
        let e = log("a", 7);
        assert_eq!(
            PointId::of_event(&e),
            PointId::from_identity(&[&event_key(&e)], 7)
        );
        assert_ne!(PointId::of_event(&e), PointId::of_event(&log("a", 8)));
    }
}
