//! `log/<HH_MM>_log.csv`: one row per container log line, the line wrapped in Docker's JSON.

use crate::csvio::{cell, hex_id, open_csv, parse_int, parse_rfc3339_nanos};
use crate::error::Result;
use crate::otlp::{pod_resource, scope};
use crate::ReadOutcome;
use culprit_core::LogLevel;
use culprit_otlp::build;
use culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use culprit_otlp::proto::logs::v1::LogRecord;
use culprit_otlp::proto::resource::v1::Resource;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
}

/// Reads one log minute file: one `ResourceLogs` per pod (and container), records sorted by time.
pub fn read_logs(path: &Path) -> Result<ReadOutcome<ExportLogsServiceRequest>> {
    let mut f = open_csv(path)?;
    let c_time = f.column("TimeUnixNano")?;
    let c_timestamp = f.find("Timestamp");
    let c_pod = f.column("PodName")?;
    let c_log = f.column("Log")?;
    let c_node = f.find("Node");
    let c_container = f.find("Container");
    let c_trace = f.find("TraceID");
    let c_span = f.find("SpanID");
    let log_is_last = c_log + 1 == f.headers.len();

    // One resource per pod (and container), in order of first appearance.
    let mut groups: Vec<(Resource, Vec<LogRecord>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut key = String::new();
    let mut rows = 0;
    let mut skipped = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while f.next(&mut rec)? {
        rows += 1;
        let opt = |c: Option<usize>| c.map(|i| cell(&rec, i)).unwrap_or("");
        let pod = cell(&rec, c_pod);
        if pod.is_empty() {
            skipped.push(f.row_error(&rec, "empty PodName").to_string());
            continue;
        }
        let raw = log_cell(&rec, c_log, log_is_last);
        if raw.is_empty() && rec.len() <= c_log {
            skipped.push(f.row_error(&rec, "no Log cell").to_string());
            continue;
        }
        let (node, container) = (opt(c_node), opt(c_container));
        // Some rows carry a garbage TimeUnixNano (a negative overflow) but a good Docker `time`
        // (ns) and `Timestamp` (ms): fall back in that order rather than lose them.
        let time = cell(&rec, c_time);
        let fallback = || {
            record_time(&raw)
                .or_else(|| c_timestamp.and_then(|i| parse_rfc3339_nanos(cell(&rec, i))))
        };
        let record = match parse_int(time).filter(|t| *t > 0).or_else(fallback) {
            Some(t) if t > 0 => log_record(t as u64, &raw, opt(c_trace), opt(c_span)),
            _ => {
                skipped.push(
                    f.row_error(&rec, format!("bad TimeUnixNano '{time}'"))
                        .to_string(),
                );
                continue;
            }
        };

        key.clear();
        for part in [pod, node, container] {
            key.push_str(part);
            key.push('\u{1f}');
        }
        let at = match index.get(key.as_str()) {
            Some(&at) => at,
            None => {
                groups.push((pod_resource(pod, node, container), Vec::new()));
                index.insert(key.clone(), groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[at].1.push(record);
    }
    let resource_logs = groups
        .into_iter()
        .map(|(resource, mut records)| {
            // The files are written newest first; consumers replay in event-time order.
            records.sort_by_key(|r| r.time_unix_nano);
            build::resource_logs(resource, scope(), records)
        })
        .collect();
    Ok(ReadOutcome {
        request: build::logs_request(resource_logs),
        rows,
        skipped,
        empty_cells: 0,
    })
}

/// The `Log` cell as text. A row broken by an unescaped quote splits into extra fields; when `Log`
/// is the last column those are glued back so no text is lost.
fn log_cell(rec: &csv::ByteRecord, c_log: usize, log_is_last: bool) -> Cow<'_, str> {
    if log_is_last && rec.len() > c_log + 1 {
        let parts: Vec<Cow<'_, str>> = (c_log..rec.len())
            .map(|i| String::from_utf8_lossy(&rec[i]))
            .collect();
        return Cow::Owned(parts.join(","));
    }
    rec.get(c_log)
        .map(String::from_utf8_lossy)
        .unwrap_or(Cow::Borrowed(""))
}

/// The Docker `time` of a Log cell, when it is Docker JSON with one.
fn record_time(raw: &str) -> Option<i64> {
    let line = serde_json::from_str::<DockerLine>(raw).ok()?;
    parse_rfc3339_nanos(&line.time?)
}

fn log_record(time_unix_nano: u64, raw: &str, trace: &str, span: &str) -> LogRecord {
    // Body: the inner Docker `.log` text; a cell that is not valid Docker JSON is kept verbatim.
    let (body, level_source): (Cow<'_, str>, &str) = match serde_json::from_str::<DockerLine>(raw) {
        Ok(d) => {
            let text = match d.log {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim_end_matches(['\n', '\r'])),
                Cow::Owned(s) => Cow::Owned(s.trim_end_matches(['\n', '\r']).to_string()),
            };
            (text, "")
        }
        // The level still sits right after the Docker prefix of a broken row.
        Err(_) => (
            Cow::Borrowed(raw),
            raw.strip_prefix("{\"log\":\"").unwrap_or(raw),
        ),
    };
    let level = if level_source.is_empty() {
        parse_level(&body)
    } else {
        parse_level(level_source)
    };
    let (severity_text, severity_number) = match level {
        Some((word, level)) => (word.to_string(), level.severity_number()),
        None => (String::new(), 0),
    };
    build::log_record(time_unix_nano, severity_number, severity_text, body)
        .trace(
            hex_id(trace, 16).unwrap_or_default(),
            hex_id(span, 8).unwrap_or_default(),
        )
        .build()
}

/// The level word of a log line and its level: the first token after any leading date/time tokens
/// (`16:42:22.382 INFO t.s.X#532 ...`, `2023-01-29 16:42:22 [WARN] ...`, `ERROR ...`).
pub fn parse_level(line: &str) -> Option<(&str, LogLevel)> {
    let token = line
        .split_whitespace()
        .take(4)
        .find(|t| !t.starts_with(|c: char| c.is_ascii_digit()))?;
    let word = token.trim_matches(|c: char| matches!(c, '[' | ']' | ':' | '(' | ')'));
    LogLevel::from_text(word).map(|level| (word, level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_otlp::proto::common::v1::any_value::Value;
    use std::io::Write;

    fn body(r: &LogRecord) -> &str {
        match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s,
            _ => "",
        }
    }

    #[test]
    fn level_is_the_word_after_the_clock() {
        let (word, level) = parse_level("16:42:22.382 WARN  t.s.TravelServiceImpl#532 x").unwrap();
        assert_eq!((word, level), ("WARN", LogLevel::Warn));
        assert_eq!(parse_level("ERROR c.Foo boom").unwrap().1, LogLevel::Error);
        assert_eq!(
            parse_level("2023-01-29 16:42:22 [info] ok").unwrap().1,
            LogLevel::Info
        );
    }

    #[test]
    fn line_without_a_level_word_has_none() {
        assert_eq!(parse_level("16:42:22.382 t.s.Foo#1 started"), None);
        assert_eq!(parse_level(""), None);
    }

    fn write_csv(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    const HEADER: &str = "Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log\n";

    #[test]
    fn logs_group_by_pod_with_docker_body_level_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{HEADER}t,200,n1,ts-a-service-1f-xy,server,0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,\"{{\"\"log\"\":\"\"10:00:00.000 ERROR c.A#1 boom\\n\"\",\"\"stream\"\":\"\"stdout\"\"}}\"\n\
             t,100,n1,ts-a-service-1f-xy,server,,,\"{{\"\"log\"\":\"\"10:00:00.000 INFO  c.A#2 ok\\n\"\"}}\"\n\
             t,150,n2,ts-b-service-2e-zz,server,zz,zz,not docker json at all\n"
        );
        let p = write_csv(dir.path(), "00_01_log.csv", &text);
        let out = read_logs(&p).unwrap();
        assert_eq!((out.rows, out.skipped.len()), (3, 0));
        let rl = &out.request.resource_logs;
        assert_eq!(rl.len(), 2);
        let recs = &rl[0].scope_logs[0].log_records;
        assert_eq!(
            recs.iter().map(|r| r.time_unix_nano).collect::<Vec<_>>(),
            vec![100, 200]
        );
        assert_eq!(body(&recs[1]), "10:00:00.000 ERROR c.A#1 boom");
        assert_eq!(
            (recs[1].severity_text.as_str(), recs[1].severity_number),
            ("ERROR", 17)
        );
        assert_eq!(recs[1].trace_id.len(), 16);
        assert_eq!(recs[1].span_id.len(), 8);
        assert!(recs[0].trace_id.is_empty());
        let other = &rl[1].scope_logs[0].log_records[0];
        assert_eq!(body(other), "not docker json at all");
        assert!(
            other.trace_id.is_empty(),
            "invalid hex ids are dropped, not the row"
        );
    }

    #[test]
    fn bad_row_is_skipped_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{HEADER}t,100,n,p-a-b,c,,,x\nt,soon,n,p-a-b,c,,,y\n");
        let p = write_csv(dir.path(), "00_02_log.csv", &text);
        let out = read_logs(&p).unwrap();
        assert_eq!(out.rows, 2);
        assert_eq!(out.skipped.len(), 1);
        let reason = &out.skipped[0];
        assert!(
            reason.contains("00_02_log.csv") && reason.contains("line 3"),
            "{reason}"
        );
        assert!(reason.contains("TimeUnixNano 'soon'"), "{reason}");
    }

    #[test]
    fn garbage_time_falls_back_to_docker_time_then_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{HEADER}2023-01-29T09:20:29.295,-6795364578871345152,n,p-a-b,c,,,\"{{\"\"log\"\":\"\"x ERROR y\\n\"\",\"\"time\"\":\"\"2023-01-29T09:20:29.299583319Z\"\"}}\"\n\
             2023-01-29T09:20:29.295,-6795364578871345152,n,p-a-b,c,,,plain\n"
        );
        let p = write_csv(dir.path(), "09_21_log.csv", &text);
        let out = read_logs(&p).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let recs = &out.request.resource_logs[0].scope_logs[0].log_records;
        let times: Vec<u64> = recs.iter().map(|r| r.time_unix_nano).collect();
        assert_eq!(
            times,
            vec![1_674_984_029_295_000_000, 1_674_984_029_299_583_319]
        );
    }

    #[test]
    fn missing_column_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_csv(
            dir.path(),
            "00_03_log.csv",
            "Timestamp,PodName,Log\nt,p,x\n",
        );
        let err = read_logs(&p).unwrap_err().to_string();
        assert!(
            err.contains("00_03_log.csv") && err.contains("TimeUnixNano"),
            "{err}"
        );
    }
}
