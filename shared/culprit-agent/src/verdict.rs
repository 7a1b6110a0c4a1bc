//! Reading the model's verdict and deciding which parts of it to believe.
//!
//! A verdict is kept only when it names a service of the incident's graph, says `supports`,
//! `refutes` or `insufficient`, and cites only evidence ids that a tool returned in this review;
//! `supports` and `refutes` must cite at least one. Everything else is dropped and counted:
//! free-form RCA invents causes, and a citation the review never showed is one of them.

use crate::evidence::IncidentEvidence;
use crate::tools::MAX_CITATIONS;
use culprit_core::{LlmVerdict, VerdictKind};
use serde_json::Value;
use std::collections::BTreeSet;

/// A verdict as the model wrote it, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RawVerdict {
    pub service: String,
    pub verdict: String,
    pub confidence: f64,
    pub evidence_ids: Vec<String>,
}

/// What `submit_verdict` carried.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Submission {
    pub verdicts: Vec<RawVerdict>,
    pub rationale: Option<String>,
}

/// The verdicts worth merging, and how many were not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checked {
    pub accepted: Vec<LlmVerdict>,
    pub dropped: u32,
    /// One line per dropped verdict, for the logs.
    pub reasons: Vec<String>,
}

/// Reads a submission from its JSON: `{"verdicts": [...], "rationale": "..."}`, or leniently a
/// bare list of verdicts or a single verdict object.
pub fn parse_submission(value: &Value) -> Result<Submission, String> {
    let (list, rationale) = match value {
        Value::Object(map) if map.contains_key("verdicts") => (
            map.get("verdicts").cloned().unwrap_or(Value::Null),
            map.get("rationale")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        Value::Object(map) if map.contains_key("service") => {
            (Value::Array(vec![value.clone()]), None)
        }
        Value::Array(_) => (value.clone(), None),
        _ => return Err("expected an object with a `verdicts` list".to_string()),
    };
    let Value::Array(items) = list else {
        return Err("`verdicts` must be a list".to_string());
    };
    let mut verdicts = Vec::new();
    for item in items {
        let Value::Object(v) = item else {
            return Err("each verdict must be an object".to_string());
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let confidence = match v.get("confidence") {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
            _ => 0.0,
        };
        let evidence_ids = match v.get("evidence_ids").or_else(|| v.get("evidence")) {
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(|i| i.as_str().map(|s| s.trim().to_string()))
                .collect(),
            Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
            _ => Vec::new(),
        };
        verdicts.push(RawVerdict {
            service: text("service"),
            verdict: text("verdict"),
            confidence: if confidence.is_finite() {
                confidence.clamp(0.0, 1.0)
            } else {
                0.0
            },
            evidence_ids,
        });
    }
    Ok(Submission {
        verdicts,
        rationale,
    })
}

/// Keeps the verdicts that name a graph service and cite only returned evidence.
pub fn check(
    submission: &Submission,
    evidence: &IncidentEvidence,
    returned: &BTreeSet<String>,
) -> Checked {
    let services = evidence.services();
    let mut out = Checked::default();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for v in &submission.verdicts {
        let mut drop = |reason: String| {
            out.dropped += 1;
            out.reasons.push(reason);
        };
        if !services.contains(&v.service.as_str()) {
            drop(format!("`{}` is not a service of this incident", v.service));
            continue;
        }
        let kind = match v.verdict.trim().to_ascii_lowercase().as_str() {
            "supports" | "support" => VerdictKind::Supports,
            "refutes" | "refute" => VerdictKind::Refutes,
            "insufficient" => VerdictKind::Insufficient,
            other => {
                drop(format!("`{other}` is not a verdict for {}", v.service));
                continue;
            }
        };
        if !seen.insert(v.service.as_str()) {
            drop(format!("a second verdict for {}", v.service));
            continue;
        }
        let unknown: Vec<&String> = v
            .evidence_ids
            .iter()
            .filter(|id| !returned.contains(id.as_str()))
            .collect();
        if !unknown.is_empty() {
            drop(format!(
                "the verdict for {} cites {unknown:?}, which no tool returned",
                v.service
            ));
            continue;
        }
        if kind != VerdictKind::Insufficient && v.evidence_ids.is_empty() {
            drop(format!(
                "the verdict for {} cites no evidence for `{}`",
                v.service,
                kind.as_str()
            ));
            continue;
        }
        let mut cited: Vec<String> = Vec::new();
        for id in v.evidence_ids.iter().take(MAX_CITATIONS) {
            let reference = evidence.reference(id).unwrap_or_else(|| id.clone());
            if !cited.contains(&reference) {
                cited.push(reference);
            }
        }
        out.accepted.push(LlmVerdict {
            service: v.service.clone(),
            verdict: kind,
            confidence: v.confidence,
            evidence: cited,
        });
    }
    out
}

/// The JSON object in a model's text answer: the whole text, a fenced block, or the span from
/// the first `{` to the last `}`.
pub fn extract_json(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    let unfenced = text
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    if let Ok(v) = serde_json::from_str::<Value>(unfenced) {
        return Some(v);
    }
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    if end <= start {
        return None;
    }
    serde_json::from_str(&text[start..=end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::incident;
    use serde_json::json;

    fn returned(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn verdicts_outside_the_graph_or_citing_unreturned_ids_are_dropped() {
        let evidence = incident();
        let sub = parse_submission(&json!({
            "verdicts": [
                {"service": "payment", "verdict": "supports", "confidence": 0.9, "evidence_ids": ["a1"]},
                {"service": "billing-db", "verdict": "supports", "confidence": 1.0, "evidence_ids": ["a1"]},
                {"service": "checkout", "verdict": "refutes", "confidence": 0.5, "evidence_ids": ["a99"]},
                {"service": "frontend", "verdict": "supports", "confidence": 0.5, "evidence_ids": []},
                {"service": "payment", "verdict": "refutes", "confidence": 0.9, "evidence_ids": ["a1"]},
                {"service": "cart", "verdict": "insufficient", "confidence": 0.2, "evidence_ids": []},
            ],
            "rationale": "payment failed first",
        }))
        .unwrap();
        let checked = check(&sub, &evidence, &returned(&["a1", "a2"]));
        let kept: Vec<&str> = checked
            .accepted
            .iter()
            .map(|v| v.service.as_str())
            .collect();
        assert_eq!(kept, ["payment", "cart"]);
        assert_eq!(checked.dropped, 4, "{:?}", checked.reasons);
        // The short id is turned back into the anomaly's own id.
        let a1 = evidence.anomalies().iter().find(|e| e.id == "a1").unwrap();
        assert_eq!(
            checked.accepted[0].evidence,
            std::slice::from_ref(&a1.anomaly.id)
        );
    }

    #[test]
    fn confidences_are_clamped_and_a_bare_verdict_is_read() {
        let sub = parse_submission(&json!({"service": "payment", "verdict": "Supports", "confidence": 7, "evidence_ids": "a1"})).unwrap();
        assert_eq!(sub.verdicts[0].confidence, 1.0);
        assert_eq!(sub.verdicts[0].evidence_ids, ["a1"]);
        assert!(parse_submission(&json!("payment")).is_err());
    }

    #[test]
    fn json_is_found_in_fenced_or_chatty_answers() {
        assert!(extract_json("```json\n{\"verdicts\": []}\n```").is_some());
        assert!(extract_json("Sure! {\"verdicts\": []} Hope this helps.").is_some());
        assert!(extract_json("no json here").is_none());
    }
}
