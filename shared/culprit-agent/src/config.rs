//! The `[llm]` section. Off by default; the API key is a secret and deliberately not a field: it
//! comes from the environment variable named by `api_key_env` or the file named by `api_key_file`.

use crate::AgentError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable the API key is read from unless `api_key_env` names another.
pub const DEFAULT_API_KEY_ENV: &str = "CULPRIT_LLM_API_KEY";

/// How the model is driven.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LlmMode {
    /// Native tool calls (`tools` in the request), for endpoints whose models follow them.
    #[serde(rename = "tools")]
    Tools,
    /// One action per turn as JSON constrained by `response_format` (a JSON schema). Small local
    /// models follow this reliably and native tool calls not at all, so it is the default.
    #[default]
    #[serde(rename = "json_schema")]
    JsonSchema,
    /// Nothing is sent: the requests that would be are written for review.
    #[serde(rename = "prompt-only")]
    PromptOnly,
}

impl LlmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Tools => "tools",
            LlmMode::JsonSchema => "json_schema",
            LlmMode::PromptOnly => "prompt-only",
        }
    }
}

impl std::str::FromStr for LlmMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tools" => Ok(LlmMode::Tools),
            "json_schema" => Ok(LlmMode::JsonSchema),
            "prompt-only" | "prompt_only" => Ok(LlmMode::PromptOnly),
            other => Err(format!(
                "unknown llm mode '{other}' (expected tools, json_schema or prompt-only)"
            )),
        }
    }
}

/// The optional LLM review of low-confidence rankings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Review rankings with an LLM at all.
    pub enabled: bool,
    /// OpenAI-compatible API base, up to and including `/v1`.
    pub base_url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Environment variable holding the API key (preferred over `api_key_file`). Without either
    /// key no `Authorization` value is sent, which is what local servers expect.
    pub api_key_env: String,
    /// File holding the API key (a mounted secret); surrounding whitespace is ignored.
    pub api_key_file: Option<PathBuf>,
    /// Only incidents whose ranking confidence is below this are reviewed.
    pub min_confidence: f64,
    /// `tools`, `json_schema` or `prompt-only`.
    pub mode: LlmMode,
    /// Offer a tool that returns redacted, truncated raw log lines. Off: templates only.
    pub send_raw_logs: bool,
    /// Tool calls per review (identical calls are answered from the first and still count).
    pub max_tool_calls: u32,
    /// Prompt plus completion tokens per review.
    pub max_total_tokens: u32,
    /// Completion tokens per call (`max_tokens`).
    pub max_turn_tokens: u32,
    /// The model's context window: the tool loop ends (and the final verdict call is made)
    /// before a prompt could outgrow it. Prompt sizes are estimated at 3 bytes a token.
    pub max_context_tokens: u32,
    /// Sampling temperature; 0 for repeatable answers.
    pub temperature: f32,
    /// Sampling seed sent with every request, where the endpoint honours one.
    pub seed: Option<i64>,
    /// Time one call may take, milliseconds. Enforced here, around the client: async-openai
    /// obeys `Retry-After` with no upper bound.
    pub call_timeout_ms: u64,
    /// Time a whole review may take, milliseconds.
    pub incident_timeout_ms: u64,
    /// A tool result is cut to about this many bytes.
    pub max_result_bytes: usize,
    /// Bound of the score adjustment: a verdict multiplies a candidate's score by
    /// `1 + score_factor * v * c`, with v = +1 supports, -1 refutes, 0 insufficient and c the
    /// verdict's confidence.
    pub score_factor: f64,
    /// Consecutive failed reviews that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips reviews before letting one through, seconds.
    pub breaker_cooldown_secs: u64,
    /// Reviews per incident at most (a new review only when the top candidates changed).
    pub max_reviews_per_incident: u32,
    /// Alerts waiting for a review in service mode; beyond this the oldest waits are dropped
    /// (their deterministic alert was already published).
    pub queue_capacity: usize,
    /// JSON-lines file every request body is appended to before it is sent (in `prompt-only`
    /// mode: instead of being sent). Unset: not written.
    pub request_log: Option<PathBuf>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            enabled: false,
            base_url: "http://127.0.0.1:8080/v1".to_string(),
            model: "local-model".to_string(),
            api_key_env: DEFAULT_API_KEY_ENV.to_string(),
            api_key_file: None,
            min_confidence: 0.6,
            mode: LlmMode::JsonSchema,
            send_raw_logs: false,
            max_tool_calls: 8,
            max_total_tokens: 24_000,
            max_turn_tokens: 512,
            max_context_tokens: 8_192,
            temperature: 0.0,
            seed: Some(42),
            call_timeout_ms: 20_000,
            incident_timeout_ms: 60_000,
            max_result_bytes: 2_048,
            score_factor: 0.2,
            breaker_failures: 3,
            breaker_cooldown_secs: 300,
            max_reviews_per_incident: 3,
            queue_capacity: 64,
            request_log: None,
        }
    }
}

