//! `opentelemetry-proto` messages -> OTLP/JSON, the mirror of `otlp_json`.
//!
//! Hand-written for the same reason as the reader: the crate's serde derives write exemplar values
//! as a nested `"value": {"asDouble": ..}` object, non-finite doubles as `null` and `asInt` as a
//! number, none of which the Collector writes. Output follows the Collector: camelCase keys, hex
//! ids, 64-bit integers as decimal strings, enums as integers, `"NaN"`/`"Infinity"` for non-finite
//! doubles, and proto3 default values left out (except the top-level `resource*` array, which
//! readers use to tell the signal).

use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::proto::logs::v1::{LogRecord, LogsData, ResourceLogs};
use crate::proto::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point, Exemplar,
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, MetricsData, NumberDataPoint,
    ResourceMetrics, SummaryDataPoint,
};
use crate::proto::resource::v1::Resource;
use crate::proto::trace::v1::{span, ResourceSpans, Span, Status, TracesData};
use base64::Engine as _;
use serde_json::{Map, Value};

/// OTLP messages that [`crate::to_json`] can write: the three export requests and the
/// `TracesData` / `LogsData` / `MetricsData` file formats (same JSON shape).
pub trait ToOtlpJson {
    fn to_otlp_json(&self) -> Value;
}

impl ToOtlpJson for ExportTraceServiceRequest {
    fn to_otlp_json(&self) -> Value {
        top(
            "resourceSpans",
            self.resource_spans.iter().map(resource_spans),
        )
    }
}

impl ToOtlpJson for TracesData {
    fn to_otlp_json(&self) -> Value {
        top(
            "resourceSpans",
            self.resource_spans.iter().map(resource_spans),
        )
    }
}

impl ToOtlpJson for ExportLogsServiceRequest {
    fn to_otlp_json(&self) -> Value {
        top("resourceLogs", self.resource_logs.iter().map(resource_logs))
    }
}

impl ToOtlpJson for LogsData {
    fn to_otlp_json(&self) -> Value {
        top("resourceLogs", self.resource_logs.iter().map(resource_logs))
    }
}

impl ToOtlpJson for ExportMetricsServiceRequest {
    fn to_otlp_json(&self) -> Value {
        top(
            "resourceMetrics",
            self.resource_metrics.iter().map(resource_metrics),
        )
    }
}

impl ToOtlpJson for MetricsData {
    fn to_otlp_json(&self) -> Value {
        top(
            "resourceMetrics",
            self.resource_metrics.iter().map(resource_metrics),
        )
    }
}

fn top(key: &str, items: impl Iterator<Item = Value>) -> Value {
    let mut map = Map::new();
    map.insert(key.to_string(), Value::Array(items.collect()));
    Value::Object(map)
}

