//! The embedded store's files: round trips, durability without a clean shutdown, torn log tails
//! cut off, and bad files refused with an error, never a panic.

use culprit_core::SourceKind;
use culprit_store::{
    EmbeddedStore, Filter, Point, PointEntry, PointId, PointWriter, StoreError, VectorStore, DIM,
    FORMAT_VERSION, WAL_VERSION,
};
use std::path::Path;

fn point(i: u64, service: &str) -> Point {
    let mut vector = vec![0.01; DIM];
    vector[(i as usize) % DIM] = 1.0;
    Point {
        id: PointId(i),
        vector,
        source: if i % 2 == 0 {
            SourceKind::Logs
        } else {
            SourceKind::Traces
        },
        service: service.to_string(),
        environment: if i % 3 == 0 {
            "prod".into()
        } else {
            "dev".into()
        },
        timestamp: i as i64 * 1_000,
        score: (i % 10) as f32 / 10.0,
        normal: i % 4 != 0,
    }
}

async fn write_sample(path: &Path) {
    let store = EmbeddedStore::open(path).unwrap();
    store
        .upsert(
            (0..50)
                .map(|i| point(i, if i < 25 { "a" } else { "b" }))
                .collect(),
        )
        .await
        .unwrap();
    store.flush().await.unwrap();
}

#[tokio::test]
async fn opening_a_missing_file_starts_empty_and_flush_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.store");
    let store = EmbeddedStore::open(&path).unwrap();
    assert!(store.is_empty());
    store.flush().await.unwrap();
    assert!(path.exists());
    assert!(EmbeddedStore::open(&path).unwrap().is_empty());
}

#[tokio::test]
async fn reopened_store_keeps_every_tag_and_retention_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.store");
    write_sample(&path).await;
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.delete_older_than(10_000).await.unwrap(), 10);
    store.flush().await.unwrap();

    let again = EmbeddedStore::open(&path).unwrap();
    assert_eq!(again.len(), 40);
    let probe = point(30, "b");
    let hit = &again
        .search(&probe.vector, &Filter::all(), 1)
        .await
        .unwrap()[0];
    assert_eq!(
        (hit.id, hit.service.as_str(), hit.timestamp),
        (PointId(30), "b", 30_000)
    );
    assert!(hit.distance < 1e-6);
    let f = Filter::all()
        .service("b")
        .environment("prod")
        .source(SourceKind::Logs)
        .normal_only();
    assert_eq!(
        again.count(&f).await.unwrap(),
        store.count(&f).await.unwrap()
    );
    assert!(again.count(&f).await.unwrap() > 0);
}

#[tokio::test]
async fn in_memory_flush_is_a_no_op() {
    let store = EmbeddedStore::in_memory();
    store.upsert(vec![point(1, "a")]).await.unwrap();
    store.flush().await.unwrap();
    assert!(store.path().is_none());
    assert_eq!(store.len(), 1);
}

fn expect_corrupt(path: &Path, what: &str) {
    match EmbeddedStore::open(path) {
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("{what}: expected a corrupt-file error, got {other}"),
        Ok(_) => panic!("{what}: a damaged file was accepted"),
    }
}

#[tokio::test]
async fn damaged_files_are_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.store");
    write_sample(&path).await;
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    expect_corrupt(&path, "flipped byte");

    for cut in [0, 7, 20, good.len() / 3, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        expect_corrupt(&path, &format!("truncated at {cut}"));
    }

    let mut magic = good.clone();
    magic[0] = b'X';
    std::fs::write(&path, &magic).unwrap();
    expect_corrupt(&path, "bad magic");

    // A huge row count must not make the reader allocate it.
    let mut huge = good.clone();
    let rows_at = huge.len() - 4; // any offset works: the checksum or the length check refuses it
    huge[rows_at - 8..rows_at].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    expect_corrupt(&path, "huge value");

    std::fs::write(&path, b"not a store at all").unwrap();
    expect_corrupt(&path, "garbage");
}

#[tokio::test]
async fn files_from_a_newer_format_are_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.store");
    write_sample(&path).await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match EmbeddedStore::open(&path) {
        Err(StoreError::UnsupportedVersion { found, .. }) => assert_eq!(found, FORMAT_VERSION + 1),
        Err(other) => panic!("expected a version error, got {other}"),
        Ok(_) => panic!("a newer format was accepted"),
    }
}

