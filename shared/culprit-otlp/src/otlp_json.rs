//! OTLP/JSON -> `opentelemetry-proto` messages.
//!
//! Why not `serde_json::from_slice::<ExportMetricsServiceRequest>` via the crate's `with-serde`
//! derives? Against Collector output they lose data without an error: a fixed64 `count` written as
//! a string fails inside the `#[serde(flatten)]` oneof, so every histogram, exponential histogram
//! and summary comes back as `data: None`; `"asInt": "7"` becomes no value; `"NaN"` doubles vanish.
//! They also reject int64s written as JSON numbers and empty `AnyValue`s (`{}`). So we parse into
//! `serde_json::Value` (syntax errors keep their path via serde_path_to_error) and build the proto
//! messages here, following the proto3 JSON mapping as OTLP profiles it: 64-bit integers as
//! strings or numbers, doubles as numbers or `"NaN"`/`"Infinity"`/`"-Infinity"`, enums as numbers
//! or names, trace/span ids as hex, bytes as base64, `null` as absent, unknown keys ignored.

use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::proto::metrics::v1::{
    exemplar, exponential_histogram_data_point, metric, number_data_point, summary_data_point,
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use crate::proto::resource::v1::Resource;
use crate::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use crate::DecodeError;
use base64::Engine as _;
use culprit_core::SourceKind;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// A type or format error at a JSON path.
pub(crate) struct JsonError {
    pub path: String,
    pub reason: String,
}

type R<T> = Result<T, JsonError>;

/// Parses `bytes` as one JSON document and builds a message from it with `build`.
pub(crate) fn parse<T>(
    signal: SourceKind,
    bytes: &[u8],
    build: fn(&Value) -> R<T>,
) -> Result<T, DecodeError> {
    let value = parse_value(signal, bytes)?;
    build(&value).map_err(|e| e.into_decode_error(signal))
}

/// Parses one JSON document, naming the JSON path of a syntax error.
pub(crate) fn parse_value(signal: SourceKind, bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: Value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| DecodeError::from_path_error(signal, e))?;
    de.end()
        .map_err(|e| DecodeError::malformed_json(signal, "", e.to_string()))?;
    Ok(value)
}

impl JsonError {
    pub(crate) fn into_decode_error(self, signal: SourceKind) -> DecodeError {
        DecodeError::malformed_json(signal, self.path, self.reason)
    }
}

// ---- paths ---------------------------------------------------------------------------------

/// A JSON path kept as a linked list on the stack; rendered only when an error needs it.
#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    pub(crate) const ROOT: Path<'static> = Path {
        parent: None,
        seg: Seg::Root,
    };

    fn key<'b>(&'b self, key: &'b str) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    fn index<'b>(&'b self, i: usize) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    fn err(&self, reason: impl Into<String>) -> JsonError {
        JsonError {
            path: self.render(),
            reason: reason.into(),
        }
    }

    fn type_err(&self, expected: &str, got: &Value) -> JsonError {
        self.err(format!("expected {expected}, got {}", kind_of(got)))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- scalars -------------------------------------------------------------------------------

fn as_u64(v: &Value, p: &Path) -> R<u64> {
    const EXPECTED: &str = "an unsigned integer (number or decimal string)";
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| p.err(format!("expected {EXPECTED}, got {n}"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| p.err(format!("expected {EXPECTED}, got \"{s}\""))),
        other => Err(p.type_err(EXPECTED, other)),
    }
}

fn as_i64(v: &Value, p: &Path) -> R<i64> {
    const EXPECTED: &str = "an integer (number or decimal string)";
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| p.err(format!("expected {EXPECTED}, got {n}"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| p.err(format!("expected {EXPECTED}, got \"{s}\""))),
        other => Err(p.type_err(EXPECTED, other)),
    }
}

fn as_u32(v: &Value, p: &Path) -> R<u32> {
    let n = as_u64(v, p)?;
    u32::try_from(n).map_err(|_| p.err(format!("{n} does not fit in uint32")))
}

fn as_i32(v: &Value, p: &Path) -> R<i32> {
    let n = as_i64(v, p)?;
    i32::try_from(n).map_err(|_| p.err(format!("{n} does not fit in int32")))
}

fn as_f64(v: &Value, p: &Path) -> R<f64> {
    const EXPECTED: &str = "a number";
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| p.err(format!("expected {EXPECTED}, got {n}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .trim()
                .parse()
                .map_err(|_| p.err(format!("expected {EXPECTED}, got \"{s}\""))),
        },
        other => Err(p.type_err(EXPECTED, other)),
    }
}

fn as_bool(v: &Value, p: &Path) -> R<bool> {
    v.as_bool().ok_or_else(|| p.type_err("a boolean", v))
}

fn as_string(v: &Value, p: &Path) -> R<String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| p.type_err("a string", v))
}

