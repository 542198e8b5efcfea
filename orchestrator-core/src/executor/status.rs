//! [`JobStatus`]: what a caller sees of a job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::failure::Failure;
use crate::journal::JobView;
use crate::state::{JobState, NodeState};
use crate::time::{JobId, Timestamp};

/// A job's status: its state, progress, and every node's state, attempts,
/// timings and last error. Built from a [`JobView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    /// The job's id.
    pub id: JobId,
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who submitted it.
    pub owner: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its priority.
    pub priority: i32,
    /// Its state.
    pub state: JobState,
    /// Finished nodes over all nodes, in percent (one decimal).
    pub progress_percent: f64,
    /// Number of nodes.
    pub nodes_total: u32,
    /// Nodes finished (any outcome).
    pub nodes_finished: u32,
    /// Nodes that ended badly.
    pub nodes_failed: u32,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When its journal last changed.
    pub updated_at: Timestamp,
    /// Its journal version (seq of the last record).
    pub version: u64,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// Every node, in spec order.
    pub nodes: Vec<NodeStatus>,
}

/// One node of a [`JobStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    /// The node id.
    pub id: String,
    /// Its runner type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its state.
    pub state: NodeState,
    /// Attempts started.
    pub attempts: u32,
    /// When its first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// From its first attempt's start to its end (or to now, if running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When its pending retry is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Its latest failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
    /// The successful attempt's output.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub output: Value,
    /// It failed, then passed on a retry, in this run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
    /// It runs quarantined: its failure neither fails the job nor blocks
    /// downstream nodes (see [`crate::flaky`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

impl JobStatus {
    /// The status of `view` as of `now` (used for running durations).
    pub fn from_view(view: &JobView, now: Timestamp) -> Self {
        let spec = view.spec();
        let nodes = view
            .nodes
            .iter()
            .zip(spec.nodes())
            .map(|(n, s)| {
                let end = if n.state().is_finished() {
                    n.finished_at
                } else {
                    Some(now)
                };
                NodeStatus {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    state: n.state(),
                    attempts: n.machine.attempts,
                    started_at: n.first_started_at,
                    finished_at: n.finished_at.filter(|_| n.state().is_finished()),
                    duration_ms: n
                        .first_started_at
                        .zip(end)
                        .map(|(a, b)| b.saturating_since(a)),
                    retry_at: n.retry_at.filter(|_| n.state() == NodeState::RetryWaiting),
                    last_error: n.last_error.as_deref().cloned(),
                    output: n.output.clone(),
                    flaky: n.flaky(),
                    quarantined: n.quarantined,
                }
            })
            .collect();
        Self {
            id: view.id().clone(),
            name: spec.name.clone(),
            description: spec.description.clone(),
            owner: view.header.owner.clone(),
            labels: spec.labels.clone(),
            priority: spec.priority,
            state: view.state,
            progress_percent: view.progress_percent(),
            nodes_total: view.nodes.len() as u32,
            nodes_finished: view.finished_nodes(),
            nodes_failed: view.failed_nodes(),
            created_at: view.header.created_at,
            started_at: view.started_at,
            finished_at: view.finished_at,
            updated_at: view.updated_at,
            version: view.version,
            cancel_reason: view.cancel_reason.clone(),
            nodes,
        }
    }

    /// The node with id `id`.
    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
