//! The stuck-job sweeper: how an executor notices jobs that make no
//! progress although their owner is alive, reports them
//! (`escalation.required` with cause `job_stuck`), and hands them to
//! another executor when it cannot run them itself.
//!
//! # Why leases are not enough
//!
//! A job runs in the executor that holds its lease, and only that executor
//! can journal for it: anyone else's append is fenced. An owner that dies
//! stops renewing, and another executor takes the job over (see
//! [`crate::store::lease`]). An owner that is alive but makes no progress
//! keeps renewing, so nobody else may touch the job, and nothing is
//! journaled for it. In practice this happens when
//!
//! - the **scheduler task is wedged** while the lease keeper (a task of its
//!   own) still renews: the scheduler's flush awaits every job's append, so
//!   one append that never returns stops every job of the executor;
//! - **one job's appends keep failing**: the job keeps its records, retries
//!   them with backoff and dispatches nothing meanwhile;
//! - **a bug** leaves a job waiting for something that will not come.
//!
//! The sweeper has two levels, both driven by the keeper's heartbeat.
//!
//! # Executor level: is the scheduler answering?
//!
//! Every heartbeat the keeper sends the scheduler a ping, which the
//! scheduler answers as soon as it reads it (with the per-job sweep below).
//! A scheduler that has not answered for longer than
//! [`LeaseConfig::stall_timeout`](crate::LeaseConfig::stall_timeout) is
//! wedged — detected within the stall timeout plus one heartbeat. Its jobs
//! cannot be journaled here, and would never be taken over while their
//! leases are renewed, so for every job it holds the keeper
//!
//! 1. **reports** it: an `escalation.required` (cause `job_stuck`) published
//!    on the event feed as a report the journal does not hold
//!    ([`Notification::journaled`](crate::executor::Notification::journaled)
//!    is `false`, its `seq` is 0), so subscribers and notification sinks get
//!    it although it cannot be journaled; and logs it at `error`;
//! 2. **hands it off**: forgets its lease (renewals stop), tells the
//!    scheduler to drop the job once it wakes up, stops the job's running
//!    attempts (a runner that ignores the request is dropped after the
//!    cancel grace), and after that grace releases the lease in the store
//!    (bounded by a heartbeat; if the release fails the lease lapses after
//!    its TTL, since nobody renews it). Another executor claims the job at
//!    its next heartbeat and resumes it from the journal: succeeded nodes are
//!    not run again, the interrupted attempts are retried by policy.
//!
//! A wedged executor claims no new jobs. If its scheduler wakes up, its late
//! appends are refused once the job is claimed elsewhere (fencing), and it
//! starts no attempt for a job whose lease it no longer holds.
//!
//! # Job level: has this job been quiet for too long?
//!
//! A scheduler that answers judges each of its jobs at each ping. It knows
//! when each job's journal last took a record (one timestamp stored per
//! append, nothing per record), and what each job waits for. [`stuck_after`]
//! is the rule, a pure function:
//!
//! - A job whose **appends are failing** can act on nothing until the store
//!   takes its records, whatever else it waits for: it is stuck once they
//!   have failed for longer than the grace
//!   ([`LeaseConfig::stall_grace`](crate::LeaseConfig::stall_grace)),
//!   counted from the first failure. (The store-retry timer is re-armed after
//!   every failure, so letting it extend the allowance would hide a store
//!   that never heals; the retry delay is capped well below the grace.)
//! - Otherwise the job may stay quiet as long as the longest of what it
//!   legitimately waits for, plus the grace, counted from its last
//!   journaled record:
//!   - a running attempt with a node timeout: that timeout plus the cancel
//!     grace (an attempt being cancelled: the cancel grace);
//!   - a retry timer (a node's or a compensation's): until it is due;
//!   - an attempt **without** a timeout, or a ready node held back by a
//!     **concurrency limit** (global, per job, pool) or an **open breaker**:
//!     no limit — such a job is never stuck for it;
//!   - but never past the job's own timeout, which journals
//!     `execution.timeout_reached` when it fires.
//!
//! A stuck job gets [`stuck_job_escalation`](crate::recovery::stuck_job_escalation)
//! journaled, queued like any record (with a failing store it lands when
//! the store heals); a job whose appends are failing is also reported on the
//! feed at once, as above, since its journal cannot take the record now.
//! Each stall episode is reported once: the next report needs the job to
//! journal something after the escalation first.
//!
//! The sweeper never changes a job's state: it tells people. A wedged
//! executor's jobs move because it lets go of them, not because the
//! sweeper decides anything about them.

