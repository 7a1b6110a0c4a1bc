//! Events to feature rows: one fixed schema of categorical and numeric columns per source.
//!
//! Featurising is stateful (moving windows of metric series, a span-id cache to name the parent
//! operation, log templates), so it runs through a [`FeatureState`] whose memory is bounded by
//! [`FeatureStateConfig`]. Log lines that come through a detection stage arrive mined
//! ([`LogEvent::template`]) and the state reads their template texts from the stage's miners
//! ([`FeatureState::share_templates`]); only a standalone featuriser (training) mines them itself.

use crate::error::{EmbedError, Result};
use culprit_core::{
    ChangeEvent, Event, EventBody, LogEvent, LogLevel, MetricPoint, SourceKind, SpanEvent,
    NANOS_PER_SEC, SPAN_ID_HORIZON,
};
use culprit_drain::LogTemplates;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Placeholder for a categorical value the event does not have.
pub const NONE: &str = "-";
/// Parent operation of a root span.
pub const ROOT: &str = "<root>";
/// Parent operation of a span whose parent is not (or no longer) in the span-id cache.
pub const UNKNOWN: &str = "<unknown>";
/// Longest categorical value kept (log templates can be long); longer ones are cut.
const MAX_CATEGORY_LEN: usize = 160;

/// One event as model input: categorical values and numbers in the order of its
/// [`FeatureSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub source: SourceKind,
    pub categorical: Vec<String>,
    pub numeric: Vec<f32>,
}

impl FeatureRow {
    /// A stable 64-bit hash of the row (categoricals and the exact bits of the numbers), the key
    /// of the embedding cache.
    pub fn stable_hash(&self) -> u64 {
        let mut h = Fnv64::default();
        self.source.as_str().hash(&mut h);
        for c in &self.categorical {
            c.hash(&mut h);
        }
        for x in &self.numeric {
            x.to_bits().hash(&mut h);
        }
        h.finish()
    }
}

/// Column names of one source's feature rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub source: SourceKind,
    pub categorical: Vec<String>,
    pub numeric: Vec<String>,
}

