//! Drain over culprit's log events: the text a line is mined as, and [`LogTemplates`], the one
//! set of miners (one per environment and service) a detection stage mines every line with.
//!
//! A line is mined once, where it enters detection (`culprit_detect::Detectors::observe`), and
//! goes on to every detector with its [`LineTemplate`] ([`LogEvent::template`]); the detectors
//! and the k-NN featuriser read template texts from clones of the same [`LogTemplates`], so a
//! template id means the same cluster to all of them.

use crate::{TemplateId, TemplateMiner};
use culprit_core::{Event, EventBody, LineTemplate, LogEvent, LogLevel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The level a line declares, from the record or else from its first words.
pub fn line_level(level: Option<LogLevel>, body: &str) -> Option<LogLevel> {
    level.or_else(|| {
        body.split_whitespace()
            .take(6)
            .find_map(|t| LogLevel::from_text(t.trim_matches(|c: char| !c.is_ascii_alphabetic())))
    })
}

/// Drops leading timestamp-like tokens ("16:42:22.382", "2023-01-29T08:42:22Z", "[2023-01-29") so
/// the first words the template tree branches on are the stable ones (level, logger).
pub fn strip_leading_timestamps(body: &str) -> &str {
    let mut rest = body.trim_start();
    for _ in 0..3 {
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..token_end];
        let looks_like_time = token.chars().any(|c| c.is_ascii_digit())
            && token
                .chars()
                .all(|c| c.is_ascii_digit() || "-:.,/TZ+[]".contains(c));
        if !looks_like_time || token.is_empty() {
            break;
        }
        rest = rest[token_end..].trim_start();
    }
    rest
}

/// The text a template miner sees: leading timestamps dropped and the level first, so that an
/// ERROR line never merges into an INFO template.
pub fn mining_line(level: Option<LogLevel>, body: &str) -> String {
    let text = strip_leading_timestamps(body);
    let word = level_word(level);
    let mut line = String::with_capacity(text.len() + 6);
    if !text.starts_with(word) {
        line.push_str(word);
        line.push(' ');
    }
    line.push_str(text);
    line
}

pub fn level_word(level: Option<LogLevel>) -> &'static str {
    match level {
        Some(LogLevel::Trace) => "TRACE",
        Some(LogLevel::Debug) => "DEBUG",
        Some(LogLevel::Info) => "INFO",
        Some(LogLevel::Warn) => "WARN",
        Some(LogLevel::Error) => "ERROR",
        Some(LogLevel::Fatal) => "FATAL",
        None => "-",
    }
}

/// One (environment, service)'s miner and the lines it has taken.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ServiceMiner {
    miner: TemplateMiner,
    lines: u64,
    /// Per level ([`level_index`]): the lines of that level and its templates holding exactly
    /// one line (the service's one-line templates are their sum: templates never mix levels).
    /// An evicted singleton stays counted, which only overstates how often the service writes
    /// something new.
    #[serde(default)]
    by_level: [LevelCounts; LEVELS],
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct LevelCounts {
    lines: u64,
    singletons: u64,
}

/// Levels a line can be mined at: none, then TRACE to FATAL.
const LEVELS: usize = 7;

fn level_index(level: Option<LogLevel>) -> usize {
    level.map_or(0, |l| l as usize + 1)
}

/// environment -> service -> miner: looked up by `&str`, so mining a line allocates no key.
type Miners = HashMap<String, HashMap<String, ServiceMiner>>;

/// The template miners of one detection stage, one per (environment, service) with the default
/// Drain settings, behind a handle whose clones share them: the stage mines with it, the
/// consumers of the lines read template texts from it.
#[derive(Debug, Clone, Default)]
pub struct LogTemplates {
    miners: Arc<Mutex<Miners>>,
}

/// What [`LogTemplates`] saves: every miner with its line count.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LogTemplatesState {
    miners: Vec<((String, String), ServiceMiner)>,
}

impl LogTemplates {
    /// Format version of [`LogTemplatesState`].
    pub const STATE_VERSION: u32 = 1;

    fn lock(&self) -> MutexGuard<'_, Miners> {
        // A panic while mining leaves a miner no worse than one line short.
        self.miners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mines `log`, a line of `event`'s service: the template it joined.
    pub fn mine(&self, event: &Event, log: &LogEvent) -> LineTemplate {
        let (environment, service) = (&event.resource.environment, &event.resource.service);
        let level = line_level(log.level, &log.body);
        let line = mining_line(level, &log.body);
        let mut miners = self.lock();
        if !miners.contains_key(environment.as_str()) {
            miners.insert(environment.clone(), HashMap::new());
        }
        let services = miners
            .get_mut(environment.as_str())
            .expect("inserted above");
        if !services.contains_key(service.as_str()) {
            let fresh = ServiceMiner {
                miner: TemplateMiner::default(),
                lines: 0,
                by_level: Default::default(),
            };
            services.insert(service.clone(), fresh);
        }
        let s = services.get_mut(service.as_str()).expect("inserted above");
        let m = s.miner.add(&line);
        s.lines += 1;
        let size = s.miner.size(m.id);
        let at_level = &mut s.by_level[level_index(level)];
        at_level.lines += 1;
        match size {
            1 => at_level.singletons += 1,
            2 => at_level.singletons = at_level.singletons.saturating_sub(1),
            _ => {}
        }
        let at_level = *at_level;
        LineTemplate {
            id: m.id,
            size,
            param_count: m.param_count as u32,
            service_lines: s.lines,
            service_singletons: s.by_level.iter().map(|l| l.singletons).sum(),
            level_lines: at_level.lines,
            level_singletons: at_level.singletons,
        }
    }

