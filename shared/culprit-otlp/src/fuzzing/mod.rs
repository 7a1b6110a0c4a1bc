//! Structured fuzzing of the decoders (feature `fuzzing`; used by this crate's and
//! `culprit-nezha`'s tests and by `scripts/fuzz.sh`).
//!
//! A [`Target`] names a decoder, the valid encodings its inputs are grown from ([`Mutator`]) and a
//! check that runs the decoder on one input and says whether the outcome is acceptable: decoded,
//! or refused with an error that names what was wrong. [`run`] feeds it seeded inputs and records
//! a [`Finding`] for every input that panics, breaks the check, holds more memory than its size
//! allows (a length prefix claiming 4 GiB must not be allocated) or takes longer than its size
//! allows. [`scaling`] checks that decoding time grows no faster than the input.
//!
//! Memory is measured through an [`AllocMeter`] the test binary provides (a counting global
//! allocator: this crate forbids `unsafe`, which a global allocator needs).

mod linear;
mod mutate;
mod rng;

pub use linear::{scaling, Scaling};
pub use mutate::Mutator;
pub use rng::Rng;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Per-thread allocation measurement, provided by the test binary's global allocator.
pub trait AllocMeter: Sync {
    /// Starts a measurement on the calling thread.
    fn start(&self);
    /// Most bytes the calling thread held at once since [`AllocMeter::start`], beyond what it
    /// held then.
    fn peak(&self) -> usize;
}

/// What one decoder run may cost, as a constant plus a share per input byte.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub alloc_slack: usize,
    pub alloc_per_byte: usize,
    pub time_slack: Duration,
    pub time_per_byte: Duration,
}

impl Budget {
    pub fn alloc_limit(&self, len: usize) -> usize {
        self.alloc_slack
            .saturating_add(len.saturating_mul(self.alloc_per_byte))
    }

    pub fn time_limit(&self, len: usize) -> Duration {
        self.time_slack + self.time_per_byte * u32::try_from(len).unwrap_or(u32::MAX)
    }
}

impl Default for Budget {
    /// Generous on purpose (this runs unoptimised too): a decoder that goes quadratic or
    /// allocates what a length prefix claims is off by orders of magnitude, not by a factor.
    fn default() -> Self {
        Budget {
            alloc_slack: 8 << 20,
            alloc_per_byte: 512,
            time_slack: Duration::from_secs(1),
            time_per_byte: Duration::from_micros(20),
        }
    }
}

/// How a decoder treated an input it did not crash on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
}

/// A check: decodes one input; `Err` says which property the outcome broke.
pub type Check<'a> = dyn Fn(&[u8]) -> Result<Verdict, String> + Sync + 'a;

pub struct Target<'a> {
    pub name: &'a str,
    pub mutator: Mutator,
    pub check: &'a Check<'a>,
    pub budget: Budget,
}

/// How many inputs, from which seed, and where to keep the inputs that found something.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    pub iterations: u64,
    pub seed: u64,
    pub meter: Option<&'a dyn AllocMeter>,
}

