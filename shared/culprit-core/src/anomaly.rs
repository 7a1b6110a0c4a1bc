use crate::{Severity, Signal, SourceKind, UnixNanos};
use serde::{Deserialize, Serialize};

/// One detector finding: a signal of one service that left its baseline during a window.
///
/// Anomalies are what crosses from the embedders to the correlator (on the bus, and in Kafka mode
/// on `culprit.anomalies`), so they carry everything the correlator and the alert need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable id: the same finding on a redelivered event gets the same id.
    pub id: String,
    /// Event time of the finding (the window start, or the event's own time).
    pub time: UnixNanos,
    pub source: SourceKind,
    pub service: String,
    pub environment: String,
    /// Pod or host, when the signal is per instance.
    pub instance: Option<String>,
    /// What moved: its family, typed, and on the wire a stable machine form such as
    /// `span.latency:GET /cart`, `log.new_template:E17`, `metric:CpuUsageRate(%)`,
    /// `change:deployment:chg-1`.
    pub signal: Signal,
    /// A sentence a person can read.
    pub description: String,
    pub severity: Severity,
    /// Strength in [0, 1]: 1 is certainly abnormal. Used as evidence by the ranker.
    pub score: f64,
    /// The observed value and the baseline it was compared with, where the signal has them.
    pub observed: Option<f64>,
    pub expected: Option<f64>,
}

impl Anomaly {
    /// The longest description an anomaly carries.
    pub const MAX_DESCRIPTION_BYTES: usize = 4096;
    /// The longest service, environment, instance or signal an anomaly carries.
    pub const MAX_NAME_BYTES: usize = 512;

    /// Cuts the text fields that input controls (a change's description, a service name, a log
    /// template in the signal) to their bounds, with a marker saying how much was cut, so that one
    /// huge but valid input record cannot make a finding larger than the broker accepts. Returns
    /// whether anything was cut. The same input is always cut the same way, so identities that
    /// include these fields stay stable.
    pub fn bound(&mut self) -> bool {
        let mut cut = bound_text(&mut self.description, Self::MAX_DESCRIPTION_BYTES);
        cut |= bound_text(&mut self.service, Self::MAX_NAME_BYTES);
        cut |= bound_text(&mut self.environment, Self::MAX_NAME_BYTES);
        if let Some(instance) = &mut self.instance {
            cut |= bound_text(instance, Self::MAX_NAME_BYTES);
        }
        // Checked first: a signal within bounds (nearly all) is not copied.
        if self.signal.as_str().len() > Self::MAX_NAME_BYTES {
            let mut signal = self.signal.as_str().to_string();
            bound_text(&mut signal, Self::MAX_NAME_BYTES);
            self.signal = Signal::parse(&signal);
            cut = true;
        }
        cut
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary, ending in a marker that gives
/// the number of bytes cut. Returns whether it cut anything.
pub fn bound_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    // The marker's own length depends on the count it prints; 32 bytes hold any usize.
    let mut keep = max.saturating_sub(32);
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = text.len() - keep;
    text.truncate(keep);
    text.push_str(&format!("…[{cut} bytes cut]"));
    true
}

/// A caller -> callee edge between two services seen in one trace, reported by the span detector
/// so the correlator can learn the dependency graph online.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DependencyEdge {
    pub environment: String,
    pub caller: String,
    pub callee: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn anomaly(description: String, service: String) -> Anomaly {
        Anomaly {
            id: "a".into(),
            time: 0,
            source: SourceKind::Changes,
            service,
            environment: "prod".into(),
            instance: None,
            signal: Signal::parse(&format!("change:deployment:{}", "x".repeat(2000))),
            description,
            severity: Severity::Sev2,
            score: 1.0,
            observed: None,
            expected: None,
        }
    }

    #[test]
    fn a_huge_finding_is_cut_to_its_bounds_with_a_marker_and_a_small_one_is_left_alone() {
        let mut big = anomaly("é".repeat(3_000_000), "svc-".repeat(1000));
        assert!(big.bound());
        assert!(big.description.len() <= Anomaly::MAX_DESCRIPTION_BYTES);
        assert!(
            big.description.ends_with(" bytes cut]"),
            "{}",
            &big.description[4000..]
        );
        assert!(big.service.len() <= Anomaly::MAX_NAME_BYTES);
        assert!(big.signal.as_str().len() <= Anomaly::MAX_NAME_BYTES);
        assert_eq!(big.signal.family(), crate::SignalFamily::Change);
        let cut_again = big.clone();
        assert!(!big.bound(), "a bounded finding is not cut twice");
        assert_eq!(big, cut_again);

        let mut small = anomaly("deploy v2".into(), "cart".into());
        small.signal = Signal::parse("change:deployment:chg-1");
        let before = small.clone();
        assert!(!small.bound());
        assert_eq!(small, before);
    }
}
