//! Joint detector of spans and the log lines written inside them (joined by span id).
//!
//! It learns, per (service, operation), which log templates that operation's spans usually write,
//! and reports a template that usually accompanies an operation but stopped while the operation
//! goes on: the signature of an exception or an early return inside the service, which often
//! changes neither latency nor error counts. Conditioning on the operation keeps workload shifts
//! (more of one request type, fewer of another) from looking like missing lines.
//!
//! It needs both streams, so it runs where both are consumed: the embedded pipeline, or one
//! worker reading the span and log topics together.

use crate::logs::truncate;
use crate::stats::binomial_lower_surprise;
use crate::window::Windows;
use crate::{AnomalyDraft, Detector, Findings, LogsConfig, Phase, SharedConfig, SurpriseLevels};
use culprit_core::{
    Event, EventBody, Severity, SignalFamily, SourceKind, UnixNanos, NANOS_PER_SEC,
};
use culprit_drain::{LogTemplates, TemplateId};
use std::collections::{HashMap, VecDeque};

/// (environment, service, operation)
type OpKey = (String, String, String);

/// One span and the templates logged inside it, until the span goes quiet.
#[derive(Debug, Default)]
struct SpanGroup {
    op: Option<OpKey>,
    start: UnixNanos,
    templates: Vec<TemplateId>,
    last_seen: UnixNanos,
}

/// How often each template appears in an operation's spans.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct OpLogs {
    spans: f64,
    with: HashMap<TemplateId, f64>,
}

impl OpLogs {
    const DECAY_AT: f64 = 50_000.0;

    fn add(&mut self, other: &OpWindow) {
        self.spans += f64::from(other.spans);
        for (t, c) in &other.with {
            *self.with.entry(*t).or_default() += f64::from(*c);
        }
        if self.spans > Self::DECAY_AT {
            self.spans /= 2.0;
            self.with.values_mut().for_each(|c| *c /= 2.0);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct OpWindow {
    spans: u32,
    /// Spans that wrote each template at least once.
    with: HashMap<TemplateId, u32>,
}

/// A window still inside the horizon; tainted once it was part of an anomaly.
#[derive(Debug)]
struct RecentWindow {
    start: UnixNanos,
    window: OpWindow,
    tainted: bool,
}

pub struct TraceLogDetector {
    config: SharedConfig,
    logs: LogsConfig,
    /// The stage's template miners ([`Detector::share_templates`]), for the text of a line
    /// reported missing; the lines come already mined (a line that does not, when
    /// the detector is driven on its own, is mined into them).
    miners: LogTemplates,
    groups: HashMap<String, SpanGroup>,
    baseline: HashMap<OpKey, OpLogs>,
    windows: Windows<HashMap<OpKey, OpWindow>>,
    recent: HashMap<OpKey, VecDeque<RecentWindow>>,
    /// Lines reported missing: the windows closed since, and the severity last reported.
    missing: HashMap<(OpKey, TemplateId), Missing>,
}

/// What a [`TraceLogDetector`] learned ([`crate::state`]): which templates each operation's
/// spans usually write (ids of the stage's miners, saved beside it); the trailing windows start
/// again.
#[derive(serde::Serialize, serde::Deserialize)]
struct TraceLogState {
    #[serde(with = "crate::state::pairs")]
    baseline: HashMap<OpKey, OpLogs>,
}

impl TraceLogState {
    /// 2: the miners left for the stage's shared ones.
    const VERSION: u32 = 2;
}

impl TraceLogDetector {
    /// A span's group is complete once nothing arrived for it for this long.
    const GROUP_TIMEOUT: i64 = 5 * NANOS_PER_SEC;
    /// Baseline spans an operation needs before its log pattern is trusted.
    const MIN_BASELINE_SPANS: f64 = 10.0;
    /// Only templates written by at least this share of the operation's spans are expected.
    const MIN_SHARE: f64 = 0.3;
    /// Spans in the horizon expected to carry the template before its absence means anything.
    const MIN_EXPECTED: f64 = 5.0;

    pub fn new(config: SharedConfig, logs: LogsConfig) -> TraceLogDetector {
        let windows = Windows::new(config.window_nanos(), config.lateness_nanos());
        TraceLogDetector {
            config,
            logs,
            miners: LogTemplates::default(),
            groups: HashMap::new(),
            baseline: HashMap::new(),
            windows,
            recent: HashMap::new(),
            missing: HashMap::new(),
        }
    }

    fn complete_groups(&mut self, watermark: Option<UnixNanos>) {
        let done: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| watermark.is_none_or(|w| g.last_seen + Self::GROUP_TIMEOUT <= w))
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let Some(group) = self.groups.remove(&id) else {
                continue;
            };
            // Log lines whose span never arrived cannot be attributed to an operation.
            let Some(op) = group.op else { continue };
            let window = self.windows.at(group.start).entry(op).or_default();
            window.spans += 1;
            let mut seen: Vec<TemplateId> = group.templates;
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *window.with.entry(t).or_default() += 1;
            }
        }
    }

