//! OTLP export requests (already decoded) -> culprit events.

use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::{any_value, AnyValue, KeyValue};
use crate::proto::metrics::v1::{metric, number_data_point, DataPointFlags, HistogramDataPoint};
use crate::proto::resource::v1::Resource as ProtoResource;
use crate::proto::trace::v1::{span::SpanKind, status::StatusCode, Span};
use crate::DecodeError;
use base64::Engine as _;
use culprit_core::{
    Event, EventBody, LogEvent, LogLevel, MetricPoint, Resource, SpanEvent, UnixNanos,
};
use std::collections::BTreeMap;
use std::sync::Arc;

const TRACE_ID_BYTES: usize = 16;
const SPAN_ID_BYTES: usize = 8;
const PERCENTILES: [(f64, &str); 3] = [(0.50, "p50"), (0.90, "p90"), (0.99, "p99")];

/// OpenTelemetry allows instrument names of at most 255 characters. Every point's event carries
/// its metric's name, so without a bound memory grows with name length x points.
pub const MAX_METRIC_NAME_BYTES: usize = 255;

/// Quantiles read per summary point. Each becomes an event carrying the point's attributes, so
/// without a bound memory grows with attributes x quantiles; real summaries carry a handful.
pub const MAX_SUMMARY_QUANTILES: usize = 64;

/// One event per span, at the span's start time.
pub fn traces_to_events(req: &ExportTraceServiceRequest) -> Result<Vec<Event>, DecodeError> {
    let total = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let mut out = Vec::with_capacity(total);
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let resource = Arc::new(map_resource(rs.resource.as_ref()));
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (k, span) in ss.spans.iter().enumerate() {
                let record = || format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{k}]");
                out.push(span_to_event(span, &resource, record)?);
            }
        }
    }
    Ok(out)
}

fn span_to_event(
    span: &Span,
    resource: &Arc<Resource>,
    record: impl Fn() -> String,
) -> Result<Event, DecodeError> {
    let trace_id = hex_id(&span.trace_id, TRACE_ID_BYTES, &record, "traceId")?;
    let span_id = hex_id(&span.span_id, SPAN_ID_BYTES, &record, "spanId")?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(hex_id(
            &span.parent_span_id,
            SPAN_ID_BYTES,
            &record,
            "parentSpanId",
        )?)
    };
    let start = nanos(span.start_time_unix_nano, &record, "startTimeUnixNano")?;
    let end = nanos(span.end_time_unix_nano, &record, "endTimeUnixNano")?;
    if end < start {
        return Err(DecodeError::invalid(
            record(),
            "endTimeUnixNano",
            format!("end time {end} is before start time {start}"),
        ));
    }
    let kind = match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        // Unknown future kinds read as unspecified rather than failing the batch.
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    };
    let status = span.status.as_ref();
    let is_error = status.is_some_and(|s| s.code == StatusCode::Error as i32);
    let error_type = if is_error {
        let exception_type = span
            .events
            .iter()
            .find(|e| e.name == "exception")
            .and_then(|e| e.attributes.iter().find(|kv| kv.key == "exception.type"))
            .map(|kv| any_value_text(kv.value.as_ref()))
            .filter(|t| !t.is_empty());
        exception_type.or_else(|| status.map(|s| s.message.clone()).filter(|m| !m.is_empty()))
    } else {
        None
    };
    Ok(Event {
        time: start,
        resource: Arc::clone(resource),
        body: EventBody::Span(SpanEvent {
            trace_id,
            span_id,
            parent_span_id,
            name: span.name.clone(),
            kind: kind.to_string(),
            duration_ns: end - start,
            is_error,
            error_type,
            attributes: attributes_map(&span.attributes),
        }),
    })
}

/// One event per log record, at its timestamp (or observed timestamp when the source had none).
pub fn logs_to_events(req: &ExportLogsServiceRequest) -> Result<Vec<Event>, DecodeError> {
    let total = req
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum();
    let mut out = Vec::with_capacity(total);
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let resource = Arc::new(map_resource(rl.resource.as_ref()));
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            for (k, log) in sl.log_records.iter().enumerate() {
                let record = || format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{k}]");
                let (raw_time, field) = if log.time_unix_nano != 0 {
                    (log.time_unix_nano, "timeUnixNano")
                } else {
                    (log.observed_time_unix_nano, "observedTimeUnixNano")
                };
                let time = nanos(raw_time, &record, field)?;
                let trace_id = optional_hex_id(&log.trace_id, TRACE_ID_BYTES, &record, "traceId")?;
                let span_id = optional_hex_id(&log.span_id, SPAN_ID_BYTES, &record, "spanId")?;
                let level = LogLevel::from_severity_number(log.severity_number)
                    .or_else(|| LogLevel::from_text(&log.severity_text));
                out.push(Event {
                    time,
                    resource: Arc::clone(&resource),
                    body: EventBody::Log(LogEvent {
                        level,
                        body: any_value_text(log.body.as_ref()),
                        trace_id,
                        span_id,
                        attributes: attributes_map(&log.attributes),
                        template: None,
                    }),
                });
            }
        }
    }
    Ok(out)
}

