//! Persistence: the [`Store`] trait, its error type, queries, and the
//! in-memory implementation [`MemoryStore`].
//!
//! # Contract
//!
//! A store keeps, per job, an append-only journal of [`Record`]s numbered
//! from 1 without gaps, a [`JobSummary`] that always agrees with the
//! journal, and at most one [`Snapshot`]. Every method takes `&self`; a store
//! is shared by the executor, the HTTP adapter and the CLI at once.
//!
//! - **Compare-and-set appends.** [`Store::append`] writes records
//!   `expected + 1 ..` only if the job's current version is `expected`, and
//!   updates the summary's [`Progress`] in the same atomic step. A different
//!   version is [`StoreError::Conflict`], an outcome distinct from a storage
//!   failure: someone else wrote.
//! - **Idempotent replays.** An append whose records are already stored,
//!   identical, at those positions succeeds without writing again. After a
//!   timeout the caller cannot know whether its append landed; retrying it is
//!   always safe.
//! - **Durability.** When `append` or `create_job` returns `Ok`, the write
//!   survives the process being killed (each backend documents exactly what
//!   else it survives).
//! - **Listing without replay.** [`Store::list_jobs`] filters and paginates
//!   summaries, newest first, by an opaque cursor.
//! - **Bad input never corrupts.** A rejected call leaves stored data as it
//!   was; stored data that fails to decode is [`StoreError::Corrupt`], naming
//!   the job and key, and other jobs keep working.
//!
//! Every backend runs the conformance suite in `orchestrator_core::testkit` (feature
//! `testkit`) unchanged.
//!
//! Beyond jobs, a store keeps the dead-letter queue ([`DeadLetterStore`],
//! module [`dead_letter`]) and test histories ([`TestHistoryStore`], module
//! [`history`]), supertraits of [`Store`] with their own contracts.

pub mod dead_letter;
pub mod history;
pub mod lease;
mod memory;
mod memory_history;
mod memory_journal;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::journal::{JobSummary, Progress, Record, Snapshot};
use crate::state::JobState;
use crate::time::{JobId, Timestamp};

pub use dead_letter::DeadLetterStore;
pub use history::{HistoryPage, HistoryQuery, TestHistory, TestHistoryStore};
pub use lease::{Lease, LeaseStore};
pub use memory::MemoryStore;
pub use policy::PolicyStore;

/// Backend-neutral store errors, split by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job with this id.
    #[error("job {job} not found")]
    NotFound {
        /// The job.
        job: JobId,
    },
    /// `create_job` for an id that exists.
    #[error("job {job} already exists")]
    AlreadyExists {
        /// The job.
        job: JobId,
    },
    /// The job's version is not the expected one: someone else appended.
    #[error("version conflict on job {job}: expected {expected}, found {actual}")]
    Conflict {
        /// The job.
        job: JobId,
        /// The version the caller expected.
        expected: u64,
        /// The version in the store.
        actual: u64,
    },
    /// The writer's fencing token is older than the job's: another process
    /// took the job over (see [`lease`]). Nothing was written; the writer
    /// must stop working on the job.
    #[error("job {job} was taken over: fencing token {token} is stale, the job's is {current}")]
    Fenced {
        /// The job.
        job: JobId,
        /// The writer's token.
        token: u64,
        /// The job's token.
        current: u64,
    },
    /// A claim found the job's lease held by someone, live until
    /// `expires_at`.
    #[error("job {job} is leased by {owner} until epoch ms {}", expires_at.0)]
    LeaseHeld {
        /// The job.
        job: JobId,
        /// The holder.
        owner: String,
        /// When the lease lapses unless renewed.
        expires_at: Timestamp,
    },
    /// A stored policy version exists with a different body: versions are
    /// immutable.
    #[error(
        "policy {name}@{version} already exists with a different body; versions are immutable"
    )]
    PolicyConflict {
        /// The policy's name.
        name: String,
        /// The version.
        version: u32,
    },
    /// The call itself is malformed (records out of sequence, a bad cursor,
    /// a limit out of range). Nothing was written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Stored data failed to decode.
    #[error("corrupt record for job {job:?} at key {key}: {message}")]
    Corrupt {
        /// The job, when known.
        job: Option<JobId>,
        /// The backend key.
        key: String,
        /// What failed.
        message: String,
    },
    /// The backend is unreachable or overloaded; retrying later may work.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Any other backend failure.
    #[error("store failure: {message}")]
    Backend {
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Backend { .. })
    }
}

/// Filters and pagination for [`Store::list_jobs`]. All filters combine
/// with AND; results are newest first (by creation time, then id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this owner's jobs.
    pub owner: Option<String>,
    /// Only jobs in one of these states (empty: any).
    pub states: Vec<JobState>,
    /// Only jobs whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// Only jobs carrying all of these labels.
    pub labels: BTreeMap<String, String>,
    /// Only jobs created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only jobs created before this time.
    pub created_before: Option<Timestamp>,
    /// Page size, 1 to [`JobQuery::MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this position (from [`JobPage::next_cursor`]).
    pub cursor: Option<Cursor>,
}

