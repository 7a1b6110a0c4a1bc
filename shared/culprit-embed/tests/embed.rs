mod synth;

use culprit_core::{Event, SourceKind};
use culprit_embed::{
    featurize, train, CachedEmbedder, EmbedError, Embedder, FeatureRow, FeatureState,
    HashingEmbedder, Model, Objective, TrainConfig,
};
use std::sync::OnceLock;

fn rows_of(events: &[Event], state: &mut FeatureState) -> Vec<FeatureRow> {
    events.iter().map(|e| featurize(e, state)).collect()
}

fn small_config() -> TrainConfig {
    TrainConfig {
        epochs: 6,
        batch_size: 128,
        hidden: 32,
        ..TrainConfig::default()
    }
}

struct Trained {
    model: Model,
    state: FeatureState,
    held_out: Vec<FeatureRow>,
    train_rows: Vec<FeatureRow>,
}

/// One span model shared by the tests of this binary (training is the slow part in debug builds).
fn span_model() -> &'static Trained {
    static M: OnceLock<Trained> = OnceLock::new();
    M.get_or_init(|| {
        let mut state = FeatureState::default();
        let events = synth::spans(1, 900);
        let mut rows = rows_of(&events, &mut state);
        let held_out = rows.split_off(rows.len() - 300);
        let model =
            train(SourceKind::Traces, &rows, &small_config(), |_| {}).expect("training succeeds");
        Trained {
            model,
            state,
            held_out,
            train_rows: rows,
        }
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn training_reduces_loss_on_a_fixed_seed() {
    let m = span_model();
    let losses = &m.model.meta().training.loss_per_epoch;
    assert_eq!(losses.len(), 6);
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.95),
        "losses {losses:?}"
    );
    assert!(
        losses.windows(2).all(|w| w[1] < w[0] + 0.05),
        "losses {losses:?}"
    );
}

#[test]
fn training_reports_progress_every_epoch() {
    let mut state = FeatureState::default();
    let rows = rows_of(&synth::changes(3, 300), &mut state);
    let mut seen = Vec::new();
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 64,
        hidden: 16,
        ..TrainConfig::default()
    };
    let model = train(SourceKind::Changes, &rows, &cfg, |p| seen.push(p)).unwrap();
    assert_eq!(
        seen.iter().map(|p| p.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(seen
        .iter()
        .all(|p| p.loss.is_finite() && p.rows_per_sec > 0.0));
    assert_eq!(model.meta().training.rows, 300);
}

#[test]
fn same_seed_trains_the_same_model() {
    let mut state = FeatureState::default();
    let rows = rows_of(&synth::changes(3, 200), &mut state);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 64,
        hidden: 16,
        ..TrainConfig::default()
    };
    let a = train(SourceKind::Changes, &rows, &cfg, |_| {}).unwrap();
    let b = train(SourceKind::Changes, &rows, &cfg, |_| {}).unwrap();
    assert_eq!(
        a.meta().training.loss_per_epoch,
        b.meta().training.loss_per_epoch
    );
    assert_eq!(
        a.embed(&rows[..20]).unwrap().vectors,
        b.embed(&rows[..20]).unwrap().vectors
    );
}

#[test]
fn contrastive_objective_also_trains() {
    let mut state = FeatureState::default();
    let rows = rows_of(&synth::logs(5, 1500), &mut state);
    let cfg = TrainConfig {
        objective: Objective::Contrastive,
        ..small_config()
    };
    let model = train(SourceKind::Logs, &rows, &cfg, |_| {}).unwrap();
    let l = &model.meta().training.loss_per_epoch;
    assert!(l.last().unwrap() < &l[0], "losses {l:?}");
}

