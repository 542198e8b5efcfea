//! The journal: an append-only, per-job sequence of [`Record`]s, and the
//! [`JobView`] that folds it into current state.
//!
//! Event sourcing is how the engine keeps its first promise (nothing is
//! lost): every state change is a record, appended to the store *before* the
//! executor acts on it, and a job's state is nothing but the fold of its
//! records. A restarted process rebuilds each unfinished job from its latest
//! [`Snapshot`] plus the records after it, and `JobView::apply` drives the
//! same state machines as the live executor, so replay and live execution
//! cannot disagree — a journal with an illegal sequence fails replay loudly.
//!
//! Records name nodes by index (their position in the spec), not by id: a
//! record is a few dozen bytes, which keeps journaling cheap enough to do for
//! every transition of a million-node job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::breaker::BreakerState;
use crate::failure::{Failure, FailureClass};
use crate::flaky::{AttemptBudget, Decision, Score};
use crate::recovery::{EscalationCause, RecoveryKind, RecoveryOutcome};
use crate::spec::JobSpec;
use crate::state::{
    InvalidTransition, JobEffect, JobEvent, JobState, NodeEffect, NodeEvent, NodeMachine, NodeState,
};
use crate::time::{JobId, Timestamp};

/// The static facts of a job, journaled once in [`Event::Submitted`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobHeader {
    /// The job's id.
    pub id: JobId,
    /// Who submitted it (the HTTP adapter's JWT subject; `"local"` from the CLI).
    pub owner: String,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// The validated spec.
    pub spec: Arc<JobSpec>,
}

