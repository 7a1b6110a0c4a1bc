//! Evaluation on labelled incidents in the Nezha layout (`labels/cases.csv`, `rca_data/<date>/`,
//! optionally `construct_data/<date>/`).
//!
//! The contract, per case:
//! - normal behaviour is learned only from the fault-free reference window (`construct_data`
//!   logs and traces plus the metric rows of its time span) and from the metric rows of the
//!   30 minutes before the injection;
//! - then the case's minute files and the metric rows of their span (metrics-only datasets: the
//!   metric rows of `[inject - 60 s, inject + 180 s]`) are replayed in event-time order through
//!   the same streaming [`Pipeline`] every other mode uses;
//! - the ranking is that of the first incident whose window overlaps `[inject, inject + 180 s]`;
//!   no such incident is a miss.
//!
//! Nothing here reads the case's label before its ranking is final, and apart from the reference
//! window nothing after the case's replay window is read.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use culprit_core::{Anomaly, DependencyEdge, Event, LlmReview, RcaAlert, NANOS_PER_SEC};
use culprit_nezha::{Case, Dataset, Kind, MetricOptions, MetricStore};
use culprit_pipeline::{Pipeline, PipelineConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Seconds after the injection an incident must overlap to count.
pub const FAULT_WINDOW_S: i64 = 180;
/// Seconds after the replay span within which a per-minute metric row still mostly describes it.
pub const METRIC_ROW_SLACK_S: i64 = 30;
/// Seconds of metric history before the injection that may be learned from.
pub const METRIC_HISTORY_S: i64 = 1800;

/// How one case went.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case_id: String,
    pub fault_type: String,
    pub root_cause: String,
    pub inject_unix_s: i64,
    /// Candidate services, best first (empty when nothing was detected).
    pub ranking: Vec<String>,
    /// 1-based position of the true root cause in `ranking`.
    pub rank: Option<usize>,
    pub detected: bool,
    /// Event time from the injection to the incident's first anomaly (negative when the incident
    /// began before the injection, from early symptoms or noise).
    pub detect_delay_s: Option<f64>,
    pub incident_id: Option<String>,
    pub confidence: Option<f64>,
    pub events: u64,
    pub anomalies: u64,
    pub seconds: f64,
    /// Every anomaly of the replay, when [`EvalOptions::explain`] asked for them.
    #[serde(skip)]
    pub anomaly_log: Vec<culprit_core::Anomaly>,
    /// The ranked candidates of the chosen incident, with their evidence.
    #[serde(skip)]
    pub causes: Vec<culprit_core::RootCause>,
    /// The true root cause's rank before [`EvalOptions::review`] re-ordered the candidates
    /// (equal to `rank` without a review).
    pub deterministic_rank: Option<usize>,
    /// The review of the chosen incident, when [`EvalOptions::review`] ran one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_review: Option<LlmReview>,
}

/// What a review hook sees of a case: the chosen incident's final alert, every anomaly of the
/// replay and its events. The label is not part of it.
pub struct ReviewInput<'a> {
    pub alert: &'a RcaAlert,
    pub anomalies: &'a [Anomaly],
    pub events: &'a [Event],
}

/// Reviews a case's incident (the LLM agent) and returns the alert whose ranking is scored.
#[derive(Clone)]
pub struct ReviewHook(pub Arc<dyn Fn(ReviewInput<'_>) -> RcaAlert + Send + Sync>);

impl std::fmt::Debug for ReviewHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReviewHook")
    }
}

/// What to evaluate and how much to say about it.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub pipeline: PipelineConfig,
    /// Only the cases whose id contains one of these comma-separated patterns.
    pub case_filter: Option<String>,
    /// Keep every anomaly of each case in [`CaseResult::anomaly_log`].
    pub explain: bool,
    /// Re-rank each case's incident before it is scored (`culprit eval --llm`).
    pub review: Option<ReviewHook>,
}

/// Accuracy figures over a set of cases.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Scores {
    pub cases: usize,
    pub detected: usize,
    pub ac1: f64,
    pub ac3: f64,
    pub ac5: f64,
    pub avg5: f64,
}

impl Scores {
    pub fn of<'a>(results: impl IntoIterator<Item = &'a CaseResult>) -> Scores {
        let results: Vec<&CaseResult> = results.into_iter().collect();
        let n = results.len().max(1) as f64;
        let ac = |k: usize| {
            results
                .iter()
                .filter(|r| r.rank.is_some_and(|p| p <= k))
                .count() as f64
                / n
        };
        Scores {
            cases: results.len(),
            detected: results.iter().filter(|r| r.detected).count(),
            ac1: ac(1),
            ac3: ac(3),
            ac5: ac(5),
            avg5: (1..=5).map(ac).sum::<f64>() / 5.0,
        }
    }
}

