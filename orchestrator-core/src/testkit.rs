//! The store conformance suite: the [`Store`] contract as executable cases
//! that every backend runs unchanged, the in-memory one included.
//!
//! Enabled by the `testkit` feature. Each case is a public `async fn` taking
//! a fresh, empty store as `Arc<dyn Store>` and panicking with a precise
//! message when the store breaks the contract. The
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro turns
//! the whole list into one `#[test]` per case, so a backend crate runs the
//! suite with one line in a test file:
//!
//! ```
//! use orchestrator_core::store::MemoryStore;
//!
//! // In a backend's `tests/conformance.rs` (with `orchestrator-core` as a
//! // dev-dependency with the `testkit` feature): one `#[test]` per case,
//! // each evaluating the expression again for a fresh store.
//! orchestrator_core::store_conformance_tests!(async { MemoryStore::new() });
//! # fn main() {}
//! ```
//!
//! A single case can also be run directly, e.g. while debugging a backend:
//!
//! ```
//! use orchestrator_core::{store::MemoryStore, testkit};
//!
//! testkit::run(|| async { MemoryStore::new() }, testkit::append_at_wrong_version_is_conflict);
//! ```
//!
//! # What it checks
//!
//! | area | cases |
//! | --- | --- |
//! | creating jobs | [`create_and_read_back`], [`create_rejects_malformed_records`], [`create_existing_id_is_already_exists`], [`identical_create_is_idempotent`] |
//! | compare-and-set appends | [`append_at_expected_version`], [`append_at_wrong_version_is_conflict`], [`replayed_append_is_idempotent`], [`out_of_sequence_append_is_invalid`] |
//! | reading | [`missing_job_is_not_found`], [`read_after_and_limit_edges`], [`summary_progress_follows_appends`] |
//! | snapshots | [`snapshots_keep_the_newest`], [`load_view_from_snapshot_equals_replay`] |
//! | listing | [`list_jobs_newest_first_and_filters`], [`list_jobs_pagination`], [`list_jobs_rejects_bad_limits_and_cursors`], [`unfinished_jobs_are_the_non_terminal_ones`] |
//! | races and size | [`concurrent_appends_to_one_job`], [`concurrent_creates`], [`large_journal`] |
//! | dead-letter queue | the cases of [`dead_letters`] |
//! | test histories | [`history_records_and_reads_back`], [`history_recording_is_idempotent_per_job_and_key`], [`history_is_bounded_to_keep`], [`history_rejects_bad_input_untouched`], [`history_listing_filters_and_pages`], [`history_concurrent_records`] |
//!
//! Every rejected call is followed by a check that the stored journal and
//! summary are exactly what they were. Journals are built with [`TestJob`],
//! which folds every record into a [`JobView`] as it goes, so each journal
//! replays cleanly and each [`Progress`] handed to the store is the truthful
//! one. Timestamps are fixed (from [`T0`]) and ids are chosen, so runs are
//! deterministic; only the races depend on scheduling, and they assert exact
//! totals whatever the interleaving.
//!
//! # Writing a backend's test file
//!
//! The macro takes one expression whose value is a future (anything
//! [`IntoFuture`]) resolving to the store: an `async` block, or a call of an
//! `async fn`. It is evaluated once per case, inside that case's runtime, so
//! it may connect to a server; give each evaluation its own namespace (a
//! temporary directory, a fresh database name) so cases running in parallel
//! never see each other's jobs — several cases expect an empty store.
//!
//! ```
//! use orchestrator_core::store::MemoryStore;
//!
//! async fn fresh_store() -> MemoryStore {
//!     // e.g. open a backend on a new temporary directory here
//!     MemoryStore::new()
//! }
//!
//! orchestrator_core::store_conformance_tests!(fresh_store());
//! # fn main() {}
//! ```
//!
//! Each generated test builds a multi-thread tokio runtime with four workers
//! (what `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`
//! would), so the races really run in parallel, and fails a case that takes
//! longer than [`CASE_TIMEOUT`] instead of hanging. The backend crate needs
//! no tokio dependency of its own for this.

mod policy;
pub use policy::{
    concurrent_policy_puts, policy_latest_and_listing, policy_versions_are_immutable,
};
pub mod dead_letters;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

mod lease;
pub use lease::{
    cancel_requests_reach_the_holder, claimable_orders_by_priority_then_age,
    finishing_append_ends_the_lease, lease_claim_renew_release, stale_fencing_token_is_rejected,
};

use crate::failure::Failure;
use crate::journal::{Event, JobHeader, JobSummary, JobView, Progress, Record, Snapshot};
use crate::spec::{JobSpec, NodeSpec};
use crate::state::JobState;
use crate::store::{Cursor, JobQuery, Store, StoreError, StoreExt};
use crate::time::{JobId, Timestamp};

mod history;
pub use history::*;

/// Runs the whole conformance suite against a store: expands to one
/// `#[test]` function per case of [`testkit`](crate::testkit), each named
/// after its case.
///
/// The argument is an expression whose value is a future (anything
/// `IntoFuture`) resolving to a fresh, empty [`Store`](crate::store::Store):
/// `async { MyStore::open_temporary().await.unwrap() }` or a call of an
/// `async fn`. It is evaluated anew for every case, inside the case's own
/// multi-thread runtime. Invoke the macro once per module (the generated
/// functions would clash otherwise); to run the suite against two
/// configurations, invoke it in two modules.
///
/// ```
/// use orchestrator_core::store::MemoryStore;
///
/// orchestrator_core::store_conformance_tests!(async { MemoryStore::new() });
/// # fn main() {}
/// ```
///
/// A backend that needs a server may pass `skip_if: <bool expression>`
/// after the store: each test evaluates it first and, when it is `true`,
/// returns without running its case (the expression says why, e.g. by
/// printing one line; it may also panic, e.g. in CI where the server must
/// be there).
///
/// ```
/// use orchestrator_core::store::MemoryStore;
///
/// fn no_server() -> bool {
///     std::env::var_os("MY_SERVER_URI").is_none()
/// }
///
/// orchestrator_core::store_conformance_tests!(async { MemoryStore::new() }, skip_if: no_server());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr $(,)?) => {
        $crate::store_conformance_tests!($make, skip_if: false);
    };
    ($make:expr, skip_if: $skip:expr $(,)?) => {
        $crate::__store_conformance_cases! {
            $make;
            $skip;
            create_and_read_back,
            create_rejects_malformed_records,
            create_existing_id_is_already_exists,
            identical_create_is_idempotent,
            append_at_expected_version,
            append_at_wrong_version_is_conflict,
            replayed_append_is_idempotent,
            out_of_sequence_append_is_invalid,
            missing_job_is_not_found,
            read_after_and_limit_edges,
            summary_progress_follows_appends,
            snapshots_keep_the_newest,
            load_view_from_snapshot_equals_replay,
            list_jobs_newest_first_and_filters,
            list_jobs_pagination,
            list_jobs_rejects_bad_limits_and_cursors,
            unfinished_jobs_are_the_non_terminal_ones,
            concurrent_appends_to_one_job,
            concurrent_creates,
            large_journal,
            lease_claim_renew_release,
            stale_fencing_token_is_rejected,
            finishing_append_ends_the_lease,
            claimable_orders_by_priority_then_age,
            cancel_requests_reach_the_holder,
            // Stored policies (testkit/policy.rs).
            policy_versions_are_immutable,
            policy_latest_and_listing,
            concurrent_policy_puts,
            history_records_and_reads_back,
            history_recording_is_idempotent_per_job_and_key,
            history_is_bounded_to_keep,
            history_rejects_bad_input_untouched,
            history_listing_filters_and_pages,
            history_concurrent_records,
        }
        $crate::__dead_letter_conformance_cases!($make; $skip);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($make:expr; $skip:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if $skip {
                    return;
                }
                $crate::testkit::run(|| $make, $crate::testkit::$case);
            }
        )*
    };
}

/// How long one case may run before it fails as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// The fixed time the cases' jobs are created around (2024-01-01T00:00:00Z).
pub const T0: Timestamp = Timestamp(1_704_067_200_000);

