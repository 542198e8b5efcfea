//! [`TestHistoryStore`]: per-test outcome history across jobs, the data of
//! flakiness scores (see [`crate::flaky`]).
//!
//! # Contract
//!
//! - **One history per test key**, shared by every job that runs the test:
//!   the outcomes of its runs, ordered by `(at, job)`, at most `keep` of
//!   them (the newest; older ones are dropped as new ones arrive).
//! - **Idempotent per (job, key).** Recording an outcome for a job that
//!   the key's history already holds changes nothing (the first recording
//!   wins), so a job resumed after a crash that records its outcomes again
//!   does not count twice. An outcome older than every kept one of a full
//!   history is dropped at once: it would be the first to go anyway, and a
//!   job whose outcome was already dropped cannot come back.
//! - **Atomic per key**: concurrent recordings for one key (different
//!   jobs) all land; none is lost to a race.
//! - **Bad input changes nothing**: an empty or over-long key, `keep` out of
//!   range, or a bad listing limit or cursor is [`StoreError::Invalid`], and
//!   nothing of the call is written.
//! - **Listing** is in key order, filtered by key prefix and by job name
//!   (keys with at least one kept run of a job of that name), paginated by
//!   an opaque cursor (the last key of the page).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::flaky::{RunOutcome, TestOutcome, MAX_KEY_LEN};

/// Largest `keep` a store accepts.
pub const MAX_KEEP: usize = 10_000;

/// One test's kept history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestHistory {
    /// The test key.
    pub key: String,
    /// Its kept runs, oldest first.
    pub outcomes: Vec<RunOutcome>,
}

/// Filters and pagination for [`TestHistoryStore::list_test_histories`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only keys with a kept run of a job with exactly this name.
    pub job_name: Option<String>,
    /// Page size, 1 to [`HistoryQuery::MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this key (from [`HistoryPage::next_cursor`]).
    pub cursor: Option<String>,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self {
            prefix: None,
            job_name: None,
            limit: 100,
            cursor: None,
        }
    }
}

impl HistoryQuery {
    /// Largest page.
    pub const MAX_LIMIT: usize = 1000;

    /// Checks the limit and cursor; stores call this first.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(StoreError::Invalid(format!(
                "limit must be between 1 and {}, got {}",
                Self::MAX_LIMIT,
                self.limit
            )));
        }
        if let Some(c) = &self.cursor {
            check_key(c).map_err(|_| StoreError::Invalid("malformed history cursor".into()))?;
        }
        Ok(())
    }

    /// Whether `h` passes the filters (the cursor aside).
    pub fn matches(&self, h: &TestHistory) -> bool {
        self.prefix.as_ref().is_none_or(|p| h.key.starts_with(p))
            && self
                .job_name
                .as_ref()
                .is_none_or(|n| h.outcomes.iter().any(|o| o.job_name == *n))
    }

    /// Whether `key` comes after the cursor.
    pub fn after_cursor(&self, key: &str) -> bool {
        self.cursor.as_deref().is_none_or(|c| key > c)
    }
}

/// One page of [`TestHistoryStore::list_test_histories`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The histories, in key order.
    pub tests: Vec<TestHistory>,
    /// Where the next page starts, `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Persistence of test histories. See the [module docs](self) for the
/// contract; every [`Store`](super::Store) implements it.
#[async_trait]
pub trait TestHistoryStore: Send + Sync {
    /// Records one job run's outcomes (each under its key), keeping the
    /// newest `keep` per key; idempotent per (job, key).
    async fn record_outcomes(
        &self,
        outcomes: &[TestOutcome],
        keep: usize,
    ) -> Result<(), StoreError>;

    /// The kept history of `key`, oldest first (empty if none).
    async fn test_history(&self, key: &str) -> Result<Vec<RunOutcome>, StoreError>;

    /// Histories matching `query`, in key order.
    async fn list_test_histories(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;
}

/// Checks a key handed to a store.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "a test key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a whole recording before anything is written.
pub fn check_recording(outcomes: &[TestOutcome], keep: usize) -> Result<(), StoreError> {
    if keep == 0 || keep > MAX_KEEP {
        return Err(StoreError::Invalid(format!(
            "keep must be between 1 and {MAX_KEEP}, got {keep}"
        )));
    }
    outcomes.iter().try_for_each(|o| check_key(&o.key))
}

/// Merges `outcome` into a kept history (oldest first) under the contract:
/// nothing if the job is already there, else inserted in `(at, job)` order
/// and the oldest dropped beyond `keep`. Returns whether it changed.
/// Backends call this between reading and compare-and-setting a history.
pub fn merge(history: &mut Vec<RunOutcome>, outcome: &RunOutcome, keep: usize) -> bool {
    if history.iter().any(|o| o.job == outcome.job) {
        return false;
    }
    let order = |o: &RunOutcome| (o.at, o.job.clone());
    let pos = history.partition_point(|o| order(o) <= order(outcome));
    history.insert(pos, outcome.clone());
    let excess = history.len().saturating_sub(keep);
    history.drain(..excess);
    // Dropped at once (older than everything kept): no change.
    !(excess > 0 && pos < excess)
}

/// Implements [`TestHistoryStore`] for a wrapper by forwarding to a field
/// (see [`forward_store_extensions!`](crate::forward_store_extensions)).
#[macro_export]
macro_rules! forward_test_history_store {
    ($ty:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::store::TestHistoryStore for $ty {
            async fn record_outcomes(
                &self,
                outcomes: &[$crate::flaky::TestOutcome],
                keep: usize,
            ) -> ::std::result::Result<(), $crate::StoreError> {
                use $crate::store::TestHistoryStore as _;
                self.$field.record_outcomes(outcomes, keep).await
            }

            async fn test_history(
                &self,
                key: &str,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::flaky::RunOutcome>,
                $crate::StoreError,
            > {
                use $crate::store::TestHistoryStore as _;
                self.$field.test_history(key).await
            }

            async fn list_test_histories(
                &self,
                query: &$crate::store::HistoryQuery,
            ) -> ::std::result::Result<$crate::store::HistoryPage, $crate::StoreError> {
                use $crate::store::TestHistoryStore as _;
                self.$field.list_test_histories(query).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn at(job: &str, t: u64) -> RunOutcome {
        RunOutcome {
            job: job.parse().expect("valid id"),
            job_name: "ci".into(),
            owner: "alice".into(),
            at: Timestamp(t),
            passed: true,
            flaky: false,
            attempts: 1,
            quarantined: false,
        }
    }

    #[test]
    fn merge_orders_dedupes_and_bounds() {
        let mut h = Vec::new();
        assert!(merge(&mut h, &at("b", 2), 3));
        assert!(merge(&mut h, &at("a", 1), 3));
        assert!(!merge(&mut h, &at("a", 5), 3), "same job again");
        assert!(merge(&mut h, &at("c", 3), 3));
        assert!(merge(&mut h, &at("d", 4), 3));
        let jobs: Vec<&str> = h.iter().map(|o| o.job.as_str()).collect();
        assert_eq!(jobs, ["b", "c", "d"]);
        // The evicted job does not come back.
        assert!(!merge(&mut h, &at("a", 1), 3));
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].job.as_str(), "b");
    }
}
