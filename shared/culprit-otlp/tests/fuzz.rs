//! Fuzzing of every decoder of this crate: OTLP traces, logs and metrics (JSON and protobuf),
//! change events, and replay files. Each decoder gets a few thousand seeded inputs here
//! (`CULPRIT_FUZZ_ITERS` more in `scripts/fuzz.sh`), grown from valid encodings built with
//! `culprit_otlp::build` and the Collector fixtures, and inputs of growing size to check that
//! time and memory grow no faster than the input.
//!
//! What every input must satisfy: no panic; `Ok` with events that keep the model's invariants,
//! or an error with a known reason code that names what was wrong; memory within a budget
//! proportional to the input; time within a budget proportional to the input.

mod common;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::CountingAlloc;
use culprit_core::{Event, EventBody};
use culprit_otlp::build::{self, int_attr, str_attr, Number, SpanKind};
use culprit_otlp::changes::decode_changes;
use culprit_otlp::fuzzing::{self, Budget, Check, Config, Mutator, Target, Verdict};
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::common::v1::KeyValue;
use culprit_otlp::proto::metrics::v1::{
    metric, summary_data_point, Metric, Summary, SummaryDataPoint,
};
use culprit_otlp::{
    decode, files, parse_logs, parse_metrics, parse_traces, to_json, to_protobuf, DecodeError,
    Encoding, Signal, MAX_METRIC_NAME_BYTES, MAX_SUMMARY_QUANTILES,
};
use std::io::Write;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Inputs per decoder in the normal test run.
const DEFAULT_ITERATIONS: u64 = 3000;

const REASON_CODES: [&str; 5] = [
    "empty",
    "too_large",
    "malformed_json",
    "malformed_protobuf",
    "invalid_field",
];

fn config() -> Config<'static> {
    Config::from_env(DEFAULT_ITERATIONS, Some(&ALLOC))
}

/// Input sizes for the scaling checks: up to `CULPRIT_FUZZ_MAX_SIZE` bytes (256 KiB by default,
/// 1 MiB in scripts/fuzz.sh).
fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("CULPRIT_FUZZ_MAX_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 10);
    vec![max / 64, max / 16, max / 4, max]
}

// ---- properties -----------------------------------------------------------------------------

/// An error must carry a known reason code and say where and what.
fn check_error(e: &DecodeError) -> Result<Verdict, String> {
    if !REASON_CODES.contains(&e.reason_code()) {
        return Err(format!("unknown reason code {}", e.reason_code()));
    }
    let named = match e {
        DecodeError::Empty | DecodeError::TooLarge { .. } => true,
        DecodeError::Malformed { reason, .. } => !reason.trim().is_empty(),
        DecodeError::Invalid {
            record,
            field,
            reason,
        } => !record.is_empty() && !field.is_empty() && !reason.trim().is_empty(),
    };
    if named {
        Ok(Verdict::Rejected)
    } else {
        Err(format!("error names nothing: {e:?}"))
    }
}

/// Decoded events keep the model's invariants: hex ids of the right length, durations not
/// negative, no NaN metric values, change events with an id and a service.
fn check_events(events: &[Event]) -> Result<Verdict, String> {
    for e in events {
        match &e.body {
            EventBody::Span(s) => {
                if s.trace_id.len() != 32 || s.span_id.len() != 16 {
                    return Err(format!("span ids of wrong length: {s:?}"));
                }
                if s.duration_ns < 0 {
                    return Err(format!("negative span duration: {s:?}"));
                }
            }
            EventBody::Log(l) => {
                if l.trace_id.as_ref().is_some_and(|t| t.len() != 32) {
                    return Err(format!("log trace id of wrong length: {l:?}"));
                }
            }
            EventBody::Metric(m) => {
                if m.value.is_nan() {
                    return Err(format!("NaN metric value kept: {m:?}"));
                }
            }
            EventBody::Change(c) => {
                if c.id.trim().is_empty() || e.resource.service.is_empty() {
                    return Err(format!("change without id or service: {e:?}"));
                }
            }
        }
    }
    Ok(Verdict::Accepted)
}

