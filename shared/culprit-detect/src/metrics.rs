//! Metric detector: every (service, instance, metric) series against its own time-aware
//! baseline, in both directions (a CPU spike and a throughput collapse are both news), and the
//! waits on call edges that per-edge client and server latency series give (`edge_waits`).

use crate::baseline::{Baseline, BaselineConfig, Direction, Profile};
use crate::edge_waits::{EdgeWaitState, EdgeWaits};
use crate::{AnomalyDraft, Detector, Findings, MetricsConfig, Phase, SharedConfig};
use culprit_core::{
    Event, EventBody, Severity, SignalFamily, SourceKind, UnixNanos, NANOS_PER_SEC,
};
use std::collections::{HashMap, VecDeque};

/// (environment, service, instance, metric name, data point attributes)
type SeriesKey = (String, String, Option<String>, String, String);

pub struct MetricDetector {
    config: SharedConfig,
    metrics: MetricsConfig,
    series: HashMap<SeriesKey, Series>,
    edge_waits: EdgeWaits,
}

/// One series' baseline, and the run of points it is holding back.
#[derive(Default)]
pub(crate) struct Series {
    pub(crate) baseline: Baseline,
    run: Run,
    /// Normal points judged while detecting, waiting `learn_delay_secs` to be learned.
    waiting: VecDeque<(UnixNanos, f64)>,
}

/// Consecutive points of one series that each passed every gate, kept out of its baseline until
/// the run shows what it was. While learning, a short run is a burst normal for the series and is
/// learned, a longer one an earlier incident and is not. A run that lasts
/// `[detect.metrics] new_normal_secs` is the series' new level, in either phase, and is learned.
#[derive(Default)]
struct Run {
    started: UnixNanos,
    len: usize,
    /// The most recent points (at most a baseline's capacity), each with whether it came while
    /// learning.
    points: VecDeque<(UnixNanos, f64, bool)>,
}

impl Run {
    fn push(&mut self, time: UnixNanos, value: f64, learning: bool, capacity: usize) {
        if self.len == 0 {
            self.started = time;
        }
        self.len += 1;
        if self.points.len() >= capacity.max(1) {
            self.points.pop_front();
        }
        self.points.push_back((time, value, learning));
    }
}

impl Series {
    /// Judges one point against the baseline and learns it (while detecting, `learn_delay_secs`
    /// later), unless it belongs to a run that passes the gates; returns its severity and the
    /// profile it was judged by when it is anomalous while detecting.
    pub(crate) fn judge(
        &mut self,
        config: &SharedConfig,
        metrics: &MetricsConfig,
        time: UnixNanos,
        value: f64,
        phase: Phase,
        direction: Direction,
    ) -> Option<(Severity, Profile)> {
        let baseline_config = &config.baseline;
        let shift_points = metrics.learning_shift_points;
        // A learning window may hold an earlier incident. Its points pass every gate against
        // what came before them for minutes on end, unlike the lone bursts a series shows in
        // normal operation; those are learned, the sustained shift is not.
        let judged = phase == Phase::Detecting || shift_points > 0;
        let profile = judged
            .then(|| self.baseline.profile(time, baseline_config))
            .flatten();
        // Only a spread can be widened step by step; a series that held one value learns its
        // first departure at once, as the scale its next departures are judged by.
        let has_spread = profile.as_ref().is_some_and(|p| p.held_value().is_none());
        let verdict = profile.and_then(|profile| {
            let severity = gate(config, metrics, &profile, value, direction)?;
            // Without a scale of its own.
            let severity = if profile.held_value() == Some(0.0) {
                let held = self.baseline.held_for(0.0).max(profile.samples as u64);
                severity.max(first_departure_severity(config, held)?)
            } else {
                severity
            };
            (severity <= metrics.min_severity).then_some((severity, profile))
        });
        let Some((severity, profile)) = verdict else {
            let run = std::mem::take(&mut self.run);
            if run.len < shift_points {
                for (t, x, _) in run.points.into_iter().filter(|p| p.2) {
                    self.baseline.observe(t, x, baseline_config);
                }
            }
            let delay = i64::from(metrics.learn_delay_secs) * NANOS_PER_SEC;
            if phase == Phase::Detecting && has_spread && delay > 0 {
                self.learn_later(time, value, delay, baseline_config);
            } else {
                self.baseline.observe(time, value, baseline_config);
            }
            return None;
        };
        let learning = phase != Phase::Detecting;
        self.run
            .push(time, value, learning, baseline_config.capacity);
        let new_normal = i64::from(metrics.new_normal_secs) * NANOS_PER_SEC;
        if new_normal > 0 && time - self.run.started >= new_normal {
            // It moved and stayed (a deploy that raised memory for good): alerting on it for ever
            // would keep one incident open and its page unresolved.
            for (t, x, _) in std::mem::take(&mut self.run).points {
                self.baseline.observe(t, x, baseline_config);
            }
        }
        (!learning).then_some((severity, profile))
    }