/// Runs one case: builds a multi-thread runtime with four workers, evaluates
/// `make` inside it for a fresh store, and runs `case` on that store, failing
/// if it takes longer than [`CASE_TIMEOUT`]. This is what each test generated
/// by [`store_conformance_tests!`](crate::store_conformance_tests) calls.
///
/// # Panics
///
/// When the case fails (that is how a case reports), times out, or the
/// runtime cannot be built.
pub fn run<M, F, S, C, CF>(make: M, case: C)
where
    M: FnOnce() -> F,
    F: IntoFuture<Output = S>,
    S: Store,
    C: FnOnce(Arc<dyn Store>) -> CF,
    CF: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("building the test runtime");
    runtime.block_on(async move {
        let store: Arc<dyn Store> = Arc::new(make().await);
        if tokio::time::timeout(CASE_TIMEOUT, case(store))
            .await
            .is_err()
        {
            panic!("the case did not finish within {CASE_TIMEOUT:?}");
        }
    });
}

// ---------------------------------------------------------------------------
// Building journals
// ---------------------------------------------------------------------------

/// Parses a job id.
///
/// # Panics
///
/// If `id` is not a valid [`JobId`].
pub fn job_id(id: &str) -> JobId {
    id.parse()
        .unwrap_or_else(|e| panic!("test job id {id:?}: {e}"))
}

/// A spec called `name` with `nodes` independent `noop` nodes `n0, n1, …`.
pub fn spec(name: &str, nodes: u32) -> JobSpec {
    JobSpec::builder(name)
        .nodes((0..nodes).map(|i| NodeSpec::new(format!("n{i}"), "noop")))
        .build()
}

/// The three records of a node's successful first attempt: ready, started,
/// succeeded.
pub fn run_node(node: u32) -> [Event; 3] {
    [
        Event::NodeReady { node },
        Event::NodeStarted { node, attempt: 1 },
        Event::NodeSucceeded {
            node,
            attempt: 1,
            output: Value::Null,
        },
    ]
}

/// [`run_node`] for each node of `nodes`, in order.
pub fn run_nodes(nodes: Range<u32>) -> Vec<Event> {
    nodes.flat_map(run_node).collect()
}

/// An event that changes no state (an escalation note carrying `text`), for
/// journals whose records must be distinct but whose progress must not move.
pub fn note(text: impl Into<String>) -> Event {
    Event::EscalationRequired {
        node: None,
        cause: None,
        reason: text.into(),
    }
}

/// The events that take a freshly submitted job with `nodes` nodes to
/// `state` by legal transitions, nodes included (a succeeded job's nodes all
/// succeeded, a failed job's first node failed and the rest are
/// upstream-failed, a cancelled or timed-out job's nodes are cancelled, a
/// rolled-back job's nodes succeeded first, and a rollback-incomplete job's
/// first node is dead-lettered).
pub fn events_to(state: JobState, nodes: u32) -> Vec<Event> {
    use JobState as S;
    let cancel_nodes = || (0..nodes).map(|node| Event::NodeCancelled { node });
    let mut events = Vec::new();
    if state == S::Pending {
        return events;
    }
    events.push(Event::Queued);
    match state {
        S::Pending | S::Queued => {}
        S::Cancelled => {
            events.push(Event::CancelRequested {
                reason: Some("not needed".into()),
            });
            events.extend(cancel_nodes());
        }
        S::Running => events.push(Event::Started),
        S::Recovering => events.extend([Event::Started, Event::RecoveryStarted]),
        S::Cancelling => events.extend([Event::Started, Event::CancelRequested { reason: None }]),
        S::Succeeded => {
            events.push(Event::Started);
            events.extend(run_nodes(0..nodes));
            events.push(Event::Finished { state });
        }
        S::Failed => {
            events.push(Event::Started);
            if nodes > 0 {
                events.extend([
                    Event::NodeReady { node: 0 },
                    Event::NodeStarted {
                        node: 0,
                        attempt: 1,
                    },
                    Event::NodeFailed {
                        node: 0,
                        attempt: 1,
                        failure: Box::new(Failure::permanent("assertion failed")),
                        retry_in_ms: None,
                    },
                ]);
                events.extend((1..nodes).map(|node| Event::NodeUpstreamFailed { node }));
            }
            events.push(Event::Finished { state });
        }
        S::TimedOut => {
            events.extend([Event::Started, Event::TimeoutReached]);
            events.extend(cancel_nodes());
            events.push(Event::Finished { state });
        }
        S::RollingBack | S::RolledBack | S::RollbackIncomplete => {
            events.push(Event::Started);
            events.extend(run_nodes(0..nodes));
            events.push(Event::RollbackStarted { reason: None });
            if state == S::RollbackIncomplete && nodes > 0 {
                events.extend([
                    Event::CompensationStarted {
                        node: 0,
                        attempt: 1,
                    },
                    Event::CompensationFailed {
                        node: 0,
                        attempt: 1,
                        failure: Box::new(Failure::permanent("cannot undo")),
                        retry_in_ms: None,
                    },
                ]);
            }
            if state != S::RollingBack {
                events.push(Event::Finished { state });
            }
        }
    }
    events
}

/// Records to append, with the version they expect and the progress of the
/// job once they are in.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The job's version before the batch.
    pub expected: u64,
    /// The records, numbered `expected + 1 ..`.
    pub records: Vec<Record>,
    /// The job's progress after the batch.
    pub progress: Progress,
}

/// A job under construction: its header, every record journaled so far, and
/// their fold. Each new record is stamped one millisecond after the previous
/// one and folded in at once, so the journal always replays and
/// [`TestJob::summary`] is what a store must hold for it.
#[derive(Clone, Debug)]
pub struct TestJob {
    view: JobView,
    records: Vec<Record>,
    fence: u64,
}

impl TestJob {
    /// A job owned by `alice`, called `job <id>`, with three nodes.
    pub fn new(id: &str, created_at: Timestamp) -> Self {
        Self::with_spec(id, "alice", created_at, spec(&format!("job {id}"), 3))
    }

    /// A job with the given owner and spec: only its `Submitted` record so far.
    pub fn with_spec(id: &str, owner: &str, created_at: Timestamp, spec: JobSpec) -> Self {
        let header = Arc::new(JobHeader {
            id: job_id(id),
            owner: owner.to_owned(),
            created_at,
            spec: Arc::new(spec),
        });
        let first = Record {
            seq: 1,
            at: created_at,
            event: Event::Submitted {
                header: header.clone(),
            },
        };
        Self {
            view: JobView::new(header),
            records: vec![first],
            fence: 0,
        }
    }

    /// Sets the fencing token [`TestJob::append`] writes with (0 at first).
    pub fn set_fence(&mut self, fence: u64) {
        self.fence = fence;
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        self.view.id()
    }

    /// The job's header.
    pub fn header(&self) -> &Arc<JobHeader> {
        &self.view.header
    }

    /// Every record so far, from seq 1.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The fold of [`TestJob::records`].
    pub fn view(&self) -> &JobView {
        &self.view
    }

    /// Seq of the last record.
    pub fn version(&self) -> u64 {
        self.view.version
    }

    /// The summary a store must hold for this job.
    pub fn summary(&self) -> JobSummary {
        self.view.summary()
    }

    /// The job's current progress.
    pub fn progress(&self) -> Progress {
        self.view.progress()
    }

    /// A snapshot of the current view.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            view: self.view.clone(),
        }
    }

    /// Journals `events` locally (numbered, stamped and folded in) and returns
    /// them as a batch to append.
    ///
    /// # Panics
    ///
    /// If an event is an illegal transition: the test itself is wrong.
    pub fn next_batch(&mut self, events: impl IntoIterator<Item = Event>) -> Batch {
        let expected = self.version();
        let mut records = Vec::new();
        for event in events {
            let record = Record {
                seq: self.view.version + 1,
                at: Timestamp(self.view.updated_at.0 + 1),
                event,
            };
            if let Err(e) = self.view.apply(&record) {
                panic!("the test journal itself is invalid: {e}");
            }
            self.records.push(record.clone());
            records.push(record);
        }
        Batch {
            expected,
            records,
            progress: self.view.progress(),
        }
    }

    /// The batch [`TestJob::next_batch`] would return, leaving `self` as it is.
    pub fn peek_batch(&self, events: impl IntoIterator<Item = Event>) -> Batch {
        self.clone().next_batch(events)
    }

    /// Creates the job in `store` with its records so far.
    ///
    /// # Panics
    ///
    /// If the store refuses.
    pub async fn create(&self, store: &dyn Store) {
        if let Err(e) = store.create_job(&self.summary(), &self.records).await {
            panic!("create_job({}) failed: {e:?}", self.id());
        }
    }

    /// Journals `events` as one batch and appends it to `store`.
    ///
    /// # Panics
    ///
    /// If the store refuses or returns another version than the batch's end.
    pub async fn append(
        &mut self,
        store: &dyn Store,
        events: impl IntoIterator<Item = Event>,
    ) -> Batch {
        let batch = self.next_batch(events);
        let version = ok(
            store
                .append(
                    self.id(),
                    batch.expected,
                    &batch.records,
                    &batch.progress,
                    self.fence,
                )
                .await,
            "append",
        );
        assert_eq!(
            version,
            self.version(),
            "append to {} at version {} must return the new version",
            self.id(),
            batch.expected
        );
        batch
    }
}

