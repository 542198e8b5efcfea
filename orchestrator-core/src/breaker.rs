//! Circuit breakers: stop sending work to a dependency that keeps failing.
//!
//! A node names the dependency it needs (`dependency: device-farm`, default:
//! its `type`). When a breaker is configured for that dependency, the
//! executor consults it before dispatching the node:
//!
//! - **closed** — calls go through; their outcomes fill a sliding window
//!   (the last `calls` outcomes, or those of the last `duration`). Once the
//!   window holds at least `min_calls` outcomes and the share of failures
//!   reaches `failure_rate`, the breaker **opens**.
//! - **open** — nothing is dispatched for `open_for`. Nodes that need the
//!   dependency *wait*, ready: they are not failed and spend no attempt.
//! - **half-open** — after `open_for`, up to `half_open_calls` trial calls
//!   go through. If all succeed the breaker **closes** (with an empty
//!   window); the first failed trial **opens** it again for `open_for`.
//!
//! The knobs are resilience4j's (failure-rate threshold, count- or
//! time-based sliding window, minimum number of calls, wait duration in
//! open state, permitted calls in half-open state); Polly's advanced
//! breaker has the same shape.
//!
//! Which outcomes count: a success counts as a success; a failure counts as
//! a failure if its class is in `count` (default: transient, timeout,
//! infrastructure — a failing assertion says nothing about the device farm)
//! and is ignored otherwise, like a cancelled attempt. An ignored trial
//! frees its trial slot.
//!
//! [`Breaker`] is a pure state machine: it never reads a clock, every method
//! takes `now`, and each method returns the [`Transition`] it made, if any,
//! so the executor can journal it. Results of calls admitted in an earlier
//! state (a call started while closed that ends after the breaker opened)
//! are ignored: they describe the dependency as it was.
//!
//! ```
//! use orchestrator_core::breaker::{Admission, Breaker, BreakerSpec, BreakerState, Outcome};
//! use orchestrator_core::Timestamp;
//!
//! let spec: BreakerSpec = serde_json::from_str(r#"{
//!     "failure_rate": 0.5, "window": {"kind": "count", "calls": 4},
//!     "min_calls": 2, "open_for": "10s", "half_open_calls": 1
//! }"#)?;
//! let mut b = Breaker::new(spec.config()?);
//! let t = Timestamp(0);
//! for _ in 0..2 {
//!     assert_eq!(b.try_acquire(t).0, Admission::Allowed);
//!     b.on_result(t, Outcome::Failure, false);
//! }
//! assert_eq!(b.state(), BreakerState::Open);
//! assert!(matches!(b.try_acquire(Timestamp(9_999)).0, Admission::Rejected { .. }));
//! let (admission, transition) = b.try_acquire(Timestamp(10_000));
//! assert_eq!(admission, Admission::Trial);
//! assert_eq!(transition.unwrap().to, BreakerState::HalfOpen);
//! b.on_result(Timestamp(10_100), Outcome::Success, true);
//! assert_eq!(b.state(), BreakerState::Closed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::failure::FailureClass;
use crate::time::Timestamp;
use crate::validate::{Problem, ProblemCode, ValidationErrors};

/// Largest count-based window.
pub const MAX_WINDOW_CALLS: u32 = 10_000;
/// Longest time-based window and open duration (one day).
pub const MAX_BREAKER_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls wait.
    Open,
    /// A few trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sliding window over which the failure rate is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The last `calls` outcomes.
    Count {
        /// How many outcomes.
        calls: u32,
    },
    /// The outcomes of the last `duration`.
    Time {
        /// How far back.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        duration: HumanDuration,
    },
}

fn default_count() -> Vec<FailureClass> {
    vec![
        FailureClass::Transient,
        FailureClass::Timeout,
        FailureClass::Infrastructure,
    ]
}