fn check_decoded(result: Result<Vec<Event>, DecodeError>) -> Result<Verdict, String> {
    match result {
        Ok(events) => check_events(&events),
        Err(e) => check_error(&e),
    }
}

fn otlp_check(signal: Signal, encoding: Encoding) -> impl Fn(&[u8]) -> Result<Verdict, String> {
    move |bytes| check_decoded(decode(signal, encoding, bytes))
}

// ---- seeds ----------------------------------------------------------------------------------

const TRACE_ID: [u8; 16] = *b"\x5b\x8e\xff\xf7\x98\x03\x81\x03\xd2\x69\xb6\x33\x81\x3f\xc6\x0c";
const T0: u64 = 1_700_000_000_000_000_000;

fn span_id(i: u8) -> [u8; 8] {
    [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, i]
}

fn pod(service: &str) -> culprit_otlp::proto::resource::v1::Resource {
    build::resource(
        service,
        &[
            ("deployment.environment.name", "prod"),
            ("k8s.pod.name", &format!("{service}-5d9f-abcde")),
            ("service.version", "1.4.2"),
        ],
    )
}

/// Valid trace requests of several shapes, and ones a producer gets wrong (end before start,
/// ids of the wrong length, times past 2262).
fn trace_requests() -> Vec<culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest> {
    let scope = build::scope("fuzz", "1");
    let root = build::span(TRACE_ID, span_id(1), "GET /cart", T0, T0 + 5_000_000)
        .kind(SpanKind::Server)
        .attributes(vec![
            str_attr("http.route", "/cart"),
            int_attr("http.status_code", 500),
        ])
        .error("boom")
        .exception(
            T0 + 1,
            "java.lang.IllegalStateException",
            "bad",
            Some("at x\nat y"),
        )
        .build();
    let child = build::span(TRACE_ID, span_id(2), "SELECT", T0 + 10, T0 + 900)
        .parent(span_id(1))
        .kind(SpanKind::Client)
        .attributes(vec![str_attr("peer.service", "db")])
        .build();
    let backwards = build::span(TRACE_ID, span_id(3), "backwards", T0 + 10, T0).build();
    let short_id = build::span(&TRACE_ID[..8], span_id(4), "short", T0, T0).build();
    let far = build::span(TRACE_ID, span_id(5), "far", u64::MAX - 1, u64::MAX).build();
    vec![
        build::trace_request(vec![
            build::resource_spans(pod("checkout"), scope.clone(), vec![root, child.clone()]),
            build::resource_spans(pod("db"), scope.clone(), vec![child]),
        ]),
        build::trace_request(vec![build::resource_spans(
            pod("a"),
            scope.clone(),
            vec![backwards],
        )]),
        build::trace_request(vec![build::resource_spans(
            pod("a"),
            scope.clone(),
            vec![short_id],
        )]),
        build::trace_request(vec![build::resource_spans(pod("a"), scope, vec![far])]),
        build::trace_request(Vec::new()),
    ]
}

fn logs_requests() -> Vec<culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest> {
    let scope = build::scope("fuzz", "");
    let records = vec![
        build::log_record(T0, 17, "ERROR", "card declined for order 42")
            .trace(TRACE_ID, span_id(1))
            .sampled()
            .build(),
        build::log_record(T0 + 1, 9, "INFO", "ok").build(),
        build::log_record(0, 0, "warning", "no time, no level number").build(),
        build::log_record(u64::MAX, 13, "WARN", "past 2262").build(),
        build::log_record(T0, 0, "", "bad ids")
            .trace(vec![1, 2, 3], vec![4])
            .build(),
    ];
    vec![
        build::logs_request(vec![build::resource_logs(
            pod("payments"),
            scope.clone(),
            records,
        )]),
        build::logs_request(vec![build::resource_logs(
            pod("x"),
            scope,
            vec![build::log_record(T0, 21, "FATAL", "x".repeat(300)).build()],
        )]),
    ]
}

