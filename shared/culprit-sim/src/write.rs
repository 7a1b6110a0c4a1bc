//! Writing a run to disk as the OpenTelemetry Collector's file exporter does: one OTLP/JSON
//! export request per line.

use crate::SimRun;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const TRACES_FILE: &str = "traces.otlp.jsonl";
pub const LOGS_FILE: &str = "logs.otlp.jsonl";
pub const METRICS_FILE: &str = "metrics.otlp.jsonl";
pub const CHANGES_FILE: &str = "changes.jsonl";
pub const LABEL_FILE: &str = "label.json";

/// Where [`write_dir`] put each part of a run, and how big it all is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFiles {
    pub traces: PathBuf,
    pub logs: PathBuf,
    pub metrics: PathBuf,
    pub changes: PathBuf,
    pub label: PathBuf,
    pub total_bytes: u64,
}

/// Writes `run` into `dir` (created if missing): `traces.otlp.jsonl`, `logs.otlp.jsonl`,
/// `metrics.otlp.jsonl`, `changes.jsonl` and `label.json`.
pub fn write_dir(run: &SimRun, dir: &Path) -> io::Result<WrittenFiles> {
    std::fs::create_dir_all(dir)?;
    let files = WrittenFiles {
        traces: dir.join(TRACES_FILE),
        logs: dir.join(LOGS_FILE),
        metrics: dir.join(METRICS_FILE),
        changes: dir.join(CHANGES_FILE),
        label: dir.join(LABEL_FILE),
        total_bytes: 0,
    };
    // Serialising is the slow part; the three signals are independent.
    let (traces, logs, metrics) = std::thread::scope(|s| {
        let traces = s.spawn(|| write_otlp_lines(&files.traces, &run.traces));
        let logs = s.spawn(|| write_otlp_lines(&files.logs, &run.logs));
        let metrics = write_otlp_lines(&files.metrics, &run.metrics);
        let join = |h: std::thread::ScopedJoinHandle<'_, io::Result<u64>>| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")))
        };
        (join(traces), join(logs), metrics)
    });
    let mut total = traces? + logs? + metrics?;
    total += write_lines(&files.changes, run.changes.iter().cloned())?;
    let label = serde_json::to_vec_pretty(&run.label)?;
    std::fs::write(&files.label, &label)?;
    total += label.len() as u64;
    Ok(WrittenFiles {
        total_bytes: total,
        ..files
    })
}

/// Reads a JSON-lines file written by [`write_dir`] back into `T`, one value per non-empty line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for (n, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        out.push(value);
    }
    Ok(out)
}

fn write_otlp_lines<T: Serialize>(path: &Path, requests: &[T]) -> io::Result<u64> {
    write_lines(
        path,
        requests.iter().map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            omit_defaults(&mut v);
            v
        }),
    )
}

fn write_lines(path: &Path, values: impl Iterator<Item = Value>) -> io::Result<u64> {
    let mut w = CountingWriter {
        inner: BufWriter::with_capacity(1 << 20, File::create(path)?),
        bytes: 0,
    };
    for v in values {
        serde_json::to_writer(&mut w, &v)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(w.bytes)
}

/// Values that are one branch of a protobuf `oneof`: present even when zero or empty.
const ONEOF_KEYS: [&str; 7] = [
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "asDouble",
    "asInt",
];

/// Drops fields holding their protobuf default, as the Collector's JSON marshaller does:
/// it roughly halves the output, and every field the types read back defaults when absent.
fn omit_defaults(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, field| {
                if ONEOF_KEYS.contains(&k.as_str()) {
                    return true;
                }
                omit_defaults(field);
                !is_default(k, field)
            });
        }
        Value::Array(items) => items.iter_mut().for_each(omit_defaults),
        _ => {}
    }
}

fn is_default(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || (s == "0" && key.ends_with("UnixNano")),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && key != "value",
    }
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn omit_defaults_keeps_zero_oneof_values_and_drops_empty_fields() {
        let mut v = json!({
            "traceState": "", "flags": 0, "events": [], "status": {"code": 0, "message": ""},
            "startTimeUnixNano": "0", "timeUnixNano": "17",
            "attributes": [{"key": "n", "value": {"intValue": "0"}}],
            "asDouble": 0.0, "name": "x"
        });
        omit_defaults(&mut v);
        assert_eq!(
            v,
            json!({
                "timeUnixNano": "17",
                "attributes": [{"key": "n", "value": {"intValue": "0"}}],
                "asDouble": 0.0, "name": "x"
            })
        );
    }
}
