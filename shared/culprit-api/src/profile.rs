//! An incident's evidence profile: a fixed-length vector of what its anomalies say, per service
//! and source, used to find past incidents that looked the same.
//!
//! Built from fixed features, not a model or the LLM, so it is the same in every process and
//! version: for each ranked candidate, its evidence per source (`service/source`), each of its
//! anomalies' signal families (`service/family`, and the service-free `family` so that the same
//! kind of failure on another service still counts a little), and the candidate itself weighted
//! by its own evidence. Features are hashed into [`DIMENSIONS`] signed buckets (the hashing trick)
//! and the vector is normalised, so the cosine of two profiles is their dot product.

use culprit_core::hash::Fnv1a;
use culprit_core::RcaAlert;
use serde::{Deserialize, Serialize};

/// Buckets of the hashed features: enough that the few dozen features of an incident rarely
/// collide, small enough to store with every feedback record.
pub const DIMENSIONS: usize = 128;

/// How much a signal family counts without its service, against the same family on the same
/// service: a hint of the same kind of failure, not the same failure.
const FAMILY_ALONE: f32 = 0.3;

/// A unit vector of [`DIMENSIONS`] values (all zeros for an incident without evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentProfile(Vec<f32>);

impl IncidentProfile {
    /// The profile of an alert's candidates and their evidence.
    pub fn of(alert: &RcaAlert) -> IncidentProfile {
        let mut v = vec![0f32; DIMENSIONS];
        for c in &alert.root_causes {
            add(&mut v, &["service", &c.service], c.evidence_score as f32);
            for (source, strength) in &c.evidence_by_source {
                add(
                    &mut v,
                    &["source", &c.service, source.as_str()],
                    *strength as f32,
                );
            }
            for a in &c.evidence {
                let family = a.signal.family().name();
                add(&mut v, &["signal", &a.service, family], a.score as f32);
                add(&mut v, &["family", family], a.score as f32 * FAMILY_ALONE);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        IncidentProfile(v)
    }

    /// The vector's components.
    pub fn values(&self) -> &[f32] {
        &self.0
    }

    /// Cosine similarity in [-1, 1]; 0 against an empty profile or one of another length (a
    /// record written by a version with other dimensions).
    pub fn cosine(&self, other: &IncidentProfile) -> f64 {
        if self.0.len() != other.0.len() {
            return 0.0;
        }
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    }
}

/// Adds `weight` to the signed bucket of the feature named by `parts`.
fn add(v: &mut [f32], parts: &[&str], weight: f32) {
    if !weight.is_finite() || weight <= 0.0 {
        return;
    }
    let mut h = Fnv1a::new();
    for p in parts {
        h.write_field(p.as_bytes());
    }
    // FNV-1a's low bits mix poorly: fold the high half in before taking bucket and sign.
    let x = h.value() ^ (h.value() >> 29);
    let bucket = (x % DIMENSIONS as u64) as usize;
    let sign = if (x >> 40) & 1 == 1 { -1.0 } else { 1.0 };
    v[bucket] += sign * weight;
}
