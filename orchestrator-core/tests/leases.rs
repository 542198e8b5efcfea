//! Several executors sharing one store: each job runs in exactly one of
//! them, a crashed or stopped executor's jobs are taken over, a paused one
//! is fenced off, cancels reach the owner, capacity leaves jobs queued for
//! whoever has room. Deterministic under paused tokio time: the executors'
//! wall clock follows tokio's, so lease expiry and heartbeats line up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::runner::{ExecutionStatus, Outcome, ScriptedRunner};
use orchestrator_core::store::{LeaseStore, MemoryStore};
use orchestrator_core::{
    Clock, Event, Executor, ExecutorConfig, FailureClass, JobId, JobSpec, JobState, LeaseConfig,
    NodeSpec, NodeState, Recovery, Registry, Store, StoreExt, Timestamp,
};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Wall-clock time that moves with tokio's (paused) clock.
#[derive(Debug)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_704_067_200_000 + self.0.elapsed().as_millis() as u64)
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

    async fn executor(&self, owner: &str, recovery: Recovery, capacity: usize) -> Executor {
        let mut registry = Registry::with_builtins();
        registry.register("test", self.runner.clone());
        let config = ExecutorConfig {
            lease: LeaseConfig {
                owner: owner.into(),
                ttl: TTL,
                heartbeat: HEARTBEAT,
                capacity,
                ..LeaseConfig::default()
            },
            ..ExecutorConfig::default()
        };
        Executor::builder(self.store.clone())
            .registry(registry)
            .config(config)
            .clock(self.clock.clone())
            .recovery(recovery)
            .start()
            .await
            .expect("executor starts")
    }

    async fn owner_of(&self, job: &JobId) -> (String, u64) {
        let lease = self.store.lease(job).await.expect("lease");
        (lease.owner, lease.token)
    }
}

fn chain() -> JobSpec {
    JobSpec::builder("chain")
        .node(NodeSpec::new("a", "test"))
        .node(NodeSpec::new("b", "test").depends_on(["a"]))
        .node(NodeSpec::new("c", "test").depends_on(["b"]))
        .build()
}

fn slow(name: &str) -> JobSpec {
    JobSpec::builder(name)
        .node(NodeSpec::new("work", "test"))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_crashed_executors_job_is_taken_over_without_rerunning_succeeded_nodes() {
    let pool = Pool::new();
    pool.runner.script(
        "b",
        [
            Outcome::hang(),
            Outcome::succeed().after(Duration::from_secs(1)),
        ],
    );
    let a = pool.executor("A", Recovery::All, usize::MAX).await;
    let b = pool.executor("B", Recovery::All, usize::MAX).await;
    let id = a.submit(chain(), "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pool.owner_of(&id).await, ("A".into(), 1));
    assert!(
        b.active_jobs().await.unwrap().is_empty(),
        "B leaves A's job alone"
    );

    let crashed = Instant::now();
    a.shutdown(); // a crash: the lease is left to lapse
    let status = b.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(pool.owner_of(&id).await, ("B".into(), 2));

    assert_eq!(
        pool.runner.runs_of("a"),
        1,
        "a succeeded in A and never runs again"
    );
    let runs = pool.runner.executions_of("b");
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0].status,
        ExecutionStatus::Dropped,
        "A's attempt died with A"
    );
    let takeover = runs[1].started - crashed;
    assert!(
        takeover <= TTL + HEARTBEAT + HEARTBEAT / 5,
        "taken over {takeover:?} after the crash: within the TTL plus one heartbeat"
    );
    assert!(
        takeover >= TTL - Duration::from_secs(2) - HEARTBEAT,
        "not before the lease lapsed"
    );
    assert!(
        runs[0].ended.unwrap() <= runs[1].started,
        "never running in two executors at once"
    );
    let records = pool.store.read_all(&id, 0).await.unwrap();
    assert!(records.iter().any(|r| matches!(
        &r.event,
        Event::NodeFailed { node: 1, attempt: 1, failure, .. } if failure.class == FailureClass::Infrastructure
    )), "the attempt in flight in A is journaled as interrupted");
}

