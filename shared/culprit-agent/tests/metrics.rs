//! Every `culprit_llm_*` metric counts its event: reviews against the scripted endpoint (see
//! `scripted_endpoint.rs` for the fixture), read back as the scraped text.

mod support;

use culprit_agent::testing::{self, incident};
use culprit_agent::{AgentMetrics, BackgroundReviewer, LlmMode, Reviewer};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn registered() -> (Registry, AgentMetrics) {
    let mut registry = Registry::with_prefix("culprit");
    let metrics = AgentMetrics::register(&mut registry);
    (registry, metrics)
}

fn scrape(registry: &Registry) -> Vec<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines().map(str::to_string).collect()
}

fn assert_lines(text: &[String], want: &[&str]) {
    for line in want {
        assert!(text.iter().any(|l| l == line), "missing {line}: {text:#?}");
    }
}

#[tokio::test]
async fn a_review_counts_its_calls_tokens_latency_tool_calls_verdicts_and_itself() {
    let (url, _script) = serve(vec![
        tool_call("service_evidence", r#"{"service": "payment"}"#),
        tool_call("service_evidence", r#"{"service": "payment"}"#),
        tool_call(
            "submit_verdict",
            &verdicts(
                &[
                    ("payment", "refutes", 1.0, &["a2"]),
                    ("checkout", "supports", 1.0, &["a4"]),
                ],
                "",
            )
            .to_string(),
        ),
    ])
    .await;
    let (registry, metrics) = registered();
    let reviewer = Reviewer::new(config(&url, LlmMode::Tools))
        .unwrap()
        .with_metrics(metrics);
    reviewer.review(&incident()).await;
    assert_lines(
        &scrape(&registry),
        &[
            r#"culprit_llm_calls_total{outcome="ok"} 3"#,
            r#"culprit_llm_tokens_total{kind="prompt"} 300"#,
            r#"culprit_llm_tokens_total{kind="completion"} 60"#,
            "culprit_llm_call_latency_seconds_count 3",
            r#"culprit_llm_tool_calls_total{outcome="executed"} 1"#,
            r#"culprit_llm_tool_calls_total{outcome="duplicate"} 1"#,
            r#"culprit_llm_verdicts_total{verdict="refutes",outcome="accepted"} 1"#,
            // a4 is checkout's evidence, which no tool returned in this review.
            r#"culprit_llm_verdicts_total{verdict="supports",outcome="dropped"} 1"#,
            r#"culprit_llm_reviews_total{status="reviewed"} 1"#,
        ],
    );
    assert!(
        !scrape(&registry)
            .iter()
            .any(|l| l.starts_with("culprit_llm_fallbacks_total{")),
        "a review that changed the ranking is no fallback"
    );
}

#[tokio::test]
async fn an_inconclusive_review_counts_its_invalid_calls_dropped_verdicts_and_the_fallback() {
    let (url, _script) = serve(vec![
        tool_call("delete_database", "{}"),
        tool_call(
            "submit_verdict",
            &verdicts(&[("billing-db", "supports", 1.0, &[])], "").to_string(),
        ),
    ])
    .await;
    let (registry, metrics) = registered();
    let reviewer = Reviewer::new(config(&url, LlmMode::Tools))
        .unwrap()
        .with_metrics(metrics);
    reviewer.review(&incident()).await;
    assert_lines(
        &scrape(&registry),
        &[
            r#"culprit_llm_tool_calls_total{outcome="invalid"} 1"#,
            r#"culprit_llm_verdicts_total{verdict="supports",outcome="dropped"} 1"#,
            r#"culprit_llm_reviews_total{status="inconclusive"} 1"#,
            r#"culprit_llm_fallbacks_total{status="inconclusive"} 1"#,
        ],
    );
}

#[tokio::test]
async fn alerts_offered_to_a_full_review_queue_are_counted_as_dropped() {
    let (url, _script) = serve(vec![Reply::Stall; 4]).await;
    let mut c = config(&url, LlmMode::Tools);
    c.queue_capacity = 1;
    let (registry, metrics) = registered();
    let reviewer = Arc::new(Reviewer::new(c).unwrap().with_metrics(metrics));
    let background = BackgroundReviewer::spawn(
        reviewer,
        Arc::new(|_| Box::pin(async { Vec::new() })),
        Arc::new(|_| Box::pin(async {})),
    );
    // One in review (stalled) or queued, one queued: of three, one or two find the queue full.
    for id in ["inc-1", "inc-2", "inc-3"] {
        let mut alert = testing::alert();
        alert.incident_id = id.into();
        background.offer(&alert);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dropped = scrape(&registry)
        .into_iter()
        .find_map(|l| {
            l.strip_prefix("culprit_llm_dropped_alerts_total ")
                .map(|n| n.parse::<u64>().unwrap())
        })
        .expect("the counter is exported");
    assert!((1..=2).contains(&dropped), "{dropped}");
}
