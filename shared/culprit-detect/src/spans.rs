//! Span detector: latency per (service, operation), error ratio per service, and trace
//! structure (caller -> callee operation pairs), plus the service dependency edges the
//! correlator's graph is learned from.
//!
//! Latency is judged by how many spans of a window exceed the baseline's p99 (a binomial test),
//! not by the window's mean: one slow outlier moves a mean, while a real regression moves the
//! share of slow spans, and the test needs only the per-span baseline rather than a history of
//! windows.

use crate::baseline::Baseline;
use crate::stats::binomial_surprise;
use crate::window::Windows;
use crate::{AnomalyDraft, DetectConfig, Detector, Findings, Phase};
use culprit_core::{DependencyEdge, Event, EventBody, Severity, SourceKind, SpanEvent, UnixNanos};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Name = Arc<str>;

/// (environment, service, operation)
type OpKey = (Name, Name, Name);

#[derive(Debug, Default)]
struct OpWindow {
    /// ln(duration in microseconds) of each span.
    log_durations: Vec<f64>,
    errors: u32,
}

/// Errors and totals seen in the baseline, decayed so the rate follows slow drift.
#[derive(Debug, Default, Clone, Copy)]
struct ErrorRate {
    errors: f64,
    total: f64,
}

impl ErrorRate {
    const DECAY_AT: f64 = 200_000.0;

    fn add(&mut self, errors: u32, total: u32) {
        self.errors += f64::from(errors);
        self.total += f64::from(total);
        if self.total > Self::DECAY_AT {
            self.errors /= 2.0;
            self.total /= 2.0;
        }
    }

    /// Smoothed so that a service with no errors in its baseline is not judged on a zero rate,
    /// floored at 0.1% because a real service always fails now and then.
    fn rate(&self) -> f64 {
        ((self.errors + 0.5) / (self.total + 1.0)).max(0.001)
    }
}

#[derive(Debug, Clone)]
struct SpanInfo {
    environment: Name,
    service: Name,
    operation: Name,
}

/// Joins child spans to their parents across services. Parents usually end (and so are
/// exported) after their children, so a child whose parent is unknown waits in `pending`.
/// Both maps are generational: when the current generation fills up it becomes the previous
/// one and the old previous is dropped, bounding memory without per-entry timestamps.
#[derive(Debug, Default)]
struct SpanJoiner {
    spans: [HashMap<String, SpanInfo>; 2],
    pending: [HashMap<String, Vec<SpanInfo>>; 2],
}

impl SpanJoiner {
    const GENERATION: usize = 200_000;

    fn lookup(&self, span_id: &str) -> Option<&SpanInfo> {
        self.spans[0].get(span_id).or_else(|| self.spans[1].get(span_id))
    }

    /// Records `span` and returns the (parent, child) pairs it completes.
    fn join(&mut self, span: &SpanEvent, info: SpanInfo) -> Vec<(SpanInfo, SpanInfo)> {
        let mut pairs = Vec::new();
        if let Some(parent_id) = &span.parent_span_id {
            match self.lookup(parent_id) {
                Some(parent) => pairs.push((parent.clone(), info.clone())),
                None => {
                    if self.pending[0].len() >= Self::GENERATION {
                        self.pending.swap(0, 1);
                        self.pending[0].clear();
                    }
                    self.pending[0].entry(parent_id.clone()).or_default().push(info.clone());
                }
            }
        }
        for generation in &mut self.pending {
            if let Some(children) = generation.remove(&span.span_id) {
                pairs.extend(children.into_iter().map(|c| (info.clone(), c)));
            }
        }
        if self.spans[0].len() >= Self::GENERATION {
            self.spans.swap(0, 1);
            self.spans[0].clear();
        }
        self.spans[0].insert(span.span_id.clone(), info);
        pairs
    }
}

pub struct SpanDetector {
    config: DetectConfig,
    names: HashSet<Name>,
    joiner: SpanJoiner,
    latency: HashMap<OpKey, Baseline>,
    errors: HashMap<(Name, Name), ErrorRate>,
    known_calls: HashSet<(OpKey, OpKey)>,
    known_error_types: HashSet<(Name, Name, String)>,
    known_dependencies: HashSet<DependencyEdge>,
    windows: Windows<HashMap<OpKey, OpWindow>>,
}

