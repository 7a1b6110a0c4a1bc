//! A detector restored from a saved state judges the next events as the detector it was saved
//! from does: what a restarted embedder relies on (`culprit-kafka`'s snapshots).

use culprit_core::{Event, NANOS_PER_SEC};
use culprit_detect::{
    logs::LogDetector, metrics::MetricDetector, spans::SpanDetector, trace_logs::TraceLogDetector,
    DetectConfig, Detector, Detectors, Findings, Phase,
};
use culprit_sim::{Scenario, SimConfig};

/// A simulated incident's events in time order, and the fault's start.
fn incident(scenario: Scenario) -> (Vec<Event>, i64) {
    let run = culprit_sim::simulate(
        scenario,
        &SimConfig {
            normal_minutes: 25,
            fault_minutes: 4,
            ..SimConfig::default()
        },
    );
    let events = run.events();
    (events, run.label.fault_start_unix_s * NANOS_PER_SEC)
}

/// Feeds `events` with the phase `phase_at(time)`, advancing by each event's time.
fn feed(d: &mut Detectors, events: &mut [Event], phase_at: impl Fn(i64) -> Phase) -> Findings {
    let mut out = Findings::default();
    for e in events {
        let phase = phase_at(e.time);
        d.observe(e, phase, &mut out);
        d.advance(e.time, phase, &mut out);
    }
    d.flush(Phase::Detecting, &mut out);
    out
}

/// The verdicts of `findings`, in a comparable order.
fn verdicts(findings: &Findings) -> Vec<(i64, String, String, String)> {
    let mut v: Vec<_> = findings
        .anomalies
        .iter()
        .map(|a| {
            (
                a.time,
                a.service.clone(),
                a.signal.as_str().to_string(),
                format!("{:?}", a.severity),
            )
        })
        .collect();
    v.sort();
    v
}

/// Learns a scenario up to `lead_secs` before its fault, saves the detector's state through JSON text, and
/// judges the rest (the fault included) with the original, with a fresh detector restored from
/// the state and with a fresh detector that was not: the restored one gives the original's
/// verdicts, the fresh one does not.
fn restored_detector_judges_as_the_original(
    scenario: Scenario,
    lead_secs: i64,
    make: fn(DetectConfig) -> Box<dyn Detector>,
) {
    let config = DetectConfig::default();
    let (mut events, fault_start) = incident(scenario);
    let split = events
        .partition_point(|e| e.time < fault_start - lead_secs * NANOS_PER_SEC)
        .max(1);
    let (learn, judge) = events.split_at_mut(split);

    let mut original = Detectors::new(vec![make(config.clone())]);
    let mut learned = Findings::default();
    for e in learn {
        original.observe(e, Phase::Learning, &mut learned);
        original.advance(e.time, Phase::Learning, &mut learned);
    }
    // A restart loses the open windows: close them first, so that the two differ only in what
    // was saved.
    original.flush(Phase::Learning, &mut learned);
    let states = original.save_state();
    // One part per detector, and the stage's template miners beside a detector of log lines.
    let parts = if states.contains_key(Detectors::TEMPLATES_STATE) {
        2
    } else {
        1
    };
    assert_eq!(states.len(), parts, "{:?}", states.keys());
    let text = serde_json::to_string(&states).unwrap();

    let mut restored = Detectors::new(vec![make(config.clone())]);
    let report = restored.restore_state(serde_json::from_str(&text).unwrap());
    assert_eq!(report.restored.len(), parts, "{report:?}");
    assert!(report.refused.is_empty() && report.unknown.is_empty());

    let after_original = verdicts(&feed(&mut original, judge, |_| Phase::Detecting));
    let after_restored = verdicts(&feed(&mut restored, judge, |_| Phase::Detecting));
    let mut fresh = Detectors::new(vec![make(config)]);
    let after_fresh = verdicts(&feed(&mut fresh, judge, |_| Phase::Detecting));

    assert!(
        !after_original.is_empty(),
        "the detector finds the fault of {scenario:?}"
    );
    assert_eq!(after_restored, after_original, "{scenario:?}");
    assert_ne!(
        after_fresh, after_original,
        "without the state the verdicts differ, or the test proves nothing"
    );
}

#[test]
fn a_restored_span_detector_judges_the_next_spans_as_the_one_it_was_saved_from() {
    restored_detector_judges_as_the_original(Scenario::DeployCpuSpike, 300, |c| {
        Box::new(SpanDetector::new(c.shared, c.spans))
    });
}

#[test]
fn a_restored_log_detector_judges_the_next_lines_as_the_one_it_was_saved_from() {
    restored_detector_judges_as_the_original(Scenario::NewException, 300, |c| {
        Box::new(LogDetector::new(c.shared, c.logs))
    });
}

#[test]
fn a_restored_metric_detector_judges_the_next_points_as_the_one_it_was_saved_from() {
    restored_detector_judges_as_the_original(Scenario::DeployCpuSpike, 300, |c| {
        Box::new(MetricDetector::new(c.shared, c.metrics))
    });
}

#[test]
fn a_restored_trace_log_detector_judges_the_next_spans_as_the_one_it_was_saved_from() {
    restored_detector_judges_as_the_original(Scenario::ConfigTimeout, 0, |c| {
        Box::new(TraceLogDetector::new(c.shared, c.logs))
    });
}

#[test]
fn a_part_in_another_format_version_is_refused_and_the_other_detectors_are_restored() {
    let config = DetectConfig::default();
    let mut saved = Detectors::statistical(&config).save_state();
    assert!(saved.contains_key("spans") && saved.contains_key("metrics"));
    let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).unwrap();
    saved.insert(
        "spans".into(),
        raw(serde_json::json!({"version": 99, "state": {}})),
    );
    saved.insert("metrics".into(), raw(serde_json::json!("not a state")));
    saved.insert("retired".into(), raw(serde_json::json!({})));
    let report = Detectors::statistical(&config).restore_state(saved);
    let refused: Vec<&str> = report.refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(refused, ["spans", "metrics"]);
    assert!(
        report.refused[0].1.contains("version 99"),
        "{:?}",
        report.refused
    );
    assert!(report.restored.contains(&"logs".to_string()));
    assert_eq!(report.unknown, ["retired"]);
}

#[test]
fn a_snapshot_from_before_the_shared_miners_is_refused_by_the_log_detectors_not_misread() {
    // Until the stage mined every line once, the log and span-log detectors each saved their
    // own miners in their version-1 parts, and there was no part for the stage's miners.
    let config = DetectConfig::default();
    let mut saved = Detectors::statistical(&config).save_state();
    assert!(saved.remove(Detectors::TEMPLATES_STATE).is_some());
    for name in ["logs", "trace_logs"] {
        let part = saved.get_mut(name).unwrap();
        let mut old: serde_json::Value = serde_json::from_str(part.get()).unwrap();
        old["version"] = serde_json::json!(1);
        old["state"]["miners"] = serde_json::json!([]);
        *part = serde_json::value::to_raw_value(&old).unwrap();
    }
    let report = Detectors::statistical(&config).restore_state(saved);
    let refused: Vec<&str> = report.refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(refused, ["logs", "trace_logs"]);
    assert_eq!(report.missing, [Detectors::TEMPLATES_STATE]);
    assert!(report.restored.contains(&"spans".to_string()));
}