/// `records` renumbered from `first` on (to build out-of-sequence batches).
pub fn renumber(records: &[Record], first: u64) -> Vec<Record> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            // Not `first..`: that range overflows right after yielding u64::MAX.
            seq: first.saturating_add(i as u64),
            ..r.clone()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

#[track_caller]
fn ok<T>(res: Result<T, StoreError>, what: &str) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

#[track_caller]
fn err<T: fmt::Debug>(res: Result<T, StoreError>, what: &str) -> StoreError {
    match res {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_conflict<T: fmt::Debug>(
    res: Result<T, StoreError>,
    job: &JobId,
    expected: u64,
    actual: u64,
    what: &str,
) {
    let e = err(res, what);
    assert!(
        matches!(&e, StoreError::Conflict { job: j, expected: x, actual: a }
            if j == job && *x == expected && *a == actual),
        "{what}: expected Conflict {{ job: {job}, expected: {expected}, actual: {actual} }}, got {e:?}"
    );
    assert!(
        !e.is_retryable(),
        "{what}: a conflict is not retryable as is"
    );
}

#[track_caller]
fn assert_invalid<T: fmt::Debug>(res: Result<T, StoreError>, what: &str) {
    let e = err(res, what);
    assert!(
        matches!(e, StoreError::Invalid(_)),
        "{what}: expected Invalid, got {e:?}"
    );
}

#[track_caller]
fn assert_not_found<T: fmt::Debug>(res: Result<T, StoreError>, job: &JobId, what: &str) {
    let e = err(res, what);
    assert!(
        matches!(&e, StoreError::NotFound { job: j } if j == job),
        "{what}: expected NotFound {{ job: {job} }}, got {e:?}"
    );
}

#[track_caller]
fn assert_already_exists<T: fmt::Debug>(res: Result<T, StoreError>, job: &JobId, what: &str) {
    let e = err(res, what);
    assert!(
        matches!(&e, StoreError::AlreadyExists { job: j } if j == job),
        "{what}: expected AlreadyExists {{ job: {job} }}, got {e:?}"
    );
}

/// Asserts that `store` holds exactly `job`'s journal and summary.
async fn assert_stored(store: &dyn Store, job: &TestJob, what: &str) {
    let records = ok(store.read_all(job.id(), 0).await, what);
    assert!(
        records == job.records(),
        "{what}: journal of {} differs: stored seqs {:?}, expected {} records",
        job.id(),
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        job.records().len()
    );
    let summary = ok(store.summary(job.id()).await, what);
    assert_eq!(summary, job.summary(), "{what}: summary of {}", job.id());
}

/// Awaits a spawned task, passing its panic on.
async fn join<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("task failed: {e}"),
    }
}

fn ts(offset_ms: u64) -> Timestamp {
    Timestamp(T0.0 + offset_ms)
}

// ---------------------------------------------------------------------------
// Creating jobs
// ---------------------------------------------------------------------------

/// A created job reads back with its records in order and its summary as
/// given; jobs are independent; there is no snapshot yet; `ping` answers.
pub async fn create_and_read_back(store: Arc<dyn Store>) {
    let s = &*store;
    ok(s.ping().await, "ping");
    let mut one = TestJob::new("job-1", T0);
    one.next_batch([Event::Queued]);
    one.create(s).await;
    let two = TestJob::new("job-2", ts(1));
    two.create(s).await;

    assert_stored(s, &one, "job created with two records").await;
    assert_stored(s, &two, "job created with one record").await;
    assert_eq!(
        ok(s.read(one.id(), 0, 100).await, "read"),
        one.records(),
        "read(after 0, limit 100)"
    );
    assert_eq!(
        ok(s.summary(one.id()).await, "summary").progress.version,
        2,
        "the version of a created job is its number of records"
    );
    assert!(
        ok(s.snapshot(one.id()).await, "snapshot").is_none(),
        "a new job has no snapshot"
    );
    assert_eq!(
        ok(s.load_view(one.id()).await, "load_view"),
        *one.view(),
        "load_view of a new job"
    );
}

/// `create_job` with no records or records not numbered from 1 is
/// `Invalid` and creates nothing.
pub async fn create_rejects_malformed_records(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.next_batch([Event::Queued, Event::Started]);
    let summary = job.summary();
    let r = job.records();

    assert_invalid(s.create_job(&summary, &[]).await, "create with no records");
    assert_invalid(
        s.create_job(&summary, &r[1..]).await,
        "create with records numbered from 2",
    );
    assert_invalid(
        s.create_job(&summary, &[r[0].clone(), r[2].clone()]).await,
        "create with a gap",
    );
    assert_invalid(
        s.create_job(&summary, &[r[0].clone(), r[0].clone()]).await,
        "create with a duplicate seq",
    );
    assert_not_found(
        s.summary(job.id()).await,
        job.id(),
        "after rejected creates",
    );
    assert_not_found(
        s.read(job.id(), 0, 10).await,
        job.id(),
        "after rejected creates",
    );
    let page = ok(s.list_jobs(&JobQuery::default()).await, "list_jobs");
    assert!(page.jobs.is_empty(), "rejected creates listed: {page:?}");

    job.create(s).await;
    assert_stored(s, &job, "the valid create afterwards").await;
}

/// Creating an id that exists with different content is `AlreadyExists`
/// and leaves the stored job untouched.
pub async fn create_existing_id_is_already_exists(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    job.append(s, [Event::Queued]).await;

    let imposter = TestJob::with_spec("job-1", "mallory", ts(5), spec("imposter", 1));
    assert_already_exists(
        s.create_job(&imposter.summary(), imposter.records()).await,
        job.id(),
        "create with another header",
    );
    let mut longer = TestJob::new("job-1", T0);
    longer.next_batch([Event::Queued, Event::Started]);
    assert_already_exists(
        s.create_job(&longer.summary(), longer.records()).await,
        job.id(),
        "create with the same first record but other records after it",
    );
    assert_stored(s, &job, "after rejected creates").await;
}

