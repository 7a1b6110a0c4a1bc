//! Shape of a run: determinism, topology, resources, logs, change events and written files.

mod common;

use common::*;
use culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use culprit_sim::{
    read_jsonl, simulate, write_dataset, write_dir, Label, Scenario, SimConfig, DEPENDENCIES,
    SERVICES,
};
use std::collections::{BTreeSet, HashMap};

fn small(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        normal_minutes: 3,
        fault_minutes: 2,
        requests_per_second: 6,
        ..SimConfig::default()
    }
}

#[test]
fn the_same_seed_gives_an_identical_run_and_another_seed_a_different_one() {
    for s in [Scenario::DeployCpuSpike, Scenario::ConfigTimeout] {
        let a = simulate(s, &small(1));
        let b = simulate(s, &small(1));
        let c = simulate(s, &small(2));
        assert!(a == b, "{s}: same seed, different runs");
        assert!(a.traces != c.traces, "{s}: traces ignore the seed");
        assert!(a.logs != c.logs && a.metrics != c.metrics && a.changes != c.changes);
    }
}

#[test]
fn every_label_names_a_topology_service_and_the_configured_fault_window() {
    let config = small(3);
    for s in Scenario::ALL {
        let run = simulate(s, &config);
        assert_eq!(run.label.scenario, s.to_string());
        assert!(
            SERVICES.contains(&run.label.root_cause_service.as_str()),
            "{:?}",
            run.label
        );
        assert_eq!(run.label.root_cause_service, s.root_cause_service());
        assert_eq!(run.label.fault_start_unix_s, config.start_unix_s + 3 * 60);
        assert_eq!(run.label.fault_end_unix_s, config.start_unix_s + 5 * 60);
        assert!(!run.label.description.is_empty());
    }
}

#[test]
fn parent_child_spans_cross_services_exactly_along_the_topology() {
    let run = run(Scenario::DeployCpuSpike);
    let all = spans(&run);
    let by_id: HashMap<(&[u8], &[u8]), (&str, &_)> = all
        .iter()
        .map(|(svc, sp)| {
            (
                (sp.trace_id.as_slice(), sp.span_id.as_slice()),
                (svc.as_str(), *sp),
            )
        })
        .collect();
    let mut edges = BTreeSet::new();
    let mut client_has_server_child = HashMap::new();
    for (svc, sp) in &all {
        assert_eq!(sp.trace_id.len(), 16);
        assert_eq!(sp.span_id.len(), 8);
        if sp.parent_span_id.is_empty() {
            assert!(
                svc == "frontend" && is_server(sp),
                "only frontend SERVER spans are roots"
            );
            continue;
        }
        let (parent_svc, parent) = by_id[&(sp.trace_id.as_slice(), sp.parent_span_id.as_slice())];
        assert!(
            parent.start_time_unix_nano <= sp.start_time_unix_nano,
            "child starts before parent"
        );
        if is_server(sp) {
            assert!(
                !is_server(parent),
                "a SERVER span's parent is the caller's CLIENT span"
            );
            assert_ne!(
                parent_svc, svc,
                "CLIENT and SERVER halves of a call are in different services"
            );
            edges.insert((parent_svc.to_string(), svc.clone()));
            client_has_server_child.insert(parent.span_id.as_slice(), true);
        } else {
            assert_eq!(
                parent_svc, svc,
                "a CLIENT span belongs to its caller's SERVER span"
            );
            client_has_server_child
                .entry(sp.span_id.as_slice())
                .or_insert(false);
        }
    }
    let expected: BTreeSet<(String, String)> = DEPENDENCIES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(edges, expected);
    assert!(
        client_has_server_child.values().all(|has| *has),
        "a CLIENT span without its SERVER side"
    );
}

#[test]
fn a_caller_span_contains_the_call_it_waits_for() {
    let run = run(Scenario::DependencyLatency);
    let all = spans(&run);
    let by_id: HashMap<&[u8], &_> = all
        .iter()
        .map(|(_, sp)| (sp.span_id.as_slice(), *sp))
        .collect();
    for (_, sp) in &all {
        if let Some(parent) = by_id.get(sp.parent_span_id.as_slice()) {
            if !is_server(sp) {
                // A client call (or its timeout) ends inside the handler that made it.
                assert!(
                    sp.end_time_unix_nano <= parent.end_time_unix_nano,
                    "{} outlives its parent",
                    sp.name
                );
            }
        }
    }
}

