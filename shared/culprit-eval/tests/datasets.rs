//! The evaluation on the real datasets (skipped with a message when they are absent).

mod common;

use culprit_eval::{eval_nezha, reference_self_check, EvalOptions};
use culprit_pipeline::PipelineConfig;
use std::path::PathBuf;

/// The Nezha or labelled-case dataset `name`, when present.
fn dataset(name: &str) -> Option<PathBuf> {
    common::dataset(name, "labels/cases.csv")
}

#[test]
fn the_reference_window_replayed_after_its_own_baseline_opens_no_incident() {
    let Some(dir) = dataset("nezha-trainticket") else {
        return;
    };
    let checked = reference_self_check(&dir, &PipelineConfig::default()).unwrap();
    assert!(!checked.is_empty(), "the dataset has a reference window");
    for (date, incidents) in checked {
        assert_eq!(
            incidents, 0,
            "{date}: the fault-free reference window opened incidents"
        );
    }
}

#[test]
fn a_subset_of_trainticket_cases_is_detected_and_ranked() {
    let Some(dir) = dataset("nezha-trainticket") else {
        return;
    };
    // One case per fault family: an exception (a log line the route service stops writing), a
    // return-value fault (a new error line in contacts), CPU contention (verification-code), and
    // from the second day a network delay (calls into ts-basic-service wait; its own processing
    // does not change).
    let options = EvalOptions {
        pipeline: PipelineConfig::default(),
        case_filter: Some("110405,084304,142331,2023-01-30-120612".into()),
        explain: false,
        ..EvalOptions::default()
    };
    let (results, summary) = eval_nezha(&dir, &options, |_| {}).unwrap();
    assert_eq!(summary.scores.cases, 4);
    assert_eq!(summary.scores.detected, 4, "{results:#?}");
    for r in &results {
        assert!(
            r.rank.is_some_and(|p| p <= 3),
            "{}: {} ranked {:?} in {:?}",
            r.case_id,
            r.root_cause,
            r.rank,
            r.ranking
        );
        assert!(r.ranking.len() >= 3, "the top candidates are reported");
    }
    assert!(summary.median_detect_delay_s.is_some());
}

#[test]
fn a_metrics_only_dataset_is_evaluated_on_metrics_alone() {
    let Some(dir) = dataset("nezha-onlineboutique-metrics") else {
        return;
    };
    let options = EvalOptions {
        pipeline: PipelineConfig::default(),
        case_filter: Some("043603,051809,071755".into()),
        explain: false,
        ..EvalOptions::default()
    };
    let (results, summary) = eval_nezha(&dir, &options, |_| {}).unwrap();
    assert_eq!(summary.scores.cases, 3);
    for r in &results {
        assert_eq!(
            r.rank,
            Some(1),
            "{}: {} ranked in {:?}",
            r.case_id,
            r.root_cause,
            r.ranking
        );
    }
}
