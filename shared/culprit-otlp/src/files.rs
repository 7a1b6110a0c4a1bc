//! Replay from files: what the OpenTelemetry Collector's file exporter writes, and change-event
//! files.
//!
//! - `.json`, `.jsonl`, `.ndjson`: JSON values one after another (the file exporter's default
//!   `format: json` writes one `Export*ServiceRequest` per line). Each value is told apart by its
//!   keys: `resourceSpans` / `resourceLogs` / `resourceMetrics` for OTLP, `specversion`,
//!   `context` + `subject`, or native fields for change events; a top-level array holds change
//!   events.
//! - `.pb`, `.binpb`, `.proto`: protobuf. The file exporter with `format: proto` writes each message
//!   after a 4-byte big-endian length (its `exportMessageAsBuffer`); a file holding one bare message
//!   is read too. The signal comes from the file name: `traces`/`spans`, `logs` or `metrics`.
//! - any of these ending in `.gz`.
//!
//! Events come back in file order; callers sort by time.

use crate::changes::{change_from_value, from_array, json_stream, looks_like_change, strip_bom};
use crate::{
    logs_to_events, metrics_to_events, otlp_json, parse_logs, parse_metrics, parse_traces,
    traces_to_events,
};
use crate::{DecodeError, Encoding, Signal};
use culprit_core::{Event, SourceKind};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A JSON file's record failed to decode; `line` is where the record starts (1-based).
    #[error("{}: line {line}: {source}", .path.display())]
    Json {
        path: PathBuf,
        line: usize,
        source: DecodeError,
    },

    /// A protobuf file's message failed to decode; `index` counts messages from 0.
    #[error("{}: message {index} at byte {offset}: {source}", .path.display())]
    Protobuf {
        path: PathBuf,
        index: usize,
        offset: usize,
        source: DecodeError,
    },

    /// The JSON itself is broken (after at least one good record).
    #[error("{}: line {line} column {column}: invalid JSON: {reason}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    /// A JSON record is neither an OTLP export request nor a change event.
    #[error("{}: line {line}: neither an OTLP export request nor a change event", .path.display())]
    UnknownRecord { path: PathBuf, line: usize },

    /// The file's name or first record says it is none of ours; [`read_dir`] skips these.
    #[error("{}: not a recognised telemetry or change-event file: {reason}", .path.display())]
    Unrecognized { path: PathBuf, reason: String },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::Json { path, .. }
            | FileError::Syntax { path, .. }
            | FileError::Protobuf { path, .. }
            | FileError::UnknownRecord { path, .. }
            | FileError::Unrecognized { path, .. } => path,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Json,
    Protobuf(Signal),
}

/// Reads one file (see the module doc for the accepted formats).
pub fn read_path(path: &Path) -> Result<Vec<Event>, FileError> {
    let (kind, gzip) = classify(path)?;
    let bytes = read_bytes(path, gzip)?;
    match kind {
        FileKind::Json => read_json(path, &bytes),
        FileKind::Protobuf(signal) => read_protobuf(path, signal, &bytes),
    }
}