#[test]
fn resources_carry_service_environment_namespace_and_pod() {
    let run = simulate(Scenario::MemoryLeak, &small(4));
    let mut pods: HashMap<String, BTreeSet<String>> = HashMap::new();
    let resources = run
        .traces
        .iter()
        .flat_map(|r| r.resource_spans.iter().map(|x| &x.resource))
        .chain(
            run.logs
                .iter()
                .flat_map(|r| r.resource_logs.iter().map(|x| &x.resource)),
        )
        .chain(
            run.metrics
                .iter()
                .flat_map(|r| r.resource_metrics.iter().map(|x| &x.resource)),
        );
    for r in resources {
        let attrs = &r.as_ref().expect("resource").attributes;
        let svc = attr(attrs, "service.name").expect("service.name");
        assert!(SERVICES.contains(&svc));
        assert_eq!(attr(attrs, "deployment.environment"), Some("prod"));
        assert_eq!(attr(attrs, "k8s.namespace.name"), Some("shop"));
        let pod = attr(attrs, "k8s.pod.name").expect("k8s.pod.name");
        let rest = pod
            .strip_prefix(svc)
            .and_then(|r| r.strip_prefix('-'))
            .expect("pod named after service");
        let parts: Vec<&str> = rest.split('-').collect();
        assert!(
            parts.len() == 2 && parts.iter().all(|p| p.len() == 5),
            "pod name {pod}"
        );
        pods.entry(svc.to_string())
            .or_default()
            .insert(pod.to_string());
    }
    assert_eq!(pods.len(), SERVICES.len());
    assert!(
        pods.values().all(|p| (1..=2).contains(&p.len())),
        "{pods:?}"
    );
}

#[test]
fn every_pod_reports_the_standard_gauges_every_15_seconds() {
    let run = simulate(Scenario::DbPoolExhaustion, &small(5));
    let minutes = 5;
    for svc in SERVICES {
        let replicas = if ["frontend", "checkout", "catalog", "auth"].contains(&svc) {
            2
        } else {
            1
        };
        for name in [
            "cpu.utilization",
            "memory.usage_bytes",
            "http.server.request_rate",
            "http.server.error_rate",
        ] {
            assert_eq!(
                gauge(&run, svc, name).len(),
                minutes * 4 * replicas,
                "{svc} {name}"
            );
        }
        let has_pool = !gauge(&run, svc, "db.pool.in_use").is_empty();
        assert_eq!(
            has_pool,
            svc == "inventory",
            "db.pool gauges belong to postgres-db's caller only"
        );
    }
}

#[test]
fn log_records_carry_trace_context_severity_and_varied_templates() {
    let run = run(Scenario::ConfigTimeout);
    let span_ids: BTreeSet<&[u8]> = spans(&run)
        .into_iter()
        .map(|(_, sp)| sp.span_id.as_slice())
        .collect();
    let mut levels = BTreeSet::new();
    let mut bodies_per_service: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (svc, l) in logs(&run) {
        assert_eq!(l.trace_id.len(), 16);
        assert!(
            span_ids.contains(l.span_id.as_slice()),
            "log points at an unknown span"
        );
        let expected_number = match l.severity_text.as_str() {
            "INFO" => 9,
            "WARN" => 13,
            "ERROR" => 17,
            other => panic!("unexpected severity {other}"),
        };
        assert_eq!(l.severity_number, expected_number);
        levels.insert(l.severity_text.clone());
        // Variable parts (ids, amounts, ms) stripped, the templates remain.
        let template: String = body(l)
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(25)
            .collect();
        bodies_per_service.entry(svc).or_default().insert(template);
    }
    assert_eq!(levels.len(), 3);
    for (svc, templates) in &bodies_per_service {
        assert!(
            templates.len() >= 2,
            "{svc} has a single log template: {templates:?}"
        );
    }
}

#[test]
fn changes_precede_the_fault_in_native_form_and_name_the_culprit_when_it_changed() {
    for s in Scenario::ALL {
        let run = simulate(s, &small(6));
        let fault_start = run.label.fault_start_unix_s;
        let mut culprit_changes = 0;
        for c in &run.changes {
            for key in [
                "id",
                "time",
                "type",
                "service",
                "environment",
                "summary",
                "actor",
                "attributes",
            ] {
                assert!(!c[key].is_null(), "{s}: change without {key}: {c}");
            }
            assert!(c["id"].as_str().is_some_and(|id| id.starts_with("chg-")));
            assert_eq!(c["environment"], "prod");
            let time = c["time"].as_str().expect("time");
            let at = rfc3339_to_unix(time);
            assert!(
                at < fault_start,
                "{s}: change at {time} after the fault start"
            );
            if c["service"] == s.root_cause_service() {
                culprit_changes += 1;
                let lead = fault_start - at;
                assert!(
                    (30..=61).contains(&lead),
                    "{s}: culprit change {lead} s before the symptoms"
                );
            }
        }
        let expect = matches!(
            s,
            Scenario::DeployCpuSpike
                | Scenario::ConfigTimeout
                | Scenario::MemoryLeak
                | Scenario::BatchRelease
        );
        assert_eq!(culprit_changes, usize::from(expect), "{s}");
        if s == Scenario::ConfigTimeout {
            let c = run
                .changes
                .iter()
                .find(|c| c["service"] == "auth")
                .expect("auth change");
            assert_eq!(c["type"], "config_change");
            assert_eq!(c["attributes"]["parameter"], "timeout_ms");
            assert_eq!(c["attributes"]["old_value"], "500");
            assert_eq!(c["attributes"]["new_value"], "50");
        }
    }
}

