//! Simulation property tests of the executor: random DAGs (in a random spec
//! order), random trigger rules, priorities, timeouts, pools, concurrency
//! limits and retry policies, and scripted random outcomes per attempt
//! (success, a failure of any class, a hang; some ignoring cancellation), run
//! by a real [`Executor`] over a [`MemoryStore`] on a paused tokio clock. The
//! store's writes yield to other tasks and some appends fail, as a real
//! store's would.
//!
//! Every case builds its own paused-time runtime, so delays are virtual and a
//! case is deterministic given its input (job ids are fixed, so jitter is
//! too). What a run did is then checked from two independent records:
//!
//! - the journal, folded record by record through [`JobView::apply`]: every
//!   trigger decision and first start agrees with [`TriggerRule::decide`] on
//!   the upstream outcomes journaled before it, every retry decision is the
//!   one the node's policy computes and attempts stay within its limit,
//!   retries wait their delay, the running count never exceeds the job's or
//!   a pool's limit, nothing is dispatched after a cancellation, every job
//!   finishes without being rescued by a timeout it does not have, its final
//!   state agrees with its nodes, and the executor's status, the stored
//!   summary and the stored view (snapshot plus tail) all equal the replay;
//! - a log kept by a wrapping runner, with one global sequence number per
//!   start and end: no attempt runs before its `node_started` record is
//!   durable, the global, per-job and per-pool limits hold, dependencies had
//!   ended, every attempt ran exactly once and ended as scripted (or timed
//!   out, or was stopped, at the right moment).
//!
//! Three properties share these checks: plain runs, runs cancelled at random
//! moments, and runs "crashed" (the executor dropped) at random moments and
//! recovered by a fresh executor over the same store, where nothing finished
//! before a crash runs again and the summaries a restart trusts agree with
//! the journals. `PROPTEST_CASES` raises the case counts for a soak run.
//!
//! The deterministic tests at the end pin the bugs the simulation found.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::journal::{Progress, Snapshot};
use orchestrator_core::retry::seed_for;
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::state::{TriggerDecision, Upstream};
use orchestrator_core::store::{JobPage, JobQuery};
use orchestrator_core::{
    Backoff, ClassRetrySpec, Clock, Event, Executor, ExecutorConfig, ExecutorError, Failure,
    FailureClass, Jitter, JobId, JobSpec, JobState, JobStatus, JobSummary, JobView, MemoryStore,
    NodeSpec, NodeState, PolicyRegistry, Record, Registry, RetryContext, RetryDefaults,
    RetryPolicy, RetrySpec, RunContext, Runner, Store, StoreError, StoreExt, Timestamp,
    TriggerRule,
};
use proptest::prelude::*;
use serde_json::Value;
use tokio::time::Instant;

/// The runner type every simulated node uses.
const KIND: &str = "sim";

/// Journal timestamps start here (any fixed wall-clock instant will do).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// The executor's job timeout for jobs without one of their own: far longer
/// than any simulated job takes, so a job that times out without a timeout
/// of its own was stuck (a liveness bug the other checks would accept).
const JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Longer than any job can take, timeouts included: reaching it means the
/// executor stalled.
const STALL: Duration = Duration::from_secs(48 * 3600);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// The plan of a case.

/// What one scripted attempt does before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Succeed,
    Fail(FailureClass),
    /// Runs until stopped (node timeout, job timeout or cancellation).
    Hang,
}

#[derive(Clone, Copy, Debug)]
struct Scripted {
    step: Step,
    after_ms: u64,
    /// Ignores cancellation (breaking the runner contract), so the executor
    /// waits out its grace period and may drop the attempt.
    stubborn: bool,
}

impl Scripted {
    /// Attempts past a node's script succeed at once (the runner's default).
    const DEFAULT: Self = Self {
        step: Step::Succeed,
        after_ms: 0,
        stubborn: false,
    };

    fn outcome(self) -> Outcome {
        let outcome = match self.step {
            Step::Succeed => Outcome::succeed().after(ms(self.after_ms)),
            Step::Fail(class) => Outcome::fail(class).after(ms(self.after_ms)),
            Step::Hang => Outcome::hang(),
        };
        if self.stubborn {
            outcome.ignoring_cancel()
        } else {
            outcome
        }
    }

    /// The result the attempt reports if nothing stops it, and when.
    fn natural(self) -> Option<(Result<(), FailureClass>, u64)> {
        match self.step {
            Step::Succeed => Some((Ok(()), self.after_ms)),
            Step::Fail(class) => Some((Err(class), self.after_ms)),
            Step::Hang => None,
        }
    }
}

#[derive(Clone, Debug)]
struct NodePlan {
    /// Upstream nodes, as topological numbers (always smaller than this
    /// node's).
    deps: BTreeSet<usize>,
    trigger: TriggerRule,
    priority: i32,
    timeout_ms: Option<u64>,
    pool: Option<usize>,
    retry: Option<RetrySpec>,
    script: Vec<Scripted>,
}

#[derive(Clone, Debug)]
struct JobPlan {
    nodes: Vec<NodePlan>,
    /// `order[k]` is the topological number of the node at spec index `k`:
    /// spec order is a random permutation, so nothing may rely on upstream
    /// nodes having smaller indices.
    order: Vec<usize>,
    priority: i32,
    max_concurrency: Option<u32>,
    pools: Vec<u32>,
    retry: Option<RetrySpec>,
    timeout_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct World {
    jobs: Vec<JobPlan>,
    max_concurrent_nodes: usize,
    snapshot_every: u64,
    /// How often each store write yields to other tasks before it lands.
    store_yields: u32,
    /// Which appends (counted from 0 over the whole run) fail as an
    /// unavailable store would.
    append_failures: BTreeSet<u32>,
    /// Whether a failed append landed anyway (a timeout after commit).
    failures_land: bool,
}

fn node_id(job: usize, topo: usize) -> String {
    format!("j{job}n{topo}")
}

fn job_id(job: usize) -> JobId {
    format!("sim-job-{job}").parse().unwrap()
}

fn pool_name(pool: usize) -> String {
    format!("pool{pool}")
}

impl JobPlan {
    fn spec(&self, job: usize) -> JobSpec {
        let mut builder = JobSpec::builder(format!("sim {job}")).priority(self.priority);
        if let Some(limit) = self.max_concurrency {
            builder = builder.max_concurrency(limit);
        }
        for (p, &slots) in self.pools.iter().enumerate() {
            builder = builder.pool(pool_name(p), slots);
        }
        if let Some(retry) = &self.retry {
            builder = builder.retry(retry.clone());
        }
        if let Some(t) = self.timeout_ms {
            builder = builder.timeout(ms(t));
        }
        builder
            .nodes(self.order.iter().map(|&topo| {
                let plan = &self.nodes[topo];
                let mut node = NodeSpec::new(node_id(job, topo), KIND)
                    .depends_on(plan.deps.iter().map(|&d| node_id(job, d)))
                    .trigger(plan.trigger)
                    .priority(plan.priority);
                if let Some(t) = plan.timeout_ms {
                    node = node.timeout(ms(t));
                }
                if let Some(p) = plan.pool {
                    node = node.pool(pool_name(p));
                }
                if let Some(retry) = &plan.retry {
                    node = node.retry(retry.clone());
                }
                node
            }))
            .build()
    }

