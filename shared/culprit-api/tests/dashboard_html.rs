//! The dashboard's server-rendered fragments, read as HTML over real HTTP (the browser test
//! drives them through Chromium; these check their content without one).

mod common;

use common::{alert, anomaly, FakeBaselines, Server, READER, WRITER};
use culprit_core::{IncidentStatus, Severity};
use reqwest::Method;
use std::sync::Arc;

async fn html(server: &Server, path: &str, token: &str) -> (u16, String) {
    let r = server.send(Method::GET, path, Some(token), None).await;
    let status = r.status().as_u16();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"),
        "{path}"
    );
    (status, r.text().await.unwrap())
}

fn rows(page: &str) -> usize {
    page.matches("<tr data-incident=").count()
}

#[tokio::test]
async fn the_list_filters_by_every_field_and_offers_the_choices_it_has() {
    let server = Server::start(common::state()).await;
    let mut sev1 = alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    );
    sev1.severity = Severity::Sev1;
    sev1.environment = "staging".into();
    server.state.incidents().upsert(sev1);
    server.state.incidents().upsert(alert(
        "inc-2",
        200,
        1,
        IncidentStatus::Resolved,
        &[("cart", "span.latency")],
    ));

    let (status, page) = html(&server, "/ui/incidents", READER).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&page), 2);
    assert!(page.contains("2 of 2 incidents"), "{page}");
    for choice in [
        r#"<option value="staging">staging</option>"#,
        r#"<option value="prod">prod</option>"#,
        r#"<option value="frontend">frontend</option>"#,
        r#"<option value="SEV1">SEV1</option>"#,
    ] {
        assert!(page.contains(choice), "missing {choice}");
    }
    // Severity is written out, not only coloured.
    assert!(page.contains(r#"<span class="sev sev1">SEV1</span>"#));
    assert!(page.contains(r#"<span class="state resolved">resolved</span>"#));

    for (query, expect) in [
        ("severity=SEV1", "inc-1"),
        ("status=resolved", "inc-2"),
        ("environment=staging", "inc-1"),
        ("service=cart", "inc-2"),
    ] {
        let (status, page) = html(&server, &format!("/ui/incident-rows?{query}"), READER).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(rows(&page), 1, "{query}");
        assert!(
            page.contains(&format!("data-incident=\"{expect}\"")),
            "{query}"
        );
        let (_, view) = html(&server, &format!("/ui/incidents?{query}"), READER).await;
        assert!(
            view.contains(" selected>"),
            "{query}: the form shows the filter"
        );
    }
    let (_, none) = html(&server, "/ui/incident-rows?service=payments", READER).await;
    assert!(none.contains("No incident matches these filters."));
}

#[tokio::test]
async fn the_incident_page_has_the_graph_evidence_changes_similar_and_feedback() {
    let server = Server::start(common::state()).await;
    let mut a = alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[
            ("redis", "span.error"),
            ("<script>x</script>", "span.latency"),
        ],
    );
    a.root_causes[0]
        .evidence
        .push(anomaly("redis", "change:deployment"));
    server.state.incidents().upsert(a);
    server.state.incidents().upsert(alert(
        "old-1",
        10,
        1,
        IncidentStatus::Resolved,
        &[("redis", "span.error")],
    ));
    let (status, _) = server
        .post(
            "/incidents/old-1/feedback",
            r#"{"cause":"redis","note":"maxmemory"}"#,
        )
        .await;
    assert_eq!(status, 201);

    let (status, page) = html(&server, "/ui/incidents/inc-1", WRITER).await;
    assert_eq!(status, 200);
    for part in [
        "role=\"img\" aria-label=\"causal graph of incident inc-1\"",
        "<h2>Root-cause candidates</h2>",
        "<h2>Evidence</h2>",
        "<h2>Changes in the window</h2>",
        "change:deployment",
        "<h2>Similar past incidents</h2>",
        "href=\"#/incidents/old-1\"",
        "maxmemory",
        "Confirm #1: redis",
        "#2 &lt;script&gt;x&lt;/script&gt;",
        "frontend (not ranked)",
        "Confirm other cause",
        "feedback is kept as <em>provisional</em>",
        "Signed in as <strong>ana</strong> (write scope)",
        "No feedback yet.",
    ] {
        assert!(page.contains(part), "missing {part:?}");
    }
    assert!(!page.contains("<script>x"), "hostile names are escaped");
    assert!(
        !page.contains(" disabled"),
        "a write token may give feedback"
    );
    assert!(
        !page.contains("Agent review"),
        "no review section without a review"
    );

    let (_, page) = html(&server, "/ui/incidents/inc-1", READER).await;
    assert!(page.contains("This token can read only"));
    assert!(page.contains("<button type=\"submit\" disabled>Confirm #1: redis</button>"));

    let (status, page) = html(&server, "/ui/incidents/nope", READER).await;
    assert_eq!(status, 404);
    assert!(page.contains("Unknown incident"));
}

#[tokio::test]
async fn feedback_history_and_the_history_view_show_every_post() {
    let server = Server::start(common::state()).await;
    server.state.incidents().upsert(alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error"), ("cart", "span.latency")],
    ));
    for body in [r#"{"cause":"cart"}"#, r#"{"cause":"other: a bad cable"}"#] {
        assert_eq!(server.post("/incidents/inc-1/feedback", body).await.0, 201);
    }
    let (_, page) = html(&server, "/ui/incidents/inc-1", READER).await;
    let latest = page.find("other: a bad cable").unwrap();
    let earlier = page.rfind("<strong>cart</strong>").unwrap();
    assert!(latest < earlier, "newest first");
    assert!(page.contains("latest, counts; provisional"));
    assert!(page.contains("superseded; provisional"));

    let (_, history) = html(&server, "/ui/history", READER).await;
    assert_eq!(history.matches("<td>Feedback</td>").count(), 2);
}

#[tokio::test]
async fn the_baselines_view_lists_buckets_and_offers_recalculation() {
    let state = common::state();
    state.set_baselines(Arc::new(FakeBaselines::shop()));
    let server = Server::start(state).await;
    let (_, list) = html(&server, "/ui/baselines", READER).await;
    assert!(list.contains("href=\"#/baselines/checkout\""));
    let (status, page) = html(&server, "/ui/baselines/checkout", WRITER).await;
    assert_eq!(status, 200);
    for part in [
        "<h1>Baselines of checkout</h1>",
        "span.latency:POST /checkout",
        "<th scope=\"row\">09:00–10:00</th>",
        "<th scope=\"row\">all hours</th>",
        "&gt; 495",
        "<time datetime=\"2026-01-01T09:00:00Z\">2026-01-01 09:00:00</time>",
        "From stored events of a time range",
        "<button type=\"submit\">Recalculate</button>",
        "None recorded.",
    ] {
        assert!(page.contains(part), "missing {part:?}");
    }
    assert_eq!(
        server.post("/baselines/checkout/recalculate", "{}").await.0,
        200
    );
    let (_, page) = html(&server, "/ui/baselines/checkout", READER).await;
    assert!(page.contains("from now on"));
    assert!(page.contains("<button type=\"submit\" disabled>Recalculate</button>"));

    let plain = Server::start(common::state()).await;
    let (status, page) = html(&plain, "/ui/baselines", READER).await;
    assert_eq!(status, 200);
    assert!(page.contains("exposes no baselines"));
}

#[tokio::test]
async fn the_agents_review_shows_its_verdicts_what_moved_and_its_rationale_as_unverified() {
    use culprit_core::{LlmReview, LlmReviewStatus, LlmVerdict, RankChange, VerdictKind};
    let server = Server::start(common::state()).await;
    let mut a = alert(
        "inc-r",
        100,
        3,
        IncidentStatus::Open,
        &[("redis", "span.error"), ("cart", "span.latency")],
    );
    a.llm_review = Some(LlmReview {
        status: LlmReviewStatus::Reviewed,
        detail: None,
        reviewed_revision: 2,
        model: "smollm2-135m".into(),
        mode: "json_schema".into(),
        steps: 4,
        tool_calls: 3,
        duplicate_tool_calls: 1,
        prompt_tokens: 1800,
        completion_tokens: 200,
        latency_ms: 5400,
        limit_hit: Some("tool_calls".into()),
        verdicts: vec![LlmVerdict {
            service: "cart".into(),
            verdict: VerdictKind::Supports,
            confidence: 0.8,
            evidence: vec!["a3".into()],
        }],
        dropped_verdicts: 2,
        rank_changes: vec![RankChange {
            service: "cart".into(),
            from_rank: 2,
            to_rank: 1,
            score_before: 0.5,
            score_after: 0.58,
        }],
        unverified_rationale: Some("cart <b>slowed</b> first".into()),
    });
    server.state.incidents().upsert(a);
    let (status, page) = html(&server, "/ui/incidents/inc-r", READER).await;
    assert_eq!(status, 200);
    for part in [
        "<h2 id=\"review-title\">Agent review</h2>",
        "Status <strong>reviewed</strong>",
        "model smollm2-135m (json_schema)",
        "reviewed revision 2",
        "3 tool calls (1 repeated), 2000 tokens, 5.4 s",
        "stopped by its tool_calls limit",
        "<td>cart</td><td>supports</td><td>0.80</td><td>a3</td>",
        "2 verdicts dropped",
        "cart: #2 &rarr; #1",
        "<strong>Unverified:</strong>",
        "cart &lt;b&gt;slowed&lt;/b&gt; first",
    ] {
        assert!(page.contains(part), "missing {part:?} in\n{page}");
    }
}
