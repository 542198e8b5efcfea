//! The store's circuit breaker: after a run of consecutive
//! [`StoreError::Unavailable`] outcomes it fails calls at once for a
//! cool-down instead of letting every caller wait out the driver's
//! server-selection timeout against a dead server.
//!
//! States (the classic three, kept as data rather than an enum so one lock
//! and a few comparisons decide every call):
//!
//! | state | calls | leaves when |
//! | --- | --- | --- |
//! | closed | go through | `threshold` unavailable outcomes in a row: opens |
//! | open | fail at once with `Unavailable` | the cool-down is over: half-open |
//! | half-open | the first call goes through as a probe, the others fail at once | the probe answers (closes) or is unavailable (opens again); a probe that never reports (its future was dropped) is replaced after another cool-down |
//!
//! Any outcome in which the server answered — success, or an error such as
//! a conflict — counts as reachable and closes the breaker. Time is a
//! `tokio::time::Instant`, so tests drive it with a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use orchestrator_core::StoreError;
use tokio::time::Instant;

/// Consecutive unavailable outcomes that open the breaker, and how long it
/// stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Unavailable outcomes in a row that open the breaker (0 disables it).
    pub threshold: u32,
    /// How long an open breaker fails calls before letting a probe through.
    pub cooldown: Duration,
}

impl BreakerConfig {
    /// Opens after `threshold` unavailable outcomes in a row (0: never) and
    /// stays open for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
        }
    }

    /// A breaker that never opens.
    pub fn disabled() -> Self {
        Self::new(0, Duration::ZERO)
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            cooldown: Duration::from_secs(2),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Unavailable outcomes since the last answer.
    failures: u32,
    /// While `Some`, calls before this instant fail at once.
    open_until: Option<Instant>,
    /// How many times the breaker opened (for diagnostics and tests).
    opened: u64,
}

/// Whether a call may go ahead.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go ahead.
    Yes,
    /// Fail at once; the breaker reopens for probes in this long.
    No { retry_in: Duration },
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation is a few plain assignments; a panic cannot leave the
        // state half-updated in a way that matters.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides whether a call starting at `now` goes through. In the
    /// half-open state the admitted call is the probe: the breaker re-arms
    /// its cool-down at once, so concurrent callers keep failing fast until
    /// the probe reports.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let mut s = self.lock();
        match s.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No {
                retry_in: until - now,
            },
            Some(_) => {
                s.open_until = Some(now + self.config.cooldown);
                Admit::Yes
            }
        }
    }

    /// Records the outcome of an admitted call.
    pub(crate) fn record(&self, now: Instant, unavailable: bool) {
        if self.config.threshold == 0 {
            return;
        }
        let mut s = self.lock();
        if !unavailable {
            s.failures = 0;
            s.open_until = None;
            return;
        }
        s.failures = s.failures.saturating_add(1);
        // A failed probe (the breaker was open) reopens at once.
        if s.open_until.is_some() || s.failures >= self.config.threshold {
            if s.open_until.is_none() {
                s.opened += 1;
                tracing::warn!(
                    failures = s.failures,
                    cooldown_ms = self.config.cooldown.as_millis() as u64,
                    "MongoDB unreachable; circuit breaker open, calls fail fast until a probe answers"
                );
            }
            s.open_until = Some(now + self.config.cooldown);
        }
    }

    /// How many times the breaker has opened.
    pub(crate) fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    /// Whether calls are failing fast now.
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.lock().open_until.is_some_and(|u| now < u)
    }

    /// The error of a call refused by an open breaker.
    pub(crate) fn refused(retry_in: Duration, doing: &str) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "MongoDB circuit breaker open after repeated failures; not {doing} (next probe in {} ms)",
                retry_in.as_millis()
            ),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            threshold,
            cooldown: Duration::from_secs(2),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let b = breaker(3);
        let t = Instant::now();
        b.record(t, true);
        b.record(t, true);
        b.record(t, false); // the server answered: the run is broken
        b.record(t, true);
        b.record(t, true);
        assert_eq!(b.admit(t), Admit::Yes);
        assert_eq!(b.times_opened(), 0);
        b.record(t, true);
        assert!(b.is_open(t));
        assert_eq!(b.times_opened(), 1);
        assert_eq!(
            b.admit(t + Duration::from_millis(500)),
            Admit::No {
                retry_in: Duration::from_millis(1500)
            }
        );
    }

    #[test]
    fn half_open_admits_one_probe_and_a_failed_probe_reopens() {
        let b = breaker(1);
        let t = Instant::now();
        b.record(t, true);
        let later = t + Duration::from_secs(2);
        assert_eq!(b.admit(later), Admit::Yes, "the probe");
        assert!(
            matches!(b.admit(later), Admit::No { .. }),
            "others fail fast while the probe runs"
        );
        b.record(later, true);
        assert!(b.is_open(later + Duration::from_secs(1)));
        assert_eq!(
            b.times_opened(),
            1,
            "a failed probe keeps it open, not a new opening"
        );
        let again = later + Duration::from_secs(2);
        assert_eq!(b.admit(again), Admit::Yes);
        b.record(again, false);
        assert!(!b.is_open(again));
        assert_eq!(b.admit(again), Admit::Yes);
        assert_eq!(b.admit(again), Admit::Yes, "closed: everyone goes");
    }

    #[test]
    fn a_lost_probe_is_replaced_after_another_cooldown() {
        let b = breaker(1);
        let t = Instant::now();
        b.record(t, true);
        let probe = t + Duration::from_secs(2);
        assert_eq!(b.admit(probe), Admit::Yes);
        // The probe's future is dropped: it never records.
        assert!(matches!(
            b.admit(probe + Duration::from_secs(1)),
            Admit::No { .. }
        ));
        assert_eq!(b.admit(probe + Duration::from_secs(2)), Admit::Yes);
    }

    #[test]
    fn threshold_zero_disables_it() {
        let b = breaker(0);
        let t = Instant::now();
        for _ in 0..100 {
            b.record(t, true);
        }
        assert_eq!(b.admit(t), Admit::Yes);
    }
}