/// Trace and span ids: OTLP/JSON writes them as hex, not proto3's base64.
fn as_hex(v: &Value, p: &Path) -> R<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| p.type_err("a hex string", v))?;
    hex::decode(s).map_err(|e| p.err(format!("invalid hex id \"{s}\": {e}")))
}

fn as_base64(v: &Value, p: &Path) -> R<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let s = v.as_str().ok_or_else(|| p.type_err("a base64 string", v))?;
    // proto3 JSON accepts standard and URL-safe alphabets, padded or not.
    let trimmed = s.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| p.err(format!("invalid base64: {e}")))
}

fn as_enum(v: &Value, p: &Path, by_name: fn(&str) -> Option<i32>) -> R<i32> {
    match v {
        Value::String(s) => match by_name(s) {
            Some(n) => Ok(n),
            None => s
                .trim()
                .parse()
                .map_err(|_| p.err(format!("unknown enum value \"{s}\""))),
        },
        other => as_i32(other, p),
    }
}

// ---- objects -------------------------------------------------------------------------------

struct Obj<'v, 'p> {
    map: &'v Map<String, Value>,
    path: &'p Path<'p>,
}

fn obj<'v, 'p>(v: &'v Value, path: &'p Path<'p>) -> R<Obj<'v, 'p>> {
    match v {
        Value::Object(map) => Ok(Obj { map, path }),
        other => Err(path.type_err("an object", other)),
    }
}

impl<'v> Obj<'v, '_> {
    /// `null` counts as absent, as in proto3 JSON.
    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A scalar field with its proto3 default when absent.
    fn scalar<T: Default>(&self, key: &str, read: fn(&Value, &Path) -> R<T>) -> R<T> {
        match self.get(key) {
            Some(v) => read(v, &self.path.key(key)),
            None => Ok(T::default()),
        }
    }

    fn optional<T>(&self, key: &str, read: fn(&Value, &Path) -> R<T>) -> R<Option<T>> {
        self.get(key)
            .map(|v| read(v, &self.path.key(key)))
            .transpose()
    }

    fn string(&self, key: &str) -> R<String> {
        self.scalar(key, as_string)
    }

    fn u64(&self, key: &str) -> R<u64> {
        self.scalar(key, as_u64)
    }

    fn u32(&self, key: &str) -> R<u32> {
        self.scalar(key, as_u32)
    }

    fn enumeration(&self, key: &str, by_name: fn(&str) -> Option<i32>) -> R<i32> {
        match self.get(key) {
            Some(v) => as_enum(v, &self.path.key(key), by_name),
            None => Ok(0),
        }
    }

    fn array<T>(&self, key: &str, read: fn(&Value, &Path) -> R<T>) -> R<Vec<T>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.path.key(key);
        let items = v.as_array().ok_or_else(|| path.type_err("an array", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| read(item, &path.index(i)))
            .collect()
    }

    fn attributes(&self, key: &str) -> R<Vec<KeyValue>> {
        self.array(key, key_value)
    }
}