    fn close(
        &mut self,
        start: UnixNanos,
        ops: HashMap<OpKey, OpWindow>,
        phase: Phase,
        out: &mut Findings,
    ) {
        let horizon = self.logs.absence_horizon_nanos();
        let levels = self.config.surprise_levels;
        for (op, window) in ops {
            let baseline = self.baseline.entry(op.clone()).or_default();
            if phase == Phase::Learning || baseline.spans < Self::MIN_BASELINE_SPANS {
                baseline.add(&window);
                continue;
            }
            let recent = self.recent.entry(op.clone()).or_default();
            recent.push_back(RecentWindow {
                start,
                window,
                tainted: false,
            });
            // A window joins the baseline only once it leaves the horizon untainted, so a line
            // that fades out over several windows is judged against what was normal before.
            while recent
                .front()
                .is_some_and(|oldest| oldest.start <= start - horizon)
            {
                if let Some(old) = recent.pop_front().filter(|w| !w.tainted) {
                    baseline.add(&old.window);
                }
            }
            let mut anomalous = false;
            // Lines of one operation that stop together are one finding (the code path that
            // wrote them stopped): reported once, by the most surprising of them.
            let mut stopped: Vec<StoppedLine> = Vec::new();
            for (&template, &with) in &baseline.with {
                let share = with / baseline.spans;
                if share < Self::MIN_SHARE {
                    continue;
                }
                let key = (op.clone(), template);
                if let Some(missing) = self.missing.get_mut(&key) {
                    // Recovery is judged only on the windows after the line went missing.
                    missing.since = (missing.since + 1).min(recent.len());
                    let (n, observed) = tail_counts(recent, missing.since, template);
                    let expected = n as f64 * share;
                    if expected >= Self::MIN_EXPECTED && observed as f64 >= 0.5 * expected {
                        self.missing.remove(&key);
                        continue;
                    }
                    anomalous = true;
                    if !self.logs.absence_escalation {
                        continue;
                    }
                    // Still missing: as spans without it pile up the finding grows surer, and
                    // is reported again each time it reaches a more severe level.
                    let (n, observed) = tail_counts(recent, recent.len(), template);
                    if let Some(line) = StoppedLine::judge(template, share, n, observed, &levels)
                        .filter(|l| l.severity < missing.severity)
                    {
                        missing.severity = line.severity;
                        stopped.push(line);
                    }
                    continue;
                }
                let (n, observed) = tail_counts(recent, recent.len(), template);
                let expected = n as f64 * share;
                if expected < Self::MIN_EXPECTED || observed as f64 > 0.25 * expected {
                    continue;
                }
                let Some(line) = StoppedLine::judge(template, share, n, observed, &levels)
                    .filter(|l| l.severity <= self.config.min_severity)
                else {
                    continue;
                };
                anomalous = true;
                let severity = line.severity;
                self.missing.insert(key, Missing { since: 0, severity });
                stopped.push(line);
            }
            let strongest = stopped.iter().max_by(|a, b| {
                a.surprise
                    .total_cmp(&b.surprise)
                    .then(b.template.cmp(&a.template))
            });
            if let Some(line) = strongest {
                let text = self
                    .miners
                    .text(&op.0, &op.1, line.template)
                    .unwrap_or_default();
                let others = match stopped.len() - 1 {
                    0 => String::new(),
                    1 => " (and 1 other usual line of these spans stopped with it)".to_string(),
                    n => format!(" (and {n} other usual lines of these spans stopped with it)"),
                };
                let draft = AnomalyDraft {
                    source: SourceKind::Logs,
                    service: &op.1,
                    environment: &op.0,
                    instance: None,
                    time: start,
                    signal: SignalFamily::LogMissingInSpan.on(&op.2),
                };
                out.anomalies.push(draft.finish(
                    line.severity,
                    levels.score(line.surprise),
                    Some(line.observed as f64),
                    Some(line.spans as f64 * line.share),
                    format!(
                        "`{}` spans usually log this line ({:.0}% of them) but {} of the last {} did: {}{others}",
                        op.2,
                        line.share * 100.0,
                        line.observed,
                        line.spans,
                        truncate(&text, 160)
                    ),
                ));
            }
            if anomalous {
                recent.iter_mut().for_each(|w| w.tainted = true);
            }
        }
    }
}

