//! Log detector: online template mining per service, with two signals:
//! - a template never seen in the baseline (a new code path logging, a new exception);
//! - a burst of error or warning lines against the service's usual count per window.
//!
//! A new error line is the service's own failure or the report of a failed call. The trace says
//! which first: a line written inside a span whose call into another service failed or was slow
//! relays that call's trouble, whatever its words. Only lines without trace context fall back to
//! the text (a phrase of `[detect.logs] remote_failure_phrases` or the name of another known service).

use crate::baseline::Baseline;
use crate::calls::{ChildCalls, Outcome};
use crate::novelty::Novelty;
use crate::stats::poisson_surprise;
use crate::template_mix::TemplateMix;
use crate::window::Windows;
use crate::{AnomalyDraft, Detector, Findings, LogsConfig, Phase, SharedConfig};
use culprit_core::{Event, EventBody, LogLevel, Severity, SignalFamily, SourceKind, UnixNanos};
use culprit_drain::{level_word, line_level, LogTemplates, TemplateId};
use std::collections::HashMap;

/// (environment, service)
type ServiceKey = (String, String);

#[derive(Debug, Default)]
struct LogWindow {
    errors: u32,
    warnings: u32,
    total: u32,
    templates: HashMap<TemplateId, u32>,
}

pub struct LogDetector {
    config: SharedConfig,
    logs: LogsConfig,
    /// The stage's template miners ([`Detector::share_templates`]), for the texts of the
    /// templates reported; the lines come already mined (a line that does not, when
    /// the detector is driven on its own, is mined into them).
    miners: LogTemplates,
    templates: Novelty<(ServiceKey, TemplateId)>,
    error_counts: HashMap<ServiceKey, Baseline>,
    warning_counts: HashMap<ServiceKey, Baseline>,
    mixes: HashMap<ServiceKey, TemplateMix>,
    /// When each service's logs were first seen (`i64::MIN` in the baseline phase): templates of
    /// a service culprit has only just met are unfamiliar, not changed.
    services_seen: HashMap<ServiceKey, UnixNanos>,
    windows: Windows<HashMap<ServiceKey, LogWindow>>,
    /// Spans whose call failed or was slow, kept for two novelty windows, the time in which a
    /// line written inside them can be confirmed.
    child_calls: ChildCalls,
    /// Span ids of the sightings of error and warning templates not yet known.
    sightings: HashMap<(ServiceKey, TemplateId), Vec<String>>,
}

/// What a [`LogDetector`] learned ([`crate::state`]): the templates known, the error and
/// warning baselines, the template mixes and the services seen. The miners that give the
/// template ids are the stage's, saved beside it ([`crate::Detectors::save_state`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct LogState {
    templates: Vec<(ServiceKey, TemplateId)>,
    #[serde(with = "crate::state::pairs")]
    error_counts: HashMap<ServiceKey, Baseline>,
    #[serde(with = "crate::state::pairs")]
    warning_counts: HashMap<ServiceKey, Baseline>,
    #[serde(with = "crate::state::pairs")]
    mixes: HashMap<ServiceKey, crate::template_mix::MixState>,
    #[serde(with = "crate::state::pairs")]
    services_seen: HashMap<ServiceKey, UnixNanos>,
    child_calls: crate::calls::ChildCallsState,
}

impl LogState {
    /// 2: the miners left for the stage's shared ones.
    const VERSION: u32 = 2;
}

/// Sightings kept per pending template: enough for a majority, bounded for a chatty one.
const MAX_SIGHTINGS: usize = 32;

impl LogDetector {
    pub fn new(config: SharedConfig, logs: LogsConfig) -> LogDetector {
        let windows = Windows::new(config.window_nanos(), config.lateness_nanos());
        let templates = config.novelty.novelty();

        LogDetector {
            config,
            logs,
            miners: LogTemplates::default(),
            templates,
            error_counts: HashMap::new(),
            warning_counts: HashMap::new(),
            mixes: HashMap::new(),
            services_seen: HashMap::new(),
            windows,
            child_calls: ChildCalls::default(),
            sightings: HashMap::new(),
        }
    }