#[tokio::test]
async fn reference_markers_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.store");
    let store = EmbeddedStore::open(&path).unwrap();
    let entries: Vec<PointEntry> = (0..20)
        .map(|i| PointEntry {
            point: point(i, "a"),
            reference: i % 5 == 0,
        })
        .collect();
    store.upsert_entries(entries).await.unwrap();
    store.flush().await.unwrap();
    let reopened = EmbeddedStore::open(&path).unwrap();
    let reference = Filter::all().reference_only();
    assert_eq!(reopened.count(&reference).await.unwrap(), 4);
    let probe = point(5, "a");
    let hit = &reopened.search(&probe.vector, &reference, 1).await.unwrap()[0];
    assert_eq!(hit.id, PointId(5));
}

/// A version-1 file (before reference partitions) as that version wrote it: one environment,
/// one partition of one point.
fn version_1_file(point: &Point) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"CULPSTOR");
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&(DIM as u32).to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&(point.environment.len() as u32).to_le_bytes());
    body.extend_from_slice(point.environment.as_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(1); // logs
    body.extend_from_slice(&(point.service.len() as u32).to_le_bytes());
    body.extend_from_slice(point.service.as_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&point.id.0.to_le_bytes());
    body.extend_from_slice(&point.timestamp.to_le_bytes());
    body.extend_from_slice(&point.score.to_le_bytes());
    body.push(u8::from(point.normal));
    body.extend_from_slice(&0u32.to_le_bytes());
    let norm = point.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in &point.vector {
        body.extend_from_slice(&(x / norm).to_le_bytes());
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

#[tokio::test]
async fn a_version_1_file_opens_with_every_point_an_event_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.store");
    let p = point(2, "a");
    assert_eq!(p.source, SourceKind::Logs);
    std::fs::write(&path, version_1_file(&p)).unwrap();
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.count(&Filter::all()).await.unwrap(), 1);
    assert_eq!(
        store.count(&Filter::all().reference_only()).await.unwrap(),
        0
    );
    let hit = &store
        .search(&p.vector, &Filter::all().service("a"), 1)
        .await
        .unwrap()[0];
    assert_eq!((hit.id, hit.timestamp), (p.id, p.timestamp));
    // Changed on top of the version-1 snapshot, and still readable.
    store.upsert(vec![point(4, "a")]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(EmbeddedStore::open(&path).unwrap().len(), 2);
}

fn wal_path(store: &Path) -> std::path::PathBuf {
    let mut name = store.file_name().unwrap().to_os_string();
    name.push(".wal");
    store.with_file_name(name)
}

/// Every point of `ids` is in `store`, found at distance 0 under its own id.
async fn assert_holds(store: &EmbeddedStore, ids: impl IntoIterator<Item = u64>) {
    for i in ids {
        let p = point(i, "a");
        let hits = store
            .search(&p.vector, &Filter::all().source(p.source), 50)
            .await
            .unwrap();
        assert!(
            hits.iter().any(|h| h.id == PointId(i) && h.distance < 1e-6),
            "point {i} is missing after the reopen"
        );
    }
}

#[tokio::test]
async fn points_the_point_writer_acknowledged_survive_a_crash_without_the_shutdown_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.store");
    let store = std::sync::Arc::new(EmbeddedStore::open(&path).unwrap());
    let mut writer = PointWriter::new(store.clone(), None);
    for batch in 0..4u64 {
        writer.push((batch * 10..batch * 10 + 10).map(|i| PointEntry::event(point(i, "a"))));
        assert_eq!(writer.write().await.unwrap(), 10);
    }
    // A deletion the writer's next batch made durable, then a crash: no shutdown flush, no
    // destructor, the files as the killed process left them.
    store
        .delete_matching(&Filter::all().service("a").time_range(0, 5_000))
        .await
        .unwrap();
    writer.push((40..45).map(|i| PointEntry::event(point(i, "a"))));
    writer.write().await.unwrap();
    std::mem::forget(writer);
    std::mem::forget(store);

    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(reopened.len(), 40);
    assert_holds(&reopened, 5..45).await;
}

#[tokio::test]
async fn a_log_with_a_torn_tail_opens_with_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.store");
    let store = EmbeddedStore::open(&path).unwrap();
    // The first flush writes the snapshot; what follows stays in the log.
    store.upsert(vec![point(0, "a")]).await.unwrap();
    store.flush().await.unwrap();
    let mut ends = Vec::new();
    for i in 1..=5u64 {
        store.upsert(vec![point(i, "a")]).await.unwrap();
        store.flush().await.unwrap();
        ends.push(std::fs::metadata(wal_path(&path)).unwrap().len());
    }
    drop(store);
    let log = std::fs::read(wal_path(&path)).unwrap();
    assert_eq!(*ends.last().unwrap(), log.len() as u64);

    // Cut inside the last record (frame header or payload), or garbage past the last sync.
    let last_start = ends[3] as usize;
    let mut garbage = log.clone();
    garbage.extend_from_slice(&[0xAB; 300]);
    let mut bad_crc = log.clone();
    bad_crc[last_start + 20] ^= 0x01;
    for (what, bytes) in [
        ("cut in the frame header", log[..last_start + 3].to_vec()),
        ("cut in the payload", log[..log.len() - 7].to_vec()),
        ("checksum mismatch in the last record", bad_crc),
    ] {
        std::fs::write(wal_path(&path), &bytes).unwrap();
        let store = EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(store.len(), 5, "{what}");
        assert_holds(&store, 0..5).await;
        // The tail is gone for good: new records follow the last whole one.
        store.upsert(vec![point(9, "a")]).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.len(), 6, "{what}: a record written after the cut");
        assert_holds(&store, [0, 1, 2, 3, 4, 9]).await;
    }
    std::fs::write(wal_path(&path), &garbage).unwrap();
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.len(), 6, "garbage after the last record");
}

