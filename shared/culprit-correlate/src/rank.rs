//! Root-cause ranking for one incident.
//!
//! 1. Evidence per service: each anomaly contributes `severity weight x score x source weight`;
//!    within a source the strongest signal counts fully and the next two a little (correlated
//!    signals must not pile up), and sources add up. Changes add to the service they touched:
//!    in full when that service's own behaviour changed after them, as a weak prior otherwise.
//! 2. The causal graph: services are nodes; a dependency edge `callee -> caller` says a fault in
//!    the callee can explain symptoms in its caller (drawn only when the callee's trouble began
//!    near the caller's, or the callee is silent); a change on a service points at its callers.
//! 3. Personalised PageRank on the reversed graph (a walker starts at symptoms, weighted by their
//!    evidence, and moves from callers to the callees that could explain them) finds services
//!    that explain many anomalous neighbours.
//! 4. The fused score is mostly evidence: on public benchmarks PageRank alone ranks root causes
//!    near chance, so it only reorders services whose own evidence is close.

use crate::topology::Topology;
use culprit_core::{
    Anomaly, CausalGraph, EdgeKind, GraphEdge, GraphNode, RootCause, Severity, Signal,
    SignalFamily, SourceKind, UnixNanos,
};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    /// Share of the fused score that is the service's own evidence (the rest is PageRank).
    pub evidence_weight: f64,
    /// PageRank damping: the chance the walker follows an edge rather than restarting.
    pub damping: f64,
    /// How much each source's evidence counts.
    pub source_weights: BTreeMap<SourceKind, f64>,
    /// How much a signal family (keyed by its configuration name, `span_latency`; an unknown
    /// name is an error) counts, on top of its source's weight. Symptoms that propagate to every caller (latency, error-line bursts) are weighted
    /// below signals of changed behaviour (a new error, a line that stopped), which stay where
    /// the fault is. Families not listed count 1.
    pub signal_weights: BTreeMap<SignalFamily, f64>,
    /// Signal families that are symptoms a caller shows when its callee misbehaves (it waits,
    /// times out, fails). When an anomalous callee's trouble began at most `explain_lead_secs`
    /// before the caller's and at most `explain_slack_secs` after it, these signals of the
    /// caller are multiplied by `explained_factor`: the callee explains them.
    pub propagating_signals: Vec<SignalFamily>,
    /// Metrics whose name contains one of these are symptoms too (rate, errors, duration:
    /// the RED metrics), unlike utilisation and saturation metrics, which stay local.
    pub propagating_metric_words: Vec<String>,
    /// Weight of those symptom metrics relative to other metrics (utilisation, saturation), which
    /// point at the service they are measured on.
    pub symptom_metric_weight: f64,
    pub explained_factor: f64,
    pub explain_slack_secs: f64,
    /// A callee whose trouble began more than this many seconds before the caller's does not
    /// explain it: the caller went on unharmed meanwhile, so its trouble has another cause.
    pub explain_lead_secs: f64,
    /// Signal families of changed behaviour that a callee's changed behaviour can cause: a
    /// callee that returns wrong data makes its caller skip the line it logs on success. When
    /// a callee's first changed behaviour (a signal that is neither propagating nor only
    /// corroborating) began within the same bounds of the caller's (`explain_lead_secs` before
    /// to `explain_slack_secs` after), these signals of the caller are multiplied by
    /// `explained_factor`.
    pub consequential_signals: Vec<SignalFamily>,
    /// Signal families that only corroborate: they add to a service that has other evidence,
    /// but never open or extend an incident, never make a service a candidate on their own and
    /// never date a service's first trouble. k-NN distances flag harmless novelty as readily as
    /// faults (docs/EVALUATION.md), so by default they are such a signal.
    pub corroborating_signals: Vec<SignalFamily>,
    /// Evidence a change adds to the service it touched when the incident follows right after
    /// and that service's own behaviour changed after it (see `change_unconfirmed_factor`).
    pub change_weight: f64,
    /// Releases come in batches and most changes are harmless, so a change counts in full only
    /// when the service it touched shows changed behaviour of its own that began after it: an
    /// anomaly that none of its callees explains, the first such one dated no earlier than the
    /// change. A change whose service shows nothing of its own (or only symptoms a callee
    /// explains, or trouble that began before it) is a weak prior: `change_weight` times this.
    pub change_unconfirmed_factor: f64,
    /// Anomalies are dated by the start of the window they judged, so the first own anomaly
    /// may carry a time up to this many seconds before the change whose effect it shows.
    pub change_effect_slack_secs: f64,
    /// The change's weight halves every this many seconds between it and the incident's start.
    pub change_half_life_secs: f64,
    /// Candidates to report.
    pub top_k: usize,
    /// Anomalies listed per candidate.
    pub evidence_per_cause: usize,
}

impl Default for RankConfig {
    fn default() -> Self {
        RankConfig {
            evidence_weight: 0.75,
            damping: 0.85,
            source_weights: BTreeMap::from([
                (SourceKind::Traces, 1.0),
                (SourceKind::Logs, 1.0),
                (SourceKind::Metrics, 0.5),
                (SourceKind::Changes, 1.0),
            ]),
            signal_weights: BTreeMap::from([
                (SignalFamily::SpanLatency, 0.5),
                (SignalFamily::LogErrors, 0.7),
                (SignalFamily::LogWarnings, 0.5),
                (SignalFamily::LogMissingInSpan, 1.5),
                // An error the service raised itself, never seen before (a relayed failure is
                // `log_new_remote_error`): observed, where a stopped line is inferred.
                (SignalFamily::LogNewTemplate, 2.0),
                // Waits on call edges placed on the endpoint the slow edges share: once placed,
                // the service's own changed behaviour (its network, its pool), no longer a
                // symptom that travels, so it weighs as an own new error does.
                (SignalFamily::SpanEdgeLatency, 2.0),
                // k-NN distances flag whatever is unusual, faults and harmless novelty alike; on
                // the labelled data they help only as a tie-breaker (docs/EVALUATION.md).
                (SignalFamily::KnnDistance, 0.1),
            ]),
            // Not listed, so weighed 1: the span families of a rollout's comparison (own
            // behaviour under the same traffic), `span_new_call`, `log_missing_template`, a
            // usual line that stopped without span context to tell whose change stopped it, and
            // `metric_edge_wait`: a per-minute difference of two percentiles is coarser than a
            // span's wait, and a CPU-starved caller inflates its own client-side times too.
            propagating_signals: vec![
                SignalFamily::SpanLatency,
                SignalFamily::SpanErrors,
                SignalFamily::LogErrors,
                SignalFamily::LogWarnings,
                SignalFamily::SpanNewError,
                SignalFamily::LogNewRemoteError,
            ],
            propagating_metric_words: ["latency", "duration", "error", "success", "response_time"]
                .map(String::from)
                .to_vec(),
            symptom_metric_weight: 0.7,
            explained_factor: 0.2,
            explain_slack_secs: 30.0,
            explain_lead_secs: 120.0,
            consequential_signals: vec![SignalFamily::LogMissingInSpan],
            corroborating_signals: vec![SignalFamily::KnnDistance],
            change_weight: 0.6,
            change_unconfirmed_factor: 0.3,
            change_effect_slack_secs: 60.0,
            change_half_life_secs: 300.0,
            top_k: 5,
            evidence_per_cause: 5,
        }
    }
}

