//! The incident scenarios: what each one does to which service, and when.

use crate::topology::Svc;
use std::fmt;
use std::str::FromStr;

/// One labelled incident with a single root-cause service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// A deployment on `inventory` pins its CPU; it slows down and its callers time out.
    DeployCpuSpike,
    /// A config change on `auth` cuts its identity-provider timeout from 500 to 50 ms; auth
    /// fails, and callers' retries triple its request rate.
    ConfigTimeout,
    /// A deployment on `cart` leaks memory: growing heap, GC pauses, then OOM errors.
    MemoryLeak,
    /// `postgres-db` slows down, so the connection pool of its caller `inventory` runs dry.
    DbPoolExhaustion,
    /// `payment` starts throwing an exception type never seen before, with no change event.
    NewException,
    /// `redis-cache` becomes 20x slower without failing; cart and checkout slow down.
    DependencyLatency,
    /// A release batch: cart, checkout and frontend deploy within a few minutes; only checkout's
    /// new version is defective (it fails some orders with an error never seen before and runs
    /// slower). The harmless deploys sit next to it in the call graph, one as its caller (which
    /// relays its failures) and one as its callee.
    BatchRelease,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario '{0}' (expected one of: {names})", names = Scenario::names().join(", "))]
pub struct UnknownScenario(pub String);

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::DeployCpuSpike,
        Scenario::ConfigTimeout,
        Scenario::MemoryLeak,
        Scenario::DbPoolExhaustion,
        Scenario::NewException,
        Scenario::DependencyLatency,
        Scenario::BatchRelease,
    ];

    /// The kebab-case name used on the command line and in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::DeployCpuSpike => "deploy-cpu-spike",
            Scenario::ConfigTimeout => "config-timeout",
            Scenario::MemoryLeak => "memory-leak",
            Scenario::DbPoolExhaustion => "db-pool-exhaustion",
            Scenario::NewException => "new-exception",
            Scenario::DependencyLatency => "dependency-latency",
            Scenario::BatchRelease => "batch-release",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Scenario::ALL.iter().map(|s| s.as_str()).collect()
    }

    /// The service whose fault explains every symptom of the scenario.
    pub fn root_cause_service(self) -> &'static str {
        self.root_cause().name()
    }

    pub(crate) fn root_cause(self) -> Svc {
        match self {
            Scenario::DeployCpuSpike => Svc::Inventory,
            Scenario::ConfigTimeout => Svc::Auth,
            Scenario::MemoryLeak => Svc::Cart,
            Scenario::DbPoolExhaustion => Svc::PostgresDb,
            Scenario::NewException => Svc::Payment,
            Scenario::DependencyLatency => Svc::RedisCache,
            Scenario::BatchRelease => Svc::Checkout,
        }
    }

    /// What happens, in a sentence or two (the label's description).
    pub fn description(self) -> &'static str {
        match self {
            Scenario::DeployCpuSpike => {
                "Deployment of inventory v2.3.1 drives inventory CPU to ~95%; inventory latency rises \
                 about 5x, checkout and frontend slow down and log 'timeout calling inventory'."
            }
            Scenario::ConfigTimeout => {
                "Config change on auth lowers its identity-provider timeout_ms from 500 to 50; auth \
                 requests fail with TimeoutException and retries from payment and frontend triple \
                 auth's request rate."
            }
            Scenario::MemoryLeak => {
                "Deployment of cart v1.15.0 leaks memory: cart memory grows linearly towards its \
                 limit, GC pauses make its latency spiky, and OutOfMemoryError failures follow."
            }
            Scenario::DbPoolExhaustion => {
                "postgres-db queries slow down about 8x; inventory's connection pool to postgres-db \
                 hits its maximum, inventory fails with 'could not acquire connection' and checkout \
                 errors follow."
            }
            Scenario::NewException => {
                "payment starts throwing a never-seen CurrencyPrecisionException on ~30% of charges \
                 (no change event); checkout and frontend fail those orders."
            }
            Scenario::DependencyLatency => {
                "redis-cache latency rises about 20x without errors; cart and checkout latency rise \
                 and cart logs 'slow cache' warnings."
            }
            Scenario::BatchRelease => {
                "Release batch: cart v1.14.1, checkout v1.9.0 and frontend v4.13.0 deploy within \
                 about three minutes. Only checkout's new version is defective: it was built \
                 against a newer pricing library, fails ~15% of orders with NoSuchMethodError and \
                 runs about 2x slower; frontend relays the failures. The cart and frontend \
                 releases change nothing."
            }
        }
    }

    /// How the scenario changes one server-side operation of `svc` at time `t_ns`.
    pub(crate) fn effect(self, svc: Svc, t_ns: i64, w: &FaultWindow) -> Effect {
        let mut e = Effect::default();
        if !w.contains(t_ns) || svc_is_untouched(self, svc) {
            if self == Scenario::ConfigTimeout && svc == Svc::Auth {
                e.self_timeout_ms = Some(500.0);
            }
            return e;
        }
        let p = w.progress(t_ns);
        match (self, svc) {
            (Scenario::DeployCpuSpike, Svc::Inventory) => {
                let r = w.ramp(t_ns, 45.0);
                e.latency_factor = 1.0 + 4.0 * r;
                // A saturated CPU also makes latency far less predictable.
                e.extra_sigma = 0.3 * r;
            }
            (Scenario::ConfigTimeout, Svc::Auth) => e.self_timeout_ms = Some(50.0),
            (Scenario::MemoryLeak, Svc::Cart) => {
                e.latency_factor = 1.0 + 0.5 * p;
                e.spike_prob = 0.03 + 0.3 * p;
                e.spike_ms = 120.0 + 600.0 * p;
                if p > 0.6 {
                    e.fail_prob = (p - 0.6) / 0.4 * 0.3;
                    e.failure = Some(OwnFault::OutOfMemory);
                }
            }
            (Scenario::DbPoolExhaustion, Svc::PostgresDb) => {
                let r = w.ramp(t_ns, 60.0);
                e.latency_factor = 1.0 + 7.0 * r;
                e.extra_sigma = 0.2 * r;
            }
            (Scenario::DbPoolExhaustion, Svc::Inventory) => {
                // The pool fills a little after the database slows down.
                let r = w.ramp(t_ns - 20 * NANOS, 60.0);
                e.extra_ms = 90.0 * r;
                e.fail_prob = 0.4 * r;
                e.failure = Some(OwnFault::PoolExhausted);
            }
            (Scenario::NewException, Svc::Payment) => {
                e.fail_prob = 0.3 * w.ramp(t_ns, 20.0);
                e.failure = Some(OwnFault::NewException);
            }
            (Scenario::DependencyLatency, Svc::RedisCache) => {
                let r = w.ramp(t_ns, 30.0);
                e.latency_factor = 1.0 + 19.0 * r;
                e.extra_sigma = 0.2 * r;
            }
            (Scenario::BatchRelease, Svc::Checkout) => {
                // The new pods take over traffic during the first half minute of the rollout.
                let r = w.ramp(t_ns, 30.0);
                e.latency_factor = 1.0 + r;
                e.fail_prob = 0.15 * r;
                e.failure = Some(OwnFault::IncompatibleBuild);
            }
            _ => {}
        }
        e
    }

    /// Fraction (0..1) of the way from a service's steady memory to its limit at `t_ns`.
    pub(crate) fn memory_pressure(self, svc: Svc, t_ns: i64, w: &FaultWindow) -> f64 {
        if self == Scenario::MemoryLeak && svc == Svc::Cart && w.contains(t_ns) {
            0.97 * w.progress(t_ns)
        } else {
            0.0
        }
    }
}

