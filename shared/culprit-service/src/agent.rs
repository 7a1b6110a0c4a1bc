//! `culprit agent <alerts.jsonl>`: the LLM agent's review of stored alerts; and the agent's
//! wiring into `replay --llm`, `eval nezha --llm` and the correlator service.
//!
//! Everything here only gathers evidence and hands it to `culprit_agent::Reviewer`; what the
//! agent does with it (limits, redaction, merging, fallbacks) lives in that crate.

use crate::config::CulpritConfig;
use anyhow::{Context, Result};
use culprit_agent::{IncidentEvidence, LlmConfig, LlmMode, PastIncident, Review, Reviewer};
use culprit_api::{FeedbackRecord, HistoryStore, MemoryHistoryStore, SimilarQuery};
use culprit_core::{Anomaly, Event, LlmReviewStatus, RcaAlert};
use culprit_sink::AlertSink;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Confirmed past incidents offered to the agent per review.
const SIMILAR_INCIDENTS: usize = 5;

/// What `culprit agent` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ReviewFile {
    /// A JSON-lines file of RCA alerts (`alerts.jsonl`); the latest revision of each incident is
    /// reviewed.
    pub alerts: PathBuf,
    /// Write the exact requests that would be sent (and every tool's result) instead of calling
    /// the endpoint.
    pub dry_run: bool,
    /// Review every incident, whatever its confidence.
    pub all: bool,
    /// File for the reviewed alerts (with `dry_run`: the requests); stdout when unset.
    pub out: Option<PathBuf>,
}

/// Reviews the stored alerts of a file with the LLM agent.
pub fn review_file(args: ReviewFile, config: &CulpritConfig) -> Result<()> {
    let alerts = read_alerts(&args.alerts)?;
    let mut llm = config.llm.clone();
    llm.enabled = true;
    if args.dry_run {
        llm.mode = LlmMode::PromptOnly;
    }
    if args.all {
        llm.min_confidence = 1.0;
    }
    let reviewer = Reviewer::new(llm).context("setting up the LLM agent")?;
    let history = open_history(config)?;
    let runtime = runtime()?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut reviewed = 0;
    for alert in alerts.values() {
        if !(reviewer.wants(alert) || args.all && alert.llm_review.is_none()) {
            eprintln!(
                "{}: not reviewed (confidence {:.2}, llm.min_confidence {:.2})",
                alert.incident_id,
                alert.confidence,
                reviewer.config().min_confidence
            );
            continue;
        }
        let past = runtime.block_on(past_incidents(history.as_deref(), alert));
        let evidence = IncidentEvidence::from_alert(alert.clone()).with_past_incidents(past);
        let review = runtime.block_on(reviewer.review(&evidence));
        report(&review);
        let line = if args.dry_run {
            serde_json::json!({
                "incident_id": alert.incident_id,
                "requests": review.requests,
                "tool_results": review.tool_results,
            })
        } else {
            serde_json::to_value(&review.alert)?
        };
        writeln!(out, "{line}")?;
        reviewed += 1;
    }
    out.flush()?;
    eprintln!("{reviewed} of {} incidents reviewed", alerts.len());
    Ok(())
}

/// The latest revision of each incident in a JSON-lines file of alerts, by incident id.
fn read_alerts(path: &Path) -> Result<BTreeMap<String, RcaAlert>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut latest: BTreeMap<String, RcaAlert> = BTreeMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let alert: RcaAlert = serde_json::from_str(&line)
            .with_context(|| format!("{} line {} is not an RCA alert", path.display(), i + 1))?;
        match latest.get(&alert.incident_id) {
            Some(old) if old.revision >= alert.revision => {}
            _ => {
                latest.insert(alert.incident_id.clone(), alert);
            }
        }
    }
    Ok(latest)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The operators' confirmed root causes, when `api.history_path` names a history file.
fn open_history(config: &CulpritConfig) -> Result<Option<Arc<dyn HistoryStore>>> {
    match &config.api.history_path {
        Some(path) if path.exists() => Ok(Some(Arc::new(
            MemoryHistoryStore::open(path, config.api.max_history)
                .with_context(|| format!("reading the incident history {}", path.display()))?,
        ))),
        _ => Ok(None),
    }
}

/// The confirmed past incidents most like `alert` (by evidence profile; see `SimilarQuery`).
pub async fn past_incidents(
    history: Option<&dyn HistoryStore>,
    alert: &RcaAlert,
) -> Vec<PastIncident> {
    let Some(history) = history else {
        return Vec::new();
    };
    let query = SimilarQuery::of_alert(alert);
    match history.similar(&query, SIMILAR_INCIDENTS).await {
        Ok(records) => records
            .into_iter()
            .filter(|r| r.incident_id != alert.incident_id)
            .map(|r| past_incident(&r, &query))
            .collect(),
        Err(e) => {
            tracing::warn!("cannot search the incident history: {e}");
            Vec::new()
        }
    }
}

fn past_incident(r: &FeedbackRecord, query: &SimilarQuery) -> PastIncident {
    PastIncident {
        incident_id: r.incident_id.clone(),
        environment: r.environment.clone(),
        root_cause_service: r.cause.to_string(),
        summary: r.summary.clone(),
        evidence_signals: r.evidence_signals.clone(),
        similarity: r.similarity(query),
        note: r.note.clone(),
    }
}