fn metrics_requests() -> Vec<ExportMetricsServiceRequest> {
    let scope = build::scope("fuzz", "");
    let attrs = || vec![str_attr("queue", "orders"), int_attr("shard", 3)];
    let gauges = vec![
        build::gauge(
            "queue.depth",
            "1",
            vec![
                build::point(T0, Number::Double(12.5), attrs()),
                build::point(T0 + 1, Number::Double(f64::NAN), Vec::new()),
                build::point(T0 + 2, Number::Double(f64::INFINITY), Vec::new()),
                build::point(T0 + 3, Number::Int(i64::MIN), Vec::new()),
            ],
        ),
        build::gauge(
            "far",
            "",
            vec![build::point(u64::MAX, Number::Int(1), Vec::new())],
        ),
    ];
    let mut requests = vec![build::metrics_request(vec![build::resource_metrics(
        pod("checkout"),
        scope.clone(),
        gauges,
    )])];
    requests.push(
        parse_metrics(Encoding::Json, common::COLLECTOR_METRICS.as_bytes())
            .expect("the Collector metrics fixture parses"),
    );
    // A summary with a quantile outside [0, 1].
    requests.push(build::metrics_request(vec![build::resource_metrics(
        pod("x"),
        scope,
        vec![summary_metric("gc", attrs(), &[0.5, 1.5])],
    )]));
    requests
}

fn summary_metric(name: &str, attributes: Vec<KeyValue>, quantiles: &[f64]) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes,
                time_unix_nano: T0,
                count: 4,
                sum: 10.0,
                quantile_values: quantiles
                    .iter()
                    .map(|&quantile| summary_data_point::ValueAtQuantile {
                        quantile,
                        value: 2.0,
                    })
                    .collect(),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn json_dictionary() -> Vec<Vec<u8>> {
    [
        "\"resourceSpans\":[",
        "\"resourceLogs\":[",
        "\"resourceMetrics\":[",
        "\"scopeSpans\":[",
        "\"spans\":[",
        "\"logRecords\":[",
        "\"metrics\":[",
        "\"dataPoints\":[",
        "\"traceId\":",
        "\"spanId\":",
        "\"parentSpanId\":",
        "\"startTimeUnixNano\":",
        "\"endTimeUnixNano\":",
        "\"timeUnixNano\":",
        "\"asDouble\":",
        "\"asInt\":",
        "\"count\":",
        "\"bucketCounts\":[",
        "\"explicitBounds\":[",
        "\"quantileValues\":[",
        "\"quantile\":",
        "\"attributes\":[",
        "\"key\":",
        "\"value\":{",
        "\"stringValue\":",
        "\"intValue\":",
        "\"doubleValue\":",
        "\"bytesValue\":",
        "\"arrayValue\":{\"values\":[",
        "\"kvlistValue\":{\"values\":[",
        "\"kind\":\"SPAN_KIND_SERVER\"",
        "\"status\":{\"code\":2}",
        "\"gauge\":{",
        "\"sum\":{",
        "\"histogram\":{",
        "\"summary\":{",
        "\"exponentialHistogram\":{",
        "\"flags\":1",
        "null",
        "true",
        "{}",
        "[]",
        "\"\"",
        "\"0af7651916cd43dd8448eb211c80319c\"",
        "\"b7ad6b7169203331\"",
        "\"zz\"",
        "\"AAEC\"",
        "\"*!\"",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

fn protobuf_dictionary() -> Vec<Vec<u8>> {
    // Field tags of the export requests and their messages, with small lengths.
    (1u8..=16)
        .flat_map(|field| {
            [
                vec![field << 3 | 2, 0],
                vec![field << 3, 1],
                vec![field << 3 | 1],
            ]
        })
        .chain([
            vec![0x0a, 0x10],
            vec![0x12, 0x08],
            b"\x11\x00\x00\x00\x00\x00\x00\xf8\x7f".to_vec(),
        ])
        .collect()
}

fn encodings<M: prost::Message + culprit_otlp::ToOtlpJson>(
    requests: &[M],
    encoding: Encoding,
) -> Vec<Vec<u8>> {
    requests
        .iter()
        .map(|r| match encoding {
            Encoding::Json => to_json(r),
            Encoding::Protobuf => to_protobuf(r),
        })
        .collect()
}

fn otlp_target<'a>(
    name: &'a str,
    seeds: Vec<Vec<u8>>,
    encoding: Encoding,
    check: &'a Check<'a>,
) -> Target<'a> {
    let dictionary = match encoding {
        Encoding::Json => json_dictionary(),
        Encoding::Protobuf => protobuf_dictionary(),
    };
    Target {
        name,
        mutator: Mutator::new(seeds, dictionary),
        check,
        budget: Budget::default(),
    }
}

