//! Latency located on call edges: how long a caller waits on a call beyond the callee's own span.
//!
//! A call into another service is two spans: the caller's client span and the callee's server
//! span inside it. The difference is time on the wire and in queues between them (network,
//! proxies, connection pools), which belongs to neither service's own work. A slow network on
//! one pod raises that wait on every edge that touches the pod, while the pod's own processing
//! stays as it was; a slow callee raises its own span instead.
//!
//! Per edge (environment, caller, callee) the wait is learned against a baseline, with the
//! environment's pooled wait as the fallback for an edge too quiet to have its own (the network
//! between pods is much the same for every pair). Over the trailing `[detect.spans] edge_horizon_secs` the
//! calls of each edge whose wait exceeds its baseline's upper quantile are counted against the
//! number expected by chance. An edge that waits too long says that one of its two ends is in
//! trouble; which one is the end that the slow edges share: each anomalous edge is attributed to
//! the endpoint with the larger share of slow calls over all of its edges, in both directions
//! (a pod whose network is slow delays what it serves and what it calls, so a caller whose other
//! calls and whose own callers are fine is not the one). A tie, one edge between two services
//! that have no other traffic, blames both.
//!
//! A caller's wait is therefore never judged as its own latency (`spans` leaves the exclusive
//! time of a single-call client span to this module), and the callee's span keeps its own test.

use crate::baseline::Baseline;
use crate::stats::exceedance_surprise;
use crate::{AnomalyDraft, Findings, Phase, SharedConfig, SpansConfig};
use culprit_core::{SignalFamily, SourceKind, UnixNanos};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

type Name = Arc<str>;

/// (environment, caller service, callee service)
pub(crate) type EdgeKey = (Name, Name, Name);

/// Calls of one edge in one window.
#[derive(Debug, Default, Clone)]
pub(crate) struct EdgeCalls {
    /// ln(wait in microseconds) of each call.
    pub waits: Vec<f64>,
    /// ln(callee's own span in microseconds), for the calls where the callee has a span.
    pub servers: Vec<f64>,
}

impl EdgeCalls {
    pub fn push(&mut self, wait_ns: i64, server_ns: Option<i64>) {
        self.waits.push(ln_micros(wait_ns));
        if let Some(s) = server_ns {
            self.servers.push(ln_micros(s));
        }
    }
}

fn ln_micros(ns: i64) -> f64 {
    (ns as f64 / 1000.0).max(1.0).ln()
}

/// A window of one edge still inside the horizon; tainted once it was part of an anomaly, so its
/// waits are never learned.
#[derive(Debug)]
struct RecentCalls {
    start: UnixNanos,
    calls: EdgeCalls,
    tainted: bool,
}

/// How one edge's calls over the horizon compare with its baseline.
#[derive(Debug)]
struct EdgeVerdict {
    key: EdgeKey,
    calls: u64,
    slow: u64,
    expected: f64,
    /// Calls that waited longer than any call of the baseline, and how many chance would give.
    beyond: u64,
    expected_beyond: f64,
    surprise: f64,
    /// Median wait of the slow calls (of all calls when none is slow), ms.
    median_wait: f64,
    usual_wait: f64,
    median_server: Option<f64>,
    usual_server: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct EdgeLatency {
    waits: HashMap<EdgeKey, Baseline>,
    /// Every edge's waits per environment: the fallback for edges too quiet for their own.
    pooled: HashMap<Name, Baseline>,
    servers: HashMap<EdgeKey, Baseline>,
    recent: HashMap<EdgeKey, VecDeque<RecentCalls>>,
}

impl EdgeLatency {
    /// The learned call waits, for the baseline view: each under both its caller and its callee
    /// (`span.edge_latency:caller->callee (ms)`), and the callee's own server time under the callee
    /// (`... server (ms)`). The per-environment pool is no service's and is not shown.
    pub(crate) fn baselines(&self, config: &SharedConfig, out: &mut Vec<crate::SignalSummary>) {
        let ms = |x: f64| x.exp() / 1000.0;
        let summary =
            |b: &Baseline| b.summary(crate::baseline::Direction::Up, &config.severity_levels, ms);
        for ((environment, caller, callee), baseline) in &self.waits {
            let signal = format!(
                "{} (ms)",
                SignalFamily::SpanEdgeLatency.on(format_args!("{caller}->{callee}"))
            );
            for service in [caller, callee] {
                out.push(crate::SignalSummary {
                    source: SourceKind::Traces,
                    environment: environment.to_string(),
                    service: service.to_string(),
                    signal: signal.clone(),
                    baseline: summary(baseline),
                });
            }
        }
        for ((environment, caller, callee), baseline) in &self.servers {
            out.push(crate::SignalSummary {
                source: SourceKind::Traces,
                environment: environment.to_string(),
                service: callee.to_string(),
                signal: format!(
                    "{} server (ms)",
                    SignalFamily::SpanEdgeLatency.on(format_args!("{caller}->{callee}"))
                ),
                baseline: summary(baseline),
            });
        }
    }

