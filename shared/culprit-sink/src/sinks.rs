//! Where alerts go: JSON lines, terminal summaries, per-incident graph files, or all of them;
//! and the one policy every caller applies to a sink's failure ([`deliver`]).

use crate::{render_summary, to_dot, to_html, SinkError};
use async_trait::async_trait;
use culprit_core::RcaAlert;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A destination for RCA alerts: a file, a terminal, the API's incident list, PagerDuty, the
/// alerts topic. An incident is emitted again on every new revision, and after a restart an
/// alert may be emitted twice: destinations deduplicate on `(incident_id, revision)` or accept
/// the repeat.
///
/// The same sinks serve the embedded run and the Kafka services.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// A short name for logs and errors, such as `jsonl:/var/log/culprit/alerts.jsonl`.
    fn name(&self) -> &str;
    /// Delivers one alert. [`SinkError::is_retriable`] tells the caller whether to pause and
    /// try again or to give this alert up ([`deliver`] does that).
    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError>;
    /// Pushes out anything buffered; called at shutdown.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Emits `alert` to `sink` under the one error policy: an alert the destination rejected (it
/// would be rejected again: a malformed event, a revoked key) is logged and given up, since
/// retrying it would hold back every later alert; a transient failure is returned, for the
/// caller to pause and retry. Returns `Ok(false)` when the alert was given up.
pub async fn deliver(sink: &dyn AlertSink, alert: &RcaAlert) -> Result<bool, SinkError> {
    match sink.emit(alert).await {
        Ok(()) => Ok(true),
        Err(e) if !e.is_retriable() => {
            tracing::error!(
                sink = sink.name(),
                incident = %alert.incident_id,
                revision = alert.revision,
                "alert given up: {e}"
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Locks a sink's writer; a writer poisoned by a panic elsewhere is still a writer.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes each alert as one compact JSON line: the `schemas/rca-alert.json` document.
pub struct JsonLinesSink {
    name: String,
    writer: Mutex<Box<dyn Write + Send>>,
}

impl JsonLinesSink {
    pub fn new(name: impl Into<String>, writer: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            writer: Mutex::new(writer),
        }
    }

    pub fn stdout() -> Self {
        Self::new("jsonl:stdout", Box::new(io::stdout()))
    }

    /// Appends to `path`, creating it and its parent directories, so a restart never truncates
    /// the alerts already written.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        let path = path.as_ref();
        create_parent(path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::new(
            format!("jsonl:{}", path.display()),
            Box::new(file),
        ))
    }

    fn write_error(&self, source: io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            source,
        }
    }
}

#[async_trait]
impl AlertSink for JsonLinesSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(alert).map_err(|source| SinkError::Serialize {
            incident_id: alert.incident_id.clone(),
            source,
        })?;
        line.push(b'\n');
        // One write per line: with O_APPEND concurrent writers cannot interleave inside a line,
        // and a reader tailing the file sees the alert at once.
        let mut writer = lock(&self.writer);
        writer
            .write_all(&line)
            .and_then(|()| writer.flush())
            .map_err(|e| self.write_error(e))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        lock(&self.writer).flush().map_err(|e| self.write_error(e))
    }
}

/// Writes [`render_summary`] of each alert, followed by a blank line.
pub struct SummarySink {
    name: String,
    writer: Mutex<Box<dyn Write + Send>>,
}

impl SummarySink {
    pub fn new(name: impl Into<String>, writer: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            writer: Mutex::new(writer),
        }
    }

    pub fn stdout() -> Self {
        Self::new("summary:stdout", Box::new(io::stdout()))
    }

    /// The usual choice when stdout carries JSON lines.
    pub fn stderr() -> Self {
        Self::new("summary:stderr", Box::new(io::stderr()))
    }

    fn write_error(&self, source: io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            source,
        }
    }
}

