//! The history: every piece of operator feedback and every baseline recalculation, appended in
//! the order they happened and never rewritten.
//!
//! Feedback is kept per post, with its author (the token's name) and time. An incident's latest
//! post is its answer ([`HistoryItem::latest`]); earlier ones stay visible as superseded. Feedback
//! given while an incident is still open is *provisional*: shown, but not learned from, until the
//! incident resolves ([`HistoryStore::resolve`]). Only the latest final answer of each incident
//! is matched against new incidents ([`HistoryStore::similar`]): once final, it is written to the
//! incidents collection ([`IncidentIndex`]), which similar incidents are searched in.
//!
//! [`MemoryHistoryStore`] keeps entries in memory and, optionally, appends them to a JSON-lines
//! file it reloads at start (and refills a short incidents collection from). A resolution is
//! stored as its own line, so the file stays append-only; lines written before this format (one
//! confirmed cause per line, without a `kind`) still load.

use crate::feedback::Cause;
use crate::incident_index::IncidentIndex;
use crate::profile::IncidentProfile;
use crate::{ApiError, RecalcRange};
use culprit_core::{PastIncidents, RcaAlert, SimilarIncident, SourceKind, UnixNanos};
use culprit_store::PointId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// One post of operator feedback: what the cause of an incident really was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub incident_id: String,
    pub environment: String,
    pub started_at: UnixNanos,
    pub summary: String,
    /// A service of the incident's graph, or `other: <text>`.
    pub cause: Cause,
    /// Where culprit ranked the named service; absent for `other` and unranked services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// The name of the token the feedback was posted with.
    pub author: String,
    /// Wall-clock time of the post, nanoseconds since the Unix epoch.
    pub at: UnixNanos,
    /// Posted while the incident was open and not resolved since: not learned from yet.
    #[serde(default)]
    pub provisional: bool,
    /// Signals of the named service's evidence, strongest first.
    #[serde(default)]
    pub evidence_signals: Vec<String>,
    /// Every service the incident touched, sorted.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The incident's evidence profile when the feedback was given (absent in records written
    /// before profiles existed, which are matched by their services and signals instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<IncidentProfile>,
}

impl FeedbackRecord {
    /// The record of `cause` given by `author` at `at` on `alert` as it is now.
    pub fn new(
        alert: &RcaAlert,
        cause: Cause,
        author: &str,
        at: UnixNanos,
        note: Option<String>,
    ) -> FeedbackRecord {
        let named = cause.service();
        let rank = named.and_then(|s| {
            alert
                .root_causes
                .iter()
                .find(|c| c.service == s)
                .map(|c| c.rank)
        });
        let mut seen = BTreeSet::new();
        let evidence_signals = alert
            .root_causes
            .iter()
            .flat_map(|c| &c.evidence)
            .filter(|a| Some(a.service.as_str()) == named)
            .filter(|a| seen.insert(a.signal.clone()))
            .map(|a| a.signal.to_string())
            .collect();
        let services: BTreeSet<String> = alert
            .affected_services
            .values()
            .flatten()
            .cloned()
            .chain(alert.root_causes.iter().map(|c| c.service.clone()))
            .collect();
        FeedbackRecord {
            incident_id: alert.incident_id.clone(),
            environment: alert.environment.clone(),
            started_at: alert.started_at,
            summary: alert.summary.clone(),
            rank,
            author: author.to_string(),
            at,
            provisional: alert.status == culprit_core::IncidentStatus::Open,
            evidence_signals,
            services: services.into_iter().collect(),
            note,
            profile: Some(IncidentProfile::of(alert)),
            cause,
        }
    }

    /// How much this past incident resembles the one `query` describes, in [0, 1.5]: the cosine
    /// of the two evidence profiles when both have one (below [`MIN_PROFILE_SIMILARITY`] counts as
    /// unrelated), otherwise the Jaccard overlap of services and signals plus a bonus when the
    /// confirmed cause is among them; halved for another environment. 0 means unrelated.
    pub fn similarity(&self, query: &SimilarQuery) -> f64 {
        let env_factor = if self.environment == query.environment {
            1.0
        } else {
            0.5
        };
        if let (Some(own), Some(wanted)) = (&self.profile, &query.profile) {
            let cosine = own.cosine(wanted);
            return if cosine >= MIN_PROFILE_SIMILARITY {
                cosine * env_factor
            } else {
                0.0
            };
        }
        let wanted: BTreeSet<&str> = query.terms.iter().map(String::as_str).collect();
        let own: BTreeSet<&str> = self
            .services
            .iter()
            .chain(&self.evidence_signals)
            .map(String::as_str)
            .chain(self.cause.service())
            .collect();
        let overlap = wanted.intersection(&own).count();
        if overlap == 0 {
            return 0.0;
        }
        let jaccard = overlap as f64 / wanted.union(&own).count() as f64;
        let root_bonus = match self.cause.service() {
            Some(s) if wanted.contains(s) => 0.5,
            _ => 0.0,
        };
        (jaccard + root_bonus) * env_factor
    }
}

