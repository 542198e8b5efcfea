//! The stuck-job sweeper: an executor whose scheduler is wedged by an
//! append that never returns reports its jobs and hands them over; a job
//! whose appends keep failing is reported once and escalated in its
//! journal when the store heals; a job that cannot finish is escalated
//! once; jobs that legitimately wait (an attempt without a timeout, a
//! concurrency slot, an attempt within its timeout, a retry timer) are
//! never reported. Deterministic under paused tokio time: the executors'
//! wall clock follows tokio's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::executor::Notification;
use orchestrator_core::journal::{Progress, Snapshot};
use orchestrator_core::notify::{DeliveryError, Dispatcher, Envelope, NotificationSink, Route};
use orchestrator_core::recovery::EscalationCause;
use orchestrator_core::runner::{ExecutionStatus, Outcome, ScriptedRunner};
use orchestrator_core::store::{JobPage, JobQuery, LeaseStore, MemoryStore};
use orchestrator_core::{
    Backoff, Clock, Event, Executor, ExecutorConfig, FailureClass, JobId, JobSpec, JobState,
    JobSummary, LeaseConfig, NodeSpec, Record, Recovery, Registry, RetrySpec, Store, StoreError,
    StoreExt, Timestamp,
};
use tokio::sync::watch;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(5);
const STALL: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(20);

/// Wall-clock time that moves with tokio's (paused) clock.
#[derive(Debug)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_704_067_200_000 + self.0.elapsed().as_millis() as u64)
    }
}

/// What the faulty store does.
#[derive(Debug, Default)]
struct Faults {
    /// Appends carrying this fencing token hang for ever after this many.
    hang: Option<(u64, usize)>,
    /// Appends counted for `hang`.
    appends: usize,
    /// When the first append hung.
    hung_at: Option<Instant>,
    /// Appends fail with `Unavailable` while set.
    failing: bool,
}

/// A shared memory store with faults injected into the journal: appends
/// that hang or fail, reads that wait. Leases (renewals) always work.
struct Faulty {
    inner: Arc<MemoryStore>,
    faults: Mutex<Faults>,
    /// Reads wait while this is `true`.
    reads: watch::Sender<bool>,
}

orchestrator_core::forward_store_extensions!(Faulty => inner);

impl Faulty {
    fn new(inner: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            faults: Mutex::new(Faults::default()),
            reads: watch::channel(false).0,
        })
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }
}

#[async_trait]
impl Store for Faulty {
    async fn create_job(&self, s: &JobSummary, r: &[Record]) -> Result<(), StoreError> {
        self.inner.create_job(s, r).await
    }
    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        let hang = {
            let mut f = self.faults();
            if f.failing {
                return Err(StoreError::Unavailable {
                    message: "injected outage".into(),
                    source: None,
                });
            }
            match f.hang {
                Some((token, after)) if token == fence => {
                    f.appends += 1;
                    let hang = f.appends > after;
                    if hang && f.hung_at.is_none() {
                        f.hung_at = Some(Instant::now());
                    }
                    hang
                }
                _ => false,
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
        self.inner
            .append(job, expected, records, progress, fence)
            .await
    }
    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut open = self.reads.subscribe();
        let _ = open.wait_for(|waiting| !waiting).await;
        self.inner.read(job, after, limit).await
    }
    async fn put_snapshot(&self, job: &JobId, s: &Snapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(job, s).await
    }
    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.snapshot(job).await
    }
    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.inner.summary(job).await
    }
    async fn list_jobs(&self, q: &JobQuery) -> Result<JobPage, StoreError> {
        self.inner.list_jobs(q).await
    }
    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        self.inner.unfinished_jobs().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Pool {
    store: Arc<MemoryStore>,
    runner: ScriptedRunner,
    clock: Arc<TokioClock>,
}

