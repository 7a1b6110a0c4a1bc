//! Waits on call edges from metrics, for deployments that export per-edge latency but no traces.
//!
//! A caller's client-side latency of its calls into a peer and the peer's server-side latency of
//! the same calls differ by the time the calls spent between the two: network, proxies, queues.
//! Series of an edge carry `peer.caller` and `peer.callee` on their points, and the two sides'
//! names differ only in `client` and `server` (as `http.client.request.duration` and
//! `http.server.request.duration` do, or `edge.client_latency_p50(s)` and
//! `edge.server_latency_p50(s)`). At each time both sides report, their difference is the edge's
//! wait, learned and judged as any metric series is (`metrics`), upwards only, by its own
//! spread: the load that moves both sides cancels out of it. A wait that held 0 throughout
//! (both sides rounded to one bucket) has no spread, and its first departure is judged by how
//! long 0 held, as any such series is. While learning, a time whose calls were far outside their
//! usual client-side latency (an earlier fault at either end) is learned into neither baseline.
//!
//! As for span waits (`edges`), a wait that grew says one of the edge's two ends is in trouble,
//! and which one is the end the anomalous edges share: each anomalous edge is placed on the
//! endpoint with the larger share of anomalous edges among all its edges judged at that time, in
//! both directions; a tie blames both.

use crate::baseline::{Baseline, Direction};
use crate::edges::{blame_shared_endpoints, EdgeTally};
use crate::metrics::{gate, Series};
use crate::{AnomalyDraft, Findings, MetricsConfig, Phase, SharedConfig};
use culprit_core::{MetricPoint, Severity, SignalFamily, SourceKind, UnixNanos};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// (environment, caller, callee, the client side's metric name)
pub(crate) type WaitKey = (String, String, String, String);

/// What one time brought of an edge: its client and server latency.
#[derive(Debug, Default, Clone, Copy)]
struct Sides {
    client: Option<f64>,
    server: Option<f64>,
}

/// An edge whose wait passed the gates at one time.
#[derive(Debug)]
struct SlowEdge<'a> {
    key: &'a WaitKey,
    severity: Severity,
    z: f64,
    wait: f64,
    usual: f64,
    client: f64,
}

/// One edge: its wait as a series, and its client side's latency, which tells whether the
/// edge's calls were in trouble.
#[derive(Default)]
struct Edge {
    wait: Series,
    client: Baseline,
}

impl Edge {
    /// Whether the calls' client-side latency `client` passes every metric gate against what
    /// the edge's calls usually take.
    fn calls_in_trouble(
        &mut self,
        config: &SharedConfig,
        metrics: &MetricsConfig,
        time: UnixNanos,
        client: f64,
    ) -> bool {
        self.client
            .profile(time, &config.baseline)
            .and_then(|p| gate(config, metrics, &p, client, Direction::Up))
            .is_some()
    }
}

#[derive(Default)]
pub(crate) struct EdgeWaits {
    edges: HashMap<WaitKey, Edge>,
    /// Sides seen per time, until the watermark passes the time.
    pending: BTreeMap<UnixNanos, HashMap<WaitKey, Sides>>,
}

/// Which side of an edge a point reports, and the edge, if it reports one.
fn edge_of(environment: &str, point: &MetricPoint) -> Option<(WaitKey, bool)> {
    let caller = point
        .attributes
        .get("peer.caller")
        .filter(|s| !s.is_empty())?;
    let callee = point
        .attributes
        .get("peer.callee")
        .filter(|s| !s.is_empty())?;
    let (name, client) = if point.name.contains("client") {
        (point.name.clone(), true)
    } else if point.name.contains("server") {
        (point.name.replacen("server", "client", 1), false)
    } else {
        return None;
    };
    let key = (
        environment.to_string(),
        caller.clone(),
        callee.clone(),
        name,
    );
    Some((key, client))
}

impl EdgeWaits {
    /// Keeps the point if it is one side of an edge.
    pub fn observe(&mut self, environment: &str, time: UnixNanos, point: &MetricPoint) {
        let Some((key, client)) = edge_of(environment, point) else {
            return;
        };
        let sides = self
            .pending
            .entry(time)
            .or_default()
            .entry(key)
            .or_default();
        if client {
            sides.client = Some(point.value);
        } else {
            sides.server = Some(point.value);
        }
    }

