//! The Events API v2 wire format and how an [`RcaAlert`] maps onto it.

use chrono::{DateTime, SecondsFormat};
use culprit_core::RcaAlert;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// PagerDuty's limit on `payload.summary`.
pub const MAX_SUMMARY_BYTES: usize = 1024;
/// Causes and evidence beyond these add bulk, not insight, to a page.
const TOP_CAUSES: usize = 3;
const TOP_EVIDENCE: usize = 5;
/// `client` shown in PagerDuty next to the event.
pub const CLIENT: &str = "culprit";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    Trigger,
    Acknowledge,
    Resolve,
}

/// One Events API v2 request body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event<'a> {
    pub routing_key: &'a str,
    pub event_action: EventAction,
    pub dedup_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    pub summary: String,
    pub severity: &'static str,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub custom_details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub href: String,
    pub text: String,
}

/// The body PagerDuty answers an accepted event with.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Accepted {
    pub status: String,
    #[serde(default)]
    pub dedup_key: Option<String>,
}

/// Cuts `s` to at most `max` bytes without splitting a character, marking the cut with `…`.
pub fn truncate_summary(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &s[..end])
}

pub(crate) fn trigger_payload(alert: &RcaAlert, source: &str) -> Payload {
    let top = alert.root_causes.first();
    let top_evidence = top.and_then(|c| c.evidence.first());
    let timestamp = DateTime::from_timestamp_nanos(alert.started_at)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let summary = if alert.summary.trim().is_empty() {
        format!(
            "{} incident {} in {}",
            alert.severity, alert.incident_id, alert.environment
        )
    } else {
        alert.summary.clone()
    };
    let causes: Vec<Value> = alert
        .root_causes
        .iter()
        .take(TOP_CAUSES)
        .map(|c| json!({ "rank": c.rank, "service": c.service, "score": c.score, "explanation": c.explanation }))
        .collect();
    let evidence: Vec<Value> = top
        .map(|c| {
            c.evidence
                .iter()
                .take(TOP_EVIDENCE)
                .map(|a| {
                    json!({
                        "service": a.service,
                        "signal": a.signal,
                        "severity": a.severity,
                        "description": a.description,
                        "observed": a.observed,
                        "expected": a.expected,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Payload {
        summary: truncate_summary(&summary, MAX_SUMMARY_BYTES),
        severity: alert.severity.pagerduty(),
        source: source.to_string(),
        timestamp: Some(timestamp),
        component: top.map(|c| c.service.clone()),
        group: alert.environment.clone(),
        class: top_evidence.map(|a| a.signal.to_string()),
        custom_details: json!({
            "incident_id": alert.incident_id,
            "revision": alert.revision,
            "severity": alert.severity,
            "confidence": alert.confidence,
            "anomaly_count": alert.anomaly_count,
            "top_causes": causes,
            "top_evidence": evidence,
            "chain": top.map(|c| c.chain.join(" -> ")),
            // What the cause was the last times the evidence looked like this.
            "similar_incidents": alert.similar_incidents.iter().map(|s| json!({
                "incident_id": s.incident_id,
                "confirmed_cause": s.confirmed_cause,
                "similarity": s.similarity,
            })).collect::<Vec<_>>(),
        }),
    }
}

pub(crate) fn incident_link(base: &str, incident_id: &str) -> Link {
    Link {
        href: format!(
            "{}/{}",
            base.trim_end_matches('/'),
            percent_encode(incident_id)
        ),
        text: format!("culprit incident {incident_id}"),
    }
}

/// Encodes everything but RFC 3986 unreserved characters, so any id is one path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(truncate_summary("short", 1024), "short");
        let long = "é".repeat(700); // 1400 bytes
        let cut = truncate_summary(&long, 1024);
        assert!(cut.len() <= 1024);
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn links_encode_the_incident_id_as_one_path_segment() {
        let link = incident_link("https://culprit.example/incidents/", "prod/inc 1");
        assert_eq!(
            link.href,
            "https://culprit.example/incidents/prod%2Finc%201"
        );
    }
}
