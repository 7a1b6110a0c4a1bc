mod common;

use common::{COLLECTOR_LOGS, COLLECTOR_METRICS, COLLECTOR_TRACE};
use culprit_core::{Event, EventBody, LogEvent, LogLevel, MetricPoint, SpanEvent};
use culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use culprit_otlp::proto::common::v1::{any_value, AnyValue, KeyValue};
use culprit_otlp::proto::resource::v1::Resource;
use culprit_otlp::proto::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use culprit_otlp::{
    decode, decode_with_limits, parse_logs, parse_metrics, parse_traces, to_json, to_protobuf,
    traces_to_events, DecodeError, DecodeLimits, Encoding, Signal,
};
use std::collections::BTreeMap;

fn span_of(e: &Event) -> &SpanEvent {
    match &e.body {
        EventBody::Span(s) => s,
        other => panic!("expected a span, got {other:?}"),
    }
}

fn log_of(e: &Event) -> &LogEvent {
    match &e.body {
        EventBody::Log(l) => l,
        other => panic!("expected a log, got {other:?}"),
    }
}

fn metric_of(e: &Event) -> &MetricPoint {
    match &e.body {
        EventBody::Metric(m) => m,
        other => panic!("expected a metric, got {other:?}"),
    }
}

fn err(r: Result<Vec<Event>, DecodeError>) -> DecodeError {
    match r {
        Ok(events) => panic!("expected an error, got {} events", events.len()),
        Err(e) => e,
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// A span built in memory, the way simulators and tests in other crates do.
fn span(trace_id: Vec<u8>, span_id: Vec<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id,
        span_id,
        name: "SELECT orders".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn request(spans: Vec<Vec<Span>>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text("orders")),
                    kv("replicas", any_value::Value::IntValue(3)),
                ],
                ..Default::default()
            }),
            scope_spans: spans
                .into_iter()
                .map(|spans| ScopeSpans {
                    spans,
                    ..Default::default()
                })
                .collect(),
            schema_url: String::new(),
        }],
    }
}

// ---- traces --------------------------------------------------------------------------------

#[test]
fn collector_file_exporter_trace_json_decodes_to_a_span_event() {
    let events = decode(Signal::Traces, Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.time, 1_544_712_660_000_000_000);
    assert_eq!(e.service(), "checkout");
    assert_eq!(e.resource.environment, "default");
    assert_eq!(e.resource.instance, None);
    let s = span_of(e);
    assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.span_id, "eee19b7ec3c1b174");
    assert_eq!(s.parent_span_id, None);
    assert_eq!(s.name, "GET /cart");
    assert_eq!(s.kind, "server");
    assert_eq!(s.duration_ns, 1_000_000_000);
    assert!(s.is_error);
    assert_eq!(s.error_type.as_deref(), Some("boom"));
}

#[test]
fn uppercase_hex_ids_come_out_lowercase() {
    let doc = COLLECTOR_TRACE.replace(
        "5b8efff798038103d269b633813fc60c",
        "5B8EFFF798038103D269B633813FC60C",
    );
    let events = decode(Signal::Traces, Encoding::Json, doc.as_bytes()).unwrap();
    assert_eq!(
        span_of(&events[0]).trace_id,
        "5b8efff798038103d269b633813fc60c"
    );
}

#[test]
fn exception_event_type_wins_over_status_message() {
    let mut s = span(vec![1; 16], vec![2; 8], 10, 25);
    s.parent_span_id = vec![3; 8];
    s.status = Some(Status {
        code: 2,
        message: "request failed".into(),
    });
    s.events = vec![
        span::Event {
            name: "retry".into(),
            ..Default::default()
        },
        span::Event {
            name: "exception".into(),
            attributes: vec![kv(
                "exception.type",
                text("java.net.SocketTimeoutException"),
            )],
            ..Default::default()
        },
    ];
    s.attributes = vec![
        kv("db.rows", any_value::Value::IntValue(7)),
        kv("cached", any_value::Value::BoolValue(false)),
    ];
    let events = traces_to_events(&request(vec![vec![s]])).unwrap();
    let got = span_of(&events[0]);
    assert_eq!(
        got.error_type.as_deref(),
        Some("java.net.SocketTimeoutException")
    );
    assert_eq!(got.parent_span_id.as_deref(), Some("0303030303030303"));
    assert_eq!(got.kind, "client");
    assert_eq!(got.duration_ns, 15);
    let expected: BTreeMap<String, String> = [("cached", "false"), ("db.rows", "7")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert_eq!(got.attributes, expected);
}

#[test]
fn ok_span_has_no_error_type_even_with_an_exception_event() {
    let mut s = span(vec![1; 16], vec![2; 8], 10, 10);
    s.events = vec![span::Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type", text("Handled"))],
        ..Default::default()
    }];
    let events = traces_to_events(&request(vec![vec![s]])).unwrap();
    assert!(!span_of(&events[0]).is_error);
    assert_eq!(span_of(&events[0]).error_type, None);
}

