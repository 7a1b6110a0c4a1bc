//! The Kafka client as culprit builds it: TLS, SASL and every compression codec are compiled in,
//! and a SASL_SSL configuration verifies the broker's certificate and starts SCRAM.
//!
//! The local test broker (tansu) cannot hold SCRAM users in its in-memory storage, so the SASL_SSL
//! tests talk to a listener started here: a TLS server (rustls, the certificates in `tests/tls`)
//! that speaks just enough of the Kafka protocol (ApiVersions, SaslHandshake) for the client to
//! send its first SCRAM message, then hangs up.

use culprit_kafka::rdkafka::config::ClientConfig;
use culprit_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use culprit_kafka::rdkafka::producer::BaseProducer;
use culprit_kafka::{client_config, KafkaConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
}

#[test]
fn librdkafka_is_built_with_tls_sasl_and_every_compression_codec() {
    let native = ClientConfig::new().create_native_config().unwrap();
    let features = native.get("builtin.features").unwrap();
    let features: Vec<&str> = features.split(',').collect();
    for wanted in [
        "ssl",
        "sasl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
        "gzip",
        "snappy",
        "lz4",
        "zstd",
    ] {
        assert!(
            features.contains(&wanted),
            "librdkafka lacks {wanted}: {features:?}"
        );
    }
}

#[test]
fn clients_accept_every_security_protocol_mechanism_and_codec_culprit_documents() {
    let ca = tls_dir().join("ca.pem");
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", ca.to_str().unwrap()),
        ],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "PLAIN"),
        ],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
        ],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
        ],
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
        ],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "OAUTHBEARER"),
            ("sasl.oauthbearer.config", "principal=culprit"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
        ],
        &[("compression.codec", "zstd")],
        &[("compression.codec", "lz4")],
        &[("compression.codec", "gzip")],
        &[("compression.codec", "snappy")],
    ];
    for properties in cases {
        let mut config = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        for (k, v) in *properties {
            config.extra.insert(k.to_string(), v.to_string());
        }
        config
            .extra
            .entry("sasl.username".into())
            .or_insert_with(|| "culprit".into());
        config
            .extra
            .entry("sasl.password".into())
            .or_insert_with(|| "secret".into());
        let producer: Result<BaseProducer, _> = client_config(&config).unwrap().create();
        assert!(
            producer.is_ok(),
            "{properties:?} refused: {:?}",
            producer.err()
        );
    }
    // And the check works: a codec librdkafka does not know is refused.
    let mut config = KafkaConfig::default();
    config
        .extra
        .insert("compression.codec".into(), "brotli".into());
    assert!(client_config(&config)
        .unwrap()
        .create::<BaseProducer>()
        .is_err());
}

/// What the listener saw on one connection.
#[derive(Debug)]
enum Seen {
    /// The TLS handshake (or the first read after it) failed.
    TlsFailed(String),
    /// SaslHandshake asked for this mechanism.
    Mechanism(String),
    /// SaslAuthenticate carried these bytes (SCRAM's client-first message).
    AuthBytes(Vec<u8>),
}

