//! The soak benchmark (issue 16): simulated traffic through `culprit embedder`/`culprit
//! correlator` processes (one per role, as the Helm chart runs them) on the embedded store, with
//! a `kill -9` of one role every few minutes, one broker restart and a burst of malformed and
//! out-of-range messages; then SIGTERM, and a report of events produced, consumed, stored and
//! dead-lettered, alerts expected and published, and RSS per role. Exits non-zero when a target
//! is missed, after printing every figure.
//!
//! Not part of `cargo test`. Run it through `bash scripts/soak.sh [flags]`, which starts its own
//! broker with `scripts/kafka-test-env.sh` (the soak restarts that broker mid-run through the same
//! script, so it needs `CULPRIT_KAFKA_PORT` and `CULPRIT_KAFKA_STATE`), and builds the binary.
//!
//! Flags (or environment variables `SOAK_<FLAG>`, upper case, `-` as `_`):
//!
//! - `--duration-secs` (1800): wall-clock length of the run, production and drain included
//! - `--kill-every-secs` (270): a role is killed every this many seconds, ±30 s, rotating over
//!   the roles; 0 turns the kills off
//! - `--incidents` (4), `--normal-minutes` (30), `--fault-minutes` (5): the simulated timeline,
//!   each incident's healthy traffic before its fault; played fast enough to fit the duration
//! - `--seed` (42)
//! - `--rewind-messages` (150): `kafka.embedder_rewind` (messages per partition a restarted
//!   embedder re-reads to relearn and finish the windows open at a kill; 0: `none`)
//! - `--binary` (the `culprit` release binary under `CARGO_TARGET_DIR`), `--dir` (a fresh folder
//!   under /tmp) for the configuration, the stores, the logs, `alerts.jsonl` and `summary.json`
#![forbid(unsafe_code)]

use anyhow::{bail, Context as _, Result};
use culprit_core::{Event, RcaAlert, SourceKind, NANOS_PER_SEC};
use culprit_integration_tests::{Received, TestEnv, PARTITIONS, WARMUP_SECS};
use culprit_kafka::rdkafka::message::{Header, OwnedHeaders};
use culprit_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use culprit_kafka::KafkaConfig;
use culprit_otlp::{Encoding, Signal};
use culprit_sim::{Scenario, SimConfig, SimRun};
use culprit_store::{EmbeddedStore, Filter, PointId, VectorStore};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NANOS: i64 = NANOS_PER_SEC;
const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Minutes of healthy traffic after the last incident.
const TAIL_MINUTES: u32 = 10;
/// Points of the last minutes of the stream belong to windows still open when it ends.
const OPEN_AT_END_MINUTES: i64 = 2;
/// Missing points are listed per this much event time (a simulated message's batch).
const BUCKET_NS: i64 = 10 * NANOS;

#[derive(Clone)]
struct Args {
    duration: Duration,
    kill_every: Duration,
    incidents: u32,
    normal_minutes: u32,
    fault_minutes: u32,
    seed: u64,
    rewind_messages: u64,
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    if let Some(i) = args.iter().position(|a| *a == long) {
        return args.get(i + 1).cloned();
    }
    if let Some(v) = args
        .iter()
        .find_map(|a| a.strip_prefix(&format!("{long}=")))
    {
        return Some(v.to_string());
    }
    std::env::var(format!("SOAK_{}", name.to_uppercase().replace('-', "_"))).ok()
}