/// A line reported missing.
struct Missing {
    /// Windows closed since it was reported.
    since: usize,
    /// The most severe level it has been reported at.
    severity: Severity,
}

/// A usual line of an operation's spans found missing in the current window.
struct StoppedLine {
    template: TemplateId,
    surprise: f64,
    severity: Severity,
    share: f64,
    observed: u64,
    spans: u64,
}

impl StoppedLine {
    /// The line seen in `observed` of the last `spans` spans where `share` of them write it, with
    /// the severity of that shortfall, if it reaches a level.
    fn judge(
        template: TemplateId,
        share: f64,
        spans: u64,
        observed: u64,
        levels: &SurpriseLevels,
    ) -> Option<StoppedLine> {
        let surprise = binomial_lower_surprise(observed, spans, share.min(0.999));
        // Absence is inferred, where an error line is observed: at most SEV2, as in the
        // template mix, however long the line stays away.
        let severity = levels.severity(surprise)?.max(Severity::Sev2);
        Some(StoppedLine {
            template,
            surprise,
            severity,
            share,
            observed,
            spans,
        })
    }
}

/// Spans, and spans that wrote `template`, over the last `windows` windows of `recent`.
fn tail_counts(
    recent: &VecDeque<RecentWindow>,
    windows: usize,
    template: TemplateId,
) -> (u64, u64) {
    recent
        .iter()
        .rev()
        .take(windows)
        .fold((0, 0), |(n, with), w| {
            (
                n + u64::from(w.window.spans),
                with + u64::from(w.window.with.get(&template).copied().unwrap_or(0)),
            )
        })
}

impl Detector for TraceLogDetector {
    fn state_name(&self) -> Option<String> {
        Some("trace_logs".into())
    }

    fn save_state(&self) -> Option<crate::state::SavedState> {
        let state = TraceLogState {
            baseline: self.baseline.clone(),
        };
        crate::state::versioned(TraceLogState::VERSION, &state)
    }

