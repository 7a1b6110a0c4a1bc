//! Tests on the real Nezha data under `RCA_DATASETS` (default `../shared/datasets` from the
//! workspace root). Each test skips with a message when its dataset is absent.

use culprit_nezha::{
    dependency_edges, import, read_logs, read_metrics, read_spans, Dataset, Kind, MetricOptions,
    MetricStore,
};
use culprit_otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use culprit_otlp::proto::common::v1::{any_value::Value, KeyValue};
use culprit_otlp::proto::metrics::v1::metric::Data;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Instant;

fn dataset(name: &str) -> Option<Dataset> {
    let base = std::env::var_os("RCA_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets")
        });
    match Dataset::open(base.join(name)) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: dataset {name} not available ({e})");
            None
        }
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value.as_ref()?.value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn body_text(v: &Option<culprit_otlp::proto::common::v1::AnyValue>) -> &str {
    match v.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s,
        _ => "",
    }
}

#[test]
fn trainticket_cases_load_with_minute_files() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    let cases = ds.cases().unwrap();
    // Every date in the labels has cases; the first day alone has 28 (the dataset README).
    let dates = ds.dates();
    assert!(!dates.is_empty());
    for date in &dates {
        assert!(cases.iter().any(|c| &c.date == date), "{date} has cases");
    }
    assert_eq!(cases.iter().filter(|c| c.date == dates[0]).count(), 28);
    for c in &cases {
        assert_eq!(c.minute_files.len(), 3, "{}", c.id);
        for m in &c.minute_files {
            assert!(
                ds.minute_file(&c.date, Kind::Log, m).is_some(),
                "{} {m}",
                c.id
            );
            assert!(
                ds.minute_file(&c.date, Kind::Trace, m).is_some(),
                "{} {m}",
                c.id
            );
        }
        assert!(c.root_cause_pod.starts_with(&c.root_cause_service));
        assert!(c.inner_service_label.is_some());
    }
    for date in &dates {
        assert!(ds.has_logs_and_traces(date), "{date}");
        let refs = ds.reference_minutes(date);
        assert!(!refs.is_empty(), "{date} has a fault-free reference window");
        assert!(ds.reference_file(date, Kind::Log, &refs[0]).is_some());
        assert!(ds.reference_file(date, Kind::Trace, &refs[0]).is_some());
    }
}

#[test]
fn onlineboutique_cases_load_without_the_later_columns() {
    let Some(ds) = dataset("nezha-onlineboutique-metrics") else {
        return;
    };
    let cases = ds.cases().unwrap();
    assert_eq!(cases.len(), 24);
    assert!(cases
        .iter()
        .all(|c| c.minute_files.is_empty() && c.inner_service_label.is_none()));
    assert!(cases.iter().all(|c| c.inject_unix_s > 1_600_000_000));
    let date = &ds.dates()[0];
    assert!(!ds.has_logs_and_traces(date));
    assert!(ds.reference_minutes(date).is_empty());
}

#[test]
fn log_minute_reads_services_levels_and_keeps_malformed_rows() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    let date = &ds.dates()[0];
    let mut malformed_seen = 0;
    let mut levels = BTreeSet::new();
    for minute in ds.minutes(date, Kind::Log) {
        let path = ds.minute_file(date, Kind::Log, &minute).unwrap();
        let out = read_logs(&path).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let mut records = 0;
        for rl in &out.request.resource_logs {
            let attrs = &rl.resource.as_ref().unwrap().attributes;
            let pod = attr(attrs, "k8s.pod.name").unwrap();
            let service = attr(attrs, "service.name").unwrap();
            assert!(
                pod.starts_with(service) && service.len() < pod.len(),
                "{pod} -> {service}"
            );
            assert!(attr(attrs, "k8s.node.name").is_some());
            for r in &rl.scope_logs[0].log_records {
                records += 1;
                levels.insert(r.severity_text.clone());
                let body = body_text(&r.body);
                assert!(!body.ends_with('\n'));
                if body.starts_with("{\"log\"") {
                    malformed_seen += 1;
                    // Kept verbatim, and the level still read from behind the Docker prefix.
                    assert_eq!(r.severity_number, 9, "{body}");
                }
            }
        }
        // Every row becomes a record: malformed ones are kept, not dropped.
        assert_eq!(records, out.rows, "{minute}");
    }
    assert_eq!(
        malformed_seen, 2,
        "the two broken Docker-JSON rows of the day"
    );
    let want: BTreeSet<String> = ["ERROR", "INFO", "WARN"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(levels, want);
}