/// Gauges and sums give one point per data point; histograms and summaries are flattened into
/// `<name>.count`, `<name>.sum` and `<name>.p<q>` series. Points flagged "no recorded value" and
/// NaN values are skipped.
pub fn metrics_to_events(req: &ExportMetricsServiceRequest) -> Result<Vec<Event>, DecodeError> {
    let mut out = Vec::new();
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let resource = Arc::new(map_resource(rm.resource.as_ref()));
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            for (mi, m) in sm.metrics.iter().enumerate() {
                let mut sink = PointSink {
                    out: &mut out,
                    resource: &resource,
                };
                let base = || format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                convert_metric(m, &base, &mut sink)?;
            }
        }
    }
    Ok(out)
}

struct PointSink<'a> {
    out: &'a mut Vec<Event>,
    resource: &'a Arc<Resource>,
}

impl PointSink<'_> {
    fn push(
        &mut self,
        time: UnixNanos,
        name: String,
        value: f64,
        attributes: &BTreeMap<String, String>,
    ) {
        if value.is_nan() {
            return;
        }
        self.out.push(Event {
            time,
            resource: Arc::clone(self.resource),
            body: EventBody::Metric(MetricPoint {
                name,
                value,
                attributes: attributes.clone(),
            }),
        });
    }
}

fn no_recorded_value(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

/// A point's event time: its timestamp, or its start when a producer left the timestamp unset.
fn point_time(
    time: u64,
    start: u64,
    record: &impl Fn() -> String,
) -> Result<UnixNanos, DecodeError> {
    if time != 0 {
        nanos(time, record, "timeUnixNano")
    } else {
        nanos(start, record, "startTimeUnixNano")
    }
}

fn convert_metric(
    m: &crate::proto::metrics::v1::Metric,
    base: &impl Fn() -> String,
    sink: &mut PointSink,
) -> Result<(), DecodeError> {
    use metric::Data;
    let name = &m.name;
    if name.len() > MAX_METRIC_NAME_BYTES {
        return Err(DecodeError::invalid(
            base(),
            "name",
            format!(
                "metric name of {} bytes is longer than the {MAX_METRIC_NAME_BYTES} OpenTelemetry allows",
                name.len()
            ),
        ));
    }
    match &m.data {
        Some(Data::Gauge(g)) => number_points(name, &g.data_points, "gauge", base, sink),
        Some(Data::Sum(s)) => number_points(name, &s.data_points, "sum", base, sink),
        Some(Data::Histogram(h)) => {
            for (i, dp) in h.data_points.iter().enumerate() {
                let record = || format!("{}.histogram.dataPoints[{i}]", base());
                histogram_point(name, dp, &record, sink)?;
            }
            Ok(())
        }
        Some(Data::ExponentialHistogram(h)) => {
            for (i, dp) in h.data_points.iter().enumerate() {
                if no_recorded_value(dp.flags) {
                    continue;
                }
                let record = || format!("{}.exponentialHistogram.dataPoints[{i}]", base());
                let time = point_time(dp.time_unix_nano, dp.start_time_unix_nano, &record)?;
                let attrs = attributes_map(&dp.attributes);
                sink.push(time, format!("{name}.count"), dp.count as f64, &attrs);
                if let Some(sum) = dp.sum {
                    sink.push(time, format!("{name}.sum"), sum, &attrs);
                }
            }
            Ok(())
        }
        Some(Data::Summary(s)) => {
            for (i, dp) in s.data_points.iter().enumerate() {
                if no_recorded_value(dp.flags) {
                    continue;
                }
                let record = || format!("{}.summary.dataPoints[{i}]", base());
                if dp.quantile_values.len() > MAX_SUMMARY_QUANTILES {
                    return Err(DecodeError::invalid(
                        record(),
                        "quantileValues",
                        format!(
                            "{} quantiles, more than the {MAX_SUMMARY_QUANTILES} read per point",
                            dp.quantile_values.len()
                        ),
                    ));
                }
                let time = point_time(dp.time_unix_nano, dp.start_time_unix_nano, &record)?;
                let attrs = attributes_map(&dp.attributes);
                sink.push(time, format!("{name}.count"), dp.count as f64, &attrs);
                sink.push(time, format!("{name}.sum"), dp.sum, &attrs);
                for q in &dp.quantile_values {
                    if !(0.0..=1.0).contains(&q.quantile) {
                        return Err(DecodeError::invalid(
                            record(),
                            "quantileValues",
                            format!("quantile {} is outside [0, 1]", q.quantile),
                        ));
                    }
                    sink.push(
                        time,
                        format!("{name}.{}", quantile_suffix(q.quantile)),
                        q.value,
                        &attrs,
                    );
                }
            }
            Ok(())
        }
        // A metric without data carries nothing to detect on.
        None => Ok(()),
    }
}

fn number_points(
    name: &str,
    points: &[crate::proto::metrics::v1::NumberDataPoint],
    kind: &str,
    base: &impl Fn() -> String,
    sink: &mut PointSink,
) -> Result<(), DecodeError> {
    for (i, dp) in points.iter().enumerate() {
        if no_recorded_value(dp.flags) {
            continue;
        }
        let value = match dp.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(n)) => n as f64,
            None => continue,
        };
        let record = || format!("{}.{kind}.dataPoints[{i}]", base());
        let time = point_time(dp.time_unix_nano, dp.start_time_unix_nano, &record)?;
        sink.push(
            time,
            name.to_string(),
            value,
            &attributes_map(&dp.attributes),
        );
    }
    Ok(())
}

