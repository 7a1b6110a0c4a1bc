//! The embedded store's snapshot: one versioned, little-endian, checksummed file, written whole
//! when the write-ahead log (the `wal` module) is compacted.
//!
//! ```text
//! magic    8 bytes  "CULPSTOR"
//! version  u32      FORMAT_VERSION
//! dim      u32      the store's dimension (DIM for event embeddings)
//! envs     u32 count, then per environment: u32 length + UTF-8 bytes
//! parts    u32 count, then per partition:
//!            source u8 (0 traces, 1 logs, 2 metrics, 3 changes), service (u32 length + UTF-8),
//!            reference u8 (1: reference points; absent in version 1, where every point is an
//!            event point), rows u64, then columns: ids [u64], timestamps [i64], scores [f32],
//!            normal [u8], env [u32], vectors [f32; rows * dim]
//! crc32    u32      of every byte before it
//! ```

use crate::embedded::{Inner, Partition};
use crate::StoreError;
use culprit_core::SourceKind;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CULPSTOR";
pub const FORMAT_VERSION: u32 = 2;
/// The version before reference partitions, still read.
const FORMAT_VERSION_1: u32 = 1;

pub(crate) fn source_code(s: SourceKind) -> u8 {
    match s {
        SourceKind::Traces => 0,
        SourceKind::Logs => 1,
        SourceKind::Metrics => 2,
        SourceKind::Changes => 3,
    }
}

pub(crate) fn source_from_code(c: u8) -> Option<SourceKind> {
    SourceKind::ALL.get(usize::from(c)).copied()
}

/// Writes `inner` to a temp file beside `path`, syncs it and renames it over `path`.
pub(crate) fn write(path: &Path, inner: &Inner) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    write_body(&mut w, inner).map_err(io_err(&tmp))?;
    let crc = w.crc.finalize();
    let mut buf = w.inner;
    buf.write_all(&crc.to_le_bytes()).map_err(io_err(&tmp))?;
    let file = buf.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    // Persist the rename itself; not every platform can open a directory, so this is best effort.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_body(w: &mut impl Write, inner: &Inner) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.write_all(&(inner.dim as u32).to_le_bytes())?;
    w.write_all(&(inner.environments.len() as u32).to_le_bytes())?;
    for env in &inner.environments {
        write_str(w, env)?;
    }
    let parts: Vec<&Partition> = inner.partitions.iter().filter(|p| p.len() > 0).collect();
    w.write_all(&(parts.len() as u32).to_le_bytes())?;
    for p in parts {
        w.write_all(&[p.source.map(source_code).unwrap_or(u8::MAX)])?;
        write_str(w, &p.service)?;
        w.write_all(&[u8::from(p.reference)])?;
        w.write_all(&(p.len() as u64).to_le_bytes())?;
        write_column(w, p.ids.iter().map(|v| v.to_le_bytes()))?;
        write_column(w, p.timestamps.iter().map(|v| v.to_le_bytes()))?;
        write_column(w, p.scores.iter().map(|v| v.to_le_bytes()))?;
        write_column(w, p.normal.iter().map(|&v| [u8::from(v)]))?;
        write_column(w, p.env.iter().map(|v| v.to_le_bytes()))?;
        write_column(w, p.vectors.iter().map(|v| v.to_le_bytes()))?;
    }
    Ok(())
}

