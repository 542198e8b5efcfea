//! The [`Executor`]: runs jobs over a [`Store`] and a runner [`Registry`].
//!
//! One scheduler task owns every active job's state (no locks): it receives
//! commands and finished attempts, folds them into each job's [`JobView`]
//! through the state machines, dispatches ready nodes under the concurrency
//! limits, and then **journals before acting**: the records of one loop
//! iteration are appended to the store (one append per job, all jobs
//! concurrently, so backends can group-commit), and only once they are
//! durable does it start attempts (on a crew of long-lived tasks), arm
//! timers, signal cancellations and publish events. A store failure stalls
//! the affected job (its records stay pending and are re-appended with
//! backoff); nothing is acted on, faked or lost.
//!
//! At start the executor recovers every unfinished job from the store:
//! succeeded nodes are never run again, attempts that were in flight are
//! recorded as interrupted (failure class `infrastructure`) and retried per
//! policy.
//!
//! ```
//! use orchestrator_core::{Executor, JobSpec, NodeSpec, JobState};
//! use orchestrator_core::runner::Registry;
//! use orchestrator_core::store::MemoryStore;
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(Arc::new(MemoryStore::new()))
//!     .registry(Registry::with_builtins())
//!     .start()
//!     .await?;
//! let spec = JobSpec::builder("smoke")
//!     .node(NodeSpec::new("build", "noop"))
//!     .node(NodeSpec::new("test", "noop").depends_on(["build"]))
//!     .build();
//! let id = executor.submit(spec, "alice").await?;
//! let status = executor.wait(&id).await?;
//! assert_eq!(status.state, JobState::Succeeded);
//! assert_eq!(status.nodes_finished, 2);
//! # Ok(()) }
//! ```

mod attempt;
mod dead_letters;
mod keeper;
mod scheduler;
mod status;
mod timers;

pub(crate) use scheduler::{CommandTx, Completions, WeakCommandTx};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use crate::dag::Dag;
use crate::flaky::FlakyConfig;
use crate::journal::{Event, JobHeader, JobSummary, JobView, Record};
use crate::retry::{PolicyRegistry, RetryDefaults};
use crate::runner::Registry;
use crate::state::JobState;
use crate::store::{JobPage, JobQuery, Store, StoreError, StoreExt};
use crate::time::{Clock, JobId, SystemClock};
use crate::validate::{Limits, Problem, ProblemCode, ValidationErrors};
use crate::JobSpec;

pub use dead_letters::DeadLetterError;
pub use status::{JobStatus, NodeStatus};

/// Attempts `submit` makes to create a job when the store fails in a way
/// that may pass (the error is returned after the last one).
const SUBMIT_TRIES: u32 = 4;

/// Longest pause between two looks at the store while waiting for a job
/// another executor runs.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Executor settings. The defaults are the original design's:
/// 10 concurrent nodes, 3 attempts, 300 s maximum retry delay, 3600 s job
/// timeout.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Most node attempts running at once, over all jobs (`MAX_CONCURRENT_NODES`).
    pub max_concurrent_nodes: usize,
    /// Defaults for retry policies (`DEFAULT_RETRY_ATTEMPTS`, `MAX_RETRY_DELAY`).
    pub retry: RetryDefaults,
    /// Timeout of a job whose spec sets none (`JOB_TIMEOUT`).
    pub job_timeout: Duration,
    /// How long a cancelled or timed-out attempt may take to stop before its
    /// future is dropped (which kills a process runner's process group).
    pub cancel_grace: Duration,
    /// Limits on submitted specs.
    pub limits: Limits,
    /// Write a snapshot after at least this many records (raised to four
    /// records per node for large jobs, so snapshotting stays O(1) per record).
    pub snapshot_every: u64,
    /// First delay before re-trying a failed store append; doubles up to
    /// `store_retry_max`.
    pub store_retry_initial: Duration,
    /// Cap of the store-append retry delay.
    pub store_retry_max: Duration,
    /// How this executor holds the leases of the jobs it runs.
    pub lease: LeaseConfig,
    /// Circuit breakers by dependency name; they win over a job's
    /// `breakers` (see [`crate::breaker`]).
    pub breakers: std::collections::BTreeMap<String, crate::breaker::BreakerSpec>,
    /// A breaker for every dependency neither this nor the job configures
    /// (none by default).
    pub default_breaker: Option<crate::breaker::BreakerSpec>,
    /// Test history and flakiness classification (see [`crate::flaky`]).
    pub flaky: FlakyConfig,
}

/// How an executor leases jobs (see [`crate::store::lease`]). Several
/// executors — in one process or many — can share a store: each job runs
/// in the one that holds its lease, and a job whose holder stops renewing
/// is taken over by another within about `ttl + heartbeat`.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// This executor's id in leases; unique per executor (the default is
    /// the process id plus random hex).
    pub owner: String,
    /// How long a lease lasts unless renewed. Takeover of a crashed
    /// executor's jobs happens between `ttl` and `ttl + heartbeat` after its
    /// last renewal. Must exceed clock skew between processes by far.
    pub ttl: Duration,
    /// How often leases are renewed and orphaned or queued jobs claimed;
    /// well below `ttl` (a third is customary), so one lost heartbeat does
    /// not lose a lease.
    pub heartbeat: Duration,
    /// Most jobs this executor runs at once; submissions beyond it stay
    /// queued in the store for any executor with room.
    pub capacity: usize,
    /// How long the scheduler may leave the keeper's ping unanswered before
    /// the executor counts as wedged and hands its jobs to other executors
    /// (see [`crate::sweep`]). Must exceed the heartbeat and the slowest
    /// append the store may legitimately take; while it runs, a wedged
    /// executor's jobs stand still.
    pub stall_timeout: Duration,
    /// How much longer than it may legitimately wait a job's journal may
    /// stay quiet before the job is reported stuck (see [`crate::sweep`]);
    /// also how long its appends may keep failing.
    pub stall_grace: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            owner: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            ttl: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            capacity: usize::MAX,
            stall_timeout: Duration::from_secs(60),
            stall_grace: Duration::from_secs(60),
        }
    }
}

