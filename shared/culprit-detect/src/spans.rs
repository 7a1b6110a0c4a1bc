//! Span detector: latency per (service, operation), error ratio per service, and trace
//! structure (caller -> callee operation pairs), plus the service dependency edges the
//! correlator's graph is learned from.
//!
//! Spans are first assembled into traces (a trace is complete once no span of it arrived for
//! `trace_timeout`), so that each span is judged on what it did itself:
//! - its *exclusive* time (its duration minus the time covered by its children): a caller that
//!   waits on a slow callee keeps its exclusive time, so latency is attributed where it arises;
//! - errors that *originate* in it (it failed and none of its children did): a caller that
//!   fails because its callee failed is a symptom, not an origin.
//!
//! Latency is judged by how many spans of a window exceed the baseline's p99 (a binomial test),
//! not by the window's mean: one slow outlier moves a mean, while a real regression moves the
//! share of slow spans, and the test needs only the per-span baseline rather than a history of
//! windows.

use crate::baseline::Baseline;
use crate::edges::{EdgeCalls, EdgeKey, EdgeLatency};
use crate::novelty::Novelty;
use crate::stats::{binomial_surprise, poisson_surprise};
use crate::window::Windows;
use crate::{AnomalyDraft, Detector, Findings, Phase, SharedConfig, SpansConfig};
use culprit_core::{
    DependencyEdge, Event, EventBody, Severity, SignalFamily, SourceKind, SpanEvent, UnixNanos,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Name = Arc<str>;

/// (environment, service, operation)
type OpKey = (Name, Name, Name);

/// What one event-time window of complete traces holds.
#[derive(Debug, Default)]
struct SpanWindow {
    ops: HashMap<OpKey, OpWindow>,
    /// Calls into other services, judged on their edges rather than as the caller's own time.
    edges: HashMap<EdgeKey, EdgeCalls>,
}

#[derive(Debug, Default)]
struct OpWindow {
    spans: u32,
    /// ln(exclusive time in microseconds) of each span that is not a call into another
    /// service.
    log_durations: Vec<f64>,
    /// Errors that originated in these spans.
    errors: u32,
}

/// One service's slow spans in a window.
#[derive(Debug, Default)]
struct SlowSpans {
    slow: u64,
    total: u64,
    /// Slow spans expected by chance.
    expected: f64,
    worst: Option<WorstOp>,
    /// Exclusive times per operation, folded into the baselines if the window is normal.
    pending: Vec<(OpKey, Vec<f64>)>,
}

#[derive(Debug)]
struct WorstOp {
    operation: Name,
    slow: usize,
    total: usize,
    observed_ms: f64,
    expected_ms: f64,
}

/// A span waiting for the rest of its trace.
#[derive(Debug, Clone)]
struct PendingSpan {
    key: OpKey,
    span_id: String,
    parent_span_id: Option<String>,
    start: UnixNanos,
    duration: i64,
    is_error: bool,
    error_type: Option<String>,
    name: String,
    /// For a client span, the service it calls as its attributes name it (`peer.service`,
    /// `server.address`): the callee when that has no spans of its own (a database, a cache).
    peer: Option<Name>,
}

#[derive(Debug, Default)]
struct PendingTrace {
    spans: Vec<PendingSpan>,
    last_seen: UnixNanos,
}

/// What one span of a complete trace did itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Attributed {
    /// Its duration minus the time covered by its children.
    exclusive: i64,
    /// It failed and none of its children did.
    originated: bool,
    has_children: bool,
    /// Its only child, when that runs in another service: the span is a call, and its
    /// exclusive time is the caller's wait on the callee, not work of its own.
    remote_child: Option<usize>,
}