fn svc_is_untouched(s: Scenario, svc: Svc) -> bool {
    !(svc == s.root_cause() || (s == Scenario::DbPoolExhaustion && svc == Svc::Inventory))
}

pub(crate) const NANOS: i64 = 1_000_000_000;

/// Failures a scenario makes a service raise itself (as opposed to failures of its callees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnFault {
    OutOfMemory,
    PoolExhausted,
    NewException,
    /// A release linked against a library version it was not built for.
    IncompatibleBuild,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Effect {
    /// Multiplies the operation's own time.
    pub latency_factor: f64,
    pub extra_sigma: f64,
    /// Mean of an exponentially distributed wait added to the operation's own time.
    pub extra_ms: f64,
    /// Probability and size of a pause (GC) added to the own time.
    pub spike_prob: f64,
    pub spike_ms: f64,
    /// The operation fails with a timeout when its own time would exceed this.
    pub self_timeout_ms: Option<f64>,
    pub fail_prob: f64,
    pub failure: Option<OwnFault>,
}

impl Default for Effect {
    fn default() -> Self {
        Effect {
            latency_factor: 1.0,
            extra_sigma: 0.0,
            extra_ms: 0.0,
            spike_prob: 0.0,
            spike_ms: 0.0,
            self_timeout_ms: None,
            fail_prob: 0.0,
            failure: None,
        }
    }
}

/// When the symptoms last, in Unix nanoseconds (`[start, end)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultWindow {
    pub start_ns: i64,
    pub end_ns: i64,
}

impl FaultWindow {
    pub fn contains(&self, t: i64) -> bool {
        t >= self.start_ns && t < self.end_ns
    }

    /// 0 at the start of the window, 1 at its end.
    pub fn progress(&self, t: i64) -> f64 {
        let len = (self.end_ns - self.start_ns).max(1) as f64;
        ((t - self.start_ns) as f64 / len).clamp(0.0, 1.0)
    }

    /// Rises linearly from 0 to 1 over the first `secs` seconds after the start.
    pub fn ramp(&self, t: i64, secs: f64) -> f64 {
        ((t - self.start_ns) as f64 / (secs * NANOS as f64)).clamp(0.0, 1.0)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = UnknownScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| UnknownScenario(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_display() {
        for s in Scenario::ALL {
            assert_eq!(s.to_string().parse::<Scenario>(), Ok(s));
        }
        let err = "cpu".parse::<Scenario>().unwrap_err();
        assert!(err.to_string().contains("deploy-cpu-spike"), "{err}");
    }

    #[test]
    fn effects_only_apply_inside_the_fault_window() {
        let w = FaultWindow {
            start_ns: 100 * NANOS,
            end_ns: 400 * NANOS,
        };
        let before = Scenario::DeployCpuSpike.effect(Svc::Inventory, 50 * NANOS, &w);
        let during = Scenario::DeployCpuSpike.effect(Svc::Inventory, 300 * NANOS, &w);
        assert_eq!(before, Effect::default());
        assert!((during.latency_factor - 5.0).abs() < 1e-9);
        let bystander = Scenario::DeployCpuSpike.effect(Svc::Catalog, 300 * NANOS, &w);
        assert_eq!(bystander, Effect::default());
    }
}
