//! A circuit breaker over whole reviews: after `failures` failed reviews in a row (timeouts,
//! unreachable or erroring endpoints, unreadable answers) reviews are skipped for `cooldown`,
//! then one is let through; its success closes the breaker, its failure opens it again. An
//! endpoint that is down therefore costs one timeout per cooldown, not one per incident.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial review is running.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// `threshold` 0 never opens.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold,
            cooldown,
        }
    }

    /// Whether a review may run now.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if self.threshold == 0 || failures + 1 < self.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            _ => State::Open {
                until: now + self.cooldown,
            },
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_lets_one_trial_through_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert!(!b.is_open());
        assert!(b.allow(t0));
        b.failure(t0);
        assert!(b.is_open());
        assert!(!b.allow(t0 + Duration::from_secs(59)));
        assert!(b.allow(t0 + Duration::from_secs(60)), "the trial");
        assert!(
            !b.allow(t0 + Duration::from_secs(61)),
            "only one trial at a time"
        );
        b.failure(t0 + Duration::from_secs(61));
        assert!(
            !b.allow(t0 + Duration::from_secs(62)),
            "a failed trial reopens"
        );
        assert!(b.allow(t0 + Duration::from_secs(122)));
        b.success();
        assert!(!b.is_open());
        assert!(b.allow(t0 + Duration::from_secs(123)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(60));
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert!(!b.is_open());
    }
}
