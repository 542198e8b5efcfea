//! Recovery analytics: what the recovery journal says about how well the
//! engine heals itself — mean time to recovery, the share of failures
//! recovered automatically, retries per node type.
//!
//! The journal already holds every attempt, failure and retry decision, so
//! the statistics are a pure fold over journals ([`StatsBuilder`]); nothing
//! extra is recorded for them, and they can be recomputed for any past
//! period. [`collect`] selects the jobs with a [`JobQuery`] (owner, creation
//! time range) and feeds their journals through the fold; the HTTP adapter
//! (`GET /api/v1/orchestration/stats`) and the CLI (`orchestrator stats`)
//! show its result.
//!
//! Definitions, per job run:
//!
//! - a **failure** is a node with at least one failed attempt. It is
//!   **recovered** when the node then succeeds in the same run (every retry is
//!   automatic; a rerun by a person is a new run and does not count), and
//!   **unrecovered** when the node ends otherwise (failed, timed out,
//!   cancelled, upstream failed). Nodes still retrying are **open**.
//! - **time to recovery** runs from the node's first failed attempt to its
//!   success; the mean is over recovered failures.
//! - **retries** of a node are its attempts after the first.
//! - **recoveries** count the journaled `recovery.initiated` /
//!   `recovery.completed` pairs by kind (see [`crate::recovery`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{Event, Record};
use crate::recovery::RecoveryOutcome;
use crate::store::{Cursor, JobQuery, Store, StoreError, StoreExt};
use crate::time::Timestamp;

/// Recovery statistics over a set of jobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryStats {
    /// Jobs whose journals were read.
    pub jobs: u64,
    /// Journals skipped because they do not start with a submission (or
    /// could not be read).
    #[serde(default)]
    pub jobs_unreadable: u64,
    /// Whether more jobs matched than were read (see [`collect`]'s limit).
    #[serde(default)]
    pub truncated: bool,
    /// Nodes that ran at least one attempt.
    pub nodes: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Failed attempts by failure class (`transient`, `infrastructure`, …).
    pub failed_attempts_by_class: BTreeMap<String, u64>,
    /// Nodes with at least one failed attempt.
    pub failures: u64,
    /// Failures whose node then succeeded in the same run.
    pub recovered: u64,
    /// Failures whose node ended without succeeding.
    pub unrecovered: u64,
    /// Failures whose node is still retrying.
    pub open: u64,
    /// `recovered / (recovered + unrecovered)`; absent without finished
    /// failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_share: Option<f64>,
    /// Mean time from a node's first failure to its success, over recovered
    /// failures, in milliseconds (rounded); absent without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_time_to_recovery_ms: Option<u64>,
    /// The longest such time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_to_recovery_ms: Option<u64>,
    /// Attempts and retries by node type.
    pub node_types: BTreeMap<String, NodeTypeStats>,
    /// Journaled automatic recoveries by kind (`infrastructure_retry`,
    /// `restart_resume`, `takeover`).
    pub recoveries: BTreeMap<String, RecoveryKindStats>,
    /// `escalation.required` events.
    pub escalations: u64,
}

/// Attempts and retries of one node type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeTypeStats {
    /// Nodes of this type that ran at least one attempt.
    pub nodes: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Their attempts after the first.
    pub retries: u64,
    /// `retries / nodes`.
    pub retries_per_node: f64,
}

/// Journaled recoveries of one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryKindStats {
    /// `recovery.initiated` events.
    pub initiated: u64,
    /// Recoveries completed with outcome `succeeded`.
    pub succeeded: u64,
    /// Recoveries completed with outcome `failed`.
    pub failed: u64,
    /// Recoveries completed with outcome `cancelled`.
    pub cancelled: u64,
    /// Mean time from initiated to completed, in milliseconds (rounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_duration_ms: Option<u64>,
}

/// Folds journals into [`RecoveryStats`], one job at a time.
#[derive(Clone, Debug, Default)]
pub struct StatsBuilder {
    stats: RecoveryStats,
    ttr_sum: u128,
    durations: BTreeMap<String, (u128, u64)>,
}

#[derive(Clone, Copy, Default)]
struct NodeTrack {
    attempts: u32,
    first_failure: Option<Timestamp>,
    ended: bool,
}

