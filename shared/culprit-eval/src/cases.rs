//! Evaluation on the labelled case layout, the general input for any system:
//!
//! ```text
//! <dataset>/cases.csv              case_id,fault_start_unix_s,fault_end_unix_s,root_cause_service,fault_type,system
//! <dataset>/<case_id>/label.json   the same fields as the case's row
//! <dataset>/<case_id>/*            anything `culprit replay` reads: OTLP JSON lines or protobuf
//!                                  (.gz too), change events
//! ```
//!
//! A folder holding `label.json` and no `cases.csv` (what `culprit simulate` writes) is a
//! one-case dataset. Each case folder is replayed on its own, in event time, through a fresh
//! [`Pipeline`] and the same file readers `culprit replay` uses: everything before
//! `fault_start - guard` is learning only ([`Pipeline::learn`]), the rest is pushed as a stream.
//! The guard keeps symptoms that lead the labelled start (a change shortly before it, a slow
//! onset) out of the baseline. The case is scored by [`crate::score`]'s contract.
//!
//! The label's root cause is read from the file with the rest of the label, but only
//! [`score_reviewed_case`] looks at it, after the case's replay has finished.

use crate::parallel::{map_ordered, workers};
use crate::score::{score_reviewed_case, utc_date, CaseLabel, CaseResult, RunFacts, Summary};
use crate::EvalOptions;
use anyhow::{bail, ensure, Context, Result};
use culprit_core::{Event, NANOS_PER_SEC};
use culprit_otlp::files::FileError;
use culprit_pipeline::{Pipeline, PipelineConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Seconds before the fault start from which events are judged rather than learned.
pub const DEFAULT_GUARD_S: i64 = 120;
/// The per-case label file.
pub const LABEL_FILE: &str = "label.json";
/// The dataset's case list.
pub const CASES_FILE: &str = "cases.csv";

/// Files in a case folder that describe the data rather than hold it.
fn is_metadata(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == LABEL_FILE
        || lower == CASES_FILE
        || lower.starts_with("readme")
        || lower.starts_with("license")
        || lower.starts_with('.')
}

/// One labelled case and where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LabelledCase {
    pub case_id: String,
    pub fault_start_unix_s: i64,
    #[serde(default)]
    pub fault_end_unix_s: Option<i64>,
    pub root_cause_service: String,
    #[serde(default)]
    pub fault_type: String,
    #[serde(default)]
    pub system: String,
    /// The case folder (not part of the label).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A dataset in the labelled case layout, its cases in file order.
#[derive(Debug, Clone)]
pub struct CaseSet {
    root: PathBuf,
    cases: Vec<LabelledCase>,
}

impl CaseSet {
    /// Opens `dir`: a dataset with `cases.csv`, or a single case folder with `label.json`.
    pub fn open(dir: &Path) -> Result<CaseSet> {
        let cases_csv = dir.join(CASES_FILE);
        let cases = if cases_csv.is_file() {
            read_cases_csv(&cases_csv, dir)?
        } else if dir.join(LABEL_FILE).is_file() {
            let mut case = read_label(&dir.join(LABEL_FILE))?;
            if case.case_id.is_empty() {
                case.case_id = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "case".to_string());
            }
            case.dir = dir.to_path_buf();
            vec![case]
        } else {
            bail!(
                "{} holds neither {CASES_FILE} (a dataset of labelled cases) nor {LABEL_FILE} \
                 (one labelled case)",
                dir.display()
            );
        };
        Ok(CaseSet {
            root: dir.to_path_buf(),
            cases,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cases(&self) -> &[LabelledCase] {
        &self.cases
    }

    /// The cases `options` selects, in file order.
    pub fn selected<'a>(
        &'a self,
        options: &'a EvalOptions,
    ) -> impl Iterator<Item = &'a LabelledCase> + 'a {
        self.cases.iter().filter(|c| options.selects(&c.case_id))
    }
}

fn read_label(path: &Path) -> Result<LabelledCase> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let case: LabelledCase = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a case label", path.display()))?;
    ensure!(
        !case.root_cause_service.is_empty(),
        "{}: empty root_cause_service",
        path.display()
    );
    Ok(case)
}

fn read_cases_csv(path: &Path, root: &Path) -> Result<Vec<LabelledCase>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut cases = Vec::new();
    for (i, row) in reader.deserialize::<LabelledCase>().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let mut case = row.with_context(|| format!("{}: line {line}", path.display()))?;
        ensure!(
            !case.case_id.is_empty()
                && !case.case_id.contains(['/', '\\'])
                && case.case_id != "."
                && case.case_id != "..",
            "{}: line {line}: case_id '{}' is not a folder name",
            path.display(),
            case.case_id
        );
        ensure!(
            !case.root_cause_service.is_empty(),
            "{}: line {line}: empty root_cause_service",
            path.display()
        );
        case.dir = root.join(&case.case_id);
        ensure!(
            case.dir.is_dir(),
            "{}: line {line}: no case folder {}",
            path.display(),
            case.dir.display()
        );
        // The row and the folder's own label must tell the same story.
        let label_path = case.dir.join(LABEL_FILE);
        if label_path.is_file() {
            let label = read_label(&label_path)?;
            ensure!(
                (
                    &label.case_id,
                    label.fault_start_unix_s,
                    &label.root_cause_service
                ) == (
                    &case.case_id,
                    case.fault_start_unix_s,
                    &case.root_cause_service
                ),
                "{} disagrees with {} line {line} (case_id, fault_start_unix_s, \
                 root_cause_service)",
                label_path.display(),
                path.display()
            );
        }
        cases.push(case);
    }
    Ok(cases)
}