/// Profiles less alike than this share little more than hash collisions and a common signal
/// family: such a past incident is not offered as similar.
pub const MIN_PROFILE_SIMILARITY: f64 = 0.25;

/// What [`HistoryStore::similar`] looks for: an incident's environment, its evidence profile, and
/// its services and signals (for records without a profile).
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarQuery {
    pub environment: String,
    pub terms: Vec<String>,
    pub profile: Option<IncidentProfile>,
}

impl SimilarQuery {
    /// Past incidents like `alert`: by its profile, and by its services and evidence signals.
    pub fn of_alert(alert: &RcaAlert) -> SimilarQuery {
        let mut terms: Vec<String> = alert
            .affected_services
            .values()
            .flatten()
            .cloned()
            .chain(alert.root_causes.iter().map(|c| c.service.clone()))
            .chain(
                alert
                    .root_causes
                    .iter()
                    .flat_map(|c| &c.evidence)
                    .map(|a| a.signal.to_string()),
            )
            .collect();
        terms.sort();
        terms.dedup();
        SimilarQuery {
            environment: alert.environment.clone(),
            terms,
            profile: Some(IncidentProfile::of(alert)),
        }
    }

    /// Past incidents touching `terms` (services or signals) in `environment`.
    pub fn terms(environment: &str, terms: &[String]) -> SimilarQuery {
        SimilarQuery {
            environment: environment.to_string(),
            terms: terms.to_vec(),
            profile: None,
        }
    }
}

/// One recalculation of a service's baselines, by an operator or the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalculationRecord {
    pub service: String,
    /// Only this source's baselines; all of the service's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceKind>,
    pub range: RecalcRange,
    /// The token's name, or `schedule`.
    pub author: String,
    pub at: UnixNanos,
    /// Baselines that were reset.
    pub baselines: usize,
    /// What the detectors said they did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    Feedback(FeedbackRecord),
    Recalculation(RecalculationRecord),
}

impl HistoryEntry {
    pub fn at(&self) -> UnixNanos {
        match self {
            HistoryEntry::Feedback(f) => f.at,
            HistoryEntry::Recalculation(r) => r.at,
        }
    }

    pub fn kind(&self) -> HistoryKind {
        match self {
            HistoryEntry::Feedback(_) => HistoryKind::Feedback,
            HistoryEntry::Recalculation(_) => HistoryKind::Recalculation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    Feedback,
    Recalculation,
}

/// An entry as listed: feedback says whether it is its incident's latest answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub entry: HistoryEntry,
    /// For feedback: whether this is the latest post on its incident (the one that counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<bool>,
}

/// Which entries a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFilter {
    /// Feedback whose cause is, or whose incident touched, this service; recalculations of it.
    pub service: Option<String>,
    /// Feedback on this incident.
    pub incident: Option<String>,
    pub kind: Option<HistoryKind>,
}

impl HistoryFilter {
    fn matches(&self, entry: &HistoryEntry) -> bool {
        if self.kind.is_some_and(|k| k != entry.kind()) {
            return false;
        }
        match entry {
            HistoryEntry::Feedback(f) => {
                self.incident.as_ref().is_none_or(|i| *i == f.incident_id)
                    && self.service.as_ref().is_none_or(|s| {
                        f.cause.service() == Some(s.as_str()) || f.services.contains(s)
                    })
            }
            HistoryEntry::Recalculation(r) => {
                self.incident.is_none() && self.service.as_ref().is_none_or(|s| *s == r.service)
            }
        }
    }
}

