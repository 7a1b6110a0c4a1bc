//! Each scenario really moves its root cause's signals in the fault window, and the symptoms
//! reach the callers.

mod common;

use common::*;
use culprit_sim::{simulate, Scenario, SimConfig};

#[test]
fn deploy_cpu_spike_pins_inventory_cpu_and_callers_log_inventory_timeouts() {
    let run = run(Scenario::DeployCpuSpike);
    let (cpu_normal, cpu_fault) = gauge_means(&run, "inventory", "cpu.utilization");
    assert!(
        cpu_fault > 2.0 * cpu_normal,
        "inventory cpu {cpu_normal:.3} -> {cpu_fault:.3}"
    );
    let late_cpu = gauge(&run, "inventory", "cpu.utilization")
        .last()
        .map(|p| p.1)
        .unwrap_or(0.0);
    assert!(late_cpu > 0.9, "inventory cpu at the end {late_cpu:.3}");

    let (normal, fault) = server_latencies(&run, "inventory");
    let (n, f) = (median(normal), median(fault));
    assert!(f > 3.0 * n, "inventory median latency {n:.1} -> {f:.1} ms");
    let (n, f) = (
        median(server_latencies(&run, "checkout").0),
        median(server_latencies(&run, "checkout").1),
    );
    assert!(
        f > n + 50.0,
        "checkout inherits inventory's latency: {n:.1} -> {f:.1} ms"
    );

    for caller in ["checkout", "frontend"] {
        let (before, during) = log_count(&run, caller, "ERROR", "timeout calling inventory");
        assert_eq!(
            before, 0,
            "{caller} logged inventory timeouts before the fault"
        );
        assert!(
            during > 0,
            "{caller} never logged 'timeout calling inventory'"
        );
    }
    // Inventory itself is slow, not failing: the errors surface at its callers.
    let (_, inventory_errors) = server_error_ratio(&run, "inventory");
    let (_, checkout_errors) = server_error_ratio(&run, "checkout");
    assert!(
        checkout_errors > inventory_errors,
        "{checkout_errors} vs {inventory_errors}"
    );
}

#[test]
fn config_timeout_fails_auth_and_retries_triple_its_request_rate() {
    let run = run(Scenario::ConfigTimeout);
    let (normal, fault) = server_error_ratio(&run, "auth");
    assert!(normal < 0.01, "auth normal error ratio {normal}");
    assert!(fault > 0.4, "auth fault error ratio {fault}");

    let timeouts_in_fault = spans(&run)
        .into_iter()
        .filter(|(s, sp)| s == "auth" && in_fault(&run, sp.start_time_unix_nano))
        .filter(|(_, sp)| exception_types(sp).contains(&"TimeoutException"))
        .count();
    assert!(
        timeouts_in_fault > 100,
        "{timeouts_in_fault} auth TimeoutException spans"
    );

    let (rate_normal, rate_fault) = gauge_means(&run, "auth", "http.server.request_rate");
    assert!(
        rate_fault > 2.2 * rate_normal,
        "auth request rate {rate_normal:.1} -> {rate_fault:.1}"
    );
    for caller in ["payment", "frontend"] {
        let (_, during) = log_count(&run, caller, "WARN", "retrying call to auth");
        assert!(during > 20, "{caller} logged {during} retries");
    }
}

#[test]
fn memory_leak_fills_cart_memory_makes_latency_spiky_then_logs_oom() {
    let run = run(Scenario::MemoryLeak);
    let memory = gauge(&run, "cart", "memory.usage_bytes");
    let (normal, _) = gauge_means(&run, "cart", "memory.usage_bytes");
    let last = memory
        .iter()
        .max_by_key(|p| p.0)
        .map(|p| p.1)
        .unwrap_or(0.0);
    assert!(
        last > 2.5 * normal,
        "cart memory {normal:.0} -> {last:.0} bytes"
    );
    assert!(
        last > 0.9 * 1024.0 * 1_048_576.0,
        "cart memory ends near its 1 GiB limit: {last:.0}"
    );
    // Linear growth: the fault window's points rise monotonically apart from noise.
    let fs = fault_start_ns(&run);
    let fault_points: Vec<f64> = memory.iter().filter(|p| p.0 > fs).map(|p| p.1).collect();
    let half = fault_points.len() / 2;
    assert!(
        mean(fault_points[half..].iter().copied()) > mean(fault_points[..half].iter().copied())
    );

    let (p99_normal, p99_fault) = gauge_means(&run, "cart", "http.server.latency_p99_ms");
    assert!(
        p99_fault > 3.0 * p99_normal,
        "cart p99 {p99_normal:.1} -> {p99_fault:.1} ms"
    );

    let fault_len = run.label.fault_end_unix_s - run.label.fault_start_unix_s;
    let oom_times: Vec<i64> = logs(&run)
        .into_iter()
        .filter(|(s, l)| {
            s == "cart" && l.severity_text == "ERROR" && body(l).contains("OutOfMemoryError")
        })
        .map(|(_, l)| l.time_unix_nano as i64 / NANOS)
        .collect();
    assert!(
        !oom_times.is_empty(),
        "cart never logged an OutOfMemoryError"
    );
    let first = oom_times.iter().min().copied().unwrap_or(0);
    assert!(
        first >= run.label.fault_start_unix_s + fault_len / 2,
        "OOM errors come late in the leak, not at {first}"
    );
}

