//! Where alerts go: JSON lines, terminal summaries, per-incident graph files, or all of them.

use crate::{render_summary, to_dot, to_html, SinkError};
use culprit_core::RcaAlert;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A destination for RCA alerts. An incident is emitted again on every new revision.
pub trait AlertSink: Send {
    /// A short name for logs and errors, such as `jsonl:/var/log/culprit/alerts.jsonl`.
    fn name(&self) -> &str;
    fn emit(&mut self, alert: &RcaAlert) -> Result<(), SinkError>;
    /// Pushes out anything buffered; called at shutdown.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes each alert as one compact JSON line: the `schemas/rca-alert.json` document.
pub struct JsonLinesSink {
    name: String,
    writer: Box<dyn Write + Send>,
}

impl JsonLinesSink {
    pub fn new(name: impl Into<String>, writer: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            writer,
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
}

impl AlertSink for JsonLinesSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn emit(&mut self, alert: &RcaAlert) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(alert).map_err(|source| SinkError::Serialize {
            incident_id: alert.incident_id.clone(),
            source,
        })?;
        line.push(b'\n');
        // One write per line: with O_APPEND concurrent writers cannot interleave inside a line,
        // and a reader tailing the file sees the alert at once.
        self.writer
            .write_all(&line)
            .and_then(|()| self.writer.flush())
            .map_err(|source| SinkError::Write {
                sink: self.name.clone(),
                source,
            })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|source| SinkError::Write {
            sink: self.name.clone(),
            source,
        })
    }
}

/// Writes [`render_summary`] of each alert, followed by a blank line.
pub struct SummarySink {
    name: String,
    writer: Box<dyn Write + Send>,
}

impl SummarySink {
    pub fn new(name: impl Into<String>, writer: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            writer,
        }
    }

    pub fn stdout() -> Self {
        Self::new("summary:stdout", Box::new(io::stdout()))
    }

    /// The usual choice when stdout carries JSON lines.
    pub fn stderr() -> Self {
        Self::new("summary:stderr", Box::new(io::stderr()))
    }
}

impl AlertSink for SummarySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn emit(&mut self, alert: &RcaAlert) -> Result<(), SinkError> {
        let mut text = render_summary(alert);
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|source| SinkError::Write {
                sink: self.name.clone(),
                source,
            })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|source| SinkError::Write {
            sink: self.name.clone(),
            source,
        })
    }
}

/// Keeps `<dir>/<incident_id>.dot` and `<dir>/<incident_id>.html` up to date: each revision of
/// an incident overwrites its files, so the newest picture is always at the same place.
pub struct GraphFilesSink {
    pub dir: PathBuf,
    name: String,
    last_paths: Option<(PathBuf, PathBuf)>,
}

impl GraphFilesSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let name = format!("graph-files:{}", dir.display());
        Self {
            dir,
            name,
            last_paths: None,
        }
    }

    /// The `.dot` and `.html` files written for the latest alert, for the CLI to point at.
    pub fn last_paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.last_paths.clone()
    }
}

impl AlertSink for GraphFilesSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn emit(&mut self, alert: &RcaAlert) -> Result<(), SinkError> {
        let stem = file_stem(&alert.incident_id)?;
        fs::create_dir_all(&self.dir).map_err(|source| SinkError::Create {
            path: self.dir.clone(),
            source,
        })?;
        let dot = self.dir.join(format!("{stem}.dot"));
        let html = self.dir.join(format!("{stem}.html"));
        replace_file(&dot, to_dot(alert).as_bytes())?;
        replace_file(&html, to_html(alert).as_bytes())?;
        self.last_paths = Some((dot, html));
        Ok(())
    }
}

/// Sends every alert to each sink in turn. A failing sink does not starve the others: all are
/// tried, and the first error is returned afterwards.
pub struct FanOut(pub Vec<Box<dyn AlertSink>>);

impl FanOut {
    fn each(
        &mut self,
        mut op: impl FnMut(&mut dyn AlertSink) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let mut first = None;
        for sink in &mut self.0 {
            if let Err(e) = op(sink.as_mut()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl AlertSink for FanOut {
    fn name(&self) -> &str {
        "fan-out"
    }

    fn emit(&mut self, alert: &RcaAlert) -> Result<(), SinkError> {
        self.each(|sink| sink.emit(alert))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.each(|sink| sink.flush())
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