    /// Learns a normal point judged while detecting once `delay` of event time has passed, so
    /// that a fault setting in step by step is judged against the baseline from before it began.
    /// (While learning, or while a series has no spread yet, points are learned at once.)
    fn learn_later(
        &mut self,
        time: UnixNanos,
        value: f64,
        delay: i64,
        baseline_config: &BaselineConfig,
    ) {
        self.waiting.push_back((time, value));
        // Never more waiting than a bucket keeps: a series scraped every second would otherwise
        // hold 300 points for each it has learned.
        while let Some(&(t, x)) = self.waiting.front() {
            if t > time - delay && self.waiting.len() <= baseline_config.capacity.max(1) {
                break;
            }
            self.waiting.pop_front();
            self.baseline.observe(t, x, baseline_config);
        }
    }
}

/// What a [`MetricDetector`] learned ([`crate::state`]): each series' baseline. A run being held
/// back is in flight and starts again; points waiting to be learned are not kept (at most
/// `learn_delay_secs` of a series' normal points, which its baseline does without).
#[derive(serde::Serialize, serde::Deserialize)]
struct MetricState {
    #[serde(with = "crate::state::pairs")]
    series: HashMap<SeriesKey, Baseline>,
    /// Absent in states saved before edge waits were learned.
    #[serde(default)]
    edge_waits: EdgeWaitState,
}

impl MetricState {
    const VERSION: u32 = 1;
}