fn fuzz(target: &Target<'_>) {
    let report = fuzzing::run(target, &config());
    println!("{report}");
    report.assert_clean();
    assert!(
        report.inputs == 0 || report.accepted > 0,
        "{}: not one input decoded, so the seeds are broken: {report}",
        target.name
    );
}

/// Checks how decoding scales; failures are collected so every check of a decoder runs.
fn scale(
    failures: &mut Vec<String>,
    name: &str,
    make: &dyn Fn(usize) -> Vec<u8>,
    check: &Check<'_>,
) {
    scale_from(failures, 0, name, make, check);
}

/// [`scale`] from `min_size` bytes on: for shapes whose fixed part weighs on small inputs (their
/// cost per byte rises towards its level and then stays there).
fn scale_from(
    failures: &mut Vec<String>,
    min_size: usize,
    name: &str,
    make: &dyn Fn(usize) -> Vec<u8>,
    check: &Check<'_>,
) {
    let sizes: Vec<usize> = sizes().into_iter().filter(|&s| s >= min_size).collect();
    match fuzzing::scaling(name, make, check, &sizes, &Budget::default(), Some(&ALLOC)) {
        Ok(s) => println!("{s}"),
        Err(e) => failures.push(e),
    }
}

fn assert_scales(failures: &[String]) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `count(n)` built into a request of about `size` bytes when encoded.
fn grow<M>(size: usize, make: impl Fn(usize) -> M, encode: impl Fn(&M) -> Vec<u8>) -> Vec<u8> {
    let one = encode(&make(1)).len().max(1);
    let two = encode(&make(2)).len().max(one + 1);
    let per_item = two - one;
    encode(&make(1 + size.saturating_sub(one) / per_item))
}

// ---- traces ---------------------------------------------------------------------------------

fn many_spans(n: usize) -> culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            build::span(
                TRACE_ID,
                span_id(i as u8),
                format!("op{}", i % 50),
                T0,
                T0 + i as u64,
            )
            .parent(span_id(0))
            .attributes(vec![str_attr("k", "v")])
            .build()
        })
        .collect();
    build::trace_request(vec![build::resource_spans(
        pod("s"),
        build::scope("f", ""),
        spans,
    )])
}

#[test]
fn fuzz_otlp_traces_json() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Traces, Encoding::Json);
    let mut seeds = encodings(&trace_requests(), Encoding::Json);
    seeds.push(common::COLLECTOR_TRACE.as_bytes().to_vec());
    fuzz(&otlp_target(
        "otlp-traces-json",
        seeds,
        Encoding::Json,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-traces-json spans",
        &|n| grow(n, many_spans, to_json),
        &check,
    );
    scale(
        &mut failures,
        "otlp-traces-json nesting",
        &|n| nested_attribute_json(n),
        &check,
    );
    assert_scales(&failures);
}

#[test]
fn fuzz_otlp_traces_protobuf() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Traces, Encoding::Protobuf);
    let mut seeds = encodings(&trace_requests(), Encoding::Protobuf);
    seeds.push(to_protobuf(
        &parse_traces(Encoding::Json, common::COLLECTOR_TRACE.as_bytes()).expect("fixture"),
    ));
    fuzz(&otlp_target(
        "otlp-traces-protobuf",
        seeds,
        Encoding::Protobuf,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-traces-protobuf spans",
        &|n| grow(n, many_spans, to_protobuf),
        &check,
    );
    assert_scales(&failures);
}

