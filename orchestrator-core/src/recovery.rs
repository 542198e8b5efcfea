//! Recovery and escalation events: what the engine journals when it heals a
//! job by itself (`recovery.initiated` / `recovery.completed`) and when it
//! cannot and a person must act (`escalation.required`).
//!
//! These records change no state; they exist so that operators are told
//! (through the event feed and the [`crate::notify`] sinks) and so that the
//! recovery journal can be analysed afterwards ([`crate::analytics`]). They
//! are journaled like everything else, before anything is published, so a
//! restarted process never loses or repeats one.
//!
//! Which recovery records follow a journaled record is decided by one pure
//! function, [`follow_up`], over the job's folded view. The scheduler calls
//! it for every record it journals, so the rules live here and nowhere else:
//!
//! | kind | initiated when | completed when |
//! |---|---|---|
//! | `infrastructure_retry` | a node's attempt failed with class `infrastructure` and a retry is scheduled | the node then succeeds (`succeeded`), or ends otherwise (`failed`, `cancelled`) |
//! | `restart_resume` | an executor takes an unfinished job back from an exclusive store (sled, an exclusive memory store) after a restart | the job finishes (outcome from its final state) |
//! | `takeover` | an executor claims a job from a shared store (MongoDB) whose lease lapsed | as `restart_resume` |
//!
//! One recovery is open per node and per job at a time: a second
//! infrastructure failure of a node already recovering, or a second restart
//! of a job already recovering, extends the open recovery rather than
//! starting another.

use serde::{Deserialize, Serialize};

use crate::failure::FailureClass;
use crate::journal::{Event, JobView, Record};
use crate::state::{JobState, NodeState};

/// What kind of automatic recovery a `recovery.*` event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryKind {
    /// A node is retried after an infrastructure-class failure (a lost
    /// worker, a killed process, an attempt interrupted by a crash).
    InfrastructureRetry,
    /// A job is resumed from its journal after the process running it died.
    RestartResume,
    /// A job is taken over by another process after its lease expired.
    Takeover,
}

impl RecoveryKind {
    /// The name used in events and statistics, e.g. `infrastructure_retry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InfrastructureRetry => "infrastructure_retry",
            Self::RestartResume => "restart_resume",
            Self::Takeover => "takeover",
        }
    }
}

/// How an automatic recovery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// The node succeeded, or the job finished well (succeeded, rolled back).
    Succeeded,
    /// The node or job ended badly anyway.
    Failed,
    /// Someone cancelled it before it could recover.
    Cancelled,
}

impl RecoveryOutcome {
    /// The outcome of a recovered node that ended in `state`.
    pub fn of_node(state: NodeState) -> Self {
        match state {
            NodeState::Succeeded | NodeState::Compensating | NodeState::Compensated => {
                Self::Succeeded
            }
            NodeState::Cancelled => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// The outcome of a recovered job that finished in `state`.
    pub fn of_job(state: JobState) -> Self {
        match state {
            JobState::Succeeded | JobState::RolledBack => Self::Succeeded,
            JobState::Cancelled => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// Why a person's attention is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EscalationCause {
    /// A node was put in the dead-letter queue: it failed for good and
    /// waits for a requeue or a discard.
    DeadLettered,
    /// A node's compensation kept failing, so it is dead-lettered.
    CompensationDeadLettered,
    /// A rollback ended with a compensation dead-lettered.
    RollbackIncomplete,
    /// A job made no progress for longer than it may wait although its
    /// owner is alive and holds its lease: the owner's scheduler is wedged,
    /// the job's appends keep failing, or it waits for something that does
    /// not come (see [`crate::sweep`]). A dead owner's jobs are not stuck:
    /// another executor takes them over when their lease lapses.
    JobStuck,
}

impl EscalationCause {
    /// The name used in events, e.g. `dead_lettered`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadLettered => "dead_lettered",
            Self::CompensationDeadLettered => "compensation_dead_lettered",
            Self::RollbackIncomplete => "rollback_incomplete",
            Self::JobStuck => "job_stuck",
        }
    }
}

/// The `escalation.required` record to journal when node `node` (index;
/// `node_id` is its id, for the message) is put in the dead-letter queue,
/// with `detail` saying why (e.g. the last failure's message).
///
/// The dead-letter queue journals it in the same append as the transition
/// that dead-letters the node, so the escalation is published exactly when
/// the dead-lettering is durable.
pub fn dead_letter_escalation(node: u32, node_id: &str, detail: &str) -> Event {
    Event::EscalationRequired {
        node: Some(node),
        cause: Some(EscalationCause::DeadLettered),
        reason: format!("node {node_id:?} was dead-lettered: {detail}"),
    }
}

/// The `escalation.required` record for a job that made no progress for
/// `since_ms` milliseconds. The stuck-job sweeper ([`crate::sweep`])
/// journals it, or publishes it unjournaled when the job's journal cannot
/// take it.
pub fn stuck_job_escalation(since_ms: u64) -> Event {
    Event::EscalationRequired {
        node: None,
        cause: Some(EscalationCause::JobStuck),
        reason: format!("the job made no progress for {since_ms} ms"),
    }
}

/// The recovery record that must follow `record`, given `view`, the job's
/// fold *including* `record`; `None` when none does. `resume` is what a
/// job-wide recovery (`execution.recovering`) is here: `restart_resume` or
/// `takeover`. See the module docs for the rules.
pub fn follow_up(view: &JobView, record: &Record, resume: RecoveryKind) -> Option<Event> {
    match &record.event {
        Event::RecoveryStarted if view.recovery.is_none() => Some(Event::RecoveryInitiated {
            kind: resume,
            node: None,
        }),
        Event::Finished { state } => view.recovery.map(|kind| Event::RecoveryCompleted {
            kind,
            node: None,
            outcome: RecoveryOutcome::of_job(*state),
        }),
        Event::NodeFailed {
            node,
            failure,
            retry_in_ms: Some(_),
            ..
        } if failure.class == FailureClass::Infrastructure => {
            let open = view.nodes.get(*node as usize)?.recovery;
            open.is_none().then_some(Event::RecoveryInitiated {
                kind: RecoveryKind::InfrastructureRetry,
                node: Some(*node),
            })
        }
        Event::RecoveryInitiated { .. } | Event::RecoveryCompleted { .. } => None,
        event => {
            let node = event.node()?;
            let view = view.nodes.get(node as usize)?;
            let kind = view.recovery?;
            let state = view.state();
            state.is_finished().then(|| Event::RecoveryCompleted {
                kind,
                node: Some(node),
                outcome: RecoveryOutcome::of_node(state),
            })
        }
    }
}
