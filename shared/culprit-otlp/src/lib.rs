//! Turns wire bytes into [`culprit_core::Event`]s: OTLP traces, logs and metrics (OTLP/JSON or
//! protobuf) and change events (CDEvents / CloudEvents or culprit's native JSON form); and builds
//! OTLP ([`build`]) for the crates that produce it (the simulator, the Nezha importer), so this is
//! the only crate that knows the OTLP types. Nothing else: no I/O beyond [`files`], no detection,
//! no buffering.
//!
//! # OTLP
//!
//! [`decode`] takes one `Export{Trace,Logs,Metrics}ServiceRequest` as sent by an OTLP exporter,
//! written by the Collector's file exporter, or published by its Kafka exporter with
//! `encoding: otlp_json` / `otlp_proto`. The message types are `opentelemetry-proto`'s (re-exported
//! as [`proto`]); the OTLP/JSON reader and writer ([`to_json`]) are our own because that crate's
//! serde derives drop Collector-written histograms, summaries and string-encoded `asInt` values
//! and write exemplars and NaNs in shapes the Collector does not (see `otlp_json`).
//! [`traces_to_events`], [`logs_to_events`] and [`metrics_to_events`] map requests that are
//! already in memory, so files, Kafka and synthetic datasets share one conversion. Memory stays
//! proportional to the payload: a metric name is at most [`MAX_METRIC_NAME_BYTES`] and a summary
//! point has at most [`MAX_SUMMARY_QUANTILES`] quantiles, since every point's events copy both.
//!
//! # Change events
//!
//! [`changes::decode_changes`] accepts one JSON object, a JSON array or JSON lines, each record
//! being a CDEvent / CloudEvent (`specversion`), a bare CDEvent (`context` + `subject`), or the
//! native form (schema: `schemas/change-event.json`):
//!
//! ```json
//! {
//!   "id": "chg-42",
//!   "time": "2026-11-22T03:00:00Z",
//!   "type": "deployment",
//!   "service": "checkout",
//!   "environment": "prod",
//!   "summary": "deploy checkout v1.4.2",
//!   "actor": "ci-bot",
//!   "attributes": { "version": "1.4.2", "files_changed": 3 }
//! }
//! ```
//!
//! `id`, `type` (`deployment`, `config_change`, `feature_flag`, `rollback` or `other`), `service`
//! and one of `time` (RFC 3339) / `time_unix_nano` (integer) are required; `environment` defaults
//! to `default`, `summary` to `"<type> <service>"`; attribute values of any JSON type are kept as
//! strings; unknown fields are ignored.
//!
//! # Files
//!
//! [`files::read_path`] / [`files::read_dir`] replay what the Collector's file exporter wrote
//! (JSON lines, or protobuf with a 4-byte big-endian length before each message), change-event
//! files, and `.gz` of either.
#![forbid(unsafe_code)]

pub mod build;
pub mod changes;
mod convert;
mod error;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod json_writer;
mod otlp_json;

pub use convert::{
    logs_to_events, metrics_to_events, traces_to_events, MAX_METRIC_NAME_BYTES,
    MAX_SUMMARY_QUANTILES,
};
pub use error::DecodeError;
pub use json_writer::ToOtlpJson;
pub use opentelemetry_proto::tonic as proto;

use culprit_core::{Event, SourceKind};
use proto::collector::logs::v1::ExportLogsServiceRequest;
use proto::collector::metrics::v1::ExportMetricsServiceRequest;
use proto::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The OTLP signal a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    pub fn source_kind(self) -> SourceKind {
        match self {
            Signal::Traces => SourceKind::Traces,
            Signal::Logs => SourceKind::Logs,
            Signal::Metrics => SourceKind::Metrics,
        }
    }
}

impl From<Signal> for SourceKind {
    fn from(signal: Signal) -> SourceKind {
        signal.source_kind()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "traces" | "spans" => Ok(Signal::Traces),
            "logs" => Ok(Signal::Logs),
            "metrics" => Ok(Signal::Metrics),
            other => Err(format!(
                "unknown signal '{other}' (expected traces, logs or metrics)"
            )),
        }
    }
}