fn parse_args() -> Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: u64| -> Result<u64> {
        flag(&args, name).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("--{name} {v}"))
        })
    };
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(Args {
        duration: Duration::from_secs(num("duration-secs", 1800)?),
        kill_every: Duration::from_secs(num("kill-every-secs", 270)?),
        incidents: num("incidents", 4)? as u32,
        normal_minutes: num("normal-minutes", 30)? as u32,
        fault_minutes: num("fault-minutes", 5)? as u32,
        seed: num("seed", 42)?,
        rewind_messages: num("rewind-messages", 150)?,
        binary: flag(&args, "binary")
            .map_or_else(|| Path::new(&target).join("release/culprit"), PathBuf::from),
        dir: flag(&args, "dir").map_or_else(
            || std::env::temp_dir().join(format!("culprit-soak-{stamp}")),
            PathBuf::from,
        ),
        port: std::env::var("CULPRIT_KAFKA_PORT")
            .context("CULPRIT_KAFKA_PORT (the soak restarts its own broker: run scripts/soak.sh)")?
            .parse()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// One message of the timeline.
struct Msg {
    /// Wall-clock offset from the start of production at which it is due.
    due: Duration,
    source: SourceKind,
    payload: Vec<u8>,
    /// Its events' store ids and event times.
    events: Vec<(u64, i64)>,
    /// Set once the broker acknowledged it: the wall-clock offset.
    acked: Option<Duration>,
}

/// An injected incident, as the simulator labelled it.
struct Injected {
    scenario: String,
    root_cause: String,
    fault_start_ns: i64,
    fault_end_ns: i64,
}

fn topic(config: &KafkaConfig, source: SourceKind) -> String {
    config.input_topic(source).to_string()
}

fn decode(source: SourceKind, payload: &[u8]) -> Vec<Event> {
    match source {
        SourceKind::Traces => culprit_otlp::decode(Signal::Traces, Encoding::Protobuf, payload),
        SourceKind::Logs => culprit_otlp::decode(Signal::Logs, Encoding::Protobuf, payload),
        SourceKind::Metrics => culprit_otlp::decode(Signal::Metrics, Encoding::Protobuf, payload),
        SourceKind::Changes => culprit_otlp::changes::decode_changes(payload),
    }
    .expect("simulated data decodes")
}

/// A run's messages as the Kafka exporter would publish them (OTLP protobuf, one request per
/// message; change events as native JSON, one per message).
fn run_payloads(run: &SimRun) -> Vec<(SourceKind, Vec<u8>)> {
    let mut out = Vec::new();
    out.extend(
        run.traces
            .iter()
            .map(|r| (SourceKind::Traces, culprit_otlp::to_protobuf(r))),
    );
    out.extend(
        run.logs
            .iter()
            .map(|r| (SourceKind::Logs, culprit_otlp::to_protobuf(r))),
    );
    out.extend(
        run.metrics
            .iter()
            .map(|r| (SourceKind::Metrics, culprit_otlp::to_protobuf(r))),
    );
    out.extend(
        run.changes
            .iter()
            .map(|c| (SourceKind::Changes, serde_json::to_vec(c).expect("json"))),
    );
    out
}

/// Every incident on one timeline that ends 15 minutes before now, paced over `production`.
fn timeline(args: &Args, production: Duration) -> (Vec<Msg>, Vec<Injected>, i64) {
    let per_incident = i64::from(args.normal_minutes + args.fault_minutes) * 60;
    // Healthy traffic after the last incident, so its windows and horizons close as they would
    // in a stream that goes on.
    let tail_s = i64::from(TAIL_MINUTES) * 60;
    let span_s = per_incident * i64::from(args.incidents) + tail_s;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t0 = (now_s - span_s - 15 * 60) / 60 * 60;
    let mut raw = Vec::new();
    let mut injected = Vec::new();
    for i in 0..args.incidents {
        let scenario = Scenario::ALL[i as usize % Scenario::ALL.len()];
        let run = culprit_sim::simulate(
            scenario,
            &SimConfig {
                seed: args.seed + u64::from(i),
                start_unix_s: t0 + per_incident * i64::from(i),
                normal_minutes: args.normal_minutes,
                fault_minutes: args.fault_minutes,
                ..SimConfig::default()
            },
        );
        injected.push(Injected {
            scenario: scenario.to_string(),
            root_cause: run.label.root_cause_service.clone(),
            fault_start_ns: run.label.fault_start_unix_s * NANOS,
            fault_end_ns: run.label.fault_end_unix_s * NANOS,
        });
        for (source, payload) in run_payloads(&run) {
            let events: Vec<(u64, i64)> = decode(source, &payload)
                .iter()
                .map(|e| (PointId::of_event(e).0, e.time))
                .collect();
            let at = events.iter().map(|e| e.1).max().unwrap_or(t0 * NANOS);
            raw.push((at, source, payload, events));
        }
    }
    let tail = culprit_sim::simulate(
        Scenario::ALL[args.incidents as usize % Scenario::ALL.len()],
        &SimConfig {
            seed: args.seed + u64::from(args.incidents),
            start_unix_s: t0 + per_incident * i64::from(args.incidents),
            normal_minutes: TAIL_MINUTES,
            fault_minutes: 1,
            ..SimConfig::default()
        },
    );
    let healthy_until = tail.label.fault_start_unix_s * NANOS;
    for (source, payload) in run_payloads(&tail) {
        if source == SourceKind::Changes {
            continue;
        }
        let events: Vec<(u64, i64)> = decode(source, &payload)
            .iter()
            .map(|e| (PointId::of_event(e).0, e.time))
            .collect();
        let at = events.iter().map(|e| e.1).max().unwrap_or(healthy_until);
        if at < healthy_until {
            raw.push((at, source, payload, events));
        }
    }
    raw.sort_by_key(|m| m.0);
    let span_ns = (span_s * NANOS).max(1) as f64;
    let msgs = raw
        .into_iter()
        .map(|(at, source, payload, events)| Msg {
            due: production.mul_f64(((at - t0 * NANOS) as f64 / span_ns).clamp(0.0, 1.0)),
            source,
            payload,
            events,
            acked: None,
        })
        .collect();
    (msgs, injected, t0)
}

/// A bad message of the burst: where it goes and what the DLQ must say about it.
struct Bad {
    id: String,
    source: SourceKind,
    payload: Vec<u8>,
    acked: bool,
}

/// Malformed messages (garbage, empty, invalid change fields) and out-of-range ones (stamped
/// in 2100, and eight days before the timeline) for every input topic.
fn burst(t0: i64) -> Vec<Bad> {
    let mut bad = Vec::new();
    let mut push = |kind: &str, source: SourceKind, payload: Vec<u8>| {
        bad.push(Bad {
            id: format!("{kind}/{source}"),
            source,
            payload,
            acked: false,
        });
    };
    for source in SourceKind::ALL {
        let garbage = if source == SourceKind::Changes {
            b"{\"id\": \"soak\", \"time\": ".to_vec()
        } else {
            b"\x0a\xff\xff\xff\xff\x0fnot a protobuf message".to_vec()
        };
        push("malformed", source, garbage);
        push("empty", source, Vec::new());
    }
    push(
        "invalid_field",
        SourceKind::Changes,
        br#"{"id": "soak-1", "time": "yesterday", "type": "deploy", "service": "cart"}"#.to_vec(),
    );
    for (kind, start) in [
        ("year_2100", 4_102_444_800),
        ("eight_days_ago", t0 - 8 * 86_400),
    ] {
        let run = culprit_sim::simulate(
            Scenario::DeployCpuSpike,
            &SimConfig {
                start_unix_s: start,
                normal_minutes: 1,
                fault_minutes: 1,
                ..SimConfig::default()
            },
        );
        let payloads = run_payloads(&run);
        for source in SourceKind::ALL {
            if let Some((_, p)) = payloads.iter().find(|(s, _)| *s == source) {
                push(kind, source, p.clone());
            }
        }
    }
    bad
}

// ---------------------------------------------------------------------------------------------
// Roles

struct Role {
    name: String,
    args: Vec<String>,
    port: u16,
    store: Option<PathBuf>,
    child: Option<Child>,
    kills: u32,
    /// Exits nobody asked for: (wall-clock offset, status).
    crashes: Vec<(Duration, String)>,
    /// RSS samples: (wall-clock offset, KiB).
    rss: Vec<(Duration, u64)>,
    /// `culprit_events_total` of ended incarnations (their last scrape) and of this one.
    events_ended: f64,
    events_now: f64,
    dlq_ended: f64,
    dlq_now: f64,
    /// Offset lag less what open windows hold back.
    lag: f64,
    log: PathBuf,
}

impl Role {
    /// A role not started yet, on a free API port, logging to `<dir>/<name>.log`.
    fn new(name: String, args: Vec<String>, store: Option<PathBuf>, dir: &Path) -> Result<Role> {
        Ok(Role {
            log: dir.join(format!("{name}.log")),
            name,
            args,
            port: free_port()?,
            store,
            child: None,
            kills: 0,
            crashes: Vec::new(),
            rss: Vec::new(),
            events_ended: 0.0,
            events_now: 0.0,
            dlq_ended: 0.0,
            dlq_now: 0.0,
            lag: 0.0,
        })
    }

    fn spawn(&mut self, binary: &Path, config: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(binary);
        command
            .args(&self.args)
            .env("CULPRIT_CONFIG", config)
            .env("CULPRIT__API__LISTEN", format!("127.0.0.1:{}", self.port))
            // Its own state snapshots: one left by an earlier run (of another timeline) would
            // be restored otherwise.
            .env(
                "CULPRIT__KAFKA__STATE_DIR",
                self.log.with_file_name("state"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        match &self.store {
            Some(path) => command.env("CULPRIT__STORE__PATH", path),
            None => command.env("CULPRIT__STORE__BACKEND", "none"),
        };
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting {}", self.name))?,
        );
        self.events_ended += self.events_now;
        self.dlq_ended += self.dlq_now;
        self.events_now = 0.0;
        self.dlq_now = 0.0;
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn is_embedder(&self) -> bool {
        self.store.is_some()
    }

    fn scrape(&mut self) {
        let Some(body) = http_get(self.port, "/metrics") else {
            return;
        };
        self.events_now = metric_sum(&body, "culprit_events_total");
        self.dlq_now = metric_sum(&body, "culprit_dlq_total");
        // Records held back in windows still open are not a backlog: newer events close them.
        self.lag = metric_sum(&body, "culprit_consumer_lag")
            - metric_sum(&body, "culprit_consumer_held_back");
    }

    fn sample_rss(&mut self, at: Duration) {
        let Some(pid) = self.pid() else { return };
        let kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            });
        if let Some(kib) = kib {
            self.rss.push((at, kib));
        }
    }
}

fn status_text(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(11)) => "signal 11 (SIGSEGV)".to_string(),
        (None, Some(6)) => "signal 6 (SIGABRT)".to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.1 GET on loopback; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return Some(out);
    }
    Some(body.to_string())
}