impl StatsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one job's whole journal (from seq 1).
    pub fn add(&mut self, records: &[Record]) {
        let Some(Event::Submitted { header }) = records.first().map(|r| &r.event) else {
            self.stats.jobs_unreadable += 1;
            return;
        };
        let spec = &header.spec;
        let nodes = spec.nodes();
        let mut track = vec![NodeTrack::default(); nodes.len()];
        let mut open_recoveries: BTreeMap<Option<u32>, Timestamp> = BTreeMap::new();
        let s = &mut self.stats;
        s.jobs += 1;
        for r in &records[1..] {
            let node = r.event.node().and_then(|i| track.get_mut(i as usize));
            match (&r.event, node) {
                (Event::NodeStarted { .. }, Some(t)) => {
                    t.attempts += 1;
                    s.attempts += 1;
                }
                (
                    Event::NodeFailed {
                        failure,
                        retry_in_ms,
                        ..
                    },
                    Some(t),
                ) => {
                    s.failed_attempts += 1;
                    *s.failed_attempts_by_class
                        .entry(failure.class.to_string())
                        .or_default() += 1;
                    t.first_failure.get_or_insert(r.at);
                    if retry_in_ms.is_none() && !t.ended {
                        t.ended = true;
                        s.unrecovered += 1;
                    }
                }
                (Event::NodeSucceeded { .. }, Some(t)) => {
                    if let (Some(first), false) = (t.first_failure, t.ended) {
                        let ttr = r.at.saturating_since(first);
                        s.recovered += 1;
                        self.ttr_sum += u128::from(ttr);
                        s.max_time_to_recovery_ms = s.max_time_to_recovery_ms.max(Some(ttr));
                    }
                    t.ended = true;
                }
                (Event::NodeCancelled { .. } | Event::NodeUpstreamFailed { .. }, Some(t)) => {
                    if t.first_failure.is_some() && !t.ended {
                        s.unrecovered += 1;
                    }
                    t.ended = true;
                }
                (Event::RecoveryInitiated { kind, node }, _) => {
                    s.recoveries
                        .entry(kind.as_str().to_owned())
                        .or_default()
                        .initiated += 1;
                    open_recoveries.insert(*node, r.at);
                }
                (
                    Event::RecoveryCompleted {
                        kind,
                        node,
                        outcome,
                    },
                    _,
                ) => {
                    let k = s.recoveries.entry(kind.as_str().to_owned()).or_default();
                    match outcome {
                        RecoveryOutcome::Succeeded => k.succeeded += 1,
                        RecoveryOutcome::Failed => k.failed += 1,
                        RecoveryOutcome::Cancelled => k.cancelled += 1,
                    }
                    if let Some(start) = open_recoveries.remove(node) {
                        let d = self.durations.entry(kind.as_str().to_owned()).or_default();
                        d.0 += u128::from(r.at.saturating_since(start));
                        d.1 += 1;
                    }
                }
                (Event::EscalationRequired { .. }, _) => s.escalations += 1,
                _ => {}
            }
        }
        for (t, spec) in track.iter().zip(nodes) {
            if t.attempts == 0 {
                continue;
            }
            s.nodes += 1;
            if t.first_failure.is_some() {
                s.failures += 1;
                if !t.ended {
                    s.open += 1;
                }
            }
            let ty = s.node_types.entry(spec.kind.clone()).or_default();
            ty.nodes += 1;
            ty.attempts += u64::from(t.attempts);
            ty.retries += u64::from(t.attempts - 1);
        }
    }

    /// Marks the statistics as covering only part of the matching jobs.
    pub fn truncated(&mut self) {
        self.stats.truncated = true;
    }

    /// The statistics.
    pub fn finish(self) -> RecoveryStats {
        let mut s = self.stats;
        let finished = s.recovered + s.unrecovered;
        s.recovered_share = (finished > 0).then(|| s.recovered as f64 / finished as f64);
        s.mean_time_to_recovery_ms = mean(self.ttr_sum, s.recovered);
        for t in s.node_types.values_mut() {
            t.retries_per_node = t.retries as f64 / t.nodes.max(1) as f64;
        }
        for (kind, (sum, n)) in self.durations {
            if let Some(k) = s.recoveries.get_mut(&kind) {
                k.mean_duration_ms = mean(sum, n);
            }
        }
        s
    }
}

fn mean(sum: u128, n: u64) -> Option<u64> {
    (n > 0).then(|| ((sum + u128::from(n) / 2) / u128::from(n)) as u64)
}

/// [`StatsBuilder`] over `journals`.
pub fn recovery_stats<'a>(journals: impl IntoIterator<Item = &'a [Record]>) -> RecoveryStats {
    let mut b = StatsBuilder::new();
    for j in journals {
        b.add(j);
    }
    b.finish()
}

/// Most jobs [`collect`] reads by default.
pub const DEFAULT_MAX_JOBS: usize = 1000;

/// Statistics over the jobs `query` selects (its owner, states, labels and
/// creation-time range; its page size and cursor are ignored), newest first,
/// reading at most `max_jobs` journals (then [`RecoveryStats::truncated`]).
pub async fn collect(
    store: &dyn Store,
    query: &JobQuery,
    max_jobs: usize,
) -> Result<RecoveryStats, StoreError> {
    let mut q = query.clone();
    q.limit = JobQuery::MAX_LIMIT.min(max_jobs.max(1));
    q.cursor = None;
    let mut b = StatsBuilder::new();
    let mut read = 0;
    loop {
        let page = store.list_jobs(&q).await?;
        for job in &page.jobs {
            if read == max_jobs {
                b.truncated();
                return Ok(b.finish());
            }
            read += 1;
            match store.read_all(&job.id, 0).await {
                Ok(records) => b.add(&records),
                // Deleted between listing and reading: not part of the set.
                Err(StoreError::NotFound { .. }) => read -= 1,
                Err(e) => return Err(e),
            }
        }
        match page.next_cursor {
            Some(c) => {
                q.cursor = Some(c.parse::<Cursor>()?);
            }
            None => return Ok(b.finish()),
        }
    }
}