/// The outcome of ranking one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub causes: Vec<RootCause>,
    pub graph: CausalGraph,
    pub confidence: f64,
}

impl Ranking {
    pub fn services(&self) -> Vec<&str> {
        self.causes.iter().map(|c| c.service.as_str()).collect()
    }
}

/// Strength of one anomaly as evidence, before source and signal weights.
fn strength(a: &Anomaly) -> f64 {
    a.severity.weight() * a.score.clamp(0.0, 1.0)
}

/// Strength of one anomaly as the ranking counts it: with its signal family's weight.
fn weighted_strength(a: &Anomaly, config: &RankConfig) -> f64 {
    let mut weight = config
        .signal_weights
        .get(&a.signal.family())
        .copied()
        .unwrap_or(1.0);
    if a.source == SourceKind::Metrics && is_propagating(&a.signal, config) {
        weight *= config.symptom_metric_weight;
    }
    strength(a) * weight
}

#[derive(Debug, Default, Clone)]
struct ServiceEvidence {
    /// Strongest anomaly per signal, so a signal firing in every window counts once.
    by_signal: BTreeMap<(SourceKind, Signal), f64>,
    first_seen: Option<UnixNanos>,
    /// First changed behaviour: a signal that neither propagates nor only corroborates.
    first_changed: Option<UnixNanos>,
    worst: Option<Severity>,
    anomalies: Vec<Anomaly>,
}

impl ServiceEvidence {
    /// Adds `a`, its strength multiplied by `factor` ([`AddedWaits::factor`]).
    fn add(&mut self, a: &Anomaly, factor: f64, config: &RankConfig) {
        let s = self
            .by_signal
            .entry((a.source, a.signal.clone()))
            .or_default();
        *s = s.max(weighted_strength(a, config) * factor);
        if !is_corroborating(&a.signal, config) {
            self.first_seen = Some(self.first_seen.map_or(a.time, |t| t.min(a.time)));
            if !is_propagating(&a.signal, config) {
                self.first_changed = Some(self.first_changed.map_or(a.time, |t| t.min(a.time)));
            }
        }
        self.worst = Some(self.worst.map_or(a.severity, |w| w.min(a.severity)));
        self.anomalies.push(a.clone());
    }

    /// The share of this service's evidence that is symptoms a callee can cause (latency, error
    /// bursts, relayed failures) rather than its own changed behaviour (saturation, a new error
    /// of its own, a line that stopped). Read before any symptom is discounted as explained.
    fn symptom_share(&self, config: &RankConfig) -> f64 {
        let (mut symptoms, mut all) = (0.0, 0.0);
        for ((_, signal), s) in &self.by_signal {
            if is_corroborating(signal, config) {
                continue;
            }
            all += s;
            if is_propagating(signal, config) {
                symptoms += s;
            }
        }
        if all > 0.0 {
            symptoms / all
        } else {
            1.0
        }
    }

    /// Per source: the strongest signal, plus a little for the next two ([`SIGNAL_SHARES`]).
    fn by_source(&self) -> BTreeMap<SourceKind, f64> {
        let mut per_source: BTreeMap<SourceKind, Vec<f64>> = BTreeMap::new();
        for ((source, _), s) in &self.by_signal {
            per_source.entry(*source).or_default().push(*s);
        }
        per_source
            .into_iter()
            .map(|(source, mut strengths)| {
                strengths.sort_by(|a, b| b.total_cmp(a));
                let combined: f64 = strengths
                    .iter()
                    .zip(SIGNAL_SHARES)
                    .map(|(s, w)| s * w)
                    .sum();
                (source, combined)
            })
            .collect()
    }
}

/// Whether a signal only corroborates other evidence ([`RankConfig::corroborating_signals`]).
pub(crate) fn is_corroborating(signal: &Signal, config: &RankConfig) -> bool {
    config.corroborating_signals.contains(&signal.family())
}

/// Whether a signal is a change in behaviour that a callee's changed behaviour can cause
/// ([`RankConfig::consequential_signals`]).
fn is_consequential(signal: &Signal, config: &RankConfig) -> bool {
    config.consequential_signals.contains(&signal.family())
}

/// Whether a signal is a symptom that travels from callee to caller.
fn is_propagating(signal: &Signal, config: &RankConfig) -> bool {
    let family = signal.family();
    if config.propagating_signals.contains(&family) {
        return true;
    }
    family == SignalFamily::Metric && {
        let name = signal.as_str().to_ascii_lowercase();
        config
            .propagating_metric_words
            .iter()
            .any(|w| name.contains(w.as_str()))
    }
}

/// Within one source of one service, the strongest signal counts fully and the next two a
/// little: signals of one source on one service are highly correlated (one slow database slows
/// every operation), so ten weak ones must not outweigh one strong one.
const SIGNAL_SHARES: [f64; 3] = [1.0, 0.3, 0.1];
/// Recency of a change that falls inside the incident: it cannot explain the first symptoms,
/// but may have made them worse.
const CHANGE_DURING_INCIDENT: f64 = 0.3;
/// The walker's step weight towards a service with no evidence: a silent callee (a database
/// without telemetry) must stay reachable.
const SILENT_STEP: f64 = 0.05;
/// The restart weight of a service with no evidence, so every node has some.
const SILENT_RESTART: f64 = 1e-3;
/// Confidence with no lead over the second candidate, and what a full lead adds to it.
const CONFIDENCE_BASE: f64 = 0.35;
const CONFIDENCE_LEAD: f64 = 0.65;
/// Below this normalised evidence the first candidate's confidence scales down.
const CONFIDENCE_EVIDENCE_FLOOR: f64 = 0.3;

