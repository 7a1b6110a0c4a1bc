//! The client against a local server that checks the Events API v2 wire format.

mod support;

use culprit_core::{IncidentStatus, Severity};
use culprit_pagerduty::{Outcome, PagerDutyClient, PagerDutyConfig, PagerDutyError, SkipReason};
use culprit_sink::AlertSink;
use std::time::{Duration, Instant};
use support::{alert, reply, FakePagerDuty, Reply, ROUTING_KEY};

fn config(fake: &FakePagerDuty) -> PagerDutyConfig {
    PagerDutyConfig {
        url: fake.url.clone(),
        source: Some("culprit-test".into()),
        backoff_initial_ms: 1,
        backoff_max_ms: 20,
        max_retries: 3,
        timeout_ms: 5_000,
        ..PagerDutyConfig::default()
    }
}

fn client(config: PagerDutyConfig) -> PagerDutyClient {
    PagerDutyClient::with_routing_key(config, ROUTING_KEY.into()).unwrap()
}

#[tokio::test]
async fn an_incident_pages_once_across_revisions_and_resolves_at_close() {
    let fake = FakePagerDuty::start().await;
    let pd = client(config(&fake));
    let id = "inc-prod-1";

    let first = pd
        .handle(&alert(
            id,
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "cartservice",
        ))
        .await
        .unwrap();
    assert_eq!(
        first,
        Outcome::Triggered {
            dedup_key: id.into()
        }
    );
    for revision in 1..4 {
        // The top cause changes too: still no second page by default.
        let top = if revision % 2 == 0 {
            "cartservice"
        } else {
            "redis"
        };
        let again = pd
            .handle(&alert(
                id,
                revision,
                IncidentStatus::Open,
                Severity::Sev1,
                top,
            ))
            .await
            .unwrap();
        assert_eq!(again, Outcome::Skipped(SkipReason::AlreadyTriggered));
    }
    let closed = pd
        .handle(&alert(
            id,
            4,
            IncidentStatus::Resolved,
            Severity::Sev1,
            "cartservice",
        ))
        .await
        .unwrap();
    assert_eq!(
        closed,
        Outcome::Resolved {
            dedup_key: id.into()
        }
    );
    let repeated = pd
        .handle(&alert(
            id,
            4,
            IncidentStatus::Resolved,
            Severity::Sev1,
            "cartservice",
        ))
        .await
        .unwrap();
    assert_eq!(repeated, Outcome::Skipped(SkipReason::AlreadyResolved));

    fake.assert_all_valid();
    assert_eq!(fake.actions(), ["trigger", "resolve"]);
    let events = fake.received();
    assert!(events
        .iter()
        .all(|e| e.body["dedup_key"] == id && e.body["routing_key"] == ROUTING_KEY));
}

#[tokio::test]
async fn the_trigger_carries_the_ranked_causes_in_pagerduty_fields() {
    let fake = FakePagerDuty::start().await;
    let mut cfg = config(&fake);
    cfg.incident_url_base = Some("https://culprit.example/incidents/".into());
    let pd = client(cfg);
    let mut paged = alert(
        "inc-7",
        2,
        IncidentStatus::Open,
        Severity::Sev2,
        "cartservice",
    );
    paged.similar_incidents = vec![culprit_core::SimilarIncident {
        incident_id: "inc-3".into(),
        started_at: 1,
        summary: "latency on cart".into(),
        confirmed_cause: "redis".into(),
        similarity: 0.9,
    }];
    pd.handle(&paged).await.unwrap();

    fake.assert_all_valid();
    let body = &fake.received()[0].body;
    let p = &body["payload"];
    assert_eq!(body["client"], "culprit");
    assert_eq!(p["severity"], "error");
    assert_eq!(p["source"], "culprit-test");
    assert_eq!(p["component"], "cartservice");
    assert_eq!(p["group"], "prod");
    assert_eq!(p["class"], "span.latency:GET /cart");
    assert_eq!(p["timestamp"], "2023-11-14T22:13:20.123Z");
    assert_eq!(
        p["summary"],
        "SEV2 in prod: cartservice is the likely root cause"
    );
    let d = &p["custom_details"];
    assert_eq!(d["incident_id"], "inc-7");
    assert_eq!(d["revision"], 2);
    assert_eq!(d["confidence"], 0.8);
    assert_eq!(d["top_causes"][0]["service"], "cartservice");
    assert_eq!(d["top_causes"][1]["service"], "redis");
    assert!(d["top_causes"][0]["explanation"]
        .as_str()
        .unwrap()
        .contains("cartservice"));
    assert_eq!(d["top_evidence"][0]["signal"], "span.latency:GET /cart");
    assert_eq!(d["chain"], "cartservice -> frontend");
    assert_eq!(d["similar_incidents"][0]["incident_id"], "inc-3");
    assert_eq!(d["similar_incidents"][0]["confirmed_cause"], "redis");
    assert_eq!(
        body["links"][0]["href"],
        "https://culprit.example/incidents/inc-7"
    );
    assert_eq!(body["links"][0]["text"], "culprit incident inc-7");
}

