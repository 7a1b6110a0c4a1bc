//! Change events (deploys, config changes, feature flags, rollbacks) -> culprit events.
//!
//! Three record shapes are accepted, told apart by their keys:
//! - a CloudEvent (`specversion`), usually carrying a CDEvent in `data`
//!   (`data.context` + `data.subject`); a `subject` object at the top level is read too;
//! - a bare CDEvent (`context` + `subject`), as in the CDEvents spec examples;
//! - the native form documented in the crate doc and `schemas/change-event.json`.
//!
//! For CDEvents the service is, in order: a `service` CloudEvents extension attribute, the name
//! of the purl in `subject.content.artifactId`, then `subject.id` (its last `/` segment). The
//! environment is an `environment` extension, then `subject.content.environment.id`.

use crate::{check_payload, DecodeError, DecodeLimits, Encoding};
use culprit_core::{ChangeEvent, ChangeKind, Event, EventBody, Resource, SourceKind, UnixNanos};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Decodes one JSON object, a JSON array of objects, or JSON lines, with [`DecodeLimits::default`].
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    decode_changes_with_limits(bytes, &DecodeLimits::default())
}

pub fn decode_changes_with_limits(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<Event>, DecodeError> {
    check_payload(bytes, Encoding::Json, limits)?;
    let bytes = strip_bom(bytes);
    let first = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes.get(first) == Some(&b'[') {
        let value = crate::otlp_json::parse_value(SourceKind::Changes, bytes)?;
        return from_array(&value);
    }
    let mut out = Vec::new();
    for item in json_stream(bytes) {
        let (line, value) =
            item.map_err(|e| DecodeError::malformed_json(SourceKind::Changes, "", e.to_string()))?;
        match &value {
            Value::Array(_) => out.extend(from_array(&value)?),
            _ => out.push(change_from_value(&value, &format!("line {line}"))?),
        }
    }
    Ok(out)
}

pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Consecutive JSON values (JSON lines, or concatenated/pretty objects) with the 1-based line on
/// which each starts.
pub(crate) fn json_stream(
    bytes: &[u8],
) -> impl Iterator<Item = Result<(usize, Value), serde_json::Error>> + '_ {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let mut line = 1;
    let mut counted = 0;
    std::iter::from_fn(move || {
        let start = stream.byte_offset();
        // The value starts at the next non-whitespace byte; count newlines up to there.
        let begin = bytes[start..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map_or(bytes.len(), |p| start + p);
        line += bytes[counted..begin]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted = begin;
        stream.next().map(|r| r.map(|v| (line, v)))
    })
}

pub(crate) fn from_array(value: &Value) -> Result<Vec<Event>, DecodeError> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| change_from_value(item, &format!("[{i}]")))
            .collect(),
        other => change_from_value(other, "[0]").map(|e| vec![e]),
    }
}

/// Whether a JSON object looks like a change event of any accepted shape.
pub(crate) fn looks_like_change(map: &Map<String, Value>) -> bool {
    map.contains_key("specversion")
        || (map.contains_key("context") && map.contains_key("subject"))
        || (map.contains_key("type")
            && (map.contains_key("service")
                || map.contains_key("time_unix_nano")
                || map.contains_key("time")))
}

/// Converts one record; `record` names it in errors (`line 3`, `[2]`).
pub(crate) fn change_from_value(value: &Value, record: &str) -> Result<Event, DecodeError> {
    let Value::Object(map) = value else {
        return Err(DecodeError::malformed_json(
            SourceKind::Changes,
            record,
            format!("expected a change-event object, got {}", json_kind(value)),
        ));
    };
    if map.contains_key("specversion")
        || (map.contains_key("context") && map.contains_key("subject"))
    {
        cloud_event(map, record)
    } else {
        native(map, record)
    }
}

// ---- native form ---------------------------------------------------------------------------

