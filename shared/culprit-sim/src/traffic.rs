//! Request-level simulation: every request becomes one trace (CLIENT/SERVER span pairs across
//! services) plus the log lines the services write while serving it.

use crate::scenario::{FaultWindow, OwnFault, Scenario, NANOS};
use crate::topology::{services_on_path, Call, OpId, Protocol, Svc, ENTRY_MIX, OPS};
use culprit_otlp::build::{self, int_attr, str_attr, SpanBuilder, SpanKind};
use culprit_otlp::proto::logs::v1::LogRecord;
use culprit_otlp::proto::trace::v1::Span;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Fraction of requests that fail somewhere for no scenario-related reason.
pub(crate) const BACKGROUND_ERROR_RATE: f64 = 0.002;
/// Traces (and their logs) exported per second, like a rate-limiting head sampler: above this
/// rate requests are sampled uniformly, so latency and error ratios stay unbiased while the
/// volume stays modest. Metrics always count every request.
pub const EXPORTED_TRACES_PER_SECOND: f64 = 6.0;
/// Metrics are scraped on this period.
pub(crate) const METRIC_INTERVAL_S: i64 = 15;

const BACKGROUND_FAULTS: [(&str, &str); 3] = [
    ("ConnectionResetException", "connection reset by peer"),
    ("IllegalStateException", "request context already closed"),
    ("NullPointerException", "null value for field 'locale'"),
];

const NEW_EXCEPTION_TYPE: &str = "com.shop.payment.CurrencyPrecisionException";
const NEW_EXCEPTION_STACK: &str =
    "\tat com.shop.payment.money.Amount.toMinorUnits(Amount.java:88)\n\
     \tat com.shop.payment.gateway.ChargeRequest.build(ChargeRequest.java:41)\n\
     \tat com.shop.payment.ChargeHandler.handle(ChargeHandler.java:117)\n\
     \tat io.grpc.stub.ServerCalls$UnaryServerCallHandler.onHalfClose(ServerCalls.java:182)";

/// A Kubernetes pod of one service.
#[derive(Debug, Clone)]
pub(crate) struct Pod {
    pub svc: Svc,
    pub name: String,
}

/// Names pods the way a Deployment does: `<service>-<replicaset hash>-<pod suffix>`.
pub(crate) fn make_pods(rng: &mut ChaCha8Rng) -> Vec<Pod> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let word = |rng: &mut ChaCha8Rng, n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let mut pods = Vec::new();
    for svc in Svc::ALL {
        let rs: String = (0..5)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect();
        for _ in 0..svc.replicas() {
            let suffix = word(rng, 5);
            pods.push(Pod {
                svc,
                name: format!("{}-{rs}-{suffix}", svc.name()),
            });
        }
    }
    pods
}

/// Per pod and metric interval: what its server spans did.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodWindow {
    pub requests: u32,
    pub errors: u32,
    pub durations_ms: Vec<f32>,
}

/// Spans and logs grouped by export batch, then by pod; plus per-pod interval statistics.
pub(crate) struct Traffic {
    pub spans: Vec<Vec<Vec<Span>>>,
    pub logs: Vec<Vec<Vec<LogRecord>>>,
    /// Indexed `[window * pods + pod]`.
    pub windows: Vec<PodWindow>,
}

pub(crate) struct TrafficParams {
    pub scenario: Scenario,
    pub window: FaultWindow,
    pub start_ns: i64,
    pub end_ns: i64,
    pub batch_ns: i64,
    pub requests_per_second: f64,
}

