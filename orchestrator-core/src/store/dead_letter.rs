//! The dead-letter queue: [`DeadLetter`] entries, their queries, and the
//! [`DeadLetterStore`] trait every [`Store`](super::Store) implements.
//!
//! A node lands here when it failed for good — its retries are exhausted,
//! or it failed with a class its policy never retries — or when its
//! compensation failed for good during a rollback. The **journal stays the
//! source of truth**: the executor journals `node.dead_lettered` first and
//! writes the entry only once that record is durable, so every entry can be
//! rebuilt from its job's journal ([`from_journal`]), and recovery re-writes
//! entries a crash left unwritten. Requeue and discard are journaled the
//! same way before the entry is resolved here.
//!
//! # Contract
//!
//! - **Idempotent, monotone upsert.** [`DeadLetterStore::put_dead_letter`]
//!   inserts an entry or merges it into the stored one with
//!   [`DeadLetter::merge`]: a resolved entry never becomes open again, and a
//!   stored resolution wins over an incoming one. Writing the same entry
//!   twice changes nothing, so re-writing after a crash is always safe.
//! - **Compare-and-set resolution.** [`DeadLetterStore::resolve_dead_letter`]
//!   resolves an *open* entry atomically; an entry already requeued or
//!   discarded is [`Resolve::Conflict`], never overwritten.
//! - **Listing** filters and paginates newest first (creation time, then
//!   id) by an opaque cursor, like jobs.
//!
//! Entry ids are `<job>.<node index>.<n>`: the `n`-th time that node of that
//! job was dead-lettered (from 1). Node *ids* may hold any character but
//! control characters, so the node's index (its position in the spec, which
//! journal records use too) keeps the id unambiguous and URL-safe.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::failure::Failure;
use crate::journal::{Event, Record};
use crate::time::{JobId, Timestamp};

/// The stable id of a dead-letter entry: `<job>.<node index>.<n>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterId {
    /// The job.
    pub job: JobId,
    /// The node's index in the job's spec.
    pub node: u32,
    /// Which dead letter of that node (from 1): a requeued node that fails
    /// for good again gets the next number.
    pub n: u32,
}

impl DeadLetterId {
    /// The id of the `n`-th dead letter of `node` in `job`.
    pub fn new(job: JobId, node: u32, n: u32) -> Self {
        Self { job, node, n }
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.job, self.node, self.n)
    }
}

/// Why a string is not a [`DeadLetterId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid dead-letter id {0:?}: expected <job>.<node index>.<n>")]
pub struct InvalidDeadLetterId(String);

impl FromStr for DeadLetterId {
    type Err = InvalidDeadLetterId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidDeadLetterId(s.chars().take(100).collect());
        let mut parts = s.split('.');
        let (Some(job), Some(node), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(node) || !digits(n) {
            return Err(bad());
        }
        let n: u32 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(Self {
            job: job.parse().map_err(|_| bad())?,
            node: node.parse().map_err(|_| bad())?,
            n,
        })
    }
}

impl Serialize for DeadLetterId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeadLetterId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a node was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Every attempt its retry policy allows failed.
    RetriesExhausted,
    /// It failed with a class its retry policy never retries (e.g.
    /// `permanent`), so it was not retried.
    NonRetryable,
    /// Its compensation failed for good during a rollback.
    CompensationFailed,
}

impl DeadLetterReason {
    /// Every reason.
    pub const ALL: [DeadLetterReason; 3] = [
        Self::RetriesExhausted,
        Self::NonRetryable,
        Self::CompensationFailed,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries_exhausted",
            Self::NonRetryable => "non_retryable",
            Self::CompensationFailed => "compensation_failed",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown dead-letter reason {s:?} (retries_exhausted, non_retryable, compensation_failed)")
            })
    }
}

/// Where an entry is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Waiting for someone to requeue or discard it.
    #[default]
    Open,
    /// Its node was run again.
    Requeued,
    /// Someone decided to leave it, with a reason.
    Discarded,
}

