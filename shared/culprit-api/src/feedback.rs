//! What an operator may say an incident's cause was.
//!
//! A cause is either a service of the incident's causal graph (or one of its ranked candidates)
//! or an explicit `other: <text>` for a cause culprit could not see, such as an upstream
//! provider or a human error. Anything else is refused: feedback teaches culprit, so a typo must
//! not become a confirmed cause.

use culprit_core::RcaAlert;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;

/// Longest `other: <text>` and note accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;
const OTHER_PREFIX: &str = "other:";

/// The cause an operator names. On the wire: the service name, or `other: <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Service(String),
    Other(String),
}

impl Cause {
    /// The named service, unless the cause is `other`.
    pub fn service(&self) -> Option<&str> {
        match self {
            Cause::Service(s) => Some(s),
            Cause::Other(_) => None,
        }
    }

    fn parse_unchecked(text: &str) -> Cause {
        let text = text.trim();
        match text.strip_prefix(OTHER_PREFIX) {
            Some(rest) => Cause::Other(rest.trim().to_string()),
            None => Cause::Service(text.to_string()),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Service(s) => f.write_str(s),
            Cause::Other(t) => write!(f, "{OTHER_PREFIX} {t}"),
        }
    }
}

impl Serialize for Cause {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        String::deserialize(d).map(|s| Cause::parse_unchecked(&s))
    }
}

/// The body of `POST /incidents/{id}/feedback`. The author is the token's name, not a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// A service of the incident's graph, or `other: <text>`.
    pub cause: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// The services a cause may name: the graph's nodes and the ranked candidates.
pub fn incident_services(alert: &RcaAlert) -> BTreeSet<&str> {
    alert
        .graph
        .nodes
        .iter()
        .map(|n| n.service.as_str())
        .chain(alert.root_causes.iter().map(|c| c.service.as_str()))
        .collect()
}

impl FeedbackRequest {
    /// The cause this request names, if `alert` allows it, and its trimmed note.
    pub fn validate(&self, alert: &RcaAlert) -> Result<(Cause, Option<String>), String> {
        let note = self
            .note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        if note.is_some_and(|n| n.chars().count() > MAX_TEXT_CHARS) {
            return Err(format!("note is longer than {MAX_TEXT_CHARS} characters"));
        }
        let cause = Cause::parse_unchecked(&self.cause);
        match &cause {
            Cause::Other(text) if text.is_empty() => {
                return Err("cause \"other:\" needs a description after the colon".into())
            }
            Cause::Other(text) if text.chars().count() > MAX_TEXT_CHARS => {
                return Err(format!(
                    "cause is longer than {MAX_TEXT_CHARS} characters"
                ))
            }
            Cause::Other(_) => {}
            Cause::Service(s) if s.is_empty() => {
                return Err(
                    "cause must not be empty: name a service of the incident or write \"other: <what it was>\""
                        .into(),
                )
            }
            Cause::Service(s) => {
                let services = incident_services(alert);
                if !services.contains(s.as_str()) {
                    let known: Vec<&str> = services.into_iter().collect();
                    return Err(format!(
                        "{s:?} is not a service of incident {}; name one of [{}] or write \"other: <what it was>\"",
                        alert.incident_id,
                        known.join(", ")
                    ));
                }
            }
        }
        Ok((cause, note.map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_reads_and_writes_as_one_string() {
        let other: Cause = serde_json::from_str(r#"" other:  the CDN ""#).unwrap();
        assert_eq!(other, Cause::Other("the CDN".into()));
        assert_eq!(
            serde_json::to_string(&other).unwrap(),
            r#""other: the CDN""#
        );
        let service: Cause = serde_json::from_str(r#""redis""#).unwrap();
        assert_eq!(service.service(), Some("redis"));
        assert_eq!(serde_json::to_string(&service).unwrap(), r#""redis""#);
    }
}