#[test]
fn db_pool_exhaustion_maxes_inventory_pool_and_fails_inventory_then_checkout() {
    let run = run(Scenario::DbPoolExhaustion);
    let in_use = gauge(&run, "inventory", "db.pool.in_use");
    let max = gauge(&run, "inventory", "db.pool.max");
    let fs = fault_start_ns(&run);
    let pool_max = max.first().map(|p| p.1).unwrap_or(0.0);
    assert!(
        in_use
            .iter()
            .filter(|p| p.0 <= fs)
            .all(|p| p.1 < pool_max * 0.5),
        "pool busy before the fault"
    );
    assert!(
        in_use.iter().filter(|p| p.0 > fs).any(|p| p.1 >= pool_max),
        "pool never hit its max"
    );

    let (pg_normal, pg_fault) = server_latencies(&run, "postgres-db");
    let (n, f) = (median(pg_normal), median(pg_fault));
    assert!(f > 4.0 * n, "postgres-db latency {n:.1} -> {f:.1} ms");
    let (n, f) = (
        median(server_latencies(&run, "inventory").0),
        median(server_latencies(&run, "inventory").1),
    );
    assert!(f > 2.0 * n, "inventory latency {n:.1} -> {f:.1} ms");

    let (_, inventory_errors) = server_error_ratio(&run, "inventory");
    assert!(
        inventory_errors > 0.15,
        "inventory fault error ratio {inventory_errors}"
    );
    let (before, during) = log_count(&run, "inventory", "ERROR", "could not acquire connection");
    assert_eq!(before, 0);
    assert!(during > 20, "{during} pool errors logged");
    let (_, during) = log_count(&run, "checkout", "ERROR", "call to inventory failed");
    assert!(during > 20, "checkout logged {during} inventory failures");
    // The database itself never fails: the root cause shows as latency only.
    let (_, pg_errors) = server_error_ratio(&run, "postgres-db");
    assert!(pg_errors < 0.01, "postgres-db error ratio {pg_errors}");
}

#[test]
fn new_exception_type_appears_only_after_fault_start_on_about_30_percent_of_payments() {
    let run = run(Scenario::NewException);
    let new_type = "com.shop.payment.CurrencyPrecisionException";
    let mut seen_before = 0;
    let (mut payments, mut failing) = (0usize, 0usize);
    for (s, sp) in spans(&run) {
        let has = exception_types(sp).contains(&new_type);
        if !in_fault(&run, sp.start_time_unix_nano) {
            seen_before += usize::from(has);
        } else if s == "payment" && is_server(sp) {
            payments += 1;
            failing += usize::from(has);
        }
    }
    assert_eq!(seen_before, 0);
    let ratio = failing as f64 / payments as f64;
    assert!(
        (0.2..0.4).contains(&ratio),
        "{failing}/{payments} payments threw {new_type}"
    );

    let (before, during) = log_count(&run, "payment", "ERROR", new_type);
    assert_eq!(before, 0);
    assert!(during > 20);
    let stack_trace_logged = logs(&run)
        .iter()
        .any(|(_, l)| body(l).contains(new_type) && body(l).contains("\n\tat "));
    assert!(
        stack_trace_logged,
        "the new exception's log carries a stack trace"
    );
    let (_, during) = log_count(&run, "checkout", "ERROR", "call to payment failed");
    assert!(during > 20, "checkout logged {during} payment failures");
    assert!(
        run.changes.iter().all(|c| c["service"] != "payment"),
        "no change explains it"
    );
}

