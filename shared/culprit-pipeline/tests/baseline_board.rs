//! A detect stage shows its baselines on the board and forgets a service's on request.

use culprit_core::{Event, EventBody, MetricPoint, Resource, SourceKind, NANOS_PER_SEC};
use culprit_detect::{DetectConfig, Phase};
use culprit_pipeline::{BaselineBoard, BusMessage, DetectStage, ForgetRequest, InProcessBus};
use std::collections::BTreeMap;
use std::sync::Arc;

fn cpu(service: &str, t_s: i64, value: f64) -> Event {
    Event {
        time: t_s * NANOS_PER_SEC,
        resource: Arc::new(Resource::new(service).with_instance(format!("{service}-1"))),
        body: EventBody::Metric(MetricPoint {
            name: "cpu".into(),
            value,
            attributes: BTreeMap::new(),
        }),
    }
}

fn feed(stage: &mut DetectStage, bus: &mut InProcessBus, from_s: i64, to_s: i64) {
    for t in (from_s..to_s).step_by(15) {
        for service in ["cart", "payment"] {
            stage.observe(
                &cpu(service, t, 20.0 + (t % 4) as f64),
                Phase::Learning,
                bus,
            );
        }
        stage.tick(t * NANOS_PER_SEC, Phase::Learning, bus);
    }
}

#[test]
fn a_stage_posts_its_baselines_and_forgets_a_service_on_request() {
    let board = Arc::new(BaselineBoard::new());
    let mut stage = DetectStage::new(&DetectConfig::default());
    stage.attach_board(board.clone(), "metrics");
    let mut bus = InProcessBus::default();

    feed(&mut stage, &mut bus, 0, 600);
    let shown = board.summaries();
    let services: Vec<&str> = shown.iter().map(|b| b.service.as_str()).collect();
    assert_eq!(services, ["cart", "payment"], "{shown:?}");
    assert!(shown.iter().all(|b| b.source == SourceKind::Metrics));
    assert!(shown[0].baseline.samples >= 30, "{:?}", shown[0].baseline);

    // The board answers at once with what it will drop; the stage applies it at its next window.
    let will_drop = board.request_forget(ForgetRequest {
        service: "cart".into(),
        source: None,
    });
    assert_eq!(will_drop, 1);
    feed(&mut stage, &mut bus, 600, 615);
    assert_eq!(board.forgotten(), 1);
    let after: Vec<String> = board.summaries().into_iter().map(|b| b.service).collect();
    assert_eq!(after, ["payment"]);
    assert!(
        stage.baselines().iter().all(|b| b.service != "cart"),
        "the detector itself forgot it"
    );

    // A request for another source leaves the metric baselines alone.
    let will_drop = board.request_forget(ForgetRequest {
        service: "payment".into(),
        source: Some(SourceKind::Logs),
    });
    assert_eq!(will_drop, 0);
    feed(&mut stage, &mut bus, 615, 630);
    assert_eq!(board.forgotten(), 1);
    // Learning resumes for the forgotten service from the events that follow.
    feed(&mut stage, &mut bus, 630, 1300);
    let services: Vec<String> = board.summaries().into_iter().map(|b| b.service).collect();
    assert_eq!(services, ["cart", "payment"]);
    // Nothing was reported while learning.
    assert!(!bus
        .drain()
        .iter()
        .any(|m| matches!(m, BusMessage::Anomaly(_))));
}