    /// The plan of the node at spec index `index`.
    fn node(&self, index: u32) -> &NodePlan {
        &self.nodes[self.order[index as usize]]
    }
}

// ---------------------------------------------------------------------------
// Strategies.

const RETRIABLE: [FailureClass; 5] = [
    FailureClass::Transient,
    FailureClass::Permanent,
    FailureClass::Timeout,
    FailureClass::Infrastructure,
    FailureClass::Unknown,
];

fn trigger() -> impl Strategy<Value = TriggerRule> {
    prop::sample::select(vec![
        TriggerRule::AllSuccess,
        TriggerRule::AllSuccess,
        TriggerRule::AllFailed,
        TriggerRule::AllDone,
        TriggerRule::OneSuccess,
        TriggerRule::OneFailed,
        TriggerRule::NoneFailed,
        TriggerRule::NoneFailedMinOneSuccess,
        TriggerRule::NoneSkipped,
        TriggerRule::Always,
    ])
}

fn scripted() -> impl Strategy<Value = Scripted> {
    let step = prop_oneof![
        5 => Just(Step::Succeed),
        4 => prop::sample::select(vec![
            FailureClass::Transient,
            FailureClass::Transient,
            FailureClass::Permanent,
            FailureClass::Timeout,
            FailureClass::Infrastructure,
            FailureClass::Unknown,
            FailureClass::Cancelled,
        ])
        .prop_map(Step::Fail),
        1 => Just(Step::Hang),
    ];
    let after = prop_oneof![1 => Just(0u64), 3 => 1u64..=120];
    (step, after, prop::bool::weighted(0.25)).prop_map(|(step, after_ms, stubborn)| Scripted {
        step,
        after_ms,
        stubborn,
    })
}

fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        1 => Just(Backoff::never()),
        3 => (0u64..=40).prop_map(|d| Backoff::fixed(ms(d))),
        2 => (0u64..=20, 1u64..=20).prop_map(|(i, s)| Backoff::linear(ms(i), ms(s))),
        3 => (1u64..=20, 1.0f64..3.0, prop::option::of(0u64..=100))
            .prop_map(|(i, f, cap)| Backoff::exponential(ms(i), f, cap.map(|c| ms(i + c)))),
        1 => (1u64..=15).prop_map(|u| Backoff::fibonacci(ms(u))),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop::sample::select(vec![
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ])
}

fn class_entry() -> impl Strategy<Value = ClassRetrySpec> {
    (
        prop::option::of(1u32..=5),
        prop::option::of(backoff()),
        prop::option::of(jitter()),
    )
        .prop_map(|(max_attempts, backoff, jitter)| {
            let never = matches!(backoff, Some(Backoff::Never {}));
            ClassRetrySpec {
                // `max_attempts` with `kind: none` is rejected as dead
                // configuration.
                max_attempts: max_attempts.filter(|_| !never),
                backoff,
                jitter,
            }
        })
}

/// A valid retry spec: the generator avoids exactly the combinations
/// validation rejects (a class in both lists, dead per-class entries).
fn retry_spec() -> impl Strategy<Value = RetrySpec> {
    (
        prop::option::of(1u32..=4),
        prop::option::weighted(0.8, backoff()),
        prop::option::of(jitter()),
        prop::option::weighted(0.2, 5u64..=60),
        prop::option::weighted(0.15, 20u64..=400),
        prop::option::weighted(0.4, prop::sample::subsequence(RETRIABLE.to_vec(), 0..=5)),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::sample::subsequence(RETRIABLE.to_vec(), 1..=2),
        ],
        prop::collection::vec(
            (prop::sample::select(RETRIABLE.to_vec()), class_entry()),
            0..=2,
        ),
    )
        .prop_map(
            |(max_attempts, backoff, jitter, max_delay, max_total, retry_on, never, per_class)| {
                let never: Vec<FailureClass> = never
                    .into_iter()
                    .filter(|c| retry_on.as_ref().is_none_or(|r| !r.contains(c)))
                    .collect();
                let retried: Vec<FailureClass> = retry_on
                    .clone()
                    .unwrap_or_else(|| orchestrator_core::retry::DEFAULT_RETRY_ON.to_vec())
                    .into_iter()
                    .filter(|c| !never.contains(c))
                    .collect();
                let mut spec = RetrySpec {
                    max_attempts,
                    backoff,
                    jitter,
                    max_delay: max_delay.map(|d| ms(d).into()),
                    max_total: max_total.map(|d| ms(d).into()),
                    retry_on,
                    never_retry_on: never,
                    ..RetrySpec::default()
                };
                for (class, entry) in per_class {
                    let never = matches!(entry.backoff, Some(Backoff::Never {}));
                    if retried.contains(&class) || never {
                        spec.per_class.insert(class, entry);
                    }
                }
                spec
            },
        )
}

fn node_plan(pools: usize) -> impl Strategy<Value = NodePlan> {
    let pool = if pools == 0 {
        Just(None).boxed()
    } else {
        prop::option::of(0..pools).boxed()
    };
    (
        prop::collection::vec(0usize..1000, 0..=3),
        trigger(),
        -2i32..=2,
        prop::option::weighted(0.4, 10u64..=150),
        pool,
        prop::option::weighted(0.4, retry_spec()),
        prop_oneof![
            1 => Just(Vec::new()),
            2 => prop::collection::vec(scripted(), 1..=4),
        ],
    )
        .prop_map(
            |(deps, trigger, priority, timeout_ms, pool, retry, mut script)| {
                if timeout_ms.is_none() {
                    // Without a node timeout only the job's (an hour by default)
                    // would end a hang: keep those rare by not scripting them.
                    for s in &mut script {
                        if s.step == Step::Hang {
                            s.step = Step::Succeed;
                        }
                    }
                }
                NodePlan {
                    // Resolved to smaller topological numbers by `job_plan`.
                    deps: deps.into_iter().collect(),
                    trigger,
                    priority,
                    timeout_ms,
                    pool,
                    retry,
                    script,
                }
            },
        )
}

fn job_plan(max_nodes: usize) -> impl Strategy<Value = JobPlan> {
    (1..=max_nodes, prop::collection::vec(1u32..=3, 0..=2)).prop_flat_map(|(n, pools)| {
        (
            prop::collection::vec(node_plan(pools.len()), n),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            -1i32..=1,
            prop::option::weighted(0.5, 1u32..=4),
            Just(pools),
            prop::option::weighted(0.5, retry_spec()),
            prop::option::weighted(0.2, 100u64..=2_000),
            prop::bool::weighted(0.3),
        )
            .prop_map(
                |(mut nodes, order, priority, max_concurrency, pools, retry, timeout_ms, calm)| {
                    for (i, node) in nodes.iter_mut().enumerate() {
                        node.deps = if i == 0 {
                            BTreeSet::new()
                        } else {
                            node.deps.iter().map(|d| d % i).collect()
                        };
                        if calm {
                            // Some jobs only vary in timing, so that many
                            // jobs succeed too.
                            for s in &mut node.script {
                                s.step = Step::Succeed;
                            }
                        }
                    }
                    JobPlan {
                        nodes,
                        order,
                        priority,
                        max_concurrency,
                        pools,
                        retry,
                        timeout_ms,
                    }
                },
            )
    })
}

fn world(max_jobs: usize, max_nodes: usize) -> impl Strategy<Value = World> {
    (
        prop::collection::vec(job_plan(max_nodes), 1..=max_jobs),
        1usize..=8,
        1u64..=40,
        0u32..=2,
        prop_oneof![
            1 => Just(BTreeSet::new()),
            1 => prop::collection::btree_set(0u32..80, 1..=4),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(
                jobs,
                max_concurrent_nodes,
                snapshot_every,
                store_yields,
                append_failures,
                failures_land,
            )| World {
                jobs,
                max_concurrent_nodes,
                snapshot_every,
                store_yields,
                append_failures,
                failures_land,
            },
        )
}

// ---------------------------------------------------------------------------
// The simulated environment.

/// Journal timestamps on tokio's paused clock, so the journal and the
/// execution log share one time line and retry delays can be checked
/// against record timestamps to the millisecond.
#[derive(Debug)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp(EPOCH_MS + self.0.elapsed().as_millis() as u64)
    }
}

/// The store of a simulation: a [`MemoryStore`] whose writes yield to other
/// tasks before they land, as a real store's would (attempts then get polled
/// while the scheduler waits for the store, so acting before a write is
/// durable shows in the log, and a crash can hit an append in flight), whose
/// appends fail on cue, and which notes when the executor learnt that each
/// record was durable (the moment it may act on it).
struct SimStore {
    inner: Arc<MemoryStore>,
    yields: u32,
    failures: BTreeSet<u32>,
    failures_land: bool,
    appends: AtomicU32,
    /// Per job, when each record (by seq - 1) was acknowledged as durable.
    landed: Mutex<HashMap<JobId, Vec<Instant>>>,
}

impl SimStore {
    async fn pause(&self) {
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
    }