// ---- common --------------------------------------------------------------------------------

fn key_value(v: &Value, p: &Path) -> R<KeyValue> {
    let o = obj(v, p)?;
    Ok(KeyValue {
        key: o.string("key")?,
        value: o.optional("value", any_value)?,
    })
}

fn any_value(v: &Value, p: &Path) -> R<AnyValue> {
    use any_value::Value as V;
    let o = obj(v, p)?;
    let value = if let Some(s) = o.optional("stringValue", as_string)? {
        Some(V::StringValue(s))
    } else if let Some(b) = o.optional("boolValue", as_bool)? {
        Some(V::BoolValue(b))
    } else if let Some(i) = o.optional("intValue", as_i64)? {
        Some(V::IntValue(i))
    } else if let Some(d) = o.optional("doubleValue", as_f64)? {
        Some(V::DoubleValue(d))
    } else if let Some(a) = o.optional("arrayValue", array_value)? {
        Some(V::ArrayValue(a))
    } else if let Some(kv) = o.optional("kvlistValue", kvlist_value)? {
        Some(V::KvlistValue(kv))
    } else {
        o.optional("bytesValue", as_base64)?.map(V::BytesValue)
    };
    // `{}` is a legal, empty AnyValue.
    Ok(AnyValue { value })
}

fn array_value(v: &Value, p: &Path) -> R<ArrayValue> {
    Ok(ArrayValue {
        values: obj(v, p)?.array("values", any_value)?,
    })
}

fn kvlist_value(v: &Value, p: &Path) -> R<KeyValueList> {
    Ok(KeyValueList {
        values: obj(v, p)?.attributes("values")?,
    })
}

fn resource(v: &Value, p: &Path) -> R<Resource> {
    let o = obj(v, p)?;
    Ok(Resource {
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
        ..Default::default()
    })
}

fn scope(v: &Value, p: &Path) -> R<InstrumentationScope> {
    let o = obj(v, p)?;
    Ok(InstrumentationScope {
        name: o.string("name")?,
        version: o.string("version")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
    })
}

// ---- traces --------------------------------------------------------------------------------

pub(crate) fn trace_request(v: &Value) -> R<ExportTraceServiceRequest> {
    let root = Path::ROOT;
    Ok(ExportTraceServiceRequest {
        resource_spans: obj(v, &root)?.array("resourceSpans", resource_spans)?,
    })
}

