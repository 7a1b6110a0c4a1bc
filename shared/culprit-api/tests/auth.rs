//! Who may do what: every route against no token, an unknown token, a read token and a write
//! token, over real HTTP.

mod common;

use common::{alert, FakeBaselines, Server, READER, WRITER};
use culprit_api::{ApiConfig, ApiState, Tokens};
use culprit_core::IncidentStatus;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;

/// Routes anyone may call.
const OPEN: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/ui/assets/app.js",
    "/ui/assets/app.css",
];

/// Every GET route that shows data, with the status a read token gets from the fixture.
const READ: &[(&str, u16)] = &[
    ("/whoami", 200),
    ("/incidents", 200),
    ("/incidents?status=open", 200),
    ("/incidents/inc-1", 200),
    ("/incidents/inc-1/similar", 200),
    ("/incidents/inc-1/feedback", 200),
    ("/history", 200),
    ("/baselines", 200),
    ("/baselines/checkout", 200),
    ("/ui/incidents", 200),
    ("/ui/incident-rows", 200),
    ("/ui/incidents/inc-1", 200),
    ("/ui/baselines", 200),
    ("/ui/baselines/checkout", 200),
    ("/ui/history", 200),
];

/// Every write route, with a valid body and the status a write token gets.
const WRITE: &[(&str, &str, u16)] = &[
    ("/incidents/inc-1/feedback", r#"{"cause":"redis"}"#, 201),
    ("/baselines/checkout/recalculate", "{}", 200),
];

async fn server() -> Server {
    let state = common::state();
    state.incidents().upsert(alert(
        "inc-1",
        100,
        1,
        IncidentStatus::Open,
        &[("redis", "span.error")],
    ));
    state.set_baselines(Arc::new(FakeBaselines::shop()));
    Server::start(state).await
}

async fn history_len(server: &Server) -> usize {
    server
        .get_json("/history")
        .await
        .1
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn probes_metrics_and_the_page_shell_answer_without_a_token() {
    let server = server().await;
    for path in OPEN {
        let r = server.send(Method::GET, path, None, None).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let shell = server
        .send(Method::GET, "/", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(shell.contains("API token"), "the shell asks for a token");
    assert!(
        !shell.contains("inc-1"),
        "the open shell carries no incident data"
    );
}

#[tokio::test]
async fn every_data_route_refuses_a_missing_or_wrong_token_with_401() {
    let server = server().await;
    let before = history_len(&server).await;
    let mut refused = 0;
    for (path, _) in READ {
        for token in [None, Some("not-a-token-of-this-server"), Some("")] {
            let r = server.send(Method::GET, path, token, None).await;
            assert_eq!(r.status(), 401, "GET {path} with {token:?}");
            assert_eq!(
                r.headers()["www-authenticate"],
                "Bearer realm=\"culprit\"",
                "{path}"
            );
            refused += 1;
        }
    }
    for (path, body, _) in WRITE {
        for token in [None, Some("not-a-token-of-this-server")] {
            let r = server.send(Method::POST, path, token, Some(body)).await;
            assert_eq!(r.status(), 401, "POST {path} with {token:?}");
            refused += 1;
        }
    }
    // Another scheme is no bearer token.
    let r = server
        .http
        .get(format!("{}/incidents", server.base))
        .header("authorization", format!("Basic {WRITER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    refused += 1;

    assert_eq!(history_len(&server).await, before, "nothing was written");
    let metrics = server.metrics().await;
    let line = format!(r#"culprit_api_auth_failures_total{{status="401"}} {refused}"#);
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line} in\n{metrics}"
    );
}

#[tokio::test]
async fn a_read_token_reads_everything_and_every_write_path_answers_403() {
    let server = server().await;
    for (path, status) in READ {
        let r = server.send(Method::GET, path, Some(READER), None).await;
        assert_eq!(r.status(), *status, "GET {path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
    }
    let before = history_len(&server).await;
    for (path, body, _) in WRITE {
        let (status, response) = server.post_as(READER, path, body).await;
        assert_eq!(status, 403, "POST {path}: {response}");
        assert!(
            response["error"]
                .as_str()
                .unwrap()
                .contains("token \"viewer\" has the read scope; this request needs write"),
            "{response}"
        );
    }
    // No other method writes anything through a data route either.
    for (path, _) in READ {
        let path = path.split('?').next().unwrap();
        for method in [Method::PUT, Method::DELETE, Method::PATCH] {
            let r = server
                .send(method.clone(), path, Some(READER), Some("{}"))
                .await;
            assert!(
                r.status() == 405 || r.status() == 403,
                "{method} {path} answered {}",
                r.status()
            );
        }
    }
    assert_eq!(history_len(&server).await, before, "nothing was written");
    let metrics = server.metrics().await;
    let line = format!(
        r#"culprit_api_auth_failures_total{{status="403"}} {}"#,
        WRITE.len()
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line} in\n{metrics}"
    );
}

#[tokio::test]
async fn a_write_token_writes_and_the_author_is_its_name() {
    let server = server().await;
    for (path, body, status) in WRITE {
        let (got, response) = server.post_as(WRITER, path, body).await;
        assert_eq!(got, *status, "POST {path}: {response}");
    }
    let (_, history) = server.get_json("/history").await;
    let authors: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].clone(), e["author"].clone()))
        .collect();
    assert_eq!(
        authors,
        [
            (json!("recalculation"), json!("ana")),
            (json!("feedback"), json!("ana"))
        ]
    );
    // A write token reads too.
    let r = server
        .send(Method::GET, "/whoami", Some(WRITER), None)
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"name": "ana", "scope": "write"})
    );
}

#[tokio::test]
async fn without_configured_tokens_every_data_route_is_closed() {
    let state = ApiState::new(ApiConfig::default(), Tokens::none()).unwrap();
    let server = Server::start(state).await;
    for (path, _) in READ {
        let r = server.send(Method::GET, path, Some(READER), None).await;
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(
        server
            .send(Method::GET, "/healthz", None, None)
            .await
            .status(),
        200
    );
}

#[test]
fn the_api_listens_on_loopback_unless_told_otherwise() {
    let config = ApiConfig::default();
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    assert_eq!(config.listen.port(), 9464);
}
