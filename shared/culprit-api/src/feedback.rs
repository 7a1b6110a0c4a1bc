//! Operator feedback: a confirmed root cause becomes a [`HistoryRecord`] that later incidents
//! can be compared with.

use crate::ApiError;
use culprit_core::{RcaAlert, UnixNanos};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The body of `POST /incidents/{id}/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// The service the operator judged: the real root cause, or the candidate they reject.
    pub root_cause_service: String,
    pub verdict: Verdict,
    /// Who gave the verdict.
    pub operator: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Confirmed,
    Rejected,
}

/// One resolved incident whose root cause an operator confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub incident_id: String,
    pub environment: String,
    pub root_cause_service: String,
    pub confirmed_by: String,
    /// Wall-clock time of the confirmation, nanoseconds since the Unix epoch.
    pub confirmed_at: UnixNanos,
    pub started_at: UnixNanos,
    pub summary: String,
    /// Signals of the confirmed service's evidence, strongest first.
    pub evidence_signals: Vec<String>,
    /// Every service the incident touched, sorted.
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl HistoryRecord {
    pub fn from_confirmation(
        alert: &RcaAlert,
        feedback: &Feedback,
        confirmed_at: UnixNanos,
    ) -> HistoryRecord {
        let mut seen = BTreeSet::new();
        let evidence_signals = alert
            .root_causes
            .iter()
            .flat_map(|c| &c.evidence)
            .filter(|a| a.service == feedback.root_cause_service)
            .filter(|a| seen.insert(a.signal.clone()))
            .map(|a| a.signal.clone())
            .collect();
        let services: BTreeSet<String> = alert
            .affected_services
            .values()
            .flatten()
            .cloned()
            .chain(alert.root_causes.iter().map(|c| c.service.clone()))
            .collect();
        HistoryRecord {
            incident_id: alert.incident_id.clone(),
            environment: alert.environment.clone(),
            root_cause_service: feedback.root_cause_service.clone(),
            confirmed_by: feedback.operator.clone(),
            confirmed_at,
            started_at: alert.started_at,
            summary: alert.summary.clone(),
            evidence_signals,
            services: services.into_iter().collect(),
            note: feedback.note.clone(),
        }
    }

    /// How much this past incident resembles one touching `terms` (services or signals) in
    /// `environment`: Jaccard overlap, plus a bonus when its confirmed root cause is among the
    /// terms, halved for another environment. 0 means unrelated.
    pub fn similarity(&self, environment: &str, terms: &[String]) -> f64 {
        let query: BTreeSet<&str> = terms.iter().map(String::as_str).collect();
        let own: BTreeSet<&str> = self
            .services
            .iter()
            .chain(&self.evidence_signals)
            .map(String::as_str)
            .chain([self.root_cause_service.as_str()])
            .collect();
        let overlap = query.intersection(&own).count();
        if overlap == 0 {
            return 0.0;
        }
        let jaccard = overlap as f64 / query.union(&own).count() as f64;
        let root_bonus = if query.contains(self.root_cause_service.as_str()) {
            0.5
        } else {
            0.0
        };
        let env_factor = if self.environment == environment {
            1.0
        } else {
            0.5
        };
        (jaccard + root_bonus) * env_factor
    }
}

/// Where confirmed root causes are kept and searched.
#[async_trait::async_trait]
pub trait FeedbackStore: Send + Sync {
    /// Keeps a record; a later confirmation of the same incident replaces the earlier one.
    async fn record(&self, record: HistoryRecord) -> Result<(), ApiError>;
    /// Records whose root cause is `service` first, then those that merely touched it; newest
    /// first within each. All records when `service` is `None`.
    async fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, ApiError>;
    /// Past incidents most like one touching `services` (or signals) in `environment`, best first.
    async fn similar(
        &self,
        environment: &str,
        services: &[String],
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, ApiError>;
}

/// The embedded [`FeedbackStore`]: a vector in memory, optionally appended to a JSON-lines file
/// and reloaded from it at start.
#[derive(Debug)]
pub struct MemoryFeedbackStore {
    records: RwLock<Vec<HistoryRecord>>,
    /// Serialises appends so lines never interleave.
    file: Mutex<Option<(PathBuf, std::fs::File)>>,
    max_records: usize,
}

impl MemoryFeedbackStore {
    /// A store that keeps nothing on disk.
    pub fn in_memory(max_records: usize) -> MemoryFeedbackStore {
        MemoryFeedbackStore {
            records: RwLock::default(),
            file: Mutex::new(None),
            max_records: max_records.max(1),
        }
    }

    /// Loads `path` (if it exists) and appends every new record to it.
    pub fn open(path: &Path, max_records: usize) -> Result<MemoryFeedbackStore, ApiError> {
        let store = MemoryFeedbackStore::in_memory(max_records);
        let io = |source| ApiError::History {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut records = store.records.write().unwrap_or_else(|p| p.into_inner());
                let complete = text.ends_with('\n');
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    match serde_json::from_str::<HistoryRecord>(line) {
                        Ok(r) => upsert(&mut records, r, store.max_records),
                        // A crash mid-append leaves a torn last line: drop it, keep the rest.
                        Err(e) if i + 1 == lines.len() && !complete => {
                            tracing::warn!(path = %path.display(), error = %e, "skipping a torn last history line");
                        }
                        Err(source) => {
                            return Err(ApiError::HistoryLine {
                                path: path.to_path_buf(),
                                line: i + 1,
                                source,
                            })
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        *store.file.lock().unwrap_or_else(|p| p.into_inner()) = Some((path.to_path_buf(), file));
        Ok(store)
    }
}

fn upsert(records: &mut Vec<HistoryRecord>, record: HistoryRecord, max: usize) {
    records.retain(|r| r.incident_id != record.incident_id);
    records.push(record);
    if records.len() > max {
        let excess = records.len() - max;
        records.drain(..excess);
    }
}

#[async_trait::async_trait]
impl FeedbackStore for MemoryFeedbackStore {
    async fn record(&self, record: HistoryRecord) -> Result<(), ApiError> {
        {
            // A line of JSON to a local file: short enough to do inline rather than on a blocking thread.
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((path, f)) = file.as_mut() {
                let mut line =
                    serde_json::to_vec(&record).expect("a history record always serialises");
                line.push(b'\n');
                f.write_all(&line)
                    .and_then(|_| f.flush())
                    .map_err(|source| ApiError::History {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        upsert(&mut records, record, self.max_records);
        Ok(())
    }

    async fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, ApiError> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        let mut hits: Vec<(bool, &HistoryRecord)> = records
            .iter()
            .filter_map(|r| match service {
                None => Some((true, r)),
                Some(s) if r.root_cause_service == s => Some((true, r)),
                Some(s) if r.services.iter().any(|x| x == s) => Some((false, r)),
                Some(_) => None,
            })
            .collect();
        hits.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.started_at.cmp(&a.1.started_at)));
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn similar(
        &self,
        environment: &str,
        services: &[String],
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, ApiError> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        let mut scored: Vec<(f64, &HistoryRecord)> = records
            .iter()
            .map(|r| (r.similarity(environment, services), r))
            .filter(|(s, _)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.started_at.cmp(&a.1.started_at))
        });
        Ok(scored
            .into_iter()
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }
}