impl DeadLetterStatus {
    /// Every status.
    pub const ALL: [DeadLetterStatus; 3] = [Self::Open, Self::Requeued, Self::Discarded];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Requeued => "requeued",
            Self::Discarded => "discarded",
        }
    }
}

impl fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown dead-letter status {s:?} (open, requeued, discarded)"))
    }
}

/// What was decided after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptDecision {
    /// The attempt has no recorded end (its process stopped; recovery
    /// records it as interrupted).
    InFlight,
    /// It succeeded.
    Succeeded,
    /// It failed and another attempt was scheduled after `retry_in_ms`.
    Retry,
    /// It failed and no attempt followed.
    GiveUp,
}

/// One attempt in a dead letter's history, taken from the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptHistory {
    /// The attempt's number (compensation attempts are numbered apart).
    pub attempt: u32,
    /// Whether it ran the node's compensation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensation: bool,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// How it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The retry delay decided after it, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// What was decided after it.
    pub decision: AttemptDecision,
}

/// Who resolved an entry, when, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resolution {
    /// `requeued` or `discarded`.
    pub status: DeadLetterStatus,
    /// Who did it (a JWT subject, `"local"` from the CLI).
    pub by: String,
    /// When it was journaled.
    pub at: Timestamp,
    /// Why (required for a discard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One entry of the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// `<job>.<node index>.<n>`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: DeadLetterId,
    /// The job.
    pub job: JobId,
    /// The job's name.
    pub job_name: String,
    /// The job's owner.
    pub owner: String,
    /// The node's id.
    pub node: String,
    /// The node's index in the spec.
    pub node_index: u32,
    /// The node's type.
    pub node_type: String,
    /// The node's params.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Why it is here.
    pub reason: DeadLetterReason,
    /// The last failure.
    pub failure: Failure,
    /// Every attempt that led here (since the node's previous requeue), in
    /// order: compensation attempts for `compensation_failed`.
    pub attempts: Vec<AttemptHistory>,
    /// When the node was dead-lettered.
    pub created_at: Timestamp,
    /// Open, requeued or discarded.
    pub status: DeadLetterStatus,
    /// Who resolved it, when and why; `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

impl DeadLetter {
    /// What storing `incoming` over `stored` (same id) leaves: the incoming
    /// facts, with the stored resolution if there is one (a resolved entry
    /// never becomes open again, and the first resolution wins). `None` when
    /// nothing would change.
    pub fn merge(stored: &DeadLetter, incoming: &DeadLetter) -> Option<DeadLetter> {
        let mut next = incoming.clone();
        if stored.status != DeadLetterStatus::Open {
            next.status = stored.status;
            next.resolution = stored.resolution.clone();
        }
        (next != *stored).then_some(next)
    }

    /// This entry resolved by `resolution`.
    pub fn resolved(&self, resolution: Resolution) -> DeadLetter {
        let mut next = self.clone();
        next.status = resolution.status;
        next.resolution = Some(resolution);
        next
    }
}

/// Filters and pagination for [`DeadLetterStore::list_dead_letters`]; all
/// filters combine with AND; results are newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only this job's entries.
    pub job: Option<JobId>,
    /// Only entries of this owner's jobs.
    pub owner: Option<String>,
    /// Only entries of nodes of this type.
    pub node_type: Option<String>,
    /// Only entries in one of these statuses (empty: any).
    pub statuses: Vec<DeadLetterStatus>,
    /// Only entries with one of these reasons (empty: any).
    pub reasons: Vec<DeadLetterReason>,
    /// Only entries created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only entries created before this time.
    pub created_before: Option<Timestamp>,
    /// Page size, 1 to [`DeadLetterQuery::MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this position (from [`DeadLetterPage::next_cursor`]).
    pub cursor: Option<DeadLetterCursor>,
}