#[test]
fn spans_of_one_resource_share_one_resource_allocation() {
    let spans = vec![
        span(vec![1; 16], vec![2; 8], 1, 2),
        span(vec![1; 16], vec![3; 8], 1, 2),
    ];
    let events = traces_to_events(&request(vec![spans])).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &events[0].resource,
        &events[1].resource
    ));
    assert_eq!(
        events[0]
            .resource
            .attributes
            .get("replicas")
            .map(String::as_str),
        Some("3")
    );
}

#[test]
fn json_and_protobuf_of_the_same_request_decode_to_the_same_events() {
    let mut s = span(vec![0xab; 16], vec![0xcd; 8], 100, 300);
    s.status = Some(Status {
        code: 2,
        message: "x".into(),
    });
    let req = request(vec![vec![s.clone()], vec![s]]);
    let from_json = decode(Signal::Traces, Encoding::Json, &to_json(&req)).unwrap();
    let from_proto = decode(Signal::Traces, Encoding::Protobuf, &to_protobuf(&req)).unwrap();
    assert_eq!(from_json.len(), 2);
    assert_eq!(from_json, from_proto);
}

#[test]
fn wrong_trace_id_length_names_record_and_field() {
    let spans = vec![span(vec![1; 16], vec![2; 8], 1, 2); 3]
        .into_iter()
        .chain([span(vec![1, 2, 3], vec![2; 8], 1, 2)])
        .collect();
    let req = request(vec![vec![], spans]);
    let e = err(decode(
        Signal::Traces,
        Encoding::Protobuf,
        &to_protobuf(&req),
    ));
    assert_eq!(
        e.to_string(),
        "resourceSpans[0].scopeSpans[1].spans[3]: field `traceId`: expected 16 bytes, got 3"
    );
    assert_eq!(e.reason_code(), "invalid_field");
}

#[test]
fn wrong_parent_span_id_length_is_invalid() {
    let mut s = span(vec![1; 16], vec![2; 8], 1, 2);
    s.parent_span_id = vec![9; 4];
    let e = err(traces_to_events(&request(vec![vec![s]])));
    assert!(
        e.to_string()
            .contains("field `parentSpanId`: expected 8 bytes, got 4"),
        "{e}"
    );
}

#[test]
fn span_ending_before_it_starts_is_invalid() {
    let e = err(traces_to_events(&request(vec![vec![span(
        vec![1; 16],
        vec![2; 8],
        20,
        10,
    )]])));
    assert!(
        matches!(&e, DecodeError::Invalid { field, .. } if field == "endTimeUnixNano"),
        "{e}"
    );
}

#[test]
fn timestamps_beyond_i64_are_invalid_not_wrapped() {
    let e = err(traces_to_events(&request(vec![vec![span(
        vec![1; 16],
        vec![2; 8],
        u64::MAX - 1,
        u64::MAX,
    )]])));
    assert!(e.to_string().contains("startTimeUnixNano"), "{e}");
}

// ---- logs ----------------------------------------------------------------------------------