/// Ranks the services of one incident. `anomalies` are the incident's own findings; `changes`
/// are change events that precede or fall inside it.
pub fn rank(
    environment: &str,
    anomalies: &[Anomaly],
    changes: &[Anomaly],
    topology: &Topology,
    config: &RankConfig,
) -> Ranking {
    let (mut services, incident_start) = gather_evidence(anomalies, config);
    let symptom_share: BTreeMap<String, f64> = services
        .iter()
        .map(|(name, ev)| (name.clone(), ev.symptom_share(config)))
        .collect();
    let first_seen: BTreeMap<String, UnixNanos> = services
        .iter()
        .filter_map(|(name, ev)| ev.first_seen.map(|t| (name.clone(), t)))
        .collect();
    let first_own = discount_explained(&mut services, &first_seen, environment, topology, config);
    let effect_slack = (config.change_effect_slack_secs * 1e9) as i64;
    // A change is confirmed when the service it touched changed its own behaviour after it.
    let confirmed = |change: &Anomaly| {
        first_own
            .get(&change.service)
            .is_some_and(|t| *t >= change.time.saturating_sub(effect_slack))
    };
    let evidence = weigh_evidence(&mut services, changes, &confirmed, incident_start, config);
    let nodes = candidates(&evidence, environment, topology);
    let max_evidence = evidence.values().cloned().fold(0.0, f64::max).max(1e-12);
    let norm_evidence = |s: &str| evidence.get(s).copied().unwrap_or(0.0) / max_evidence;
    // A callee explains its caller's trouble only when its own began near it (as in step 2);
    // a silent callee (nothing dated) always may.
    let may_explain =
        |callee: &str, caller: &str| match (first_seen.get(callee), first_seen.get(caller)) {
            (Some(c), Some(own)) => began_near(*own, *c, config),
            _ => true,
        };
    let confirmed_changes: Vec<&Anomaly> = changes.iter().filter(|c| confirmed(c)).collect();
    let (graph, index) = causal_graph(
        &nodes,
        &evidence,
        &confirmed_changes,
        &norm_evidence,
        &may_explain,
        environment,
        topology,
    );
    // A silent service passes the walk on: whatever reached it is explained further down.
    let explained_by_callees = |s: &str| symptom_share.get(s).copied().unwrap_or(1.0);
    let scored = fuse_scores(
        &graph,
        &nodes,
        &norm_evidence,
        &explained_by_callees,
        config,
    );

    let causes: Vec<RootCause> = scored
        .iter()
        .take(config.top_k)
        .enumerate()
        .map(|(rank, s)| {
            let ev = services.get(&s.service).cloned().unwrap_or_default();
            let chain = symptom_chain(&graph, &index, &s.service, &norm_evidence);
            let mut top: Vec<Anomaly> = ev.anomalies.clone();
            top.sort_by(|a, b| {
                weighted_strength(b, config)
                    .total_cmp(&weighted_strength(a, config))
                    .then(a.time.cmp(&b.time))
            });
            dedup_by_signal(&mut top);
            top.truncate(config.evidence_per_cause);
            let explanation = explain(
                &s.service,
                &ev,
                &chain,
                changes,
                &confirmed,
                incident_start,
                config,
            );
            RootCause {
                rank: rank + 1,
                service: s.service.clone(),
                score: s.score,
                evidence_score: s.evidence,
                pagerank: s.pagerank,
                evidence: top,
                evidence_by_source: ev.by_source(),
                chain,
                explanation,
            }
        })
        .collect();

    let graph_out = CausalGraph {
        nodes: nodes
            .iter()
            .map(|n| GraphNode {
                service: n.clone(),
                evidence_score: norm_evidence(n),
                severity: services.get(n).and_then(|e| e.worst),
                rank: causes.iter().find(|c| &c.service == n).map(|c| c.rank),
            })
            .collect(),
        edges: graph
            .edge_indices()
            .filter_map(|e| {
                let (a, b) = graph.edge_endpoints(e)?;
                let (kind, weight) = graph[e];
                Some(GraphEdge {
                    from: graph[a].clone(),
                    to: graph[b].clone(),
                    kind,
                    weight,
                })
            })
            .collect(),
    };
    Ranking {
        causes,
        graph: graph_out,
        confidence: confidence(&scored),
    }
}

/// Step 1: each service's anomalies, and when the incident began (its first primary anomaly).
/// Corroborating signals count only for services that are candidates on other evidence.
fn gather_evidence(
    anomalies: &[Anomaly],
    config: &RankConfig,
) -> (BTreeMap<String, ServiceEvidence>, UnixNanos) {
    let mut services: BTreeMap<String, ServiceEvidence> = BTreeMap::new();
    let (corroborating, primary): (Vec<&Anomaly>, Vec<&Anomaly>) = anomalies
        .iter()
        .filter(|a| a.source != SourceKind::Changes)
        .partition(|a| is_corroborating(&a.signal, config));
    let waits = AddedWaits::of(&primary);
    for a in &primary {
        services
            .entry(a.service.clone())
            .or_default()
            .add(a, waits.factor(a, config), config);
    }
    for a in corroborating {
        if let Some(ev) = services.get_mut(&a.service) {
            ev.add(a, 1.0, config);
        }
    }
    let incident_start = primary.iter().map(|a| a.time).min().unwrap_or(0);
    (services, incident_start)
}

/// Signal families whose anomalies are waits on call edges placed on one endpoint, carrying the
/// wait now as `observed` and the usual wait as `expected`.
const WAIT_FAMILIES: [SignalFamily; 2] =
    [SignalFamily::SpanEdgeLatency, SignalFamily::MetricEdgeWait];

/// The waits an incident's edge anomalies add to their calls.
///
/// A delay on one service adds its whole length to every call into it, and that is what its
/// callers' callers and the users wait for; a service whose calls wait a few ms longer at the
/// same time is a bystander (or a consequence of the load), however many of its calls are beyond
/// their usual range, which is all the detectors' count tests measure. So a service's edge
/// anomaly counts by how the largest wait that service adds compares with the largest any
/// service adds, among the anomalies of its family within `explain_lead_secs` either side (a
/// delay further away cannot explain it, and a long incident may hold several faults). One
/// order of magnitude below the largest counts half, two a third, and so on: `1 / (1 +
/// log10(largest / own))`.
struct AddedWaits<'a>(Vec<(&'a Anomaly, f64)>);

impl<'a> AddedWaits<'a> {
    fn added(a: &Anomaly) -> Option<f64> {
        if !WAIT_FAMILIES.contains(&a.signal.family()) {
            return None;
        }
        let (now, usual) = (a.observed?, a.expected?);
        (now.is_finite() && usual.is_finite()).then(|| (now - usual).max(0.0))
    }