    fn note_landed(&self, job: &JobId, version: u64) {
        let mut landed = self.landed.lock().unwrap_or_else(PoisonError::into_inner);
        let times = landed.entry(job.clone()).or_default();
        while (times.len() as u64) < version {
            times.push(Instant::now());
        }
    }

    /// When record `seq` of `job` was acknowledged as durable.
    fn landed_at(&self, job: &JobId, seq: u64) -> Option<Instant> {
        let landed = self.landed.lock().unwrap_or_else(PoisonError::into_inner);
        landed.get(job)?.get(seq as usize - 1).copied()
    }
}

orchestrator_core::forward_store_extensions!(SimStore => inner);

#[async_trait]
impl Store for SimStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.create_job(summary, records).await?;
        self.note_landed(&summary.id, records.len() as u64);
        Ok(())
    }
    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        self.pause().await;
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        if self.failures.contains(&n) {
            if self.failures_land {
                // Durable, but the executor cannot know until a replay of
                // this append is acknowledged.
                let _ = self
                    .inner
                    .append(job, expected, records, progress, fence)
                    .await;
            }
            return Err(StoreError::Unavailable {
                message: format!("injected outage (append {n})"),
                source: None,
            });
        }
        let version = self
            .inner
            .append(job, expected, records, progress, fence)
            .await?;
        self.note_landed(job, version);
        Ok(version)
    }
    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.inner.read(job, after, limit).await
    }
    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.put_snapshot(job, snapshot).await
    }
    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.snapshot(job).await
    }
    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.inner.summary(job).await
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        self.inner.list_jobs(query).await
    }
    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        self.inner.unfinished_jobs().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One attempt as the runner saw it.
#[derive(Clone, Debug)]
struct Exec {
    job: JobId,
    node: u32,
    attempt: u32,
    pool: Option<String>,
    /// Which executor ran it (0, then one more after each crash).
    epoch: u32,
    start_seq: u64,
    end_seq: Option<u64>,
    started: Instant,
    ended: Option<Instant>,
    /// `None` if its future was dropped before it returned (a crash, or the
    /// end of the grace period of an attempt that ignored its stop signal).
    result: Option<Result<(), FailureClass>>,
}

#[derive(Default)]
struct Log {
    seq: u64,
    epoch: u32,
    in_flight: usize,
    execs: Vec<Exec>,
    violations: Vec<String>,
}

/// Wraps the [`ScriptedRunner`] that plays the outcomes, and logs every
/// attempt with a global sequence number at its start and its end, so
/// overlaps are exact even when many things happen at one instant of the
/// paused clock.
#[derive(Clone)]
struct Tracker {
    inner: ScriptedRunner,
    store: Arc<MemoryStore>,
    log: Arc<Mutex<Log>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct EndGuard<'a> {
    tracker: &'a Tracker,
    index: usize,
    result: Option<Result<(), FailureClass>>,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let mut log = self.tracker.lock();
        log.seq += 1;
        log.in_flight -= 1;
        let seq = log.seq;
        let exec = &mut log.execs[self.index];
        exec.end_seq = Some(seq);
        exec.ended = Some(Instant::now());
        exec.result = self.result;
    }
}

#[async_trait]
impl Runner for Tracker {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        // Journal before acting: the attempt's start must be durable.
        let (node, attempt) = (ctx.node_index(), ctx.attempt());
        let durable = self
            .store
            .read_all(ctx.job_id(), 0)
            .await
            .is_ok_and(|records| {
                records
                    .iter()
                    .any(|r| r.event == Event::NodeStarted { node, attempt })
            });
        let index = {
            let mut log = self.lock();
            if !durable {
                log.violations.push(format!(
                    "{}: attempt {attempt} of {} ran before its node_started record was durable",
                    ctx.job_id(),
                    ctx.node_id()
                ));
            }
            log.seq += 1;
            log.in_flight += 1;
            let exec = Exec {
                job: ctx.job_id().clone(),
                node,
                attempt,
                pool: ctx.node_spec().pool.clone(),
                epoch: log.epoch,
                start_seq: log.seq,
                end_seq: None,
                started: Instant::now(),
                ended: None,
                result: None,
            };
            log.execs.push(exec);
            log.execs.len() - 1
        };
        let mut guard = EndGuard {
            tracker: self,
            index,
            result: None,
        };
        let result = self.inner.run(ctx).await;
        guard.result = Some(result.as_ref().map(|_| ()).map_err(|f| f.class));
        result
    }
}

/// How a cancel request was answered.
#[derive(Debug)]
enum CancelAnswer {
    Accepted,
    AlreadyFinished(JobState),
    Error(String),
}

/// What happens to a run from outside, at moments of the virtual clock
/// (milliseconds after the jobs are submitted).
#[derive(Clone, Debug, Default)]
struct Disturbances {
    /// When to cancel each job (`cancel_at[j % len]`), if at all.
    cancel_at: Vec<Option<u64>>,
    /// When to crash the executor and start a new one.
    crash_at: Vec<u64>,
    /// Also crash this long after the first cancel request: while the job
    /// is still cancelling, if its attempts are slow to stop.
    crash_after_cancel: Option<u64>,
}

/// One scheduled disturbance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Crash,
    Cancel(usize),
}

struct Sim<'w> {
    world: &'w World,
    /// What the simulation reads: the journal as stored.
    store: Arc<MemoryStore>,
    /// What the executors use, over `store`; shared by every executor of a
    /// run, like a real store.
    sim_store: Arc<SimStore>,
    scripted: ScriptedRunner,
    tracker: Tracker,
    clock: Arc<TokioClock>,
    config: ExecutorConfig,
}

impl<'w> Sim<'w> {
    /// Must be called inside the case's runtime (the clock reads tokio time).
    fn new(world: &'w World) -> Self {
        let store = Arc::new(MemoryStore::new());
        let scripted = ScriptedRunner::new();
        for (j, job) in world.jobs.iter().enumerate() {
            for (topo, node) in job.nodes.iter().enumerate() {
                if !node.script.is_empty() {
                    scripted.script(node_id(j, topo), node.script.iter().map(|s| s.outcome()));
                }
            }
        }
        let tracker = Tracker {
            inner: scripted.clone(),
            store: store.clone(),
            log: Arc::default(),
        };
        let config = ExecutorConfig {
            max_concurrent_nodes: world.max_concurrent_nodes,
            snapshot_every: world.snapshot_every,
            job_timeout: JOB_TIMEOUT,
            ..ExecutorConfig::default()
        };
        let sim_store = Arc::new(SimStore {
            inner: store.clone(),
            yields: world.store_yields,
            failures: world.append_failures.clone(),
            failures_land: world.failures_land,
            appends: AtomicU32::new(0),
            landed: Mutex::default(),
        });
        Self {
            world,
            store,
            sim_store,
            scripted,
            tracker,
            clock: Arc::new(TokioClock(Instant::now())),
            config,
        }
    }

    async fn start(&self) -> Executor {
        let mut registry = Registry::new();
        registry.register(KIND, self.tracker.clone());
        let store: Arc<dyn Store> = self.sim_store.clone();
        Executor::builder(store)
            .registry(registry)
            .config(self.config.clone())
            .clock(self.clock.clone())
            .start()
            .await
            .expect("the executor starts")
    }

    async fn submit_all(&self, ex: &Executor) -> Vec<JobId> {
        let mut ids = Vec::new();
        for (j, plan) in self.world.jobs.iter().enumerate() {
            let spec = plan.spec(j);
            if let Err(e) = ex.validate(&spec) {
                panic!("the generator produced an invalid spec: {e}");
            }
            ids.push(ex.submit_with_id(job_id(j), spec, "sim").await.unwrap());
        }
        ids
    }

    async fn wait_all(&self, ex: &Executor, ids: &[JobId]) -> Result<Vec<JobStatus>, String> {
        let waits = futures::future::join_all(ids.iter().map(|id| ex.wait(id)));
        match tokio::time::timeout(STALL, waits).await {
            Err(_) => Err("a job never finished: the executor stalled".into()),
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map_err(|e| match e {
                        ExecutorError::ShutDown => {
                            "the executor shut down while waiting (did the scheduler task panic?)"
                                .to_owned()
                        }
                        other => format!("wait failed: {other}"),
                    })
                })
                .collect(),
        }
    }

    /// Drops the executor (the scheduler task is aborted, and with it every
    /// attempt), then lets the runtime actually drop the aborted attempts.
    async fn crash(&self, ex: Executor) {
        drop(ex);
        for _ in 0..10_000 {
            if self.tracker.lock().in_flight == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut log = self.tracker.lock();
        assert_eq!(log.in_flight, 0, "aborted attempts were never dropped");
        log.epoch += 1;
    }
}