#[test]
fn collector_logs_json_maps_levels_bodies_ids_and_resource() {
    let events = decode(Signal::Logs, Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap();
    assert_eq!(events.len(), 3);

    let r = &events[0].resource;
    assert_eq!(r.service, "payments");
    assert_eq!(
        r.environment, "staging",
        "deployment.environment is the fallback key"
    );
    assert_eq!(
        r.instance.as_deref(),
        Some("payments-5d9f-abcde"),
        "pod name wins over host name"
    );
    assert_eq!(
        r.attributes.get("process.pid").map(String::as_str),
        Some("4242")
    );
    assert_eq!(r.attributes.len(), 5);

    let first = log_of(&events[0]);
    assert_eq!(events[0].time, 1_544_712_660_300_000_000);
    assert_eq!(first.level, Some(LogLevel::Error));
    assert_eq!(first.body, "card declined");
    assert_eq!(
        first.trace_id.as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(first.span_id.as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(
        first.attributes.get("attempt").map(String::as_str),
        Some("2")
    );

    let second = log_of(&events[1]);
    assert_eq!(
        events[1].time, 1_544_712_660_400_000_000,
        "observed time when time is 0"
    );
    assert_eq!(
        second.level,
        Some(LogLevel::Warn),
        "severity text when the number is unset"
    );
    // Map bodies become JSON objects (keys sorted: serde_json's default map).
    assert_eq!(second.body, r#"{"ms":950,"msg":"slow"}"#);

    let third = log_of(&events[2]);
    assert_eq!(third.level, None);
    assert_eq!(
        (third.trace_id.as_ref(), third.span_id.as_ref()),
        (None, None)
    );
}

#[test]
fn logs_json_and_protobuf_agree() {
    let req = parse_logs(Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap();
    let from_json = decode(Signal::Logs, Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap();
    let from_proto = decode(Signal::Logs, Encoding::Protobuf, &to_protobuf(&req)).unwrap();
    assert_eq!(from_json, from_proto);
}

#[test]
fn json_type_error_names_the_json_path() {
    let doc = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1"},{"timeUnixNano":"2"},{"timeUnixNano":{"oops":1}}]}]}]}"#;
    let e = err(decode(Signal::Logs, Encoding::Json, doc.as_bytes()));
    assert_eq!(e.reason_code(), "malformed_json");
    assert!(
        matches!(&e, DecodeError::Malformed { path, .. } if path == "resourceLogs[0].scopeLogs[0].logRecords[2].timeUnixNano"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("at `resourceLogs[0].scopeLogs[0].logRecords[2].timeUnixNano`"),
        "{e}"
    );
}

// ---- metrics -------------------------------------------------------------------------------

fn by_name(events: &[Event]) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for e in events {
        let m = metric_of(e);
        out.entry(m.name.clone())
            .or_default()
            .push((e.time, m.value));
    }
    out
}

#[test]
fn collector_metrics_json_flattens_every_metric_type() {
    let events = decode(
        Signal::Metrics,
        Encoding::Json,
        COLLECTOR_METRICS.as_bytes(),
    )
    .unwrap();
    let series = by_name(&events);
    let t = 1_544_712_660_000_000_000;
    let names: Vec<&str> = series.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "gc.pause.count",
            "gc.pause.p50",
            "gc.pause.p99.9",
            "gc.pause.sum",
            "http.duration.count",
            "http.duration.p50",
            "http.duration.p90",
            "http.duration.p99",
            "http.duration.sum",
            "http.requests",
            "queue.depth",
            "rpc.latency.count",
            "rpc.latency.sum",
        ]
    );
    // NaN and "no recorded value" gauge points are dropped.
    assert_eq!(series["queue.depth"], vec![(t, 12.5)]);
    assert_eq!(
        series["http.requests"],
        vec![(t, 42.0)],
        "asInt written as a string"
    );
    assert_eq!(series["http.duration.count"], vec![(t, 10.0)]);
    assert_eq!(series["http.duration.sum"], vec![(t, 420.5)]);
    // Buckets (..1]=1 (1..5]=2 (5..100]=7: p50 is rank 5, 2/7 into (5, 100].
    let p50 = series["http.duration.p50"][0].1;
    assert!((p50 - (5.0 + 95.0 * 2.0 / 7.0)).abs() < 1e-9, "{p50}");
    assert!(series["http.duration.p99"][0].1 <= 100.0);
    assert_eq!(series["rpc.latency.count"], vec![(t, 6.0)]);
    assert_eq!(series["gc.pause.p99.9"], vec![(t, 7.0)]);

    let queue = events
        .iter()
        .map(metric_of)
        .find(|m| m.name == "queue.depth")
        .map(|m| m.attributes.clone());
    assert_eq!(
        queue.unwrap_or_default().get("queue").map(String::as_str),
        Some("orders")
    );
    assert_eq!(events[0].resource.environment, "prod");
}

#[test]
fn histogram_with_mismatched_buckets_names_the_data_point() {
    let doc = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"dataPoints":[{"timeUnixNano":"1","count":"3","bucketCounts":["1","2"],"explicitBounds":[1,2,3]}]}}]}]}]}"#;
    let e = err(decode(Signal::Metrics, Encoding::Json, doc.as_bytes()));
    assert_eq!(
        e.to_string(),
        "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0]: field `bucketCounts`: expected 4 buckets for 3 explicit bounds, got 2"
    );
}

// ---- encodings, errors, limits -------------------------------------------------------------

