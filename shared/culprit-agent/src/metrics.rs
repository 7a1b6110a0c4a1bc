//! The agent's Prometheus metrics, registered beside the service's own on `/metrics`
//! (`culprit_llm_*`). Unregistered (the command line) they count into nothing anyone reads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Records the agent's calls, tokens, latency, verdicts, reviews and fallbacks. Cheap to clone;
/// clones record into the same series.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    calls: Family<OutcomeLabels, Counter>,
    tokens: Family<KindLabels, Counter>,
    call_latency: Histogram,
    tool_calls: Family<OutcomeLabels, Counter>,
    verdicts: Family<VerdictLabels, Counter>,
    reviews: Family<StatusLabels, Counter>,
    fallbacks: Family<StatusLabels, Counter>,
    dropped_alerts: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            calls: Family::default(),
            tokens: Family::default(),
            // 50 ms .. ~27 min in doublings: a local model answers in seconds, a hosted one
            // stalled behind Retry-After in minutes.
            call_latency: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            tool_calls: Family::default(),
            verdicts: Family::default(),
            reviews: Family::default(),
            fallbacks: Family::default(),
            dropped_alerts: Counter::default(),
        }
    }
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry` under `llm_*`.
    pub fn register(registry: &mut Registry) -> AgentMetrics {
        let m = AgentMetrics::default();
        registry.register(
            "llm_calls",
            "LLM chat-completion calls, by outcome",
            m.calls.clone(),
        );
        registry.register(
            "llm_tokens",
            "LLM tokens, by kind (prompt, completion)",
            m.tokens.clone(),
        );
        registry.register_with_unit(
            "llm_call_latency",
            "Time of one LLM call",
            Unit::Seconds,
            m.call_latency.clone(),
        );
        registry.register(
            "llm_tool_calls",
            "Tool calls the model made, by outcome (executed, duplicate, invalid)",
            m.tool_calls.clone(),
        );
        registry.register(
            "llm_verdicts",
            "Verdicts the model gave, by verdict and outcome (accepted, dropped)",
            m.verdicts.clone(),
        );
        registry.register(
            "llm_reviews",
            "Reviews finished, by status",
            m.reviews.clone(),
        );
        registry.register(
            "llm_fallbacks",
            "Reviews that fell back to the deterministic ranking, by reason",
            m.fallbacks.clone(),
        );
        registry.register(
            "llm_dropped_alerts",
            "Alerts not reviewed because the review queue was full",
            m.dropped_alerts.clone(),
        );
        m
    }

    pub(crate) fn call(&self, outcome: &'static str, elapsed: Duration) {
        self.calls.get_or_create(&OutcomeLabels { outcome }).inc();
        self.call_latency.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn tokens(&self, prompt: u64, completion: u64) {
        self.tokens
            .get_or_create(&KindLabels { kind: "prompt" })
            .inc_by(prompt);
        self.tokens
            .get_or_create(&KindLabels { kind: "completion" })
            .inc_by(completion);
    }

    pub(crate) fn tool_call(&self, outcome: &'static str) {
        self.tool_calls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn verdict(&self, verdict: &'static str, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "dropped" };
        self.verdicts
            .get_or_create(&VerdictLabels { verdict, outcome })
            .inc();
    }

    pub(crate) fn review(&self, status: &'static str, fallback: bool) {
        self.reviews.get_or_create(&StatusLabels { status }).inc();
        if fallback {
            self.fallbacks.get_or_create(&StatusLabels { status }).inc();
        }
    }

    pub(crate) fn dropped_alert(&self) {
        self.dropped_alerts.inc();
    }

    /// Reviews finished with `status` so far (tests and reports).
    pub fn reviews_with(&self, status: &'static str) -> u64 {
        self.reviews.get_or_create(&StatusLabels { status }).get()
    }

    /// LLM calls with `outcome` so far.
    pub fn calls_with(&self, outcome: &'static str) -> u64 {
        self.calls.get_or_create(&OutcomeLabels { outcome }).get()
    }
}
