//! Which log templates a service usually writes, and in what proportions, so that a template that
//! normally accompanies its work but stops appearing can be noticed.
//!
//! An exception thrown halfway through a request skips the log lines after it: the service stays
//! busy, its error count may not even move, but a line it always wrote goes missing. Judging each
//! template's share of the service's lines (rather than its rate) keeps load changes out of it.

use crate::stats::binomial_lower_surprise;
use culprit_drain::TemplateId;
use std::collections::{HashMap, HashSet, VecDeque};

/// A template seen far less than its usual share.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingTemplate {
    pub template: TemplateId,
    pub observed: u64,
    pub expected: f64,
    pub surprise: f64,
}

#[derive(Debug, Default)]
pub struct TemplateMix {
    /// Baseline lines per template, decayed.
    counts: HashMap<TemplateId, f64>,
    total: f64,
    /// The windows of the trailing horizon, oldest first.
    recent: VecDeque<RecentWindow>,
    /// Templates reported missing that have not come back yet.
    missing: HashSet<TemplateId>,
}

/// A window still inside the horizon.
#[derive(Debug)]
struct RecentWindow {
    start: i64,
    counts: HashMap<TemplateId, u32>,
    lines: u32,
}

impl TemplateMix {
    const DECAY_AT: f64 = 100_000.0;
    /// Baseline lines a service needs before its mix is trusted.
    const MIN_BASELINE_LINES: f64 = 40.0;
    /// Lines the trailing horizon must have been expected to hold before absence means anything.
    const MIN_EXPECTED: f64 = 8.0;

    pub fn learn(&mut self, counts: &HashMap<TemplateId, u32>) {
        for (t, c) in counts {
            *self.counts.entry(*t).or_default() += f64::from(*c);
            self.total += f64::from(*c);
        }
        if self.total > Self::DECAY_AT {
            self.counts.values_mut().for_each(|c| *c /= 2.0);
            self.total /= 2.0;
        }
    }

    /// Takes the window closed at `start` and returns the templates newly found missing over the
    /// trailing `horizon` (event time, same unit as `start`) whose absence is at least
    /// `min_surprise` surprising.
    ///
    /// The horizon is a span of time, not a number of windows: a quiet service closes no window
    /// while it writes nothing, and counting only its busy windows would stretch "the last
    /// minute" back to lines written long before.
    pub fn judge(
        &mut self,
        start: i64,
        counts: HashMap<TemplateId, u32>,
        horizon: i64,
        min_surprise: f64,
    ) -> Vec<MissingTemplate> {
        let lines: u32 = counts.values().sum();
        self.recent.push_back(RecentWindow {
            start,
            counts,
            lines,
        });
        while self
            .recent
            .front()
            .is_some_and(|oldest| oldest.start <= start - horizon)
        {
            self.recent.pop_front();
        }
        if self.total < Self::MIN_BASELINE_LINES {
            return Vec::new();
        }
        let n: u64 = self.recent.iter().map(|w| u64::from(w.lines)).sum();
        let mut found = Vec::new();
        for (&template, &baseline) in &self.counts {
            let share = baseline / self.total;
            let expected = n as f64 * share;
            let observed: u64 = self
                .recent
                .iter()
                .map(|w| u64::from(w.counts.get(&template).copied().unwrap_or(0)))
                .sum();
            if self.missing.contains(&template) {
                if observed as f64 >= 0.5 * expected {
                    self.missing.remove(&template);
                }
                continue;
            }
            if expected < Self::MIN_EXPECTED || observed as f64 > 0.25 * expected {
                continue;
            }
            let surprise = binomial_lower_surprise(observed, n, share);
            if surprise >= min_surprise {
                self.missing.insert(template);
                found.push(MissingTemplate {
                    template,
                    observed,
                    expected,
                    surprise,
                });
            }
        }
        found.sort_by(|a, b| b.surprise.total_cmp(&a.surprise));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(pairs: &[(TemplateId, u32)]) -> HashMap<TemplateId, u32> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_template_that_stops_while_its_companions_go_on_is_missing_once() {
        let mut mix = TemplateMix::default();
        for _ in 0..30 {
            mix.learn(&window(&[(1, 10), (2, 10), (3, 2)]));
        }
        // Load halves: every share stays the same, nothing is missing.
        for start in 0..6 {
            assert!(mix
                .judge(start, window(&[(1, 5), (2, 5), (3, 1)]), 6, 5.0)
                .is_empty());
        }
        // Template 2 stops.
        let mut found = Vec::new();
        for start in 6..12 {
            found.extend(mix.judge(start, window(&[(1, 10), (3, 2)]), 6, 5.0));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].template, 2);
        assert!(
            (found[0].observed as f64) <= 0.25 * found[0].expected,
            "{found:?}"
        );
        // rare template 3 is never judged missing on thin evidence
        assert!(found.iter().all(|m| m.template != 3));
    }

    #[test]
    fn a_quiet_services_horizon_is_a_span_of_time_not_a_count_of_its_busy_windows() {
        let mut mix = TemplateMix::default();
        for _ in 0..30 {
            mix.learn(&window(&[(1, 10), (2, 10)]));
        }
        // Busy windows with both lines, then template 2 stops while the service writes only
        // now and then: every other window of the horizon (6) is empty and never closes.
        for start in 0..6 {
            assert!(mix
                .judge(start, window(&[(1, 10), (2, 10)]), 6, 5.0)
                .is_empty());
        }
        let mut found = Vec::new();
        for start in [6, 8, 10, 12] {
            found.extend(mix.judge(start, window(&[(1, 10)]), 6, 5.0));
        }
        // By window 12 the horizon (6, 12] holds only windows without template 2. Counting the
        // last six windows that had lines would still reach back to 2..5 and keep it hidden.
        assert_eq!(
            found.iter().map(|m| m.template).collect::<Vec<_>>(),
            vec![2],
            "{found:?}"
        );
    }
}
