use crate::StoreError;
use culprit_core::{SourceKind, UnixNanos};
use std::fmt;

/// Stable id of a stored point, derived from the identity of the event it embeds, so a
/// redelivered event overwrites its own point instead of adding a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointId(pub u64);

impl PointId {
    /// Hashes the identity fields of an event (service, trace/span id, template id, ...) and its
    /// time into an id.
    ///
    /// The hash is FNV-1a 64 with a SplitMix64 finaliser, fixed forever: ids live in store files
    /// and remote collections, so the same identity must map to the same id in every run and
    /// every build. Each part is length-prefixed so `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn from_identity(parts: &[&str], time: UnixNanos) -> PointId {
        let mut h = culprit_core::hash::Fnv1a::new();
        h.write(&(parts.len() as u64).to_le_bytes());
        for part in parts {
            h.write(&(part.len() as u64).to_le_bytes());
            h.write(part.as_bytes());
        }
        h.write(&time.to_le_bytes());
        PointId(splitmix64(h.value()))
    }
}

impl PointId {
    /// The id of the reference copy of this point: a detector admits an event to its reference
    /// sample as a separate point, so writing the event's own point again (a redelivery, a
    /// replay after a restart) never takes a point out of the reference.
    pub fn reference_copy(self) -> PointId {
        PointId::from_identity(&["reference", &self.to_string()], 0)
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<u64> for PointId {
    fn from(v: u64) -> PointId {
        PointId(v)
    }
}

/// FNV's low bits mix poorly; this spreads every input bit over the whole word.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One event embedding and the tags it is filtered by.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: PointId,
    /// Exactly as many finite components as the store's dimension ([`crate::DIM`] for event
    /// embeddings), not all zero. Stores keep it normalised to unit length.
    pub vector: Vec<f32>,
    pub source: SourceKind,
    pub service: String,
    pub environment: String,
    /// Event time.
    pub timestamp: UnixNanos,
    /// Anomaly score in [0, 1].
    pub score: f32,
    /// True when the point may serve as a "normal neighbour" for scoring other points.
    pub normal: bool,
}

/// A point as it is written: the event's embedding and whether it belongs to the reference
/// sample, the capped set of normal points a k-NN detector scores other events against.
#[derive(Debug, Clone, PartialEq)]
pub struct PointEntry {
    pub point: Point,
    pub reference: bool,
}

impl PointEntry {
    /// An event's point, not part of any reference sample.
    pub fn event(point: Point) -> PointEntry {
        PointEntry {
            point,
            reference: false,
        }
    }

    /// A point of the reference sample.
    pub fn reference(point: Point) -> PointEntry {
        PointEntry {
            point,
            reference: true,
        }
    }
}

/// Hour of the week of an event time, UTC, Monday 00:00 as 0 (0..168): the bucket
/// [`Filter::hour_of_week`] selects. Derived from the timestamp, so every point has one.
pub fn hour_of_week(time: UnixNanos) -> u8 {
    let hours = time.div_euclid(3600 * culprit_core::NANOS_PER_SEC);
    // 1970-01-01 was a Thursday: shift so that Monday starts the week.
    (hours + 3 * 24).rem_euclid(168) as u8
}

/// Which points a query or count considers. The default matches every point.
///
/// The time range is half-open: `time_from <= timestamp < time_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub source: Option<SourceKind>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub time_from: Option<UnixNanos>,
    pub time_to: Option<UnixNanos>,
    pub normal_only: bool,
    /// `Some(true)`: reference points only; `Some(false)`: every other point; `None`: both.
    pub reference: Option<bool>,
    /// Only points whose [`hour_of_week`] is this.
    pub hour_of_week: Option<u8>,
}

impl Filter {
    /// Matches every point.
    pub fn all() -> Filter {
        Filter::default()
    }

    pub fn source(mut self, source: SourceKind) -> Filter {
        self.source = Some(source);
        self
    }

    pub fn service(mut self, service: impl Into<String>) -> Filter {
        self.service = Some(service.into());
        self
    }

    pub fn environment(mut self, environment: impl Into<String>) -> Filter {
        self.environment = Some(environment.into());
        self
    }

    /// Keeps points with `from <= timestamp < to`.
    pub fn time_range(mut self, from: UnixNanos, to: UnixNanos) -> Filter {
        self.time_from = Some(from);
        self.time_to = Some(to);
        self
    }

    pub fn normal_only(mut self) -> Filter {
        self.normal_only = true;
        self
    }

    /// Keeps reference points only (a detector's capped sample, not every stored event).
    pub fn reference_only(mut self) -> Filter {
        self.reference = Some(true);
        self
    }

    /// Keeps points whose event time falls in this [`hour_of_week`].
    pub fn hour_of_week(mut self, hour: u8) -> Filter {
        self.hour_of_week = Some(hour);
        self
    }

    /// Whether a written entry passes the filter.
    pub fn matches_entry(&self, entry: &PointEntry) -> bool {
        let p = &entry.point;
        self.matches(
            p.source,
            &p.service,
            &p.environment,
            p.timestamp,
            p.normal,
            entry.reference,
        )
    }