/// Repeating a create that landed, identically, succeeds and writes
/// nothing, even after the job moved on.
pub async fn identical_create_is_idempotent(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.next_batch([Event::Queued]);
    let created = job.clone();
    created.create(s).await;
    created.create(s).await;
    assert_stored(s, &job, "after a repeated create").await;

    job.append(s, [Event::Started]).await;
    ok(
        s.create_job(&created.summary(), created.records()).await,
        "repeating the create after an append",
    );
    assert_stored(
        s,
        &job,
        "a repeated create must not reset the journal or the summary",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Appending
// ---------------------------------------------------------------------------

/// Appends at the current version land, return the new version, and touch
/// no other job.
pub async fn append_at_expected_version(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    let other = TestJob::new("job-2", T0);
    job.create(s).await;
    other.create(s).await;

    let b = job.append(s, [Event::Queued, Event::Started]).await;
    assert_eq!((b.expected, job.version()), (1, 3));
    assert_stored(s, &job, "after the first append").await;
    job.append(s, run_node(0)).await;
    assert_stored(s, &job, "after the second append").await;
    job.append(s, [Event::NodeReady { node: 1 }]).await;
    assert_eq!(job.version(), 7);
    assert_stored(s, &job, "after a one-record append").await;
    assert_stored(s, &other, "the other job").await;
}

/// An append at a stale or a future version is `Conflict { expected,
/// actual }`, not retryable, and writes nothing.
pub async fn append_at_wrong_version_is_conflict(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let at_one = job.clone();
    job.append(s, [Event::Queued, Event::Started]).await;
    let id = job.id().clone();

    // Someone else's view of version 1: a cancel racing the start.
    let stale = at_one.peek_batch([Event::CancelRequested { reason: None }]);
    assert_conflict(
        s.append(&id, 1, &stale.records, &stale.progress, 0).await,
        &id,
        1,
        3,
        "append at a stale version",
    );
    let stale = at_one.peek_batch([Event::Queued, Event::CancelRequested { reason: None }]);
    assert_conflict(
        s.append(&id, 1, &stale.records, &stale.progress, 0).await,
        &id,
        1,
        3,
        "append at a stale version whose first record matches",
    );
    let next = job.peek_batch(run_node(0));
    let future = renumber(&next.records, 6);
    assert_conflict(
        s.append(&id, 5, &future, &next.progress, 0).await,
        &id,
        5,
        3,
        "append at a future version",
    );
    assert_conflict(
        s.append(&id, 0, &renumber(&next.records, 1), &next.progress, 0)
            .await,
        &id,
        0,
        3,
        "append at version 0",
    );
    assert_stored(s, &job, "after conflicting appends").await;

    job.append(s, run_node(0)).await;
    assert_stored(s, &job, "an append at the right version afterwards").await;
}

/// Re-appending records that are already stored, identical, at the same
/// positions returns the same version and writes nothing (not even the
/// summary); different or overhanging records there are a `Conflict`.
pub async fn replayed_append_is_idempotent(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let at_one = job.clone();
    let first = job.append(s, [Event::Queued, Event::Started]).await;
    let id = job.id().clone();

    let again = s
        .append(&id, first.expected, &first.records, &first.progress, 0)
        .await;
    assert_eq!(ok(again, "replaying the last batch"), 3);
    assert_stored(s, &job, "after replaying the last batch").await;

    let second = job.append(s, run_node(0)).await;
    assert_eq!(job.version(), 6);
    let again = s
        .append(&id, first.expected, &first.records, &first.progress, 0)
        .await;
    assert_eq!(
        ok(again, "replaying an older batch"),
        3,
        "a replay returns the version its own records end at"
    );
    assert_stored(
        s,
        &job,
        "replaying an older batch must not roll the summary back",
    )
    .await;
    let again = s
        .append(&id, 1, &first.records[..1], &first.progress, 0)
        .await;
    assert_eq!(ok(again, "replaying a prefix of a batch"), 2);
    let again = s
        .append(&id, 4, &second.records[1..], &second.progress, 0)
        .await;
    assert_eq!(ok(again, "replaying a suffix of a batch"), 6);
    assert_stored(s, &job, "after replaying parts of batches").await;

    let other = at_one.peek_batch([Event::CancelRequested { reason: None }]);
    assert_conflict(
        s.append(&id, 1, &other.records, &other.progress, 0).await,
        &id,
        1,
        6,
        "a different batch at an old version",
    );
    let mut overhang = second.records[1..].to_vec();
    overhang.extend(job.peek_batch([Event::NodeReady { node: 1 }]).records);
    assert_conflict(
        s.append(&id, 4, &overhang, &job.progress(), 0).await,
        &id,
        4,
        6,
        "stored records followed by a new one",
    );
    assert_stored(s, &job, "after conflicting replays").await;
}

/// Records not numbered `expected + 1 ..` without gaps are `Invalid` and
/// nothing is written; a version no journal can reach is refused without a
/// panic.
pub async fn out_of_sequence_append_is_invalid(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let id = job.id().clone();
    let next = job.peek_batch([Event::Queued, Event::Started, Event::NodeReady { node: 0 }]);
    let r = &next.records;
    let cases: [(&str, Vec<Record>); 5] = [
        ("numbered from 3", renumber(r, 3)),
        ("numbered from 1", renumber(r, 1)),
        ("a gap", vec![r[0].clone(), r[2].clone()]),
        ("a duplicate", vec![r[0].clone(), r[0].clone()]),
        ("descending", vec![r[1].clone(), r[0].clone()]),
    ];
    for (what, records) in &cases {
        assert_invalid(
            s.append(&id, 1, records, &next.progress, 0).await,
            &format!("append of records with {what}"),
        );
    }
    let huge = renumber(&r[..1], u64::MAX);
    let e = err(
        s.append(&id, u64::MAX, &huge, &next.progress, 0).await,
        "append at version u64::MAX",
    );
    assert!(
        matches!(e, StoreError::Invalid(_) | StoreError::Conflict { .. }),
        "append at version u64::MAX: expected Invalid or Conflict, got {e:?}"
    );
    assert_stored(s, &job, "after out-of-sequence appends").await;

    job.append(
        s,
        [Event::Queued, Event::Started, Event::NodeReady { node: 0 }],
    )
    .await;
    assert_stored(s, &job, "the valid append afterwards").await;
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Every per-job call on a job that does not exist is `NotFound` naming it,
/// and none of them creates it.
pub async fn missing_job_is_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    TestJob::new("present", T0).create(s).await;
    let ghost = TestJob::new("ghost", T0);
    let id = ghost.id();
    let batch = ghost.peek_batch([Event::Queued]);

    assert_not_found(
        s.append(id, 1, &batch.records, &batch.progress, 0).await,
        id,
        "append",
    );
    assert_not_found(s.read(id, 0, 10).await, id, "read");
    assert_not_found(s.summary(id).await, id, "summary");
    assert_not_found(s.snapshot(id).await, id, "snapshot");
    assert_not_found(
        s.put_snapshot(id, &ghost.snapshot()).await,
        id,
        "put_snapshot",
    );
    assert_not_found(s.load_view(id).await, id, "load_view");
    assert_eq!(
        ok(s.unfinished_jobs().await, "unfinished_jobs"),
        [job_id("present")],
        "the calls above must not create the job"
    );
    ghost.create(s).await;
    assert_stored(s, &ghost, "creating it afterwards").await;
}

/// `read` returns up to `limit` records after `after`, in order: limit 0,
/// 1, exact and beyond; after 0, the middle, the end and past it.
pub async fn read_after_and_limit_edges(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let mut events = vec![Event::Queued, Event::Started];
    events.extend(run_nodes(0..2));
    events.push(note("ten"));
    job.append(s, events).await;
    assert_eq!(job.version(), 10);
    let id = job.id();
    let all = job.records();
    let read = |after: u64, limit: usize| async move {
        ok(
            s.read(id, after, limit).await,
            &format!("read({after}, {limit})"),
        )
    };
    let cases: [(u64, usize, &[Record]); 14] = [
        (0, 0, &[]),
        (5, 0, &[]),
        (0, 1, &all[..1]),
        (3, 1, &all[3..4]),
        (9, 1, &all[9..]),
        (0, 10, all),
        (0, 11, all),
        (0, usize::MAX, all),
        (4, 3, &all[4..7]),
        (4, 6, &all[4..]),
        (4, 100, &all[4..]),
        (10, 5, &[]),
        (11, 5, &[]),
        (u64::MAX, usize::MAX, &[]),
    ];
    for (after, limit, expected) in cases {
        let got = read(after, limit).await;
        assert!(
            got == expected,
            "read(after {after}, limit {limit}): got seqs {:?}, expected {:?}",
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            expected.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
    }
    assert_eq!(ok(s.read_all(id, 0).await, "read_all"), all);
    assert_eq!(ok(s.read_all(id, 7).await, "read_all(7)"), &all[7..]);
}

/// After every append the summary's progress is exactly the progress given
/// with it and its version the new version; the static fields never move;
/// a job leaves `unfinished_jobs` when it ends.
pub async fn summary_progress_follows_appends(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let steps: Vec<Vec<Event>> = vec![
        vec![Event::Queued],
        vec![Event::Started],
        run_node(0).to_vec(),
        vec![
            Event::NodeReady { node: 1 },
            Event::NodeStarted {
                node: 1,
                attempt: 1,
            },
        ],
        vec![Event::NodeFailed {
            node: 1,
            attempt: 1,
            failure: Box::new(Failure::transient("connection reset")),
            retry_in_ms: Some(250),
        }],
        vec![
            Event::NodeRetryDue { node: 1 },
            Event::NodeStarted {
                node: 1,
                attempt: 2,
            },
        ],
        vec![
            Event::NodeFailed {
                node: 1,
                attempt: 2,
                failure: Box::new(Failure::permanent("assertion failed")),
                retry_in_ms: None,
            },
            Event::NodeUpstreamFailed { node: 2 },
        ],
        vec![Event::Finished {
            state: JobState::Failed,
        }],
    ];
    for (i, events) in steps.into_iter().enumerate() {
        let batch = job.append(s, events).await;
        let summary = ok(s.summary(job.id()).await, "summary");
        assert_eq!(
            summary.progress, batch.progress,
            "progress after append {i}"
        );
        assert_eq!(
            summary.progress.version,
            job.version(),
            "version after append {i}"
        );
        assert_eq!(summary, job.summary(), "summary after append {i}");
        let unfinished = ok(s.unfinished_jobs().await, "unfinished_jobs");
        let expected: &[JobId] = if job.view().state.is_terminal() {
            &[]
        } else {
            std::slice::from_ref(job.id())
        };
        assert_eq!(unfinished, expected, "unfinished_jobs after append {i}");
    }
    let last = job.progress();
    assert_eq!(
        (
            last.state,
            last.nodes_total,
            last.nodes_finished,
            last.nodes_failed
        ),
        (JobState::Failed, 3, 3, 2),
        "the fixture's own fold"
    );
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/// No snapshot at first; a stored snapshot reads back; an older one does not
/// replace a newer one; one ahead of the journal or of another job is
/// `Invalid` and changes nothing.
pub async fn snapshots_keep_the_newest(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("job-1", T0);
    job.create(s).await;
    let other = TestJob::new("job-2", T0);
    other.create(s).await;
    let id = job.id().clone();
    let get = |id: JobId| async move { ok(s.snapshot(&id).await, "snapshot") };
    assert_eq!(get(id.clone()).await, None, "no snapshot at first");

    job.append(s, [Event::Queued, Event::Started]).await;
    let at3 = job.snapshot();
    job.append(s, run_node(0)).await;
    let at6 = job.snapshot();

    ok(s.put_snapshot(&id, &at6).await, "put_snapshot(6)");
    assert_eq!(get(id.clone()).await.as_ref(), Some(&at6));
    ok(s.put_snapshot(&id, &at3).await, "put_snapshot(3) after 6");
    assert_eq!(
        get(id.clone()).await.as_ref(),
        Some(&at6),
        "an older snapshot must not replace a newer one"
    );
    ok(s.put_snapshot(&id, &at6).await, "put_snapshot(6) again");
    assert_eq!(get(id.clone()).await.as_ref(), Some(&at6));

    job.append(s, run_node(1)).await;
    let at9 = job.snapshot();
    ok(s.put_snapshot(&id, &at9).await, "put_snapshot(9)");
    assert_eq!(
        get(id.clone()).await.as_ref(),
        Some(&at9),
        "a newer snapshot replaces"
    );

    let mut ahead = job.clone();
    ahead.next_batch([Event::NodeReady { node: 2 }]);
    assert_invalid(
        s.put_snapshot(&id, &ahead.snapshot()).await,
        "a snapshot ahead of the journal",
    );
    assert_invalid(
        s.put_snapshot(&id, &other.snapshot()).await,
        "another job's snapshot",
    );
    assert_eq!(
        get(id.clone()).await.as_ref(),
        Some(&at9),
        "after rejected snapshots"
    );
    assert_eq!(
        get(other.id().clone()).await,
        None,
        "the other job has none"
    );
    assert_stored(s, &job, "snapshots never touch the journal").await;
}

/// [`StoreExt::load_view`] (snapshot plus the records after it) equals a full
/// replay of the journal, with no snapshot, one at version 1, one in the
/// middle and one at the end.
pub async fn load_view_from_snapshot_equals_replay(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::with_spec("job-1", "bob", T0, spec("four", 4));
    job.create(s).await;
    let id = job.id().clone();
    let check = |job: TestJob, what: &'static str| {
        let id = id.clone();
        async move {
            let replayed = JobView::replay(&ok(s.read_all(&id, 0).await, what))
                .unwrap_or_else(|e| panic!("{what}: stored journal does not replay: {e}"));
            assert_eq!(replayed, *job.view(), "{what}: full replay");
            assert_eq!(
                ok(s.load_view(&id).await, what),
                replayed,
                "{what}: load_view"
            );
        }
    };
    check(job.clone(), "no snapshot, only the submitted record").await;
    ok(
        s.put_snapshot(&id, &job.snapshot()).await,
        "put_snapshot(1)",
    );
    job.append(s, [Event::Queued, Event::Started]).await;
    job.append(s, run_nodes(0..2)).await;
    check(job.clone(), "snapshot at version 1").await;

    ok(
        s.put_snapshot(&id, &job.snapshot()).await,
        "put_snapshot(middle)",
    );
    job.append(
        s,
        [
            Event::NodeReady { node: 2 },
            Event::NodeStarted {
                node: 2,
                attempt: 1,
            },
        ],
    )
    .await;
    job.append(
        s,
        [
            Event::NodeFailed {
                node: 2,
                attempt: 1,
                failure: Box::new(Failure::timeout("no answer")),
                retry_in_ms: Some(1000),
            },
            Event::NodeRetryDue { node: 2 },
        ],
    )
    .await;
    check(job.clone(), "snapshot in the middle").await;

    ok(
        s.put_snapshot(&id, &job.snapshot()).await,
        "put_snapshot(end)",
    );
    check(job.clone(), "snapshot at the last record").await;
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

/// Creates a job and drives it to `state`.
async fn job_in_state(
    store: &dyn Store,
    id: &str,
    owner: &str,
    created_at: Timestamp,
    spec: JobSpec,
    state: JobState,
) -> TestJob {
    let nodes = spec.nodes().len() as u32;
    let mut job = TestJob::with_spec(id, owner, created_at, spec);
    job.create(store).await;
    let events = events_to(state, nodes);
    if !events.is_empty() {
        job.append(store, events).await;
    }
    assert_eq!(job.view().state, state, "fixture for {id}");
    job
}

/// The ids on one page of `query` (which must be the only page).
async fn list_ids(store: &dyn Store, query: &JobQuery) -> Vec<String> {
    let page = ok(
        store.list_jobs(query).await,
        &format!("list_jobs({query:?})"),
    );
    assert_eq!(
        page.next_cursor, None,
        "list_jobs({query:?}): everything fits one page"
    );
    page.jobs.iter().map(|j| j.id.to_string()).collect()
}

/// Results are newest first (by creation time, then id, descending) and
/// carry the stored summaries; each filter works alone (owner, states, name
/// substring ignoring case, labels, `created_after` inclusive,
/// `created_before` exclusive) and combined with the others.
pub async fn list_jobs_newest_first_and_filters(store: Arc<dyn Store>) {
    let s = &*store;
    let empty = ok(s.list_jobs(&JobQuery::default()).await, "list_jobs");
    assert!(
        empty.jobs.is_empty() && empty.next_cursor.is_none(),
        "empty store: {empty:?}"
    );

    let named = |name: &str, labels: &[(&str, &str)]| {
        let mut b = JobSpec::builder(name).node(NodeSpec::new("n0", "noop"));
        for (k, v) in labels {
            b = b.label(*k, *v);
        }
        b.node(NodeSpec::new("n1", "noop")).build()
    };
    use JobState as S;
    let corpus = [
        (
            "job-a",
            "alice",
            "Nightly Build",
            &[("team", "core"), ("env", "ci")][..],
            1000,
            S::Succeeded,
        ),
        (
            "job-b",
            "bob",
            "nightly-tests",
            &[("team", "core")][..],
            2000,
            S::Running,
        ),
        (
            "job-c",
            "alice",
            "Smoke",
            &[("env", "ci")][..],
            2000,
            S::Failed,
        ),
        (
            "job-d",
            "carol",
            "Release NIGHTLY",
            &[("team", "web"), ("env", "prod")][..],
            3000,
            S::Pending,
        ),
        (
            "job-e",
            "alice",
            "deploy",
            &[("team", "web")][..],
            4000,
            S::Queued,
        ),
        ("job-f", "bob", "Smoke nightly", &[][..], 5000, S::Cancelled),
    ];
    let mut jobs = BTreeMap::new();
    // Created in an order that is neither sorted nor reversed.
    for i in [2, 5, 0, 3, 1, 4] {
        let (id, owner, name, labels, at, state) = corpus[i];
        let job = job_in_state(s, id, owner, ts(at), named(name, labels), state).await;
        jobs.insert(id, job);
    }

    let all = ok(
        s.list_jobs(&JobQuery::default()).await,
        "list_jobs(default)",
    );
    let expected: Vec<JobSummary> = ["job-f", "job-e", "job-d", "job-c", "job-b", "job-a"]
        .iter()
        .map(|id| jobs[id].summary())
        .collect();
    assert_eq!(all.jobs, expected, "all jobs, newest first, as stored");
    assert_eq!(all.next_cursor, None);

    let q = JobQuery::default;
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    let owner = |o: &str| Some(o.to_owned());
    let name = |n: &str| Some(n.to_owned());
    let cases: Vec<(&str, JobQuery, &[&str])> = vec![
        (
            "owner alice",
            JobQuery {
                owner: owner("alice"),
                ..q()
            },
            &["job-e", "job-c", "job-a"],
        ),
        (
            "owner nobody",
            JobQuery {
                owner: owner("nobody"),
                ..q()
            },
            &[],
        ),
        (
            "owner is exact",
            JobQuery {
                owner: owner("ali"),
                ..q()
            },
            &[],
        ),
        (
            "state running",
            JobQuery {
                states: vec![S::Running],
                ..q()
            },
            &["job-b"],
        ),
        (
            "terminal states",
            JobQuery {
                states: vec![S::Succeeded, S::Failed, S::Cancelled],
                ..q()
            },
            &["job-f", "job-c", "job-a"],
        ),
        (
            "pending or queued",
            JobQuery {
                states: vec![S::Pending, S::Queued],
                ..q()
            },
            &["job-e", "job-d"],
        ),
        (
            "state timed out",
            JobQuery {
                states: vec![S::TimedOut],
                ..q()
            },
            &[],
        ),
        (
            "name nightly",
            JobQuery {
                name: name("nightly"),
                ..q()
            },
            &["job-f", "job-d", "job-b", "job-a"],
        ),
        (
            "name SMOKE",
            JobQuery {
                name: name("SMOKE"),
                ..q()
            },
            &["job-f", "job-c"],
        ),
        (
            "name in the middle",
            JobQuery {
                name: name("ly-te"),
                ..q()
            },
            &["job-b"],
        ),
        (
            "name nothing",
            JobQuery {
                name: name("zzz"),
                ..q()
            },
            &[],
        ),
        (
            "label team=core",
            JobQuery {
                labels: labels(&[("team", "core")]),
                ..q()
            },
            &["job-b", "job-a"],
        ),
        (
            "label team=web",
            JobQuery {
                labels: labels(&[("team", "web")]),
                ..q()
            },
            &["job-e", "job-d"],
        ),
        (
            "label env=ci",
            JobQuery {
                labels: labels(&[("env", "ci")]),
                ..q()
            },
            &["job-c", "job-a"],
        ),
        (
            "labels team=core and env=ci",
            JobQuery {
                labels: labels(&[("team", "core"), ("env", "ci")]),
                ..q()
            },
            &["job-a"],
        ),
        (
            "label team=nope",
            JobQuery {
                labels: labels(&[("team", "nope")]),
                ..q()
            },
            &[],
        ),
        (
            "label missing key",
            JobQuery {
                labels: labels(&[("tier", "1")]),
                ..q()
            },
            &[],
        ),
        (
            "created_after is inclusive",
            JobQuery {
                created_after: Some(ts(2000)),
                ..q()
            },
            &["job-f", "job-e", "job-d", "job-c", "job-b"],
        ),
        (
            "created_after past the last",
            JobQuery {
                created_after: Some(ts(5001)),
                ..q()
            },
            &[],
        ),
        (
            "created_before is exclusive",
            JobQuery {
                created_before: Some(ts(2000)),
                ..q()
            },
            &["job-a"],
        ),
        (
            "created_before past the last",
            JobQuery {
                created_before: Some(ts(5001)),
                ..q()
            },
            &["job-f", "job-e", "job-d", "job-c", "job-b", "job-a"],
        ),
        (
            "a time window",
            JobQuery {
                created_after: Some(ts(2000)),
                created_before: Some(ts(4000)),
                ..q()
            },
            &["job-d", "job-c", "job-b"],
        ),
        (
            "owner and states",
            JobQuery {
                owner: owner("alice"),
                states: vec![S::Failed, S::Queued],
                ..q()
            },
            &["job-e", "job-c"],
        ),
        (
            "owner, name and label",
            JobQuery {
                owner: owner("alice"),
                name: name("smoke"),
                labels: labels(&[("env", "ci")]),
                ..q()
            },
            &["job-c"],
        ),
        (
            "owner and created_before",
            JobQuery {
                owner: owner("bob"),
                created_before: Some(ts(5000)),
                ..q()
            },
            &["job-b"],
        ),
        (
            "owner, name and created_after",
            JobQuery {
                owner: owner("bob"),
                name: name("NightLy"),
                created_after: Some(ts(2000)),
                ..q()
            },
            &["job-f", "job-b"],
        ),
        (
            "every filter",
            JobQuery {
                owner: owner("carol"),
                states: vec![S::Pending],
                name: name("release"),
                labels: labels(&[("env", "prod")]),
                created_after: Some(ts(3000)),
                created_before: Some(ts(3001)),
                ..q()
            },
            &["job-d"],
        ),
        (
            "every filter, one off",
            JobQuery {
                owner: owner("carol"),
                states: vec![S::Pending],
                name: name("release"),
                labels: labels(&[("env", "prod")]),
                created_after: Some(ts(3000)),
                created_before: Some(ts(3000)),
                ..q()
            },
            &[],
        ),
    ];
    for (what, query, expected) in cases {
        assert_eq!(list_ids(s, &query).await, expected, "filter: {what}");
    }
}

/// Walks every page of `query` (its limit is the page size), checking the
/// page invariants, and returns the pages.
async fn walk_pages(store: &dyn Store, mut query: JobQuery) -> Vec<Vec<JobSummary>> {
    let mut pages = Vec::new();
    loop {
        let what = format!("list_jobs(limit {}, page {})", query.limit, pages.len() + 1);
        let page = ok(store.list_jobs(&query).await, &what);
        assert!(
            page.jobs.len() <= query.limit,
            "{what}: {} jobs",
            page.jobs.len()
        );
        let Some(next) = page.next_cursor else {
            pages.push(page.jobs);
            return pages;
        };
        let Some(last) = page.jobs.last() else {
            panic!("{what}: an empty page with a cursor");
        };
        let cursor: Cursor = next
            .parse()
            .unwrap_or_else(|e| panic!("{what}: the store's cursor {next:?} does not parse: {e}"));
        assert_eq!(
            cursor,
            Cursor::after(last),
            "{what}: the cursor points after the last job"
        );
        query.cursor = Some(cursor);
        pages.push(page.jobs);
        assert!(pages.len() <= 10_000, "{what}: pagination does not end");
    }
}

/// Paging with every page size from 1 up past the total returns each job
/// exactly once, in order, with full pages, and no cursor on the last page —
/// also when the total is an exact multiple of the page size and when many
/// jobs share a creation time; filters and pagination combine.
pub async fn list_jobs_pagination(store: Arc<dyn Store>) {
    let s = &*store;
    const JOBS: usize = 30;
    let mut expected = Vec::new();
    // Groups of four share a creation time, so the order within a group
    // rests on the id; they are created in a scrambled order.
    for k in 0..JOBS {
        let i = (k * 7) % JOBS;
        let owner = if i % 2 == 0 { "even" } else { "odd" };
        let job = TestJob::with_spec(
            &format!("p-{i:02}"),
            owner,
            ts(1000 * (i / 4) as u64),
            spec("paged", 1),
        );
        job.create(s).await;
        expected.push(job.summary());
    }
    expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));

    for limit in [1, 2, 3, 4, 5, 6, 7, 10, 15, 29, 30, 31, JobQuery::MAX_LIMIT] {
        let pages = walk_pages(
            s,
            JobQuery {
                limit,
                ..JobQuery::default()
            },
        )
        .await;
        let what = format!("paging by {limit}");
        assert_eq!(pages.len(), JOBS.div_ceil(limit), "{what}: number of pages");
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), limit, "{what}: every page but the last is full");
        }
        let flat: Vec<JobSummary> = pages.into_iter().flatten().collect();
        let unique: HashSet<&JobId> = flat.iter().map(|j| &j.id).collect();
        assert_eq!(unique.len(), flat.len(), "{what}: a job appears twice");
        assert!(
            flat == expected,
            "{what}: every job once, newest first; got {:?}",
            flat.iter().map(|j| j.id.as_str()).collect::<Vec<_>>()
        );
    }

    let odd: Vec<JobSummary> = expected
        .iter()
        .filter(|j| j.owner == "odd")
        .cloned()
        .collect();
    for limit in [1, 4, 5, 15] {
        let query = JobQuery {
            owner: Some("odd".into()),
            limit,
            ..JobQuery::default()
        };
        let pages = walk_pages(s, query).await;
        assert_eq!(
            pages.len(),
            odd.len().div_ceil(limit),
            "odd jobs by {limit}: pages"
        );
        let flat: Vec<JobSummary> = pages.into_iter().flatten().collect();
        assert!(
            flat == odd,
            "odd jobs by {limit}: every one once, newest first"
        );
    }
    let window = JobQuery {
        created_after: Some(ts(2000)),
        created_before: Some(ts(5000)),
        limit: 4,
        ..JobQuery::default()
    };
    let flat: Vec<JobSummary> = walk_pages(s, window).await.into_iter().flatten().collect();
    let in_window: Vec<JobSummary> = expected
        .iter()
        .filter(|j| (ts(2000)..ts(5000)).contains(&j.created_at))
        .cloned()
        .collect();
    assert_eq!(in_window.len(), 12);
    assert!(flat == in_window, "a time window by 4: every job once");
}