use std::time::Duration;

use crate::time::Timestamp;

/// When a job's journal went quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet {
    /// When the journal last took a record of the job (or, if none since,
    /// when this executor began running it).
    pub since: Timestamp,
    /// When its appends began failing, while they fail.
    pub failing_since: Option<Timestamp>,
}

/// What a job with a quiet journal legitimately waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waits {
    /// It waits for something without a time limit: an attempt without a
    /// timeout, a concurrency slot, an open breaker.
    pub unbounded: bool,
    /// The longest time limit of its running attempts (timeout plus cancel
    /// grace), counted from when the journal went quiet.
    pub attempts: Option<Duration>,
    /// When the last of its armed retry timers is due.
    pub timers: Option<Timestamp>,
    /// When the job's own timeout fires (while it is armed): every wait
    /// ends there, since the timeout is journaled.
    pub deadline: Option<Timestamp>,
}

impl Waits {
    /// A running attempt limited to `limit` (`None`: no limit).
    pub fn attempt(&mut self, limit: Option<Duration>) {
        match limit {
            None => self.unbounded = true,
            Some(limit) => self.attempts = self.attempts.max(Some(limit)),
        }
    }

    /// A timer due at `due`.
    pub fn timer(&mut self, due: Timestamp) {
        self.timers = self.timers.max(Some(due));
    }
}

/// The instant after which a job whose journal is `quiet`, waiting for
/// `waits`, counts as stuck; `None` while it may wait for ever. See the
/// [module docs](self) for the rule.
pub fn stuck_after(quiet: Quiet, waits: &Waits, grace: Duration) -> Option<Timestamp> {
    if let Some(failing) = quiet.failing_since {
        return Some(failing.saturating_add(grace));
    }
    let since = quiet.since;
    let bounded = (!waits.unbounded).then(|| {
        let attempts = waits.attempts.map_or(since, |d| since.saturating_add(d));
        attempts.max(waits.timers.unwrap_or(since))
    });
    let deadline = waits.deadline.map(|d| d.max(since));
    let end = match (bounded, deadline) {
        (Some(b), Some(d)) => b.min(d),
        (Some(end), None) | (None, Some(end)) => end,
        (None, None) => return None,
    };
    Some(end.saturating_add(grace))
}

