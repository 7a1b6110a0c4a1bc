//! The dataset root: labelled cases and where each date's files are.

use crate::csvio::{cell, open_csv};
use crate::error::{NezhaError, Result};
use csv::ByteRecord;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One labelled fault case from `labels/cases.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub date: String,
    /// Injection time, epoch seconds UTC (the `inject_unix_s` column; the upstream raw field is
    /// wrong by 8 h in many cases and is ignored).
    pub inject_unix_s: i64,
    pub root_cause_service: String,
    pub root_cause_pod: String,
    pub fault_type: String,
    /// `code` or `resource`.
    pub fault_category: String,
    /// Inner-service label (code region or resource metric), when the file has the column.
    pub inner_service_label: Option<String>,
    /// The minute files (`HH_MM`) covering the fault; empty when the column is absent (metrics-only
    /// datasets).
    pub minute_files: Vec<String>,
}

/// Which per-minute file family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Log,
    Trace,
}

impl Kind {
    /// Folder name in the dataset (`log`, `trace`), also the file suffix.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Log => "log",
            Kind::Trace => "trace",
        }
    }

    /// Folder name in the OTLP output (`logs`, `traces`).
    pub fn signal(self) -> &'static str {
        match self {
            Kind::Log => "logs",
            Kind::Trace => "traces",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
}

impl Dataset {
    /// Opens a dataset root; fails when `labels/cases.csv` is missing, since without labels the
    /// folder is not a dataset this crate understands.
    pub fn open(root: impl AsRef<Path>) -> Result<Dataset> {
        let root = root.as_ref().to_path_buf();
        let labels = root.join("labels").join("cases.csv");
        if !labels.is_file() {
            return Err(NezhaError::MissingLabels { path: labels });
        }
        Ok(Dataset { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn labels_path(&self) -> PathBuf {
        self.root.join("labels").join("cases.csv")
    }

    /// All labelled cases, in file order. Columns after `fault_category` are optional.
    pub fn cases(&self) -> Result<Vec<Case>> {
        let mut f = open_csv(&self.labels_path())?;
        let c_id = f.column("case_id")?;
        let c_date = f.column("date")?;
        let c_inject = f.column("inject_unix_s")?;
        let c_service = f.column("root_cause_service")?;
        let c_pod = f.column("root_cause_pod")?;
        let c_type = f.column("fault_type")?;
        let c_category = f.column("fault_category")?;
        let c_inner = f.find("inner_service_label");
        let c_minutes = f.find("minute_files");
        let mut cases = Vec::new();
        let mut rec = ByteRecord::new();
        while f.next(&mut rec)? {
            if rec.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
                continue; // blank line
            }
            let get = |i: usize| cell(&rec, i).to_string();
            let inject = cell(&rec, c_inject);
            // A label is what every score is judged against: a bad one fails loudly.
            let inject_unix_s = inject
                .parse::<i64>()
                .map_err(|_| f.row_error(&rec, format!("bad inject_unix_s '{inject}'")))?;
            let id = get(c_id);
            if id.is_empty() {
                return Err(f.row_error(&rec, "empty case_id"));
            }
            cases.push(Case {
                id,
                date: get(c_date),
                inject_unix_s,
                root_cause_service: get(c_service),
                root_cause_pod: get(c_pod),
                fault_type: get(c_type),
                fault_category: get(c_category),
                inner_service_label: c_inner.map(get).filter(|s| !s.is_empty()),
                minute_files: c_minutes
                    .map(|i| {
                        cell(&rec, i)
                            .split(';')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(cases)
    }

    /// Every date folder under `rca_data/`, sorted.
    pub fn dates(&self) -> Vec<String> {
        subdirs(&self.root.join("rca_data"))
    }

    pub fn date_dir(&self, date: &str) -> PathBuf {
        self.root.join("rca_data").join(date)
    }

    /// The folder of a date's metric files (`rca_data/<date>/metric`).
    pub fn metric_dir(&self, date: &str) -> PathBuf {
        self.date_dir(date).join("metric")
    }

    /// Whether the date has per-minute log and trace files (metrics-only datasets do not).
    pub fn has_logs_and_traces(&self, date: &str) -> bool {
        !self.minutes(date, Kind::Log).is_empty() && !self.minutes(date, Kind::Trace).is_empty()
    }

    /// Minute names (`HH_MM`) with a file of this kind under `rca_data/<date>`, sorted.
    pub fn minutes(&self, date: &str, kind: Kind) -> Vec<String> {
        minute_names(&self.date_dir(date).join(kind.dir()), kind)
    }

    /// `rca_data/<date>/<kind>/<minute>_<kind>.csv.gz` (or `.csv`), when present.
    pub fn minute_file(&self, date: &str, kind: Kind, minute: &str) -> Option<PathBuf> {
        find_minute_file(&self.date_dir(date).join(kind.dir()), kind, minute)
    }

    /// Minute names present under `construct_data/<date>/log` or `trace` (the fault-free
    /// reference window), sorted.
    pub fn reference_minutes(&self, date: &str) -> Vec<String> {
        let base = self.root.join("construct_data").join(date);
        let mut minutes = minute_names(&base.join("log"), Kind::Log);
        minutes.extend(minute_names(&base.join("trace"), Kind::Trace));
        minutes.sort();
        minutes.dedup();
        minutes
    }

    /// `construct_data/<date>/<kind>/<minute>_<kind>.csv.gz` (or `.csv`), when present.
    pub fn reference_file(&self, date: &str, kind: Kind, minute: &str) -> Option<PathBuf> {
        let dir = self.root.join("construct_data").join(date).join(kind.dir());
        find_minute_file(&dir, kind, minute)
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn minute_names(dir: &Path, kind: Kind) -> Vec<String> {
    let suffix = format!("_{}.csv", kind.dir());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|name| {
            let stem = name.strip_suffix(".gz").unwrap_or(&name);
            stem.strip_suffix(suffix.as_str()).map(str::to_string)
        })
        .filter(|m| !m.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn find_minute_file(dir: &Path, kind: Kind, minute: &str) -> Option<PathBuf> {
    ["csv.gz", "csv"]
        .iter()
        .map(|ext| dir.join(format!("{minute}_{}.{ext}", kind.dir())))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_labels(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("labels")).unwrap();
        std::fs::write(dir.path().join("labels/cases.csv"), text).unwrap();
        dir
    }

    const SHORT_HEADER: &str = "case_id,date,inject_time_utc,inject_unix_s,root_cause_service,\
                                root_cause_pod,fault_type,fault_category\n";

    #[test]
    fn open_without_labels_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("labels/cases.csv"), "{err}");
    }

    #[test]
    fn cases_without_minute_files_column_load_with_empty_minutes() {
        let dir = root_with_labels(&format!(
            "{SHORT_HEADER}c1,2022-08-22,x,1661140434,frontend,frontend-5f-ab,cpu_contention,resource\n"
        ));
        let cases = Dataset::open(dir.path()).unwrap().cases().unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].inject_unix_s, 1_661_140_434);
        assert!(cases[0].minute_files.is_empty() && cases[0].inner_service_label.is_none());
    }

    #[test]
    fn bad_inject_time_fails_naming_file_and_line() {
        let dir = root_with_labels(&format!(
            "{SHORT_HEADER}c1,d,x,1,s,p,t,code\nc2,d,x,yesterday,s,p,t,code\n"
        ));
        let err = Dataset::open(dir.path())
            .unwrap()
            .cases()
            .unwrap_err()
            .to_string();
        assert!(err.contains("cases.csv") && err.contains("line 3"), "{err}");
        assert!(err.contains("'yesterday'"), "{err}");
    }

    #[test]
    fn minute_and_reference_files_are_discovered_from_the_folders() {
        let dir = root_with_labels(SHORT_HEADER);
        let touch = |p: &str| {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        };
        touch("rca_data/d1/log/01_02_log.csv.gz");
        touch("rca_data/d1/trace/01_02_trace.csv");
        touch("rca_data/d2/metric/x_metric.csv.gz");
        touch("construct_data/d1/log/00_50_log.csv.gz");
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.dates(), vec!["d1", "d2"]);
        assert!(ds.has_logs_and_traces("d1") && !ds.has_logs_and_traces("d2"));
        assert!(ds
            .minute_file("d1", Kind::Trace, "01_02")
            .unwrap()
            .ends_with("01_02_trace.csv"));
        assert_eq!(ds.minute_file("d1", Kind::Log, "01_03"), None);
        assert_eq!(ds.reference_minutes("d1"), vec!["00_50"]);
        assert!(ds.reference_file("d1", Kind::Log, "00_50").is_some());
        assert_eq!(ds.reference_file("d1", Kind::Trace, "00_50"), None);
    }
}
