//! Opening the dataset's CSV files, gzipped or not, with header lookup and row positions for errors.

use crate::error::{NezhaError, Result};
use csv::ByteRecord;
use flate2::bufread::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

pub(crate) struct CsvFile {
    pub path: PathBuf,
    reader: csv::Reader<Box<dyn Read>>,
    pub headers: ByteRecord,
}

pub(crate) fn open_csv(path: &Path) -> Result<CsvFile> {
    let io_err = |source| NezhaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut buf = BufReader::with_capacity(128 * 1024, file);
    // Sniff the gzip magic rather than trusting the extension: both forms appear in the wild.
    let is_gz = buf.fill_buf().map_err(io_err)?.starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn Read> = if is_gz {
        Box::new(MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    // Flexible: a malformed row (an unescaped quote in a log line) yields extra fields, which the
    // readers handle, instead of aborting the whole file.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(inner);
    let headers = reader
        .byte_headers()
        .map_err(|source| NezhaError::Csv {
            path: path.to_path_buf(),
            line: 1,
            source,
        })?
        .clone();
    Ok(CsvFile {
        path: path.to_path_buf(),
        reader,
        headers,
    })
}

impl CsvFile {
    /// Index of a column by name: exact first, then ignoring ASCII case.
    pub fn find(&self, name: &str) -> Option<usize> {
        let names = || {
            self.headers
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
        };
        names()
            .position(|h| h == name)
            .or_else(|| names().position(|h| h.eq_ignore_ascii_case(name)))
    }

    pub fn column(&self, name: &str) -> Result<usize> {
        self.find(name).ok_or_else(|| NezhaError::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
        })
    }

    pub fn header(&self, i: usize) -> String {
        self.headers
            .get(i)
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .unwrap_or_default()
    }

    /// Reads the next record into `rec`; false at the end of the file.
    pub fn next(&mut self, rec: &mut ByteRecord) -> Result<bool> {
        self.reader
            .read_byte_record(rec)
            .map_err(|source| NezhaError::Csv {
                path: self.path.clone(),
                line: source.position().map(|p| p.line()).unwrap_or(0),
                source,
            })
    }

    /// A usable reason for a bad row, naming the file and its line.
    pub fn row_error(&self, rec: &ByteRecord, reason: impl Into<String>) -> NezhaError {
        NezhaError::Row {
            path: self.path.clone(),
            line: line_of(rec),
            reason: reason.into(),
        }
    }
}

pub(crate) fn line_of(rec: &ByteRecord) -> u64 {
    rec.position().map(|p| p.line()).unwrap_or(0)
}

pub(crate) fn cell(rec: &ByteRecord, i: usize) -> &str {
    rec.get(i)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::trim)
        .unwrap_or("")
}

/// Decodes a hex id of exactly `len` bytes; None when absent or malformed.
pub(crate) fn hex_id(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 {
        return None;
    }
    let bytes = hex::decode(text).ok()?;
    // An all-zero id is "invalid" in OTLP.
    (bytes.iter().any(|&b| b != 0)).then_some(bytes)
}

/// Parses an integer that may have been written as a float (`1674981670.0`).
pub(crate) fn parse_int(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let f = text.parse::<f64>().ok()?;
        (f.is_finite() && f.abs() < 9.2e18).then_some(f.floor() as i64)
    })
}

/// Epoch nanoseconds of an RFC 3339 time (`2023-01-29T09:20:29.299583319Z`). A missing offset is
/// read as UTC, since the dataset writes every machine time in UTC.
pub(crate) fn parse_rfc3339_nanos(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10i64.pow(9 - digits as u32);
    }
    let offset_s = match b.get(i) {
        None | Some(b'Z') | Some(b'z') => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_as_utc_nanos() {
        let t = parse_rfc3339_nanos("2023-01-29T08:42:22.383150913Z").unwrap();
        assert_eq!(t, 1_674_981_742_383_150_913);
        // Millisecond precision without an offset, as in the Timestamp column of broken rows.
        assert_eq!(
            parse_rfc3339_nanos("2023-01-29T09:20:29.295").unwrap(),
            1_674_984_029_295_000_000
        );
        assert_eq!(parse_rfc3339_nanos("1970-01-01T08:00:00+08:00").unwrap(), 0);
        assert_eq!(parse_rfc3339_nanos("2023-01-29"), None);
        assert_eq!(parse_rfc3339_nanos("2023-13-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_nanos("2023-01-29T00:00:00.Z"), None);
    }
}