impl Default for DeadLetterQuery {
    fn default() -> Self {
        Self {
            job: None,
            owner: None,
            node_type: None,
            statuses: Vec::new(),
            reasons: Vec::new(),
            created_after: None,
            created_before: None,
            limit: 50,
            cursor: None,
        }
    }
}

impl DeadLetterQuery {
    /// Largest page.
    pub const MAX_LIMIT: usize = 1000;

    /// Checks the limit; stores call this first.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(StoreError::Invalid(format!(
                "limit must be between 1 and {}, got {}",
                Self::MAX_LIMIT,
                self.limit
            )));
        }
        Ok(())
    }

    /// Whether `d` passes every filter and comes after the cursor.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.job.as_ref().is_none_or(|j| *j == d.job)
            && self.owner.as_ref().is_none_or(|o| *o == d.owner)
            && self.node_type.as_ref().is_none_or(|t| *t == d.node_type)
            && (self.statuses.is_empty() || self.statuses.contains(&d.status))
            && (self.reasons.is_empty() || self.reasons.contains(&d.reason))
            && self.created_after.is_none_or(|t| d.created_at >= t)
            && self.created_before.is_none_or(|t| d.created_at < t)
            && self.cursor.as_ref().is_none_or(|c| c.is_before(d))
    }

    /// Sorts `hits` newest first, cuts the page, and sets its cursor.
    pub fn page(&self, mut hits: Vec<DeadLetter>) -> DeadLetterPage {
        hits.sort_unstable_by(|a, b| DeadLetterCursor::key(b).cmp(&DeadLetterCursor::key(a)));
        let more = hits.len() > self.limit;
        hits.truncate(self.limit);
        let next_cursor = if more {
            hits.last().map(|d| DeadLetterCursor::after(d).to_string())
        } else {
            None
        };
        DeadLetterPage {
            dead_letters: hits,
            next_cursor,
        }
    }
}

/// A position in newest-first order: the last entry of a page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeadLetterCursor {
    /// Creation time of the last entry returned.
    pub created_at: Timestamp,
    /// Its id, as text.
    pub id: String,
}

impl DeadLetterCursor {
    /// The cursor pointing just after `d`.
    pub fn after(d: &DeadLetter) -> Self {
        Self {
            created_at: d.created_at,
            id: d.id.to_string(),
        }
    }

    /// The sort key (ascending; the listing order is its reverse).
    pub fn key(d: &DeadLetter) -> (Timestamp, String) {
        (d.created_at, d.id.to_string())
    }

    /// Whether `d` sorts after this cursor (older, or same time and smaller id).
    pub fn is_before(&self, d: &DeadLetter) -> bool {
        (d.created_at, d.id.to_string()) < (self.created_at, self.id.clone())
    }
}

impl fmt::Display for DeadLetterCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{}", self.created_at.0, self.id)
    }
}

impl FromStr for DeadLetterCursor {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            StoreError::Invalid(format!(
                "malformed cursor {:?}",
                s.chars().take(80).collect::<String>()
            ))
        };
        let (ms, id) = s.split_once('~').ok_or_else(bad)?;
        let id: DeadLetterId = id.parse().map_err(|_| bad())?;
        Ok(Self {
            created_at: Timestamp(ms.parse().map_err(|_| bad())?),
            id: id.to_string(),
        })
    }
}

/// One page of [`DeadLetterStore::list_dead_letters`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetterPage {
    /// The entries, newest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Where the next page starts, `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The outcome of [`DeadLetterStore::resolve_dead_letter`].
#[derive(Clone, Debug, PartialEq)]
pub enum Resolve {
    /// The open entry is resolved now; here it is.
    Done(DeadLetter),
    /// The entry was already resolved; it is unchanged, here it is.
    Conflict(DeadLetter),
    /// No entry has this id.
    Missing,
}

