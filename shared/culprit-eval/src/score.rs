//! The scoring contract every dataset layout shares: which incident a case is scored by, where
//! its root cause ranks, and the figures over a set of cases.
//!
//! - A case is scored by the incident that *started first* among those whose span
//!   `[started_at, updated_at]` overlaps the fault window `[fault_start, fault_start + 180 s]`.
//!   Both intervals are closed: an incident whose last anomaly came exactly at the fault start,
//!   or whose first came exactly 180 s after it, still overlaps. No such incident is a miss.
//! - The rank is the 1-based position of the labelled root-cause service in that incident's
//!   final ranking; a service outside it has no rank.
//! - AC@k is the share of cases whose root cause ranks at k or better (misses count as wrong),
//!   Avg@5 the mean of AC@1..AC@5.
//!
//! [`score_case`] is the only place the labelled root cause is read, and it takes the incidents
//! after the replay has finished, so no ranking can depend on it.

use culprit_core::{Anomaly, Event, LlmReview, RcaAlert, RootCause, NANOS_PER_SEC};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Seconds after the fault start an incident must overlap to count.
pub const FAULT_WINDOW_S: i64 = 180;

/// What one case is scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseLabel {
    pub case_id: String,
    /// UTC date of the fault (`YYYY-MM-DD`), the unit of per-date figures.
    pub date: String,
    pub fault_type: String,
    pub root_cause_service: String,
    pub fault_start_unix_s: i64,
}

/// Facts about the replay that produced a case's incidents; reported, never scored.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    pub events: u64,
    pub anomalies: u64,
    pub seconds: f64,
    /// The anomalies to show with `--explain` (empty unless asked for).
    pub anomaly_log: Vec<Anomaly>,
}

/// How one case went.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case_id: String,
    pub date: String,
    pub fault_type: String,
    pub root_cause: String,
    /// The fault start (the injection, in the Nezha layout), epoch seconds.
    pub inject_unix_s: i64,
    /// Candidate services, best first (empty when nothing was detected).
    pub ranking: Vec<String>,
    /// 1-based position of the true root cause in `ranking`.
    pub rank: Option<usize>,
    pub detected: bool,
    /// Event time from the fault start to the incident's first anomaly (negative when the
    /// incident began before it, from early symptoms or noise).
    pub detect_delay_s: Option<f64>,
    pub incident_id: Option<String>,
    pub confidence: Option<f64>,
    pub events: u64,
    pub anomalies: u64,
    pub seconds: f64,
    /// Anomalies of the replay, when `--explain` asked for them.
    #[serde(skip)]
    pub anomaly_log: Vec<Anomaly>,
    /// The ranked candidates of the chosen incident, with their evidence.
    #[serde(skip)]
    pub causes: Vec<RootCause>,
    /// The true root cause's rank before a review ([`crate::EvalOptions::review`]) re-ordered
    /// the candidates (equal to `rank` without a review).
    pub deterministic_rank: Option<usize>,
    /// The review of the scoring incident, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_review: Option<LlmReview>,
}

/// What a review hook sees of a case: the scoring incident's final alert, every anomaly of the
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

/// The fault window of a case, in event-time nanoseconds (both ends included).
pub fn fault_window(fault_start_unix_s: i64) -> (i64, i64) {
    (
        fault_start_unix_s * NANOS_PER_SEC,
        (fault_start_unix_s + FAULT_WINDOW_S) * NANOS_PER_SEC,
    )
}

/// The incident a case with this fault start is scored by (see the module doc).
pub fn scoring_incident(incidents: &[RcaAlert], fault_start_unix_s: i64) -> Option<&RcaAlert> {
    scoring_index(incidents, fault_start_unix_s).map(|i| &incidents[i])
}

fn scoring_index(incidents: &[RcaAlert], fault_start_unix_s: i64) -> Option<usize> {
    let (from, to) = fault_window(fault_start_unix_s);
    incidents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.started_at <= to && a.updated_at >= from)
        // min_by_key keeps the first of equals: the incident opened first.
        .min_by_key(|(_, a)| a.started_at)
        .map(|(i, _)| i)
}