/// A TLS listener on an ephemeral port that answers ApiVersions and SaslHandshake and reports
/// what the client sent, until the test ends.
fn start_listener() -> (u16, mpsc::Receiver<Seen>) {
    let dir = tls_dir();
    let certs = vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let tx = tx.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = serve(tcp, config, &tx);
            });
        }
    });
    (port, rx)
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    tx: &mpsc::Sender<Seen>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = tls.read_exact(&mut len) {
            // Before any request: the client refused our certificate (or never spoke TLS).
            if tls.conn.is_handshaking() || e.kind() == std::io::ErrorKind::InvalidData {
                let _ = tx.send(Seen::TlsFailed(e.to_string()));
            }
            return Err(e);
        }
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        tls.read_exact(&mut frame)?;
        let mut r = Reader(&frame);
        let api_key = r.i16();
        let api_version = r.i16();
        let correlation_id = r.i32();
        let _client_id = r.string();
        let mut response = correlation_id.to_be_bytes().to_vec();
        match api_key {
            // ApiVersions (v3: flexible request; the response header is always v0).
            18 => {
                response.extend(0i16.to_be_bytes());
                if api_version >= 3 {
                    let apis: &[(i16, i16, i16)] = &[(18, 0, 3), (17, 0, 1), (36, 0, 1)];
                    response.push(apis.len() as u8 + 1);
                    for (key, min, max) in apis {
                        response.extend(key.to_be_bytes());
                        response.extend(min.to_be_bytes());
                        response.extend(max.to_be_bytes());
                        response.push(0);
                    }
                    response.extend(0i32.to_be_bytes());
                    response.push(0);
                } else {
                    response.extend(3i32.to_be_bytes());
                    for (key, min, max) in [(18i16, 0i16, 3i16), (17, 0, 1), (36, 0, 1)] {
                        response.extend(key.to_be_bytes());
                        response.extend(min.to_be_bytes());
                        response.extend(max.to_be_bytes());
                    }
                    if api_version >= 1 {
                        response.extend(0i32.to_be_bytes());
                    }
                }
            }
            // SaslHandshake v0/v1: answer that the asked-for mechanism is enabled.
            17 => {
                let mechanism = r.string().unwrap_or_default();
                let _ = tx.send(Seen::Mechanism(mechanism.clone()));
                response.extend(0i16.to_be_bytes());
                response.extend(1i32.to_be_bytes());
                response.extend((mechanism.len() as i16).to_be_bytes());
                response.extend(mechanism.as_bytes());
            }
            // SaslAuthenticate v0/v1: report the client's first message and hang up.
            36 => {
                let n = r.i32() as usize;
                let _ = tx.send(Seen::AuthBytes(r.take(n).to_vec()));
                return Ok(());
            }
            _ => return Ok(()),
        }
        let mut out = (response.len() as i32).to_be_bytes().to_vec();
        out.extend(response);
        tls.write_all(&out)?;
        tls.flush()?;
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) -> Option<String> {
        let n = self.i16();
        (n >= 0).then(|| String::from_utf8_lossy(self.take(n as usize)).into_owned())
    }
}

/// A consumer of `config` asking for metadata in the background, so that it connects.
fn connect_in_background(config: &KafkaConfig) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = client_config(config)
        .expect("client configuration")
        .set("group.id", "culprit-security-test")
        .create()
        .expect("consumer");
    std::thread::spawn(move || {
        let _ = consumer.fetch_metadata(None, Duration::from_secs(8));
    })
}

fn next_seen(rx: &mpsc::Receiver<Seen>, deadline: Instant) -> Option<Seen> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

#[test]
fn sasl_ssl_verifies_the_broker_certificate_and_sends_scram_with_the_password_from_a_file() {
    let (port, rx) = start_listener();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "from-a-secret\n").unwrap();
    let mut config = KafkaConfig {
        brokers: format!("localhost:{port}"),
        ..KafkaConfig::default()
    };
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "culprit"),
        (
            "ssl.ca.location",
            tls_dir().join("ca.pem").to_str().unwrap(),
        ),
    ] {
        config.extra.insert(k.into(), v.into());
    }
    config.extra_files.insert("sasl.password".into(), password);
    let client = connect_in_background(&config);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut mechanism = None;
    let mut first_message = None;
    while first_message.is_none() {
        match next_seen(&rx, deadline) {
            Some(Seen::TlsFailed(e)) => panic!("TLS failed with the right CA: {e}"),
            Some(Seen::Mechanism(m)) => mechanism = Some(m),
            Some(Seen::AuthBytes(b)) => first_message = Some(String::from_utf8(b).unwrap()),
            None => panic!("no SASL exchange within 20 s (mechanism so far: {mechanism:?})"),
        }
    }
    assert_eq!(mechanism.as_deref(), Some("SCRAM-SHA-512"));
    let first_message = first_message.unwrap();
    // SCRAM client-first message: no channel binding, the user name, a client nonce.
    assert!(
        first_message.starts_with("n,,n=culprit,r=")
            && first_message.len() > "n,,n=culprit,r=".len(),
        "{first_message:?}"
    );
    client.join().unwrap();
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused_before_any_request() {
    let (port, rx) = start_listener();
    let mut config = KafkaConfig {
        brokers: format!("localhost:{port}"),
        ..KafkaConfig::default()
    };
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "culprit"),
        ("sasl.password", "secret"),
        (
            "ssl.ca.location",
            tls_dir().join("other-ca.pem").to_str().unwrap(),
        ),
    ] {
        config.extra.insert(k.into(), v.into());
    }
    let client = connect_in_background(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    match next_seen(&rx, deadline) {
        Some(Seen::TlsFailed(e)) => {
            assert!(e.to_lowercase().contains("alert"), "{e}");
        }
        other => panic!("expected the client to abort the TLS handshake, saw {other:?}"),
    }
    // Nothing after the failed handshake reached the listener.
    while let Ok(seen) = rx.try_recv() {
        assert!(matches!(seen, Seen::TlsFailed(_)), "{seen:?}");
    }
    client.join().unwrap();
}
