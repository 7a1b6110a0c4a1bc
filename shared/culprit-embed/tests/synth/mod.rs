//! Synthetic "normal" telemetry for tests and measurements, plus a few injected anomalies.
#![allow(dead_code)]

use culprit_core::{
    ChangeEvent, ChangeKind, Event, EventBody, LogEvent, LogLevel, MetricPoint, Resource, SpanEvent,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const T0: i64 = 1_700_000_000_000_000_000;
const SERVICES: [&str; 6] = [
    "frontend", "cart", "checkout", "payment", "catalog", "shipping",
];

pub struct Op {
    pub service: usize,
    pub name: String,
    pub median_ms: f64,
    pub error_rate: f64,
    pub callees: Vec<usize>,
}

pub fn ops() -> Vec<Op> {
    let mut v = Vec::new();
    let names = ["GET /", "POST /add", "GET /list", "rpc Get", "db.query"];
    for (s, _) in SERVICES.iter().enumerate() {
        for (k, n) in names.iter().enumerate().take(3 + s % 3) {
            v.push(Op {
                service: s,
                name: format!(
                    "{n}{}",
                    if k > 2 {
                        format!(" {s}")
                    } else {
                        String::new()
                    }
                ),
                median_ms: 2.0 * (1 + s) as f64 * (1 + k) as f64,
                error_rate: if s == 3 { 0.02 } else { 0.0 },
                callees: Vec::new(),
            });
        }
    }
    // A small call tree: frontend ops call cart/checkout/catalog, checkout calls payment/shipping.
    let by_service =
        |s: usize| -> Vec<usize> { (0..v.len()).filter(|&i| v[i].service == s).collect() };
    let (f, c, ch, p, ca, sh) = (
        by_service(0),
        by_service(1),
        by_service(2),
        by_service(3),
        by_service(4),
        by_service(5),
    );
    for (i, &o) in f.iter().enumerate() {
        v[o].callees = vec![[c[0], ca[0], ch[0]][i % 3]];
    }
    v[ch[0]].callees = vec![p[0], sh[0]];
    v[c[0]].callees = vec![ca[1]];
    v
}

fn resource(service: &str, pod: usize) -> Arc<Resource> {
    Arc::new(
        Resource::new(service)
            .with_environment("prod")
            .with_instance(format!("{service}-{pod}")),
    )
}

fn hex(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    median * (sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()).exp()
}

/// `traces` traces, parents emitted before children.
pub fn spans(seed: u64, traces: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ops = ops();
    let roots: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].service == 0).collect();
    let mut out = Vec::new();
    for t in 0..traces {
        let trace_id = hex(&mut rng, 16);
        let time = T0 + t as i64 * 50_000_000;
        let root = roots[rng.random_range(0..roots.len())];
        let mut stack = vec![(root, None::<String>)];
        while let Some((o, parent)) = stack.pop() {
            let op = &ops[o];
            let span_id = hex(&mut rng, 8);
            let is_error = rng.random::<f64>() < op.error_rate;
            let ms = lognormal(&mut rng, op.median_ms, 0.25);
            out.push(Event {
                time,
                resource: resource(SERVICES[op.service], rng.random_range(0..2)),
                body: EventBody::Span(SpanEvent {
                    trace_id: trace_id.clone(),
                    span_id: span_id.clone(),
                    parent_span_id: parent,
                    name: op.name.clone(),
                    kind: if op.callees.is_empty() && o % 2 == 1 {
                        "client".into()
                    } else {
                        "server".into()
                    },
                    duration_ns: (ms * 1e6) as i64,
                    is_error,
                    error_type: is_error.then(|| "CardDeclined".to_string()),
                    attributes: BTreeMap::new(),
                }),
            });
            for &c in &op.callees {
                stack.push((c, Some(span_id.clone())));
            }
        }
    }
    out
}

/// A span like a normal one of `op_index` but with `factor` times its duration, under no parent.
pub fn slow_span(op_index: usize, factor: f64, seed: u64) -> Event {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ops = ops();
    let op = &ops[op_index];
    let ms = lognormal(&mut rng, op.median_ms, 0.25) * factor;
    Event {
        time: T0,
        resource: resource(SERVICES[op.service], 0),
        body: EventBody::Span(SpanEvent {
            trace_id: hex(&mut rng, 16),
            span_id: hex(&mut rng, 8),
            parent_span_id: None,
            name: op.name.clone(),
            kind: "server".into(),
            duration_ns: (ms * 1e6) as i64,
            is_error: false,
            error_type: None,
            attributes: BTreeMap::new(),
        }),
    }
}

const TEMPLATES: [(&str, &str, &str); 6] = [
    (
        "INFO",
        "Service#41",
        "Handled request {} for user {} in {} ms",
    ),
    ("INFO", "Repository#88", "Loaded {} rows from table items"),
    ("INFO", "Cache#12", "Cache hit ratio {} percent"),
    (
        "DEBUG",
        "Client#230",
        "Calling downstream {} with timeout {} ms",
    ),
    ("WARN", "Retry#19", "Retrying call to {} attempt {}"),
    ("INFO", "Scheduler#7", "Job {} finished successfully"),
];