impl Default for JobQuery {
    fn default() -> Self {
        Self {
            owner: None,
            states: Vec::new(),
            name: None,
            labels: BTreeMap::new(),
            created_after: None,
            created_before: None,
            limit: 50,
            cursor: None,
        }
    }
}

impl JobQuery {
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

    /// Whether `s` passes every filter (the cursor aside).
    pub fn matches(&self, s: &JobSummary) -> bool {
        self.owner.as_ref().is_none_or(|o| *o == s.owner)
            && (self.states.is_empty() || self.states.contains(&s.progress.state))
            && self
                .name
                .as_ref()
                .is_none_or(|n| s.name.to_lowercase().contains(&n.to_lowercase()))
            && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            && self.created_after.is_none_or(|t| s.created_at >= t)
            && self.created_before.is_none_or(|t| s.created_at < t)
    }

    /// Whether `s` comes after the cursor in newest-first order.
    pub fn after_cursor(&self, s: &JobSummary) -> bool {
        self.cursor.as_ref().is_none_or(|c| c.is_before(s))
    }
}

/// A position in newest-first order: the last job of a page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Creation time of the last job returned.
    pub created_at: Timestamp,
    /// Its id.
    pub id: JobId,
}

impl Cursor {
    /// The cursor pointing just after `s`.
    pub fn after(s: &JobSummary) -> Self {
        Self {
            created_at: s.created_at,
            id: s.id.clone(),
        }
    }

    /// Whether `s` sorts after this cursor (older, or same time and smaller id).
    pub fn is_before(&self, s: &JobSummary) -> bool {
        (s.created_at, &s.id) < (self.created_at, &self.id)
    }

    /// The newest-first sort key of a summary.
    pub fn sort_key(s: &JobSummary) -> impl Ord + '_ {
        std::cmp::Reverse((s.created_at, &s.id))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at.0, self.id)
    }
}