    /// Judges every time before `watermark` whose edges are complete.
    pub fn close(
        &mut self,
        config: &SharedConfig,
        metrics: &MetricsConfig,
        watermark: UnixNanos,
        phase: Phase,
        out: &mut Findings,
    ) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= watermark {
                break;
            }
            let (time, edges) = entry.remove_entry();
            self.judge(config, metrics, time, edges, phase, out);
        }
    }

    fn judge(
        &mut self,
        config: &SharedConfig,
        metrics: &MetricsConfig,
        time: UnixNanos,
        edges: HashMap<WaitKey, Sides>,
        phase: Phase,
        out: &mut Findings,
    ) {
        let mut judged: Vec<(WaitKey, f64, f64)> = edges
            .into_iter()
            .filter_map(|(key, s)| Some((key, s.client? - s.server?, s.client?)))
            .collect();
        judged.sort_by(|a, b| a.0.cmp(&b.0));
        // Parallel to `judged`: the edges whose wait is anomalous.
        let mut slow: Vec<Option<SlowEdge>> = Vec::with_capacity(judged.len());
        for (key, wait, client) in &judged {
            let edge = self.edges.entry(key.clone()).or_default();
            // Calls far outside their usual latency mean a fault at one end, and the time between
            // the two sides then says nothing about the usual one: while learning, such a time
            // is left out of both baselines, as a sustained shift of any series is.
            if phase != Phase::Detecting && edge.calls_in_trouble(config, metrics, time, *client) {
                slow.push(None);
                continue;
            }
            let verdict = edge
                .wait
                .judge(config, metrics, time, *wait, phase, Direction::Up);
            if verdict.is_none() {
                edge.client.observe(time, *client, &config.baseline);
            }
            slow.push(verdict.map(|(severity, profile)| SlowEdge {
                key,
                severity,
                z: profile.z(*wait),
                wait: *wait,
                usual: profile.median,
                client: *client,
            }));
        }
        if slow.iter().all(Option::is_none) {
            return;
        }
        let tallies: Vec<EdgeTally> = judged
            .iter()
            .zip(&slow)
            .map(|((key, _, _), s)| EdgeTally {
                environment: &key.0,
                caller: &key.1,
                callee: &key.2,
                anomalous: u64::from(s.is_some()),
                all: 1,
            })
            .collect();
        let mut blamed: BTreeMap<(&str, &str), Vec<&SlowEdge>> = BTreeMap::new();
        for (i, end) in blame_shared_endpoints(&tallies, |i| slow[i].is_some()) {
            let s = slow[i].as_ref().expect("only slow edges are blamed");
            blamed
                .entry((tallies[i].environment, end))
                .or_default()
                .push(s);
        }
        for ((environment, service), edges) in blamed {
            let worst = edges
                .iter()
                .max_by(|a, b| a.z.total_cmp(&b.z).then(b.key.cmp(a.key)))
                .expect("a blamed service has edges");
            let severity = edges
                .iter()
                .map(|e| e.severity)
                .min()
                .expect("a blamed service has edges");
            // As for other metrics: 0.5 at the gate, 1.0 a hundred times beyond it.
            let score = (0.5 + (worst.z / metrics.min_z).log10() / 4.0).clamp(0.5, 1.0);
            let draft = AnomalyDraft {
                source: SourceKind::Metrics,
                service,
                environment,
                instance: None,
                time,
                signal: SignalFamily::MetricEdgeWait.on(&worst.key.3),
            };
            out.anomalies.push(draft.finish(
                severity,
                score,
                Some(worst.wait),
                Some(worst.usual),
                describe(service, &edges, worst),
            ));
        }
    }

    /// The learned waits, each under both its ends, for the baseline view.
    pub fn baselines(&self, config: &SharedConfig, out: &mut Vec<crate::SignalSummary>) {
        for ((environment, caller, callee, name), edge) in &self.edges {
            let signal = SignalFamily::MetricEdgeWait.on(format_args!("{name} {caller}->{callee}"));
            for service in [caller, callee] {
                out.push(crate::SignalSummary {
                    source: SourceKind::Metrics,
                    environment: environment.clone(),
                    service: service.clone(),
                    signal: signal.to_string(),
                    baseline: edge.wait.baseline.summary(
                        Direction::Up,
                        &config.severity_levels,
                        |x| x,
                    ),
                });
            }
        }
    }

    /// Forgets every edge into or out of `service`; returns how many baselines went.
    pub fn forget(&mut self, service: &str) -> usize {
        let before = self.edges.len();
        self.edges
            .retain(|(_, caller, callee, _), _| caller != service && callee != service);
        before - self.edges.len()
    }

    pub fn save_state(&self) -> EdgeWaitState {
        EdgeWaitState {
            edges: self
                .edges
                .iter()
                .map(|(k, e)| (k.clone(), (e.wait.baseline.clone(), e.client.clone())))
                .collect(),
        }
    }

    pub fn restore_state(&mut self, state: EdgeWaitState) {
        self.edges = state.edges.into_iter().map(edge).collect();
        self.pending.clear();
    }

    /// Takes the edges into and out of `service` from a learned state; returns how many.
    pub fn adopt(&mut self, service: &str, state: EdgeWaitState) -> usize {
        self.forget(service);
        let before = self.edges.len();
        self.edges.extend(
            state
                .edges
                .into_iter()
                .filter(|((_, caller, callee, _), _)| caller == service || callee == service)
                .map(edge),
        );
        self.edges.len() - before
    }
}

