//! Evaluation on labelled incidents in the Nezha layout (`labels/cases.csv`, `rca_data/<date>/`,
//! optionally `construct_data/<date>/`), in two modes.
//!
//! **Per case** ([`eval_nezha`], the headline contract):
//! - normal behaviour is learned only from the fault-free reference window (`construct_data`
//!   logs and traces plus the metric rows of its time span) and from the metric rows of the
//!   30 minutes before the injection;
//! - then the case's minute files and the metric rows of their span (metrics-only datasets: the
//!   metric rows of `[inject - 60 s, inject + 180 s]`) are replayed in event-time order through
//!   the same streaming [`Pipeline`] every other mode uses, a fresh one per case.
//!
//! **Continuous** ([`eval_nezha_continuous`]): per date, one pipeline learns from the same
//! reference window and from the metric rows of the 30 minutes before the date's first case, then
//! takes the minute files of all that date's cases and the metric rows of their whole span as one
//! event-time-ordered stream, gaps between cases included. Learning carries from case to case as
//! in a deployment: the detectors keep learning from every window they judged normal, so an
//! earlier fault's tail and the hours between cases shape what the next case is judged against.
//!
//! Either way each case is scored by [`crate::score`]'s contract. Nothing here reads a case's
//! root cause before its ranking is final, and apart from the reference window nothing after the
//! replayed span is read.