impl<'a> Config<'a> {
    /// `CULPRIT_FUZZ_ITERS` inputs (else `default_iterations`) from seed `CULPRIT_FUZZ_SEED`
    /// (else a fixed one, so the normal test run is deterministic).
    pub fn from_env(default_iterations: u64, meter: Option<&'a dyn AllocMeter>) -> Config<'a> {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
        Config {
            iterations: var("CULPRIT_FUZZ_ITERS").unwrap_or(default_iterations),
            seed: var("CULPRIT_FUZZ_SEED").unwrap_or(0x00c0_ffee_d00d_f00d),
            meter,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    Panic,
    /// The outcome broke the target's check (e.g. an error that names nothing).
    Violation,
    Memory,
    Time,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub iteration: u64,
    pub kind: FindingKind,
    pub detail: String,
    pub input: Vec<u8>,
}

/// Findings kept with their input; later ones are only counted.
const KEPT_FINDINGS: usize = 20;

#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub seed: u64,
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Every input that found something (panic, broken check, memory or time).
    pub crashes: u64,
    pub findings: Vec<Finding>,
    pub wall: Duration,
    /// Largest peak allocation seen, in bytes per input byte (inputs of 1 KiB and more).
    pub max_alloc_per_byte: f64,
    /// Slowest decode seen, in nanoseconds per input byte (inputs of 1 KiB and more).
    pub max_ns_per_byte: f64,
}

impl Report {
    /// Writes the kept findings' inputs to `CULPRIT_FUZZ_CRASH_DIR` (when set) as
    /// `<target>-<iteration>.bin`, for regression tests.
    pub fn save_findings(&self) -> std::io::Result<Option<PathBuf>> {
        let Some(dir) = std::env::var_os("CULPRIT_FUZZ_CRASH_DIR").map(PathBuf::from) else {
            return Ok(None);
        };
        std::fs::create_dir_all(&dir)?;
        for f in &self.findings {
            let path = dir.join(format!("{}-{}.bin", self.target, f.iteration));
            std::fs::write(path, &f.input)?;
        }
        Ok(Some(dir))
    }

    /// Panics with every kept finding when there is one: the test's failure message.
    pub fn assert_clean(&self) {
        if self.crashes == 0 {
            return;
        }
        let dir = self.save_findings().ok().flatten();
        let mut text = format!("{self}\n");
        for f in &self.findings {
            let shown = &f.input[..f.input.len().min(200)];
            text.push_str(&format!(
                "  #{} {:?}: {}\n    input ({} bytes): {:?}\n",
                f.iteration,
                f.kind,
                f.detail,
                f.input.len(),
                String::from_utf8_lossy(shown)
            ));
        }
        if let Some(dir) = dir {
            text.push_str(&format!("  inputs saved under {}\n", dir.display()));
        }
        panic!("{text}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FUZZ {:<18} inputs {:>9}  crashes {:>3}  wall {:>7.1}s  (accepted {}, rejected {}, \
             peak alloc {:.0} B/B, slowest {:.0} ns/B, seed {:#x})",
            self.target,
            self.inputs,
            self.crashes,
            self.wall.as_secs_f64(),
            self.accepted,
            self.rejected,
            self.max_alloc_per_byte,
            self.max_ns_per_byte,
            self.seed,
        )
    }
}

/// Feeds `config.iterations` inputs to the target and reports what it found.
pub fn run(target: &Target<'_>, config: &Config<'_>) -> Report {
    install_panic_capture();
    let started = Instant::now();
    // Each target draws its own input stream from the common seed.
    let mut rng = Rng::new(config.seed ^ culprit_core::hash::Fnv1a::of(target.name.as_bytes()));
    let mut report = Report {
        target: target.name.to_string(),
        seed: config.seed,
        inputs: 0,
        accepted: 0,
        rejected: 0,
        crashes: 0,
        findings: Vec::new(),
        wall: Duration::ZERO,
        max_alloc_per_byte: 0.0,
        max_ns_per_byte: 0.0,
    };
    // The seeds first, unchanged: a check that rejects valid input is itself broken.
    let seeds = target.mutator.seeds().to_vec();
    let inputs = seeds
        .into_iter()
        .chain(std::iter::repeat_with(|| target.mutator.next(&mut rng)));
    for (iteration, input) in (0..config.iterations).zip(inputs) {
        report.inputs += 1;
        let finding = match measure(target, config, &input) {
            Measured {
                outcome: Err(FindingCause(kind, detail)),
                ..
            } => Some((kind, detail)),
            Measured {
                outcome: Ok(verdict),
                peak,
                elapsed,
            } => {
                match verdict {
                    Verdict::Accepted => report.accepted += 1,
                    Verdict::Rejected => report.rejected += 1,
                }
                if input.len() >= 1024 {
                    let len = input.len() as f64;
                    report.max_alloc_per_byte = report.max_alloc_per_byte.max(peak as f64 / len);
                    report.max_ns_per_byte =
                        report.max_ns_per_byte.max(elapsed.as_nanos() as f64 / len);
                }
                over_budget(target, config, &input, peak, elapsed)
            }
        };
        if let Some((kind, detail)) = finding {
            report.crashes += 1;
            if report.findings.len() < KEPT_FINDINGS {
                report.findings.push(Finding {
                    iteration,
                    kind,
                    detail,
                    input,
                });
            }
        }
    }
    report.wall = started.elapsed();
    report
}

struct FindingCause(FindingKind, String);

struct Measured {
    outcome: Result<Verdict, FindingCause>,
    peak: usize,
    elapsed: Duration,
}

fn measure(target: &Target<'_>, config: &Config<'_>, input: &[u8]) -> Measured {
    if let Some(meter) = config.meter {
        meter.start();
    }
    let started = Instant::now();
    let result = capture_panic(|| (target.check)(input));
    let elapsed = started.elapsed();
    let peak = config.meter.map_or(0, |m| m.peak());
    let outcome = match result {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(violation)) => Err(FindingCause(FindingKind::Violation, violation)),
        Err(panic) => Err(FindingCause(FindingKind::Panic, panic)),
    };
    Measured {
        outcome,
        peak,
        elapsed,
    }
}

/// A memory or time overrun. Time on a shared machine is noisy, so a slow input is measured
/// again and counts only when it is slow twice.
fn over_budget(
    target: &Target<'_>,
    config: &Config<'_>,
    input: &[u8],
    peak: usize,
    elapsed: Duration,
) -> Option<(FindingKind, String)> {
    let budget = &target.budget;
    if config.meter.is_some() && peak > budget.alloc_limit(input.len()) {
        return Some((
            FindingKind::Memory,
            format!(
                "held {peak} bytes at once for a {}-byte input (budget {})",
                input.len(),
                budget.alloc_limit(input.len())
            ),
        ));
    }
    let limit = budget.time_limit(input.len());
    if elapsed > limit {
        let again = measure(target, config, input).elapsed;
        if again > limit {
            return Some((
                FindingKind::Time,
                format!(
                    "took {elapsed:?} and {again:?} for a {}-byte input (budget {limit:?})",
                    input.len()
                ),
            ));
        }
    }
    None
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that keeps the message of a panic on a fuzzing thread (instead of printing a
/// backtrace per input) and leaves other threads' panics to the previous hook.
fn install_panic_capture() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                CAPTURED.with(|c| *c.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into its message.
pub fn capture_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_capture();
    CAPTURING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(false));
    result.map_err(|payload| {
        CAPTURED
            .with(|c| c.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(check: &'a Check<'a>) -> Target<'a> {
        Target {
            name: "toy",
            mutator: Mutator::new(vec![b"[1,2,3]".to_vec()], Vec::new()),
            check,
            budget: Budget::default(),
        }
    }

    #[test]
    fn a_panicking_decoder_is_reported_with_its_input_and_message() {
        let check = |bytes: &[u8]| {
            if bytes.contains(&b'9') {
                panic!("nine is fatal");
            }
            Ok(Verdict::Accepted)
        };
        let report = run(
            &target(&check),
            &Config {
                iterations: 2000,
                seed: 1,
                meter: None,
            },
        );
        assert_eq!(report.inputs, 2000);
        assert!(report.crashes > 0);
        let first = &report.findings[0];
        assert_eq!(first.kind, FindingKind::Panic);
        assert!(first.detail.contains("nine is fatal"), "{}", first.detail);
        assert!(first.input.contains(&b'9'));
        assert!(report.accepted + report.rejected + report.crashes == report.inputs);
    }

    #[test]
    fn a_broken_check_and_a_slow_decoder_are_findings() {
        let check = |bytes: &[u8]| {
            if bytes.len() > 100 {
                Err(format!("{} bytes", bytes.len()))
            } else {
                Ok(Verdict::Rejected)
            }
        };
        let mut t = target(&check);
        let config = Config {
            iterations: 500,
            seed: 2,
            meter: None,
        };
        let report = run(&t, &config);
        assert!(report
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::Violation));
        assert!(report.crashes > 0 && report.rejected > 0);

        let slow = |_: &[u8]| {
            std::thread::sleep(Duration::from_millis(3));
            Ok(Verdict::Accepted)
        };
        t.check = &slow;
        t.budget.time_slack = Duration::from_millis(1);
        t.budget.time_per_byte = Duration::ZERO;
        let report = run(
            &t,
            &Config {
                iterations: 3,
                ..config
            },
        );
        assert_eq!(report.crashes, 3);
        assert_eq!(report.findings[0].kind, FindingKind::Time);
    }

    #[test]
    fn same_seed_same_report() {
        let check = |bytes: &[u8]| {
            Ok(if bytes.first() == Some(&b'[') {
                Verdict::Accepted
            } else {
                Verdict::Rejected
            })
        };
        let config = Config {
            iterations: 300,
            seed: 5,
            meter: None,
        };
        let (a, b) = (run(&target(&check), &config), run(&target(&check), &config));
        assert_eq!((a.accepted, a.rejected), (b.accepted, b.rejected));
    }
}
