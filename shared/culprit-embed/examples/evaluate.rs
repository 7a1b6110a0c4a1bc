//! Measures what the learned embedding buys over the hashing fallback: ROC-AUC of the mean
//! distance to the 5 nearest training embeddings, normal held-out rows vs injected anomalies,
//! for both self-supervised objectives. `cargo run --release -p culprit-embed --example evaluate`
#[path = "../tests/synth/mod.rs"]
mod synth;

use culprit_core::{Event, SourceKind};
use culprit_embed::{
    featurize, train, Embedder, FeatureRow, FeatureState, HashingEmbedder, Objective, TrainConfig,
};

struct Case {
    source: SourceKind,
    train: Vec<FeatureRow>,
    normal: Vec<FeatureRow>,
    anomalies: Vec<(&'static str, Vec<FeatureRow>)>,
}

fn rows(events: &[Event], st: &mut FeatureState) -> Vec<FeatureRow> {
    events.iter().map(|e| featurize(e, st)).collect()
}

fn spans_case() -> Case {
    let mut st = FeatureState::default();
    let mut all = rows(&synth::spans(1, 6000), &mut st);
    let normal = all.split_off(all.len() - 400);
    let pick = |f: &dyn Fn(&mut FeatureRow, usize)| -> Vec<FeatureRow> {
        normal
            .iter()
            .take(40)
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                f(&mut r, i);
                r
            })
            .collect()
    };
    let slow = |k: f32| {
        move |r: &mut FeatureRow, _: usize| {
            let us = r.numeric[0].exp_m1() * k;
            r.numeric[0] = us.ln_1p();
            r.numeric[1] = (1.0 + us).log2().floor();
        }
    };
    let ops: Vec<String> = all.iter().map(|r| r.categorical[1].clone()).collect();
    let anomalies = vec![
        ("duration x50", pick(&slow(50.0))),
        ("duration x5", pick(&slow(5.0))),
        ("duration x2", pick(&slow(2.0))),
        (
            "error on a healthy op",
            pick(&|r, _| {
                r.categorical[3] = "error".into();
                r.categorical[4] = "TimeoutException".into();
            }),
        ),
        (
            "unusual parent op",
            pick(&|r, i| {
                r.categorical[5] = ops[(i * 7919) % ops.len()].clone();
            }),
        ),
    ];
    Case {
        source: SourceKind::Traces,
        train: all,
        normal,
        anomalies,
    }
}

fn logs_case() -> Case {
    let mut st = FeatureState::default();
    let mut all = rows(&synth::logs(2, 8000), &mut st);
    let normal = all.split_off(all.len() - 400);
    let novel: Vec<Event> = (0..40).map(|i| synth::novel_log(i % 6, i)).collect();
    let novel = rows(&novel, &mut st);
    let misleveled: Vec<Event> = (0..40).map(|i| synth::misleveled_log(i % 6, i)).collect();
    let misleveled = rows(&misleveled, &mut st);
    let swapped: Vec<FeatureRow> = normal
        .iter()
        .take(40)
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.categorical[0] = synth::service(i + 3).into();
            r
        })
        .collect();
    Case {
        source: SourceKind::Logs,
        train: all,
        normal,
        anomalies: vec![
            ("never-seen template", novel),
            ("known template at ERROR", misleveled),
            ("template in the wrong service", swapped),
        ],
    }
}

fn metrics_case() -> Case {
    let mut st = FeatureState::default();
    let mut all = rows(&synth::metrics(3, 400), &mut st);
    let normal = all.split_off(all.len() - 360);
    let t = synth::T0 + 401 * 15_000_000_000;
    let spikes: Vec<Event> = (0..36)
        .map(|i| {
            synth::metric_event(
                synth::service(i),
                i % 2,
                "cpu_usage",
                40.0 * (1.0 + 0.1 * (i % 6) as f64) * 3.0,
                t,
            )
        })
        .collect();
    let spikes = rows(&spikes, &mut st);
    let drops: Vec<Event> = (0..36)
        .map(|i| {
            synth::metric_event(
                synth::service(i),
                i % 2,
                "request_rate",
                5.0,
                t + 15_000_000_000,
            )
        })
        .collect();
    let drops = rows(&drops, &mut st);
    Case {
        source: SourceKind::Metrics,
        train: all,
        normal,
        anomalies: vec![("cpu x3 spike", spikes), ("request rate collapse", drops)],
    }
}

fn aucs(e: &dyn Embedder, case: &Case) -> Vec<f64> {
    let reference = e
        .embed(&case.train[case.train.len().saturating_sub(4000)..])
        .unwrap();
    let refs: Vec<&[f32]> = reference.rows().collect();
    let scores = |rows: &[FeatureRow]| -> Vec<f64> {
        e.embed(rows)
            .unwrap()
            .rows()
            .map(|q| synth::knn_score(&refs, q, 5))
            .collect()
    };
    let normal = scores(&case.normal);
    case.anomalies
        .iter()
        .map(|(_, a)| synth::roc_auc(&normal, &scores(a)))
        .collect()
}

fn main() {
    for case in [spans_case(), logs_case(), metrics_case()] {
        println!(
            "== {} ({} training rows, {} held-out normals)",
            case.source,
            case.train.len(),
            case.normal.len()
        );
        let hashing = aucs(&HashingEmbedder::new(case.source), &case);
        let mut learned = Vec::new();
        for objective in [Objective::Contrastive, Objective::MaskedReconstruction] {
            let cfg = TrainConfig {
                objective,
                ..TrainConfig::default()
            };
            let t = std::time::Instant::now();
            let model = train(case.source, &case.train, &cfg, |_| {}).unwrap();
            let l = &model.meta().training.loss_per_epoch;
            println!(
                "   {objective:?}: {:.1}s, loss {:.3} -> {:.3} ({})",
                t.elapsed().as_secs_f64(),
                l[0],
                l[l.len() - 1],
                l.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            learned.push(aucs(&model.lean().unwrap(), &case));
        }
        println!(
            "   {:<32} {:>8} {:>12} {:>12}",
            "anomaly", "hashing", "contrastive", "masked-rec"
        );
        for (i, (name, _)) in case.anomalies.iter().enumerate() {
            println!(
                "   {:<32} {:>8.3} {:>12.3} {:>12.3}",
                name, hashing[i], learned[0][i], learned[1][i]
            );
        }
    }
}