/// A span whose attribute value nests arrays `size / 20` deep: the JSON reader must refuse
/// depth, not recurse without bound.
fn nested_attribute_json(size: usize) -> Vec<u8> {
    let depth = size / 20;
    let open = "{\"arrayValue\":{\"values\":[".repeat(depth);
    let close = "]}}".repeat(depth);
    format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{{\"traceId\":\"5b8efff798038103d269b633813fc60c\",\
         \"spanId\":\"eee19b7ec3c1b174\",\"attributes\":[{{\"key\":\"k\",\"value\":{open}{close}}}]}}]}}]}}]}}"
    )
    .into_bytes()
}

// ---- logs -----------------------------------------------------------------------------------

fn many_logs(n: usize) -> culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest {
    let records = (0..n)
        .map(|i| build::log_record(T0 + i as u64, 17, "ERROR", format!("line {i}")).build())
        .collect();
    build::logs_request(vec![build::resource_logs(
        pod("s"),
        build::scope("f", ""),
        records,
    )])
}

fn huge_body(size: usize) -> culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest {
    build::logs_request(vec![build::resource_logs(
        pod("s"),
        build::scope("f", ""),
        vec![build::log_record(T0, 9, "INFO", "é".repeat(size / 2)).build()],
    )])
}

#[test]
fn fuzz_otlp_logs_json() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Logs, Encoding::Json);
    let mut seeds = encodings(&logs_requests(), Encoding::Json);
    seeds.push(common::COLLECTOR_LOGS.as_bytes().to_vec());
    fuzz(&otlp_target(
        "otlp-logs-json",
        seeds,
        Encoding::Json,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-logs-json records",
        &|n| grow(n, many_logs, to_json),
        &check,
    );
    scale(
        &mut failures,
        "otlp-logs-json huge body",
        &|n| to_json(&huge_body(n)),
        &check,
    );
    scale(
        &mut failures,
        "otlp-logs-json deep array",
        &|n| b"[".repeat(n),
        &check,
    );
    assert_scales(&failures);
}

#[test]
fn fuzz_otlp_logs_protobuf() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Logs, Encoding::Protobuf);
    let mut seeds = encodings(&logs_requests(), Encoding::Protobuf);
    seeds.push(to_protobuf(
        &parse_logs(Encoding::Json, common::COLLECTOR_LOGS.as_bytes()).expect("fixture"),
    ));
    fuzz(&otlp_target(
        "otlp-logs-protobuf",
        seeds,
        Encoding::Protobuf,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-logs-protobuf records",
        &|n| grow(n, many_logs, to_protobuf),
        &check,
    );
    scale(
        &mut failures,
        "otlp-logs-protobuf huge body",
        &|n| to_protobuf(&huge_body(n)),
        &check,
    );
    assert_scales(&failures);
}

// ---- metrics --------------------------------------------------------------------------------

/// One gauge named with `name_len` bytes and as many points as fill the rest: every point's
/// event carries the name, so the name's length must be bounded or memory grows with
/// name length x points.
fn long_name_many_points(
    size: usize,
    name_len: usize,
    encode: fn(&ExportMetricsServiceRequest) -> Vec<u8>,
) -> Vec<u8> {
    let make = |points: usize| {
        let name = "m".repeat(name_len);
        let points = (0..points)
            .map(|i| build::point(T0 + i as u64, Number::Double(1.0), Vec::new()))
            .collect();
        build::metrics_request(vec![build::resource_metrics(
            pod("s"),
            build::scope("f", ""),
            vec![build::gauge(name, "", points)],
        )])
    };
    grow(size, make, encode)
}

