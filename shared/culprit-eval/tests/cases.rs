//! `eval_cases` on the labelled case layout of a real dataset (skipped with a message when the
//! datasets are absent).

mod common;

use culprit_eval::{eval_cases, CaseSet, CasesOptions, EvalOptions, FAULT_WINDOW_S};
use culprit_pipeline::PipelineConfig;
use std::path::PathBuf;

/// The Nezha or labelled-case dataset `name`, when present.
fn dataset(name: &str) -> Option<PathBuf> {
    common::dataset(name, "cases.csv")
}

#[test]
fn sockshop_cases_load_with_their_folders_and_labels() {
    let Some(dir) = dataset("sockshop-metrics") else {
        return;
    };
    let set = CaseSet::open(&dir).unwrap();
    assert_eq!(set.cases().len(), 92);
    for fault in ["cpu-stress", "memory-stress", "network-delay"] {
        assert!(set.cases().iter().any(|c| c.fault_type == fault), "{fault}");
    }
    assert!(set.cases().iter().all(|c| c.dir.is_dir()
        && c.fault_end_unix_s > Some(c.fault_start_unix_s)
        && c.system == "sockshop"));
}

#[test]
fn a_sockshop_subset_is_scored_by_the_contract_and_stress_on_the_root_cause_is_detected() {
    let Some(dir) = dataset("sockshop-metrics") else {
        return;
    };
    // One case per fault type: CPU stress on orders, memory stress on rabbitmq, network delay on
    // payment. The dataset README measures the stressed resource of these two stress cases at
    // dozens to thousands of robust deviations above the pod's history: every metric gate passes.
    let options = CasesOptions {
        eval: EvalOptions {
            pipeline: PipelineConfig::default(),
            case_filter: Some("20230818-035454,20230816-064410,20230816-071417".into()),
            explain: true,
            review: None,
        },
        ..CasesOptions::default()
    };
    let set = CaseSet::open(&dir).unwrap();
    let mut seen = 0;
    let (results, summary) = eval_cases(&set, &options, |_| seen += 1).unwrap();
    assert_eq!((seen, summary.scores.cases), (3, 3));
    assert_eq!(summary.by_fault_type.len(), 3);
    assert_eq!(
        summary
            .by_date
            .values()
            .map(|d| d.scores.cases)
            .sum::<usize>(),
        3
    );

    for r in &results {
        // The contract: the rank is the root cause's place in the scoring incident's ranking.
        match r.rank {
            Some(p) => assert_eq!(r.ranking[p - 1], r.root_cause),
            None => assert!(!r.ranking.contains(&r.root_cause)),
        }
        assert_eq!(r.detected, r.incident_id.is_some());
        assert_eq!(r.detected, r.detect_delay_s.is_some());
        // Events before the guard (120 s) are only learned, so no anomaly comes from before the
        // window that holds the first pushed event (detection windows are at most a minute).
        let guard_ns = (r.inject_unix_s - 120 - 60) * 1_000_000_000;
        assert!(
            r.anomaly_log.iter().all(|a| a.time >= guard_ns),
            "{}",
            r.case_id
        );

        let resource = match r.fault_type.as_str() {
            "cpu-stress" => "metric:container.cpu",
            "memory-stress" => "metric:container.memory",
            _ => continue,
        };
        assert!(r.detected, "{}: stress not detected", r.case_id);
        let window = (
            r.inject_unix_s * 1_000_000_000,
            (r.inject_unix_s + FAULT_WINDOW_S) * 1_000_000_000,
        );
        assert!(
            r.anomaly_log.iter().any(|a| a.service == r.root_cause
                && a.signal.as_str().starts_with(resource)
                && (window.0..=window.1).contains(&a.time)),
            "{}: no {resource}* anomaly on {} in the fault window",
            r.case_id,
            r.root_cause
        );
    }
    let network = results
        .iter()
        .find(|r| r.fault_type == "network-delay")
        .unwrap();
    assert_eq!(network.root_cause, "payment");
}