// ---------------------------------------------------------------------------
// Checks.

/// Collects every violation of a case, so a failure reports all of them.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn into_result(self) -> Result<(), TestCaseError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = self.0.iter().take(30).map(String::as_str).collect();
        Err(TestCaseError::fail(format!(
            "{} violation(s):\n  {}",
            self.0.len(),
            shown.join("\n  ")
        )))
    }
}

/// Rules that only run a node once every upstream node is finished.
fn needs_all_done(rule: TriggerRule) -> bool {
    !matches!(
        rule,
        TriggerRule::OneSuccess | TriggerRule::OneFailed | TriggerRule::Always
    )
}

fn compile(spec: &RetrySpec) -> Arc<dyn RetryPolicy> {
    spec.compile(&RetryDefaults::default(), &PolicyRegistry::default())
        .expect("generated retry specs are valid")
}

/// What a case observed about one job, besides its journal.
struct Observed<'a> {
    status: &'a JobStatus,
    records: &'a [Record],
    stored_view: Option<&'a JobView>,
    summary_progress: Progress,
    execs: Vec<&'a Exec>,
    /// The answer to the cancel request, if one was made.
    cancel: Option<&'a CancelAnswer>,
    /// The journal's length at each crash.
    crashes: Vec<usize>,
    /// Where the journal's clock started, on tokio's clock.
    origin: Instant,
    /// When a record (by seq) was acknowledged as durable, on tokio's clock.
    landed: &'a dyn Fn(u64) -> Option<Instant>,
}

