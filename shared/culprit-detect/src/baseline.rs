//! Time-aware baselines: robust location/scale and percentile thresholds per signal.
//!
//! A [`Baseline`] keeps recent values in three tiers of buckets: hour-of-week (168), hour-of-day
//! (24) and global. A lookup uses the most specific tier that has enough samples, so a signal with
//! a weekly rhythm is judged against the same hour last week once culprit has seen one, and
//! against everything it has seen until then. Buckets are bounded rings of the most recent values:
//! memory is fixed and thresholds adapt as behaviour drifts.

use culprit_core::{Severity, UnixNanos, NANOS_PER_SEC};
use serde::{Deserialize, Serialize};

/// Percentile levels that map onto severities: beyond `sev1` is SEV1, and so on down to `sev5`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityLevels {
    pub sev1: f64,
    pub sev2: f64,
    pub sev3: f64,
    pub sev4: f64,
    pub sev5: f64,
}

impl Default for SeverityLevels {
    fn default() -> Self {
        SeverityLevels {
            sev1: 0.999,
            sev2: 0.99,
            sev3: 0.95,
            sev4: 0.90,
            sev5: 0.80,
        }
    }
}

impl SeverityLevels {
    /// (quantile, severity) pairs, most severe first.
    pub fn levels(&self) -> [(f64, Severity); 5] {
        [
            (self.sev1, Severity::Sev1),
            (self.sev2, Severity::Sev2),
            (self.sev3, Severity::Sev3),
            (self.sev4, Severity::Sev4),
            (self.sev5, Severity::Sev5),
        ]
    }
}

/// Which side of the baseline is abnormal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

/// How many values a bucket keeps and how many it needs before it is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Values kept per bucket (a ring of the most recent).
    pub capacity: usize,
    /// Samples an hour-of-week or hour-of-day bucket needs before it replaces the coarser tier.
    pub min_bucket_samples: usize,
    /// Samples the global tier needs before the baseline judges anything at all.
    pub min_samples: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            capacity: 512,
            min_bucket_samples: 60,
            min_samples: 8,
        }
    }
}

/// A bounded ring of recent values with a lazily sorted copy for quantiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ring {
    values: Vec<f64>,
    next: usize,
    seen: u64,
    sorted: Vec<f64>,
    /// Inserts since `sorted` was rebuilt.
    stale: usize,
    /// Event time of the last value pushed.
    last: Option<UnixNanos>,
}

impl Ring {
    fn push(&mut self, x: f64, capacity: usize) {
        if self.values.len() < capacity {
            self.values.push(x);
        } else {
            self.values[self.next] = x;
            self.next = (self.next + 1) % capacity;
        }
        self.seen += 1;
        self.stale += 1;
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// Re-sorting on every insert would be O(n log n) per event; a copy that is at most 10%
    /// stale moves quantiles by far less than the noise in them.
    fn sorted(&mut self) -> &[f64] {
        if self.sorted.len() != self.values.len() || self.stale * 10 > self.values.len() {
            self.sorted.clear();
            self.sorted.extend_from_slice(&self.values);
            self.sorted.sort_by(f64::total_cmp);
            self.stale = 0;
        }
        &self.sorted
    }
}

/// A summary of the bucket a value is judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub samples: usize,
    pub median: f64,
    /// Robust scale: the larger of 1.4826 * MAD and IQR / 1.349 (1.2533 * the mean absolute
    /// deviation when both are 0), floored so that a flat signal does not make every wiggle
    /// infinitely surprising.
    pub scale: f64,
    sorted: Vec<f64>,
}