/// An edge from its learned baselines; a run held back is in flight and starts again.
fn edge((key, (wait, client)): (WaitKey, (Baseline, Baseline))) -> (WaitKey, Edge) {
    let mut series = Series::default();
    series.baseline = wait;
    (
        key,
        Edge {
            wait: series,
            client,
        },
    )
}

/// What [`EdgeWaits`] learned: each edge's wait and client latency baselines.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct EdgeWaitState {
    #[serde(with = "crate::state::pairs")]
    edges: HashMap<WaitKey, (Baseline, Baseline)>,
}

/// "calls into X from A, B wait 140 ms longer than usual (A -> X: 333 ms at the client, ...)".
fn describe(service: &str, edges: &[&SlowEdge], worst: &SlowEdge) -> String {
    let calls = crate::edges::which_calls(
        service,
        edges.iter().map(|e| (e.key.1.as_str(), e.key.2.as_str())),
    );
    format!(
        "{calls} wait {:.4} longer than usual by `{}` ({} -> {}: {:.4} at the client, {:.4} of it between the two where {:.4} is usual; {:.1} robust deviations)",
        worst.wait - worst.usual,
        worst.key.3,
        worst.key.1,
        worst.key.2,
        worst.client,
        worst.wait,
        worst.usual,
        worst.z,
    )
}

#[cfg(test)]
mod tests {
    use crate::metrics::MetricDetector;
    use crate::{Detector, Findings, MetricsConfig, Phase, SharedConfig};
    use culprit_core::{
        Anomaly, Event, EventBody, MetricPoint, Resource, SignalFamily, NANOS_PER_SEC,
    };
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const MINUTE: i64 = 60 * NANOS_PER_SEC;
    /// A and B call X and Y; X calls db.
    const EDGES: [(&str, &str); 5] = [("A", "X"), ("B", "X"), ("A", "Y"), ("B", "Y"), ("X", "db")];

    /// One side of an edge, reported by the service on that side.
    fn side(t: i64, caller: &str, callee: &str, client: bool, value: f64) -> Event {
        let (service, name) = if client {
            (caller, "edge.client_latency_p50(s)")
        } else {
            (callee, "edge.server_latency_p50(s)")
        };
        Event {
            time: t,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Metric(MetricPoint {
                name: name.into(),
                value,
                attributes: BTreeMap::from([
                    ("peer.caller".to_string(), caller.to_string()),
                    ("peer.callee".to_string(), callee.to_string()),
                ]),
            }),
        }
    }

    /// Per minute, each edge's server time and the wait on top of it at the client.
    type Minute = fn(i64, (&str, &str)) -> (f64, f64);

    fn usual(i: i64, _: (&str, &str)) -> (f64, f64) {
        // Server 20-24 ms, wait 1-2 ms.
        (
            0.020 + (i % 5) as f64 * 0.001,
            0.001 + (i % 3) as f64 * 0.0005,
        )
    }

    fn run(d: &mut MetricDetector, from: i64, minutes: i64, phase: Phase, how: Minute) -> Findings {
        let mut out = Findings::default();
        for i in from..from + minutes {
            let t = i * MINUTE;
            for edge in EDGES {
                let (server, wait) = how(i, edge);
                d.observe(
                    &side(t, edge.0, edge.1, true, server + wait),
                    phase,
                    &mut out,
                );
                d.observe(&side(t, edge.0, edge.1, false, server), phase, &mut out);
            }
            d.advance(t + MINUTE, phase, &mut out);
        }
        out
    }

    /// Learns an hour of usual minutes, checks ten more raise nothing, then runs `fault` for
    /// five minutes and returns the edge waits it raised.
    fn waits_under(fault: Minute) -> Vec<Anomaly> {
        let mut d = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        run(&mut d, 0, 60, Phase::Learning, usual);
        let quiet = run(&mut d, 60, 10, Phase::Detecting, usual);
        assert!(quiet.anomalies.is_empty(), "{:#?}", quiet.anomalies);
        waits(run(&mut d, 70, 5, Phase::Detecting, fault))
    }