#[tokio::test]
async fn a_damaged_log_header_or_record_content_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.store");
    write_sample(&path).await;
    let store = EmbeddedStore::open(&path).unwrap();
    store.upsert(vec![point(60, "a")]).await.unwrap();
    store.flush().await.unwrap();
    drop(store);
    let good = std::fs::read(wal_path(&path)).unwrap();

    let mut magic = good.clone();
    magic[0] = b'X';
    std::fs::write(wal_path(&path), &magic).unwrap();
    expect_corrupt(&path, "bad log magic");

    let mut version = good.clone();
    version[8..12].copy_from_slice(&(WAL_VERSION + 1).to_le_bytes());
    std::fs::write(wal_path(&path), &version).unwrap();
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::UnsupportedVersion { found, .. }) if found == WAL_VERSION + 1
    ));

    // A record whose checksum holds but which names an unknown source: not a torn write.
    let mut content = good.clone();
    let source_at = 16 + 8 + 1 + 4 + 8;
    content[source_at] = 9;
    let crc = crc32fast::hash(&content[24..]);
    content[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(wal_path(&path), &content).unwrap();
    expect_corrupt(&path, "invalid record content");
}

#[tokio::test]
async fn the_log_is_compacted_into_the_snapshot_once_it_outgrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.store");
    let store = EmbeddedStore::open(&path).unwrap();
    let mut largest = 0;
    let mut compactions = 0;
    // ~300 bytes of log per point: well past the 16 MiB floor.
    for batch in 0..16u64 {
        store
            .upsert(
                (batch * 5_000..(batch + 1) * 5_000)
                    .map(|i| point(i, "a"))
                    .collect(),
            )
            .await
            .unwrap();
        let before = std::fs::metadata(wal_path(&path)).unwrap().len();
        store.flush().await.unwrap();
        let after = std::fs::metadata(wal_path(&path)).unwrap().len();
        largest = largest.max(before);
        compactions += usize::from(after < before);
    }
    let snapshot = std::fs::metadata(&path).unwrap().len();
    assert!(compactions >= 2, "{compactions} compactions");
    assert!(
        largest <= snapshot.max(16 << 20) + 5_000 * 400,
        "log grew to {largest}"
    );
    drop(store);
    assert_eq!(EmbeddedStore::open(&path).unwrap().len(), 80_000);
}

#[tokio::test]
async fn a_store_of_another_dimension_round_trips_and_refuses_files_and_vectors_of_the_default() {
    const WIDE: usize = 128;
    let wide = |i: u64| {
        let mut p = point(i, "a");
        p.vector = vec![0.01; WIDE];
        p.vector[i as usize % WIDE] = 1.0;
        p
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.store");
    let store = EmbeddedStore::open_with_dimension(&path, WIDE).unwrap();
    store.upsert((0..10).map(wide).collect()).await.unwrap();
    store.flush().await.unwrap(); // the first flush writes the snapshot
    store.upsert((10..20).map(wide).collect()).await.unwrap(); // these only in the log
    assert!(matches!(
        store.upsert(vec![point(99, "a")]).await,
        Err(StoreError::WrongDimension {
            len: DIM,
            expected: WIDE,
            ..
        })
    ));

    let reopened = EmbeddedStore::open_with_dimension(&path, WIDE).unwrap();
    assert_eq!(reopened.len(), 20);
    let hits = reopened
        .search(&wide(15).vector, &Filter::all(), 1)
        .await
        .unwrap();
    assert_eq!(hits[0].id, PointId(15));
    assert!(hits[0].distance < 1e-6);
    assert!(
        matches!(EmbeddedStore::open(&path), Err(StoreError::Corrupt { reason, .. }) if reason.contains("128 dimensions")),
        "a 64-dim store must refuse a 128-dim file"
    );
}
