//! The embedded store's write-ahead log, `<store file>.wal`: every change is appended here
//! before it is applied in memory, and [`Wal::sync`] makes what was appended durable with one
//! `fdatasync`, so a store can promise durability per batch without rewriting its snapshot.
//!
//! Opening a store loads the snapshot, then replays the log on top of it. Replay is idempotent
//! (upserts replace by id, deletes are by filter), so a log that survives a compaction whose
//! snapshot already holds its changes (a crash between the rename and the truncation) replays to
//! the same state.
//!
//! ```text
//! header   magic 8 bytes "CULPWAL\0", version u32 (WAL_VERSION), dim u32 (the store's)
//! records  each: len u32 (payload bytes), crc32 u32 (of the payload), payload:
//!   tag u8 = 1, upsert: count u32, then per entry: id u64, source u8, reference u8,
//!            timestamp i64, score f32, normal u8, service str, environment str,
//!            vector [f32; dim] (already at unit length)
//!   tag u8 = 2, delete: source u8 (255: any), service opt str, environment opt str,
//!            time_from opt i64, time_to opt i64, normal_only u8, reference u8 (255: any),
//!            hour_of_week u8 (255: any)
//! str      u32 length + UTF-8; opt: u8 0 (absent) or 1 followed by the value
//! ```
//!
//! Little-endian throughout, source codes as in the snapshot. A crash can leave a record half
//! written (or, past the last sync, garbage): the log is read up to the first record that is
//! cut short or fails its checksum, and the rest is cut off with a warning. A record whose
//! checksum holds but whose content is invalid is corruption, and an error.

