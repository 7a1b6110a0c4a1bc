//! What a detector learned, as a value a restart can continue from.
//!
//! A detector's state is what it learned from the stream: baselines, mined log templates, the
//! things it has seen (operations, error types, dependencies), and the joint detectors' usual
//! shares. It is not the configuration (a restart takes the new one) and not the open windows
//! (their events are re-read or lost with the offsets, see `culprit-kafka`'s snapshot module).
//!
//! Each detector saves its part under a stable name, wrapped with its own format version
//! ([`versioned`]), so a detector whose format changed refuses only its part ([`unversioned`])
//! and learns afresh while the others are restored. Maps whose keys are tuples are written as
//! lists of pairs ([`pairs`]), since JSON object keys are strings.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use serde_json::value::RawValue;

/// One detector's saved state, held as its JSON text rather than a value tree: a snapshot of a
/// few MB on disk then costs about as much in memory while it is taken and written.
pub type SavedState = Box<RawValue>;

/// Every detector's part of a snapshot, by [`crate::Detector::state_name`].
pub type DetectorStates = BTreeMap<String, SavedState>;

/// Why a detector refused its part of a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("saved in format version {found}, this build reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("unreadable: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("this detector keeps no state")]
    Unsupported,
}

/// What [`crate::Detectors::restore_state`] did, per detector name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RestoreReport {
    pub restored: Vec<String>,
    /// Parts a detector refused, with the reason; those detectors learn afresh.
    pub refused: Vec<(String, String)>,
    /// Detectors the snapshot had nothing for (added since); they learn afresh.
    pub missing: Vec<String>,
    /// Parts no detector took (a detector removed or switched off since).
    pub unknown: Vec<String>,
}

/// What [`crate::Detectors::adopt`] did, per detector name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AdoptReport {
    /// Baselines the service has now in the detectors that adopted.
    pub baselines: usize,
    pub adopted: Vec<String>,
    /// Parts a detector refused, with the reason; those detectors were left as they were.
    pub refused: Vec<(String, String)>,
    /// Detectors the learned states had no part for (the k-NN ones, which a re-learn does not
    /// train); they keep what they had.
    pub kept: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    version: u32,
    state: T,
}

/// `state` with its format `version`, as [`crate::Detector::save_state`] returns it.
pub fn versioned<T: Serialize>(version: u32, state: &T) -> Option<SavedState> {
    match serde_json::value::to_raw_value(&Versioned { version, state }) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("a detector state could not be saved: {e}");
            None
        }
    }
}

/// The state in `saved` when it has format `version`.
pub fn unversioned<T: DeserializeOwned>(saved: &RawValue, version: u32) -> Result<T, StateError> {
    #[derive(Deserialize)]
    struct Header {
        version: u32,
    }
    let found = serde_json::from_str::<Header>(saved.get())?.version;
    if found != version {
        return Err(StateError::Version {
            found,
            expected: version,
        });
    }
    Ok(serde_json::from_str::<Versioned<T>>(saved.get())?.state)
}

/// Serde helper for `HashMap`s with keys JSON cannot take (tuples): a list of pairs.
pub(crate) mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;
    use std::hash::Hash;

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        map: &HashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_in_another_format_version_is_refused_with_both_versions_named() {
        let saved = versioned(1, &vec![1u32, 2]).unwrap();
        let err = unversioned::<Vec<u32>>(&saved, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "saved in format version 1, this build reads version 2"
        );
        assert_eq!(unversioned::<Vec<u32>>(&saved, 1).unwrap(), vec![1, 2]);
        let nonsense = RawValue::from_string(r#"{"nonsense": true}"#.to_string()).unwrap();
        assert!(matches!(
            unversioned::<Vec<u32>>(&nonsense, 1),
            Err(StateError::Malformed(_))
        ));
    }
}
