//! Writing a dataset out as OTLP JSON files, one `Export*ServiceRequest` per line, as the
//! OpenTelemetry Collector's file exporter does.

use crate::dataset::{Dataset, Kind};
use crate::error::{NezhaError, Result};
use crate::logs::read_logs;
use crate::metrics::{dependency_edges, MetricOptions, MetricStore};
use crate::traces::read_spans;
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::metrics::v1::metric::Data;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Reported after each step of [`import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    /// 1-based step just finished, of `steps`.
    pub step: usize,
    pub steps: usize,
    pub date: String,
    /// What the step wrote: `logs 08_43`, `reference traces 08_50`, `metrics`.
    pub item: String,
}

/// What [`import`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub dates: usize,
    pub files_written: usize,
    pub log_records: usize,
    pub spans: usize,
    pub metric_points: usize,
    /// Metric cells that were empty or NaN.
    pub empty_metric_cells: usize,
    pub skipped_rows: usize,
    /// The first [`ImportSummary::MAX_REASONS`] skip reasons, each naming its file and line.
    pub skipped: Vec<String>,
}

impl ImportSummary {
    pub const MAX_REASONS: usize = 100;

    fn skip(&mut self, reasons: &[String]) {
        self.skipped_rows += reasons.len();
        let room = Self::MAX_REASONS.saturating_sub(self.skipped.len());
        self.skipped.extend(reasons.iter().take(room).cloned());
    }
}

enum Step {
    Minute {
        date: String,
        kind: Kind,
        minute: String,
        reference: bool,
    },
    Metrics {
        date: String,
    },
}

/// Writes `dataset` under `out`:
///
/// ```text
/// out/labels.json                                    the cases as a JSON array
/// out/<date>/logs/<HH_MM>.otlp.jsonl                  one ExportLogsServiceRequest
/// out/<date>/traces/<HH_MM>.otlp.jsonl                one ExportTraceServiceRequest
/// out/<date>/reference/{logs,traces}/<HH_MM>.otlp.jsonl   fault-free reference minutes
/// out/<date>/metrics/<HH>.otlp.jsonl                  one ExportMetricsServiceRequest per minute
/// out/<date>/dependency.json                          [[source, target], ...] when the date has one
/// ```
pub fn import(
    dataset: &Dataset,
    out: &Path,
    mut progress: impl FnMut(ImportProgress),
) -> Result<ImportSummary> {
    let cases = dataset.cases()?;
    let dates = dataset.dates();
    let mut steps = Vec::new();
    for date in &dates {
        for kind in [Kind::Log, Kind::Trace] {
            for minute in dataset.minutes(date, kind) {
                steps.push(Step::Minute {
                    date: date.clone(),
                    kind,
                    minute,
                    reference: false,
                });
            }
        }
        for minute in dataset.reference_minutes(date) {
            for kind in [Kind::Log, Kind::Trace] {
                if dataset.reference_file(date, kind, &minute).is_some() {
                    let minute = minute.clone();
                    steps.push(Step::Minute {
                        date: date.clone(),
                        kind,
                        minute,
                        reference: true,
                    });
                }
            }
        }
        if dataset.metric_dir(date).is_dir() {
            steps.push(Step::Metrics { date: date.clone() });
        }
    }

    let mut summary = ImportSummary {
        dates: dates.len(),
        ..Default::default()
    };
    create_dir(out)?;
    write_json(&out.join("labels.json"), &cases)?;
    summary.files_written += 1;

    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        let (date, item) = match step {
            Step::Minute {
                date,
                kind,
                minute,
                reference,
            } => {
                let (source, dir) = if reference {
                    let src = dataset.reference_file(&date, kind, &minute);
                    (src, out.join(&date).join("reference").join(kind.signal()))
                } else {
                    (
                        dataset.minute_file(&date, kind, &minute),
                        out.join(&date).join(kind.signal()),
                    )
                };
                // Listed moments ago; a file gone since is simply not written.
                if let Some(source) = source {
                    let target = dir.join(format!("{minute}.otlp.jsonl"));
                    create_dir(&dir)?;
                    match kind {
                        Kind::Log => {
                            let o = read_logs(&source)?;
                            summary.log_records += o
                                .request
                                .resource_logs
                                .iter()
                                .flat_map(|r| &r.scope_logs)
                                .map(|s| s.log_records.len())
                                .sum::<usize>();
                            write_jsonl(&target, &o.request)?;
                            summary.skip(&o.skipped);
                        }
                        Kind::Trace => {
                            let o = read_spans(&source)?;
                            summary.spans += o
                                .request
                                .resource_spans
                                .iter()
                                .flat_map(|r| &r.scope_spans)
                                .map(|s| s.spans.len())
                                .sum::<usize>();
                            write_jsonl(&target, &o.request)?;
                            summary.skip(&o.skipped);
                        }
                    }
                    summary.files_written += 1;
                }
                let prefix = if reference { "reference " } else { "" };
                (date, format!("{prefix}{} {minute}", kind.signal()))
            }
            Step::Metrics { date } => {
                import_metrics(dataset, &date, out, &mut summary)?;
                (date, "metrics".to_string())
            }
        };
        progress(ImportProgress {
            step: i + 1,
            steps: total,
            date,
            item,
        });
    }
    Ok(summary)
}

