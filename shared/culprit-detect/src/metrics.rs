//! Metric detector: every (service, instance, metric) series against its own time-aware
//! baseline, in both directions (a CPU spike and a throughput collapse are both news).

use crate::baseline::{Baseline, Direction, Profile};
use crate::{AnomalyDraft, DetectConfig, Detector, Findings, Phase};
use culprit_core::{Event, EventBody, Severity, SourceKind, UnixNanos};
use std::collections::HashMap;

/// (environment, service, instance, metric name, data point attributes)
type SeriesKey = (String, String, Option<String>, String, String);

pub struct MetricDetector {
    config: DetectConfig,
    series: HashMap<SeriesKey, Series>,
}

/// One series' baseline, and what learning holds back from it.
#[derive(Default)]
struct Series {
    baseline: Baseline,
    /// A learning point that passed every gate, kept out until the next point shows whether it
    /// was a lone burst (normal for this series: learned) or the start of a shift (not learned).
    held: Vec<(UnixNanos, f64)>,
    /// Learning is inside such a shift: gate-passing points are not learned.
    in_shift: bool,
}

impl MetricDetector {
    pub fn new(config: DetectConfig) -> MetricDetector {
        MetricDetector {
            config,
            series: HashMap::new(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

/// The severity of `value` when it passes all four gates against `profile`.
fn gate(config: &DetectConfig, profile: &Profile, value: f64) -> Option<Severity> {
    let severity = profile.severity(value, Direction::Both, &config.severity_levels)?;
    let relative = (value - profile.median).abs() / profile.median.abs().max(1e-9);
    (severity <= config.metric_min_severity
        && relative >= config.metric_min_relative_change
        && profile.z(value).abs() >= config.metric_min_z
        && profile.range_excess(value) >= config.metric_min_range_excess)
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
            format!("metric:{}", point.name)
        } else {
            format!("metric:{}{{{attributes}}}", point.name)
        };
        let key: SeriesKey = (
            event.resource.environment.clone(),
            event.resource.service.clone(),
            event.resource.instance.clone(),
            point.name.clone(),
            attributes,
        );
        let series = self.series.entry(key).or_default();
        let baseline_config = &self.config.baseline;
        let shift_points = self.config.metric_learning_shift_points;
        // A learning window may hold an earlier incident. Its points pass every gate against
        // what came before them for minutes on end, unlike the lone bursts a series shows in
        // normal operation; those are learned, the sustained shift is not.
        let judged = phase == Phase::Detecting || shift_points > 0;
        let verdict = series
            .baseline
            .profile(event.time, baseline_config)
            .filter(|_| judged)
            .and_then(|profile| Some((gate(&self.config, &profile, point.value)?, profile)));
        let held = std::mem::take(&mut series.held);
        let Some((severity, profile)) = verdict else {
            for (t, x) in held {
                series.baseline.observe(t, x, baseline_config);
            }
            series.in_shift = false;
            series
                .baseline
                .observe(event.time, point.value, baseline_config);
            return;
        };
        if phase != Phase::Detecting {
            if held.len() + 1 >= shift_points {
                series.in_shift = true;
            } else if !series.in_shift {
                series.held = held;
                series.held.push((event.time, point.value));
            }
            return;
        }
        let z = profile.z(point.value);
        let draft = AnomalyDraft::of_event(event, SourceKind::Metrics, signal);
        let direction = if point.value > profile.median {
            "above"
        } else {
            "below"
        };
        // 0.5 at the gate, 1.0 a hundred times beyond it.
        let score = (0.5 + (z.abs() / self.config.metric_min_z).log10() / 4.0).clamp(0.5, 1.0);
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

    fn advance(&mut self, _watermark: UnixNanos, _phase: Phase, _out: &mut Findings) {}

    fn flush(&mut self, _phase: Phase, _out: &mut Findings) {}
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

    #[test]
    fn a_cpu_spike_is_sev1_and_normal_wobble_is_not_reported() {
        let mut d = MetricDetector::new(DetectConfig::default());
        let mut out = Findings::default();
        for i in 0..60 {
            d.observe(
                &point(i * 15 * NANOS_PER_SEC, 20.0 + (i % 5) as f64),
                Phase::Learning,
                &mut out,
            );
        }
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

    /// Learns `values` one per 15 s from t = 0, then returns the anomalies of detecting
    /// `probe` twice right after.
    fn learn_then_probe(config: DetectConfig, values: &[f64], probe: f64) -> Vec<f64> {
        let mut d = MetricDetector::new(config);
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
        let found = learn_then_probe(DetectConfig::default(), &earlier_incident, 96.0);
        assert_eq!(found, vec![96.0, 96.0]);
        // Learning everything, as before, makes the same CPU level look normal.
        let learn_all = DetectConfig {
            metric_learning_shift_points: 0,
            ..DetectConfig::default()
        };
        assert!(learn_then_probe(learn_all, &earlier_incident, 96.0).is_empty());
    }

    #[test]
    fn a_lone_burst_while_learning_is_learned_as_normal_for_the_series() {
        let bursty = history(&[95.0, 22.0, 21.0, 97.0, 23.0]);
        assert!(learn_then_probe(DetectConfig::default(), &bursty, 96.0).is_empty());
        // Were every gate-passing point left out, the series' own bursts would page.
        let leave_out_all = DetectConfig {
            metric_learning_shift_points: 1,
            ..DetectConfig::default()
        };
        assert_eq!(
            learn_then_probe(leave_out_all, &bursty, 96.0),
            vec![96.0, 96.0]
        );
    }
}