/// Whether such a job is stuck at `now` (see [`stuck_after`]).
pub fn is_stuck(now: Timestamp, quiet: Quiet, waits: &Waits, grace: Duration) -> bool {
    stuck_after(quiet, waits, grace).is_some_and(|at| now > at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp(1_704_067_200_000);
    const GRACE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> Timestamp {
        T0.saturating_add(Duration::from_secs(secs))
    }

    fn quiet(since: u64) -> Quiet {
        Quiet {
            since: at(since),
            failing_since: None,
        }
    }

    #[test]
    fn a_job_waiting_for_nothing_is_stuck_after_the_grace() {
        let waits = Waits::default();
        assert_eq!(stuck_after(quiet(10), &waits, GRACE), Some(at(70)));
        assert!(!is_stuck(at(70), quiet(10), &waits, GRACE));
        assert!(is_stuck(at(71), quiet(10), &waits, GRACE));
    }

    #[test]
    fn running_attempts_allow_their_longest_limit() {
        let mut waits = Waits::default();
        waits.attempt(Some(Duration::from_secs(300)));
        waits.attempt(Some(Duration::from_secs(30)));
        assert_eq!(stuck_after(quiet(0), &waits, GRACE), Some(at(360)));
    }

    #[test]
    fn an_attempt_without_a_timeout_or_a_slot_wait_is_never_stuck() {
        let mut waits = Waits::default();
        waits.attempt(Some(Duration::from_secs(30)));
        waits.attempt(None);
        assert_eq!(stuck_after(quiet(0), &waits, GRACE), None);
        let slot = Waits {
            unbounded: true,
            ..Waits::default()
        };
        assert!(!is_stuck(at(1_000_000), quiet(0), &slot, GRACE));
    }

    #[test]
    fn timers_allow_until_they_are_due() {
        let mut waits = Waits::default();
        waits.timer(at(500));
        waits.timer(at(200));
        assert_eq!(stuck_after(quiet(100), &waits, GRACE), Some(at(560)));
        // A timer already due allows nothing more.
        let mut past = Waits::default();
        past.timer(at(50));
        assert_eq!(stuck_after(quiet(100), &past, GRACE), Some(at(160)));
    }

    #[test]
    fn the_job_timeout_ends_every_wait() {
        let waits = Waits {
            unbounded: true,
            deadline: Some(at(3600)),
            ..Waits::default()
        };
        assert_eq!(stuck_after(quiet(0), &waits, GRACE), Some(at(3660)));
        let mut long = Waits {
            deadline: Some(at(100)),
            ..Waits::default()
        };
        long.attempt(Some(Duration::from_secs(900)));
        assert_eq!(stuck_after(quiet(0), &long, GRACE), Some(at(160)));
    }

    #[test]
    fn failing_appends_count_from_the_first_failure_whatever_the_waits() {
        let mut waits = Waits::default();
        waits.attempt(None);
        waits.timer(at(10_000));
        let q = Quiet {
            since: at(0),
            failing_since: Some(at(600)),
        };
        assert_eq!(stuck_after(q, &waits, GRACE), Some(at(660)));
    }

    fn waits() -> impl Strategy<Value = Waits> {
        (
            any::<bool>(),
            proptest::option::of(0u64..100_000),
            proptest::option::of(0u64..100_000),
            proptest::option::of(0u64..100_000),
        )
            .prop_map(|(unbounded, attempts, timers, deadline)| Waits {
                unbounded,
                attempts: attempts.map(Duration::from_secs),
                timers: timers.map(at),
                deadline: deadline.map(at),
            })
    }

    proptest! {
        #[test]
        fn never_before_the_grace(since in 0u64..100_000, waits in waits(), grace in 0u64..1_000) {
            let grace = Duration::from_secs(grace);
            if let Some(stuck) = stuck_after(quiet(since), &waits, grace) {
                prop_assert!(stuck >= at(since).saturating_add(grace));
            }
        }

        #[test]
        fn more_to_wait_for_never_makes_it_sooner(
            since in 0u64..100_000,
            waits in waits(),
            limit in proptest::option::of(0u64..100_000),
            due in 0u64..200_000,
        ) {
            let before = stuck_after(quiet(since), &waits, GRACE);
            let mut more = waits;
            more.attempt(limit.map(Duration::from_secs));
            more.timer(at(due));
            let after = stuck_after(quiet(since), &more, GRACE);
            match (before, after) {
                (Some(b), Some(a)) => prop_assert!(a >= b),
                (None, Some(_)) => prop_assert!(false, "a wait made a patient job stuck"),
                _ => {}
            }
        }

        #[test]
        fn never_past_the_job_timeout(since in 0u64..100_000, waits in waits()) {
            if let Some(deadline) = waits.deadline {
                let stuck = stuck_after(quiet(since), &waits, GRACE);
                prop_assert!(stuck.is_some());
                prop_assert!(stuck <= Some(deadline.max(at(since)).saturating_add(GRACE)));
            } else if waits.unbounded {
                prop_assert_eq!(stuck_after(quiet(since), &waits, GRACE), None);
            }
        }

        #[test]
        fn failing_appends_decide_alone(since in 0u64..100_000, extra in 0u64..100_000, waits in waits()) {
            let q = Quiet { since: at(since), failing_since: Some(at(since + extra)) };
            prop_assert_eq!(stuck_after(q, &waits, GRACE), Some(at(since + extra).saturating_add(GRACE)));
        }
    }
}