impl Pool {
    fn new() -> Self {
        Self {
            store: Arc::new(MemoryStore::shared()),
            runner: ScriptedRunner::new(),
            clock: Arc::new(TokioClock(Instant::now())),
        }
    }

    fn config(owner: &str) -> ExecutorConfig {
        ExecutorConfig {
            lease: LeaseConfig {
                owner: owner.into(),
                ttl: TTL,
                heartbeat: HEARTBEAT,
                stall_timeout: STALL,
                stall_grace: GRACE,
                ..LeaseConfig::default()
            },
            ..ExecutorConfig::default()
        }
    }

    async fn executor(&self, store: Arc<dyn Store>, config: ExecutorConfig) -> Executor {
        let mut registry = Registry::with_builtins();
        registry.register("test", self.runner.clone());
        Executor::builder(store)
            .registry(registry)
            .config(config)
            .clock(self.clock.clone())
            .recovery(Recovery::All)
            .start()
            .await
            .expect("executor starts")
    }

    /// The journal, read past any fault.
    async fn journal(&self, id: &JobId) -> Vec<Record> {
        self.store.read_all(id, 0).await.unwrap()
    }
}

/// Every notification of an executor's feed, with when it arrived.
#[derive(Clone, Default)]
struct Feed(Arc<Mutex<Vec<(Instant, Notification)>>>);

impl Feed {
    fn follow(executor: &Executor) -> Self {
        let feed = Self::default();
        let mut sub = executor.subscribe();
        let out = feed.clone();
        tokio::spawn(async move {
            while let Ok(Some(n)) = sub.recv().await {
                out.0.lock().unwrap().push((Instant::now(), n));
            }
        });
        feed
    }

    /// The `job_stuck` escalations of `job` seen so far: (arrival,
    /// journaled).
    fn stuck(&self, job: &JobId) -> Vec<(Instant, bool)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| &n.job == job && is_stuck(&n.record))
            .map(|(at, n)| (*at, n.journaled))
            .collect()
    }

    fn escalations(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| matches!(n.record.event, Event::EscalationRequired { .. }))
            .count()
    }
}

/// A notification sink that keeps what it is given.
#[derive(Default)]
struct Sink(Mutex<Vec<Envelope>>);

#[async_trait]
impl NotificationSink for Sink {
    fn name(&self) -> &str {
        "sink"
    }

    async fn deliver(&self, envelope: &Envelope) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(envelope.clone());
        Ok(())
    }
}

fn is_stuck(record: &Record) -> bool {
    matches!(
        record.event,
        Event::EscalationRequired {
            cause: Some(EscalationCause::JobStuck),
            ..
        }
    )
}