/// A limit of 0 or above [`JobQuery::MAX_LIMIT`] is `Invalid`; malformed
/// cursor strings do not parse; cursors before the first or after the last
/// job give everything or nothing.
pub async fn list_jobs_rejects_bad_limits_and_cursors(store: Arc<dyn Store>) {
    let s = &*store;
    for i in 0..3u64 {
        TestJob::new(&format!("job-{i}"), ts(i)).create(s).await;
    }
    for limit in [0, JobQuery::MAX_LIMIT + 1, usize::MAX] {
        assert_invalid(
            s.list_jobs(&JobQuery {
                limit,
                ..JobQuery::default()
            })
            .await,
            &format!("list_jobs(limit {limit})"),
        );
    }
    let max = JobQuery {
        limit: JobQuery::MAX_LIMIT,
        ..JobQuery::default()
    };
    assert_eq!(
        ok(s.list_jobs(&max).await, "list_jobs(limit MAX)")
            .jobs
            .len(),
        3
    );

    for bad in [
        "",
        ".",
        "no-dot",
        "abc.job-1",
        "-1.job-1",
        "1.5.job-1",
        "12.",
        "12.bad id",
        "12.../etc",
        "18446744073709551616.job-1",
    ] {
        match bad.parse::<Cursor>() {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("cursor {bad:?}: expected Invalid, got {other:?}"),
        }
    }

    let before_all = Cursor {
        created_at: ts(0),
        id: job_id("job-0"),
    };
    let page = ok(
        s.list_jobs(&JobQuery {
            cursor: Some(before_all),
            ..JobQuery::default()
        })
        .await,
        "list_jobs(cursor at the oldest job)",
    );
    assert!(
        page.jobs.is_empty() && page.next_cursor.is_none(),
        "after the oldest job: {page:?}"
    );
    let after_all = Cursor {
        created_at: Timestamp(u64::MAX),
        id: job_id("zzz"),
    };
    let page = ok(
        s.list_jobs(&JobQuery {
            cursor: Some(after_all),
            ..JobQuery::default()
        })
        .await,
        "list_jobs(cursor past the newest job)",
    );
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        ["job-2", "job-1", "job-0"],
        "a cursor before every job"
    );
    let middle = Cursor {
        created_at: ts(1),
        id: job_id("job-1"),
    };
    let page = ok(
        s.list_jobs(&JobQuery {
            cursor: Some(middle),
            ..JobQuery::default()
        })
        .await,
        "list_jobs(cursor at job-1)",
    );
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job-0"], "after job-1");
}

