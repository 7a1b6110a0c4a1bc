//! Building OTLP messages, for the producers of synthetic and replayed telemetry (`culprit-sim`,
//! `culprit-nezha`): they describe spans, log records and gauges here, so the only crate that
//! constructs `opentelemetry-proto` types is the one that decodes them.
//!
//! Only the shapes those producers need: string and integer attributes, a resource named by
//! `service.name`, an instrumentation scope, spans with an optional error status and exception
//! event, log records with optional trace context, gauges of doubles or integers, and one
//! resource + scope group per signal. Anything else is built with the [`crate::proto`] types
//! directly.

use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use crate::proto::resource::v1::Resource;
use crate::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

pub use crate::proto::trace::v1::span::SpanKind;

/// A string `AnyValue`, as a log body or attribute value.
pub fn string_value(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    }
}

/// A string attribute.
pub fn str_attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
    }
}

/// An integer attribute.
pub fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

/// A resource whose first attribute is `service.name`, then `attributes` in the order given
/// (e.g. `deployment.environment`, `k8s.pod.name`, `service.version`). The decoder takes the
/// service, environment and instance from these keys.
pub fn resource(service: &str, attributes: &[(&str, &str)]) -> Resource {
    let mut all = Vec::with_capacity(1 + attributes.len());
    all.push(str_attr("service.name", service));
    all.extend(attributes.iter().map(|(k, v)| str_attr(k, *v)));
    Resource {
        attributes: all,
        ..Default::default()
    }
}

/// The instrumentation scope naming the producer, so generated or replayed telemetry can be told
/// from live telemetry. An empty `version` is left out.
pub fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_string(),
        version: version.to_string(),
        ..Default::default()
    }
}

/// A span under construction; see [`span`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the span"]
pub struct SpanBuilder {
    span: Span,
}

/// Starts a span: ids as raw bytes (16 for the trace, 8 for the span), times in Unix nanoseconds.
/// Kind unspecified, status unset, no parent until set.
pub fn span(
    trace_id: impl Into<Vec<u8>>,
    span_id: impl Into<Vec<u8>>,
    name: impl Into<String>,
    start_unix_nano: u64,
    end_unix_nano: u64,
) -> SpanBuilder {
    SpanBuilder {
        span: Span {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            name: name.into(),
            kind: SpanKind::Unspecified as i32,
            start_time_unix_nano: start_unix_nano,
            end_time_unix_nano: end_unix_nano,
            ..Default::default()
        },
    }
}

impl SpanBuilder {
    /// The parent span's id; empty means a root span.
    pub fn parent(mut self, parent_span_id: impl Into<Vec<u8>>) -> Self {
        self.span.parent_span_id = parent_span_id.into();
        self
    }

    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.span.kind = kind as i32;
        self
    }

    pub fn attributes(mut self, attributes: Vec<KeyValue>) -> Self {
        self.span.attributes = attributes;
        self
    }

    /// Status ERROR with `message` (the decoder's error type when no exception event names one).
    pub fn error(mut self, message: impl Into<String>) -> Self {
        self.span.status = Some(Status {
            message: message.into(),
            code: status::StatusCode::Error as i32,
        });
        self
    }

    /// Adds an `exception` event with the semantic-convention attributes `exception.type`,
    /// `exception.message` and, when given, `exception.stacktrace`.
    pub fn exception(
        mut self,
        time_unix_nano: u64,
        exception_type: &str,
        message: impl Into<String>,
        stacktrace: Option<&str>,
    ) -> Self {
        let mut attributes = vec![
            str_attr("exception.type", exception_type),
            str_attr("exception.message", message),
        ];
        if let Some(stack) = stacktrace {
            attributes.push(str_attr("exception.stacktrace", stack));
        }
        self.span.events.push(span::Event {
            time_unix_nano,
            name: "exception".to_string(),
            attributes,
            dropped_attributes_count: 0,
        });
        self
    }

    pub fn build(self) -> Span {
        self.span
    }
}

/// A log record under construction; see [`log_record`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the log record"]
pub struct LogBuilder {
    record: LogRecord,
}

/// Starts a log record with a string body. `severity_number` is OTLP's (9 INFO, 13 WARN,
/// 17 ERROR; 0 unspecified), `severity_text` the producer's own word for it ("" when none).
pub fn log_record(
    time_unix_nano: u64,
    severity_number: i32,
    severity_text: impl Into<String>,
    body: impl Into<String>,
) -> LogBuilder {
    LogBuilder {
        record: LogRecord {
            time_unix_nano,
            severity_number,
            severity_text: severity_text.into(),
            body: Some(string_value(body)),
            ..Default::default()
        },
    }
}

impl LogBuilder {
    /// The trace context the record was written in; empty ids mean none.
    pub fn trace(mut self, trace_id: impl Into<Vec<u8>>, span_id: impl Into<Vec<u8>>) -> Self {
        self.record.trace_id = trace_id.into();
        self.record.span_id = span_id.into();
        self
    }

