//! `schemas/rca-alert.json` is the contract on `culprit.alerts`: it must accept exactly what
//! `RcaAlert` serialises to.

mod common;

use serde_json::{json, Value};

fn schema() -> Result<Value, Box<dyn std::error::Error>> {
    // Read at run time: a target dir shared with a checkout elsewhere can keep a test binary
    // whose compile-time path no longer exists.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let path = format!("{crate_dir}/../../schemas/rca-alert.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn validator() -> Result<jsonschema::Validator, Box<dyn std::error::Error>> {
    let schema = schema()?;
    jsonschema::meta::validate(&schema)
        .map_err(|e| format!("schema is not valid JSON Schema: {e}"))?;
    Ok(jsonschema::draft202012::new(&schema).map_err(|e| e.to_string())?)
}

/// A named way to break a valid document.
type Breakage = (&'static str, Box<dyn Fn(&mut Value)>);

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn serialised_alert_validates_against_the_schema() -> Result<(), Box<dyn std::error::Error>> {
    let validator = validator()?;
    let doc = serde_json::to_value(common::alert())?;
    assert_eq!(errors(&validator, &doc), Vec::<String>::new());

    let mut resolved = common::alert();
    resolved.status = culprit_core::IncidentStatus::Resolved;
    resolved.severity = culprit_core::Severity::Sev5;
    resolved.root_causes.clear();
    resolved.graph = Default::default();
    resolved.affected_services.clear();
    let doc = serde_json::to_value(resolved)?;
    assert_eq!(errors(&validator, &doc), Vec::<String>::new());
    Ok(())
}

#[test]
fn schema_rejects_broken_documents() -> Result<(), Box<dyn std::error::Error>> {
    let validator = validator()?;
    let good = serde_json::to_value(common::alert())?;
    let breakages: Vec<Breakage> = vec![
        (
            "unknown severity",
            Box::new(|d| d["severity"] = json!("SEV0")),
        ),
        ("unknown status", Box::new(|d| d["status"] = json!("Open"))),
        (
            "missing incident id",
            Box::new(|d| {
                d.as_object_mut().map(|o| o.remove("incident_id"));
            }),
        ),
        (
            "confidence above 1",
            Box::new(|d| d["confidence"] = json!(1.5)),
        ),
        (
            "unknown source key",
            Box::new(|d| d["affected_services"]["spans"] = json!(["x"])),
        ),
        (
            "unknown edge kind",
            Box::new(|d| d["graph"]["edges"][0]["kind"] = json!("calls")),
        ),
        (
            "time as a string",
            Box::new(|d| d["started_at"] = json!("2024-05-01T12:00:00Z")),
        ),
        (
            "rank zero",
            Box::new(|d| d["root_causes"][0]["rank"] = json!(0)),
        ),
        (
            "unexpected field",
            Box::new(|d| d["graph"]["nodes"][0]["colour"] = json!("red")),
        ),
    ];
    for (what, breakage) in breakages {
        let mut doc = good.clone();
        breakage(&mut doc);
        assert!(
            !validator.is_valid(&doc),
            "schema accepted a document with {what}"
        );
    }
    Ok(())
}

#[test]
fn every_schema_property_has_a_title_and_description() -> Result<(), Box<dyn std::error::Error>> {
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                for key in ["title", "description"] {
                    if prop
                        .get(key)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        missing.push(format!("{path}/{name}: {key}"));
                    }
                }
                walk(prop, &format!("{path}/{name}"), missing);
            }
        }
        if let Some(defs) = v.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                walk(def, &format!("{path}/$defs/{name}"), missing);
            }
        }
    }
    let schema = schema()?;
    assert!(schema.get("$id").and_then(Value::as_str).is_some());
    let mut missing = Vec::new();
    walk(&schema, "", &mut missing);
    assert_eq!(missing, Vec::<String>::new());
    Ok(())
}