    /// Number of templates mined for a service so far.
    pub fn template_count(&self, environment: &str, service: &str) -> usize {
        self.miners.cluster_count(environment, service)
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_count(
        config: &SharedConfig,
        baseline: &mut Baseline,
        key: &ServiceKey,
        start: UnixNanos,
        count: u32,
        signal: SignalFamily,
        what: &str,
        phase: Phase,
        out: &mut Findings,
    ) {
        let mut anomalous = false;
        if phase == Phase::Detecting && count >= 3 {
            if let Some(profile) = baseline.profile(start, &config.baseline) {
                // A service that logged no errors in its baseline still gets a small expected
                // rate: one error line is not an incident.
                let expected = profile.mean().max(0.2);
                let surprise = poisson_surprise(u64::from(count), expected);
                let levels = &config.surprise_levels;
                if let Some(severity) = levels
                    .severity(surprise)
                    .filter(|s| *s <= config.min_severity)
                {
                    anomalous = true;
                    let draft = AnomalyDraft {
                        source: SourceKind::Logs,
                        service: &key.1,
                        environment: &key.0,
                        instance: None,
                        time: start,
                        signal: signal.signal(),
                    };
                    out.anomalies.push(draft.finish(
                        severity,
                        levels.score(surprise),
                        Some(f64::from(count)),
                        Some(expected),
                        format!(
                            "{count} {what} lines in {} s vs {expected:.1} normally",
                            config.window_secs
                        ),
                    ));
                }
            }
        }
        if !anomalous {
            baseline.observe(start, f64::from(count), &config.baseline);
        }
    }
}

impl Detector for LogDetector {
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Logs, SourceKind::Traces]
    }

    fn share_templates(&mut self, templates: &LogTemplates) {
        self.miners = templates.clone();
    }

    fn observe(&mut self, event: &Event, phase: Phase, out: &mut Findings) {
        let EventBody::Log(log) = &event.body else {
            self.child_calls.observe(event, phase == Phase::Detecting);
            return;
        };
        // Lines come mined by [`crate::Detectors`]; one that does not (a detector driven on its
        // own) is mined here, into the same miners, rather than dropped.
        let matched = log.template.unwrap_or_else(|| self.miners.mine(event, log));
        let key: ServiceKey = (
            event.resource.environment.clone(),
            event.resource.service.clone(),
        );
        let since = if phase == Phase::Learning {
            i64::MIN
        } else {
            event.time
        };
        let seen = self.services_seen.entry(key.clone()).or_insert(since);
        *seen = (*seen).min(since);
        let service_since = *seen;
        let level = line_level(log.level, &log.body);
        let template_key = (key.clone(), matched.id);
        if phase == Phase::Detecting
            && level.is_some_and(|l| l.is_error() || l == LogLevel::Warn)
            && !self.templates.is_known(&template_key)
        {
            if let Some(span_id) = log.span_id.as_ref().filter(|id| !id.is_empty()) {
                let ids = self.sightings.entry(template_key.clone()).or_default();
                if ids.len() < MAX_SIGHTINGS {
                    ids.push(span_id.clone());
                }
            }
        }
        let confirmed = match phase {
            Phase::Learning => {
                self.templates.learn(template_key.clone());
                None
            }
            Phase::Detecting => {
                // A service whose error lines (say) often fall in error templates it wrote only
                // once before (a vocabulary its baseline barely covered) writes never-seen
                // error lines routinely: a new template is new behaviour only when it recurs
                // more than that rate (the Good-Turing estimate, per level) explains. With few
                // lines of the level to go by, the estimate leans on the service's rate over
                // all its lines, counted as one line of the level.
                let overall =
                    (matched.service_singletons + 1) as f64 / (matched.service_lines + 1) as f64;
                let unseen_rate =
                    (matched.level_singletons as f64 + overall) / (matched.level_lines + 1) as f64;
                let floor = self.config.surprise_levels.sev5;
                self.templates.observe_gated(
                    &template_key,
                    event.time,
                    matched.level_lines,
                    |sightings, lines_since| {
                        let expected = (lines_since + 1) as f64 * unseen_rate;
                        poisson_surprise(u64::from(sightings), expected) >= floor
                    },
                )
            }
        };
        if let Some(crate::novelty::Confirmed {
            first: first_seen,
            earliest,
        }) = confirmed
        {
            // New INFO/DEBUG templates are mostly new workload (a request type the baseline
            // did not happen to see), so they are kept out of the default report.
            let familiar =
                service_since.saturating_add(self.config.novelty.window_nanos()) <= earliest;
            // A WARN line can relay a failed call too ("retrying payment: connection refused").
            let span_ids = self.sightings.remove(&template_key).unwrap_or_default();
            let remote = level
                .filter(|l| l.is_error() || *l == LogLevel::Warn)
                .and_then(|_| {
                    relayed_by_trace(&self.child_calls, &key, &span_ids).or_else(|| {
                        let others = self
                            .services_seen
                            .keys()
                            .filter(|(env, service)| *env == key.0 && *service != key.1)
                            .map(|(_, service)| service.as_str());
                        remote_failure(&self.logs.remote_failure_phrases, others, &log.body)
                    })
                });
            let severity = match level {
                // An error the service raised itself, never seen before: the most specific sign
                // of changed behaviour there is. A relayed failure is one step removed.
                Some(l) if l.is_error() && familiar && remote.is_none() => Severity::Sev1,
                Some(l) if l.is_error() && familiar => Severity::Sev2,
                Some(l) if l.is_error() => Severity::Sev4,
                Some(LogLevel::Warn) if familiar => Severity::Sev3,
                _ => Severity::Sev5,
            };
            if severity <= self.config.min_severity {
                let template = self
                    .miners
                    .text(&key.0, &key.1, matched.id)
                    .unwrap_or_default();
                let (signal, what) = match &remote {
                    Some(reason) => (
                        SignalFamily::LogNewRemoteError.on(matched.id),
                        format!("failed call ({reason})"),
                    ),
                    None => (
                        SignalFamily::LogNewTemplate.on(matched.id),
                        level_word(level).to_string(),
                    ),
                };
                let draft = AnomalyDraft {
                    source: SourceKind::Logs,
                    service: &key.1,
                    environment: &key.0,
                    instance: event.resource.instance.as_deref(),
                    time: first_seen,
                    signal,
                };
                let score = if severity <= Severity::Sev2 { 0.9 } else { 0.6 };
                out.anomalies.push(draft.finish(
                    severity,
                    score,
                    None,
                    None,
                    format!("new {what} log template: {}", truncate(&template, 200)),
                ));
            }
        }

        let window = self.windows.at(event.time).entry(key).or_default();
        window.total += 1;
        *window.templates.entry(matched.id).or_default() += 1;
        match level {
            Some(l) if l.is_error() => window.errors += 1,
            Some(LogLevel::Warn) => window.warnings += 1,
            _ => {}
        }
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        self.templates.expire(watermark);
        self.child_calls
            .expire(watermark.saturating_sub(2 * self.config.novelty.window_nanos()));
        // Sightings of templates that never got confirmed expire with them.
        let templates = &self.templates;
        self.sightings.retain(|k, _| !templates.is_known(k));
        let closed = self.windows.close_until(watermark);
        self.close_windows(closed, phase, out);
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        let closed = self.windows.close_all();
        self.close_windows(closed, phase, out);
    }

    fn baselines(&self, out: &mut Vec<crate::SignalSummary>) {
        let per_window = format!("per {} s", self.config.window_secs);
        for (counts, signal) in [
            (&self.error_counts, "log.errors"),
            (&self.warning_counts, "log.warnings"),
        ] {
            for ((environment, service), baseline) in counts {
                out.push(crate::SignalSummary {
                    source: SourceKind::Logs,
                    environment: environment.clone(),
                    service: service.clone(),
                    signal: format!("{signal} ({per_window})"),
                    baseline: baseline.summary(
                        crate::baseline::Direction::Up,
                        &self.config.severity_levels,
                        |x| x,
                    ),
                });
            }
        }
    }

    fn forget(&mut self, service: &str) -> usize {
        let before = self.error_counts.len() + self.warning_counts.len();
        self.error_counts.retain(|key, _| key.1 != service);
        self.warning_counts.retain(|key, _| key.1 != service);
        before - self.error_counts.len() - self.warning_counts.len()
    }

    /// Takes the service's error and warning baselines, what [`Detector::forget`] drops. Its
    /// template miner, known templates and mix stay: template ids are the miner's own, so the
    /// fresh detector's would not match the ones already known here.
    fn adopt(
        &mut self,
        service: &str,
        learned: &crate::state::RawValue,
    ) -> Result<usize, crate::state::StateError> {
        let state: LogState = crate::state::unversioned(learned, LogState::VERSION)?;
        self.forget(service);
        let before = self.error_counts.len() + self.warning_counts.len();
        self.error_counts.extend(
            state
                .error_counts
                .into_iter()
                .filter(|(k, _)| k.1 == service),
        );
        self.warning_counts.extend(
            state
                .warning_counts
                .into_iter()
                .filter(|(k, _)| k.1 == service),
        );
        Ok(self.error_counts.len() + self.warning_counts.len() - before)
    }

    fn state_name(&self) -> Option<String> {
        Some("logs".into())
    }

    fn save_state(&self) -> Option<crate::state::SavedState> {
        crate::state::versioned(
            LogState::VERSION,
            &LogState {
                templates: self.templates.known_keys(),
                error_counts: self.error_counts.clone(),
                warning_counts: self.warning_counts.clone(),
                mixes: self
                    .mixes
                    .iter()
                    .map(|(k, m)| (k.clone(), m.save_state()))
                    .collect(),
                services_seen: self.services_seen.clone(),
                child_calls: self.child_calls.save_state(),
            },
        )
    }

    fn restore_state(
        &mut self,
        state: &crate::state::RawValue,
    ) -> Result<(), crate::state::StateError> {
        let state: LogState = crate::state::unversioned(state, LogState::VERSION)?;
        self.templates.set_known(state.templates);
        self.error_counts = state.error_counts;
        self.warning_counts = state.warning_counts;
        self.mixes = state
            .mixes
            .into_iter()
            .map(|(k, m)| (k, TemplateMix::restored(m)))
            .collect();
        self.services_seen = state.services_seen;
        self.child_calls.restore_state(state.child_calls);
        Ok(())
    }
}