#[test]
fn trace_minute_links_children_to_parents() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    let c = &ds.cases().unwrap()[0];
    let path = ds
        .minute_file(&c.date, Kind::Trace, &c.minute_files[0])
        .unwrap();
    let out = read_spans(&path).unwrap();
    assert!(out.skipped.is_empty());
    let spans: Vec<_> = out
        .request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans[0].spans)
        .collect();
    assert_eq!(spans.len(), out.rows);
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
    let linked = spans
        .iter()
        .filter(|s| ids.contains(s.parent_span_id.as_slice()))
        .count();
    assert!(roots > 0);
    // Most parents are in the same minute; the rest started in the previous file.
    assert!(linked * 10 > spans.len() * 8, "{linked} of {}", spans.len());
    assert!(spans
        .iter()
        .all(|s| s.trace_id.len() == 16 && s.end_time_unix_nano >= s.start_time_unix_nano));
    assert!(spans.iter().all(|s| s.kind == 0 && s.status.is_none()));
}

#[test]
fn metric_window_holds_one_row_per_pod_minute_and_skips_nan() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    // A case mid-day, where every pod reports each minute.
    let cases = ds.cases().unwrap();
    let c = &cases[cases.len() / 2];
    let dir = ds.metric_dir(&c.date);
    let pods = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("_metric.csv.gz")
        })
        .count();
    let (from, to) = (c.inject_unix_s - 300, c.inject_unix_s + 300);
    let out = read_metrics(&dir, from, to, MetricOptions::default()).unwrap();
    // Ten minutes: one row per pod file and one front-service row per minute.
    assert_eq!(out.rows, 10 * (pods + 1));
    assert!(out.skipped.is_empty());
    let mut points = 0;
    let mut nan = 0;
    for rm in &out.request.resource_metrics {
        for m in &rm.scope_metrics[0].metrics {
            let Some(Data::Gauge(g)) = &m.data else {
                panic!("{} is not a gauge", m.name)
            };
            for p in &g.data_points {
                points += 1;
                let t = (p.time_unix_nano / 1_000_000_000) as i64;
                assert!(t >= from && t < to);
                if let Some(culprit_otlp::proto::metrics::v1::number_data_point::Value::AsDouble(
                    v,
                )) = p.value
                {
                    nan += v.is_nan() as usize;
                }
            }
        }
    }
    assert_eq!(nan, 0);
    // 19 pod columns and 5 front-service columns per row, minus the empty cells.
    assert_eq!(points + out.empty_cells, 10 * (pods * 19 + 5));
    assert!(
        out.empty_cells > 0,
        "some latency cells are NaN with no traffic"
    );
    let names: HashSet<&str> = out
        .request
        .resource_metrics
        .iter()
        .flat_map(|r| r.scope_metrics[0].metrics.iter().map(|m| m.name.as_str()))
        .collect();
    assert!(names.contains("CpuUsageRate(%)") && names.contains("SuccessRate(%)"));
    let services: HashSet<&str> = out
        .request
        .resource_metrics
        .iter()
        .filter_map(|r| attr(&r.resource.as_ref()?.attributes, "service.name"))
        .collect();
    assert!(services.contains("frontend") && services.contains(c.root_cause_service.as_str()));
}

#[test]
fn onlineboutique_has_26_dependency_edges_and_edge_latency() {
    let Some(ds) = dataset("nezha-onlineboutique-metrics") else {
        return;
    };
    let c = &ds.cases().unwrap()[0];
    let dir = ds.metric_dir(&c.date);
    let edges = dependency_edges(&dir).unwrap();
    assert_eq!(edges.len(), 26);
    let store = MetricStore::load(&dir, MetricOptions::default()).unwrap();
    let (first, last) = store.time_range().unwrap();
    let req = store.window(first, last + 1);
    let mut measured = HashSet::new();
    for rm in &req.resource_metrics {
        let service = attr(&rm.resource.as_ref().unwrap().attributes, "service.name").unwrap();
        for m in rm.scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name.starts_with("edge."))
        {
            let Some(Data::Gauge(g)) = &m.data else {
                panic!("not a gauge")
            };
            for p in &g.data_points {
                assert_eq!(attr(&p.attributes, "peer.callee"), Some(service));
                let caller = attr(&p.attributes, "peer.caller").unwrap().to_string();
                let edge = (caller, service.to_string());
                assert!(edges.contains(&edge), "{edge:?} is a dependency edge");
                measured.insert((m.name.clone(), edge));
            }
        }
    }
    // 14 measured call edges, each with a client-side and a server-side series.
    assert_eq!(measured.len(), 28);
}

