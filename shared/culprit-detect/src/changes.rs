//! Change detector: every deploy, config change or flag flip is a candidate cause, reported as
//! is. Whether it explains anything is the correlator's question.

use crate::{AnomalyDraft, Detector, Findings, Phase, SharedConfig};
use culprit_core::{Event, EventBody, Severity, SignalFamily, SourceKind, UnixNanos};

pub struct ChangeDetector {
    _config: SharedConfig,
}

impl ChangeDetector {
    pub fn new(config: SharedConfig) -> ChangeDetector {
        ChangeDetector { _config: config }
    }
}

impl Detector for ChangeDetector {
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Changes]
    }

    /// Changes are reported in both phases: a deploy during the baseline window may still be the
    /// cause of an incident that starts right after it.
    fn observe(&mut self, event: &Event, _phase: Phase, out: &mut Findings) {
        let EventBody::Change(change) = &event.body else {
            return;
        };
        let draft = AnomalyDraft::of_event(
            event,
            SourceKind::Changes,
            SignalFamily::Change.on(format_args!("{}:{}", change.kind.as_str(), change.id)),
        );
        let actor = change
            .actor
            .as_deref()
            .map(|a| format!(" by {a}"))
            .unwrap_or_default();
        out.anomalies.push(draft.finish(
            Severity::Sev3,
            1.0,
            None,
            None,
            format!("{}: {}{actor}", change.kind.as_str(), change.summary),
        ));
    }

    fn advance(&mut self, _watermark: UnixNanos, _phase: Phase, _out: &mut Findings) {}

    fn flush(&mut self, _phase: Phase, _out: &mut Findings) {}
}