/// `unfinished_jobs` lists exactly the jobs in a non-terminal state, and
/// follows them as they end.
pub async fn unfinished_jobs_are_the_non_terminal_ones(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(
        ok(s.unfinished_jobs().await, "unfinished_jobs"),
        [] as [JobId; 0]
    );
    let mut jobs = HashMap::new();
    for (i, state) in JobState::ALL.into_iter().enumerate() {
        let id = format!("job-{}", state.as_str().replace('_', "-"));
        let job = job_in_state(s, &id, "alice", ts(i as u64), spec("any", 2), state).await;
        jobs.insert(state, job);
    }
    let unfinished = |jobs: &HashMap<JobState, TestJob>| {
        jobs.values()
            .filter(|j| !j.view().state.is_terminal())
            .map(|j| j.id().clone())
            .collect::<BTreeSet<_>>()
    };
    let stored = |ids: Vec<JobId>| {
        let n = ids.len();
        let set: BTreeSet<JobId> = ids.into_iter().collect();
        assert_eq!(set.len(), n, "unfinished_jobs lists a job twice");
        set
    };
    let expected = unfinished(&jobs);
    assert_eq!(
        expected.len(),
        6,
        "pending, queued, running, recovering, cancelling, rolling_back"
    );
    assert_eq!(
        stored(ok(s.unfinished_jobs().await, "unfinished_jobs")),
        expected
    );

    let running = jobs.get_mut(&JobState::Running).expect("running job");
    running.append(s, run_nodes(0..2)).await;
    running
        .append(
            s,
            [Event::Finished {
                state: JobState::Succeeded,
            }],
        )
        .await;
    let cancelling = jobs.get_mut(&JobState::Cancelling).expect("cancelling job");
    cancelling
        .append(
            s,
            [
                Event::NodeCancelled { node: 0 },
                Event::NodeCancelled { node: 1 },
                Event::Finished {
                    state: JobState::Cancelled,
                },
            ],
        )
        .await;
    let expected = unfinished(&jobs);
    assert_eq!(expected.len(), 4);
    assert_eq!(
        stored(ok(s.unfinished_jobs().await, "unfinished_jobs")),
        expected,
        "after two jobs ended"
    );
}