impl FeatureSchema {
    pub fn for_source(source: SourceKind) -> FeatureSchema {
        let (cat, num): (&[&str], &[&str]) = match source {
            SourceKind::Metrics => (
                &["service", "pod", "metric", "environment"],
                &[
                    "value_slog1p",
                    "hour_sin",
                    "hour_cos",
                    "dow_sin",
                    "dow_cos",
                    "ma_1h_slog1p",
                    "std_1h_log1p",
                    "z_1h",
                ],
            ),
            // Child count and error count of a span are only known once its trace completes;
            // featurising is streaming (one span at a time), so they are left out.
            SourceKind::Traces => (
                &[
                    "service",
                    "operation",
                    "kind",
                    "status",
                    "error_type",
                    "parent_operation",
                ],
                &["ln_duration_us", "duration_log2_bucket"],
            ),
            SourceKind::Logs => (
                &["service", "level", "template", "logger"],
                &["template_rarity", "ln_message_len", "param_count"],
            ),
            SourceKind::Changes => (
                &["service", "change_kind", "environment", "actor"],
                &[
                    "files_changed_log1p",
                    "lines_added_log1p",
                    "lines_removed_log1p",
                    "parameters_changed",
                    "hour_sin",
                    "hour_cos",
                ],
            ),
        };
        FeatureSchema {
            source,
            categorical: cat.iter().map(|s| s.to_string()).collect(),
            numeric: num.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Checks that every row belongs to this schema (source and column counts).
    pub fn check(&self, rows: &[FeatureRow]) -> Result<()> {
        for (i, r) in rows.iter().enumerate() {
            if r.source != self.source {
                return Err(EmbedError::SourceMismatch {
                    model: self.source,
                    rows: r.source,
                });
            }
            if r.categorical.len() != self.categorical.len() {
                return Err(EmbedError::RowShape {
                    row: i,
                    kind: "categorical",
                    got: r.categorical.len(),
                    expected: self.categorical.len(),
                    source_kind: self.source,
                });
            }
            if r.numeric.len() != self.numeric.len() {
                return Err(EmbedError::RowShape {
                    row: i,
                    kind: "numeric",
                    got: r.numeric.len(),
                    expected: self.numeric.len(),
                    source_kind: self.source,
                });
            }
        }
        Ok(())
    }
}

/// Memory bounds of [`FeatureState`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStateConfig {
    /// Length of the moving window of a metric series.
    pub metric_window_ns: i64,
    /// Points kept per series at most (the oldest go first).
    pub max_points_per_series: usize,
    /// Series tracked at most; beyond this the least recently updated tenth is forgotten.
    pub max_series: usize,
    /// Span ids remembered to name the parent operation (first in, first out); each for at
    /// most [`SPAN_ID_HORIZON`] of event time.
    pub max_spans: usize,
}

impl Default for FeatureStateConfig {
    fn default() -> Self {
        Self {
            metric_window_ns: 3600 * NANOS_PER_SEC,
            max_points_per_series: 720,
            max_series: 20_000,
            max_spans: 200_000,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SeriesWindow {
    points: VecDeque<(i64, f64)>,
    last_time: i64,
}

/// What featurising remembers between events. Not `Clone`-cheap; one per pipeline shard.
#[derive(Debug)]
pub struct FeatureState {
    config: FeatureStateConfig,
    series: HashMap<u64, SeriesWindow>,
    /// Operation of each span id remembered, keyed by the id's hash ([`span_key`]): up to
    /// `max_spans` of them are held, so not as strings.
    span_ops: HashMap<u64, String>,
    /// The ids held, oldest first, with the event time each was remembered at.
    span_order: VecDeque<(u64, i64)>,
    /// The miners log lines are mined into: a detection stage's, shared, or this state's own.
    templates: LogTemplates,
}

impl Default for FeatureState {
    fn default() -> Self {
        Self::new(FeatureStateConfig::default())
    }
}

/// What a [`FeatureState`] remembers, without its bounds (the configuration): the metric
/// series' windows and the span-id cache in arrival order. [`FeatureState::memory`] takes it,
/// [`FeatureState::restore`] puts it back, so a restarted process featurises the next events as
/// the one that saved it. The log templates are the miners' (the detection stage saves them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeatureMemory {
    series: Vec<(u64, SeriesWindow)>,
    /// (span id's hash, operation), oldest first: the eviction order.
    spans: Vec<(u64, String)>,
    /// When each of `spans` was remembered (absent in snapshots of earlier versions: those
    /// ids are forgotten at the next span).
    #[serde(default)]
    span_times: Vec<i64>,
}

/// A span id's key in the span cache: its FNV-1a hash (two of the `max_spans` ids held share
/// one with a probability of about 1e-9).
fn span_key(span_id: &str) -> u64 {
    culprit_core::hash::Fnv1a::of(span_id.as_bytes())
}

impl FeatureState {
    pub fn new(config: FeatureStateConfig) -> Self {
        Self {
            config,
            series: HashMap::new(),
            span_ops: HashMap::new(),
            span_order: VecDeque::new(),
            templates: LogTemplates::default(),
        }
    }

    /// Reads log templates from `templates`, the detection stage's miners that mine every line
    /// before it is featurised, instead of mining them here.
    pub fn share_templates(&mut self, templates: &LogTemplates) {
        self.templates = templates.clone();
    }

    /// What this state remembers, for a snapshot.
    pub fn memory(&self) -> FeatureMemory {
        let (spans, span_times) = self
            .span_order
            .iter()
            .filter_map(|&(id, t)| Some(((id, self.span_ops.get(&id)?.clone()), t)))
            .unzip();
        FeatureMemory {
            series: self.series.iter().map(|(k, s)| (*k, s.clone())).collect(),
            spans,
            span_times,
        }
    }

    /// Replaces what this state remembers with `memory`, keeping its own bounds: the oldest
    /// span ids beyond `max_spans` are dropped.
    pub fn restore(&mut self, memory: FeatureMemory) {
        self.series = memory.series.into_iter().collect();
        self.span_ops.clear();
        self.span_order.clear();
        let skip = memory.spans.len().saturating_sub(self.config.max_spans);
        let times = memory
            .span_times
            .into_iter()
            .chain(std::iter::repeat(i64::MIN));
        for ((key, op), time) in memory.spans.into_iter().zip(times).skip(skip) {
            self.remember_key(key, op, time);
        }
    }

    /// Number of metric series, span ids and services with a log miner (for tests and metrics).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.series.len(),
            self.span_ops.len(),
            self.templates.services(),
        )
    }