    /// The wait anomalies of `anomalies` with what each adds, in time order.
    fn of(anomalies: &[&'a Anomaly]) -> Self {
        let mut waits: Vec<(&Anomaly, f64)> = anomalies
            .iter()
            .filter_map(|a| Some((*a, Self::added(a)?)))
            .collect();
        waits.sort_by_key(|(a, _)| a.time);
        AddedWaits(waits)
    }

    /// How much `a` counts next to the largest added wait of its family around its time; 1
    /// for other signals.
    fn factor(&self, a: &Anomaly, config: &RankConfig) -> f64 {
        let Some(added) = Self::added(a) else {
            return 1.0;
        };
        let near = (config.explain_lead_secs * 1e9) as i64;
        let from = self
            .0
            .partition_point(|(b, _)| b.time < a.time.saturating_sub(near));
        let to = self
            .0
            .partition_point(|(b, _)| b.time <= a.time.saturating_add(near));
        let family = a.signal.family();
        let (mut own, mut largest) = (added, added);
        for (b, w) in self.0[from..to]
            .iter()
            .filter(|(b, _)| b.signal.family() == family)
        {
            largest = largest.max(*w);
            if b.service == a.service {
                own = own.max(*w);
            }
        }
        if largest <= 0.0 {
            return 1.0;
        }
        // Floored at a millionth of the largest, so no added wait is worth nothing.
        1.0 / (1.0 + (largest / own.max(largest * 1e-6)).log10())
    }
}

/// Whether trouble first dated `callee` can explain trouble first dated `own` at its caller: it
/// began at most `explain_lead_secs` before and at most `explain_slack_secs` after. (Float-to-int
/// casts saturate, so an infinite lead means "any time before".)
fn began_near(own: UnixNanos, callee: UnixNanos, config: &RankConfig) -> bool {
    let lead = (config.explain_lead_secs * 1e9) as i64;
    let slack = (config.explain_slack_secs * 1e9) as i64;
    (own.saturating_sub(lead)..=own.saturating_add(slack)).contains(&callee)
}

/// Step 2: symptoms a callee explains count less at the caller. Returns when each service's
/// own behaviour first changed: its first anomaly that no callee explains.
fn discount_explained(
    services: &mut BTreeMap<String, ServiceEvidence>,
    first_seen: &BTreeMap<String, UnixNanos>,
    environment: &str,
    topology: &Topology,
    config: &RankConfig,
) -> BTreeMap<String, UnixNanos> {
    let first_changed: BTreeMap<String, UnixNanos> = services
        .iter()
        .filter_map(|(name, ev)| ev.first_changed.map(|t| (name.clone(), t)))
        .collect();
    // Whether a callee of `caller` first showed trouble (by `firsts`) near `own`.
    let callee_began_near = |caller: &str, firsts: &BTreeMap<String, UnixNanos>, own: UnixNanos| {
        topology
            .callees(environment, caller)
            .filter_map(|callee| firsts.get(callee))
            .any(|t| began_near(own, *t, config))
    };
    let mut first_own: BTreeMap<String, UnixNanos> = BTreeMap::new();
    for (name, ev) in services.iter_mut() {
        let Some(own_first) = ev.first_seen else {
            continue;
        };
        let symptoms_explained = callee_began_near(name, first_seen, own_first);
        // Only a callee's own changed behaviour (not its latency or error bursts, which every
        // busy callee shows) explains a change in the caller's.
        let change_explained = ev
            .first_changed
            .is_some_and(|own| callee_began_near(name, &first_changed, own));
        let explained = |signal: &Signal| {
            (symptoms_explained && is_propagating(signal, config))
                || (change_explained && is_consequential(signal, config))
        };
        for ((_, signal), strength) in ev.by_signal.iter_mut() {
            if explained(signal) {
                *strength *= config.explained_factor;
            }
        }
        if let Some(t) = ev
            .anomalies
            .iter()
            .filter(|a| !is_corroborating(&a.signal, config) && !explained(&a.signal))
            .map(|a| a.time)
            .min()
        {
            first_own.insert(name.clone(), t);
        }
    }
    first_own
}

/// Step 3: raw evidence per service, its sources weighted and added, plus what the changes
/// that touched it add: in full only when its own behaviour changed after the change; several
/// changes in one incident compete on that, not on their timing.
fn weigh_evidence(
    services: &mut BTreeMap<String, ServiceEvidence>,
    changes: &[Anomaly],
    confirmed: &dyn Fn(&Anomaly) -> bool,
    incident_start: UnixNanos,
    config: &RankConfig,
) -> BTreeMap<String, f64> {
    let mut evidence: BTreeMap<String, f64> = services
        .iter()
        .map(|(name, ev)| {
            let total: f64 = ev
                .by_source()
                .iter()
                .map(|(source, s)| s * config.source_weights.get(source).copied().unwrap_or(1.0))
                .sum();
            (name.clone(), total)
        })
        .collect();
    for change in changes {
        let touched = &change.service;
        let before = (incident_start - change.time) as f64 / 1e9;
        let recency = if before >= 0.0 {
            0.5f64.powf(before / config.change_half_life_secs.max(1.0))
        } else {
            CHANGE_DURING_INCIDENT
        };
        let w = recency
            * config.change_weight
            * if confirmed(change) {
                1.0
            } else {
                config.change_unconfirmed_factor
            };
        *evidence.entry(touched.clone()).or_default() += w;
        let ev = services.entry(touched.clone()).or_default();
        // Shown per source in the alert; the service's evidence already counted `w` above.
        let shown = ev
            .by_signal
            .entry((SourceKind::Changes, change.signal.clone()))
            .or_default();
        *shown = shown.max(w);
        ev.anomalies.push(change.clone());
        ev.worst = Some(ev.worst.map_or(change.severity, |s| s.min(change.severity)));
    }
    evidence
}

/// Step 4: candidate nodes, sorted: anomalous services plus the direct callees of anomalous
/// services, which may be silent culprits (a database without its own telemetry).
fn candidates(
    evidence: &BTreeMap<String, f64>,
    environment: &str,
    topology: &Topology,
) -> Vec<String> {
    let mut nodes: Vec<String> = evidence.keys().cloned().collect();
    for s in evidence.keys() {
        for callee in topology.callees(environment, s) {
            if !nodes.iter().any(|n| n == callee) {
                nodes.push(callee.to_string());
            }
        }
    }
    nodes.sort();
    nodes
}

type Graph = DiGraph<String, (EdgeKind, f64)>;

/// Step 5: the causal graph, edges from cause to symptom: callee -> caller where the callee
/// `may_explain` the caller, and a confirmed change's service -> its anomalous callers.
fn causal_graph(
    nodes: &[String],
    evidence: &BTreeMap<String, f64>,
    confirmed_changes: &[&Anomaly],
    norm_evidence: &dyn Fn(&str) -> f64,
    may_explain: &dyn Fn(&str, &str) -> bool,
    environment: &str,
    topology: &Topology,
) -> (Graph, HashMap<String, NodeIndex>) {
    let mut graph: Graph = DiGraph::new();
    let index: HashMap<String, NodeIndex> = nodes
        .iter()
        .map(|n| (n.clone(), graph.add_node(n.clone())))
        .collect();
    for caller in nodes {
        for callee in topology
            .callees(environment, caller)
            .filter(|callee| may_explain(callee, caller))
        {
            if let (Some(&from), Some(&to)) = (index.get(callee), index.get(caller)) {
                graph.add_edge(from, to, (EdgeKind::Dependency, norm_evidence(caller)));
            }
        }
    }
    for change in confirmed_changes {
        let Some(&from) = index.get(&change.service) else {
            continue;
        };
        for caller in topology.callers(environment, &change.service) {
            if let Some(&to) = index.get(caller) {
                if evidence.contains_key(caller) {
                    graph.add_edge(from, to, (EdgeKind::Change, 1.0));
                }
            }
        }
    }
    (graph, index)
}

/// One candidate's fused score and its two parts, each normalised to the strongest candidate.
#[derive(Debug, Clone)]
struct Scored {
    service: String,
    score: f64,
    evidence: f64,
    pagerank: f64,
}

/// Step 6: evidence fused with reverse personalised PageRank, best first. Ties (common among
/// silent neighbours) break on evidence, then on name for determinism.
fn fuse_scores(
    graph: &Graph,
    nodes: &[String],
    norm_evidence: &dyn Fn(&str) -> f64,
    explained_by_callees: &dyn Fn(&str) -> f64,
    config: &RankConfig,
) -> Vec<Scored> {
    let pagerank = personalised_pagerank(
        graph,
        nodes,
        norm_evidence,
        explained_by_callees,
        config.damping,
    );
    let max_pr = pagerank.iter().cloned().fold(0.0, f64::max).max(1e-12);
    let mut scored: Vec<Scored> = nodes
        .iter()
        .zip(&pagerank)
        .map(|(n, pr)| {
            let evidence = norm_evidence(n);
            let pagerank = pr / max_pr;
            Scored {
                service: n.clone(),
                score: config.evidence_weight * evidence
                    + (1.0 - config.evidence_weight) * pagerank,
                evidence,
                pagerank,
            }
        })
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.evidence.total_cmp(&a.evidence))
            .then(a.service.cmp(&b.service))
    });
    scored
}