#[test]
fn import_of_a_small_subset_round_trips_through_otlp_json() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    // A subset: labels, one log and one trace minute, and the whole metric folder.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let cases = ds.cases().unwrap();
    let c = &cases[cases.len() / 2];
    let minute = &c.minute_files[0];
    let copy = |from: PathBuf, to: PathBuf| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    copy(ds.labels_path(), src.join("labels/cases.csv"));
    for kind in [Kind::Log, Kind::Trace] {
        let from = ds.minute_file(&c.date, kind, minute).unwrap();
        let name = from.file_name().unwrap().to_owned();
        copy(
            from,
            src.join("rca_data")
                .join(&c.date)
                .join(kind.dir())
                .join(name),
        );
    }
    for e in std::fs::read_dir(ds.metric_dir(&c.date)).unwrap() {
        let e = e.unwrap();
        copy(
            e.path(),
            src.join("rca_data")
                .join(&c.date)
                .join("metric")
                .join(e.file_name()),
        );
    }
    let subset = Dataset::open(&src).unwrap();
    let out = tmp.path().join("out");
    let mut steps = Vec::new();
    let summary = import(&subset, &out, |p| steps.push(p)).unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps.last().unwrap().step, 3);
    assert_eq!(summary.dates, 1);
    assert_eq!(summary.skipped_rows, 0);

    let day = out.join(&c.date);
    let line = |p: PathBuf| {
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "{}", p.display());
        text
    };
    let logs: ExportLogsServiceRequest =
        serde_json::from_str(&line(day.join(format!("logs/{minute}.otlp.jsonl")))).unwrap();
    let source = ds.minute_file(&c.date, Kind::Log, minute).unwrap();
    assert_eq!(logs, read_logs(&source).unwrap().request);
    let traces: ExportTraceServiceRequest =
        serde_json::from_str(&line(day.join(format!("traces/{minute}.otlp.jsonl")))).unwrap();
    let source = ds.minute_file(&c.date, Kind::Trace, minute).unwrap();
    assert_eq!(traces, read_spans(&source).unwrap().request);
    let spans: usize = traces
        .resource_spans
        .iter()
        .map(|r| r.scope_spans[0].spans.len())
        .sum();
    assert_eq!(summary.spans, spans);

    // Metric hour file: a line per minute, each the store's window for that minute.
    let hour = (c.inject_unix_s.rem_euclid(86_400) / 3600) as usize;
    let text = std::fs::read_to_string(day.join(format!("metrics/{hour:02}.otlp.jsonl"))).unwrap();
    assert!(text.lines().count() >= 59, "a line per minute of the hour");
    let store = MetricStore::load(&ds.metric_dir(&c.date), MetricOptions::default()).unwrap();
    let minute_start = c.inject_unix_s.div_euclid(60) * 60;
    let want = store.window(minute_start, minute_start + 60);
    let found = text
        .lines()
        .map(|l| serde_json::from_str::<ExportMetricsServiceRequest>(l).unwrap())
        .any(|r| r == want);
    assert!(
        found,
        "the injection minute's window is a line of its hour file"
    );

    let labels: Vec<culprit_nezha::Case> =
        serde_json::from_str(&std::fs::read_to_string(out.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels, ds.cases().unwrap());
}

#[test]
fn read_times_of_one_log_and_one_trace_minute() {
    let Some(ds) = dataset("nezha-trainticket") else {
        return;
    };
    let c = &ds.cases().unwrap()[0];
    let date = &c.date;
    let log = ds.minute_file(date, Kind::Log, &c.minute_files[1]).unwrap();
    let trace = ds
        .minute_file(date, Kind::Trace, &c.minute_files[1])
        .unwrap();
    let time = |f: &dyn Fn() -> usize| {
        let mut best = f64::MAX;
        let mut rows = 0;
        for _ in 0..5 {
            let t = Instant::now();
            rows = f();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        (rows, best)
    };
    let (log_rows, log_ms) = time(&|| read_logs(&log).unwrap().rows);
    let (span_rows, span_ms) = time(&|| read_spans(&trace).unwrap().rows);
    let t = Instant::now();
    let store = MetricStore::load(&ds.metric_dir(date), MetricOptions::default()).unwrap();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let w = store.window(c.inject_unix_s - 600, c.inject_unix_s);
    let window_us = t.elapsed().as_secs_f64() * 1e6;
    eprintln!(
        "read_logs {log_rows} rows {log_ms:.2} ms; read_spans {span_rows} rows {span_ms:.2} ms; \
         metric store load {} points {load_ms:.1} ms; 10-min window {} resources {window_us:.0} us",
        store.len(),
        w.resource_metrics.len()
    );
    assert!(log_rows > 0 && span_rows > 0);
}