#[test]
fn save_then_load_gives_identical_embeddings() {
    let m = span_model();
    let dir = tempfile::tempdir().unwrap();
    m.model.save(dir.path()).unwrap();
    assert!(dir.path().join("model.safetensors").exists());
    let loaded = Model::load(dir.path()).unwrap();
    assert_eq!(loaded.meta(), m.model.meta());
    let a = m.model.embed(&m.held_out).unwrap();
    let b = loaded.embed(&m.held_out).unwrap();
    assert!(max_abs_diff(&a.vectors, &b.vectors) < 1e-6);
    let lean = culprit_embed::LeanModel::load(dir.path()).unwrap();
    assert!(max_abs_diff(&a.vectors, &lean.embed(&m.held_out).unwrap().vectors) < 1e-4);
}

#[test]
fn load_rejects_other_format_versions_and_schemas() {
    let m = span_model();
    let dir = tempfile::tempdir().unwrap();
    m.model.save(dir.path()).unwrap();
    let path = dir.path().join("model.json");
    let text = std::fs::read_to_string(&path).unwrap();

    std::fs::write(
        &path,
        text.replacen("\"format_version\": 1", "\"format_version\": 99", 1),
    )
    .unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, EmbedError::Version { found: 99, .. }),
        "{err}"
    );

    std::fs::write(
        &path,
        text.replacen("\"ln_duration_us\"", "\"duration_ms\"", 1),
    )
    .unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, EmbedError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("different traces feature schema"));

    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        Model::load(dir.path()).unwrap_err(),
        EmbedError::Json { .. }
    ));
    assert!(matches!(
        Model::load(dir.path().join("nope")).unwrap_err(),
        EmbedError::Io { .. }
    ));
}

#[test]
fn unseen_service_maps_to_the_oov_slot_and_is_reported() {
    let m = span_model();
    let mut row = m.held_out[0].clone();
    let known = m.model.embed(std::slice::from_ref(&row)).unwrap();
    assert!(known.oov[0].is_empty());
    row.categorical[0] = "never-seen-service".into();
    let e = m.model.embed(std::slice::from_ref(&row)).unwrap();
    assert_eq!(e.oov[0].columns().collect::<Vec<_>>(), vec![0]);
    // Slot 0 is a real embedding row: same vector as any other unseen service.
    let mut other = row.clone();
    other.categorical[0] = "another-unseen".into();
    assert_eq!(m.model.embed(&[other]).unwrap().vectors, e.vectors);
    assert_eq!(m.model.lean().unwrap().embed(&[row]).unwrap().oov, e.oov);
}

#[test]
fn lean_path_equals_candle_eval_output() {
    let m = span_model();
    let lean = m.model.lean().unwrap();
    // 300 rows: full tiles of four rows and a remainder, plus rows with OOV and absurd numbers.
    let mut rows = m.held_out.clone();
    let mut odd = rows[1].clone();
    odd.categorical[1] = "new-op".into();
    odd.numeric[0] = f32::NAN;
    odd.numeric[1] = 1e30;
    rows.push(odd);
    let a = m.model.embed(&rows).unwrap();
    let b = lean.embed(&rows).unwrap();
    let diff = max_abs_diff(&a.vectors, &b.vectors);
    assert!(diff < 1e-4, "max abs diff {diff}");
    assert_eq!(a.oov, b.oov);
    for v in b.rows() {
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4);
    }
}

#[test]
fn rows_of_the_wrong_shape_or_source_are_errors_not_panics() {
    let m = span_model();
    let mut short = m.held_out[0].clone();
    short.numeric.pop();
    assert!(matches!(
        m.model.embed(&[short.clone()]).unwrap_err(),
        EmbedError::RowShape { .. }
    ));
    assert!(m.model.lean().unwrap().embed(&[short]).is_err());
    let mut state = FeatureState::default();
    let log_row = rows_of(&synth::logs(1, 1), &mut state);
    assert!(matches!(
        m.model.embed(&log_row).unwrap_err(),
        EmbedError::SourceMismatch { .. }
    ));
    assert!(train(SourceKind::Traces, &[], &TrainConfig::default(), |_| {}).is_err());
    let bad = TrainConfig {
        batch_size: 1,
        ..TrainConfig::default()
    };
    assert!(matches!(
        train(SourceKind::Logs, &log_row, &bad, |_| {}).unwrap_err(),
        EmbedError::Config(_)
    ));
    assert!(m.model.embed(&[]).unwrap().is_empty());
}

