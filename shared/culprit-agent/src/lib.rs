//! The optional LLM agent: reviews a low-confidence ranking against the incident's evidence with
//! an OpenAI-compatible model, and publishes the result as the next revision of the alert.
//!
//! - [`config`]: the `[llm]` section (off by default; the API key from the environment or a file);
//! - [`evidence`]: the read-only view of one incident the tools query;
//! - [`tools`]: the read-only tools, scoped to the incident, results redacted and capped;
//! - [`redact`]: removes secrets before anything leaves the process;
//! - [`review`]: the ReAct loop with its limits, timeouts and fallbacks ([`Reviewer`]);
//! - [`verdict`] and [`merge`]: which verdicts to believe, and the bounded change they make;
//! - [`breaker`], [`metrics`]: the circuit breaker and the `culprit_llm_*` metrics;
//! - [`background`]: the non-blocking review queue of the correlator service.
//!
//! It reviews and re-orders a deterministic ranking; it does not replace it. Only ranked
//! services move, by a bounded factor; chains always come from the causal graph; any failure
//! leaves the deterministic ranking with the reason in `llm_review.status`.
//!
//! Invariant: this is the only crate that imports async-openai, and nothing it sends has not
//! been through [`redact::Redactor`].
#![forbid(unsafe_code)]

pub mod background;
pub mod breaker;
pub mod config;
pub mod evidence;
pub mod merge;
pub mod metrics;
pub mod redact;
pub mod review;
pub mod testing;
pub mod tools;
pub mod verdict;

pub use background::{BackgroundReviewer, ReviewPolicy};
pub use config::{LlmConfig, LlmMode, DEFAULT_API_KEY_ENV};
pub use evidence::{IncidentEvidence, PastIncident};
pub use metrics::AgentMetrics;
pub use review::{Review, Reviewer};

use std::path::PathBuf;

/// Why the agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid llm configuration: {0}")]
    Config(String),
    #[error("cannot read the llm API key file {}", path.display())]
    ApiKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the llm request log {}", path.display())]
    RequestLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
