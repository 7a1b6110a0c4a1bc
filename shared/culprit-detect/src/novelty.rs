//! Things never seen in the baseline (a log template, an error type, a call into an error
//! handler), confirmed only once they recur.
//!
//! A single never-seen error line is common in a healthy system (a rare code path, one bad
//! request); the same new thing several times within a minute is a change in behaviour.

use culprit_core::UnixNanos;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

#[derive(Debug, Clone, Copy)]
struct Sighting {
    /// First sighting of the current counting window.
    first: UnixNanos,
    count: u32,
    /// First sighting ever (kept across counting windows).
    earliest: UnixNanos,
    /// The caller's exposure counter at `first` ([`Novelty::observe_gated`]).
    exposure: u64,
}

/// A sighting that confirmed something as new behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// First sighting of the run of sightings that confirmed it.
    pub first: UnixNanos,
    /// First sighting ever.
    pub earliest: UnixNanos,
}

#[derive(Debug)]
pub struct Novelty<K> {
    known: HashSet<K>,
    pending: HashMap<K, Sighting>,
    min_count: u32,
    window: i64,
}

impl<K: Hash + Eq + Clone> Novelty<K> {
    pub fn new(min_count: u32, window: i64) -> Self {
        Novelty {
            known: HashSet::new(),
            pending: HashMap::new(),
            min_count: min_count.max(1),
            window,
        }
    }

    /// Records `key` as normal.
    pub fn learn(&mut self, key: K) {
        self.pending.remove(&key);
        self.known.insert(key);
    }

    /// Everything learned as normal, for a state snapshot (sightings still counting are not).
    pub fn known_keys(&self) -> Vec<K> {
        self.known.iter().cloned().collect()
    }

    /// Replaces what is known with `keys` (a restored snapshot).
    pub fn set_known(&mut self, keys: impl IntoIterator<Item = K>) {
        self.known = keys.into_iter().collect();
        self.pending.clear();
    }

    pub fn is_known(&self, key: &K) -> bool {
        self.known.contains(key)
    }

    /// Counts one sighting of `key` at `time`. Returns when it was first seen once this sighting
    /// confirms it as new behaviour; from then on it is known.
    pub fn observe(&mut self, key: &K, time: UnixNanos) -> Option<Confirmed> {
        self.observe_gated(key, time, 0, |_, _| true)
    }

    /// [`Novelty::observe`] where `min_count` sightings confirm only when `enough(sightings,
    /// exposure)` agrees too; `exposure` is a counter of the caller's (the lines its service has
    /// written, say), passed to `enough` as its growth since the counting window's first
    /// sighting, so the caller can weigh the sightings against how many chances there were.
    pub fn observe_gated(
        &mut self,
        key: &K,
        time: UnixNanos,
        exposure: u64,
        enough: impl FnOnce(u32, u64) -> bool,
    ) -> Option<Confirmed> {
        if self.known.contains(key) {
            return None;
        }
        let sighting = self.pending.entry(key.clone()).or_insert(Sighting {
            first: time,
            count: 0,
            earliest: time,
            exposure,
        });
        if time - sighting.first > self.window {
            sighting.first = time;
            sighting.count = 0;
            sighting.exposure = exposure;
        }
        sighting.count += 1;
        if sighting.count < self.min_count
            || !enough(sighting.count, exposure.saturating_sub(sighting.exposure))
        {
            return None;
        }
        let confirmed = Confirmed {
            first: sighting.first,
            earliest: sighting.earliest.min(sighting.first),
        };
        self.learn(key.clone());
        Some(confirmed)
    }

    /// Sightings that did not recur within the window by `watermark` become known: rare, not new.
    pub fn expire(&mut self, watermark: UnixNanos) {
        let window = self.window;
        let expired: Vec<K> = self
            .pending
            .iter()
            .filter(|(_, s)| s.first + window < watermark)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.learn(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thing_is_confirmed_on_its_third_sighting_within_the_window() {
        let mut n: Novelty<&str> = Novelty::new(3, 60);
        n.learn("old");
        assert_eq!(n.observe(&"old", 0), None);
        assert_eq!(n.observe(&"new", 10), None);
        assert_eq!(n.observe(&"new", 20), None);
        assert_eq!(
            n.observe(&"new", 30),
            Some(Confirmed {
                first: 10,
                earliest: 10
            })
        );
        assert_eq!(n.observe(&"new", 40), None, "reported once");
        assert!(n.is_known(&"new"));
    }

    #[test]
    fn a_rare_thing_that_does_not_recur_becomes_known() {
        let mut n: Novelty<&str> = Novelty::new(3, 60);
        n.observe(&"rare", 0);
        n.observe(&"rare", 100); // outside the window: counting restarts
        n.expire(200);
        assert!(n.is_known(&"rare"));
        assert_eq!(n.observe(&"rare", 210), None);
    }
}