impl SpanDetector {
    pub fn new(config: DetectConfig) -> SpanDetector {
        let windows = Windows::new(config.window_nanos(), config.lateness_nanos());
        SpanDetector {
            config,
            names: HashSet::new(),
            joiner: SpanJoiner::default(),
            latency: HashMap::new(),
            errors: HashMap::new(),
            known_calls: HashSet::new(),
            known_error_types: HashSet::new(),
            known_dependencies: HashSet::new(),
            windows,
        }
    }

    /// Interns names: the same few hundred services and operations repeat millions of times.
    fn intern(&mut self, s: &str) -> Name {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Name = Arc::from(s);
        self.names.insert(n.clone());
        n
    }

    fn on_pair(&mut self, parent: SpanInfo, child: SpanInfo, time: UnixNanos, phase: Phase, out: &mut Findings) {
        if parent.service != child.service {
            let edge = DependencyEdge {
                environment: child.environment.to_string(),
                caller: parent.service.to_string(),
                callee: child.service.to_string(),
            };
            if self.known_dependencies.insert(edge.clone()) {
                out.edges.push(edge);
            }
        }
        let call = (
            (parent.environment.clone(), parent.service.clone(), parent.operation.clone()),
            (child.environment.clone(), child.service.clone(), child.operation.clone()),
        );
        if self.known_calls.contains(&call) {
            return;
        }
        self.known_calls.insert(call);
        // A call path the baseline never saw is usually just a request type it did not happen to
        // see; a new call into an error handler (Spring's BasicErrorController.error, an
        // `...ExceptionHandler`) is how many frameworks show a new failure in traces.
        let lowered = child.operation.to_ascii_lowercase();
        let severity = if lowered.contains("error") || lowered.contains("exception") {
            Severity::Sev2
        } else {
            Severity::Sev5
        };
        if phase == Phase::Detecting && severity <= self.config.min_severity {
            let signal = format!("span.new_call:{} -> {}", parent.operation, child.operation);
            let draft = AnomalyDraft {
                source: SourceKind::Traces,
                service: &child.service,
                environment: &child.environment,
                instance: None,
                time,
                signal,
            };
            out.anomalies.push(draft.finish(
                severity,
                if severity <= Severity::Sev2 { 0.9 } else { 0.5 },
                None,
                None,
                format!(
                    "{}:{} called {} for the first time",
                    parent.service, parent.operation, child.operation
                ),
            ));
        }
    }