// ---------------------------------------------------------------------------
// Races and size
// ---------------------------------------------------------------------------

/// The progress of the race job at version `v`: every record is a note
/// stamped `T0 + seq - 1`, so only the version and time move.
fn race_progress(base: Progress, v: u64) -> Progress {
    Progress {
        version: v,
        updated_at: Timestamp(T0.0 + v - 1),
        ..base
    }
}

/// Reads the records after `seen` and checks they continue it.
async fn catch_up(store: &dyn Store, id: &JobId, seen: &mut u64) {
    loop {
        let page = ok(store.read(id, *seen, 1000).await, "read during the race");
        let n = page.len();
        for r in page {
            assert_eq!(r.seq, *seen + 1, "journal seqs must be contiguous");
            *seen = r.seq;
        }
        if n < 1000 {
            return;
        }
    }
}

/// 16 tasks each append 50 records to one job, one at a time, by reading
/// the version, appending at it and retrying on `Conflict`. The journal ends
/// with exactly 1 + 16·50 records numbered without gaps or duplicates, each
/// task's records once and in its order, and the summary at that version.
/// Meanwhile a watcher checks that the summary is never ahead of or behind
/// the journal, and no task fails more often than others succeeded.
pub async fn concurrent_appends_to_one_job(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 50;
    const TOTAL: u64 = 1 + (TASKS * PER_TASK) as u64;
    let job = TestJob::new("race", T0);
    job.create(&*store).await;
    let id = job.id().clone();
    let base = job.progress();
    let done = Arc::new(AtomicBool::new(false));

    let watcher = tokio::spawn({
        let (store, id, done) = (store.clone(), id.clone(), done.clone());
        async move {
            let mut seen = 0;
            let mut rounds = 0u32;
            loop {
                let last_round = done.load(Ordering::Acquire);
                catch_up(&*store, &id, &mut seen).await;
                let summary = ok(store.summary(&id).await, "summary during the race");
                let v = summary.progress.version;
                assert!(
                    v >= seen,
                    "summary at version {v} behind a journal of {seen} records"
                );
                assert_eq!(
                    summary.progress,
                    race_progress(base, v),
                    "summary at version {v}"
                );
                catch_up(&*store, &id, &mut seen).await;
                assert!(
                    v <= seen,
                    "summary at version {v} ahead of a journal of {seen} records"
                );
                rounds += 1;
                if last_round {
                    return rounds;
                }
                tokio::task::yield_now().await;
            }
        }
    });

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, id) = (store.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0usize;
            for i in 0..PER_TASK {
                loop {
                    attempts += 1;
                    // Each failed attempt means some other append landed
                    // between this task's read and its append.
                    assert!(
                        attempts <= PER_TASK + TASKS * PER_TASK,
                        "task {t}: more conflicts than other tasks' appends"
                    );
                    let v = ok(store.summary(&id).await, "summary").progress.version;
                    // The window a networked backend has anyway: without it,
                    // a store that never awaits inside a call would let each
                    // task run its whole loop uncontested on one worker.
                    tokio::task::yield_now().await;
                    let record = Record {
                        seq: v + 1,
                        at: Timestamp(T0.0 + v),
                        event: note(format!("task {t} append {i}")),
                    };
                    match store
                        .append(&id, v, &[record], &race_progress(base, v + 1), 0)
                        .await
                    {
                        Ok(n) => {
                            assert_eq!(n, v + 1, "task {t}: append at {v} returned {n}");
                            break;
                        }
                        Err(StoreError::Conflict {
                            expected, actual, ..
                        }) => {
                            assert_eq!(
                                expected, v,
                                "task {t}: conflict names the expected version"
                            );
                            assert!(
                                actual > v,
                                "task {t}: conflict at {v} with version {actual}"
                            );
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("task {t}: append at {v} failed: {e:?}"),
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += join(task).await;
    }
    done.store(true, Ordering::Release);
    let rounds = join(watcher).await;
    assert!(rounds >= 1);
    assert!(attempts >= TASKS * PER_TASK);

    let records = ok(store.read_all(&id, 0).await, "read_all after the race");
    assert_eq!(records.len() as u64, TOTAL, "records after the race");
    let mut next = vec![0usize; TASKS];
    for (r, seq) in records.iter().zip(1..) {
        assert_eq!(r.seq, seq, "seqs 1..={TOTAL} without gaps or duplicates");
        if seq == 1 {
            continue;
        }
        let Event::EscalationRequired { reason, .. } = &r.event else {
            panic!("record {seq} is not a race note: {r:?}");
        };
        let parsed = reason
            .strip_prefix("task ")
            .and_then(|rest| rest.split_once(" append "))
            .and_then(|(t, i)| Some((t.parse::<usize>().ok()?, i.parse::<usize>().ok()?)));
        let Some((t, i)) = parsed.filter(|(t, _)| *t < TASKS) else {
            panic!("record {seq} has an unknown note {reason:?}");
        };
        assert_eq!(
            i, next[t],
            "task {t}'s appends must land once each, in order"
        );
        next[t] += 1;
    }
    assert_eq!(next, vec![PER_TASK; TASKS], "every task's appends landed");
    let summary = ok(store.summary(&id).await, "summary after the race");
    assert_eq!(summary.progress, race_progress(base, TOTAL));
    let view = JobView::replay(&records).unwrap_or_else(|e| panic!("replay after the race: {e}"));
    assert_eq!(
        view.progress(),
        summary.progress,
        "the summary agrees with the journal"
    );
}

/// Many tasks create distinct jobs at once; several race to create one id
/// with different content (exactly one wins, the rest get `AlreadyExists`
/// and the winner's job is stored whole); several create another id
/// identically (all succeed, stored once). Listing and `unfinished_jobs`
/// then see every job exactly once.
pub async fn concurrent_creates(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 8;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..PER_TASK {
                // Creation times collide across tasks on purpose.
                let job = TestJob::new(&format!("c-{t:02}-{i}"), ts(i as u64));
                job.create(&*store).await;
                mine.push(job);
            }
            let contender = TestJob::with_spec(
                "contested",
                &format!("owner-{t}"),
                ts(t as u64),
                spec(&format!("contender {t}"), 1),
            );
            let won = match store
                .create_job(&contender.summary(), contender.records())
                .await
            {
                Ok(()) => Some(contender),
                Err(StoreError::AlreadyExists { job }) => {
                    assert_eq!(job.as_str(), "contested");
                    None
                }
                Err(e) => panic!("task {t}: racing create failed: {e:?}"),
            };
            TestJob::new("shared", T0).create(&*store).await;
            (mine, won)
        }));
    }
    let mut all = Vec::new();
    let mut winners = Vec::new();
    for h in handles {
        let (mine, won) = join(h).await;
        all.extend(mine);
        winners.extend(won);
    }
    assert_eq!(winners.len(), 1, "exactly one racing create of one id wins");
    let winner = winners.remove(0);
    let s = &*store;
    assert_stored(s, &winner, "the contested job is the winner's").await;
    let shared = TestJob::new("shared", T0);
    assert_stored(s, &shared, "identical concurrent creates store one job").await;
    for job in &all {
        assert_stored(s, job, "a concurrently created job").await;
    }
    all.push(winner);
    all.push(shared);

    let expected: BTreeSet<JobId> = all.iter().map(|j| j.id().clone()).collect();
    assert_eq!(expected.len(), TASKS * PER_TASK + 2);
    let unfinished = ok(s.unfinished_jobs().await, "unfinished_jobs");
    assert_eq!(
        unfinished.len(),
        expected.len(),
        "unfinished_jobs lists each job once"
    );
    assert_eq!(unfinished.into_iter().collect::<BTreeSet<_>>(), expected);
    let listed: Vec<JobId> = walk_pages(
        s,
        JobQuery {
            limit: 25,
            ..JobQuery::default()
        },
    )
    .await
    .into_iter()
    .flatten()
    .map(|j| j.id)
    .collect();
    assert_eq!(
        listed.len(),
        expected.len(),
        "list_jobs lists each job once"
    );
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// A journal of 20,001 records (6,666 nodes run to success), appended in
/// batches of 500, reads back in pages of 1,000 in order and folds, through
/// [`JobView::replay`], a snapshot or [`StoreExt::load_view`], into the
/// same view; the summary agrees.
pub async fn large_journal(store: Arc<dyn Store>) {
    const NODES: u32 = 6_666;
    const BATCH: usize = 500;
    const PAGE: usize = 1_000;
    let s = &*store;
    let mut job = TestJob::with_spec("big", "alice", T0, spec("big", NODES));
    job.create(s).await;
    let mut events = vec![Event::Queued, Event::Started];
    events.extend(run_nodes(0..NODES));
    assert_eq!(events.len(), 20_000);
    for (i, chunk) in events.chunks(BATCH).enumerate() {
        job.append(s, chunk.iter().cloned()).await;
        if i == 20 {
            ok(
                s.put_snapshot(job.id(), &job.snapshot()).await,
                "put_snapshot",
            );
        }
    }
    assert_eq!(job.version(), 20_001);
    let id = job.id();

    let mut records = Vec::with_capacity(20_001);
    loop {
        let after = records.len() as u64;
        let page = ok(
            s.read(id, after, PAGE).await,
            &format!("read({after}, {PAGE})"),
        );
        let n = page.len();
        assert_eq!(n, PAGE.min(20_001 - records.len()), "page after {after}");
        records.extend(page);
        if n < PAGE {
            break;
        }
    }
    assert!(
        records == job.records(),
        "the journal reads back in pages, in order"
    );
    let replayed =
        JobView::replay(&records).unwrap_or_else(|e| panic!("replay of the large journal: {e}"));
    assert_eq!(replayed, *job.view(), "replay of the large journal");
    assert_eq!(replayed.finished_nodes(), NODES);
    assert_eq!(
        ok(s.load_view(id).await, "load_view"),
        replayed,
        "load_view from the snapshot"
    );
    assert_eq!(ok(s.summary(id).await, "summary"), job.summary());
}