/// One line on stderr per review: what it cost and what it changed.
fn report(review: &Review) {
    let Some(r) = &review.alert.llm_review else {
        return;
    };
    let moved: Vec<String> = r
        .rank_changes
        .iter()
        .map(|c| format!("{} {}->{}", c.service, c.from_rank, c.to_rank))
        .collect();
    eprintln!(
        "llm review {}: {} in {} ms, {} steps, {} tool calls ({} duplicate), {}+{} tokens{}{}",
        review.alert.incident_id,
        r.status.as_str(),
        r.latency_ms,
        r.steps,
        r.tool_calls,
        r.duplicate_tool_calls,
        r.prompt_tokens,
        r.completion_tokens,
        r.limit_hit
            .as_deref()
            .map_or(String::new(), |l| format!(", {l} limit hit")),
        if moved.is_empty() {
            String::new()
        } else {
            format!("; moved {}", moved.join(", "))
        }
    );
}

/// `replay --llm`: reviews each incident's final alert (with the replay's anomalies and events
/// as evidence) and emits the reviews as their next revisions. Returns the incidents with their
/// reviewed alerts in place.
pub fn review_replay(
    config: &CulpritConfig,
    out_dir: &Path,
    incidents: &[RcaAlert],
    anomalies: &[Anomaly],
    events: &[Event],
    sinks: &crate::embedded::Outputs,
) -> Result<Vec<RcaAlert>> {
    let mut llm: LlmConfig = config.llm.clone();
    llm.enabled = true;
    if llm.mode == LlmMode::PromptOnly && llm.request_log.is_none() {
        llm.request_log = Some(out_dir.join("llm-requests.jsonl"));
    }
    let reviewer = Reviewer::new(llm).context("setting up the LLM agent")?;
    let history = open_history(config)?;
    let runtime = runtime()?;
    let mut out = Vec::with_capacity(incidents.len());
    for alert in incidents {
        if !reviewer.wants(alert) {
            out.push(alert.clone());
            continue;
        }
        let past = runtime.block_on(past_incidents(history.as_deref(), alert));
        let evidence = IncidentEvidence::from_alert(alert.clone())
            .with_anomalies(anomalies)
            .with_events(events)
            .with_past_incidents(past);
        let review = runtime.block_on(reviewer.review(&evidence));
        report(&review);
        if review.status() == LlmReviewStatus::PromptOnly {
            out.push(alert.clone());
            continue;
        }
        sinks.emit(&review.alert)?;
        out.push(review.alert);
    }
    if reviewer.config().mode == LlmMode::PromptOnly {
        eprintln!(
            "llm prompt-only: requests written to {}",
            reviewer
                .config()
                .request_log
                .as_deref()
                .unwrap_or(Path::new("-"))
                .display()
        );
    }
    Ok(out)
}

/// `eval nezha --llm`: a hook that reviews each case's chosen incident before it is scored.
/// No feedback history is offered: a past confirmation could be the case's own label.
pub fn eval_review_hook(config: &CulpritConfig) -> Result<culprit_eval::ReviewHook> {
    let mut llm = config.llm.clone();
    llm.enabled = true;
    let reviewer = Reviewer::new(llm).context("setting up the LLM agent")?;
    let runtime = runtime()?;
    Ok(culprit_eval::ReviewHook(Arc::new(
        move |input: culprit_eval::ReviewInput<'_>| {
            if !reviewer.wants(input.alert) {
                return input.alert.clone();
            }
            let evidence = IncidentEvidence::from_alert(input.alert.clone())
                .with_anomalies(input.anomalies)
                .with_events(input.events);
            let review = runtime.block_on(reviewer.review(&evidence));
            report(&review);
            review.alert
        },
    )))
}

/// The correlator service's reviewer: its metrics on the API's `/metrics`, past incidents from
/// the API's feedback history, and reviewed alerts emitted to `reviewed` (the alerts topic, the
/// incident list, PagerDuty).
pub fn background_reviewer(
    config: &CulpritConfig,
    api: &culprit_api::ApiState,
    reviewed: Arc<dyn AlertSink>,
) -> Result<culprit_agent::BackgroundReviewer> {
    let metrics = api.with_registry(culprit_agent::AgentMetrics::register);
    let reviewer = Arc::new(
        Reviewer::new(config.llm.clone())
            .context("setting up the LLM agent")?
            .with_metrics(metrics),
    );
    let feedback = api.history().clone();
    Ok(culprit_agent::BackgroundReviewer::spawn(
        reviewer,
        Arc::new(move |alert: RcaAlert| {
            let feedback = feedback.clone();
            Box::pin(async move { past_incidents(Some(feedback.as_ref()), &alert).await })
        }),
        Arc::new(move |alert: RcaAlert| {
            let reviewed = reviewed.clone();
            Box::pin(async move {
                // No offset waits on a review: one that cannot be delivered now is dropped,
                // and the deterministic revision stays the incident's latest.
                if let Err(e) = culprit_sink::deliver(reviewed.as_ref(), &alert).await {
                    tracing::warn!(incident = %alert.incident_id, "llm review not delivered: {e}");
                }
            })
        }),
    ))
}

/// Offers every delivered alert to the background reviewer, which never makes the correlator
/// wait: a full queue drops the offer.
pub struct ReviewOffer(pub culprit_agent::BackgroundReviewer);

#[async_trait::async_trait]
impl AlertSink for ReviewOffer {
    fn name(&self) -> &str {
        "llm-review"
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), culprit_sink::SinkError> {
        self.0.offer(alert);
        Ok(())
    }
}