    fn metric_window(&mut self, key: u64, time: i64, value: f64) -> (f64, f64) {
        if !self.series.contains_key(&key) && self.series.len() >= self.config.max_series {
            self.evict_series();
        }
        let window = self.config.metric_window_ns;
        let cap = self.config.max_points_per_series.max(1);
        let s = self.series.entry(key).or_default();
        s.last_time = s.last_time.max(time);
        let horizon = s.last_time.saturating_sub(window);
        while s.points.front().is_some_and(|p| p.0 < horizon) {
            s.points.pop_front();
        }
        // Two passes over at most `cap` points: exact, and no drift from running sums.
        let (mean, std) = if s.points.is_empty() {
            (value, 0.0)
        } else {
            let n = s.points.len() as f64;
            let mean = s.points.iter().map(|p| p.1).sum::<f64>() / n;
            let var = s.points.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        };
        if s.points.len() >= cap {
            s.points.pop_front();
        }
        s.points.push_back((time, value));
        (mean, std)
    }

    fn evict_series(&mut self) {
        let mut times: Vec<i64> = self.series.values().map(|s| s.last_time).collect();
        let k = (times.len() / 10).max(1);
        let (_, cut, _) = times.select_nth_unstable(k - 1);
        let cut = *cut;
        self.series.retain(|_, s| s.last_time > cut);
    }

    fn remember_span(&mut self, span_id: &str, op: &str, time: i64) {
        if span_id.is_empty() {
            return;
        }
        self.remember_key(span_key(span_id), op.to_string(), time);
    }

    fn remember_key(&mut self, key: u64, op: String, time: i64) {
        if self.config.max_spans == 0 {
            return;
        }
        if self.span_ops.insert(key, op).is_none() {
            self.span_order.push_back((key, time));
        }
        self.forget_spans(time);
    }

    /// Forgets the ids remembered more than [`SPAN_ID_HORIZON`] before `now`, and the oldest beyond
    /// `max_spans`.
    fn forget_spans(&mut self, now: i64) {
        let too_old = now.saturating_sub(SPAN_ID_HORIZON);
        while self
            .span_order
            .front()
            .is_some_and(|&(_, t)| t < too_old || self.span_order.len() > self.config.max_spans)
        {
            if let Some((old, _)) = self.span_order.pop_front() {
                self.span_ops.remove(&old);
            }
        }
    }
}

/// Featurises one event into the row of its source's schema, updating `state`.
pub fn featurize(event: &Event, state: &mut FeatureState) -> FeatureRow {
    let source = event.source();
    let (categorical, numeric) = match &event.body {
        EventBody::Metric(m) => metric_features(event, m, state),
        EventBody::Span(s) => span_features(event, s, state),
        EventBody::Log(l) => log_features(event, l, state),
        EventBody::Change(c) => change_features(event, c),
    };
    FeatureRow {
        source,
        categorical,
        numeric,
    }
}

/// Featurises events of one source in order, skipping events of other sources.
pub fn featurize_all<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    source: SourceKind,
    state: &mut FeatureState,
) -> Vec<FeatureRow> {
    events
        .into_iter()
        .filter(|e| e.source() == source)
        .map(|e| featurize(e, state))
        .collect()
}

