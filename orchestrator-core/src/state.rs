//! The job and node state machines.
//!
//! Every legal transition is one row of [`NodeMachine::apply`] or
//! [`JobState::apply`]; everything not listed is rejected with
//! [`InvalidTransition`]. The executor and the journal fold only *drive*
//! these functions, so the rules live in exactly one place, and a journal
//! that contains an illegal sequence is detected on replay instead of being
//! silently "fixed". Each transition returns the one effect the executor must
//! perform after the transition is durable.
//!
//! ```
//! use orchestrator_core::state::{NodeEffect, NodeEvent, NodeMachine, NodeState};
//!
//! let node = NodeMachine::default();
//! let (node, fx) = node.apply(NodeEvent::Ready).unwrap();
//! assert_eq!(fx, NodeEffect::Enqueue);
//! let (node, fx) = node.apply(NodeEvent::Start { attempt: 1 }).unwrap();
//! assert_eq!((node.state, node.attempts, fx), (NodeState::Running, 1, NodeEffect::RunAttempt));
//! // A node that is running cannot be started again.
//! assert!(node.apply(NodeEvent::Start { attempt: 2 }).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::failure::FailureClass;
use crate::spec::TriggerRule;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Waiting for its upstream nodes.
    #[default]
    Pending,
    /// May run; waiting for a slot.
    Ready,
    /// An attempt is in flight.
    Running,
    /// The last attempt failed; the next one waits for its backoff delay.
    RetryWaiting,
    /// An attempt succeeded.
    Succeeded,
    /// The last attempt failed and no retry is left.
    Failed,
    /// Its trigger rule said not to run (e.g. an upstream was skipped).
    Skipped,
    /// An upstream failed, so its trigger rule can never be met.
    UpstreamFailed,
    /// The job was cancelled before the node finished.
    Cancelled,
    /// The last attempt timed out and no retry is left.
    TimedOut,
    /// Parked in the dead-letter queue (its compensation kept failing).
    DeadLettered,
    /// Its compensation (undo step) is running.
    Compensating,
    /// Its compensation succeeded.
    Compensated,
}

impl NodeState {
    /// Every state, in declaration order.
    pub const ALL: [NodeState; 13] = [
        Self::Pending,
        Self::Ready,
        Self::Running,
        Self::RetryWaiting,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::UpstreamFailed,
        Self::Cancelled,
        Self::TimedOut,
        Self::DeadLettered,
        Self::Compensating,
        Self::Compensated,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::RetryWaiting => "retry_waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::UpstreamFailed => "upstream_failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::DeadLettered => "dead_lettered",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
        }
    }

    /// Whether the node's run is over (it may still be compensated).
    pub const fn is_finished(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Ready | Self::Running | Self::RetryWaiting
        )
    }

    /// Whether the node ended badly for the job: failed, timed out, dead-lettered,
    /// cancelled or upstream-failed.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Failed
                | Self::TimedOut
                | Self::DeadLettered
                | Self::Cancelled
                | Self::UpstreamFailed
        )
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// Its trigger rule is met.
    Ready,
    /// Its trigger rule decided it must not run.
    Skip,
    /// An upstream failure makes its trigger rule unmeetable.
    UpstreamFailed,
    /// Attempt number `attempt` starts (must be the previous count plus one).
    Start {
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// The running attempt succeeded.
    Succeed,
    /// The running attempt failed; `retry_in` is the policy's decision.
    Fail {
        /// The failure's class.
        class: FailureClass,
        /// Delay before the next attempt, `None` when there is none.
        retry_in: Option<Duration>,
    },
    /// The retry delay is over.
    RetryDue,
    /// The job is being cancelled (a running node instead finishes its
    /// attempt with a `cancelled` failure).
    Cancel,
    /// A rerun takes over this node's success from an earlier run.
    CarryOver,
    /// A rollback starts this node's compensation.
    Compensate,
    /// Another compensation attempt starts after a failed one.
    CompensationRetry,
    /// The compensation succeeded.
    Compensated,
    /// The compensation failed for good.
    CompensationFailed,
    /// A dead-lettered (failed or timed-out) node is run again.
    Requeue,
    /// A node skipped or upstream-failed because of a requeued node is
    /// decided again.
    Reset,
}