/// Where the history is kept and searched.
#[async_trait::async_trait]
pub trait HistoryStore: PastIncidents + Send + Sync {
    /// Appends an entry; nothing earlier is replaced.
    async fn append(&self, entry: HistoryEntry) -> Result<(), ApiError>;
    /// `incident_id` has resolved: its provisional feedback becomes final. Returns how many
    /// entries changed.
    async fn resolve(&self, incident_id: &str, at: UnixNanos) -> Result<usize, ApiError>;
    /// Entries matching `filter`, newest first.
    async fn entries(
        &self,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, ApiError>;
    /// Past incidents most like the one `query` describes, best first: the latest final answer
    /// of each, with its similarity ([`FeedbackRecord::similarity`]). Incidents with a profile
    /// are searched in the incidents collection, in the query's environment only;
    /// [`ApiError::IncidentSearch`] when that search fails.
    async fn similar(
        &self,
        query: &SimilarQuery,
        limit: usize,
    ) -> Result<Vec<FeedbackRecord>, ApiError>;
}

/// A line of the history file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Feedback(FeedbackRecord),
    Recalculation(RecalculationRecord),
    Resolved { incident_id: String, at: UnixNanos },
}

/// A confirmed cause as files before the history format held it (one line per incident).
#[derive(Debug, Deserialize)]
struct LegacyConfirmation {
    incident_id: String,
    environment: String,
    root_cause_service: String,
    confirmed_by: String,
    confirmed_at: UnixNanos,
    started_at: UnixNanos,
    summary: String,
    evidence_signals: Vec<String>,
    services: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

impl From<LegacyConfirmation> for FeedbackRecord {
    fn from(l: LegacyConfirmation) -> FeedbackRecord {
        FeedbackRecord {
            incident_id: l.incident_id,
            environment: l.environment,
            started_at: l.started_at,
            summary: l.summary,
            cause: Cause::Service(l.root_cause_service),
            rank: None,
            author: l.confirmed_by,
            at: l.confirmed_at,
            provisional: false,
            evidence_signals: l.evidence_signals,
            services: l.services,
            note: l.note,
            profile: None,
        }
    }
}

fn parse_line(line: &str) -> Result<Line, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    if value.get("kind").is_some() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value::<LegacyConfirmation>(value).map(|l| Line::Feedback(l.into()))
    }
}

#[derive(Debug, Default)]
struct Entries {
    /// Oldest first.
    list: Vec<HistoryEntry>,
}

impl Entries {
    fn push(&mut self, entry: HistoryEntry, max: usize) {
        self.list.push(entry);
        if self.list.len() > max {
            let excess = self.list.len() - max;
            self.list.drain(..excess);
        }
    }

