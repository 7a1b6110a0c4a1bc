//! `eval_nezha_continuous` on the real datasets (skipped with a message when they are absent).

mod common;

use culprit_eval::{eval_nezha, eval_nezha_continuous, EvalOptions};
use culprit_pipeline::PipelineConfig;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The Nezha or labelled-case dataset `name`, when present.
fn dataset(name: &str) -> Option<PathBuf> {
    common::dataset(name, "labels/cases.csv")
}

fn options(filter: &str) -> EvalOptions {
    EvalOptions {
        pipeline: PipelineConfig::default(),
        case_filter: Some(filter.into()),
        ..EvalOptions::default()
    }
}

#[test]
fn a_stream_of_one_case_is_that_cases_own_replay() {
    // With one case, the date's stream is the case's minute files and metric rows, learned from
    // the same baseline: both modes must rank alike.
    for (name, case) in [
        ("nezha-trainticket", "tt-2023-01-29-084304"),
        ("nezha-onlineboutique-metrics", "ob-2022-08-22-043603"),
    ] {
        let Some(dir) = dataset(name) else {
            continue;
        };
        let (alone, _) = eval_nezha(&dir, &options(case), |_| {}).unwrap();
        let (streamed, summary) = eval_nezha_continuous(&dir, &options(case), |_| {}).unwrap();
        assert_eq!(summary.mode, "continuous");
        assert_eq!((alone.len(), streamed.len()), (1, 1), "{case}");
        assert_eq!(alone[0].ranking, streamed[0].ranking, "{case}");
        assert_eq!(
            alone[0].detect_delay_s, streamed[0].detect_delay_s,
            "{case}"
        );
    }
}

#[test]
fn every_case_of_a_day_is_scored_on_the_one_stream_of_its_date() {
    let Some(dir) = dataset("nezha-onlineboutique-metrics") else {
        return;
    };
    let options = EvalOptions {
        pipeline: PipelineConfig::default(),
        case_filter: None,
        ..EvalOptions::default()
    };
    let mut reported = 0;
    let (results, summary) = eval_nezha_continuous(&dir, &options, |_| reported += 1).unwrap();
    assert_eq!((reported, summary.scores.cases), (24, 24));
    assert_eq!(summary.by_date.len(), 1);
    let opened = summary
        .stream_incidents
        .expect("the stream's incident count");
    // Cases that share an incident share its ranking, so no more incidents scored than opened.
    let scored: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r.incident_id.as_deref())
        .collect();
    assert!(
        !scored.is_empty() && scored.len() <= opened,
        "{scored:?} of {opened}"
    );
    for id in &scored {
        let rankings: BTreeSet<&Vec<String>> = results
            .iter()
            .filter(|r| r.incident_id.as_deref() == Some(*id))
            .map(|r| &r.ranking)
            .collect();
        assert_eq!(
            rankings.len(),
            1,
            "incident {id} scored with different rankings"
        );
    }
}