    fn restore_state(
        &mut self,
        state: &crate::state::RawValue,
    ) -> Result<(), crate::state::StateError> {
        let state: TraceLogState = crate::state::unversioned(state, TraceLogState::VERSION)?;
        self.baseline = state.baseline;
        Ok(())
    }

    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Traces, SourceKind::Logs]
    }

    /// It joins lines to their spans: with either source alone it only collects.
    fn needs(&self) -> &'static [SourceKind] {
        self.sources()
    }

    fn share_templates(&mut self, templates: &LogTemplates) {
        self.miners = templates.clone();
    }

    fn observe(&mut self, event: &Event, _phase: Phase, _out: &mut Findings) {
        match &event.body {
            EventBody::Span(span) => {
                let group = self.groups.entry(span.span_id.clone()).or_default();
                group.op = Some((
                    event.resource.environment.clone(),
                    event.resource.service.clone(),
                    span.name.clone(),
                ));
                group.start = event.time;
                group.last_seen = group.last_seen.max(event.time);
            }
            EventBody::Log(log) => {
                let Some(span_id) = log.span_id.as_deref().filter(|s| !s.is_empty()) else {
                    return;
                };
                // Lines come mined by [`crate::Detectors`]; one that does not (a detector
                // driven on its own) is mined here, into the same miners, rather than dropped.
                let template = log
                    .template
                    .unwrap_or_else(|| self.miners.mine(event, log))
                    .id;
                let group = self.groups.entry(span_id.to_string()).or_default();
                if group.op.is_none() {
                    group.start = event.time;
                }
                group.templates.push(template);
                group.last_seen = group.last_seen.max(event.time);
            }
            _ => {}
        }
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        self.complete_groups(Some(watermark));
        for (start, ops) in self.windows.close_until(watermark) {
            self.close(start, ops, phase, out);
        }
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        self.complete_groups(None);
        for (start, ops) in self.windows.close_all() {
            self.close(start, ops, phase, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{LogEvent, Resource, Severity, SpanEvent};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn span(t: i64, op: &str, id: &str) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new("route")),
            body: EventBody::Span(SpanEvent {
                trace_id: format!("t{id}"),
                span_id: id.into(),
                parent_span_id: None,
                name: op.into(),
                kind: "server".into(),
                duration_ns: 1_000_000,
                is_error: false,
                error_type: None,
                attributes: BTreeMap::new(),
            }),
        }
    }

    fn log(t: i64, span_id: &str, body: &str) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new("route")),
            body: EventBody::Log(LogEvent {
                level: None,
                body: body.into(),
                trace_id: None,
                span_id: Some(span_id.into()),
                attributes: BTreeMap::new(),
                template: None,
            }),
        }
    }

    /// Two requests a second to each of two operations; `by_ids_logs` says whether queryByIds
    /// still writes its two usual lines.
    fn traffic(
        d: &mut TraceLogDetector,
        from: i64,
        secs: i64,
        by_ids_logs: bool,
        phase: Phase,
        out: &mut Findings,
    ) {
        for i in 0..secs * 2 {
            let t = from * NANOS_PER_SEC + i * NANOS_PER_SEC / 2;
            let a = format!("a{from}-{i}");
            let b = format!("b{from}-{i}");
            d.observe(&span(t, "queryById", &a), phase, out);
            d.observe(
                &log(t, &a, &format!("INFO RouteController#47 query route {i}")),
                phase,
                out,
            );
            d.observe(&span(t, "queryByIds", &b), phase, out);
            if by_ids_logs {
                d.observe(
                    &log(
                        t,
                        &b,
                        &format!("INFO RouteController#53 query routes {i} {i}"),
                    ),
                    phase,
                    out,
                );
                d.observe(
                    &log(t, &b, &format!("INFO RouteServiceImpl#88 found {i} routes")),
                    phase,
                    out,
                );
            }
            d.advance(t, phase, out);
        }
    }

    #[test]
    fn lines_an_operation_always_writes_going_missing_are_reported_once() {
        let mut d = TraceLogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 60, true, Phase::Learning, &mut out);
        let mut normal = Findings::default();
        traffic(&mut d, 60, 60, true, Phase::Detecting, &mut normal);
        assert!(normal.anomalies.is_empty(), "{:?}", normal.anomalies);
        let mut broken = Findings::default();
        traffic(&mut d, 120, 90, false, Phase::Detecting, &mut broken);
        assert_eq!(broken.anomalies.len(), 1, "{:?}", broken.anomalies);
        let a = &broken.anomalies[0];
        assert_eq!(a.signal, "log.missing_in_span:queryByIds");
        assert!(
            a.description
                .contains("and 1 other usual line of these spans stopped with it"),
            "{}",
            a.description
        );
        assert_eq!(a.service, "route");
        // certain, but inferred from absence: SEV2 at most
        assert_eq!(a.severity, Severity::Sev2);
    }

    /// The severities at which a line half of queryByIds' spans write is reported missing, over
    /// a minute and a half after it stopped. One request every 2 s: few spans per window, so the
    /// absence grows surer window by window.
    fn reports_of_a_stopped_conditional_line(logs: LogsConfig) -> Vec<Severity> {
        let mut d = TraceLogDetector::new(SharedConfig::default(), logs);
        let run = |d: &mut TraceLogDetector, from: i64, secs: i64, writes: bool, phase| {
            let mut found = Findings::default();
            for i in 0..secs / 2 {
                let t = (from + 2 * i) * NANOS_PER_SEC;
                let b = format!("b{from}-{i}");
                d.observe(&span(t, "queryByIds", &b), phase, &mut found);
                if writes && i % 2 == 0 {
                    let line = format!("INFO RouteServiceImpl#91 cache miss for {i}");
                    d.observe(&log(t, &b, &line), phase, &mut found);
                }
                d.advance(t, phase, &mut found);
            }
            found
        };
        run(&mut d, 0, 120, true, Phase::Learning);
        let normal = run(&mut d, 120, 60, true, Phase::Detecting);
        assert!(normal.anomalies.is_empty(), "{:?}", normal.anomalies);
        run(&mut d, 180, 120, false, Phase::Detecting)
            .anomalies
            .iter()
            .map(|a| a.severity)
            .collect()
    }

    #[test]
    fn a_line_that_stays_missing_is_reported_again_as_it_grows_surer_up_to_sev2() {
        let once = reports_of_a_stopped_conditional_line(LogsConfig {
            absence_escalation: false,
            ..LogsConfig::default()
        });
        assert_eq!(once.len(), 1, "{once:?}");
        let escalating = reports_of_a_stopped_conditional_line(LogsConfig::default());
        assert!(escalating.len() >= 2, "{escalating:?}");
        assert_eq!(escalating[0], once[0]);
        // each report more severe than the one before, and an absence never beyond SEV2
        assert!(escalating.windows(2).all(|w| w[1] < w[0]), "{escalating:?}");
        assert_eq!(escalating.last(), Some(&Severity::Sev2), "{escalating:?}");
    }

    #[test]
    fn a_line_that_fades_out_gradually_is_still_reported() {
        let mut d = TraceLogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 60, true, Phase::Learning, &mut out);
        // The line is written by fewer spans every 10 s; a baseline that took each window in as
        // it closed would follow it down and never see it missing.
        let mut found = Findings::default();
        for step in 0..12i64 {
            let keep_every = 1 + step; // 100%, 50%, 33%, ...
            for i in 0..20i64 {
                let t = (60 + step * 10) * NANOS_PER_SEC + i * NANOS_PER_SEC / 2;
                let id = format!("f{step}-{i}");
                d.observe(&span(t, "queryByIds", &id), Phase::Detecting, &mut found);
                if i % keep_every == 0 && step < 6 {
                    d.observe(
                        &log(
                            t,
                            &id,
                            &format!("INFO RouteController#53 query routes {i} {i}"),
                        ),
                        Phase::Detecting,
                        &mut found,
                    );
                    d.observe(
                        &log(
                            t,
                            &id,
                            &format!("INFO RouteServiceImpl#88 found {i} routes"),
                        ),
                        Phase::Detecting,
                        &mut found,
                    );
                }
                d.advance(t, Phase::Detecting, &mut found);
            }
        }
        assert!(
            found
                .anomalies
                .iter()
                .any(|a| a.signal == "log.missing_in_span:queryByIds"),
            "{:?}",
            found.anomalies
        );
    }

    #[test]
    fn an_operation_that_runs_in_bursts_is_judged_over_the_last_minute_not_its_last_busy_windows() {
        let mut d = TraceLogDetector::new(SharedConfig::default(), LogsConfig::default());
        // Five queryByIds requests every 20 s: every other 10 s window has none and never closes.
        let burst = |d: &mut TraceLogDetector, at: i64, writes: bool, phase, out: &mut Findings| {
            for i in 0..5 {
                let t = at * NANOS_PER_SEC + i * NANOS_PER_SEC / 10;
                let id = format!("b{at}-{i}");
                d.observe(&span(t, "queryByIds", &id), phase, out);
                if writes {
                    let line = format!("INFO RouteController#53 query routes {i} {i}");
                    d.observe(&log(t, &id, &line), phase, out);
                }
            }
            d.advance((at + 1) * NANOS_PER_SEC, phase, out);
        };
        let mut found = Findings::default();
        for at in (0..300).step_by(20) {
            burst(&mut d, at, true, Phase::Learning, &mut found);
        }
        for at in (300..420).step_by(20) {
            burst(&mut d, at, true, Phase::Detecting, &mut found);
        }
        assert!(found.anomalies.is_empty(), "{:?}", found.anomalies);
        // The line stops. Four bursts (80 s) later the last minute holds none of it; the last
        // six busy windows would still hold two bursts that wrote it.
        for at in (420..500).step_by(20) {
            burst(&mut d, at, false, Phase::Detecting, &mut found);
        }
        d.advance(530 * NANOS_PER_SEC, Phase::Detecting, &mut found);
        assert_eq!(
            found
                .anomalies
                .iter()
                .map(|a| a.signal.as_str())
                .collect::<Vec<_>>(),
            vec!["log.missing_in_span:queryByIds"],
            "{:?}",
            found.anomalies
        );
    }

    #[test]
    fn fewer_requests_of_one_kind_is_not_a_missing_line() {
        let mut d = TraceLogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        traffic(&mut d, 0, 60, true, Phase::Learning, &mut out);
        // only queryById traffic now: queryByIds has no spans, so nothing is expected of it
        let mut found = Findings::default();
        for i in 0..120 {
            let t = 60 * NANOS_PER_SEC + i * NANOS_PER_SEC / 2;
            let a = format!("x{i}");
            d.observe(&span(t, "queryById", &a), Phase::Detecting, &mut found);
            d.observe(
                &log(t, &a, &format!("INFO RouteController#47 query route {i}")),
                Phase::Detecting,
                &mut found,
            );
            d.advance(t, Phase::Detecting, &mut found);
        }
        assert!(found.anomalies.is_empty(), "{:?}", found.anomalies);
    }
}
