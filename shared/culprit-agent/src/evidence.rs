//! The read-only view of one incident's evidence that the agent's tools query.
//!
//! It is a snapshot, built by whoever runs the agent from what that process has:
//! - always the deterministic alert (ranking, causal graph, each candidate's strongest
//!   anomalies);
//! - in the embedded modes (`replay`, `eval`) every anomaly of the incident's window and the raw
//!   log lines and metric points of the graph's services around it ([`IncidentEvidence::with_anomalies`],
//!   [`IncidentEvidence::with_events`]);
//! - the confirmed past incidents most like this one, from the operators' feedback history
//!   ([`IncidentEvidence::with_past_incidents`]).
//!
//! The correlator service sees anomalies only, so there the view holds the alert and the history,
//! and the log and metric tools answer from the detectors' findings. Nothing here does I/O or is
//! mutated once the review starts.
//!
//! Every item a tool can return has a short id (`a3` an anomaly, `t2` a log template, `m5` a
//! metric series, `p1` a past incident), assigned in a fixed order so the same evidence always
//! gets the same ids; verdicts cite these ids and [`IncidentEvidence::reference`] turns one back
//! into a stable reference (the anomaly id, `template:<service>#<n>`, ...).

use culprit_core::{
    Anomaly, Event, EventBody, LogLevel, RcaAlert, SourceKind, UnixNanos, NANOS_PER_SEC,
};
use culprit_drain::LogTemplates;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How far before an incident's first anomaly its window reaches: the correlator opens an
/// incident on the evidence of the trailing minute, so earlier candidates belong to it.
pub const WINDOW_BEFORE_SECS: i64 = 60;
/// How far after its latest anomaly.
pub const WINDOW_AFTER_SECS: i64 = 60;
/// How far before an incident a change is still one of its candidate causes.
pub const CHANGE_LOOKBACK_SECS: i64 = 3600;
/// Log lines and metric points this long before the incident are kept as its "before".
pub const CONTEXT_BEFORE_SECS: i64 = 300;
/// Raw lines kept per service for `log_samples` (warnings and errors first).
pub const MAX_SAMPLE_LINES: usize = 200;

/// A confirmed past incident, as the feedback history describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PastIncident {
    pub incident_id: String,
    pub environment: String,
    /// The root cause an operator confirmed.
    pub root_cause_service: String,
    pub summary: String,
    /// Signals of the confirmed service's evidence, strongest first.
    pub evidence_signals: Vec<String>,
    /// How much it resembles this incident (the history's own score; higher is closer).
    pub similarity: f64,
    pub note: Option<String>,
}

/// A log template mined from one service's lines around the incident.
#[derive(Debug, Clone, PartialEq)]
pub struct LogTemplate {
    pub id: String,
    pub template: String,
    pub level: Option<LogLevel>,
    /// Lines before the incident window (within [`CONTEXT_BEFORE_SECS`]) and during it.
    pub before: u64,
    pub during: u64,
}

/// One raw log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time: UnixNanos,
    pub level: Option<LogLevel>,
    pub body: String,
}

/// One metric series of a service around the incident.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub id: String,
    /// The metric name with its point attributes, `name{k=v,...}`.
    pub name: String,
    pub instance: Option<String>,
    /// (time, value), oldest first.
    pub points: Vec<(UnixNanos, f64)>,
}

/// An anomaly with its short id.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceItem {
    pub id: String,
    pub anomaly: Anomaly,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ServiceLogs {
    templates: Vec<LogTemplate>,
    samples: Vec<LogLine>,
    lines: u64,
}

/// Everything the tools may read about one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvidence {
    alert: RcaAlert,
    anomalies: Vec<EvidenceItem>,
    logs: BTreeMap<String, ServiceLogs>,
    metrics: BTreeMap<String, Vec<MetricSeries>>,
    past: Vec<(String, PastIncident)>,
    /// Whether raw telemetry (logs, metric points) was available at all.
    has_raw_telemetry: bool,
}

impl IncidentEvidence {
    /// The view from the alert alone: its graph, ranking and the candidates' strongest anomalies.
    pub fn from_alert(alert: RcaAlert) -> IncidentEvidence {
        let anomalies: Vec<Anomaly> = alert
            .root_causes
            .iter()
            .flat_map(|c| c.evidence.iter().cloned())
            .collect();
        let mut view = IncidentEvidence {
            alert,
            anomalies: Vec::new(),
            logs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            past: Vec::new(),
            has_raw_telemetry: false,
        };
        view.set_anomalies(anomalies);
        view
    }