impl ExecutorConfig {
    /// The delay before retrying a store write after `failures` failures in
    /// a row (from 1): `store_retry_initial`, doubling, capped at
    /// `store_retry_max`.
    pub fn store_retry_delay(&self, failures: u32) -> Duration {
        self.store_retry_initial
            .saturating_mul(1u32 << (failures.clamp(1, 17) - 1))
            .min(self.store_retry_max)
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            max_concurrent_nodes: 10,
            retry: RetryDefaults::default(),
            job_timeout: Duration::from_secs(3600),
            cancel_grace: Duration::from_secs(10),
            limits: Limits::default(),
            snapshot_every: 1_000,
            store_retry_initial: Duration::from_millis(100),
            store_retry_max: Duration::from_secs(30),
            lease: LeaseConfig::default(),
            breakers: std::collections::BTreeMap::new(),
            default_breaker: None,
            flaky: FlakyConfig::default(),
        }
    }
}

/// Errors of executor operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The spec is invalid; every problem is listed.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job is already in a terminal state.
    #[error("job {job} already finished ({state})")]
    AlreadyFinished {
        /// The job.
        job: JobId,
        /// Its final state.
        state: JobState,
    },
    /// The job is in a state that does not allow the operation (e.g.
    /// cancelling a rollback, or rolling back a job that is still running).
    #[error("job {job} is {state}; the operation is not possible now")]
    Busy {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
    /// A rerun named a node the job does not have.
    #[error("job {job} has no node {node:?}")]
    UnknownNode {
        /// The job.
        job: JobId,
        /// The node id given.
        node: String,
    },
    /// A dead-letter operation was refused.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The executor has shut down.
    #[error("the executor has shut down")]
    ShutDown,
}

impl From<StoreError> for ExecutorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { job } => Self::NotFound(job),
            other => Self::Store(other),
        }
    }
}

/// One event, as published to subscribers: a journaled record, or a
/// report the job's journal could not take.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The job.
    pub job: JobId,
    /// The record (its `event.name()` is the stream's event type).
    pub record: Record,
    /// Whether the record is in the job's journal. `false` for a report
    /// published although it could not be journaled — a stuck job's
    /// `escalation.required` when its executor is wedged or its appends are
    /// failing (see [`crate::sweep`]); its `seq` is then 0. If the journal
    /// takes the record later, it is published again, journaled.
    pub journaled: bool,
}

/// Records of one job published together: made durable together, or
/// reported without being journaled.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) job: JobId,
    pub(crate) records: Vec<Record>,
    pub(crate) journaled: bool,
}

/// A live feed of every journaled event, in journal order per job.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Batch>>,
    current: Option<(Arc<Batch>, usize)>,
    /// Counts this subscription in [`Events`] while it lives.
    _counted: Subscribed,
}

/// The executor's event feed: a broadcast channel, and a count of its
/// subscriptions that the scheduler reads with one load before every
/// publish (the channel's own count is behind its lock).
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<Batch>>,
    subscribers: Arc<AtomicUsize>,
}

impl Events {
    fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            subscribers: Arc::default(),
        }
    }

    fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            current: None,
            _counted: Subscribed(Arc::clone(&self.subscribers)),
        }
    }

    /// Whether anyone listens: a batch sent now may still reach a
    /// subscription taken meanwhile, or not, as with the channel's count.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Sends `batch` to every subscription (none is fine).
    pub(crate) fn send(&self, batch: Batch) {
        let _ = self.tx.send(Arc::new(batch));
    }
}

/// A subscription's place in [`Events::subscribers`].
#[derive(Debug)]
struct Subscribed(Arc<AtomicUsize>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The subscriber fell behind and `0` batches of events were dropped for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subscriber lagged; {0} event batches were skipped (read them from the journal)")]
pub struct Lagged(pub u64);

impl Subscription {
    /// The next event; `Ok(None)` once the executor is gone.
    pub async fn recv(&mut self) -> Result<Option<Notification>, Lagged> {
        loop {
            if let Some((batch, i)) = &mut self.current {
                if let Some(record) = batch.records.get(*i) {
                    *i += 1;
                    return Ok(Some(Notification {
                        job: batch.job.clone(),
                        record: record.clone(),
                        journaled: batch.journaled,
                    }));
                }
                self.current = None;
            }
            match self.rx.recv().await {
                Ok(batch) => self.current = Some((batch, 0)),
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(Lagged(n)),
            }
        }
    }
}

/// Which unfinished jobs an executor resumes when it starts, and whether
/// it takes part in running the store's queued and orphaned jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Every unfinished job nobody else holds: right for a long-running
    /// service. On a shared store the executor keeps claiming queued jobs
    /// and jobs whose lease lapsed, every heartbeat, up to its capacity.
    #[default]
    All,
    /// None: the executor runs only what is submitted to it (and claims a
    /// job nobody holds only to cancel it).
    None,
    /// Only these jobs (those of them that are unfinished), e.g. a command
    /// that resumes one job and leaves the others to whoever owns them.
    Only(Vec<JobId>),
}