fn histogram_point(
    name: &str,
    dp: &HistogramDataPoint,
    record: &impl Fn() -> String,
    sink: &mut PointSink,
) -> Result<(), DecodeError> {
    if no_recorded_value(dp.flags) {
        return Ok(());
    }
    let bounds = &dp.explicit_bounds;
    let counts = &dp.bucket_counts;
    if !counts.is_empty() && counts.len() != bounds.len() + 1 {
        return Err(DecodeError::invalid(
            record(),
            "bucketCounts",
            format!(
                "expected {} buckets for {} explicit bounds, got {}",
                bounds.len() + 1,
                bounds.len(),
                counts.len()
            ),
        ));
    }
    if bounds
        .windows(2)
        .any(|w| w[0] >= w[1] || w[0].is_nan() || w[1].is_nan())
    {
        return Err(DecodeError::invalid(
            record(),
            "explicitBounds",
            "bounds must be strictly increasing",
        ));
    }
    let time = point_time(dp.time_unix_nano, dp.start_time_unix_nano, record)?;
    let attrs = attributes_map(&dp.attributes);
    sink.push(time, format!("{name}.count"), dp.count as f64, &attrs);
    if let Some(sum) = dp.sum {
        sink.push(time, format!("{name}.sum"), sum, &attrs);
    }
    for (q, suffix) in PERCENTILES {
        if let Some(v) = histogram_quantile(q, bounds, counts, dp.min, dp.max) {
            sink.push(time, format!("{name}.{suffix}"), v, &attrs);
        }
    }
    Ok(())
}

/// Estimates quantile `q` from explicit-bucket counts by linear interpolation inside the bucket
/// holding the rank, as Prometheus' `histogram_quantile` does. The open-ended first and last
/// buckets are closed with the point's min/max when present, else with 0 / the last bound.
pub(crate) fn histogram_quantile(
    q: f64,
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
) -> Option<f64> {
    if bounds.is_empty() || counts.len() != bounds.len() + 1 {
        return None;
    }
    let total = counts.iter().fold(0u64, |acc, c| acc.saturating_add(*c));
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        let through = below.saturating_add(count);
        if count > 0 && through as f64 >= rank {
            let (lower, upper) = if i == 0 {
                let upper = bounds[0];
                let lower = min.unwrap_or(if upper > 0.0 { 0.0 } else { upper });
                (lower.min(upper), upper)
            } else if i == bounds.len() {
                let lower = bounds[i - 1];
                (lower, max.unwrap_or(lower).max(lower))
            } else {
                (bounds[i - 1], bounds[i])
            };
            let fraction = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * fraction);
        }
        below = through;
    }
    None
}

/// `0.5` -> `p50`, `0.999` -> `p99.9`.
fn quantile_suffix(q: f64) -> String {
    // Round away float noise such as 0.999 * 100 = 99.89999999999999.
    let percent = (q * 100.0 * 1e6).round() / 1e6;
    format!("p{percent}")
}

// ---- shared helpers ------------------------------------------------------------------------

/// The OTLP resource reduced to what correlation needs, keeping every attribute as a string.
pub(crate) fn map_resource(resource: Option<&ProtoResource>) -> Resource {
    let attributes = resource
        .map(|r| attributes_map(&r.attributes))
        .unwrap_or_default();
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| attributes.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    Resource {
        service: pick(&["service.name"]).unwrap_or_else(|| Resource::UNKNOWN_SERVICE.to_string()),
        environment: pick(&["deployment.environment.name", "deployment.environment"])
            .unwrap_or_else(|| Resource::DEFAULT_ENVIRONMENT.to_string()),
        instance: pick(&["k8s.pod.name", "host.name"]),
        attributes,
    }
}