impl NodeEvent {
    /// The snake_case name.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Skip => "skip",
            Self::UpstreamFailed => "upstream_failed",
            Self::Start { .. } => "start",
            Self::Succeed => "succeed",
            Self::Fail { .. } => "fail",
            Self::RetryDue => "retry_due",
            Self::Cancel => "cancel",
            Self::CarryOver => "carry_over",
            Self::Compensate => "compensate",
            Self::CompensationRetry => "compensation_retry",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
            Self::Requeue => "requeue",
            Self::Reset => "reset",
        }
    }
}

/// What the executor must do once a node transition is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEffect {
    /// Nothing.
    None,
    /// Put the node in the ready queue.
    Enqueue,
    /// Start the attempt.
    RunAttempt,
    /// Arm a timer that fires [`NodeEvent::RetryDue`] after the delay.
    ScheduleRetry(Duration),
    /// The node finished: re-evaluate its downstream nodes' trigger rules.
    ReleaseDownstream,
    /// Run the node's compensation.
    RunCompensation,
    /// The node's compensation is over: upstream nodes may compensate now.
    ReleaseUpstream,
    /// Record the node in the dead-letter queue and escalate.
    DeadLetter,
}

/// A rejected transition: `event` is not allowed in state `from`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {entity} transition: {event} is not allowed in state {from}")]
pub struct InvalidTransition {
    /// `"node"` or `"job"`.
    pub entity: &'static str,
    /// The state the entity was in.
    pub from: &'static str,
    /// The rejected event.
    pub event: &'static str,
}

/// A node's state plus the attempt counter the rules need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMachine {
    /// The current state.
    pub state: NodeState,
    /// Attempts started so far; never decreases.
    pub attempts: u32,
}

