//! Support for culprit's end-to-end tests against a real Kafka-compatible broker (tansu, started
//! by `bash scripts/kafka-test-env.sh start`; CI does it before `cargo test`).
//!
//! Every test gets its own topics and consumer groups ([`TestEnv::new`]), so tests run in
//! parallel against one broker. A broker that cannot be reached fails the test with the command
//! that starts one; `CULPRIT_SKIP_KAFKA=1` skips instead.
#![forbid(unsafe_code)]

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use culprit_core::{Event, RcaAlert};
use culprit_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use culprit_kafka::rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use culprit_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use culprit_kafka::rdkafka::{Offset, TopicPartitionList};
use culprit_kafka::{event_key, EventSink, KafkaConfig};
use culprit_otlp::{Encoding, Signal};
use culprit_sim::{Scenario, SimConfig, SimRun};
use culprit_sink::{AlertSink, SinkError};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PARTITIONS: i32 = 4;

/// Returns the broker list, or None (after saying so) when `CULPRIT_SKIP_KAFKA=1`. Panics with
/// instructions when the broker is unreachable: a silent skip would hide a broken setup.
pub fn broker_or_skip() -> Option<String> {
    if std::env::var("CULPRIT_SKIP_KAFKA").is_ok_and(|v| v == "1") {
        println!("skipped: CULPRIT_SKIP_KAFKA=1");
        return None;
    }
    let brokers =
        std::env::var("CULPRIT_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let first = brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok());
    assert!(
        reachable,
        "no Kafka broker at {first} (CULPRIT_KAFKA_BROKERS). Start one with:\n    \
         bash scripts/kafka-test-env.sh install && bash scripts/kafka-test-env.sh start\n\
         or set CULPRIT_SKIP_KAFKA=1 to skip the Kafka tests."
    );
    Some(brokers)
}

/// One test's topics and groups, all with a unique suffix.
pub struct TestEnv {
    pub config: KafkaConfig,
}

impl TestEnv {
    /// A configuration with unique topic and group names (created with [`PARTITIONS`]
    /// partitions) and short intervals suited to tests.
    pub async fn new(brokers: &str, test: &str) -> Result<TestEnv> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let id = format!(
            "{test}-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000_000
        );
        let mut config = KafkaConfig {
            brokers: brokers.to_string(),
            ..KafkaConfig::default()
        };
        let t = &mut config.topics;
        for topic in [
            &mut t.spans,
            &mut t.logs,
            &mut t.metrics,
            &mut t.changes,
            &mut t.anomalies,
            &mut t.alerts,
            &mut t.dlq,
        ] {
            *topic = format!("{topic}.{id}");
        }
        config.embedder_group_prefix = format!("culprit-embedder-{id}");
        config.correlator_group = format!("culprit-correlator-{id}");
        config.client_id = format!("culprit-test-{test}");
        config.commit_interval_ms = 200;
        config.commit_batch_messages = 20;
        config.retry_initial_backoff_ms = 50;
        config.retry_max_backoff_ms = 500;
        config.shutdown_timeout_ms = 10_000;
        // Snapshots of the embedders' state go to a directory of this test's own, not the
        // working directory (tests that restart an embedder point it elsewhere themselves).
        config.state_dir = std::env::temp_dir().join(format!("culprit-test-state-{id}"));
        culprit_kafka::ensure_topics(&config, &config.all_topics(), PARTITIONS).await?;
        Ok(TestEnv { config })
    }

    pub fn producer(&self) -> Result<FutureProducer> {
        let mut c = culprit_kafka::base_client_config(&self.config);
        c.set("linger.ms", "5");
        Ok(c.create()?)
    }

    /// Produces `payloads` to `topic`, each with the given key (None: round robin) and headers.
    pub async fn produce(&self, topic: &str, records: &[Record]) -> Result<()> {
        let producer = self.producer()?;
        let mut deliveries = Vec::new();
        for r in records {
            let mut rec = FutureRecord::to(topic).payload(&r.payload);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            rec = rec.headers(headers);
            deliveries.push(producer.send(rec, Duration::from_secs(30)));
        }
        for d in futures_join(deliveries).await {
            d.map_err(|(e, _)| e).context("producing test data")?;
        }
        Ok(())
    }

    /// Reads every partition of `topic` from the beginning (no group) until `done` says so or
    /// `timeout` passes; returns what it read.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        let consumer: BaseConsumer = {
            let mut c = culprit_kafka::base_client_config(&self.config);
            c.set("group.id", format!("reader-{topic}"));
            c.set("enable.auto.commit", "false");
            c.set("auto.offset.reset", "earliest");
            c.create()?
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while !done(&out) {
            if Instant::now() > deadline {
                break;
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers
                            .insert(header.key.to_string(), header.value.unwrap_or(&[]).to_vec());
                    }
                }
                out.push(Received {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().unwrap_or(&[]).to_vec(),
                    headers,
                    partition: m.partition(),
                });
            }
        }
        Ok(out)
    }
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub key: Option<String>,
    pub partition: Option<i32>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn new(payload: Vec<u8>) -> Record {
        Record {
            payload,
            ..Record::default()
        }
    }
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub partition: i32,
}

