//! Damaged payloads must come back as errors with a known reason code, never as a panic.

mod common;

use common::{COLLECTOR_LOGS, COLLECTOR_METRICS, COLLECTOR_TRACE};
use culprit_otlp::changes::decode_changes;
use culprit_otlp::{
    decode, parse_logs, parse_metrics, parse_traces, to_protobuf, Encoding, Signal,
};

const CODES: [&str; 5] = [
    "empty",
    "too_large",
    "malformed_json",
    "malformed_protobuf",
    "invalid_field",
];

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncates, flips, deletes or duplicates bytes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out.truncate(at),
            1 => out[at] ^= 1 << rng.below(8),
            2 => {
                out.remove(at);
            }
            _ => {
                let b = out[at];
                out.insert(at, b);
            }
        }
    }
    out
}

#[test]
fn mutated_otlp_payloads_fail_with_known_reason_codes() {
    let inputs = [
        (
            Signal::Traces,
            COLLECTOR_TRACE.as_bytes().to_vec(),
            to_protobuf(&parse_traces(Encoding::Json, COLLECTOR_TRACE.as_bytes()).unwrap()),
        ),
        (
            Signal::Logs,
            COLLECTOR_LOGS.as_bytes().to_vec(),
            to_protobuf(&parse_logs(Encoding::Json, COLLECTOR_LOGS.as_bytes()).unwrap()),
        ),
        (
            Signal::Metrics,
            COLLECTOR_METRICS.as_bytes().to_vec(),
            to_protobuf(&parse_metrics(Encoding::Json, COLLECTOR_METRICS.as_bytes()).unwrap()),
        ),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = 0;
    for _ in 0..400 {
        for (signal, json, proto) in &inputs {
            for (encoding, bytes) in [(Encoding::Json, json), (Encoding::Protobuf, proto)] {
                if let Err(e) = decode(*signal, encoding, &mutate(&mut rng, bytes)) {
                    failures += 1;
                    assert!(CODES.contains(&e.reason_code()), "{e}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    assert!(failures > 0, "mutations should break some payloads");
}

#[test]
fn mutated_change_events_fail_with_known_reason_codes() {
    let doc = br#"[{"id":"a","time":"2026-11-22T03:00:00Z","type":"deployment","service":"s","attributes":{"v":1}},
                   {"specversion":"1.0","id":"b","type":"dev.cdevents.service.deployed.0.1.1","time":"2026-11-22T03:00:00Z",
                    "data":{"subject":{"id":"x","content":{"artifactId":"pkg:oci/app@1%2"}}}}]"#;
    let mut rng = Rng(42);
    for _ in 0..1000 {
        if let Err(e) = decode_changes(&mutate(&mut rng, doc)) {
            assert!(CODES.contains(&e.reason_code()), "{e}");
        }
    }
}