/// Builds an [`Executor`].
#[must_use]
pub struct ExecutorBuilder {
    store: Arc<dyn Store>,
    recovery: Recovery,
    registry: Registry,
    policies: PolicyRegistry,
    config: ExecutorConfig,
    clock: Arc<dyn Clock>,
    events: Events,
}

impl ExecutorBuilder {
    /// A feed of every event the executor will journal, from its start on —
    /// including the recovery of unfinished jobs during
    /// [`ExecutorBuilder::start`], which a subscription taken from the
    /// started [`Executor`] could miss (e.g. for notification sinks).
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe()
    }

    /// Sets the runner registry (default: the built-ins).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Registers a code-defined job's node types, so its runs can be
    /// submitted with [`Executor::submit_job`] and resumed after a restart.
    pub fn job(mut self, job: &dyn crate::code::Job) -> Self {
        let (_, runners) = crate::code::compile(job);
        self.registry.extend(&runners);
        self
    }

    /// Sets the custom retry policies specs may name.
    pub fn policies(mut self, policies: PolicyRegistry) -> Self {
        self.policies = policies;
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: ExecutorConfig) -> Self {
        self.config = config;
        self
    }

    /// Chooses which unfinished jobs to resume at start (default: all).
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets the wall clock used for journal timestamps.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts the scheduler and resumes every unfinished job in the store.
    /// Must be called within a tokio runtime.
    ///
    /// On an [exclusive](crate::store::LeaseStore::exclusive) store every
    /// unfinished job is a dead process's and is taken over at once. On a
    /// shared store, [`Recovery::All`] makes the executor a member of the
    /// pool: from now on, every heartbeat, it claims queued jobs and jobs
    /// whose lease lapsed, up to its capacity.
    pub async fn start(self) -> Result<Executor, ExecutorError> {
        let exclusive = self.store.exclusive();
        let (unfinished, claim_others) = match self.recovery {
            Recovery::All if exclusive => (self.store.unfinished_jobs().await?, true),
            Recovery::All => (Vec::new(), true),
            Recovery::None => (Vec::new(), false),
            Recovery::Only(ids) => (ids, false),
        };
        let shared = Arc::new(Shared {
            store: self.store,
            registry: std::sync::RwLock::new(self.registry),
            policies: Arc::new(self.policies),
            config: self.config,
            clock: self.clock,
            events: self.events,
            leases: keeper::Held::default(),
        });
        let (tx, rx) = scheduler::CommandTx::channel(Arc::default());
        let task =
            tokio::spawn(scheduler::Scheduler::new(shared.clone(), rx, tx.downgrade()).run());
        let keeper = tokio::spawn(keeper::run(shared.clone(), tx.downgrade(), claim_others));
        let mut executor = Executor {
            handle: Arc::new(Handle {
                shared,
                tx,
                task,
                keeper,
                recovery_failures: Vec::new(),
            }),
        };
        // One unreadable job must not keep every other job from resuming:
        // report it and carry on.
        let mut failures = Vec::new();
        for id in unfinished {
            if let Err(error) = executor.resume(&id, exclusive).await {
                tracing::error!(job = %id, %error, "could not resume job; it stays as stored");
                failures.push(RecoveryFailure { job: id, error });
            }
        }
        if let Some(handle) = Arc::get_mut(&mut executor.handle) {
            handle.recovery_failures = failures;
        }
        Ok(executor)
    }
}

/// State shared by the handle and the scheduler.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    /// Runners by node type. Written only when a code job brings new node
    /// types; read (briefly, never across an await) at validation and spawn.
    pub(crate) registry: std::sync::RwLock<Registry>,
    pub(crate) policies: Arc<PolicyRegistry>,
    pub(crate) config: ExecutorConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Events,
    /// The leases of the jobs this executor runs.
    pub(crate) leases: keeper::Held,
}

impl Shared {
    /// Claims `job`'s lease for this executor (see
    /// [`LeaseStore::claim`](crate::store::LeaseStore::claim)).
    pub(crate) async fn claim(
        &self,
        job: &JobId,
        force: bool,
    ) -> Result<crate::store::lease::Granted, StoreError> {
        let config = &self.config.lease;
        self.store
            .claim(job, &config.owner, self.clock.now(), config.ttl, force)
            .await
    }

    /// The policies `spec` may name: the executor's own, plus the stored
    /// policies it references.
    pub(crate) async fn resolve_policies(
        &self,
        spec: &JobSpec,
    ) -> Result<Arc<PolicyRegistry>, StoreError> {
        let shared = self;
        let refs = crate::policy::references(spec);
        if refs.is_empty() {
            return Ok(Arc::clone(&shared.policies));
        }
        let mut registry = (*shared.policies).clone();
        for r in refs {
            if let Some(p) = shared.store.get_policy(&r.name, r.version).await? {
                registry.add_stored(p);
            }
        }
        Ok(Arc::new(registry))
    }

    /// Publishes `event` of `job` to subscribers without journaling it
    /// (with seq 0), for a report the job's journal cannot take now: a
    /// stuck job's escalation (see [`crate::sweep`]).
    pub(crate) fn report_unjournaled(&self, job: &JobId, event: Event) {
        let record = Record {
            seq: 0,
            at: self.clock.now(),
            event,
        };
        self.events.send(Batch {
            job: job.clone(),
            records: vec![record],
            journaled: false,
        });
    }

