//! Where the routing key comes from. Only one test here touches the process environment,
//! because tests in one binary run in parallel threads.

mod support;

use culprit_core::{IncidentStatus, Severity};
use culprit_pagerduty::{
    Outcome, PagerDutyClient, PagerDutyConfig, PagerDutyError, ROUTING_KEY_ENV,
};
use std::io::Write;
use support::{alert, FakePagerDuty, ROUTING_KEY};

#[test]
fn the_key_file_is_read_and_trimmed() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "  {ROUTING_KEY}").unwrap();
    let cfg = PagerDutyConfig {
        routing_key_file: Some(file.path().into()),
        ..PagerDutyConfig::default()
    };
    assert_eq!(cfg.routing_key_with(|_| None).unwrap(), ROUTING_KEY);
}

#[test]
fn the_environment_wins_over_the_file() {
    let cfg = PagerDutyConfig {
        routing_key_file: Some("/nonexistent/key".into()),
        ..PagerDutyConfig::default()
    };
    let other = "E".repeat(32);
    let key = cfg
        .routing_key_with(|name| (name == ROUTING_KEY_ENV).then(|| other.clone()))
        .unwrap();
    assert_eq!(key, other);
}

#[test]
fn a_missing_key_is_a_clear_error() {
    let err = PagerDutyConfig::default()
        .routing_key_with(|_| None)
        .unwrap_err();
    assert!(matches!(err, PagerDutyError::MissingRoutingKey));
    let msg = err.to_string();
    assert!(
        msg.contains(ROUTING_KEY_ENV) && msg.contains("routing_key_file"),
        "{msg}"
    );

    let cfg = PagerDutyConfig {
        routing_key_file: Some("/nonexistent/key".into()),
        ..PagerDutyConfig::default()
    };
    let err = cfg.routing_key_with(|_| None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/key"), "{err}");
}

#[test]
fn a_key_of_the_wrong_length_is_rejected_without_echoing_it() {
    let err = PagerDutyConfig::default()
        .routing_key_with(|_| Some("short-secret".into()))
        .unwrap_err();
    assert!(matches!(err, PagerDutyError::BadRoutingKey { len: 12, .. }));
    assert!(!err.to_string().contains("short-secret"));
}

#[test]
fn the_config_rejects_unknown_fields_and_has_no_key_field() {
    let err = toml::from_str::<PagerDutyConfig>("routing_key = \"abc\"").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let cfg: PagerDutyConfig =
        toml::from_str("min_severity = \"SEV1\"\nupdate_on_revision = true").unwrap();
    assert_eq!(cfg.min_severity, Severity::Sev1);
    assert_eq!(cfg.url, culprit_pagerduty::DEFAULT_URL);
    assert_eq!(cfg.max_retries, 5);
}

#[tokio::test]
async fn new_reads_the_key_from_the_environment_and_fails_clearly_without_one() {
    std::env::remove_var(ROUTING_KEY_ENV);
    let fake = FakePagerDuty::start().await;
    let cfg = PagerDutyConfig {
        url: fake.url.clone(),
        ..PagerDutyConfig::default()
    };

    let err = PagerDutyClient::new(cfg.clone()).unwrap_err();
    assert!(err.to_string().contains(ROUTING_KEY_ENV), "{err}");

    std::env::set_var(ROUTING_KEY_ENV, ROUTING_KEY);
    let pd = PagerDutyClient::new(cfg);
    std::env::remove_var(ROUTING_KEY_ENV);
    let pd = pd.unwrap();
    assert!(
        !format!("{pd:?}").contains(ROUTING_KEY),
        "Debug must not print the key"
    );
    let outcome = pd
        .handle(&alert(
            "inc-env",
            0,
            IncidentStatus::Open,
            Severity::Sev1,
            "redis",
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Triggered { .. }));
    fake.assert_all_valid();
    assert_eq!(fake.received()[0].body["routing_key"], ROUTING_KEY);
}