/// How to evaluate a case set.
#[derive(Debug, Clone)]
pub struct CasesOptions {
    pub eval: EvalOptions,
    /// Seconds before the fault start from which events are pushed instead of learned.
    pub guard_s: i64,
}

impl Default for CasesOptions {
    fn default() -> Self {
        CasesOptions {
            eval: EvalOptions::default(),
            guard_s: DEFAULT_GUARD_S,
        }
    }
}

/// Evaluates every selected case of `set`, calling `on_case` as each finishes.
pub fn eval_cases(
    set: &CaseSet,
    options: &CasesOptions,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<(Vec<CaseResult>, Summary)> {
    let started = Instant::now();
    let selected: Vec<&LabelledCase> = set.selected(&options.eval).collect();
    // Each case is replayed on its own pipeline, so cases run side by side.
    let results = map_ordered(
        &selected,
        workers(),
        |case| {
            eval_case(case, options).with_context(|| format!("evaluating case {}", case.case_id))
        },
        &mut on_case,
    )?;
    let summary = Summary::of(&results, started.elapsed().as_secs_f64());
    Ok((results, summary))
}

fn eval_case(case: &LabelledCase, options: &CasesOptions) -> Result<CaseResult> {
    let started = Instant::now();
    let mut events = read_case_files(&case.dir)?;
    ensure!(
        !events.is_empty(),
        "no telemetry in case folder {}",
        case.dir.display()
    );
    events.sort_by_key(|e| e.time);
    let cutoff = (case.fault_start_unix_s - options.guard_s) * NANOS_PER_SEC;
    let split = events.partition_point(|e| e.time < cutoff);
    let (history, replay) = events.split_at_mut(split);

    let mut pipeline = Pipeline::new(PipelineConfig {
        warmup_secs: 0,
        ..options.eval.pipeline.clone()
    });
    if options.eval.explain || options.eval.review.is_some() {
        pipeline.record_anomalies();
    }
    pipeline.learn(history);
    for event in &mut *replay {
        pipeline.push(event);
    }
    pipeline.finish();

    let stats = pipeline.stats();
    let facts = RunFacts {
        events: stats.events.values().sum(),
        anomalies: stats.anomalies,
        seconds: started.elapsed().as_secs_f64(),
        anomaly_log: if options.eval.explain {
            pipeline.recorded_anomalies().to_vec()
        } else {
            Vec::new()
        },
    };
    let label = CaseLabel {
        case_id: case.case_id.clone(),
        date: utc_date(case.fault_start_unix_s),
        fault_type: case.fault_type.clone(),
        root_cause_service: case.root_cause_service.clone(),
        fault_start_unix_s: case.fault_start_unix_s,
    };
    // Only now is the label's root cause looked at (a review sees the incident, never the label).
    Ok(score_reviewed_case(
        &label,
        pipeline.incidents(),
        facts,
        options.eval.review.as_ref(),
        pipeline.recorded_anomalies(),
        replay,
    ))
}

/// Every telemetry and change-event file under `dir` (recursively, in path order), read with
/// `culprit replay`'s readers; the label and other metadata files are left out, and files that
/// are none of ours are skipped with a warning, as `culprit replay` does.
fn read_case_files(dir: &Path) -> Result<Vec<Event>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut events = Vec::new();
    for file in files {
        match culprit_otlp::files::read_path(&file) {
            Ok(read) => events.extend(read),
            Err(FileError::Unrecognized { path, reason }) => {
                tracing::warn!(path = %path.display(), %reason, "skipping unrecognised file");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(events)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_metadata(&name) {
            continue;
        }
        // metadata() follows symlinks, as `culprit replay` does.
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const LABEL: &str = r#"{"case_id":"c1","fault_start_unix_s":1000,"fault_end_unix_s":1300,
        "root_cause_service":"cart","fault_type":"memory-leak","system":"shop","extra":1}"#;

    #[test]
    fn a_folder_with_only_a_label_is_a_one_case_dataset() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join(LABEL_FILE), LABEL);
        let set = CaseSet::open(dir.path()).unwrap();
        assert_eq!(set.cases().len(), 1);
        let case = &set.cases()[0];
        assert_eq!(case.case_id, "c1");
        assert_eq!(case.dir, dir.path());
        assert_eq!(case.fault_end_unix_s, Some(1300));
        assert_eq!(case.fault_type, "memory-leak");
    }

    #[test]
    fn cases_csv_rows_name_their_folders_and_must_agree_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let csv =
            "case_id,fault_start_unix_s,fault_end_unix_s,root_cause_service,fault_type,system\n\
                   c1,1000,1300,cart,memory-leak,shop\n";
        write(&dir.path().join(CASES_FILE), csv);
        write(&dir.path().join("c1").join(LABEL_FILE), LABEL);
        let set = CaseSet::open(dir.path()).unwrap();
        assert_eq!(set.cases()[0].dir, dir.path().join("c1"));

        write(
            &dir.path().join("c1").join(LABEL_FILE),
            &LABEL.replace("cart", "payment"),
        );
        let err = CaseSet::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("disagrees"), "{err}");
    }

    #[test]
    fn a_case_row_without_its_folder_or_root_cause_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let header = "case_id,fault_start_unix_s,root_cause_service\n";
        write(
            &dir.path().join(CASES_FILE),
            &format!("{header}c9,1000,cart\n"),
        );
        let err = format!("{:#}", CaseSet::open(dir.path()).unwrap_err());
        assert!(err.contains("no case folder"), "{err}");

        std::fs::create_dir_all(dir.path().join("c9")).unwrap();
        write(&dir.path().join(CASES_FILE), &format!("{header}c9,1000,\n"));
        let err = format!("{:#}", CaseSet::open(dir.path()).unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("root_cause_service"),
            "{err}"
        );

        write(
            &dir.path().join(CASES_FILE),
            &format!("{header}c9,soon,cart\n"),
        );
        let err = format!("{:#}", CaseSet::open(dir.path()).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_folder_without_cases_or_label_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = CaseSet::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(CASES_FILE) && err.contains(LABEL_FILE),
            "{err}"
        );
    }

    #[test]
    fn the_case_filter_selects_by_id_substring() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("case_id,fault_start_unix_s,root_cause_service\n");
        for id in ["a-1", "a-2", "b-1"] {
            csv.push_str(&format!("{id},1000,cart\n"));
            std::fs::create_dir_all(dir.path().join(id)).unwrap();
        }
        write(&dir.path().join(CASES_FILE), &csv);
        let set = CaseSet::open(dir.path()).unwrap();
        let options = EvalOptions {
            case_filter: Some("b-,a-2".into()),
            ..EvalOptions::default()
        };
        let ids: Vec<&str> = set.selected(&options).map(|c| c.case_id.as_str()).collect();
        assert_eq!(ids, ["a-2", "b-1"]);
    }

    #[test]
    fn the_label_and_readme_are_not_read_as_telemetry() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join(LABEL_FILE), LABEL);
        write(&dir.path().join("README.md"), "# notes\n");
        let change =
            r#"{"id":"d1","time":"2024-06-03T10:00:00Z","type":"deployment","service":"cart"}"#;
        write(&dir.path().join("sub").join("changes.jsonl"), change);
        let events = read_case_files(dir.path()).unwrap();
        assert_eq!(events.len(), 1);
    }
}