pub(crate) fn simulate_traffic(p: &TrafficParams, pods: &[Pod], rng: ChaCha8Rng) -> Traffic {
    let n_batches = ((p.end_ns - p.start_ns + p.batch_ns - 1) / p.batch_ns).max(1) as usize;
    let n_windows = ((p.end_ns - p.start_ns) / (METRIC_INTERVAL_S * NANOS)).max(1) as usize;
    let mut svc_pods = [(0usize, 0usize); 9];
    for (i, pod) in pods.iter().enumerate() {
        let e = &mut svc_pods[pod.svc as usize];
        if e.1 == 0 {
            e.0 = i;
        }
        e.1 += 1;
    }
    let paths: Vec<Vec<Svc>> = ENTRY_MIX
        .iter()
        .map(|(op, _)| {
            let mut v = Vec::new();
            services_on_path(*op, &mut v);
            v
        })
        .collect();
    let mut g = Gen {
        rng,
        scenario: p.scenario,
        window: p.window,
        start_ns: p.start_ns,
        n_pods: pods.len(),
        svc_pods,
        batch: 0,
        sampled: true,
        spans: vec![vec![Vec::new(); pods.len()]; n_batches],
        logs: vec![vec![Vec::new(); pods.len()]; n_batches],
        windows: vec![PodWindow::default(); n_windows * pods.len()],
        n_windows,
    };

    let sample_ratio = (EXPORTED_TRACES_PER_SECOND / p.requests_per_second).min(1.0);
    let mut t = p.start_ns as f64;
    loop {
        // Poisson arrivals at a rate that drifts slowly with the time of day.
        let rate = p.requests_per_second * traffic_drift(t as i64);
        t += g.exponential(1.0 / rate) * NANOS as f64;
        let start = t as i64;
        if start >= p.end_ns {
            break;
        }
        g.batch = (((start - p.start_ns) / p.batch_ns) as usize).min(n_batches - 1);
        let u: f64 = g.rng.random();
        let mut acc = 0.0;
        let mut entry = 0;
        for (i, (_, share)) in ENTRY_MIX.iter().enumerate() {
            acc += share;
            entry = i;
            if u < acc {
                break;
            }
        }
        g.sampled = g.rng.random::<f64>() < sample_ratio;
        let mut trace_id = [0u8; 16];
        g.rng.fill(&mut trace_id);
        let bg_fault = if g.rng.random::<f64>() < BACKGROUND_ERROR_RATE {
            let path = &paths[entry];
            Some(path[g.rng.random_range(0..path.len())])
        } else {
            None
        };
        let mut tr = TraceCtx {
            trace_id,
            bg_fault,
            user: g.rng.random_range(10_000..99_999),
            order: g.rng.random(),
            cart: g.rng.random_range(100_000..999_999),
            sku: g.rng.random_range(1000..9999),
            items: g.rng.random_range(1..6),
            amount_cents: g.rng.random_range(499..45_000),
        };
        g.serve(ENTRY_MIX[entry].0, &mut tr, None, start);
    }
    Traffic {
        spans: g.spans,
        logs: g.logs,
        windows: g.windows,
    }
}

/// Slow, diurnal-ish drift of latency: highest mid-afternoon UTC, +-8 %.
fn latency_drift(t_ns: i64) -> f64 {
    1.0 + 0.08 * day_phase(t_ns)
}

fn traffic_drift(t_ns: i64) -> f64 {
    1.0 + 0.15 * day_phase(t_ns)
}

fn day_phase(t_ns: i64) -> f64 {
    let day_s = (t_ns / NANOS).rem_euclid(86_400) as f64;
    (std::f64::consts::TAU * (day_s / 86_400.0 - 0.375)).sin()
}

fn ms_to_ns(ms: f64) -> i64 {
    (ms * 1e6) as i64
}

struct TraceCtx {
    trace_id: [u8; 16],
    /// The service that fails this request for a background reason, if any (consumed on use).
    bg_fault: Option<Svc>,
    user: u32,
    order: u32,
    cart: u32,
    sku: u32,
    items: u32,
    amount_cents: u32,
}

impl TraceCtx {
    fn amount(&self) -> String {
        format!("{}.{:02}", self.amount_cents / 100, self.amount_cents % 100)
    }
}

#[derive(Debug, Clone)]
struct Failure {
    exc_type: &'static str,
    message: String,
    status_code: i64,
    stacktrace: Option<&'static str>,
}

impl Failure {
    fn new(exc_type: &'static str, message: String, status_code: i64) -> Failure {
        Failure {
            exc_type,
            message,
            status_code,
            stacktrace: None,
        }
    }
}

struct Served {
    end: i64,
    failure: Option<Failure>,
}

struct Called {
    end: i64,
    duration_ms: f64,
    failure: Option<Failure>,
}

#[derive(Clone, Copy)]
enum Level {
    Info,
    Warn,
    Error,
}