    fn resolve(&mut self, incident_id: &str) -> usize {
        let mut changed = 0;
        for entry in &mut self.list {
            if let HistoryEntry::Feedback(f) = entry {
                if f.provisional && f.incident_id == incident_id {
                    f.provisional = false;
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Each incident's latest final answer.
    fn final_answers(&self) -> HashMap<&str, &FeedbackRecord> {
        let mut answers = HashMap::new();
        for entry in &self.list {
            if let HistoryEntry::Feedback(f) = entry {
                if !f.provisional {
                    answers.insert(f.incident_id.as_str(), f);
                }
            }
        }
        answers
    }

    /// Index in `list` of each incident's latest feedback.
    fn latest(&self) -> HashMap<&str, usize> {
        let mut latest = HashMap::new();
        for (i, entry) in self.list.iter().enumerate() {
            if let HistoryEntry::Feedback(f) = entry {
                latest.insert(f.incident_id.as_str(), i);
            }
        }
        latest
    }
}

/// How many more points a search asks for than it needs: hits whose incident this history does
/// not hold (past `max_entries`, or written by another process) are skipped.
const SEARCH_SLACK: usize = 2;

/// The embedded [`HistoryStore`]: entries in memory, optionally appended to a JSON-lines file
/// and reloaded from it at start, with an [`IncidentIndex`] for similar incidents.
#[derive(Debug)]
pub struct MemoryHistoryStore {
    entries: RwLock<Entries>,
    /// Serialises appends so lines never interleave.
    file: Mutex<Option<(PathBuf, std::fs::File)>>,
    max_entries: usize,
    index: IncidentIndex,
    /// Serialises writes to the index, so the point written last is the latest answer.
    indexing: tokio::sync::Mutex<()>,
}

impl MemoryHistoryStore {
    /// A store that keeps nothing on disk, its incidents collection in memory.
    pub fn in_memory(max_entries: usize) -> MemoryHistoryStore {
        MemoryHistoryStore::in_memory_with_index(max_entries, IncidentIndex::in_memory())
    }

    /// A store that keeps nothing on disk, searching similar incidents in `index`.
    pub fn in_memory_with_index(max_entries: usize, index: IncidentIndex) -> MemoryHistoryStore {
        MemoryHistoryStore {
            entries: RwLock::default(),
            file: Mutex::new(None),
            max_entries: max_entries.max(1),
            index,
            indexing: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads `path` (if it exists) and appends every new entry to it; the incidents collection
    /// is in memory, filled from the file.
    pub fn open(path: &Path, max_entries: usize) -> Result<MemoryHistoryStore, ApiError> {
        MemoryHistoryStore::open_with_index(path, max_entries, IncidentIndex::in_memory())
    }

    /// [`MemoryHistoryStore::open`], searching similar incidents in `index`, which is filled
    /// from the file when it holds fewer incidents than the file has final answers. A failure
    /// to fill it is logged, not an error: the history still opens.
    pub fn open_with_index(
        path: &Path,
        max_entries: usize,
        index: IncidentIndex,
    ) -> Result<MemoryHistoryStore, ApiError> {
        let store = MemoryHistoryStore::in_memory_with_index(max_entries, index);
        let io = |source| ApiError::History {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut entries = store.entries.write().unwrap_or_else(|p| p.into_inner());
                let complete = text.ends_with('\n');
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    match parse_line(line) {
                        Ok(Line::Feedback(f)) => {
                            entries.push(HistoryEntry::Feedback(f), store.max_entries)
                        }
                        Ok(Line::Recalculation(r)) => {
                            entries.push(HistoryEntry::Recalculation(r), store.max_entries)
                        }
                        Ok(Line::Resolved { incident_id, .. }) => {
                            entries.resolve(&incident_id);
                        }
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
        store.fill_index();
        Ok(store)
    }

    fn fill_index(&self) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let answers: Vec<&FeedbackRecord> = entries.final_answers().into_values().collect();
        match self.index.fill(&answers) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                incidents = n,
                "filled the incidents collection from the history"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot fill the incidents collection from the history; similar incidents may be missing until the next start")
            }
        }
    }

    /// Writes `incident_id`'s latest final answer to the incidents collection. A failure is
    /// logged: the feedback is in the history already, and the next start refills the
    /// collection if the point is missing.
    async fn index_answer(&self, incident_id: &str) {
        let _turn = self.indexing.lock().await;
        let answer = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .final_answers()
            .get(incident_id)
            .map(|f| (*f).clone());
        let Some(answer) = answer else {
            return;
        };
        if let Err(e) = self.index.put(&answer).await {
            tracing::error!(incident_id, error = %e, "cannot write the incident to the incidents collection");
        }
    }

    fn write_line(&self, line: &Line) -> Result<(), ApiError> {
        // A line of JSON to a local file: short enough to do inline rather than on a blocking thread.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((path, f)) = file.as_mut() {
            let mut bytes = serde_json::to_vec(line).expect("a history line always serialises");
            bytes.push(b'\n');
            f.write_all(&bytes)
                .and_then(|_| f.flush())
                .map_err(|source| ApiError::History {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl HistoryStore for MemoryHistoryStore {
    async fn append(&self, entry: HistoryEntry) -> Result<(), ApiError> {
        let line = match &entry {
            HistoryEntry::Feedback(f) => Line::Feedback(f.clone()),
            HistoryEntry::Recalculation(r) => Line::Recalculation(r.clone()),
        };
        self.write_line(&line)?;
        let answered = match &entry {
            HistoryEntry::Feedback(f) if !f.provisional => Some(f.incident_id.clone()),
            _ => None,
        };
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry, self.max_entries);
        if let Some(incident_id) = answered {
            self.index_answer(&incident_id).await;
        }
        Ok(())
    }

    async fn resolve(&self, incident_id: &str, at: UnixNanos) -> Result<usize, ApiError> {
        let provisional = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .iter()
            .any(|e| matches!(e, HistoryEntry::Feedback(f) if f.provisional && f.incident_id == incident_id));
        if !provisional {
            return Ok(0);
        }
        self.write_line(&Line::Resolved {
            incident_id: incident_id.to_string(),
            at,
        })?;
        let changed = self
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(incident_id);
        self.index_answer(incident_id).await;
        Ok(changed)
    }

    async fn entries(
        &self,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, ApiError> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let latest = entries.latest();
        let mut items: Vec<(usize, &HistoryEntry)> = entries
            .list
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(e))
            .collect();
        // Newest first; entries of the same instant keep the order they were appended in.
        items.sort_by(|a, b| b.1.at().cmp(&a.1.at()).then(b.0.cmp(&a.0)));
        Ok(items
            .into_iter()
            .take(limit)
            .map(|(i, e)| HistoryItem {
                latest: match e {
                    HistoryEntry::Feedback(f) => {
                        Some(latest.get(f.incident_id.as_str()) == Some(&i))
                    }
                    HistoryEntry::Recalculation(_) => None,
                },
                entry: e.clone(),
            })
            .collect())
    }

    async fn similar(
        &self,
        query: &SimilarQuery,
        limit: usize,
    ) -> Result<Vec<FeedbackRecord>, ApiError> {
        let hits = match &query.profile {
            Some(profile) => self
                .index
                .nearest(profile, &query.environment, search_size(limit))
                .await
                .map_err(ApiError::IncidentSearch)?,
            None => Vec::new(),
        };
        Ok(self
            .ranked(query, limit, None, &hits)
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }
}

/// Points to ask the collection for, to answer `limit` incidents besides the one asking.
fn search_size(limit: usize) -> usize {
    (limit + 1) * SEARCH_SLACK
}

impl MemoryHistoryStore {
    /// The latest final answers of the `limit` past incidents most like `query`, other than
    /// `except`, best first, with their similarity: those the collection found (`hits`, with
    /// their cosine), and those without a profile, matched here by services and signals.
    fn ranked(
        &self,
        query: &SimilarQuery,
        limit: usize,
        except: Option<&str>,
        hits: &[(PointId, f64)],
    ) -> Vec<(f64, FeedbackRecord)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let answers = entries.final_answers();
        let by_point: HashMap<PointId, &FeedbackRecord> = answers
            .values()
            .filter(|f| IncidentIndex::indexes(f))
            .map(|f| (IncidentIndex::point_id(&f.incident_id), *f))
            .collect();
        let found = hits
            .iter()
            .filter(|(_, cosine)| *cosine >= MIN_PROFILE_SIMILARITY)
            .filter_map(|(id, cosine)| Some((*cosine, *by_point.get(id)?)));
        // A query without a profile matches every answer by overlap, as before the collection.
        let unindexed = answers
            .values()
            .filter(|f| query.profile.is_none() || !IncidentIndex::indexes(f))
            .map(|f| (f.similarity(query), *f));
        let mut scored: Vec<(f64, &FeedbackRecord)> = found
            .chain(unindexed)
            .filter(|(s, f)| *s > 0.0 && except != Some(f.incident_id.as_str()))
            .collect();
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.started_at.cmp(&a.1.started_at))
                .then(a.1.incident_id.cmp(&b.1.incident_id))
        });
        scored
            .into_iter()
            .take(limit)
            .map(|(s, f)| (s, f.clone()))
            .collect()
    }
}

impl PastIncidents for MemoryHistoryStore {
    fn most_similar(&self, alert: &RcaAlert, limit: usize) -> Vec<SimilarIncident> {
        let query = SimilarQuery::of_alert(alert);
        let hits = match &query.profile {
            Some(profile) => {
                match self
                    .index
                    .nearest_blocking(profile, &query.environment, search_size(limit))
                {
                    Ok(hits) => hits,
                    Err(e) => {
                        tracing::warn!(incident_id = %alert.incident_id, error = %e, "cannot search the incidents collection; the alert carries no similar incidents");
                        return Vec::new();
                    }
                }
            }
            None => Vec::new(),
        };
        self.ranked(&query, limit, Some(&alert.incident_id), &hits)
            .into_iter()
            .map(|(similarity, f)| SimilarIncident {
                confirmed_cause: f.cause.to_string(),
                incident_id: f.incident_id,
                started_at: f.started_at,
                summary: f.summary,
                // Records without a profile score up to 1.5 by overlap (see `similarity`).
                similarity: similarity.min(1.0),
            })
            .collect()
    }
}