impl MetricDetector {
    pub fn new(config: SharedConfig, metrics: MetricsConfig) -> MetricDetector {
        MetricDetector {
            config,
            metrics,
            series: HashMap::new(),
            edge_waits: EdgeWaits::default(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

/// The severity at most of a series' first departure from 0 after it held 0 for `held`
/// samples; None when that is not surprising enough to report. A series that only ever read 0
/// (errors, restarts, drops) has no scale to count deviations in: any other value would lie
/// infinitely far out. What it has is the number of samples that held: if the departure could
/// have come at any of them, it comes now with chance 1/(held + 1). A few minutes of zeros
/// from a quiet error rate say little. One point is never worth more than that, so under the
/// default `min_severity` (SEV1) the first departure is learned, not reported, and gives the
/// series the scale the next ones are judged by.
fn first_departure_severity(config: &SharedConfig, held: u64) -> Option<Severity> {
    config.surprise_levels.severity(((held + 1) as f64).log10())
}

/// The severity of `value` when it passes all four gates against `profile` in `direction`.
pub(crate) fn gate(
    config: &SharedConfig,
    metrics: &MetricsConfig,
    profile: &Profile,
    value: f64,
    direction: Direction,
) -> Option<Severity> {
    let severity = profile.severity(value, direction, &config.severity_levels)?;
    let relative = (value - profile.median).abs() / profile.median.abs().max(1e-9);
    (severity <= metrics.min_severity
        && relative >= metrics.min_relative_change
        && profile.z(value).abs() >= metrics.min_z
        && profile.range_excess(value) >= metrics.min_range_excess)
        .then_some(severity)
}

impl Detector for MetricDetector {
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Metrics]
    }

    fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings) {
        let EventBody::Metric(point) = &event.body else {
            return;
        };
        if !point.value.is_finite() {
            return;
        }
        self.edge_waits
            .observe(&event.resource.environment, event.time, point);
        let attributes = if point.attributes.is_empty() {
            String::new()
        } else {
            point
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let signal = if attributes.is_empty() {
            SignalFamily::Metric.on(&point.name)
        } else {
            SignalFamily::Metric.on(format_args!("{}{{{attributes}}}", point.name))
        };
        let key: SeriesKey = (
            event.resource.environment.clone(),
            event.resource.service.clone(),
            event.resource.instance.clone(),
            point.name.clone(),
            attributes,
        );
        let series = self.series.entry(key).or_default();
        let Some((severity, profile)) = series.judge(
            &self.config,
            &self.metrics,
            event.time,
            point.value,
            phase,
            Direction::Both,
        ) else {
            return;
        };
        let z = profile.z(point.value);
        let draft = AnomalyDraft::of_event(event, SourceKind::Metrics, signal);
        let direction = if point.value > profile.median {
            "above"
        } else {
            "below"
        };
        // 0.5 at the gate, 1.0 a hundred times beyond it.
        let score = (0.5 + (z.abs() / self.metrics.min_z).log10() / 4.0).clamp(0.5, 1.0);
        // A series that never moved has no meaningful scale to count deviations in.
        let how_far = if z.abs() > 1e4 {
            format!(
                "while it held {:.4} throughout its baseline",
                profile.median
            )
        } else {
            format!(
                "is {:.1} robust deviations {direction} its usual {:.4}",
                z.abs(),
                profile.median
            )
        };
        out.anomalies.push(draft.finish(
            severity,
            score,
            Some(point.value),
            Some(profile.median),
            format!("{} = {:.4} {how_far}", point.name, point.value),
        ));
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        // Both sides of an edge carry the same time; a side may come up to `lateness` late.
        let complete = watermark.saturating_sub(self.config.lateness_nanos());
        self.edge_waits
            .close(&self.config, &self.metrics, complete, phase, out);
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        self.edge_waits
            .close(&self.config, &self.metrics, UnixNanos::MAX, phase, out);
    }

    fn baselines(&self, out: &mut Vec<crate::SignalSummary>) {
        for ((environment, service, instance, name, attributes), series) in &self.series {
            let mut signal = if attributes.is_empty() {
                format!("metric:{name}")
            } else {
                format!("metric:{name}{{{attributes}}}")
            };
            if let Some(instance) = instance {
                signal.push_str(&format!(" on {instance}"));
            }
            out.push(crate::SignalSummary {
                source: SourceKind::Metrics,
                environment: environment.clone(),
                service: service.clone(),
                signal,
                baseline: series.baseline.summary(
                    Direction::Both,
                    &self.config.severity_levels,
                    |x| x,
                ),
            });
        }
        self.edge_waits.baselines(&self.config, out);
    }

    fn forget(&mut self, service: &str) -> usize {
        let before = self.series.len();
        self.series.retain(|key, _| key.1 != service);
        before - self.series.len() + self.edge_waits.forget(service)
    }

    /// Takes the service's series; a run held back is in flight and starts again.
    fn adopt(
        &mut self,
        service: &str,
        learned: &crate::state::RawValue,
    ) -> Result<usize, crate::state::StateError> {
        let state: MetricState = crate::state::unversioned(learned, MetricState::VERSION)?;
        self.forget(service);
        let before = self.series.len();
        self.series.extend(
            state
                .series
                .into_iter()
                .filter(|(k, _)| k.1 == service)
                .map(|(k, baseline)| {
                    let series = Series {
                        baseline,
                        ..Series::default()
                    };
                    (k, series)
                }),
        );
        Ok(self.series.len() - before + self.edge_waits.adopt(service, state.edge_waits))
    }

    fn state_name(&self) -> Option<String> {
        Some("metrics".into())
    }

    fn save_state(&self) -> Option<crate::state::SavedState> {
        let series = self
            .series
            .iter()
            .map(|(k, s)| (k.clone(), s.baseline.clone()))
            .collect();
        let edge_waits = self.edge_waits.save_state();
        crate::state::versioned(MetricState::VERSION, &MetricState { series, edge_waits })
    }

    fn restore_state(
        &mut self,
        state: &crate::state::RawValue,
    ) -> Result<(), crate::state::StateError> {
        let state: MetricState = crate::state::unversioned(state, MetricState::VERSION)?;
        self.edge_waits.restore_state(state.edge_waits);
        self.series = state
            .series
            .into_iter()
            .map(|(k, baseline)| {
                let series = Series {
                    baseline,
                    ..Series::default()
                };
                (k, series)
            })
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{MetricPoint, Resource, Severity, NANOS_PER_SEC};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn point(t: i64, value: f64) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new("inventory").with_instance("inventory-1")),
            body: EventBody::Metric(MetricPoint {
                name: "cpu".into(),
                value,
                attributes: BTreeMap::new(),
            }),
        }
    }

    fn point_of(service: &str, t: i64, value: f64) -> Event {
        let mut e = point(t, value);
        e.resource = Arc::new(Resource::new(service).with_instance(format!("{service}-1")));
        e
    }