/// One journaled fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The job was accepted. Always the first record (seq 1).
    Submitted {
        /// What was submitted.
        header: Arc<JobHeader>,
    },
    /// The job is queued for an executor.
    Queued,
    /// An executor started running the job.
    Started,
    /// An executor is resuming the job from its journal.
    RecoveryStarted,
    /// Resumption is done (interrupted attempts are recorded); dispatch resumes.
    RecoveryFinished,
    /// Someone asked to cancel the job.
    CancelRequested {
        /// Why, if they said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The job ran past its timeout; running attempts are being stopped.
    TimeoutReached,
    /// The job is over.
    Finished {
        /// Its final state.
        state: JobState,
    },
    /// A node's trigger rule is met and it waits to start (for a slot, a
    /// pool or an open breaker). A node that starts as soon as it is ready
    /// is journaled as [`Event::NodeStarted`] only, its readiness implied.
    NodeReady {
        /// Node index.
        node: u32,
    },
    /// A node's trigger rule decided it must not run.
    NodeSkipped {
        /// Node index.
        node: u32,
    },
    /// A node can never run because an upstream failed.
    NodeUpstreamFailed {
        /// Node index.
        node: u32,
    },
    /// An attempt started (from `ready`, or straight from `pending`: see
    /// [`Event::NodeReady`]).
    NodeStarted {
        /// Node index.
        node: u32,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// An attempt succeeded.
    NodeSucceeded {
        /// Node index.
        node: u32,
        /// Attempt number.
        attempt: u32,
        /// What the runner returned.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        output: Value,
    },
    /// An attempt failed, with the retry decision taken for it.
    NodeFailed {
        /// Node index.
        node: u32,
        /// Attempt number.
        attempt: u32,
        /// What went wrong.
        failure: Box<Failure>,
        /// Delay before the next attempt in milliseconds; absent when the node
        /// will not be retried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A node's retry delay is over.
    NodeRetryDue {
        /// Node index.
        node: u32,
    },
    /// A node that was not running was cancelled.
    NodeCancelled {
        /// Node index.
        node: u32,
    },
    /// The job is being rolled back: its succeeded nodes' compensations run
    /// in reverse dependency order.
    RollbackStarted {
        /// Why, if said (e.g. `"job failed"`, or the requester's reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A compensation attempt started.
    CompensationStarted {
        /// Node index.
        node: u32,
        /// Compensation attempt number, from 1.
        attempt: u32,
    },
    /// A compensation attempt failed, with the retry decision taken for it.
    CompensationFailed {
        /// Node index.
        node: u32,
        /// Compensation attempt number.
        attempt: u32,
        /// What went wrong.
        failure: Box<Failure>,
        /// Delay before the next compensation attempt in milliseconds;
        /// absent when the node is dead-lettered instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A node's compensation succeeded.
    NodeCompensated {
        /// Node index.
        node: u32,
        /// Compensation attempt number.
        attempt: u32,
        /// What the compensation returned.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        output: Value,
    },
    /// A rerun took over a node's success (and output) from an earlier run.
    NodeCarriedOver {
        /// Node index.
        node: u32,
        /// The run it succeeded in.
        from: JobId,
        /// Its output there.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        output: Value,
    },
    /// The circuit breaker of a dependency some of this job's nodes need
    /// changed state (see [`crate::breaker`]). Informational: breakers live
    /// in the executor process, so replay changes no state for it.
    BreakerChanged {
        /// The dependency.
        dependency: String,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
        /// Failures in the window when it opened from closed.
        #[serde(default, skip_serializing_if = "is_zero")]
        failures: u32,
        /// Calls in the window when it opened from closed.
        #[serde(default, skip_serializing_if = "is_zero")]
        calls: u32,
    },
    /// A node failed for good and is recorded in the dead-letter queue
    /// (the store's entry is written once this record is durable).
    DeadLettered {
        /// Node index.
        node: u32,
        /// Why.
        reason: crate::store::dead_letter::DeadLetterReason,
    },
    /// A dead-lettered node is run again, with a fresh attempt budget.
    DeadLetterRequeued {
        /// Node index.
        node: u32,
        /// Which dead letter of the node (the `n` of its entry id).
        entry: u32,
        /// Who asked.
        by: String,
    },
    /// A dead letter is left as it is, for a reason.
    DeadLetterDiscarded {
        /// Node index.
        node: u32,
        /// Which dead letter of the node (the `n` of its entry id).
        entry: u32,
        /// Who decided.
        by: String,
        /// Why.
        reason: String,
    },
    /// A finished job runs again (a dead-lettered node was requeued).
    Reopened {
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A node skipped or upstream-failed because of a requeued node waits
    /// for its upstream nodes again.
    NodeReset {
        /// Node index.
        node: u32,
    },
    /// Flakiness history changed how a node runs (adaptive attempts,
    /// quarantine): journaled at submission, with the score that drove it,
    /// so a resumed job decides the same. See [`crate::flaky`].
    FlakyDecision {
        /// Node index.
        node: u32,
        /// The score of the node's test history at submission.
        score: Score,
        /// What was decided.
        decision: Decision,
    },
    /// Something needs a person's attention.
    EscalationRequired {
        /// The node concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
        /// Why, as a machine-readable cause (absent in journals written
        /// before causes were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<EscalationCause>,
        /// What happened.
        reason: String,
    },
    /// An automatic recovery began (see [`crate::recovery`]).
    RecoveryInitiated {
        /// What kind of recovery.
        kind: RecoveryKind,
        /// The node recovering; absent when the whole job is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
    },
    /// An automatic recovery ended (see [`crate::recovery`]).
    RecoveryCompleted {
        /// What kind of recovery.
        kind: RecoveryKind,
        /// The node that was recovering; absent when the whole job was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
        /// How it ended.
        outcome: RecoveryOutcome,
    },
}

impl Event {
    /// The name used on the event stream, e.g. `execution.started`,
    /// `node.failed`, `recovery.initiated`, `escalation.required`.
    ///
    /// A job taken back after a restart journals `execution.recovering` and
    /// `execution.resumed` (its state changes) and, beside them, the
    /// `recovery.initiated` / `recovery.completed` pair that notifications
    /// and analytics follow.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Submitted { .. } => "execution.submitted",
            Self::Queued => "execution.queued",
            Self::Started => "execution.started",
            Self::RecoveryStarted => "execution.recovering",
            Self::RecoveryFinished => "execution.resumed",
            Self::RecoveryInitiated { .. } => "recovery.initiated",
            Self::RecoveryCompleted { .. } => "recovery.completed",
            Self::CancelRequested { .. } => "execution.cancelling",
            Self::TimeoutReached => "execution.timeout_reached",
            Self::Finished { state } => match state {
                JobState::Succeeded => "execution.completed",
                JobState::Cancelled => "execution.cancelled",
                JobState::TimedOut => "execution.timed_out",
                JobState::RolledBack => "execution.rolled_back",
                JobState::RollbackIncomplete => "execution.rollback_incomplete",
                _ => "execution.failed",
            },
            Self::NodeReady { .. } => "node.ready",
            Self::NodeSkipped { .. } => "node.skipped",
            Self::NodeUpstreamFailed { .. } => "node.upstream_failed",
            Self::NodeStarted { .. } => "node.started",
            Self::NodeSucceeded { .. } => "node.succeeded",
            Self::NodeFailed {
                retry_in_ms: Some(_),
                ..
            } => "node.retry_scheduled",
            Self::NodeFailed { .. } => "node.failed",
            Self::NodeRetryDue { .. } => "node.retry_due",
            Self::NodeCancelled { .. } => "node.cancelled",
            Self::RollbackStarted { .. } => "execution.rolling_back",
            Self::CompensationStarted { .. } => "node.compensation_started",
            Self::CompensationFailed {
                retry_in_ms: Some(_),
                ..
            } => "node.compensation_retry_scheduled",
            Self::CompensationFailed { .. } => "node.compensation_failed",
            Self::NodeCompensated { .. } => "node.compensated",
            Self::NodeCarriedOver { .. } => "node.carried_over",
            Self::FlakyDecision { .. } => "node.flaky_decision",
            Self::EscalationRequired { .. } => "escalation.required",
            Self::BreakerChanged { to, .. } => match to {
                BreakerState::Open => "breaker.opened",
                BreakerState::HalfOpen => "breaker.half_opened",
                BreakerState::Closed => "breaker.closed",
            },
            Self::DeadLettered { .. } => "node.dead_lettered",
            Self::DeadLetterRequeued { .. } => "dead_letter.requeued",
            Self::DeadLetterDiscarded { .. } => "dead_letter.discarded",
            Self::Reopened { .. } => "execution.reopened",
            Self::NodeReset { .. } => "node.reset",
        }
    }

    /// The node this event is about, if any.
    pub fn node(&self) -> Option<u32> {
        match *self {
            Self::NodeReady { node }
            | Self::NodeSkipped { node }
            | Self::NodeUpstreamFailed { node }
            | Self::NodeStarted { node, .. }
            | Self::NodeSucceeded { node, .. }
            | Self::NodeFailed { node, .. }
            | Self::NodeRetryDue { node }
            | Self::NodeCancelled { node }
            | Self::CompensationStarted { node, .. }
            | Self::CompensationFailed { node, .. }
            | Self::NodeCompensated { node, .. }
            | Self::NodeCarriedOver { node, .. }
            | Self::DeadLettered { node, .. }
            | Self::DeadLetterRequeued { node, .. }
            | Self::DeadLetterDiscarded { node, .. }
            | Self::NodeReset { node }
            | Self::FlakyDecision { node, .. } => Some(node),
            Self::EscalationRequired { node, .. }
            | Self::RecoveryInitiated { node, .. }
            | Self::RecoveryCompleted { node, .. } => node,
            _ => None,
        }
    }

    /// The state-machine event this record drives.
    fn transition(&self) -> Option<Transition> {
        Some(match self {
            Self::Submitted { .. }
            | Self::EscalationRequired { .. }
            | Self::BreakerChanged { .. }
            | Self::RecoveryInitiated { .. }
            | Self::RecoveryCompleted { .. }
            | Self::DeadLettered { .. }
            | Self::DeadLetterDiscarded { .. }
            | Self::FlakyDecision { .. } => return None,
            Self::Reopened { .. } => Transition::Job(JobEvent::Reopen),
            Self::DeadLetterRequeued { node, .. } => Transition::Node(*node, NodeEvent::Requeue),
            Self::NodeReset { node } => Transition::Node(*node, NodeEvent::Reset),
            Self::Queued => Transition::Job(JobEvent::Enqueue),
            Self::Started => Transition::Job(JobEvent::Start),
            Self::RecoveryStarted => Transition::Job(JobEvent::RecoveryStarted),
            Self::RecoveryFinished => Transition::Job(JobEvent::RecoveryFinished),
            Self::CancelRequested { .. } => Transition::Job(JobEvent::Cancel),
            Self::TimeoutReached => Transition::Job(JobEvent::TimeOut),
            Self::RollbackStarted { .. } => Transition::Job(JobEvent::Rollback),
            Self::CompensationStarted { node, attempt } => Transition::Node(
                *node,
                if *attempt <= 1 {
                    NodeEvent::Compensate
                } else {
                    NodeEvent::CompensationRetry
                },
            ),
            // A failed attempt that will be retried changes no state.
            Self::CompensationFailed {
                retry_in_ms: Some(_),
                ..
            } => return None,
            Self::CompensationFailed { node, .. } => {
                Transition::Node(*node, NodeEvent::CompensationFailed)
            }
            Self::NodeCompensated { node, .. } => Transition::Node(*node, NodeEvent::Compensated),
            Self::NodeCarriedOver { node, .. } => Transition::Node(*node, NodeEvent::CarryOver),
            Self::Finished { state } => Transition::Job(JobEvent::Finish(*state)),
            Self::NodeReady { node } => Transition::Node(*node, NodeEvent::Ready),
            Self::NodeSkipped { node } => Transition::Node(*node, NodeEvent::Skip),
            Self::NodeUpstreamFailed { node } => Transition::Node(*node, NodeEvent::UpstreamFailed),
            Self::NodeStarted { node, attempt } => {
                Transition::Node(*node, NodeEvent::Start { attempt: *attempt })
            }
            Self::NodeSucceeded { node, .. } => Transition::Node(*node, NodeEvent::Succeed),
            Self::NodeFailed {
                node,
                failure,
                retry_in_ms,
                ..
            } => Transition::Node(
                *node,
                NodeEvent::Fail {
                    class: failure.class,
                    retry_in: retry_in_ms.map(Duration::from_millis),
                },
            ),
            Self::NodeRetryDue { node } => Transition::Node(*node, NodeEvent::RetryDue),
            Self::NodeCancelled { node } => Transition::Node(*node, NodeEvent::Cancel),
        })
    }
}

enum Transition {
    Job(JobEvent),
    Node(u32, NodeEvent),
}

/// A journaled event with its position and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the job's journal, from 1, without gaps. The job's
    /// *version* is the seq of its last record.
    pub seq: u64,
    /// When it was journaled.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// A checkpoint: the fold of a job's journal up to `view.version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The folded state.
    pub view: JobView,
}

/// Why a journal could not be replayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The journal does not start with [`Event::Submitted`].
    #[error("journal of job {job} does not start with a submitted record")]
    MissingHeader {
        /// The job.
        job: String,
    },
    /// A record's seq is not the next one.
    #[error("journal of job {job}: expected record {expected}, found {found}")]
    Gap {
        /// The job.
        job: String,
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A record names a node the spec does not have.
    #[error("journal of job {job}, record {seq}: no node with index {node}")]
    UnknownNode {
        /// The job.
        job: String,
        /// The record.
        seq: u64,
        /// The node index.
        node: u32,
    },
    /// A record is an illegal transition.
    #[error("journal of job {job}, record {seq}: {source}")]
    Invalid {
        /// The job.
        job: String,
        /// The record.
        seq: u64,
        /// The rejected transition.
        source: InvalidTransition,
    },
}

/// The effect a folded record's transition calls for (see [`crate::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The record drives no state machine.
    None,
    /// A job transition's effect.
    Job(JobEffect),
    /// A node transition's effect, with the node's index.
    Node(u32, NodeEffect),
}

/// Per-node part of a [`JobView`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// State and attempt count.
    #[serde(flatten)]
    pub machine: NodeMachine,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<Timestamp>,
    /// When the latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the node finished (or its latest attempt ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When the pending retry is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The latest failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<Failure>>,
    /// The output of the successful attempt.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub output: Value,
    /// Compensation attempts started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compensation_attempts: u32,
    /// Whether a compensation attempt is in flight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensation_running: bool,
    /// The automatic recovery of this node that is under way, if any
    /// (between `recovery.initiated` and `recovery.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryKind>,
    /// How often the node was dead-lettered (the `n` of its latest entry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_letters: u32,
    /// Attempts started before its latest requeue: retry policies count
    /// attempts from here, so a requeued node gets a fresh budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// Whether the node runs quarantined: its failure neither fails the
    /// job nor blocks downstream nodes (see [`crate::flaky`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
    /// Its attempt budget, when adaptive retries changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_budget: Option<AttemptBudget>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodeView {
    /// The node's state.
    pub fn state(&self) -> NodeState {
        self.machine.state
    }

    /// Whether it is a quarantined node that failed (`failed` or
    /// `timed_out`): a failure that does not count.
    pub fn quarantined_failure(&self) -> bool {
        self.quarantined && matches!(self.state(), NodeState::Failed | NodeState::TimedOut)
    }

    /// The state downstream trigger rules see: a quarantined failure counts
    /// as succeeded.
    pub fn downstream_state(&self) -> NodeState {
        if self.quarantined_failure() {
            NodeState::Succeeded
        } else {
            self.state()
        }
    }

    /// Whether it failed and then passed in this run (flaky in the run).
    pub fn flaky(&self) -> bool {
        self.state() == NodeState::Succeeded && self.machine.attempts > 1
    }
}