/// Builds a JSON object, leaving proto3 defaults out.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_string(), value);
        self
    }

    fn string(self, key: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.put(key, Value::from(v))
        }
    }

    /// 64-bit integers go out as strings: JSON numbers lose precision past 2^53.
    fn u64(self, key: &str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.put(key, Value::from(v.to_string()))
        }
    }

    fn u32(self, key: &str, v: u32) -> Self {
        if v == 0 {
            self
        } else {
            self.put(key, Value::from(v))
        }
    }

    fn i32(self, key: &str, v: i32) -> Self {
        if v == 0 {
            self
        } else {
            self.put(key, Value::from(v))
        }
    }

    fn f64(self, key: &str, v: f64) -> Self {
        if v == 0.0 {
            self
        } else {
            self.put(key, double(v))
        }
    }

    fn opt_f64(self, key: &str, v: Option<f64>) -> Self {
        match v {
            Some(v) => self.put(key, double(v)),
            None => self,
        }
    }

    fn bool(self, key: &str, v: bool) -> Self {
        if v {
            self.put(key, Value::Bool(true))
        } else {
            self
        }
    }

    fn hex(self, key: &str, bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            self
        } else {
            self.put(key, Value::from(hex::encode(bytes)))
        }
    }

    fn array<T>(self, key: &str, items: &[T], write: fn(&T) -> Value) -> Self {
        if items.is_empty() {
            self
        } else {
            self.put(key, Value::Array(items.iter().map(write).collect()))
        }
    }

    fn attributes(self, key: &str, kvs: &[KeyValue]) -> Self {
        self.array(key, kvs, key_value)
    }

    fn object<T>(self, key: &str, v: Option<&T>, write: fn(&T) -> Value) -> Self {
        match v {
            Some(v) => self.put(key, write(v)),
            None => self,
        }
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn double(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::from("NaN"),
        None if v > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

fn key_value(kv: &KeyValue) -> Value {
    Obj::default()
        .put("key", Value::from(kv.key.as_str()))
        .object("value", kv.value.as_ref(), any_value)
        .done()
}

fn any_value(v: &AnyValue) -> Value {
    use any_value::Value as V;
    // A oneof member is written even when it holds its type's default: it is the value.
    let o = Obj::default();
    match &v.value {
        None => o,
        Some(V::StringValue(s)) => o.put("stringValue", Value::from(s.as_str())),
        Some(V::BoolValue(b)) => o.put("boolValue", Value::Bool(*b)),
        Some(V::IntValue(i)) => o.put("intValue", Value::from(i.to_string())),
        Some(V::DoubleValue(d)) => o.put("doubleValue", double(*d)),
        Some(V::ArrayValue(a)) => o.put(
            "arrayValue",
            Obj::default().array("values", &a.values, any_value).done(),
        ),
        Some(V::KvlistValue(kv)) => o.put(
            "kvlistValue",
            Obj::default().attributes("values", &kv.values).done(),
        ),
        Some(V::BytesValue(b)) => o.put(
            "bytesValue",
            Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
    .done()
}

fn resource(r: &Resource) -> Value {
    Obj::default()
        .attributes("attributes", &r.attributes)
        .u32("droppedAttributesCount", r.dropped_attributes_count)
        .done()
}

fn scope(s: &InstrumentationScope) -> Value {
    Obj::default()
        .string("name", &s.name)
        .string("version", &s.version)
        .attributes("attributes", &s.attributes)
        .u32("droppedAttributesCount", s.dropped_attributes_count)
        .done()
}

// ---- traces --------------------------------------------------------------------------------

fn resource_spans(rs: &ResourceSpans) -> Value {
    let scopes: Vec<Value> = rs
        .scope_spans
        .iter()
        .map(|ss| {
            Obj::default()
                .object("scope", ss.scope.as_ref(), scope)
                .array("spans", &ss.spans, span)
                .string("schemaUrl", &ss.schema_url)
                .done()
        })
        .collect();
    Obj::default()
        .object("resource", rs.resource.as_ref(), resource)
        .put("scopeSpans", Value::Array(scopes))
        .string("schemaUrl", &rs.schema_url)
        .done()
}

fn span(s: &Span) -> Value {
    Obj::default()
        .hex("traceId", &s.trace_id)
        .hex("spanId", &s.span_id)
        .string("traceState", &s.trace_state)
        .hex("parentSpanId", &s.parent_span_id)
        .u32("flags", s.flags)
        .string("name", &s.name)
        .i32("kind", s.kind)
        .u64("startTimeUnixNano", s.start_time_unix_nano)
        .u64("endTimeUnixNano", s.end_time_unix_nano)
        .attributes("attributes", &s.attributes)
        .u32("droppedAttributesCount", s.dropped_attributes_count)
        .array("events", &s.events, span_event)
        .u32("droppedEventsCount", s.dropped_events_count)
        .array("links", &s.links, span_link)
        .u32("droppedLinksCount", s.dropped_links_count)
        .object("status", s.status.as_ref(), status)
        .done()
}

fn span_event(e: &span::Event) -> Value {
    Obj::default()
        .u64("timeUnixNano", e.time_unix_nano)
        .string("name", &e.name)
        .attributes("attributes", &e.attributes)
        .u32("droppedAttributesCount", e.dropped_attributes_count)
        .done()
}

fn span_link(l: &span::Link) -> Value {
    Obj::default()
        .hex("traceId", &l.trace_id)
        .hex("spanId", &l.span_id)
        .string("traceState", &l.trace_state)
        .attributes("attributes", &l.attributes)
        .u32("droppedAttributesCount", l.dropped_attributes_count)
        .u32("flags", l.flags)
        .done()
}

fn status(s: &Status) -> Value {
    Obj::default()
        .string("message", &s.message)
        .i32("code", s.code)
        .done()
}

// ---- logs ----------------------------------------------------------------------------------

fn resource_logs(rl: &ResourceLogs) -> Value {
    let scopes: Vec<Value> = rl
        .scope_logs
        .iter()
        .map(|sl| {
            Obj::default()
                .object("scope", sl.scope.as_ref(), scope)
                .array("logRecords", &sl.log_records, log_record)
                .string("schemaUrl", &sl.schema_url)
                .done()
        })
        .collect();
    Obj::default()
        .object("resource", rl.resource.as_ref(), resource)
        .put("scopeLogs", Value::Array(scopes))
        .string("schemaUrl", &rl.schema_url)
        .done()
}

fn log_record(r: &LogRecord) -> Value {
    Obj::default()
        .u64("timeUnixNano", r.time_unix_nano)
        .u64("observedTimeUnixNano", r.observed_time_unix_nano)
        .i32("severityNumber", r.severity_number)
        .string("severityText", &r.severity_text)
        .object("body", r.body.as_ref(), any_value)
        .attributes("attributes", &r.attributes)
        .u32("droppedAttributesCount", r.dropped_attributes_count)
        .u32("flags", r.flags)
        .hex("traceId", &r.trace_id)
        .hex("spanId", &r.span_id)
        .string("eventName", &r.event_name)
        .done()
}

// ---- metrics -------------------------------------------------------------------------------

fn resource_metrics(rm: &ResourceMetrics) -> Value {
    let scopes: Vec<Value> = rm
        .scope_metrics
        .iter()
        .map(|sm| {
            Obj::default()
                .object("scope", sm.scope.as_ref(), scope)
                .array("metrics", &sm.metrics, metric)
                .string("schemaUrl", &sm.schema_url)
                .done()
        })
        .collect();
    Obj::default()
        .object("resource", rm.resource.as_ref(), resource)
        .put("scopeMetrics", Value::Array(scopes))
        .string("schemaUrl", &rm.schema_url)
        .done()
}

fn metric(m: &Metric) -> Value {
    use metric::Data;
    let o = Obj::default()
        .string("name", &m.name)
        .string("description", &m.description)
        .string("unit", &m.unit)
        .attributes("metadata", &m.metadata);
    match &m.data {
        None => o,
        Some(Data::Gauge(g)) => o.put(
            "gauge",
            Obj::default()
                .array("dataPoints", &g.data_points, number_point)
                .done(),
        ),
        Some(Data::Sum(s)) => o.put(
            "sum",
            Obj::default()
                .array("dataPoints", &s.data_points, number_point)
                .i32("aggregationTemporality", s.aggregation_temporality)
                .bool("isMonotonic", s.is_monotonic)
                .done(),
        ),
        Some(Data::Histogram(h)) => o.put(
            "histogram",
            Obj::default()
                .array("dataPoints", &h.data_points, histogram_point)
                .i32("aggregationTemporality", h.aggregation_temporality)
                .done(),
        ),
        Some(Data::ExponentialHistogram(h)) => o.put(
            "exponentialHistogram",
            Obj::default()
                .array("dataPoints", &h.data_points, exponential_point)
                .i32("aggregationTemporality", h.aggregation_temporality)
                .done(),
        ),
        Some(Data::Summary(s)) => o.put(
            "summary",
            Obj::default()
                .array("dataPoints", &s.data_points, summary_point)
                .done(),
        ),
    }
    .done()
}

fn number_point(p: &NumberDataPoint) -> Value {
    use number_data_point::Value as V;
    let o = Obj::default()
        .attributes("attributes", &p.attributes)
        .u64("startTimeUnixNano", p.start_time_unix_nano)
        .u64("timeUnixNano", p.time_unix_nano)
        .array("exemplars", &p.exemplars, exemplar)
        .u32("flags", p.flags);
    match p.value {
        None => o,
        Some(V::AsDouble(d)) => o.put("asDouble", double(d)),
        Some(V::AsInt(i)) => o.put("asInt", Value::from(i.to_string())),
    }
    .done()
}

fn histogram_point(p: &HistogramDataPoint) -> Value {
    Obj::default()
        .attributes("attributes", &p.attributes)
        .u64("startTimeUnixNano", p.start_time_unix_nano)
        .u64("timeUnixNano", p.time_unix_nano)
        .u64("count", p.count)
        .opt_f64("sum", p.sum)
        .array("bucketCounts", &p.bucket_counts, |c| {
            Value::from(c.to_string())
        })
        .array("explicitBounds", &p.explicit_bounds, |b| double(*b))
        .array("exemplars", &p.exemplars, exemplar)
        .u32("flags", p.flags)
        .opt_f64("min", p.min)
        .opt_f64("max", p.max)
        .done()
}

fn exponential_point(p: &ExponentialHistogramDataPoint) -> Value {
    Obj::default()
        .attributes("attributes", &p.attributes)
        .u64("startTimeUnixNano", p.start_time_unix_nano)
        .u64("timeUnixNano", p.time_unix_nano)
        .u64("count", p.count)
        .opt_f64("sum", p.sum)
        .i32("scale", p.scale)
        .u64("zeroCount", p.zero_count)
        .object("positive", p.positive.as_ref(), buckets)
        .object("negative", p.negative.as_ref(), buckets)
        .u32("flags", p.flags)
        .array("exemplars", &p.exemplars, exemplar)
        .opt_f64("min", p.min)
        .opt_f64("max", p.max)
        .f64("zeroThreshold", p.zero_threshold)
        .done()
}

fn buckets(b: &Buckets) -> Value {
    Obj::default()
        .i32("offset", b.offset)
        .array("bucketCounts", &b.bucket_counts, |c| {
            Value::from(c.to_string())
        })
        .done()
}

fn summary_point(p: &SummaryDataPoint) -> Value {
    Obj::default()
        .attributes("attributes", &p.attributes)
        .u64("startTimeUnixNano", p.start_time_unix_nano)
        .u64("timeUnixNano", p.time_unix_nano)
        .u64("count", p.count)
        .f64("sum", p.sum)
        .array("quantileValues", &p.quantile_values, |q| {
            Obj::default()
                .f64("quantile", q.quantile)
                .f64("value", q.value)
                .done()
        })
        .u32("flags", p.flags)
        .done()
}

fn exemplar(e: &Exemplar) -> Value {
    use exemplar::Value as V;
    let o = Obj::default()
        .attributes("filteredAttributes", &e.filtered_attributes)
        .u64("timeUnixNano", e.time_unix_nano)
        .hex("spanId", &e.span_id)
        .hex("traceId", &e.trace_id);
    match e.value {
        None => o,
        Some(V::AsDouble(d)) => o.put("asDouble", double(d)),
        Some(V::AsInt(i)) => o.put("asInt", Value::from(i.to_string())),
    }
    .done()
}
