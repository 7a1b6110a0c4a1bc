//! The latest alert of each recent incident, for `GET /incidents`.

use culprit_core::{IncidentStatus, RcaAlert, UnixNanos};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Arc<RcaAlert>>,
    /// (started_at, incident_id): iterated backwards for newest first.
    order: BTreeSet<(UnixNanos, String)>,
}

/// Latest revision per incident id, at most `capacity` incidents; the earliest-started go first.
#[derive(Debug)]
pub struct IncidentStore {
    inner: RwLock<Inner>,
    capacity: usize,
}

impl IncidentStore {
    pub fn new(capacity: usize) -> IncidentStore {
        IncidentStore {
            inner: RwLock::default(),
            capacity: capacity.max(1),
        }
    }

    /// Keeps `alert` unless a later revision of its incident is already stored (alerts can be
    /// redelivered out of order). Returns whether it was kept.
    pub fn upsert(&self, alert: RcaAlert) -> bool {
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
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .order
            .iter()
            .rev()
            .filter_map(|(_, id)| inner.by_id.get(id))
            .filter(|a| status.is_none_or(|s| a.status == s))
            .take(limit)
            .cloned()
            .collect()
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