/// The fold of a job's journal: its current state, every node's state,
/// attempts, timings and last error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The static facts.
    pub header: Arc<JobHeader>,
    /// The job's state.
    pub state: JobState,
    /// Seq of the last record folded in.
    pub version: u64,
    /// When the last record was journaled.
    pub updated_at: Timestamp,
    /// When the job started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why it was cancelled, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// Whether the job timeout fired (so `Cancelling` ends as `TimedOut`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeout_reached: bool,
    /// The job-wide automatic recovery under way (a resume after a restart),
    /// if any (between `recovery.initiated` and `recovery.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryKind>,
    /// Per node, by index.
    pub nodes: Vec<NodeView>,
    /// How many nodes are in each state, indexed like [`NodeState::ALL`].
    counts: [u32; 13],
}

fn state_index(s: NodeState) -> usize {
    s as usize
}

impl JobView {
    /// The view right after the `Submitted` record.
    pub fn new(header: Arc<JobHeader>) -> Self {
        let n = header.spec.nodes().len();
        let mut counts = [0u32; 13];
        counts[state_index(NodeState::Pending)] = n as u32;
        Self {
            updated_at: header.created_at,
            header,
            state: JobState::Pending,
            version: 1,
            started_at: None,
            finished_at: None,
            cancel_reason: None,
            timeout_reached: false,
            recovery: None,
            nodes: vec![NodeView::default(); n],
            counts,
        }
    }