impl LogDetector {
    fn close_windows(
        &mut self,
        closed: Vec<(UnixNanos, HashMap<ServiceKey, LogWindow>)>,
        phase: Phase,
        out: &mut Findings,
    ) {
        for (start, services) in closed {
            for (key, window) in services {
                let errors = self.error_counts.entry(key.clone()).or_default();
                Self::judge_count(
                    &self.config,
                    errors,
                    &key,
                    start,
                    window.errors,
                    SignalFamily::LogErrors,
                    "error",
                    phase,
                    out,
                );
                let warnings = self.warning_counts.entry(key.clone()).or_default();
                Self::judge_count(
                    &self.config,
                    warnings,
                    &key,
                    start,
                    window.warnings,
                    SignalFamily::LogWarnings,
                    "warning",
                    phase,
                    out,
                );
                self.judge_mix(&key, start, window.templates, phase, out);
            }
        }
    }
}

impl LogDetector {
    fn judge_mix(
        &mut self,
        key: &ServiceKey,
        start: UnixNanos,
        templates: HashMap<TemplateId, u32>,
        phase: Phase,
        out: &mut Findings,
    ) {
        let horizon = self.logs.absence_horizon_nanos();
        let levels = self.config.surprise_levels;
        let mix = self.mixes.entry(key.clone()).or_default();
        if phase == Phase::Learning {
            mix.learn(&templates);
            return;
        }
        let missing = mix.judge(start, templates, horizon, levels.sev5);
        if missing.is_empty() {
            return;
        }
        for m in missing {
            // Absence is weaker evidence than presence: at most SEV2.
            let Some(severity) = levels.severity(m.surprise).map(|s| s.max(Severity::Sev2)) else {
                continue;
            };
            if severity > self.config.min_severity {
                continue;
            }
            let template = self
                .miners
                .text(&key.0, &key.1, m.template)
                .unwrap_or_default();
            let draft = AnomalyDraft {
                source: SourceKind::Logs,
                service: &key.1,
                environment: &key.0,
                instance: None,
                time: start,
                signal: SignalFamily::LogMissingTemplate.on(m.template),
            };
            out.anomalies.push(draft.finish(
                severity,
                levels.score(m.surprise),
                Some(m.observed as f64),
                Some(m.expected),
                format!(
                    "a usual log line stopped: {} seen in the last minute where {:.0} were expected: {}",
                    m.observed,
                    m.expected,
                    truncate(&template, 160)
                ),
            ));
        }
    }
}