/// [`score_case`] after `review` (when there is one) re-ranked the scoring incident, shown the
/// replay's `anomalies` and `events`; `deterministic_rank` keeps the rank the pipeline gave.
pub fn score_reviewed_case(
    label: &CaseLabel,
    incidents: &[RcaAlert],
    run: RunFacts,
    review: Option<&ReviewHook>,
    anomalies: &[Anomaly],
    events: &[Event],
) -> CaseResult {
    let (Some(review), Some(i)) = (review, scoring_index(incidents, label.fault_start_unix_s))
    else {
        return score_case(label, incidents, run);
    };
    let before = rank_of(
        &incidents[i]
            .root_causes
            .iter()
            .map(|c| c.service.clone())
            .collect::<Vec<_>>(),
        &label.root_cause_service,
    );
    let mut reviewed = incidents.to_vec();
    reviewed[i] = (review.0)(ReviewInput {
        alert: &incidents[i],
        anomalies,
        events,
    });
    let mut result = score_case(label, &reviewed, run);
    result.deterministic_rank = before;
    result
}

/// 1-based position of `service` in `ranking`.
pub fn rank_of(ranking: &[String], service: &str) -> Option<usize> {
    ranking.iter().position(|s| s == service).map(|p| p + 1)
}

/// Scores one case on the final incidents of the replay that covered it.
pub fn score_case(label: &CaseLabel, incidents: &[RcaAlert], run: RunFacts) -> CaseResult {
    let incident = scoring_incident(incidents, label.fault_start_unix_s);
    let ranking: Vec<String> = incident
        .map(|a| a.root_causes.iter().map(|c| c.service.clone()).collect())
        .unwrap_or_default();
    let rank = rank_of(&ranking, &label.root_cause_service);
    CaseResult {
        case_id: label.case_id.clone(),
        date: label.date.clone(),
        fault_type: label.fault_type.clone(),
        root_cause: label.root_cause_service.clone(),
        inject_unix_s: label.fault_start_unix_s,
        detected: incident.is_some(),
        detect_delay_s: incident.map(|a| {
            (a.started_at - label.fault_start_unix_s * NANOS_PER_SEC) as f64 / NANOS_PER_SEC as f64
        }),
        incident_id: incident.map(|a| a.incident_id.clone()),
        confidence: incident.map(|a| a.confidence),
        ranking,
        rank,
        events: run.events,
        anomalies: run.anomalies,
        seconds: run.seconds,
        anomaly_log: run.anomaly_log,
        causes: incident.map(|a| a.root_causes.clone()).unwrap_or_default(),
        deterministic_rank: rank,
        llm_review: incident.and_then(|a| a.llm_review.clone()),
    }
}

/// The UTC date (`YYYY-MM-DD`) of an epoch second.
pub fn utc_date(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "unknown".to_string())
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

/// The figures of one date: overall and per fault type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DateScores {
    #[serde(flatten)]
    pub scores: Scores,
    pub by_fault_type: BTreeMap<String, Scores>,
}

/// The line `culprit eval --json` ends with.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `per-case` (each case replayed on its own) or `continuous` (one stream per date).
    pub mode: &'static str,
    #[serde(flatten)]
    pub scores: Scores,
    pub by_fault_type: BTreeMap<String, Scores>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_date: BTreeMap<String, DateScores>,
    pub median_detect_delay_s: Option<f64>,
    /// Incidents opened when each date's fault-free reference window is replayed after learning
    /// from itself (expected: 0); None for datasets without a reference window.
    pub reference_incidents: Option<usize>,
    /// Incidents the streams of the continuous mode opened in all, scored or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_incidents: Option<usize>,
    pub seconds: f64,
}

impl Summary {
    /// The summary of `results` in the per-case mode; cases with an empty date are left out of
    /// `by_date`.
    pub fn of(results: &[CaseResult], seconds: f64) -> Summary {
        let mut by_date: BTreeMap<String, Vec<&CaseResult>> = BTreeMap::new();
        for r in results.iter().filter(|r| !r.date.is_empty()) {
            by_date.entry(r.date.clone()).or_default().push(r);
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
            mode: "per-case",
            scores: Scores::of(results),
            by_fault_type: by_fault_type(results.iter()),
            by_date: by_date
                .into_iter()
                .map(|(date, rs)| {
                    let scores = DateScores {
                        scores: Scores::of(rs.iter().copied()),
                        by_fault_type: by_fault_type(rs.iter().copied()),
                    };
                    (date, scores)
                })
                .collect(),
            median_detect_delay_s: median,
            reference_incidents: None,
            stream_incidents: None,
            seconds,
        }
    }
}

