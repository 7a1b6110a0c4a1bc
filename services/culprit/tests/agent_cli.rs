//! The LLM agent through the real binary: with the endpoint down, `replay --llm` still writes
//! every deterministic alert and adds a review that says why it fell back; `agent --dry-run`
//! writes the requests it would send and sends nothing.

mod common;

use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;

/// Runs culprit with `envs` and returns its stdout and stderr.
fn culprit(args: &[&str], envs: &[(&str, String)]) -> (String, String) {
    let out = common::culprit_with(args, envs);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("file written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn with_the_endpoint_down_replay_keeps_every_alert_and_dry_run_sends_nothing() {
    let tmp = std::env::temp_dir().join(format!("culprit-agent-cli-{}", std::process::id()));
    let input = tmp.join("in");
    let plain = tmp.join("plain");
    let reviewed = tmp.join("reviewed");
    culprit(
        &[
            "simulate",
            "--scenario",
            "new-exception",
            "--out",
            input.to_str().unwrap(),
        ],
        &[],
    );
    let replay = |out: &Path, llm: bool, envs: &[(&str, String)]| {
        let mut args = vec![
            "replay",
            input.to_str().unwrap(),
            "--warmup",
            "1200",
            "--out",
            out.to_str().unwrap(),
        ];
        if llm {
            args.push("--llm");
        }
        culprit(&args, envs)
    };
    replay(&plain, false, &[]);
    // Nothing listens on the endpoint; every incident is reviewed whatever its confidence.
    let down = [
        (
            "CULPRIT__LLM__BASE_URL",
            format!("http://127.0.0.1:{}/v1", closed_port()),
        ),
        ("CULPRIT__LLM__MODEL", "any".to_string()),
        ("CULPRIT__LLM__MIN_CONFIDENCE", "1.0".to_string()),
    ];
    replay(&reviewed, true, &down);

    let deterministic = lines(&plain.join("alerts.jsonl"));
    let with_reviews = lines(&reviewed.join("alerts.jsonl"));
    let (reviews, alerts): (Vec<&Value>, Vec<&Value>) = with_reviews
        .iter()
        .partition(|a| !a["llm_review"].is_null());
    assert!(!deterministic.is_empty());
    assert_eq!(
        alerts.len(),
        deterministic.len(),
        "every deterministic alert is still written"
    );
    assert!(
        !reviews.is_empty(),
        "each incident's final alert is reviewed"
    );
    for review in &reviews {
        let r = &review["llm_review"];
        assert_eq!(r["status"], "unreachable", "{r}");
        // The review is the next revision of the alert it reviewed, with the same ranking.
        let reviewed_revision = r["reviewed_revision"].as_u64().unwrap();
        assert_eq!(review["revision"].as_u64(), Some(reviewed_revision + 1));
        let original = alerts
            .iter()
            .find(|a| {
                a["incident_id"] == review["incident_id"]
                    && a["revision"].as_u64() == Some(reviewed_revision)
            })
            .expect("the reviewed revision was written first");
        assert_eq!(review["root_causes"], original["root_causes"]);
    }

    // --dry-run writes the requests of a review and never connects.
    let requests = tmp.join("requests.jsonl");
    let (_, stderr) = culprit(
        &[
            "agent",
            plain.join("alerts.jsonl").to_str().unwrap(),
            "--dry-run",
            "--all",
            "--out",
            requests.to_str().unwrap(),
        ],
        &down,
    );
    let written = lines(&requests);
    assert!(!written.is_empty(), "{stderr}");
    for line in &written {
        let first = &line["requests"][0];
        assert_eq!(first["model"], "any", "{line}");
        assert!(first["messages"].as_array().is_some_and(|m| !m.is_empty()));
    }
    assert!(stderr.contains("incidents reviewed"), "{stderr}");
    std::fs::remove_dir_all(&tmp).ok();
}