    /// The runner registry, for reading. A panic while it was held cannot
    /// leave it half-updated (every write is one map insert), so a poisoned
    /// lock is still consistent.
    pub(crate) fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A job ready to be handed to the scheduler.
pub(crate) struct Activation {
    pub(crate) view: JobView,
    pub(crate) dag: Arc<Dag>,
    /// What the scheduler needs of each node's spec, read here, on the
    /// caller's task: a pass over every node of a large job is not work
    /// for the one task that schedules every job.
    pub(crate) scan: scheduler::NodeScan,
    pub(crate) recovering: bool,
    /// The fencing token of the lease the executor holds on the job.
    pub(crate) fence: u64,
    /// The custom and stored policies the job's spec may name.
    pub(crate) policies: Arc<PolicyRegistry>,
}

impl Activation {
    /// An activation of `view`'s job, its per-node scan made here.
    pub(crate) fn new(
        view: JobView,
        dag: Dag,
        recovering: bool,
        fence: u64,
        policies: Arc<PolicyRegistry>,
    ) -> Self {
        let scan = scheduler::NodeScan::new(view.spec(), &dag);
        Self {
            view,
            dag: Arc::new(dag),
            scan,
            recovering,
            fence,
            policies,
        }
    }
}

/// Commands to the scheduler.
pub(crate) enum Command {
    /// A job's test history is written (see `Post::RecordHistory`).
    HistoryRecorded {
        slot: usize,
        gen: u64,
    },
    Activate(Box<Activation>),
    Cancel {
        job: JobId,
        reason: Option<String>,
        reply: oneshot::Sender<Result<(), ExecutorError>>,
    },
    Wait {
        job: JobId,
        reply: oneshot::Sender<Option<oneshot::Receiver<JobView>>>,
    },
    Active {
        reply: oneshot::Sender<Vec<JobId>>,
    },
    /// The job's lease is gone: stop acting on it at once.
    Lost {
        job: JobId,
    },
    Breakers {
        reply: oneshot::Sender<Vec<BreakerStatus>>,
    },
    /// A job's dead-letter entries are written.
    DeadLettersStored {
        slot: usize,
        gen: u64,
    },
    /// The keeper's ping, once per heartbeat: sweeps the active jobs for
    /// stuck ones and answers at once with the time it was read (see
    /// [`crate::sweep`]).
    Sweep {
        reply: oneshot::Sender<tokio::time::Instant>,
    },
    /// Journals an event that changes no state on an active job; answers
    /// `NotFound` when the job is not active here.
    Journal {
        job: JobId,
        event: Event,
        reply: oneshot::Sender<Result<(), ExecutorError>>,
    },
}

/// A circuit breaker as [`Executor::breakers`] reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerStatus {
    /// The dependency it guards.
    pub dependency: String,
    /// Its state.
    pub state: crate::breaker::BreakerState,
    /// Outcomes in its window.
    pub calls: u32,
    /// Failures among them.
    pub failures: u32,
    /// When an open breaker starts trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub open_until: Option<crate::time::Timestamp>,
    /// Trial calls running (half-open).
    pub trials_in_flight: u32,
    /// Ready nodes waiting for it.
    pub waiting: usize,
    /// State changes so far.
    pub transitions: u64,
    /// Its settings.
    pub config: crate::breaker::BreakerSpec,
}

struct Handle {
    shared: Arc<Shared>,
    tx: scheduler::CommandTx,
    task: tokio::task::JoinHandle<()>,
    keeper: tokio::task::JoinHandle<()>,
    recovery_failures: Vec<RecoveryFailure>,
}

/// An unfinished job the executor could not resume at start (for example, its
/// journal no longer decodes). It stays in the store as it was.
#[derive(Debug)]
pub struct RecoveryFailure {
    /// The job.
    pub job: JobId,
    /// Why it could not be resumed.
    pub error: ExecutorError,
}

impl Drop for Handle {
    /// Dropping the last handle stops the scheduler at once, dropping every
    /// attempt in flight (as a crash would, minus the lost process): the
    /// store keeps whatever was journaled and the next executor recovers it.
    fn drop(&mut self) {
        self.task.abort();
        self.keeper.abort();
    }
}

/// Runs jobs. Cheap to clone; the scheduler stops when the last clone is
/// dropped or [`Executor::shutdown`] is called.
#[derive(Clone)]
pub struct Executor {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Starts building an executor over `store`.
    pub fn builder(store: Arc<dyn Store>) -> ExecutorBuilder {
        ExecutorBuilder {
            store,
            recovery: Recovery::All,
            registry: Registry::with_builtins(),
            policies: PolicyRegistry::default(),
            config: ExecutorConfig::default(),
            clock: Arc::new(SystemClock),
            events: Events::new(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.shared().config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared().store
    }

    /// Validates `spec` without submitting it: the problems
    /// [`Executor::submit`] would report, including unknown node types.
    ///
    /// Stored policies are not looked up here (this is not async): a spec
    /// naming one gets `unknown_policy`. [`Executor::check`] looks them up.
    pub fn validate(&self, spec: &JobSpec) -> Result<Dag, ValidationErrors> {
        self.validate_with(spec, &self.shared().policies)
    }

    /// Validates `spec` as [`Executor::submit`] would, stored policies
    /// included (they are read from the store).
    pub async fn check(&self, spec: &JobSpec) -> Result<Dag, ExecutorError> {
        let policies = self.resolve_policies(spec).await?;
        Ok(self.validate_with(spec, &policies)?)
    }

    /// The executor's custom policies plus the stored policies `spec`
    /// names, read from the store. A reference the store does not know is
    /// left out, for validation to report.
    pub async fn resolve_policies(
        &self,
        spec: &JobSpec,
    ) -> Result<Arc<PolicyRegistry>, StoreError> {
        self.shared().resolve_policies(spec).await
    }

    /// The circuit breakers of this executor, by dependency.
    pub async fn breakers(&self) -> Result<Vec<BreakerStatus>, ExecutorError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Breakers { reply })?;
        rx.await.map_err(|_| ExecutorError::ShutDown)
    }