/// Checks one job's journal, final state and executions.
#[allow(clippy::too_many_lines)] // one linear walk over the journal reads best in one place
fn check_job(
    v: &mut Violations,
    world: &World,
    j: usize,
    id: &JobId,
    crashed: bool,
    obs: &Observed<'_>,
) {
    let plan = &world.jobs[j];
    let records = obs.records;
    let Ok(final_view) = JobView::replay(records) else {
        v.check(false, || {
            format!(
                "{id}: journal does not replay: {:?}",
                JobView::replay(records).err()
            )
        });
        return;
    };
    let spec = Arc::clone(final_view.spec());
    let n = spec.nodes().len();
    let index: HashMap<&str, u32> = spec
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i as u32))
        .collect();
    let preds: Vec<Vec<u32>> = spec
        .nodes()
        .iter()
        .map(|s| s.depends_on.iter().map(|d| index[d.as_str()]).collect())
        .collect();
    let policies: Vec<Arc<dyn RetryPolicy>> = spec
        .nodes()
        .iter()
        .map(|s| {
            compile(
                s.retry
                    .as_ref()
                    .or(spec.retry.as_ref())
                    .unwrap_or(&RetrySpec::default()),
            )
        })
        .collect();
    let job_limit = plan
        .max_concurrency
        .map_or(world.max_concurrent_nodes, |m| {
            (m as usize).min(world.max_concurrent_nodes)
        });

    let upstream = |view: &JobView, node: u32| {
        let mut up = Upstream {
            total: preds[node as usize].len() as u32,
            ..Upstream::default()
        };
        for &p in &preds[node as usize] {
            let state = view.nodes[p as usize].state();
            if state.is_finished() {
                up.record(state);
            }
        }
        up
    };

    // Fold the journal one record at a time, checking each against the
    // state before it.
    let mut view = JobView::replay(&records[..1]).expect("the first record is the header");
    let mut stopped: Option<Event> = None;
    // When the stop became durable: attempts are signalled only then.
    let mut stopped_at: Option<Instant> = None;
    let mut cancelled_at_stop: Vec<u32> = Vec::new();
    let mut outcomes: HashMap<(u32, u32), (Result<(), FailureClass>, bool)> = HashMap::new();
    // Per node: (failed at, retry delay, recoveries seen so far, when the
    // failure became durable: the retry timer is armed only then).
    let mut waiting: HashMap<u32, (Timestamp, u64, usize, u64)> = HashMap::new();
    let mut recoveries = 0usize;
    let mut stop_count = 0;
    for r in &records[1..] {
        let seq = r.seq;
        let rule_of = |node: u32| spec.nodes()[node as usize].trigger;
        let name = |node: u32| spec.nodes()[node as usize].id.clone();
        if stopped.is_some() {
            v.check(
                !matches!(
                    r.event,
                    Event::NodeReady { .. }
                        | Event::NodeStarted { .. }
                        | Event::NodeRetryDue { .. }
                        | Event::NodeSkipped { .. }
                        | Event::NodeUpstreamFailed { .. }
                ),
                || format!("{id} #{seq}: {:?} after the job was stopped", r.event),
            );
        }
        match &r.event {
            Event::NodeReady { node } => {
                let d = rule_of(*node).decide(upstream(&view, *node));
                v.check(d == TriggerDecision::Run, || {
                    format!(
                        "{id} #{seq}: {} made ready but its trigger says {d:?}",
                        name(*node)
                    )
                });
            }
            Event::NodeSkipped { node } => {
                let d = rule_of(*node).decide(upstream(&view, *node));
                v.check(d == TriggerDecision::Skip, || {
                    format!(
                        "{id} #{seq}: {} skipped but its trigger says {d:?}",
                        name(*node)
                    )
                });
            }
            Event::NodeUpstreamFailed { node } => {
                let d = rule_of(*node).decide(upstream(&view, *node));
                v.check(d == TriggerDecision::UpstreamFailed, || {
                    format!(
                        "{id} #{seq}: {} upstream_failed but its trigger says {d:?}",
                        name(*node)
                    )
                });
            }
            Event::NodeStarted { node, attempt } => {
                let up = upstream(&view, *node);
                let rule = rule_of(*node);
                v.check(rule.decide(up) == TriggerDecision::Run, || {
                    format!(
                        "{id} #{seq}: {} started with upstream {up:?} ({rule})",
                        name(*node)
                    )
                });
                if needs_all_done(rule) {
                    v.check(up.done() == up.total, || {
                        format!(
                            "{id} #{seq}: {} ({rule}) started before all upstream nodes finished",
                            name(*node)
                        )
                    });
                }
                let max = policies[*node as usize].max_attempts();
                v.check(*attempt <= max, || {
                    format!(
                        "{id} #{seq}: {} attempt {attempt} exceeds the policy's {max}",
                        name(*node)
                    )
                });
                if let Some((failed_at, delay, _, _)) = waiting.remove(node) {
                    v.check(r.at.0 >= failed_at.0 + delay, || {
                        format!("{id} #{seq}: {} retried {} ms after failing, before its {delay} ms delay", name(*node), r.at.0 - failed_at.0)
                    });
                }
            }
            Event::NodeSucceeded { node, attempt, .. } => {
                outcomes.insert((*node, *attempt), (Ok(()), false));
            }
            Event::NodeFailed {
                node,
                attempt,
                failure,
                retry_in_ms,
            } => {
                let interrupted = failure.class == FailureClass::Infrastructure
                    && failure.message.starts_with("attempt interrupted");
                outcomes.insert((*node, *attempt), (Err(failure.class), interrupted));
                let before = &view.nodes[*node as usize];
                let expected = if matches!(view.state, JobState::Running | JobState::Recovering)
                    && failure.class != FailureClass::Cancelled
                {
                    let first = before.first_started_at.unwrap_or(r.at);
                    let ctx = RetryContext::new(
                        *attempt,
                        failure.class,
                        seed_for(id, *node),
                        ms(r.at.saturating_since(first)),
                    );
                    policies[*node as usize]
                        .next_delay(&ctx)
                        .map(|d| d.as_millis() as u64)
                } else {
                    None
                };
                v.check(*retry_in_ms == expected, || {
                    format!(
                        "{id} #{seq}: {} attempt {attempt} failed ({}): journaled retry {retry_in_ms:?} ms, policy says {expected:?}",
                        name(*node),
                        failure.class
                    )
                });
                if let Some(d) = retry_in_ms {
                    let landed = (obs.landed)(seq)
                        .map_or(r.at.0, |t| EPOCH_MS + (t - obs.origin).as_millis() as u64);
                    waiting.insert(*node, (r.at, *d, recoveries, landed));
                }
            }
            Event::NodeRetryDue { node } => {
                if let Some(&(failed_at, delay, seen, landed)) = waiting.get(node) {
                    let waited = r.at.saturating_since(failed_at);
                    v.check(waited >= delay, || {
                        format!(
                            "{id} #{seq}: {} retry due after {waited} ms, before its {delay} ms",
                            name(*node)
                        )
                    });
                    // A store outage delays arming the timer, and a recovery
                    // in between re-arms it late; otherwise it is on time.
                    if seen == recoveries {
                        let late = r.at.0.saturating_sub(landed);
                        v.check(late <= delay + 1, || {
                            format!("{id} #{seq}: {} retry due {late} ms after its failure was durable, late for its {delay} ms", name(*node))
                        });
                    }
                } else {
                    v.check(false, || {
                        format!(
                            "{id} #{seq}: {} retry due without a scheduled retry",
                            name(*node)
                        )
                    });
                }
            }
            Event::CancelRequested { .. } | Event::TimeoutReached => {
                stop_count += 1;
                stopped = Some(r.event.clone());
                stopped_at = (obs.landed)(r.seq);
                cancelled_at_stop = (0..n as u32)
                    .filter(|&i| {
                        matches!(
                            view.nodes[i as usize].state(),
                            NodeState::Pending | NodeState::Ready | NodeState::RetryWaiting
                        )
                    })
                    .collect();
            }
            Event::RecoveryStarted => recoveries += 1,
            _ => {}
        }
        if let Err(e) = view.apply(r) {
            v.check(false, || {
                format!("{id} #{seq}: the journal does not fold: {e}")
            });
            return;
        }
        // The journal's running count is the executor's: NodeStarted is
        // emitted when a slot is taken, the attempt's end when it is freed.
        let running = view.count(NodeState::Running) as usize;
        v.check(running <= job_limit, || {
            format!("{id} #{seq}: {running} nodes running, over the job's limit of {job_limit}")
        });
        for (p, &slots) in plan.pools.iter().enumerate() {
            let pool = pool_name(p);
            let in_pool = (0..n)
                .filter(|&i| {
                    view.nodes[i].state() == NodeState::Running
                        && spec.nodes()[i].pool.as_deref() == Some(pool.as_str())
                })
                .count();
            v.check(in_pool <= slots as usize, || {
                format!("{id} #{seq}: {in_pool} nodes running in {pool}, over its {slots} slots")
            });
        }
    }
    v.check(stop_count <= 1, || {
        format!("{id}: stopped {stop_count} times")
    });

    // The end state.
    let view = final_view;
    v.check(view.state.is_terminal(), || {
        format!("{id}: ended {}", view.state)
    });
    for (i, node) in view.nodes.iter().enumerate() {
        v.check(node.state().is_finished(), || {
            format!("{id}: node {} ended {}", spec.nodes()[i].id, node.state())
        });
        let max = policies[i].max_attempts();
        v.check(node.machine.attempts <= max, || {
            format!(
                "{id}: node {} ran {} attempts, over its policy's {max}",
                spec.nodes()[i].id,
                node.machine.attempts
            )
        });
    }
    for &i in &cancelled_at_stop {
        v.check(
            view.nodes[i as usize].state() == NodeState::Cancelled,
            || {
                format!(
                    "{id}: node {} was waiting when the job stopped but ended {}",
                    spec.nodes()[i as usize].id,
                    view.nodes[i as usize].state()
                )
            },
        );
    }
    let any_failed = view.nodes.iter().any(|n| n.state().is_failure());
    let expected_state = match &stopped {
        Some(Event::CancelRequested { .. }) => JobState::Cancelled,
        Some(_) => JobState::TimedOut,
        None if any_failed => JobState::Failed,
        None => JobState::Succeeded,
    };
    v.check(
        plan.timeout_ms.is_some() || stopped != Some(Event::TimeoutReached),
        || format!("{id}: timed out without a timeout of its own: it was stuck"),
    );
    let took = view
        .finished_at
        .map_or(0, |t| t.saturating_since(view.header.created_at));
    v.check(took < JOB_TIMEOUT.as_millis() as u64 / 2, || {
        format!("{id}: took {took} ms to finish; only a stuck job takes that long")
    });
    v.check(view.state == expected_state, || {
        format!(
            "{id}: ended {} but its journal and nodes say {expected_state}",
            view.state
        )
    });
    let replayed = JobStatus::from_view(&view, view.updated_at);
    v.check(replayed == *obs.status, || {
        format!(
            "{id}: the executor reported\n{:?}\nbut the journal replays to\n{replayed:?}",
            obs.status
        )
    });
    v.check(obs.summary_progress == view.progress(), || {
        format!(
            "{id}: stored summary {:?} != replayed {:?}",
            obs.summary_progress,
            view.progress()
        )
    });
    v.check(obs.stored_view == Some(&view), || {
        format!("{id}: the store's view (snapshot + tail) differs from the replayed journal")
    });

    if let Some(answer) = obs.cancel {
        let requested = records
            .iter()
            .any(|r| matches!(r.event, Event::CancelRequested { .. }));
        match answer {
            CancelAnswer::Accepted => v.check(stopped.is_some(), || {
                format!("{id}: cancel answered Ok but nothing stopped the job")
            }),
            CancelAnswer::AlreadyFinished(state) => {
                v.check(!requested && *state == view.state, || {
                    format!(
                        "{id}: cancel answered already {state} (journaled: {requested}, final {})",
                        view.state
                    )
                });
            }
            CancelAnswer::Error(e) => v.check(false, || format!("{id}: cancel failed: {e}")),
        }
    }

    // The executions.
    let mut by_node: HashMap<u32, Vec<&Exec>> = HashMap::new();
    for e in &obs.execs {
        by_node.entry(e.node).or_default().push(e);
    }
    for i in 0..n as u32 {
        let node = &view.nodes[i as usize];
        let node_spec = &spec.nodes()[i as usize];
        let node_plan = plan.node(i);
        let execs = by_node.remove(&i).unwrap_or_default();
        let mut attempts: Vec<u32> = execs.iter().map(|e| e.attempt).collect();
        attempts.sort_unstable();
        let expected: Vec<u32> = (1..=node.machine.attempts).collect();
        if crashed {
            // An attempt journaled just before a crash may never have been
            // polled; none may run twice.
            let mut unique = attempts.clone();
            unique.dedup();
            v.check(
                unique.len() == attempts.len() && attempts.iter().all(|a| expected.contains(a)),
                || {
                    format!(
                        "{id}: node {} ran attempts {attempts:?}, journaled {}",
                        node_spec.id, node.machine.attempts
                    )
                },
            );
        } else {
            v.check(attempts == expected, || {
                format!(
                    "{id}: node {} ({}) ran attempts {attempts:?}, journaled {}",
                    node_spec.id,
                    node.state(),
                    node.machine.attempts
                )
            });
        }
        for e in &execs {
            let script = node_plan
                .script
                .get(e.attempt as usize - 1)
                .copied()
                .unwrap_or(Scripted::DEFAULT);
            check_execution(
                v,
                id,
                node_spec,
                node_plan,
                script,
                e,
                outcomes.get(&(i, e.attempt)).copied(),
                stopped.is_some(),
                crashed,
            );
            // Stopping a job stops its attempts at once, or after the grace
            // period those that ignore the signal.
            if let (Some(at), Some(ended)) = (stopped_at, e.ended) {
                let stop = (at - obs.origin).as_millis() as u64;
                let end = (ended - obs.origin).as_millis() as u64;
                let limit = if script.stubborn {
                    stop + GRACE_MS
                } else {
                    stop
                };
                v.check(end <= limit, || {
                    format!(
                        "{id}: attempt {} of {} ran until {end} ms, after the job stopped at {stop} ms",
                        e.attempt, node_spec.id
                    )
                });
            }
        }
        // Dependencies had ended before any attempt started.
        if needs_all_done(node_spec.trigger) {
            for e in &execs {
                for &p in &preds[i as usize] {
                    for pe in obs.execs.iter().filter(|x| x.node == p) {
                        v.check(pe.end_seq.is_some_and(|end| end < e.start_seq), || {
                            format!(
                                "{id}: attempt {} of {} ({}) started while upstream {} attempt {} ran",
                                e.attempt, node_spec.id, node_spec.trigger, spec.nodes()[p as usize].id, pe.attempt
                            )
                        });
                    }
                }
            }
        }
    }

    // Recovery: nothing finished before a crash runs again, and what was in
    // flight is journaled as interrupted.
    for (k, &len) in obs.crashes.iter().enumerate() {
        let before = JobView::replay(&records[..len]).expect("a prefix of a valid journal");
        let after = &records[len..];
        let epoch = k as u32 + 1;
        for (i, node) in before.nodes.iter().enumerate() {
            let id_i = &spec.nodes()[i].id;
            if node.state().is_finished() {
                let again = obs
                    .execs
                    .iter()
                    .filter(|e| e.node == i as u32 && e.epoch >= epoch)
                    .count();
                v.check(again == 0, || {
                    format!(
                        "{id}: node {id_i} was {} at crash {epoch} but ran {again} more time(s)",
                        node.state()
                    )
                });
            }
            if node.state() == NodeState::Running {
                let attempt = node.machine.attempts;
                let journaled = after.iter().any(|r| {
                    matches!(&r.event, Event::NodeFailed { node, attempt: a, failure, .. }
                        if *node == i as u32 && *a == attempt && failure.class == FailureClass::Infrastructure)
                });
                v.check(journaled, || {
                    format!("{id}: node {id_i} attempt {attempt} was running at crash {epoch} but is not journaled as interrupted")
                });
            }
        }
        if matches!(
            before.state,
            JobState::Running | JobState::Cancelling | JobState::Recovering
        ) {
            v.check(
                after.iter().any(|r| r.event == Event::RecoveryFinished),
                || {
                    format!(
                        "{id}: was {} at crash {epoch} but never recovered",
                        before.state
                    )
                },
            );
        }
    }
}

