//! Tail probabilities for count tests, as "surprise" = -log10(p).
//!
//! Window detectors test many (service, signal) pairs every few seconds, so they judge counts by
//! how improbable they are under the baseline rate, and map that surprise onto severities with
//! levels far stricter than a single test would need (see [`SurpriseLevels`]).

use culprit_core::Severity;
use serde::{Deserialize, Serialize};

/// Surprise (-log10 p) at or above which a count is SEV1 .. SEV5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurpriseLevels {
    pub sev1: f64,
    pub sev2: f64,
    pub sev3: f64,
    pub sev4: f64,
    pub sev5: f64,
}

impl Default for SurpriseLevels {
    fn default() -> Self {
        SurpriseLevels {
            sev1: 12.0,
            sev2: 8.0,
            sev3: 5.0,
            sev4: 4.0,
            sev5: 3.0,
        }
    }
}

impl SurpriseLevels {
    pub fn severity(&self, surprise: f64) -> Option<Severity> {
        [
            (self.sev1, Severity::Sev1),
            (self.sev2, Severity::Sev2),
            (self.sev3, Severity::Sev3),
            (self.sev4, Severity::Sev4),
            (self.sev5, Severity::Sev5),
        ]
        .into_iter()
        .find(|(level, _)| surprise >= *level)
        .map(|(_, s)| s)
    }

    /// Surprise as a score in [0, 1]: 0 at the SEV5 level, 1 at twice the SEV1 level.
    pub fn score(&self, surprise: f64) -> f64 {
        ((surprise - self.sev5) / (2.0 * self.sev1 - self.sev5)).clamp(0.0, 1.0) * 0.5
            + if surprise >= self.sev5 { 0.5 } else { 0.0 }
    }
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// log10 of a sum of terms given as natural logs, computed stably.
fn log10_sum_exp(terms: impl Iterator<Item = f64>) -> f64 {
    let terms: Vec<f64> = terms.collect();
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()) / std::f64::consts::LN_10
}

/// -log10 P(X >= k) for X ~ Binomial(n, p).
pub fn binomial_surprise(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    if k > n {
        return f64::INFINITY;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let ln_choose = |i: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(i as f64 + 1.0) - ln_gamma((n - i) as f64 + 1.0)
    };
    // The tail's terms shrink fast once past the mode; 400 of them is ample.
    let upper = n.min(k + 400);
    let log_p = log10_sum_exp(
        (k..=upper).map(|i| ln_choose(i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()),
    );
    (-log_p).max(0.0)
}

/// -log10 P(X <= k) for X ~ Binomial(n, p): how surprising it is to see so few.
pub fn binomial_lower_surprise(k: u64, n: u64, p: f64) -> f64 {
    if n == 0 || k >= n {
        return 0.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let ln_choose = |i: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(i as f64 + 1.0) - ln_gamma((n - i) as f64 + 1.0)
    };
    let lower = k.saturating_sub(400);
    let log_p = log10_sum_exp(
        (lower..=k).map(|i| ln_choose(i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()),
    );
    (-log_p).max(0.0)
}

/// -log10 P(X >= k) for X ~ Poisson(lambda).
pub fn poisson_surprise(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let lambda = lambda.max(1e-9);
    let upper = k + 400;
    let log_p = log10_sum_exp(
        (k..=upper).map(|i| i as f64 * lambda.ln() - lambda - ln_gamma(i as f64 + 1.0)),
    );
    (-log_p).max(0.0)
}

/// How surprising `slow` values over a quantile threshold are (`expected` by chance), or
/// `beyond` values larger than any the baseline holds (`expected_beyond`: a fresh normal value
/// beats the largest of m baseline values with chance 1/(m+1)), whichever says more. The count
/// over the threshold alone treats a value beyond everything the baseline ever saw like one just
/// past its quantile: a few such values (a network delay adds seconds to millisecond waits) are
/// rarer by chance than many just over a quantile. Two tests were run, so the better one pays
/// for the choice (log10 2).
pub fn exceedance_surprise(slow: u64, expected: f64, beyond: u64, expected_beyond: f64) -> f64 {
    let over_quantile = poisson_surprise(slow, expected);
    let over_range = poisson_surprise(beyond, expected_beyond);
    (over_quantile.max(over_range) - std::f64::consts::LOG10_2).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_closed_forms() {
        // P(X >= 1) = 1 - (1-p)^n
        let s = binomial_surprise(1, 10, 0.1);
        let expected = -(1.0 - 0.9f64.powi(10)).log10();
        assert!((s - expected).abs() < 1e-9, "{s} vs {expected}");
        // P(X >= n) = p^n
        let s = binomial_surprise(5, 5, 0.01);
        assert!((s - 10.0).abs() < 1e-6, "{s}");
        assert_eq!(binomial_surprise(0, 10, 0.5), 0.0);
    }

    #[test]
    fn lower_binomial_tail_matches_closed_forms() {
        // P(X <= 0) = (1-p)^n
        let s = binomial_lower_surprise(0, 20, 0.5);
        assert!((s - 20.0 * 2f64.log10()).abs() < 1e-9, "{s}");
        assert_eq!(binomial_lower_surprise(20, 20, 0.5), 0.0);
        assert!(binomial_lower_surprise(9, 20, 0.5) < 0.5);
    }

    #[test]
    fn poisson_tail_matches_closed_forms() {
        // P(X >= 1) = 1 - e^-lambda
        let s = poisson_surprise(1, 0.5);
        let expected = -(1.0 - (-0.5f64).exp()).log10();
        assert!((s - expected).abs() < 1e-9);
        assert!(poisson_surprise(30, 2.0) > 12.0);
        assert!(poisson_surprise(3, 2.0) < 1.0);
    }

    #[test]
    fn surprise_maps_to_severity_and_score() {
        let levels = SurpriseLevels::default();
        assert_eq!(levels.severity(20.0), Some(Severity::Sev1));
        assert_eq!(levels.severity(6.0), Some(Severity::Sev3));
        assert_eq!(levels.severity(1.0), None);
        assert!(levels.score(20.0) > levels.score(6.0));
        assert!(levels.score(1.0) < 0.5 && levels.score(3.0) >= 0.5);
    }
}
