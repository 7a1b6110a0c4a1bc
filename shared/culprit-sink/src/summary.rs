//! A plain-text summary of an alert for a terminal or a log.

use crate::text::{duration, printable, rfc3339, truncate};
use culprit_core::{RcaAlert, RootCause, SourceKind};
use std::collections::BTreeSet;
use std::fmt::Write;

/// How many candidates the summary table lists.
const TOP_CAUSES: usize = 5;
/// How many anomalies of the first cause the summary lists.
const TOP_EVIDENCE: usize = 5;
/// Longest service name the table shows before cutting it, so one odd name cannot blow it up.
const MAX_SERVICE_WIDTH: usize = 40;

/// Renders `alert` as a few lines a person reads in a terminal: the headline, the top five
/// candidates as an aligned table, the first candidate's chain and evidence, and the counts.
///
/// No colours and no control characters: text from the alert is passed through a filter so the
/// output is safe to print and to grep.
pub fn render_summary(alert: &RcaAlert) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored rather than unwrapped.
    let _ = writeln!(
        out,
        "{} incident {} in {} (revision {}, {})",
        alert.severity,
        printable(&alert.incident_id),
        printable(&alert.environment),
        alert.revision,
        match alert.status {
            culprit_core::IncidentStatus::Open => "open",
            culprit_core::IncidentStatus::Resolved => "resolved",
        }
    );
    let _ = writeln!(
        out,
        "  {} .. {} ({}), confidence {:.2}",
        rfc3339(alert.started_at),
        rfc3339(alert.updated_at),
        duration(alert.started_at, alert.updated_at),
        alert.confidence
    );
    if !alert.summary.is_empty() {
        let _ = writeln!(out, "  {}", printable(&alert.summary));
    }
    out.push('\n');

    if alert.root_causes.is_empty() {
        out.push_str("No root-cause candidates.\n\n");
    } else {
        cause_table(&mut out, &alert.root_causes);
        out.push('\n');
        top_cause(&mut out, &alert.root_causes[0]);
        out.push('\n');
    }

    let services: BTreeSet<&str> = alert
        .affected_services
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let per_source: Vec<String> = alert
        .affected_services
        .iter()
        .map(|(source, services)| format!("{source} {}", services.len()))
        .collect();
    let _ = write!(
        out,
        "{} anomalies across {} services",
        alert.anomaly_count,
        services.len()
    );
    if !per_source.is_empty() {
        let _ = write!(out, " ({})", per_source.join(", "));
    }
    out.push('\n');
    out
}

fn cause_table(out: &mut String, causes: &[RootCause]) {
    let shown = &causes[..causes.len().min(TOP_CAUSES)];
    let names: Vec<String> = shown
        .iter()
        .map(|c| truncate(&printable(&c.service), MAX_SERVICE_WIDTH))
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max("service".len());

    let _ = write!(
        out,
        "{:>4}  {:<width$}  {:>5}  {:>8}",
        "rank", "service", "score", "evidence"
    );
    for source in SourceKind::ALL {
        let _ = write!(out, "  {:>7}", source.as_str());
    }
    out.push('\n');
    for (cause, name) in shown.iter().zip(&names) {
        // `{:<width$}` pads by chars, which is what the header width was measured in.
        let _ = write!(
            out,
            "{:>4}  {:<width$}  {:>5.2}  {:>8.2}",
            cause.rank, name, cause.score, cause.evidence_score
        );
        for source in SourceKind::ALL {
            match cause.evidence_by_source.get(&source) {
                Some(v) => {
                    let _ = write!(out, "  {v:>7.2}");
                }
                None => {
                    let _ = write!(out, "  {:>7}", "-");
                }
            }
        }
        out.push('\n');
    }
    if causes.len() > shown.len() {
        let more = causes.len() - shown.len();
        let _ = writeln!(
            out,
            "  ... and {more} more candidate{}",
            if more == 1 { "" } else { "s" }
        );
    }
}

fn top_cause(out: &mut String, cause: &RootCause) {
    let _ = writeln!(out, "Most likely cause: {}", printable(&cause.service));
    if !cause.chain.is_empty() {
        let chain: Vec<String> = cause.chain.iter().map(|s| printable(s)).collect();
        let _ = writeln!(out, "  chain: {}", chain.join(" -> "));
    }
    if !cause.explanation.is_empty() {
        let _ = writeln!(out, "  why:   {}", printable(&cause.explanation));
    }
    if cause.evidence.is_empty() {
        return;
    }
    let shown = &cause.evidence[..cause.evidence.len().min(TOP_EVIDENCE)];
    let signals: Vec<String> = shown
        .iter()
        .map(|a| truncate(&printable(a.signal.as_str()), 48))
        .collect();
    let width = signals.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    out.push_str("  evidence:\n");
    for (anomaly, signal) in shown.iter().zip(&signals) {
        let _ = writeln!(
            out,
            "    {}  {:<7}  {:<width$}  {}",
            anomaly.severity,
            anomaly.source.as_str(),
            signal,
            printable(&anomaly.description)
        );
    }
    if cause.evidence.len() > shown.len() {
        let _ = writeln!(
            out,
            "    ... and {} more",
            cause.evidence.len() - shown.len()
        );
    }
}