/// A summary point whose attributes take half the input and whose quantiles take the rest:
/// every quantile's event carries the point's attributes.
fn big_attributes_many_quantiles(
    size: usize,
    encode: fn(&ExportMetricsServiceRequest) -> Vec<u8>,
) -> Vec<u8> {
    let make = |quantiles: usize| {
        let attributes = (0..size / 64)
            .map(|i| str_attr(&format!("attribute.{i}"), "v".repeat(40)))
            .collect();
        let qs: Vec<f64> = (0..quantiles).map(|i| (i % 1000) as f64 / 1000.0).collect();
        build::metrics_request(vec![build::resource_metrics(
            pod("s"),
            build::scope("f", ""),
            vec![summary_metric("rpc", attributes, &qs)],
        )])
    };
    grow(size, make, encode)
}

/// A summary point with as many quantiles as are read and as many attributes as fill the input.
fn big_attributes_most_quantiles(
    size: usize,
    encode: fn(&ExportMetricsServiceRequest) -> Vec<u8>,
) -> Vec<u8> {
    let qs: Vec<f64> = (0..MAX_SUMMARY_QUANTILES)
        .map(|i| i as f64 / MAX_SUMMARY_QUANTILES as f64)
        .collect();
    let make = |attributes: usize| {
        let attributes = (0..attributes)
            .map(|i| str_attr(&format!("attribute.{i}"), "v"))
            .collect();
        build::metrics_request(vec![build::resource_metrics(
            pod("s"),
            build::scope("f", ""),
            vec![summary_metric("rpc", attributes, &qs)],
        )])
    };
    grow(size, make, encode)
}

fn many_points(n: usize) -> ExportMetricsServiceRequest {
    let points = (0..n)
        .map(|i| {
            build::point(
                T0 + i as u64,
                Number::Double(i as f64),
                vec![str_attr("k", "v")],
            )
        })
        .collect();
    build::metrics_request(vec![build::resource_metrics(
        pod("s"),
        build::scope("f", ""),
        vec![build::gauge("queue.depth", "1", points)],
    )])
}

fn json_bytes(r: &ExportMetricsServiceRequest) -> Vec<u8> {
    to_json(r)
}

fn protobuf_bytes(r: &ExportMetricsServiceRequest) -> Vec<u8> {
    to_protobuf(r)
}