/// The sum of every series of `name` in an OpenMetrics text.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The broker

fn broker_script(command: &str) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-test-env.sh");
    let out = Command::new("bash").arg(script).arg(command).output()?;
    anyhow::ensure!(
        out.status.success(),
        "kafka-test-env.sh {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A record to send: topic, payload, headers.
type Outgoing<'a> = (String, &'a [u8], Vec<(String, String)>);

fn producer(config: &KafkaConfig) -> Result<FutureProducer> {
    let mut c = culprit_kafka::base_client_config(config);
    c.set("linger.ms", "5");
    Ok(c.create()?)
}

/// Sends `records` (topic, payload, headers) keyed by the simulated environment (one partition,
/// as a collector keyed by resource would); returns which the broker acknowledged.
async fn send(producer: &FutureProducer, records: &[Outgoing<'_>]) -> Vec<bool> {
    let mut deliveries = Vec::new();
    for (topic, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let rec = FutureRecord::to(topic)
            .payload(*payload)
            .key(culprit_sim::ENVIRONMENT)
            .headers(h);
        deliveries.push(producer.send(rec, Duration::from_secs(30)));
    }
    let mut out = Vec::new();
    for d in deliveries {
        out.push(d.await.is_ok());
    }
    out
}

/// Everything on `topic` from the beginning, read until nothing new came for 5 s.
async fn read_topic(config: &KafkaConfig, topic: &str) -> Result<Vec<Received>> {
    let env = TestEnv {
        config: config.clone(),
    };
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut last = (0, Instant::now());
        env.read_until(&topic, Duration::from_secs(120), |r| {
            if r.len() != last.0 {
                last = (r.len(), Instant::now());
            }
            last.1.elapsed() > Duration::from_secs(5)
        })
    })
    .await?
}

