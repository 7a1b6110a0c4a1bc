//! Change events (deployments, config changes, flag flips): the scenario's own change, if it
//! has one, plus harmless ones earlier in the run so a change is never proof of guilt.

use crate::scenario::{Scenario, NANOS};
use crate::topology::{Svc, ENVIRONMENT};
use chrono::{DateTime, SecondsFormat};
use culprit_core::ChangeKind;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub(crate) struct PlannedChange {
    pub id: String,
    pub time_ns: i64,
    pub kind: ChangeKind,
    pub svc: Svc,
    pub summary: String,
    pub actor: &'static str,
    pub attributes: Vec<(&'static str, String)>,
    /// The version the service runs after a deployment.
    pub new_version: Option<&'static str>,
}

pub(crate) fn plan_changes(
    s: Scenario,
    start_ns: i64,
    fault_start_ns: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<PlannedChange> {
    let normal_ns = (fault_start_ns - start_ns).max(0);
    let id = |rng: &mut ChaCha8Rng| format!("chg-{:012x}", rng.random::<u64>() >> 16);
    let jitter = |rng: &mut ChaCha8Rng, at: f64| -> i64 {
        let t = start_ns + (normal_ns as f64 * at) as i64 + rng.random_range(-20..20) * NANOS;
        t.clamp(start_ns, (fault_start_ns - 90 * NANOS).max(start_ns))
    };
    let mut out = vec![
        PlannedChange {
            id: id(rng),
            time_ns: jitter(rng, 0.35),
            kind: ChangeKind::FeatureFlag,
            svc: Svc::Catalog,
            summary: "enable flag recommendations-v2 on catalog".to_string(),
            actor: "flag-service",
            attributes: vec![
                ("flag", "recommendations-v2".to_string()),
                ("old_value", "false".to_string()),
                ("new_value", "true".to_string()),
            ],
            new_version: None,
        },
        PlannedChange {
            id: id(rng),
            time_ns: jitter(rng, 0.6),
            kind: ChangeKind::Deployment,
            svc: Svc::Frontend,
            summary: "deploy frontend v4.12.1".to_string(),
            actor: "ci-bot",
            attributes: deployment_attributes("4.12.1", 3, 41, 12),
            new_version: Some("4.12.1"),
        },
    ];
    // The culprit change lands 30-60 s before its symptoms.
    let lead = rng.random_range(30..=60) * NANOS;
    let at = fault_start_ns - lead;
    match s {
        Scenario::DeployCpuSpike => out.push(PlannedChange {
            id: id(rng),
            time_ns: at,
            kind: ChangeKind::Deployment,
            svc: Svc::Inventory,
            summary: "deploy inventory v2.3.1".to_string(),
            actor: "ci-bot",
            attributes: deployment_attributes("2.3.1", 12, 340, 25),
            new_version: Some("2.3.1"),
        }),
        Scenario::ConfigTimeout => out.push(PlannedChange {
            id: id(rng),
            time_ns: at,
            kind: ChangeKind::ConfigChange,
            svc: Svc::Auth,
            summary: "auth identity-provider client timeout_ms 500 -> 50".to_string(),
            actor: "jane.doe",
            attributes: vec![
                ("parameter", "timeout_ms".to_string()),
                ("old_value", "500".to_string()),
                ("new_value", "50".to_string()),
            ],
            new_version: None,
        }),
        Scenario::MemoryLeak => out.push(PlannedChange {
            id: id(rng),
            time_ns: at,
            kind: ChangeKind::Deployment,
            svc: Svc::Cart,
            summary: "deploy cart v1.15.0".to_string(),
            actor: "ci-bot",
            attributes: deployment_attributes("1.15.0", 7, 212, 48),
            new_version: Some("1.15.0"),
        }),
        Scenario::BatchRelease => {
            // One release batch: a harmless cart deploy a few minutes before the defective
            // checkout one, a harmless frontend deploy right after it, both before the symptoms.
            let cart_at = at - rng.random_range(120..=180) * NANOS;
            let frontend_at = at + rng.random_range(10..=20) * NANOS;
            out.extend([
                deployment(id(rng), cart_at, Svc::Cart, "1.14.1", (2, 14, 6)),
                deployment(id(rng), at, Svc::Checkout, "1.9.0", (9, 187, 73)),
                deployment(id(rng), frontend_at, Svc::Frontend, "4.13.0", (4, 38, 11)),
            ]);
        }
        Scenario::DbPoolExhaustion | Scenario::NewException | Scenario::DependencyLatency => {}
    }
    out.sort_by_key(|c| c.time_ns);
    out
}

/// A release by the CI bot: `(files, lines added, lines removed)` describe its diff.
fn deployment(
    id: String,
    time_ns: i64,
    svc: Svc,
    version: &'static str,
    (files, added, removed): (u32, u32, u32),
) -> PlannedChange {
    PlannedChange {
        id,
        time_ns,
        kind: ChangeKind::Deployment,
        svc,
        summary: format!("deploy {} v{version}", svc.name()),
        actor: "ci-bot",
        attributes: deployment_attributes(version, files, added, removed),
        new_version: Some(version),
    }
}

fn deployment_attributes(
    version: &str,
    files: u32,
    added: u32,
    removed: u32,
) -> Vec<(&'static str, String)> {
    vec![
        ("version", version.to_string()),
        ("files_changed", files.to_string()),
        ("lines_added", added.to_string()),
        ("lines_removed", removed.to_string()),
    ]
}

/// The project's native JSON change form.
pub(crate) fn to_json(c: &PlannedChange) -> Value {
    let attributes: Map<String, Value> = c
        .attributes
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
        .collect();
    json!({
        "id": c.id,
        "time": rfc3339(c.time_ns),
        "type": c.kind.as_str(),
        "service": c.svc.name(),
        "environment": ENVIRONMENT,
        "summary": c.summary,
        "actor": c.actor,
        "attributes": attributes,
    })
}

pub(crate) fn rfc3339(t_ns: i64) -> String {
    DateTime::from_timestamp(t_ns.div_euclid(NANOS), t_ns.rem_euclid(NANOS) as u32)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Which version each service runs at a given time (deployments switch it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Versions(Vec<(Svc, i64, &'static str)>);

impl Versions {
    pub fn new(changes: &[PlannedChange]) -> Versions {
        Versions(
            changes
                .iter()
                .filter_map(|c| c.new_version.map(|v| (c.svc, c.time_ns, v)))
                .collect(),
        )
    }

    pub fn at(&self, svc: Svc, t_ns: i64) -> &'static str {
        self.0
            .iter()
            .filter(|(s, at, _)| *s == svc && *at <= t_ns)
            .max_by_key(|(_, at, _)| *at)
            .map_or(svc.base_version(), |(_, _, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(
            rfc3339(1_717_408_800 * NANOS + 5_000_000),
            "2024-06-03T10:00:00.005Z"
        );
    }

    #[test]
    fn a_deployment_switches_the_version_from_its_time_on() {
        let c = PlannedChange {
            id: "chg-1".into(),
            time_ns: 100,
            kind: ChangeKind::Deployment,
            svc: Svc::Inventory,
            summary: String::new(),
            actor: "ci-bot",
            attributes: Vec::new(),
            new_version: Some("2.3.1"),
        };
        let v = Versions::new(&[c]);
        assert_eq!(v.at(Svc::Inventory, 99), "2.3.0");
        assert_eq!(v.at(Svc::Inventory, 100), "2.3.1");
        assert_eq!(v.at(Svc::Cart, 100), Svc::Cart.base_version());
    }
}