    /// Validates `policy` and stores it (versions are immutable: see
    /// [`crate::store::PolicyStore`]).
    pub async fn create_policy(
        &self,
        policy: &crate::policy::StoredPolicy,
    ) -> Result<(), ExecutorError> {
        policy.check(&self.shared().policies)?;
        self.shared().store.put_policy(policy).await?;
        Ok(())
    }

    fn validate_with(
        &self,
        spec: &JobSpec,
        policies: &PolicyRegistry,
    ) -> Result<Dag, ValidationErrors> {
        let shared = self.shared();
        let registry = shared.registry();
        let dag = Dag::compile(spec, &shared.config.limits, policies);
        let mut problems = match &dag {
            Ok(_) => Vec::new(),
            Err(e) => e.0.clone(),
        };
        // Nodes of one job mostly share a few types: remember the last one
        // found rather than hashing a million identical strings.
        let mut last_known: Option<&str> = None;
        for (i, node) in spec.nodes().iter().enumerate() {
            if last_known == Some(node.kind.as_str()) {
                // Known: already looked up.
            } else if registry.contains(&node.kind) {
                last_known = Some(node.kind.as_str());
            } else if !node.kind.is_empty() {
                problems.push(Problem::new(
                    format!("/dag_definition/nodes/{i}/type"),
                    ProblemCode::UnknownNodeType,
                    format!("no runner is registered for type {:?}", node.kind),
                ));
            }
            if let Some(c) = &node.compensate {
                if !c.kind.is_empty() && !registry.contains(&c.kind) {
                    problems.push(Problem::new(
                        format!("/dag_definition/nodes/{i}/compensate/type"),
                        ProblemCode::UnknownNodeType,
                        format!("no runner is registered for type {:?}", c.kind),
                    ));
                }
            }
            if problems.len() > 1000 {
                break;
            }
        }
        match dag {
            Ok(dag) if problems.is_empty() => Ok(dag),
            _ => Err(ValidationErrors(problems)),
        }
    }

    /// Submits a job defined in code (see [`crate::code`]): registers its
    /// node types, then submits its spec like [`Executor::submit`].
    pub async fn submit_job(
        &self,
        job: &dyn crate::code::Job,
        owner: &str,
    ) -> Result<JobId, ExecutorError> {
        let (spec, runners) = crate::code::compile(job);
        self.shared()
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(&runners);
        self.submit(spec, owner).await
    }

    /// Validates, journals and starts a job owned by `owner`; returns its id
    /// once the submission is durable.
    pub async fn submit(&self, spec: JobSpec, owner: &str) -> Result<JobId, ExecutorError> {
        let now = self.shared().clock.now();
        let id = JobId::generate(now, &mut rand::rng());
        self.submit_with_id(id, spec, owner).await
    }

    /// Like [`Executor::submit`] with an id chosen by the caller (e.g. an
    /// idempotency key). Submitting the same id twice is
    /// [`StoreError::AlreadyExists`].
    pub async fn submit_with_id(
        &self,
        id: JobId,
        spec: JobSpec,
        owner: &str,
    ) -> Result<JobId, ExecutorError> {
        self.submit_prepared(id, spec, owner, Vec::new()).await
    }