fn metric_features(
    event: &Event,
    m: &MetricPoint,
    state: &mut FeatureState,
) -> (Vec<String>, Vec<f32>) {
    let r = &event.resource;
    let pod = r.instance.as_deref().unwrap_or(NONE);
    let mut h = Fnv64::default();
    (&r.service, pod, &r.environment, &m.name).hash(&mut h);
    for (k, v) in &m.attributes {
        (k, v).hash(&mut h);
    }
    let value = if m.value.is_finite() { m.value } else { 0.0 };
    let (mean, std) = state.metric_window(h.finish(), event.time, value);
    // Floor on the spread so a flat series does not turn every wiggle into an infinite z.
    let floor = 1e-3 * mean.abs().max(1e-3);
    let z = ((value - mean) / std.max(floor)).clamp(-10.0, 10.0);
    let (hs, hc) = cyclic(hour_of_day(event.time), 24.0);
    let (ds, dc) = cyclic(day_of_week(event.time), 7.0);
    (
        vec![cat(&r.service), cat(pod), cat(&m.name), cat(&r.environment)],
        vec![
            slog1p(value),
            hs,
            hc,
            ds,
            dc,
            slog1p(mean),
            (std.ln_1p()) as f32,
            z as f32,
        ],
    )
}

fn span_features(
    event: &Event,
    s: &SpanEvent,
    state: &mut FeatureState,
) -> (Vec<String>, Vec<f32>) {
    state.forget_spans(event.time);
    let parent = match s.parent_span_id.as_deref() {
        None | Some("") => ROOT.to_string(),
        Some(p) => state
            .span_ops
            .get(&span_key(p))
            .cloned()
            .unwrap_or_else(|| UNKNOWN.to_string()),
    };
    state.remember_span(&s.span_id, &s.name, event.time);
    let us = (s.duration_ns.max(0) as f64) / 1_000.0;
    let ln_us = quantise(us.ln_1p());
    let bucket = (1.0 + us).log2().floor();
    let status = if s.is_error { "error" } else { "ok" };
    let error_type = if s.is_error {
        s.error_type.as_deref().unwrap_or(NONE)
    } else {
        NONE
    };
    (
        vec![
            cat(&event.resource.service),
            cat(&s.name),
            cat(&s.kind),
            status.to_string(),
            cat(error_type),
            cat(&parent),
        ],
        vec![ln_us as f32, bucket as f32],
    )
}

fn log_features(event: &Event, l: &LogEvent, state: &mut FeatureState) -> (Vec<String>, Vec<f32>) {
    let service = &event.resource.service;
    let tokens: Vec<&str> = l.body.split_whitespace().take(12).collect();
    let level_pos = tokens.iter().position(|t| level_token(t).is_some());
    let level = l
        .level
        .or_else(|| level_pos.and_then(|i| level_token(tokens[i])));
    let logger = find_logger(&tokens, level_pos);
    // Mined where it entered detection; a line featurised on its own (training) is mined here.
    let mined = l.template.unwrap_or_else(|| state.templates.mine(event, l));
    let share = mined.size.max(1) as f64 / mined.service_lines.max(1) as f64;
    let rarity = -share.min(1.0).ln();
    // The template text, not its numeric id: ids depend on arrival order and would not match
    // between the training run and a later process, the text does once templates have settled.
    let template = state
        .templates
        .text(&event.resource.environment, service, mined.id)
        .unwrap_or_default();
    (
        vec![
            cat(service),
            level.map_or(NONE, level_str).to_string(),
            cat(&template),
            logger,
        ],
        vec![
            quantise(rarity) as f32,
            quantise((l.body.len() as f64).ln_1p()) as f32,
            mined.param_count as f32,
        ],
    )
}