/// Personalised PageRank walking against the causal edges (symptom -> possible cause), with
/// transitions weighted by the target's evidence so the walker prefers anomalous callees.
///
/// A walker at a service moves on only for the share of its evidence a callee can explain
/// (`explained_by_callees`, in 0..=1): a service whose trouble is its own (its CPU saturated,
/// an error it raised) sends no walk to its callees, which did not cause that; the rest of the
/// walk restarts from the evidence.
fn personalised_pagerank(
    graph: &Graph,
    nodes: &[String],
    evidence: &dyn Fn(&str) -> f64,
    explained_by_callees: &dyn Fn(&str) -> f64,
    damping: f64,
) -> Vec<f64> {
    let n = nodes.len();
    if n == 0 {
        return Vec::new();
    }
    let mut personal: Vec<f64> = nodes.iter().map(|s| evidence(s) + SILENT_RESTART).collect();
    let total: f64 = personal.iter().sum();
    personal.iter_mut().for_each(|p| *p /= total);

    // Out-links of the walk from node u: the sources of u's incoming causal edges.
    let links: Vec<Vec<(usize, f64)>> = graph
        .node_indices()
        .map(|u| {
            let targets: Vec<(usize, f64)> = graph
                .neighbors_directed(u, Direction::Incoming)
                .map(|v| (v.index(), evidence(&graph[v]) + SILENT_STEP))
                .collect();
            let sum: f64 = targets.iter().map(|t| t.1).sum();
            targets.into_iter().map(|(v, w)| (v, w / sum)).collect()
        })
        .collect();

    // The share of the walk at each node that follows its out-links; the rest restarts.
    let walks: Vec<f64> = links
        .iter()
        .zip(nodes)
        .map(|(out, node)| {
            if out.is_empty() {
                0.0
            } else {
                explained_by_callees(node).clamp(0.0, 1.0)
            }
        })
        .collect();

    let mut rank = personal.clone();
    for _ in 0..100 {
        let mut next: Vec<f64> = personal.iter().map(|p| (1.0 - damping) * p).collect();
        let mut dangling = 0.0;
        for (u, out) in links.iter().enumerate() {
            dangling += rank[u] * (1.0 - walks[u]);
            for (v, w) in out {
                next[*v] += damping * rank[u] * walks[u] * w;
            }
        }
        // A walker at a service nothing explains restarts from the evidence.
        for (v, p) in personal.iter().enumerate() {
            next[v] += damping * dangling * p;
        }
        let delta: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        rank = next;
        if delta < 1e-10 {
            break;
        }
    }
    rank
}

/// From `cause` along causal edges to the most anomalous symptom at each step.
fn symptom_chain(
    graph: &Graph,
    index: &HashMap<String, NodeIndex>,
    cause: &str,
    evidence: &dyn Fn(&str) -> f64,
) -> Vec<String> {
    let mut chain = vec![cause.to_string()];
    let Some(&start) = index.get(cause) else {
        return chain;
    };
    let mut at = start;
    while chain.len() < 8 {
        let next = graph
            .neighbors_directed(at, Direction::Outgoing)
            .filter(|v| evidence(&graph[*v]) > 0.0 && !chain.contains(&graph[*v]))
            .max_by(|a, b| {
                evidence(&graph[*a])
                    .total_cmp(&evidence(&graph[*b]))
                    .then(graph[*b].cmp(&graph[*a]))
            });
        match next {
            Some(v) => {
                chain.push(graph[v].clone());
                at = v;
            }
            None => break,
        }
    }
    chain
}

fn dedup_by_signal(anomalies: &mut Vec<Anomaly>) {
    let mut seen = std::collections::HashSet::new();
    anomalies.retain(|a| seen.insert((a.source, a.signal.clone())));
}

/// High when the first candidate has strong evidence and a clear lead over the second.
fn confidence(scored: &[Scored]) -> f64 {
    let Some(first) = scored.first() else {
        return 0.0;
    };
    let second = scored.get(1).map_or(0.0, |s| s.score);
    let lead = if first.score > 0.0 {
        (first.score - second) / first.score
    } else {
        0.0
    };
    (CONFIDENCE_BASE + CONFIDENCE_LEAD * lead).clamp(0.0, 1.0)
        * first.evidence.max(CONFIDENCE_EVIDENCE_FLOOR)
}