    /// Sets the W3C `sampled` trace flag, as an SDK does for a record in a sampled span.
    pub fn sampled(mut self) -> Self {
        self.record.flags = 1;
        self
    }

    pub fn build(self) -> LogRecord {
        self.record
    }
}

/// A gauge or sum value: OTLP keeps doubles and integers apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Double(f64),
    Int(i64),
}

/// One data point at `time_unix_nano` with point (not resource) attributes.
pub fn point(time_unix_nano: u64, value: Number, attributes: Vec<KeyValue>) -> NumberDataPoint {
    let value = match value {
        Number::Double(v) => number_data_point::Value::AsDouble(v),
        Number::Int(v) => number_data_point::Value::AsInt(v),
    };
    NumberDataPoint {
        attributes,
        time_unix_nano,
        value: Some(value),
        ..Default::default()
    }
}

/// A gauge metric; `unit` in UCUM (`"1"`, `"By"`, `"ms"`), empty when unknown.
pub fn gauge(
    name: impl Into<String>,
    unit: impl Into<String>,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// The spans of one resource, all under one scope.
pub fn resource_spans(
    resource: Resource,
    scope: InstrumentationScope,
    spans: Vec<Span>,
) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The log records of one resource, all under one scope.
pub fn resource_logs(
    resource: Resource,
    scope: InstrumentationScope,
    log_records: Vec<LogRecord>,
) -> ResourceLogs {
    ResourceLogs {
        resource: Some(resource),
        scope_logs: vec![ScopeLogs {
            scope: Some(scope),
            log_records,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The metrics of one resource, all under one scope.
pub fn resource_metrics(
    resource: Resource,
    scope: InstrumentationScope,
    metrics: Vec<Metric>,
) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

pub fn trace_request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

pub fn logs_request(resource_logs: Vec<ResourceLogs>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest { resource_logs }
}

pub fn metrics_request(resource_metrics: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode, logs_to_events, metrics_to_events, to_json, to_protobuf, traces_to_events,
    };
    use crate::{Encoding, Signal};
    use culprit_core::{Event, EventBody, LogEvent, LogLevel, MetricPoint, SpanEvent};
    use std::collections::BTreeMap;

    const TRACE: [u8; 16] = [
        0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31,
        0x9c,
    ];
    const SPAN: [u8; 8] = [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31];
    const PARENT: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    fn pod_resource() -> Resource {
        resource(
            "checkout",
            &[
                ("service.version", "1.4.2"),
                ("deployment.environment", "prod"),
                ("k8s.pod.name", "checkout-7f-abc"),
            ],
        )
    }

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn only(events: Vec<Event>) -> Event {
        assert_eq!(events.len(), 1, "{events:?}");
        events.into_iter().next().unwrap()
    }

    #[test]
    fn resource_names_the_service_first_and_decodes_to_service_environment_and_instance() {
        let r = pod_resource();
        assert_eq!(r.attributes[0].key, "service.name");
        let keys: Vec<&str> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "service.version",
                "deployment.environment",
                "k8s.pod.name"
            ]
        );
        let mapped = crate::convert::map_resource(Some(&r));
        assert_eq!(mapped.service, "checkout");
        assert_eq!(mapped.environment, "prod");
        assert_eq!(mapped.instance.as_deref(), Some("checkout-7f-abc"));
        assert_eq!(mapped.attributes["service.version"], "1.4.2");
    }

    #[test]
    fn failed_server_span_round_trips_into_the_same_event_fields() {
        let span = span(TRACE, SPAN, "POST /checkout", 1_000, 251_000)
            .parent(PARENT)
            .kind(SpanKind::Server)
            .attributes(vec![
                int_attr("http.response.status_code", 503),
                str_attr("peer.service", "payment"),
            ])
            .error("payment unavailable")
            .exception(
                250_000,
                "TimeoutException",
                "timed out",
                Some("at Pay.charge"),
            )
            .build();
        let req = trace_request(vec![resource_spans(
            pod_resource(),
            scope("test", "1"),
            vec![span],
        )]);
        let event = only(traces_to_events(&req).unwrap());
        assert_eq!(event.time, 1_000);
        assert_eq!(event.resource.service, "checkout");
        assert_eq!(
            event.body,
            EventBody::Span(SpanEvent {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                parent_span_id: Some("00f067aa0ba902b7".into()),
                name: "POST /checkout".into(),
                kind: "server".into(),
                duration_ns: 250_000,
                is_error: true,
                // The exception event names the error, not the status message.
                error_type: Some("TimeoutException".into()),
                attributes: strings(&[
                    ("http.response.status_code", "503"),
                    ("peer.service", "payment"),
                ]),
            })
        );
        // Both encodings read back to the same event.
        for (encoding, bytes) in [
            (Encoding::Json, to_json(&req)),
            (Encoding::Protobuf, to_protobuf(&req)),
        ] {
            assert_eq!(
                only(decode(Signal::Traces, encoding, &bytes).unwrap()),
                event
            );
        }
    }

    #[test]
    fn root_span_without_kind_or_status_is_an_unspecified_success() {
        let s = span(TRACE, SPAN, "GET", 10, 30).parent(Vec::new()).build();
        let req = trace_request(vec![resource_spans(
            pod_resource(),
            scope("t", ""),
            vec![s],
        )]);
        let EventBody::Span(e) = only(traces_to_events(&req).unwrap()).body else {
            panic!("not a span")
        };
        assert_eq!(e.parent_span_id, None);
        assert_eq!(e.kind, "unspecified");
        assert!(!e.is_error && e.error_type.is_none());
        assert_eq!(e.duration_ns, 20);
    }

    #[test]
    fn error_status_without_exception_is_named_by_its_message() {
        let s = span(TRACE, SPAN, "GET", 10, 30)
            .kind(SpanKind::Client)
            .error("cart returned 500")
            .build();
        assert!(s.events.is_empty());
        let req = trace_request(vec![resource_spans(
            pod_resource(),
            scope("t", ""),
            vec![s],
        )]);
        let EventBody::Span(e) = only(traces_to_events(&req).unwrap()).body else {
            panic!("not a span")
        };
        assert_eq!((e.kind.as_str(), e.is_error), ("client", true));
        assert_eq!(e.error_type.as_deref(), Some("cart returned 500"));
    }

    #[test]
    fn log_record_keeps_trace_context_and_severity() {
        let in_span = log_record(5_000, 13, "WARN", "retrying payment")
            .trace(TRACE, SPAN)
            .sampled()
            .build();
        assert_eq!(in_span.flags, 1);
        // Severity number 0 falls back to the text; no ids means no trace context.
        let bare = log_record(6_000, 0, "ERROR", "boom").build();
        let req = logs_request(vec![resource_logs(
            pod_resource(),
            scope("t", ""),
            vec![in_span, bare],
        )]);
        let events = logs_to_events(&req).unwrap();
        let bodies: Vec<(i64, &EventBody)> = events.iter().map(|e| (e.time, &e.body)).collect();
        assert_eq!(
            bodies,
            vec![
                (
                    5_000,
                    &EventBody::Log(LogEvent {
                        level: Some(LogLevel::Warn),
                        body: "retrying payment".into(),
                        trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
                        span_id: Some("b7ad6b7169203331".into()),
                        attributes: BTreeMap::new(),
                        template: None,
                    })
                ),
                (
                    6_000,
                    &EventBody::Log(LogEvent {
                        level: Some(LogLevel::Error),
                        body: "boom".into(),
                        trace_id: None,
                        span_id: None,
                        attributes: BTreeMap::new(),
                        template: None,
                    })
                ),
            ]
        );
        let from_json = decode(Signal::Logs, Encoding::Json, &to_json(&req)).unwrap();
        assert_eq!(from_json, events);
    }

    #[test]
    fn gauge_points_keep_doubles_integers_and_point_attributes() {
        let edge = vec![
            str_attr("peer.caller", "api"),
            str_attr("peer.callee", "db"),
        ];
        let metrics = vec![
            gauge(
                "cpu.utilization",
                "1",
                vec![point(60_000, Number::Double(0.25), Vec::new())],
            ),
            gauge(
                "db.pool.in_use",
                "{connection}",
                vec![point(60_000, Number::Int(7), edge)],
            ),
        ];
        assert_eq!(metrics[0].unit, "1");
        let req = metrics_request(vec![resource_metrics(
            pod_resource(),
            scope("t", ""),
            metrics,
        )]);
        let events = metrics_to_events(&req).unwrap();
        let points: Vec<(i64, &EventBody)> = events.iter().map(|e| (e.time, &e.body)).collect();
        assert_eq!(
            points,
            vec![
                (
                    60_000,
                    &EventBody::Metric(MetricPoint {
                        name: "cpu.utilization".into(),
                        value: 0.25,
                        attributes: BTreeMap::new(),
                    })
                ),
                (
                    60_000,
                    &EventBody::Metric(MetricPoint {
                        name: "db.pool.in_use".into(),
                        value: 7.0,
                        attributes: strings(&[("peer.callee", "db"), ("peer.caller", "api")]),
                    })
                ),
            ]
        );
        let from_proto = decode(Signal::Metrics, Encoding::Protobuf, &to_protobuf(&req)).unwrap();
        assert_eq!(from_proto, events);
    }

    #[test]
    fn scope_and_groups_hold_one_scope_per_resource() {
        let s = scope("culprit-sim", "0.1.0");
        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("culprit-sim", "0.1.0")
        );
        let rs = resource_spans(pod_resource(), s.clone(), Vec::new());
        assert_eq!(rs.scope_spans.len(), 1);
        assert_eq!(rs.scope_spans[0].scope.as_ref(), Some(&s));
        assert_eq!(rs.resource, Some(pod_resource()));
    }
}
