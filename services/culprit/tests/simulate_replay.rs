//! End to end through the real binary: `culprit simulate` writes a labelled incident as OTLP JSON
//! files, `culprit replay` analyses them, and the alert must name the injected root cause first.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SCENARIOS: [&str; 7] = [
    "deploy-cpu-spike",
    "config-timeout",
    "memory-leak",
    "db-pool-exhaustion",
    "new-exception",
    "dependency-latency",
    "batch-release",
];

/// Runs culprit and returns what it wrote on stderr (the summary of a replay).
fn culprit(args: &[&str]) -> String {
    String::from_utf8_lossy(&common::culprit(args).stderr).into_owned()
}

/// The latest revision of the incident that covers the fault.
fn final_alert(alerts: &Path, fault_start_s: i64) -> Value {
    let text = std::fs::read_to_string(alerts).expect("alerts.jsonl written");
    let alerts: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let fault_ns = fault_start_s * 1_000_000_000;
    alerts
        .into_iter()
        .filter(|a| a["updated_at"].as_i64().unwrap_or(0) >= fault_ns)
        .max_by_key(|a| (a["started_at"].as_i64().map(|t| -t), a["revision"].as_u64()))
        .expect("an incident covers the fault")
}

/// Simulates `scenario` into `input` and returns its label.
fn simulate(scenario: &str, input: &Path) -> Value {
    culprit(&[
        "simulate",
        "--scenario",
        scenario,
        "--out",
        input.to_str().unwrap(),
    ]);
    let label = std::fs::read_to_string(input.join("label.json")).expect("label.json written");
    serde_json::from_str(&label).expect("the label is JSON")
}

/// Replays `input` into `output` after a 20-minute warm-up, with `envs` set; returns the
/// replay's summary and the final alert of the fault that `label` describes.
fn replay(input: &Path, output: &Path, label: &Value, envs: &[(&str, String)]) -> (String, Value) {
    let out = common::culprit_with(
        &[
            "replay",
            input.to_str().unwrap(),
            "--warmup",
            "1200",
            "--out",
            output.to_str().unwrap(),
        ],
        envs,
    );
    let alert = final_alert(
        &output.join("alerts.jsonl"),
        label["fault_start_unix_s"].as_i64().unwrap(),
    );
    (String::from_utf8_lossy(&out.stderr).into_owned(), alert)
}

