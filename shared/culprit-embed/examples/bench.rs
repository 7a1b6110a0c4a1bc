//! Inference throughput, candle vs the lean path, with and without the row cache.
//! Run on one core: `taskset -c 0 env RAYON_NUM_THREADS=1 cargo run --release -p culprit-embed --example bench`
#[path = "../tests/synth/mod.rs"]
mod synth;

use culprit_core::SourceKind;
use culprit_embed::{
    featurize, train, CachedEmbedder, Embedder, FeatureRow, FeatureState, HashingEmbedder,
    TrainConfig,
};
use std::time::Instant;

fn rows_per_sec(e: &dyn Embedder, rows: &[FeatureRow], batch: usize, budget_rows: usize) -> f64 {
    let rows = &rows[..budget_rows.min(rows.len())];
    let t = Instant::now();
    let mut sink = 0f32;
    for chunk in rows.chunks(batch) {
        sink += e.embed(chunk).unwrap().vectors[0];
    }
    std::hint::black_box(sink);
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let mut state = FeatureState::default();
    let events = synth::spans(7, 12_000);
    let all: Vec<FeatureRow> = events.iter().map(|e| featurize(e, &mut state)).collect();
    let (train_rows, stream) = all.split_at(all.len() / 2);
    let model = train(
        SourceKind::Traces,
        train_rows,
        &TrainConfig::default(),
        |_| {},
    )
    .unwrap();
    let lean = model.lean().unwrap();
    let m = model.meta();
    println!(
        "spans: {} training rows, hidden {}, {} blocks, emb {}; stream of {} rows",
        train_rows.len(),
        m.hidden,
        m.blocks,
        m.emb_dim,
        stream.len()
    );
    let distinct: std::collections::HashSet<u64> =
        stream.iter().map(FeatureRow::stable_hash).collect();
    println!(
        "distinct rows in stream: {} of {}",
        distinct.len(),
        stream.len()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "rows/s (one core)", "batch 1", "batch 64", "batch 1024"
    );
    let hashing = HashingEmbedder::new(SourceKind::Traces);
    let cases: Vec<(&str, Box<dyn Embedder>, usize)> = vec![
        ("candle", Box::new(model), 5_000),
        ("lean", Box::new(lean.clone()), 100_000),
        ("hashing", Box::new(hashing), 100_000),
    ];
    for (name, e, budget) in &cases {
        let r: Vec<f64> = [1, 64, 1024]
            .iter()
            .map(|&b| rows_per_sec(e.as_ref(), stream, b, *budget))
            .collect();
        println!("{name:<22} {:>10.0} {:>10.0} {:>10.0}", r[0], r[1], r[2]);
    }
    for (name, e, budget) in cases {
        let mut r = Vec::new();
        let mut hit = 0.0;
        for b in [1, 64, 1024] {
            // Fresh cache per batch size; the stream is replayed twice so the second pass shows a warm cache.
            let cached = CachedEmbedder::new(&e, 4096);
            let cold = rows_per_sec(&cached, stream, b, budget);
            let (h, mi) = cached.stats();
            hit = h as f64 / (h + mi) as f64;
            r.push(cold);
        }
        println!(
            "{:<22} {:>10.0} {:>10.0} {:>10.0}   (hit rate {:.0}%)",
            format!("{name} + cache"),
            r[0],
            r[1],
            r[2],
            100.0 * hit
        );
    }
}