#[test]
fn hashing_fallback_is_deterministic_and_unit_norm() {
    let mut state = FeatureState::default();
    let rows = rows_of(&synth::metrics(2, 5), &mut state);
    let a = HashingEmbedder::new(SourceKind::Metrics)
        .embed(&rows)
        .unwrap();
    let b = HashingEmbedder::new(SourceKind::Metrics)
        .embed(&rows)
        .unwrap();
    assert_eq!(a, b);
    for v in a.rows() {
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    assert_ne!(a.row(0), a.row(1), "different series embed differently");
    assert!(a.oov.iter().all(|m| m.is_empty()));
}

#[test]
fn cache_returns_the_inner_embedding_and_counts_hits() {
    let m = span_model();
    let lean = m.model.lean().unwrap();
    let cached = CachedEmbedder::new(lean.clone(), 64);
    let mut rows = m.held_out[..10].to_vec();
    rows.extend_from_slice(&m.held_out[..10]);
    let direct = lean.embed(&rows).unwrap();
    let first = cached.embed(&rows).unwrap();
    assert_eq!(first, direct);
    assert_eq!(cached.stats(), (0, 20));
    assert_eq!(cached.embed(&rows).unwrap(), direct);
    assert_eq!(cached.stats(), (20, 20));
    // Far more distinct rows than capacity: stays correct while evicting.
    let many = cached.embed(&m.held_out).unwrap();
    assert_eq!(many, lean.embed(&m.held_out).unwrap());
}

#[test]
fn knn_distance_of_injected_anomalies_exceeds_that_of_held_out_normals() {
    let m = span_model();
    let mut state = FeatureState::default();
    // Featurise anomalies with their own state (as a live pipeline would after warm-up).
    let anomalies: Vec<Event> = (0..10)
        .map(|i| synth::slow_span(i % 8, 50.0, i as u64))
        .collect();
    let anomalous = rows_of(&anomalies, &mut state);
    let reference = m.model.embed(&m.train_rows[..1500]).unwrap();
    let refs: Vec<&[f32]> = reference.rows().collect();
    let mean_score = |rows: &[FeatureRow]| {
        let e = m.model.embed(rows).unwrap();
        e.rows().map(|q| synth::knn_score(&refs, q, 5)).sum::<f64>() / e.len() as f64
    };
    let normal = mean_score(&m.held_out[..100]);
    let anomaly = mean_score(&anomalous);
    assert!(
        anomaly > 2.0 * normal,
        "anomalies {anomaly:.4} vs normals {normal:.4}"
    );
    let _ = &m.state;
}

#[test]
fn log_with_a_never_seen_template_lands_far_from_normal_logs() {
    let mut state = FeatureState::default();
    let mut rows = rows_of(&synth::logs(9, 2400), &mut state);
    let held_out = rows.split_off(2000);
    let model = train(SourceKind::Logs, &rows, &small_config(), |_| {}).unwrap();
    let anomalies: Vec<Event> = (0..6).map(|i| synth::novel_log(i, i)).collect();
    let anomalous = rows_of(&anomalies, &mut state);
    let e = model.embed(&anomalous).unwrap();
    // Template and logger are new: both OOV.
    assert!(e.oov.iter().all(|m| m.contains(2) && m.contains(3)));
    let reference = model.embed(&rows).unwrap();
    let refs: Vec<&[f32]> = reference.rows().collect();
    let score = |e: &culprit_embed::Embeddings| {
        e.rows().map(|q| synth::knn_score(&refs, q, 5)).sum::<f64>() / e.len() as f64
    };
    let normal = score(&model.embed(&held_out[..100]).unwrap());
    let anomaly = score(&e);
    assert!(
        anomaly > 2.0 * normal,
        "anomalies {anomaly:.4} vs normals {normal:.4}"
    );
}