#[async_trait]
impl AlertSink for SummarySink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError> {
        let mut text = render_summary(alert);
        text.push('\n');
        let mut writer = lock(&self.writer);
        writer
            .write_all(text.as_bytes())
            .and_then(|()| writer.flush())
            .map_err(|e| self.write_error(e))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        lock(&self.writer).flush().map_err(|e| self.write_error(e))
    }
}

/// Keeps `<dir>/<incident_id>.dot` and `<dir>/<incident_id>.html` up to date: each revision of
/// an incident overwrites its files, so the newest picture is always at the same place.
pub struct GraphFilesSink {
    pub dir: PathBuf,
    name: String,
    last_paths: Mutex<Option<(PathBuf, PathBuf)>>,
}

impl GraphFilesSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let name = format!("graph-files:{}", dir.display());
        Self {
            dir,
            name,
            last_paths: Mutex::new(None),
        }
    }

    /// The `.dot` and `.html` files written for the latest alert, for the CLI to point at.
    pub fn last_paths(&self) -> Option<(PathBuf, PathBuf)> {
        lock(&self.last_paths).clone()
    }
}

#[async_trait]
impl AlertSink for GraphFilesSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError> {
        let stem = file_stem(&alert.incident_id)?;
        fs::create_dir_all(&self.dir).map_err(|source| SinkError::Create {
            path: self.dir.clone(),
            source,
        })?;
        let dot = self.dir.join(format!("{stem}.dot"));
        let html = self.dir.join(format!("{stem}.html"));
        replace_file(&dot, to_dot(alert).as_bytes())?;
        replace_file(&html, to_html(alert).as_bytes())?;
        *lock(&self.last_paths) = Some((dot, html));
        Ok(())
    }
}

/// Sends every alert to each sink in turn, each under [`deliver`]'s policy: a failing sink
/// does not starve the others, a rejected alert is counted and given up, and the first
/// transient failure is returned afterwards (the caller retries the alert everywhere, which is
/// why sinks must take a repeat).
#[derive(Default)]
pub struct FanOut {
    sinks: Vec<Arc<dyn AlertSink>>,
    given_up: AtomicU64,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn AlertSink>>) -> FanOut {
        FanOut {
            sinks,
            given_up: AtomicU64::new(0),
        }
    }

    pub fn push(&mut self, sink: Arc<dyn AlertSink>) {
        self.sinks.push(sink);
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Alerts a sink rejected and that were given up, since the start.
    pub fn given_up(&self) -> u64 {
        self.given_up.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl AlertSink for FanOut {
    fn name(&self) -> &str {
        "fan-out"
    }

    async fn emit(&self, alert: &RcaAlert) -> Result<(), SinkError> {
        let mut first = None;
        for sink in &self.sinks {
            match deliver(sink.as_ref(), alert).await {
                Ok(true) => {}
                Ok(false) => {
                    self.given_up.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let mut first = None;
        for sink in &self.sinks {
            if let Err(e) = sink.flush().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn create_parent(path: &Path) -> Result<(), SinkError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            fs::create_dir_all(parent).map_err(|source| SinkError::Create {
                path: parent.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// The incident id as a file name. Ids come from culprit, but they end up in a path, so
/// anything that is not plainly safe becomes `_` rather than a separator or `..`.
fn file_stem(incident_id: &str) -> Result<String, SinkError> {
    let stem: String = incident_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.trim_matches('.').is_empty() {
        return Err(SinkError::BadIncidentId(incident_id.to_string()));
    }
    Ok(stem)
}

/// Writes beside the target and renames over it, so a browser reloading the page never sees a
/// half-written file.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), SinkError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, contents)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| SinkError::Create {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::file_stem;

    #[test]
    fn file_stem_keeps_ids_inside_the_directory() {
        assert_eq!(
            file_stem("prod-checkout-1714564800").ok().as_deref(),
            Some("prod-checkout-1714564800")
        );
        assert_eq!(
            file_stem("../../etc/passwd").ok().as_deref(),
            Some(".._.._etc_passwd")
        );
        assert!(file_stem("..").is_err());
        assert!(file_stem("").is_err());
    }
}