#[test]
fn fuzz_otlp_metrics_json() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Metrics, Encoding::Json);
    let mut seeds = encodings(&metrics_requests(), Encoding::Json);
    seeds.push(common::COLLECTOR_METRICS.as_bytes().to_vec());
    fuzz(&otlp_target(
        "otlp-metrics-json",
        seeds,
        Encoding::Json,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-metrics-json points",
        &|n| grow(n, many_points, json_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-json long name",
        &|n| long_name_many_points(n, n / 2, json_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-json name at limit",
        &|n| long_name_many_points(n, MAX_METRIC_NAME_BYTES, json_bytes),
        &check,
    );
    // 64 quantiles are the fixed part: their share of the input falls until 16 KiB.
    scale_from(
        &mut failures,
        16 << 10,
        "otlp-metrics-json quantiles at limit",
        &|n| big_attributes_most_quantiles(n, json_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-json quantiles",
        &|n| big_attributes_many_quantiles(n, json_bytes),
        &check,
    );
    assert_scales(&failures);
}

#[test]
fn fuzz_otlp_metrics_protobuf() {
    let mut failures = Vec::new();
    let check = otlp_check(Signal::Metrics, Encoding::Protobuf);
    let seeds = encodings(&metrics_requests(), Encoding::Protobuf);
    fuzz(&otlp_target(
        "otlp-metrics-protobuf",
        seeds,
        Encoding::Protobuf,
        &check,
    ));
    scale(
        &mut failures,
        "otlp-metrics-protobuf points",
        &|n| grow(n, many_points, protobuf_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-protobuf long name",
        &|n| long_name_many_points(n, n / 2, protobuf_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-protobuf name at limit",
        &|n| long_name_many_points(n, MAX_METRIC_NAME_BYTES, protobuf_bytes),
        &check,
    );
    // 64 quantiles are the fixed part: their share of the input falls until 16 KiB.
    scale_from(
        &mut failures,
        16 << 10,
        "otlp-metrics-protobuf quantiles at limit",
        &|n| big_attributes_most_quantiles(n, protobuf_bytes),
        &check,
    );
    scale(
        &mut failures,
        "otlp-metrics-protobuf quantiles",
        &|n| big_attributes_many_quantiles(n, protobuf_bytes),
        &check,
    );
    assert_scales(&failures);
}

// ---- change events --------------------------------------------------------------------------

const NATIVE: &str = r#"{"id":"chg-42","time":"2026-11-22T03:00:00Z","type":"deployment","service":"checkout","environment":"prod","summary":"deploy checkout v1.4.2","actor":"ci-bot","attributes":{"version":"1.4.2","files_changed":3,"canary":true}}"#;
const NATIVE_NANOS: &str =
    r#"{"id":7,"time_unix_nano":"1763780400000000000","type":"feature_flag","service":"cart"}"#;
const CLOUD_CDEVENT: &str = r#"{"specversion":"1.0","id":"b","source":"/ci","type":"dev.cdevents.service.deployed.0.1.1","time":"2026-11-22T03:00:00+01:00","environment":"prod","data":{"context":{"id":"b"},"subject":{"id":"svc/checkout","content":{"artifactId":"pkg:oci/checkout@sha256%3Aabc?repository_url=x","environment":{"id":"prod"}}}}}"#;
const BARE_CDEVENT: &str = r#"{"context":{"id":"c","type":"dev.cdevents.environment.modified.0.1.1","timestamp":"2026-11-22T03:00:00.123456789Z","source":"argo"},"subject":{"id":"staging","content":{"name":"staging"}}}"#;
const FLAG_CLOUDEVENT: &str = r#"{"specversion":"1.0","id":"f1","type":"com.example.featureflag.changed","time":"2026-11-22T03:00:00Z","subject":"checkout.new-flow","data":{"service":"checkout","old":false,"new":true,"message":"flip"}}"#;

fn change_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        NATIVE,
        NATIVE_NANOS,
        CLOUD_CDEVENT,
        BARE_CDEVENT,
        FLAG_CLOUDEVENT,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    seeds.push(format!("[{NATIVE},{CLOUD_CDEVENT},{BARE_CDEVENT}]").into_bytes());
    seeds.push(format!("\u{feff}{NATIVE}\n\n{FLAG_CLOUDEVENT}\n{NATIVE_NANOS}\n").into_bytes());
    // Hostile times: far past, far future, not finite, negative.
    for time in [
        r#""time":"-0001-01-01T00:00:00Z""#,
        r#""time":"9999-12-31T23:59:60.999999999Z""#,
        r#""time_unix_nano":1e300"#,
        r#""time_unix_nano":"NaN""#,
        r#""time_unix_nano":-5"#,
    ] {
        seeds.push(format!(r#"{{"id":"h",{time},"type":"rollback","service":"s"}}"#).into_bytes());
    }
    seeds
}

fn change_dictionary() -> Vec<Vec<u8>> {
    [
        "\"specversion\":\"1.0\",",
        "\"data\":{",
        "\"context\":{",
        "\"subject\":{",
        "\"content\":{",
        "\"artifactId\":\"pkg:oci/a@1%ZZ%\"",
        "\"id\":",
        "\"type\":",
        "\"time\":",
        "\"timestamp\":",
        "\"time_unix_nano\":",
        "\"service\":",
        "\"environment\":",
        "\"attributes\":{",
        "\"source\":",
        "\"dev.cdevents.service.rolledback.0.2.0\"",
        "\"dev.cdevents.\"",
        "\"pkg:\"",
        "\"pkg:@\"",
        "\"2026-11-22T03:00:00Z\"",
        "\"deployment\"",
        "null",
        "[]",
        "{}",
        "\n",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

#[test]
fn fuzz_change_events() {
    let mut failures = Vec::new();
    let check = |bytes: &[u8]| check_decoded(decode_changes(bytes));
    fuzz(&Target {
        name: "changes",
        mutator: Mutator::new(change_seeds(), change_dictionary()),
        check: &check,
        budget: Budget::default(),
    });
    let lines = |n: usize| {
        let line = format!("{NATIVE}\n");
        line.repeat(n / line.len() + 1).into_bytes()
    };
    scale(&mut failures, "changes json lines", &lines, &check);
    let array = |n: usize| {
        let items = vec![CLOUD_CDEVENT; n / CLOUD_CDEVENT.len() + 1];
        format!("[{}]", items.join(",")).into_bytes()
    };
    scale(&mut failures, "changes array", &array, &check);
    let long_purl = |n: usize| {
        CLOUD_CDEVENT
            .replace(
                "pkg:oci/checkout@",
                &format!("pkg:oci/{}@", "%41/".repeat(n / 4)),
            )
            .into_bytes()
    };
    scale(&mut failures, "changes long purl", &long_purl, &check);
    scale(
        &mut failures,
        "changes blank lines",
        &|n| "\n".repeat(n).into_bytes(),
        &check,
    );
    assert_scales(&failures);
}

// ---- files ----------------------------------------------------------------------------------

/// Replay files: the input's first byte picks the file name (and so the format), the rest is
/// the file.
const FILE_NAMES: [&str; 8] = [
    "traces.pb",
    "logs.binpb",
    "metrics.proto",
    "otel.jsonl",
    "changes.json",
    "spans.pb.gz",
    "otel.ndjson.gz",
    "notes.txt",
];

fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

fn file_seeds() -> Vec<Vec<u8>> {
    let traces = encodings(&trace_requests()[..1], Encoding::Protobuf);
    let logs = encodings(&logs_requests()[..1], Encoding::Protobuf);
    let metrics = encodings(&metrics_requests()[..2], Encoding::Protobuf);
    let jsonl = [
        common::COLLECTOR_TRACE,
        common::COLLECTOR_LOGS.replace('\n', " ").as_str(),
        NATIVE,
        &format!("[{BARE_CDEVENT}]"),
    ]
    .join("\n");
    let with_name = |i: u8, body: Vec<u8>| [vec![i], body].concat();
    vec![
        with_name(0, framed(&[traces[0].clone(), traces[0].clone()])),
        with_name(0, traces[0].clone()),
        with_name(1, framed(&logs)),
        with_name(2, framed(&metrics)),
        with_name(3, jsonl.clone().into_bytes()),
        with_name(4, format!("[{NATIVE},{FLAG_CLOUDEVENT}]").into_bytes()),
        with_name(5, gzip(&framed(&traces))),
        with_name(6, gzip(jsonl.as_bytes())),
    ]
}

#[test]
fn fuzz_replay_files() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |bytes: &[u8]| {
        let Some((&selector, body)) = bytes.split_first() else {
            return Ok(Verdict::Rejected);
        };
        let path = dir
            .path()
            .join(FILE_NAMES[selector as usize % FILE_NAMES.len()]);
        std::fs::write(&path, body).map_err(|e| format!("cannot write the input: {e}"))?;
        match files::read_path(&path) {
            Ok(events) => check_events(&events),
            Err(e)
                if e.path() != path.as_path()
                    || !e.to_string().contains(&*path.to_string_lossy()) =>
            {
                Err(format!("error does not name the file: {e}"))
            }
            Err(_) => Ok(Verdict::Rejected),
        }
    };
    fuzz(&Target {
        name: "replay-files",
        mutator: Mutator::new(file_seeds(), protobuf_dictionary()),
        check: &check,
        budget: Budget::default(),
    });
    let frames = |n: usize| {
        let one = to_protobuf(&many_spans(3));
        [
            vec![0u8],
            framed(&vec![one.clone(); n / (one.len() + 4) + 1]),
        ]
        .concat()
    };
    scale(&mut failures, "replay-files frames", &frames, &check);
    assert_scales(&failures);
}