/// Exclusive time, error origin and remote call of every span of a complete trace.
fn attribute(trace: &[PendingSpan]) -> Vec<Attributed> {
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in trace.iter().enumerate() {
        if let Some(p) = &s.parent_span_id {
            children.entry(p.as_str()).or_default().push(i);
        }
    }
    trace
        .iter()
        .map(|s| {
            let kids = children
                .get(s.span_id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let (start, end) = (s.start, s.start + s.duration);
            // Union of the children's intervals, clipped to the parent: parallel calls overlap.
            let mut intervals: Vec<(i64, i64)> = kids
                .iter()
                .map(|&k| {
                    (
                        trace[k].start.max(start),
                        (trace[k].start + trace[k].duration).min(end),
                    )
                })
                .filter(|(a, b)| b > a)
                .collect();
            intervals.sort_unstable();
            let mut covered = 0;
            let mut cursor = start;
            for (a, b) in intervals {
                let a = a.max(cursor);
                if b > a {
                    covered += b - a;
                    cursor = b;
                }
            }
            let exclusive = (s.duration - covered).max(0);
            let originated = s.is_error && !kids.iter().any(|&k| trace[k].is_error);
            let remote_child = match kids {
                [only] if trace[*only].key.1 != s.key.1 => Some(*only),
                _ => None,
            };
            Attributed {
                exclusive,
                originated,
                has_children: !kids.is_empty(),
                remote_child,
            }
        })
        .collect()
}

/// The service a client span calls, as its attributes name it.
fn peer_service(span: &SpanEvent) -> Option<&str> {
    if span.kind != "client" {
        return None;
    }
    ["peer.service", "server.address", "net.peer.name"]
        .iter()
        .find_map(|k| span.attributes.get(*k))
        .map(String::as_str)
        .filter(|p| !p.is_empty())
}

/// Errors and totals seen in the baseline, decayed so the rate follows slow drift.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
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
/// Both maps are generational: when the current generation fills up, or has spanned
/// [`SpanJoiner::HORIZON`] of event time, it becomes the previous one and the old previous is
/// dropped, bounding memory without per-entry timestamps. Span ids are kept as their 64-bit
/// hash ([`span_key`]), not as strings: up to 400,000 of them are held, fewer where the spans of
/// two horizons are fewer.
#[derive(Debug, Default)]
struct SpanJoiner {
    spans: [HashMap<u64, SpanInfo>; 2],
    pending: [HashMap<u64, Vec<SpanInfo>>; 2],
    /// Event time of the first entry of each current generation (spans, pending).
    opened: [Option<UnixNanos>; 2],
}

/// A span id's key in [`SpanJoiner`]: its FNV-1a hash. Two of the few hundred thousand ids held
/// share one with a probability of about 1e-8.
fn span_key(span_id: &str) -> u64 {
    culprit_core::hash::Fnv1a::of(span_id.as_bytes())
}

impl SpanJoiner {
    const GENERATION: usize = 200_000;
    const HORIZON: i64 = culprit_core::SPAN_ID_HORIZON;

    /// Whether the current generation `which` (0: spans, 1: pending) of `len` entries is due to
    /// become the previous one before an entry of event time `time` joins it.
    fn rotate(&mut self, which: usize, len: usize, time: UnixNanos) -> bool {
        let opened = self.opened[which].get_or_insert(time);
        if len >= Self::GENERATION || time.saturating_sub(*opened) >= Self::HORIZON {
            self.opened[which] = Some(time);
            return true;
        }
        false
    }

    fn lookup(&self, key: u64) -> Option<&SpanInfo> {
        self.spans[0].get(&key).or_else(|| self.spans[1].get(&key))
    }

    /// Records `span` and returns the (parent, child) pairs it completes.
    fn join(
        &mut self,
        span: &SpanEvent,
        info: SpanInfo,
        time: UnixNanos,
    ) -> Vec<(SpanInfo, SpanInfo)> {
        let mut pairs = Vec::new();
        if let Some(parent_id) = &span.parent_span_id {
            let parent_key = span_key(parent_id);
            match self.lookup(parent_key) {
                Some(parent) => pairs.push((parent.clone(), info.clone())),
                None => {
                    if self.rotate(1, self.pending[0].len(), time) {
                        self.pending.swap(0, 1);
                        self.pending[0].clear();
                    }
                    self.pending[0]
                        .entry(parent_key)
                        .or_default()
                        .push(info.clone());
                }
            }
        }
        let key = span_key(&span.span_id);
        for generation in &mut self.pending {
            if let Some(children) = generation.remove(&key) {
                pairs.extend(children.into_iter().map(|c| (info.clone(), c)));
            }
        }
        if self.rotate(0, self.spans[0].len(), time) {
            self.spans.swap(0, 1);
            self.spans[0].clear();
        }
        self.spans[0].insert(key, info);
        pairs
    }
}

pub struct SpanDetector {
    config: SharedConfig,
    spans: SpansConfig,
    names: HashSet<Name>,
    joiner: SpanJoiner,
    latency: HashMap<OpKey, Baseline>,
    errors: HashMap<(Name, Name), ErrorRate>,
    /// When each operation was first seen (`i64::MIN` for operations of the baseline phase), to
    /// tell a change in a known operation from the usual behaviour of one never seen before.
    operations_seen: HashMap<OpKey, UnixNanos>,
    error_handler_calls: Novelty<(OpKey, OpKey)>,
    error_types: Novelty<(Name, Name, String)>,
    known_dependencies: HashSet<DependencyEdge>,
    traces: HashMap<String, PendingTrace>,
    windows: Windows<SpanWindow>,
    edge_latency: EdgeLatency,
}

/// What a [`SpanDetector`] learned ([`crate::state`]). The dependencies already published are
/// left out on purpose: a restarted embedder publishes each edge again once, which costs the
/// correlator nothing and gives a correlator that restarted too its topology back.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpanState {
    #[serde(with = "crate::state::pairs")]
    latency: HashMap<OpKey, Baseline>,
    #[serde(with = "crate::state::pairs")]
    errors: HashMap<(Name, Name), ErrorRate>,
    #[serde(with = "crate::state::pairs")]
    operations_seen: HashMap<OpKey, UnixNanos>,
    error_handler_calls: Vec<(OpKey, OpKey)>,
    error_types: Vec<(Name, Name, String)>,
    edges: crate::edges::EdgeState,
}

impl SpanState {
    const VERSION: u32 = 1;
}

impl SpanDetector {
    /// A trace is complete once none of its spans arrived for this long (event time).
    const TRACE_TIMEOUT: i64 = 5 * culprit_core::NANOS_PER_SEC;