    /// Folds a whole journal (from seq 1).
    pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<Self, ReplayError> {
        let mut it = records.into_iter();
        let first = it
            .next()
            .ok_or_else(|| ReplayError::MissingHeader { job: String::new() })?;
        let Event::Submitted { header } = &first.event else {
            return Err(ReplayError::MissingHeader { job: String::new() });
        };
        if first.seq != 1 {
            return Err(ReplayError::Gap {
                job: header.id.to_string(),
                expected: 1,
                found: first.seq,
            });
        }
        let mut view = Self::new(header.clone());
        for r in it {
            view.apply(r)?;
        }
        Ok(view)
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.header.id
    }

    /// The spec.
    pub fn spec(&self) -> &Arc<JobSpec> {
        &self.header.spec
    }

    /// How many nodes are in `state`.
    pub fn count(&self, state: NodeState) -> u32 {
        self.counts[state_index(state)]
    }

    /// How many nodes finished (whatever the outcome).
    pub fn finished_nodes(&self) -> u32 {
        NodeState::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|&s| self.count(s))
            .sum()
    }

    /// How many nodes ended badly (see [`NodeState::is_failure`]).
    pub fn failed_nodes(&self) -> u32 {
        NodeState::ALL
            .iter()
            .filter(|s| s.is_failure())
            .map(|&s| self.count(s))
            .sum()
    }

    /// How many quarantined nodes failed (failures that do not fail the
    /// job). O(nodes): for the end of a job, not the hot path.
    pub fn quarantined_failures(&self) -> u32 {
        self.nodes
            .iter()
            .filter(|n| n.quarantined_failure())
            .count() as u32
    }

    /// Progress in percent: finished nodes over all nodes.
    pub fn progress_percent(&self) -> f64 {
        let n = self.nodes.len().max(1) as f64;
        (f64::from(self.finished_nodes()) * 100.0 / n * 10.0).round() / 10.0
    }

    /// The state a job whose every node is finished ends in, unless it is
    /// being cancelled: failed if any node ended badly, else succeeded.
    pub fn outcome(&self) -> JobState {
        match self.state {
            JobState::RollingBack if self.count(NodeState::DeadLettered) > 0 => {
                JobState::RollbackIncomplete
            }
            JobState::RollingBack => JobState::RolledBack,
            JobState::Cancelling if self.timeout_reached => JobState::TimedOut,
            JobState::Cancelling => JobState::Cancelled,
            _ if self.failed_nodes() > self.quarantined_failures() => JobState::Failed,
            _ => JobState::Succeeded,
        }
    }

    /// Folds one record in and returns the effect its transition calls for.
    /// On error the view is unchanged.
    pub fn apply(&mut self, record: &Record) -> Result<Effect, ReplayError> {
        let job = || self.header.id.to_string();
        if record.seq != self.version + 1 {
            return Err(ReplayError::Gap {
                job: job(),
                expected: self.version + 1,
                found: record.seq,
            });
        }
        let effect = match record.event.transition() {
            None => {
                // Recovery records change no state, but say which recovery
                // is open (so the one that follows knows what to close).
                let opened = match &record.event {
                    Event::RecoveryInitiated { kind, node } => Some((Some(*kind), *node)),
                    Event::RecoveryCompleted { node, .. } => Some((None, *node)),
                    _ => None,
                };
                match opened {
                    Some((open, None)) => self.recovery = open,
                    Some((open, Some(i))) => {
                        let Some(node) = self.nodes.get_mut(i as usize) else {
                            return Err(ReplayError::UnknownNode {
                                job: job(),
                                seq: record.seq,
                                node: i,
                            });
                        };
                        node.recovery = open;
                    }
                    None => {}
                }
                if let Event::DeadLettered { node: i, .. } = &record.event {
                    let i = *i;
                    let Some(node) = self.nodes.get_mut(i as usize) else {
                        return Err(ReplayError::UnknownNode {
                            job: job(),
                            seq: record.seq,
                            node: i,
                        });
                    };
                    node.dead_letters += 1;
                }
                // A compensation attempt that will be retried changes no
                // state, but the node's bookkeeping follows it.
                if let Event::CompensationFailed {
                    node: i,
                    failure,
                    retry_in_ms: Some(ms),
                    ..
                } = &record.event
                {
                    let Some(node) = self.nodes.get_mut(*i as usize) else {
                        return Err(ReplayError::UnknownNode {
                            job: job(),
                            seq: record.seq,
                            node: *i,
                        });
                    };
                    node.compensation_running = false;
                    node.last_error = Some(failure.clone());
                    node.retry_at = Some(Timestamp(record.at.0.saturating_add(*ms)));
                }
                if let Event::FlakyDecision {
                    node: i, decision, ..
                } = &record.event
                {
                    let Some(node) = self.nodes.get_mut(*i as usize) else {
                        return Err(ReplayError::UnknownNode {
                            job: job(),
                            seq: record.seq,
                            node: *i,
                        });
                    };
                    node.quarantined = decision.quarantine.is_some();
                    node.attempt_budget = decision.attempts;
                }
                Effect::None
            }
            Some(Transition::Job(ev)) => {
                let (next, effect) =
                    self.state
                        .apply(ev)
                        .map_err(|source| ReplayError::Invalid {
                            job: job(),
                            seq: record.seq,
                            source,
                        })?;
                self.state = next;
                match &record.event {
                    Event::Started => self.started_at = Some(record.at),
                    Event::CancelRequested { reason } if self.cancel_reason.is_none() => {
                        self.cancel_reason =
                            Some(reason.clone().unwrap_or_else(|| "cancelled".into()));
                    }
                    Event::TimeoutReached => self.timeout_reached = true,
                    Event::Finished { .. } => self.finished_at = Some(record.at),
                    Event::Reopened { .. } => {
                        // The job timeout counts from the reopening.
                        self.started_at = Some(record.at);
                        self.finished_at = None;
                    }
                    _ => {}
                }
                Effect::Job(effect)
            }
            Some(Transition::Node(i, ev)) => {
                let Some(node) = self.nodes.get_mut(i as usize) else {
                    return Err(ReplayError::UnknownNode {
                        job: job(),
                        seq: record.seq,
                        node: i,
                    });
                };
                let before = node.machine.state;
                let (next, effect) =
                    node.machine
                        .apply(ev)
                        .map_err(|source| ReplayError::Invalid {
                            job: self.header.id.to_string(),
                            seq: record.seq,
                            source,
                        })?;
                node.machine = next;
                match &record.event {
                    Event::NodeStarted { .. } => {
                        node.started_at = Some(record.at);
                        node.first_started_at.get_or_insert(record.at);
                        node.retry_at = None;
                        node.finished_at = None;
                    }
                    Event::NodeSucceeded { output, .. } => {
                        node.finished_at = Some(record.at);
                        node.output = output.clone();
                    }
                    Event::NodeFailed {
                        failure,
                        retry_in_ms,
                        ..
                    } => {
                        node.finished_at = Some(record.at);
                        node.retry_at =
                            retry_in_ms.map(|ms| Timestamp(record.at.0.saturating_add(ms)));
                        node.last_error = Some(failure.clone());
                    }
                    Event::NodeSkipped { .. }
                    | Event::NodeUpstreamFailed { .. }
                    | Event::NodeCancelled { .. } => {
                        node.finished_at = Some(record.at);
                    }
                    Event::NodeCarriedOver { output, .. } => {
                        node.finished_at = Some(record.at);
                        node.output = output.clone();
                    }
                    Event::CompensationStarted { attempt, .. } => {
                        node.compensation_attempts = *attempt;
                        node.compensation_running = true;
                        node.retry_at = None;
                    }
                    Event::CompensationFailed { failure, .. } => {
                        node.compensation_running = false;
                        node.last_error = Some(failure.clone());
                    }
                    Event::NodeCompensated { .. } => node.compensation_running = false,
                    Event::DeadLetterRequeued { .. } => {
                        node.attempt_base = node.machine.attempts;
                        node.first_started_at = None;
                        node.finished_at = None;
                        node.retry_at = None;
                    }
                    Event::NodeReset { .. } => node.finished_at = None,
                    _ => {}
                }
                self.counts[state_index(before)] -= 1;
                self.counts[state_index(next.state)] += 1;
                Effect::Node(i, effect)
            }
        };
        self.version = record.seq;
        self.updated_at = record.at;
        Ok(effect)
    }

    /// The summary stores keep for listing without replay.
    pub fn summary(&self) -> JobSummary {
        JobSummary {
            id: self.header.id.clone(),
            name: self.header.spec.name.clone(),
            owner: self.header.owner.clone(),
            labels: self.header.spec.labels.clone(),
            priority: self.header.spec.priority,
            created_at: self.header.created_at,
            progress: self.progress(),
        }
    }

    /// The changing part of the summary.
    pub fn progress(&self) -> Progress {
        Progress {
            state: self.state,
            version: self.version,
            updated_at: self.updated_at,
            nodes_total: self.nodes.len() as u32,
            nodes_finished: self.finished_nodes(),
            nodes_failed: self.failed_nodes(),
            nodes_running: self.count(NodeState::Running),
        }
    }
}

/// What a store keeps per job for listing and filtering without replaying
/// journals. Stores update [`JobSummary::progress`] atomically with every
/// append, so it always agrees with the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    /// The job's id.
    pub id: JobId,
    /// Its name.
    pub name: String,
    /// Who submitted it.
    pub owner: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its priority.
    #[serde(default)]
    pub priority: i32,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// State and counters as of the last append.
    #[serde(flatten)]
    pub progress: Progress,
}

/// The part of a [`JobSummary`] that changes with each append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// The job's state.
    pub state: JobState,
    /// Seq of the last record.
    pub version: u64,
    /// When the last record was journaled.
    pub updated_at: Timestamp,
    /// Number of nodes.
    pub nodes_total: u32,
    /// Nodes finished.
    pub nodes_finished: u32,
    /// Nodes that ended badly.
    pub nodes_failed: u32,
    /// Nodes running now.
    pub nodes_running: u32,
}

/// The failure class an attempt that was in flight in a dead process is
/// recorded with.
pub const INTERRUPTED: FailureClass = FailureClass::Infrastructure;