/// The line `culprit eval --json` ends with.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub scores: Scores,
    pub by_fault_type: BTreeMap<String, Scores>,
    pub median_detect_delay_s: Option<f64>,
    /// Incidents opened when each date's fault-free reference window is replayed after learning
    /// from itself (expected: 0); None for datasets without a reference window.
    pub reference_incidents: Option<usize>,
    pub seconds: f64,
}

impl Summary {
    pub fn of(results: &[CaseResult], seconds: f64) -> Summary {
        let mut by_type: BTreeMap<String, Vec<&CaseResult>> = BTreeMap::new();
        for r in results {
            by_type.entry(r.fault_type.clone()).or_default().push(r);
        }
        let mut delays: Vec<f64> = results.iter().filter_map(|r| r.detect_delay_s).collect();
        delays.sort_by(f64::total_cmp);
        let median = (!delays.is_empty()).then(|| {
            let m = delays.len() / 2;
            if delays.len() % 2 == 0 {
                (delays[m - 1] + delays[m]) / 2.0
            } else {
                delays[m]
            }
        });
        Summary {
            scores: Scores::of(results),
            by_fault_type: by_type
                .into_iter()
                .map(|(k, v)| (k, Scores::of(v)))
                .collect(),
            median_detect_delay_s: median,
            reference_incidents: None,
            seconds,
        }
    }
}