use crate::parallel::{map_ordered, workers};
use crate::score::{
    fault_window, score_case, score_reviewed_case, scoring_incident, utc_date, CaseLabel,
    CaseResult, RunFacts, Summary, FAULT_WINDOW_S,
};
use crate::EvalOptions;
use anyhow::{Context, Result};
use culprit_core::{DependencyEdge, Event, NANOS_PER_SEC};
use culprit_nezha::{Case, Dataset, Kind, MetricOptions, MetricStore};
use culprit_pipeline::{Pipeline, PipelineConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Seconds after the replay span within which a per-minute metric row still mostly describes it.
pub const METRIC_ROW_SLACK_S: i64 = 30;
/// Seconds of metric history before the injection that may be learned from.
pub const METRIC_HISTORY_S: i64 = 1800;
/// Seconds before the injection a metrics-only replay starts.
const METRICS_ONLY_LEAD_S: i64 = 60;

/// Evaluates every case of the dataset at `root`, each on its own pipeline, calling `on_case` as
/// each finishes.
pub fn eval_nezha(
    root: &Path,
    options: &EvalOptions,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<(Vec<CaseResult>, Summary)> {
    let started = Instant::now();
    let dataset = open(root)?;
    let cases = selected_cases(&dataset, options)?;
    let mut data = DateData::default();
    let mut results = Vec::with_capacity(cases.len());
    // Cases are independent (a fresh pipeline each), so a date's cases run side by side.
    for group in cases.chunk_by(|a, b| a.date == b.date) {
        data.load(&dataset, &group[0].date)?;
        let data = &data;
        results.extend(map_ordered(
            group,
            workers(),
            |case| {
                eval_case(&dataset, data, case, options)
                    .with_context(|| format!("evaluating case {}", case.id))
            },
            &mut on_case,
        )?);
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

/// Evaluates the dataset at `root` as one stream per date (see the module doc), calling `on_case`
/// for each case once its date's stream has ended.
pub fn eval_nezha_continuous(
    root: &Path,
    options: &EvalOptions,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<(Vec<CaseResult>, Summary)> {
    let started = Instant::now();
    let dataset = open(root)?;
    let cases = selected_cases(&dataset, options)?;
    let mut by_date: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for case in &cases {
        by_date.entry(case.date.as_str()).or_default().push(case);
    }
    let dates: Vec<(&str, Vec<&Case>)> = by_date.into_iter().collect();
    // Each date is its own stream on its own pipeline, so dates run side by side.
    let per_date = map_ordered(
        &dates,
        workers(),
        |(date, date_cases)| {
            let mut date_cases = date_cases.clone();
            date_cases.sort_by_key(|c| c.inject_unix_s);
            let mut data = DateData::default();
            eval_date_stream(&dataset, &mut data, date, &date_cases, options)
                .with_context(|| format!("replaying the stream of {date}"))
        },
        |stream| stream.results.iter().for_each(&mut on_case),
    )?;
    let incidents = per_date.iter().map(|s| s.incidents).sum();
    let results: Vec<CaseResult> = per_date.into_iter().flat_map(|s| s.results).collect();
    let mut summary = Summary::of(&results, started.elapsed().as_secs_f64());
    summary.mode = "continuous";
    summary.stream_incidents = Some(incidents);
    Ok((results, summary))
}

/// Replays each date's fault-free reference window through a pipeline that learned from that same
/// window, and returns the incidents it opened per date (the contract expects none).
pub fn reference_self_check(root: &Path, config: &PipelineConfig) -> Result<Vec<(String, usize)>> {
    let dataset = open(root)?;
    let mut out = Vec::new();
    let mut data = DateData::default();
    for date in dataset.dates() {
        if dataset.reference_minutes(&date).is_empty() {
            continue;
        }
        data.load(&dataset, &date)?;
        let mut events = data.reference.clone();
        if let Some((lo, hi)) = span_s(&events) {
            events.extend(metric_events(&data.metrics, lo, hi)?);
        }
        events.sort_by_key(|e| e.time);
        let mut pipeline = fresh_pipeline(config);
        pipeline.learn(&mut events);
        for event in &mut events {
            pipeline.push(event);
        }
        pipeline.finish();
        out.push((date, pipeline.incidents().len()));
    }
    Ok(out)
}

fn open(root: &Path) -> Result<Dataset> {
    Dataset::open(root).with_context(|| format!("opening dataset {}", root.display()))
}

/// The dataset's cases that `options.case_filter` selects, in file order.
fn selected_cases(dataset: &Dataset, options: &EvalOptions) -> Result<Vec<Case>> {
    Ok(dataset
        .cases()?
        .into_iter()
        .filter(|c| options.selects(&c.id))
        .collect())
}

fn label_of(case: &Case) -> CaseLabel {
    CaseLabel {
        case_id: case.id.clone(),
        date: if case.date.is_empty() {
            utc_date(case.inject_unix_s)
        } else {
            case.date.clone()
        },
        fault_type: case.fault_type.clone(),
        root_cause_service: case.root_cause_service.clone(),
        fault_start_unix_s: case.inject_unix_s,
    }
}

fn fresh_pipeline(config: &PipelineConfig) -> Pipeline {
    Pipeline::new(PipelineConfig {
        warmup_secs: 0,
        ..config.clone()
    })
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

    /// The events to learn from before replaying `[replay_from, replay_to)` (epoch seconds): the
    /// reference window with its metric rows and the metric rows of the history before
    /// `history_from`..`replay_from`, never overlapping the replay itself.
    fn baseline(&self, history_from: i64, replay_from: i64, replay_to: i64) -> Result<Vec<Event>> {
        let mut baseline = metric_events(&self.metrics, history_from, replay_from)?;
        if let Some(reference) = span_s(&self.reference) {
            let taken = [(history_from, replay_from), (replay_from, replay_to)];
            for (from, to) in subtract(reference, &taken) {
                baseline.extend(metric_events(&self.metrics, from, to)?);
            }
            baseline.extend(self.reference.iter().cloned());
        }
        baseline.sort_by_key(|e| e.time);
        Ok(baseline)
    }

    /// A pipeline with the date's known dependencies, having learned from `baseline`.
    fn pipeline(
        &self,
        options: &EvalOptions,
        baseline: &mut [Event],
        replay: &[Event],
    ) -> Pipeline {
        let mut pipeline = fresh_pipeline(&options.pipeline);
        for (caller, callee) in &self.dependencies {
            for environment in environments(replay) {
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
        pipeline.learn(baseline);
        pipeline
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

/// The logs and traces of these minute files of `date` (none for metrics-only data).
fn read_minutes<'a>(
    dataset: &Dataset,
    date: &str,
    minutes: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    if !dataset.has_logs_and_traces(date) {
        return Ok(events);
    }
    for minute in minutes {
        for kind in [Kind::Log, Kind::Trace] {
            if let Some(path) = dataset.minute_file(date, kind, minute) {
                events.extend(read_minute(&path, kind)?);
            }
        }
    }
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

/// First and last event time as epoch seconds `[lo, hi + 1)`.
fn span_s(events: &[Event]) -> Option<(i64, i64)> {
    let lo = events.iter().map(|e| e.time).min()?;
    let hi = events.iter().map(|e| e.time).max()?;
    Some((
        lo.div_euclid(NANOS_PER_SEC),
        hi.div_euclid(NANOS_PER_SEC) + 1,
    ))
}

/// One case on its own pipeline; `data` holds the case's date.
fn eval_case(
    dataset: &Dataset,
    data: &DateData,
    case: &Case,
    options: &EvalOptions,
) -> Result<CaseResult> {
    let started = Instant::now();
    let inject = case.inject_unix_s;

    // The replay: the case's minute files, or for metrics-only data a fixed window.
    let mut replay = read_minutes(dataset, &case.date, &case.minute_files)?;
    let (replay_from, replay_to) =
        span_s(&replay).unwrap_or((inject - METRICS_ONLY_LEAD_S, inject + FAULT_WINDOW_S));
    // A per-minute metric row stamped t summarises (t - 60 s, t]: a row stamped just after the
    // span describes the span's last minute, so rows up to half a minute after it belong to it.
    let replay_to = replay_to + METRIC_ROW_SLACK_S;
    replay.extend(metric_events(&data.metrics, replay_from, replay_to)?);
    replay.sort_by_key(|e| e.time);

    let mut baseline = data.baseline(inject - METRIC_HISTORY_S, replay_from, replay_to)?;
    let mut pipeline = data.pipeline(options, &mut baseline, &replay);
    for event in &mut replay {
        pipeline.push(event);
    }
    pipeline.finish();

    let stats = pipeline.stats();
    let facts = RunFacts {
        events: stats.events.values().sum(),
        anomalies: stats.anomalies,
        seconds: started.elapsed().as_secs_f64(),
        anomaly_log: if options.explain {
            pipeline.recorded_anomalies().to_vec()
        } else {
            Vec::new()
        },
    };
    // Only now is the label looked at (a review sees the incident, never the label).
    Ok(score_reviewed_case(
        &label_of(case),
        pipeline.incidents(),
        facts,
        options.review.as_ref(),
        pipeline.recorded_anomalies(),
        &replay,
    ))
}

/// What one date's stream gave.
struct StreamOutcome {
    /// The date's cases, in injection order.
    results: Vec<CaseResult>,
    /// Incidents the stream opened, scored or not.
    incidents: usize,
}

/// One date's cases replayed as one stream.
fn eval_date_stream(
    dataset: &Dataset,
    data: &mut DateData,
    date: &str,
    cases: &[&Case],
    options: &EvalOptions,
) -> Result<StreamOutcome> {
    let started = Instant::now();
    data.load(dataset, date)?;
    let (Some(first), Some(last)) = (cases.first(), cases.last()) else {
        return Ok(StreamOutcome {
            results: Vec::new(),
            incidents: 0,
        });
    };
    let mut minutes: Vec<&String> = cases.iter().flat_map(|c| &c.minute_files).collect();
    minutes.sort();
    minutes.dedup();
    let mut stream = read_minutes(dataset, date, minutes)?;
    let (from, to) = span_s(&stream).unwrap_or((
        first.inject_unix_s - METRICS_ONLY_LEAD_S,
        last.inject_unix_s + FAULT_WINDOW_S,
    ));
    let to = to + METRIC_ROW_SLACK_S;
    // Metric rows run through the gaps between the cases' minute files: the stream is the day.
    stream.extend(metric_events(&data.metrics, from, to)?);
    stream.sort_by_key(|e| e.time);

    let mut baseline = data.baseline(first.inject_unix_s - METRIC_HISTORY_S, from, to)?;
    let mut pipeline = data.pipeline(options, &mut baseline, &stream);
    drop(baseline);
    for event in &mut stream {
        pipeline.push(event);
    }
    pipeline.finish();

    let stats = pipeline.stats();
    let events: u64 = stats.events.values().sum();
    let seconds = started.elapsed().as_secs_f64();
    let results = cases
        .iter()
        .map(|case| {
            let facts = RunFacts {
                events,
                anomalies: stats.anomalies,
                seconds,
                anomaly_log: explained_anomalies(&pipeline, case.inject_unix_s),
            };
            score_case(&label_of(case), pipeline.incidents(), facts)
        })
        .collect();
    Ok(StreamOutcome {
        results,
        incidents: pipeline.incidents().len(),
    })
}

/// The anomalies of a long stream that matter to one case: those inside its scoring incident's
/// span or its fault window (empty unless `--explain` recorded them).
fn explained_anomalies(pipeline: &Pipeline, fault_start_unix_s: i64) -> Vec<culprit_core::Anomaly> {
    let (mut from, mut to) = fault_window(fault_start_unix_s);
    if let Some(incident) = scoring_incident(pipeline.incidents(), fault_start_unix_s) {
        from = from.min(incident.started_at);
        to = to.max(incident.updated_at);
    }
    pipeline
        .recorded_anomalies()
        .iter()
        .filter(|a| a.time >= from && a.time <= to)
        .cloned()
        .collect()
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

    #[test]
    fn reference_metrics_never_overlap_history_or_replay() {
        assert_eq!(
            subtract((0, 100), &[(20, 40), (40, 50)]),
            vec![(0, 20), (50, 100)]
        );
        assert_eq!(subtract((0, 100), &[(200, 300)]), vec![(0, 100)]);
        assert!(subtract((10, 20), &[(0, 100)]).is_empty());
    }
}