    /// Mines `event` in place when it is a log line, filling [`LogEvent::template`] with the
    /// template it joined (replacing any it carried: a line is always mined into these miners);
    /// any other event is left as it is.
    pub fn mine_into(&self, event: &mut Event) {
        if let EventBody::Log(log) = &event.body {
            let template = self.mine(event, log);
            if let EventBody::Log(log) = &mut event.body {
                log.template = Some(template);
            }
        }
    }

    /// The template of cluster `id` of the service's miner as it stands now.
    pub fn text(&self, environment: &str, service: &str, id: TemplateId) -> Option<String> {
        self.lock()
            .get(environment)
            .and_then(|s| s.get(service))
            .and_then(|s| s.miner.template(id))
    }

    /// Templates mined for a service so far.
    pub fn cluster_count(&self, environment: &str, service: &str) -> usize {
        self.lock()
            .get(environment)
            .and_then(|s| s.get(service))
            .map_or(0, |s| s.miner.cluster_count())
    }

    /// Services with a miner.
    pub fn services(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Every miner, for a snapshot.
    pub fn save_state(&self) -> LogTemplatesState {
        let mut miners: Vec<_> = self
            .lock()
            .iter()
            .flat_map(|(environment, services)| {
                services
                    .iter()
                    .map(|(service, m)| ((environment.clone(), service.clone()), m.clone()))
            })
            .collect();
        miners.sort_by(|a, b| a.0.cmp(&b.0));
        LogTemplatesState { miners }
    }

    /// Replaces every miner with the saved ones, for all the handle's clones.
    pub fn restore_state(&self, state: LogTemplatesState) {
        let mut miners = self.lock();
        miners.clear();
        for ((environment, service), m) in state.miners {
            miners.entry(environment).or_default().insert(service, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::Resource;
    use std::collections::BTreeMap;

    fn line(service: &str, body: &str) -> Event {
        Event {
            time: 0,
            resource: Arc::new(Resource::new(service)),
            body: EventBody::Log(LogEvent {
                level: None,
                body: body.into(),
                trace_id: None,
                span_id: None,
                attributes: BTreeMap::new(),
                template: None,
            }),
        }
    }

    fn template_of(mut event: Event, templates: &LogTemplates) -> LineTemplate {
        templates.mine_into(&mut event);
        match &event.body {
            EventBody::Log(log) => log.template.expect("mined"),
            _ => panic!("not a line"),
        }
    }

    #[test]
    fn infers_levels_and_strips_timestamps() {
        assert_eq!(
            line_level(None, "16:42:22.382 ERROR c.s.X#1 boom"),
            Some(LogLevel::Error)
        );
        assert_eq!(
            line_level(Some(LogLevel::Info), "ERROR in text"),
            Some(LogLevel::Info)
        );
        assert_eq!(
            strip_leading_timestamps("2023-01-29T08:42:22Z 16:42:22.382 INFO x"),
            "INFO x"
        );
        assert_eq!(strip_leading_timestamps("INFO 12 x"), "INFO 12 x");
    }

    #[test]
    fn clones_of_the_handle_share_one_miner_per_service_and_a_restore_reaches_them_all() {
        let templates = LogTemplates::default();
        let reader = templates.clone();
        let a = template_of(line("cart", "12:00:01 INFO added item 3"), &templates);
        let b = template_of(line("cart", "12:00:02 INFO added item 9"), &templates);
        let other = template_of(line("pay", "INFO added item 9"), &templates);
        assert_eq!(a.id, b.id);
        assert_eq!((b.size, b.service_lines, other.service_lines), (2, 2, 1));
        assert_eq!(
            reader.text("default", "cart", a.id).as_deref(),
            Some("INFO added item <*>")
        );
        let saved = serde_json::to_string(&templates.save_state()).unwrap();
        let restored = LogTemplates::default();
        let reader = restored.clone();
        restored.restore_state(serde_json::from_str(&saved).unwrap());
        assert_eq!(reader.cluster_count("default", "cart"), 1);
        let c = template_of(line("cart", "INFO added item 4"), &restored);
        assert_eq!((c.id, c.size, c.service_lines), (a.id, 3, 3));
    }

    #[test]
    fn singletons_are_counted_per_service_and_per_level() {
        let templates = LogTemplates::default();
        let mined = |body: &str| template_of(line("ledger", body), &templates);
        mined("INFO books balanced for day one");
        let first_error = mined("ERROR entry rejected");
        assert_eq!(
            (first_error.level_lines, first_error.level_singletons),
            (1, 1)
        );
        assert_eq!(first_error.service_singletons, 2);
        // The error template's second line: no error template is a one-off any more.
        let second = mined("ERROR entry rejected");
        assert_eq!((second.level_lines, second.level_singletons), (2, 0));
        assert_eq!((second.service_lines, second.service_singletons), (3, 1));
    }
}