/// Attributes flattened to strings; on duplicate keys the last wins.
pub(crate) fn attributes_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value_text(kv.value.as_ref())))
        .collect()
}

/// Strings verbatim, scalars in their usual text form, bytes as base64, arrays and maps as JSON.
pub(crate) fn any_value_text(value: Option<&AnyValue>) -> String {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(V::StringValue(s)) => s.clone(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        Some(V::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other) => any_value_json(other).to_string(),
    }
}

fn any_value_json(value: &any_value::Value) -> serde_json::Value {
    use any_value::Value as V;
    use serde_json::Value as J;
    match value {
        V::StringValue(s) => J::String(s.clone()),
        V::BoolValue(b) => J::Bool(*b),
        V::IntValue(i) => J::from(*i),
        // JSON has no NaN/Infinity: keep them readable as strings.
        V::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(d.to_string())),
        V::BytesValue(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        V::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map(any_value_json).unwrap_or(J::Null))
                .collect(),
        ),
        V::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map(any_value_json)
                            .unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
    }
}

fn hex_id(
    bytes: &[u8],
    expected: usize,
    record: &impl Fn() -> String,
    field: &str,
) -> Result<String, DecodeError> {
    if bytes.len() != expected {
        return Err(DecodeError::invalid(
            record(),
            field,
            format!("expected {expected} bytes, got {}", bytes.len()),
        ));
    }
    Ok(hex::encode(bytes))
}

fn optional_hex_id(
    bytes: &[u8],
    expected: usize,
    record: &impl Fn() -> String,
    field: &str,
) -> Result<Option<String>, DecodeError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        hex_id(bytes, expected, record, field).map(Some)
    }
}

fn nanos(value: u64, record: &impl Fn() -> String, field: &str) -> Result<UnixNanos, DecodeError> {
    UnixNanos::try_from(value).map_err(|_| {
        DecodeError::invalid(
            record(),
            field,
            format!("timestamp {value} is past the year 2262"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket_holding_the_rank() {
        // 10 values: 1 in (0,1], 2 in (1,5], 7 in (5,10].
        let bounds = [1.0, 5.0, 10.0];
        let counts = [1, 2, 7, 0];
        // p50: rank 5 -> 2 of the 7 values in (5,10] -> 5 + 5 * 2/7.
        let p50 = histogram_quantile(0.5, &bounds, &counts, None, None).unwrap_or(f64::NAN);
        assert!((p50 - (5.0 + 5.0 * 2.0 / 7.0)).abs() < 1e-9, "{p50}");
        // p0 lands on the lower edge of the first non-empty bucket.
        assert_eq!(
            histogram_quantile(0.0, &bounds, &counts, None, None),
            Some(0.0)
        );
    }

    #[test]
    fn quantile_in_the_overflow_bucket_uses_max_when_known() {
        let bounds = [1.0];
        let counts = [0, 4];
        assert_eq!(
            histogram_quantile(1.0, &bounds, &counts, None, Some(3.0)),
            Some(3.0)
        );
        assert_eq!(
            histogram_quantile(1.0, &bounds, &counts, None, None),
            Some(1.0)
        );
    }

    #[test]
    fn quantile_of_an_empty_or_boundless_histogram_is_none() {
        assert_eq!(histogram_quantile(0.5, &[1.0], &[0, 0], None, None), None);
        assert_eq!(histogram_quantile(0.5, &[], &[5], None, None), None);
    }

    #[test]
    fn quantile_suffix_drops_float_noise() {
        assert_eq!(quantile_suffix(0.5), "p50");
        assert_eq!(quantile_suffix(0.999), "p99.9");
        assert_eq!(quantile_suffix(1.0), "p100");
    }

    #[test]
    fn structured_values_flatten_to_json() {
        use any_value::Value as V;
        let kv = AnyValue {
            value: Some(V::KvlistValue(crate::proto::common::v1::KeyValueList {
                values: vec![KeyValue {
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(V::IntValue(1)),
                    }),
                }],
            })),
        };
        assert_eq!(any_value_text(Some(&kv)), r#"{"a":1}"#);
        assert_eq!(
            any_value_text(Some(&AnyValue {
                value: Some(V::DoubleValue(1.5))
            })),
            "1.5"
        );
    }

    #[test]
    fn resource_falls_back_to_defaults_and_host_name() {
        let res = ProtoResource {
            attributes: vec![KeyValue {
                key: "host.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("vm-1".into())),
                }),
            }],
            ..Default::default()
        };
        let mapped = map_resource(Some(&res));
        assert_eq!(mapped.service, "unknown_service");
        assert_eq!(mapped.environment, "default");
        assert_eq!(mapped.instance.as_deref(), Some("vm-1"));
        assert_eq!(
            mapped.attributes.get("host.name").map(String::as_str),
            Some("vm-1")
        );
    }
}