    /// Submits with extra records journaled right after `Queued` (a rerun's
    /// carried-over nodes), in the same atomic create.
    async fn submit_prepared(
        &self,
        id: JobId,
        spec: JobSpec,
        owner: &str,
        extra: Vec<Event>,
    ) -> Result<JobId, ExecutorError> {
        let mut spec = spec;
        let policies = self.resolve_policies(&spec).await?;
        let dag = self.validate_with(&spec, &policies)?;
        // Journal the versions the references resolved to, so a resumed
        // or rerun job uses exactly these policies.
        crate::policy::pin(&mut spec, &policies);
        let mut extra = extra;
        extra.extend(self.flaky_decisions(&spec).await?);
        let shared = self.shared();
        let now = shared.clock.now();
        let header = Arc::new(JobHeader {
            id: id.clone(),
            owner: owner.to_owned(),
            created_at: now,
            spec: Arc::new(spec),
        });
        let mut records = vec![
            Record {
                seq: 1,
                at: now,
                event: Event::Submitted {
                    header: header.clone(),
                },
            },
            Record {
                seq: 2,
                at: now,
                event: Event::Queued,
            },
        ];
        for event in extra {
            records.push(Record {
                seq: records.len() as u64 + 1,
                at: now,
                event,
            });
        }
        let mut view = JobView::new(header);
        for r in &records[1..] {
            view.apply(r)
                .map_err(|e| ExecutorError::Store(StoreError::Invalid(e.to_string())))?;
        }
        let summary: JobSummary = view.summary();
        // After a timeout the caller cannot know whether the create landed;
        // an identical repeat is acknowledged by contract, so retrying is
        // safe and turns "maybe" into a definite answer.
        let mut failures = 0;
        loop {
            match shared.store.create_job(&summary, &records).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && failures + 1 < SUBMIT_TRIES => {
                    failures += 1;
                    let delay = shared.config.store_retry_delay(failures);
                    tracing::warn!(job = %id, error = %e, retry_in_ms = delay.as_millis() as u64, "create failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        shared.events.send(Batch {
            job: id.clone(),
            records,
            journaled: true,
        });
        // Run it here if there is room; otherwise it stays queued in the
        // store for whichever executor has room first.
        if shared.leases.len() < shared.config.lease.capacity {
            match shared.claim(&id, false).await {
                Ok(granted) => {
                    shared.leases.hold(granted.lease.clone());
                    self.command(Command::Activate(Box::new(Activation::new(
                        view,
                        dag,
                        false,
                        granted.lease.token,
                        policies,
                    ))))?;
                }
                // Another executor claimed it first: it runs there.
                Err(StoreError::LeaseHeld { .. }) => {}
                Err(e) => {
                    // The job is stored and queued; an executor of the pool
                    // claims it later. Submission succeeded.
                    tracing::warn!(job = %id, error = %e, "could not claim the submitted job; it stays queued");
                }
            }
        }
        Ok(id)
    }

    /// The adaptive-retry and quarantine decisions of the nodes that opted
    /// in, from their test histories as they are now (journaled with the
    /// job's first records, so a resumed job decides the same).
    async fn flaky_decisions(&self, spec: &JobSpec) -> Result<Vec<Event>, ExecutorError> {
        let shared = self.shared();
        let config = &shared.config.flaky;
        let mut out = Vec::new();
        for (i, node) in spec.nodes().iter().enumerate() {
            let Some(f) = node.flaky.as_ref().or(spec.flaky.as_ref()) else {
                continue;
            };
            let key = crate::flaky::test_key(&spec.name, node);
            let scored = f.adaptive
                || f.quarantine
                    .as_ref()
                    .is_some_and(|q| q.score_above.is_some());
            let history = if scored && config.keep > 0 {
                shared.store.test_history(&key).await?
            } else {
                Vec::new()
            };
            let recent = &history[history.len().saturating_sub(config.keep)..];
            let score = crate::flaky::score(recent, &config.thresholds);
            if let Some(decision) = crate::flaky::decide(f, &key, &score, &config.thresholds) {
                out.push(Event::FlakyDecision {
                    node: i as u32,
                    score,
                    decision,
                });
            }
        }
        Ok(out)
    }

    /// The flakiness report over the store's test histories (see
    /// [`crate::flaky::report`]), classified with this executor's
    /// thresholds.
    pub async fn flaky_report(
        &self,
        query: &crate::flaky::FlakyQuery,
    ) -> Result<crate::flaky::FlakyReport, ExecutorError> {
        let shared = self.shared();
        Ok(crate::flaky::report(&*shared.store, query, &shared.config.flaky.thresholds).await?)
    }

    /// Claims a finished job's lease; a job leased by someone else is busy.
    async fn claim_finished(
        &self,
        job: &JobId,
        state: JobState,
    ) -> Result<crate::store::Lease, ExecutorError> {
        match self.shared().claim(job, false).await {
            Ok(granted) => Ok(granted.lease),
            Err(StoreError::LeaseHeld { .. }) => Err(ExecutorError::Busy {
                job: job.clone(),
                state,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Claims an unfinished job (whatever its lease says with `force`) and
    /// hands it to the scheduler, which resumes it from its journal. A job
    /// another executor holds is left to it.
    async fn resume(&self, id: &JobId, force: bool) -> Result<(), ExecutorError> {
        keeper::claim_and_activate(self.shared(), &self.handle.tx, id, force).await?;
        Ok(())
    }

    fn command(&self, cmd: Command) -> Result<(), ExecutorError> {
        self.handle
            .tx
            .send(cmd)
            .map_err(|_| ExecutorError::ShutDown)
    }

    /// The job's current status, from the store.
    pub async fn status(&self, id: &JobId) -> Result<JobStatus, ExecutorError> {
        let view = self.shared().store.load_view(id).await?;
        Ok(JobStatus::from_view(&view, self.shared().clock.now()))
    }

    /// Requests cancellation: running attempts are signalled and, after the
    /// grace period, dropped; the job ends `cancelled`. Cancelling a finished
    /// job is [`ExecutorError::AlreadyFinished`]; cancelling a job that is
    /// already cancelling is a no-op.
    ///
    /// A job another executor runs is cancelled there, at its next lease
    /// renewal (within one heartbeat); a queued job nobody runs is claimed
    /// and cancelled here.
    pub async fn cancel(&self, id: &JobId, reason: Option<String>) -> Result<(), ExecutorError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Cancel {
            job: id.clone(),
            reason: reason.clone(),
            reply,
        })?;
        match rx.await.map_err(|_| ExecutorError::ShutDown)? {
            Err(ExecutorError::NotFound(_)) => {
                // Not active here: finished, unknown, or another executor's.
                let shared = self.shared();
                let finished = |state| ExecutorError::AlreadyFinished {
                    job: id.clone(),
                    state,
                };
                let summary = shared.store.summary(id).await?;
                if summary.progress.state.is_terminal() {
                    return Err(finished(summary.progress.state));
                }
                let request = crate::store::lease::CancelRequest { reason };
                if !shared.store.request_cancel(id, &request).await? {
                    let summary = shared.store.summary(id).await?;
                    return Err(finished(summary.progress.state));
                }
                // Its holder acts on the request at its next renewal; if
                // nobody holds the job, act on it now.
                if let Err(e) = keeper::claim_and_activate(shared, &self.handle.tx, id, false).await
                {
                    tracing::warn!(job = %id, error = %e, "cancel requested; claiming the job to cancel it failed, its next claimer will");
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Waits until the job is finished and returns its final status.
    pub async fn wait(&self, id: &JobId) -> Result<JobStatus, ExecutorError> {
        match self.wait_here(id).await? {
            Some(view) => Ok(JobStatus::from_view(&view, self.shared().clock.now())),
            None => {
                self.follow(id).await?;
                self.status(id).await
            }
        }
    }

    /// Waits until the job is finished and returns its summary: the final
    /// state and node counts, without every node's status. For a job of a
    /// hundred thousand nodes, [`Executor::wait`]'s per-node report (an id,
    /// a type, timings and an output each) costs about as much as running
    /// the nodes did; use this when the outcome is all that is needed.
    pub async fn wait_summary(&self, id: &JobId) -> Result<JobSummary, ExecutorError> {
        match self.wait_here(id).await? {
            Some(view) => Ok(view.summary()),
            None => self.follow(id).await,
        }
    }

    /// Waits for the job's final view if it runs in this executor; `None`
    /// if it does not run here (any more).
    async fn wait_here(&self, id: &JobId) -> Result<Option<JobView>, ExecutorError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Wait {
            job: id.clone(),
            reply,
        })?;
        if let Some(done) = rx.await.map_err(|_| ExecutorError::ShutDown)? {
            match done.await {
                Ok(view) => return Ok(Some(view)),
                // Dropped without an answer: the job was let go here (its
                // lease was lost), or the executor stopped.
                Err(_) if self.handle.task.is_finished() => return Err(ExecutorError::ShutDown),
                Err(_) => {}
            }
        }
        Ok(None)
    }

    /// Follows a job that does not run here through the store's summary
    /// (no journal replay per poll) until it is finished.
    async fn follow(&self, id: &JobId) -> Result<JobSummary, ExecutorError> {
        let poll = self.shared().config.lease.heartbeat.min(WAIT_POLL);
        loop {
            let summary = self.shared().store.summary(id).await?;
            let state = summary.progress.state;
            if state.is_terminal() {
                return Ok(summary);
            }
            if self.shared().store.exclusive() && !self.shared().leases.contains(id) {
                // Nobody else can open this store: unfinished and not
                // running here means nobody runs it (e.g. a failed recovery).
                return Err(ExecutorError::Store(StoreError::Invalid(format!(
                    "job {id} is {state} but not running in this executor"
                ))));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Rolls back a finished job: the compensations of its succeeded nodes
    /// run in reverse dependency order, with their own retry policies; the
    /// job ends `rolled_back`, or `rollback_incomplete` (with an
    /// `escalation.required` event) when a compensation failed for good. A
    /// job still running is [`ExecutorError::Busy`]; one already rolled back
    /// is [`ExecutorError::AlreadyFinished`].
    pub async fn rollback(&self, id: &JobId, reason: Option<String>) -> Result<(), ExecutorError> {
        let shared = self.shared();
        let summary = shared.store.summary(id).await?;
        let check = |state: JobState| match state {
            JobState::RolledBack | JobState::RollbackIncomplete => {
                Err(ExecutorError::AlreadyFinished {
                    job: id.clone(),
                    state,
                })
            }
            s if !s.is_terminal() => Err(ExecutorError::Busy {
                job: id.clone(),
                state: s,
            }),
            _ => Ok(()),
        };
        check(summary.progress.state)?;
        // A finished job's lease ended with it; claiming it fences off any
        // other executor asked to roll it back at the same time.
        let lease = self.claim_finished(id, summary.progress.state).await?;
        let fence = lease.token;
        let mut view = match shared.store.load_view(id).await {
            Ok(view) => view,
            Err(e) => {
                let _ = shared.store.release(&lease).await;
                return Err(e.into());
            }
        };
        if let Err(e) = check(view.state) {
            let _ = shared.store.release(&lease).await;
            return Err(e);
        }
        let expected = view.version;
        let record = Record {
            seq: expected + 1,
            at: shared.clock.now(),
            event: Event::RollbackStarted { reason },
        };
        view.apply(&record)
            .map_err(|e| ExecutorError::Store(StoreError::Invalid(e.to_string())))?;
        // Compiled before anything is journaled: a rollback that could not
        // start must not leave the job `rolling_back` with nobody running it.
        let compiled = async {
            let policies = self.resolve_policies(view.spec()).await?;
            let dag = Dag::compile(view.spec(), &shared.config.limits, &policies)?;
            Ok::<_, ExecutorError>((policies, dag))
        };
        let (policies, dag) = match compiled.await {
            Ok(compiled) => compiled,
            Err(e) => {
                let _ = shared.store.release(&lease).await;
                return Err(e);
            }
        };
        if let Err(e) = shared
            .store
            .append(
                id,
                expected,
                std::slice::from_ref(&record),
                &view.progress(),
                fence,
            )
            .await
        {
            let _ = shared.store.release(&lease).await;
            return Err(e.into());
        }
        shared.events.send(Batch {
            job: id.clone(),
            records: vec![record],
            journaled: true,
        });
        shared.leases.hold(lease);
        self.command(Command::Activate(Box::new(Activation::new(
            view, dag, false, fence, policies,
        ))))
    }

    /// Starts a new run of a finished job that re-executes only what did not
    /// succeed — failed, timed-out, cancelled, skipped and upstream-failed
    /// nodes — and keeps the outputs of succeeded ones (journaled as
    /// `node.carried_over`). With `from`, that node and everything downstream
    /// of it run again too; a node given new `params` (by node id) runs
    /// again. The new run carries the label `rerun_of` and is owned by
    /// `owner`.
    pub async fn rerun(
        &self,
        id: &JobId,
        from: Option<&str>,
        params: &std::collections::BTreeMap<String, serde_json::Value>,
        owner: &str,
    ) -> Result<JobId, ExecutorError> {
        let shared = self.shared();
        let old = shared.store.load_view(id).await?;
        if !old.state.is_terminal() {
            return Err(ExecutorError::Busy {
                job: id.clone(),
                state: old.state,
            });
        }
        let spec_old = old.spec();
        let index = |node: &str| spec_old.nodes().iter().position(|n| n.id == node);
        let unknown = |node: &str| ExecutorError::UnknownNode {
            job: id.clone(),
            node: node.to_owned(),
        };
        let mut again: Vec<bool> = old
            .nodes
            .iter()
            .map(|n| n.state() != crate::state::NodeState::Succeeded)
            .collect();
        if let Some(from) = from {
            let start = index(from).ok_or_else(|| unknown(from))? as u32;
            // Only `from` needs the graph; the submission compiles it anyway.
            let policies = self.resolve_policies(spec_old).await?;
            let dag = Dag::compile(spec_old, &shared.config.limits, &policies)?;
            let mut seen = vec![false; again.len()];
            let mut stack = vec![start];
            while let Some(v) = stack.pop() {
                if !std::mem::replace(&mut seen[v as usize], true) {
                    again[v as usize] = true;
                    stack.extend_from_slice(dag.successors(v));
                }
            }
        }
        let mut spec = (**spec_old).clone();
        for (node, value) in params {
            let i = index(node).ok_or_else(|| unknown(node))?;
            spec.dag_definition.nodes[i].params = value.clone();
            // New params mean the node's old result no longer stands.
            again[i] = true;
        }
        spec.labels.insert("rerun_of".into(), id.to_string());
        let new_id = JobId::generate(shared.clock.now(), &mut rand::rng());
        let carried = again
            .iter()
            .enumerate()
            .filter(|(_, again)| !**again)
            .map(|(i, _)| Event::NodeCarriedOver {
                node: i as u32,
                from: id.clone(),
                output: old.nodes[i].output.clone(),
            })
            .collect();
        self.submit_prepared(new_id, spec, owner, carried).await
    }

    /// Jobs, filtered and paginated, from the store.
    pub async fn list(&self, query: &JobQuery) -> Result<JobPage, ExecutorError> {
        Ok(self.shared().store.list_jobs(query).await?)
    }

    /// Ids of the jobs this executor is running now.
    pub async fn active_jobs(&self) -> Result<Vec<JobId>, ExecutorError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Active { reply })?;
        rx.await.map_err(|_| ExecutorError::ShutDown)
    }

    /// Jobs that could not be resumed when this executor started.
    pub fn recovery_failures(&self) -> &[RecoveryFailure] {
        &self.handle.recovery_failures
    }

    /// A live feed of every event journaled from now on.
    pub fn subscribe(&self) -> Subscription {
        self.shared().events.subscribe()
    }

    /// Stops the scheduler now, like dropping the last handle. Running
    /// attempts are dropped; unfinished jobs resume at the next start. Their
    /// leases are left to lapse; see [`Executor::stop`] to hand them over at
    /// once.
    pub fn shutdown(self) {
        self.handle.task.abort();
        self.handle.keeper.abort();
    }

    /// Stops like [`Executor::shutdown`], then releases the leases of the
    /// jobs this executor was running, so that other executors sharing the
    /// store take them over at their next heartbeat instead of after the
    /// lease TTL. Attempts in flight are recorded as interrupted by whoever
    /// resumes the jobs.
    pub async fn stop(self) {
        self.handle.task.abort();
        self.handle.keeper.abort();
        let shared = self.shared();
        let held = shared.leases.all();
        let released =
            futures::future::join_all(held.iter().map(|l| shared.store.release(l))).await;
        for (lease, result) in held.iter().zip(released) {
            match result {
                Ok(()) => {
                    shared.leases.forget(&lease.job);
                }
                Err(e) => {
                    tracing::warn!(job = %lease.job, error = %e, "releasing a lease failed; it lapses after its TTL");
                }
            }
        }
    }

    /// The leases this executor holds now.
    pub fn leases(&self) -> Vec<crate::store::Lease> {
        self.shared().leases.all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_feed_counts_its_live_subscriptions_and_delivers_to_them() {
        let events = Events::new();
        assert!(!events.has_subscribers());
        let mut first = events.subscribe();
        let second = events.subscribe();
        assert!(events.has_subscribers());
        drop(second);
        assert!(events.has_subscribers());
        let record = Record {
            seq: 1,
            at: crate::time::Timestamp(5),
            event: Event::Queued,
        };
        events.send(Batch {
            job: "job-1".parse().unwrap(),
            records: vec![record.clone()],
            journaled: true,
        });
        let got = first.recv().await.unwrap().unwrap();
        assert_eq!(got.record, record);
        drop(first);
        assert!(!events.has_subscribers());
        // Sending to nobody is fine.
        events.send(Batch {
            job: "job-1".parse().unwrap(),
            records: vec![record],
            journaled: true,
        });
    }
}