fn resource_spans(v: &Value, p: &Path) -> R<ResourceSpans> {
    let o = obj(v, p)?;
    Ok(ResourceSpans {
        resource: o.optional("resource", resource)?,
        scope_spans: o.array("scopeSpans", scope_spans)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn scope_spans(v: &Value, p: &Path) -> R<ScopeSpans> {
    let o = obj(v, p)?;
    Ok(ScopeSpans {
        scope: o.optional("scope", scope)?,
        spans: o.array("spans", span)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn span(v: &Value, p: &Path) -> R<Span> {
    let o = obj(v, p)?;
    Ok(Span {
        trace_id: o.scalar("traceId", as_hex)?,
        span_id: o.scalar("spanId", as_hex)?,
        trace_state: o.string("traceState")?,
        parent_span_id: o.scalar("parentSpanId", as_hex)?,
        flags: o.u32("flags")?,
        name: o.string("name")?,
        kind: o.enumeration("kind", |s| {
            span::SpanKind::from_str_name(s).map(|k| k as i32)
        })?,
        start_time_unix_nano: o.u64("startTimeUnixNano")?,
        end_time_unix_nano: o.u64("endTimeUnixNano")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
        events: o.array("events", span_event)?,
        dropped_events_count: o.u32("droppedEventsCount")?,
        links: o.array("links", span_link)?,
        dropped_links_count: o.u32("droppedLinksCount")?,
        status: o.optional("status", span_status)?,
    })
}

fn span_event(v: &Value, p: &Path) -> R<span::Event> {
    let o = obj(v, p)?;
    Ok(span::Event {
        time_unix_nano: o.u64("timeUnixNano")?,
        name: o.string("name")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
    })
}

fn span_link(v: &Value, p: &Path) -> R<span::Link> {
    let o = obj(v, p)?;
    Ok(span::Link {
        trace_id: o.scalar("traceId", as_hex)?,
        span_id: o.scalar("spanId", as_hex)?,
        trace_state: o.string("traceState")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
        flags: o.u32("flags")?,
    })
}

fn span_status(v: &Value, p: &Path) -> R<Status> {
    let o = obj(v, p)?;
    Ok(Status {
        message: o.string("message")?,
        code: o.enumeration("code", |s| {
            status::StatusCode::from_str_name(s).map(|c| c as i32)
        })?,
    })
}

// ---- logs ----------------------------------------------------------------------------------

pub(crate) fn logs_request(v: &Value) -> R<ExportLogsServiceRequest> {
    let root = Path::ROOT;
    Ok(ExportLogsServiceRequest {
        resource_logs: obj(v, &root)?.array("resourceLogs", resource_logs)?,
    })
}

fn resource_logs(v: &Value, p: &Path) -> R<ResourceLogs> {
    let o = obj(v, p)?;
    Ok(ResourceLogs {
        resource: o.optional("resource", resource)?,
        scope_logs: o.array("scopeLogs", scope_logs)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn scope_logs(v: &Value, p: &Path) -> R<ScopeLogs> {
    let o = obj(v, p)?;
    Ok(ScopeLogs {
        scope: o.optional("scope", scope)?,
        log_records: o.array("logRecords", log_record)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn log_record(v: &Value, p: &Path) -> R<LogRecord> {
    let o = obj(v, p)?;
    Ok(LogRecord {
        time_unix_nano: o.u64("timeUnixNano")?,
        observed_time_unix_nano: o.u64("observedTimeUnixNano")?,
        severity_number: o.enumeration("severityNumber", |s| {
            SeverityNumber::from_str_name(s).map(|n| n as i32)
        })?,
        severity_text: o.string("severityText")?,
        body: o.optional("body", any_value)?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount")?,
        flags: o.u32("flags")?,
        trace_id: o.scalar("traceId", as_hex)?,
        span_id: o.scalar("spanId", as_hex)?,
        event_name: o.string("eventName")?,
    })
}

// ---- metrics -------------------------------------------------------------------------------

pub(crate) fn metrics_request(v: &Value) -> R<ExportMetricsServiceRequest> {
    let root = Path::ROOT;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: obj(v, &root)?.array("resourceMetrics", resource_metrics)?,
    })
}

fn resource_metrics(v: &Value, p: &Path) -> R<ResourceMetrics> {
    let o = obj(v, p)?;
    Ok(ResourceMetrics {
        resource: o.optional("resource", resource)?,
        scope_metrics: o.array("scopeMetrics", scope_metrics)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn scope_metrics(v: &Value, p: &Path) -> R<ScopeMetrics> {
    let o = obj(v, p)?;
    Ok(ScopeMetrics {
        scope: o.optional("scope", scope)?,
        metrics: o.array("metrics", metric)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn temporality(o: &Obj) -> R<i32> {
    o.enumeration("aggregationTemporality", |s| {
        AggregationTemporality::from_str_name(s).map(|t| t as i32)
    })
}

fn metric(v: &Value, p: &Path) -> R<Metric> {
    use metric::Data;
    let o = obj(v, p)?;
    let data = if let Some(g) = o.optional("gauge", |v, p| {
        Ok(Gauge {
            data_points: obj(v, p)?.array("dataPoints", number_point)?,
        })
    })? {
        Some(Data::Gauge(g))
    } else if let Some(s) = o.optional("sum", |v, p| {
        let o = obj(v, p)?;
        Ok(Sum {
            data_points: o.array("dataPoints", number_point)?,
            aggregation_temporality: temporality(&o)?,
            is_monotonic: o.scalar("isMonotonic", as_bool)?,
        })
    })? {
        Some(Data::Sum(s))
    } else if let Some(h) = o.optional("histogram", |v, p| {
        let o = obj(v, p)?;
        Ok(Histogram {
            data_points: o.array("dataPoints", histogram_point)?,
            aggregation_temporality: temporality(&o)?,
        })
    })? {
        Some(Data::Histogram(h))
    } else if let Some(h) = o.optional("exponentialHistogram", |v, p| {
        let o = obj(v, p)?;
        Ok(ExponentialHistogram {
            data_points: o.array("dataPoints", exponential_point)?,
            aggregation_temporality: temporality(&o)?,
        })
    })? {
        Some(Data::ExponentialHistogram(h))
    } else {
        o.optional("summary", |v, p| {
            Ok(Summary {
                data_points: obj(v, p)?.array("dataPoints", summary_point)?,
            })
        })?
        .map(Data::Summary)
    };
    Ok(Metric {
        name: o.string("name")?,
        description: o.string("description")?,
        unit: o.string("unit")?,
        metadata: o.attributes("metadata")?,
        data,
    })
}

fn number_point(v: &Value, p: &Path) -> R<NumberDataPoint> {
    use number_data_point::Value as V;
    let o = obj(v, p)?;
    let value = match o.optional("asDouble", as_f64)? {
        Some(d) => Some(V::AsDouble(d)),
        None => o.optional("asInt", as_i64)?.map(V::AsInt),
    };
    Ok(NumberDataPoint {
        attributes: o.attributes("attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano")?,
        time_unix_nano: o.u64("timeUnixNano")?,
        exemplars: o.array("exemplars", exemplar)?,
        flags: o.u32("flags")?,
        value,
    })
}

fn histogram_point(v: &Value, p: &Path) -> R<HistogramDataPoint> {
    let o = obj(v, p)?;
    Ok(HistogramDataPoint {
        attributes: o.attributes("attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano")?,
        time_unix_nano: o.u64("timeUnixNano")?,
        count: o.u64("count")?,
        sum: o.optional("sum", as_f64)?,
        bucket_counts: o.array("bucketCounts", as_u64)?,
        explicit_bounds: o.array("explicitBounds", as_f64)?,
        exemplars: o.array("exemplars", exemplar)?,
        flags: o.u32("flags")?,
        min: o.optional("min", as_f64)?,
        max: o.optional("max", as_f64)?,
    })
}

fn exponential_point(v: &Value, p: &Path) -> R<ExponentialHistogramDataPoint> {
    let o = obj(v, p)?;
    Ok(ExponentialHistogramDataPoint {
        attributes: o.attributes("attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano")?,
        time_unix_nano: o.u64("timeUnixNano")?,
        count: o.u64("count")?,
        sum: o.optional("sum", as_f64)?,
        scale: o.scalar("scale", as_i32)?,
        zero_count: o.u64("zeroCount")?,
        positive: o.optional("positive", buckets)?,
        negative: o.optional("negative", buckets)?,
        flags: o.u32("flags")?,
        exemplars: o.array("exemplars", exemplar)?,
        min: o.optional("min", as_f64)?,
        max: o.optional("max", as_f64)?,
        zero_threshold: o.scalar("zeroThreshold", as_f64)?,
    })
}

fn buckets(v: &Value, p: &Path) -> R<exponential_histogram_data_point::Buckets> {
    let o = obj(v, p)?;
    Ok(exponential_histogram_data_point::Buckets {
        offset: o.scalar("offset", as_i32)?,
        bucket_counts: o.array("bucketCounts", as_u64)?,
    })
}

fn summary_point(v: &Value, p: &Path) -> R<SummaryDataPoint> {
    let o = obj(v, p)?;
    Ok(SummaryDataPoint {
        attributes: o.attributes("attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano")?,
        time_unix_nano: o.u64("timeUnixNano")?,
        count: o.u64("count")?,
        sum: o.scalar("sum", as_f64)?,
        quantile_values: o.array("quantileValues", |v, p| {
            let o = obj(v, p)?;
            Ok(summary_data_point::ValueAtQuantile {
                quantile: o.scalar("quantile", as_f64)?,
                value: o.scalar("value", as_f64)?,
            })
        })?,
        flags: o.u32("flags")?,
    })
}

fn exemplar(v: &Value, p: &Path) -> R<Exemplar> {
    use exemplar::Value as V;
    let o = obj(v, p)?;
    let value = match o.optional("asDouble", as_f64)? {
        Some(d) => Some(V::AsDouble(d)),
        None => o.optional("asInt", as_i64)?.map(V::AsInt),
    };
    Ok(Exemplar {
        filtered_attributes: o.attributes("filteredAttributes")?,
        time_unix_nano: o.u64("timeUnixNano")?,
        span_id: o.scalar("spanId", as_hex)?,
        trace_id: o.scalar("traceId", as_hex)?,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T>(r: R<T>) -> (String, String) {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => (e.path, e.reason),
        }
    }

    #[test]
    fn path_renders_keys_and_indexes_like_serde_path_to_error() {
        let root = Path::ROOT;
        let a = root.key("resourceLogs");
        let b = a.index(0);
        let c = b.key("logRecords");
        let d = c.index(2);
        let e = d.key("timeUnixNano");
        assert_eq!(e.render(), "resourceLogs[0].logRecords[2].timeUnixNano");
    }

    #[test]
    fn int64_fields_accept_strings_and_numbers() {
        let v: Value = serde_json::json!({"timeUnixNano": "12", "observedTimeUnixNano": 13});
        let rec = log_record(&v, &Path::ROOT).map_err(|e| e.reason).unwrap();
        assert_eq!((rec.time_unix_nano, rec.observed_time_unix_nano), (12, 13));
    }

    #[test]
    fn doubles_accept_proto3_special_strings() {
        let v: Value = serde_json::json!({"asDouble": "NaN"});
        let point = number_point(&v, &Path::ROOT).map_err(|e| e.reason).unwrap();
        assert!(matches!(point.value, Some(number_data_point::Value::AsDouble(d)) if d.is_nan()));
    }

    #[test]
    fn empty_any_value_is_accepted_as_no_value() {
        let v: Value = serde_json::json!({"key": "k", "value": {}});
        let kv = key_value(&v, &Path::ROOT).map_err(|e| e.reason).unwrap();
        assert_eq!(kv.value, Some(AnyValue { value: None }));
    }

    #[test]
    fn enum_names_are_accepted_as_well_as_numbers() {
        let v: Value = serde_json::json!({"kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR"}});
        let s = span(&v, &Path::ROOT).map_err(|e| e.reason).unwrap();
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(
            s.status.map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
    }

    #[test]
    fn wrong_type_names_the_nested_path() {
        let v: Value = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{}, {"startTimeUnixNano": true}]}]}]});
        let (path, reason) = err_of(trace_request(&v));
        assert_eq!(
            path,
            "resourceSpans[0].scopeSpans[0].spans[1].startTimeUnixNano"
        );
        assert!(reason.contains("got a boolean"), "{reason}");
    }

    #[test]
    fn non_hex_id_is_a_format_error_at_its_path() {
        let v: Value = serde_json::json!({"spanId": "zz"});
        let (path, reason) = err_of(span(&v, &Path::ROOT));
        assert_eq!(path, "spanId");
        assert!(reason.contains("invalid hex"), "{reason}");
    }
}
