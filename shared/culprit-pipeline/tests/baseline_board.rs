//! A detect stage shows its baselines on the board and forgets a service's on request.

use culprit_core::{Event, EventBody, MetricPoint, Resource, SourceKind, NANOS_PER_SEC};
use culprit_detect::{DetectConfig, Phase};
use culprit_pipeline::{
    AdoptRequest, BaselineBoard, BusMessage, DetectStage, ForgetRequest, InProcessBus,
};
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
                &mut cpu(service, t, 20.0 + (t % 4) as f64),
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

/// The median of `service`'s CPU baseline on the board.
fn cpu_median(board: &BaselineBoard, service: &str) -> Option<f64> {
    board
        .summaries()
        .into_iter()
        .find(|b| b.service == service)
        .map(|b| b.baseline.buckets.last().map_or(f64::NAN, |x| x.median))
}

#[test]
fn a_stage_adopts_what_its_relearner_learned_for_one_service_when_it_next_serves_the_board() {
    let board = Arc::new(BaselineBoard::new());
    let mut stage = DetectStage::new(&DetectConfig::default());
    stage.attach_board(board.clone(), "metrics");
    let mut bus = InProcessBus::default();
    feed(&mut stage, &mut bus, 0, 600);
    // What the stage holds now: the board shows its post of up to 30 s of event time ago.
    let payment_before = stage
        .baselines()
        .into_iter()
        .find(|b| b.service == "payment")
        .map(|b| b.baseline.buckets.last().map_or(f64::NAN, |x| x.median));
    let cart_before = cpu_median(&board, "cart").unwrap();
    assert!((20.0..=24.0).contains(&cart_before), "{cart_before}");

    // A re-learn: a fresh stage of the same settings learns a later period in which both
    // services run at 80; the live stage takes cart's part only.
    let mut fresh = stage.relearner();
    for t in (3600..4200).step_by(15) {
        for service in ["cart", "payment"] {
            fresh.observe(
                &mut cpu(service, t, 80.0 + (t % 4) as f64),
                Phase::Learning,
                &mut bus,
            );
        }
    }
    fresh.flush(Phase::Learning, &mut bus);
    let report = Arc::new(std::sync::Mutex::new(None));
    let done = report.clone();
    board
        .request_adopt(
            "metrics",
            AdoptRequest {
                service: "cart".into(),
                source: Some(SourceKind::Metrics),
                learned: fresh.save_state(),
                done: Box::new(move |r| *done.lock().unwrap() = Some(r)),
            },
        )
        .unwrap();
    assert!(
        report.lock().unwrap().is_none(),
        "applied by the stage, not the board"
    );
    stage.serve_requests();
    let report = report
        .lock()
        .unwrap()
        .take()
        .expect("answered once applied");
    assert_eq!(report.baselines, 1, "{report:?}");
    assert!(
        report.adopted.contains(&"metrics".to_string()),
        "{report:?}"
    );

    let cart_after = cpu_median(&board, "cart").unwrap();
    assert!(
        (80.0..=84.0).contains(&cart_after),
        "shown at once: {cart_after}"
    );
    assert_eq!(
        cpu_median(&board, "payment"),
        payment_before,
        "payment kept its own"
    );
    assert!(
        board
            .request_adopt(
                "nope",
                AdoptRequest {
                    service: "cart".into(),
                    source: None,
                    learned: Default::default(),
                    done: Box::new(|_| {}),
                }
            )
            .is_err(),
        "no such stage: the request comes back"
    );
}