    /// Forgets every edge into or out of `service` (a recalculation after a planned change to
    /// it: its calls may wait differently from now on); returns how many baselines went.
    pub(crate) fn forget(&mut self, service: &str) -> usize {
        let touches = |(_, caller, callee): &EdgeKey| &**caller == service || &**callee == service;
        let before = self.waits.len() + self.servers.len();
        self.waits.retain(|key, _| !touches(key));
        self.servers.retain(|key, _| !touches(key));
        self.recent.retain(|key, _| !touches(key));
        before - self.waits.len() - self.servers.len()
    }
}

/// What [`EdgeLatency`] learned: the baselines, not the trailing windows.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct EdgeState {
    #[serde(with = "crate::state::pairs")]
    waits: HashMap<EdgeKey, Baseline>,
    #[serde(with = "crate::state::pairs")]
    pooled: HashMap<Name, Baseline>,
    #[serde(with = "crate::state::pairs")]
    servers: HashMap<EdgeKey, Baseline>,
}

impl EdgeLatency {
    pub(crate) fn save_state(&self) -> EdgeState {
        EdgeState {
            waits: self.waits.clone(),
            pooled: self.pooled.clone(),
            servers: self.servers.clone(),
        }
    }

    /// Replaces the edges into and out of `service` with those of `state`; the per-environment
    /// pool is no service's and stays. Returns how many edge baselines were taken.
    pub(crate) fn adopt(&mut self, service: &str, state: EdgeState) -> usize {
        let touches = |(_, caller, callee): &EdgeKey| &**caller == service || &**callee == service;
        self.forget(service);
        let before = self.waits.len() + self.servers.len();
        self.waits
            .extend(state.waits.into_iter().filter(|(k, _)| touches(k)));
        self.servers
            .extend(state.servers.into_iter().filter(|(k, _)| touches(k)));
        self.waits.len() + self.servers.len() - before
    }

    pub(crate) fn restore_state(&mut self, state: EdgeState) {
        self.waits = state.waits;
        self.pooled = state.pooled;
        self.servers = state.servers;
    }
}

/// The slow calls blamed on one service, and the edges they came from.
#[derive(Debug, Default)]
struct Blame<'a> {
    slow: u64,
    calls: u64,
    expected: f64,
    beyond: u64,
    expected_beyond: f64,
    edges: Vec<&'a EdgeVerdict>,
}

impl EdgeLatency {
    /// Takes the calls of the window starting at `start`, learns what left the horizon clean and,
    /// when detecting, reports the services the slow edges share.
    pub fn close(
        &mut self,
        config: &SharedConfig,
        spans: &SpansConfig,
        start: UnixNanos,
        calls: HashMap<EdgeKey, EdgeCalls>,
        phase: Phase,
        out: &mut Findings,
    ) {
        if phase == Phase::Learning {
            for (key, c) in calls {
                self.learn(config, start, &key, &c);
            }
            // Windows still held from an earlier detecting phase are learned as they expire.
            self.expire(config, i64::MAX);
            return;
        }
        for (key, c) in calls {
            self.recent.entry(key).or_default().push_back(RecentCalls {
                start,
                calls: c,
                tainted: false,
            });
        }
        let horizon_start = start + config.window_nanos() - spans.edge_horizon_nanos();
        self.expire(config, horizon_start);
        let verdicts = self.judge(config, spans, start);
        self.report(config, start, &verdicts, out);
    }