fn change_features(event: &Event, c: &ChangeEvent) -> (Vec<String>, Vec<f32>) {
    let a = &c.attributes;
    let num = |k: &str| {
        a.get(k)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    };
    let (hs, hc) = cyclic(hour_of_day(event.time), 24.0);
    (
        vec![
            cat(&event.resource.service),
            c.kind.as_str().to_string(),
            cat(&event.resource.environment),
            cat(c.actor.as_deref().unwrap_or(NONE)),
        ],
        vec![
            num("files_changed").max(0.0).ln_1p() as f32,
            num("lines_added").max(0.0).ln_1p() as f32,
            num("lines_removed").max(0.0).ln_1p() as f32,
            parameters_changed(a) as f32,
            hs,
            hc,
        ],
    )
}

/// `parameters_changed` when given, else the length of a comma list in `parameters`, else 1 for
/// a single `parameter`, else 0.
fn parameters_changed(a: &BTreeMap<String, String>) -> f64 {
    if let Some(n) = a
        .get("parameters_changed")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
    {
        return n.max(0.0);
    }
    if let Some(list) = a.get("parameters") {
        return list.split(',').filter(|s| !s.trim().is_empty()).count() as f64;
    }
    if a.contains_key("parameter") {
        return 1.0;
    }
    0.0
}

fn level_token(t: &str) -> Option<LogLevel> {
    let t = t.trim_matches(|c: char| matches!(c, '[' | ']' | '(' | ')' | ':' | ',' | '<' | '>'));
    if t.len() < 3 {
        return None;
    }
    LogLevel::from_text(t)
}

fn level_str(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
        LogLevel::Fatal => "fatal",
    }
}

/// The first of a few tokens after the level (or from the start when there is none) that looks
/// like `a.b.Class#line` / `a.b.Class:line` (line dropped: the template already tells lines
/// apart) or a `[logger]`; `-` otherwise.
fn find_logger(tokens: &[&str], level_pos: Option<usize>) -> String {
    let start = level_pos.map_or(0, |i| i + 1);
    for t in tokens.iter().skip(start).take(4) {
        if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if !inner.is_empty() && !inner.contains('[') {
                return cat(inner);
            }
            continue;
        }
        let t = t.trim_end_matches(':');
        let class = t.split(['#', ':']).next().unwrap_or("");
        let suffix_ok = t[class.len()..]
            .trim_start_matches(['#', ':'])
            .chars()
            .all(|c| c.is_ascii_digit());
        if suffix_ok && is_dotted_name(class) {
            return cat(class);
        }
    }
    NONE.to_string()
}