#[tokio::test]
async fn update_on_revision_retriggers_only_when_the_top_cause_changes() {
    let fake = FakePagerDuty::start().await;
    let pd = client(PagerDutyConfig {
        update_on_revision: true,
        ..config(&fake)
    });
    let id = "inc-upd";
    let open = |rev, top| alert(id, rev, IncidentStatus::Open, Severity::Sev1, top);

    assert!(matches!(
        pd.handle(&open(0, "cartservice")).await.unwrap(),
        Outcome::Triggered { .. }
    ));
    assert_eq!(
        pd.handle(&open(1, "cartservice")).await.unwrap(),
        Outcome::Skipped(SkipReason::AlreadyTriggered)
    );
    assert_eq!(
        pd.handle(&open(2, "redis")).await.unwrap(),
        Outcome::Updated {
            dedup_key: id.into()
        }
    );
    assert_eq!(
        pd.handle(&open(1, "cartservice")).await.unwrap(),
        Outcome::Skipped(SkipReason::StaleRevision)
    );

    fake.assert_all_valid();
    assert_eq!(fake.actions(), ["trigger", "trigger"]);
    assert_eq!(fake.received()[1].body["payload"]["component"], "redis");
}

#[tokio::test]
async fn incidents_below_min_severity_never_page_nor_resolve() {
    let fake = FakePagerDuty::start().await;
    let pd = client(config(&fake)); // min_severity SEV2
    let open = alert(
        "inc-low",
        0,
        IncidentStatus::Open,
        Severity::Sev3,
        "cartservice",
    );
    assert_eq!(
        pd.handle(&open).await.unwrap(),
        Outcome::Skipped(SkipReason::BelowMinSeverity)
    );
    let resolved = alert(
        "inc-low",
        1,
        IncidentStatus::Resolved,
        Severity::Sev3,
        "cartservice",
    );
    assert_eq!(
        pd.handle(&resolved).await.unwrap(),
        Outcome::Skipped(SkipReason::NotTriggered)
    );
    assert!(fake.received().is_empty());

    // The same incident escalating to SEV2 pages then.
    let escalated = alert(
        "inc-esc",
        3,
        IncidentStatus::Open,
        Severity::Sev2,
        "cartservice",
    );
    assert!(matches!(
        pd.handle(&escalated).await.unwrap(),
        Outcome::Triggered { .. }
    ));
    assert_eq!(fake.actions(), ["trigger"]);
}

#[tokio::test]
async fn a_paging_incident_unknown_to_this_process_is_still_resolved() {
    // After a restart the dedup memory is empty; the page sent before it must not stay open.
    let fake = FakePagerDuty::start().await;
    let pd = client(config(&fake));
    let resolved = alert(
        "inc-before-restart",
        5,
        IncidentStatus::Resolved,
        Severity::Sev1,
        "cartservice",
    );
    assert_eq!(
        pd.handle(&resolved).await.unwrap(),
        Outcome::Resolved {
            dedup_key: "inc-before-restart".into()
        }
    );
    fake.assert_all_valid();
    assert_eq!(fake.actions(), ["resolve"]);
}

