//! The embedded pipeline with a vector store: every embedded event is written once, with its
//! window's verdict, and a replay of the same events replaces its points instead of adding any.

use culprit_core::{Event, SourceKind};
use culprit_pipeline::{DetectorMode, Pipeline, PipelineConfig};
use culprit_sim::{simulate, Scenario, SimConfig};
use culprit_store::{EmbeddedStore, Filter, VectorStore};
use std::sync::Arc;

fn events() -> Vec<Event> {
    let run = simulate(
        Scenario::NewException,
        &SimConfig {
            normal_minutes: 4,
            fault_minutes: 2,
            ..SimConfig::default()
        },
    );
    let mut events = Vec::new();
    for r in &run.traces {
        events.extend(culprit_otlp::traces_to_events(r).unwrap());
    }
    for r in &run.logs {
        events.extend(culprit_otlp::logs_to_events(r).unwrap());
    }
    for r in &run.metrics {
        events.extend(culprit_otlp::metrics_to_events(r).unwrap());
    }
    events.sort_by_key(|e| e.time);
    events
}

fn count(store: &EmbeddedStore, filter: &Filter) -> u64 {
    pollster::block_on(store.count(filter)).unwrap()
}

fn run(store: &Arc<EmbeddedStore>, events: &mut [Event]) {
    let config = PipelineConfig {
        warmup_secs: 180,
        detector: DetectorMode::Fused,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::with_store(config, store.clone(), None);
    for e in events {
        pipeline.push(e);
    }
    pipeline.finish();
}

#[test]
fn every_embedded_event_is_written_once_and_a_replay_replaces_its_points() {
    let mut events = events();
    let embedded = events
        .iter()
        .filter(|e| e.source() != SourceKind::Changes)
        .count() as u64;
    let store = Arc::new(EmbeddedStore::in_memory());
    run(&store, &mut events);
    let event_points = Filter {
        reference: Some(false),
        ..Filter::default()
    };
    assert_eq!(count(&store, &event_points), embedded);
    let references = count(&store, &Filter::all().reference_only());
    assert!(references > 0);
    // Only points of windows judged normal join the reference.
    assert_eq!(
        count(&store, &Filter::all().reference_only().normal_only()),
        references
    );

    // The same events again (a replay, a redelivery): no event point is added; the second run
    // adopts the stored reference and tops it up to its cap at most.
    run(&store, &mut events);
    assert_eq!(count(&store, &event_points), embedded);
    let again = count(&store, &Filter::all().reference_only());
    let keys = {
        let mut keys: Vec<_> = events
            .iter()
            .filter(|e| e.source() != SourceKind::Changes)
            .map(|e| (e.source(), e.resource.service.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys.len() as u64
    };
    let cap = PipelineConfig::default().knn.reference_per_service as u64;
    assert!(
        again >= references && again <= cap * keys,
        "{again} vs {references}"
    );
}

/// The embedder commits a message's offset only once the stage's clock has reached the
/// `settles_at` read after observing it: by then every one of its events must have its point
/// finished, or a restart from that offset would never write it.
#[test]
fn every_event_has_its_point_once_the_clock_reaches_the_settling_time_read_after_it() {
    use culprit_detect::Phase;
    use culprit_pipeline::{BusMessage, DetectStage};
    use culprit_store::PointId;
    use std::collections::HashSet;

    struct Discard;
    impl culprit_pipeline::Bus for Discard {
        fn publish(&mut self, _: BusMessage) {}
    }
    let mut events: Vec<Event> = events()
        .into_iter()
        .filter(|e| e.source() == SourceKind::Traces)
        .collect();
    let config = PipelineConfig {
        detector: DetectorMode::Fused,
        ..PipelineConfig::default()
    };
    let store = Arc::new(EmbeddedStore::in_memory());
    let mut stage = DetectStage::with_store(&config, store, None);
    let warmup_end = events[0].time + 180 * 1_000_000_000;
    let mut settling: Vec<(PointId, i64)> = Vec::new();
    let mut finished: HashSet<PointId> = HashSet::new();
    let mut checked = 0;
    for e in &mut events {
        let phase = if e.time < warmup_end {
            Phase::Learning
        } else {
            Phase::Detecting
        };
        stage.observe(e, phase, &mut Discard);
        stage.tick(e.time, phase, &mut Discard);
        settling.push((PointId::of_event(e), stage.settles_at()));
        finished.extend(stage.take_points().into_iter().map(|p| p.point.id));
        let now = stage.closed_through();
        for (id, at) in settling.iter().filter(|(_, at)| *at <= now) {
            assert!(
                finished.contains(id),
                "an event settled at {at} (clock {now}) has no point"
            );
            checked += 1;
        }
        settling.retain(|(_, at)| *at > now);
    }
    assert!(
        checked > events.len() / 2,
        "most events settle before the stream ends: {checked} of {}",
        events.len()
    );
    assert!(!settling.is_empty(), "the last windows are still open");
}