fn is_dotted_name(s: &str) -> bool {
    let mut parts = 0;
    for p in s.split('.') {
        let mut chars = p.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$' => {}
            _ => return false,
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

fn cat(s: &str) -> String {
    if s.len() <= MAX_CATEGORY_LEN {
        return s.to_string();
    }
    let mut end = MAX_CATEGORY_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Rounds a log-scale number to 0.01 (1 % in linear terms): far below what any detector can
/// tell apart, and it lets identical-looking events produce identical rows for the cache.
fn quantise(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sign-preserving log1p, so counters, bytes and percentages land on comparable scales.
fn slog1p(x: f64) -> f32 {
    (x.signum() * x.abs().ln_1p()) as f32
}

fn cyclic(x: f64, period: f64) -> (f32, f32) {
    let a = std::f64::consts::TAU * x / period;
    (a.sin() as f32, a.cos() as f32)
}

/// Fractional hour of day, UTC.
fn hour_of_day(t: i64) -> f64 {
    let secs = t.div_euclid(NANOS_PER_SEC).rem_euclid(86_400);
    secs as f64 / 3600.0
}

/// Fractional day of week, UTC, Monday = 0 (1970-01-01 was a Thursday).
fn day_of_week(t: i64) -> f64 {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    ((days + 3).rem_euclid(7)) as f64 + secs.rem_euclid(86_400) as f64 / 86_400.0
}

/// FNV-1a (`culprit_core::hash`) as a `Hasher`: stable across processes and Rust versions,
/// unlike `DefaultHasher`'s contract.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fnv64(culprit_core::hash::Fnv1a);

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        // A final avalanche (splitmix64) so low bits are usable as bucket indices.
        let mut z = self.0.value();
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

pub(crate) fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h = Fnv64::default();
    seed.hash(&mut h);
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{ChangeKind, Resource};
    use std::sync::Arc;

    fn ev(body: EventBody, time: i64) -> Event {
        let r = Resource::new("cart")
            .with_environment("prod")
            .with_instance("cart-0");
        Event {
            time,
            resource: Arc::new(r),
            body,
        }
    }

    fn span(id: &str, parent: Option<&str>, name: &str, ms: i64, err: bool) -> EventBody {
        EventBody::Span(SpanEvent {
            trace_id: "t".repeat(32),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            kind: "server".into(),
            duration_ns: ms * 1_000_000,
            is_error: err,
            error_type: err.then(|| "Timeout".to_string()),
            attributes: BTreeMap::new(),
        })
    }

    #[test]
    fn span_rows_name_the_parent_operation_from_the_cache() {
        let mut st = FeatureState::default();
        let root = featurize(&ev(span("a", None, "GET /cart", 8, false), 0), &mut st);
        let child = featurize(&ev(span("b", Some("a"), "db.query", 1, true), 0), &mut st);
        let orphan = featurize(&ev(span("c", Some("zz"), "db.query", 1, false), 0), &mut st);
        assert_eq!(
            root.categorical,
            ["cart", "GET /cart", "server", "ok", "-", ROOT]
        );
        assert_eq!(
            child.categorical,
            [
                "cart",
                "db.query",
                "server",
                "error",
                "Timeout",
                "GET /cart"
            ]
        );
        assert_eq!(orphan.categorical[5], UNKNOWN);
        // 8 ms = 8000 us: ln(8001) ~ 8.99, log2 bucket 12.
        assert!((root.numeric[0] - 8.99).abs() < 0.01);
        assert_eq!(root.numeric[1], 12.0);
        FeatureSchema::for_source(SourceKind::Traces)
            .check(&[root, child, orphan])
            .unwrap();
    }

    #[test]
    fn span_cache_stays_bounded() {
        let mut st = FeatureState::new(FeatureStateConfig {
            max_spans: 10,
            ..Default::default()
        });
        for i in 0..100 {
            featurize(
                &ev(span(&format!("s{i}"), None, "op", 1, false), 0),
                &mut st,
            );
        }
        assert_eq!(st.sizes().1, 10);
    }

    /// However few spans come, an id names its operation for [`SPAN_ID_HORIZON`] of event time and
    /// is then forgotten, also across a snapshot.
    #[test]
    fn span_ids_are_forgotten_after_the_horizon() {
        let mut st = FeatureState::default();
        featurize(&ev(span("a", None, "GET /cart", 1, false), 0), &mut st);
        let child = |parent: &str, t: i64| ev(span("x", Some(parent), "db", 1, false), t);
        let at_horizon = featurize(&child("a", SPAN_ID_HORIZON), &mut st);
        assert_eq!(at_horizon.categorical[5], "GET /cart");
        let mut restored = FeatureState::default();
        restored.restore(st.memory());
        let past = featurize(&child("a", SPAN_ID_HORIZON + 1), &mut restored);
        assert_eq!(past.categorical[5], UNKNOWN);
        assert_eq!(restored.sizes().1, 1, "only the newest span's id is held");
    }

    #[test]
    fn log_rows_carry_level_template_logger_and_rarity() {
        let mut st = FeatureState::default();
        let line = |n: u32| {
            ev(
                EventBody::Log(LogEvent {
                    level: None,
                    body: format!("16:48:42.424 INFO  t.s.TravelServiceImpl#532 Route {n} loaded"),
                    trace_id: None,
                    span_id: None,
                    attributes: BTreeMap::new(),
                    template: None,
                }),
                0,
            )
        };
        let first = featurize(&line(1), &mut st);
        for n in 2..10 {
            featurize(&line(n), &mut st);
        }
        let later = featurize(&line(99), &mut st);
        assert_eq!(later.categorical[0], "cart");
        assert_eq!(later.categorical[1], "info");
        // Mined as the detectors mine it: leading timestamp dropped, level first.
        assert_eq!(
            later.categorical[2],
            "INFO t.s.TravelServiceImpl#532 Route <*> loaded"
        );
        assert_eq!(later.categorical[3], "t.s.TravelServiceImpl");
        assert_eq!(
            later.numeric[0], 0.0,
            "the only template of the service is not rare"
        );
        assert_eq!(later.numeric[2], 1.0, "the route id");
        let odd = ev(
            EventBody::Log(LogEvent {
                level: Some(LogLevel::Error),
                body: "ERROR [pool-1] something completely different happened".into(),
                trace_id: None,
                span_id: None,
                attributes: BTreeMap::new(),
                template: None,
            }),
            0,
        );
        let odd = featurize(&odd, &mut st);
        assert_eq!(odd.categorical[1], "error");
        assert_eq!(odd.categorical[3], "pool-1");
        assert!(
            odd.numeric[0] > 2.0,
            "a first-seen template among 11 lines is rare: {}",
            odd.numeric[0]
        );
        assert_eq!(first.categorical.len(), 4);
    }

    #[test]
    fn metric_rows_track_the_moving_window_and_time_of_day() {
        let mut st = FeatureState::default();
        let point = |v: f64, t: i64| {
            ev(
                EventBody::Metric(MetricPoint {
                    name: "cpu".into(),
                    value: v,
                    attributes: BTreeMap::new(),
                }),
                t,
            )
        };
        // 1970-01-05 was a Monday; 06:00 UTC.
        let t0 = (4 * 86_400 + 6 * 3600) * NANOS_PER_SEC;
        let first = featurize(&point(10.0, t0), &mut st);
        assert_eq!(first.categorical, ["cart", "cart-0", "cpu", "prod"]);
        assert!(
            (first.numeric[1] - 1.0).abs() < 1e-6 && first.numeric[2].abs() < 1e-6,
            "06:00 is a quarter turn"
        );
        let monday_6am = std::f32::consts::TAU * 0.25 / 7.0;
        assert!(
            (first.numeric[3] - monday_6am.sin()).abs() < 1e-5,
            "monday is day 0"
        );
        assert_eq!(first.numeric[7], 0.0, "no history, no z");
        for i in 1..60 {
            featurize(
                &point(10.0 + (i % 2) as f64, t0 + i * 60 * NANOS_PER_SEC),
                &mut st,
            );
        }
        let spike = featurize(&point(50.0, t0 + 60 * 60 * NANOS_PER_SEC), &mut st);
        assert!((spike.numeric[5] - (10.5f64).ln_1p() as f32).abs() < 0.02);
        assert_eq!(spike.numeric[7], 10.0, "z is clipped");
        // Two hours later everything has left the window: no history again.
        let late = featurize(&point(10.0, t0 + 3 * 3600 * NANOS_PER_SEC), &mut st);
        assert!((late.numeric[5] - 10f32.ln_1p()).abs() < 1e-5);
        assert_eq!(late.numeric[7], 0.0);
        let nan = featurize(&point(f64::NAN, t0), &mut st);
        assert!(nan.numeric.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn metric_series_are_bounded() {
        let cfg = FeatureStateConfig {
            max_series: 50,
            max_points_per_series: 3,
            ..Default::default()
        };
        let mut st = FeatureState::new(cfg);
        for i in 0..500 {
            let m = MetricPoint {
                name: format!("m{i}"),
                value: 1.0,
                attributes: BTreeMap::new(),
            };
            featurize(&ev(EventBody::Metric(m), i), &mut st);
        }
        assert!(st.sizes().0 <= 50);
    }

    #[test]
    fn change_rows_read_counts_from_attributes() {
        let mut a = BTreeMap::new();
        a.insert("files_changed".to_string(), "3".to_string());
        a.insert("lines_added".to_string(), "not a number".to_string());
        a.insert("parameters".to_string(), "timeout_ms, retries".to_string());
        let c = ChangeEvent {
            id: "1".into(),
            kind: ChangeKind::ConfigChange,
            summary: "s".into(),
            actor: None,
            attributes: a,
        };
        let row = featurize(&ev(EventBody::Change(c), 0), &mut FeatureState::default());
        assert_eq!(row.categorical, ["cart", "config_change", "prod", "-"]);
        assert!((row.numeric[0] - 4f32.ln()).abs() < 1e-6);
        assert_eq!(row.numeric[1], 0.0);
        assert_eq!(row.numeric[3], 2.0);
    }

    #[test]
    fn logger_detection_accepts_classes_and_brackets_only() {
        assert_eq!(find_logger(&["INFO", "a.b.C:12", "x"], Some(0)), "a.b.C");
        assert_eq!(find_logger(&["INFO", "[main]", "x"], Some(0)), "main");
        assert_eq!(find_logger(&["INFO", "hello", "3.14"], Some(0)), NONE);
        assert_eq!(find_logger(&[], None), NONE);
    }

    /// Spans, log lines and metric points of `cart` from minute `from` on, `n` of each.
    fn mixed(from: i64, n: i64) -> Vec<Event> {
        let mut events = Vec::new();
        for i in from..from + n {
            let t = i * 60 * NANOS_PER_SEC;
            events.push(ev(
                span(&format!("p{i}"), None, "GET /cart", 5 + i % 3, false),
                t,
            ));
            // A child of the span one minute back: its parent's name comes from the cache.
            let parent = format!("p{}", i - 1);
            events.push(ev(span(&format!("c{i}"), Some(&parent), "db", 1, false), t));
            events.push(ev(
                EventBody::Log(LogEvent {
                    level: None,
                    body: format!("INFO cart {} items for user {i}", i % 4),
                    trace_id: None,
                    span_id: None,
                    attributes: BTreeMap::new(),
                    template: None,
                }),
                t,
            ));
            events.push(ev(
                EventBody::Metric(MetricPoint {
                    name: "cpu".into(),
                    value: 20.0 + (i % 5) as f64,
                    attributes: BTreeMap::new(),
                }),
                t,
            ));
        }
        events
    }

    #[test]
    fn a_restored_state_featurises_the_next_events_as_the_one_it_was_saved_from() {
        let mut original = FeatureState::default();
        for e in mixed(0, 30) {
            featurize(&e, &mut original);
        }
        let text = serde_json::to_string(&original.memory()).unwrap();
        let mut restored = FeatureState::default();
        restored.restore(serde_json::from_str(&text).unwrap());
        // The templates are the miners', restored by their owner.
        let templates = serde_json::to_string(&original.templates.save_state()).unwrap();
        restored
            .templates
            .restore_state(serde_json::from_str(&templates).unwrap());
        assert_eq!(restored.sizes(), original.sizes());
        let mut fresh = FeatureState::default();
        let next = mixed(30, 10);
        let rows = |st: &mut FeatureState| -> Vec<FeatureRow> {
            next.iter().map(|e| featurize(e, st)).collect()
        };
        let (a, b, c) = (rows(&mut original), rows(&mut restored), rows(&mut fresh));
        assert_eq!(b, a);
        assert_ne!(c, a, "a fresh state knows no parent, template or window");
    }

    #[test]
    fn a_restored_span_cache_keeps_the_newest_ids_within_its_bound() {
        let mut original = FeatureState::default();
        for i in 0..20 {
            featurize(
                &ev(span(&format!("s{i}"), None, &format!("op{i}"), 1, false), 0),
                &mut original,
            );
        }
        let mut small = FeatureState::new(FeatureStateConfig {
            max_spans: 5,
            ..Default::default()
        });
        small.restore(original.memory());
        assert_eq!(small.sizes().1, 5);
        let child = |parent: &str| ev(span("x", Some(parent), "db", 1, false), 0);
        assert_eq!(featurize(&child("s19"), &mut small).categorical[5], "op19");
        assert_eq!(featurize(&child("s10"), &mut small).categorical[5], UNKNOWN);
    }
}