/// A breaker's settings as written in a spec or the executor's
/// configuration. Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSpec {
    /// Opens when the share of failures in the window reaches this (0 < r ≤ 1; 0.5).
    pub failure_rate: f64,
    /// The sliding window (the last 20 calls).
    pub window: Window,
    /// No decision before the window holds this many outcomes (10).
    pub min_calls: u32,
    /// How long the breaker stays open before trials (30 s).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub open_for: HumanDuration,
    /// Trial calls in half-open state; all must succeed to close (1).
    pub half_open_calls: u32,
    /// Failure classes that count as failures (transient, timeout, infrastructure).
    pub count: Vec<FailureClass>,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window: Window::Count { calls: 20 },
            min_calls: 10,
            open_for: HumanDuration::from_secs(30),
            half_open_calls: 1,
            count: default_count(),
        }
    }
}

impl BreakerSpec {
    /// Appends every problem to `out`, with paths under `path`.
    pub fn check(&self, path: &str, out: &mut Vec<Problem>) {
        let mut bad = |field: &str, message: String| {
            out.push(Problem::new(
                format!("{path}/{field}"),
                ProblemCode::InvalidBreaker,
                message,
            ));
        };
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            bad(
                "failure_rate",
                format!("failure_rate must be in (0, 1], got {}", self.failure_rate),
            );
        }
        match self.window {
            Window::Count { calls } if calls == 0 || calls > MAX_WINDOW_CALLS => bad(
                "window/calls",
                format!("a count window holds 1 to {MAX_WINDOW_CALLS} calls"),
            ),
            Window::Time { duration }
                if duration.get().is_zero() || duration.get() > MAX_BREAKER_DURATION =>
            {
                bad(
                    "window/duration",
                    "a time window lasts more than 0 and at most 24h".into(),
                );
            }
            _ => {}
        }
        if self.min_calls == 0 || self.min_calls > MAX_WINDOW_CALLS {
            bad("min_calls", format!("min_calls is 1 to {MAX_WINDOW_CALLS}"));
        } else if let Window::Count { calls } = self.window {
            if self.min_calls > calls {
                bad(
                    "min_calls",
                    format!(
                        "min_calls ({}) exceeds the window's {calls} calls: the breaker could never open",
                        self.min_calls
                    ),
                );
            }
        }
        if self.open_for.get().is_zero() || self.open_for.get() > MAX_BREAKER_DURATION {
            bad("open_for", "open_for is more than 0 and at most 24h".into());
        }
        if self.half_open_calls == 0 || self.half_open_calls > 1000 {
            bad("half_open_calls", "half_open_calls is 1 to 1000".into());
        }
        if self.count.is_empty() {
            bad(
                "count",
                "count needs at least one failure class, or the breaker never opens".into(),
            );
        }
        if let Some(i) = self
            .count
            .iter()
            .position(|&c| c == FailureClass::Cancelled)
        {
            bad(
                &format!("count/{i}"),
                "cancelled attempts say nothing about a dependency".into(),
            );
        }
    }

    /// Validates and converts into a [`BreakerConfig`].
    pub fn config(&self) -> Result<BreakerConfig, ValidationErrors> {
        let mut out = Vec::new();
        self.check("", &mut out);
        if !out.is_empty() {
            return Err(ValidationErrors(out));
        }
        Ok(BreakerConfig { spec: self.clone() })
    }
}

/// A validated [`BreakerSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    spec: BreakerSpec,
}

impl BreakerConfig {
    /// The settings.
    pub fn spec(&self) -> &BreakerSpec {
        &self.spec
    }

    fn open_ms(&self) -> u64 {
        u64::try_from(self.spec.open_for.get().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What [`Breaker::try_acquire`] decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead as a trial; report the outcome with `trial: true`.
    Trial,
    /// Wait. `until` is when the breaker turns half-open, if it is open
    /// (`None` while half-open with every trial slot taken).
    Rejected {
        /// When trials start.
        until: Option<Timestamp>,
    },
}

/// A call's outcome as the breaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that counts.
    Failure,
    /// Neither (a class not in `count`, a cancellation).
    Ignored,
}

/// One state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// When.
    pub at: Timestamp,
    /// Failures in the window when it opened from closed (else 0).
    pub failures: u32,
    /// Calls in the window when it opened from closed (else 0).
    pub calls: u32,
}