    fn close_window(&mut self, start: UnixNanos, ops: HashMap<OpKey, OpWindow>, phase: Phase, out: &mut Findings) {
        let q = self.config.latency_quantile;
        let mut per_service: HashMap<(Name, Name), (u32, u32)> = HashMap::new();
        for (key, window) in ops {
            let e = per_service.entry((key.0.clone(), key.1.clone())).or_default();
            e.0 += window.errors;
            e.1 += window.log_durations.len() as u32;

            let baseline = self.latency.entry(key.clone()).or_default();
            let mut anomalous = false;
            if phase == Phase::Detecting {
                if let Some(profile) = baseline.profile(start, &self.config.baseline) {
                    let threshold = profile.threshold(q, true).max(profile.median + self.config.latency_min_ratio.ln());
                    let n = window.log_durations.len() as u64;
                    let k = window.log_durations.iter().filter(|v| **v > threshold).count() as u64;
                    let surprise = binomial_surprise(k, n, 1.0 - q);
                    let levels = &self.config.surprise_levels;
                    if let Some(severity) = levels.severity(surprise).filter(|s| *s <= self.config.min_severity) {
                        if k >= 3 {
                            anomalous = true;
                            let mut sorted = window.log_durations.clone();
                            sorted.sort_by(f64::total_cmp);
                            let observed_ms = sorted[sorted.len() / 2].exp() / 1000.0;
                            let expected_ms = profile.median.exp() / 1000.0;
                            let draft = AnomalyDraft {
                                source: SourceKind::Traces,
                                service: &key.1,
                                environment: &key.0,
                                instance: None,
                                time: start,
                                signal: format!("span.latency:{}", key.2),
                            };
                            out.anomalies.push(draft.finish(
                                severity,
                                levels.score(surprise),
                                Some(observed_ms),
                                Some(expected_ms),
                                format!(
                                    "{} of {} `{}` spans slower than the baseline p{} ({:.1} ms); median {:.1} ms vs {:.1} ms normally",
                                    k, n, key.2, (q * 100.0).round(), threshold.exp() / 1000.0, observed_ms, expected_ms
                                ),
                            ));
                        }
                    }
                }
            }
            if !anomalous {
                for v in window.log_durations {
                    baseline.observe(start, v, &self.config.baseline);
                }
            }
        }

        for ((environment, service), (errors, total)) in per_service {
            let rate = self.errors.entry((environment.clone(), service.clone())).or_default();
            let mut anomalous = false;
            if phase == Phase::Detecting && errors > 0 && rate.total >= 50.0 {
                let expected = rate.rate();
                let surprise = binomial_surprise(u64::from(errors), u64::from(total), expected);
                let levels = &self.config.surprise_levels;
                if let Some(severity) = levels.severity(surprise).filter(|s| *s <= self.config.min_severity) {
                    anomalous = true;
                    let observed = f64::from(errors) / f64::from(total.max(1));
                    let draft = AnomalyDraft {
                        source: SourceKind::Traces,
                        service: &service,
                        environment: &environment,
                        instance: None,
                        time: start,
                        signal: "span.errors".to_string(),
                    };
                    out.anomalies.push(draft.finish(
                        severity,
                        levels.score(surprise),
                        Some(observed),
                        Some(expected),
                        format!(
                            "{errors} of {total} spans failed ({:.1}%) vs {:.2}% normally",
                            observed * 100.0,
                            expected * 100.0
                        ),
                    ));
                }
            }
            if !anomalous {
                rate.add(errors, total);
            }
        }
    }
}

impl Detector for SpanDetector {
    fn source(&self) -> SourceKind {
        SourceKind::Traces
    }

    fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings) {
        let EventBody::Span(span) = &event.body else { return };
        let environment = self.intern(&event.resource.environment);
        let service = self.intern(&event.resource.service);
        let operation = self.intern(&span.name);
        let info = SpanInfo { environment: environment.clone(), service: service.clone(), operation: operation.clone() };
        for (parent, child) in self.joiner.join(span, info) {
            self.on_pair(parent, child, event.time, phase, out);
        }

        if span.is_error {
            if let Some(error_type) = &span.error_type {
                let key = (environment.clone(), service.clone(), error_type.clone());
                if !self.known_error_types.contains(&key) {
                    if phase == Phase::Detecting && Severity::Sev2 <= self.config.min_severity {
                        let draft = AnomalyDraft {
                            source: SourceKind::Traces,
                            service: &service,
                            environment: &environment,
                            instance: event.resource.instance.as_deref(),
                            time: event.time,
                            signal: format!("span.new_error:{error_type}"),
                        };
                        out.anomalies.push(draft.finish(
                            Severity::Sev2,
                            0.9,
                            None,
                            None,
                            format!("`{}` failed with {error_type}, never seen in the baseline", span.name),
                        ));
                    }
                    self.known_error_types.insert(key);
                }
            }
        }

        let window = self.windows.at(event.time).entry((environment, service, operation)).or_default();
        let micros = (span.duration_ns as f64 / 1000.0).max(1.0);
        window.log_durations.push(micros.ln());
        window.errors += u32::from(span.is_error);
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        for (start, ops) in self.windows.close_until(watermark) {
            self.close_window(start, ops, phase, out);
        }
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        for (start, ops) in self.windows.close_all() {
            self.close_window(start, ops, phase, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Resource, NANOS_PER_SEC};
    use std::collections::BTreeMap;

    fn span(t: i64, service: &str, op: &str, id: &str, parent: Option<&str>, ms: f64, error: bool) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Span(SpanEvent {
                trace_id: "0".repeat(32),
                span_id: id.to_string(),
                parent_span_id: parent.map(str::to_string),
                name: op.to_string(),
                kind: "server".into(),
                duration_ns: (ms * 1e6) as i64,
                is_error: error,
                error_type: error.then(|| "TimeoutException".to_string()),
                attributes: BTreeMap::new(),
            }),
        }
    }

    /// 10 requests a second for `secs` seconds from `t0`: frontend -> cart, cart latency `cart_ms`.
    fn traffic(d: &mut SpanDetector, t0: i64, secs: i64, cart_ms: f64, cart_errors: bool, phase: Phase, out: &mut Findings) {
        for i in 0..secs * 10 {
            let t = t0 + i * NANOS_PER_SEC / 10;
            let jitter = 1.0 + ((i * 7919) % 13) as f64 / 40.0;
            let root = format!("r{t0}-{i}");
            let child = format!("c{t0}-{i}");
            // children first, as exporters deliver them
            d.observe(&span(t, "cart", "GET /cart", &child, Some(&root), cart_ms * jitter, cart_errors && i % 2 == 0), phase, out);
            d.observe(&span(t, "frontend", "GET /", &root, None, cart_ms * jitter + 5.0, false), phase, out);
            d.advance(t - NANOS_PER_SEC, phase, out);
        }
    }

    #[test]
    fn learns_dependency_edges_even_when_children_arrive_first() {
        let mut d = SpanDetector::new(DetectConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 5, 20.0, false, Phase::Learning, &mut out);
        assert_eq!(
            out.edges,
            vec![DependencyEdge { environment: "default".into(), caller: "frontend".into(), callee: "cart".into() }]
        );
        assert!(out.anomalies.is_empty(), "nothing is judged while learning");
    }

    #[test]
    fn flags_a_latency_regression_on_the_slow_operation_only() {
        let mut d = SpanDetector::new(DetectConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 20.0, false, Phase::Learning, &mut out);
        let mut quiet = Findings::default();
        traffic(&mut d, 120 * NANOS_PER_SEC, 60, 20.0, false, Phase::Detecting, &mut quiet);
        assert!(quiet.anomalies.is_empty(), "normal traffic raised {:?}", quiet.anomalies);
        let mut slow = Findings::default();
        traffic(&mut d, 180 * NANOS_PER_SEC, 30, 200.0, false, Phase::Detecting, &mut slow);
        let cart: Vec<_> = slow.anomalies.iter().filter(|a| a.signal == "span.latency:GET /cart").collect();
        assert!(!cart.is_empty());
        assert!(cart.iter().any(|a| a.severity == Severity::Sev1));
        assert!(cart[0].observed.unwrap() > 5.0 * cart[0].expected.unwrap());
    }

    #[test]
    fn flags_an_error_burst_and_a_new_error_type() {
        let mut d = SpanDetector::new(DetectConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 20.0, false, Phase::Learning, &mut out);
        let mut bad = Findings::default();
        traffic(&mut d, 120 * NANOS_PER_SEC, 30, 20.0, true, Phase::Detecting, &mut bad);
        assert!(bad.anomalies.iter().any(|a| a.signal == "span.errors" && a.service == "cart" && a.severity == Severity::Sev1));
        let new_type: Vec<_> = bad.anomalies.iter().filter(|a| a.signal == "span.new_error:TimeoutException").collect();
        assert_eq!(new_type.len(), 1, "a new error type is reported once");
    }

    #[test]
    fn flags_a_new_call_into_an_error_handler_but_not_a_new_ordinary_call() {
        let mut d = SpanDetector::new(DetectConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 20, 20.0, false, Phase::Learning, &mut out);
        let mut found = Findings::default();
        d.observe(&span(30 * NANOS_PER_SEC, "frontend", "GET /", "p", None, 5.0, false), Phase::Detecting, &mut found);
        d.observe(&span(30 * NANOS_PER_SEC, "auth", "POST /login", "c", Some("p"), 5.0, false), Phase::Detecting, &mut found);
        assert!(found.anomalies.is_empty(), "a new ordinary call path is not reported: {:?}", found.anomalies);
        assert!(found.edges.iter().any(|e| e.caller == "frontend" && e.callee == "auth"));
        d.observe(&span(31 * NANOS_PER_SEC, "auth", "BasicErrorController.error", "e", Some("c"), 1.0, false), Phase::Detecting, &mut found);
        assert!(found.anomalies.iter().any(|a| a.signal == "span.new_call:POST /login -> BasicErrorController.error"
            && a.service == "auth" && a.severity == Severity::Sev2));
    }
}
