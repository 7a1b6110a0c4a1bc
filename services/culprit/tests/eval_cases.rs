//! Through the real binary: `culprit simulate --all` writes the demo scenarios as a labelled-case
//! dataset, and `culprit eval cases` scores it (and one of its case folders on its own).

mod common;

use common::culprit;
use serde_json::Value;
use std::process::{Command, Output};

/// `--json` keeps stdout to exactly one line: the summary.
fn json_summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds only the summary:\n{stdout}");
    serde_json::from_str(lines[0]).expect("the summary is JSON")
}

#[test]
fn every_simulated_scenario_written_as_a_dataset_is_scored_with_its_cause_first() {
    let tmp = std::env::temp_dir().join(format!("culprit-eval-cases-{}", std::process::id()));
    let dataset = tmp.join("sim");
    culprit(&["simulate", "--all", "--out", dataset.to_str().unwrap()]);
    let csv = std::fs::read_to_string(dataset.join("cases.csv")).expect("cases.csv written");
    // One case per scenario; each scenario is its own fault type.
    let n = culprit_sim::Scenario::ALL.len();
    assert_eq!(csv.lines().count(), 1 + n);

    let out = culprit(&["eval", "cases", dataset.to_str().unwrap(), "--json"]);
    let summary = json_summary(&out);
    assert_eq!(summary["mode"], "per-case");
    assert_eq!(summary["cases"], n);
    assert_eq!(summary["detected"], n);
    // The demo names every injected root cause first; the same data scored by the same contract
    // must agree.
    assert_eq!(summary["ac1"], 1.0, "{summary}");
    assert_eq!(
        summary["by_fault_type"].as_object().map(|m| m.len()),
        Some(n)
    );
    assert_eq!(summary["by_date"].as_object().map(|m| m.len()), Some(1));
    assert!(summary["median_detect_delay_s"].is_number());
    // The per-case table went to stderr, one row per scenario.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for scenario in [
        "deploy-cpu-spike",
        "config-timeout",
        "dependency-latency",
        "batch-release",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(scenario)),
            "{scenario} row missing:\n{stderr}"
        );
    }

    // A case folder with its label.json is a one-case dataset.
    let one = dataset.join("new-exception");
    let summary = json_summary(&culprit(&[
        "eval",
        "cases",
        one.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        (summary["cases"].as_u64(), summary["ac1"].as_f64()),
        (Some(1), Some(1.0))
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn a_folder_that_is_no_dataset_is_refused_with_a_reason() {
    let tmp = std::env::temp_dir().join(format!("culprit-eval-empty-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(["eval", "cases", tmp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cases.csv") && err.contains("label.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
