//! Writing a run to disk as the OpenTelemetry Collector's file exporter does: one OTLP/JSON
//! export request per line.

use crate::{simulate, Label, Scenario, SimConfig, SimRun};
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
pub const CASES_FILE: &str = "cases.csv";
const README_FILE: &str = "README.md";
/// The columns of `cases.csv` in the labelled case layout.
const CASES_HEADER: &str =
    "case_id,fault_start_unix_s,fault_end_unix_s,root_cause_service,fault_type,system";

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

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenDataset {
    pub cases_csv: PathBuf,
    /// Each case's label and files, in `cases.csv` order.
    pub cases: Vec<(Label, WrittenFiles)>,
    pub total_bytes: u64,
}

/// Simulates each of `scenarios` under `config` and writes them into `dir` as a dataset in the
/// labelled case layout: one [`write_dir`] folder per case named by its `case_id`, `cases.csv`
/// with one row per case, and a `README.md` saying how the data was made. Runs are simulated
/// one at a time, so memory holds one run, not all of them.
pub fn write_dataset(
    dir: &Path,
    config: &SimConfig,
    scenarios: &[Scenario],
) -> io::Result<WrittenDataset> {
    std::fs::create_dir_all(dir)?;
    let mut csv = format!("{CASES_HEADER}\n");
    let mut cases = Vec::with_capacity(scenarios.len());
    let mut total = 0;
    for &scenario in scenarios {
        let run = simulate(scenario, config);
        let files = write_dir(&run, &dir.join(&run.label.case_id))?;
        total += files.total_bytes;
        let l = &run.label;
        // Every field is a kebab-case name or a number: nothing to quote.
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            l.case_id,
            l.fault_start_unix_s,
            l.fault_end_unix_s,
            l.root_cause_service,
            l.fault_type,
            l.system
        ));
        cases.push((run.label, files));
    }
    let cases_csv = dir.join(CASES_FILE);
    std::fs::write(&cases_csv, &csv)?;
    let readme = format!(
        "# Simulated incidents ({system})\n\n\
         Written by `culprit simulate --all`: {n} seeded scenarios on culprit's simulated shop \
         (seed {seed}, {normal} minutes of healthy traffic before each fault, {fault} minutes of \
         fault, {rps} requests a second). OTLP JSON lines (traces, logs, metrics), native change \
         events and `label.json` per case, in the labelled case layout; score it with \
         `culprit eval cases <this folder>`. Generated data, no licence restrictions.\n",
        system = crate::SYSTEM,
        n = scenarios.len(),
        seed = config.seed,
        normal = config.normal_minutes,
        fault = config.fault_minutes,
        rps = config.requests_per_second,
    );
    std::fs::write(dir.join(README_FILE), &readme)?;
    total += (csv.len() + readme.len()) as u64;
    Ok(WrittenDataset {
        cases_csv,
        cases,
        total_bytes: total,
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
