use culprit_core::{ChangeEvent, ChangeKind, Event, EventBody};
use culprit_otlp::changes::decode_changes;
use culprit_otlp::DecodeError;
use serde_json::json;

const NATIVE: &str = r#"{"id": "chg-42", "time": "2026-11-22T03:00:00Z", "type": "deployment", "service": "checkout",
  "environment": "prod", "summary": "deploy checkout v1.4.2", "actor": "ci-bot",
  "attributes": {"version": "1.4.2", "files_changed": 3, "canary": true}, "ticket": "OPS-1"}"#;

/// 2026-11-22T03:00:00Z.
const T: i64 = 1_795_316_400_000_000_000;

fn change(e: &Event) -> &ChangeEvent {
    match &e.body {
        EventBody::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn err(r: Result<Vec<Event>, DecodeError>) -> DecodeError {
    match r {
        Ok(events) => panic!("expected an error, got {} events", events.len()),
        Err(e) => e,
    }
}

#[test]
fn native_change_maps_every_field_and_ignores_unknown_ones() {
    let events = decode_changes(NATIVE.as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.time, T);
    assert_eq!(e.service(), "checkout");
    assert_eq!(e.resource.environment, "prod");
    let c = change(e);
    assert_eq!(c.id, "chg-42");
    assert_eq!(c.kind, ChangeKind::Deployment);
    assert_eq!(c.summary, "deploy checkout v1.4.2");
    assert_eq!(c.actor.as_deref(), Some("ci-bot"));
    assert_eq!(
        c.attributes.get("files_changed").map(String::as_str),
        Some("3")
    );
    assert_eq!(c.attributes.get("canary").map(String::as_str), Some("true"));
    assert_eq!(
        c.attributes.get("version").map(String::as_str),
        Some("1.4.2")
    );
}

#[test]
fn native_defaults_environment_and_summary_and_takes_unix_nanos() {
    let doc = json!({"id": "c1", "time_unix_nano": 1_763_780_400_000_000_000_i64, "type": "feature_flag", "service": "cart"});
    let events = decode_changes(doc.to_string().as_bytes()).unwrap();
    assert_eq!(events[0].time, 1_763_780_400_000_000_000);
    assert_eq!(events[0].resource.environment, "default");
    assert_eq!(change(&events[0]).summary, "feature_flag cart");
    assert_eq!(change(&events[0]).kind, ChangeKind::FeatureFlag);
}

#[test]
fn array_and_json_lines_give_one_event_per_record_in_order() {
    let a = json!({"id": "a", "time": "2026-11-22T03:00:00Z", "type": "config_change", "service": "s1"});
    let b = json!({"id": "b", "time": "2026-11-22T03:00:01+01:00", "type": "rollback", "service": "s2"});
    let array = decode_changes(json!([a, b]).to_string().as_bytes()).unwrap();
    let lines = decode_changes(format!("{a}\n\n{b}\n").as_bytes()).unwrap();
    assert_eq!(array, lines);
    let kinds: Vec<ChangeKind> = lines.iter().map(|e| change(e).kind).collect();
    assert_eq!(kinds, vec![ChangeKind::ConfigChange, ChangeKind::Rollback]);
    assert_eq!(
        lines[1].time,
        T + 1_000_000_000 - 3_600 * 1_000_000_000,
        "offsets are honoured"
    );
}

#[test]
fn missing_required_field_names_the_record_and_field() {
    let ok =
        json!({"id": "a", "time": "2026-11-22T03:00:00Z", "type": "deployment", "service": "s"});
    let no_service = json!({"id": "b", "time": "2026-11-22T03:00:00Z", "type": "deployment"});
    let e = err(decode_changes(
        format!("{ok}\n{ok}\n{no_service}\n").as_bytes(),
    ));
    assert_eq!(
        e.to_string(),
        "line 3: field `service`: missing required field"
    );
    assert_eq!(e.reason_code(), "invalid_field");

    let e = err(decode_changes(
        json!([ok, {"id": "x", "type": "deployment", "service": "s"}])
            .to_string()
            .as_bytes(),
    ));
    assert!(
        e.to_string()
            .starts_with("[1]: field `time`: missing required field"),
        "{e}"
    );
}

#[test]
fn bad_values_in_native_records_are_invalid() {
    let base =
        json!({"id": "a", "time": "2026-11-22T03:00:00Z", "type": "deployment", "service": "s"});
    let with = |key: &str, value: serde_json::Value| {
        let mut doc = base.clone();
        doc[key] = value;
        err(decode_changes(doc.to_string().as_bytes())).to_string()
    };
    assert!(
        with("type", json!("redeploy")).contains("field `type`: unknown change type `redeploy`")
    );
    assert!(
        with("time", json!("yesterday")).contains("field `time`: expected an RFC 3339 timestamp")
    );
    assert!(with("attributes", json!(["x"]))
        .contains("field `attributes`: expected an object, got an array"));
    assert!(with("service", json!("")).contains("field `service`: must not be empty"));
}

#[test]
fn invalid_json_is_malformed() {
    let e = err(decode_changes(b"{\"id\": "));
    assert_eq!(e.reason_code(), "malformed_json");
    assert_eq!(err(decode_changes(b"  ")), DecodeError::Empty);
}

#[test]
fn cdevent_in_a_cloudevent_is_a_deployment_of_the_artifact_service() {
    let doc = json!({
        "specversion": "1.0",
        "id": "271069a8-fc18-44f1-b38f-9d70a1695819",
        "source": "/event/source/123",
        "type": "dev.cdevents.service.deployed.0.1.1",
        "time": "2026-11-22T03:00:00Z",
        "data": {
            "context": {"version": "0.2.0", "id": "271069a8", "source": "/event/source/123",
                        "type": "dev.cdevents.service.deployed.0.1.1", "timestamp": "2026-11-22T03:00:00Z"},
            "subject": {"id": "mySubject123", "source": "/event/source/123", "type": "service",
                        "content": {"environment": {"id": "prod"},
                                    "artifactId": "pkg:oci/checkout@v1.4.2?repository_url=mycr.io/checkout"}}
        }
    });
    let events = decode_changes(doc.to_string().as_bytes()).unwrap();
    let e = &events[0];
    assert_eq!(e.time, T);
    assert_eq!(e.service(), "checkout");
    assert_eq!(e.resource.environment, "prod");
    let c = change(e);
    assert_eq!(c.id, "271069a8-fc18-44f1-b38f-9d70a1695819");
    assert_eq!(c.kind, ChangeKind::Deployment);
    assert_eq!(c.summary, "service checkout deployed (v1.4.2)");
    assert_eq!(
        c.attributes.get("version").map(String::as_str),
        Some("v1.4.2")
    );
    assert_eq!(
        c.attributes.get("source").map(String::as_str),
        Some("/event/source/123")
    );
    assert_eq!(
        c.attributes.get("subject_id").map(String::as_str),
        Some("mySubject123")
    );
}

#[test]
fn bare_cdevents_from_the_spec_map_upgrade_rollback_and_environment() {
    let cdevent = |ty: &str, subject: serde_json::Value| {
        json!({"context": {"version": "0.2.0", "id": "e1", "source": "/s", "type": ty,
                           "timestamp": "2026-11-22T03:00:00Z"},
               "subject": subject})
    };
    let service = json!({"id": "service/payments", "type": "service", "content": {"environment": {"id": "staging"}}});
    let env = json!({"id": "env-1", "type": "environment", "content": {"name": "prod", "url": "https://k8s"}});
    let lines = [
        cdevent("dev.cdevents.service.upgraded.0.2.0", service.clone()),
        cdevent("dev.cdevents.service.rolledback.0.2.0", service),
        cdevent("dev.cdevents.environment.modified.0.2.0", env),
        cdevent(
            "dev.cdevents.build.finished.0.2.0",
            json!({"id": "b1", "type": "build"}),
        ),
    ]
    .map(|v| v.to_string())
    .join("\n");
    let events = decode_changes(lines.as_bytes()).unwrap();
    let got: Vec<(ChangeKind, &str, &str)> = events
        .iter()
        .map(|e| (change(e).kind, e.service(), e.resource.environment.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ChangeKind::Deployment, "payments", "staging"),
            (ChangeKind::Rollback, "payments", "staging"),
            (ChangeKind::ConfigChange, "unknown_service", "prod"),
            (ChangeKind::Other, "b1", "default"),
        ]
    );
}

#[test]
fn plain_cloudevent_with_featureflag_type_is_a_feature_flag() {
    let doc = json!({"specversion": "1.0", "id": "ff-9", "source": "flagd", "type": "com.example.featureflag.changed",
                     "time": "2026-11-22T03:00:00Z", "subject": "new-checkout", "service": "checkout",
                     "data": {"from": "off", "to": "on", "actor": "alice"}});
    let events = decode_changes(doc.to_string().as_bytes()).unwrap();
    let c = change(&events[0]);
    assert_eq!(c.kind, ChangeKind::FeatureFlag);
    assert_eq!(events[0].service(), "checkout");
    assert_eq!(c.actor.as_deref(), Some("alice"));
    assert_eq!(c.attributes.get("to").map(String::as_str), Some("on"));
    assert_eq!(
        c.attributes.get("subject").map(String::as_str),
        Some("new-checkout")
    );
}

#[test]
fn cloudevent_without_time_is_invalid() {
    let doc = json!({"specversion": "1.0", "id": "x", "source": "s", "type": "dev.cdevents.service.deployed.0.1.1"});
    let e = err(decode_changes(doc.to_string().as_bytes()));
    assert_eq!(
        e.to_string(),
        "line 1: field `time`: missing required field"
    );
}

// ---- schema --------------------------------------------------------------------------------

fn schema() -> jsonschema::Validator {
    // Read at run time: a target dir shared with a checkout elsewhere can keep a test binary
    // whose compile-time path no longer exists.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let text =
        std::fs::read_to_string(format!("{crate_dir}/../../schemas/change-event.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

#[test]
fn schema_accepts_the_native_samples_the_decoder_accepts() {
    let validator = schema();
    let samples = [
        serde_json::from_str::<serde_json::Value>(NATIVE).unwrap(),
        json!({"id": "c1", "time_unix_nano": 1_763_780_400_000_000_000_i64, "type": "feature_flag", "service": "cart"}),
        json!({"id": "c2", "time_unix_nano": "1763780400000000000", "type": "other", "service": "cart"}),
    ];
    for sample in &samples {
        let errors: Vec<String> = validator
            .iter_errors(sample)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{sample}: {errors:?}");
        assert!(
            decode_changes(sample.to_string().as_bytes()).is_ok(),
            "{sample}"
        );
    }
}

#[test]
fn schema_rejects_what_the_decoder_rejects() {
    let validator = schema();
    let invalid = [
        json!({"id": "c1", "type": "deployment", "service": "cart"}),
        json!({"id": "c1", "time": "2026-11-22T03:00:00Z", "type": "redeploy", "service": "cart"}),
        json!({"id": "c1", "time": "2026-11-22T03:00:00Z", "type": "deployment"}),
        json!({"id": "c1", "time": "2026-11-22T03:00:00Z", "type": "deployment", "service": "cart", "attributes": []}),
    ];
    for doc in &invalid {
        assert!(!validator.is_valid(doc), "schema accepted {doc}");
        assert!(
            decode_changes(doc.to_string().as_bytes()).is_err(),
            "decoder accepted {doc}"
        );
    }
}