struct Gen {
    rng: ChaCha8Rng,
    scenario: Scenario,
    window: FaultWindow,
    start_ns: i64,
    n_pods: usize,
    /// First pod index and replica count per service.
    svc_pods: [(usize, usize); 9],
    batch: usize,
    /// Whether the current request's spans and logs are exported.
    sampled: bool,
    spans: Vec<Vec<Vec<Span>>>,
    logs: Vec<Vec<Vec<LogRecord>>>,
    windows: Vec<PodWindow>,
    n_windows: usize,
}

impl Gen {
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.random::<f64>()).ln()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box-Muller; one draw per call keeps the stream simple.
        let u1: f64 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * z).exp()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn span_id(&mut self) -> [u8; 8] {
        let mut id = [0u8; 8];
        self.rng.fill(&mut id);
        id
    }

    fn pick_pod(&mut self, svc: Svc) -> usize {
        let (first, n) = self.svc_pods[svc as usize];
        if n <= 1 {
            first
        } else {
            first + self.rng.random_range(0..n)
        }
    }

    /// Runs one server-side operation (and, recursively, its calls) starting at `start`.
    fn serve(
        &mut self,
        op_id: OpId,
        tr: &mut TraceCtx,
        parent: Option<[u8; 8]>,
        start: i64,
    ) -> Served {
        let op = &OPS[op_id];
        let svc = op.svc;
        let pod = self.pick_pod(svc);
        let span_id = self.span_id();
        let eff = self.scenario.effect(svc, start, &self.window);

        let mut self_ms = self.lognormal(
            op.self_ms * latency_drift(start) * eff.latency_factor,
            op.sigma + eff.extra_sigma,
        );
        if eff.extra_ms > 0.0 {
            self_ms += self.exponential(eff.extra_ms);
        }
        let mut gc_pause_ms = None;
        if self.chance(eff.spike_prob) {
            let ms = eff.spike_ms * self.rng.random_range(0.5..1.5);
            self_ms += ms;
            gc_pause_ms = Some(ms);
        }

        let mut failure = None;
        if tr.bg_fault == Some(svc) {
            tr.bg_fault = None;
            let (t, m) = BACKGROUND_FAULTS[self.rng.random_range(0..BACKGROUND_FAULTS.len())];
            failure = Some(Failure::new(t, m.to_string(), 500));
        } else if let Some(kind) = eff.failure {
            if self.chance(eff.fail_prob) {
                failure = Some(self.own_failure(kind, start, tr, &mut self_ms));
            }
        }
        if let (None, Some(limit)) = (&failure, eff.self_timeout_ms) {
            if self_ms > limit {
                self_ms = limit + self.rng.random_range(0.2..1.5);
                failure = Some(Failure::new(
                    "TimeoutException",
                    format!("identity provider did not answer within timeout_ms={limit}"),
                    504,
                ));
            }
        }

        // Own work is split around the calls: some before (parsing, auth), the rest after.
        let own_failure = failure.is_some();
        let mut cursor = start + ms_to_ns(self_ms * 0.3);
        if !own_failure {
            for c in op.calls {
                let called = self.call(pod, span_id, c, tr, cursor);
                cursor = called.end + ms_to_ns(self.rng.random_range(0.05..0.3));
                match called.failure {
                    Some(f) if c.tolerated => {
                        let body = format!(
                            "cache unavailable ({}), falling back to store for cart {}",
                            f.message, tr.cart
                        );
                        self.log(pod, cursor, Level::Warn, tr, span_id, body);
                    }
                    Some(f) => {
                        failure = Some(f);
                        break;
                    }
                    None => {
                        if svc == Svc::Cart && called.duration_ms > 15.0 && self.chance(0.3) {
                            let body = format!(
                                "slow cache response from redis-cache: {:.0} ms for cart:{} (threshold 15 ms)",
                                called.duration_ms, tr.cart
                            );
                            self.log(pod, cursor, Level::Warn, tr, span_id, body);
                        }
                    }
                }
            }
        }
        // A failed call ends the handler quickly; otherwise the rest of the own work follows.
        let post = if failure.is_some() && !own_failure {
            0.1
        } else {
            0.7
        };
        let end = cursor + ms_to_ns(self_ms * post);
        let duration_ms = (end - start) as f64 / 1e6;

        let mut attributes = Vec::with_capacity(1);
        match op.protocol {
            Protocol::Http => attributes.push(int_attr(
                "http.response.status_code",
                failure.as_ref().map_or(200, |f| f.status_code),
            )),
            Protocol::Redis => attributes.push(str_attr("db.system", "redis")),
            Protocol::Postgres => attributes.push(str_attr("db.system", "postgresql")),
        }
        let span = build::span(tr.trace_id, span_id, op.name, start as u64, end as u64)
            .parent(parent.map(|p| p.to_vec()).unwrap_or_default())
            .kind(SpanKind::Server)
            .attributes(attributes);
        let span = match &failure {
            Some(f) => raised(span.error(f.message.clone()), end, f),
            None => span,
        };
        self.push_span(pod, span.build());
        self.record(pod, start, duration_ms, failure.is_some());

        match &failure {
            Some(f) => {
                let body = match f.stacktrace {
                    Some(stack) => format!(
                        "Unhandled exception while charging order ord-{:08x}: {}: {}\n{stack}",
                        tr.order, f.exc_type, f.message
                    ),
                    None if own_failure => format!(
                        "{}: {}: {}",
                        failure_prefix(op_id, tr),
                        f.exc_type,
                        f.message
                    ),
                    // A callee's failure already reads "call to X failed ..." or "timeout calling X ...".
                    None => format!("{}: {}", failure_prefix(op_id, tr), f.message),
                };
                self.log(pod, end, Level::Error, tr, span_id, body);
            }
            None => {
                if let Some(ms) = gc_pause_ms {
                    if self.chance(0.5) {
                        let (base, limit) = svc.memory_profile();
                        let used = base
                            + (limit - base)
                                * self.scenario.memory_pressure(svc, start, &self.window);
                        let body =
                            format!("GC pause of {ms:.0} ms (heap {used:.0}/{limit:.0} MiB)");
                        self.log(pod, end, Level::Warn, tr, span_id, body);
                    }
                }
                if self.chance(0.015) {
                    let body = background_warning(svc, tr, &mut self.rng);
                    self.log(pod, end, Level::Warn, tr, span_id, body);
                } else {
                    let body = info_line(op_id, tr, duration_ms, &mut self.rng);
                    self.log(pod, end, Level::Info, tr, span_id, body);
                }
            }
        }
        if svc == Svc::Frontend && duration_ms > 800.0 {
            let body = format!(
                "slow request {} took {duration_ms:.0} ms (user u-{})",
                op.name, tr.user
            );
            self.log(pod, end, Level::Warn, tr, span_id, body);
        }
        Served { end, failure }
    }

    /// One outgoing call with its retries: a CLIENT span per attempt in the caller, a SERVER
    /// span in the callee.
    fn call(
        &mut self,
        caller_pod: usize,
        caller_span: [u8; 8],
        c: &Call,
        tr: &mut TraceCtx,
        start: i64,
    ) -> Called {
        let callee = OPS[c.op].svc.name();
        let attempts = u32::from(c.retries) + 1;
        let mut t = start;
        let mut last = None;
        for attempt in 1..=attempts {
            let client_id = self.span_id();
            let attempt_start = t;
            let net = ms_to_ns(self.rng.random_range(0.2..0.9));
            let served = self.serve(c.op, tr, Some(client_id), attempt_start + net);
            let deadline = attempt_start + ms_to_ns(c.timeout_ms);
            let response = served.end + net;
            let (end, failure, timed_out) = if response > deadline {
                let f = Failure::new(
                    "TimeoutException",
                    format!("timeout calling {callee} after {:.0} ms", c.timeout_ms),
                    504,
                );
                (deadline, Some(f), true)
            } else {
                let f = served.failure.map(|f| {
                    Failure::new(
                        "DependencyFailureException",
                        format!(
                            "call to {callee} failed with {}: {}",
                            f.status_code, f.message
                        ),
                        f.status_code,
                    )
                });
                (response, f, false)
            };
            let mut attributes = vec![str_attr("peer.service", callee)];
            if attempt > 1 {
                attributes.push(int_attr(
                    "http.request.resend_count",
                    i64::from(attempt - 1),
                ));
            }
            let (begin, finish) = (attempt_start as u64, end as u64);
            let span = build::span(tr.trace_id, client_id, OPS[c.op].name, begin, finish)
                .parent(caller_span)
                .kind(SpanKind::Client)
                .attributes(attributes);
            let span = match &failure {
                Some(f) if timed_out => raised(span.error(f.message.clone()), end, f),
                Some(f) => span.error(format!("{callee} returned {}", f.status_code)),
                None => span,
            };
            self.push_span(caller_pod, span.build());
            t = end;
            match failure {
                None => {
                    return Called {
                        end,
                        duration_ms: (end - attempt_start) as f64 / 1e6,
                        failure: None,
                    }
                }
                Some(f) => {
                    if attempt < attempts {
                        let body = format!(
                            "retrying call to {callee} (attempt {}/{attempts}): {}",
                            attempt + 1,
                            f.message
                        );
                        self.log(caller_pod, t, Level::Warn, tr, caller_span, body);
                        // Exponential backoff with jitter.
                        t += ms_to_ns(
                            10.0 * f64::from(1u32 << (attempt - 1))
                                * self.rng.random_range(0.8..1.2),
                        );
                    }
                    last = Some(f);
                }
            }
        }
        Called {
            end: t,
            duration_ms: (t - start) as f64 / 1e6,
            failure: last,
        }
    }

    fn own_failure(
        &mut self,
        kind: OwnFault,
        start: i64,
        tr: &TraceCtx,
        self_ms: &mut f64,
    ) -> Failure {
        match kind {
            OwnFault::OutOfMemory => {
                let (base, limit) = Svc::Cart.memory_profile();
                let used = base
                    + (limit - base)
                        * self
                            .scenario
                            .memory_pressure(Svc::Cart, start, &self.window);
                Failure::new(
                    "java.lang.OutOfMemoryError",
                    format!("Java heap space (heap {used:.0}/{limit:.0} MiB)"),
                    500,
                )
            }
            OwnFault::PoolExhausted => {
                // The request waited for the whole acquire timeout before giving up.
                *self_ms = 200.0 + self.rng.random_range(1.0..6.0);
                Failure::new(
                    "PoolExhaustedException",
                    "could not acquire connection from pool postgres-db within 200 ms (20/20 in use)".to_string(),
                    503,
                )
            }
            OwnFault::IncompatibleBuild => Failure::new(
                "java.lang.NoSuchMethodError",
                "'com.shop.pricing.Money com.shop.pricing.Money.of(long, java.lang.String)'"
                    .to_string(),
                500,
            ),
            OwnFault::NewException => Failure {
                exc_type: NEW_EXCEPTION_TYPE,
                message: format!(
                    "amount {} has more precision than currency JPY allows (scale 3 > 0)",
                    tr.amount()
                ),
                status_code: 500,
                stacktrace: Some(NEW_EXCEPTION_STACK),
            },
        }
    }

    fn push_span(&mut self, pod: usize, span: Span) {
        if !self.sampled {
            return;
        }
        self.spans[self.batch][pod].push(span);
    }

    fn record(&mut self, pod: usize, start: i64, duration_ms: f64, failed: bool) {
        let w = ((start - self.start_ns) / (METRIC_INTERVAL_S * NANOS)) as usize;
        if w < self.n_windows {
            let s = &mut self.windows[w * self.n_pods + pod];
            s.requests += 1;
            s.errors += u32::from(failed);
            s.durations_ms.push(duration_ms as f32);
        }
    }

    fn log(
        &mut self,
        pod: usize,
        t: i64,
        level: Level,
        tr: &TraceCtx,
        span_id: [u8; 8],
        body: String,
    ) {
        if !self.sampled {
            return;
        }
        let (number, text) = match level {
            Level::Info => (9, "INFO"),
            Level::Warn => (13, "WARN"),
            Level::Error => (17, "ERROR"),
        };
        let record = build::log_record(t as u64, number, text, body)
            .trace(tr.trace_id, span_id)
            .sampled();
        self.logs[self.batch][pod].push(record.build());
    }
}