/// Reads every recognised file under `dir`, recursively, in sorted path order. Files that are not
/// telemetry or change events are skipped with a warning; any other error stops the read.
pub fn read_dir(dir: &Path) -> Result<Vec<Event>, FileError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for file in files {
        match read_path(&file) {
            Ok(events) => out.extend(events),
            Err(FileError::Unrecognized { path, reason }) => {
                tracing::warn!(path = %path.display(), %reason, "skipping unrecognised file");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
    let io_err = |source| FileError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        // metadata() follows symlinks, so a linked dataset directory is read too.
        let meta = std::fs::metadata(&path).map_err(|source| FileError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn classify(path: &Path) -> Result<(FileKind, bool), FileError> {
    let unrecognized = |reason: &str| FileError::Unrecognized {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (name, gzip) = match name.strip_suffix(".gz") {
        Some(inner) => (inner.to_string(), true),
        None => (name, false),
    };
    let extension = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
    let kind = match extension {
        "json" | "jsonl" | "ndjson" => FileKind::Json,
        "pb" | "binpb" | "proto" => {
            let signal = if name.contains("traces") || name.contains("spans") {
                Signal::Traces
            } else if name.contains("logs") {
                Signal::Logs
            } else if name.contains("metrics") {
                Signal::Metrics
            } else {
                return Err(unrecognized("protobuf file name names no signal (traces, spans, logs or metrics)"));
            };
            FileKind::Protobuf(signal)
        }
        _ => return Err(unrecognized("unknown extension (expected .json, .jsonl, .ndjson, .pb, .binpb, .proto, optionally .gz)")),
    };
    Ok((kind, gzip))
}

fn read_bytes(path: &Path, gzip: bool) -> Result<Vec<u8>, FileError> {
    let io_err = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    // Multi-member: concatenated gzip streams (e.g. appended rotations) are one file.
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(io_err)?;
    Ok(out)
}

fn read_json(path: &Path, bytes: &[u8]) -> Result<Vec<Event>, FileError> {
    let bytes = strip_bom(bytes);
    let mut out = Vec::new();
    let mut first = true;
    let looks_like_json = matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    for item in json_stream(bytes) {
        let (line, value) = match item {
            Ok(item) => item,
            Err(e) if !looks_like_json => {
                // Not a JSON document at all (a `.json` of something else): not ours.
                return Err(FileError::Unrecognized {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                return Err(FileError::Syntax {
                    path: path.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                    reason: e.to_string(),
                })
            }
        };
        let json_err = |source| FileError::Json {
            path: path.to_path_buf(),
            line,
            source,
        };
        match &value {
            Value::Object(map) if map.contains_key("resourceSpans") => {
                let req = otlp_json::trace_request(&value)
                    .map_err(|e| json_err(e.into_decode_error(SourceKind::Traces)))?;
                out.extend(traces_to_events(&req).map_err(json_err)?);
            }
            Value::Object(map) if map.contains_key("resourceLogs") => {
                let req = otlp_json::logs_request(&value)
                    .map_err(|e| json_err(e.into_decode_error(SourceKind::Logs)))?;
                out.extend(logs_to_events(&req).map_err(json_err)?);
            }
            Value::Object(map) if map.contains_key("resourceMetrics") => {
                let req = otlp_json::metrics_request(&value)
                    .map_err(|e| json_err(e.into_decode_error(SourceKind::Metrics)))?;
                out.extend(metrics_to_events(&req).map_err(json_err)?);
            }
            Value::Object(map) if looks_like_change(map) => {
                out.push(change_from_value(&value, &format!("line {line}")).map_err(json_err)?);
            }
            Value::Array(_) => out.extend(from_array(&value).map_err(json_err)?),
            _ if first => {
                return Err(FileError::Unrecognized {
                    path: path.to_path_buf(),
                    reason: "first record is neither an OTLP export request nor a change event"
                        .to_string(),
                })
            }
            _ => {
                return Err(FileError::UnknownRecord {
                    path: path.to_path_buf(),
                    line,
                })
            }
        }
        first = false;
    }
    Ok(out)
}

fn read_protobuf(path: &Path, signal: Signal, bytes: &[u8]) -> Result<Vec<Event>, FileError> {
    let messages = match length_prefixed(bytes) {
        Some(frames) => frames,
        None => vec![(0, bytes)],
    };
    let mut out = Vec::new();
    for (index, (offset, message)) in messages.into_iter().enumerate() {
        let converted = match signal {
            Signal::Traces => {
                parse_traces(Encoding::Protobuf, message).and_then(|r| traces_to_events(&r))
            }
            Signal::Logs => {
                parse_logs(Encoding::Protobuf, message).and_then(|r| logs_to_events(&r))
            }
            Signal::Metrics => {
                parse_metrics(Encoding::Protobuf, message).and_then(|r| metrics_to_events(&r))
            }
        };
        out.extend(converted.map_err(|source| FileError::Protobuf {
            path: path.to_path_buf(),
            index,
            offset,
            source,
        })?);
    }
    Ok(out)
}

/// Splits a file of `u32 big-endian length + message` frames, or returns None when the lengths
/// do not tile the file exactly. A bare export request cannot pass for framed data: it starts
/// with tag byte 0x0A, which as a length prefix claims at least 160 MiB.
fn length_prefixed(bytes: &[u8]) -> Option<Vec<(usize, &[u8])>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let header: [u8; 4] = bytes.get(pos..pos + 4)?.try_into().ok()?;
        let len = u32::from_be_bytes(header) as usize;
        let start = pos + 4;
        let end = start.checked_add(len)?;
        frames.push((pos, bytes.get(start..end)?));
        pos = end;
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_frames_must_tile_the_file() {
        let mut framed = Vec::new();
        for msg in [&b"abc"[..], &b""[..], &b"de"[..]] {
            framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            framed.extend_from_slice(msg);
        }
        let frames = length_prefixed(&framed).unwrap_or_default();
        assert_eq!(
            frames,
            vec![(0, &b"abc"[..]), (7, &b""[..]), (11, &b"de"[..])]
        );
        assert!(length_prefixed(&framed[..framed.len() - 1]).is_none());
        assert!(length_prefixed(&[0x0A, 0x02, 0x0A, 0x00]).is_none());
    }

    #[test]
    fn protobuf_signal_comes_from_the_file_name() {
        let kind = |name: &str| classify(Path::new(name)).ok();
        assert_eq!(
            kind("/d/spans-0001.binpb"),
            Some((FileKind::Protobuf(Signal::Traces), false))
        );
        assert_eq!(
            kind("/d/app-logs.pb.gz"),
            Some((FileKind::Protobuf(Signal::Logs), true))
        );
        assert_eq!(kind("/d/otel.jsonl"), Some((FileKind::Json, false)));
        assert!(kind("/d/data.pb").is_none());
        assert!(kind("/d/readme.md").is_none());
    }
}