fn native(o: &Map<String, Value>, record: &str) -> Result<Event, DecodeError> {
    let id = required_text(o, "id", record)?;
    let time = if let Some(t) = present(o, "time") {
        rfc3339(t, record, "time")?
    } else if let Some(t) = present(o, "time_unix_nano") {
        unix_nanos(t, record)?
    } else {
        return Err(DecodeError::invalid(
            record,
            "time",
            "missing required field (give `time` or `time_unix_nano`)",
        ));
    };
    let kind_text = required_text(o, "type", record)?;
    let kind = parse_kind(&kind_text).ok_or_else(|| {
        DecodeError::invalid(
            record,
            "type",
            format!("unknown change type `{kind_text}` (expected deployment, config_change, feature_flag, rollback or other)"),
        )
    })?;
    let service = required_text(o, "service", record)?;
    let environment = optional_string(o, "environment", record)?;
    let summary = optional_string(o, "summary", record)?
        .unwrap_or_else(|| format!("{} {service}", kind.as_str()));
    let actor = optional_string(o, "actor", record)?;
    let attributes = match present(o, "attributes") {
        None => BTreeMap::new(),
        Some(Value::Object(attrs)) => attrs
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v)))
            .collect(),
        Some(other) => {
            return Err(DecodeError::invalid(
                record,
                "attributes",
                format!("expected an object, got {}", json_kind(other)),
            ))
        }
    };
    Ok(change_event(
        time,
        &service,
        environment,
        ChangeEvent {
            id,
            kind,
            summary,
            actor,
            attributes,
        },
    ))
}

fn parse_kind(text: &str) -> Option<ChangeKind> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "deployment" | "deploy" => ChangeKind::Deployment,
        "config_change" | "config" => ChangeKind::ConfigChange,
        "feature_flag" | "featureflag" => ChangeKind::FeatureFlag,
        "rollback" => ChangeKind::Rollback,
        "other" => ChangeKind::Other,
        _ => return None,
    })
}

// ---- CloudEvents / CDEvents ----------------------------------------------------------------

