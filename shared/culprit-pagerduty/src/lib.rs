//! Pages on-call for RCA alerts through the PagerDuty Events API v2.
//!
//! [`PagerDutyClient::handle`] turns the stream of [`RcaAlert`] revisions of an incident into at
//! most one `trigger` (dedup key = incident id) and one `resolve`: later revisions do not page
//! again unless `update_on_revision` is set and the top root cause changed. Incidents less severe
//! than `min_severity` never page. As a [`culprit_sink::AlertSink`], a rejected event is
//! [`culprit_sink::SinkError::Rejected`] (given up) and a send that ran out of retries is
//! `Unavailable` (retried by the caller). Sends retry 429, 5xx and connection errors with jittered
//! exponential backoff, honouring `Retry-After`; other 4xx answers are errors at once.
//!
//! The routing key is a secret and never appears in the configuration file: it comes from
//! [`ROUTING_KEY_ENV`] or from the file named by `routing_key_file`.
#![forbid(unsafe_code)]

mod client;
mod config;
mod event;

pub use client::{Outcome, PagerDutyClient, SkipReason};
pub use config::{
    PagerDutyConfig, DEFAULT_BACKOFF_INITIAL_MS, DEFAULT_BACKOFF_MAX_MS, DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_TRACKED_INCIDENTS, DEFAULT_MIN_SEVERITY, DEFAULT_SOURCE, DEFAULT_TIMEOUT_MS,
    DEFAULT_URL, ROUTING_KEY_ENV, ROUTING_KEY_LEN,
};
pub use event::{truncate_summary, MAX_SUMMARY_BYTES};

use std::path::PathBuf;

/// Why PagerDuty could not be configured or did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum PagerDutyError {
    #[error(
        "PagerDuty is enabled but has no routing key: set {ROUTING_KEY_ENV} or pagerduty.routing_key_file"
    )]
    MissingRoutingKey,
    #[error("cannot read the PagerDuty routing key file {}", path.display())]
    RoutingKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PagerDuty routing key from {origin} has {len} characters; integration keys have {ROUTING_KEY_LEN}")]
    BadRoutingKey { origin: String, len: usize },
    #[error("invalid PagerDuty configuration: {0}")]
    Config(String),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("PagerDuty rejected the event for incident {dedup_key} with HTTP {status}: {body}")]
    Rejected {
        dedup_key: String,
        status: u16,
        body: String,
    },
    #[error("PagerDuty did not accept the event for incident {dedup_key} after {attempts} attempts; last error: {last_error}")]
    GaveUp {
        dedup_key: String,
        attempts: u32,
        last_error: String,
    },
    #[error("PagerDuty answered the event for incident {dedup_key} with HTTP {status} and an unexpected body: {body}")]
    BadResponse {
        dedup_key: String,
        status: u16,
        body: String,
    },
}