    /// Learns and drops the windows that started before `before`.
    fn expire(&mut self, config: &SharedConfig, before: UnixNanos) {
        let mut learned = Vec::new();
        for (key, windows) in &mut self.recent {
            while windows.front().is_some_and(|w| w.start < before) {
                let w = windows.pop_front().expect("front exists");
                if !w.tainted {
                    learned.push((key.clone(), w));
                }
            }
        }
        self.recent.retain(|_, w| !w.is_empty());
        for (key, w) in learned {
            self.learn(config, w.start, &key, &w.calls);
        }
    }

    fn learn(&mut self, config: &SharedConfig, time: UnixNanos, key: &EdgeKey, calls: &EdgeCalls) {
        let b = &config.baseline;
        let own = self.waits.entry(key.clone()).or_default();
        let pooled = self.pooled.entry(key.0.clone()).or_default();
        for w in &calls.waits {
            own.observe(time, *w, b);
            pooled.observe(time, *w, b);
        }
        let server = self.servers.entry(key.clone()).or_default();
        for s in &calls.servers {
            server.observe(time, *s, b);
        }
    }

    fn judge(
        &mut self,
        config: &SharedConfig,
        spans: &SpansConfig,
        time: UnixNanos,
    ) -> Vec<EdgeVerdict> {
        let q = spans.latency_quantile;
        let mut verdicts = Vec::new();
        let mut keys: Vec<&EdgeKey> = self.recent.keys().collect();
        keys.sort();
        for key in keys {
            let own = self
                .waits
                .get_mut(key)
                .and_then(|b| b.profile(time, &config.baseline));
            let Some(profile) = own.or_else(|| {
                self.pooled
                    .get_mut(&key.0)
                    .and_then(|b| b.profile(time, &config.baseline))
            }) else {
                continue;
            };
            let floor_us = profile.median.exp() + spans.latency_min_excess_ms * 1000.0;
            let threshold = profile
                .threshold(q, true)
                .max(profile.median + spans.latency_min_ratio.ln())
                .max(floor_us.ln());
            let windows = &self.recent[key];
            let mut waits: Vec<f64> = windows
                .iter()
                .flat_map(|w| w.calls.waits.iter().copied())
                .collect();
            let mut servers: Vec<f64> = windows
                .iter()
                .flat_map(|w| w.calls.servers.iter().copied())
                .collect();
            if waits.is_empty() {
                continue;
            }
            let slow = waits.iter().filter(|w| **w > threshold).count() as u64;
            // A fresh normal call beats the largest of m baseline calls with chance 1/(m+1).
            let p_beyond = 1.0 / (profile.samples as f64 + 1.0);
            let p0 = (1.0 - q).max(2.0 * p_beyond);
            let expected = waits.len() as f64 * p0;
            let ceiling = threshold.max(profile.max());
            let beyond = waits.iter().filter(|w| **w > ceiling).count() as u64;
            let expected_beyond = waits.len() as f64 * p_beyond;
            let usual_server = self
                .servers
                .get_mut(key)
                .and_then(|b| b.profile(time, &config.baseline))
                .map(|p| p.median.exp() / 1000.0);
            // Early in a fault the horizon still holds normal calls: describe the slow ones.
            let mut slow_waits: Vec<f64> =
                waits.iter().copied().filter(|w| *w > threshold).collect();
            let calls = waits.len() as u64;
            let typical = if slow_waits.is_empty() {
                &mut waits
            } else {
                &mut slow_waits
            };
            verdicts.push(EdgeVerdict {
                key: key.clone(),
                calls,
                slow,
                expected,
                beyond,
                expected_beyond,
                surprise: exceedance_surprise(slow, expected, beyond, expected_beyond),
                median_wait: median(typical).exp() / 1000.0,
                usual_wait: profile.median.exp() / 1000.0,
                median_server: (!servers.is_empty()).then(|| median(&mut servers).exp() / 1000.0),
                usual_server,
            });
        }
        verdicts
    }