    fn shown(d: &MetricDetector, service: &str) -> Vec<String> {
        crate::shown_baselines(d, service, |_| true)
    }

    /// Feeds `zeros` learned zeros every 10 s, then judges `departures`; returns the severities
    /// reported.
    fn after_zeros(metrics: MetricsConfig, zeros: i64, departures: &[f64]) -> Vec<Severity> {
        let mut d = MetricDetector::new(SharedConfig::default(), metrics);
        let mut out = Findings::default();
        let step = 10 * NANOS_PER_SEC;
        for i in 0..zeros {
            d.observe(&point(i * step, 0.0), Phase::Learning, &mut out);
        }
        for (i, x) in departures.iter().enumerate() {
            let t = (zeros + i as i64) * step;
            d.observe(&point(t, *x), Phase::Detecting, &mut out);
        }
        out.anomalies.iter().map(|a| a.severity).collect()
    }

    #[test]
    fn a_fault_that_sets_in_step_by_step_is_judged_against_the_baseline_from_before_it() {
        // An hour between 10.0 and 10.4, then a climb of 0.2 a minute, each step just under the
        // gates against everything before it.
        let minute = 60 * NANOS_PER_SEC;
        let climb = |metrics: MetricsConfig| {
            let mut d = MetricDetector::new(SharedConfig::default(), metrics);
            let mut out = Findings::default();
            for i in 0..60 {
                let x = 10.0 + (i % 5) as f64 * 0.1;
                d.observe(&point(i * minute, x), Phase::Learning, &mut out);
            }
            for k in 1..=15 {
                let x = 10.4 + k as f64 * 0.2;
                d.observe(&point((59 + k) * minute, x), Phase::Detecting, &mut out);
            }
            out.anomalies.len()
        };
        assert!(
            climb(MetricsConfig::default()) > 0,
            "judged against the baseline of five minutes before, the climb passes the gates"
        );
        let at_once = MetricsConfig {
            learn_delay_secs: 0,
            ..MetricsConfig::default()
        };
        assert_eq!(
            climb(at_once),
            0,
            "learned at once, each step widens the range the next one is judged by"
        );
    }