// ---------------------------------------------------------------------------------------------
// The run

struct Soak {
    args: Args,
    config: KafkaConfig,
    config_path: PathBuf,
    roles: Vec<Role>,
    start: Instant,
    next_rss: Duration,
    notes: Vec<String>,
}

impl Soak {
    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn note(&mut self, text: String) {
        let at = self.at();
        println!("[{:>7.1}s] {text}", at.as_secs_f64());
        self.notes.push(format!("{:.0}s {text}", at.as_secs_f64()));
    }

    /// Samples RSS and metrics; restarts roles that exited by themselves (a crash, as an
    /// orchestrator would restart the pod).
    fn watch(&mut self) -> Result<()> {
        let at = self.at();
        let sample_rss = at >= self.next_rss;
        if sample_rss {
            self.next_rss = at + Duration::from_secs(10);
        }
        let mut crashed = Vec::new();
        for (i, role) in self.roles.iter_mut().enumerate() {
            if let Some(child) = role.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    role.crashes.push((at, status_text(status)));
                    role.child = None;
                    crashed.push(i);
                    continue;
                }
            }
            role.scrape();
            if sample_rss {
                role.sample_rss(at);
            }
        }
        for i in crashed {
            let (name, status) = {
                let r = &self.roles[i];
                (r.name.clone(), r.crashes.last().map(|c| c.1.clone()))
            };
            self.note(format!(
                "{name} exited by itself ({}); restarting it",
                status.unwrap_or_default()
            ));
            let (binary, config) = (self.args.binary.clone(), self.config_path.clone());
            self.roles[i].spawn(&binary, &config)?;
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Result<()> {
        let role = &mut self.roles[i];
        if let Some(mut child) = role.child.take() {
            role.scrape();
            child.kill()?; // SIGKILL
            child.wait()?;
        }
        role.kills += 1;
        let name = role.name.clone();
        let (binary, config) = (self.args.binary.clone(), self.config_path.clone());
        self.roles[i].spawn(&binary, &config)?;
        self.note(format!("kill -9 {name}; restarted"));
        Ok(())
    }

    /// Waits until the embedders consumed everything (no lag beyond what open windows hold
    /// back, event counts still for 15 s), at
    /// most `timeout`; keeps watching the roles meanwhile.
    async fn drain(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut still = (f64::NAN, Instant::now());
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.watch()?;
            let events: f64 = self
                .roles
                .iter()
                .filter(|r| r.is_embedder())
                .map(|r| r.events_ended + r.events_now)
                .sum();
            let lag: f64 = self.roles.iter().map(|r| r.lag).sum();
            if events != still.0 {
                still = (events, Instant::now());
            } else if lag == 0.0 && still.1.elapsed() > Duration::from_secs(15) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[derive(Default)]
struct Collected {
    alerts: Vec<RcaAlert>,
    dead: Vec<Received>,
}

impl Collected {
    async fn read(&mut self, config: &KafkaConfig) -> Result<()> {
        for r in read_topic(config, &config.topics.alerts).await? {
            match serde_json::from_slice::<RcaAlert>(&r.payload) {
                Ok(a) => self.alerts.push(a),
                Err(e) => eprintln!("an alert that does not parse: {e}"),
            }
        }
        self.dead
            .extend(read_topic(config, &config.topics.dlq).await?);
        Ok(())
    }
}

fn write_config(args: &Args, config: &KafkaConfig, path: &Path) -> Result<()> {
    let rewind = if args.rewind_messages == 0 {
        "embedder_rewind = \"none\"".to_string()
    } else {
        format!(
            "embedder_rewind = {{ messages = {} }}",
            args.rewind_messages
        )
    };
    let text = format!(
        "# written by the soak benchmark (integration-tests/examples/soak.rs)\n\
         warmup_secs = {WARMUP_SECS}\n\n\
         [kafka]\nbrokers = \"{}\"\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n{rewind}\n\n\
         [store]\nbackend = \"embedded\"\n",
        config.brokers
    );
    std::fs::write(path, text)?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    anyhow::ensure!(
        args.binary.exists(),
        "no culprit binary at {} (cargo build --release -p culprit, or --binary)",
        args.binary.display()
    );
    std::fs::create_dir_all(&args.dir)?;
    let config = KafkaConfig {
        brokers: format!("127.0.0.1:{}", args.port),
        client_id: "culprit-soak".to_string(),
        ..KafkaConfig::default()
    };
    let config_path = args.dir.join("culprit.toml");
    write_config(&args, &config, &config_path)?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load_start = load_average();

    // Production takes the run less a drain tail.
    let tail = (args.duration / 6).clamp(Duration::from_secs(60), Duration::from_secs(240));
    let production = args.duration.saturating_sub(tail);
    println!(
        "soak: {} s ({} s of production), {} incidents of {}+{} min, kill every {} s, seed {}, commit {commit}, load {load_start}, dir {}",
        args.duration.as_secs(),
        production.as_secs(),
        args.incidents,
        args.normal_minutes,
        args.fault_minutes,
        args.kill_every.as_secs(),
        args.seed,
        args.dir.display()
    );
    let (mut msgs, injected, t0) = {
        let a = args.clone();
        tokio::task::spawn_blocking(move || timeline(&a, production)).await?
    };
    let mut bad = burst(t0);
    println!(
        "soak: {} messages, {} events on a timeline from {} ({} bad messages in the burst)",
        msgs.len(),
        msgs.iter().map(|m| m.events.len()).sum::<usize>(),
        chrono::DateTime::from_timestamp(t0, 0).unwrap_or_default(),
        bad.len()
    );

    culprit_kafka::ensure_topics(&config, &config.all_topics(), PARTITIONS).await?;
    let mut roles = Vec::new();
    for source in SourceKind::ALL {
        let name = format!("embedder-{source}");
        let args_of = vec!["embedder".into(), "--source".into(), source.to_string()];
        let store = Some(args.dir.join(format!("{source}.store")));
        roles.push(Role::new(name, args_of, store, &args.dir)?);
    }
    roles.push(Role::new(
        "correlator".into(),
        vec!["correlator".into()],
        None,
        &args.dir,
    )?);
    for role in &mut roles {
        role.spawn(&args.binary, &config_path)?;
    }
    let mut soak = Soak {
        args,
        config,
        config_path,
        roles,
        start: Instant::now(),
        next_rss: Duration::ZERO,
        notes: Vec::new(),
    };
    // Every role's API answers before traffic starts.
    for i in 0..soak.roles.len() {
        let port = soak.roles[i].port;
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/metrics").is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    soak.start = Instant::now();
    soak.note(format!("{} roles started", soak.roles.len()));

    // The schedule: kills every kill_every ± 30 s, rotating; the broker restart at half of the
    // production; the burst at two thirds.
    let order = [0usize, 4, 1, 2, 3];
    let mut kills: Vec<Duration> = Vec::new();
    if !soak.args.kill_every.is_zero() {
        let mut t = soak.args.kill_every;
        let mut k = 0u64;
        while t + Duration::from_secs(30) < production {
            kills.push(t);
            let jitter = ((soak.args.seed + k) % 3) as i64 * 30 - 30;
            t = Duration::from_secs((soak.args.kill_every.as_secs() as i64 + jitter).max(30) as u64)
                + t;
            k += 1;
        }
    }
    let restart_at = production / 2;
    let burst_at = production * 2 / 3;
    let mut restarted: Option<(Duration, bool)> = None;
    let mut burst_done = false;
    let mut next_kill = 0;
    let mut next_msg = 0;
    let mut collected = Collected::default();
    let mut producer = producer(&soak.config)?;
    let mut send_failures = 0u64;

    while next_msg < msgs.len() || soak.at() < production {
        let now = soak.at();
        // Messages due by now.
        let end = msgs[next_msg..]
            .iter()
            .position(|m| m.due > now)
            .map_or(msgs.len(), |p| next_msg + p);
        if end > next_msg {
            let records: Vec<Outgoing<'_>> = msgs[next_msg..end]
                .iter()
                .map(|m| (topic(&soak.config, m.source), &m.payload[..], Vec::new()))
                .collect();
            let acks = send(&producer, &records).await;
            let at = soak.at();
            for (m, ok) in msgs[next_msg..end].iter_mut().zip(acks) {
                if ok {
                    m.acked = Some(at);
                } else {
                    send_failures += 1;
                }
            }
            next_msg = end;
        }
        soak.watch()?;
        let near_restart = restarted.is_some_and(|r| now < r.0 + Duration::from_secs(90));
        if next_kill < kills.len() && now >= kills[next_kill] && !near_restart {
            soak.kill(order[next_kill % order.len()])?;
            next_kill += 1;
        }
        if restarted.is_none() && now >= restart_at {
            soak.note("broker restart: draining first".into());
            let drained = soak.drain(Duration::from_secs(120)).await?;
            soak.note(format!(
                "drained: {drained}; reading the alerts and DLQ topics before the broker loses them"
            ));
            collected.read(&soak.config).await?;
            drop(producer);
            let began = soak.at();
            broker_script("stop")?;
            broker_script("start")?;
            culprit_kafka::ensure_topics(&soak.config, &soak.config.all_topics(), PARTITIONS)
                .await?;
            producer = self::producer(&soak.config)?;
            restarted = Some((began, drained));
            soak.note(
                "broker restarted (tansu: every topic and offset lost, topics re-created)".into(),
            );
        }
        if !burst_done && now >= burst_at {
            let records: Vec<Outgoing<'_>> = bad
                .iter()
                .map(|b| {
                    (
                        topic(&soak.config, b.source),
                        &b.payload[..],
                        vec![("soak.bad".to_string(), b.id.clone())],
                    )
                })
                .collect();
            let acks = send(&producer, &records).await;
            for (b, ok) in bad.iter_mut().zip(acks) {
                b.acked = ok;
            }
            burst_done = true;
            soak.note(format!(
                "burst: {} malformed and out-of-range messages ({} acknowledged)",
                bad.len(),
                bad.iter().filter(|b| b.acked).count()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    soak.note(format!(
        "production done: {} of {} messages acknowledged",
        msgs.iter().filter(|m| m.acked.is_some()).count(),
        msgs.len()
    ));
    // The drain tail (RSS still sampled), then time for the correlator's last revisions.
    let left = soak.args.duration.saturating_sub(soak.at());
    let drained_end = soak.drain(left.max(Duration::from_secs(60))).await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        soak.watch()?;
    }
    soak.note(format!("drained at the end: {drained_end}"));
    collected.read(&soak.config).await?;
    drop(producer);

    // SIGTERM every role at once; each must exit 0 within the shutdown timeout.
    let mut stops: Vec<(String, Option<String>, Duration)> = Vec::new();
    let began = Instant::now();
    for role in &soak.roles {
        if let Some(pid) = role.pid() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    let limit = Duration::from_millis(SHUTDOWN_TIMEOUT_MS) + Duration::from_secs(5);
    for role in &mut soak.roles {
        let mut outcome = None;
        if let Some(child) = role.child.as_mut() {
            while began.elapsed() < limit + Duration::from_secs(10) {
                if let Some(status) = child.try_wait()? {
                    outcome = Some(status_text(status));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if outcome.is_none() {
                child.kill()?;
                child.wait()?;
            }
        }
        stops.push((role.name.clone(), outcome, began.elapsed()));
        role.child = None;
    }
    soak.note("every role stopped".into());
    let load_end = load_average();

    let report = Report {
        soak: &soak,
        msgs: &msgs,
        bad: &bad,
        injected: &injected,
        collected: &collected,
        stops: &stops,
        limit,
        restarted,
        drained_end,
        send_failures,
        commit,
        loads: (load_start, load_end),
    };
    // The alerts as read, one JSON line each, for a closer look after the run.
    let mut lines = String::new();
    for a in &collected.alerts {
        lines.push_str(&serde_json::to_string(a)?);
        lines.push('\n');
    }
    std::fs::write(soak.args.dir.join("alerts.jsonl"), lines)?;
    let missed = report.print().await?;
    if missed.is_empty() {
        println!("\nsoak: every target met");
        Ok(())
    } else {
        bail!("soak: targets missed: {}", missed.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    soak: &'a Soak,
    msgs: &'a [Msg],
    bad: &'a [Bad],
    injected: &'a [Injected],
    collected: &'a Collected,
    stops: &'a [(String, Option<String>, Duration)],
    limit: Duration,
    restarted: Option<(Duration, bool)>,
    drained_end: bool,
    send_failures: u64,
    commit: String,
    loads: (String, String),
}

const MIB: f64 = 1024.0;

impl Report<'_> {
    /// Prints every figure; returns the targets missed.
    async fn print(&self) -> Result<Vec<String>> {
        let mut missed = Vec::new();
        let soak = self.soak;
        println!("\n==================== soak report ====================");
        println!(
            "commit {}, {} s, {} incidents, seed {}, load average at start {} / at end {}",
            self.commit,
            soak.args.duration.as_secs(),
            soak.args.incidents,
            soak.args.seed,
            self.loads.0,
            self.loads.1
        );
        println!("events:");
        println!(
            "| source | messages produced | events produced (distinct points expected) | consumed (culprit_events_total) | points stored | lost by culprit | lost around the broker restart | open at the end | duplicate or foreign | DLQ messages (culprit_dlq_total) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let restart_at = self.restarted.map(|r| r.0);
        let end_minute = self
            .msgs
            .iter()
            .flat_map(|m| m.events.iter().map(|e| e.1))
            .max()
            .unwrap_or(0)
            .div_euclid(BUCKET_NS);
        // Missing points by cause, per message: events of the last minutes (windows still open
        // when the stream ended); events whose every message was acknowledged before the broker
        // restart (the broker lost what a restarted embedder would re-read); the rest, lost by
        // culprit.
        let open_from = (end_minute + 1) * BUCKET_NS - OPEN_AT_END_MINUTES * 60 * NANOS;
        let (mut open_at_end, mut with_broker, mut by_culprit, mut extra_total) = (0, 0, 0, 0);
        for source in SourceKind::ALL {
            let acked: Vec<&Msg> = self
                .msgs
                .iter()
                .filter(|m| m.source == source && m.acked.is_some())
                .collect();
            let events: usize = acked.iter().map(|m| m.events.len()).sum();
            // id -> (event time, some message holding it was acknowledged after the restart)
            let mut expected: HashMap<u64, (i64, bool)> = HashMap::new();
            for m in &acked {
                let after = restart_at.is_none_or(|r| m.acked.is_some_and(|a| a > r));
                for &(id, at) in &m.events {
                    expected.entry(id).or_insert((at, after)).1 |= after;
                }
            }
            let role = soak
                .roles
                .iter()
                .find(|r| r.name == format!("embedder-{source}"))
                .context("role")?;
            let consumed = role.events_ended + role.events_now;
            let dlq = role.dlq_ended + role.dlq_now;
            let path = role.store.clone().context("store path")?;
            let store = if path.exists() {
                Some(EmbeddedStore::open(&path)?)
            } else {
                None
            };
            let stored = match &store {
                Some(store) => {
                    store
                        .count(&Filter {
                            source: Some(source),
                            reference: Some(false),
                            ..Filter::default()
                        })
                        .await?
                }
                None => 0,
            };
            if stored == 0 {
                println!(
                    "| {source} | {} | {events} ({}) | {consumed:.0} | 0 | n/a: this source writes no points | | | | {dlq:.0} |",
                    acked.len(),
                    expected.len()
                );
                continue;
            }
            let store = store.context("store")?;
            let (mut open, mut broker, mut culprit, mut present) = (0, 0, 0, 0u64);
            // (10 s bucket, cause) -> missing points, for the listing.
            let mut gone: BTreeMap<(i64, &str), u64> = BTreeMap::new();
            for (&id, &(at, after_restart)) in &expected {
                if store.contains(PointId(id)) {
                    present += 1;
                    continue;
                }
                let cause = if at >= open_from {
                    open += 1;
                    "open at the end of the stream"
                } else if !after_restart {
                    broker += 1;
                    "acknowledged before the broker restart"
                } else {
                    culprit += 1;
                    "lost by culprit"
                };
                *gone.entry((at.div_euclid(BUCKET_NS), cause)).or_default() += 1;
            }
            for ((bucket, cause), missing) in gone.iter().take(40) {
                println!(
                    "    {source}: {missing} points missing of the 10 s from {} ({cause})",
                    chrono::DateTime::from_timestamp(bucket * BUCKET_NS / NANOS, 0)
                        .unwrap_or_default()
                );
            }
            // Stored points no acknowledged message carried are duplicates or foreign.
            let extra = stored.saturating_sub(present);
            open_at_end += open;
            with_broker += broker;
            by_culprit += culprit;
            extra_total += extra;
            println!(
                "| {source} | {} | {events} ({}) | {consumed:.0} | {stored} | {culprit} | {broker} | {open} | {extra} | {dlq:.0} |",
                acked.len(),
                expected.len()
            );
        }
        println!(
            "produce failures: {}; broker restart at {}; drained before it: {}; drained at the end: {}",
            self.send_failures,
            restart_at.map_or("-".to_string(), |r| format!("{:.0} s", r.as_secs_f64())),
            self.restarted.is_some_and(|r| r.1),
            self.drained_end
        );
        println!(
            "missing points: {by_culprit} lost by culprit, {with_broker} of minutes acknowledged before the broker restart, {open_at_end} in the last {OPEN_AT_END_MINUTES} minutes of the stream (windows still open)"
        );
        if by_culprit > 0 {
            missed.push(format!("{by_culprit} event points lost by culprit"));
        }
        if with_broker > 0 {
            missed.push(format!(
                "{with_broker} event points lost around the broker restart (tansu lost the messages a restarted embedder would re-read)"
            ));
        }
        if extra_total > 0 {
            missed.push(format!("{extra_total} duplicate or foreign points"));
        }

        // The dead-letter topic.
        println!("\ndead letters (culprit.dlq, read before the broker restart and at the end):");
        let mut by_reason: BTreeMap<(String, String), usize> = BTreeMap::new();
        for d in &self.collected.dead {
            *by_reason
                .entry((
                    d.header("culprit.source_topic").unwrap_or_default(),
                    d.header("culprit.reason")
                        .unwrap_or_else(|| "(none)".into()),
                ))
                .or_default() += 1;
        }
        println!("| source topic | culprit.reason | messages |");
        println!("|---|---|---|");
        for ((t, r), n) in &by_reason {
            println!("| {t} | {r} | {n} |");
        }
        println!("burst: injected message -> reason in the DLQ");
        let mut bad_missing = 0;
        for b in self.bad {
            let found: Vec<String> = self
                .collected
                .dead
                .iter()
                .filter(|d| d.header("soak.bad").as_deref() == Some(b.id.as_str()))
                .map(|d| {
                    d.header("culprit.reason")
                        .unwrap_or_else(|| "(no reason)".into())
                })
                .collect();
            if found.is_empty() || found.iter().any(|r| r == "(no reason)") {
                bad_missing += 1;
            }
            println!(
                "    {:<28} acked {:<5} -> {}",
                b.id,
                b.acked,
                if found.is_empty() {
                    "NOT IN THE DLQ".to_string()
                } else {
                    found.join(", ")
                }
            );
        }
        if bad_missing > 0 {
            missed.push(format!(
                "{bad_missing} of {} bad messages not in the DLQ with a reason",
                self.bad.len()
            ));
        }

        // Alerts.
        let alerts = &self.collected.alerts;
        let mut revisions: HashMap<(String, u32), usize> = HashMap::new();
        let mut incidents: BTreeMap<String, Vec<&RcaAlert>> = BTreeMap::new();
        for a in alerts {
            *revisions
                .entry((a.incident_id.clone(), a.revision))
                .or_default() += 1;
            incidents.entry(a.incident_id.clone()).or_default().push(a);
        }
        let duplicates: usize = revisions.values().map(|n| n - 1).sum();
        println!(
            "\nalerts: {} records on culprit.alerts, {} incidents, {} duplicate revisions",
            alerts.len(),
            incidents.len(),
            duplicates
        );
        if duplicates > 0 {
            missed.push(format!("{duplicates} duplicate alert revisions"));
        }
        println!("| injected incident | root cause | fault start | alerted incidents | revisions | first revision's first candidate | last revision's first candidate |");
        println!("|---|---|---|---|---|---|---|");
        let mut matched: HashSet<String> = HashSet::new();
        let mut not_alerted = 0;
        let mut named = 0;
        for inj in self.injected {
            let hits: Vec<(&String, &Vec<&RcaAlert>)> = incidents
                .iter()
                .filter(|(_, revs)| {
                    revs.iter().any(|a| {
                        a.started_at >= inj.fault_start_ns - 5 * 60 * NANOS
                            && a.started_at <= inj.fault_end_ns + 5 * 60 * NANOS
                    })
                })
                .collect();
            if hits.is_empty() {
                not_alerted += 1;
            }
            let mut revs: Vec<&RcaAlert> =
                hits.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            revs.sort_by_key(|a| (a.updated_at, a.revision));
            let first = revs
                .iter()
                .find_map(|a| a.root_causes.first().map(|c| c.service.clone()));
            let last = revs
                .iter()
                .rev()
                .find_map(|a| a.root_causes.first().map(|c| c.service.clone()));
            if last.as_deref() == Some(inj.root_cause.as_str()) {
                named += 1;
            }
            for (id, _) in &hits {
                matched.insert((*id).clone());
            }
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                inj.scenario,
                inj.root_cause,
                chrono::DateTime::from_timestamp(inj.fault_start_ns / NANOS, 0).unwrap_or_default(),
                hits.len(),
                revs.len(),
                first.unwrap_or_else(|| "-".into()),
                last.unwrap_or_else(|| "-".into())
            );
        }
        let others: Vec<&String> = incidents.keys().filter(|k| !matched.contains(*k)).collect();
        println!(
            "expected {} incidents, alerted {}, first candidate right at the last revision {}; {} other incidents alerted",
            self.injected.len(),
            self.injected.len() - not_alerted,
            named,
            others.len()
        );
        println!("| incident | started | revisions | last status | first revision's first candidate | last revision's first candidate | injected |");
        println!("|---|---|---|---|---|---|---|");
        for (id, revs) in &incidents {
            let mut revs = revs.clone();
            revs.sort_by_key(|a| a.revision);
            let (first, last) = (revs[0], revs[revs.len() - 1]);
            let top = |a: &RcaAlert| {
                a.root_causes
                    .first()
                    .map_or("-".to_string(), |c| c.service.clone())
            };
            println!(
                "| {id} | {} | {} (r{}..r{}) | {:?} | {} | {} | {} |",
                chrono::DateTime::from_timestamp(first.started_at / NANOS, 0).unwrap_or_default(),
                revs.len(),
                first.revision,
                last.revision,
                last.status,
                top(first),
                top(last),
                if matched.contains(id) { "yes" } else { "no" }
            );
        }
        if not_alerted > 0 {
            missed.push(format!(
                "{not_alerted} of {} injected incidents not alerted",
                self.injected.len()
            ));
        }

        // Processes.
        println!("\nroles:");
        println!(
            "| role | kill -9 | crashes (exit) | RSS max MiB | RSS per 5 min (max MiB) | SIGTERM |"
        );
        println!("|---|---|---|---|---|---|");
        for role in &soak.roles {
            let max = role.rss.iter().map(|r| r.1).max().unwrap_or(0) as f64 / MIB;
            let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
            for (at, kib) in &role.rss {
                let b = buckets.entry(at.as_secs() / 300).or_default();
                *b = (*b).max(*kib);
            }
            let series = buckets
                .values()
                .map(|k| format!("{:.0}", *k as f64 / MIB))
                .collect::<Vec<_>>()
                .join(" ");
            let crashes = if role.crashes.is_empty() {
                "0".to_string()
            } else {
                format!(
                    "{} ({})",
                    role.crashes.len(),
                    role.crashes
                        .iter()
                        .map(|(at, s)| format!("{s} at {:.0} s", at.as_secs_f64()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let stop = self.stops.iter().find(|s| s.0 == role.name).map_or(
                "-".to_string(),
                |(_, o, t)| match o {
                    Some(o) => format!("{o} in {:.1} s", t.as_secs_f64()),
                    None => format!("no exit within {:.0} s (killed)", t.as_secs_f64()),
                },
            );
            println!(
                "| {} | {} | {} | {:.0} | {} | {} |",
                role.name, role.kills, crashes, max, series, stop
            );
            if role.is_embedder() && max > 256.0 {
                missed.push(format!("{} RSS {max:.0} MiB > 256 MiB", role.name));
            }
            match self.stops.iter().find(|s| s.0 == role.name) {
                Some((_, Some(o), t)) if o == "exit 0" && *t <= self.limit => {}
                Some((_, o, t)) => missed.push(format!(
                    "{} on SIGTERM: {} after {:.1} s",
                    role.name,
                    o.as_deref().unwrap_or("no exit"),
                    t.as_secs_f64()
                )),
                None => {}
            }
        }
        println!("\nevents of the run:");
        for n in &soak.notes {
            println!("    {n}");
        }
        let summary = serde_json::json!({
            "commit": self.commit,
            "duration_secs": soak.args.duration.as_secs(),
            "missed": missed,
            "notes": soak.notes,
        });
        std::fs::write(
            soak.args.dir.join("summary.json"),
            serde_json::to_vec_pretty(&summary)?,
        )?;
        Ok(missed)
    }
}
