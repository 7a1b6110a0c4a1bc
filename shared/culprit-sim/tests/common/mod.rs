//! Read-side helpers: flatten a run's OTLP requests into per-service records.
#![allow(dead_code)]

use culprit_otlp::proto::common::v1::{any_value, KeyValue};
use culprit_otlp::proto::logs::v1::LogRecord;
use culprit_otlp::proto::metrics::v1::{metric, number_data_point};
use culprit_otlp::proto::resource::v1::Resource;
use culprit_otlp::proto::trace::v1::{span, status, Span};
use culprit_sim::{simulate, Scenario, SimConfig, SimRun};

pub const NANOS: i64 = 1_000_000_000;

/// Short enough for debug-mode tests, long enough for stable statistics.
pub fn test_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        normal_minutes: 8,
        fault_minutes: 4,
        ..SimConfig::default()
    }
}

pub fn run(s: Scenario) -> SimRun {
    simulate(s, &test_config(7))
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

pub fn service(r: &Option<Resource>) -> String {
    attr(&r.as_ref().expect("resource").attributes, "service.name")
        .expect("service.name")
        .to_string()
}

pub fn spans(run: &SimRun) -> Vec<(String, &Span)> {
    let mut out = Vec::new();
    for req in &run.traces {
        for rs in &req.resource_spans {
            let svc = service(&rs.resource);
            for ss in &rs.scope_spans {
                out.extend(ss.spans.iter().map(|s| (svc.clone(), s)));
            }
        }
    }
    out
}

pub fn logs(run: &SimRun) -> Vec<(String, &LogRecord)> {
    let mut out = Vec::new();
    for req in &run.logs {
        for rl in &req.resource_logs {
            let svc = service(&rl.resource);
            for sl in &rl.scope_logs {
                out.extend(sl.log_records.iter().map(|l| (svc.clone(), l)));
            }
        }
    }
    out
}

/// `(time, value)` of every point of gauge `name` on any pod of `svc`.
pub fn gauge(run: &SimRun, svc: &str, name: &str) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for req in &run.metrics {
        for rm in &req.resource_metrics {
            if service(&rm.resource) != svc {
                continue;
            }
            for m in rm
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .filter(|m| m.name == name)
            {
                let Some(metric::Data::Gauge(g)) = &m.data else {
                    panic!("{name} is not a gauge")
                };
                for p in &g.data_points {
                    let v = match p.value {
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        None => panic!("point without value"),
                    };
                    out.push((p.time_unix_nano as i64, v));
                }
            }
        }
    }
    out
}

pub fn body(l: &LogRecord) -> &str {
    match l.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s,
        _ => "",
    }
}

pub fn is_error(s: &Span) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.code == status::StatusCode::Error as i32)
}

pub fn is_server(s: &Span) -> bool {
    s.kind == span::SpanKind::Server as i32
}

pub fn exception_types(s: &Span) -> Vec<&str> {
    s.events
        .iter()
        .filter(|e| e.name == "exception")
        .filter_map(|e| attr(&e.attributes, "exception.type"))
        .collect()
}

pub fn duration_ms(s: &Span) -> f64 {
    (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6
}

pub fn fault_start_ns(run: &SimRun) -> i64 {
    run.label.fault_start_unix_s * NANOS
}

pub fn in_fault(run: &SimRun, t_ns: u64) -> bool {
    t_ns as i64 >= fault_start_ns(run)
}

pub fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (n, sum) = v
        .into_iter()
        .fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    assert!(n > 0, "mean of nothing");
    sum / n as f64
}

pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Server-span durations of `svc` split into (normal, fault).
pub fn server_latencies(run: &SimRun, svc: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut normal, mut fault) = (Vec::new(), Vec::new());
    for (s, sp) in spans(run) {
        if s == svc && is_server(sp) {
            if in_fault(run, sp.start_time_unix_nano) {
                &mut fault
            } else {
                &mut normal
            }
            .push(duration_ms(sp));
        }
    }
    (normal, fault)
}

/// Error ratio of `svc`'s server spans, split into (normal, fault).
pub fn server_error_ratio(run: &SimRun, svc: &str) -> (f64, f64) {
    let mut c = [[0usize; 2]; 2];
    for (s, sp) in spans(run) {
        if s == svc && is_server(sp) {
            let f = usize::from(in_fault(run, sp.start_time_unix_nano));
            c[f][0] += 1;
            c[f][1] += usize::from(is_error(sp));
        }
    }
    (
        c[0][1] as f64 / c[0][0] as f64,
        c[1][1] as f64 / c[1][0] as f64,
    )
}

/// Gauge mean of `svc` split into (normal, fault); a point reports the 15 s before it.
pub fn gauge_means(run: &SimRun, svc: &str, name: &str) -> (f64, f64) {
    let points = gauge(run, svc, name);
    let fs = fault_start_ns(run);
    (
        mean(points.iter().filter(|(t, _)| *t <= fs).map(|(_, v)| *v)),
        mean(points.iter().filter(|(t, _)| *t > fs).map(|(_, v)| *v)),
    )
}

/// Log bodies of `svc` at `severity_text` containing `needle`, split into (normal, fault) counts.
pub fn log_count(run: &SimRun, svc: &str, severity_text: &str, needle: &str) -> (usize, usize) {
    let mut c = (0, 0);
    for (s, l) in logs(run) {
        if s == svc && l.severity_text == severity_text && body(l).contains(needle) {
            if in_fault(run, l.time_unix_nano) {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
    }
    c
}

pub fn rfc3339_to_unix(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .timestamp()
}
