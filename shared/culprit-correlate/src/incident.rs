//! Incidents: anomalies grouped per environment by event time.
//!
//! An incident opens when the anomalies of the last `open_window_secs` carry at least
//! `open_evidence` (so one stray SEV4 opens nothing, one SEV1 or a few SEV2s do), and stays open
//! while that much evidence keeps coming: every later anomaly within `quiet_gap_secs` of its last
//! one joins it, but only one that brings its last `open_window_secs` to `open_evidence` extends
//! it (a late anomaly too). When `quiet_gap_secs` of event time pass without such evidence it
//! resolves. The same threshold opens and sustains an incident, so the weak background a busy
//! system always shows cannot keep one open for the next, unrelated fault to join. Changes never open an incident:
//! they are kept for `change_lookback_secs` and attached to the next one as candidate causes.
//!
//! An alert is published when an incident opens, whenever its top candidates change order, and
//! when it resolves; `revision` counts them.

use crate::rank::{is_corroborating, rank, RankConfig, Ranking};
use crate::topology::Topology;
use culprit_core::{
    Anomaly, DependencyEdge, IncidentStatus, RcaAlert, Severity, Signal, SignalFamily, SourceKind,
    UnixNanos, NANOS_PER_SEC,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelateConfig {
    /// Event time without a new anomaly after which an incident resolves.
    pub quiet_gap_secs: u32,
    /// An incident older than this resolves even while anomalies keep coming, and the next
    /// anomaly opens a new one.
    pub max_incident_secs: u32,
    /// Trailing window whose evidence decides whether an incident opens.
    pub open_window_secs: u32,
    /// Evidence (sum of severity weight x score over distinct signals) that opens an incident.
    pub open_evidence: f64,
    /// How long a change stays a candidate cause for incidents that follow it.
    pub change_lookback_secs: u32,
    pub rank: RankConfig,
    /// Signal families that claim never-seen behaviour (a new error line, a new exception type).
    /// Such a finding on a service that already showed it in n earlier incidents contradicts its
    /// own claim: its evidence counts 1 / (1 + n). Empty turns this off.
    pub novelty_signals: Vec<SignalFamily>,
    /// Incidents whose latest alert the correlator keeps for [`Correlator::incidents`] (the
    /// embedded mode's and the replay's result); the oldest go first. At least 1.
    pub history_max_incidents: usize,
    /// Event time after which a resolved incident leaves that list (measured from its last
    /// anomaly to the newest watermark). Open incidents stay whatever their age.
    pub history_max_age_secs: u32,
    /// Step between an incident's published revisions (1 when unset). The binary sets 2 when the
    /// LLM agent is on, so the agent's review of revision `r` can be published as `r + 1` without
    /// colliding with the correlator's next revision; not read from configuration files.
    #[serde(skip)]
    pub revision_stride: u32,
}

impl CorrelateConfig {
    fn is_novelty(&self, signal: &Signal) -> bool {
        self.novelty_signals.contains(&signal.family())
    }
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            quiet_gap_secs: 120,
            max_incident_secs: 3600,
            open_window_secs: 60,
            open_evidence: 1.2,
            change_lookback_secs: 3600,
            rank: RankConfig::default(),
            novelty_signals: vec![
                SignalFamily::LogNewTemplate,
                SignalFamily::LogNewRemoteError,
                SignalFamily::SpanNewError,
            ],
            history_max_incidents: 10_000,
            history_max_age_secs: 7 * 24 * 3600,
            revision_stride: 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Incident {
    id: String,
    anomalies: Vec<Anomaly>,
    ids: HashSet<String>,
    changes: Vec<Anomaly>,
    /// Its anomalies of the last `open_window_secs` before the newest: the evidence that keeps
    /// it open.
    recent: VecDeque<Anomaly>,
    started_at: UnixNanos,
    updated_at: UnixNanos,
    revision: u32,
    /// Top candidates as last published, to republish only when they change.
    published_top: Vec<String>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct EnvironmentState {
    candidates: VecDeque<Anomaly>,
    changes: VecDeque<Anomaly>,
    open: Option<Incident>,
    /// (service, signal) -> resolved incidents it appeared in, for novelty signals.
    novelty_seen: HashMap<(String, Signal), u32>,
}

/// Turns anomalies into incidents and incidents into RCA alerts.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelateConfig,
    topology: Topology,
    environments: BTreeMap<String, EnvironmentState>,
    /// The incidents published within the history bounds (`history_max_incidents`,
    /// `history_max_age_secs`), oldest first, each with its last alert (for replay and eval).
    history: Vec<RcaAlert>,
    history_index: HashMap<String, usize>,
    /// The newest watermark seen (event time), for the history's age bound.
    watermark: UnixNanos,
}

impl Correlator {
    pub fn new(config: CorrelateConfig) -> Correlator {
        Correlator {
            config,
            topology: Topology::default(),
            environments: BTreeMap::new(),
            history: Vec::new(),
            history_index: HashMap::new(),
            watermark: i64::MIN,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn add_edge(&mut self, edge: &DependencyEdge) {
        self.topology.add(edge);
    }

    /// The latest alert of every incident so far, oldest incident first; at most
    /// `history_max_incidents` of them, and no resolved one older than `history_max_age_secs`.
    pub fn incidents(&self) -> &[RcaAlert] {
        &self.history
    }

    /// Takes one anomaly. Returns the alerts it caused (at most one: the opening of an incident);
    /// ranking changes of an open incident are published from [`Correlator::advance`].
    pub fn add(&mut self, anomaly: Anomaly) -> Vec<RcaAlert> {
        let lookback = i64::from(self.config.change_lookback_secs) * NANOS_PER_SEC;
        let quiet = i64::from(self.config.quiet_gap_secs) * NANOS_PER_SEC;
        let open_window = i64::from(self.config.open_window_secs) * NANOS_PER_SEC;
        let state = self
            .environments
            .entry(anomaly.environment.clone())
            .or_default();

        if anomaly.source == SourceKind::Changes {
            while state
                .changes
                .front()
                .is_some_and(|c| c.time < anomaly.time - lookback)
            {
                state.changes.pop_front();
            }
            if let Some(incident) = &mut state.open {
                if !incident.changes.iter().any(|c| c.id == anomaly.id) {
                    incident.changes.push(anomaly.clone());
                    incident.dirty = true;
                }
            }
            state.changes.push_back(anomaly);
            return Vec::new();
        }

        let corroborating = is_corroborating(&anomaly.signal, &self.config.rank);
        if let Some(incident) = &mut state.open {
            if anomaly.time <= incident.updated_at + quiet {
                if incident.ids.insert(anomaly.id.clone()) {
                    let mut anomaly = anomaly;
                    weigh_novelty(&self.config, &state.novelty_seen, &mut anomaly);
                    let newest = incident.recent.iter().map(|a| a.time).max();
                    let newest = newest.unwrap_or(anomaly.time).max(anomaly.time);
                    incident.recent.push_back(anomaly.clone());
                    incident.recent.retain(|a| a.time >= newest - open_window);
                    // Corroborating signals join an incident but never stretch it, nor does
                    // evidence too weak to have opened one.
                    let sustained = candidate_evidence(&incident.recent, &self.config.rank)
                        >= self.config.open_evidence;
                    if !corroborating && sustained {
                        incident.updated_at = incident.updated_at.max(anomaly.time);
                        incident.started_at = incident.started_at.min(anomaly.time);
                    }
                    incident.anomalies.push(anomaly);
                    incident.dirty = true;
                }
                return Vec::new();
            }
        }

        // Not part of an open incident: a candidate that may open one.
        while state
            .candidates
            .front()
            .is_some_and(|c| c.time < anomaly.time - open_window)
        {
            state.candidates.pop_front();
        }
        if state.candidates.iter().any(|c| c.id == anomaly.id) {
            return Vec::new();
        }
        state.candidates.push_back(anomaly);
        if candidate_evidence(&state.candidates, &self.config.rank) < self.config.open_evidence
            || state.open.is_some()
        {
            return Vec::new();
        }

        let mut anomalies: Vec<Anomaly> = state.candidates.drain(..).collect();
        for a in &mut anomalies {
            weigh_novelty(&self.config, &state.novelty_seen, a);
        }
        let rank_config = &self.config.rank;
        let primary = || {
            anomalies
                .iter()
                .filter(|a| !is_corroborating(&a.signal, rank_config))
        };
        // The opening evidence came from primary signals, so there is at least one.
        let started_at = primary().map(|a| a.time).min().expect("non-empty");
        let updated_at = primary().map(|a| a.time).max().expect("non-empty");
        let first = primary().min_by_key(|a| a.time).expect("non-empty");
        let changes: Vec<Anomaly> = state
            .changes
            .iter()
            .filter(|c| c.time >= started_at - lookback)
            .cloned()
            .collect();
        let id = incident_id(first);
        let environment = first.environment.clone();
        let ids = anomalies.iter().map(|a| a.id.clone()).collect();
        state.open = Some(Incident {
            id,
            recent: anomalies.iter().cloned().collect(),
            anomalies,
            ids,
            changes,
            started_at,
            updated_at,
            revision: 0,
            published_top: Vec::new(),
            dirty: true,
        });
        let alerts = self
            .publish(&environment, IncidentStatus::Open, true)
            .into_iter()
            .collect();
        self.prune_history();
        alerts
    }

    /// Event time has reached `watermark`: republish incidents whose ranking changed and resolve
    /// the ones that went quiet.
    pub fn advance(&mut self, watermark: UnixNanos) -> Vec<RcaAlert> {
        self.watermark = self.watermark.max(watermark);
        let alerts = self.resolve(watermark);
        self.prune_history();
        alerts
    }

    fn resolve(&mut self, watermark: UnixNanos) -> Vec<RcaAlert> {
        let quiet = i64::from(self.config.quiet_gap_secs) * NANOS_PER_SEC;
        let max_len = i64::from(self.config.max_incident_secs) * NANOS_PER_SEC;
        let environments: Vec<String> = self.environments.keys().cloned().collect();
        let mut alerts = Vec::new();
        for env in environments {
            let Some(incident) = self.environments.get(&env).and_then(|s| s.open.as_ref()) else {
                continue;
            };
            let expired = watermark > incident.updated_at + quiet
                || incident.updated_at - incident.started_at > max_len;
            if expired {
                alerts.extend(self.publish(&env, IncidentStatus::Resolved, true));
                if let Some(state) = self.environments.get_mut(&env) {
                    if let Some(incident) = state.open.take() {
                        let seen: HashSet<(String, Signal)> = incident
                            .anomalies
                            .iter()
                            .filter(|a| self.config.is_novelty(&a.signal))
                            .map(|a| (a.service.clone(), a.signal.clone()))
                            .collect();
                        for key in seen {
                            *state.novelty_seen.entry(key).or_default() += 1;
                        }
                    }
                }
            } else if incident.dirty {
                alerts.extend(self.publish(&env, IncidentStatus::Open, false));
            }
        }
        alerts
    }

    /// Resolves every open incident (end of a replay, shutdown). The history keeps them: the
    /// end of a stream is no watermark to age it by.
    pub fn flush(&mut self) -> Vec<RcaAlert> {
        let alerts = self.resolve(i64::MAX / 4);
        self.prune_history();
        alerts
    }

    /// Drops the oldest incidents beyond `history_max_incidents`, and resolved ones whose last
    /// anomaly lies more than `history_max_age_secs` before the newest watermark, from the front
    /// of the history (publication order: an old incident behind a younger open one waits).
    fn prune_history(&mut self) {
        let max = self.config.history_max_incidents.max(1);
        let horizon = self
            .watermark
            .saturating_sub(i64::from(self.config.history_max_age_secs) * NANOS_PER_SEC);
        let mut drop = 0;
        for alert in &self.history {
            let too_many = self.history.len() - drop > max;
            let too_old = alert.status == IncidentStatus::Resolved && alert.updated_at < horizon;
            if !(too_many || too_old) {
                break;
            }
            drop += 1;
        }
        if drop == 0 {
            return;
        }
        self.history.drain(..drop);
        self.history_index = self
            .history
            .iter()
            .enumerate()
            .map(|(i, a)| (a.incident_id.clone(), i))
            .collect();
    }

    /// Ranks the open incident of `env` and returns an alert when `force` is set or its top
    /// candidates changed.
    fn publish(&mut self, env: &str, status: IncidentStatus, force: bool) -> Option<RcaAlert> {
        let state = self.environments.get_mut(env)?;
        let incident = state.open.as_mut()?;
        let ranking = rank(
            env,
            &incident.anomalies,
            &incident.changes,
            &self.topology,
            &self.config.rank,
        );
        incident.dirty = false;
        let top: Vec<String> = ranking.causes.iter().map(|c| c.service.clone()).collect();
        if !force && top == incident.published_top {
            return None;
        }
        incident.published_top = top;
        incident.revision = match incident.revision {
            0 => 1,
            r => r + self.config.revision_stride.max(1),
        };
        let alert = build_alert(env, incident, ranking, status);
        match self.history_index.get(&alert.incident_id) {
            Some(&i) => self.history[i] = alert.clone(),
            None => {
                self.history_index
                    .insert(alert.incident_id.clone(), self.history.len());
                self.history.push(alert.clone());
            }
        }
        Some(alert)
    }
}

/// Novelty already shown in `seen` earlier incidents is no longer news: it counts 1 / (1 + n).
/// Applied as an anomaly joins an incident; the counts change only when an incident resolves.
fn weigh_novelty(
    config: &CorrelateConfig,
    seen: &HashMap<(String, Signal), u32>,
    anomaly: &mut Anomaly,
) {
    if !config.is_novelty(&anomaly.signal) {
        return;
    }
    if let Some(n) = seen.get(&(anomaly.service.clone(), anomaly.signal.clone())) {
        anomaly.score /= 1.0 + f64::from(*n);
    }
}

/// Evidence of the candidates, each distinct (service, signal) counted once at its strongest and
/// weighted like the ranking weighs its signal family (a family that ranks as a tie-breaker does
/// not open incidents on its own either).
fn candidate_evidence(candidates: &VecDeque<Anomaly>, rank: &RankConfig) -> f64 {
    let mut best: HashMap<(&str, &Signal), f64> = HashMap::new();
    for a in candidates
        .iter()
        .filter(|a| !is_corroborating(&a.signal, rank))
    {
        let weight = rank
            .signal_weights
            .get(&a.signal.family())
            .copied()
            .unwrap_or(1.0)
            .min(1.0);
        let s = best.entry((&a.service, &a.signal)).or_default();
        *s = s.max(a.severity.weight() * a.score * weight);
    }
    best.values().sum()
}

fn incident_id(first: &Anomaly) -> String {
    format!(
        "inc-{}-{}",
        first.time / NANOS_PER_SEC,
        &first.id[..first.id.len().min(8)]
    )
}

fn build_alert(
    env: &str,
    incident: &Incident,
    ranking: Ranking,
    status: IncidentStatus,
) -> RcaAlert {
    let severity = incident
        .anomalies
        .iter()
        .map(|a| a.severity)
        .min()
        .unwrap_or(Severity::Sev5);
    let mut affected: BTreeMap<SourceKind, Vec<String>> = BTreeMap::new();
    for a in &incident.anomalies {
        let list = affected.entry(a.source).or_default();
        if !list.contains(&a.service) {
            list.push(a.service.clone());
        }
    }
    affected.values_mut().for_each(|v| v.sort());
    let services: HashSet<&str> = incident
        .anomalies
        .iter()
        .map(|a| a.service.as_str())
        .collect();
    let summary = match ranking.causes.first() {
        Some(top) => format!(
            "{severity} in {env}: {} is the likely root cause ({} anomalies across {} services, confidence {:.0}%)",
            top.service,
            incident.anomalies.len(),
            services.len(),
            ranking.confidence * 100.0
        ),
        None => format!("{severity} in {env}: {} anomalies, no candidate", incident.anomalies.len()),
    };
    RcaAlert {
        schema_version: 1,
        incident_id: incident.id.clone(),
        revision: incident.revision,
        status,
        environment: env.to_string(),
        started_at: incident.started_at,
        updated_at: incident.updated_at,
        severity,
        confidence: ranking.confidence,
        summary,
        root_causes: ranking.causes,
        graph: ranking.graph,
        anomaly_count: incident.anomalies.len(),
        affected_services: affected,
        llm_review: None,
        similar_incidents: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(service: &str, signal: &str, severity: Severity, secs: i64) -> Anomaly {
        Anomaly {
            id: format!("{service}-{signal}-{secs}"),
            time: secs * NANOS_PER_SEC,
            source: SourceKind::Traces,
            service: service.into(),
            environment: "prod".into(),
            instance: None,
            signal: signal.into(),
            description: String::new(),
            severity,
            score: 1.0,
            observed: None,
            expected: None,
        }
    }

    /// `execute` writes the same "new" error line in every incident whatever its cause (workload
    /// noise); in the second incident `basic`'s own, weaker change is the real news.
    fn chronic_novelty(config: CorrelateConfig) -> Vec<String> {
        let mut c = Correlator::new(config);
        let noise = |secs| anomaly("execute", "log.new_template:7", Severity::Sev1, secs);
        c.add(noise(1000));
        c.add(anomaly("order", "span.errors", Severity::Sev1, 1001));
        c.add(anomaly("order", "span.latency", Severity::Sev1, 1002));
        let resolved = c.advance(1400 * NANOS_PER_SEC);
        assert!(resolved
            .iter()
            .any(|a| a.status == IncidentStatus::Resolved));
        c.add(noise(2000));
        c.add(anomaly("basic", "span.edge_latency", Severity::Sev2, 2001));
        let last = c.flush();
        assert_eq!(last.len(), 1);
        last[0]
            .root_causes
            .iter()
            .map(|r| r.service.clone())
            .collect()
    }

    #[test]
    fn novelty_already_shown_in_an_earlier_incident_counts_less_than_new_trouble() {
        let ranked = chronic_novelty(CorrelateConfig::default());
        assert_eq!(ranked[0], "basic", "{ranked:?}");
        // Without the rule the recurring line outweighs it.
        let ranked = chronic_novelty(CorrelateConfig {
            novelty_signals: Vec::new(),
            ..CorrelateConfig::default()
        });
        assert_eq!(ranked[0], "execute", "{ranked:?}");
    }

    #[test]
    fn a_lone_weak_anomaly_opens_nothing_and_strong_evidence_opens_one_incident() {
        let mut c = Correlator::new(CorrelateConfig::default());
        assert!(c
            .add(anomaly("cart", "span.new_call:x", Severity::Sev4, 0))
            .is_empty());
        assert!(c.advance(500 * NANOS_PER_SEC).is_empty());
        let opened = c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        assert!(
            opened.is_empty(),
            "one SEV1 (weight 1.0) stays below the default 1.2"
        );
        let opened = c.add(anomaly("checkout", "span.errors", Severity::Sev2, 1001));
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].status, IncidentStatus::Open);
        assert_eq!(opened[0].anomaly_count, 2);
        assert_eq!(opened[0].revision, 1);
    }

    #[test]
    fn late_anomalies_extend_and_quiet_resolves_with_a_stable_id() {
        let mut c = Correlator::new(CorrelateConfig::default());
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        let opened = c.add(anomaly("cart", "log.errors", Severity::Sev1, 1005));
        let id = opened[0].incident_id.clone();
        c.add(anomaly("checkout", "span.latency:a", Severity::Sev1, 1090));
        c.add(anomaly("frontend", "span.latency:b", Severity::Sev2, 1002)); // late, older than the newest
        assert!(c
            .advance(1100 * NANOS_PER_SEC)
            .iter()
            .all(|a| a.status == IncidentStatus::Open));
        let resolved = c.advance(1300 * NANOS_PER_SEC);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, IncidentStatus::Resolved);
        assert_eq!(resolved[0].incident_id, id);
        assert_eq!(resolved[0].anomaly_count, 4);
        assert_eq!(c.incidents().len(), 1);
        // after resolution a new anomaly burst is a new incident
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 2000));
        let again = c.add(anomaly("cart", "log.errors", Severity::Sev1, 2001));
        assert_ne!(again[0].incident_id, id);
    }

    #[test]
    fn weak_background_joins_an_incident_but_does_not_keep_it_open_for_the_next_fault() {
        let mut c = Correlator::new(CorrelateConfig::default());
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        let first = c.add(anomaly("cart", "log.errors", Severity::Sev1, 1001))[0]
            .incident_id
            .clone();
        // A SEV4 somewhere every 50 s: far below what opens an incident.
        let mut resolved = Vec::new();
        for (i, secs) in (1050..1600).step_by(50).enumerate() {
            c.add(anomaly(
                &format!("noise-{i}"),
                "span.latency:x",
                Severity::Sev4,
                secs,
            ));
            resolved.extend(
                c.advance(secs * NANOS_PER_SEC)
                    .into_iter()
                    .filter(|a| a.status == IncidentStatus::Resolved),
            );
        }
        assert_eq!(resolved.len(), 1, "resolved while only background came");
        assert_eq!(resolved[0].incident_id, first);
        assert!(
            resolved[0].anomaly_count > 2,
            "the background within the gap joined it"
        );

        // The next fault opens its own incident, ranked on its own evidence.
        c.add(anomaly("payment", "span.errors", Severity::Sev1, 1600));
        let second = c.add(anomaly("payment", "log.errors", Severity::Sev1, 1601));
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].incident_id, first);
        assert_eq!(second[0].root_causes[0].service, "payment");
    }

    #[test]
    fn evidence_that_could_open_an_incident_keeps_it_open() {
        let mut c = Correlator::new(CorrelateConfig::default());
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        let id = c.add(anomaly("cart", "log.errors", Severity::Sev1, 1001))[0]
            .incident_id
            .clone();
        for secs in (1100..1600).step_by(100) {
            c.add(anomaly("cart", "span.errors", Severity::Sev1, secs));
            c.add(anomaly("checkout", "span.errors", Severity::Sev2, secs + 1));
            assert!(c
                .advance((secs + 2) * NANOS_PER_SEC)
                .iter()
                .all(|a| a.status == IncidentStatus::Open && a.incident_id == id));
        }
    }

    /// One incident of two SEV1s on `service` at `secs`, resolved by a watermark 200 s later.
    fn incident_at(c: &mut Correlator, service: &str, secs: i64) -> String {
        c.add(anomaly(service, "span.errors", Severity::Sev1, secs));
        let opened = c.add(anomaly(service, "log.errors", Severity::Sev1, secs + 1));
        let resolved = c.advance((secs + 200) * NANOS_PER_SEC);
        assert_eq!(resolved[0].status, IncidentStatus::Resolved);
        opened[0].incident_id.clone()
    }

    fn ids(c: &Correlator) -> Vec<String> {
        c.incidents()
            .iter()
            .map(|a| a.incident_id.clone())
            .collect()
    }

    #[test]
    fn the_history_keeps_the_newest_incidents_up_to_its_count() {
        let mut c = Correlator::new(CorrelateConfig {
            history_max_incidents: 2,
            ..CorrelateConfig::default()
        });
        let a = incident_at(&mut c, "cart", 1_000);
        let b = incident_at(&mut c, "db", 2_000);
        assert_eq!(ids(&c), [a, b.clone()]);
        let d = incident_at(&mut c, "web", 3_000);
        assert_eq!(ids(&c), [b.clone(), d.clone()], "the oldest went");
        // Its later revisions replace an incident in place.
        c.add(anomaly("web", "span.errors", Severity::Sev1, 4_000));
        let e = c.add(anomaly("web", "log.errors", Severity::Sev1, 4_001))[0]
            .incident_id
            .clone();
        assert_eq!(ids(&c), [d.clone(), e.clone()]);
        c.flush();
        assert_eq!(ids(&c), [d, e.clone()]);
        assert_eq!(c.incidents()[1].status, IncidentStatus::Resolved);
        assert_eq!(c.history_index.len(), 2);
        assert_eq!(c.history_index[&e], 1);
    }

    #[test]
    fn resolved_incidents_leave_the_history_once_older_than_its_age_in_event_time() {
        let mut c = Correlator::new(CorrelateConfig {
            history_max_age_secs: 3_600,
            ..CorrelateConfig::default()
        });
        let a = incident_at(&mut c, "cart", 1_000);
        let b = incident_at(&mut c, "db", 4_000);
        c.advance(4_500 * NANOS_PER_SEC);
        assert_eq!(ids(&c), [a, b.clone()], "both within the hour");
        // An open incident is kept however old it is; it opens at 5 000 s.
        c.add(anomaly("web", "span.errors", Severity::Sev1, 5_000));
        let open = c.add(anomaly("web", "log.errors", Severity::Sev1, 5_001))[0]
            .incident_id
            .clone();
        c.advance(5_100 * NANOS_PER_SEC);
        assert_eq!(
            ids(&c),
            [b.clone(), open.clone()],
            "cart's last anomaly (1 001 s) is over an hour before 5 100 s"
        );
        // The end of a stream resolves without ageing anything.
        c.flush();
        assert_eq!(ids(&c), [b, open]);
    }

    #[test]
    fn changes_attach_to_the_next_incident_without_opening_one() {
        let mut c = Correlator::new(CorrelateConfig::default());
        let mut change = anomaly("payment", "change:deployment:1", Severity::Sev3, 900);
        change.source = SourceKind::Changes;
        assert!(c.add(change).is_empty());
        c.add(anomaly("payment", "span.errors", Severity::Sev1, 1000));
        let opened = c.add(anomaly("checkout", "span.errors", Severity::Sev1, 1001));
        assert_eq!(opened[0].root_causes[0].service, "payment");
        assert!(opened[0].root_causes[0]
            .evidence
            .iter()
            .any(|a| a.source == SourceKind::Changes));
    }

    #[test]
    fn a_revision_stride_leaves_room_between_published_revisions() {
        let config = CorrelateConfig {
            revision_stride: 2,
            ..CorrelateConfig::default()
        };
        let mut c = Correlator::new(config);
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        let opened = c.add(anomaly("cart", "log.errors", Severity::Sev1, 1005));
        assert_eq!(opened[0].revision, 1);
        let resolved = c.advance(1300 * NANOS_PER_SEC);
        assert_eq!(resolved[0].revision, 3, "revision 2 is left for a review");
    }

    #[test]
    fn environments_never_share_an_incident() {
        let mut c = Correlator::new(CorrelateConfig::default());
        c.add(anomaly("cart", "span.errors", Severity::Sev1, 1000));
        let mut other = anomaly("cart", "log.errors", Severity::Sev1, 1001);
        other.environment = "staging".into();
        assert!(c.add(other).is_empty());
    }
}