    fn report(
        &mut self,
        config: &SharedConfig,
        start: UnixNanos,
        verdicts: &[EdgeVerdict],
        out: &mut Findings,
    ) {
        let levels = &config.surprise_levels;
        let tallies: Vec<EdgeTally> = verdicts
            .iter()
            .map(|v| EdgeTally {
                environment: &v.key.0,
                caller: &v.key.1,
                callee: &v.key.2,
                anomalous: v.slow,
                all: v.calls,
            })
            .collect();
        let mut blamed: BTreeMap<(Name, Name), Blame> = BTreeMap::new();
        for (i, end) in blame_shared_endpoints(&tallies, |i| verdicts[i].surprise >= levels.sev5) {
            let v = &verdicts[i];
            let end = if end == &*v.key.2 { &v.key.2 } else { &v.key.1 };
            let b = blamed.entry((v.key.0.clone(), end.clone())).or_default();
            b.slow += v.slow;
            b.calls += v.calls;
            b.expected += v.expected;
            b.beyond += v.beyond;
            b.expected_beyond += v.expected_beyond;
            b.edges.push(v);
        }
        // Slow waits are never learned, whoever is blamed.
        for v in verdicts.iter().filter(|v| v.surprise >= levels.sev5) {
            if let Some(windows) = self.recent.get_mut(&v.key) {
                windows.iter_mut().for_each(|w| w.tainted = true);
            }
        }
        for ((environment, service), b) in blamed {
            let surprise = exceedance_surprise(b.slow, b.expected, b.beyond, b.expected_beyond);
            let Some(severity) = levels
                .severity(surprise)
                .filter(|s| *s <= config.min_severity && b.slow >= 3)
            else {
                continue;
            };
            let worst = b
                .edges
                .iter()
                .max_by(|a, c| a.slow.cmp(&c.slow).then(a.key.cmp(&c.key)))
                .expect("a blamed service has edges");
            let description = describe(&service, &b, worst);
            let draft = AnomalyDraft {
                source: SourceKind::Traces,
                service: &service,
                environment: &environment,
                instance: None,
                time: start,
                signal: SignalFamily::SpanEdgeLatency.signal(),
            };
            out.anomalies.push(draft.finish(
                severity,
                levels.score(surprise),
                Some(worst.median_wait),
                Some(worst.usual_wait),
                description,
            ));
        }
    }
}

/// "calls into X from A, B wait 1995 ms longer than usual ...; its own processing is unchanged".
fn describe(service: &Name, b: &Blame, worst: &EdgeVerdict) -> String {
    let calls = which_calls(service, b.edges.iter().map(|v| (&*v.key.1, &*v.key.2)));
    // The callee's own processing, on its busiest edge that has server spans.
    let served = b
        .edges
        .iter()
        .filter(|v| v.key.2 == *service && v.median_server.is_some())
        .max_by(|a, c| a.calls.cmp(&c.calls).then(a.key.cmp(&c.key)));
    let own = match served
        .map(|v| (v.median_server, v.usual_server))
        .unwrap_or_default()
    {
        (Some(now), Some(usual)) if now <= usual * 1.5 + 1.0 => {
            format!("; the callee's own processing is unchanged ({now:.1} ms vs {usual:.1} ms)")
        }
        (Some(now), Some(usual)) => {
            format!("; the callee's own processing slowed too ({now:.1} ms vs {usual:.1} ms)")
        }
        _ => String::new(),
    };
    format!(
        "{calls} wait {:.0} ms longer than usual (slow calls {:.1} ms vs {:.1} ms on {} -> {}); {} of {} calls slow on {} edge(s), {:.1} expected{own}",
        (worst.median_wait - worst.usual_wait).max(0.0),
        worst.median_wait,
        worst.usual_wait,
        worst.key.1,
        worst.key.2,
        b.slow,
        b.calls,
        b.edges.len(),
        b.expected,
    )
}

/// One judged call edge, as `blame_shared_endpoints` weighs it.
pub(crate) struct EdgeTally<'a> {
    pub environment: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// Anomalous units on the edge (slow calls, or 1 for an anomalous edge) out of `all`.
    pub anomalous: u64,
    pub all: u64,
}