impl NodeMachine {
    /// The node transition table.
    ///
    /// | from | event | to | effect |
    /// |---|---|---|---|
    /// | pending | ready | ready | enqueue |
    /// | pending | skip | skipped | release downstream |
    /// | pending | upstream_failed | upstream_failed | release downstream |
    /// | pending, ready | start(attempts+1) | running | run attempt |
    /// | running | succeed | succeeded | release downstream |
    /// | running | fail(class ≠ cancelled, retry in d) | retry_waiting | schedule retry(d) |
    /// | running | fail(timeout, no retry) | timed_out | release downstream |
    /// | running | fail(cancelled, no retry) | cancelled | release downstream |
    /// | running | fail(other, no retry) | failed | release downstream |
    /// | retry_waiting | retry_due | ready | enqueue |
    /// | pending, ready, retry_waiting | cancel | cancelled | release downstream |
    /// | pending | carry_over | succeeded | release downstream |
    /// | succeeded | compensate | compensating | run compensation |
    /// | compensating | compensation_retry | compensating | run compensation |
    /// | compensating | compensated | compensated | release upstream |
    /// | compensating | compensation_failed | dead_lettered | dead letter |
    /// | failed, timed_out | requeue | ready | enqueue |
    /// | skipped, upstream_failed | reset | pending | none |
    pub fn apply(self, event: NodeEvent) -> Result<(NodeMachine, NodeEffect), InvalidTransition> {
        use NodeEffect as E;
        use NodeEvent as Ev;
        use NodeState as S;
        let to = |state, effect| {
            Ok((
                NodeMachine {
                    state,
                    attempts: self.attempts,
                },
                effect,
            ))
        };
        match (self.state, event) {
            (S::Pending, Ev::Ready) => to(S::Ready, E::Enqueue),
            (S::Pending, Ev::Skip) => to(S::Skipped, E::ReleaseDownstream),
            (S::Pending, Ev::UpstreamFailed) => to(S::UpstreamFailed, E::ReleaseDownstream),
            // From pending: a node that starts as soon as it is ready is
            // journaled as started only (its readiness is implied).
            (S::Pending | S::Ready, Ev::Start { attempt })
                if Some(attempt) == self.attempts.checked_add(1) =>
            {
                Ok((
                    NodeMachine {
                        state: S::Running,
                        attempts: attempt,
                    },
                    E::RunAttempt,
                ))
            }
            (S::Running, Ev::Succeed) => to(S::Succeeded, E::ReleaseDownstream),
            (
                S::Running,
                Ev::Fail {
                    class,
                    retry_in: Some(delay),
                },
            ) if class != FailureClass::Cancelled => to(S::RetryWaiting, E::ScheduleRetry(delay)),
            (
                S::Running,
                Ev::Fail {
                    class,
                    retry_in: None,
                },
            ) => to(
                match class {
                    FailureClass::Timeout => S::TimedOut,
                    FailureClass::Cancelled => S::Cancelled,
                    _ => S::Failed,
                },
                E::ReleaseDownstream,
            ),
            (S::RetryWaiting, Ev::RetryDue) => to(S::Ready, E::Enqueue),
            (S::Pending | S::Ready | S::RetryWaiting, Ev::Cancel) => {
                to(S::Cancelled, E::ReleaseDownstream)
            }
            (S::Pending, Ev::CarryOver) => to(S::Succeeded, E::ReleaseDownstream),
            (S::Succeeded, Ev::Compensate) => to(S::Compensating, E::RunCompensation),
            (S::Compensating, Ev::CompensationRetry) => to(S::Compensating, E::RunCompensation),
            (S::Compensating, Ev::Compensated) => to(S::Compensated, E::ReleaseUpstream),
            (S::Compensating, Ev::CompensationFailed) => to(S::DeadLettered, E::DeadLetter),
            (S::Failed | S::TimedOut, Ev::Requeue) => to(S::Ready, E::Enqueue),
            (S::Skipped | S::UpstreamFailed, Ev::Reset) => to(S::Pending, E::None),
            (from, event) => Err(InvalidTransition {
                entity: "node",
                from: from.as_str(),
                event: event.name(),
            }),
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not yet queued.
    #[default]
    Pending,
    /// Waiting for an executor to pick it up.
    Queued,
    /// Nodes are being dispatched.
    Running,
    /// An executor is resuming it from the journal after a restart or takeover.
    Recovering,
    /// Every node finished and none failed.
    Succeeded,
    /// Every node finished and at least one failed.
    Failed,
    /// Cancellation (or the job timeout) was requested; running attempts are
    /// being stopped.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// The job ran past its timeout.
    TimedOut,
    /// The compensations of its succeeded nodes are running, in reverse
    /// dependency order (after a failure with `on_failure: rollback`, or on
    /// request).
    RollingBack,
    /// Every compensation succeeded.
    RolledBack,
    /// A compensation failed for good; its node is dead-lettered.
    RollbackIncomplete,
}

impl JobState {
    /// Every state, in declaration order.
    pub const ALL: [JobState; 12] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Recovering,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
        Self::TimedOut,
        Self::RollingBack,
        Self::RolledBack,
        Self::RollbackIncomplete,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Recovering => "recovering",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::RollbackIncomplete => "rollback_incomplete",
        }
    }

