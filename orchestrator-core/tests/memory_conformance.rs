//! The store conformance suite ([`orchestrator_core::testkit`]) run against
//! [`MemoryStore`], exactly as a backend crate runs it: one macro call.
//!
//! The `mutants` module below then checks the suite itself: it wraps
//! `MemoryStore` in stores that each break one rule of the contract, and
//! asserts that the case guarding that rule fails.

use orchestrator_core::store::MemoryStore;

orchestrator_core::store_conformance_tests!(async { MemoryStore::new() });

mod mutants {
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;

    use async_trait::async_trait;
    use orchestrator_core::journal::{JobSummary, Progress, Record, Snapshot};
    use orchestrator_core::store::{Cursor, JobPage, JobQuery, MemoryStore, Store, StoreError};
    use orchestrator_core::testkit;
    use orchestrator_core::JobId;

    /// One way to break the contract.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Bug {
        /// A version conflict surfaces as a backend failure.
        ConflictIsBackend,
        /// A version conflict is reported as success (a lost update).
        SwallowConflict,
        /// A replayed append is a conflict.
        NoReplay,
        /// The summary keeps the old progress.
        StaleProgress,
        /// `read` with limit 0 returns everything.
        ZeroLimitIsUnlimited,
        /// `read` silently returns at most 700 records.
        ShortPages,
        /// A missing job reads as `Invalid`.
        MissingIsInvalid,
        /// `AlreadyExists` is reported as success.
        SwallowAlreadyExists,
        /// A snapshot ahead of the journal is accepted.
        SnapshotAheadAccepted,
        /// Listing is oldest first.
        OldestFirst,
        /// The name filter is case-sensitive.
        NameCaseSensitive,
        /// `created_after` is exclusive.
        CreatedAfterExclusive,
        /// A full last page still carries a cursor.
        CursorOnFullLastPage,
        /// `unfinished_jobs` lists finished jobs too.
        UnfinishedListsAll,
    }

    struct Buggy {
        inner: MemoryStore,
        bug: Bug,
    }

    orchestrator_core::forward_store_extensions!(Buggy => inner);

    #[async_trait]
    impl Store for Buggy {
        async fn create_job(
            &self,
            summary: &JobSummary,
            records: &[Record],
        ) -> Result<(), StoreError> {
            match self.inner.create_job(summary, records).await {
                Err(StoreError::AlreadyExists { .. }) if self.bug == Bug::SwallowAlreadyExists => {
                    Ok(())
                }
                other => other,
            }
        }

        async fn append(
            &self,
            job: &JobId,
            expected: u64,
            records: &[Record],
            progress: &Progress,
            fence: u64,
        ) -> Result<u64, StoreError> {
            let mut progress = *progress;
            match self.bug {
                Bug::NoReplay => {
                    let actual = self.inner.summary(job).await?.progress.version;
                    if actual != expected {
                        return Err(StoreError::Conflict {
                            job: job.clone(),
                            expected,
                            actual,
                        });
                    }
                }
                Bug::StaleProgress => {
                    progress.state = self.inner.summary(job).await?.progress.state;
                }
                _ => {}
            }
            match self
                .inner
                .append(job, expected, records, &progress, fence)
                .await
            {
                Err(StoreError::Conflict { .. }) if self.bug == Bug::ConflictIsBackend => {
                    Err(StoreError::Backend {
                        message: "write failed".into(),
                        source: None,
                    })
                }
                Err(StoreError::Conflict { .. }) if self.bug == Bug::SwallowConflict => {
                    Ok(expected + records.len() as u64)
                }
                other => other,
            }
        }

        async fn read(
            &self,
            job: &JobId,
            after: u64,
            limit: usize,
        ) -> Result<Vec<Record>, StoreError> {
            let limit = match self.bug {
                Bug::ZeroLimitIsUnlimited if limit == 0 => usize::MAX,
                Bug::ShortPages => limit.min(700),
                _ => limit,
            };
            match self.inner.read(job, after, limit).await {
                Err(StoreError::NotFound { .. }) if self.bug == Bug::MissingIsInvalid => {
                    Err(StoreError::Invalid("no such job".into()))
                }
                other => other,
            }
        }

        async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
            match self.inner.put_snapshot(job, snapshot).await {
                Err(StoreError::Invalid(_)) if self.bug == Bug::SnapshotAheadAccepted => Ok(()),
                other => other,
            }
        }

        async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
            self.inner.snapshot(job).await
        }

        async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
            self.inner.summary(job).await
        }

        async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
            let mut page = self.inner.list_jobs(query).await?;
            match self.bug {
                Bug::OldestFirst => page.jobs.reverse(),
                Bug::NameCaseSensitive => {
                    let name = query.name.as_deref().unwrap_or_default();
                    page.jobs.retain(|j| j.name.contains(name));
                }
                Bug::CreatedAfterExclusive => {
                    let after = query.created_after.unwrap_or_default();
                    page.jobs.retain(|j| j.created_at > after);
                }
                Bug::CursorOnFullLastPage
                    if page.jobs.len() == query.limit && page.next_cursor.is_none() =>
                {
                    page.next_cursor = page.jobs.last().map(|j| Cursor::after(j).to_string());
                }
                _ => {}
            }
            Ok(page)
        }

        async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
            if self.bug == Bug::UnfinishedListsAll {
                let query = JobQuery {
                    limit: JobQuery::MAX_LIMIT,
                    ..JobQuery::default()
                };
                let page = self.inner.list_jobs(&query).await?;
                return Ok(page.jobs.into_iter().map(|j| j.id).collect());
            }
            self.inner.unfinished_jobs().await
        }

        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    /// Asserts that `case` fails against a store with `bug`.
    fn caught<C, CF>(bug: Bug, case: C)
    where
        C: FnOnce(Arc<dyn Store>) -> CF,
        CF: Future<Output = ()>,
    {
        let make = move || async move {
            Buggy {
                inner: MemoryStore::new(),
                bug,
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| testkit::run(make, case)));
        assert!(outcome.is_err(), "the suite missed {bug:?}");
    }

    #[test]
    fn conflict_reported_as_backend_failure() {
        caught(
            Bug::ConflictIsBackend,
            testkit::append_at_wrong_version_is_conflict,
        );
    }

    #[test]
    fn lost_updates() {
        caught(
            Bug::SwallowConflict,
            testkit::append_at_wrong_version_is_conflict,
        );
        caught(Bug::SwallowConflict, testkit::concurrent_appends_to_one_job);
    }

    #[test]
    fn replays_rejected() {
        caught(Bug::NoReplay, testkit::replayed_append_is_idempotent);
    }

    #[test]
    fn stale_summary() {
        caught(
            Bug::StaleProgress,
            testkit::summary_progress_follows_appends,
        );
    }

    #[test]
    fn read_limits() {
        caught(
            Bug::ZeroLimitIsUnlimited,
            testkit::read_after_and_limit_edges,
        );
        caught(Bug::ShortPages, testkit::large_journal);
    }

    #[test]
    fn missing_job_error() {
        caught(Bug::MissingIsInvalid, testkit::missing_job_is_not_found);
    }

    #[test]
    fn duplicate_creates_accepted() {
        caught(
            Bug::SwallowAlreadyExists,
            testkit::create_existing_id_is_already_exists,
        );
        caught(Bug::SwallowAlreadyExists, testkit::concurrent_creates);
    }

    #[test]
    fn snapshot_ahead_accepted() {
        caught(
            Bug::SnapshotAheadAccepted,
            testkit::snapshots_keep_the_newest,
        );
    }

    #[test]
    fn listing_order_and_filters() {
        for bug in [
            Bug::OldestFirst,
            Bug::NameCaseSensitive,
            Bug::CreatedAfterExclusive,
        ] {
            caught(bug, testkit::list_jobs_newest_first_and_filters);
        }
        caught(Bug::CursorOnFullLastPage, testkit::list_jobs_pagination);
    }

    #[test]
    fn unfinished_lists_finished_jobs() {
        caught(
            Bug::UnfinishedListsAll,
            testkit::unfinished_jobs_are_the_non_terminal_ones,
        );
    }
}
