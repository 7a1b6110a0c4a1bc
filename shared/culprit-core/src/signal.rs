//! What a detector saw move: a [`SignalFamily`] (what kind of test fired) and a detail (the
//! operation, template, metric or change it fired on).
//!
//! On the wire (anomalies, alerts, history) a signal is one string, `family:detail`, as the alert
//! schema has always had it: `span.latency:GET /cart (ms)`, `log.new_template:17`,
//! `metric:CpuUsageRate(%)`, `change:deployment:chg-1`. In the ranking configuration a family is
//! named by its key, the wire name with `_` for `.` (`span_latency`), so that it survives TOML
//! and environment overrides; an unknown key is a configuration error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The kinds of test a detector runs, one per signal family on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalFamily {
    /// An operation's latency against its baseline.
    SpanLatency,
    /// A service's failed spans against its baseline.
    SpanErrors,
    /// An exception type never seen in the baseline.
    SpanNewError,
    /// A call between two operations never seen in the baseline.
    SpanNewCall,
    /// Waits on call edges, placed on the endpoint the slow edges share.
    SpanEdgeLatency,
    /// A rollout's new pods fail where the old pods beside them do not.
    SpanVersionErrors,
    /// A rollout's new pods are slower than the old pods beside them.
    SpanVersionLatency,
    /// A burst of error lines.
    LogErrors,
    /// A burst of warning lines.
    LogWarnings,
    /// A log template never seen in the baseline, the service's own.
    LogNewTemplate,
    /// A new error or warning template that reports a failed or slow call into another service.
    LogNewRemoteError,
    /// A usual log line that stopped while the service's other lines go on.
    LogMissingTemplate,
    /// A line an operation usually writes that stopped while the operation goes on.
    LogMissingInSpan,
    /// A metric series beyond its baseline (the detail is the series).
    Metric,
    /// Waits on call edges from per-edge client and server latency metrics, placed on the
    /// endpoint the anomalous edges share (the detail is the client side's metric).
    MetricEdgeWait,
    /// An event far from its nearest normal neighbours in the embedding space.
    KnnDistance,
    /// A deploy, configuration change or flag flip (the detail is its kind and id).
    Change,
    /// A family this build does not know (an alert written by another version).
    Other,
}

impl SignalFamily {
    pub const ALL: [SignalFamily; 18] = [
        SignalFamily::SpanLatency,
        SignalFamily::SpanErrors,
        SignalFamily::SpanNewError,
        SignalFamily::SpanNewCall,
        SignalFamily::SpanEdgeLatency,
        SignalFamily::SpanVersionErrors,
        SignalFamily::SpanVersionLatency,
        SignalFamily::LogErrors,
        SignalFamily::LogWarnings,
        SignalFamily::LogNewTemplate,
        SignalFamily::LogNewRemoteError,
        SignalFamily::LogMissingTemplate,
        SignalFamily::LogMissingInSpan,
        SignalFamily::Metric,
        SignalFamily::MetricEdgeWait,
        SignalFamily::KnnDistance,
        SignalFamily::Change,
        SignalFamily::Other,
    ];

    /// The name on the wire: `span.latency`.
    pub fn name(self) -> &'static str {
        match self {
            SignalFamily::SpanLatency => "span.latency",
            SignalFamily::SpanErrors => "span.errors",
            SignalFamily::SpanNewError => "span.new_error",
            SignalFamily::SpanNewCall => "span.new_call",
            SignalFamily::SpanEdgeLatency => "span.edge_latency",
            SignalFamily::SpanVersionErrors => "span.version_errors",
            SignalFamily::SpanVersionLatency => "span.version_latency",
            SignalFamily::LogErrors => "log.errors",
            SignalFamily::LogWarnings => "log.warnings",
            SignalFamily::LogNewTemplate => "log.new_template",
            SignalFamily::LogNewRemoteError => "log.new_remote_error",
            SignalFamily::LogMissingTemplate => "log.missing_template",
            SignalFamily::LogMissingInSpan => "log.missing_in_span",
            SignalFamily::Metric => "metric",
            SignalFamily::MetricEdgeWait => "metric.edge_wait",
            SignalFamily::KnnDistance => "knn.distance",
            SignalFamily::Change => "change",
            SignalFamily::Other => "other",
        }
    }

    fn from_name(name: &str) -> SignalFamily {
        SignalFamily::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .unwrap_or(SignalFamily::Other)
    }

    /// A signal of this family without detail.
    pub fn signal(self) -> Signal {
        Signal {
            family: self,
            text: self.name().to_string(),
        }
    }

    /// A signal of this family on `detail`.
    pub fn on(self, detail: impl fmt::Display) -> Signal {
        Signal {
            family: self,
            text: format!("{}:{detail}", self.name()),
        }
    }
}

impl fmt::Display for SignalFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One signal: its family, typed, and its wire form, kept whole so that reading it costs nothing.
/// Signals order and compare by their wire form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal {
    // Ordering derives field by field: the text decides, the family follows from it.
    text: String,
    family: SignalFamily,
}

impl Signal {
    /// Reads a wire form; a family this build does not know is [`SignalFamily::Other`], so
    /// alerts of other versions still load.
    pub fn parse(text: &str) -> Signal {
        let family = text.split(':').next().unwrap_or(text);
        Signal {
            family: SignalFamily::from_name(family),
            text: text.to_string(),
        }
    }

    pub fn family(&self) -> SignalFamily {
        self.family
    }

    /// What the signal fired on, after the family: the operation, template, series or change.
    pub fn detail(&self) -> Option<&str> {
        self.text.split_once(':').map(|(_, detail)| detail)
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for Signal {
    fn from(text: &str) -> Signal {
        Signal::parse(text)
    }
}

impl PartialEq<str> for Signal {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Signal {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Signal, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Signal::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_family_colon_detail_and_reads_back_typed() {
        let s = SignalFamily::SpanLatency.on("GET /cart (ms)");
        assert_eq!(s.as_str(), "span.latency:GET /cart (ms)");
        assert_eq!(s.detail(), Some("GET /cart (ms)"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"span.latency:GET /cart (ms)\"");
        let back: Signal = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.family(), SignalFamily::SpanLatency);
        // A change's detail holds its own colons.
        let c = Signal::parse("change:deployment:chg-1");
        assert_eq!(
            (c.family(), c.detail()),
            (SignalFamily::Change, Some("deployment:chg-1"))
        );
        assert_eq!(SignalFamily::LogErrors.signal().as_str(), "log.errors");
    }

    #[test]
    fn every_family_reads_back_from_its_wire_name_and_its_config_key() {
        for family in SignalFamily::ALL {
            assert_eq!(Signal::parse(family.name()).family(), family);
            let key = family.name().replace('.', "_");
            let parsed: SignalFamily = serde_json::from_value(serde_json::json!(key)).unwrap();
            assert_eq!(parsed, family);
        }
    }

    #[test]
    fn an_unknown_family_is_other_on_the_wire_and_an_error_in_configuration() {
        assert_eq!(Signal::parse("span.latncy:x").family(), SignalFamily::Other);
        let typo = serde_json::from_value::<SignalFamily>(serde_json::json!("span_latncy"));
        assert!(typo.unwrap_err().to_string().contains("unknown variant"));
    }
}