fn stuck_records(journal: &[Record]) -> Vec<&Record> {
    journal.iter().filter(|r| is_stuck(r)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_wedged_executor_reports_its_jobs_and_hands_them_over() {
    let pool = Pool::new();
    pool.runner
        .script("a", [Outcome::succeed().after(Duration::from_secs(1))]);
    pool.runner.script(
        "b",
        [
            Outcome::succeed().after(Duration::from_secs(600)),
            Outcome::succeed().after(Duration::from_secs(1)),
        ],
    );
    pool.runner.script(
        "c",
        [
            Outcome::succeed().after(Duration::from_secs(2)),
            Outcome::succeed().after(Duration::from_secs(1)),
        ],
    );
    // A's third append for the job (c's success, while b runs) never
    // returns; its lease renewals keep working.
    let faulty = Faulty::new(pool.store.clone());
    faulty.faults().hang = Some((1, 2));
    let a = pool.executor(faulty.clone(), Pool::config("A")).await;
    let feed = Feed::follow(&a);
    let sink = Arc::new(Sink::default());
    let escalations = "escalation.*".parse().unwrap();
    let dispatcher = Dispatcher::start(&a, vec![Route::new(sink.clone(), escalations)]);
    let spec = JobSpec::builder("wedged")
        .node(NodeSpec::new("a", "test"))
        .node(NodeSpec::new("b", "test").depends_on(["a"]))
        .node(NodeSpec::new("c", "test").depends_on(["a"]))
        .build();
    let id = a.submit(spec, "alice").await.unwrap();
    let b = pool.executor(pool.store.clone(), Pool::config("B")).await;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let hung_at = faulty.faults().hung_at.expect("an append hangs");
    assert!(
        feed.stuck(&id).is_empty(),
        "not reported within the stall timeout"
    );
    assert_eq!(a.leases().len(), 1, "A still renews the job's lease");

    let status = tokio::time::timeout(Duration::from_secs(600), b.wait(&id))
        .await
        .expect("B takes the job over")
        .unwrap();
    assert_eq!(status.state, JobState::Succeeded);

    let reports = feed.stuck(&id);
    assert_eq!(reports.len(), 1, "reported once: {reports:?}");
    let (reported, journaled) = reports[0];
    assert!(!journaled, "A could not journal the report");
    assert!(
        reported - hung_at <= STALL + HEARTBEAT,
        "reported {:?} after the wedge: within the stall timeout plus a heartbeat",
        reported - hung_at
    );
    assert!(reported - hung_at > STALL, "not before the stall timeout");
    let delivered = sink.0.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].details["cause"], "job_stuck");
    assert!(!delivered[0].journaled);
    assert_eq!(dispatcher.stats().sinks[0].dropped, 0);
    assert!(a.leases().is_empty(), "A let go of the lease");
    let lease = pool.store.lease(&id).await.unwrap();
    assert_eq!((lease.owner.as_str(), lease.token), ("B", 2));

    assert_eq!(
        pool.runner.runs_of("a"),
        1,
        "a succeeded durably: never again"
    );
    let runs = pool.runner.executions_of("b");
    assert_eq!(runs.len(), 2);
    assert_ne!(
        runs[0].status,
        ExecutionStatus::Succeeded,
        "A's attempt was stopped"
    );
    assert!(
        runs[0].ended.expect("A's attempt was stopped") <= runs[1].started,
        "never running in two executors at once"
    );
    assert!(
        runs[1].started - reported <= Duration::from_secs(10) + HEARTBEAT * 2,
        "B takes over within a heartbeat of the release (after the cancel grace)"
    );
    let journal = pool.journal(&id).await;
    assert!(
        stuck_records(&journal).is_empty(),
        "the wedged executor could not journal"
    );
    assert!(journal.iter().any(|r| matches!(
        &r.event,
        Event::NodeFailed { node: 1, attempt: 1, failure, .. } if failure.class == FailureClass::Infrastructure
    )), "B records A's attempt as interrupted");
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_appends_keep_failing_is_reported_once_and_escalated_when_the_store_heals() {
    let pool = Pool::new();
    pool.runner
        .script("a", [Outcome::succeed().after(Duration::from_secs(10))]);
    let faulty = Faulty::new(pool.store.clone());
    let ex = pool.executor(faulty.clone(), Pool::config("A")).await;
    let feed = Feed::follow(&ex);
    let spec = JobSpec::builder("outage")
        .node(NodeSpec::new("a", "test"))
        .node(NodeSpec::new("b", "test").depends_on(["a"]))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    faulty.faults().failing = true;

    // `a` ends at 10 s; its record cannot be journaled from then on.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        feed.stuck(&id).is_empty(),
        "within the grace of the first failure"
    );
    tokio::time::sleep(Duration::from_secs(93)).await;
    let reports = feed.stuck(&id);
    assert_eq!(reports.len(), 1, "reported once, not at every sweep");
    assert!(!reports[0].1, "reported although it could not be journaled");
    assert!(stuck_records(&pool.journal(&id).await).is_empty());

    faulty.faults().failing = false;
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    let journal = pool.journal(&id).await;
    let stuck = stuck_records(&journal);
    assert_eq!(stuck.len(), 1, "journaled once the store healed");
    let Event::EscalationRequired { reason, .. } = &stuck[0].event else {
        unreachable!()
    };
    assert!(reason.contains("no progress"), "{reason}");
    assert_eq!(
        feed.stuck(&id)
            .iter()
            .filter(|(_, journaled)| *journaled)
            .count(),
        1,
        "and published as journaled"
    );
    assert_eq!(pool.runner.runs_of("a"), 1);
    assert_eq!(pool.runner.runs_of("b"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_cannot_finish_is_escalated_once_in_its_journal() {
    let pool = Pool::new();
    pool.runner
        .script("bad", [Outcome::fail(FailureClass::Permanent)]);
    let faulty = Faulty::new(pool.store.clone());
    let ex = pool.executor(faulty.clone(), Pool::config("A")).await;
    let feed = Feed::follow(&ex);
    // Writing the dead-letter entry reads the journal, and reads hang: the
    // job cannot finish, though its appends work.
    faulty.reads.send_replace(true);
    let spec = JobSpec::builder("unfinished")
        .node(NodeSpec::new("bad", "test"))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();

    tokio::time::sleep(GRACE).await;
    assert!(feed.stuck(&id).is_empty(), "not within the grace");
    tokio::time::sleep(Duration::from_secs(300)).await;
    let reports = feed.stuck(&id);
    assert_eq!(reports.len(), 1, "once per stall episode: {reports:?}");
    assert!(reports[0].1, "journaled, since appends work");
    assert_eq!(stuck_records(&pool.journal(&id).await).len(), 1);

    faulty.reads.send_replace(false);
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(stuck_records(&pool.journal(&id).await).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_without_a_timeout_and_a_job_waiting_for_its_slot_are_never_reported() {
    let pool = Pool::new();
    pool.runner.script(
        "long",
        [Outcome::succeed().after(Duration::from_secs(1800))],
    );
    let config = ExecutorConfig {
        max_concurrent_nodes: 1,
        ..Pool::config("A")
    };
    let ex = pool.executor(pool.store.clone(), config).await;
    let feed = Feed::follow(&ex);
    let long = JobSpec::builder("long")
        .node(NodeSpec::new("long", "test"))
        .build();
    let long = ex.submit(long, "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = JobSpec::builder("behind")
        .node(NodeSpec::new("next", "test"))
        .build();
    let queued = ex.submit(queued, "alice").await.unwrap();

    tokio::time::sleep(Duration::from_secs(1200)).await;
    assert_eq!(pool.runner.runs_of("next"), 0, "still waiting for the slot");
    for id in [&long, &queued] {
        assert_eq!(ex.wait(id).await.unwrap().state, JobState::Succeeded);
        assert!(stuck_records(&pool.journal(id).await).is_empty());
    }
    assert_eq!(feed.escalations(), 0, "nothing was reported");
}

#[tokio::test(start_paused = true)]
async fn attempts_within_their_timeout_and_retry_timers_are_never_reported() {
    let pool = Pool::new();
    pool.runner.script(
        "tested",
        [Outcome::succeed().after(Duration::from_secs(250))],
    );
    pool.runner.script(
        "retried",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    let ex = pool.executor(pool.store.clone(), Pool::config("A")).await;
    let feed = Feed::follow(&ex);
    let retry = RetrySpec::new().backoff(Backoff::fixed(Duration::from_secs(200)));
    let spec = JobSpec::builder("patient")
        .node(NodeSpec::new("tested", "test").timeout(Duration::from_secs(300)))
        .node(
            NodeSpec::new("retried", "test")
                .depends_on(["tested"])
                .retry(retry),
        )
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    assert!(
        Instant::now() - pool.clock.0 >= Duration::from_secs(450),
        "both waits were longer than the grace"
    );
    assert!(stuck_records(&pool.journal(&id).await).is_empty());
    assert_eq!(feed.escalations(), 0);
}