    /// Whether the job is over. Only an explicit rollback request (into
    /// `rolling_back`) or a dead-letter requeue (a failed job, into
    /// `running`) leaves a terminal state.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Failed
                | Self::Cancelled
                | Self::TimedOut
                | Self::RolledBack
                | Self::RollbackIncomplete
        )
    }

    /// The job transition table.
    ///
    /// | from | event | to | effect |
    /// |---|---|---|---|
    /// | pending | enqueue | queued | none |
    /// | queued | start | running | dispatch |
    /// | queued, running | recovery_started | recovering | none |
    /// | cancelling | recovery_started | cancelling | none |
    /// | recovering | recovery_finished | running | dispatch |
    /// | cancelling | recovery_finished | cancelling | none |
    /// | pending, queued | cancel | cancelled | finished |
    /// | running, recovering | cancel | cancelling | stop running |
    /// | cancelling | cancel | cancelling | none |
    /// | queued, running, recovering | time_out | cancelling | stop running |
    /// | running | finish(succeeded or failed) | that state | finished |
    /// | cancelling | finish(cancelled or timed_out) | that state | finished |
    /// | running, succeeded, failed, cancelled, timed_out | rollback | rolling_back | roll back |
    /// | rolling_back | recovery_started | rolling_back | none |
    /// | rolling_back | recovery_finished | rolling_back | roll back |
    /// | rolling_back | finish(rolled_back or rollback_incomplete) | that state | finished |
    /// | failed | reopen | running | dispatch |
    pub fn apply(self, event: JobEvent) -> Result<(JobState, JobEffect), InvalidTransition> {
        use JobEffect as E;
        use JobEvent as Ev;
        use JobState as S;
        match (self, event) {
            (S::Pending, Ev::Enqueue) => Ok((S::Queued, E::None)),
            (S::Queued, Ev::Start) => Ok((S::Running, E::Dispatch)),
            (S::Queued | S::Running, Ev::RecoveryStarted) => Ok((S::Recovering, E::None)),
            (S::Cancelling, Ev::RecoveryStarted) => Ok((S::Cancelling, E::None)),
            (S::Recovering, Ev::RecoveryFinished) => Ok((S::Running, E::Dispatch)),
            (S::Cancelling, Ev::RecoveryFinished) => Ok((S::Cancelling, E::None)),
            (S::Pending | S::Queued, Ev::Cancel) => Ok((S::Cancelled, E::Finished)),
            (S::Running | S::Recovering, Ev::Cancel) => Ok((S::Cancelling, E::StopRunning)),
            (S::Cancelling, Ev::Cancel) => Ok((S::Cancelling, E::None)),
            (S::Queued | S::Running | S::Recovering, Ev::TimeOut) => {
                Ok((S::Cancelling, E::StopRunning))
            }
            (S::Running, Ev::Finish(o @ (S::Succeeded | S::Failed))) => Ok((o, E::Finished)),
            (S::Cancelling, Ev::Finish(o @ (S::Cancelled | S::TimedOut))) => Ok((o, E::Finished)),
            (S::Running | S::Succeeded | S::Failed | S::Cancelled | S::TimedOut, Ev::Rollback) => {
                Ok((S::RollingBack, E::RollBack))
            }
            (S::RollingBack, Ev::RecoveryStarted) => Ok((S::RollingBack, E::None)),
            (S::RollingBack, Ev::RecoveryFinished) => Ok((S::RollingBack, E::RollBack)),
            (S::RollingBack, Ev::Finish(o @ (S::RolledBack | S::RollbackIncomplete))) => {
                Ok((o, E::Finished))
            }
            (S::Failed, Ev::Reopen) => Ok((S::Running, E::Dispatch)),
            (from, event) => Err(InvalidTransition {
                entity: "job",
                from: from.as_str(),
                event: event.name(),
            }),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "state", rename_all = "snake_case")]
pub enum JobEvent {
    /// Accepted and handed to the executors.
    Enqueue,
    /// An executor starts running it.
    Start,
    /// An executor resumes it from the journal.
    RecoveryStarted,
    /// The resumed journal is consistent again; dispatch continues.
    RecoveryFinished,
    /// A user asked to cancel it.
    Cancel,
    /// Its timeout elapsed.
    TimeOut,
    /// Every node is finished; the payload is the final state.
    Finish(JobState),
    /// Roll back: compensate the succeeded nodes.
    Rollback,
    /// A failed job runs again because a dead-lettered node was requeued.
    Reopen,
}

impl JobEvent {
    /// The snake_case name.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Enqueue => "enqueue",
            Self::Start => "start",
            Self::RecoveryStarted => "recovery_started",
            Self::RecoveryFinished => "recovery_finished",
            Self::Cancel => "cancel",
            Self::TimeOut => "time_out",
            Self::Finish(_) => "finish",
            Self::Rollback => "rollback",
            Self::Reopen => "reopen",
        }
    }
}

/// What the executor must do once a job transition is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEffect {
    /// Nothing.
    None,
    /// Dispatch ready nodes.
    Dispatch,
    /// Signal every running attempt to stop; cancel nodes not yet running.
    StopRunning,
    /// Start (or resume) compensating succeeded nodes in reverse order.
    RollBack,
    /// The job is over: notify subscribers, release resources.
    Finished,
}