fn import_metrics(
    dataset: &Dataset,
    date: &str,
    out: &Path,
    summary: &mut ImportSummary,
) -> Result<()> {
    let metric_dir = dataset.metric_dir(date);
    let store = MetricStore::load(&metric_dir, MetricOptions::default())?;
    summary.skip(store.skipped());
    let edges = dependency_edges(&metric_dir)?;
    if !edges.is_empty() {
        write_json(&out.join(date).join("dependency.json"), &edges)?;
        summary.files_written += 1;
    }
    let Some((first, last)) = store.time_range() else {
        return Ok(());
    };
    let dir = out.join(date).join("metrics");
    create_dir(&dir)?;
    let mut written: Vec<PathBuf> = Vec::new();
    let mut current: Option<(PathBuf, BufWriter<File>)> = None;
    let mut minute = first.div_euclid(60) * 60;
    while minute <= last {
        let window = store.window_outcome(minute, minute + 60);
        if window.rows > 0 {
            summary.empty_metric_cells += window.empty_cells;
            summary.metric_points += metric_points(&window.request);
            let hour = minute.rem_euclid(86_400) / 3600;
            let path = dir.join(format!("{hour:02}.otlp.jsonl"));
            if current.as_ref().map(|(p, _)| p != &path).unwrap_or(true) {
                if let Some((p, w)) = current.take() {
                    finish(&p, w)?;
                }
                // Times are sorted, so an hour comes back only across midnight: append then.
                let append = written.contains(&path);
                if !append {
                    written.push(path.clone());
                }
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(&path)
                    .map_err(|source| NezhaError::Write {
                        path: path.clone(),
                        source,
                    })?;
                current = Some((path.clone(), BufWriter::new(file)));
            }
            if let Some((p, w)) = current.as_mut() {
                write_line(p, w, &window.request)?;
            }
        }
        minute += 60;
    }
    if let Some((p, w)) = current.take() {
        finish(&p, w)?;
    }
    summary.files_written += written.len();
    Ok(())
}

fn metric_points(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            _ => 0,
        })
        .sum()
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| NezhaError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let file = File::create(path).map_err(|source| NezhaError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value).map_err(|source| NezhaError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    w.write_all(b"\n").map_err(|source| NezhaError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    finish(path, w)
}

/// A file holding one JSON line.
fn write_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let file = File::create(path).map_err(|source| NezhaError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = BufWriter::new(file);
    write_line(path, &mut w, value)?;
    finish(path, w)
}

fn write_line<T: Serialize>(path: &Path, w: &mut BufWriter<File>, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(|source| NezhaError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    w.write_all(b"\n").map_err(|source| NezhaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn finish(path: &Path, mut w: BufWriter<File>) -> Result<()> {
    w.flush().map_err(|source| NezhaError::Write {
        path: path.to_path_buf(),
        source,
    })
}