use crate::persist::{source_code, source_from_code};
use crate::{Filter, Point, PointEntry, PointId, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"CULPWAL\0";
/// Format of the log; independent of the snapshot's `FORMAT_VERSION`.
pub const WAL_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const TAG_UPSERT: u8 = 1;
const TAG_DELETE: u8 = 2;
const ANY: u8 = u8::MAX;

/// One change read back from the log.
pub(crate) enum Record {
    Upsert(Vec<PointEntry>),
    Delete(Filter),
}

/// The open log, appended to at its end.
pub(crate) struct Wal {
    path: PathBuf,
    /// Shared so a sync can run without holding the store's lock on the log.
    file: Arc<File>,
    /// Components of every vector it logs.
    dim: usize,
    /// Bytes of the header and every whole record.
    len: u64,
    /// `len` as of the last completed sync.
    synced: u64,
    /// Set when a failed append could not be cut back off: the log's end is unknown, so it
    /// takes no more records.
    broken: bool,
}

impl Wal {
    /// The log's file for the store file at `store`.
    pub(crate) fn path_for(store: &Path) -> PathBuf {
        let mut name = store
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".wal");
        store.with_file_name(name)
    }

    /// Opens the log at `path` (creating it) of `dim`-component vectors, handing each whole
    /// record to `apply` in order, and cuts off a torn tail.
    pub(crate) fn open(
        path: &Path,
        dim: usize,
        mut apply: impl FnMut(Record),
    ) -> Result<Wal, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut wal = Wal {
            path: path.to_path_buf(),
            file: Arc::new(file),
            dim,
            len: 0,
            synced: 0,
            broken: false,
        };
        if file_len < HEADER_LEN {
            // New, or created by a crash before its header was synced.
            if file_len > 0 {
                tracing::warn!(path = %path.display(), bytes = file_len, "store log has a torn header; starting it again");
            }
            wal.reset()?;
            if !existed {
                sync_dir(path);
            }
            return Ok(wal);
        }
        let mut r = BufReader::with_capacity(1 << 20, &*wal.file);
        let mut header = [0u8; HEADER_LEN as usize];
        r.read_exact(&mut header).map_err(io_err)?;
        if &header[..8] != MAGIC {
            return Err(corrupt("not a culprit store log (bad magic)".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != WAL_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                expected: WAL_VERSION,
            });
        }
        let logged = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if logged as usize != dim {
            return Err(corrupt(format!(
                "vectors have {logged} dimensions, expected {dim}"
            )));
        }
        let mut good = HEADER_LEN;
        let mut records = 0u64;
        let torn = loop {
            let mut frame = [0u8; 8];
            match read_full(&mut r, &mut frame).map_err(io_err)? {
                0 => break None,
                8 => {}
                _ => break Some("a record header is cut short"),
            }
            let len = u64::from(u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")));
            let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
            // Checked against the file so a garbage length never allocates more than it holds.
            if len > file_len - good - 8 {
                break Some("a record is cut short");
            }
            let mut payload = vec![0u8; len as usize];
            r.read_exact(&mut payload).map_err(io_err)?;
            if crc32fast::hash(&payload) != crc {
                break Some("a record fails its checksum");
            }
            apply(
                decode(&payload, dim)
                    .map_err(|reason| corrupt(format!("record {records}: {reason}")))?,
            );
            good += 8 + len;
            records += 1;
        };
        drop(r);
        wal.len = good;
        wal.synced = good;
        if let Some(why) = torn {
            tracing::warn!(
                path = %path.display(),
                kept_records = records,
                cut_bytes = file_len - good,
                "store log ends in a torn or damaged record ({why}), as a crash mid-write leaves it; cutting it off"
            );
            wal.file.set_len(good).map_err(io_err)?;
            wal.file.sync_data().map_err(io_err)?;
        }
        Ok(wal)
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one framed record; on error the log is as before (or refuses further records).
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        self.usable()?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        if let Err(source) = (&*self.file).write_all(&frame) {
            // A partial record would hide every later one from replay: cut it back off.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(self.io_err(source));
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    /// What a sync must cover: None when everything appended is already durable, else the file
    /// and the length it makes durable (for [`Wal::synced_to`]). The sync itself runs outside
    /// the lock so appends from other writers are not held up by the disk.
    pub(crate) fn pending_sync(&self) -> Result<Option<(Arc<File>, u64)>, StoreError> {
        self.usable()?;
        Ok((self.synced < self.len).then(|| (self.file.clone(), self.len)))
    }

    /// Records that a sync covering the first `len` bytes completed.
    pub(crate) fn synced_to(&mut self, len: u64) {
        self.synced = self.synced.max(len);
    }

    /// Empties the log to its header (after a snapshot took in its changes) and syncs it.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&WAL_VERSION.to_le_bytes());
        header.extend_from_slice(&(self.dim as u32).to_le_bytes());
        let done = self
            .file
            .set_len(0)
            .and_then(|()| (&*self.file).write_all(&header))
            .and_then(|()| self.file.sync_data());
        match done {
            Ok(()) => {
                self.len = HEADER_LEN;
                self.synced = HEADER_LEN;
                self.broken = false;
                Ok(())
            }
            Err(source) => {
                self.broken = true;
                Err(self.io_err(source))
            }
        }
    }

    pub(crate) fn io_err(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.broken {
            return Err(self.io_err(io::Error::other(
                "an earlier failed write left the log unusable; reopen the store",
            )));
        }
        Ok(())
    }
}

/// Makes a new file's directory entry durable; not every platform can open a directory, so
/// this is best effort, like the snapshot's rename.
pub(crate) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The payload of an upsert record; the entries were validated (and normalised) already.
pub(crate) fn upsert_record(entries: &[PointEntry]) -> Vec<u8> {
    let dim = entries.first().map_or(0, |e| e.point.vector.len());
    let mut b = Vec::with_capacity(5 + entries.len() * (48 + dim * 4));
    b.push(TAG_UPSERT);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        let p = &e.point;
        b.extend_from_slice(&p.id.0.to_le_bytes());
        b.push(source_code(p.source));
        b.push(u8::from(e.reference));
        b.extend_from_slice(&p.timestamp.to_le_bytes());
        b.extend_from_slice(&p.score.to_le_bytes());
        b.push(u8::from(p.normal));
        put_str(&mut b, &p.service);
        put_str(&mut b, &p.environment);
        for x in &p.vector {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    b
}

/// The payload of a delete record.
pub(crate) fn delete_record(f: &Filter) -> Vec<u8> {
    let mut b = vec![TAG_DELETE, f.source.map_or(ANY, source_code)];
    put_opt(&mut b, f.service.as_deref(), put_str);
    put_opt(&mut b, f.environment.as_deref(), put_str);
    put_opt(&mut b, f.time_from, |b, t| {
        b.extend_from_slice(&t.to_le_bytes())
    });
    put_opt(&mut b, f.time_to, |b, t| {
        b.extend_from_slice(&t.to_le_bytes())
    });
    b.push(u8::from(f.normal_only));
    b.push(f.reference.map_or(ANY, u8::from));
    b.push(f.hour_of_week.unwrap_or(ANY));
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_opt<T>(b: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            put(b, v);
        }
    }
}

fn decode(payload: &[u8], dim: usize) -> Result<Record, String> {
    let mut c = Cursor(payload);
    let record = match c.u8()? {
        TAG_UPSERT => {
            let count = c.u32()?;
            let mut entries = Vec::new();
            for _ in 0..count {
                entries.push(c.entry(dim)?);
            }
            Record::Upsert(entries)
        }
        TAG_DELETE => Record::Delete(Filter {
            source: match c.u8()? {
                ANY => None,
                code => Some(source_from_code(code).ok_or(format!("unknown source {code}"))?),
            },
            service: c.opt(Cursor::string)?,
            environment: c.opt(Cursor::string)?,
            time_from: c.opt(Cursor::i64)?,
            time_to: c.opt(Cursor::i64)?,
            normal_only: c.flag()?,
            reference: match c.u8()? {
                ANY => None,
                0 => Some(false),
                1 => Some(true),
                other => return Err(format!("reference flag {other}")),
            },
            hour_of_week: match c.u8()? {
                ANY => None,
                h => Some(h),
            },
        }),
        tag => return Err(format!("unknown record tag {tag}")),
    };
    if !c.0.is_empty() {
        return Err(format!("{} bytes after the record", c.0.len()));
    }
    Ok(record)
}

/// Reads a payload front to back; every read checks the bytes are there.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err("record is cut short".into());
        };
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("flag {other} is not 0 or 1")),
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn f32(&mut self) -> Result<f32, String> {
        let x = f32::from_le_bytes(self.take()?);
        x.is_finite()
            .then_some(x)
            .ok_or_else(|| "non-finite value".to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err("string is cut short".into());
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not utf-8".to_string())
    }

    fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        if self.flag()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn entry(&mut self, dim: usize) -> Result<PointEntry, String> {
        let id = PointId(u64::from_le_bytes(self.take()?));
        let code = self.u8()?;
        let source = source_from_code(code).ok_or(format!("unknown source {code}"))?;
        let reference = self.flag()?;
        let timestamp = self.i64()?;
        let score = self.f32()?;
        let normal = self.flag()?;
        let service = self.string()?;
        let environment = self.string()?;
        let vector = (0..dim).map(|_| self.f32()).collect::<Result<_, _>>()?;
        Ok(PointEntry {
            point: Point {
                id,
                vector,
                source,
                service,
                environment,
                timestamp,
                score,
                normal,
            },
            reference,
        })
    }
}