    #[test]
    fn points_waiting_to_be_learned_are_bounded_by_what_a_bucket_keeps() {
        let config = SharedConfig {
            baseline: crate::BaselineConfig {
                capacity: 16,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut series = Series::default();
        let second = NANOS_PER_SEC;
        for i in 0..16 {
            series
                .baseline
                .observe(i * second, (i % 4) as f64, &config.baseline);
        }
        let metrics = MetricsConfig::default();
        for i in 16..100 {
            let judged = series.judge(
                &config,
                &metrics,
                i * second,
                (i % 4) as f64,
                Phase::Detecting,
                Direction::Both,
            );
            assert!(judged.is_none());
            assert!(
                series.waiting.len() <= 16,
                "{} waiting",
                series.waiting.len()
            );
        }
        assert_eq!(
            series.waiting.len(),
            16,
            "within the delay, the newest points wait"
        );
    }

    #[test]
    fn a_series_that_only_read_zero_is_not_alerted_by_its_first_departure() {
        // Five minutes of a quiet error rate, then its first error: no scale says how far that
        // is. It is learned, and a much larger one is judged against it.
        assert_eq!(
            after_zeros(MetricsConfig::default(), 30, &[0.01]),
            vec![],
            "the first departure is learned"
        );
        assert_eq!(
            after_zeros(MetricsConfig::default(), 30, &[0.01, 0.5]),
            vec![Severity::Sev1],
            "fifty times the first departure is judged by it"
        );
    }

    #[test]
    fn how_surprising_a_first_departure_is_grows_with_how_long_zero_held() {
        let report_all = MetricsConfig {
            min_severity: Severity::Sev5,
            ..MetricsConfig::default()
        };
        // After 5 minutes of zeros (30 samples) a departure has chance 1/31: nothing to report.
        assert_eq!(after_zeros(report_all.clone(), 30, &[0.01]), vec![]);
        // After 2,000 (beyond the 512 a bucket keeps), 1/2001: past the SEV5 level of 10^-3.
        assert_eq!(
            after_zeros(report_all, 2_000, &[0.01]),
            vec![Severity::Sev5]
        );
    }

    #[test]
    fn an_adopted_service_judges_as_the_fresh_detector_and_the_others_keep_their_baselines() {
        let learn = |d: &mut MetricDetector, t0: i64, inventory: f64, cart: f64| {
            let mut out = Findings::default();
            for i in 0..60 {
                let t = t0 + i * 15 * NANOS_PER_SEC;
                let wobble = (i % 5) as f64;
                d.observe(
                    &point_of("inventory", t, inventory + wobble),
                    Phase::Learning,
                    &mut out,
                );
                d.observe(
                    &point_of("cart", t, cart + wobble),
                    Phase::Learning,
                    &mut out,
                );
            }
        };
        let mut live = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        learn(&mut live, 0, 20.0, 50.0);
        let mut fresh = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        learn(&mut fresh, 3600 * NANOS_PER_SEC, 70.0, 10.0);
        let cart_before = shown(&live, "cart");
        assert_ne!(shown(&live, "inventory"), shown(&fresh, "inventory"));

        let adopted = live
            .adopt("inventory", &fresh.save_state().unwrap())
            .unwrap();
        assert_eq!(adopted, 1);
        assert_eq!(shown(&live, "inventory"), shown(&fresh, "inventory"));
        assert_eq!(shown(&live, "cart"), cart_before, "cart untouched");

        // CPU at the new level is normal to the adopted detector, a spike to the old baseline.
        let judged = |d: &mut MetricDetector| {
            let mut out = Findings::default();
            for i in 0..5 {
                let t = 7200 * NANOS_PER_SEC + i * 15 * NANOS_PER_SEC;
                d.observe(&point_of("inventory", t, 72.0), Phase::Detecting, &mut out);
            }
            out.anomalies.len()
        };
        let (mut old, _) = learned_cpu();
        assert!(judged(&mut old) > 0, "the old baseline finds 72 abnormal");
        assert_eq!(judged(&mut live), 0);
        assert_eq!(judged(&mut fresh), 0);
    }

    /// A detector that learned 15 minutes of a CPU series wobbling between 20 and 24.
    fn learned_cpu() -> (MetricDetector, Findings) {
        let mut d = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        let mut out = Findings::default();
        for i in 0..60 {
            d.observe(
                &point(i * 15 * NANOS_PER_SEC, 20.0 + (i % 5) as f64),
                Phase::Learning,
                &mut out,
            );
        }
        (d, out)
    }

    #[test]
    fn a_cpu_spike_is_sev1_and_normal_wobble_is_not_reported() {
        let (mut d, mut out) = learned_cpu();
        for i in 60..80 {
            d.observe(
                &point(i * 15 * NANOS_PER_SEC, 21.0 + (i % 3) as f64),
                Phase::Detecting,
                &mut out,
            );
        }
        assert!(out.anomalies.is_empty(), "{:?}", out.anomalies);
        d.observe(
            &point(81 * 15 * NANOS_PER_SEC, 95.0),
            Phase::Detecting,
            &mut out,
        );
        assert_eq!(out.anomalies.len(), 1);
        let a = &out.anomalies[0];
        assert_eq!(
            (a.severity, a.signal.as_str(), a.instance.as_deref()),
            (Severity::Sev1, "metric:cpu", Some("inventory-1"))
        );
        assert_eq!(d.series_count(), 1);
    }

    #[test]
    fn a_series_baseline_is_shown_per_bucket_and_forgotten_on_request() {
        let (mut d, _) = learned_cpu();
        let mut shown = Vec::new();
        d.baselines(&mut shown);
        assert_eq!(shown.len(), 1);
        let b = &shown[0];
        assert_eq!(
            (b.service.as_str(), b.signal.as_str(), b.source),
            (
                "inventory",
                "metric:cpu on inventory-1",
                SourceKind::Metrics
            )
        );
        assert_eq!(b.baseline.samples, 60);
        assert_eq!(b.baseline.learned_at, Some(59 * 15 * NANOS_PER_SEC));
        let global = b
            .baseline
            .buckets
            .iter()
            .find(|x| x.tier == crate::baseline::Tier::Global)
            .expect("a global bucket");
        assert_eq!(global.median, 22.0);
        // Most severe first, and every threshold lies beyond everything learned.
        let sev1 = global.thresholds[0];
        assert_eq!(sev1.severity, Severity::Sev1);
        assert!(
            sev1.above.unwrap() >= 24.0 && sev1.below.unwrap() <= 20.0,
            "{sev1:?}"
        );
        assert!(global.thresholds[0].above >= global.thresholds[4].above);
        // 15 min of data from Thursday 00:00 UTC (t = 0) fills one hour-of-week and one hour-of-day
        // bucket beside the global one.
        assert_eq!(b.baseline.buckets.len(), 3);

        assert_eq!(d.forget("checkout"), 0);
        assert_eq!(d.forget("inventory"), 1);
        let mut after = Vec::new();
        d.baselines(&mut after);
        assert!(after.is_empty());
    }

    /// Learns `values` one per 15 s from t = 0, then returns the anomalies of detecting
    /// `probe` twice right after.
    fn learn_then_probe(config: MetricsConfig, values: &[f64], probe: f64) -> Vec<f64> {
        let mut d = MetricDetector::new(SharedConfig::default(), config);
        let mut out = Findings::default();
        for (i, v) in values.iter().enumerate() {
            d.observe(
                &point(i as i64 * 15 * NANOS_PER_SEC, *v),
                Phase::Learning,
                &mut out,
            );
        }
        assert!(out.anomalies.is_empty(), "learning reports nothing");
        let n = values.len() as i64;
        for i in n..n + 2 {
            d.observe(
                &point(i * 15 * NANOS_PER_SEC, probe),
                Phase::Detecting,
                &mut out,
            );
        }
        out.anomalies.iter().filter_map(|a| a.observed).collect()
    }

    /// 20 normal points with `inside` spliced in after the 12th.
    fn history(inside: &[f64]) -> Vec<f64> {
        let normal = |i: usize| 20.0 + (i % 5) as f64;
        let mut values: Vec<f64> = (0..12).map(normal).collect();
        values.extend_from_slice(inside);
        values.extend((12..20).map(normal));
        values
    }

    #[test]
    fn an_earlier_incident_inside_the_learning_window_does_not_hide_the_next_one() {
        let earlier_incident = history(&[95.0, 97.0, 96.0, 98.0]);
        let found = learn_then_probe(MetricsConfig::default(), &earlier_incident, 96.0);
        assert_eq!(found, vec![96.0, 96.0]);
        // Learning everything, as before, makes the same CPU level look normal.
        let learn_all = MetricsConfig {
            learning_shift_points: 0,
            ..MetricsConfig::default()
        };
        assert!(learn_then_probe(learn_all, &earlier_incident, 96.0).is_empty());
    }

    #[test]
    fn a_lone_burst_while_learning_is_learned_as_normal_for_the_series() {
        let bursty = history(&[95.0, 22.0, 21.0, 97.0, 23.0]);
        assert!(learn_then_probe(MetricsConfig::default(), &bursty, 96.0).is_empty());
        // Were every gate-passing point left out, the series' own bursts would page.
        let leave_out_all = MetricsConfig {
            learning_shift_points: 1,
            ..MetricsConfig::default()
        };
        assert_eq!(
            learn_then_probe(leave_out_all, &bursty, 96.0),
            vec![96.0, 96.0]
        );
    }

    /// Learns an hour of normal CPU every 15 s, then detects 90 minutes at twice the level; returns
    /// the times (minutes into the shift) of the anomalies.
    fn shifted_for_good(config: MetricsConfig) -> Vec<i64> {
        let mut d = MetricDetector::new(SharedConfig::default(), config);
        let mut out = Findings::default();
        for i in 0..240 {
            let normal = point(i * 15 * NANOS_PER_SEC, 20.0 + (i % 5) as f64);
            d.observe(&normal, Phase::Learning, &mut out);
        }
        let start = 240 * 15 * NANOS_PER_SEC;
        for i in 0..360 {
            let moved = point(start + i * 15 * NANOS_PER_SEC, 45.0 + (i % 5) as f64);
            d.observe(&moved, Phase::Detecting, &mut out);
        }
        out.anomalies
            .iter()
            .map(|a| (a.time - start) / (60 * NANOS_PER_SEC))
            .collect()
    }

    #[test]
    fn a_level_that_holds_for_an_hour_becomes_the_new_normal() {
        let minutes = shifted_for_good(MetricsConfig::default());
        assert_eq!(minutes.first(), Some(&0), "the shift is reported at once");
        assert_eq!(minutes.last(), Some(&60), "and for an hour, then no more");
        let never = MetricsConfig {
            new_normal_secs: 0,
            ..MetricsConfig::default()
        };
        assert_eq!(
            shifted_for_good(never).len(),
            360,
            "without the rule, for ever"
        );
    }
}
