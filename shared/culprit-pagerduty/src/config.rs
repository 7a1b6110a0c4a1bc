use crate::PagerDutyError;
use culprit_core::Severity;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable the routing key is read from (preferred over `routing_key_file`).
pub const ROUTING_KEY_ENV: &str = "CULPRIT_PAGERDUTY_ROUTING_KEY";
/// PagerDuty's public Events API v2 endpoint.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Page for SEV1 and SEV2; SEV3..SEV5 stay in the alert stream.
pub const DEFAULT_MIN_SEVERITY: Severity = Severity::Sev2;
/// Fallback `payload.source` when the host name is unknown.
pub const DEFAULT_SOURCE: &str = "culprit";
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_RETRIES: u32 = 5;
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 500;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;
pub const DEFAULT_MAX_TRACKED_INCIDENTS: usize = 10_000;
/// Length of a PagerDuty integration (routing) key.
pub const ROUTING_KEY_LEN: usize = 32;

/// The `[pagerduty]` section. The routing key is a secret and is deliberately not a field:
/// it comes from [`ROUTING_KEY_ENV`] or from the file named by `routing_key_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerDutyConfig {
    /// Events API v2 enqueue endpoint.
    pub url: String,
    /// File holding the routing key (a mounted secret); used when the environment variable
    /// `CULPRIT_PAGERDUTY_ROUTING_KEY` is unset. Surrounding whitespace is ignored.
    pub routing_key_file: Option<PathBuf>,
    /// Least severe incident that pages: `SEV2` pages SEV1 and SEV2.
    pub min_severity: Severity,
    /// `payload.source`; the host name (or `culprit`) when unset.
    pub source: Option<String>,
    /// Base URL of the incident page; when set, each event links to `{base}/{incident_id}`.
    pub incident_url_base: Option<String>,
    /// Per-request timeout, milliseconds.
    pub timeout_ms: u64,
    /// Retries after the first attempt on 429, 5xx and connection errors.
    pub max_retries: u32,
    /// First retry delay, milliseconds; doubles each retry (with jitter).
    pub backoff_initial_ms: u64,
    /// Upper bound for one retry delay, including a server's `Retry-After`, milliseconds.
    pub backoff_max_ms: u64,
    /// Send the trigger again (same dedup key) when a later revision changes the top root cause.
    /// Off by default because some integrations re-notify on every trigger.
    pub update_on_revision: bool,
    /// How many incidents the dedup memory keeps; the oldest are forgotten first.
    pub max_tracked_incidents: usize,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        PagerDutyConfig {
            url: DEFAULT_URL.to_string(),
            routing_key_file: None,
            min_severity: DEFAULT_MIN_SEVERITY,
            source: None,
            incident_url_base: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            update_on_revision: false,
            max_tracked_incidents: DEFAULT_MAX_TRACKED_INCIDENTS,
        }
    }
}

impl PagerDutyConfig {
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the values that would otherwise fail only at the first page.
    pub fn validate(&self) -> Result<(), PagerDutyError> {
        let bad = |msg: String| Err(PagerDutyError::Config(msg));
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return bad(format!(
                "pagerduty.url {:?} is not an http(s) URL",
                self.url
            ));
        }
        if self.timeout_ms == 0 {
            return bad("pagerduty.timeout_ms must be positive".into());
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return bad("pagerduty.backoff_initial_ms exceeds backoff_max_ms".into());
        }
        if self.max_tracked_incidents == 0 {
            return bad("pagerduty.max_tracked_incidents must be positive".into());
        }
        Ok(())
    }

    /// The routing key from the process environment or `routing_key_file`.
    pub fn routing_key(&self) -> Result<String, PagerDutyError> {
        self.routing_key_with(|name| std::env::var(name).ok())
    }

    /// [`routing_key`](Self::routing_key) with the environment supplied by the caller.
    pub fn routing_key_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, PagerDutyError> {
        let (key, origin) = match env(ROUTING_KEY_ENV).filter(|k| !k.trim().is_empty()) {
            Some(key) => (key, ROUTING_KEY_ENV.to_string()),
            None => match &self.routing_key_file {
                Some(path) => {
                    let key = std::fs::read_to_string(path).map_err(|source| {
                        PagerDutyError::RoutingKeyFile {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    (key, path.display().to_string())
                }
                None => return Err(PagerDutyError::MissingRoutingKey),
            },
        };
        // Secret files usually end with a newline.
        let key = key.trim().to_string();
        if key.chars().count() != ROUTING_KEY_LEN {
            // Never echo the key itself: it ends up in logs.
            return Err(PagerDutyError::BadRoutingKey {
                origin,
                len: key.chars().count(),
            });
        }
        Ok(key)
    }

    pub(crate) fn resolved_source(&self) -> String {
        if let Some(s) = self
            .source
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return s.to_string();
        }
        let from_env = std::env::var("HOSTNAME").ok();
        let from_file = || std::fs::read_to_string("/etc/hostname").ok();
        from_env
            .or_else(from_file)
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE.to_string())
    }
}