#[tokio::test]
async fn server_errors_are_retried_until_accepted() {
    let fake = FakePagerDuty::start().await;
    fake.script([reply(500), reply(503)]);
    let pd = client(config(&fake));
    let outcome = pd
        .handle(&alert(
            "inc-retry",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Triggered { .. }));
    fake.assert_all_valid();
    assert_eq!(fake.received().len(), 3);
}

#[tokio::test]
async fn retries_give_up_after_max_retries_and_the_next_revision_pages_again() {
    let fake = FakePagerDuty::start().await;
    fake.script([reply(500), reply(500), reply(500), reply(500)]);
    let pd = client(config(&fake)); // max_retries 3 -> 4 attempts
    let err = pd
        .handle(&alert(
            "inc-down",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PagerDutyError::GaveUp { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(fake.received().len(), 4);

    // The failed page is not remembered as sent.
    let retried = pd
        .handle(&alert(
            "inc-down",
            1,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap();
    assert!(matches!(retried, Outcome::Triggered { .. }));
    assert_eq!(fake.received().len(), 5);
}

#[tokio::test]
async fn throttling_waits_for_retry_after() {
    let fake = FakePagerDuty::start().await;
    fake.script([Reply {
        retry_after: Some("1"),
        ..reply(429)
    }]);
    // backoff_max above Retry-After so the header, not the cap, decides the wait.
    let pd = client(PagerDutyConfig {
        backoff_max_ms: 5_000,
        ..config(&fake)
    });
    let started = Instant::now();
    let outcome = pd
        .handle(&alert(
            "inc-429",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Triggered { .. }));
    let got = fake.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After was 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_bad_request_is_not_retried_and_names_the_answer() {
    let fake = FakePagerDuty::start().await;
    fake.script([reply(400)]);
    let pd = client(config(&fake));
    let err = pd
        .handle(&alert(
            "inc-400",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap_err();
    match &err {
        PagerDutyError::Rejected {
            status,
            body,
            dedup_key,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(dedup_key, "inc-400");
            assert!(body.contains("Event object is invalid"), "{body}");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert!(err.to_string().contains("HTTP 400"));
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn connection_errors_are_retried() {
    // A port nothing listens on: bind, note the address, close.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let cfg = PagerDutyConfig {
        url: format!("http://{addr}/v2/enqueue"),
        max_retries: 2,
        backoff_initial_ms: 1,
        backoff_max_ms: 5,
        ..PagerDutyConfig::default()
    };
    let pd = client(cfg);
    let err = pd
        .handle(&alert(
            "inc-conn",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PagerDutyError::GaveUp { attempts: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_long_multibyte_summary_is_cut_to_the_limit_on_a_char_boundary() {
    let fake = FakePagerDuty::start().await;
    let pd = client(config(&fake));
    let mut a = alert("inc-long", 0, IncidentStatus::Open, Severity::Sev1, "redis");
    // 3-byte characters put byte 1024 in the middle of one.
    a.summary = format!("x{}", "€".repeat(600));
    pd.handle(&a).await.unwrap();

    fake.assert_all_valid(); // the server parses the body as UTF-8 JSON
    let summary = fake.received()[0].body["payload"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.len() <= 1024, "{} bytes", summary.len());
    assert!(
        summary.len() > 1000,
        "cut too much: {} bytes",
        summary.len()
    );
    assert!(summary.starts_with("x€€"));
    assert!(summary.ends_with('…'));
}

#[tokio::test]
async fn as_an_alert_sink_it_pages_like_handle_and_a_rejection_is_not_retried() {
    let fake = FakePagerDuty::start().await;
    let sink: Box<dyn AlertSink> = Box::new(client(config(&fake)));
    for revision in [0, 1] {
        sink.emit(&alert(
            "inc-pub",
            revision,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap();
    }
    fake.assert_all_valid();
    assert_eq!(fake.actions(), ["trigger"]);

    // A bad request would be rejected again: given up, not retried.
    let open = |id: &str| alert(id, 0, IncidentStatus::Open, Severity::Sev1, "redis");
    fake.script([reply(400)]);
    let err = sink.emit(&open("inc-bad")).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    // A PagerDuty that stays down is worth retrying later.
    fake.script([reply(500), reply(500), reply(500), reply(500)]);
    let err = sink.emit(&open("inc-down")).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
}