    fn waits(found: Findings) -> Vec<Anomaly> {
        found
            .anomalies
            .into_iter()
            .filter(|a| a.signal.family() == SignalFamily::MetricEdgeWait)
            .collect()
    }

    #[test]
    fn calls_into_a_service_that_wait_longer_blame_it_and_not_its_callers() {
        // X's network adds 300 ms to every call into it; its own processing is unchanged.
        let found = waits_under(|i, edge| {
            let (server, wait) = usual(i, edge);
            (server, if edge.1 == "X" { wait + 0.3 } else { wait })
        });
        assert!(!found.is_empty());
        assert!(found.iter().all(|a| a.service == "X"), "{found:#?}");
        assert!(
            found[0].description.contains("calls into X from A, B"),
            "{}",
            found[0].description
        );
    }

    #[test]
    fn a_callee_slow_in_its_own_processing_raises_no_wait() {
        let found = waits_under(|i, edge| {
            let (server, wait) = usual(i, edge);
            (if edge.1 == "X" { server + 0.3 } else { server }, wait)
        });
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn an_earlier_fault_in_the_learning_window_does_not_hide_the_next_wait() {
        // X is CPU-starved for four minutes of the learned hour: calls into it take 2 s, and in
        // one of those minutes the client side reads 0.8 s above the server side.
        let mut d = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        run(&mut d, 0, 40, Phase::Learning, usual);
        run(&mut d, 40, 4, Phase::Learning, |i, edge| {
            let (server, wait) = usual(i, edge);
            match (edge.1 == "X", i) {
                (true, 42) => (2.0, 0.8),
                (true, _) => (2.0, wait),
                _ => (server, wait),
            }
        });
        run(&mut d, 44, 16, Phase::Learning, usual);
        // Later the network into X adds 300 ms, well under the 0.8 s of the fault's minute.
        let found = waits(run(&mut d, 60, 5, Phase::Detecting, |i, edge| {
            let (server, wait) = usual(i, edge);
            (server, if edge.1 == "X" { wait + 0.3 } else { wait })
        }));
        assert!(found.iter().any(|a| a.service == "X"), "{found:#?}");
    }

    #[test]
    fn a_wait_is_judged_by_its_own_spread_not_by_the_load_both_sides_share() {
        // The server side swings between 0.1 and 0.7 s with the load, and the client side with
        // it; the time between the two stays within 10-20 ms.
        let loaded: Minute = |i, _| (0.1 + (i % 7) as f64 * 0.1, 0.01 + (i % 3) as f64 * 0.005);
        let mut d = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        run(&mut d, 0, 60, Phase::Learning, loaded);
        let quiet = run(&mut d, 60, 10, Phase::Detecting, loaded);
        assert!(quiet.anomalies.is_empty(), "{:#?}", quiet.anomalies);
        // 150 ms more between the sides of the calls into X: small against the load's swing,
        // large against the wait's own.
        let found = waits(run(&mut d, 70, 5, Phase::Detecting, |i, edge| {
            let (server, wait) = (0.1 + (i % 7) as f64 * 0.1, 0.01 + (i % 3) as f64 * 0.005);
            (server, if edge.1 == "X" { wait + 0.15 } else { wait })
        }));
        assert!(found.iter().any(|a| a.service == "X"), "{found:#?}");
    }

    #[test]
    fn a_wait_that_held_zero_is_judged_by_how_long_it_held() {
        // Both sides are rounded to the same bucket, so the wait was 0 throughout; its first
        // departure says little by itself, and is learned as the wait's scale.
        let rounded = |i: i64, edge: (&str, &str)| (usual(i, edge).0, 0.0);
        let mut d = MetricDetector::new(SharedConfig::default(), MetricsConfig::default());
        run(&mut d, 0, 60, Phase::Learning, rounded);
        let found = waits(run(&mut d, 60, 1, Phase::Detecting, |i, edge| {
            (usual(i, edge).0, 0.002)
        }));
        assert!(found.is_empty(), "{found:#?}");
        // Far beyond that scale it is a wait that grew.
        let found = waits(run(&mut d, 61, 1, Phase::Detecting, |i, edge| {
            (usual(i, edge).0, if edge.1 == "X" { 0.3 } else { 0.0 })
        }));
        assert!(found.iter().any(|a| a.service == "X"), "{found:#?}");
    }
}