/// Encodes a column through a 64 KiB buffer: one `write_all` per value would checksum four
/// bytes at a time.
fn write_column<const W: usize>(
    w: &mut impl Write,
    values: impl Iterator<Item = [u8; W]>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for v in values {
        buf.extend_from_slice(&v);
        if buf.len() >= (1 << 16) - W {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the store file at `path`, whose vectors must have `dim` components; `Ok(None)` when
/// there is no file yet.
pub(crate) fn read(path: &Path, dim: usize) -> Result<Option<Inner>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let len = file
        .metadata()
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        // The trailing checksum is not part of the body.
        remaining: len.saturating_sub(4),
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let fail = |e: ReadError| match e {
        ReadError::Io(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        ReadError::Corrupt(reason) => corrupt(reason),
        ReadError::Version(found) => StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        },
    };
    let inner = read_body(&mut r, dim).map_err(fail)?;
    let computed = r.crc.clone().finalize();
    if r.remaining != 0 {
        return Err(corrupt(format!(
            "{} unexpected bytes after the data",
            r.remaining
        )));
    }
    let mut trailer = [0u8; 4];
    r.inner
        .read_exact(&mut trailer)
        .map_err(|_| corrupt("checksum missing".into()))?;
    if u32::from_le_bytes(trailer) != computed {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(Some(inner))
}

enum ReadError {
    Io(io::Error),
    Corrupt(String),
    Version(u32),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad<T>(reason: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Corrupt(reason.into()))
}

/// Reads the body while checksumming it, never allocating more than the file still holds.
struct Reader<R> {
    inner: R,
    crc: crc32fast::Hasher,
    remaining: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, ReadError> {
        if n > self.remaining {
            return bad("truncated");
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf)?;
        self.crc.update(&buf);
        self.remaining -= n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let b = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&b);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, ReadError> {
        let len = self.u32()?;
        String::from_utf8(self.bytes(u64::from(len))?).or_else(|_| bad("string is not utf-8"))
    }

    /// A column of `rows` fixed-width values.
    fn column<const W: usize, T>(
        &mut self,
        rows: u64,
        f: impl Fn([u8; W]) -> T,
    ) -> Result<Vec<T>, ReadError> {
        let n = rows
            .checked_mul(W as u64)
            .map_or_else(|| bad("row count overflows"), Ok)?;
        let raw = self.bytes(n)?;
        Ok(raw
            .chunks_exact(W)
            .map(|c| {
                let mut a = [0u8; W];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }
}

fn read_body<R: Read>(r: &mut Reader<R>, expected: usize) -> Result<Inner, ReadError> {
    if &r.array::<8>()? != MAGIC {
        return bad("not a culprit store file (bad magic)");
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(ReadError::Version(version));
    }
    let dim = r.u32()? as usize;
    if dim != expected {
        return bad(format!(
            "vectors have {dim} dimensions, expected {expected}"
        ));
    }
    let n_envs = r.u32()?;
    let mut environments = Vec::new();
    for _ in 0..n_envs {
        environments.push(r.string()?);
    }
    let n_parts = r.u32()?;
    let mut partitions = Vec::new();
    for _ in 0..n_parts {
        let code = r.array::<1>()?[0];
        let Some(source) = source_from_code(code) else {
            return bad(format!("unknown source code {code}"));
        };
        let service = r.string()?;
        let reference = match version {
            FORMAT_VERSION_1 => false,
            _ => match r.array::<1>()?[0] {
                0 => false,
                1 => true,
                other => {
                    return bad(format!(
                        "partition {source}/{service}: reference flag {other}"
                    ))
                }
            },
        };
        let rows = r.u64()?;
        let ids = r.column(rows, u64::from_le_bytes)?;
        let timestamps = r.column(rows, i64::from_le_bytes)?;
        let scores = r.column(rows, f32::from_le_bytes)?;
        let normal = r.column(rows, |[b]: [u8; 1]| b)?;
        let env = r.column(rows, u32::from_le_bytes)?;
        let dims = rows
            .checked_mul(dim as u64)
            .map_or_else(|| bad("row count overflows"), Ok)?;
        let vectors = r.column(dims, f32::from_le_bytes)?;
        if normal.iter().any(|&b| b > 1) {
            return bad(format!(
                "partition {source}/{service}: normal flag is not 0 or 1"
            ));
        }
        if env.iter().any(|&e| e >= n_envs) {
            return bad(format!(
                "partition {source}/{service}: environment index out of range"
            ));
        }
        if !vectors.iter().all(|x| x.is_finite()) || !scores.iter().all(|x| x.is_finite()) {
            return bad(format!("partition {source}/{service}: non-finite value"));
        }
        partitions.push(Partition {
            normal: normal.into_iter().map(|b| b == 1).collect(),
            ids,
            timestamps,
            scores,
            env,
            vectors,
            ..Partition::new(source, service, reference, dim)
        });
    }
    Inner::from_parts(dim, partitions, environments).or_else(bad)
}
