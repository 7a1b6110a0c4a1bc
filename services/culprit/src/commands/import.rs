//! `culprit import nezha <DIR> --out <DIR>`: a dataset as OTLP JSON files.

use anyhow::{Context, Result};
use clap::Subcommand;
use culprit_nezha::{Dataset, ImportProgress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Import {
    /// The Nezha RCA layout (logs, traces and metrics CSV) to OTLP JSON lines, as the
    /// OpenTelemetry Collector's file exporter writes them.
    Nezha {
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: Import) -> Result<()> {
    let Import::Nezha { dir, out } = cmd;
    let dataset = Dataset::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("static template"),
    );
    let summary = culprit_nezha::import(&dataset, &out, |p: ImportProgress| {
        bar.set_length(p.steps as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!("{} {}", p.date, p.item));
    })?;
    bar.finish_and_clear();
    println!(
        "wrote {} files to {}: {} log records, {} spans, {} metric points ({} empty metric cells, {} rows skipped)",
        summary.files_written,
        out.display(),
        summary.log_records,
        summary.spans,
        summary.metric_points,
        summary.empty_metric_cells,
        summary.skipped_rows
    );
    for reason in &summary.skipped {
        eprintln!("skipped: {reason}");
    }
    Ok(())
}