fn by_fault_type<'a>(results: impl Iterator<Item = &'a CaseResult>) -> BTreeMap<String, Scores> {
    let mut by_type: BTreeMap<String, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        by_type.entry(r.fault_type.clone()).or_default().push(r);
    }
    by_type
        .into_iter()
        .map(|(k, v)| (k, Scores::of(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{CausalGraph, IncidentStatus, Severity};

    const T0: i64 = 1_700_000_000;

    fn incident(id: &str, from_ns: i64, to_ns: i64, ranking: &[&str]) -> RcaAlert {
        RcaAlert {
            schema_version: 1,
            incident_id: id.to_string(),
            revision: 1,
            status: IncidentStatus::Resolved,
            environment: "prod".into(),
            started_at: from_ns,
            updated_at: to_ns,
            severity: Severity::Sev2,
            confidence: 0.5,
            summary: String::new(),
            root_causes: ranking
                .iter()
                .enumerate()
                .map(|(i, s)| RootCause {
                    rank: i + 1,
                    service: s.to_string(),
                    score: 0.0,
                    evidence_score: 0.0,
                    pagerank: 0.0,
                    evidence: vec![],
                    evidence_by_source: BTreeMap::new(),
                    chain: vec![],
                    explanation: String::new(),
                })
                .collect(),
            graph: CausalGraph::default(),
            anomaly_count: 1,
            affected_services: BTreeMap::new(),
            llm_review: None,
            similar_incidents: Vec::new(),
        }
    }

    fn s(t: i64) -> i64 {
        t * NANOS_PER_SEC
    }

    fn label(root: &str) -> CaseLabel {
        CaseLabel {
            case_id: "c".into(),
            date: utc_date(T0),
            fault_type: "cpu".into(),
            root_cause_service: root.into(),
            fault_start_unix_s: T0,
        }
    }

    fn result(date: &str, rank: Option<usize>, fault: &str, delay: Option<f64>) -> CaseResult {
        CaseResult {
            case_id: "c".into(),
            date: date.into(),
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
    fn a_review_is_scored_and_the_pipeline_rank_is_kept_beside_it() {
        let incidents = [incident("a", s(T0), s(T0 + 60), &["x", "y", "root"])];
        let label = CaseLabel {
            case_id: "c".into(),
            date: String::new(),
            fault_type: "f".into(),
            root_cause_service: "root".into(),
            fault_start_unix_s: T0,
        };
        let promote_last = ReviewHook(Arc::new(|input: ReviewInput<'_>| {
            let mut alert = input.alert.clone();
            alert.root_causes.rotate_right(1);
            alert
        }));
        let run = || RunFacts {
            events: 0,
            anomalies: 0,
            seconds: 0.0,
            anomaly_log: vec![],
        };
        let reviewed =
            score_reviewed_case(&label, &incidents, run(), Some(&promote_last), &[], &[]);
        assert_eq!(reviewed.rank, Some(1));
        assert_eq!(reviewed.deterministic_rank, Some(3));
        assert_eq!(reviewed.ranking, ["root", "x", "y"]);
        let plain = score_case(&label, &incidents, run());
        assert_eq!((plain.rank, plain.deterministic_rank), (Some(3), Some(3)));
    }

    #[test]
    fn an_incident_ending_exactly_at_the_fault_start_overlaps_the_window() {
        let incidents = [incident("a", s(T0 - 300), s(T0), &["x"])];
        assert_eq!(
            scoring_incident(&incidents, T0).map(|a| a.incident_id.as_str()),
            Some("a")
        );
        let ended_before = [incident("a", s(T0 - 300), s(T0) - 1, &["x"])];
        assert!(scoring_incident(&ended_before, T0).is_none());
    }

    #[test]
    fn an_incident_starting_exactly_180_s_after_the_fault_start_overlaps_and_one_later_does_not() {
        let at_edge = [incident("a", s(T0 + 180), s(T0 + 400), &["x"])];
        assert!(scoring_incident(&at_edge, T0).is_some());
        let later = [incident("a", s(T0 + 180) + 1, s(T0 + 400), &["x"])];
        assert!(scoring_incident(&later, T0).is_none());
    }

    #[test]
    fn of_several_overlapping_incidents_the_one_that_started_first_scores() {
        // Listed out of start order, with a non-overlapping earlier one that must be ignored.
        let incidents = [
            incident("late", s(T0 + 30), s(T0 + 200), &["b"]),
            incident("old", s(T0 - 900), s(T0 - 600), &["c"]),
            incident("early", s(T0 - 60), s(T0 + 10), &["a"]),
            incident("tie", s(T0 - 60), s(T0 + 50), &["d"]),
        ];
        let chosen = scoring_incident(&incidents, T0).map(|a| a.incident_id.as_str());
        assert_eq!(chosen, Some("early"));
    }

    #[test]
    fn the_rank_is_the_root_causes_position_in_the_scoring_incident() {
        let incidents = [
            incident("first", s(T0 - 10), s(T0 + 100), &["x", "y", "a"]),
            incident("second", s(T0 + 20), s(T0 + 100), &["a"]),
        ];
        let r = score_case(&label("a"), &incidents, RunFacts::default());
        assert_eq!(r.incident_id.as_deref(), Some("first"));
        assert_eq!(r.rank, Some(3));
        assert_eq!(r.ranking, vec!["x", "y", "a"]);
        assert!(r.detected);
        assert_eq!(r.detect_delay_s, Some(-10.0));

        let absent = score_case(&label("zz"), &incidents, RunFacts::default());
        assert!(absent.detected && absent.rank.is_none());

        let missed = score_case(&label("a"), &[], RunFacts::default());
        assert!(!missed.detected && missed.rank.is_none() && missed.ranking.is_empty());
        assert_eq!(missed.detect_delay_s, None);
    }

    #[test]
    fn scores_follow_the_ac_at_k_definitions() {
        let results = vec![
            result("2023-01-29", Some(1), "cpu", Some(10.0)),
            result("2023-01-29", Some(3), "cpu", Some(20.0)),
            result("2023-01-30", None, "return", None),
            result("2023-01-30", Some(6), "return", Some(40.0)),
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

    #[test]
    fn figures_are_split_per_date_and_per_fault_type_within_a_date() {
        let results = vec![
            result("2023-01-29", Some(1), "cpu", Some(10.0)),
            result("2023-01-29", Some(2), "return", Some(10.0)),
            result("2023-01-30", None, "cpu", None),
        ];
        let s = Summary::of(&results, 1.0);
        assert_eq!(s.by_date.len(), 2);
        let d29 = &s.by_date["2023-01-29"];
        assert_eq!(
            (d29.scores.cases, d29.scores.ac1, d29.scores.ac3),
            (2, 0.5, 1.0)
        );
        assert_eq!(d29.by_fault_type["cpu"].ac1, 1.0);
        assert_eq!(d29.by_fault_type["return"].ac1, 0.0);
        let d30 = &s.by_date["2023-01-30"];
        assert_eq!((d30.scores.cases, d30.scores.detected), (1, 0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["by_date"]["2023-01-29"]["by_fault_type"]["cpu"]["cases"],
            1
        );
        assert_eq!(json["cases"], 3);
        assert_eq!(json["mode"], "per-case");
    }

    #[test]
    fn by_date_is_omitted_when_no_case_has_a_date() {
        let s = Summary::of(&[result("", Some(1), "cpu", Some(1.0))], 1.0);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("by_date").is_none(), "{json}");
        assert!(json.get("by_fault_type").is_some());
    }

    #[test]
    fn utc_dates_change_at_midnight_utc() {
        // 2023-01-29T23:59:59Z and 2023-01-30T00:00:00Z.
        assert_eq!(utc_date(1_675_036_799), "2023-01-29");
        assert_eq!(utc_date(1_675_036_800), "2023-01-30");
    }
}
