//! The dashboard in a real headless Chromium, driven through chromedriver (WebDriver over HTTP):
//! sign in, measure the first paint of a list of 500 incidents, filter it, see a new incident
//! arrive live, open a simulated incident with the keyboard and see its graph, confirm the cause
//! with a write token and find it in the history, recalculate a service's baselines, and find
//! the buttons disabled for a read-only token. Screenshots of the list, an incident and a
//! service's baselines go to docs/img/.
//!
//! The incidents are real: `tests/fixtures/*.alert.json` are alerts culprit produced for its
//! simulated scenarios (see tests/fixtures/README.md); the list is filled with variations of
//! them. The server is the API with the wiring `culprit serve` gives it, fed through
//! `ApiState::publish` rather than Kafka.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them); skips with a
//! message when either is missing. `CULPRIT_CHROMIUM` and `CULPRIT_CHROMEDRIVER` override the
//! paths.

mod common;

use common::{FakeBaselines, Server, READER, WRITER};
use culprit_api::{ApiConfig, ApiState};
use culprit_core::{IncidentStatus, RcaAlert, Severity, NANOS_PER_SEC};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIST_SIZE: usize = 500;
/// A sanity bound only: the figure that matters is printed (target: under 1 s).
const FIRST_PAINT_BOUND_MS: f64 = 10_000.0;
const WAIT: Duration = Duration::from_secs(20);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Just enough of the W3C WebDriver protocol.
struct Browser {
    http: reqwest::Client,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element (focusing it first, as a keyboard user would).
    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn exec(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `expression` (JavaScript) until it is truthy and returns its value.
    async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.exec(&format!("return ({expression});")).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let body = self
                    .exec("return document.body.innerText.slice(0, 2000);")
                    .await;
                panic!("timed out waiting for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.exec(&format!(
            "const e = document.querySelector({}); return e ? e.innerText : null;",
            json!(css)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Saves the viewport, scrolled to the top or to `anchor` (a CSS selector).
    async fn screenshot(&self, path: &Path, anchor: Option<&str>) {
        use base64::Engine;
        let scroll = match anchor {
            Some(css) => format!("document.querySelector({}).scrollIntoView();", json!(css)),
            None => "window.scrollTo(0, 0);".to_string(),
        };
        self.exec(&format!(
            "{scroll} document.activeElement && document.activeElement.blur();"
        ))
        .await;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    path.exists().then_some(path)
}

fn fixtures() -> Vec<RcaAlert> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".alert.json"))
        .collect();
    files.sort();
    let alerts: Vec<RcaAlert> = files
        .iter()
        .map(|p| {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    assert!(!alerts.is_empty(), "no fixtures in {}", dir.display());
    alerts
}

/// `LIST_SIZE` incidents: the fixtures as they are (in `prod`), then variations of them in three
/// environments, every severity and both states, a few minutes apart.
fn incidents(fixtures: &[RcaAlert]) -> Vec<RcaAlert> {
    let newest = fixtures.iter().map(|a| a.started_at).max().unwrap();
    let mut out: Vec<RcaAlert> = fixtures.to_vec();
    for a in &mut out {
        a.environment = "prod".into();
    }
    for i in 0..LIST_SIZE - fixtures.len() {
        let mut a = fixtures[i % fixtures.len()].clone();
        a.incident_id = format!("{}-{i:03}", a.incident_id);
        let (environment, severity) = (["prod", "staging", "dev"][i % 3], Severity::ALL[i % 5]);
        // The summary names them too ("SEV1 in prod: ...").
        a.summary = a.summary.replacen(
            &format!("{} in {}", a.severity, a.environment),
            &format!("{severity} in {environment}"),
            1,
        );
        a.environment = environment.to_string();
        a.severity = severity;
        a.status = if i % 5 == 2 {
            IncidentStatus::Open
        } else {
            IncidentStatus::Resolved
        };
        let shift = (i as i64 + 1) * 7 * 60 * NANOS_PER_SEC;
        a.started_at = newest - shift;
        a.updated_at = a.started_at + 20 * 60 * NANOS_PER_SEC;
        out.push(a);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_call_engineer_finds_judges_and_confirms_an_incident_in_chromium() {
    let (Some(chromium), Some(chromedriver)) = (
        tool("CULPRIT_CHROMIUM", "/usr/bin/chromium"),
        tool("CULPRIT_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) else {
        println!(
            "skipped: Chromium or chromedriver is missing (install Debian's chromium and chromium-driver, as scripts/test.sh does)"
        );
        return;
    };
    let started = Instant::now();

    let fixtures = fixtures();
    let mut headline = fixtures[0].clone();
    headline.environment = "prod".into();
    // A pinned wall clock keeps the times of feedback, and so the screenshots, the same each run.
    let state = ApiState::with_clock(ApiConfig::default(), common::tokens(), || {
        1_717_412_460 * NANOS_PER_SEC // 2024-06-03T11:01:00Z, after the simulated incidents
    });
    state.set_baselines(Arc::new(FakeBaselines::shop()));
    for mut a in incidents(&fixtures) {
        if a.incident_id == headline.incident_id {
            a.status = IncidentStatus::Open;
        }
        state.publish(a).await;
    }
    let server = Server::start(state.clone()).await;
    let base = server.base.clone();
    // An earlier incident like the headline one, in its environment, resolved and confirmed: its
    // "similar" match (the variations' index picks fixture 0, `prod`, resolved).
    let earlier = format!("{}-024", headline.incident_id);
    let (status, body) = server
        .post(
            &format!("/incidents/{earlier}/feedback"),
            r#"{"cause":"auth","note":"identity-provider timeout cut to 50 ms"}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let port = free_port();
    let _driver = KillOnDrop(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let http = reqwest::Client::new();
    let driver_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    while http
        .get(format!("{driver_url}/status"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    let created: Value = http
        .post(format!("{driver_url}/session"))
        .json(&json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {created}"));
    let browser = Browser {
        http: http.clone(),
        session: format!("{driver_url}/session/{session}"),
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
    std::fs::create_dir_all(&shots).unwrap();

    // The shell asks for a token; a wrong one is refused.
    browser.goto(&format!("{base}/")).await;
    browser
        .wait_for(
            "the sign-in form",
            "!document.getElementById('signin').hidden",
        )
        .await;
    browser.type_into("#token", "not-a-token-at-all-0000").await;
    browser.click("#signin-form button").await;
    browser
        .wait_for(
            "the refusal",
            "document.getElementById('signin-error').textContent.includes('not accepted')",
        )
        .await;
    browser
        .exec("document.getElementById('token').value = '';")
        .await;
    browser.type_into("#token", WRITER).await;
    browser.click("#signin-form button").await;
    let count = browser
        .wait_for(
            "the incident list",
            "document.getElementById('count')?.innerText",
        )
        .await;
    assert_eq!(
        count,
        json!(format!("{LIST_SIZE} of {LIST_SIZE} incidents"))
    );
    assert_eq!(
        browser.text("#who").await,
        "Signed in as ana (write)",
        "the token's name shows"
    );

    // First paint of the list with 500 incidents, on a fresh load with the token in the session.
    let mut figures = Vec::new();
    for _ in 0..3 {
        browser.goto("about:blank").await;
        browser.goto(&format!("{base}/#/incidents")).await;
        let rendered = browser
            .wait_for(
                "the list after a reload",
                "performance.getEntriesByName('culprit:incidents-rendered')[0]?.startTime",
            )
            .await
            .as_f64()
            .unwrap();
        let paint = browser
            .exec("return performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null;")
            .await
            .as_f64()
            .unwrap_or(f64::NAN);
        let rows = browser
            .exec("return document.querySelectorAll('tr[data-incident]').length;")
            .await;
        assert_eq!(rows, json!(LIST_SIZE));
        figures.push((paint, rendered));
    }
    for (paint, rendered) in &figures {
        println!(
            "first paint with {LIST_SIZE} incidents: shell {paint:.0} ms, list rendered {rendered:.0} ms after navigation start (target < 1000 ms)"
        );
    }
    let best = figures.iter().map(|f| f.1).fold(f64::INFINITY, f64::min);
    assert!(
        best < FIRST_PAINT_BOUND_MS,
        "the list took {best:.0} ms: far beyond any sane figure"
    );
    browser
        .wait_for(
            "the live stream",
            "document.getElementById('live')?.innerText === 'Live updates: on'",
        )
        .await;
    browser
        .screenshot(&shots.join("dashboard-incidents.png"), None)
        .await;

    // Filter by the headline incident's severity and environment.
    let severity = headline.severity.to_string();
    browser
        .click(&format!("select[name=severity] option[value={severity}]"))
        .await;
    browser
        .click("select[name=environment] option[value=prod]")
        .await;
    let shown = browser
        .wait_for(
            "the filtered list",
            &format!(
                "(() => {{ const r = [...document.querySelectorAll('tr[data-incident]')]; \
                 return r.length > 0 && r.length < {LIST_SIZE} \
                 && r.every(t => t.dataset.severity === '{severity}' && t.dataset.environment === 'prod') && r.length; }})()"
            ),
        )
        .await;
    println!("filtered to {shown} incidents ({severity}, prod)");
    let hash = browser.exec("return location.hash;").await;
    assert!(
        hash.as_str()
            .unwrap()
            .contains(&format!("severity={severity}")),
        "the filter is in the address: {hash}"
    );

    // A new incident that matches the filters appears without a reload.
    let mut live = headline.clone();
    live.incident_id = "live-incident".into();
    live.started_at += 3600 * NANOS_PER_SEC;
    live.status = IncidentStatus::Open;
    assert!(state.publish(live).await);
    browser
        .wait_for(
            "the live incident",
            "document.querySelector('tr[data-incident=\"live-incident\"]')",
        )
        .await;

    // Open the headline incident from the keyboard: focus its link and press Enter.
    let link = format!("a[href=\"#/incidents/{}\"]", headline.incident_id);
    browser.type_into(&link, "\u{E007}").await;
    browser
        .wait_for(
            "the incident's graph",
            "document.querySelector('article.incident svg[role=img]')",
        )
        .await;
    let nodes = browser
        .exec("return document.querySelectorAll('article.incident svg g.node').length;")
        .await;
    assert_eq!(
        nodes,
        json!(headline.graph.nodes.len()),
        "every graph node is drawn"
    );
    let similar = browser.text("#similar").await;
    assert!(
        similar.contains(&earlier) && similar.contains("identity-provider timeout"),
        "{similar}"
    );
    let top = headline.root_causes[0].service.clone();
    let candidates = browser.text("article.incident table").await;
    assert!(candidates.contains(&top), "{candidates}");
    assert_eq!(
        browser.exec("return document.activeElement.tagName;").await,
        "H1",
        "focus moves to the page's heading"
    );
    browser
        .screenshot(&shots.join("dashboard-incident.png"), None)
        .await;

    // Confirm culprit's first candidate.
    browser.click("#fb-top button").await;
    browser
        .wait_for(
            "the recorded feedback",
            "document.querySelector('#feedback-history tr.latest')",
        )
        .await;
    let row = browser.text("#feedback-history tr.latest").await;
    assert!(row.contains("ana") && row.contains(&top), "{row}");
    assert!(row.contains("latest, counts; provisional"), "{row}");
    let status = browser.text("#status").await;
    assert!(
        status.contains(&format!("Feedback recorded: {top}, by ana")),
        "{status}"
    );
    browser
        .screenshot(&shots.join("dashboard-feedback.png"), Some("#feedback"))
        .await;

    // ... and find it in the history.
    browser.click("a[data-nav=history]").await;
    browser
        .wait_for(
            "the history",
            &format!(
                "[...document.querySelectorAll('table.history tr.latest')].some(r => r.innerText.includes({}) && r.innerText.includes('ana'))",
                json!(headline.incident_id)
            ),
        )
        .await;

    // A service's baselines, recalculated from now on.
    browser.click("a[data-nav=baselines]").await;
    browser
        .wait_for(
            "the baseline services",
            "document.querySelector('a[href=\"#/baselines/checkout\"]')",
        )
        .await;
    browser.click("a[href=\"#/baselines/checkout\"]").await;
    browser
        .wait_for(
            "the thresholds",
            "document.querySelectorAll('table.baseline tbody tr').length === 25",
        )
        .await;
    browser
        .screenshot(&shots.join("dashboard-baselines.png"), None)
        .await;
    browser.click("#recalc button[type=submit]").await;
    browser
        .wait_for(
            "the recorded recalculation",
            "[...document.querySelectorAll('table.history td')].some(t => t.innerText === 'from now on')",
        )
        .await;
    browser
        .wait_for(
            "what the detectors said they did, in the status line",
            "document.getElementById('status').textContent.includes('forgotten (test double)')",
        )
        .await;

    // A read-only token sees the incident but cannot give feedback.
    browser.click("#signout").await;
    browser
        .wait_for(
            "the sign-in form",
            "!document.getElementById('signin').hidden",
        )
        .await;
    browser.type_into("#token", READER).await;
    browser.click("#signin-form button").await;
    browser
        .goto(&format!("{base}/#/incidents/{}", headline.incident_id))
        .await;
    browser
        .wait_for(
            "the read-only incident page",
            "document.querySelector('#fb-top button')?.disabled",
        )
        .await;

    browser.cmd(reqwest::Method::DELETE, "", None).await;
    let history = state
        .history()
        .entries(&Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        3,
        "the earlier confirmation, the browser's and one recalculation"
    );
    println!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}