impl LlmConfig {
    /// Checks the values without touching the network or the key.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: &str| Err(AgentError::Config(m.to_string()));
        if self.base_url.trim().is_empty() || self.model.trim().is_empty() {
            return bad("llm.base_url and llm.model must be set");
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad("llm.base_url must start with http:// or https://");
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return bad("llm.min_confidence must be between 0 and 1");
        }
        if self.max_turn_tokens == 0 || self.max_total_tokens < self.max_turn_tokens {
            return bad("llm.max_turn_tokens must be positive and at most llm.max_total_tokens");
        }
        if self.max_context_tokens < 2 * self.max_turn_tokens {
            return bad("llm.max_context_tokens must be at least twice llm.max_turn_tokens");
        }
        if self.call_timeout_ms == 0 || self.incident_timeout_ms == 0 {
            return bad("llm.call_timeout_ms and llm.incident_timeout_ms must be positive");
        }
        if self.max_result_bytes < 256 {
            return bad("llm.max_result_bytes must be at least 256");
        }
        if !(0.0..=1.0).contains(&self.score_factor) {
            return bad("llm.score_factor must be between 0 and 1 (it bounds how far a verdict moves a score)");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("llm.temperature must be between 0 and 2");
        }
        if self.queue_capacity == 0 {
            return bad("llm.queue_capacity must be positive");
        }
        Ok(())
    }

    /// The API key from `api_key_env`, else `api_key_file`; `None` when neither is set.
    pub fn api_key(&self) -> Result<Option<String>, AgentError> {
        self.api_key_with(|name| std::env::var(name).ok())
    }

    /// [`LlmConfig::api_key`] with the environment supplied by the caller (tests).
    pub fn api_key_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, AgentError> {
        if !self.api_key_env.is_empty() {
            if let Some(key) = env(&self.api_key_env).filter(|k| !k.trim().is_empty()) {
                return Ok(Some(key.trim().to_string()));
            }
        }
        match &self.api_key_file {
            Some(path) => {
                let key =
                    std::fs::read_to_string(path).map_err(|source| AgentError::ApiKeyFile {
                        path: path.clone(),
                        source,
                    })?;
                let key = key.trim();
                if key.is_empty() {
                    return Err(AgentError::Config(format!(
                        "llm.api_key_file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(key.to_string()))
            }
            None => Ok(None),
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn incident_timeout(&self) -> Duration {
        Duration::from_millis(self.incident_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_off_by_default_and_the_defaults_are_valid() {
        let c = LlmConfig::default();
        assert!(!c.enabled);
        assert!(!c.send_raw_logs);
        c.validate().unwrap();
    }

    #[test]
    fn the_key_comes_from_the_environment_first_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  file-key\n").unwrap();
        let c = LlmConfig {
            api_key_file: Some(file),
            ..LlmConfig::default()
        };
        let from_env = c
            .api_key_with(|n| (n == DEFAULT_API_KEY_ENV).then(|| "env-key".to_string()))
            .unwrap();
        assert_eq!(from_env.as_deref(), Some("env-key"));
        let from_file = c.api_key_with(|_| None).unwrap();
        assert_eq!(from_file.as_deref(), Some("file-key"));
        let none = LlmConfig::default().api_key_with(|_| None).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn a_missing_key_file_is_an_error_naming_it() {
        let c = LlmConfig {
            api_key_file: Some("/nonexistent/culprit-llm-key".into()),
            ..LlmConfig::default()
        };
        let err = c.api_key_with(|_| None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/culprit-llm-key"), "{err}");
    }

    #[test]
    fn the_key_is_not_a_configuration_field() {
        let err = toml::from_str::<LlmConfig>("api_key = \"sk-in-a-file\"\n").unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    #[test]
    fn modes_parse_from_their_documented_names() {
        for (text, mode) in [
            ("tools", LlmMode::Tools),
            ("json_schema", LlmMode::JsonSchema),
            ("prompt-only", LlmMode::PromptOnly),
        ] {
            let c: LlmConfig = toml::from_str(&format!("mode = \"{text}\"\n")).unwrap();
            assert_eq!(c.mode, mode);
            assert_eq!(mode.as_str(), text);
        }
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let bad = [
            LlmConfig {
                min_confidence: 1.5,
                ..LlmConfig::default()
            },
            LlmConfig {
                score_factor: 3.0,
                ..LlmConfig::default()
            },
            LlmConfig {
                max_turn_tokens: 30_000,
                ..LlmConfig::default()
            },
            LlmConfig {
                base_url: "127.0.0.1:8080".into(),
                ..LlmConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
