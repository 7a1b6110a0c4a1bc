use serde::{Deserialize, Serialize};
use std::fmt;

/// Incident severity, SEV1 the worst. Detectors map how far a value lies beyond its baseline's
/// percentile thresholds onto these (p99.9 -> SEV1 ... p80 -> SEV5 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    #[serde(rename = "SEV1")]
    Sev1,
    #[serde(rename = "SEV2")]
    Sev2,
    #[serde(rename = "SEV3")]
    Sev3,
    #[serde(rename = "SEV4")]
    Sev4,
    #[serde(rename = "SEV5")]
    Sev5,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Sev1,
        Severity::Sev2,
        Severity::Sev3,
        Severity::Sev4,
        Severity::Sev5,
    ];

    /// 1 for SEV1 .. 5 for SEV5.
    pub fn level(self) -> u8 {
        self as u8 + 1
    }

    pub fn from_level(level: u8) -> Option<Severity> {
        Severity::ALL.get(level.checked_sub(1)? as usize).copied()
    }

    /// Evidence weight of one anomaly of this severity: each step is worth about twice the next.
    pub fn weight(self) -> f64 {
        match self {
            Severity::Sev1 => 1.0,
            Severity::Sev2 => 0.6,
            Severity::Sev3 => 0.35,
            Severity::Sev4 => 0.2,
            Severity::Sev5 => 0.1,
        }
    }

    /// PagerDuty Events API v2 severity for this level.
    pub fn pagerduty(self) -> &'static str {
        match self {
            Severity::Sev1 => "critical",
            Severity::Sev2 => "error",
            Severity::Sev3 => "warning",
            Severity::Sev4 | Severity::Sev5 => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SEV{}", self.level())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_order_worst_first() {
        for s in Severity::ALL {
            assert_eq!(Severity::from_level(s.level()), Some(s));
        }
        assert!(Severity::Sev1 < Severity::Sev5);
        assert!(Severity::Sev1.weight() > Severity::Sev2.weight());
        assert_eq!(Severity::from_level(0), None);
        assert_eq!(Severity::from_level(6), None);
        assert_eq!(serde_json::to_string(&Severity::Sev2).unwrap(), "\"SEV2\"");
    }
}