impl Profile {
    fn from_sorted(sorted: &[f64]) -> Profile {
        let median = quantile_sorted(sorted, 0.5);
        let mut deviations: Vec<f64> = sorted.iter().map(|x| (x - median).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let mad = quantile_sorted(&deviations, 0.5) * 1.4826;
        let iqr = (quantile_sorted(sorted, 0.75) - quantile_sorted(sorted, 0.25)) / 1.349;
        // When most values are equal (a rate that mostly reads 0 and sometimes a little more),
        // MAD and IQR are 0 although the series moves; the mean absolute deviation (x1.2533,
        // sigma for normal data) still measures how far it moves, as in Iglewicz and Hoaglin's
        // modified z-score. It is 0 only for a series that held one value.
        let spread = match mad.max(iqr) {
            s if s > 0.0 => s,
            _ => deviations.iter().sum::<f64>() / deviations.len().max(1) as f64 * 1.2533,
        };
        let floor = (median.abs() * 0.02).max(1e-9);
        Profile {
            samples: sorted.len(),
            median,
            scale: spread.max(floor),
            sorted: sorted.to_vec(),
        }
    }

    /// The value at quantile `q` of the bucket. An empirical quantile needs about 10/(1-q)
    /// samples to be stable; with fewer, the threshold is extrapolated from the robust
    /// location and scale as if the tail were normal, and never set below the empirical one.
    pub fn threshold(&self, q: f64, direction_up: bool) -> f64 {
        let z = normal_quantile(q);
        let enough = (self.samples as f64) >= 10.0 / (1.0 - q);
        if direction_up {
            let empirical = quantile_sorted(&self.sorted, q);
            if enough {
                empirical
            } else {
                empirical.max(self.median + z * self.scale)
            }
        } else {
            let empirical = quantile_sorted(&self.sorted, 1.0 - q);
            if enough {
                empirical
            } else {
                empirical.min(self.median - z * self.scale)
            }
        }
    }

    /// How far `x` lies outside the bucket's observed range, in units of that range (0 inside it).
    pub fn range_excess(&self, x: f64) -> f64 {
        let (Some(lo), Some(hi)) = (self.sorted.first(), self.sorted.last()) else {
            return 0.0;
        };
        let span = (hi - lo).max(self.scale);
        if x > *hi {
            (x - hi) / span
        } else if x < *lo {
            (lo - x) / span
        } else {
            0.0
        }
    }

    /// The one value the bucket holds, when every sample in it is the same.
    pub fn held_value(&self) -> Option<f64> {
        let (first, last) = (self.sorted.first()?, self.sorted.last()?);
        (first == last).then_some(*first)
    }

    /// The largest value the bucket holds.
    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(self.median)
    }

    /// Arithmetic mean of the bucket (the rate a count test expects).
    pub fn mean(&self) -> f64 {
        self.sorted.iter().sum::<f64>() / self.sorted.len().max(1) as f64
    }

    /// Robust z-score of `x`.
    pub fn z(&self, x: f64) -> f64 {
        (x - self.median) / self.scale
    }

    /// The worst severity whose threshold `x` lies beyond, in the given direction.
    pub fn severity(
        &self,
        x: f64,
        direction: Direction,
        levels: &SeverityLevels,
    ) -> Option<Severity> {
        levels.levels().into_iter().find_map(|(q, sev)| {
            let up =
                matches!(direction, Direction::Up | Direction::Both) && x > self.threshold(q, true);
            let down = matches!(direction, Direction::Down | Direction::Both)
                && x < self.threshold(q, false);
            (up || down).then_some(sev)
        })
    }

    /// Fraction of baseline values at or below `x`.
    pub fn percentile(&self, x: f64) -> f64 {
        let below = self.sorted.partition_point(|v| *v <= x);
        below as f64 / self.sorted.len().max(1) as f64
    }
}

/// Which values a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// One hour of the week, Monday 00:00 UTC = 0.
    HourOfWeek(u8),
    /// One hour of the day, UTC.
    HourOfDay(u8),
    Global,
}

/// The value beyond which an observation is reported at `severity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdSummary {
    pub severity: Severity,
    pub above: Option<f64>,
    pub below: Option<f64>,
}

/// One bucket of a [`BaselineSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSummary {
    pub tier: Tier,
    pub samples: usize,
    pub median: f64,
    /// Most severe first.
    pub thresholds: Vec<ThresholdSummary>,
    /// Event time of the last value this bucket took in.
    pub learned_at: Option<UnixNanos>,
}

/// A baseline as an operator sees it ([`Baseline::summary`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSummary {
    /// Values learned since the baseline started.
    pub samples: u64,
    pub learned_at: Option<UnixNanos>,
    pub buckets: Vec<BucketSummary>,
}

/// Values of one signal in hour-of-week, hour-of-day and global buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baseline {
    hour_of_week: Vec<Ring>,
    hour_of_day: Vec<Ring>,
    global: Ring,
    /// The value the last samples learned all had, and how many in a row: a bucket holds at
    /// most `capacity` samples, a series may have held one value far longer. Absent (empty) in
    /// states saved before it was kept.
    #[serde(default)]
    held: Held,
}

/// A run of identical learned samples.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Held {
    value: f64,
    samples: u64,
}