/// An alert as the LLM agent publishes it: the next revision with an `llm_review`.
fn reviewed_alert() -> culprit_core::RcaAlert {
    use culprit_core::{LlmReview, LlmReviewStatus, LlmVerdict, RankChange, VerdictKind};
    let mut alert = common::alert();
    alert.revision += 1;
    alert.llm_review = Some(LlmReview {
        status: LlmReviewStatus::Reviewed,
        detail: None,
        reviewed_revision: alert.revision - 1,
        model: "local-model".into(),
        mode: "json_schema".into(),
        steps: 3,
        tool_calls: 2,
        duplicate_tool_calls: 0,
        prompt_tokens: 2400,
        completion_tokens: 180,
        latency_ms: 5200,
        limit_hit: Some("tool_calls".into()),
        verdicts: vec![LlmVerdict {
            service: "cartservice".into(),
            verdict: VerdictKind::Supports,
            confidence: 0.7,
            evidence: vec!["5f3a9c2e1b7d4a60".into()],
        }],
        dropped_verdicts: 1,
        rank_changes: vec![RankChange {
            service: "cartservice".into(),
            from_rank: 2,
            to_rank: 1,
            score_before: 0.6,
            score_after: 0.68,
        }],
        unverified_rationale: Some("the deploy preceded the errors".into()),
    });
    alert
}

#[test]
fn a_reviewed_alert_validates_and_old_alerts_need_no_review(
) -> Result<(), Box<dyn std::error::Error>> {
    let validator = validator()?;
    let doc = serde_json::to_value(reviewed_alert())?;
    assert_eq!(errors(&validator, &doc), Vec::<String>::new());
    // A deterministic alert carries no `llm_review` key at all, so consumers that predate it
    // see the document they always saw.
    let plain = serde_json::to_value(common::alert())?;
    assert!(plain.get("llm_review").is_none());
    assert!(plain.get("similar_incidents").is_none());
    let back: culprit_core::RcaAlert = serde_json::from_value(plain)?;
    assert_eq!(back.llm_review, None);

    for (what, breakage) in [
        ("unknown review status", json!("maybe")),
        ("unknown verdict", json!("likely")),
    ] {
        let mut broken = doc.clone();
        if what == "unknown review status" {
            broken["llm_review"]["status"] = breakage;
        } else {
            broken["llm_review"]["verdicts"][0]["verdict"] = breakage;
        }
        assert!(!validator.is_valid(&broken), "schema accepted {what}");
    }
    Ok(())
}

#[test]
fn an_alert_with_similar_past_incidents_validates_and_a_fourth_or_a_broken_one_does_not(
) -> Result<(), Box<dyn std::error::Error>> {
    let validator = validator()?;
    let mut alert = common::alert();
    alert.similar_incidents = (0..3)
        .map(|i| culprit_core::SimilarIncident {
            incident_id: format!("inc-{i}"),
            started_at: 1_700_000_000_000_000_000 + i,
            summary: "errors on checkout".into(),
            confirmed_cause: if i == 2 {
                "other: expired certificate".into()
            } else {
                "inventory".into()
            },
            similarity: 0.9 - i as f64 * 0.2,
        })
        .collect();
    let doc = serde_json::to_value(&alert)?;
    assert_eq!(errors(&validator, &doc), Vec::<String>::new());
    let back: culprit_core::RcaAlert = serde_json::from_value(doc.clone())?;
    assert_eq!(back.similar_incidents, alert.similar_incidents);

    let mut four = doc.clone();
    four["similar_incidents"]
        .as_array_mut()
        .unwrap()
        .push(doc["similar_incidents"][0].clone());
    assert!(
        !validator.is_valid(&four),
        "schema accepted four similar incidents"
    );
    let mut no_cause = doc;
    no_cause["similar_incidents"][0]
        .as_object_mut()
        .unwrap()
        .remove("confirmed_cause");
    assert!(
        !validator.is_valid(&no_cause),
        "schema accepted one without its cause"
    );
    Ok(())
}
