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
    /// The most recent windows: (lines per template, lines).
    recent: VecDeque<(HashMap<TemplateId, u32>, u32)>,
    /// Templates reported missing that have not come back yet.
    missing: HashSet<TemplateId>,
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

    /// Takes one closed window and returns the templates newly found missing over the trailing
    /// `horizon` windows whose absence is at least `min_surprise` surprising.
    pub fn judge(
        &mut self,
        counts: HashMap<TemplateId, u32>,
        horizon: usize,
        min_surprise: f64,
    ) -> Vec<MissingTemplate> {
        let lines: u32 = counts.values().sum();
        self.recent.push_back((counts, lines));
        while self.recent.len() > horizon.max(1) {
            self.recent.pop_front();
        }
        if self.total < Self::MIN_BASELINE_LINES {
            return Vec::new();
        }
        let n: u64 = self.recent.iter().map(|(_, l)| u64::from(*l)).sum();
        let mut found = Vec::new();
        for (&template, &baseline) in &self.counts {
            let share = baseline / self.total;
            let expected = n as f64 * share;
            let observed: u64 = self
                .recent
                .iter()
                .map(|(c, _)| u64::from(c.get(&template).copied().unwrap_or(0)))
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
        for _ in 0..6 {
            assert!(mix
                .judge(window(&[(1, 5), (2, 5), (3, 1)]), 6, 5.0)
                .is_empty());
        }
        // Template 2 stops.
        let mut found = Vec::new();
        for _ in 0..6 {
            found.extend(mix.judge(window(&[(1, 10), (3, 2)]), 6, 5.0));
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
}
