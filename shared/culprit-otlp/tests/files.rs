mod common;

use common::{COLLECTOR_LOGS, COLLECTOR_METRICS, COLLECTOR_TRACE};
use culprit_core::{Event, SourceKind};
use culprit_otlp::files::{read_dir, read_path, FileError};
use culprit_otlp::{
    decode, parse_logs, parse_metrics, parse_traces, to_json, to_protobuf, Encoding, Signal,
};
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;

const CHANGE: &str =
    r#"{"id":"chg-1","time":"2026-11-22T03:00:00Z","type":"deployment","service":"checkout"}"#;

fn write(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// The Collector file exporter's `format: proto` framing.
fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn sources(events: &[Event]) -> Vec<SourceKind> {
    events.iter().map(Event::source).collect()
}

fn file_err(r: Result<Vec<Event>, FileError>) -> FileError {
    match r {
        Ok(events) => panic!("expected an error, got {} events", events.len()),
        Err(e) => e,
    }
}

#[test]
fn json_lines_of_mixed_signals_read_back_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otel.jsonl");
    // Re-encode through to_json so the file is exactly what our writers would produce.
    let logs = to_json(&parse_logs(Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap());
    // The metrics fixture is pretty-printed; the file exporter writes each request on one line.
    let metrics_line = serde_json::from_str::<serde_json::Value>(COLLECTOR_METRICS)
        .unwrap()
        .to_string();
    let text = format!(
        "{COLLECTOR_TRACE}\n{}\n{metrics_line}\n{CHANGE}\n",
        String::from_utf8_lossy(&logs)
    );
    write(&path, text.as_bytes());

    let events = read_path(&path).unwrap();
    let expected_metrics = decode(
        Signal::Metrics,
        Encoding::Json,
        COLLECTOR_METRICS.as_bytes(),
    )
    .unwrap()
    .len();
    assert_eq!(events.len(), 1 + 3 + expected_metrics + 1);
    assert_eq!(events[0].source(), SourceKind::Traces);
    assert_eq!(sources(&events[1..4]), vec![SourceKind::Logs; 3]);
    assert_eq!(events.last().map(Event::source), Some(SourceKind::Changes));
}

#[test]
fn length_prefixed_and_bare_protobuf_files_both_read() {
    let dir = tempfile::tempdir().unwrap();
    let traces = parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap();
    let metrics = parse_metrics(Encoding::Json, COLLECTOR_METRICS.as_bytes()).unwrap();
    write(
        &dir.path().join("traces-0001.binpb"),
        &framed(&[to_protobuf(&traces), to_protobuf(&traces)]),
    );
    write(&dir.path().join("metrics.pb"), &to_protobuf(&metrics));

    let spans = read_path(&dir.path().join("traces-0001.binpb")).unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0], spans[1]);
    let points = read_path(&dir.path().join("metrics.pb")).unwrap();
    assert_eq!(
        points,
        decode(
            Signal::Metrics,
            Encoding::Json,
            COLLECTOR_METRICS.as_bytes()
        )
        .unwrap()
    );
}

#[test]
fn read_dir_walks_recursively_in_sorted_order_and_skips_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let logs = parse_logs(Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap();
    write(
        &dir.path().join("b/logs.pb.gz"),
        &gzip(&framed(&[to_protobuf(&logs)])),
    );
    write(
        &dir.path().join("a/traces.json.gz"),
        &gzip(format!("{COLLECTOR_TRACE}\n").as_bytes()),
    );
    write(
        &dir.path().join("c/changes.json"),
        format!("[{CHANGE},{CHANGE}]").as_bytes(),
    );
    write(&dir.path().join("README.md"), b"# dataset");
    write(&dir.path().join("c/notes.json"), br#"{"hello": "world"}"#);
    write(&dir.path().join("c/data.pb"), b"\x00\x01");

    let events = read_dir(dir.path()).unwrap();
    let mut expected = vec![SourceKind::Traces];
    expected.extend([SourceKind::Logs; 3]);
    expected.extend([SourceKind::Changes; 2]);
    assert_eq!(sources(&events), expected);
}

#[test]
fn bad_json_line_error_names_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let bad = COLLECTOR_TRACE.replace("eee19b7ec3c1b174", "eee1");
    write(
        &path,
        format!("{COLLECTOR_TRACE}\n{COLLECTOR_TRACE}\n{bad}\n").as_bytes(),
    );
    let e = file_err(read_path(&path));
    assert!(matches!(e, FileError::Json { line: 3, .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(
        message.ends_with("line 3: resourceSpans[0].scopeSpans[0].spans[0]: field `spanId`: expected 8 bytes, got 2"),
        "{message}"
    );
}

#[test]
fn unknown_record_after_the_first_is_an_error_not_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("mixed.jsonl"),
        format!("{CHANGE}\n{{\"hello\":1}}\n").as_bytes(),
    );
    let e = file_err(read_dir(dir.path()));
    assert!(matches!(e, FileError::UnknownRecord { line: 2, .. }), "{e}");
}

#[test]
fn truncated_protobuf_frame_names_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.pb");
    let traces = to_protobuf(&parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap());
    // A well-framed second message whose content is cut short.
    let broken = traces[..traces.len() - 3].to_vec();
    write(&path, &framed(&[traces.clone(), broken]));
    let e = file_err(read_path(&path));
    assert!(matches!(e, FileError::Protobuf { index: 1, .. }), "{e}");
    assert!(
        e.to_string().contains("truncated or invalid protobuf"),
        "{e}"
    );
}

#[test]
fn broken_json_names_line_and_column_but_non_json_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.json"), b"this is not json");
    assert_eq!(read_dir(dir.path()).unwrap().len(), 0);

    write(
        &dir.path().join("b.jsonl"),
        format!("{CHANGE}\n{{\"id\": \n").as_bytes(),
    );
    let e = file_err(read_dir(dir.path()));
    assert!(matches!(e, FileError::Syntax { line: 3, .. }), "{e}");
}
