//! `culprit serve` as an operator runs it: the Kafka services and the HTTP API come up against a
//! real broker, answer health, readiness and metrics, and stop cleanly on SIGTERM.
//!
//! Needs the broker `scripts/test.sh` starts (127.0.0.1:9092, or `CULPRIT_KAFKA_BROKERS`);
//! `CULPRIT_SKIP_KAFKA=1` skips it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "smoke-test-token-0123456789";

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with(port, path, "")
}

/// GET with extra header lines (each ending in `\r\n`).
fn get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response))
}

fn wait_for_status(port: u16, path: &str, want: u16, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((status, body)) = get(port, path) {
            if status == want {
                return Some(body);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn serve_answers_health_readiness_and_metrics_and_stops_on_sigterm() {
    if std::env::var("CULPRIT_SKIP_KAFKA").is_ok_and(|v| v == "1") {
        println!("skipped: CULPRIT_SKIP_KAFKA=1");
        return;
    }
    let brokers =
        std::env::var("CULPRIT_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let broker_addr = brokers.split(',').next().unwrap().to_string();
    assert!(
        TcpStream::connect(&broker_addr).is_ok(),
        "no Kafka broker at {broker_addr}: run `bash scripts/kafka-test-env.sh install && bash scripts/kafka-test-env.sh start` \
         or set CULPRIT_SKIP_KAFKA=1"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = std::process::id();
    let child = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .arg("serve")
        .env("CULPRIT__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("CULPRIT_API_TOKENS", format!("smoke:read:{TOKEN}"))
        .env("CULPRIT__KAFKA__BROKERS", &brokers)
        .env(
            "CULPRIT__KAFKA__EMBEDDER_GROUP_PREFIX",
            format!("smoke-{id}"),
        )
        .env(
            "CULPRIT__KAFKA__CORRELATOR_GROUP",
            format!("smoke-{id}-correlator"),
        )
        .env("CULPRIT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("culprit serve starts");
    let mut child = KillOnDrop(child);

    assert!(
        wait_for_status(port, "/healthz", 200, Duration::from_secs(30)).is_some(),
        "/healthz never answered 200"
    );
    assert!(
        wait_for_status(port, "/readyz", 200, Duration::from_secs(30)).is_some(),
        "/readyz never became ready with the broker up: {:?}",
        get(port, "/readyz")
    );
    let metrics =
        wait_for_status(port, "/metrics", 200, Duration::from_secs(5)).expect("/metrics answers");
    assert!(metrics.contains("culprit_"), "{metrics}");
    let (status, _) = get(port, "/incidents").expect("/incidents answers");
    assert_eq!(status, 401, "incidents need a token");
    let (status, _) = get_with(
        port,
        "/incidents",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .expect("/incidents answers");
    assert_eq!(status, 200);
    // The embedders of this process show their baselines (none learned yet: an empty list, not
    // the 501 of a process without detectors).
    let (status, body) = get_with(
        port,
        "/baselines",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .expect("/baselines answers");
    assert_eq!(status, 200, "{body}");
    let (status, shell) = get(port, "/").expect("the dashboard answers");
    assert_eq!(status, 200);
    assert!(shell.contains("API token"), "{shell}");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(45);
    let exit = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "culprit serve did not stop within 45 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}\n{stderr}");
}