/// Which end each anomalous edge is blamed on: the end whose judged edges, in both directions,
/// are the more anomalous; both ends on a tie. A slow callee slows every edge into it, while a
/// slow caller slows only its own calls, so the shared endpoint stands out. Returns (index into
/// `edges`, blamed service) for each edge `is_anomalous` picks.
pub(crate) fn blame_shared_endpoints<'a>(
    edges: &[EdgeTally<'a>],
    is_anomalous: impl Fn(usize) -> bool,
) -> Vec<(usize, &'a str)> {
    let mut share: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for e in edges {
        for end in [e.caller, e.callee] {
            let s = share.entry((e.environment, end)).or_default();
            s.0 += e.anomalous;
            s.1 += e.all;
        }
    }
    let fraction = |env: &str, service: &str| {
        let (anomalous, all) = share[&(env, service)];
        anomalous as f64 / all.max(1) as f64
    };
    let mut blamed = Vec::new();
    for (i, e) in edges.iter().enumerate().filter(|(i, _)| is_anomalous(*i)) {
        let (fc, fe) = (
            fraction(e.environment, e.caller),
            fraction(e.environment, e.callee),
        );
        if fe >= fc {
            blamed.push((i, e.callee));
        }
        if fc >= fe {
            blamed.push((i, e.caller));
        }
    }
    blamed
}

/// "calls into X from A, B and calls from X into C": how the (caller, callee) `edges` touch
/// `service`.
pub(crate) fn which_calls<'a>(
    service: &str,
    edges: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> String {
    let into: Vec<&str> = edges
        .clone()
        .filter(|e| e.1 == service)
        .map(|e| e.0)
        .collect();
    let from: Vec<&str> = edges.filter(|e| e.0 == service).map(|e| e.1).collect();
    let mut parts = Vec::new();
    if !into.is_empty() {
        parts.push(format!("calls into {service} from {}", into.join(", ")));
    }
    if !from.is_empty() {
        parts.push(format!("calls from {service} into {}", from.join(", ")));
    }
    parts.join(" and ")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Severity, NANOS_PER_SEC};

    const WINDOW: i64 = 10 * NANOS_PER_SEC;

    fn key() -> EdgeKey {
        ("prod".into(), "A".into(), "X".into())
    }

    /// One window of calls A -> X waiting `waits_ms`.
    fn window(waits_ms: &[f64]) -> HashMap<EdgeKey, EdgeCalls> {
        let mut calls = EdgeCalls::default();
        for w in waits_ms {
            calls.push((w * 1e6) as i64, None);
        }
        HashMap::from([(key(), calls)])
    }

    /// Learns 40 windows of waits spread over 1.5-2.5 ms, with a rare 6 ms one (under 1% of
    /// calls, so the usual range reaches past the quantile threshold), then judges one window
    /// holding eight calls of `slow_ms` among ten usual ones, and returns the severity of the
    /// finding on X, if any.
    fn judged(slow_ms: f64) -> Option<Severity> {
        let (config, spans) = (SharedConfig::default(), SpansConfig::default());
        let mut edges = EdgeLatency::default();
        let usual: Vec<f64> = (0..20).map(|i| 1.5 + f64::from(i) / 20.0).collect();
        let mut out = Findings::default();
        for w in 0..40 {
            let mut waits = usual.clone();
            if w % 10 == 0 {
                waits[0] = 6.0;
            }
            let calls = window(&waits);
            edges.close(
                &config,
                &spans,
                w * WINDOW,
                calls,
                Phase::Learning,
                &mut out,
            );
        }
        let mut waits = usual[..10].to_vec();
        waits.extend([slow_ms; 8]);
        edges.close(
            &config,
            &spans,
            40 * WINDOW,
            window(&waits),
            Phase::Detecting,
            &mut out,
        );
        out.anomalies
            .iter()
            .filter(|a| a.service == "X")
            .map(|a| a.severity)
            .min()
    }

    #[test]
    fn calls_beyond_every_usual_wait_weigh_more_than_slow_calls_inside_the_usual_range() {
        // Eight calls over the threshold but inside the usual range, and eight beyond anything
        // the baseline holds, are the same count over the quantile; only the range tells them
        // apart.
        let within = judged(4.0).expect("eight slow calls of eighteen are found");
        let beyond = judged(2000.0).expect("eight very slow calls are found");
        assert!(beyond < within, "{beyond:?} vs {within:?}");
        assert_eq!(beyond, Severity::Sev1);
    }
}
