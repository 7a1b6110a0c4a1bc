use crate::UnixNanos;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Which telemetry stream an event came from. Each source has its own detectors (and, later, its
/// own embedding model and Kafka topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Traces,
    Logs,
    Metrics,
    Changes,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Traces,
        SourceKind::Logs,
        SourceKind::Metrics,
        SourceKind::Changes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Traces => "traces",
            SourceKind::Logs => "logs",
            SourceKind::Metrics => "metrics",
            SourceKind::Changes => "changes",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "traces" | "spans" => Ok(SourceKind::Traces),
            "logs" => Ok(SourceKind::Logs),
            "metrics" => Ok(SourceKind::Metrics),
            "changes" => Ok(SourceKind::Changes),
            other => Err(format!(
                "unknown source '{other}' (expected traces, logs, metrics or changes)"
            )),
        }
    }
}

/// Where an event was emitted: the OTLP resource reduced to what correlation needs, plus every
/// other resource attribute (Kubernetes pod attributes and the like) kept verbatim.
///
/// Shared behind an `Arc` because one OTLP resource usually carries thousands of records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    /// `service.name`; `unknown_service` when absent, as the OpenTelemetry SDKs do.
    pub service: String,
    /// `deployment.environment.name` or `deployment.environment`; `default` when absent.
    pub environment: String,
    /// `k8s.pod.name` (or `host.name` outside Kubernetes), when known.
    pub instance: Option<String>,
    /// All resource attributes as strings, including the ones above.
    pub attributes: BTreeMap<String, String>,
}

impl Resource {
    pub const UNKNOWN_SERVICE: &'static str = "unknown_service";
    pub const DEFAULT_ENVIRONMENT: &'static str = "default";

    pub fn new(service: impl Into<String>) -> Resource {
        Resource {
            service: service.into(),
            environment: Resource::DEFAULT_ENVIRONMENT.to_string(),
            instance: None,
            attributes: BTreeMap::new(),
        }
    }

    pub fn with_environment(mut self, environment: impl Into<String>) -> Resource {
        self.environment = environment.into();
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Resource {
        self.instance = Some(instance.into());
        self
    }
}

/// One decoded telemetry record at its event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time: span start, log timestamp, metric point time, change time.
    pub time: UnixNanos,
    pub resource: Arc<Resource>,
    pub body: EventBody,
}

impl Event {
    pub fn source(&self) -> SourceKind {
        match self.body {
            EventBody::Span(_) => SourceKind::Traces,
            EventBody::Log(_) => SourceKind::Logs,
            EventBody::Metric(_) => SourceKind::Metrics,
            EventBody::Change(_) => SourceKind::Changes,
        }
    }

    pub fn service(&self) -> &str {
        &self.resource.service
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventBody {
    Span(SpanEvent),
    Log(LogEvent),
    Metric(MetricPoint),
    Change(ChangeEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// Lowercase hex, 32 characters.
    pub trace_id: String,
    /// Lowercase hex, 16 characters.
    pub span_id: String,
    /// None for a root span.
    pub parent_span_id: Option<String>,
    /// The operation (OTLP span name).
    pub name: String,
    /// OTLP span kind as its proto name without prefix: `server`, `client`, `internal`, ...
    pub kind: String,
    pub duration_ns: i64,
    /// OTLP status code ERROR.
    pub is_error: bool,
    /// `exception.type` from an exception event, or the status message, when the span failed.
    pub error_type: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    /// From an OTLP severity number (1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error,
    /// 21-24 fatal); 0 (unspecified) is None.
    pub fn from_severity_number(n: i32) -> Option<LogLevel> {
        Some(match n {
            1..=4 => LogLevel::Trace,
            5..=8 => LogLevel::Debug,
            9..=12 => LogLevel::Info,
            13..=16 => LogLevel::Warn,
            17..=20 => LogLevel::Error,
            21..=24 => LogLevel::Fatal,
            _ => return None,
        })
    }

    /// From a severity text such as `ERROR`, `warning` or `Information`.
    pub fn from_text(text: &str) -> Option<LogLevel> {
        let t = text.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "trace" | "finest" | "finer" => LogLevel::Trace,
            "debug" | "fine" => LogLevel::Debug,
            "info" | "information" | "notice" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "err" | "severe" => LogLevel::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "panic" => LogLevel::Fatal,
            _ => return None,
        })
    }

    /// The OTLP severity number at the start of this level's range.
    pub fn severity_number(self) -> i32 {
        match self {
            LogLevel::Trace => 1,
            LogLevel::Debug => 5,
            LogLevel::Info => 9,
            LogLevel::Warn => 13,
            LogLevel::Error => 17,
            LogLevel::Fatal => 21,
        }
    }

    pub fn is_error(self) -> bool {
        self >= LogLevel::Error
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// None when neither the severity number nor the text said; detectors may infer it from the body.
    pub level: Option<LogLevel>,
    /// The body as text (string bodies verbatim, structured bodies as JSON).
    pub body: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// The template the detection stage's one miner put this line in (`culprit_drain::LogTemplates`),
    /// filled where the line enters detection so that every detector and the k-NN featuriser
    /// read that one mining; None before then. Not part of the wire or stored form.
    #[serde(skip)]
    pub template: Option<LineTemplate>,
}

/// Where a log line was mined to: its template and how common that template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTemplate {
    /// The template (Drain cluster) id, stable for the life of its service's miner.
    pub id: u32,
    /// Lines the template holds, this one included.
    pub size: u64,
    /// Variable slots (`<*>`) of the template after this line.
    pub param_count: u32,
    /// Lines of the service mined so far, this one included.
    pub service_lines: u64,
    /// Templates of the service that hold exactly one line, after this line.
    pub service_singletons: u64,
    /// Lines of the service at this line's level (templates never mix levels), this one
    /// included.
    pub level_lines: u64,
    /// Templates of the service at this line's level that hold exactly one line, after this
    /// line: with `level_lines`, the Good-Turing estimate of how often the service writes a
    /// line of that level in a template it never wrote before.
    pub level_singletons: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric name; histogram and summary points are flattened into `<name>.count`, `<name>.sum`,
    /// `<name>.p<q>` style series by the decoder.
    pub name: String,
    pub value: f64,
    /// Data point attributes (not resource attributes).
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Deployment,
    ConfigChange,
    FeatureFlag,
    Rollback,
    Other,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deployment => "deployment",
            ChangeKind::ConfigChange => "config_change",
            ChangeKind::FeatureFlag => "feature_flag",
            ChangeKind::Rollback => "rollback",
            ChangeKind::Other => "other",
        }
    }
}

/// A deploy, config change or feature-flag flip: always a candidate cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Stable id from the producer (CDEvent id or native `id`).
    pub id: String,
    pub kind: ChangeKind,
    /// One line a person can read: "deploy checkout v1.4.2", "timeout_ms 500 -> 100".
    pub summary: String,
    pub actor: Option<String>,
    /// Free-form details (version, artifact, parameters changed, lines added/removed, ...).
    pub attributes: BTreeMap<String, String>,
}