#[test]
fn written_files_parse_back_line_by_line_into_the_same_requests() {
    let run = simulate(Scenario::NewException, &small(8));
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_dir(&run, dir.path()).expect("write_dir");
    let traces: Vec<ExportTraceServiceRequest> = read_jsonl(&files.traces).expect("traces");
    let logs: Vec<ExportLogsServiceRequest> = read_jsonl(&files.logs).expect("logs");
    let metrics: Vec<ExportMetricsServiceRequest> = read_jsonl(&files.metrics).expect("metrics");
    let changes: Vec<serde_json::Value> = read_jsonl(&files.changes).expect("changes");
    assert!(traces == run.traces, "traces differ after the round trip");
    assert!(logs == run.logs, "logs differ after the round trip");
    assert!(
        metrics == run.metrics,
        "metrics differ after the round trip"
    );
    assert_eq!(changes, run.changes);
    let label: Label =
        serde_json::from_slice(&std::fs::read(&files.label).expect("label")).expect("label json");
    assert_eq!(label, run.label);
    let on_disk: u64 = [
        &files.traces,
        &files.logs,
        &files.metrics,
        &files.changes,
        &files.label,
    ]
    .iter()
    .map(|p| std::fs::metadata(p).expect("metadata").len())
    .sum();
    assert_eq!(files.total_bytes, on_disk);
    // OTLP/JSON: hex ids and camelCase fields, as the Collector writes them.
    let first = std::fs::read_to_string(&files.traces).expect("read");
    let first = first.lines().next().expect("a line");
    assert!(
        first.starts_with("{\"resourceSpans\":[") && first.contains("\"traceId\":\""),
        "{first:.200}"
    );
}

#[test]
fn the_normal_period_is_the_same_traffic_whatever_the_scenario() {
    let config = small(9);
    let a = simulate(Scenario::DeployCpuSpike, &config);
    let b = simulate(Scenario::DependencyLatency, &config);
    // Until a minute before the fault (the culprit change may land up to 60 s early).
    let cutoff = (a.label.fault_start_unix_s - 61) as u64 * NANOS as u64;
    let early = |run| -> Vec<_> {
        spans(run)
            .into_iter()
            .filter(|(_, sp)| sp.start_time_unix_nano < cutoff)
            .map(|(s, sp)| (s, sp.clone()))
            .collect()
    };
    let (ea, eb) = (early(&a), early(&b));
    assert!(!ea.is_empty());
    assert!(ea == eb, "normal traffic depends on the scenario");
}

fn rfc3339_to_unix(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .timestamp()
}

#[test]
fn a_written_dataset_lists_every_scenario_in_cases_csv_with_its_label_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenarios = [Scenario::NewException, Scenario::ConfigTimeout];
    let written = write_dataset(dir.path(), &small(3), &scenarios).expect("write_dataset");
    let csv = std::fs::read_to_string(&written.cases_csv).expect("cases.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("case_id,fault_start_unix_s,fault_end_unix_s,root_cause_service,fault_type,system")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), scenarios.len());
    for ((scenario, row), (label, files)) in scenarios.iter().zip(&rows).zip(&written.cases) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[0], scenario.as_str());
        assert_eq!(cells[1], label.fault_start_unix_s.to_string());
        assert_eq!(cells[3], scenario.root_cause_service());
        assert_eq!(cells[4], label.fault_type);
        assert_eq!(cells[5], label.system);
        // The case folder is named by its id and holds the same label.
        assert_eq!(files.label, dir.path().join(cells[0]).join("label.json"));
        let on_disk: Label =
            serde_json::from_slice(&std::fs::read(&files.label).expect("label")).expect("json");
        assert_eq!(&on_disk, label);
        assert!(files.traces.is_file() && files.metrics.is_file());
    }
    assert!(dir.path().join("README.md").is_file());
}