/// A circuit breaker: a pure, clock-injected state machine. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// (time, failed) of counted outcomes, oldest first.
    window: VecDeque<(Timestamp, bool)>,
    failures: u32,
    opened_at: Timestamp,
    trials_admitted: u32,
    trial_successes: u32,
    transitions: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            window: VecDeque::new(),
            failures: 0,
            opened_at: Timestamp(0),
            trials_admitted: 0,
            trial_successes: 0,
            transitions: 0,
        }
    }

    /// The current state (as of the last call; an open breaker whose time
    /// is up turns half-open on the next [`poll`](Self::poll) or
    /// [`try_acquire`](Self::try_acquire)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Outcomes in the window and how many of them failed.
    pub fn window(&self, now: Timestamp) -> (u32, u32) {
        let calls = self
            .window
            .iter()
            .filter(|(at, _)| self.in_window(*at, now))
            .count() as u32;
        let failures = self
            .window
            .iter()
            .filter(|(at, failed)| *failed && self.in_window(*at, now))
            .count() as u32;
        (calls, failures)
    }

    /// How many transitions this breaker made.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// When an open breaker turns half-open.
    pub fn open_until(&self) -> Option<Timestamp> {
        (self.state == BreakerState::Open)
            .then(|| Timestamp(self.opened_at.0.saturating_add(self.config.open_ms())))
    }

    /// Trial calls admitted and not yet reported (half-open only).
    pub fn trials_in_flight(&self) -> u32 {
        self.trials_admitted - self.trial_successes
    }

    fn in_window(&self, at: Timestamp, now: Timestamp) -> bool {
        match self.config.spec.window {
            Window::Count { .. } => true,
            Window::Time { duration } => {
                now.saturating_since(at)
                    < u64::try_from(duration.get().as_millis()).unwrap_or(u64::MAX)
            }
        }
    }

    fn move_to(&mut self, to: BreakerState, now: Timestamp) -> Transition {
        let (calls, failures) = if to == BreakerState::Open && self.state == BreakerState::Closed {
            (self.window.len() as u32, self.failures)
        } else {
            (0, 0)
        };
        let t = Transition {
            from: self.state,
            to,
            at: now,
            failures,
            calls,
        };
        self.state = to;
        self.transitions += 1;
        self.trials_admitted = 0;
        self.trial_successes = 0;
        if to != BreakerState::HalfOpen {
            self.window.clear();
            self.failures = 0;
        }
        if to == BreakerState::Open {
            self.opened_at = now;
        }
        t
    }

    /// Turns an open breaker half-open once its time is up.
    pub fn poll(&mut self, now: Timestamp) -> Option<Transition> {
        match self.open_until() {
            Some(until) if now >= until => Some(self.move_to(BreakerState::HalfOpen, now)),
            _ => None,
        }
    }

    /// Asks to make one call now.
    pub fn try_acquire(&mut self, now: Timestamp) -> (Admission, Option<Transition>) {
        let transition = self.poll(now);
        let admission = match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Rejected {
                until: self.open_until(),
            },
            BreakerState::HalfOpen => {
                if self.trials_admitted < self.config.spec.half_open_calls {
                    self.trials_admitted += 1;
                    Admission::Trial
                } else {
                    Admission::Rejected { until: None }
                }
            }
        };
        (admission, transition)
    }

    /// Gives back a trial slot whose call never ran.
    pub fn release(&mut self, trial: bool) {
        if trial && self.state == BreakerState::HalfOpen && self.trials_in_flight() > 0 {
            self.trials_admitted -= 1;
        }
    }

    /// Reports a call's outcome. `trial` is whether the call was admitted
    /// as [`Admission::Trial`].
    pub fn on_result(
        &mut self,
        now: Timestamp,
        outcome: Outcome,
        trial: bool,
    ) -> Option<Transition> {
        match (self.state, trial) {
            (BreakerState::Closed, false) => {
                if outcome == Outcome::Ignored {
                    return None;
                }
                let failed = outcome == Outcome::Failure;
                self.window.push_back((now, failed));
                self.failures += u32::from(failed);
                self.evict(now);
                let calls = self.window.len() as u32;
                if calls >= self.config.spec.min_calls
                    && f64::from(self.failures) >= self.config.spec.failure_rate * f64::from(calls)
                {
                    return Some(self.move_to(BreakerState::Open, now));
                }
                None
            }
            (BreakerState::HalfOpen, true) if self.trials_in_flight() > 0 => match outcome {
                Outcome::Failure => Some(self.move_to(BreakerState::Open, now)),
                Outcome::Ignored => {
                    self.trials_admitted -= 1;
                    None
                }
                Outcome::Success => {
                    self.trial_successes += 1;
                    (self.trial_successes >= self.config.spec.half_open_calls)
                        .then(|| self.move_to(BreakerState::Closed, now))
                }
            },
            // A call admitted in another state: it describes the dependency
            // as it was, so it does not count.
            _ => None,
        }
    }

    fn evict(&mut self, now: Timestamp) {
        match self.config.spec.window {
            Window::Count { calls } => {
                while self.window.len() > calls as usize {
                    if let Some((_, failed)) = self.window.pop_front() {
                        self.failures -= u32::from(failed);
                    }
                }
            }
            Window::Time { .. } => {
                while let Some(&(at, failed)) = self.window.front() {
                    if self.in_window(at, now) {
                        break;
                    }
                    self.window.pop_front();
                    self.failures -= u32::from(failed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::*;

    fn breaker(calls: u32, min: u32, rate: f64, half: u32) -> Breaker {
        let spec = BreakerSpec {
            failure_rate: rate,
            window: Window::Count { calls },
            min_calls: min,
            open_for: HumanDuration::from_secs(10),
            half_open_calls: half,
            count: default_count(),
        };
        Breaker::new(spec.config().unwrap())
    }

    fn call(b: &mut Breaker, at: u64, outcome: Outcome) -> Option<Transition> {
        let (admission, t) = b.try_acquire(Timestamp(at));
        assert!(t.is_none());
        assert_ne!(admission, Admission::Rejected { until: None });
        b.on_result(Timestamp(at), outcome, admission == Admission::Trial)
    }

    #[test]
    fn closed_stays_closed_below_min_calls_and_threshold() {
        let mut b = breaker(10, 4, 0.5, 1);
        for _ in 0..3 {
            assert!(call(&mut b, 0, Outcome::Failure).is_none());
        }
        // Fourth call: 3 failures of 4 ≥ 50%.
        let t = call(&mut b, 0, Outcome::Failure).unwrap();
        assert_eq!((t.from, t.to, t.failures, t.calls), (Closed, Open, 4, 4));

        let mut b = breaker(10, 4, 0.5, 1);
        for o in [
            Outcome::Failure,
            Outcome::Success,
            Outcome::Success,
            Outcome::Success,
        ] {
            assert!(call(&mut b, 0, o).is_none());
        }
        assert_eq!(b.state(), Closed);
        // Ignored outcomes do not count at all.
        for _ in 0..20 {
            assert!(call(&mut b, 0, Outcome::Ignored).is_none());
        }
        assert_eq!(b.window(Timestamp(0)), (4, 1));
    }

    #[test]
    fn count_window_forgets_old_outcomes() {
        let mut b = breaker(4, 4, 0.75, 1);
        for o in [
            Outcome::Failure,
            Outcome::Failure,
            Outcome::Success,
            Outcome::Success,
        ] {
            call(&mut b, 0, o);
        }
        // Window [S, S, F, F] then [S, F, F, F]: 3 of 4.
        assert!(call(&mut b, 0, Outcome::Failure).is_none());
        assert_eq!(b.window(Timestamp(0)), (4, 2));
        let t = call(&mut b, 0, Outcome::Failure);
        assert!(t.is_none(), "window is [S, S, F, F]... 2 of 4");
        assert_eq!(call(&mut b, 0, Outcome::Failure).unwrap().to, Open);
    }

    #[test]
    fn time_window_forgets_old_outcomes() {
        let spec = BreakerSpec {
            window: Window::Time {
                duration: HumanDuration::from_secs(60),
            },
            min_calls: 3,
            ..BreakerSpec::default()
        };
        let mut b = Breaker::new(spec.config().unwrap());
        call(&mut b, 0, Outcome::Failure);
        call(&mut b, 1_000, Outcome::Failure);
        // The first two are out of the window by now.
        assert!(call(&mut b, 70_000, Outcome::Failure).is_none());
        assert_eq!(b.window(Timestamp(70_000)), (1, 1));
        call(&mut b, 71_000, Outcome::Success);
        assert_eq!(call(&mut b, 72_000, Outcome::Failure).unwrap().to, Open);
    }

    #[test]
    fn open_rejects_until_its_time_is_up_then_admits_trials() {
        let mut b = breaker(2, 2, 1.0, 2);
        call(&mut b, 0, Outcome::Failure);
        call(&mut b, 500, Outcome::Failure);
        assert_eq!(b.state(), Open);
        assert_eq!(b.open_until(), Some(Timestamp(10_500)));
        assert_eq!(
            b.try_acquire(Timestamp(10_499)),
            (
                Admission::Rejected {
                    until: Some(Timestamp(10_500))
                },
                None
            )
        );
        assert!(b.poll(Timestamp(10_499)).is_none());
        let t = b.poll(Timestamp(10_500)).unwrap();
        assert_eq!((t.from, t.to), (Open, HalfOpen));
        assert_eq!(b.try_acquire(Timestamp(10_500)).0, Admission::Trial);
        assert_eq!(b.try_acquire(Timestamp(10_500)).0, Admission::Trial);
        assert_eq!(
            b.try_acquire(Timestamp(10_500)).0,
            Admission::Rejected { until: None }
        );
        assert_eq!(b.trials_in_flight(), 2);
    }

    #[test]
    fn half_open_closes_after_every_trial_succeeds() {
        let mut b = breaker(2, 2, 1.0, 2);
        call(&mut b, 0, Outcome::Failure);
        call(&mut b, 0, Outcome::Failure);
        b.poll(Timestamp(10_000));
        b.try_acquire(Timestamp(10_000));
        b.try_acquire(Timestamp(10_000));
        assert!(b
            .on_result(Timestamp(10_001), Outcome::Success, true)
            .is_none());
        let t = b
            .on_result(Timestamp(10_002), Outcome::Success, true)
            .unwrap();
        assert_eq!((t.from, t.to), (HalfOpen, Closed));
        assert_eq!(b.window(Timestamp(10_002)), (0, 0));
        assert_eq!(b.transitions(), 3);
    }

    #[test]
    fn a_failed_trial_reopens() {
        let mut b = breaker(2, 2, 1.0, 2);
        call(&mut b, 0, Outcome::Failure);
        call(&mut b, 0, Outcome::Failure);
        b.poll(Timestamp(10_000));
        b.try_acquire(Timestamp(10_000));
        b.try_acquire(Timestamp(10_000));
        b.on_result(Timestamp(10_001), Outcome::Success, true);
        let t = b
            .on_result(Timestamp(10_002), Outcome::Failure, true)
            .unwrap();
        assert_eq!((t.from, t.to), (HalfOpen, Open));
        assert_eq!(b.open_until(), Some(Timestamp(20_002)));
    }

    #[test]
    fn ignored_or_released_trials_free_their_slot() {
        let mut b = breaker(1, 1, 1.0, 1);
        call(&mut b, 0, Outcome::Failure);
        b.poll(Timestamp(10_000));
        assert_eq!(b.try_acquire(Timestamp(10_000)).0, Admission::Trial);
        assert!(b
            .on_result(Timestamp(10_000), Outcome::Ignored, true)
            .is_none());
        assert_eq!(b.try_acquire(Timestamp(10_000)).0, Admission::Trial);
        b.release(true);
        assert_eq!(b.trials_in_flight(), 0);
        assert_eq!(b.try_acquire(Timestamp(10_000)).0, Admission::Trial);
        assert_eq!(b.state(), HalfOpen);
    }

    #[test]
    fn late_results_of_other_states_are_ignored() {
        let mut b = breaker(1, 1, 1.0, 1);
        // Admitted while closed, reported after the breaker opened.
        assert_eq!(b.try_acquire(Timestamp(0)).0, Admission::Allowed);
        call(&mut b, 0, Outcome::Failure);
        assert!(b.on_result(Timestamp(1), Outcome::Success, false).is_none());
        assert_eq!(b.state(), Open);
        // A non-trial result while half-open, and a trial result while open.
        b.poll(Timestamp(10_000));
        assert!(b
            .on_result(Timestamp(10_000), Outcome::Failure, false)
            .is_none());
        assert!(b
            .on_result(Timestamp(10_000), Outcome::Success, true)
            .is_none());
        assert_eq!(b.state(), HalfOpen);
    }

    #[test]
    fn bad_specs_are_problems_with_paths() {
        let spec = BreakerSpec {
            failure_rate: 1.5,
            window: Window::Count { calls: 0 },
            min_calls: 0,
            open_for: HumanDuration::from_millis(0),
            half_open_calls: 0,
            count: vec![FailureClass::Cancelled],
        };
        let mut out = Vec::new();
        spec.check("/breakers/db", &mut out);
        let paths: Vec<_> = out.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/breakers/db/failure_rate",
                "/breakers/db/window/calls",
                "/breakers/db/min_calls",
                "/breakers/db/open_for",
                "/breakers/db/half_open_calls",
                "/breakers/db/count/0",
            ]
        );
        let spec = BreakerSpec {
            failure_rate: f64::NAN,
            window: Window::Count { calls: 5 },
            min_calls: 6,
            ..BreakerSpec::default()
        };
        let mut out = Vec::new();
        spec.check("", &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.code == ProblemCode::InvalidBreaker));
    }

    #[test]
    fn specs_parse_with_defaults() {
        let spec: BreakerSpec =
            serde_json::from_str(r#"{"window": {"kind": "time", "duration": "1m"}}"#).unwrap();
        assert_eq!(spec.min_calls, 10);
        assert!(spec.config().is_ok());
        assert!(serde_json::from_str::<BreakerSpec>(r#"{"treshold": 0.5}"#).is_err());
    }

    proptest::proptest! {
        /// Any sequence of calls, outcomes, releases and clock steps only
        /// makes the listed transitions, never admits more trials than
        /// allowed, and opens only past the threshold.
        #[test]
        fn random_operation_sequences_keep_the_invariants(
            calls in 1u32..6,
            min in 1u32..6,
            half in 1u32..4,
            rate_pct in 1u32..=100,
            ops in proptest::collection::vec((0u8..4, 0u64..4_000), 1..200),
        ) {
            let min = min.min(calls);
            let spec = BreakerSpec {
                failure_rate: f64::from(rate_pct) / 100.0,
                window: Window::Count { calls },
                min_calls: min,
                open_for: HumanDuration::from_secs(3),
                half_open_calls: half,
                count: default_count(),
            };
            let mut b = Breaker::new(spec.config().unwrap());
            let mut now = 0u64;
            let mut admitted: Vec<bool> = Vec::new();
            for (op, step) in ops {
                now += step;
                let t = Timestamp(now);
                let transition = match op {
                    0 => {
                        let (a, tr) = b.try_acquire(t);
                        match a {
                            Admission::Allowed => admitted.push(false),
                            Admission::Trial => admitted.push(true),
                            Admission::Rejected { until } => {
                                proptest::prop_assert_eq!(until.is_some(), b.state() == Open);
                            }
                        }
                        tr
                    }
                    1 | 2 => match admitted.pop() {
                        Some(trial) => {
                            let outcome = if op == 1 { Outcome::Success } else { Outcome::Failure };
                            b.on_result(t, outcome, trial)
                        }
                        None => b.poll(t),
                    },
                    _ => {
                        if let Some(trial) = admitted.pop() {
                            b.release(trial);
                        }
                        None
                    }
                };
                if let Some(tr) = transition {
                    proptest::prop_assert!(matches!(
                        (tr.from, tr.to),
                        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Open) | (HalfOpen, Closed)
                    ));
                    proptest::prop_assert_eq!(tr.to, b.state());
                    if tr.from == Closed {
                        proptest::prop_assert!(tr.calls >= min && tr.calls <= calls);
                        proptest::prop_assert!(
                            f64::from(tr.failures) >= spec.failure_rate * f64::from(tr.calls)
                        );
                    }
                }
                proptest::prop_assert!(b.trials_in_flight() <= half);
                proptest::prop_assert_eq!(b.open_until().is_some(), b.state() == Open);
                proptest::prop_assert!(b.window(t).0 <= calls);
            }
        }
    }
}
