//! Snapshots of what an embedder's detectors learned, so a restart does not open a blind spot.
//!
//! Without them a restarted embedder (with `embedder_rewind = "none"`) learns from scratch:
//! `warmup_secs` of event time in which it reports nothing, an incident in progress included.
//!
//! # What is saved
//!
//! The detectors' learned state ([`culprit_detect::Detector::save_state`]: baselines, log
//! templates, things seen, each part versioned by its detector), whether the warm-up has passed
//! (the event time it ends at), and what the snapshot corresponds to: the source, the topic, the
//! consumer group and the offsets this instance had committed on each partition. Open windows are
//! not saved: their events lie after the committed offsets and are read again.
//!
//! # When
//!
//! Right after an offset commit, at most every `kafka.snapshot_secs` of wall time (a snapshot
//! not yet due is owed, and written at a later commit or when the input goes quiet for a commit
//! interval), and after the final commit of a clean shutdown. A `kill -9` therefore loses at
//! most `snapshot_secs` of learning (the messages between the snapshot and the last commit are
//! neither in it nor read again), never the warm-up. The state reflects the messages below the
//! recorded offsets and, since a partition is committed only up to its first message with an
//! event in a window still open, possibly a few events after them whose windows had closed; an
//! asynchronous commit that fails leaves the snapshot slightly ahead too. Such events are read
//! again and learned twice, which a baseline does not notice. The embedder writes the file on a
//! blocking thread, one write at a time and never an older snapshot over a newer one: to a
//! temporary file, synced, and renamed over the previous one (then the directory synced), so a
//! crash leaves the old snapshot or the new one, never half of one.
//!
//! # Restore
//!
//! At its first message the embedder restores the snapshot of its group and topic, whichever
//! partitions it was taken on; the warm-up then counts as passed (or continues to the same event
//! time, if the snapshot was taken during it). A missing snapshot means a warm-up
//! (logged at info); an unreadable one, or one of another format version, is logged as a warning
//! and also means a warm-up, never a crash. A detector whose own part does not fit learns afresh
//! while the others are restored.
//!
//! With several instances in one group, each restores its own snapshot (its own `state_dir`);
//! baselines are per service, not per partition, so an instance that is handed a partition it
//! never had still detects on the services it knows, and meets the other services' signals with
//! no baseline (they are learned as they come, reported once there are enough samples); the
//! snapshot is not handed over with the partition. For the same reason a restarted instance that
//! a rebalance handed other partitions than its snapshot's restores it all the same.

use culprit_core::UnixNanos;
use culprit_detect::state::DetectorStates;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// One embedder's snapshot file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub source: String,
    pub topic: String,
    pub group: String,
    /// Committed offset (the next message to read) per partition, when the state was saved.
    pub offsets: BTreeMap<i32, i64>,
    /// Wall clock at writing, ms since the epoch (for operators).
    pub written_at_ms: u64,
    /// Event time the warm-up ends at (None: no event seen yet).
    pub learn_until: Option<UnixNanos>,
    /// Newest event time seen.
    pub newest: UnixNanos,
    pub detectors: DetectorStates,
}

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable snapshot: {source}")]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}, this build reads version {FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

/// The snapshot file of `group` reading `topic` in `dir`.
pub fn path(dir: &Path, group: &str, topic: &str) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!("{}.{}.state.json", clean(group), clean(topic)))
}

/// Reads the snapshot at `path`; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    #[derive(Deserialize)]
    struct Header {
        format: u32,
    }
    let malformed = |source| SnapshotError::Malformed {
        path: path.to_path_buf(),
        source,
    };
    let header: Header = serde_json::from_slice(&bytes).map_err(malformed)?;
    if header.format != FORMAT {
        return Err(SnapshotError::Format {
            path: path.to_path_buf(),
            found: header.format,
        });
    }
    serde_json::from_slice(&bytes).map(Some).map_err(malformed)
}

/// Writes `snapshot` to `path` atomically: a temporary file beside it, synced, renamed over it,
/// and the directory synced, so a crash at any point leaves a whole snapshot.
pub fn write(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        // Streamed, not built in memory first: the detectors' parts are already text.
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut out, snapshot).map_err(std::io::Error::other)?;
        // into_inner flushes the buffer, and fails if that fails.
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            format: FORMAT,
            source: "traces".into(),
            topic: "otlp_spans".into(),
            group: "culprit-embedder-traces".into(),
            offsets: BTreeMap::from([(0, 42), (1, 7)]),
            written_at_ms: 1,
            learn_until: Some(5),
            newest: 9,
            detectors: DetectorStates::from([(
                "spans".into(),
                culprit_detect::state::RawValue::from_string(r#"{"version":1}"#.into()).unwrap(),
            )]),
        }
    }

    #[test]
    fn a_snapshot_written_is_read_back_whole_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "culprit-embedder-traces", "otlp/spans");
        assert_eq!(
            p.file_name().unwrap(),
            "culprit-embedder-traces.otlp_spans.state.json"
        );
        assert!(read(&p).unwrap().is_none());
        write(&p, &snapshot()).unwrap();
        let back = read(&p).unwrap().unwrap();
        assert_eq!(back.offsets, snapshot().offsets);
        let text = |d: &DetectorStates| serde_json::to_string(d).unwrap();
        assert_eq!(text(&back.detectors), text(&snapshot().detectors));
        assert!(!p.with_extension("json.tmp").exists(), "temp file renamed");
    }

    #[test]
    fn a_corrupt_or_foreign_snapshot_is_an_error_naming_the_file_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "g", "t");
        std::fs::write(&p, b"{\"format\": 1, \"source\": \"tra").unwrap();
        let err = read(&p).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("g.t.state.json"), "{err}");

        std::fs::write(&p, br#"{"format": 99}"#).unwrap();
        let err = read(&p).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Format { found: 99, .. }),
            "{err}"
        );
    }
}