/// What the trace says about a template's sightings: `Some(reason)` when most of the lines
/// with trace context were written inside a span whose call into another service failed or was
/// slow, `None` when they have no trace context or their calls went fine.
fn relayed_by_trace(calls: &ChildCalls, key: &ServiceKey, span_ids: &[String]) -> Option<String> {
    let bad: Vec<_> = span_ids
        .iter()
        .filter_map(|id| calls.under(id))
        .filter(|call| call.callee != key.1)
        .collect();
    (!span_ids.is_empty() && 2 * bad.len() > span_ids.len()).then(|| {
        let mut said: Vec<String> = bad
            .iter()
            .map(|call| {
                let what = match call.outcome {
                    Outcome::Failed => "failed",
                    Outcome::Slow => "was slow",
                };
                format!("its call into {} {what}", call.callee)
            })
            .collect();
        said.sort_unstable();
        said.dedup();
        format!("written while {}", said.join(", "))
    })
}

/// Why an error or warning line reports a failed call to another service (it holds a
/// remote-failure phrase, or names one of `others`, the other services culprit has seen), if it
/// does.
fn remote_failure<'a>(
    phrases: &[String],
    others: impl IntoIterator<Item = &'a str>,
    body: &str,
) -> Option<String> {
    let lower = body.to_lowercase();
    if let Some(phrase) = phrases.iter().find(|p| lower.contains(&p.to_lowercase())) {
        return Some(format!("`{phrase}`"));
    }
    others
        .into_iter()
        .find(|service| names(&lower, &service.to_lowercase()))
        .map(|service| format!("names `{service}`"))
}