#[test]
fn dependency_latency_slows_redis_cart_and_checkout_without_errors() {
    let run = run(Scenario::DependencyLatency);
    let (n, f) = (
        median(server_latencies(&run, "redis-cache").0),
        median(server_latencies(&run, "redis-cache").1),
    );
    assert!(f > 10.0 * n, "redis-cache latency {n:.2} -> {f:.2} ms");
    for svc in ["cart", "checkout"] {
        let (normal, fault) = server_latencies(&run, svc);
        let (n, f) = (median(normal), median(fault));
        assert!(f > n + 10.0, "{svc} latency {n:.1} -> {f:.1} ms");
    }
    let (_, redis_errors) = server_error_ratio(&run, "redis-cache");
    assert!(redis_errors < 0.01, "redis-cache fails: {redis_errors}");
    let (before, during) = log_count(&run, "cart", "WARN", "slow cache");
    assert_eq!(before, 0);
    assert!(during > 5, "{during} slow-cache warnings");
}

#[test]
fn normal_period_errors_stay_at_the_background_rate() {
    let config = SimConfig {
        seed: 11,
        normal_minutes: 30,
        fault_minutes: 1,
        ..SimConfig::default()
    };
    let run = simulate(Scenario::NewException, &config);
    let mut traces = std::collections::HashMap::<&[u8], bool>::new();
    let (mut total, mut errors) = (0usize, 0usize);
    for (_, sp) in spans(&run) {
        if in_fault(&run, sp.start_time_unix_nano) {
            continue;
        }
        total += 1;
        errors += usize::from(is_error(sp));
        *traces.entry(&sp.trace_id).or_default() |= is_error(sp);
    }
    let failed = traces.values().filter(|e| **e).count() as f64 / traces.len() as f64;
    assert!(
        (0.001..0.0035).contains(&failed),
        "{:.4} of normal traces failed",
        failed
    );
    let span_ratio = errors as f64 / total as f64;
    assert!(
        span_ratio < 0.004,
        "normal error-span ratio {span_ratio:.4}"
    );
    for svc in culprit_sim::SERVICES {
        let (normal, _) = server_error_ratio(&run, svc);
        assert!(normal < 0.01, "{svc} normal error ratio {normal}");
    }
}

#[test]
fn batch_release_deploys_three_services_and_only_checkouts_new_version_misbehaves() {
    let run = run(Scenario::BatchRelease);
    let fault_start = run.label.fault_start_unix_s;
    let deploys: Vec<(&str, i64, &str)> = run
        .changes
        .iter()
        .filter(|c| c["type"] == "deployment")
        .map(|c| {
            let at = rfc3339_to_unix(c["time"].as_str().expect("time"));
            let version = c["attributes"]["version"].as_str().expect("version");
            (c["service"].as_str().expect("service"), at, version)
        })
        // The batch's releases (the scenario's description names their versions); the
        // background's own routine deploys may fall near the fault too.
        .filter(|(_, _, version)| ["1.14.1", "1.9.0", "4.13.0"].contains(version))
        .collect();
    assert!(
        deploys
            .iter()
            .all(|(_, at, _)| (fault_start - at).abs() <= 300),
        "the batch lies within five minutes of the fault: {deploys:?}"
    );
    let released: Vec<&str> = deploys.iter().map(|d| d.0).collect();
    assert_eq!(released, ["cart", "checkout", "frontend"], "{deploys:?}");
    let checkout_at = deploys[1].1;

    // Checkout's new pods fail with an error never seen before, and only they do.
    let new_version_failures: Vec<(String, bool)> = run
        .traces
        .iter()
        .flat_map(|req| &req.resource_spans)
        .filter(|rs| service(&rs.resource) == "checkout")
        .flat_map(|rs| {
            let version = attr(
                &rs.resource.as_ref().expect("resource").attributes,
                "service.version",
            )
            .expect("service.version")
            .to_string();
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .filter(|sp| exception_types(sp).contains(&"java.lang.NoSuchMethodError"))
                .map(move |sp| {
                    (
                        version.clone(),
                        sp.start_time_unix_nano as i64 / NANOS >= checkout_at,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        new_version_failures.len() > 20,
        "{} failures",
        new_version_failures.len()
    );
    assert!(
        new_version_failures
            .iter()
            .all(|(v, after)| v == "1.9.0" && *after),
        "failures outside the new version"
    );
    let (normal, fault) = server_error_ratio(&run, "checkout");
    assert!(
        normal < 0.01 && fault > 0.08,
        "checkout error ratio {normal} -> {fault}"
    );

    // The harmless releases change nothing of their own.
    let (normal, fault) = server_error_ratio(&run, "cart");
    assert!(fault < 0.01, "cart error ratio {normal} -> {fault}");
    let (n, f) = server_latencies(&run, "cart");
    let (n, f) = (median(n), median(f));
    assert!(f < 1.3 * n, "cart median latency {n:.1} -> {f:.1} ms");
    let (_, relayed) = log_count(&run, "frontend", "ERROR", "checkout");
    assert!(relayed > 0, "frontend never relayed checkout's failures");
}
