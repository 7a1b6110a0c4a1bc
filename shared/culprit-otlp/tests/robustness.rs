//! Damaged payloads must come back as errors with a known reason code, never as a panic.

mod common;

use common::{COLLECTOR_LOGS, COLLECTOR_METRICS, COLLECTOR_TRACE};
use culprit_otlp::changes::decode_changes;
use culprit_otlp::{
    decode, parse_logs, parse_metrics, parse_traces, to_protobuf, Encoding, Signal,
};

const CODES: [&str; 5] = [
    "empty",
    "too_large",
    "malformed_json",
    "malformed_protobuf",
    "invalid_field",
];

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncates, flips, deletes or duplicates bytes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out.truncate(at),
            1 => out[at] ^= 1 << rng.below(8),
            2 => {
                out.remove(at);
            }
            _ => {
                let b = out[at];
                out.insert(at, b);
            }
        }
    }
    out
}

#[test]
fn mutated_otlp_payloads_fail_with_known_reason_codes() {
    let inputs = [
        (
            Signal::Traces,
            COLLECTOR_TRACE.as_bytes().to_vec(),
            to_protobuf(&parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap()),
        ),
        (
            Signal::Logs,
            COLLECTOR_LOGS.as_bytes().to_vec(),
            to_protobuf(&parse_logs(Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap()),
        ),
        (
            Signal::Metrics,
            COLLECTOR_METRICS.as_bytes().to_vec(),
            to_protobuf(&parse_metrics(Encoding::Json, COLLECTOR_METRICS.as_bytes()).unwrap()),
        ),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = 0;
    for _ in 0..400 {
        for (signal, json, proto) in &inputs {
            for (encoding, bytes) in [(Encoding::Json, json), (Encoding::Protobuf, proto)] {
                if let Err(e) = decode(*signal, encoding, &mutate(&mut rng, bytes)) {
                    failures += 1;
                    assert!(CODES.contains(&e.reason_code()), "{e}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    assert!(failures > 0, "mutations should break some payloads");
}

#[test]
fn mutated_change_events_fail_with_known_reason_codes() {
    let doc = br#"[{"id":"a","time":"2026-11-22T03:00:00Z","type":"deployment","service":"s","attributes":{"v":1}},
                   {"specversion":"1.0","id":"b","type":"dev.cdevents.service.deployed.0.1.1","time":"2026-11-22T03:00:00Z",
                    "data":{"subject":{"id":"x","content":{"artifactId":"pkg:oci/app@1%2"}}}}]"#;
    let mut rng = Rng(42);
    for _ in 0..1000 {
        if let Err(e) = decode_changes(&mutate(&mut rng, doc)) {
            assert!(CODES.contains(&e.reason_code()), "{e}");
        }
    }
}

// ---- inputs the fuzzer (tests/fuzz.rs, scripts/fuzz.sh) found ----------------------------------

/// A gauge whose name is `name_len` bytes, with `points` points.
fn gauge_request(
    name_len: usize,
    points: usize,
) -> culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest {
    use culprit_otlp::build::{self, Number};
    let points = (0..points)
        .map(|i| {
            build::point(
                1_700_000_000_000_000_000 + i as u64,
                Number::Double(1.0),
                Vec::new(),
            )
        })
        .collect();
    build::metrics_request(vec![build::resource_metrics(
        build::resource("s", &[]),
        build::scope("t", ""),
        vec![build::gauge("m".repeat(name_len), "", points)],
    )])
}

#[test]
fn a_metric_name_past_the_limit_is_refused_naming_the_metric() {
    // Found by the scaling check: a 32 KiB name over 3000 points made every point's event copy
    // the name (300 MB held for a 256 KiB payload).
    let req = gauge_request(32 << 10, 3000);
    for (encoding, bytes) in [
        (Encoding::Json, culprit_otlp::to_json(&req)),
        (Encoding::Protobuf, to_protobuf(&req)),
    ] {
        let err = decode(Signal::Metrics, encoding, &bytes).unwrap_err();
        assert_eq!(err.reason_code(), "invalid_field");
        let text = err.to_string();
        assert!(
            text.contains("resourceMetrics[0].scopeMetrics[0].metrics[0]")
                && text.contains("`name`")
                && text.contains("255"),
            "{text}"
        );
    }
    let at_limit = gauge_request(culprit_otlp::MAX_METRIC_NAME_BYTES, 3);
    let events = decode(Signal::Metrics, Encoding::Protobuf, &to_protobuf(&at_limit)).unwrap();
    assert_eq!(events.len(), 3);
}

#[test]
fn a_summary_with_more_quantiles_than_read_is_refused() {
    use culprit_otlp::proto::metrics::v1::{
        metric, summary_data_point, Metric, Summary, SummaryDataPoint,
    };
    let summary = |quantiles: usize| {
        let point = SummaryDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000,
            count: 1,
            quantile_values: (0..quantiles)
                .map(|i| summary_data_point::ValueAtQuantile {
                    quantile: i as f64 / quantiles as f64,
                    value: 1.0,
                })
                .collect(),
            ..Default::default()
        };
        let metric = Metric {
            name: "rpc".into(),
            data: Some(metric::Data::Summary(Summary {
                data_points: vec![point],
            })),
            ..Default::default()
        };
        culprit_otlp::build::metrics_request(vec![culprit_otlp::build::resource_metrics(
            culprit_otlp::build::resource("s", &[]),
            culprit_otlp::build::scope("t", ""),
            vec![metric],
        )])
    };
    let max = culprit_otlp::MAX_SUMMARY_QUANTILES;
    let err = decode(
        Signal::Metrics,
        Encoding::Protobuf,
        &to_protobuf(&summary(max + 1)),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("summary.dataPoints[0]") && text.contains("quantileValues"),
        "{text}"
    );
    // count, sum and one event per quantile.
    let events = decode(
        Signal::Metrics,
        Encoding::Protobuf,
        &to_protobuf(&summary(max)),
    )
    .unwrap();
    assert_eq!(events.len(), 2 + max);
}

#[test]
fn a_cloud_event_or_cdevent_with_a_blank_id_is_refused() {
    // Found by scripts/fuzz.sh (inputs 368098 and 485573 of seed 0xc0ffeed00df00d): the native
    // form refused a blank id, CloudEvents and bare CDEvents took " " as the change's id.
    let bare = r#"{"context":{"id":" ","type":"dev.cdevents.environment.modified.0.1.1","timestamp":"2026-11-22T03:00:00.123456789Z","source":"argo"},"subject":{"id":"staging","content":{"name":"staging"}}}"#;
    let cloud = r#"{"specversion":"1.0","id":" ","source":"/ci","type":"dev.cdevents.service.deployed.0.1.1","time":"2026-11-22T03:00:00+01:00","data":{"context":{"id":"b"},"subject":{"id":"svc/checkout"}}}"#;
    for doc in [bare, cloud] {
        let err = decode_changes(doc.as_bytes()).unwrap_err();
        assert_eq!(err.reason_code(), "invalid_field");
        assert!(err.to_string().contains("field `id`"), "{err}");
    }
    let fixed = cloud.replace(r#""id":" ""#, r#""id":"b""#);
    assert_eq!(decode_changes(fixed.as_bytes()).unwrap().len(), 1);
}
