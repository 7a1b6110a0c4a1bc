//! Which log templates a service usually writes, and in what proportions, so that a template that
//! normally accompanies its work but stops appearing can be noticed.
//!
//! An exception thrown halfway through a request skips the log lines after it: the service stays
//! busy, its error count may not even move, but a line it always wrote goes missing. Judging each
//! template's share of the service's lines (rather than its rate) keeps load changes out of it.

use crate::stats::binomial_lower_surprise;
use culprit_drain::TemplateId;
use std::collections::{HashMap, VecDeque};

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
    /// Templates reported missing that have not come back yet, with the window they went
    /// missing in.
    missing: HashMap<TemplateId, i64>,
}

/// A window still inside the horizon; tainted once a template was missing while it was there.
#[derive(Debug)]
struct RecentWindow {
    start: i64,
    counts: HashMap<TemplateId, u32>,
    lines: u32,
    tainted: bool,
}

/// What a [`TemplateMix`] learned: the usual counts, not the trailing windows.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct MixState {
    counts: HashMap<TemplateId, f64>,
    total: f64,
}

impl TemplateMix {
    pub fn save_state(&self) -> MixState {
        MixState {
            counts: self.counts.clone(),
            total: self.total,
        }
    }

    pub fn restored(state: MixState) -> TemplateMix {
        TemplateMix {
            counts: state.counts,
            total: state.total,
            ..TemplateMix::default()
        }
    }

    const DECAY_AT: f64 = 100_000.0;
    /// Baseline lines a service needs before its mix is trusted.
    const MIN_BASELINE_LINES: f64 = 40.0;
    /// Lines the trailing horizon must have been expected to hold before absence means anything.
    const MIN_EXPECTED: f64 = 8.0;
    /// Horizons a template may stay missing before its absence is taken as the new normal
    /// (a release that stopped writing it), so the mix learns again.
    const ACCEPT_GONE_AFTER_HORIZONS: i64 = 15;

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
    /// minute" back to lines written long before. A window joins the baseline only once it
    /// leaves the horizon with no template missing meanwhile, so a line that is already gone
    /// when the service is first watched is judged against what was normal before rather than
    /// learned away.
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
            tainted: false,
        });
        while self
            .recent
            .front()
            .is_some_and(|oldest| oldest.start <= start - horizon)
        {
            if let Some(old) = self.recent.pop_front().filter(|w| !w.tainted) {
                self.learn(&old.counts);
            }
        }
        if self.total < Self::MIN_BASELINE_LINES {
            return Vec::new();
        }
        let n: u64 = self.recent.iter().map(|w| u64::from(w.lines)).sum();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for (&template, &baseline) in &self.counts {
            let share = baseline / self.total;
            let expected = n as f64 * share;
            let observed: u64 = self
                .recent
                .iter()
                .map(|w| u64::from(w.counts.get(&template).copied().unwrap_or(0)))
                .sum();
            if let Some(&since) = self.missing.get(&template) {
                if observed as f64 >= 0.5 * expected {
                    self.missing.remove(&template);
                } else if start - since > Self::ACCEPT_GONE_AFTER_HORIZONS * horizon {
                    gone.push(template);
                }
                continue;
            }
            if expected < Self::MIN_EXPECTED || observed as f64 > 0.25 * expected {
                continue;
            }
            let surprise = binomial_lower_surprise(observed, n, share);
            if surprise >= min_surprise {
                self.missing.insert(template, start);
                found.push(MissingTemplate {
                    template,
                    observed,
                    expected,
                    surprise,
                });
            }
        }
        for template in gone {
            self.missing.remove(&template);
            self.total -= self.counts.remove(&template).unwrap_or(0.0);
        }
        if !self.missing.is_empty() {
            self.recent.iter_mut().for_each(|w| w.tainted = true);
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

    #[test]
    fn a_line_already_gone_when_watching_starts_is_missing_not_learned_away() {
        let mut mix = TemplateMix::default();
        mix.learn(&window(&[(1, 50), (2, 50)]));
        // Few lines a window: the horizon (6) fills slowly. Had each window been learned as it
        // closed, template 2's share would shrink faster than the evidence of its absence grows.
        let found: Vec<_> = (0..6)
            .flat_map(|start| mix.judge(start, window(&[(1, 3)]), 6, 5.0))
            .collect();
        assert_eq!(
            found.iter().map(|m| m.template).collect::<Vec<_>>(),
            vec![2],
            "{found:?}"
        );
    }

    #[test]
    fn a_line_gone_for_good_becomes_the_new_normal_and_the_mix_learns_again() {
        let mut mix = TemplateMix::default();
        for _ in 0..10 {
            mix.learn(&window(&[(1, 10), (2, 10)]));
        }
        let mut start = 0;
        let mut judge = |mix: &mut TemplateMix, counts: &[(TemplateId, u32)], windows: i64| {
            let mut found = Vec::new();
            for _ in 0..windows {
                found.extend(mix.judge(start, window(counts), 6, 5.0));
                start += 1;
            }
            found
        };
        assert_eq!(judge(&mut mix, &[(1, 10)], 10).len(), 1);
        // Template 2 never returns; a new line 3 appears with the release that dropped it.
        assert!(judge(&mut mix, &[(1, 10), (3, 10)], 200).is_empty());
        // Once 2's absence was accepted the mix learned 3, so 3 stopping is noticed.
        let found = judge(&mut mix, &[(1, 10)], 10);
        assert_eq!(
            found.iter().map(|m| m.template).collect::<Vec<_>>(),
            vec![3],
            "{found:?}"
        );
    }
}