/// The span records the exception `f` it raised at `t`.
fn raised(span: SpanBuilder, t: i64, f: &Failure) -> SpanBuilder {
    span.exception(t as u64, f.exc_type, f.message.clone(), f.stacktrace)
}

/// What a service says it was doing when it failed; the failure message follows.
fn failure_prefix(op_id: OpId, tr: &TraceCtx) -> String {
    let op = &OPS[op_id];
    match op.svc {
        Svc::Frontend => format!("{} failed for user u-{}", op.name, tr.user),
        Svc::Catalog => format!("failed to serve {}", op.name),
        Svc::Auth => format!("token validation failed for user u-{}", tr.user),
        Svc::Checkout => format!("failed to place order ord-{:08x}", tr.order),
        Svc::Cart => format!("failed to load cart {}", tr.cart),
        Svc::RedisCache => format!("error executing GET cart:{}", tr.cart),
        Svc::Inventory => format!("failed to reserve {} units of SKU-{}", tr.items, tr.sku),
        Svc::PostgresDb => "ERROR: could not execute UPDATE stock".to_string(),
        Svc::Payment => format!("charge for order ord-{:08x} failed", tr.order),
    }
}

fn info_line(op_id: OpId, tr: &TraceCtx, ms: f64, rng: &mut ChaCha8Rng) -> String {
    let op = &OPS[op_id];
    match op.svc {
        Svc::Frontend => match op_id {
            crate::topology::FE_PRODUCT => {
                format!("GET /api/products/SKU-{} 200 {ms:.1}ms", tr.sku)
            }
            crate::topology::FE_CHECKOUT => {
                format!(
                    "POST /api/checkout 200 {ms:.1}ms user=u-{} order=ord-{:08x}",
                    tr.user, tr.order
                )
            }
            _ => format!(
                "GET /api/products 200 {ms:.1}ms user=u-{} page={}",
                tr.user,
                rng.random_range(1..20)
            ),
        },
        Svc::Catalog => {
            if op.name == "GET /products" {
                format!(
                    "listed {} products for page {} in {ms:.1} ms",
                    rng.random_range(12..48),
                    rng.random_range(1..20)
                )
            } else {
                let from = if rng.random::<f64>() < 0.8 {
                    "cache"
                } else {
                    "store"
                };
                format!("product SKU-{} served from {from} in {ms:.1} ms", tr.sku)
            }
        }
        Svc::Auth => format!("token validated for user u-{} in {ms:.1} ms", tr.user),
        Svc::Checkout => format!(
            "order ord-{:08x} placed for user u-{}: {} items, total {} USD",
            tr.order,
            tr.user,
            tr.items,
            tr.amount()
        ),
        Svc::Cart => format!(
            "loaded cart {} with {} items in {ms:.1} ms",
            tr.cart, tr.items
        ),
        Svc::RedisCache => format!(
            "GET cart:{} hit ({} bytes)",
            tr.cart,
            rng.random_range(200..4000)
        ),
        Svc::Inventory => {
            format!(
                "reserved {} units of SKU-{} (remaining {})",
                tr.items,
                tr.sku,
                rng.random_range(20..900)
            )
        }
        Svc::PostgresDb => {
            format!(
                "duration: {ms:.3} ms  statement: UPDATE stock SET qty = qty - $1 WHERE sku = $2"
            )
        }
        Svc::Payment => format!(
            "charged {} USD to card ending {:04} for order ord-{:08x} (gateway ref ch_{:012x})",
            tr.amount(),
            rng.random_range(0..10_000),
            tr.order,
            rng.random::<u64>() >> 16
        ),
    }
}