impl Received {
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// An idempotent in-memory store keyed by [`event_key`]: counts how often each key was written.
/// `fail` makes writes fail (a store outage).
#[derive(Default)]
pub struct MemoryStore {
    pub writes: Mutex<HashMap<String, u32>>,
    pub fail: AtomicBool,
    pub failed_writes: AtomicU64,
}

impl MemoryStore {
    pub fn distinct(&self) -> usize {
        self.writes.lock().unwrap().len()
    }

    pub fn counts(&self) -> HashMap<String, u32> {
        self.writes.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventSink for MemoryStore {
    async fn write(&self, events: &[Event]) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("store unavailable (simulated outage)");
        }
        let mut writes = self.writes.lock().unwrap();
        for e in events {
            *writes.entry(event_key(e)).or_default() += 1;
        }
        Ok(())
    }
}

/// A store that appends each event key to a file, one per line (a child process's store that
/// survives `kill -9`): reading it back as a set is the idempotent store's content.
pub struct FileStore {
    pub path: PathBuf,
    pub file: Mutex<std::fs::File>,
}

impl FileStore {
    pub fn open(path: PathBuf) -> Result<FileStore> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(FileStore {
            path,
            file: Mutex::new(file),
        })
    }

    /// Every key written (with repeats) by any process that used `path`.
    pub fn read(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[async_trait]
impl EventSink for FileStore {
    async fn write(&self, events: &[Event]) -> Result<()> {
        let mut buf = String::new();
        for e in events {
            buf.push_str(&event_key(e));
            buf.push('\n');
        }
        let mut f = self.file.lock().unwrap();
        f.write_all(buf.as_bytes())?;
        f.flush()?;
        Ok(())
    }
}

/// Collects the alerts the correlator hands to its publisher.
#[derive(Default)]
pub struct CollectingPublisher {
    pub alerts: Mutex<Vec<RcaAlert>>,
}

#[async_trait]
impl AlertSink for CollectingPublisher {
    fn name(&self) -> &str {
        "collecting"
    }

    async fn emit(&self, alert: &RcaAlert) -> std::result::Result<(), SinkError> {
        self.alerts.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

/// The shortened simulated incident the tests use: 25 healthy minutes then 4 of the fault.
pub fn short_incident(scenario: Scenario) -> SimRun {
    culprit_sim::simulate(
        scenario,
        &SimConfig {
            normal_minutes: 25,
            fault_minutes: 4,
            ..SimConfig::default()
        },
    )
}

/// Detectors learn the first 20 minutes of the 25 healthy ones.
pub const WARMUP_SECS: u32 = 20 * 60;

/// A simulated run as the Kafka exporter would publish it (OTLP protobuf, one request per
/// message; change events as native JSON), per input topic of `config`.
pub fn run_records(run: &SimRun, config: &KafkaConfig) -> Vec<(String, Vec<Vec<u8>>)> {
    vec![
        (
            config.topics.spans.clone(),
            run.traces.iter().map(culprit_otlp::to_protobuf).collect(),
        ),
        (
            config.topics.logs.clone(),
            run.logs.iter().map(culprit_otlp::to_protobuf).collect(),
        ),
        (
            config.topics.metrics.clone(),
            run.metrics.iter().map(culprit_otlp::to_protobuf).collect(),
        ),
        (
            config.topics.changes.clone(),
            run.changes
                .iter()
                .map(|c| serde_json::to_vec(c).expect("json"))
                .collect(),
        ),
    ]
}

/// The event keys the embedder of `signal` must store for `payloads`.
pub fn expected_keys(signal: Signal, payloads: &[Vec<u8>]) -> HashMap<String, u32> {
    let mut keys = HashMap::new();
    for p in payloads {
        for e in
            culprit_otlp::decode(signal, Encoding::Protobuf, p).expect("simulated data decodes")
        {
            *keys.entry(event_key(&e)).or_default() += 1;
        }
    }
    keys
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// The alert that names the incident's first candidate, among those published after `since`.
pub fn first_candidate(alerts: &[RcaAlert], since_ns: i64) -> Option<String> {
    alerts
        .iter()
        .filter(|a| a.updated_at >= since_ns)
        .filter_map(|a| a.root_causes.first().map(|c| c.service.clone()))
        .next_back()
}

/// A broker of a test's own (the shared one must not restart under the other tests), started and
/// stopped with the project's script on a free port; in-memory, so a restart loses every topic
/// and offset. Stopped when dropped.
pub struct TestBroker {
    env: Vec<(&'static str, String)>,
    pub address: String,
}

impl TestBroker {
    pub fn start() -> Result<TestBroker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let state = std::env::temp_dir().join(format!("culprit-own-broker-{port}"));
        let broker = TestBroker {
            env: vec![
                ("CULPRIT_KAFKA_PORT", port.to_string()),
                ("CULPRIT_KAFKA_STATE", state.display().to_string()),
            ],
            address: format!("127.0.0.1:{port}"),
        };
        broker.script("start")?;
        Ok(broker)
    }

    /// Runs `scripts/kafka-test-env.sh <command>` (`start`, `stop`) for this broker.
    pub fn script(&self, command: &str) -> Result<()> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-test-env.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kafka-test-env.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// The command line of a `culprit-test-embedder` child (the binary's path comes from the test,
/// `env!("CARGO_BIN_EXE_culprit-test-embedder")`): the config file, the source, the file of
/// event keys, the warm-up and, optionally, the embedded vector store file. Killed on drop.
pub fn test_embedder(
    bin: &str,
    config: &std::path::Path,
    source: &str,
    keys: &std::path::Path,
    warmup_secs: u32,
    vectors: Option<&std::path::Path>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin);
    command
        .arg(config)
        .arg(source)
        .arg(keys)
        .arg(warmup_secs.to_string())
        .args(vectors)
        .kill_on_drop(true);
    command
}

/// Starts an embedder child from `command()`, waits up to `timeout` until `ready` holds (the
/// point mid-stream to kill it at), kills it with SIGKILL (no shutdown, nothing flushed), calls
/// `killed` (to look at what it left) and starts it again with its stdout captured (for
/// [`terminate`]). Fails when `ready` never held.
pub async fn kill_when_and_restart(
    command: impl Fn() -> tokio::process::Command,
    timeout: Duration,
    ready: impl FnMut() -> bool,
    killed: impl FnOnce(),
) -> Result<tokio::process::Child> {
    let mut child = command().spawn().context("starting the embedder")?;
    let reached = wait_for(timeout, ready).await;
    child.start_kill()?; // SIGKILL
    child.wait().await?;
    anyhow::ensure!(
        reached,
        "the first embedder did not reach the point to kill it at within {timeout:?}"
    );
    killed();
    let mut restarted = command();
    restarted.stdout(std::process::Stdio::piped());
    restarted.spawn().context("restarting the embedder")
}

/// Stops an embedder child with SIGTERM (a clean shutdown) and returns its exit status and
/// output, within 30 s.
pub async fn terminate(child: tokio::process::Child) -> Result<std::process::Output> {
    let pid = child.id().context("the child has exited already")?;
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    Ok(tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??)
}
