//! `culprit train`: a per-source embedding model trained self-supervised on (normal) telemetry,
//! for the k-NN detector.

use anyhow::{Context, Result};
use culprit_core::SourceKind;
use culprit_embed::{featurize_all, train, FeatureState, TrainConfig, TrainProgress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// What to train on and where the model goes.
#[derive(Debug, Clone)]
pub struct Train {
    pub source: SourceKind,
    /// OTLP files or folders of them, ideally from a healthy period.
    pub input: Vec<PathBuf>,
    /// Model folder; the model lands in `<out>/<source>/`.
    pub out: PathBuf,
    pub epochs: usize,
    pub seed: u64,
}

/// Trains and saves the model of `args.source`, with a progress bar per epoch.
pub fn train_model(args: Train) -> Result<()> {
    anyhow::ensure!(
        args.source != SourceKind::Changes,
        "change events are too few to train on; train traces, logs or metrics"
    );
    let mut events = crate::embedded::read_events(&args.input)?;
    events.retain(|e| e.source() == args.source);
    events.sort_by_key(|e| e.time);
    anyhow::ensure!(
        events.len() >= 2,
        "no {} events in {:?}",
        args.source,
        args.input
    );
    let rows = featurize_all(events.iter(), args.source, &mut FeatureState::default());
    let config = TrainConfig {
        epochs: args.epochs,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let bar = ProgressBar::new(args.epochs as u64).with_style(
        ProgressStyle::with_template("{bar:40} epoch {pos}/{len} {msg}").expect("static template"),
    );
    let model = train(args.source, &rows, &config, |p: TrainProgress| {
        bar.set_position(p.epoch as u64);
        bar.set_message(format!("loss {:.4}, {:.0} rows/s", p.loss, p.rows_per_sec));
    })?;
    bar.finish_and_clear();
    let dir = args.out.join(args.source.as_str());
    model
        .save(&dir)
        .with_context(|| format!("saving to {}", dir.display()))?;
    let figures = &model.meta().training;
    println!(
        "trained the {} model on {} rows in {:.1} s: final loss {:.4}; saved to {}",
        args.source,
        rows.len(),
        figures.seconds,
        figures.final_loss,
        dir.display()
    );
    Ok(())
}