/// The dead-letter part of a [`Store`](super::Store). See the [module
/// docs](self) for the contract.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Inserts `entry`, or merges it into the stored entry with the same id
    /// ([`DeadLetter::merge`]), atomically.
    async fn put_dead_letter(&self, entry: &DeadLetter) -> Result<(), StoreError>;

    /// The entry with this id, if any.
    async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError>;

    /// Entries matching `query`, newest first.
    async fn list_dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, StoreError>;

    /// Resolves the entry if it is open (compare-and-set on its status).
    /// `resolution.status` must be `requeued` or `discarded`.
    async fn resolve_dead_letter(
        &self,
        id: &DeadLetterId,
        resolution: &Resolution,
    ) -> Result<Resolve, StoreError>;
}

/// Implements [`DeadLetterStore`] for a store wrapper by forwarding every
/// method to one of its fields — for wrappers that add behaviour (faults,
/// metrics, logging) to other methods only.
///
/// ```
/// use orchestrator_core::store::MemoryStore;
///
/// struct Logged {
///     inner: MemoryStore,
/// }
/// orchestrator_core::forward_dead_letter_store!(Logged => inner);
/// ```
#[macro_export]
macro_rules! forward_dead_letter_store {
    ($ty:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::store::DeadLetterStore for $ty {
            // (Calls go through the field's own impl: `Arc`s and the like
            // dereference to it.)
            async fn put_dead_letter(
                &self,
                entry: &$crate::store::dead_letter::DeadLetter,
            ) -> Result<(), $crate::StoreError> {
                self.$field.put_dead_letter(entry).await
            }
            async fn dead_letter(
                &self,
                id: &$crate::store::dead_letter::DeadLetterId,
            ) -> Result<Option<$crate::store::dead_letter::DeadLetter>, $crate::StoreError> {
                self.$field.dead_letter(id).await
            }
            async fn list_dead_letters(
                &self,
                query: &$crate::store::dead_letter::DeadLetterQuery,
            ) -> Result<$crate::store::dead_letter::DeadLetterPage, $crate::StoreError> {
                self.$field.list_dead_letters(query).await
            }
            async fn resolve_dead_letter(
                &self,
                id: &$crate::store::dead_letter::DeadLetterId,
                resolution: &$crate::store::dead_letter::Resolution,
            ) -> Result<$crate::store::dead_letter::Resolve, $crate::StoreError> {
                self.$field.resolve_dead_letter(id, resolution).await
            }
        }
    };
}

/// Checks a resolution before a store applies it.
pub fn check_resolution(resolution: &Resolution) -> Result<(), StoreError> {
    if resolution.status == DeadLetterStatus::Open {
        return Err(StoreError::Invalid(
            "a resolution must be requeued or discarded, not open".into(),
        ));
    }
    Ok(())
}

/// The most bytes a discard reason may have.
pub const MAX_REASON_LEN: usize = 1000;

#[derive(Default)]
struct NodeTrack {
    attempts: Vec<AttemptHistory>,
    compensations: Vec<AttemptHistory>,
    dead_letters: u32,
}

fn end(
    list: &mut [AttemptHistory],
    attempt: u32,
    at: Timestamp,
    failure: Option<&Failure>,
    retry_in_ms: Option<u64>,
) {
    if let Some(a) = list.iter_mut().rev().find(|a| a.attempt == attempt) {
        a.ended_at = Some(at);
        a.failure = failure.cloned();
        a.retry_in_ms = retry_in_ms;
        a.decision = match (failure, retry_in_ms) {
            (None, _) => AttemptDecision::Succeeded,
            (Some(_), Some(_)) => AttemptDecision::Retry,
            (Some(_), None) => AttemptDecision::GiveUp,
        };
    }
}