/// Whether `text` names `name` as a whole word (a host or service name, not a substring of
/// a longer identifier).
fn names(text: &str, name: &str) -> bool {
    let is_name_char = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{LogEvent, Resource, SpanEvent, NANOS_PER_SEC};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn log(t: i64, service: &str, level: Option<LogLevel>, body: &str) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Log(LogEvent {
                level,
                body: body.to_string(),
                trace_id: None,
                span_id: None,
                attributes: BTreeMap::new(),
                template: None,
            }),
        }
    }

    fn normal_traffic(d: &mut LogDetector, t0: i64, secs: i64, phase: Phase, out: &mut Findings) {
        for i in 0..secs * 5 {
            let t = t0 + i * NANOS_PER_SEC / 5;
            let body = format!(
                "12:00:{:02}.123 INFO  c.s.CartService#42 added item {} to cart {}",
                i % 60,
                i * 7,
                i % 13
            );
            d.observe(&log(t, "cart", None, &body), phase, out);
            if i % 50 == 0 {
                d.observe(
                    &log(t, "cart", Some(LogLevel::Warn), "slow query took 120 ms"),
                    phase,
                    out,
                );
            }
            d.advance(t - NANOS_PER_SEC, phase, out);
        }
    }

    /// `secs` seconds of `service` writing 5 lines a second, one in `warn_every` a warning.
    fn lines_of(d: &mut LogDetector, service: &str, t0: i64, secs: i64, warn_every: i64) {
        let mut out = Findings::default();
        for i in 0..secs * 5 {
            let t = t0 + i * NANOS_PER_SEC / 5;
            let (level, body) = if i % warn_every == 0 {
                (LogLevel::Warn, "slow query took 120 ms".to_string())
            } else {
                (
                    LogLevel::Info,
                    format!("added item {} to cart {}", i * 7, i % 13),
                )
            };
            d.observe(
                &log(t, service, Some(level), &body),
                Phase::Learning,
                &mut out,
            );
            d.advance(t - NANOS_PER_SEC, Phase::Learning, &mut out);
        }
        d.flush(Phase::Learning, &mut out);
    }

    fn shown(d: &LogDetector, service: &str) -> Vec<String> {
        crate::shown_baselines(d, service, |_| true)
    }

    #[test]
    fn an_adopted_service_takes_the_fresh_detectors_counts_and_the_others_keep_theirs() {
        let mut live = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        lines_of(&mut live, "cart", 0, 300, 50);
        lines_of(&mut live, "pay", 0, 300, 25);
        let mut fresh = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let t1 = 3600 * NANOS_PER_SEC;
        lines_of(&mut fresh, "cart", t1, 300, 3);
        lines_of(&mut fresh, "pay", t1, 300, 4);
        let pay_before = shown(&live, "pay");
        let templates = live.template_count("default", "cart");
        assert_ne!(shown(&live, "cart"), shown(&fresh, "cart"));

        let adopted = live.adopt("cart", &fresh.save_state().unwrap()).unwrap();
        assert_eq!(adopted, shown(&fresh, "cart").len());
        assert_eq!(shown(&live, "cart"), shown(&fresh, "cart"));
        assert_eq!(shown(&live, "pay"), pay_before, "pay untouched");
        assert_eq!(
            live.template_count("default", "cart"),
            templates,
            "the templates stay the live miner's"
        );
    }

    #[test]
    fn normal_lines_raise_nothing_after_the_baseline() {
        let mut d = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        normal_traffic(&mut d, 0, 120, Phase::Learning, &mut out);
        let mut later = Findings::default();
        normal_traffic(
            &mut d,
            120 * NANOS_PER_SEC,
            60,
            Phase::Detecting,
            &mut later,
        );
        assert!(later.anomalies.is_empty(), "{:?}", later.anomalies);
        assert!(d.template_count("default", "cart") <= 3);
    }

    #[test]
    fn a_new_error_template_is_reported_once_and_an_error_burst_is_flagged() {
        let mut d = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        normal_traffic(&mut d, 0, 120, Phase::Learning, &mut out);
        let mut found = Findings::default();
        // one new error line alone is rare, not new
        d.observe(
            &log(
                119 * NANOS_PER_SEC,
                "cart",
                Some(LogLevel::Error),
                "disk quota warning on volume 7",
            ),
            Phase::Detecting,
            &mut found,
        );
        for i in 0..60 {
            let t = 120 * NANOS_PER_SEC + i * NANOS_PER_SEC / 4;
            let body = format!("ERROR c.s.CartService#88 cart total went negative after {i} items");
            d.observe(&log(t, "cart", None, &body), Phase::Detecting, &mut found);
            d.advance(t - NANOS_PER_SEC, Phase::Detecting, &mut found);
        }
        d.advance(200 * NANOS_PER_SEC, Phase::Detecting, &mut found);
        let new: Vec<_> = found
            .anomalies
            .iter()
            .filter(|a| a.signal.as_str().starts_with("log.new_template"))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        // raised by the service itself: its own changed behaviour
        assert_eq!(new[0].severity, Severity::Sev1);
        assert!(found
            .anomalies
            .iter()
            .any(|a| a.signal == "log.errors" && a.service == "cart"));
    }

    /// How many new templates `ledger` reports for an error line it writes three times within
    /// a few seconds, after a baseline of steady INFO lines and `baseline_errors`.
    fn new_templates_after(baseline_errors: &[String]) -> usize {
        let mut d = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        for i in 0..40 {
            let t = i * 3 * NANOS_PER_SEC;
            d.observe(
                &log(t, "ledger", None, "INFO l.Ledger#5 books balanced"),
                Phase::Learning,
                &mut out,
            );
        }
        for (i, line) in baseline_errors.iter().enumerate() {
            let t = (i as i64 * 10 + 1) * NANOS_PER_SEC;
            d.observe(&log(t, "ledger", None, line), Phase::Learning, &mut out);
        }
        let mut found = Findings::default();
        for i in 0..3 {
            let t = (130 + 2 * i) * NANOS_PER_SEC;
            let info = log(t, "ledger", None, "INFO l.Ledger#5 books balanced");
            d.observe(&info, Phase::Detecting, &mut found);
            let error = log(
                t + 1,
                "ledger",
                None,
                "ERROR l.Ledger#9 entry rejected by the book",
            );
            d.observe(&error, Phase::Detecting, &mut found);
        }
        d.advance(300 * NANOS_PER_SEC, Phase::Detecting, &mut found);
        found
            .anomalies
            .iter()
            .filter(|a| a.signal.family() == SignalFamily::LogNewTemplate)
            .count()
    }

    #[test]
    fn a_service_that_often_writes_never_seen_errors_needs_more_than_three_sightings_of_one() {
        // Every error line of the baseline was a one-off: three sightings of one more are what
        // such a service writes anyway.
        let one_offs: Vec<String> = (1..=6)
            .map(|i| format!("ERROR l.Ledger#{i} {}", "odd ".repeat(i)))
            .collect();
        assert_eq!(new_templates_after(&one_offs), 0);
        // The same number of baseline errors, all of one recurring template: new behaviour.
        let recurring = vec!["ERROR l.Ledger#3 retrying the flush".to_string(); 6];
        assert_eq!(new_templates_after(&recurring), 1);
    }

    /// The new error templates `cart` reports for `lines`, as (signal family, severity).
    fn new_error_templates(lines: &[&str]) -> Vec<(String, Severity)> {
        new_templates(LogLevel::Error, lines)
    }

    /// The new templates `cart` reports for `lines` at `level`, as (signal family, severity).
    fn new_templates(level: LogLevel, lines: &[&str]) -> Vec<(String, Severity)> {
        let mut d = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        normal_traffic(&mut d, 0, 120, Phase::Learning, &mut out);
        // `payment` is a service culprit knows, so a line naming it is about it.
        d.observe(
            &log(0, "payment", None, "INFO charged card"),
            Phase::Learning,
            &mut out,
        );
        let mut found = Findings::default();
        for (n, line) in lines.iter().enumerate() {
            for i in 0..5 {
                let t = (120 + 20 * n as i64 + i) * NANOS_PER_SEC;
                d.observe(
                    &log(t, "cart", Some(level), line),
                    Phase::Detecting,
                    &mut found,
                );
            }
        }
        found
            .anomalies
            .iter()
            .filter(|a| a.signal.as_str().starts_with("log.new_"))
            .map(|a| (a.signal.family().name().to_string(), a.severity))
            .collect()
    }

    #[derive(Clone, Copy)]
    enum Call {
        Fine,
        Failed,
        Slow,
    }

    /// A call into `payment` (span `p<i>`, a child of `s<i>`) at `t`.
    fn payment_call(i: i64, t: UnixNanos, millis: i64, is_error: bool) -> Event {
        Event {
            time: t,
            resource: Arc::new(Resource::new("payment")),
            body: EventBody::Span(SpanEvent {
                trace_id: format!("t{i}"),
                span_id: format!("p{i}"),
                parent_span_id: Some(format!("s{i}")),
                name: "POST /charge".into(),
                kind: "server".into(),
                duration_ns: millis * 1_000_000,
                is_error,
                error_type: None,
                attributes: BTreeMap::new(),
            }),
        }
    }

    /// Five requests in which `cart` writes `line` inside its span `s<i>`, after a call into
    /// `payment` (usually 2 ms) that went fine, failed or took 200 ms; returns the new-template
    /// findings as (signal family, severity, description).
    fn lines_inside_calls(line: &str, call: Call) -> Vec<(String, Severity, String)> {
        let mut d = LogDetector::new(SharedConfig::default(), LogsConfig::default());
        let mut out = Findings::default();
        normal_traffic(&mut d, 0, 120, Phase::Learning, &mut out);
        for i in 0..100 {
            let t = i * NANOS_PER_SEC;
            d.observe(
                &payment_call(1000 + i, t, 2 + i % 2, false),
                Phase::Learning,
                &mut out,
            );
        }
        let mut found = Findings::default();
        for i in 0..5 {
            let t = (120 + i) * NANOS_PER_SEC;
            let call = match call {
                Call::Fine => payment_call(i, t, 2, false),
                Call::Failed => payment_call(i, t, 2, true),
                Call::Slow => payment_call(i, t, 200, false),
            };
            d.observe(&call, Phase::Detecting, &mut found);
            let mut written = log(t + 3_000_000, "cart", Some(LogLevel::Error), line);
            if let EventBody::Log(l) = &mut written.body {
                l.trace_id = Some(format!("t{i}"));
                l.span_id = Some(format!("s{i}"));
            }
            d.observe(&written, Phase::Detecting, &mut found);
        }
        found
            .anomalies
            .iter()
            .filter(|a| a.signal.as_str().starts_with("log.new_"))
            .map(|a| {
                let family = a.signal.family().name().to_string();
                (family, a.severity, a.description.clone())
            })
            .collect()
    }

    #[test]
    fn an_error_written_inside_a_failed_call_is_relayed_whatever_its_words() {
        // No phrase and no service name: only the trace tells that payment failed first.
        let line = "CartService#77 checkout could not be completed for order";
        let relayed = lines_inside_calls(line, Call::Failed);
        assert_eq!(relayed.len(), 1, "{relayed:?}");
        assert_eq!(relayed[0].0, "log.new_remote_error");
        assert_eq!(relayed[0].1, Severity::Sev2);
        assert!(
            relayed[0].2.contains("call into payment failed"),
            "{}",
            relayed[0].2
        );
        // The same line after a call that went fine is the service's own new error.
        let own = lines_inside_calls(line, Call::Fine);
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(
            (own[0].0.as_str(), own[0].1),
            ("log.new_template", Severity::Sev1)
        );
    }

    #[test]
    fn an_error_written_inside_a_call_far_slower_than_usual_is_relayed() {
        // A timeout-like line with no phrase: the callee took 100x its usual time.
        let line = "CartService#80 order total unavailable for customer";
        let relayed = lines_inside_calls(line, Call::Slow);
        assert_eq!(relayed.len(), 1, "{relayed:?}");
        assert_eq!(
            (relayed[0].0.as_str(), relayed[0].1),
            ("log.new_remote_error", Severity::Sev2)
        );
        assert!(
            relayed[0].2.contains("call into payment was slow"),
            "{}",
            relayed[0].2
        );
    }

    #[test]
    fn a_new_error_that_reports_a_failed_call_is_a_remote_error_not_the_services_own() {
        let own = ("log.new_template".to_string(), Severity::Sev1);
        let remote = ("log.new_remote_error".to_string(), Severity::Sev2);
        assert_eq!(
            new_error_templates(&["CartService#91 price of item is null"]),
            vec![own.clone()]
        );
        // a remote-failure phrase
        assert_eq!(
            new_error_templates(&[
                "checkout failed: I/O error: Connection refused (host 10.0.0.7)"
            ]),
            vec![remote.clone()]
        );
        // names another service culprit has seen, as a whole word
        assert_eq!(
            new_error_templates(&["no answer from payment within 2 s"]),
            vec![remote]
        );
        // `payments_total` is not the `payment` service
        assert_eq!(
            new_error_templates(&["counter payments_total overflowed"]),
            vec![own]
        );
        // a warning can relay a failed call too
        assert_eq!(
            new_templates(
                LogLevel::Warn,
                &["retrying charge: connection reset by peer"]
            ),
            vec![("log.new_remote_error".to_string(), Severity::Sev3)]
        );
        assert_eq!(
            new_templates(LogLevel::Warn, &["cart cache is 91% full"]),
            vec![("log.new_template".to_string(), Severity::Sev3)]
        );
    }

    #[test]
    fn names_matches_whole_service_names_only() {
        assert!(names(
            "no instances available for ts-food-service",
            "ts-food-service"
        ));
        assert!(names("http://payment:8080/charge failed", "payment"));
        assert!(!names("ts-food-service-2 is down", "ts-food-service"));
        assert!(!names("paymentservice down", "payment"));
    }
}