fn cloud_event(o: &Map<String, Value>, record: &str) -> Result<Event, DecodeError> {
    let is_cloud_event = o.contains_key("specversion");
    // The CDEvent proper: `data` of a CloudEvent, or the record itself when bare.
    let cdevent = if is_cloud_event {
        o.get("data").and_then(Value::as_object)
    } else {
        Some(o)
    };
    let context = cdevent
        .and_then(|d| d.get("context"))
        .and_then(Value::as_object);
    let subject = cdevent
        .and_then(|d| d.get("subject"))
        .and_then(Value::as_object)
        .or_else(|| o.get("subject").and_then(Value::as_object));
    let content = subject
        .and_then(|s| s.get("content"))
        .and_then(Value::as_object);

    // CloudEvents attributes win; the CDEvents context fills the gaps.
    let attr = |ce_key: &str, ctx_key: &str| -> Option<&Value> {
        (if is_cloud_event {
            present(o, ce_key)
        } else {
            None
        })
        .or_else(|| context.and_then(|c| present(c, ctx_key)))
    };
    let event_type = match attr("type", "type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(other) => {
            return Err(DecodeError::invalid(
                record,
                "type",
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
        None => {
            return Err(DecodeError::invalid(
                record,
                "type",
                "missing required field",
            ))
        }
    };
    let id = match attr("id", "id") {
        // Blank counts as missing, as for the native form's `id`.
        Some(v @ (Value::String(_) | Value::Number(_))) if !json_text(v).trim().is_empty() => {
            json_text(v)
        }
        _ => return Err(DecodeError::invalid(record, "id", "missing required field")),
    };
    let time = match attr("time", "timestamp") {
        Some(t) => rfc3339(
            t,
            record,
            if is_cloud_event {
                "time"
            } else {
                "context.timestamp"
            },
        )?,
        None => {
            return Err(DecodeError::invalid(
                record,
                "time",
                "missing required field",
            ))
        }
    };
    let source = attr("source", "source").map(json_text);

    let (cd_subject, predicate) = cdevents_subject_predicate(&event_type);
    let kind = change_kind(&event_type, cd_subject.as_deref(), predicate.as_deref());
    let data = o.get("data").and_then(Value::as_object);
    let text_at = |m: Option<&Map<String, Value>>, key: &str| {
        m.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };

    let artifact_id = text_at(content, "artifactId");
    let purl = artifact_id.as_deref().and_then(parse_purl);
    let subject_id = text_at(subject, "id");
    let about_environment = cd_subject.as_deref() == Some("environment");
    let service = text_at(Some(o), "service")
        .or_else(|| {
            if about_environment {
                None
            } else {
                purl.as_ref().map(|p| p.name.clone())
            }
        })
        .or_else(|| {
            if about_environment {
                None
            } else {
                subject_id.as_ref().map(|id| last_segment(id).to_owned())
            }
        })
        .or_else(|| {
            if cd_subject.is_none() {
                text_at(data, "service")
            } else {
                None
            }
        })
        .unwrap_or_else(|| Resource::UNKNOWN_SERVICE.to_string());
    let environment = text_at(Some(o), "environment")
        .or_else(|| {
            if about_environment {
                text_at(content, "name").or_else(|| subject_id.clone())
            } else {
                text_at(
                    content
                        .and_then(|c| c.get("environment"))
                        .and_then(Value::as_object),
                    "id",
                )
            }
        })
        .or_else(|| {
            if cd_subject.is_none() {
                text_at(data, "environment")
            } else {
                None
            }
        });
    let actor = text_at(Some(o), "actor").or_else(|| text_at(data, "actor"));

    let mut attributes = BTreeMap::new();
    attributes.insert("event_type".to_string(), event_type.clone());
    if let Some(source) = source {
        attributes.insert("source".to_string(), source);
    }
    if let Some(id) = &subject_id {
        attributes.insert("subject_id".to_string(), id.clone());
    }
    if let Some(s) = o.get("subject").and_then(Value::as_str) {
        // The CloudEvents `subject` attribute: a flag key, a config path, ...
        attributes.insert("subject".to_string(), s.to_string());
    }
    if let Some(a) = &artifact_id {
        attributes.insert("artifact_id".to_string(), a.clone());
    }
    if let Some(v) = purl.as_ref().and_then(|p| p.version.clone()) {
        attributes.insert("version".to_string(), v);
    }
    if cd_subject.is_none() {
        // A plain CloudEvent's data is its payload: keep its fields (flag name, old/new value, ...).
        for (k, v) in data.into_iter().flatten() {
            attributes.entry(k.clone()).or_insert_with(|| json_text(v));
        }
    }

    let summary = text_at(data, "summary")
        .or_else(|| text_at(data, "message"))
        .unwrap_or_else(|| match (&cd_subject, &predicate) {
            (Some(subj), Some(pred)) => {
                let name = if about_environment {
                    environment.clone().unwrap_or_default()
                } else {
                    service.clone()
                };
                let version = attributes
                    .get("version")
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default();
                format!("{subj} {name} {pred}{version}")
            }
            _ => format!(
                "{event_type} {}",
                attributes.get("subject").unwrap_or(&service)
            ),
        });

    Ok(change_event(
        time,
        &service,
        environment,
        ChangeEvent {
            id,
            kind,
            summary,
            actor,
            attributes,
        },
    ))
}

/// `dev.cdevents.service.deployed.0.1.1` -> (`service`, `deployed`).
fn cdevents_subject_predicate(event_type: &str) -> (Option<String>, Option<String>) {
    let lower = event_type.to_ascii_lowercase();
    match lower.strip_prefix("dev.cdevents.") {
        Some(rest) => {
            let mut parts = rest.split('.');
            (
                parts.next().map(str::to_owned),
                parts.next().map(str::to_owned),
            )
        }
        None => (None, None),
    }
}

fn change_kind(event_type: &str, subject: Option<&str>, predicate: Option<&str>) -> ChangeKind {
    let t = event_type.to_ascii_lowercase();
    if t.contains("featureflag") || t.contains("feature_flag") || t.contains("feature-flag") {
        return ChangeKind::FeatureFlag;
    }
    match (subject, predicate) {
        (Some("service"), Some("deployed" | "upgraded")) => ChangeKind::Deployment,
        (Some("service"), Some("rolledback")) => ChangeKind::Rollback,
        (Some("environment"), _) => ChangeKind::ConfigChange,
        (Some(_), _) if t.contains("config") => ChangeKind::ConfigChange,
        (Some(_), _) => ChangeKind::Other,
        // Plain CloudEvents: go by the words in the type.
        (None, _) if t.contains("rollback") || t.contains("rolledback") => ChangeKind::Rollback,
        (None, _) if t.contains("deploy") => ChangeKind::Deployment,
        (None, _) if t.contains("config") => ChangeKind::ConfigChange,
        (None, _) => ChangeKind::Other,
    }
}

struct Purl {
    name: String,
    version: Option<String>,
}

/// `pkg:oci/myapp@sha256%3Aabc?repository_url=...` -> name `myapp`, version `sha256:abc`.
fn parse_purl(purl: &str) -> Option<Purl> {
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (path, version) = match rest.rsplit_once('@') {
        Some((path, version)) => (path, Some(percent_decode(version))),
        None => (rest, None),
    };
    let name = percent_decode(last_segment(path));
    (!name.is_empty()).then_some(Purl { name, version })
}

fn last_segment(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or(s)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- helpers -------------------------------------------------------------------------------

fn change_event(
    time: UnixNanos,
    service: &str,
    environment: Option<String>,
    change: ChangeEvent,
) -> Event {
    let environment = environment.unwrap_or_else(|| Resource::DEFAULT_ENVIRONMENT.to_string());
    let mut resource = Resource::new(service).with_environment(environment.clone());
    resource
        .attributes
        .insert("service.name".to_string(), service.to_string());
    resource
        .attributes
        .insert("deployment.environment.name".to_string(), environment);
    Event {
        time,
        resource: Arc::new(resource),
        body: EventBody::Change(change),
    }
}

fn present<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

/// A required string (numbers are accepted and kept as text, e.g. numeric ids).
fn required_text(o: &Map<String, Value>, key: &str, record: &str) -> Result<String, DecodeError> {
    match present(o, key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(DecodeError::invalid(record, key, "must not be empty")),
        Some(n @ Value::Number(_)) => Ok(n.to_string()),
        Some(other) => Err(DecodeError::invalid(
            record,
            key,
            format!("expected a string, got {}", json_kind(other)),
        )),
        None => Err(DecodeError::invalid(record, key, "missing required field")),
    }
}

fn optional_string(
    o: &Map<String, Value>,
    key: &str,
    record: &str,
) -> Result<Option<String>, DecodeError> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DecodeError::invalid(
            record,
            key,
            format!("expected a string, got {}", json_kind(other)),
        )),
    }
}