/// Every dead-letter entry a job's journal (from its first record) implies,
/// with its attempt history and, when journaled, its resolution. This is how
/// the executor writes entries and how recovery re-writes them: the store's
/// queue is a projection of the journal.
pub fn from_journal(records: &[Record]) -> Vec<DeadLetter> {
    let Some(Event::Submitted { header }) = records.first().map(|r| &r.event) else {
        return Vec::new();
    };
    let spec = &header.spec;
    let nodes = spec.nodes();
    let mut track: Vec<NodeTrack> = Vec::new();
    track.resize_with(nodes.len(), NodeTrack::default);
    let mut out: Vec<DeadLetter> = Vec::new();
    let started = |attempt, compensation, at| AttemptHistory {
        attempt,
        compensation,
        started_at: at,
        ended_at: None,
        failure: None,
        retry_in_ms: None,
        decision: AttemptDecision::InFlight,
    };
    for r in &records[1..] {
        let Some(t) = r.event.node().and_then(|i| track.get_mut(i as usize)) else {
            continue;
        };
        match &r.event {
            Event::NodeStarted { attempt, .. } => t.attempts.push(started(*attempt, false, r.at)),
            Event::NodeSucceeded { attempt, .. } => {
                end(&mut t.attempts, *attempt, r.at, None, None);
            }
            Event::NodeFailed {
                attempt,
                failure,
                retry_in_ms,
                ..
            } => end(&mut t.attempts, *attempt, r.at, Some(failure), *retry_in_ms),
            Event::CompensationStarted { attempt, .. } => {
                t.compensations.push(started(*attempt, true, r.at));
            }
            Event::CompensationFailed {
                attempt,
                failure,
                retry_in_ms,
                ..
            } => end(
                &mut t.compensations,
                *attempt,
                r.at,
                Some(failure),
                *retry_in_ms,
            ),
            Event::NodeCompensated { attempt, .. } => {
                end(&mut t.compensations, *attempt, r.at, None, None);
            }
            Event::DeadLettered { node, reason } => {
                t.dead_letters += 1;
                let attempts = if *reason == DeadLetterReason::CompensationFailed {
                    t.compensations.clone()
                } else {
                    t.attempts.clone()
                };
                let failure = attempts
                    .iter()
                    .rev()
                    .find_map(|a| a.failure.clone())
                    .unwrap_or_else(|| Failure::new(crate::FailureClass::Unknown, "unknown"));
                let spec_node = &nodes[*node as usize];
                out.push(DeadLetter {
                    id: DeadLetterId::new(header.id.clone(), *node, t.dead_letters),
                    job: header.id.clone(),
                    job_name: spec.name.clone(),
                    owner: header.owner.clone(),
                    node: spec_node.id.clone(),
                    node_index: *node,
                    node_type: spec_node.kind.clone(),
                    params: spec_node.params.clone(),
                    reason: *reason,
                    failure,
                    attempts,
                    created_at: r.at,
                    status: DeadLetterStatus::Open,
                    resolution: None,
                });
            }
            Event::DeadLetterRequeued { node, entry, by } => {
                t.attempts.clear();
                t.compensations.clear();
                resolve_in(
                    &mut out,
                    *node,
                    *entry,
                    Resolution {
                        status: DeadLetterStatus::Requeued,
                        by: by.clone(),
                        at: r.at,
                        reason: None,
                    },
                );
            }
            Event::DeadLetterDiscarded {
                node,
                entry,
                by,
                reason,
            } => resolve_in(
                &mut out,
                *node,
                *entry,
                Resolution {
                    status: DeadLetterStatus::Discarded,
                    by: by.clone(),
                    at: r.at,
                    reason: Some(reason.clone()),
                },
            ),
            _ => {}
        }
    }
    out
}

