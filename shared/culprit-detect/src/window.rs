//! Event-time tumbling windows keyed by whatever a detector aggregates.

use culprit_core::UnixNanos;
use std::collections::BTreeMap;

/// Aggregates of type `A` per window start. Windows close once the watermark passes their end
/// plus the allowed lateness; events older than the oldest open window are folded into it rather
/// than dropped, because a late event is still evidence.
#[derive(Debug)]
pub struct Windows<A> {
    width: i64,
    lateness: i64,
    open: BTreeMap<UnixNanos, A>,
    /// Start of the newest window already closed.
    closed_until: Option<UnixNanos>,
}

impl<A: Default> Windows<A> {
    pub fn new(width: i64, lateness: i64) -> Self {
        Windows {
            width: width.max(1),
            lateness: lateness.max(0),
            open: BTreeMap::new(),
            closed_until: None,
        }
    }

    pub fn width(&self) -> i64 {
        self.width
    }

    /// The aggregate of the window holding `time`.
    pub fn at(&mut self, time: UnixNanos) -> &mut A {
        let mut start = time.div_euclid(self.width) * self.width;
        if let Some(closed) = self.closed_until {
            if start <= closed {
                start = closed + self.width;
            }
        }
        self.open.entry(start).or_default()
    }

    /// Removes and returns, oldest first, every window that ends before `watermark - lateness`.
    pub fn close_until(&mut self, watermark: UnixNanos) -> Vec<(UnixNanos, A)> {
        let mut out = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            if start + self.width + self.lateness > watermark {
                break;
            }
            let agg = self.open.remove(&start).expect("first key exists");
            self.closed_until = Some(start);
            out.push((start, agg));
        }
        out
    }

    /// Closes everything and forgets the clock, so the next event may come from any time.
    pub fn close_all(&mut self) -> Vec<(UnixNanos, A)> {
        let out = self.close_until(i64::MAX / 2);
        self.closed_until = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_after_lateness_and_late_events_join_the_next_open_window() {
        let mut w: Windows<u32> = Windows::new(10, 5);
        *w.at(3) += 1;
        *w.at(12) += 1;
        assert!(
            w.close_until(14).is_empty(),
            "window [0,10) waits for lateness"
        );
        let closed = w.close_until(15);
        assert_eq!(closed, vec![(0, 1)]);
        *w.at(4) += 1; // late: joins [10,20)
        assert_eq!(w.close_all(), vec![(10, 2)]);
    }
}