impl FromStr for Cursor {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            StoreError::Invalid(format!(
                "malformed cursor {:?}",
                s.chars().take(80).collect::<String>()
            ))
        };
        let (ms, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            created_at: Timestamp(ms.parse().map_err(|_| bad())?),
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of [`Store::list_jobs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobSummary>,
    /// Where the next page starts, `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Persistence for jobs. See the [module docs](self) for the contract.
///
/// A store also keeps stored policies ([`PolicyStore`], a supertrait with
/// its own contract in [`policy`]) and test histories ([`TestHistoryStore`]).
#[async_trait]
pub trait Store:
    LeaseStore + PolicyStore + DeadLetterStore + TestHistoryStore + Send + Sync + 'static
{
    /// Creates a job from its summary and first records (seq 1 is
    /// `Submitted`). [`StoreError::AlreadyExists`] if the id is taken; an
    /// identical repeat of a create that already landed succeeds.
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError>;

    /// Appends `records` (numbered `expected + 1 ..`) if the job's version is
    /// `expected` and `fence` (the writer's lease token, 0 without a lease)
    /// is not older than the job's token, and sets the summary's progress,
    /// atomically. Returns the new version. A stale `fence` is
    /// [`StoreError::Fenced`], checked before the version. An append that
    /// makes the job terminal ends its lease (see [`lease`]).
    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` records with seq greater than `after`, in order.
    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// Stores a snapshot, replacing an older one; an older snapshot than the
    /// stored one is ignored. The snapshot's version must not exceed the
    /// job's version.
    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// The latest snapshot, if any.
    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError>;

    /// The job's summary.
    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError>;

    /// Summaries matching `query`, newest first.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError>;

    /// Ids of jobs that are not in a terminal state (for recovery at start).
    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Conveniences over any [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Every record of a job after `after`, reading in pages.
    async fn read_all(&self, job: &JobId, after: u64) -> Result<Vec<Record>, StoreError> {
        const PAGE: usize = 10_000;
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let page = self.read(job, from, PAGE).await?;
            let done = page.len() < PAGE;
            if let Some(last) = page.last() {
                from = last.seq;
            }
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The job's current state: its snapshot plus the records after it.
    async fn load_view(&self, job: &JobId) -> Result<crate::journal::JobView, StoreError> {
        let corrupt = |e: crate::journal::ReplayError| StoreError::Corrupt {
            job: Some(job.clone()),
            key: "journal".into(),
            message: e.to_string(),
        };
        let (mut view, after) = match self.snapshot(job).await? {
            Some(s) => {
                let v = s.view.version;
                (Some(s.view), v)
            }
            None => (None, 0),
        };
        let records = self.read_all(job, after).await?;
        let mut iter = records.iter();
        let mut view = match view.take() {
            Some(v) => v,
            None => {
                if records.is_empty() {
                    return Err(StoreError::NotFound { job: job.clone() });
                }
                let first = iter.next().map(std::slice::from_ref).unwrap_or_default();
                crate::journal::JobView::replay(first).map_err(corrupt)?
            }
        };
        for r in iter {
            view.apply(r).map_err(corrupt)?;
        }
        Ok(view)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Checks that `records` are numbered `expected + 1 ..` without gaps. A
/// numbering that would pass `u64::MAX` is invalid too (never a panic, and
/// no wrap-around in release builds).
pub fn check_sequence(job: &JobId, expected: u64, records: &[Record]) -> Result<(), StoreError> {
    for (i, r) in records.iter().enumerate() {
        let want = (i as u64)
            .checked_add(1)
            .and_then(|n| expected.checked_add(n));
        if want != Some(r.seq) {
            return Err(StoreError::Invalid(format!(
                "records for job {job} must be numbered from {expected}+1 without gaps; record {i} has seq {}",
                r.seq
            )));
        }
    }
    Ok(())
}

/// Implements every store trait but [`Store`] itself — [`LeaseStore`],
/// [`PolicyStore`], [`DeadLetterStore`], [`TestHistoryStore`] — for a store wrapper by forwarding
/// every method to one of its fields: for wrappers that add behaviour
/// (faults, metrics, logging) to the journal methods only, so that they
/// keep compiling as the store grows. A wrapper that changes one of them
/// uses the per-trait macros ([`forward_lease_store!`](crate::forward_lease_store),
/// [`forward_policy_store!`](crate::forward_policy_store),
/// [`forward_dead_letter_store!`](crate::forward_dead_letter_store),
/// [`forward_test_history_store!`](crate::forward_test_history_store)) for the
/// others.
///
/// ```
/// use orchestrator_core::store::MemoryStore;
///
/// struct Logged {
///     inner: MemoryStore,
/// }
/// orchestrator_core::forward_store_extensions!(Logged => inner);
/// ```
#[macro_export]
macro_rules! forward_store_extensions {
    ($ty:ty => $field:ident) => {
        $crate::forward_lease_store!($ty => $field);
        $crate::forward_policy_store!($ty => $field);
        $crate::forward_dead_letter_store!($ty => $field);
        $crate::forward_test_history_store!($ty => $field);
    };
}

/// Implements [`LeaseStore`] for a wrapper by forwarding to a field (see
/// [`forward_store_extensions!`](crate::forward_store_extensions)).
#[macro_export]
macro_rules! forward_lease_store {
    ($ty:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::store::LeaseStore for $ty {
            async fn claim(
                &self,
                job: &$crate::JobId,
                owner: &str,
                now: $crate::Timestamp,
                ttl: ::std::time::Duration,
                force: bool,
            ) -> ::std::result::Result<$crate::store::lease::Granted, $crate::StoreError> {
                self.$field.claim(job, owner, now, ttl, force).await
            }

            async fn renew(
                &self,
                lease: &$crate::store::Lease,
                now: $crate::Timestamp,
                ttl: ::std::time::Duration,
            ) -> ::std::result::Result<$crate::store::lease::Granted, $crate::StoreError> {
                self.$field.renew(lease, now, ttl).await
            }

            async fn release(
                &self,
                lease: &$crate::store::Lease,
            ) -> ::std::result::Result<(), $crate::StoreError> {
                self.$field.release(lease).await
            }

            async fn lease(
                &self,
                job: &$crate::JobId,
            ) -> ::std::result::Result<$crate::store::lease::LeaseRecord, $crate::StoreError> {
                self.$field.lease(job).await
            }

            async fn claimable(
                &self,
                now: $crate::Timestamp,
                limit: usize,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::store::lease::Claimable>,
                $crate::StoreError,
            > {
                self.$field.claimable(now, limit).await
            }

            async fn request_cancel(
                &self,
                job: &$crate::JobId,
                request: &$crate::store::lease::CancelRequest,
            ) -> ::std::result::Result<bool, $crate::StoreError> {
                self.$field.request_cancel(job, request).await
            }

            fn exclusive(&self) -> bool {
                self.$field.exclusive()
            }
        }
    };
}

/// Implements [`PolicyStore`] for a wrapper by forwarding to a field (see
/// [`forward_store_extensions!`](crate::forward_store_extensions)).
#[macro_export]
macro_rules! forward_policy_store {
    ($ty:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::store::PolicyStore for $ty {
            async fn put_policy(
                &self,
                policy: &$crate::policy::StoredPolicy,
            ) -> ::std::result::Result<(), $crate::StoreError> {
                self.$field.put_policy(policy).await
            }

            async fn get_policy(
                &self,
                name: &str,
                version: ::std::option::Option<u32>,
            ) -> ::std::result::Result<
                ::std::option::Option<$crate::policy::StoredPolicy>,
                $crate::StoreError,
            > {
                self.$field.get_policy(name, version).await
            }

            async fn list_policies(
                &self,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::policy::StoredPolicy>,
                $crate::StoreError,
            > {
                self.$field.list_policies().await
            }

            async fn policy_versions(
                &self,
                name: &str,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::policy::StoredPolicy>,
                $crate::StoreError,
            > {
                self.$field.policy_versions(name).await
            }
        }
    };
}