    /// Whether a point with these tags passes the filter.
    pub fn matches(
        &self,
        source: SourceKind,
        service: &str,
        environment: &str,
        timestamp: UnixNanos,
        normal: bool,
        reference: bool,
    ) -> bool {
        self.source.is_none_or(|s| s == source)
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.environment.as_deref().is_none_or(|e| e == environment)
            && self.time_from.is_none_or(|t| timestamp >= t)
            && self.time_to.is_none_or(|t| timestamp < t)
            && (!self.normal_only || normal)
            && self.reference.is_none_or(|r| r == reference)
            && self
                .hour_of_week
                .is_none_or(|h| h == hour_of_week(timestamp))
    }
}

/// One k-NN answer, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: PointId,
    /// Cosine distance, `1 - cosine similarity`, in [0, 2].
    pub distance: f32,
    pub service: String,
    pub timestamp: UnixNanos,
}

/// Checks a point's vector (`dimension` components) and score and scales the vector to unit
/// length in place.
pub fn validate_point(point: &mut Point, dimension: usize) -> Result<(), StoreError> {
    let id = point.id;
    normalise(&mut point.vector, dimension).map_err(|e| match e {
        VectorFault::Length(len) => StoreError::WrongDimension {
            id,
            len,
            expected: dimension,
        },
        VectorFault::NonFinite(index) => StoreError::NonFinite { id, index },
        VectorFault::ZeroNorm => StoreError::ZeroNorm { id },
    })?;
    // Written as a negated range test so NaN fails too.
    if !(0.0..=1.0).contains(&point.score) {
        return Err(StoreError::InvalidScore {
            id,
            score: point.score,
        });
    }
    Ok(())
}

/// Checks a query vector of `dimension` components and returns it at unit length.
pub fn normalised_query(query: &[f32], dimension: usize) -> Result<Vec<f32>, StoreError> {
    let mut v = query.to_vec();
    normalise(&mut v, dimension).map_err(|e| {
        StoreError::InvalidQuery(match e {
            VectorFault::Length(len) => format!("has {len} dimensions, expected {dimension}"),
            VectorFault::NonFinite(i) => format!("component {i} is not finite"),
            VectorFault::ZeroNorm => "has zero norm, so its cosine distance is undefined".into(),
        })
    })?;
    Ok(v)
}

enum VectorFault {
    Length(usize),
    NonFinite(usize),
    ZeroNorm,
}

fn normalise(v: &mut [f32], dimension: usize) -> Result<(), VectorFault> {
    if v.len() != dimension {
        return Err(VectorFault::Length(v.len()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(VectorFault::NonFinite(i));
    }
    // Sum in f64: squares of large finite f32 components would overflow f32.
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(VectorFault::ZeroNorm);
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

/// Dot product of two vectors of the same length, written as eight independent lanes so the
/// compiler vectorises it without `unsafe` intrinsics.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail = a.len() - a.len() % 8;
    let rest: f32 = a[tail..].iter().zip(&b[tail..]).map(|(x, y)| x * y).sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DIM;

    #[test]
    fn identity_hash_is_stable_across_runs() {
        // Pinned value: changing the hash would orphan every stored point.
        let id = PointId::from_identity(&["checkout", "span", "abc"], 1_700_000_000_000_000_000);
        assert_eq!(
            id,
            PointId::from_identity(&["checkout", "span", "abc"], 1_700_000_000_000_000_000)
        );
        assert_eq!(id.0, PINNED);
    }

    // Computed independently (Python reimplementation of FNV-1a + SplitMix64).
    const PINNED: u64 = 16_312_947_869_820_540_415;

    #[test]
    fn identity_hash_separates_part_boundaries_and_times() {
        let a = PointId::from_identity(&["ab", "c"], 1);
        let b = PointId::from_identity(&["a", "bc"], 1);
        let c = PointId::from_identity(&["ab", "c"], 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn validation_names_the_point_and_the_fault() {
        let mut p = Point {
            id: PointId(42),
            vector: vec![1.0; 3],
            source: SourceKind::Logs,
            service: "s".into(),
            environment: "e".into(),
            timestamp: 0,
            score: 0.5,
            normal: true,
        };
        let err = validate_point(&mut p, DIM).unwrap_err().to_string();
        assert!(
            err.contains(&PointId(42).to_string()) && err.contains("3 dimensions"),
            "{err}"
        );

        p.vector = vec![0.0; DIM];
        assert!(matches!(
            validate_point(&mut p, DIM),
            Err(StoreError::ZeroNorm { .. })
        ));

        p.vector = vec![1.0; DIM];
        p.vector[7] = f32::NAN;
        assert!(matches!(
            validate_point(&mut p, DIM),
            Err(StoreError::NonFinite { index: 7, .. })
        ));

        p.vector = vec![1.0; DIM];
        p.score = f32::NAN;
        assert!(matches!(
            validate_point(&mut p, DIM),
            Err(StoreError::InvalidScore { .. })
        ));
    }

    #[test]
    fn validation_normalises_to_unit_length() {
        let mut p = Point {
            id: PointId(1),
            vector: vec![3.0; DIM],
            source: SourceKind::Logs,
            service: "s".into(),
            environment: "e".into(),
            timestamp: 0,
            score: 1.0,
            normal: false,
        };
        validate_point(&mut p, DIM).unwrap();
        let n: f32 = p.vector.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }

    #[test]
    fn dot_matches_naive_sum() {
        // 131: whole lanes and a tail.
        for len in [DIM, 131] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.1).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.01).collect();
            let naive: f32 = a.iter().zip(b.iter()).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-2, "{len}");
        }
    }
}
