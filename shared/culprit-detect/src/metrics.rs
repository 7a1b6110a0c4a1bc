//! Metric detector: every (service, instance, metric) series against its own time-aware
//! baseline, in both directions (a CPU spike and a throughput collapse are both news).

use crate::baseline::{Baseline, Direction};
use crate::{AnomalyDraft, DetectConfig, Detector, Findings, Phase};
use culprit_core::{Event, EventBody, SourceKind, UnixNanos};
use std::collections::HashMap;

/// (environment, service, instance, metric name, data point attributes)
type SeriesKey = (String, String, Option<String>, String, String);

pub struct MetricDetector {
    config: DetectConfig,
    series: HashMap<SeriesKey, Baseline>,
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
        let baseline = self.series.entry(key).or_default();
        let mut anomalous = false;
        if phase == Phase::Detecting {
            if let Some(profile) = baseline.profile(event.time, &self.config.baseline) {
                let severity =
                    profile.severity(point.value, Direction::Both, &self.config.severity_levels);
                let relative =
                    (point.value - profile.median).abs() / profile.median.abs().max(1e-9);
                let z = profile.z(point.value);
                if let Some(severity) = severity.filter(|s| {
                    *s <= self.config.metric_min_severity
                        && relative >= self.config.metric_min_relative_change
                        && z.abs() >= self.config.metric_min_z
                        && profile.range_excess(point.value) >= self.config.metric_min_range_excess
                }) {
                    anomalous = true;
                    let draft = AnomalyDraft {
                        source: SourceKind::Metrics,
                        service: &event.resource.service,
                        environment: &event.resource.environment,
                        instance: event.resource.instance.as_deref(),
                        time: event.time,
                        signal,
                    };
                    let direction = if point.value > profile.median {
                        "above"
                    } else {
                        "below"
                    };
                    // 0.5 at the gate, 1.0 a hundred times beyond it.
                    let score =
                        (0.5 + (z.abs() / self.config.metric_min_z).log10() / 4.0).clamp(0.5, 1.0);
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
            }
        }
        if !anomalous {
            baseline.observe(event.time, point.value, &self.config.baseline);
        }
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
}
