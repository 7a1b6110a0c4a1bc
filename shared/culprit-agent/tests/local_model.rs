//! Against a real local model (opt-in): `CULPRIT_LLM_IT=1` with a server from
//! `scripts/llm-test-env.sh` (llama.cpp's llama-server with SmolLM2-135M on 127.0.0.1):
//!
//! ```sh
//! bash scripts/llm-test-env.sh install && bash scripts/llm-test-env.sh start
//! eval "$(bash scripts/llm-test-env.sh env)"
//! cargo test -p culprit-agent --test local_model -- --nocapture
//! bash scripts/llm-test-env.sh stop
//! ```
//!
//! It runs `json_schema` mode on a simulated incident and checks that the review finishes within
//! its limits, that the model's answers parse, and that no service outside the graph survives.
//! It never checks accuracy: a 135M model picks at chance.

use culprit_agent::{IncidentEvidence, LlmConfig, LlmMode, Reviewer};
use culprit_core::{Event, LlmReviewStatus};
use culprit_pipeline::{DetectorMode, Pipeline, PipelineConfig};
use culprit_sim::{simulate, Scenario, SimConfig};
use std::time::{Duration, Instant};

fn sim_events(scenario: Scenario) -> Vec<Event> {
    let run = simulate(scenario, &SimConfig::default());
    let mut events = Vec::new();
    for r in &run.traces {
        events.extend(culprit_otlp::traces_to_events(r).unwrap());
    }
    for r in &run.logs {
        events.extend(culprit_otlp::logs_to_events(r).unwrap());
    }
    for r in &run.metrics {
        events.extend(culprit_otlp::metrics_to_events(r).unwrap());
    }
    for c in &run.changes {
        events.extend(
            culprit_otlp::changes::decode_changes(&serde_json::to_vec(c).unwrap()).unwrap(),
        );
    }
    events.sort_by_key(|e| e.time);
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_model_completes_a_json_schema_review_within_its_limits() {
    if std::env::var("CULPRIT_LLM_IT").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set CULPRIT_LLM_IT=1 with a server from `bash scripts/llm-test-env.sh start` \
             (see `bash scripts/llm-test-env.sh env`)"
        );
        return;
    }
    let base_url = std::env::var("CULPRIT_LLM_BASE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:18080/v1".to_string());
    let model = std::env::var("CULPRIT_LLM_MODEL").unwrap_or_else(|_| "smollm2-135m".to_string());

    let mut events = sim_events(Scenario::ConfigTimeout);
    let mut pipeline = Pipeline::new(PipelineConfig {
        warmup_secs: 20 * 60,
        detector: DetectorMode::Stats,
        ..PipelineConfig::default()
    });
    pipeline.record_anomalies();
    for e in &mut events {
        pipeline.push(e);
    }
    pipeline.finish();
    let alert = pipeline
        .incidents()
        .iter()
        .max_by_key(|a| a.anomaly_count)
        .expect("the simulated fault opens an incident")
        .clone();
    let evidence = IncidentEvidence::from_alert(alert)
        .with_anomalies(pipeline.recorded_anomalies())
        .with_events(&events);
    let graph: Vec<String> = evidence.services().into_iter().map(String::from).collect();

    let config = LlmConfig {
        enabled: true,
        base_url,
        model,
        mode: LlmMode::JsonSchema,
        // The server runs with -c 4096: keep every prompt inside it.
        max_context_tokens: 4_096,
        max_result_bytes: 1_024,
        max_tool_calls: 4,
        max_turn_tokens: 256,
        call_timeout_ms: 30_000,
        incident_timeout_ms: 100_000,
        ..LlmConfig::default()
    };
    let limits = config.clone();
    let reviewer = Reviewer::new(config).unwrap();
    let t = Instant::now();
    let review = reviewer.review(&evidence).await;
    let elapsed = t.elapsed();
    let r = review.alert.llm_review.clone().expect("a review");
    eprintln!(
        "local model: {:?} in {:.1} s, {} steps, {} tool calls ({} duplicate), {} + {} tokens, limit {:?}, {} verdicts kept, {} dropped",
        r.status,
        elapsed.as_secs_f64(),
        r.steps,
        r.tool_calls,
        r.duplicate_tool_calls,
        r.prompt_tokens,
        r.completion_tokens,
        r.limit_hit,
        r.verdicts.len(),
        r.dropped_verdicts
    );

    // Completed within the limits, on its own terms (not a transport failure).
    assert!(
        matches!(
            r.status,
            LlmReviewStatus::Reviewed | LlmReviewStatus::Inconclusive
        ),
        "{r:?}"
    );
    assert!(elapsed <= Duration::from_millis(limits.incident_timeout_ms) + Duration::from_secs(1));
    assert!(r.tool_calls <= limits.max_tool_calls);
    assert!(r.steps <= limits.max_tool_calls + 1);
    assert!(r.prompt_tokens + r.completion_tokens <= u64::from(limits.max_total_tokens) + 4_096);
    // Every request's prompt fitted the model's window (the server would have refused otherwise).
    for request in &review.requests {
        assert!(serde_json::to_vec(request).unwrap().len() / 3 <= 4_096);
    }
    // Whatever the model said, nothing outside the graph is in the result.
    for v in &r.verdicts {
        assert!(
            graph.contains(&v.service),
            "{} is not in the graph",
            v.service
        );
    }
    for c in &review.alert.root_causes {
        assert!(graph.contains(&c.service));
    }
    assert_eq!(
        review.alert.root_causes.len(),
        evidence.alert().root_causes.len()
    );
}