/// How an OTLP payload is encoded. Also parses the Collector Kafka exporter's names
/// (`otlp_json`, `otlp_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[serde(alias = "otlp_json")]
    Json,
    #[serde(alias = "otlp_proto", alias = "proto")]
    Protobuf,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" | "otlp_json" => Ok(Encoding::Json),
            "protobuf" | "proto" | "otlp_proto" => Ok(Encoding::Protobuf),
            other => Err(format!(
                "unknown encoding '{other}' (expected json, protobuf, otlp_json or otlp_proto)"
            )),
        }
    }
}

/// Bounds applied before any parsing, so a hostile or runaway producer cannot make us allocate
/// without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    pub max_bytes: usize,
}

impl DecodeLimits {
    /// 16 MiB: four times the gRPC default message size, well above typical export batches.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: DecodeLimits::DEFAULT_MAX_BYTES,
        }
    }
}

/// Decodes one OTLP export request into events, with [`DecodeLimits::default`].
pub fn decode(signal: Signal, encoding: Encoding, bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    decode_with_limits(signal, encoding, bytes, &DecodeLimits::default())
}

/// Decodes one OTLP export request into events, refusing empty and oversized payloads.
pub fn decode_with_limits(
    signal: Signal,
    encoding: Encoding,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<Event>, DecodeError> {
    check_payload(bytes, encoding, limits)?;
    match signal {
        Signal::Traces => traces_to_events(&parse_traces(encoding, bytes)?),
        Signal::Logs => logs_to_events(&parse_logs(encoding, bytes)?),
        Signal::Metrics => metrics_to_events(&parse_metrics(encoding, bytes)?),
    }
}

pub(crate) fn check_payload(
    bytes: &[u8],
    encoding: Encoding,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let blank = match encoding {
        Encoding::Json => bytes.iter().all(u8::is_ascii_whitespace),
        Encoding::Protobuf => bytes.is_empty(),
    };
    if blank {
        return Err(DecodeError::Empty);
    }
    Ok(())
}

/// Parses an `ExportTraceServiceRequest` without converting it (no size or emptiness checks).
pub fn parse_traces(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportTraceServiceRequest, DecodeError> {
    match encoding {
        Encoding::Json => otlp_json::parse(SourceKind::Traces, bytes, otlp_json::trace_request),
        Encoding::Protobuf => parse_protobuf(Signal::Traces, bytes),
    }
}

/// Parses an `ExportLogsServiceRequest` without converting it (no size or emptiness checks).
pub fn parse_logs(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportLogsServiceRequest, DecodeError> {
    match encoding {
        Encoding::Json => otlp_json::parse(SourceKind::Logs, bytes, otlp_json::logs_request),
        Encoding::Protobuf => parse_protobuf(Signal::Logs, bytes),
    }
}

/// Parses an `ExportMetricsServiceRequest` without converting it (no size or emptiness checks).
pub fn parse_metrics(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportMetricsServiceRequest, DecodeError> {
    match encoding {
        Encoding::Json => otlp_json::parse(SourceKind::Metrics, bytes, otlp_json::metrics_request),
        Encoding::Protobuf => parse_protobuf(Signal::Metrics, bytes),
    }
}

fn parse_protobuf<M: prost::Message + Default>(
    signal: Signal,
    bytes: &[u8],
) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|e| DecodeError::Malformed {
        signal: signal.source_kind(),
        encoding: Encoding::Protobuf,
        path: String::new(),
        reason: format!("truncated or invalid protobuf: {e}"),
    })
}

/// Encodes an OTLP message (an export request, or `TracesData` and friends) as OTLP/JSON the way
/// the Collector writes it: camelCase keys, hex ids, 64-bit integers as strings, enums as
/// integers, `"NaN"` for NaN, proto3 defaults left out. [`decode`] reads it back losslessly.
pub fn to_json<T: ToOtlpJson + ?Sized>(req: &T) -> Vec<u8> {
    req.to_otlp_json().to_string().into_bytes()
}

/// Encodes an OTLP message as protobuf bytes.
pub fn to_protobuf<M: prost::Message>(req: &M) -> Vec<u8> {
    req.encode_to_vec()
}
