//! Every log line is Drain-mined once, where it enters detection, and the detectors that read
//! log templates (log, span-log, k-NN) all take that one mining: the same template ids and texts.

use culprit_core::{Event, EventBody, SourceKind, NANOS_PER_SEC};
use culprit_detect::{DetectConfig, Detector, Detectors, Findings, LogTemplates, Phase};
use culprit_knn::{KnnConfig, KnnDetector};
use culprit_pipeline::{DetectorMode, Pipeline, PipelineConfig};
use culprit_sim::{Scenario, SimConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A simulated incident's events in time order, and the fault's start.
fn incident(scenario: Scenario) -> (Vec<Event>, i64) {
    let run = culprit_sim::simulate(
        scenario,
        &SimConfig {
            normal_minutes: 15,
            fault_minutes: 4,
            ..SimConfig::default()
        },
    );
    let events = run.events();
    (events, run.label.fault_start_unix_s * NANOS_PER_SEC)
}

fn lines(events: &[Event]) -> u64 {
    events
        .iter()
        .filter(|e| e.source() == SourceKind::Logs)
        .count() as u64
}

/// Pushes `events` through a fused pipeline: the lines it mined on this thread, and each alert's
/// summary and candidates.
fn run_fused(events: &mut [Event]) -> (u64, Vec<(String, Vec<String>)>) {
    let config = PipelineConfig {
        detector: DetectorMode::Fused,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(config);
    // Every miner counts the lines it learns from on its thread; the pipeline runs on this one.
    let before = culprit_drain::lines_mined_on_this_thread();
    let mut alerts = Vec::new();
    for e in events {
        alerts.extend(pipeline.push(e));
    }
    alerts.extend(pipeline.finish());
    let mined = culprit_drain::lines_mined_on_this_thread() - before;
    let alerts = alerts
        .into_iter()
        .map(|a| {
            let causes = a.root_causes.into_iter().map(|c| c.service).collect();
            (a.summary, causes)
        })
        .collect();
    (mined, alerts)
}

#[test]
fn a_fused_pipeline_mines_each_log_line_once() {
    let (mut events, _) = incident(Scenario::NewException);
    assert!(lines(&events) > 1_000);
    let (mined, alerts) = run_fused(&mut events);
    assert_eq!(
        mined,
        lines(&events),
        "each log line mined once: by the stage, not again by a detector or the featuriser"
    );
    assert!(!alerts.is_empty());
    // The lines now carry the first pipeline's templates; a second pipeline (a relearn's fresh
    // stage, say) mines every one again into its own miners and judges as the first did.
    let (again, alerts_again) = run_fused(&mut events);
    assert_eq!(again, lines(&events), "a carried template is mined again");
    assert_eq!(alerts_again, alerts);
}

/// (environment, service, template id) -> the template's texts as it generalised, as a detector
/// reading the stage's templates sees them.
type Seen = Arc<Mutex<HashMap<(String, String, u32), Vec<String>>>>;

/// Records the template each log line arrives with, and its text in the shared miners.
struct Probe {
    templates: LogTemplates,
    seen: Seen,
}

impl Detector for Probe {
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Logs]
    }

    fn observe(&mut self, event: &Event, _phase: Phase, _out: &mut Findings) {
        let EventBody::Log(log) = &event.body else {
            return;
        };
        let id = log.template.expect("a line arrives mined").id;
        let (environment, service) = (&event.resource.environment, &event.resource.service);
        let text = self.templates.text(environment, service, id).unwrap();
        let mut seen = self.seen.lock().unwrap();
        let texts = seen
            .entry((environment.clone(), service.clone(), id))
            .or_default();
        if texts.last() != Some(&text) {
            texts.push(text);
        }
    }

    fn advance(&mut self, _: i64, _: Phase, _: &mut Findings) {}

    fn flush(&mut self, _: Phase, _: &mut Findings) {}

    fn share_templates(&mut self, templates: &LogTemplates) {
        self.templates = templates.clone();
    }
}

#[test]
fn the_log_detector_reports_a_new_error_under_the_template_id_and_text_every_detector_was_given() {
    let (mut events, fault_start) = incident(Scenario::NewException);
    let seen = Seen::default();
    let config = DetectConfig::default();
    let mut detectors = Detectors::statistical(&config);
    for d in KnnDetector::all(&KnnConfig::default(), &config.shared) {
        detectors.push(d);
    }
    detectors.push(Box::new(Probe {
        templates: LogTemplates::default(),
        seen: seen.clone(),
    }));
    let mut out = Findings::default();
    for e in &mut events {
        let phase = if e.time < fault_start - 300 * NANOS_PER_SEC {
            Phase::Learning
        } else {
            Phase::Detecting
        };
        detectors.observe(e, phase, &mut out);
        detectors.advance(e.time, phase, &mut out);
    }
    detectors.flush(Phase::Detecting, &mut out);

    let seen = seen.lock().unwrap();
    let new_templates: Vec<_> = out
        .anomalies
        .iter()
        .filter(|a| a.signal.as_str().starts_with("log.new_"))
        .collect();
    assert!(!new_templates.is_empty(), "{:?}", out.anomalies);
    for a in new_templates {
        let id: u32 = a
            .signal
            .as_str()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let texts = seen
            .get(&(a.environment.clone(), a.service.clone(), id))
            .unwrap_or_else(|| panic!("{} names a template no line was given", a.signal));
        // The description shows the template as it stood when reported (cut at 200 bytes).
        assert!(
            texts.iter().any(|t| {
                let shown: String = t.chars().take(100).collect();
                a.description.contains(&shown)
            }),
            "{a:?} vs {texts:?}"
        );
    }
}