/// How long the executor waits for a cancelled attempt that ignores it.
const GRACE_MS: u64 = 10_000;

/// Checks one execution against its script and the journal. `journaled` is
/// the attempt's journaled result and whether it was recorded as
/// interrupted by a crash.
#[allow(clippy::too_many_arguments)]
fn check_execution(
    v: &mut Violations,
    id: &JobId,
    node_spec: &NodeSpec,
    plan: &NodePlan,
    script: Scripted,
    e: &Exec,
    journaled: Option<(Result<(), FailureClass>, bool)>,
    stopped: bool,
    crashed: bool,
) {
    let what = || {
        format!(
            "{id}: attempt {} of {} (script {script:?}, timeout {:?})",
            e.attempt, node_spec.id, plan.timeout_ms
        )
    };
    let took = (e.ended.expect("every execution ended") - e.started).as_millis() as u64;
    let natural = script.natural();
    let Some((journaled, interrupted)) = journaled else {
        v.check(false, || {
            format!("{}: ran, but its end was never journaled", what())
        });
        return;
    };
    let Some(result) = e.result else {
        // Dropped: by a crash, or after the grace period of an attempt that
        // ignored its stop signal (journaled as timed out or cancelled).
        let after_grace = script.stubborn
            && took >= GRACE_MS
            && matches!(
                journaled,
                Err(FailureClass::Timeout | FailureClass::Cancelled)
            );
        v.check((crashed && interrupted) || after_grace, || {
            format!(
                "{}: dropped after {took} ms, journaled {journaled:?}",
                what()
            )
        });
        return;
    };
    // The runner's side: what it returned, and when.
    let as_scripted = natural.is_some_and(|(res, after)| {
        res == result
            && took == after
            && (script.stubborn || plan.timeout_ms.is_none_or(|t| after <= t))
    });
    let timed_out = plan.timeout_ms.is_some_and(|t| {
        result == Err(FailureClass::Timeout)
            && took == t
            && natural.is_none_or(|(_, after)| after >= t)
    });
    let cancelled = stopped
        && result == Err(FailureClass::Cancelled)
        && natural.is_none_or(|(_, after)| took <= after);
    v.check(as_scripted || timed_out || cancelled, || {
        format!("{}: returned {result:?} after {took} ms", what())
    });
    // The journal's side: what the runner returned, unless a crash
    // interrupted it or it ran past its timeout ignoring the signal.
    let overran = script.stubborn
        && journaled == Err(FailureClass::Timeout)
        && plan.timeout_ms.is_some_and(|t| took >= t);
    v.check(
        journaled == result || (crashed && interrupted) || overran,
        || {
            format!(
                "{}: returned {result:?} but the journal says {journaled:?}",
                what()
            )
        },
    );
}