#[test]
fn json_to_proto_to_json_to_proto_is_lossless() {
    let first = parse_metrics(Encoding::Json, COLLECTOR_METRICS.as_bytes()).unwrap();
    let proto = to_protobuf(&first);
    let second = parse_metrics(Encoding::Protobuf, &proto).unwrap();
    let json = to_json(&second);
    let third = parse_metrics(Encoding::Json, &json).unwrap();
    // NaN != NaN, so compare the protobuf bytes of the last hop instead of the structs.
    assert_eq!(to_protobuf(&third), proto);
    assert_eq!(to_json(&third), json);

    for doc in [COLLECTOR_TRACE, COLLECTOR_LOGS] {
        let (a, b) = match doc {
            COLLECTOR_TRACE => {
                let a = parse_traces(Encoding::Json, doc.as_bytes()).unwrap();
                let b = parse_traces(
                    Encoding::Json,
                    &to_json(&parse_traces(Encoding::Protobuf, &to_protobuf(&a)).unwrap()),
                )
                .unwrap();
                (to_protobuf(&a), to_protobuf(&b))
            }
            _ => {
                let a = parse_logs(Encoding::Json, doc.as_bytes()).unwrap();
                let b = parse_logs(
                    Encoding::Json,
                    &to_json(&parse_logs(Encoding::Protobuf, &to_protobuf(&a)).unwrap()),
                )
                .unwrap();
                (to_protobuf(&a), to_protobuf(&b))
            }
        };
        assert_eq!(a, b);
    }
}

#[test]
fn to_json_writes_collector_style_otlp_json() {
    let req = parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&to_json(&req)).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(span["startTimeUnixNano"], "1544712660000000000");
    assert_eq!(span["kind"], 2);
    assert!(span.get("links").is_none(), "empty arrays are left out");
}

#[test]
fn truncated_protobuf_is_malformed() {
    let bytes = to_protobuf(&parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap());
    let e = err(decode(
        Signal::Traces,
        Encoding::Protobuf,
        &bytes[..bytes.len() - 5],
    ));
    assert_eq!(e.reason_code(), "malformed_protobuf");
    assert!(
        e.to_string()
            .starts_with("malformed protobuf traces payload: truncated or invalid protobuf"),
        "{e}"
    );
}

#[test]
fn invalid_json_syntax_is_malformed_with_its_path() {
    let e = err(decode(
        Signal::Traces,
        Encoding::Json,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": }]}]}]}"#,
    ));
    assert_eq!(e.reason_code(), "malformed_json");
    assert!(
        matches!(&e, DecodeError::Malformed { path, .. } if path.starts_with("resourceSpans[0].scopeSpans[0].spans[0]")),
        "{e}"
    );
}

#[test]
fn trailing_garbage_after_the_document_is_malformed() {
    let doc = format!("{COLLECTOR_TRACE} {{");
    assert_eq!(
        err(decode(Signal::Traces, Encoding::Json, doc.as_bytes())).reason_code(),
        "malformed_json"
    );
}

#[test]
fn string_where_an_object_belongs_names_the_field() {
    let doc = r#"{"resourceSpans":[{"resource":"checkout","scopeSpans":[]}]}"#;
    let e = err(decode(Signal::Traces, Encoding::Json, doc.as_bytes()));
    assert_eq!(
        e.to_string(),
        "malformed json traces payload at `resourceSpans[0].resource`: expected an object, got a string"
    );
}

#[test]
fn empty_and_blank_payloads_are_empty() {
    assert_eq!(
        err(decode(Signal::Logs, Encoding::Protobuf, b"")),
        DecodeError::Empty
    );
    assert_eq!(
        err(decode(Signal::Logs, Encoding::Json, b" \n\t")),
        DecodeError::Empty
    );
    assert_eq!(DecodeError::Empty.reason_code(), "empty");
}

#[test]
fn oversized_payload_is_refused_before_parsing() {
    let limits = DecodeLimits { max_bytes: 64 };
    let e = err(decode_with_limits(
        Signal::Traces,
        Encoding::Json,
        COLLECTOR_TRACE.as_bytes(),
        &limits,
    ));
    assert_eq!(
        e,
        DecodeError::TooLarge {
            size: COLLECTOR_TRACE.len(),
            limit: 64
        }
    );
    assert_eq!(e.reason_code(), "too_large");
    assert_eq!(DecodeLimits::default().max_bytes, 16 * 1024 * 1024);
}

#[test]
fn encodings_parse_from_collector_kafka_names() {
    assert_eq!("otlp_json".parse::<Encoding>(), Ok(Encoding::Json));
    assert_eq!("otlp_proto".parse::<Encoding>(), Ok(Encoding::Protobuf));
    assert_eq!(
        serde_json::from_str::<Encoding>("\"otlp_proto\"").ok(),
        Some(Encoding::Protobuf)
    );
    assert_eq!(
        serde_json::to_string(&Encoding::Protobuf).ok().as_deref(),
        Some("\"protobuf\"")
    );
    assert_eq!(Encoding::Json.to_string(), "json");
    assert!("xml".parse::<Encoding>().is_err());
    assert_eq!("spans".parse::<Signal>(), Ok(Signal::Traces));
    assert_eq!(
        serde_json::from_str::<Signal>("\"metrics\"").ok(),
        Some(Signal::Metrics)
    );
    assert_eq!(Signal::Logs.to_string(), "logs");
}
