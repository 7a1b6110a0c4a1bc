//! `trace/<HH_MM>_trace.csv`: one row per span, without kind, status or attributes.

use crate::csvio::{cell, hex_id, open_csv, parse_int};
use crate::error::Result;
use crate::otlp::{pod_resource, scope};
use crate::ReadOutcome;
use culprit_otlp::build;
use culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use culprit_otlp::proto::resource::v1::Resource;
use culprit_otlp::proto::trace::v1::Span;
use std::collections::HashMap;
use std::path::Path;

/// Reads one trace minute file: one `ResourceSpans` per pod, spans sorted by start time. Kind is
/// `SPAN_KIND_UNSPECIFIED` and status unset because the CSV records neither.
pub fn read_spans(path: &Path) -> Result<ReadOutcome<ExportTraceServiceRequest>> {
    let mut f = open_csv(path)?;
    let c_trace = f.column("TraceID")?;
    let c_span = f.column("SpanID")?;
    let c_parent = f.column("ParentID")?;
    let c_pod = f.column("PodName")?;
    let c_name = f.column("OperationName")?;
    let c_start = f.column("StartTimeUnixNano")?;
    let c_end = f.column("EndTimeUnixNano")?;

    // One resource per pod, in order of first appearance.
    let mut groups: Vec<(Resource, Vec<Span>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut rows = 0;
    let mut skipped = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while f.next(&mut rec)? {
        rows += 1;
        let mut bad = |reason: String| skipped.push(f.row_error(&rec, reason).to_string());
        let (trace, span, parent) = (
            cell(&rec, c_trace),
            cell(&rec, c_span),
            cell(&rec, c_parent),
        );
        let Some(trace_id) = hex_id(trace, 16) else {
            bad(format!("bad TraceID '{trace}'"));
            continue;
        };
        let Some(span_id) = hex_id(span, 8) else {
            bad(format!("bad SpanID '{span}'"));
            continue;
        };
        // `root` marks a root span; an unreadable parent is treated the same rather than losing
        // the span.
        let parent_span_id = if parent == "root" {
            Vec::new()
        } else {
            hex_id(parent, 8).unwrap_or_default()
        };
        let (start, end) = (cell(&rec, c_start), cell(&rec, c_end));
        let (Some(start_ns), Some(end_ns)) = (
            parse_int(start).filter(|t| *t >= 0),
            parse_int(end).filter(|t| *t >= 0),
        ) else {
            bad(format!("bad start/end '{start}'/'{end}'"));
            continue;
        };
        // OTLP has no negative durations: the decoder would refuse the whole minute.
        if end_ns < start_ns {
            bad(format!(
                "EndTimeUnixNano {end_ns} is before StartTimeUnixNano {start_ns}"
            ));
            continue;
        }
        let pod = cell(&rec, c_pod);
        if pod.is_empty() {
            bad("empty PodName".to_string());
            continue;
        }
        let name = cell(&rec, c_name);
        let span = build::span(trace_id, span_id, name, start_ns as u64, end_ns as u64)
            .parent(parent_span_id)
            .build();
        let at = match index.get(pod) {
            Some(&at) => at,
            None => {
                groups.push((pod_resource(pod, "", ""), Vec::new()));
                index.insert(pod.to_string(), groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[at].1.push(span);
    }
    let resource_spans = groups
        .into_iter()
        .map(|(resource, mut spans)| {
            spans.sort_by_key(|s| s.start_time_unix_nano);
            build::resource_spans(resource, scope(), spans)
        })
        .collect();
    Ok(ReadOutcome {
        request: build::trace_request(resource_spans),
        rows,
        skipped,
        empty_cells: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_parent_becomes_empty_and_bad_ids_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00_01_trace.csv");
        std::fs::write(
            &p,
            "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n\
             0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,root,gw-1a-2b,/*,10,30,0\n\
             0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,b7ad6b7169203331,svc-3c-4d,GET,12,20,0\n\
             nothex,00f067aa0ba902b7,root,svc-3c-4d,GET,12,20,0\n",
        )
        .unwrap();
        let out = read_spans(&p).unwrap();
        assert_eq!((out.rows, out.skipped.len()), (3, 1));
        assert!(out.skipped[0].contains("line 4"), "{}", out.skipped[0]);
        let rs = &out.request.resource_spans;
        assert_eq!(rs.len(), 2);
        let root = &rs[0].scope_spans[0].spans[0];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(
            (
                root.name.as_str(),
                root.start_time_unix_nano,
                root.end_time_unix_nano
            ),
            ("/*", 10, 30)
        );
        let child = &rs[1].scope_spans[0].spans[0];
        assert_eq!(child.parent_span_id, root.span_id);
        assert!(child.status.is_none());
    }

    #[test]
    fn span_ending_before_it_starts_is_skipped_naming_the_line() {
        // Found by the fuzzer: culprit_otlp refuses a negative duration for the whole request,
        // so one such row used to fail the minute in `culprit eval`.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00_02_trace.csv");
        std::fs::write(
            &p,
            "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n\
             0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,zz,svc-3c-4d,GET,20,12,0\n\
             0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,root,svc-3c-4d,GET,12,20,0\n",
        )
        .unwrap();
        let out = read_spans(&p).unwrap();
        assert_eq!((out.rows, out.skipped.len()), (2, 1));
        assert!(
            out.skipped[0].contains("line 2") && out.skipped[0].contains("before"),
            "{}",
            out.skipped[0]
        );
        let events = culprit_otlp::traces_to_events(&out.request).unwrap();
        assert_eq!(events.len(), 1);
    }
}