#[tokio::test(start_paused = true)]
async fn an_executor_that_lost_its_lease_is_fenced_off_and_drops_the_job() {
    let pool = Pool::new();
    pool.runner
        .script("work", [Outcome::succeed().after(Duration::from_secs(3))]);
    let a = pool.executor("A", Recovery::All, usize::MAX).await;
    let id = a.submit(slow("paused"), "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Another process takes the job over while A still runs it (as if A had
    // been paused past its lease).
    let now = pool.clock.now();
    let taken = pool.store.claim(&id, "B", now, TTL, true).await.unwrap();
    assert_eq!(taken.lease.token, 2);
    let version = pool.store.summary(&id).await.unwrap().progress.version;

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        a.active_jobs().await.unwrap().is_empty(),
        "A drops the job once the store refuses its token"
    );
    assert!(a.leases().is_empty());
    assert_eq!(
        pool.store.summary(&id).await.unwrap().progress.version,
        version,
        "nothing A did after the takeover reached the journal"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_through_another_executor_reaches_the_owner_within_a_heartbeat() {
    let pool = Pool::new();
    pool.runner.script("work", [Outcome::hang()]);
    let owner = pool.executor("A", Recovery::All, usize::MAX).await;
    let other = pool.executor("B", Recovery::None, usize::MAX).await;
    let id = owner.submit(slow("cancel me"), "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    other.cancel(&id, Some("not needed".into())).await.unwrap();
    let status = other.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Cancelled);
    assert!(
        asked.elapsed() <= HEARTBEAT + Duration::from_secs(1),
        "cancelled {:?} after the request",
        asked.elapsed()
    );
    assert_eq!(pool.owner_of(&id).await.0, "A", "the owner cancelled it");
    assert_eq!(
        status.node("work").unwrap().state,
        NodeState::Cancelled,
        "the running attempt was stopped"
    );
    assert!(matches!(
        other.cancel(&id, None).await,
        Err(orchestrator_core::ExecutorError::AlreadyFinished { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_queued_job_nobody_holds_is_cancelled_by_whoever_is_asked() {
    let pool = Pool::new();
    let full = pool.executor("A", Recovery::None, 0).await;
    let id = full.submit(slow("never started"), "alice").await.unwrap();
    assert_eq!(
        pool.owner_of(&id).await,
        (String::new(), 0),
        "no room: queued"
    );
    full.cancel(&id, None).await.unwrap();
    let status = full.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Cancelled);
    assert_eq!(pool.runner.runs_of("work"), 0);
}

#[tokio::test(start_paused = true)]
async fn capacity_leaves_jobs_queued_for_whoever_has_room() {
    let pool = Pool::new();
    pool.runner
        .set_default(Outcome::succeed().after(Duration::from_secs(20)));
    let a = pool.executor("A", Recovery::All, 1).await;
    let b = pool.executor("B", Recovery::All, 1).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.submit(slow(&format!("job {i}")), "alice").await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.active_jobs().await.unwrap(), [ids[0].clone()]);
    tokio::time::sleep(HEARTBEAT + HEARTBEAT / 5).await;
    assert_eq!(
        b.active_jobs().await.unwrap().len(),
        1,
        "B claims a queued job"
    );
    assert_eq!(
        a.active_jobs().await.unwrap().len(),
        1,
        "A stays at capacity"
    );

    let mut owners = BTreeSet::new();
    for id in &ids {
        assert_eq!(a.wait(id).await.unwrap().state, JobState::Succeeded);
        owners.insert(pool.owner_of(id).await.0);
    }
    assert_eq!(owners, BTreeSet::from(["A".to_owned(), "B".to_owned()]));
    assert!(
        pool.runner.max_in_flight() <= 2,
        "one job per executor at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_executor_hands_its_jobs_over_at_the_next_heartbeat() {
    let pool = Pool::new();
    pool.runner.script(
        "work",
        [
            Outcome::hang(),
            Outcome::succeed().after(Duration::from_secs(1)),
        ],
    );
    let a = pool.executor("A", Recovery::All, usize::MAX).await;
    let b = pool.executor("B", Recovery::All, usize::MAX).await;
    let id = a.submit(slow("handover"), "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    a.stop().await;
    assert_eq!(b.wait(&id).await.unwrap().state, JobState::Succeeded);
    let runs = pool.runner.executions_of("work");
    assert_eq!(runs.len(), 2);
    assert!(
        runs[1].started - stopped <= HEARTBEAT + HEARTBEAT / 5,
        "taken over {:?} after a graceful stop, without waiting for the TTL",
        runs[1].started - stopped
    );
    assert_eq!(pool.owner_of(&id).await, ("B".into(), 2));
}

#[tokio::test(start_paused = true)]
async fn queued_jobs_are_claimed_by_priority() {
    let pool = Pool::new();
    pool.runner
        .set_default(Outcome::succeed().after(Duration::from_secs(20)));
    let submitter = pool.executor("S", Recovery::None, 0).await;
    let mut ids = Vec::new();
    for (name, priority) in [("low", 0), ("high", 9), ("mid", 5)] {
        let mut spec = slow(name);
        spec.priority = priority;
        ids.push(submitter.submit(spec, "alice").await.unwrap());
    }
    let worker = pool.executor("W", Recovery::All, 1).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let next = async {
            loop {
                let active = worker.active_jobs().await.unwrap();
                if let Some(job) = active.first() {
                    if !order.contains(job) {
                        break job.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let active = tokio::time::timeout(Duration::from_secs(600), next)
            .await
            .expect("the worker claims the next job");
        order.push(active.clone());
        worker.wait(&active).await.unwrap();
    }
    assert_eq!(order, [ids[1].clone(), ids[2].clone(), ids[0].clone()]);
}

#[tokio::test(start_paused = true)]
async fn a_job_dropped_with_a_dispatched_attempt_gives_its_slot_back() {
    let pool = Pool::new();
    pool.runner
        .script("work", [Outcome::succeed().after(Duration::from_secs(3))]);
    let a = {
        let mut registry = Registry::with_builtins();
        registry.register("test", pool.runner.clone());
        Executor::builder(pool.store.clone())
            .registry(registry)
            .config(ExecutorConfig {
                max_concurrent_nodes: 1,
                lease: LeaseConfig {
                    owner: "A".into(),
                    ttl: TTL,
                    heartbeat: HEARTBEAT,
                    capacity: usize::MAX,
                    ..LeaseConfig::default()
                },
                ..ExecutorConfig::default()
            })
            .clock(pool.clock.clone())
            .start()
            .await
            .unwrap()
    };
    let spec = JobSpec::builder("two steps")
        .node(NodeSpec::new("work", "test"))
        .node(NodeSpec::new("next", "test").depends_on(["work"]))
        .build();
    let first = a.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Taken over while `work` runs: when it ends, A's batch (work succeeded,
    // next started) is refused, so `next` was dispatched but never spawned.
    let now = pool.clock.now();
    pool.store.claim(&first, "B", now, TTL, true).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.active_jobs().await.unwrap().is_empty());

    // A's only slot is free again.
    let second = a.submit(slow("after the takeover"), "alice").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), a.wait(&second))
        .await
        .expect("the second job runs: no slot leaked")
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn attempts_never_start_under_a_lapsed_lease() {
    let pool = Pool::new();
    pool.runner
        .script("work", [Outcome::succeed().after(Duration::from_secs(20))]);
    // Renewals so rare that the lease lapses while `work` runs, as it would
    // for a process paused past its TTL.
    let mut registry = Registry::with_builtins();
    registry.register("test", pool.runner.clone());
    let a = Executor::builder(pool.store.clone())
        .registry(registry)
        .config(ExecutorConfig {
            lease: LeaseConfig {
                owner: "A".into(),
                ttl: TTL,
                heartbeat: Duration::from_secs(3600),
                capacity: usize::MAX,
                ..LeaseConfig::default()
            },
            ..ExecutorConfig::default()
        })
        .clock(pool.clock.clone())
        .start()
        .await
        .unwrap();
    let spec = JobSpec::builder("two steps")
        .node(NodeSpec::new("work", "test"))
        .node(NodeSpec::new("next", "test").depends_on(["work"]))
        .build();
    let id = a.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        a.active_jobs().await.unwrap().is_empty(),
        "A let the job go rather than start `next` under a lapsed lease"
    );
    assert_eq!(pool.runner.runs_of("next"), 0);

    // Whoever claims the job next runs `next` (its journaled start is
    // recorded as interrupted) and never `work` again.
    let b = pool.executor("B", Recovery::All, usize::MAX).await;
    assert_eq!(b.wait(&id).await.unwrap().state, JobState::Succeeded);
    assert_eq!(pool.runner.runs_of("work"), 1);
    assert_eq!(pool.runner.runs_of("next"), 1);
}