fn rfc3339(value: &Value, record: &str, field: &str) -> Result<UnixNanos, DecodeError> {
    let text = value.as_str().ok_or_else(|| {
        DecodeError::invalid(
            record,
            field,
            format!("expected an RFC 3339 string, got {}", json_kind(value)),
        )
    })?;
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            DecodeError::invalid(
                record,
                field,
                format!("expected an RFC 3339 timestamp like 2026-11-22T03:00:00Z, got `{text}`"),
            )
        })
}

fn unix_nanos(value: &Value, record: &str) -> Result<UnixNanos, DecodeError> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        DecodeError::invalid(
            record,
            "time_unix_nano",
            format!("expected an integer of nanoseconds since the epoch, got {value}"),
        )
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Strings verbatim, anything else as its JSON text.
fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_name_and_version_are_extracted_and_unescaped() {
        let p = parse_purl("pkg:oci/myapp@sha256%3A0b31?repository_url=mycr.io/myapp");
        assert_eq!(p.as_ref().map(|p| p.name.as_str()), Some("myapp"));
        assert_eq!(p.and_then(|p| p.version).as_deref(), Some("sha256:0b31"));
        assert!(parse_purl("not-a-purl").is_none());
    }

    #[test]
    fn json_stream_reports_the_line_each_value_starts_on() {
        let text = b"{\"a\":1}\n\n{\n \"b\": 2\n}\n{\"c\":3}\n";
        let lines: Vec<usize> = json_stream(text)
            .map(|r| r.map(|(l, _)| l).unwrap_or(0))
            .collect();
        assert_eq!(lines, vec![1, 3, 6]);
    }

    #[test]
    fn cdevents_types_map_to_change_kinds() {
        let kind = |t: &str| {
            let (s, p) = cdevents_subject_predicate(t);
            change_kind(t, s.as_deref(), p.as_deref())
        };
        assert_eq!(
            kind("dev.cdevents.service.deployed.0.1.1"),
            ChangeKind::Deployment
        );
        assert_eq!(
            kind("dev.cdevents.service.upgraded.0.2.0"),
            ChangeKind::Deployment
        );
        assert_eq!(
            kind("dev.cdevents.service.rolledback.0.2.0"),
            ChangeKind::Rollback
        );
        assert_eq!(
            kind("dev.cdevents.environment.modified.0.1.1"),
            ChangeKind::ConfigChange
        );
        assert_eq!(kind("dev.cdevents.build.finished.0.1.1"), ChangeKind::Other);
        assert_eq!(
            kind("com.example.featureflag.changed"),
            ChangeKind::FeatureFlag
        );
    }
}