/// Limits measured on the runner's side: global, per job, per pool.
fn check_limits(v: &mut Violations, world: &World, execs: &[Exec], ids: &[JobId]) {
    let mut events: Vec<(u64, i32, &Exec)> = Vec::new();
    for e in execs {
        events.push((e.start_seq, 1, e));
        if let Some(end) = e.end_seq {
            events.push((end, -1, e));
        }
    }
    events.sort_by_key(|&(seq, _, _)| seq);
    let mut global = 0i32;
    let mut per_job: HashMap<&JobId, i32> = HashMap::new();
    let mut per_pool: HashMap<(&JobId, &str), i32> = HashMap::new();
    for (seq, delta, e) in events {
        global += delta;
        let job = per_job.entry(&e.job).or_default();
        *job += delta;
        let j = ids.iter().position(|id| *id == e.job).unwrap();
        let plan = &world.jobs[j];
        v.check(global as usize <= world.max_concurrent_nodes, || {
            format!(
                "log #{seq}: {global} attempts in flight, over the global limit of {}",
                world.max_concurrent_nodes
            )
        });
        let limit = plan.max_concurrency.map_or(usize::MAX, |m| m as usize);
        let now = *job;
        v.check(now as usize <= limit, || {
            format!(
                "log #{seq}: {} has {now} attempts in flight, over its limit of {limit}",
                e.job
            )
        });
        if let Some(pool) = &e.pool {
            let slots = plan.pools[pool.trim_start_matches("pool").parse::<usize>().unwrap()];
            let count = per_pool.entry((&e.job, pool.as_str())).or_default();
            *count += delta;
            let now = *count;
            v.check(now as u32 <= slots, || {
                format!(
                    "log #{seq}: {} has {now} attempts in {pool}, over its {slots} slots",
                    e.job
                )
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The properties.

/// Runs `world` under `disturbances` on a fresh paused runtime and checks
/// everything.
fn simulate(world: &World, disturbances: &Disturbances) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(simulate_in_runtime(world, disturbances))
}

async fn simulate_in_runtime(
    world: &World,
    disturbances: &Disturbances,
) -> Result<(), TestCaseError> {
    let sim = Sim::new(world);
    let mut ex = sim.start().await;
    let ids = sim.submit_all(&ex).await;

    let mut timeline: Vec<(u64, Act)> = disturbances
        .crash_at
        .iter()
        .map(|&t| (t, Act::Crash))
        .collect();
    if !disturbances.cancel_at.is_empty() {
        for j in 0..ids.len() {
            if let Some(t) = disturbances.cancel_at[j % disturbances.cancel_at.len()] {
                timeline.push((t, Act::Cancel(j)));
            }
        }
    }
    if let Some(delay) = disturbances.crash_after_cancel {
        let first_cancel = timeline
            .iter()
            .filter_map(|&(t, act)| matches!(act, Act::Cancel(_)).then_some(t))
            .min();
        timeline.extend(first_cancel.map(|t| (t + delay, Act::Crash)));
    }
    timeline.sort_unstable();
    let crashed = timeline.iter().any(|&(_, act)| act == Act::Crash);
    let mut crashes: HashMap<JobId, Vec<usize>> = HashMap::new();
    let mut cancels: HashMap<usize, CancelAnswer> = HashMap::new();
    let mut early = Violations::default();
    for (at, act) in timeline {
        tokio::time::sleep_until(sim.clock.0 + ms(at)).await;
        match act {
            Act::Cancel(j) => {
                let answer = match ex.cancel(&ids[j], Some("simulated".into())).await {
                    Ok(()) => CancelAnswer::Accepted,
                    Err(ExecutorError::AlreadyFinished { state, .. }) => {
                        CancelAnswer::AlreadyFinished(state)
                    }
                    Err(other) => CancelAnswer::Error(other.to_string()),
                };
                cancels.insert(j, answer);
            }
            Act::Crash => {
                for id in &ids {
                    let records = sim.store.read_all(id, 0).await.unwrap();
                    let summary = sim.store.summary(id).await.unwrap();
                    if let Ok(view) = JobView::replay(&records) {
                        // What a restart trusts: `unfinished_jobs` reads
                        // summaries, not journals.
                        early.check(summary.progress == view.progress(), || {
                            format!(
                                "{id}: at the crash at {at} ms the stored summary {:?} disagrees with the journal {:?}",
                                summary.progress,
                                view.progress()
                            )
                        });
                    }
                    crashes.entry(id.clone()).or_default().push(records.len());
                }
                sim.crash(ex).await;
                ex = sim.start().await;
            }
        }
    }
    let statuses = match sim.wait_all(&ex, &ids).await {
        Ok(statuses) => statuses,
        Err(stalled) => {
            early.0.push(stalled);
            return early.into_result();
        }
    };

    let mut v = early;
    let (execs, runner_violations) = {
        let log = sim.tracker.lock();
        (log.execs.clone(), log.violations.clone())
    };
    v.0.extend(runner_violations);
    check_limits(&mut v, world, &execs, &ids);
    v.check(
        sim.scripted.max_in_flight() <= world.max_concurrent_nodes,
        || {
            format!(
                "the runner saw {} attempts at once, over the global limit",
                sim.scripted.max_in_flight()
            )
        },
    );
    for (j, id) in ids.iter().enumerate() {
        let records = sim.store.read_all(id, 0).await.unwrap();
        let stored_view = sim.store.load_view(id).await.ok();
        let summary = sim.store.summary(id).await.unwrap();
        let obs = Observed {
            status: &statuses[j],
            records: &records,
            stored_view: stored_view.as_ref(),
            summary_progress: summary.progress,
            execs: execs.iter().filter(|e| e.job == *id).collect(),
            cancel: cancels.get(&j),
            crashes: crashes.remove(id).unwrap_or_default(),
            origin: sim.clock.0,
            landed: &|seq| sim.sim_store.landed_at(id, seq),
        };
        check_job(&mut v, world, j, id, crashed, &obs);
    }
    drop(ex);
    v.into_result()
}

/// A moment in the first 600 ms of a run, often the very first.
fn moment() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 4 => 0u64..=600]
}

/// `cases` per property; `PROPTEST_CASES` overrides it for long soak runs.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failing case shrinks for at most a minute.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Random DAGs with random rules, limits, policies and outcomes run to a
    /// terminal state that the journal, the store and the runner all agree on.
    #[test]
    fn random_jobs_run_within_every_rule(world in world(3, 25)) {
        simulate(&world, &Disturbances::default())?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Cancelling at a random moment stops every job for good: nothing is
    /// dispatched after the request, nothing waiting survives it.
    #[test]
    fn random_jobs_cancelled_at_random_moments(
        world in world(3, 20),
        cancel_at in prop::collection::vec(prop::option::weighted(0.85, moment()), 1..=3),
    ) {
        simulate(&world, &Disturbances { cancel_at, ..Disturbances::default() })?;
    }

    /// Crashing the executor at random moments (sometimes while jobs are
    /// being cancelled) and recovering over the same store finishes every
    /// job, never re-runs finished work and leaves a journal that replays.
    #[test]
    fn random_jobs_recover_from_crashes(
        world in world(3, 20),
        crash_at in prop::collection::vec(moment(), 1..=2),
        cancel_at in prop::collection::vec(prop::option::weighted(0.4, moment()), 0..=3),
        crash_after_cancel in prop::option::weighted(0.5, 1u64..=5),
    ) {
        simulate(&world, &Disturbances { cancel_at, crash_at, crash_after_cancel })?;
    }
}

/// A regression found by the simulation: when two upstream nodes of one
/// node finish in the same cascade (here `a` fails, which makes `d`
/// upstream-failed, and `b` depends on both), the scheduler must decide `b`
/// once. It used to queue a second decision for `b` before the first was
/// applied; the second is an invalid transition, which panics the scheduler
/// task in debug builds (every job then hangs or reports `ShutDown`) and is
/// logged as a scheduler bug in release builds.
#[test]
fn a_node_reached_by_two_cascading_upstreams_is_decided_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let runner = ScriptedRunner::new();
        runner.script("a", [Outcome::fail(FailureClass::Permanent)]);
        let mut registry = Registry::new();
        registry.register(KIND, runner.clone());
        let ex = Executor::builder(Arc::new(MemoryStore::new()))
            .registry(registry)
            .start()
            .await
            .unwrap();
        // Spec order puts b before d, so a's successors are [b, d].
        let spec = JobSpec::builder("cascade")
            .node(NodeSpec::new("a", KIND))
            .node(NodeSpec::new("b", KIND).depends_on(["a", "d"]))
            .node(NodeSpec::new("d", KIND).depends_on(["a"]))
            .build();
        let id = ex.submit(spec, "sim").await.unwrap();
        let status = tokio::time::timeout(STALL, ex.wait(&id))
            .await
            .expect("the job finishes")
            .expect("the scheduler survives");
        assert_eq!(status.state, JobState::Failed);
        assert_eq!(status.node("a").unwrap().state, NodeState::Failed);
        assert_eq!(status.node("d").unwrap().state, NodeState::UpstreamFailed);
        assert_eq!(status.node("b").unwrap().state, NodeState::UpstreamFailed);
        assert_eq!(runner.runs_of("b") + runner.runs_of("d"), 0);
        let records = ex.store().read_all(&id, 0).await.unwrap();
        let decisions = records
            .iter()
            .filter(|r| r.event == Event::NodeUpstreamFailed { node: 1 })
            .count();
        assert_eq!(decisions, 1, "b is decided exactly once");
    });
}

/// A regression found by the simulation: recovery records an interrupted
/// attempt as failed, and when no retry is left that failure decides the
/// node's successors at once. A successor made ready that way must be
/// queued once; it used to be queued a second time when the recovery loop
/// reached it (its index is larger), so it was dispatched twice: the second
/// `node_started` is an invalid transition, a panic of the scheduler task in
/// debug builds; in release builds the record is dropped but the slot it
/// took is never given back, so the job never finishes.
#[test]
fn a_successor_made_ready_during_recovery_runs_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let runner = ScriptedRunner::new();
        runner.script("x", [Outcome::hang()]);
        let mut registry = Registry::new();
        registry.register(KIND, runner.clone());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let start = || {
            Executor::builder(store.clone())
                .registry(registry.clone())
                .start()
        };
        let ex = start().await.unwrap();
        let spec = JobSpec::builder("recovery")
            .node(NodeSpec::new("x", KIND).retry(RetrySpec::new().max_attempts(1)))
            .node(
                NodeSpec::new("y", KIND)
                    .depends_on(["x"])
                    .trigger(TriggerRule::AllDone),
            )
            .build();
        let id = ex.submit(spec, "sim").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            ex.status(&id).await.unwrap().node("x").unwrap().state,
            NodeState::Running
        );
        drop(ex); // the crash
        tokio::task::yield_now().await;

        let ex = start().await.unwrap();
        let status = tokio::time::timeout(STALL, ex.wait(&id))
            .await
            .expect("the job finishes")
            .expect("the scheduler survives");
        assert_eq!(status.state, JobState::Failed);
        assert_eq!(status.node("x").unwrap().state, NodeState::Failed);
        assert_eq!(status.node("y").unwrap().state, NodeState::Succeeded);
        assert_eq!(status.node("y").unwrap().attempts, 1);
        assert_eq!(runner.runs_of("y"), 1, "y runs exactly once");
        let records = ex.store().read_all(&id, 0).await.unwrap();
        let starts = records
            .iter()
            .filter(|r| matches!(r.event, Event::NodeStarted { node: 1, .. }))
            .count();
        assert_eq!(starts, 1);
    });
}