/// Outcomes of a node's upstream nodes, counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Number of upstream nodes.
    pub total: u32,
    /// How many succeeded.
    pub succeeded: u32,
    /// How many failed (failed, timed out, dead-lettered, cancelled or
    /// upstream-failed).
    pub failed: u32,
    /// How many were skipped.
    pub skipped: u32,
}

impl Upstream {
    /// How many upstream nodes finished.
    pub const fn done(&self) -> u32 {
        self.succeeded + self.failed + self.skipped
    }

    /// Counts one finished upstream node in `state`.
    pub fn record(&mut self, state: NodeState) {
        match state {
            NodeState::Succeeded | NodeState::Compensating | NodeState::Compensated => {
                self.succeeded += 1;
            }
            NodeState::Skipped => self.skipped += 1,
            _ => self.failed += 1,
        }
    }
}

/// What a trigger rule decides given the upstream outcomes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerDecision {
    /// Not decidable yet.
    Wait,
    /// Run the node.
    Run,
    /// Skip the node.
    Skip,
    /// Mark the node upstream-failed.
    UpstreamFailed,
}

impl TriggerRule {
    /// Decides as early as the outcomes allow: a decision never changes once
    /// it is not [`TriggerDecision::Wait`], because upstream outcomes only
    /// accumulate.
    ///
    /// ```
    /// use orchestrator_core::state::{TriggerDecision, Upstream};
    /// use orchestrator_core::TriggerRule;
    ///
    /// let one_failed = Upstream { total: 3, succeeded: 0, failed: 1, skipped: 0 };
    /// assert_eq!(TriggerRule::AllSuccess.decide(one_failed), TriggerDecision::UpstreamFailed);
    /// assert_eq!(TriggerRule::OneFailed.decide(one_failed), TriggerDecision::Run);
    /// assert_eq!(TriggerRule::AllDone.decide(one_failed), TriggerDecision::Wait);
    /// ```
    pub fn decide(self, up: Upstream) -> TriggerDecision {
        use TriggerDecision::{Run, Skip, UpstreamFailed, Wait};
        let all_done = up.done() >= up.total;
        if up.total == 0 {
            // As in Airflow, a node without upstream nodes always runs.
            return Run;
        }
        match self {
            Self::Always => Run,
            Self::AllSuccess if up.failed > 0 => UpstreamFailed,
            // A later failure would turn this skip into upstream_failed, so
            // wait: decisions must not depend on the order parents finish in.
            Self::AllSuccess if up.skipped > 0 && !all_done => Wait,
            Self::AllSuccess if up.skipped > 0 => Skip,
            Self::AllSuccess | Self::AllDone if all_done => Run,
            Self::AllSuccess | Self::AllDone => Wait,
            Self::AllFailed if up.succeeded > 0 || up.skipped > 0 => Skip,
            Self::AllFailed if all_done => Run,
            Self::AllFailed => Wait,
            Self::OneSuccess if up.succeeded > 0 => Run,
            Self::OneSuccess if all_done && up.failed > 0 => UpstreamFailed,
            Self::OneSuccess if all_done => Skip,
            Self::OneSuccess => Wait,
            Self::OneFailed if up.failed > 0 => Run,
            Self::OneFailed if all_done => Skip,
            Self::OneFailed => Wait,
            Self::NoneFailed if up.failed > 0 => UpstreamFailed,
            Self::NoneFailed if all_done => Run,
            Self::NoneFailed => Wait,
            Self::NoneFailedMinOneSuccess if up.failed > 0 => UpstreamFailed,
            Self::NoneFailedMinOneSuccess if all_done && up.succeeded > 0 => Run,
            Self::NoneFailedMinOneSuccess if all_done => Skip,
            Self::NoneFailedMinOneSuccess => Wait,
            Self::NoneSkipped if up.skipped > 0 => Skip,
            Self::NoneSkipped if all_done => Run,
            Self::NoneSkipped => Wait,
        }
    }
}