fn explain(
    service: &str,
    ev: &ServiceEvidence,
    chain: &[String],
    changes: &[Anomaly],
    confirmed: &dyn Fn(&Anomaly) -> bool,
    incident_start: UnixNanos,
    config: &RankConfig,
) -> String {
    let mut parts = Vec::new();
    let own: Vec<&Anomaly> = ev
        .anomalies
        .iter()
        .filter(|a| a.source != SourceKind::Changes)
        .collect();
    if own.is_empty() {
        parts.push(format!(
            "{service} shows no anomaly of its own but its callers do"
        ));
    } else {
        let mut sources: Vec<&str> = own.iter().map(|a| a.source.as_str()).collect();
        sources.sort();
        sources.dedup();
        let worst = own
            .iter()
            .max_by(|a, b| weighted_strength(a, config).total_cmp(&weighted_strength(b, config)))
            .expect("non-empty");
        parts.push(format!(
            "{service} has {} anomalies in {} (worst: {} {})",
            own.len(),
            sources.join(", "),
            worst.severity,
            worst.description
        ));
    }
    if chain.len() > 1 {
        parts.push(format!(
            "it can explain symptoms in {}",
            chain[1..].join(" -> ")
        ));
    }
    for c in changes.iter().filter(|c| c.service == service) {
        let before = (incident_start - c.time) as f64 / 1e9;
        let when = if before >= 0.0 {
            format!("{before:.0} s before the first anomaly")
        } else {
            "during the incident".to_string()
        };
        let effect = if confirmed(c) {
            format!("{service}'s own behaviour changed after it")
        } else {
            format!("nothing of {service}'s own changed after it")
        };
        parts.push(format!("{} {when} ({effect})", c.description));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::DependencyEdge;

    const SEC: i64 = culprit_core::NANOS_PER_SEC;

    fn anomaly(
        service: &str,
        source: SourceKind,
        signal: &str,
        severity: Severity,
        t: i64,
    ) -> Anomaly {
        Anomaly {
            id: format!("{service}-{signal}-{t}"),
            time: t,
            source,
            service: service.into(),
            environment: "prod".into(),
            instance: None,
            signal: signal.into(),
            description: format!("{signal} moved"),
            severity,
            score: 0.9,
            observed: None,
            expected: None,
        }
    }

    /// A deploy of `service` at `at`.
    fn deploy(service: &str, at: i64) -> Anomaly {
        let mut c = anomaly(
            service,
            SourceKind::Changes,
            &format!("change:deployment:{service}"),
            Severity::Sev3,
            at,
        );
        c.description = format!("deployment: deploy {service}");
        c
    }

    fn shop() -> Topology {
        let mut t = Topology::default();
        for (a, b) in [
            ("frontend", "checkout"),
            ("checkout", "payment"),
            ("checkout", "inventory"),
            ("inventory", "db"),
        ] {
            t.add(&DependencyEdge {
                environment: "prod".into(),
                caller: a.into(),
                callee: b.into(),
            });
        }
        t
    }

    #[test]
    fn the_callee_that_explains_its_callers_ranks_first() {
        // inventory is slow and failing; checkout and frontend show the knock-on errors.
        let anomalies = vec![
            anomaly(
                "inventory",
                SourceKind::Traces,
                "span.latency:GET /stock",
                Severity::Sev1,
                10,
            ),
            anomaly(
                "inventory",
                SourceKind::Metrics,
                "metric:cpu",
                Severity::Sev1,
                5,
            ),
            anomaly(
                "checkout",
                SourceKind::Traces,
                "span.latency:POST /checkout",
                Severity::Sev1,
                12,
            ),
            anomaly(
                "checkout",
                SourceKind::Logs,
                "log.errors",
                Severity::Sev2,
                14,
            ),
            anomaly(
                "frontend",
                SourceKind::Traces,
                "span.latency:GET /",
                Severity::Sev2,
                13,
            ),
        ];
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(r.causes[0].service, "inventory");
        assert_eq!(r.causes[0].chain, vec!["inventory", "checkout", "frontend"]);
        assert!(r.causes.len() >= 3);
        assert!(r.confidence > 0.0 && r.confidence <= 1.0);
        assert!(r.graph.edges.iter().any(|e| e.from == "inventory"
            && e.to == "checkout"
            && e.kind == EdgeKind::Dependency));
        // db is a silent callee of an anomalous service: a candidate, but not above real evidence.
        assert!(r.graph.nodes.iter().any(|n| n.service == "db"));
    }

    #[test]
    fn a_callee_that_changed_first_explains_the_line_its_caller_stopped_writing() {
        // inventory returns wrong data: its own success line stops, and checkout, which acts on
        // that data, stops writing its line as well, more visibly.
        let incident = |checkout_at: i64| {
            vec![
                anomaly(
                    "inventory",
                    SourceKind::Logs,
                    "log.missing_in_span:StockController.get",
                    Severity::Sev3,
                    0,
                ),
                anomaly(
                    "checkout",
                    SourceKind::Logs,
                    "log.missing_in_span:CheckoutController.place",
                    Severity::Sev1,
                    checkout_at,
                ),
            ]
        };
        let config = RankConfig::default();
        let r = rank("prod", &incident(10 * SEC), &[], &shop(), &config);
        assert_eq!(r.services()[..2], ["inventory", "checkout"]);
        // A callee that changed only well after its caller explains nothing.
        let r = rank("prod", &incident(-120 * SEC), &[], &shop(), &config);
        assert_eq!(r.services()[..2], ["checkout", "inventory"]);
        // Without the rule the caller's stronger finding wins even when its callee came first.
        let no_rule = RankConfig {
            consequential_signals: Vec::new(),
            ..RankConfig::default()
        };
        let r = rank("prod", &incident(10 * SEC), &[], &shop(), &no_rule);
        assert_eq!(r.services()[0], "checkout");
    }

    #[test]
    fn a_services_own_new_error_outranks_the_failures_its_callers_relay() {
        // payment raises a new error of its own; checkout and frontend log the failed calls.
        let incident = |relayed: &str| {
            vec![
                anomaly(
                    "payment",
                    SourceKind::Logs,
                    "log.new_template:7",
                    Severity::Sev1,
                    0,
                ),
                anomaly(
                    "checkout",
                    SourceKind::Logs,
                    &format!("{relayed}:3"),
                    Severity::Sev2,
                    2 * SEC,
                ),
                anomaly(
                    "checkout",
                    SourceKind::Traces,
                    "span.errors",
                    Severity::Sev1,
                    3 * SEC,
                ),
                anomaly(
                    "frontend",
                    SourceKind::Logs,
                    &format!("{relayed}:9"),
                    Severity::Sev2,
                    4 * SEC,
                ),
            ]
        };
        let config = RankConfig::default();
        let evidence = |r: &Ranking, service: &str| {
            r.causes
                .iter()
                .find(|c| c.service == service)
                .map_or(0.0, |c| c.evidence_score)
        };
        let relayed = rank(
            "prod",
            &incident("log.new_remote_error"),
            &[],
            &shop(),
            &config,
        );
        assert_eq!(relayed.services()[..2], ["payment", "checkout"]);
        // Read as checkout's own new error, the same line would count in full there.
        let own = rank("prod", &incident("log.new_template"), &[], &shop(), &config);
        assert!(evidence(&relayed, "checkout") < evidence(&own, "checkout") * 0.7);
    }

    #[test]
    fn a_callee_in_trouble_long_before_its_caller_does_not_explain_it() {
        // inventory has been slow for minutes; checkout, which went on unharmed meanwhile,
        // now fails on its own.
        let incident = |checkout_at: i64| {
            vec![
                anomaly(
                    "inventory",
                    SourceKind::Traces,
                    "span.latency:GET /stock",
                    Severity::Sev3,
                    0,
                ),
                anomaly(
                    "checkout",
                    SourceKind::Logs,
                    "log.errors",
                    Severity::Sev1,
                    checkout_at,
                ),
            ]
        };
        let config = RankConfig::default();
        let r = rank("prod", &incident(300 * SEC), &[], &shop(), &config);
        assert_eq!(r.services()[0], "checkout");
        // Had the callee's trouble begun just before, it would explain the caller's errors.
        let r = rank("prod", &incident(20 * SEC), &[], &shop(), &config);
        assert_eq!(r.services()[0], "inventory");
    }

    #[test]
    fn a_caller_whose_own_resource_is_saturated_is_not_explained_by_its_callee() {
        // checkout's CPU is saturated and its requests slow; its callee inventory still holds
        // memory from an earlier fault (about as strong). Saturation is checkout's own
        // behaviour, which no callee causes, so the walk from it must not lift inventory.
        let mut anomalies = vec![
            anomaly(
                "inventory",
                SourceKind::Metrics,
                "metric:memory_usage",
                Severity::Sev1,
                0,
            ),
            anomaly(
                "checkout",
                SourceKind::Metrics,
                "metric:cpu_usage",
                Severity::Sev1,
                60,
            ),
            anomaly(
                "frontend",
                SourceKind::Metrics,
                "metric:client_latency",
                Severity::Sev3,
                61,
            ),
        ];
        anomalies[0].score = 0.85;
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(r.services()[..2], ["checkout", "inventory"]);
        // The same evidence as a symptom a callee can cause (checkout's own latency) does send
        // the walk on to the callee.
        anomalies[1].signal = "metric:server_latency".into();
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(r.services()[0], "inventory");
    }

    #[test]
    fn the_walk_goes_only_to_callees_whose_trouble_began_near_the_callers() {
        // checkout is slow from t=0; of its callees, payment's memory moved 5 s later,
        // inventory's (as much) ten minutes later: inventory cannot explain checkout.
        let anomalies = vec![
            anomaly(
                "checkout",
                SourceKind::Traces,
                "span.latency:POST /checkout",
                Severity::Sev1,
                0,
            ),
            anomaly(
                "payment",
                SourceKind::Metrics,
                "metric:memory_usage",
                Severity::Sev2,
                5 * SEC,
            ),
            anomaly(
                "inventory",
                SourceKind::Metrics,
                "metric:memory_usage",
                Severity::Sev2,
                600 * SEC,
            ),
        ];
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        let at = |s: &str| r.services().iter().position(|x| *x == s).unwrap();
        assert!(at("payment") < at("inventory"), "{:?}", r.services());
        assert!(!r
            .graph
            .edges
            .iter()
            .any(|e| e.from == "inventory" && e.to == "checkout"));
        assert!(r
            .graph
            .edges
            .iter()
            .any(|e| e.from == "payment" && e.to == "checkout"));
    }

    #[test]
    fn repeated_windows_of_one_signal_count_once() {
        let mut anomalies: Vec<Anomaly> = (0..20)
            .map(|i| {
                anomaly(
                    "checkout",
                    SourceKind::Logs,
                    "log.errors",
                    Severity::Sev3,
                    i,
                )
            })
            .collect();
        anomalies.push(anomaly(
            "payment",
            SourceKind::Traces,
            "span.errors",
            Severity::Sev1,
            0,
        ));
        anomalies.push(anomaly(
            "payment",
            SourceKind::Logs,
            "log.new_template:7",
            Severity::Sev2,
            0,
        ));
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(r.causes[0].service, "payment");
    }

    #[test]
    fn a_change_before_the_incident_lifts_its_service_and_is_explained() {
        let anomalies = vec![
            anomaly(
                "checkout",
                SourceKind::Traces,
                "span.errors",
                Severity::Sev2,
                100,
            ),
            anomaly(
                "payment",
                SourceKind::Traces,
                "span.errors",
                Severity::Sev2,
                101,
            ),
        ];
        let mut change = anomaly(
            "payment",
            SourceKind::Changes,
            "change:deployment:1",
            Severity::Sev3,
            50,
        );
        change.description = "deployment: deploy payment v2".into();
        let r = rank(
            "prod",
            &anomalies,
            &[change],
            &shop(),
            &RankConfig::default(),
        );
        assert_eq!(r.causes[0].service, "payment");
        assert!(
            r.causes[0].explanation.contains("deploy payment v2"),
            "{}",
            r.causes[0].explanation
        );
        assert!(r.causes[0]
            .evidence_by_source
            .get(&SourceKind::Changes)
            .is_some_and(|w| *w > 0.0));
        assert!(r
            .graph
            .edges
            .iter()
            .any(|e| e.kind == EdgeKind::Change && e.from == "payment"));
    }

    /// A release batch on the shop: payment's deploy is defective (its own spans fail), checkout's
    /// and inventory's, later and so fresher, change nothing of their own. checkout only relays
    /// payment's failures; inventory stays silent while its caller checkout is in trouble.
    fn release_batch() -> (Vec<Anomaly>, Vec<Anomaly>) {
        let anomalies = vec![
            anomaly(
                "payment",
                SourceKind::Traces,
                "span.errors",
                Severity::Sev3,
                0,
            ),
            anomaly(
                "checkout",
                SourceKind::Traces,
                "span.errors",
                Severity::Sev1,
                5 * SEC,
            ),
            anomaly(
                "checkout",
                SourceKind::Traces,
                "span.latency:POST /checkout",
                Severity::Sev1,
                5 * SEC,
            ),
            anomaly(
                "checkout",
                SourceKind::Logs,
                "log.errors",
                Severity::Sev1,
                6 * SEC,
            ),
        ];
        let changes = vec![
            deploy("payment", -240 * SEC),
            deploy("checkout", -20 * SEC),
            deploy("inventory", -10 * SEC),
        ];
        (anomalies, changes)
    }

    #[test]
    fn in_a_release_batch_the_deploy_whose_service_changed_ranks_first() {
        let (anomalies, changes) = release_batch();
        let config = RankConfig::default();
        let r = rank("prod", &anomalies, &changes, &shop(), &config);
        assert_eq!(r.services()[0], "payment", "{:?}", r.services());
        let why = |service: &str| {
            r.causes
                .iter()
                .find(|c| c.service == service)
                .map(|c| c.explanation.clone())
                .unwrap_or_default()
        };
        assert!(
            why("payment").contains("payment's own behaviour changed after it"),
            "{}",
            why("payment")
        );
        assert!(
            why("checkout").contains("nothing of checkout's own changed after it"),
            "{}",
            why("checkout")
        );
        // Only the confirmed change is drawn as a cause.
        let change_edges: Vec<&str> = r
            .graph
            .edges
            .iter()
            .filter(|e| e.kind == EdgeKind::Change)
            .map(|e| e.from.as_str())
            .collect();
        assert_eq!(change_edges, ["payment"]);
        // Counting every change in full, the fresher harmless deploys win on timing alone.
        let every_change_in_full = RankConfig {
            change_unconfirmed_factor: 1.0,
            ..RankConfig::default()
        };
        let r = rank("prod", &anomalies, &changes, &shop(), &every_change_in_full);
        assert_ne!(r.services()[0], "payment", "{:?}", r.services());
    }

    #[test]
    fn a_new_version_slower_than_its_old_pods_confirms_its_deploy_over_a_callees() {
        // inventory and db deploy in one batch; db's latency moves a little, inventory's more.
        // On timing, db's slow spans explain inventory's; only the rollout's comparison of
        // inventory's new pods with its old ones beside them says inventory changed itself.
        let symptoms = vec![
            anomaly("db", SourceKind::Traces, "span.latency", Severity::Sev3, 0),
            anomaly(
                "inventory",
                SourceKind::Traces,
                "span.latency:GET /stock",
                Severity::Sev2,
                5 * SEC,
            ),
        ];
        let changes = [deploy("inventory", -60 * SEC), deploy("db", -30 * SEC)];
        let config = RankConfig::default();
        let without = rank("prod", &symptoms, &changes, &shop(), &config);
        assert_eq!(without.services()[0], "db", "{:?}", without.services());

        let mut with_rollout = symptoms.clone();
        with_rollout.push(anomaly(
            "inventory",
            SourceKind::Traces,
            "span.version_latency:2.0.0",
            Severity::Sev2,
            5 * SEC,
        ));
        let r = rank("prod", &with_rollout, &changes, &shop(), &config);
        assert_eq!(r.services()[0], "inventory", "{:?}", r.services());
    }

    #[test]
    fn a_change_after_its_service_was_already_in_trouble_is_only_a_prior() {
        // payment fails from t = 0; a deploy of payment 3 minutes in (a hotfix or a rollback)
        // did not cause what came before it.
        let anomalies = vec![anomaly(
            "payment",
            SourceKind::Traces,
            "span.errors",
            Severity::Sev2,
            0,
        )];
        let deploy = |at: i64| {
            let mut c = anomaly(
                "payment",
                SourceKind::Changes,
                "change:deployment:1",
                Severity::Sev3,
                at,
            );
            c.description = "deployment: deploy payment v2".into();
            c
        };
        let config = RankConfig::default();
        let changes_weight = |at: i64| {
            let r = rank("prod", &anomalies, &[deploy(at)], &shop(), &config);
            r.causes[0].evidence_by_source[&SourceKind::Changes]
        };
        let after = changes_weight(180 * SEC);
        let before = changes_weight(-30 * SEC);
        assert!(
            after < before * config.change_unconfirmed_factor,
            "{after} vs {before}"
        );
    }

    #[test]
    fn a_callee_whose_trouble_came_first_explains_its_callers_symptoms() {
        // db slows down first; inventory then times out and fails, with more (but explained) signals.
        let anomalies = vec![
            anomaly("db", SourceKind::Traces, "span.latency", Severity::Sev1, 0),
            anomaly(
                "inventory",
                SourceKind::Traces,
                "span.latency",
                Severity::Sev1,
                5,
            ),
            anomaly(
                "inventory",
                SourceKind::Traces,
                "span.errors",
                Severity::Sev1,
                5,
            ),
            anomaly(
                "inventory",
                SourceKind::Metrics,
                "metric:http.server.error_rate",
                Severity::Sev1,
                6,
            ),
            anomaly(
                "inventory",
                SourceKind::Logs,
                "log.errors",
                Severity::Sev1,
                6,
            ),
        ];
        let r = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(r.causes[0].service, "db", "{:?}", r.services());
        assert!(is_propagating(
            &"metric:http.server.latency_p99_ms".into(),
            &RankConfig::default()
        ));
        assert!(!is_propagating(
            &"metric:cpu.utilization".into(),
            &RankConfig::default()
        ));
    }

    #[test]
    fn pagerank_is_a_distribution_and_prefers_anomalous_callees() {
        let mut g: DiGraph<String, (EdgeKind, f64)> = DiGraph::new();
        let names = ["a", "b", "c"].map(String::from);
        let idx: Vec<_> = names.iter().map(|n| g.add_node(n.clone())).collect();
        // causal edges b -> a and c -> a: a's symptoms could come from b or c
        g.add_edge(idx[1], idx[0], (EdgeKind::Dependency, 1.0));
        g.add_edge(idx[2], idx[0], (EdgeKind::Dependency, 1.0));
        let ev = |s: &str| match s {
            "a" => 1.0,
            "b" => 0.5,
            _ => 0.0,
        };
        let pr = personalised_pagerank(&g, &names, &ev, &|_| 1.0, 0.85);
        assert!((pr.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!(pr[1] > pr[2]);
    }

    #[test]
    fn the_edge_that_adds_seconds_outranks_one_that_adds_milliseconds_with_more_slow_calls() {
        // payment's calls wait 2 s longer; inventory's wait 4 ms longer, on more calls, so its
        // count test is as sure, and its own spans are a little slow too.
        let edge = |service: &str, now: f64, usual: f64, t: i64| {
            let mut a = anomaly(
                service,
                SourceKind::Traces,
                "span.edge_latency",
                Severity::Sev1,
                t,
            );
            a.score = 1.0;
            (a.observed, a.expected) = (Some(now), Some(usual));
            a
        };
        let anomalies = vec![
            edge("inventory", 5.5, 1.5, 0),
            anomaly(
                "inventory",
                SourceKind::Traces,
                "span.latency:SELECT stock",
                Severity::Sev1,
                0,
            ),
            edge("payment", 2003.0, 3.0, 20),
        ];
        let ranking = rank("prod", &anomalies, &[], &shop(), &RankConfig::default());
        assert_eq!(ranking.services()[..2], ["payment", "inventory"]);

        // Alike in what they add, the service with more evidence keeps the lead; so it does
        // when the larger delay came ten minutes later, too far away to explain it, or when
        // its own other edge adds as much.
        let config = RankConfig::default();
        let mut alike = anomalies.clone();
        alike[0] = edge("inventory", 2001.5, 1.5, 0);
        let mut apart = anomalies.clone();
        apart[2] = edge("payment", 2003.0, 3.0, 600 * 1_000_000_000);
        let mut own = anomalies.clone();
        own.push(edge("inventory", 1801.5, 1.5, 30));
        for incident in [alike, apart, own] {
            let ranking = rank("prod", &incident, &[], &shop(), &config);
            assert_eq!(ranking.services()[..2], ["inventory", "payment"]);
        }
    }
}