fn fill(rng: &mut ChaCha8Rng, t: &str) -> String {
    let mut s = String::new();
    for (i, part) in t.split("{}").enumerate() {
        if i > 0 {
            s.push_str(&rng.random_range(1..5000).to_string());
        }
        s.push_str(part);
    }
    s
}

pub fn log_line(service: &str, level: &str, logger: &str, msg: &str, ms: u32) -> String {
    format!(
        "12:00:{:02}.{:03} {level}  c.e.{service}.{logger} {msg}",
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn log_event(service: usize, level: &str, logger: &str, msg: &str, i: usize) -> Event {
    Event {
        time: T0 + i as i64 * 10_000_000,
        resource: resource(SERVICES[service], i % 2),
        body: EventBody::Log(LogEvent {
            level: LogLevel::from_text(level),
            body: log_line(SERVICES[service], level, logger, msg, i as u32),
            trace_id: None,
            span_id: None,
            attributes: BTreeMap::new(),
            template: None,
        }),
    }
}

/// Each service uses four of the six templates with skewed frequencies.
pub fn logs(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let s = rng.random_range(0..SERVICES.len());
            let pick = (rng.random::<f64>().powi(2) * 4.0) as usize;
            let (lvl, logger, t) = TEMPLATES[(s + pick) % TEMPLATES.len()];
            let msg = fill(&mut rng, t);
            log_event(s, lvl, logger, &msg, i)
        })
        .collect()
}

/// A line of a template the service has never logged.
pub fn novel_log(service: usize, i: usize) -> Event {
    log_event(
        service,
        "ERROR",
        "Pool#77",
        &format!("Connection pool exhausted after {i} ms waiting for lease"),
        1_000_000 + i,
    )
}

/// Known template, wrong level and logger for it.
pub fn misleveled_log(service: usize, i: usize) -> Event {
    let (_, _, t) = TEMPLATES[service % TEMPLATES.len()];
    log_event(
        service,
        "ERROR",
        "Service#41",
        &t.replace("{}", "7"),
        2_000_000 + i,
    )
}

/// Per (service, pod, metric) series every 15 s with a daily cycle and noise.
pub fn metrics(seed: u64, points_per_series: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let names = [
        ("cpu_usage", 40.0),
        ("memory_bytes", 5e8),
        ("request_rate", 120.0),
    ];
    let mut out = Vec::new();
    for p in 0..points_per_series {
        let time = T0 + p as i64 * 15_000_000_000;
        let day = (time as f64 / 1e9 / 86400.0 * std::f64::consts::TAU).sin();
        for (s, svc) in SERVICES.iter().enumerate() {
            for pod in 0..2 {
                for (m, (name, base)) in names.iter().enumerate() {
                    let level = base * (1.0 + 0.1 * s as f64 + 0.05 * m as f64) * (1.0 + 0.2 * day);
                    let value = level * (1.0 + 0.05 * (rng.random::<f64>() - 0.5));
                    out.push(metric_event(svc, pod, name, value, time));
                }
            }
        }
    }
    out
}

pub fn metric_event(service: &str, pod: usize, name: &str, value: f64, time: i64) -> Event {
    Event {
        time,
        resource: resource(service, pod),
        body: EventBody::Metric(MetricPoint {
            name: name.to_string(),
            value,
            attributes: BTreeMap::new(),
        }),
    }
}

pub fn service(i: usize) -> &'static str {
    SERVICES[i % SERVICES.len()]
}

pub fn changes(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let s = rng.random_range(0..SERVICES.len());
            let deploy = rng.random::<f64>() < 0.7;
            let mut attributes = BTreeMap::new();
            if deploy {
                attributes.insert(
                    "files_changed".to_string(),
                    rng.random_range(1..12).to_string(),
                );
                attributes.insert(
                    "lines_added".to_string(),
                    rng.random_range(5..300).to_string(),
                );
                attributes.insert(
                    "lines_removed".to_string(),
                    rng.random_range(0..120).to_string(),
                );
            } else {
                attributes.insert("parameter".to_string(), "timeout_ms".to_string());
            }
            Event {
                time: T0 + i as i64 * 3_600_000_000_000 + rng.random_range(0..3_600_000_000_000i64),
                resource: resource(SERVICES[s], 0),
                body: EventBody::Change(ChangeEvent {
                    id: format!("c{i}"),
                    kind: if deploy {
                        ChangeKind::Deployment
                    } else {
                        ChangeKind::ConfigChange
                    },
                    summary: "synthetic".into(),
                    actor: Some(if deploy {
                        "ci-bot".into()
                    } else {
                        "alice".into()
                    }),
                    attributes,
                }),
            }
        })
        .collect()
}

/// Mean distance to the `k` nearest reference vectors (unit vectors: Euclidean).
pub fn knn_score(reference: &[&[f32]], q: &[f32], k: usize) -> f64 {
    let mut d: Vec<f64> = reference
        .iter()
        .map(|r| {
            r.iter()
                .zip(q)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let k = k.min(d.len()).max(1);
    d.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
    d[..k].iter().sum::<f64>() / k as f64
}

/// Probability that a random anomaly scores above a random normal (ties count half).
pub fn roc_auc(normal: &[f64], anomalous: &[f64]) -> f64 {
    let mut wins = 0.0;
    for a in anomalous {
        for n in normal {
            wins += if a > n {
                1.0
            } else if a == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (normal.len() * anomalous.len()).max(1) as f64
}