fn resolve_in(out: &mut [DeadLetter], node: u32, n: u32, resolution: Resolution) {
    if let Some(d) = out
        .iter_mut()
        .find(|d| d.id.node == node && d.id.n == n && d.status == DeadLetterStatus::Open)
    {
        d.status = resolution.status;
        d.resolution = Some(resolution);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id: DeadLetterId = "JOB-1.3.2".parse().unwrap();
        assert_eq!((id.job.as_str(), id.node, id.n), ("JOB-1", 3, 2));
        assert_eq!(id.to_string(), "JOB-1.3.2");
        for bad in [
            "",
            "a",
            "a.1",
            "a.1.0",
            "a.1.2.3",
            "a.x.1",
            "a.1.-1",
            ".1.1",
            "a b.1.1",
            "a.+1.1",
            "a.99999999999.1",
        ] {
            assert!(
                bad.parse::<DeadLetterId>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c: DeadLetterCursor = "17~JOB.1.1".parse().unwrap();
        assert_eq!(c.to_string(), "17~JOB.1.1");
        for bad in ["", "17", "x~JOB.1.1", "17~JOB", "17~JOB.1.0"] {
            assert!(bad.parse::<DeadLetterCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_and_reasons_parse_their_names() {
        for s in DeadLetterStatus::ALL {
            assert_eq!(s.as_str().parse::<DeadLetterStatus>(), Ok(s));
        }
        for r in DeadLetterReason::ALL {
            assert_eq!(r.as_str().parse::<DeadLetterReason>(), Ok(r));
        }
        assert!("closed".parse::<DeadLetterStatus>().is_err());
        assert!("oops".parse::<DeadLetterReason>().is_err());
    }
}

#[cfg(test)]
mod merge_props {
    use super::*;
    use proptest::prelude::*;

    fn entry(attempts: usize, status: DeadLetterStatus, by: &str) -> DeadLetter {
        let failure = Failure::transient("boom");
        let mut d = DeadLetter {
            id: "JOB.1.1".parse().expect("a valid id"),
            job: "JOB".parse().expect("a valid job id"),
            job_name: "job".into(),
            owner: "alice".into(),
            node: "n".into(),
            node_index: 1,
            node_type: "noop".into(),
            params: Value::Null,
            reason: DeadLetterReason::RetriesExhausted,
            failure: failure.clone(),
            attempts: (1..=attempts as u32)
                .map(|attempt| AttemptHistory {
                    attempt,
                    compensation: false,
                    started_at: Timestamp(attempt.into()),
                    ended_at: None,
                    failure: Some(failure.clone()),
                    retry_in_ms: None,
                    decision: AttemptDecision::GiveUp,
                })
                .collect(),
            created_at: Timestamp(1),
            status: DeadLetterStatus::Open,
            resolution: None,
        };
        if status != DeadLetterStatus::Open {
            d = d.resolved(Resolution {
                status,
                by: by.into(),
                at: Timestamp(2),
                reason: None,
            });
        }
        d
    }

    fn any_entry() -> impl Strategy<Value = DeadLetter> {
        (
            0usize..4,
            prop::sample::select(DeadLetterStatus::ALL.to_vec()),
            prop::sample::select(vec!["bob", "eve"]),
        )
            .prop_map(|(n, s, by)| entry(n, s, by))
    }

    proptest! {
        /// Whatever sequence of writes lands, the stored entry is never
        /// reopened, its first resolution is kept, and repeating the last
        /// write changes nothing.
        #[test]
        fn merges_are_monotone_and_idempotent(writes in prop::collection::vec(any_entry(), 1..12)) {
            let mut stored: Option<DeadLetter> = None;
            let mut first_resolution: Option<Resolution> = None;
            for w in &writes {
                let next = match &stored {
                    None => Some(w.clone()),
                    Some(s) => DeadLetter::merge(s, w),
                };
                if let Some(next) = next {
                    if let Some(s) = &stored {
                        prop_assert!(s.status == DeadLetterStatus::Open || next.status == s.status);
                    }
                    stored = Some(next);
                }
                let s = stored.as_ref().expect("written");
                if first_resolution.is_none() {
                    first_resolution = s.resolution.clone();
                }
                prop_assert_eq!(&s.resolution, &first_resolution);
                prop_assert_eq!(s.status == DeadLetterStatus::Open, s.resolution.is_none());
                prop_assert_eq!(DeadLetter::merge(s, w), None, "a repeat changes nothing");
                prop_assert_eq!(&s.attempts, &w.attempts, "facts follow the latest write");
            }
        }
    }
}