fn background_warning(svc: Svc, tr: &TraceCtx, rng: &mut ChaCha8Rng) -> String {
    match svc {
        Svc::Frontend => format!(
            "client disconnected before response was written (user=u-{})",
            tr.user
        ),
        Svc::Checkout => format!("coupon SAVE{} expired, ignoring", rng.random_range(5..50)),
        Svc::Catalog => format!("cache miss for product SKU-{}, loading from store", tr.sku),
        Svc::Auth => format!(
            "token for user u-{} expires in {} s",
            tr.user,
            rng.random_range(5..120)
        ),
        Svc::Payment => {
            format!(
                "card ending {:04} flagged for 3-D Secure, challenge issued",
                rng.random_range(0..10_000)
            )
        }
        Svc::Cart => format!(
            "cart {} has {} stale items, pruning",
            tr.cart,
            rng.random_range(1..4)
        ),
        Svc::Inventory => format!(
            "low stock for SKU-{}: {} left",
            tr.sku,
            rng.random_range(1..10)
        ),
        Svc::RedisCache => format!(
            "connected clients {} approaching maxclients 1000",
            rng.random_range(800..990)
        ),
        Svc::PostgresDb => format!(
            "temporary file: path \"base/pgsql_tmp/pgsql_tmp{}.0\", size {}",
            rng.random_range(100..999),
            rng.random_range(1_000_000..9_000_000)
        ),
    }
}