impl Baseline {
    pub fn observe(&mut self, time: UnixNanos, x: f64, config: &BaselineConfig) {
        if !x.is_finite() {
            return;
        }
        if self.hour_of_week.is_empty() {
            self.hour_of_week = vec![Ring::default(); 168];
            self.hour_of_day = vec![Ring::default(); 24];
        }
        self.held = if self.held.samples > 0 && self.held.value == x {
            Held {
                samples: self.held.samples + 1,
                ..self.held
            }
        } else {
            Held {
                value: x,
                samples: 1,
            }
        };
        let (how, hod) = hour_buckets(time);
        for ring in [
            &mut self.hour_of_week[how],
            &mut self.hour_of_day[hod],
            &mut self.global,
        ] {
            ring.push(x, config.capacity);
            ring.last = Some(ring.last.map_or(time, |t| t.max(time)));
        }
    }

    /// How many samples in a row, up to the last one learned, were exactly `value`.
    pub fn held_for(&self, value: f64) -> u64 {
        if self.held.value == value {
            self.held.samples
        } else {
            0
        }
    }

    /// What an operator sees of this baseline: every bucket holding values, with its median and
    /// the thresholds each severity starts at, all passed through `unit` (for example from the
    /// log scale a detector learns in back to milliseconds).
    pub fn summary(
        &self,
        direction: Direction,
        levels: &SeverityLevels,
        unit: fn(f64) -> f64,
    ) -> BaselineSummary {
        let tiers = self
            .hour_of_week
            .iter()
            .enumerate()
            .map(|(h, r)| (Tier::HourOfWeek(h as u8), r))
            .chain(
                self.hour_of_day
                    .iter()
                    .enumerate()
                    .map(|(h, r)| (Tier::HourOfDay(h as u8), r)),
            )
            .chain(std::iter::once((Tier::Global, &self.global)));
        let buckets = tiers
            .filter(|(_, ring)| ring.len() > 0)
            .map(|(tier, ring)| {
                let mut sorted = ring.values.clone();
                sorted.sort_by(f64::total_cmp);
                let profile = Profile::from_sorted(&sorted);
                let up = matches!(direction, Direction::Up | Direction::Both);
                let down = matches!(direction, Direction::Down | Direction::Both);
                BucketSummary {
                    tier,
                    samples: ring.len(),
                    median: unit(profile.median),
                    thresholds: levels
                        .levels()
                        .into_iter()
                        .map(|(q, severity)| ThresholdSummary {
                            severity,
                            above: up.then(|| unit(profile.threshold(q, true))),
                            below: down.then(|| unit(profile.threshold(q, false))),
                        })
                        .collect(),
                    learned_at: ring.last,
                }
            })
            .collect();
        BaselineSummary {
            samples: self.global.seen,
            learned_at: self.global.last,
            buckets,
        }
    }

    /// Samples seen in total.
    pub fn seen(&self) -> u64 {
        self.global.seen
    }

    /// The profile of the most specific trusted bucket for `time`, or None while the baseline
    /// is still too young to judge.
    pub fn profile(&mut self, time: UnixNanos, config: &BaselineConfig) -> Option<Profile> {
        if self.global.len() < config.min_samples {
            return None;
        }
        let (how, hod) = hour_buckets(time);
        let ring = if self.hour_of_week[how].len() >= config.min_bucket_samples {
            &mut self.hour_of_week[how]
        } else if self.hour_of_day[hod].len() >= config.min_bucket_samples {
            &mut self.hour_of_day[hod]
        } else {
            &mut self.global
        };
        Some(Profile::from_sorted(ring.sorted()))
    }
}

/// (hour of week with Monday 00:00 UTC as 0, hour of day), both UTC.
pub fn hour_buckets(time: UnixNanos) -> (usize, usize) {
    let hours = time.div_euclid(3600 * NANOS_PER_SEC);
    // 1970-01-01 was a Thursday: shift so that Monday starts the week.
    let how = (hours + 3 * 24).rem_euclid(168) as usize;
    (how, hours.rem_euclid(24) as usize)
}

fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_4,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        0.007_784_695_709_041_462,
        0.322_467_129_070_039_8,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * NANOS_PER_SEC;

    #[test]
    fn normal_quantile_matches_known_values() {
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.999) - 3.090_232).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.01) + 2.326_348).abs() < 1e-5);
    }

    #[test]
    fn a_rate_that_mostly_reads_zero_keeps_a_scale_of_its_own() {
        // 80% zeros: MAD and IQR are 0, yet the series moves by steps of 1/15.
        let mut values: Vec<f64> = [(0.0, 80), (1.0 / 15.0, 14), (2.0 / 15.0, 5), (0.2, 1)]
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect();
        values.sort_by(f64::total_cmp);
        let intermittent = Profile::from_sorted(&values);
        // Three steps up is a few scales out, not the 10^8 a zero scale makes of it.
        let z = intermittent.z(0.2);
        assert!((5.0..20.0).contains(&z), "z {z}");
        // A series that held one value still has only the floor.
        let held = Profile::from_sorted(&[0.0; 100]);
        assert!(held.z(0.2) > 1e6);
    }

    #[test]
    fn hour_buckets_start_the_week_on_monday() {
        // 2024-01-01 00:00 UTC was a Monday.
        let monday = 1_704_067_200 * NANOS_PER_SEC;
        assert_eq!(hour_buckets(monday), (0, 0));
        assert_eq!(hour_buckets(monday + 25 * HOUR), (25, 1));
        assert_eq!(hour_buckets(monday - HOUR), (167, 23));
    }

    #[test]
    fn severity_grows_with_distance_from_the_baseline() {
        let config = BaselineConfig::default();
        let mut b = Baseline::default();
        for i in 0..400 {
            // 100 +- 10, deterministic spread
            b.observe(
                i * NANOS_PER_SEC,
                100.0 + ((i * 37 % 21) as f64 - 10.0),
                &config,
            );
        }
        let p = b.profile(500 * NANOS_PER_SEC, &config).unwrap();
        let levels = SeverityLevels::default();
        assert_eq!(p.severity(101.0, Direction::Up, &levels), None);
        assert_eq!(
            p.severity(400.0, Direction::Up, &levels),
            Some(Severity::Sev1)
        );
        assert_eq!(p.severity(400.0, Direction::Down, &levels), None);
        assert_eq!(
            p.severity(-200.0, Direction::Both, &levels),
            Some(Severity::Sev1)
        );
        let mild = p.severity(109.5, Direction::Up, &levels);
        assert!(matches!(mild, Some(s) if s >= Severity::Sev3), "{mild:?}");
    }

    #[test]
    fn young_baseline_judges_nothing() {
        let config = BaselineConfig::default();
        let mut b = Baseline::default();
        for i in 0..(config.min_samples as i64 - 1) {
            b.observe(i, 1.0, &config);
        }
        assert!(b.profile(0, &config).is_none());
    }

    #[test]
    fn hour_of_week_bucket_wins_once_it_has_enough_samples() {
        let config = BaselineConfig {
            min_bucket_samples: 20,
            ..Default::default()
        };
        let mut b = Baseline::default();
        let monday = 1_704_067_200 * NANOS_PER_SEC;
        // Busy Monday 09:00 (values ~1000), quiet everywhere else (~10).
        for week in 0..2 {
            for i in 0..30 {
                let t = monday + week * 168 * HOUR + 9 * HOUR + i * 60 * NANOS_PER_SEC;
                b.observe(t, 1000.0 + i as f64, &config);
            }
        }
        for h in 10..40 {
            for i in 0..30 {
                b.observe(
                    monday + h * HOUR + i * 60 * NANOS_PER_SEC,
                    10.0 + i as f64 % 3.0,
                    &config,
                );
            }
        }
        let levels = SeverityLevels::default();
        let next_monday_9 = monday + 2 * 168 * HOUR + 9 * HOUR;
        let p = b.profile(next_monday_9, &config).unwrap();
        assert!(
            p.severity(1010.0, Direction::Up, &levels).is_none(),
            "busy hour is normal then"
        );
        let tuesday_9 = monday + 33 * HOUR;
        let p = b.profile(tuesday_9, &config).unwrap();
        assert_eq!(
            p.severity(1010.0, Direction::Up, &levels),
            Some(Severity::Sev1)
        );
    }

    #[test]
    fn flat_signal_has_a_scale_floor() {
        let config = BaselineConfig::default();
        let mut b = Baseline::default();
        for i in 0..50 {
            b.observe(i, 100.0, &config);
        }
        let p = b.profile(0, &config).unwrap();
        assert!(p.scale > 0.0);
        assert_eq!(
            p.severity(100.5, Direction::Both, &SeverityLevels::default()),
            None
        );
        assert!(p
            .severity(50.0, Direction::Both, &SeverityLevels::default())
            .is_some());
    }

    #[test]
    fn ring_keeps_only_the_most_recent_values() {
        let config = BaselineConfig {
            capacity: 16,
            min_samples: 4,
            ..Default::default()
        };
        let mut b = Baseline::default();
        for i in 0..100 {
            b.observe(i, i as f64, &config);
        }
        let p = b.profile(0, &config).unwrap();
        assert_eq!(p.samples, 16);
        assert!(p.median > 80.0);
        assert_eq!(b.seen(), 100);
    }
}