    /// Adds the anomalies among `all` that belong to this incident's window and environment:
    /// findings from [`WINDOW_BEFORE_SECS`] before its start to [`WINDOW_AFTER_SECS`] after its
    /// latest anomaly, and changes up to [`CHANGE_LOOKBACK_SECS`] before it.
    pub fn with_anomalies(mut self, all: &[Anomaly]) -> IncidentEvidence {
        let (start, end) = (self.alert.started_at, self.alert.updated_at);
        let keep = |a: &Anomaly| {
            a.environment == self.alert.environment
                && a.time <= end + WINDOW_AFTER_SECS * NANOS_PER_SEC
                && if a.source == SourceKind::Changes {
                    a.time >= start - CHANGE_LOOKBACK_SECS * NANOS_PER_SEC
                } else {
                    a.time >= start - WINDOW_BEFORE_SECS * NANOS_PER_SEC
                }
        };
        let mut anomalies: Vec<Anomaly> = self.anomalies.drain(..).map(|e| e.anomaly).collect();
        anomalies.extend(all.iter().filter(|a| keep(a)).cloned());
        self.set_anomalies(anomalies);
        self
    }

    /// Takes the log lines and metric points of the graph's services from
    /// [`CONTEXT_BEFORE_SECS`] before the incident to [`WINDOW_AFTER_SECS`] after it: log
    /// templates are mined (Drain, variables masked) and counted before and during the incident,
    /// a few lines per service are kept as samples, and metric series are kept whole.
    pub fn with_events(mut self, events: &[Event]) -> IncidentEvidence {
        let services: HashSet<String> = self.services().into_iter().map(str::to_string).collect();
        let from = self.alert.started_at - CONTEXT_BEFORE_SECS * NANOS_PER_SEC;
        let start = self.alert.started_at - WINDOW_BEFORE_SECS * NANOS_PER_SEC;
        let to = self.alert.updated_at + WINDOW_AFTER_SECS * NANOS_PER_SEC;
        // Mined as the detectors mine (the same miners and line form), so a template here reads
        // as the one an anomaly names; these lines come from storage, not from detection.
        let miners = LogTemplates::default();
        let mut templates_of: BTreeMap<String, BTreeMap<u32, LogTemplate>> = BTreeMap::new();
        let mut samples: BTreeMap<String, Vec<LogLine>> = BTreeMap::new();
        let mut lines: BTreeMap<String, u64> = BTreeMap::new();
        // (service, metric, instance) -> points
        type SeriesKey = (String, String, Option<String>);
        let mut series: BTreeMap<SeriesKey, Vec<(UnixNanos, f64)>> = BTreeMap::new();
        for event in events {
            if event.time < from
                || event.time > to
                || event.resource.environment != self.alert.environment
                || !services.contains(event.service())
            {
                continue;
            }
            self.has_raw_telemetry = true;
            let service = event.service().to_string();
            match &event.body {
                EventBody::Log(log) => {
                    let m = miners.mine(event, log);
                    let templates = templates_of.entry(service.clone()).or_default();
                    let t = templates.entry(m.id).or_insert_with(|| LogTemplate {
                        id: String::new(),
                        template: String::new(),
                        level: log.level,
                        before: 0,
                        during: 0,
                    });
                    if event.time < start {
                        t.before += 1;
                    } else {
                        t.during += 1;
                    }
                    *lines.entry(service.clone()).or_default() += 1;
                    if event.time >= start {
                        samples.entry(service).or_default().push(LogLine {
                            time: event.time,
                            level: log.level,
                            body: log.body.clone(),
                        });
                    }
                }
                EventBody::Metric(point) => {
                    let name = if point.attributes.is_empty() {
                        point.name.clone()
                    } else {
                        let attrs: Vec<String> = point
                            .attributes
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        format!("{}{{{}}}", point.name, attrs.join(","))
                    };
                    series
                        .entry((service, name, event.resource.instance.clone()))
                        .or_default()
                        .push((event.time, point.value));
                }
                EventBody::Span(_) | EventBody::Change(_) => {}
            }
        }
        for (service, templates) in templates_of {
            let environment = &self.alert.environment;
            let mut list: Vec<LogTemplate> = templates
                .into_iter()
                .map(|(id, mut t)| {
                    t.template = miners.text(environment, &service, id).unwrap_or_default();
                    t
                })
                .collect();
            // Errors first, then what changed most between before and during.
            list.sort_by(|a, b| {
                let key = |t: &LogTemplate| {
                    (
                        std::cmp::Reverse(t.level.map_or(0, |l| l as u8)),
                        std::cmp::Reverse(t.during.abs_diff(t.before)),
                        t.template.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            let mut sample = samples.remove(&service).unwrap_or_default();
            sample.sort_by_key(|l| (std::cmp::Reverse(l.level.map_or(0, |l| l as u8)), l.time));
            sample.truncate(MAX_SAMPLE_LINES);
            let entry = self.logs.entry(service.clone()).or_default();
            entry.templates = list;
            entry.samples = sample;
            entry.lines = lines.get(&service).copied().unwrap_or(0);
        }
        for ((service, name, instance), mut points) in series {
            points.sort_by_key(|p| p.0);
            self.metrics.entry(service).or_default().push(MetricSeries {
                id: String::new(),
                name,
                instance,
                points,
            });
        }
        self.assign_ids();
        self
    }

    /// Confirmed past incidents, most similar first (the history's own order is kept).
    pub fn with_past_incidents(mut self, past: Vec<PastIncident>) -> IncidentEvidence {
        self.past = past
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("p{}", i + 1), p))
            .collect();
        self
    }

    pub fn alert(&self) -> &RcaAlert {
        &self.alert
    }

    /// The incident's graph nodes, sorted: the only services a tool or verdict may name.
    pub fn services(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .alert
            .graph
            .nodes
            .iter()
            .map(|n| n.service.as_str())
            .chain(self.alert.root_causes.iter().map(|c| c.service.as_str()))
            .collect();
        set.into_iter().collect()
    }

    /// Every anomaly of the incident with its short id, oldest first.
    pub fn anomalies(&self) -> &[EvidenceItem] {
        &self.anomalies
    }

    pub fn anomalies_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a EvidenceItem> {
        self.anomalies
            .iter()
            .filter(move |e| e.anomaly.service == service)
    }

    pub fn changes(&self) -> impl Iterator<Item = &EvidenceItem> {
        self.anomalies
            .iter()
            .filter(|e| e.anomaly.source == SourceKind::Changes)
    }

    /// Mined log templates of a service and how many lines it wrote; `None` without raw logs.
    pub fn log_templates(&self, service: &str) -> Option<(&[LogTemplate], u64)> {
        self.logs
            .get(service)
            .map(|l| (l.templates.as_slice(), l.lines))
    }

    pub fn log_samples(&self, service: &str) -> Option<&[LogLine]> {
        self.logs.get(service).map(|l| l.samples.as_slice())
    }

    pub fn metric_series(&self, service: &str) -> &[MetricSeries] {
        self.metrics.get(service).map_or(&[], Vec::as_slice)
    }

    pub fn past_incidents(&self) -> &[(String, PastIncident)] {
        &self.past
    }

    /// Whether log lines or metric points were available (the embedded modes).
    pub fn has_raw_telemetry(&self) -> bool {
        self.has_raw_telemetry
    }

    /// The stable reference of a short evidence id, or `None` for an id this view never gave.
    pub fn reference(&self, short_id: &str) -> Option<String> {
        if let Some(e) = self.anomalies.iter().find(|e| e.id == short_id) {
            return Some(e.anomaly.id.clone());
        }
        for (service, logs) in &self.logs {
            if logs.templates.iter().any(|t| t.id == short_id) {
                return Some(format!("template:{service}#{short_id}"));
            }
        }
        for (service, series) in &self.metrics {
            if let Some(s) = series.iter().find(|s| s.id == short_id) {
                return Some(format!("metric:{service}:{}", s.name));
            }
        }
        self.past
            .iter()
            .find(|(id, _)| id == short_id)
            .map(|(_, p)| format!("past:{}", p.incident_id))
    }

    fn set_anomalies(&mut self, mut anomalies: Vec<Anomaly>) {
        let mut seen = HashSet::new();
        anomalies.retain(|a| seen.insert(a.id.clone()));
        anomalies.sort_by(|a, b| {
            (a.time, &a.service, &a.signal, &a.id).cmp(&(b.time, &b.service, &b.signal, &b.id))
        });
        self.anomalies = anomalies
            .into_iter()
            .enumerate()
            .map(|(i, anomaly)| EvidenceItem {
                id: format!("a{}", i + 1),
                anomaly,
            })
            .collect();
    }

    fn assign_ids(&mut self) {
        let mut n = 0;
        for logs in self.logs.values_mut() {
            for t in &mut logs.templates {
                n += 1;
                t.id = format!("t{n}");
            }
        }
        let mut n = 0;
        for series in self.metrics.values_mut() {
            for s in series {
                n += 1;
                s.id = format!("m{n}");
            }
        }
    }
}