#[test]
fn replaying_each_simulated_scenario_names_its_injected_root_cause_first() {
    let tmp = std::env::temp_dir().join(format!("culprit-e2e-{}", std::process::id()));
    for scenario in SCENARIOS {
        let input = tmp.join(scenario).join("in");
        let output = tmp.join(scenario).join("out");
        let label = simulate(scenario, &input);
        let (summary, alert) = replay(&input, &output, &label, &[]);
        let first = alert["root_causes"][0]["service"]
            .as_str()
            .unwrap_or("none");
        assert_eq!(
            first,
            label["root_cause_service"].as_str().unwrap(),
            "{scenario}:\n{summary}"
        );
        assert_eq!(alert["schema_version"], 1);
        assert!(alert["root_causes"][0]["chain"]
            .as_array()
            .is_some_and(|c| !c.is_empty()));
        let id = alert["incident_id"].as_str().unwrap();
        assert!(
            output.join(format!("{id}.html")).is_file()
                && output.join(format!("{id}.dot")).is_file()
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn in_a_release_batch_the_defective_deploy_ranks_first_and_the_harmless_ones_do_not() {
    let tmp = std::env::temp_dir().join(format!("culprit-batch-{}", std::process::id()));
    let (input, output) = (tmp.join("in"), tmp.join("out"));
    let label = simulate("batch-release", &input);
    let (_, alert) = replay(&input, &output, &label, &[]);
    let causes = alert["root_causes"].as_array().expect("root causes");
    let cause = |service: &str| causes.iter().find(|c| c["service"] == service);
    let first = causes[0]["service"].as_str().unwrap_or("none");
    assert_eq!(first, "checkout", "{causes:#?}");
    let why = causes[0]["explanation"].as_str().unwrap_or("");
    assert!(
        why.contains("deploy checkout v1.9.0") && why.contains("own behaviour changed after it"),
        "{why}"
    );
    // The harmless releases of the same batch are not blamed for what they did not change.
    for harmless in ["frontend", "cart"] {
        if let Some(c) = cause(harmless) {
            assert!(c["rank"].as_u64() > Some(1), "{harmless} ranks first");
            let why = c["explanation"].as_str().unwrap_or("");
            assert!(
                !why.contains("own behaviour changed after it"),
                "{harmless}: {why}"
            );
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn replaying_a_malformed_file_fails_with_the_file_and_line() {
    let tmp = std::env::temp_dir().join(format!("culprit-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bad = tmp.join("traces.otlp.jsonl");
    std::fs::write(
        &bad,
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"abc\"}]}]}]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(["replay", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("traces.otlp.jsonl") && err.contains("traceId"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn simulate_start_places_the_run_on_the_given_timeline_and_rejects_a_malformed_time() {
    let tmp = std::env::temp_dir().join(format!("culprit-sim-start-{}", std::process::id()));
    let dir = tmp.join("later");
    let out = common::culprit(&[
        "simulate",
        "--scenario",
        "new-exception",
        "--start",
        "2026-03-01T10:00:00Z",
        "--normal-minutes",
        "2",
        "--fault-minutes",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let label: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("label.json")).unwrap()).unwrap();
    // 2026-03-01T10:00:00Z plus the two healthy minutes.
    assert_eq!(
        label["fault_start_unix_s"].as_i64(),
        Some(1_772_359_200 + 120)
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args([
            "simulate",
            "--scenario",
            "new-exception",
            "--start",
            "yesterday",
        ])
        .args(["--out", tmp.join("bad").to_str().unwrap()])
        .output()
        .expect("culprit runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn replay_with_the_embedded_store_keeps_the_knn_reference_and_every_events_point_with_its_verdict()
{
    use culprit_store::{EmbeddedStore, Filter, SyncStore};
    let tmp = std::env::temp_dir().join(format!("culprit-store-replay-{}", std::process::id()));
    let input = tmp.join("in");
    let store_path = tmp.join("store.bin");
    let label = simulate("new-exception", &input);
    let envs = [
        ("CULPRIT__STORE__BACKEND", "embedded".to_string()),
        ("CULPRIT__STORE__PATH", store_path.display().to_string()),
        ("CULPRIT__STORE__RETENTION_HOURS", "0".to_string()),
    ];
    let mut first_events = None;
    for run in ["first", "second"] {
        let (_, alert) = replay(&input, &tmp.join(run), &label, &envs);
        assert_eq!(
            alert["root_causes"][0]["service"], label["root_cause_service"],
            "{run} run with the store"
        );
        let store = SyncStore::new(std::sync::Arc::new(
            EmbeddedStore::open(&store_path).expect("the replay wrote its store"),
        ));
        let reference = store.count(&Filter::all().reference_only()).unwrap();
        let events = store
            .count(&Filter {
                reference: Some(false),
                ..Filter::all()
            })
            .unwrap();
        let normal = store
            .count(&Filter {
                reference: Some(false),
                ..Filter::all().normal_only()
            })
            .unwrap();
        assert!(reference > 0, "{run}: no reference points were stored");
        assert!(
            normal < events,
            "{run}: every one of {events} event points is marked normal, though the fault's windows were judged anomalous"
        );
        // The second run re-reads the same events: their points replace the first run's.
        match first_events {
            None => first_events = Some(events),
            Some(first) => assert_eq!(events, first, "a replayed event added a second point"),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn replay_with_a_feedback_history_names_the_similar_past_incident_and_its_confirmed_cause() {
    let tmp = std::env::temp_dir().join(format!("culprit-history-replay-{}", std::process::id()));
    let input = tmp.join("in");
    let label = simulate("new-exception", &input);
    let (_, alert) = replay(&input, &tmp.join("plain"), &label, &[]);
    assert!(alert.get("similar_incidents").is_none(), "no history, none");

    // An operator confirmed the cause of an earlier incident with the same services and signals.
    let cause = alert["root_causes"][0]["service"]
        .as_str()
        .unwrap()
        .to_string();
    let services: Vec<&Value> = alert["affected_services"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    let signals: Vec<&Value> = alert["root_causes"][0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["signal"])
        .collect();
    let past = serde_json::json!({
        "kind": "feedback",
        "incident_id": "last-week",
        "environment": alert["environment"],
        "started_at": 1,
        "summary": "the same errors, last week",
        "cause": cause,
        "author": "ana",
        "at": 2,
        "services": services,
        "evidence_signals": signals,
    });
    let history = tmp.join("history.jsonl");
    std::fs::write(&history, format!("{past}\n")).unwrap();
    let envs = [("CULPRIT__API__HISTORY_PATH", history.display().to_string())];
    let (_, alert) = replay(&input, &tmp.join("with-history"), &label, &envs);
    let similar = alert["similar_incidents"]
        .as_array()
        .expect("similar incidents");
    assert_eq!(similar.len(), 1, "{similar:?}");
    assert_eq!(similar[0]["incident_id"], "last-week");
    assert_eq!(similar[0]["confirmed_cause"], cause.as_str());
    let _ = std::fs::remove_dir_all(&tmp);
}
