//! Decoding time must grow no faster than the input: the same kind of input at growing sizes,
//! compared by time per byte, each size within the budget before the next (bigger) one is tried,
//! so a quadratic decoder fails on a small input instead of exhausting the machine.

use super::{capture_panic, AllocMeter, Budget, Check};
use std::fmt;
use std::time::Duration;

/// Superlinear time shows as time per byte growing at every step of sizes (4x apart): by 4x per
/// step for a quadratic decoder, 2x for n^1.5. A linear decoder's time per byte jumps once, when
/// its working set leaves the caches (up to ~20x on this machine), and stays flat otherwise, so
/// growth is judged by the smallest step.
const MAX_STEP_GROWTH: f64 = 2.0;

/// Decodes per size; the fastest counts, as the least disturbed by other work on the machine.
const REPEATS: usize = 5;

/// Below this the largest decode is too quick for its time per byte to mean anything.
const MEASURABLE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct Scaling {
    pub name: String,
    /// (input bytes, fastest of the repeated decodes, peak bytes held) per size.
    pub points: Vec<(usize, Duration, usize)>,
}

impl Scaling {
    fn ns_per_byte(&(len, elapsed, _): &(usize, Duration, usize)) -> f64 {
        elapsed.as_nanos() as f64 / len.max(1) as f64
    }
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SCALING {:<28}", self.name)?;
        for p in &self.points {
            write!(
                f,
                " {:>5} KiB {:>6.0} ns/B {:>5.0} B/B;",
                p.0 / 1024,
                Scaling::ns_per_byte(p),
                p.2 as f64 / p.0.max(1) as f64
            )?;
        }
        Ok(())
    }
}

/// Decodes `make(size)` for each of `sizes` (ascending, 4x apart) and checks that the decoder
/// neither panics nor breaks its check, stays within `budget` at every size, and that its time
/// per byte does not grow by more than [`MAX_STEP_GROWTH`] at every step.
pub fn scaling(
    name: &str,
    make: &dyn Fn(usize) -> Vec<u8>,
    check: &Check<'_>,
    sizes: &[usize],
    budget: &Budget,
    meter: Option<&dyn AllocMeter>,
) -> Result<Scaling, String> {
    let mut out = Scaling {
        name: name.to_string(),
        points: Vec::new(),
    };
    for &size in sizes {
        let input = make(size);
        let len = input.len();
        let mut fastest = Duration::MAX;
        let mut peak = 0;
        for _ in 0..REPEATS {
            if let Some(m) = meter {
                m.start();
            }
            let started = std::time::Instant::now();
            let result = capture_panic(|| check(&input));
            let elapsed = started.elapsed();
            peak = peak.max(meter.map_or(0, |m| m.peak()));
            match result {
                Err(panic) => return Err(format!("{name}: {len}-byte input panicked: {panic}")),
                Ok(Err(violation)) => return Err(format!("{name}: {len}-byte input: {violation}")),
                Ok(Ok(_)) => {}
            }
            fastest = fastest.min(elapsed);
        }
        if meter.is_some() && peak > budget.alloc_limit(len) {
            return Err(format!(
                "{name}: a {len}-byte input held {peak} bytes at once (budget {})",
                budget.alloc_limit(len)
            ));
        }
        if fastest > budget.time_limit(len) {
            return Err(format!(
                "{name}: a {len}-byte input took {fastest:?} (budget {:?})",
                budget.time_limit(len)
            ));
        }
        out.points.push((len, fastest, peak));
    }
    let steps: Vec<f64> = out
        .points
        .windows(2)
        .map(|w| Scaling::ns_per_byte(&w[1]) / Scaling::ns_per_byte(&w[0]).max(1e-3))
        .collect();
    let smallest_step = steps.iter().copied().fold(f64::INFINITY, f64::min);
    let measurable = out.points.last().is_some_and(|p| p.1 >= MEASURABLE);
    // One step cannot tell a cache step from a trend: judge growth from three sizes on.
    if measurable && steps.len() >= 2 && smallest_step > MAX_STEP_GROWTH {
        return Err(format!(
            "{name}: time per byte grew at least {smallest_step:.1}x at every step ({out})"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Verdict;

    const SIZES: [usize; 3] = [4 << 10, 16 << 10, 64 << 10];

    #[test]
    fn a_linear_decoder_passes_and_a_quadratic_one_fails() {
        let budget = Budget::default();
        let make = |n: usize| vec![b'x'; n];
        let linear = |b: &[u8]| {
            let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
            std::hint::black_box(sum);
            Ok(Verdict::Accepted)
        };
        let ok = scaling("linear", &make, &linear, &SIZES, &budget, None);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(ok.map(|s| s.points.len()).unwrap_or(0), 3);

        let quadratic = |b: &[u8]| {
            // A serial chain over all pairs, so the compiler cannot vectorise it away.
            let mut h = 0u64;
            for (i, x) in b.iter().enumerate() {
                for y in &b[..i] {
                    h = h.wrapping_mul(31).wrapping_add(u64::from(x ^ y));
                }
            }
            std::hint::black_box(h);
            Ok(Verdict::Accepted)
        };
        let err = scaling(
            "quadratic",
            &make,
            &quadratic,
            &[1 << 10, 4 << 10, 16 << 10],
            &budget,
            None,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("grew"), "{err}");
    }

    #[test]
    fn a_panic_at_some_size_is_an_error() {
        let make = |n: usize| vec![0u8; n];
        let check = |b: &[u8]| {
            assert!(b.len() < 10_000, "too big");
            Ok(Verdict::Rejected)
        };
        let err = scaling("p", &make, &check, &SIZES, &Budget::default(), None)
            .err()
            .unwrap_or_default();
        assert!(err.contains("panicked") && err.contains("too big"), "{err}");
    }
}
