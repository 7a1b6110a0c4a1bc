//! Per-pod gauges every 15 s, derived from the simulated traffic plus each scenario's
//! resource-level symptoms (CPU, memory, connection pool).

use crate::changes::Versions;
use crate::otlp::{resource, scope};
use crate::scenario::{FaultWindow, Scenario, NANOS};
use crate::topology::Svc;
use crate::traffic::{Pod, PodWindow, METRIC_INTERVAL_S};
use culprit_otlp::build::{self, Number};
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::metrics::v1::{Metric, NumberDataPoint};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const CPU: usize = 0;
const MEMORY: usize = 1;
const REQUEST_RATE: usize = 2;
const ERROR_RATE: usize = 3;
const LATENCY_P99: usize = 4;
const POOL_IN_USE: usize = 5;
const POOL_MAX: usize = 6;

/// Name and unit of every gauge, indexed by the constants above.
pub(crate) const GAUGES: [(&str, &str); 7] = [
    ("cpu.utilization", "1"),
    ("memory.usage_bytes", "By"),
    ("http.server.request_rate", "{request}/s"),
    ("http.server.error_rate", "1"),
    ("http.server.latency_p99_ms", "ms"),
    ("db.pool.in_use", "{connection}"),
    ("db.pool.max", "{connection}"),
];

const POOL_SIZE: i64 = 20;

pub(crate) struct MetricParams<'a> {
    pub scenario: Scenario,
    pub window: FaultWindow,
    pub start_ns: i64,
    pub end_ns: i64,
    pub batch_ns: i64,
    pub versions: &'a Versions,
}

pub(crate) fn simulate_metrics(
    p: &MetricParams<'_>,
    pods: &[Pod],
    windows: &[PodWindow],
    mut rng: ChaCha8Rng,
) -> Vec<ExportMetricsServiceRequest> {
    let n_pods = pods.len();
    let n_windows = windows.len() / n_pods.max(1);
    let n_batches = ((p.end_ns - p.start_ns + p.batch_ns - 1) / p.batch_ns).max(1) as usize;
    // [batch][pod][gauge] -> points
    let mut points: Vec<Vec<[Vec<NumberDataPoint>; 7]>> =
        vec![vec![Default::default(); n_pods]; n_batches];
    let mut normal = move || -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };

    for w in 0..n_windows {
        let t = p.start_ns + (w as i64 + 1) * METRIC_INTERVAL_S * NANOS;
        // A point reports the interval that ends at its timestamp.
        let state_t = t - 1;
        let batch = (((t - 1 - p.start_ns) / p.batch_ns) as usize).min(n_batches - 1);
        for (i, pod) in pods.iter().enumerate() {
            let s = &windows[w * n_pods + i];
            let svc = pod.svc;
            let rate = f64::from(s.requests) / METRIC_INTERVAL_S as f64;
            let out = &mut points[batch][i];
            let mut put = |g: usize, v: Number| {
                out[g].push(build::point(t as u64, v, Vec::new()));
            };

            let (idle, per_rps) = svc.cpu_profile();
            let cpu = idle + per_rps * rate + 0.012 * normal();
            let cpu = cpu + cpu_symptom(p.scenario, svc, state_t, &p.window, cpu);
            put(CPU, Number::Double(round(cpu.clamp(0.005, 1.0), 4)));

            let (base, limit) = svc.memory_profile();
            // Allocation churn gives a gentle sawtooth around the steady size.
            let churn = 0.03 * ((w as f64 * 0.7 + i as f64).sin());
            let mib = base * (1.0 + churn) + 2.0 * normal();
            let mib = mib + (limit - mib) * p.scenario.memory_pressure(svc, state_t, &p.window);
            put(MEMORY, Number::Int((mib.min(limit) * 1_048_576.0) as i64));

            put(REQUEST_RATE, Number::Double(round(rate, 3)));
            let error_rate = if s.requests == 0 {
                0.0
            } else {
                f64::from(s.errors) / f64::from(s.requests)
            };
            put(ERROR_RATE, Number::Double(round(error_rate, 4)));
            if let Some(p99) = p99(&s.durations_ms) {
                put(LATENCY_P99, Number::Double(round(f64::from(p99), 2)));
            }

            // Only postgres-db's caller holds a connection pool.
            if svc == Svc::Inventory {
                let mut in_use = 2.0 + 0.4 * rate + 0.8 * normal();
                if p.scenario == Scenario::DbPoolExhaustion && p.window.contains(state_t) {
                    let r = (p.window.ramp(state_t - 20 * NANOS, 60.0) * 1.3).min(1.0);
                    in_use += (POOL_SIZE as f64 - in_use) * r;
                }
                let in_use = (in_use.round() as i64).clamp(0, POOL_SIZE);
                put(POOL_IN_USE, Number::Int(in_use));
                put(POOL_MAX, Number::Int(POOL_SIZE));
            }
        }
    }

    let mut requests = Vec::new();
    for (b, per_pod) in points.into_iter().enumerate() {
        let batch_start = p.start_ns + b as i64 * p.batch_ns;
        let mut resource_metrics = Vec::new();
        for (pod, gauges) in pods.iter().zip(per_pod) {
            let metrics: Vec<Metric> = gauges
                .into_iter()
                .enumerate()
                .filter(|(_, pts)| !pts.is_empty())
                .map(|(g, points)| build::gauge(GAUGES[g].0, GAUGES[g].1, points))
                .collect();
            if metrics.is_empty() {
                continue;
            }
            let version = p.versions.at(pod.svc, batch_start);
            let resource = resource(pod.svc.name(), version, &pod.name);
            resource_metrics.push(build::resource_metrics(resource, scope(), metrics));
        }
        if !resource_metrics.is_empty() {
            requests.push(build::metrics_request(resource_metrics));
        }
    }
    requests
}

/// Extra CPU utilisation a scenario causes on `svc`, given its traffic-driven level `cpu`.
fn cpu_symptom(s: Scenario, svc: Svc, t: i64, w: &FaultWindow, cpu: f64) -> f64 {
    if !w.contains(t) {
        return 0.0;
    }
    match (s, svc) {
        (Scenario::DeployCpuSpike, Svc::Inventory) => (0.95 - cpu) * w.ramp(t, 45.0),
        (Scenario::DbPoolExhaustion, Svc::PostgresDb) => 0.4 * w.ramp(t, 60.0),
        // The collector works ever harder as the heap fills.
        (Scenario::MemoryLeak, Svc::Cart) => 0.3 * w.progress(t),
        _ => 0.0,
    }
}

/// Rounds to `decimals` places, as exporters print them; short decimals also survive a JSON
/// round trip bit for bit.
fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

fn p99(durations: &[f32]) -> Option<f32> {
    if durations.is_empty() {
        return None;
    }
    let mut v = durations.to_vec();
    let k = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    Some(*x)
}

#[cfg(test)]
mod tests {
    use super::p99;

    #[test]
    fn p99_picks_the_value_below_which_99_percent_fall() {
        let v: Vec<f32> = (1..=200).map(|x| x as f32).collect();
        assert_eq!(p99(&v), Some(198.0));
        assert_eq!(p99(&[5.0]), Some(5.0));
        assert_eq!(p99(&[]), None);
    }
}
