//! Delivers and renders RCA alerts ([`RcaAlert`](culprit_core::RcaAlert)): the last hop between the correlator and a
//! person or a tool.
//!
//! Renderers are pure functions of an alert — [`render_summary`] for a terminal, [`to_dot`] for
//! Graphviz and [`to_html`] for one self-contained page with an SVG picture of the causal graph.
//! Sinks ([`AlertSink`]) do the I/O: [`JsonLinesSink`] writes the wire form described by
//! `schemas/rca-alert.json`, [`SummarySink`] prints summaries, [`GraphFilesSink`] keeps one
//! `.dot` and one `.html` file per incident, and [`FanOut`] sends every alert to several sinks.
//!
//! Everything an alert carries (service names, descriptions) is treated as untrusted text and
//! escaped for the format it lands in.
#![forbid(unsafe_code)]

mod dot;
mod html;
mod layout;
mod sinks;
mod summary;
mod text;

pub use dot::to_dot;
pub use html::{to_html, to_html_body, HTML_STYLE};
pub use sinks::{deliver, AlertSink, FanOut, GraphFilesSink, JsonLinesSink, SummarySink};
pub use summary::render_summary;

use std::path::PathBuf;

/// Why a sink could not deliver an alert.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot serialise alert {incident_id}")]
    Serialize {
        incident_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("sink {sink}: cannot write")]
    Write {
        sink: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("incident id {0:?} cannot be used as a file name")]
    BadIncidentId(String),
    /// The destination refused this alert and would refuse it again (a malformed event, a
    /// revoked key): retrying it would hold back every later alert.
    #[error("sink {sink} rejected the alert: {reason}")]
    Rejected { sink: String, reason: String },
    /// The destination could not be reached or failed for now; the same alert may succeed later.
    #[error("sink {sink} is unavailable")]
    Unavailable {
        sink: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SinkError {
    /// Whether the same alert may succeed if sent again: I/O and unreachable destinations may
    /// recover; a rejection, an alert that cannot be serialised or an id that cannot name a
    /// file will not.
    pub fn is_retriable(&self) -> bool {
        match self {
            SinkError::Write { .. } | SinkError::Create { .. } | SinkError::Unavailable { .. } => {
                true
            }
            SinkError::Serialize { .. }
            | SinkError::BadIncidentId(_)
            | SinkError::Rejected { .. } => false,
        }
    }
}
