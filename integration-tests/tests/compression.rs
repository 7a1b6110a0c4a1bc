//! Compressed batches round-trip through the broker: the OpenTelemetry Collector's Kafka
//! exporter compresses with zstd or lz4 (or gzip, snappy), and culprit's consumers must read them.

use anyhow::Result;
use culprit_integration_tests::{broker_or_skip, Record, TestEnv};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_with_zstd_lz4_gzip_and_snappy_are_read_back_intact() -> Result<()> {
    let Some(brokers) = broker_or_skip() else {
        return Ok(());
    };
    for codec in ["zstd", "lz4", "gzip", "snappy"] {
        let mut env = TestEnv::new(&brokers, &format!("compression-{codec}")).await?;
        env.config
            .extra
            .insert("compression.codec".into(), codec.into());
        // Repetitive JSON, as OTLP is: each batch compresses well.
        let records: Vec<Record> = (0..300)
            .map(|i| {
                Record::new(
                    format!(
                        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc-{}"}}}}]}},"seq":{i}}}]}}"#,
                        i % 7
                    )
                    .into_bytes(),
                )
            })
            .collect();
        let topic = env.config.topics.spans.clone();
        env.produce(&topic, &records).await?;
        let read = env.read_until(&topic, Duration::from_secs(30), |got| {
            got.len() >= records.len()
        })?;
        let count = |payloads: Vec<&[u8]>| {
            let mut m: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for p in payloads {
                *m.entry(p.to_vec()).or_default() += 1;
            }
            m
        };
        assert_eq!(
            count(read.iter().map(|r| r.payload.as_slice()).collect()),
            count(records.iter().map(|r| r.payload.as_slice()).collect()),
            "{codec}: the records read back differ from those produced"
        );
        println!("{codec}: {} records produced and read back", read.len());
    }
    Ok(())
}