    pub fn new(config: SharedConfig, spans: SpansConfig) -> SpanDetector {
        let windows = Windows::new(config.window_nanos(), config.lateness_nanos());
        let error_handler_calls = config.novelty.novelty();
        let error_types = config.novelty.novelty();

        SpanDetector {
            config,
            spans,
            names: HashSet::new(),
            joiner: SpanJoiner::default(),
            latency: HashMap::new(),
            errors: HashMap::new(),
            operations_seen: HashMap::new(),
            error_handler_calls,
            error_types,
            known_dependencies: HashSet::new(),
            traces: HashMap::new(),
            windows,
            edge_latency: EdgeLatency::default(),
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

    fn on_pair(
        &mut self,
        parent: SpanInfo,
        child: SpanInfo,
        time: UnixNanos,
        phase: Phase,
        out: &mut Findings,
    ) {
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
            (
                parent.environment.clone(),
                parent.service.clone(),
                parent.operation.clone(),
            ),
            (
                child.environment.clone(),
                child.service.clone(),
                child.operation.clone(),
            ),
        );
        // A call path the baseline never saw is usually just a request type it did not happen to
        // see; a new call into an error handler (Spring's BasicErrorController.error, an
        // `...ExceptionHandler`) is how many frameworks show a new failure in traces.
        let lowered = child.operation.to_ascii_lowercase();
        let into_error_handler = lowered.contains("error") || lowered.contains("exception");
        let first_seen = if into_error_handler {
            match phase {
                Phase::Learning => {
                    self.error_handler_calls.learn(call);
                    None
                }
                Phase::Detecting => self.error_handler_calls.observe(&call, time),
            }
        } else {
            None
        };
        // New behaviour of an operation the baseline knows is a change; errors of an operation the
        // baseline never saw may be how it always behaves, so they weigh less.
        let novelty_window =
            i64::from(self.config.novelty.window_secs) * culprit_core::NANOS_PER_SEC;
        let parent_known = first_seen.is_some_and(|c| {
            self.operations_seen
                .get(&(
                    parent.environment.clone(),
                    parent.service.clone(),
                    parent.operation.clone(),
                ))
                .is_some_and(|since| since.saturating_add(novelty_window) <= c.earliest)
        });
        let severity = if parent_known {
            Severity::Sev2
        } else {
            Severity::Sev4
        };
        if let Some(time) = first_seen
            .map(|c| c.first)
            .filter(|_| severity <= self.config.min_severity)
        {
            let signal = SignalFamily::SpanNewCall
                .on(format_args!("{} -> {}", parent.operation, child.operation));
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
                if parent_known { 0.9 } else { 0.5 },
                None,
                None,
                format!(
                    "{}:{} called {} for the first time",
                    parent.service, parent.operation, child.operation
                ),
            ));
        }
    }

    /// Moves traces that went quiet before `watermark` (all of them when None) into windows.
    fn complete_traces(&mut self, watermark: Option<UnixNanos>, phase: Phase, out: &mut Findings) {
        let done: Vec<String> = self
            .traces
            .iter()
            .filter(|(_, t)| watermark.is_none_or(|w| t.last_seen + Self::TRACE_TIMEOUT <= w))
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let Some(trace) = self.traces.remove(&id) else {
                continue;
            };
            let attributed = attribute(&trace.spans);
            for (span, a) in trace.spans.iter().zip(&attributed) {
                let window = self.windows.at(span.start);
                // A call's exclusive time is the wait on its callee: judged on the edge.
                let callee = match a.remote_child {
                    Some(c) => Some((trace.spans[c].key.1.clone(), Some(trace.spans[c].duration))),
                    None if !a.has_children => {
                        let peer = span.peer.clone().filter(|p| *p != span.key.1);
                        if let Some(peer) = &peer {
                            // A callee without spans of its own is learned from its callers.
                            let edge = DependencyEdge {
                                environment: span.key.0.to_string(),
                                caller: span.key.1.to_string(),
                                callee: peer.to_string(),
                            };
                            if !self.known_dependencies.contains(&edge) {
                                self.known_dependencies.insert(edge.clone());
                                out.edges.push(edge);
                            }
                        }
                        peer.map(|p| (p, None))
                    }
                    None => None,
                };
                let op = window.ops.entry(span.key.clone()).or_default();
                op.spans += 1;
                op.errors += u32::from(a.originated);
                match callee {
                    Some((callee, server)) => {
                        let edge = (span.key.0.clone(), span.key.1.clone(), callee);
                        window
                            .edges
                            .entry(edge)
                            .or_default()
                            .push(a.exclusive, server);
                    }
                    None => {
                        let micros = (a.exclusive as f64 / 1000.0).max(1.0);
                        op.log_durations.push(micros.ln());
                    }
                }
                if let (true, Some(error_type)) = (a.originated, &span.error_type) {
                    self.on_originated_error(span, error_type, phase, out);
                }
            }
        }
    }

    /// An error type a service never produced in its baseline is news on its own.
    fn on_originated_error(
        &mut self,
        span: &PendingSpan,
        error_type: &str,
        phase: Phase,
        out: &mut Findings,
    ) {
        let (environment, service, _) = &span.key;
        let key = (environment.clone(), service.clone(), error_type.to_string());
        let first_seen = match phase {
            Phase::Learning => {
                self.error_types.learn(key);
                return;
            }
            Phase::Detecting => self.error_types.observe(&key, span.start),
        };
        if let Some(time) = first_seen
            .map(|c| c.first)
            .filter(|_| Severity::Sev2 <= self.config.min_severity)
        {
            let draft = AnomalyDraft {
                source: SourceKind::Traces,
                service,
                environment,
                instance: None,
                time,
                signal: SignalFamily::SpanNewError.on(error_type),
            };
            out.anomalies.push(draft.finish(
                Severity::Sev2,
                0.9,
                None,
                None,
                format!(
                    "`{}` failed with {error_type}, never seen in the baseline",
                    span.name
                ),
            ));
        }
    }

    fn close_window(
        &mut self,
        start: UnixNanos,
        window: SpanWindow,
        phase: Phase,
        out: &mut Findings,
    ) {
        let SpanWindow { ops, edges } = window;
        self.edge_latency
            .close(&self.config, &self.spans, start, edges, phase, out);
        let q = self.spans.latency_quantile;
        let mut per_service: HashMap<(Name, Name), (u32, u32)> = HashMap::new();
        // Latency is tested per service: each span against its own operation's threshold, the
        // exceedances of all operations pooled. One test per service rather than per operation
        // keeps chance findings rare, and pooling gives a quiet operation's slow spans a voice.
        let mut slow: HashMap<(Name, Name), SlowSpans> = HashMap::new();
        for (key, window) in ops {
            let e = per_service
                .entry((key.0.clone(), key.1.clone()))
                .or_default();
            e.0 += window.errors;
            e.1 += window.spans;

            let baseline = self.latency.entry(key.clone()).or_default();
            if phase == Phase::Detecting {
                if let Some(profile) = baseline.profile(start, &self.config.baseline) {
                    // Values are ln(microseconds): the absolute floor is applied in linear time.
                    let floor_us = profile.median.exp() + self.spans.latency_min_excess_ms * 1000.0;
                    let threshold = profile
                        .threshold(q, true)
                        .max(profile.median + self.spans.latency_min_ratio.ln())
                        .max(floor_us.ln());
                    let n = window.log_durations.len();
                    let k = window
                        .log_durations
                        .iter()
                        .filter(|v| **v > threshold)
                        .count();
                    // A fresh normal span beats the largest of m baseline spans with chance
                    // 1/(m+1): a thin baseline's threshold is exceeded more often than 1 - q.
                    let p0 = (1.0 - q).max(2.0 / (profile.samples as f64 + 1.0));
                    let s = slow.entry((key.0.clone(), key.1.clone())).or_default();
                    s.expected += n as f64 * p0;
                    s.slow += k as u64;
                    s.total += n as u64;
                    if k > 0 && s.worst.as_ref().is_none_or(|w| k > w.slow) {
                        let mut sorted = window.log_durations.clone();
                        sorted.sort_by(f64::total_cmp);
                        s.worst = Some(WorstOp {
                            operation: key.2.clone(),
                            slow: k,
                            total: n,
                            observed_ms: sorted[sorted.len() / 2].exp() / 1000.0,
                            expected_ms: profile.median.exp() / 1000.0,
                        });
                    }
                    s.pending.push((key.clone(), window.log_durations));
                    continue;
                }
            }
            for v in window.log_durations {
                baseline.observe(start, v, &self.config.baseline);
            }
        }

        for ((environment, service), s) in slow {
            let surprise = poisson_surprise(s.slow, s.expected);
            let levels = &self.config.surprise_levels;
            let severity = levels
                .severity(surprise)
                .filter(|sev| *sev <= self.config.min_severity && s.slow >= 3);
            if let (Some(severity), Some(worst)) = (severity, &s.worst) {
                let draft = AnomalyDraft {
                    source: SourceKind::Traces,
                    service: &service,
                    environment: &environment,
                    instance: None,
                    time: start,
                    signal: SignalFamily::SpanLatency.signal(),
                };
                out.anomalies.push(draft.finish(
                    severity,
                    levels.score(surprise),
                    Some(worst.observed_ms),
                    Some(worst.expected_ms),
                    format!(
                        "{} of {} spans spent longer in themselves than their operation's p{} (expected {:.1}); worst `{}`: {} of {} slow, median {:.1} ms vs {:.1} ms normally",
                        s.slow, s.total, (q * 100.0).round(), s.expected, worst.operation, worst.slow, worst.total, worst.observed_ms, worst.expected_ms
                    ),
                ));
            } else {
                // Normal windows keep the baselines current.
                for (key, values) in s.pending {
                    let baseline = self.latency.entry(key).or_default();
                    for v in values {
                        baseline.observe(start, v, &self.config.baseline);
                    }
                }
            }
        }

        for ((environment, service), (errors, total)) in per_service {
            let rate = self
                .errors
                .entry((environment.clone(), service.clone()))
                .or_default();
            let mut anomalous = false;
            if phase == Phase::Detecting && errors > 0 && rate.total >= 50.0 {
                let expected = rate.rate();
                let surprise = binomial_surprise(u64::from(errors), u64::from(total), expected);
                let levels = &self.config.surprise_levels;
                if let Some(severity) = levels
                    .severity(surprise)
                    .filter(|s| *s <= self.config.min_severity)
                {
                    anomalous = true;
                    let observed = f64::from(errors) / f64::from(total.max(1));
                    let draft = AnomalyDraft {
                        source: SourceKind::Traces,
                        service: &service,
                        environment: &environment,
                        instance: None,
                        time: start,
                        signal: SignalFamily::SpanErrors.signal(),
                    };
                    out.anomalies.push(draft.finish(
                        severity,
                        levels.score(surprise),
                        Some(observed),
                        Some(expected),
                        format!(
                            "{errors} of {total} spans failed here, not in a callee ({:.1}%) vs {:.2}% normally",
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
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Traces]
    }

    fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings) {
        let EventBody::Span(span) = &event.body else {
            return;
        };
        let environment = self.intern(&event.resource.environment);
        let service = self.intern(&event.resource.service);
        let operation = self.intern(&span.name);
        let since = if phase == Phase::Learning {
            i64::MIN
        } else {
            event.time
        };
        let seen = self
            .operations_seen
            .entry((environment.clone(), service.clone(), operation.clone()))
            .or_insert(since);
        *seen = (*seen).min(since);
        let info = SpanInfo {
            environment: environment.clone(),
            service: service.clone(),
            operation: operation.clone(),
        };
        for (parent, child) in self.joiner.join(span, info, event.time) {
            self.on_pair(parent, child, event.time, phase, out);
        }

        let peer = peer_service(span).map(|p| self.intern(p));
        let trace = self.traces.entry(span.trace_id.clone()).or_default();
        trace.last_seen = trace.last_seen.max(event.time);
        trace.spans.push(PendingSpan {
            key: (environment, service, operation),
            span_id: span.span_id.clone(),
            parent_span_id: span.parent_span_id.clone(),
            start: event.time,
            duration: span.duration_ns.max(0),
            is_error: span.is_error,
            error_type: span.error_type.clone(),
            name: span.name.clone(),
            peer,
        });
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        self.complete_traces(Some(watermark), phase, out);
        self.error_types.expire(watermark);
        self.error_handler_calls.expire(watermark);
        for (start, window) in self.windows.close_until(watermark) {
            self.close_window(start, window, phase, out);
        }
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        self.complete_traces(None, phase, out);
        for (start, window) in self.windows.close_all() {
            self.close_window(start, window, phase, out);
        }
    }

    fn baselines(&self, out: &mut Vec<crate::SignalSummary>) {
        // Latencies are learned as ln(microseconds); operators read milliseconds.
        for ((environment, service, operation), baseline) in &self.latency {
            out.push(crate::SignalSummary {
                source: SourceKind::Traces,
                environment: environment.to_string(),
                service: service.to_string(),
                signal: format!("{} (ms)", SignalFamily::SpanLatency.on(operation)),
                baseline: baseline.summary(
                    crate::baseline::Direction::Up,
                    &self.config.severity_levels,
                    |x| x.exp() / 1000.0,
                ),
            });
        }
        self.edge_latency.baselines(&self.config, out);
    }

    fn forget(&mut self, service: &str) -> usize {
        let before = self.latency.len() + self.errors.len();
        self.latency.retain(|key, _| &*key.1 != service);
        self.errors.retain(|key, _| &*key.1 != service);
        before - self.latency.len() - self.errors.len() + self.edge_latency.forget(service)
    }

    /// Takes the service's latency and error baselines, the call edges into and out of it and
    /// the operations, error types and error-handler calls it was seen with.
    fn adopt(
        &mut self,
        service: &str,
        learned: &crate::state::RawValue,
    ) -> Result<usize, crate::state::StateError> {
        let state: SpanState = crate::state::unversioned(learned, SpanState::VERSION)?;
        self.forget(service);
        let mine = |key: &OpKey| &*key.1 == service;
        let before = self.latency.len() + self.errors.len();
        self.latency
            .extend(state.latency.into_iter().filter(|(k, _)| mine(k)));
        self.errors
            .extend(state.errors.into_iter().filter(|(k, _)| &*k.1 == service));
        let adopted = self.latency.len() + self.errors.len() - before;
        for (key, seen) in state.operations_seen.into_iter().filter(|(k, _)| mine(k)) {
            self.operations_seen.entry(key).or_insert(seen);
        }
        for key in state.error_handler_calls {
            if mine(&key.0) {
                self.error_handler_calls.learn(key);
            }
        }
        for key in state.error_types {
            if &*key.1 == service {
                self.error_types.learn(key);
            }
        }
        Ok(adopted + self.edge_latency.adopt(service, state.edges))
    }

    fn state_name(&self) -> Option<String> {
        Some("spans".into())
    }

    fn save_state(&self) -> Option<crate::state::SavedState> {
        crate::state::versioned(
            SpanState::VERSION,
            &SpanState {
                latency: self.latency.clone(),
                errors: self.errors.clone(),
                operations_seen: self.operations_seen.clone(),
                error_handler_calls: self.error_handler_calls.known_keys(),
                error_types: self.error_types.known_keys(),
                edges: self.edge_latency.save_state(),
            },
        )
    }

    fn restore_state(
        &mut self,
        state: &crate::state::RawValue,
    ) -> Result<(), crate::state::StateError> {
        let state: SpanState = crate::state::unversioned(state, SpanState::VERSION)?;
        self.latency = state.latency;
        self.errors = state.errors;
        self.operations_seen = state.operations_seen;
        self.error_handler_calls
            .set_known(state.error_handler_calls);
        self.error_types.set_known(state.error_types);
        self.edge_latency.restore_state(state.edges);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Anomaly, Resource, NANOS_PER_SEC};
    use std::collections::{BTreeMap, BTreeSet};

    fn span(
        t: i64,
        service: &str,
        op: &str,
        id: &str,
        parent: Option<&str>,
        ms: f64,
        error: bool,
    ) -> Event {
        // One trace per request: the trace is named after its root span.
        let trace = parent.unwrap_or(id).to_string();
        Event {
            time: t,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Span(SpanEvent {
                trace_id: trace,
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

    fn joined(j: &mut SpanJoiner, t: i64, id: &str, parent: Option<&str>) -> usize {
        let event = span(t, "svc", "op", id, parent, 1.0, false);
        let EventBody::Span(s) = &event.body else {
            unreachable!()
        };
        let info = SpanInfo {
            environment: Name::from("prod"),
            service: Name::from("svc"),
            operation: Name::from("op"),
        };
        j.join(s, info, t).len()
    }

    /// Span ids are held for one to two horizons of event time, however few spans come: a
    /// parent within the horizon is still joined, one long gone is not, and a quiet stream does
    /// not keep its ids for hours.
    #[test]
    fn the_joiner_forgets_span_ids_after_two_horizons_of_event_time() {
        let mut j = SpanJoiner::default();
        let h = SpanJoiner::HORIZON;
        assert_eq!(joined(&mut j, 0, "p1", None), 0);
        assert_eq!(
            joined(&mut j, h / 2, "c1", Some("p1")),
            1,
            "parent half a horizon ago"
        );
        // A span a second for ten horizons: only the last two horizons' ids are held.
        for i in 1..=10 * h / NANOS_PER_SEC {
            joined(&mut j, h / 2 + i * NANOS_PER_SEC, &format!("s{i}"), None);
        }
        let held = j.spans[0].len() + j.spans[1].len();
        assert!(
            held <= 2 * (h / NANOS_PER_SEC) as usize + 1,
            "{held} ids held"
        );
        assert_eq!(
            joined(&mut j, 11 * h, "c2", Some("p1")),
            0,
            "parent ten horizons ago is gone"
        );
        assert_eq!(joined(&mut j, 11 * h, "c3", Some("s600")), 1);
    }

    /// 10 requests a second for `secs` seconds from `t0`: frontend -> cart, cart latency `cart_ms`.
    fn traffic(
        d: &mut SpanDetector,
        t0: i64,
        secs: i64,
        cart_ms: f64,
        cart_errors: bool,
        phase: Phase,
        out: &mut Findings,
    ) {
        for i in 0..secs * 10 {
            let t = t0 + i * NANOS_PER_SEC / 10;
            let jitter = 1.0 + ((i * 7919) % 13) as f64 / 40.0;
            let root = format!("r{t0}-{i}");
            let child = format!("c{t0}-{i}");
            // children first, as exporters deliver them
            d.observe(
                &span(
                    t,
                    "cart",
                    "GET /cart",
                    &child,
                    Some(&root),
                    cart_ms * jitter,
                    cart_errors && i % 2 == 0,
                ),
                phase,
                out,
            );
            d.observe(
                &span(
                    t,
                    "frontend",
                    "GET /",
                    &root,
                    None,
                    cart_ms * jitter + 5.0,
                    cart_errors && i % 2 == 0,
                ),
                phase,
                out,
            );
            d.advance(t - NANOS_PER_SEC, phase, out);
        }
    }

    fn pending(
        id: &str,
        parent: Option<&str>,
        start: i64,
        duration: i64,
        is_error: bool,
    ) -> PendingSpan {
        let name: Name = Arc::from("x");
        PendingSpan {
            key: (name.clone(), name.clone(), name),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            start,
            duration,
            is_error,
            error_type: None,
            name: "x".into(),
            peer: None,
        }
    }

    #[test]
    fn exclusive_time_subtracts_the_union_of_child_intervals() {
        // root 0..100 with children 10..40 and 30..60 (overlapping) and 90..120 (clipped to 100)
        let trace = vec![
            pending("r", None, 0, 100, true),
            pending("a", Some("r"), 10, 30, false),
            pending("b", Some("r"), 30, 30, true),
            pending("c", Some("r"), 90, 30, false),
        ];
        let attributed = attribute(&trace);
        let own = |a: &Attributed| (a.exclusive, a.originated);
        assert_eq!(
            own(&attributed[0]),
            (100 - 50 - 10, false),
            "root's error came from b"
        );
        assert_eq!(own(&attributed[2]), (30, true), "b failed on its own");
        assert_eq!(own(&attributed[1]), (30, false));
        // Same service throughout: no span is a call into another service.
        assert!(attributed.iter().all(|a| a.remote_child.is_none()));
    }

    #[test]
    fn call_edge_baselines_show_under_both_ends_and_a_recalculation_of_either_forgets_them() {
        let learned = || {
            let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
            let mut out = Findings::default();
            traffic(&mut d, 0, 600, 20.0, false, Phase::Learning, &mut out);
            d.flush(Phase::Learning, &mut out);
            d
        };
        let edge_signals = |d: &SpanDetector, service: &str| {
            let mut all = Vec::new();
            d.baselines(&mut all);
            let mut of: Vec<String> = all
                .into_iter()
                .filter(|s| s.service == service && s.signal.starts_with("span.edge_latency"))
                .map(|s| s.signal)
                .collect();
            of.sort();
            of
        };
        let d = learned();
        let wait = "span.edge_latency:frontend->cart (ms)".to_string();
        let server = "span.edge_latency:frontend->cart server (ms)".to_string();
        assert_eq!(edge_signals(&d, "frontend"), std::slice::from_ref(&wait));
        assert_eq!(edge_signals(&d, "cart"), [wait, server]);

        for service in ["cart", "frontend"] {
            let mut d = learned();
            let latency_and_errors = d.latency.len() + d.errors.len();
            let dropped = d.forget(service);
            assert!(
                dropped > 0 && dropped <= latency_and_errors + 2,
                "{service}: {dropped}"
            );
            assert!(edge_signals(&d, "frontend").is_empty(), "{service}");
            assert!(edge_signals(&d, "cart").is_empty(), "{service}");
        }
    }

    /// The baselines `d` shows for `service`, as text, without the call edges when `edges` is
    /// false.
    fn shown(d: &SpanDetector, service: &str, edges: bool) -> Vec<String> {
        crate::shown_baselines(d, service, |signal| {
            edges || !signal.starts_with("span.edge_latency")
        })
    }

    /// `pay` on its own, 10 requests a second at `ms`.
    fn pay_traffic(d: &mut SpanDetector, t0: i64, secs: i64, ms: f64, out: &mut Findings) {
        for i in 0..secs * 10 {
            let t = t0 + i * NANOS_PER_SEC / 10;
            let jitter = 1.0 + ((i * 31) % 11) as f64 / 30.0;
            let id = format!("p{t0}-{i}");
            d.observe(
                &span(t, "pay", "POST /pay", &id, None, ms * jitter, false),
                Phase::Learning,
                out,
            );
            d.advance(t - NANOS_PER_SEC, Phase::Learning, out);
        }
    }

    #[test]
    fn an_adopted_service_judges_as_the_fresh_detector_and_the_others_keep_their_baselines() {
        let mut out = Findings::default();
        let mut live = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        traffic(&mut live, 0, 600, 20.0, false, Phase::Learning, &mut out);
        pay_traffic(&mut live, 0, 600, 8.0, &mut out);
        live.flush(Phase::Learning, &mut out);
        // The re-learn: a fresh detector trained on a later period, cart ten times slower and
        // pay faster.
        let t1 = 3600 * NANOS_PER_SEC;
        let mut fresh = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        traffic(&mut fresh, t1, 600, 200.0, false, Phase::Learning, &mut out);
        pay_traffic(&mut fresh, t1, 600, 3.0, &mut out);
        fresh.flush(Phase::Learning, &mut out);
        let (cart_before, pay_before, frontend_before) = (
            shown(&live, "cart", true),
            shown(&live, "pay", true),
            shown(&live, "frontend", false),
        );
        assert_ne!(cart_before, shown(&fresh, "cart", true));

        let adopted = live.adopt("cart", &fresh.save_state().unwrap()).unwrap();
        // Latency, error rates (not shown) and the call edge's wait and server time.
        assert!(adopted > shown(&fresh, "cart", true).len(), "{adopted}");
        assert_eq!(shown(&live, "cart", true), shown(&fresh, "cart", true));
        assert_eq!(shown(&live, "pay", true), pay_before, "pay untouched");
        assert_eq!(
            shown(&live, "frontend", false),
            frontend_before,
            "frontend's own latency untouched"
        );

        // Cart at the new level: the adopted detector is quiet about it, as the fresh one, while
        // one that kept the old baseline reports it.
        let cart_latency = |d: &mut SpanDetector| {
            let mut out = Findings::default();
            traffic(d, 2 * t1, 120, 200.0, false, Phase::Detecting, &mut out);
            d.flush(Phase::Detecting, &mut out);
            out.anomalies
                .into_iter()
                .filter(|a| a.service == "cart" && a.signal.as_str().starts_with("span.latency"))
                .count()
        };
        let mut old = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        traffic(&mut old, 0, 600, 20.0, false, Phase::Learning, &mut out);
        old.flush(Phase::Learning, &mut out);
        assert!(
            cart_latency(&mut old) > 0,
            "the old baseline finds the new level slow"
        );
        assert_eq!(cart_latency(&mut live), 0);
        assert_eq!(cart_latency(&mut fresh), 0);
    }

    #[test]
    fn learns_dependency_edges_even_when_children_arrive_first() {
        let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 5, 20.0, false, Phase::Learning, &mut out);
        assert_eq!(
            out.edges,
            vec![DependencyEdge {
                environment: "default".into(),
                caller: "frontend".into(),
                callee: "cart".into()
            }]
        );
        assert!(out.anomalies.is_empty(), "nothing is judged while learning");
    }

    #[test]
    fn flags_a_latency_regression_on_the_slow_operation_only() {
        let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 20.0, false, Phase::Learning, &mut out);
        let mut quiet = Findings::default();
        traffic(
            &mut d,
            120 * NANOS_PER_SEC,
            60,
            20.0,
            false,
            Phase::Detecting,
            &mut quiet,
        );
        assert!(
            quiet.anomalies.is_empty(),
            "normal traffic raised {:?}",
            quiet.anomalies
        );
        let mut slow = Findings::default();
        traffic(
            &mut d,
            180 * NANOS_PER_SEC,
            30,
            200.0,
            false,
            Phase::Detecting,
            &mut slow,
        );
        let cart: Vec<_> = slow
            .anomalies
            .iter()
            .filter(|a| a.signal == "span.latency" && a.service == "cart")
            .collect();
        assert!(!cart.is_empty());
        assert!(
            !slow.anomalies.iter().any(|a| a.service == "frontend"),
            "the caller only waited on cart: {:?}",
            slow.anomalies
        );
        assert!(cart.iter().any(|a| a.severity == Severity::Sev1));
        assert!(cart[0].observed.unwrap() > 5.0 * cart[0].expected.unwrap());
    }

    #[test]
    fn flags_an_error_burst_and_a_new_error_type() {
        let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 120, 20.0, false, Phase::Learning, &mut out);
        let mut bad = Findings::default();
        traffic(
            &mut d,
            120 * NANOS_PER_SEC,
            30,
            20.0,
            true,
            Phase::Detecting,
            &mut bad,
        );
        assert!(bad.anomalies.iter().any(|a| a.signal == "span.errors"
            && a.service == "cart"
            && a.severity == Severity::Sev1));
        assert!(
            !bad.anomalies
                .iter()
                .any(|a| a.signal == "span.errors" && a.service == "frontend"),
            "frontend's errors came from cart"
        );
        let new_type: Vec<_> = bad
            .anomalies
            .iter()
            .filter(|a| a.signal == "span.new_error:TimeoutException")
            .collect();
        assert_eq!(new_type.len(), 1, "a new error type is reported once");
    }

    #[test]
    fn flags_a_new_call_into_an_error_handler_but_not_a_new_ordinary_call() {
        let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 20, 20.0, false, Phase::Learning, &mut out);
        let mut found = Findings::default();
        d.observe(
            &span(
                30 * NANOS_PER_SEC,
                "frontend",
                "GET /",
                "p",
                None,
                5.0,
                false,
            ),
            Phase::Detecting,
            &mut found,
        );
        d.observe(
            &span(
                30 * NANOS_PER_SEC,
                "auth",
                "POST /login",
                "c",
                Some("p"),
                5.0,
                false,
            ),
            Phase::Detecting,
            &mut found,
        );
        assert!(
            found.anomalies.is_empty(),
            "a new ordinary call path is not reported: {:?}",
            found.anomalies
        );
        assert!(found
            .edges
            .iter()
            .any(|e| e.caller == "frontend" && e.callee == "auth"));
        for i in 0..3 {
            let id = format!("e{i}");
            d.observe(
                &span(
                    31 * NANOS_PER_SEC + i,
                    "auth",
                    "BasicErrorController.error",
                    &id,
                    Some("c"),
                    1.0,
                    false,
                ),
                Phase::Detecting,
                &mut found,
            );
        }
        // POST /login was never seen in the baseline: its errors may be how it always behaves.
        assert!(found.anomalies.iter().any(|a| a.signal
            == "span.new_call:POST /login -> BasicErrorController.error"
            && a.service == "auth"
            && a.severity == Severity::Sev4));
        // GET /cart is well known: its new failure path is a change.
        d.observe(
            &span(
                32 * NANOS_PER_SEC,
                "cart",
                "GET /cart",
                "k",
                Some("p"),
                5.0,
                false,
            ),
            Phase::Detecting,
            &mut found,
        );
        for i in 0..3 {
            let id = format!("f{i}");
            d.observe(
                &span(
                    33 * NANOS_PER_SEC + i,
                    "cart",
                    "BasicErrorController.error",
                    &id,
                    Some("k"),
                    1.0,
                    false,
                ),
                Phase::Detecting,
                &mut found,
            );
        }
        assert!(
            found.anomalies.iter().any(|a| a.signal
                == "span.new_call:GET /cart -> BasicErrorController.error"
                && a.service == "cart"
                && a.severity == Severity::Sev2),
            "{:?}",
            found.anomalies
        );
    }

    /// A small mesh with a database, one request every 200 ms:
    /// gateway -> A -> X -> db on even requests, gateway -> B -> X -> db and B -> db on odd ones.
    /// Every call is a client span in the caller with the callee's server span as its only
    /// child (db has no spans of its own: its callers' client spans name it in `peer.service`).
    struct Mesh {
        /// Extra wait (ms) on every call edge that touches this service.
        slow_network: Option<&'static str>,
        /// Extra wait (ms) on calls into db only.
        slow_db: bool,
        /// Extra own processing time (ms) of X.
        slow_x: bool,
    }

    impl Mesh {
        const NORMAL: Mesh = Mesh {
            slow_network: None,
            slow_db: false,
            slow_x: false,
        };

        fn wait(&self, caller: &str, callee: &str, jitter: f64) -> f64 {
            let mut ms = 1.0 * jitter;
            if self
                .slow_network
                .is_some_and(|s| s == caller || s == callee)
            {
                ms += 100.0;
            }
            if self.slow_db && callee == "db" {
                ms += 100.0;
            }
            ms
        }

        fn run(&self, d: &mut SpanDetector, t0: i64, secs: i64, phase: Phase, out: &mut Findings) {
            let ms = |v: f64| (v * 1e6) as i64;
            for i in 0..secs * 5 {
                let t = t0 + i * NANOS_PER_SEC / 5;
                let jitter = 1.0 + ((i * 7919) % 13) as f64 / 26.0;
                let trace = format!("t{t0}-{i}");
                let mut spans: Vec<Event> = Vec::new();
                let mut push = |service: &str,
                                op: &str,
                                id: &str,
                                parent: Option<&str>,
                                kind: &str,
                                start: i64,
                                dur: i64,
                                peer: Option<&str>| {
                    let mut attributes = BTreeMap::new();
                    if let Some(p) = peer {
                        attributes.insert("peer.service".to_string(), p.to_string());
                    }
                    spans.push(Event {
                        time: start,
                        resource: Arc::new(Resource::new(service)),
                        body: EventBody::Span(SpanEvent {
                            trace_id: trace.clone(),
                            span_id: format!("{trace}-{id}"),
                            parent_span_id: parent.map(|p| format!("{trace}-{p}")),
                            name: op.to_string(),
                            kind: kind.to_string(),
                            duration_ns: dur,
                            is_error: false,
                            error_type: None,
                            attributes,
                        }),
                    });
                };
                let mid = if i % 2 == 0 { "A" } else { "B" };
                // Built from the leaves up: each span lasts its own work plus its calls.
                let x_own = if self.slow_x { 200.0 } else { 5.0 } * jitter;
                let x_db = 2.0 + self.wait("X", "db", jitter);
                let x_server = x_own + x_db;
                let mid_x = x_server + self.wait(mid, "X", jitter);
                let mid_db = if mid == "B" {
                    2.0 + self.wait("B", "db", jitter)
                } else {
                    0.0
                };
                let mid_server = 3.0 * jitter + mid_x + mid_db;
                let gw_mid = mid_server + self.wait("gateway", mid, jitter);
                let gw_root = 2.0 + gw_mid;
                let at = |offset: f64| t + ms(offset);
                let w_gw = self.wait("gateway", mid, jitter) / 2.0;
                let w_mid = self.wait(mid, "X", jitter) / 2.0;
                push(
                    "gateway",
                    "GET /",
                    "root",
                    None,
                    "server",
                    at(0.0),
                    ms(gw_root),
                    None,
                );
                push(
                    "gateway",
                    &format!("GET {mid}"),
                    "gc",
                    Some("root"),
                    "client",
                    at(1.0),
                    ms(gw_mid),
                    None,
                );
                let s_mid = 1.0 + w_gw;
                push(
                    mid,
                    "handle",
                    "ms",
                    Some("gc"),
                    "server",
                    at(s_mid),
                    ms(mid_server),
                    None,
                );
                push(
                    mid,
                    "GET X",
                    "mc",
                    Some("ms"),
                    "client",
                    at(s_mid + 1.0),
                    ms(mid_x),
                    None,
                );
                if mid == "B" {
                    push(
                        "B",
                        "SELECT",
                        "bq",
                        Some("ms"),
                        "client",
                        at(s_mid + 1.0 + mid_x),
                        ms(mid_db),
                        Some("db"),
                    );
                }
                let s_x = s_mid + 1.0 + w_mid;
                push(
                    "X",
                    "handle",
                    "xs",
                    Some("mc"),
                    "server",
                    at(s_x),
                    ms(x_server),
                    None,
                );
                push(
                    "X",
                    "SELECT",
                    "xq",
                    Some("xs"),
                    "client",
                    at(s_x + x_own),
                    ms(x_db),
                    Some("db"),
                );
                // children first, as exporters deliver them
                for e in spans.iter().rev() {
                    d.observe(e, phase, out);
                }
                d.advance(t - NANOS_PER_SEC, phase, out);
            }
            d.flush(phase, out);
        }
    }

    /// Learns 4 minutes of normal traffic, checks a quiet minute raises nothing, then runs
    /// `fault` for a minute and returns what it raised.
    fn mesh_fault(fault: Mesh) -> Vec<Anomaly> {
        let mut d = SpanDetector::new(SharedConfig::default(), SpansConfig::default());
        let mut out = Findings::default();
        Mesh::NORMAL.run(&mut d, 0, 240, Phase::Learning, &mut out);
        assert!(out
            .edges
            .iter()
            .any(|e| e.caller == "B" && e.callee == "db"));
        let mut quiet = Findings::default();
        Mesh::NORMAL.run(
            &mut d,
            240 * NANOS_PER_SEC,
            60,
            Phase::Detecting,
            &mut quiet,
        );
        assert!(
            quiet.anomalies.is_empty(),
            "normal traffic raised {:?}",
            quiet.anomalies
        );
        let mut found = Findings::default();
        fault.run(
            &mut d,
            300 * NANOS_PER_SEC,
            60,
            Phase::Detecting,
            &mut found,
        );
        found.anomalies
    }

    fn services_with(anomalies: &[Anomaly], signal: &str) -> BTreeSet<String> {
        anomalies
            .iter()
            .filter(|a| a.signal == signal)
            .map(|a| a.service.to_string())
            .collect()
    }

    #[test]
    fn a_slow_network_on_one_service_is_blamed_on_it_not_on_its_callers() {
        let found = mesh_fault(Mesh {
            slow_network: Some("X"),
            ..Mesh::NORMAL
        });
        // Every edge of X waits longer; A and B each have one slow edge and one normal one.
        assert_eq!(
            services_with(&found, "span.edge_latency"),
            BTreeSet::from(["X".to_string()]),
            "{found:#?}"
        );
        // The callers' longer client spans are waits on X, not their own latency.
        let others: Vec<_> = found.iter().filter(|a| a.service != "X").collect();
        assert!(others.is_empty(), "blamed beside X: {others:#?}");
        let edge = found
            .iter()
            .find(|a| a.signal == "span.edge_latency")
            .unwrap();
        assert!(
            edge.description.contains("calls into X from A, B"),
            "{}",
            edge.description
        );
        assert!(
            edge.description.contains("own processing is unchanged"),
            "{}",
            edge.description
        );
        assert!(edge.severity <= Severity::Sev2, "{edge:?}");
    }

    #[test]
    fn a_slow_callee_is_judged_on_its_own_span_and_its_callers_are_not_blamed() {
        let found = mesh_fault(Mesh {
            slow_x: true,
            ..Mesh::NORMAL
        });
        assert_eq!(
            services_with(&found, "span.latency"),
            BTreeSet::from(["X".to_string()]),
            "{found:#?}"
        );
        assert!(
            services_with(&found, "span.edge_latency").is_empty(),
            "the waits did not change: {found:#?}"
        );
        assert!(found.iter().all(|a| a.service == "X"), "{found:#?}");
    }

    #[test]
    fn every_caller_of_a_database_waiting_longer_blames_the_database() {
        let found = mesh_fault(Mesh {
            slow_db: true,
            ..Mesh::NORMAL
        });
        assert_eq!(
            services_with(&found, "span.edge_latency"),
            BTreeSet::from(["db".to_string()]),
            "{found:#?}"
        );
        assert!(found.iter().all(|a| a.service == "db"), "{found:#?}");
    }
}
