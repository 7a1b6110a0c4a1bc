//! Generates every scenario at the default size, writes it under the temp directory and prints
//! timings, volume and each service's server-span latency and error ratio, normal vs fault.
//!
//! `cargo run --release -p culprit-sim --example sim_summary [seed]`
use culprit_otlp::proto::common::v1::any_value::Value;
use culprit_sim::{simulate, write_dir, Scenario, SimConfig, SERVICES};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let dir = std::env::temp_dir().join("culprit-sim-summary");
    for s in Scenario::ALL {
        let t = Instant::now();
        let run = simulate(s, &config);
        let generated = t.elapsed();
        let t = Instant::now();
        let files = write_dir(&run, &dir.join(s.as_str()))?;
        println!(
            "{s} (root cause {}): generated in {generated:.2?}, written in {:.2?}, {:.1} MB",
            run.label.root_cause_service,
            t.elapsed(),
            files.total_bytes as f64 / 1e6
        );
        let fault_start = (run.label.fault_start_unix_s * 1_000_000_000) as u64;
        // [service][normal|fault] -> (durations, errors)
        let mut stats = vec![[(Vec::new(), 0usize), (Vec::new(), 0usize)]; SERVICES.len()];
        for rs in run.traces.iter().flat_map(|r| &r.resource_spans) {
            let name = rs.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match &kv.value.as_ref()?.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
            });
            let Some(i) = name.and_then(|n| SERVICES.iter().position(|s| *s == n)) else {
                continue;
            };
            for sp in rs
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .filter(|sp| sp.kind == 2)
            {
                let slot = &mut stats[i][usize::from(sp.start_time_unix_nano >= fault_start)];
                slot.0
                    .push((sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / 1e6);
                slot.1 += usize::from(sp.status.as_ref().is_some_and(|st| st.code == 2));
            }
        }
        for (svc, [normal, fault]) in SERVICES.iter().zip(stats.iter_mut()) {
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            };
            let ratio = |(v, e): &(Vec<f64>, usize)| *e as f64 / v.len().max(1) as f64 * 100.0;
            let (rn, rf) = (ratio(normal), ratio(fault));
            println!(
                "  {svc:<12} median {:>7.1} -> {:>7.1} ms   errors {rn:>5.2}% -> {rf:>5.2}%",
                median(&mut normal.0),
                median(&mut fault.0),
            );
        }
    }
    Ok(())
}