/// A store for the outage regressions: appends numbered in `failures` fail
/// without landing.
fn outage_store(failures: impl IntoIterator<Item = u32>) -> (Arc<MemoryStore>, Arc<SimStore>) {
    let inner = Arc::new(MemoryStore::new());
    let store = Arc::new(SimStore {
        inner: inner.clone(),
        yields: 0,
        failures: failures.into_iter().collect(),
        failures_land: false,
        appends: AtomicU32::new(0),
        landed: Mutex::default(),
    });
    (inner, store)
}

/// Two independent nodes: `a` succeeds at 1 s, `b` at 2 s. The executor
/// retries a failed append after 5 s.
async fn outage_executor(store: Arc<SimStore>, runner: &ScriptedRunner) -> Executor {
    let mut registry = Registry::new();
    registry.register(KIND, runner.clone());
    let store: Arc<dyn Store> = store;
    Executor::builder(store)
        .registry(registry)
        .config(ExecutorConfig {
            store_retry_initial: Duration::from_secs(5),
            ..ExecutorConfig::default()
        })
        .start()
        .await
        .unwrap()
}

fn outage_job() -> (JobSpec, ScriptedRunner) {
    let runner = ScriptedRunner::new();
    runner.script("a", [Outcome::succeed().after(Duration::from_secs(1))]);
    runner.script("b", [Outcome::succeed().after(Duration::from_secs(2))]);
    let spec = JobSpec::builder("outage")
        .node(NodeSpec::new("a", KIND))
        .node(NodeSpec::new("b", KIND))
        .build();
    (spec, runner)
}

/// A regression found by the simulation: after a failed append is replayed
/// successfully, the records that piled up behind it must be journaled
/// right away. They used to wait for the scheduler's next unrelated wake-up
/// (here the job timeout, an hour later, by which time the job had long
/// finished: `wait` returned an hour late; when the pending records were not
/// the final one, the timeout then killed a healthy job as `timed_out`).
#[test]
fn records_behind_a_replayed_append_are_journaled_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // Append 0 starts both nodes; append 1 (`a` succeeded, at 1 s) fails
        // and is replayed at 6 s, after `b` succeeded and the job finished
        // at 2 s in memory.
        let (inner, store) = outage_store([1]);
        let (spec, runner) = outage_job();
        let ex = outage_executor(store, &runner).await;
        let t0 = Instant::now();
        let id = ex.submit(spec, "sim").await.unwrap();
        let status = tokio::time::timeout(STALL, ex.wait(&id))
            .await
            .expect("the job finishes")
            .unwrap();
        assert_eq!(status.state, JobState::Succeeded);
        assert!(
            t0.elapsed() <= Duration::from_secs(7),
            "finished {:?} after submission; the outage ended at 6 s",
            t0.elapsed()
        );
        let view = inner.load_view(&id).await.unwrap();
        assert_eq!(inner.summary(&id).await.unwrap().progress, view.progress());
    });
}

/// A regression found by the simulation: a replayed append must store the
/// summary of the journal it makes durable. It used to store the progress
/// of the in-memory view, which includes the records still pending behind
/// it: the summary said `succeeded` while the journal said `running`, so
/// after a crash `unfinished_jobs` (which reads summaries) skipped the job
/// and it was never resumed.
#[test]
fn a_replayed_append_stores_the_summary_of_what_it_journaled() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // Append 1 (`a` succeeded) fails; its replay (append 2, at 6 s)
        // lands; the records behind it (`b` succeeded, the job finished)
        // fail too (append 3), and the process dies before they land.
        let (inner, store) = outage_store([1, 3]);
        let (spec, runner) = outage_job();
        let ex = outage_executor(store.clone(), &runner).await;
        let id = ex.submit(spec, "sim").await.unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        let journal = inner.load_view(&id).await.unwrap();
        let summary = inner.summary(&id).await.unwrap();
        assert_eq!(
            journal.count(NodeState::Succeeded),
            1,
            "only a's success is durable"
        );
        assert_eq!(
            summary.progress,
            journal.progress(),
            "the summary describes the journal, not the executor's memory"
        );
        drop(ex); // the crash
        tokio::task::yield_now().await;

        let ex = outage_executor(store, &runner).await;
        let status = tokio::time::timeout(STALL, ex.wait(&id))
            .await
            .expect("the job finishes")
            .expect("the job is resumed after the restart");
        assert_eq!(status.state, JobState::Succeeded);
        assert_eq!(runner.runs_of("a"), 1, "a's success was durable");
        assert_eq!(runner.runs_of("b"), 2, "b's success was not");
    });
}

/// A regression found by the simulation: cancelling a job that has just
/// finished (its final record is written, the job not yet released) must
/// report the state it finished in. It used to report the outcome
/// recomputed from its nodes (`succeeded` here, `failed` if a node had been
/// cancelled) for a job that had timed out or been cancelled.
#[test]
fn cancelling_a_job_that_just_timed_out_reports_timed_out() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let runner = ScriptedRunner::new();
        // Ignores the stop signal, and ends at 2 s.
        runner.script(
            "slow",
            [Outcome::succeed()
                .after(Duration::from_secs(2))
                .ignoring_cancel()],
        );
        let mut registry = Registry::new();
        registry.register(KIND, runner.clone());
        let ex = Executor::builder(Arc::new(MemoryStore::new()))
            .registry(registry)
            .start()
            .await
            .unwrap();
        let spec = JobSpec::builder("timeout")
            .timeout(Duration::from_secs(1))
            .node(NodeSpec::new("slow", KIND))
            .build();
        let id = ex.submit(spec, "sim").await.unwrap();
        // The job times out at 1 s and is cancelling until its attempt ends
        // at 2 s, when it finishes `timed_out`; the cancel arrives then too,
        // and is processed just after that attempt's end.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answer = ex.cancel(&id, None).await;
        let status = ex.wait(&id).await.unwrap();
        assert_eq!(status.state, JobState::TimedOut);
        match answer {
            Ok(()) => {}
            Err(ExecutorError::AlreadyFinished { state, .. }) => {
                assert_eq!(state, JobState::TimedOut, "the state it finished in");
            }
            Err(other) => panic!("unexpected answer {other}"),
        }
    });
}

/// A regression found while reading the flush the simulation exercises: a
/// second cancel of a job that is already cancelling is a no-op and must be
/// answered at once. When another job journaled something in the same
/// scheduler iteration, the answer used to wait for the cancelling job's
/// own next record (here its attempt's end, after the grace period).
#[test]
fn a_repeated_cancel_is_answered_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let runner = ScriptedRunner::new();
        // Ignores cancellation; the executor drops it after 10 s of grace.
        runner.script("stubborn", [Outcome::hang().ignoring_cancel()]);
        runner.script("tick", [Outcome::succeed().after(Duration::from_secs(2))]);
        let mut registry = Registry::new();
        registry.register(KIND, runner.clone());
        let ex = Executor::builder(Arc::new(MemoryStore::new()))
            .registry(registry)
            .start()
            .await
            .unwrap();
        let stopping = ex
            .submit(
                JobSpec::builder("stopping")
                    .node(NodeSpec::new("stubborn", KIND))
                    .build(),
                "sim",
            )
            .await
            .unwrap();
        let busy = ex
            .submit(
                JobSpec::builder("busy")
                    .node(NodeSpec::new("tick", KIND))
                    .build(),
                "sim",
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        ex.cancel(&stopping, None).await.unwrap();
        // At 2 s `busy` journals its node's success; ask again then.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = Instant::now();
        ex.cancel(&stopping, None).await.unwrap();
        assert_eq!(asked.elapsed(), Duration::ZERO, "answered at once");
        assert_eq!(ex.wait(&busy).await.unwrap().state, JobState::Succeeded);
        assert_eq!(ex.wait(&stopping).await.unwrap().state, JobState::Cancelled);
    });
}