/// Evaluates every case of the dataset at `root`, calling `on_case` as each finishes.
pub fn eval_nezha(
    root: &Path,
    options: &EvalOptions,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<(Vec<CaseResult>, Summary)> {
    let started = Instant::now();
    let dataset =
        Dataset::open(root).with_context(|| format!("opening dataset {}", root.display()))?;
    let cases = dataset.cases()?;
    let mut data = DateData::default();
    let mut results = Vec::with_capacity(cases.len());
    let wanted = |c: &Case| {
        options.case_filter.as_ref().is_none_or(|f| {
            f.split(',')
                .any(|p| !p.is_empty() && c.id.contains(p.trim()))
        })
    };
    for case in cases.iter().filter(|c| wanted(c)) {
        let result = eval_case(&dataset, &mut data, case, options)
            .with_context(|| format!("evaluating case {}", case.id))?;
        on_case(&result);
        results.push(result);
    }
    let mut summary = Summary::of(&results, started.elapsed().as_secs_f64());
    if options.case_filter.is_none() {
        let checked = reference_self_check(root, &options.pipeline)?;
        if !checked.is_empty() {
            summary.reference_incidents = Some(checked.iter().map(|(_, n)| n).sum());
        }
        summary.seconds = started.elapsed().as_secs_f64();
    }
    Ok((results, summary))
}

/// Replays each date's fault-free reference window through a pipeline that learned from that same
/// window, and returns the incidents it opened per date (the contract expects none).
pub fn reference_self_check(root: &Path, config: &PipelineConfig) -> Result<Vec<(String, usize)>> {
    let dataset =
        Dataset::open(root).with_context(|| format!("opening dataset {}", root.display()))?;
    let mut out = Vec::new();
    let mut data = DateData::default();
    for date in dataset.dates() {
        if dataset.reference_minutes(&date).is_empty() {
            continue;
        }
        data.load(&dataset, &date)?;
        let mut events = data.reference.clone();
        if let (Some(lo), Some(hi)) = (
            events.iter().map(|e| e.time).min(),
            events.iter().map(|e| e.time).max(),
        ) {
            events.extend(metric_events(
                &data.metrics,
                lo.div_euclid(NANOS_PER_SEC),
                hi.div_euclid(NANOS_PER_SEC) + 1,
            )?);
        }
        events.sort_by_key(|e| e.time);
        let mut pipeline = Pipeline::new(PipelineConfig {
            warmup_secs: 0,
            ..config.clone()
        });
        pipeline.learn(&events);
        for event in &events {
            pipeline.push(event);
        }
        pipeline.finish();
        out.push((date, pipeline.incidents().len()));
    }
    Ok(out)
}

/// What is shared by all cases of one date: its metrics and reference events.
#[derive(Default)]
struct DateData {
    date: Option<String>,
    metrics: MetricStore,
    reference: Vec<Event>,
    dependencies: Vec<(String, String)>,
}

impl DateData {
    fn load(&mut self, dataset: &Dataset, date: &str) -> Result<()> {
        if self.date.as_deref() == Some(date) {
            return Ok(());
        }
        let metric_dir = dataset.metric_dir(date);
        // Entry-point SLIs are left out: they are symptoms of every fault and belong to no
        // service that could be a root cause.
        let options = MetricOptions {
            include_front_service: false,
            include_edge_latency: true,
        };
        self.metrics = if metric_dir.is_dir() {
            MetricStore::load(&metric_dir, options)?
        } else {
            MetricStore::default()
        };
        self.dependencies = if metric_dir.is_dir() {
            culprit_nezha::dependency_edges(&metric_dir)?
        } else {
            Vec::new()
        };
        self.reference.clear();
        for minute in dataset.reference_minutes(date) {
            for kind in [Kind::Log, Kind::Trace] {
                if let Some(path) = dataset.reference_file(date, kind, &minute) {
                    self.reference.extend(read_minute(&path, kind)?);
                }
            }
        }
        self.date = Some(date.to_string());
        Ok(())
    }
}

fn read_minute(path: &Path, kind: Kind) -> Result<Vec<Event>> {
    let events = match kind {
        Kind::Log => {
            let outcome = culprit_nezha::read_logs(path)?;
            culprit_otlp::logs_to_events(&outcome.request)?
        }
        Kind::Trace => {
            let outcome = culprit_nezha::read_spans(path)?;
            culprit_otlp::traces_to_events(&outcome.request)?
        }
    };
    Ok(events)
}

fn metric_events(store: &MetricStore, from_s: i64, to_s: i64) -> Result<Vec<Event>> {
    if to_s <= from_s {
        return Ok(Vec::new());
    }
    Ok(culprit_otlp::metrics_to_events(
        &store.window(from_s, to_s),
    )?)
}

fn eval_case(
    dataset: &Dataset,
    data: &mut DateData,
    case: &Case,
    options: &EvalOptions,
) -> Result<CaseResult> {
    let config = &options.pipeline;
    let started = Instant::now();
    data.load(dataset, &case.date)?;
    let inject = case.inject_unix_s;

    // The replay: the case's minute files, or for metrics-only data a fixed window.
    let mut replay: Vec<Event> = Vec::new();
    if dataset.has_logs_and_traces(&case.date) && !case.minute_files.is_empty() {
        for minute in &case.minute_files {
            for kind in [Kind::Log, Kind::Trace] {
                if let Some(path) = dataset.minute_file(&case.date, kind, minute) {
                    replay.extend(read_minute(&path, kind)?);
                }
            }
        }
    }
    let (replay_from, replay_to) = match (
        replay.iter().map(|e| e.time).min(),
        replay.iter().map(|e| e.time).max(),
    ) {
        (Some(lo), Some(hi)) => (
            lo.div_euclid(NANOS_PER_SEC),
            hi.div_euclid(NANOS_PER_SEC) + 1,
        ),
        _ => (inject - 60, inject + FAULT_WINDOW_S),
    };
    // A per-minute metric row stamped t summarises (t - 60 s, t]: a row stamped just after the
    // span describes the span's last minute, so rows up to half a minute after it belong to it.
    replay.extend(metric_events(
        &data.metrics,
        replay_from,
        replay_to + METRIC_ROW_SLACK_S,
    )?);
    replay.sort_by_key(|e| e.time);

    // The baseline: reference window (with its metric rows) and the metric history before the
    // replay, never overlapping the replay itself.
    let mut baseline: Vec<Event> =
        metric_events(&data.metrics, inject - METRIC_HISTORY_S, replay_from)?;
    if let (Some(lo), Some(hi)) = (
        data.reference.iter().map(|e| e.time).min(),
        data.reference.iter().map(|e| e.time).max(),
    ) {
        let reference = (
            lo.div_euclid(NANOS_PER_SEC),
            hi.div_euclid(NANOS_PER_SEC) + 1,
        );
        let taken = [
            (inject - METRIC_HISTORY_S, replay_from),
            (replay_from, replay_to + METRIC_ROW_SLACK_S),
        ];
        for (from, to) in subtract(reference, &taken) {
            baseline.extend(metric_events(&data.metrics, from, to)?);
        }
        baseline.extend(data.reference.iter().cloned());
    }
    baseline.sort_by_key(|e| e.time);

    let mut pipeline = Pipeline::new(PipelineConfig {
        warmup_secs: 0,
        ..config.clone()
    });
    for (caller, callee) in &data.dependencies {
        for environment in environments(&replay) {
            pipeline.add_dependency(DependencyEdge {
                environment,
                caller: caller.clone(),
                callee: callee.clone(),
            });
        }
    }
    if options.explain || options.review.is_some() {
        pipeline.record_anomalies();
    }
    pipeline.learn(&baseline);
    for event in &replay {
        pipeline.push(event);
    }
    pipeline.finish();

    let window = (
        inject * NANOS_PER_SEC,
        (inject + FAULT_WINDOW_S) * NANOS_PER_SEC,
    );
    let chosen: Option<&RcaAlert> = pipeline
        .incidents()
        .iter()
        .find(|a| a.started_at <= window.1 && a.updated_at >= window.0);
    let reviewed: Option<RcaAlert> = match (chosen, &options.review) {
        (Some(alert), Some(ReviewHook(review))) => Some(review(ReviewInput {
            alert,
            anomalies: pipeline.recorded_anomalies(),
            events: &replay,
        })),
        _ => None,
    };
    let incident = reviewed.as_ref().or(chosen);
    let ranking: Vec<String> = incident
        .map(|a| a.root_causes.iter().map(|c| c.service.clone()).collect())
        .unwrap_or_default();
    // Only now is the label looked at.
    let position = |alert: Option<&RcaAlert>| {
        alert?
            .root_causes
            .iter()
            .position(|c| c.service == case.root_cause_service)
            .map(|p| p + 1)
    };
    let rank = position(incident);
    let stats = pipeline.stats();
    Ok(CaseResult {
        case_id: case.id.clone(),
        fault_type: case.fault_type.clone(),
        root_cause: case.root_cause_service.clone(),
        inject_unix_s: case.inject_unix_s,
        detected: incident.is_some(),
        detect_delay_s: incident.map(|a| (a.started_at - inject * NANOS_PER_SEC) as f64 / 1e9),
        incident_id: incident.map(|a| a.incident_id.clone()),
        confidence: incident.map(|a| a.confidence),
        ranking,
        rank,
        events: stats.events.values().sum(),
        anomalies: stats.anomalies,
        seconds: started.elapsed().as_secs_f64(),
        anomaly_log: if options.explain {
            pipeline.recorded_anomalies().to_vec()
        } else {
            Vec::new()
        },
        causes: incident.map(|a| a.root_causes.clone()).unwrap_or_default(),
        deterministic_rank: position(chosen),
        llm_review: incident.and_then(|a| a.llm_review.clone()),
    })
}

/// The parts of `[from, to)` outside every interval of `taken`.
fn subtract(range: (i64, i64), taken: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut parts = vec![range];
    for &(t0, t1) in taken {
        parts = parts
            .into_iter()
            .flat_map(|(a, b)| {
                if t1 <= a || b <= t0 {
                    vec![(a, b)]
                } else {
                    [(a, t0.min(b)), (t1.max(a), b)]
                        .into_iter()
                        .filter(|(x, y)| y > x)
                        .collect()
                }
            })
            .collect();
    }
    parts
}

fn environments(events: &[Event]) -> Vec<String> {
    let mut envs: Vec<String> = events
        .iter()
        .map(|e| e.resource.environment.clone())
        .collect();
    envs.sort();
    envs.dedup();
    envs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rank: Option<usize>, fault: &str, delay: Option<f64>) -> CaseResult {
        CaseResult {
            case_id: "c".into(),
            fault_type: fault.into(),
            root_cause: "a".into(),
            inject_unix_s: 0,
            ranking: vec![],
            rank,
            detected: delay.is_some(),
            detect_delay_s: delay,
            incident_id: None,
            confidence: None,
            events: 0,
            anomalies: 0,
            seconds: 0.0,
            anomaly_log: vec![],
            causes: vec![],
            deterministic_rank: rank,
            llm_review: None,
        }
    }

    #[test]
    fn reference_metrics_never_overlap_history_or_replay() {
        assert_eq!(
            subtract((0, 100), &[(20, 40), (40, 50)]),
            vec![(0, 20), (50, 100)]
        );
        assert_eq!(subtract((0, 100), &[(200, 300)]), vec![(0, 100)]);
        assert!(subtract((10, 20), &[(0, 100)]).is_empty());
    }

    #[test]
    fn scores_follow_the_ac_at_k_definitions() {
        let results = vec![
            result(Some(1), "cpu", Some(10.0)),
            result(Some(3), "cpu", Some(20.0)),
            result(None, "return", None),
            result(Some(6), "return", Some(40.0)),
        ];
        let s = Summary::of(&results, 1.0);
        assert_eq!(s.scores.cases, 4);
        assert_eq!(s.scores.detected, 3);
        assert_eq!(s.scores.ac1, 0.25);
        assert_eq!(s.scores.ac3, 0.5);
        assert_eq!(s.scores.ac5, 0.5);
        // AC@1..5 = .25 .25 .5 .5 .5
        assert!((s.scores.avg5 - 0.4).abs() < 1e-12);
        assert_eq!(s.by_fault_type["cpu"].ac1, 0.5);
        assert_eq!(s.median_detect_delay_s, Some(20.0));
    }
}
