//! The latest alert of each recent incident, for `GET /incidents` and the dashboard.

use culprit_core::{IncidentStatus, RcaAlert, Severity, UnixNanos};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Arc<RcaAlert>>,
    /// (started_at, incident_id): iterated backwards for newest first.
    order: BTreeSet<(UnixNanos, String)>,
}

/// Which incidents a listing returns; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    pub environment: Option<String>,
    /// The service is in the incident: affected, ranked or in its graph.
    pub service: Option<String>,
}

impl IncidentFilter {
    pub fn matches(&self, alert: &RcaAlert) -> bool {
        self.status.is_none_or(|s| alert.status == s)
            && self.severity.is_none_or(|s| alert.severity == s)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| alert.environment == *e)
            && self
                .service
                .as_ref()
                .is_none_or(|s| services(alert).any(|x| x == s))
    }
}

/// Every service an incident names.
fn services(alert: &RcaAlert) -> impl Iterator<Item = &String> {
    alert
        .affected_services
        .values()
        .flatten()
        .chain(alert.root_causes.iter().map(|c| &c.service))
        .chain(alert.graph.nodes.iter().map(|n| &n.service))
}

/// Latest revision per incident id, at most `capacity` incidents; the earliest-started go first.
#[derive(Debug)]
pub struct IncidentStore {
    inner: RwLock<Inner>,
    capacity: usize,
    /// Bumped on every kept alert, so live views know to refresh.
    changes: watch::Sender<u64>,
}

impl IncidentStore {
    pub fn new(capacity: usize) -> IncidentStore {
        IncidentStore {
            inner: RwLock::default(),
            capacity: capacity.max(1),
            changes: watch::Sender::new(0),
        }
    }

    /// Keeps `alert` unless a later revision of its incident is already stored (alerts can be
    /// redelivered out of order). Returns whether it was kept.
    pub fn upsert(&self, alert: RcaAlert) -> bool {
        {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = inner.by_id.get(&alert.incident_id) {
                if old.revision > alert.revision {
                    return false;
                }
                let key = (old.started_at, old.incident_id.clone());
                inner.order.remove(&key);
            }
            inner
                .order
                .insert((alert.started_at, alert.incident_id.clone()));
            inner
                .by_id
                .insert(alert.incident_id.clone(), Arc::new(alert));
            while inner.by_id.len() > self.capacity {
                let Some((_, id)) = inner.order.pop_first() else {
                    break;
                };
                inner.by_id.remove(&id);
            }
        }
        self.changes.send_modify(|n| *n += 1);
        true
    }

    pub fn get(&self, incident_id: &str) -> Option<Arc<RcaAlert>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(incident_id)
            .cloned()
    }

    /// Newest first (by start time), optionally only those with `status`.
    pub fn list(&self, status: Option<IncidentStatus>, limit: usize) -> Vec<Arc<RcaAlert>> {
        self.filtered(
            &IncidentFilter {
                status,
                ..IncidentFilter::default()
            },
            limit,
        )
    }

    /// Newest first (by start time), those that match `filter`.
    pub fn filtered(&self, filter: &IncidentFilter, limit: usize) -> Vec<Arc<RcaAlert>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .order
            .iter()
            .rev()
            .filter_map(|(_, id)| inner.by_id.get(id))
            .filter(|a| filter.matches(a))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The environments and services of the stored incidents, each sorted: the choices a
    /// filter offers.
    pub fn facets(&self) -> (Vec<String>, Vec<String>) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut environments = BTreeSet::new();
        let mut all = BTreeSet::new();
        for alert in inner.by_id.values() {
            environments.insert(alert.environment.clone());
            all.extend(services(alert).cloned());
        }
        (
            environments.into_iter().collect(),
            all.into_iter().collect(),
        )
    }

    /// A receiver that sees a new value after every kept alert.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
