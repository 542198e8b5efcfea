//! The scheduler task: one owner for every active job's state.
//!
//! Each loop iteration (1) waits for a command, a finished attempt or a
//! timer (a command rings the completion queue, so that is one waker), (2)
//! drains whatever else is already waiting, folding each fact into its job
//! through the state machines and queueing the resulting records,
//! (3) dispatches ready nodes under the global, per-job and per-pool limits,
//! and (4) flushes: appends each touched job's records in one call, all jobs
//! concurrently, and only then performs the "post-durable" effects (starting
//! attempts, arming timers, cancelling tokens, answering callers, publishing
//! events). Draining before flushing is what batches records: under load one
//! append carries many transitions.
//!
//! Hot-path costs per node are O(1) plus O(out-degree) for its successors:
//! no journal replay, no whole-graph scan, no lock held across an await.
//! The stuck-job sweep ([`sweep`]) runs once per heartbeat, off that path;
//! each job's ready nodes wait in a [`ready::ReadyQueue`], O(1) per node
//! when they become ready in dispatch order; attempts run on the scheduler's
//! [`crew::Crew`] of long-lived tasks, not on a task spawned per attempt.

mod crew;
mod ready;
mod sweep;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foldhash::{HashMap, HashMapExt};
use std::future::{poll_fn, Future};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::attempt::AttemptLimits;
use super::timers::Timers;
use super::BreakerStatus;
use super::{Activation, Batch, Command, ExecutorError, Shared};
use crate::breaker::{Admission, Breaker, Outcome, Transition};
use crate::classify::CompiledRules;
use crate::dag::Dag;
use crate::failure::{Failure, FailureClass};
use crate::flaky::{AttemptBudget, RunOutcome, TestOutcome};
use crate::journal::{Effect, Event, JobView, NodeView, Progress, Record};
use crate::retry::{seed_for, RetryContext, RetryPolicy, RetrySpec};
use crate::runner::{Heartbeat, JobContext, Runner};
use crate::state::{JobEffect, JobState, NodeEffect, NodeState, TriggerDecision, Upstream};
use crate::store::dead_letter::DeadLetterReason;
use crate::time::{JobId, Timestamp};
use crate::HumanDuration;
use crew::{Assignment, Crew};
use ready::ReadyQueue;

/// Most commands folded into one iteration, so a flood of them cannot delay
/// journaling (and thus dispatch) indefinitely. (Finished attempts are taken
/// all at once: there are at most as many as the concurrency limit.)
const MAX_DRAIN: usize = 4096;

/// A finished attempt, as reported by the crew member that ran it.
pub(crate) struct Finished {
    /// Who ran it (its index in the [`crew::Crew`]).
    member: usize,
    slot: usize,
    gen: u64,
    node: u32,
    attempt: u32,
    /// Whether this attempt ran the node's compensation.
    compensation: bool,
    /// The breaker that admitted the attempt, and whether as a trial.
    breaker: Option<(u32, bool)>,
    result: Result<Value, Failure>,
}

/// Finished attempts on their way to the scheduler. A queue of their own
/// rather than the command channel: a task reaches it through its job's
/// [`JobContext`], without a count of its own to take, and reporting is a
/// lock and a wake-up, where a send on the channel upgraded a weak sender,
/// counted a sender in and out and dropped it (each an atomic on a cache
/// line every attempt shares). The scheduler takes the whole queue at once.
#[derive(Default)]
pub(crate) struct Completions {
    queue: std::sync::Mutex<Queue>,
    /// Whether the queue may hold something: looked at without the lock, so
    /// that finding nothing (most looks, on a chain) is one load rather
    /// than a lock and an unlock of a mutex another thread last held.
    queued: std::sync::atomic::AtomicBool,
}

/// The sending side of the scheduler's command channel. Every send also
/// rings the [`Completions`] queue, so the scheduler waits on that one
/// waker: registering with the channel's receiver as well cost two atomic
/// operations on every iteration, commands or not (on a chain, every
/// node), for commands that are rare next to finished attempts.
#[derive(Clone)]
pub(crate) struct CommandTx {
    tx: mpsc::UnboundedSender<Command>,
    bell: Arc<Completions>,
}

impl CommandTx {
    /// A channel whose sends ring `bell`.
    pub(crate) fn channel(bell: Arc<Completions>) -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, bell }, rx)
    }

    /// Sends `cmd`, unless the scheduler is gone.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), mpsc::error::SendError<Command>> {
        self.tx.send(cmd)?;
        self.bell.ring();
        Ok(())
    }

    /// A sender that does not keep the channel open.
    pub(crate) fn downgrade(&self) -> WeakCommandTx {
        WeakCommandTx {
            tx: self.tx.downgrade(),
            bell: Arc::clone(&self.bell),
        }
    }
}

/// A [`CommandTx`] that does not keep the channel open: the scheduler's
/// own background work and the keeper hold these, so that the channel
/// closes when the last executor handle is dropped.
#[derive(Clone)]
pub(crate) struct WeakCommandTx {
    tx: mpsc::WeakUnboundedSender<Command>,
    bell: Arc<Completions>,
}

impl WeakCommandTx {
    /// The sender, while the channel is open.
    pub(crate) fn upgrade(&self) -> Option<CommandTx> {
        Some(CommandTx {
            tx: self.tx.upgrade()?,
            bell: Arc::clone(&self.bell),
        })
    }
}

/// The reports, and the scheduler's waker, under one lock: a report and
/// the registration it must see are ordered by the lock itself, so neither
/// side needs the atomic handshake of an `AtomicWaker` on top of it (on a
/// chain, a handful of atomic operations per node).
#[derive(Default)]
struct Queue {
    finished: Vec<Finished>,
    /// A command was sent since the scheduler last looked.
    rung: bool,
    waker: Option<std::task::Waker>,
}

impl Completions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A push cannot panic half-way: the queue is always whole.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, finished: Finished) {
        self.wake_after(|queue| queue.finished.push(finished));
    }

    /// Tells the scheduler a command waits on its channel.
    fn ring(&self) {
        self.wake_after(|queue| queue.rung = true);
    }

    /// Makes the scheduler's next wait end at once: commands are left on
    /// the channel (the scheduler is the caller, so no wake-up).
    fn ring_again(&self) {
        self.lock().rung = true;
    }

    /// Changes the queue with `change`, then wakes the scheduler.
    fn wake_after(&self, change: impl FnOnce(&mut Queue)) {
        let waker = {
            let mut queue = self.lock();
            change(&mut queue);
            queue.waker.take()
        };
        // After the push: a take that sees the flag finds what was pushed.
        self.queued
            .store(true, std::sync::atomic::Ordering::Release);
        // Outside the lock: waking may take a while (another worker to
        // unpark), and the scheduler may be taking the queue meanwhile.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves what is queued to the end of `into`.
    fn take(&self, into: &mut Vec<Finished>) {
        use std::sync::atomic::Ordering;
        // A push whose flag is not seen yet wakes the scheduler after
        // setting it, so it is taken on the next look.
        if !self.queued.load(Ordering::Acquire) {
            return;
        }
        self.take_locked(&mut self.lock(), into);
    }

    /// Takes the queue under `queue`'s lock.
    fn take_locked(&self, queue: &mut Queue, into: &mut Vec<Finished>) {
        // Cleared under the lock: a push that lands after this take sets it
        // again (one that landed before is taken now, its flag perhaps set
        // after this, which only costs the next look a lock).
        self.queued
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if into.is_empty() {
            // Swapped, not copied: both buffers keep their capacity.
            std::mem::swap(&mut queue.finished, into);
        } else {
            into.append(&mut queue.finished);
        }
    }

    /// Ready once something was moved into `into`, or a command was sent.
    /// Registers the waker either way: the scheduler may next wait without
    /// looking here (its yield before waiting), and the next report must
    /// still wake it.
    fn poll_take(
        &self,
        cx: &mut std::task::Context<'_>,
        into: &mut Vec<Finished>,
    ) -> std::task::Poll<()> {
        let mut queue = self.lock();
        keep_waker(&mut queue.waker, cx.waker());
        // Cleared only here, where the scheduler then drains the channel:
        // a command sent after that drain rings again.
        let rung = std::mem::take(&mut queue.rung);
        self.take_locked(&mut queue, into);
        drop(queue);
        if into.is_empty() && !rung {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

/// Leaves `waker` in `slot` for the next hand-off to wake, cloning it only
/// if the slot holds none or another task's (a hand-off takes it out).
fn keep_waker(slot: &mut Option<std::task::Waker>, waker: &std::task::Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// Timers the scheduler arms.
#[derive(Clone, Copy, Debug)]
enum Timer {
    Retry {
        slot: usize,
        gen: u64,
        node: u32,
        attempt: u32,
    },
    JobTimeout {
        slot: usize,
        gen: u64,
    },
    StoreRetry {
        slot: usize,
        gen: u64,
    },
    CompensationRetry {
        slot: usize,
        gen: u64,
        node: u32,
        attempt: u32,
    },
    /// An open breaker's time is up.
    Breaker {
        index: u32,
        transitions: u64,
    },
}

/// Effects performed only once the records that caused them are durable.
enum Post {
    Spawn {
        node: u32,
        attempt: u32,
        compensation: bool,
    },
    Retry {
        node: u32,
        attempt: u32,
        delay: Duration,
    },
    CompensationRetry {
        node: u32,
        attempt: u32,
        delay: Duration,
    },
    CancelAttempts,
    /// Records the finished nodes' outcomes in the test history, then
    /// reports back ([`Command::HistoryRecorded`]) so the job can finish.
    RecordHistory,
    /// Answers a caller, once what it is told is durable.
    Reply(
        oneshot::Sender<Result<(), ExecutorError>>,
        Result<(), ExecutorError>,
    ),
    Finish,
    /// Writes the job's dead-letter entries from its journal (their
    /// `node.dead_lettered` records are durable now).
    StoreDeadLetters,
}

/// Runs `fut`, and says whether it had to wait: whether it was not done on
/// its first poll.
async fn waiting<F: Future>(fut: F) -> (F::Output, bool) {
    let mut fut = std::pin::pin!(fut);
    let mut waited = false;
    let output = poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        waited |= poll.is_pending();
        poll
    })
    .await;
    (output, waited)
}

/// Appends one job's batch at its durable version.
async fn append(
    store: &dyn crate::store::Store,
    jobs: &[Option<ActiveJob>],
    batch: &Append,
) -> Result<u64, crate::store::StoreError> {
    match jobs[batch.slot].as_ref() {
        Some(job) => {
            store
                .append(
                    job.id(),
                    job.durable,
                    &batch.records,
                    &batch.progress,
                    job.fence,
                )
                .await
        }
        None => Err(crate::store::StoreError::Invalid("job vanished".into())),
    }
}

/// One job's append in a flush.
struct Append {
    slot: usize,
    /// Whether this re-appends a batch that failed before.
    replay: bool,
    progress: Progress,
    records: Vec<Record>,
}

/// A batch whose append failed, kept to be re-appended exactly as it was.
struct FailedAppend {
    records: Vec<Record>,
    post: Vec<Post>,
    progress: Progress,
}

/// A ready node's dispatch order: node priority, then critical-path length,
/// then spec order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyNode {
    priority: i32,
    critical: u32,
    node: Reverse<u32>,
    /// Whether the node is ready to run its compensation (during a rollback).
    compensation: bool,
}

/// A job with dispatchable nodes: job priority first, then round-robin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyJob {
    priority: i32,
    turn: Reverse<u64>,
    slot: usize,
    gen: u64,
}

struct Pool {
    limit: u32,
    running: u32,
    parked: BinaryHeap<ReadyNode>,
}

/// Everything the scheduler knows about one active job.
struct ActiveJob {
    gen: u64,
    view: JobView,
    /// What taking this job back is, for `recovery.initiated`: a restart's
    /// resume on an exclusive store, a takeover on a shared one.
    resume_kind: crate::recovery::RecoveryKind,
    dag: Arc<Dag>,
    default_policy: Arc<dyn RetryPolicy>,
    node_policies: HashMap<u32, Arc<dyn RetryPolicy>>,
    upstream: Vec<Upstream>,
    /// Nodes whose trigger decision is taken (queued in `scratch`, or the
    /// node is in `fresh`) but not yet journaled: another upstream's
    /// cascade must not take a second one.
    decided: Vec<bool>,
    ready: ReadyQueue<ReadyNode>,
    /// Nodes made ready this iteration, queued in `ready` but not yet
    /// journaled as such (see [`ActiveJob::announce_ready`]).
    fresh: Vec<u32>,
    /// Set while `fresh` nodes are journaled as ready: they are queued
    /// already.
    announcing: bool,
    pools: Vec<Pool>,
    /// Per node, what dispatching it needs of its spec (see [`HotNode`]).
    hot: Vec<HotNode>,
    running: u32,
    max_concurrency: u32,
    in_heap: bool,
    /// Records not yet handed to the store, and the effects they cause.
    pending: Vec<Record>,
    post: Vec<Post>,
    /// A batch whose append failed: retried alone, exactly as it was, so an
    /// append that did land is recognised as an idempotent replay.
    failed: Option<FailedAppend>,
    durable: u64,
    /// The fencing token of this executor's lease on the job.
    fence: u64,
    /// Its lease's expiry, kept current by the lease table.
    lease: super::keeper::LeaseGauge,
    stalled: bool,
    store_failures: u32,
    /// When the journal last took a record of the job (or the job became
    /// active here): the start of its quiet time for the stuck-job sweep.
    durable_at: Timestamp,
    /// When its appends began failing (meaningful while `store_failures`
    /// is not 0).
    failing_since: Timestamp,
    /// When the job's timeout fires, if its timer is armed.
    timeout_at: Option<Timestamp>,
    /// The version at which it was last reported stuck: not again until
    /// something is journaled after that report.
    stuck: Option<u64>,
    finishing: bool,
    /// Whether this run's test outcomes are in the history store (recorded
    /// before the final record, so a crash in between records them again,
    /// idempotently, when recovery finishes the job).
    history_recorded: bool,
    /// Cancellations asked while the history was being recorded: answered
    /// with the final state once it is durable.
    cancel_waiters: Vec<oneshot::Sender<Result<(), ExecutorError>>>,
    last_snapshot: u64,
    waiters: Vec<oneshot::Sender<JobView>>,
    scratch: Vec<Event>,
    /// During a rollback: per node, how many of its successors still have
    /// to finish compensating (a node compensates after everything that ran
    /// after it); whether the node is already dealt with; and how many
    /// succeeded nodes are not yet dealt with.
    comp_pending: Vec<u32>,
    comp_done: Vec<bool>,
    comp_outstanding: u32,
    comp_policies: HashMap<u32, Arc<dyn RetryPolicy>>,
    /// Classification rules: the job's default and nodes' overrides.
    job_rules: Option<Arc<CompiledRules>>,
    node_rules: HashMap<u32, Arc<CompiledRules>>,
    /// Per node, the index of its breaker in [`Scheduler::breakers`]
    /// (`NO_BREAKER` for none); empty when no node has one.
    node_breaker: Vec<u32>,
    /// Breaker admissions of nodes dispatched but not yet spawned.
    admitted: HashMap<u32, (u32, bool)>,
    /// Dead-letter writes asked for and not yet done: the job does not
    /// finish before they are, so a crash leaves it unfinished and
    /// recovery writes them again.
    dlq_unwritten: u32,
    /// The job's node types ([`HotNode::runner`] indexes them). Their
    /// runners are looked up in the registry once per type rather than
    /// under its lock on every attempt, and kept in `attempts.runners`
    /// once found (a type may be registered late, e.g. after a restart
    /// with a smaller registry).
    kinds: Vec<Box<str>>,
    /// What every attempt of the job shares (id, spec, runners, and the
    /// job's cancellation token, which stops all its attempts).
    attempts: Arc<JobContext>,
}

/// What the hot path needs of one node's spec, packed. A `NodeSpec` is
/// hundreds of bytes with heap strings; on a job of 100,000 nodes that no
/// cache holds, reading it at every step of every node (trigger, priority,
/// pool, type) costs more in cache misses than the scheduling itself.
#[derive(Clone, Copy, Debug)]
struct HotNode {
    priority: i32,
    critical: u32,
    /// Index in [`ActiveJob::pools`], or [`NO_POOL`].
    pool: u32,
    /// Index in [`ActiveJob::kinds`] of the node's type.
    runner: u32,
    trigger: crate::spec::TriggerRule,
    /// Whether the node has a timeout or a heartbeat timeout (its attempts
    /// then read them from the spec).
    limited: bool,
    /// Whether the node is a test, whose outcome goes into the history.
    test: bool,
}

/// The node runs in no pool.
const NO_POOL: u32 = u32::MAX;

impl HotNode {
    /// The index of the node's pool in [`ActiveJob::pools`], if it has one.
    fn pool(&self) -> Option<usize> {
        (self.pool != NO_POOL).then_some(self.pool as usize)
    }
}

/// What activating a job reads of each node's spec, in one pass (a
/// `NodeSpec` is hundreds of bytes: on a large job every pass over them is
/// a pass over memory no cache holds). Made by [`Activation::new`], on the
/// task that asks for the activation, not on the scheduler's.
pub(crate) struct NodeScan {
    /// Per node, its [`HotNode`].
    hot: Vec<HotNode>,
    /// The job's node types, for [`ActiveJob::kinds`].
    kinds: Vec<Box<str>>,
    /// The nodes with a retry policy, stored policy, classification rules
    /// or compensation of their own: the only ones the per-node policy and
    /// rule tables need to look at.
    special: Vec<u32>,
    /// How many nodes are tests: with none, the job records no history and
    /// its end skips the pass over every node that would look for them.
    tests: usize,
}

impl NodeScan {
    /// Scans `spec`'s nodes once.
    pub(crate) fn new(spec: &crate::JobSpec, dag: &Dag) -> Self {
        let pools: HashMap<&str, u32> = spec
            .pools
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i as u32))
            .collect();
        let mut special = Vec::new();
        let mut kinds: Vec<Box<str>> = Vec::new();
        let mut kind_index: HashMap<&str, u32> = HashMap::new();
        let mut last: Option<(&str, u32)> = None;
        let mut tests = 0;
        let hot = spec
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                // Neighbouring nodes mostly share a type: skip the hash then.
                let runner = match last {
                    Some((kind, index)) if kind == n.kind => index,
                    _ => {
                        let next = kinds.len() as u32;
                        let index = *kind_index.entry(n.kind.as_str()).or_insert_with(|| {
                            kinds.push(n.kind.as_str().into());
                            next
                        });
                        last = Some((n.kind.as_str(), index));
                        index
                    }
                };
                if n.retry.is_some()
                    || n.policy.is_some()
                    || n.classify.is_some()
                    || n.compensate.is_some()
                {
                    special.push(i as u32);
                }
                let test = is_test(n);
                tests += usize::from(test);
                HotNode {
                    priority: n.priority,
                    critical: dag.critical_path_len(i as u32),
                    pool: n
                        .pool
                        .as_deref()
                        .and_then(|p| pools.get(p).copied())
                        .unwrap_or(NO_POOL),
                    runner,
                    trigger: n.trigger,
                    limited: n.timeout.is_some() || n.heartbeat_timeout.is_some(),
                    test,
                }
            })
            .collect();
        NodeScan {
            hot,
            kinds,
            special,
            tests,
        }
    }
}

/// No breaker gates the node.
const NO_BREAKER: u32 = u32::MAX;

/// One dependency's breaker and the nodes waiting on it.
struct BreakerEntry {
    name: String,
    breaker: Breaker,
    /// Ready nodes held back while the breaker is open (or half-open with
    /// every trial taken): job slot, generation, node.
    parked: Vec<(usize, u64, ReadyNode)>,
    /// Jobs (slot, generation) with nodes gated by this breaker: a
    /// transition is journaled in each of them.
    users: Vec<(usize, u64)>,
}

impl ActiveJob {
    fn id(&self) -> &JobId {
        self.view.id()
    }

    fn breaker_of(&self, node: u32) -> Option<u32> {
        self.node_breaker
            .get(node as usize)
            .copied()
            .filter(|&b| b != NO_BREAKER)
    }

    /// Applies the node's classification rules to a failed attempt (and
    /// drops the runner's evidence either way).
    fn classify(&self, node: u32, mut failure: Failure) -> Failure {
        match self.node_rules.get(&node).or(self.job_rules.as_ref()) {
            Some(rules) => rules.apply(failure),
            None => {
                failure.evidence = None;
                failure
            }
        }
    }

    fn policy(&self, node: u32) -> &Arc<dyn RetryPolicy> {
        self.node_policies
            .get(&node)
            .unwrap_or(&self.default_policy)
    }

    fn dispatchable(&self) -> bool {
        matches!(self.view.state, JobState::Running | JobState::RollingBack)
            && !self.stalled
            && !self.finishing
    }

    fn wants_slot(&self) -> bool {
        self.dispatchable() && !self.ready.is_empty() && self.running < self.max_concurrency
    }

    fn ready_node(&self, node: u32) -> ReadyNode {
        let hot = &self.hot[node as usize];
        ReadyNode {
            priority: hot.priority,
            critical: hot.critical,
            node: Reverse(node),
            compensation: false,
        }
    }

    /// Appends `event` and everything it implies (downstream decisions,
    /// cancellations), applying each to the view as it goes. Pre-durable
    /// effects happen here; post-durable ones are queued in `post`.
    fn emit(&mut self, now: Timestamp, event: Event) {
        self.scratch.push(event);
        while let Some(event) = self.scratch.pop() {
            let record = Record {
                seq: self.view.version + 1,
                at: now,
                event,
            };
            let effect = match self.view.apply(&record) {
                Ok(effect) => effect,
                Err(e) => {
                    // The scheduler only emits transitions the view allows; a
                    // rejection is a bug. Refuse it rather than journal it.
                    tracing::error!(job = %self.id(), error = %e, "scheduler produced an invalid transition; dropped");
                    debug_assert!(false, "invalid transition: {e}");
                    continue;
                }
            };
            self.react(effect);
            // Pushed last, so it is journaled right after its cause.
            if let Some(next) = crate::recovery::follow_up(&self.view, &record, self.resume_kind) {
                self.scratch.push(next);
            }
            self.pending.push(record);
        }
    }

    fn react(&mut self, effect: Effect) {
        match effect {
            Effect::None | Effect::Job(JobEffect::None) | Effect::Node(_, NodeEffect::None) => {}
            Effect::Node(_, NodeEffect::Enqueue) if self.announcing => {}
            Effect::Node(node, NodeEffect::Enqueue) => {
                let r = self.ready_node(node);
                self.ready.push(r);
            }
            Effect::Node(node, NodeEffect::RunAttempt) => {
                let attempt = self.view.nodes[node as usize].machine.attempts;
                self.post.push(Post::Spawn {
                    node,
                    attempt,
                    compensation: false,
                });
            }
            Effect::Node(node, NodeEffect::RunCompensation) => {
                let attempt = self.view.nodes[node as usize].compensation_attempts;
                self.post.push(Post::Spawn {
                    node,
                    attempt,
                    compensation: true,
                });
            }
            Effect::Node(node, NodeEffect::ReleaseUpstream) => self.compensated(node),
            Effect::Node(node, NodeEffect::DeadLetter) => {
                let id = &self.view.spec().nodes()[node as usize].id;
                self.scratch.push(Event::EscalationRequired {
                    node: Some(node),
                    cause: Some(crate::recovery::EscalationCause::CompensationDeadLettered),
                    reason: format!(
                        "the compensation of node {id:?} kept failing; it is dead-lettered and the rollback is incomplete"
                    ),
                });
                self.scratch.push(Event::DeadLettered {
                    node,
                    reason: DeadLetterReason::CompensationFailed,
                });
                self.dead_lettered();
                self.compensated(node);
            }
            Effect::Job(JobEffect::RollBack) => self.start_rollback(),
            Effect::Node(node, NodeEffect::ScheduleRetry(delay)) => {
                let attempt = self.view.nodes[node as usize].machine.attempts;
                self.post.push(Post::Retry {
                    node,
                    attempt,
                    delay,
                });
            }
            Effect::Node(node, NodeEffect::ReleaseDownstream) => {
                self.release_downstream(node);
                self.dead_letter_if_final(node);
            }
            Effect::Job(JobEffect::Dispatch) => self.evaluate_pending(),
            Effect::Job(JobEffect::StopRunning) => {
                self.ready.clear();
                for pool in &mut self.pools {
                    pool.parked.clear();
                }
                for i in 0..self.view.nodes.len() as u32 {
                    if matches!(
                        self.view.nodes[i as usize].state(),
                        NodeState::Pending | NodeState::Ready | NodeState::RetryWaiting
                    ) {
                        self.scratch.push(Event::NodeCancelled { node: i });
                    }
                }
                self.post.push(Post::CancelAttempts);
            }
            Effect::Job(JobEffect::Finished) => self.post.push(Post::Finish),
        }
    }

    /// Journals `node` into the dead-letter queue (with an escalation) when
    /// it failed for good while the job was running: retries exhausted, or
    /// a class its policy never retries. Failures of a job being cancelled
    /// or timing out are not dead letters.
    fn dead_letter_if_final(&mut self, node: u32) {
        let view = &self.view.nodes[node as usize];
        if !matches!(view.state(), NodeState::Failed | NodeState::TimedOut)
            || !matches!(self.view.state, JobState::Running | JobState::Recovering)
        {
            return;
        }
        let Some(class) = view.last_error.as_ref().map(|f| f.class) else {
            return;
        };
        let reason =
            super::dead_letters::reason(self.policy(node).as_ref(), self.id(), node, class);
        let id = &self.view.spec().nodes()[node as usize].id;
        self.scratch.push(crate::recovery::dead_letter_escalation(
            node,
            id,
            &format!("it failed for good ({reason})"),
        ));
        self.scratch.push(Event::DeadLettered { node, reason });
        self.dead_lettered();
    }

    /// Asks for the job's dead-letter entries to be written once the
    /// records queued now are durable.
    fn dead_lettered(&mut self) {
        self.dlq_unwritten += 1;
        self.post.push(Post::StoreDeadLetters);
    }

    /// Counts `node`'s outcome in each successor and applies any trigger
    /// decision that becomes possible.
    fn release_downstream(&mut self, node: u32) {
        // A quarantined failure counts as success downstream.
        let state = self.view.nodes[node as usize].downstream_state();
        let deciding = matches!(self.view.state, JobState::Running | JobState::Recovering);
        // By index: cloning the `Arc` to iterate costs two atomic operations
        // per finished node.
        for k in 0..self.dag.successors(node).len() {
            let s = self.dag.successors(node)[k];
            self.upstream[s as usize].record(state);
            if deciding && self.view.nodes[s as usize].state() == NodeState::Pending {
                self.decide(s);
            }
        }
    }

    fn decide(&mut self, node: u32) {
        if self.decided[node as usize] {
            return;
        }
        let rule = self.hot[node as usize].trigger;
        let event = match rule.decide(self.upstream[node as usize]) {
            TriggerDecision::Wait => return,
            TriggerDecision::Run => {
                // Queued now, journaled at the end of the iteration only if
                // it did not start in it (`announce_ready`).
                self.decided[node as usize] = true;
                let r = self.ready_node(node);
                self.ready.push(r);
                self.fresh.push(node);
                return;
            }
            TriggerDecision::Skip => Event::NodeSkipped { node },
            TriggerDecision::UpstreamFailed => Event::NodeUpstreamFailed { node },
        };
        self.decided[node as usize] = true;
        self.scratch.push(event);
    }

    /// Journals `node.ready` for the nodes made ready this iteration that
    /// did not start in it: they wait (for a slot, a pool or a breaker), and
    /// the journal says so. A node that did start is journaled as started
    /// only, its readiness implied: one record fewer per node on the hot
    /// path, and recovery loses nothing, since it re-derives readiness from
    /// the upstream nodes' states. Runs after dispatch and before anything
    /// that expects a queued node to be `ready` (breaker unparking, flush).
    fn announce_ready(&mut self, now: Timestamp) {
        if self.fresh.is_empty() {
            return;
        }
        let mut fresh = std::mem::take(&mut self.fresh);
        self.announcing = true;
        for &node in &fresh {
            // Started, or cancelled with the job, meanwhile: nothing to say.
            if self.view.nodes[node as usize].state() == NodeState::Pending {
                self.emit(now, Event::NodeReady { node });
            }
        }
        self.announcing = false;
        fresh.clear();
        // Keep the buffer: steady-state dispatch allocates nothing.
        if self.fresh.is_empty() {
            self.fresh = fresh;
        }
    }

    /// Decides every pending node that can be decided (at start: roots and
    /// `always` nodes; after recovery: anything left undecided).
    fn evaluate_pending(&mut self) {
        let n = self.view.nodes.len();
        // At a job's start every node is pending, and the counts say so:
        // no need to read every node's view (on a large job, a pass over
        // memory no cache holds) to find out. Decisions are queued, not
        // applied, so no state changes during the loop.
        let all_pending = self.view.count(NodeState::Pending) as usize == n;
        for i in 0..n as u32 {
            if all_pending || self.view.nodes[i as usize].state() == NodeState::Pending {
                self.decide(i);
            }
        }
    }

    /// Emits the job's final record once every node is finished and no
    /// attempt is in flight.
    fn check_done(&mut self, now: Timestamp) {
        if self.finishing || self.running > 0 || self.dlq_unwritten > 0 {
            return;
        }
        let state = match self.view.state {
            JobState::RollingBack if self.comp_outstanding == 0 => self.view.outcome(),
            JobState::Running | JobState::Cancelling
                if self.view.finished_nodes() as usize == self.view.nodes.len() =>
            {
                if !self.history_recorded {
                    // Hold the job (no dispatch, no timeout) until the
                    // history write reports back.
                    self.finishing = true;
                    self.post.push(Post::RecordHistory);
                    return;
                }
                let outcome = self.view.outcome();
                if outcome == JobState::Failed
                    && self.view.spec().on_failure == crate::spec::OnFailure::Rollback
                {
                    // Undo what succeeded rather than leave a partial run.
                    self.emit(
                        now,
                        Event::RollbackStarted {
                            reason: Some("the job failed".into()),
                        },
                    );
                    return self.check_done(now);
                }
                outcome
            }
            _ => return,
        };
        self.finishing = true;
        self.emit(now, Event::Finished { state });
        if state == JobState::RollbackIncomplete {
            self.emit(
                now,
                Event::EscalationRequired {
                    node: None,
                    cause: Some(crate::recovery::EscalationCause::RollbackIncomplete),
                    reason: "the rollback is incomplete: a compensation was dead-lettered".into(),
                },
            );
        }
    }

    /// Starts (or, after a restart, resumes) a rollback: every succeeded
    /// node is compensated once every node that ran after it is, so
    /// compensations run in reverse dependency order, independent ones in
    /// parallel under the usual limits. Succeeded nodes without a
    /// compensation are dealt with at once.
    fn start_rollback(&mut self) {
        let n = self.view.nodes.len();
        let undone = |s: NodeState| matches!(s, NodeState::Succeeded | NodeState::Compensating);
        self.comp_pending = vec![0; n];
        self.comp_done = vec![false; n];
        self.comp_outstanding = 0;
        self.ready.clear();
        for i in 0..n as u32 {
            let state = self.view.nodes[i as usize].state();
            if undone(state) {
                self.comp_outstanding += 1;
            }
            // Compensations already under way continue by their own records
            // and timers.
            self.comp_done[i as usize] = state != NodeState::Succeeded;
            self.comp_pending[i as usize] = self
                .dag
                .successors(i)
                .iter()
                .filter(|&&s| undone(self.view.nodes[s as usize].state()))
                .count() as u32;
        }
        let mut work: Vec<u32> = (0..n as u32)
            .filter(|&i| !self.comp_done[i as usize] && self.comp_pending[i as usize] == 0)
            .collect();
        self.begin_compensations(&mut work);
    }

    /// Begins the compensation of each node in `work` (all with nothing left
    /// to wait for), following through nodes that have none.
    fn begin_compensations(&mut self, work: &mut Vec<u32>) {
        while let Some(i) = work.pop() {
            if std::mem::replace(&mut self.comp_done[i as usize], true) {
                continue;
            }
            if self.view.spec().nodes()[i as usize].compensate.is_some() {
                let mut r = self.ready_node(i);
                r.compensation = true;
                self.ready.push(r);
            } else {
                self.comp_outstanding -= 1;
                self.release_predecessors(i, work);
            }
        }
    }

    /// `node` is done compensating (compensated or dead-lettered).
    fn compensated(&mut self, node: u32) {
        if self.view.state != JobState::RollingBack || self.comp_pending.is_empty() {
            return;
        }
        self.comp_outstanding -= 1;
        let mut work = Vec::new();
        self.release_predecessors(node, &mut work);
        self.begin_compensations(&mut work);
    }

    fn release_predecessors(&mut self, node: u32, work: &mut Vec<u32>) {
        let dag = Arc::clone(&self.dag);
        for &p in dag.predecessors(node) {
            let pending = &mut self.comp_pending[p as usize];
            *pending = pending.saturating_sub(1);
            if *pending == 0 && !self.comp_done[p as usize] {
                work.push(p);
            }
        }
    }

    /// The retry decision for a failed compensation attempt: the node's
    /// `compensate.retry`, else the job's default policy.
    fn compensation_retry(&self, node: u32, attempt: u32, class: FailureClass) -> Option<Duration> {
        if class == FailureClass::Cancelled {
            return None;
        }
        let ctx = RetryContext {
            attempt,
            class,
            seed: seed_for(self.id(), node) ^ 0x636f_6d70,
            elapsed: Duration::ZERO,
        };
        self.comp_policies
            .get(&node)
            .unwrap_or(&self.default_policy)
            .next_delay(&ctx)
    }

    fn retry_delay(
        &self,
        node: u32,
        attempt: u32,
        class: FailureClass,
        now: Timestamp,
    ) -> Option<Duration> {
        if self.view.state != JobState::Running && self.view.state != JobState::Recovering {
            return None;
        }
        if class == FailureClass::Cancelled {
            return None;
        }
        let first = self.view.nodes[node as usize]
            .first_started_at
            .unwrap_or(now);
        // A requeued node's policy counts from its requeue.
        let base = self.view.nodes[node as usize].attempt_base;
        let ctx = RetryContext {
            attempt: attempt.saturating_sub(base).max(1),
            class,
            seed: seed_for(self.id(), node),
            elapsed: Duration::from_millis(now.saturating_since(first)),
        };
        let policy = self.policy(node);
        let delay = policy.next_delay(&ctx);
        match self.view.nodes[node as usize].attempt_budget {
            None => delay,
            Some(AttemptBudget::AtMost(n)) => delay.filter(|_| attempt < n.max(1)),
            // Extra attempts of a known-flaky test run at once, whatever
            // the class (cancelled aside, handled above).
            Some(AttemptBudget::Extra(n)) => delay.or_else(|| {
                (attempt < policy.max_attempts().saturating_add(n)).then_some(Duration::ZERO)
            }),
        }
    }
}

pub(crate) struct Scheduler {
    /// The tasks that run attempts. First, so that it is dropped first:
    /// dropping the scheduler aborts every attempt, as a crash would,
    /// before the jobs' waiters hear of anything.
    crew: Crew,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    jobs: Vec<Option<ActiveJob>>,
    free: Vec<usize>,
    by_id: HashMap<JobId, usize>,
    next_gen: u64,
    turn: u64,
    /// For the scheduler's own background work (history and dead-letter
    /// writes) to report back on the command channel: a weak sender, so
    /// the channel still closes when the last executor handle is dropped.
    /// (Attempts report through [`Completions`].)
    done_tx: WeakCommandTx,
    /// Where attempts report, and what was taken from there but not yet
    /// folded in.
    completions: Arc<Completions>,
    finished: Vec<Finished>,
    /// Wall-clock time read once per loop iteration: every record of an
    /// iteration carries the same timestamp anyway.
    now: Timestamp,
    /// Whether this iteration waited (for the store) since `now` was read,
    /// so that `now` may be well behind the clock.
    now_stale: bool,
    /// The engine's default retry policy, compiled once.
    default_policy: Arc<dyn RetryPolicy>,
    timers: Timers<Timer>,
    job_heap: BinaryHeap<ReadyJob>,
    running: usize,
    dirty: Vec<usize>,
    dirty_spare: Vec<usize>,
    idle: Vec<usize>,
    batches: Vec<Append>,
    /// Circuit breakers by dependency, shared by every job of this process.
    breakers: Vec<BreakerEntry>,
    breaker_index: HashMap<String, u32>,
    /// Transitions made this iteration, journaled at its end.
    breaker_transitions: Vec<(u32, Transition)>,
    /// The keeper asked for a sweep: done after this iteration's dispatch,
    /// when every job's state is settled.
    sweep_due: bool,
}

enum Wake {
    /// Attempts finished (they are in [`Scheduler::finished`]), or
    /// commands wait on the channel, or both.
    Inbox,
    Timer(Timer),
}

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Command>,
        done_tx: WeakCommandTx,
    ) -> Self {
        let default_policy = RetrySpec::default()
            .compile(&shared.config.retry, &shared.policies)
            .unwrap_or_else(|_| Arc::new(NoRetry));
        Self {
            shared,
            rx,
            jobs: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            next_gen: 1,
            turn: 0,
            completions: Arc::clone(&done_tx.bell),
            done_tx,
            finished: Vec::new(),
            crew: Crew::default(),
            now: Timestamp::default(),
            now_stale: false,
            default_policy,
            timers: Timers::new(),
            job_heap: BinaryHeap::new(),
            running: 0,
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            idle: Vec::new(),
            batches: Vec::new(),
            breakers: Vec::new(),
            breaker_index: HashMap::new(),
            breaker_transitions: Vec::new(),
            sweep_due: false,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.running > 0 && self.rx.is_empty() {
                // Attempts are in flight, most likely just spawned on this
                // worker: let them run before waiting (a yielded task runs
                // again once the worker's queue is empty), so that their
                // completions are here when the wait begins instead of
                // waking this task one by one. Saves a wake-up per node on
                // a chain, where it would otherwise ping-pong with each
                // attempt (and every few hops pull in another worker).
                tokio::task::yield_now().await;
            }
            let wake = tokio::select! {
                biased;
                () = poll_fn(|cx| self.completions.poll_take(cx, &mut self.finished)) => Wake::Inbox,
                t = poll_fn(|cx| self.timers.poll_due(cx)), if !self.timers.is_empty() => Wake::Timer(t),
            };
            if !self.finished.is_empty() && self.running > 1 {
                // Other attempts are in flight: let those already runnable
                // on this thread finish first (a yielded task runs again
                // only once the thread's queue is empty), so their
                // completions are folded into this iteration and journaled
                // in one append, not one iteration and one append each.
                tokio::task::yield_now().await;
            }
            self.now = self.shared.clock.now();
            self.now_stale = false;
            if let Wake::Timer(t) = wake {
                self.timer(t);
            }
            let mut drained = 0;
            while drained < MAX_DRAIN {
                match self.rx.try_recv() {
                    Ok(c) => self.command(c),
                    // The last executor handle is gone (which aborts this
                    // task anyway).
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
                drained += 1;
            }
            if drained == MAX_DRAIN {
                self.completions.ring_again();
            }
            self.completions.take(&mut self.finished);
            self.joined_all();
            self.dispatch();
            if std::mem::take(&mut self.sweep_due) {
                self.sweep();
                // Once per heartbeat period, like the sweep.
                self.crew.trim();
            }
            self.journal_breakers();
            self.flush().await;
            // A replayed batch may leave newer records pending: journal them
            // now, not at the next unrelated wake-up.
            while !self.dirty.is_empty() {
                self.dispatch();
                self.journal_breakers();
                self.flush().await;
            }
        }
    }

    fn job(&mut self, slot: usize, gen: u64) -> Option<&mut ActiveJob> {
        self.jobs.get_mut(slot)?.as_mut().filter(|j| j.gen == gen)
    }

    fn mark(&mut self, slot: usize) {
        self.dirty.push(slot);
        self.requeue(slot);
    }

    /// Puts the job in the dispatch heap if it can use a slot.
    fn requeue(&mut self, slot: usize) {
        let Some(job) = self.jobs[slot].as_mut() else {
            return;
        };
        if !job.in_heap && job.wants_slot() {
            job.in_heap = true;
            self.turn += 1;
            self.job_heap.push(ReadyJob {
                priority: job.view.spec().priority,
                turn: Reverse(self.turn),
                slot,
                gen: job.gen,
            });
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::HistoryRecorded { slot, gen } => self.history_recorded(slot, gen),
            Command::Activate(a) => self.activate(*a),
            Command::Cancel { job, reason, reply } => {
                let Some(&slot) = self.by_id.get(&job) else {
                    let _ = reply.send(Err(ExecutorError::NotFound(job)));
                    return;
                };
                let now = self.now;
                let Some(j) = self.jobs[slot].as_mut() else {
                    return;
                };
                match j.view.state {
                    JobState::RollingBack => {
                        // Stopping a rollback halfway would leave the system
                        // neither done nor undone.
                        let _ = reply.send(Err(ExecutorError::Busy {
                            job,
                            state: JobState::RollingBack,
                        }));
                        return;
                    }
                    JobState::Cancelling => {
                        // Answer after whatever is pending is durable.
                        j.post.push(Post::Reply(reply, Ok(())));
                    }
                    _ if j.finishing && !j.history_recorded => {
                        // Every node is done; the final state is not known
                        // yet (the history is being written first).
                        j.cancel_waiters.push(reply);
                        return;
                    }
                    _ if j.finishing => {
                        // The final record may not be durable yet: a crash
                        // now would let recovery finish the job differently,
                        // so the answer waits for it like everything else.
                        let state = j.view.state;
                        j.post.push(Post::Reply(
                            reply,
                            Err(ExecutorError::AlreadyFinished { job, state }),
                        ));
                    }
                    _ => {
                        j.emit(now, Event::CancelRequested { reason });
                        j.post.push(Post::Reply(reply, Ok(())));
                        j.check_done(now);
                    }
                }
                self.mark(slot);
            }
            Command::Wait { job, reply } => {
                let rx = self.by_id.get(&job).and_then(|&slot| {
                    let j = self.jobs[slot].as_mut()?;
                    let (tx, rx) = oneshot::channel();
                    j.waiters.push(tx);
                    Some(rx)
                });
                let _ = reply.send(rx);
            }
            Command::Lost { job } => {
                if let Some(&slot) = self.by_id.get(&job) {
                    tracing::warn!(%job, "lease lost; dropping the job here, its new owner recovers it");
                    self.release(slot);
                }
            }
            Command::Breakers { reply } => {
                let now = self.now;
                let out = self
                    .breakers
                    .iter()
                    .map(|e| {
                        let (calls, failures) = e.breaker.window(now);
                        BreakerStatus {
                            dependency: e.name.clone(),
                            state: e.breaker.state(),
                            calls,
                            failures,
                            open_until: e.breaker.open_until(),
                            trials_in_flight: e.breaker.trials_in_flight(),
                            waiting: e.parked.len(),
                            transitions: e.breaker.transitions(),
                            config: e.breaker.config().spec().clone(),
                        }
                    })
                    .collect();
                let _ = reply.send(out);
            }
            Command::Active { reply } => {
                let mut ids: Vec<JobId> = self.by_id.keys().cloned().collect();
                ids.sort_unstable();
                let _ = reply.send(ids);
            }
            Command::DeadLettersStored { slot, gen } => {
                let now = self.now;
                if let Some(job) = self.job(slot, gen) {
                    job.dlq_unwritten = job.dlq_unwritten.saturating_sub(1);
                    job.check_done(now);
                    self.mark(slot);
                }
            }
            Command::Sweep { reply } => {
                let _ = reply.send(tokio::time::Instant::now());
                self.sweep_due = true;
            }
            Command::Journal { job, event, reply } => {
                let Some(&slot) = self.by_id.get(&job) else {
                    let _ = reply.send(Err(ExecutorError::NotFound(job)));
                    return;
                };
                let now = self.now;
                let Some(j) = self.jobs[slot].as_mut() else {
                    return;
                };
                if j.finishing {
                    let state = j.view.state;
                    let _ = reply.send(Err(ExecutorError::Busy { job, state }));
                    return;
                }
                j.emit(now, event);
                j.post.push(Post::Reply(reply, Ok(())));
                self.mark(slot);
            }
        }
    }

    fn activate(&mut self, a: Activation) {
        let Activation {
            view,
            dag,
            scan,
            recovering,
            fence,
            policies,
        } = a;
        // Terminal jobs are never activated (a rollback request journals
        // `rolling_back` first).
        if self.by_id.contains_key(view.id()) || view.state.is_terminal() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let spec = Arc::clone(view.spec());
        let compile = |r: Option<&RetrySpec>| -> Arc<dyn RetryPolicy> {
            let default_spec = RetrySpec::default();
            let spec = r.unwrap_or(&default_spec);
            spec.compile(&shared.config.retry, &policies).unwrap_or_else(|e| {
                tracing::warn!(job = %view.id(), error = %e, "retry policy no longer compiles; falling back to the default");
                RetrySpec::default()
                    .compile(&shared.config.retry, &shared.policies)
                    .unwrap_or_else(|_| Arc::new(NoRetry))
            })
        };
        // Most jobs use the engine's default policy: share one compiled copy.
        let job_policy = spec.policy.as_deref().and_then(|r| policies.stored_str(r));
        let default_policy = match spec.retry.as_ref().or(job_policy.map(|p| &p.retry)) {
            None => Arc::clone(&self.default_policy),
            Some(r) => compile(Some(r)),
        };
        let NodeScan {
            hot,
            kinds,
            special,
            tests,
        } = scan;
        let node_policies = special
            .iter()
            .map(|&i| (i, &spec.nodes()[i as usize]))
            .filter(|(_, n)| n.retry.is_some() || n.policy.is_some())
            .map(|(i, _)| {
                let (retry, _) = crate::policy::effective(&spec, i as usize, &policies);
                (i, compile(retry))
            })
            .collect();
        let (job_rules, node_rules) = compile_rules(&spec, &special, &policies, view.id());
        let comp_policies = special
            .iter()
            .filter_map(|&i| {
                let retry = spec.nodes()[i as usize]
                    .compensate
                    .as_ref()?
                    .retry
                    .as_ref()?;
                Some((i, compile(Some(retry))))
            })
            .collect();
        let pools = spec
            .pools
            .values()
            .map(|&limit| Pool {
                limit,
                running: 0,
                parked: BinaryHeap::new(),
            })
            .collect();

        // Rebuild the upstream counters from the folded states.
        let n = view.nodes.len();
        let mut upstream: Vec<Upstream> = (0..n as u32)
            .map(|i| Upstream {
                total: dag.indegree(i),
                ..Upstream::default()
            })
            .collect();
        // (Nodes may be finished in a job never run here before: carried
        // over from an earlier run, or finished before a restart. The view's
        // counts say how many, so the scan stops at the last one, and a job
        // that finished none is not scanned at all.)
        let finished = (0..n as u32).filter(|&i| view.nodes[i as usize].state().is_finished());
        for i in finished.take(view.finished_nodes() as usize) {
            let state = view.nodes[i as usize].downstream_state();
            for &s in dag.successors(i) {
                upstream[s as usize].record(state);
            }
        }

        let slot = self.free.pop().unwrap_or_else(|| {
            self.jobs.push(None);
            self.jobs.len() - 1
        });
        let gen = self.next_gen;
        self.next_gen += 1;
        let job_timeout = spec
            .timeout
            .map_or(self.shared.config.job_timeout, HumanDuration::get);
        let durable = view.version;
        let mut job = ActiveJob {
            gen,
            resume_kind: if self.shared.store.exclusive() {
                crate::recovery::RecoveryKind::RestartResume
            } else {
                crate::recovery::RecoveryKind::Takeover
            },
            dag,
            default_policy,
            node_policies,
            upstream,
            decided: vec![false; n],
            ready: ReadyQueue::default(),
            fresh: Vec::new(),
            announcing: false,
            pools,
            hot,
            running: 0,
            max_concurrency: spec.max_concurrency.unwrap_or(u32::MAX),
            in_heap: false,
            pending: Vec::new(),
            post: Vec::new(),
            failed: None,
            durable,
            fence,
            lease: super::keeper::LeaseGauge::default(),
            stalled: false,
            store_failures: 0,
            durable_at: self.now,
            failing_since: self.now,
            timeout_at: None,
            stuck: None,
            finishing: false,
            history_recorded: self.shared.config.flaky.keep == 0 || tests == 0,
            cancel_waiters: Vec::new(),
            last_snapshot: durable,
            waiters: Vec::new(),
            scratch: Vec::new(),
            comp_pending: Vec::new(),
            comp_done: Vec::new(),
            comp_outstanding: 0,
            comp_policies,
            job_rules,
            node_rules,
            node_breaker: Vec::new(),
            admitted: HashMap::new(),
            dlq_unwritten: 0,
            attempts: Arc::new(JobContext {
                job_id: view.id().clone(),
                spec: Arc::clone(&spec),
                cancel: Arc::new(CancellationToken::new()),
                runners: kinds.iter().map(|_| OnceLock::new()).collect(),
                done: Arc::clone(&self.completions),
            }),
            kinds,
            view,
        };
        self.attach_breakers(&mut job, slot, gen);
        let now = self.now;
        let mut timeout_in = Some(job_timeout);
        let never_ran = matches!(job.view.state, JobState::Pending | JobState::Queued);
        match job.view.state {
            JobState::Pending => {
                job.emit(now, Event::Queued);
                job.emit(now, Event::Started);
            }
            JobState::Queued => job.emit(now, Event::Started),
            // Reopened by a dead-letter requeue: its nodes are consistent,
            // so it needs no recovery records, only its ready and pending
            // nodes set in motion again.
            JobState::Running if !recovering => {
                if let Some(started) = job.view.started_at {
                    let spent = Duration::from_millis(now.saturating_since(started));
                    timeout_in = Some(job_timeout.saturating_sub(spent));
                }
                self.recover_nodes(&mut job, now);
            }
            // A rollback requested for a finished job.
            JobState::RollingBack if !recovering => {
                timeout_in = None;
                job.start_rollback();
            }
            JobState::RollingBack => {
                timeout_in = None;
                job.emit(now, Event::RecoveryStarted);
                self.recover_nodes(&mut job, now);
                // Its effect restarts the rollback from the recovered states.
                job.emit(now, Event::RecoveryFinished);
            }
            JobState::Running | JobState::Recovering | JobState::Cancelling => {
                if let Some(started) = job.view.started_at {
                    let spent = Duration::from_millis(now.saturating_since(started));
                    timeout_in = Some(job_timeout.saturating_sub(spent));
                }
                if job.view.state != JobState::Recovering {
                    job.emit(now, Event::RecoveryStarted);
                }
                self.recover_nodes(&mut job, now);
                job.emit(now, Event::RecoveryFinished);
                if job.view.state == JobState::Cancelling {
                    timeout_in = None;
                    job.post.push(Post::CancelAttempts);
                }
            }
            _ => return,
        }
        // Entries a crash left unwritten (the writes are idempotent). A job
        // that never ran has none (and a large one is not scanned for them).
        if !never_ran && job.view.nodes.iter().any(|n| n.dead_letters > 0) {
            job.dead_lettered();
        }
        job.check_done(now);
        let id = job.id().clone();
        // A wedged scheduler's jobs are handed off by the keeper, which
        // then stops their attempts with this token.
        job.lease = self
            .shared
            .leases
            .attach(&id, Arc::clone(&job.attempts.cancel));
        if let Some(t) = timeout_in {
            job.timeout_at = Some(now.saturating_add(t));
            self.timers.insert(Timer::JobTimeout { slot, gen }, t);
        }
        self.jobs[slot] = Some(job);
        self.by_id.insert(id, slot);
        self.mark(slot);
    }

    /// Brings a recovered job's nodes back into motion: in-flight attempts
    /// are recorded as interrupted, ready nodes re-queued, retry timers
    /// re-armed, and undecided pending nodes decided.
    fn recover_nodes(&self, job: &mut ActiveJob, now: Timestamp) {
        // The states as recovered: recording an interrupted attempt can
        // decide later nodes (whose cascade queues ready ones itself), so the
        // loop must not act on states it changed.
        let recovered: Vec<NodeState> = job.view.nodes.iter().map(NodeView::state).collect();
        for i in 0..job.view.nodes.len() as u32 {
            let node = &job.view.nodes[i as usize];
            match recovered[i as usize] {
                NodeState::Compensating if node.compensation_running => {
                    let attempt = node.compensation_attempts;
                    let failure = Failure::infrastructure(
                        "compensation interrupted: the process running it stopped before it finished",
                    );
                    let retry_in = job.compensation_retry(i, attempt, failure.class);
                    if let Some(delay) = retry_in {
                        job.post.push(Post::CompensationRetry {
                            node: i,
                            attempt,
                            delay,
                        });
                    }
                    job.emit(
                        now,
                        Event::CompensationFailed {
                            node: i,
                            attempt,
                            failure: Box::new(failure),
                            retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                        },
                    );
                }
                NodeState::Compensating => {
                    let due = node.retry_at.unwrap_or(now);
                    job.post.push(Post::CompensationRetry {
                        node: i,
                        attempt: node.compensation_attempts,
                        delay: Duration::from_millis(due.saturating_since(now)),
                    });
                }
                NodeState::Running => {
                    let attempt = node.machine.attempts;
                    let failure = Failure::infrastructure(
                        "attempt interrupted: the process running it stopped before it finished",
                    );
                    let retry_in = job.retry_delay(i, attempt, failure.class, now);
                    job.emit(
                        now,
                        Event::NodeFailed {
                            node: i,
                            attempt,
                            failure: Box::new(failure),
                            retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                        },
                    );
                }
                NodeState::Ready => {
                    let r = job.ready_node(i);
                    job.ready.push(r);
                }
                NodeState::RetryWaiting => {
                    let due = node.retry_at.unwrap_or(now);
                    job.post.push(Post::Retry {
                        node: i,
                        attempt: node.machine.attempts,
                        delay: Duration::from_millis(due.saturating_since(now)),
                    });
                }
                _ => {}
            }
        }
        if !matches!(job.view.state, JobState::Cancelling | JobState::RollingBack) {
            job.evaluate_pending();
            job.scratch.reverse();
            let events = std::mem::take(&mut job.scratch);
            for e in events {
                job.emit(now, e);
            }
        }
    }

    /// Folds in every finished attempt taken from [`Completions`].
    fn joined_all(&mut self) {
        let mut finished = std::mem::take(&mut self.finished);
        for f in finished.drain(..) {
            self.joined(f);
        }
        // Keep the buffer: steady-state dispatch allocates nothing.
        self.finished = finished;
    }

    fn joined(&mut self, f: Finished) {
        self.crew.returned(f.member);
        self.running -= 1;
        let now = self.now;
        let f = self.refine_and_feed(f);
        let Some(job) = self.job(f.slot, f.gen) else {
            return;
        };
        job.running -= 1;
        // The slot was taken at dispatch, whatever became of the attempt.
        if let Some(pool) = job.hot[f.node as usize].pool() {
            let pool = &mut job.pools[pool];
            pool.running = pool.running.saturating_sub(1);
            if let Some(r) = pool.parked.pop() {
                job.ready.push(r);
            }
        }
        let node = &job.view.nodes[f.node as usize];
        if f.compensation {
            if node.state() != NodeState::Compensating
                || !node.compensation_running
                || node.compensation_attempts != f.attempt
            {
                return;
            }
            let event = match f.result {
                Ok(output) => Event::NodeCompensated {
                    node: f.node,
                    attempt: f.attempt,
                    output,
                },
                Err(failure) => {
                    let retry_in = job.compensation_retry(f.node, f.attempt, failure.class);
                    if let Some(delay) = retry_in {
                        job.post.push(Post::CompensationRetry {
                            node: f.node,
                            attempt: f.attempt,
                            delay,
                        });
                    }
                    Event::CompensationFailed {
                        node: f.node,
                        attempt: f.attempt,
                        failure: Box::new(failure),
                        retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                    }
                }
            };
            job.emit(now, event);
            job.check_done(now);
            self.mark(f.slot);
            return;
        }
        if node.state() != NodeState::Running || node.machine.attempts != f.attempt {
            return;
        }
        let event = match f.result {
            Ok(output) => Event::NodeSucceeded {
                node: f.node,
                attempt: f.attempt,
                output,
            },
            Err(failure) => {
                // Already classified by `refine_and_feed`.
                let retry_in = job.retry_delay(f.node, f.attempt, failure.class, now);
                Event::NodeFailed {
                    node: f.node,
                    attempt: f.attempt,
                    failure: Box::new(failure),
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                }
            }
        };
        job.emit(now, event);
        job.check_done(now);
        self.mark(f.slot);
    }

    fn timer(&mut self, t: Timer) {
        let now = self.now;
        match t {
            Timer::Retry {
                slot,
                gen,
                node,
                attempt,
            } => {
                let Some(job) = self.job(slot, gen) else {
                    return;
                };
                let n = &job.view.nodes[node as usize];
                if n.state() == NodeState::RetryWaiting && n.machine.attempts == attempt {
                    job.emit(now, Event::NodeRetryDue { node });
                    self.mark(slot);
                }
            }
            Timer::JobTimeout { slot, gen } => {
                let Some(job) = self.job(slot, gen) else {
                    return;
                };
                if matches!(job.view.state, JobState::Running | JobState::Recovering)
                    && !job.finishing
                {
                    job.emit(now, Event::TimeoutReached);
                    job.check_done(now);
                    self.mark(slot);
                }
            }
            Timer::CompensationRetry {
                slot,
                gen,
                node,
                attempt,
            } => {
                let Some(job) = self.job(slot, gen) else {
                    return;
                };
                let n = &job.view.nodes[node as usize];
                if n.state() == NodeState::Compensating
                    && !n.compensation_running
                    && n.compensation_attempts == attempt
                {
                    let mut r = job.ready_node(node);
                    r.compensation = true;
                    job.ready.push(r);
                    self.mark(slot);
                }
            }
            Timer::Breaker { index, transitions } => {
                let entry = &mut self.breakers[index as usize];
                if entry.breaker.transitions() != transitions {
                    return;
                }
                if let Some(t) = entry.breaker.poll(now) {
                    self.breaker_transitions.push((index, t));
                    self.unpark(index);
                }
            }
            Timer::StoreRetry { slot, gen } => {
                let Some(job) = self.job(slot, gen) else {
                    return;
                };
                job.stalled = false;
                self.mark(slot);
            }
        }
    }

    fn dispatch(&mut self) {
        let max = self.shared.config.max_concurrent_nodes.max(1);
        let now = self.now;
        while self.running < max {
            let Some(entry) = self.job_heap.pop() else {
                break;
            };
            let entry_slot = entry.slot;
            let Some(job) = self.jobs.get_mut(entry.slot).and_then(Option::as_mut) else {
                continue;
            };
            if job.gen != entry.gen {
                continue;
            }
            job.in_heap = false;
            if !job.wants_slot() {
                continue;
            }
            // Take this job's best node whose pool has room.
            while let Some(r) = job.ready.pop() {
                let node = r.node.0;
                let pool = job.hot[node as usize].pool();
                if let Some(p) = pool {
                    let pool = &job.pools[p];
                    if pool.running >= pool.limit {
                        job.pools[p].parked.push(r);
                        continue;
                    }
                }
                // A node whose dependency's breaker is open waits, ready:
                // no attempt is started or spent.
                if let Some(b) = job.breaker_of(node).filter(|_| !r.compensation) {
                    let entry = &mut self.breakers[b as usize];
                    let (admission, transition) = entry.breaker.try_acquire(now);
                    if let Some(t) = transition {
                        self.breaker_transitions.push((b, t));
                    }
                    match admission {
                        Admission::Rejected { .. } => {
                            entry.parked.push((entry_slot, job.gen, r));
                            continue;
                        }
                        Admission::Allowed => {
                            job.admitted.insert(node, (b, false));
                        }
                        Admission::Trial => {
                            job.admitted.insert(node, (b, true));
                        }
                    }
                }
                if let Some(p) = pool {
                    job.pools[p].running += 1;
                }
                let view = &job.view.nodes[node as usize];
                if r.compensation {
                    let attempt = view.compensation_attempts + 1;
                    job.emit(now, Event::CompensationStarted { node, attempt });
                } else {
                    let attempt = view.machine.attempts + 1;
                    job.emit(now, Event::NodeStarted { node, attempt });
                }
                job.running += 1;
                self.running += 1;
                break;
            }
            self.dirty.push(entry.slot);
            self.requeue(entry.slot);
        }
        // Every job whose nodes became ready this iteration is dirty.
        for i in 0..self.dirty.len() {
            if let Some(job) = self.jobs[self.dirty[i]].as_mut() {
                job.announce_ready(now);
            }
        }
    }

    async fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        // Scratch vectors live on the scheduler so steady-state flushing
        // allocates nothing.
        let spare = std::mem::take(&mut self.dirty_spare);
        let mut dirty = std::mem::replace(&mut self.dirty, spare);
        let mut batches = std::mem::take(&mut self.batches);
        dirty.sort_unstable();
        dirty.dedup();
        // Each job appends its failed batch alone (exactly as it was, so an
        // append that did land is recognised as a replay), else everything
        // pending, with the progress that describes exactly that prefix.
        let mut idle = std::mem::take(&mut self.idle);
        for &slot in &dirty {
            let Some(job) = self.jobs[slot].as_mut() else {
                continue;
            };
            if job.stalled {
                continue;
            }
            if let Some(failed) = job.failed.as_mut() {
                let records = std::mem::take(&mut failed.records);
                batches.push(Append {
                    slot,
                    replay: true,
                    progress: failed.progress,
                    records,
                });
            } else if !job.pending.is_empty() {
                batches.push(Append {
                    slot,
                    replay: false,
                    progress: job.view.progress(),
                    records: std::mem::take(&mut job.pending),
                });
            } else {
                idle.push(slot);
            }
        }
        // Nothing to journal for these, but effects (e.g. the reply to a
        // repeated cancel) may wait, whatever other jobs journal.
        for slot in idle.drain(..) {
            self.perform(slot, None);
        }
        self.idle = idle;
        if !batches.is_empty() {
            let store = &*self.shared.store;
            let jobs = &self.jobs;
            if batches.len() == 1 {
                // One job (always, on a chain): no vector of results.
                let (result, waited) = waiting(append(store, jobs, &batches[0])).await;
                self.now_stale |= waited;
                if let Some(batch) = batches.pop() {
                    self.appended(batch, result);
                }
            } else {
                let all = futures::future::join_all(batches.iter().map(|b| append(store, jobs, b)));
                let (results, waited) = waiting(all).await;
                self.now_stale |= waited;
                for (batch, result) in batches.drain(..).zip(results) {
                    self.appended(batch, result);
                }
            }
        }
        dirty.clear();
        self.dirty.append(&mut dirty);
        self.dirty_spare = dirty;
        self.batches = batches;
    }

    /// Handles the outcome of one job's append.
    fn appended(&mut self, batch: Append, result: Result<u64, crate::store::StoreError>) {
        let Append {
            slot,
            replay,
            progress,
            records,
        } = batch;
        match result {
            Ok(version) => {
                let Some(job) = self.jobs[slot].as_mut() else {
                    return;
                };
                job.durable = version;
                job.durable_at = self.now;
                job.store_failures = 0;
                let post = if replay {
                    job.failed.take().map(|f| f.post).unwrap_or_default()
                } else {
                    std::mem::take(&mut job.post)
                };
                self.publish(slot, records);
                self.perform(slot, Some(post));
                // A replayed failed batch may leave newer records pending.
                if self.jobs[slot]
                    .as_ref()
                    .is_some_and(|j| !j.pending.is_empty())
                {
                    self.dirty.push(slot);
                }
            }
            Err(crate::store::StoreError::Conflict {
                job,
                expected,
                actual,
            }) => {
                // Someone else wrote to this job: this executor no longer owns
                // it and must stop acting for it.
                tracing::error!(%job, expected, actual, "journal conflict; releasing the job");
                self.release(slot);
            }
            Err(crate::store::StoreError::Fenced {
                job,
                token,
                current,
            }) => {
                // Another executor took the job over (this one was paused or
                // cut off past its lease): nothing of this batch landed, and
                // the new owner recovers the job from the journal.
                tracing::warn!(%job, token, current, "job taken over by another executor; dropping it here");
                self.release(slot);
            }
            Err(e) => {
                let Some(job) = self.jobs[slot].as_mut() else {
                    return;
                };
                let post = if replay {
                    job.failed.take().map(|f| f.post).unwrap_or_default()
                } else {
                    std::mem::take(&mut job.post)
                };
                job.failed = Some(FailedAppend {
                    records,
                    post,
                    progress,
                });
                job.stalled = true;
                if job.store_failures == 0 {
                    job.failing_since = self.now;
                }
                job.store_failures += 1;
                let delay = self.shared.config.store_retry_delay(job.store_failures);
                tracing::warn!(job = %job.id(), error = %e, retry_in_ms = delay.as_millis() as u64,
                    "journal append failed; dispatch for this job is paused");
                let gen = job.gen;
                self.timers.insert(Timer::StoreRetry { slot, gen }, delay);
            }
        }
    }

    fn publish(&mut self, slot: usize, mut records: Vec<Record>) {
        let Some(job) = self.jobs[slot].as_mut() else {
            return;
        };
        if self.shared.events.has_subscribers() {
            self.shared.events.send(Batch {
                job: job.id().clone(),
                records,
                journaled: true,
            });
        } else if job.pending.is_empty() {
            // Reuse the buffer: steady-state journaling allocates nothing.
            records.clear();
            job.pending = records;
        }
    }

    /// Performs effects whose records are durable.
    fn perform(&mut self, slot: usize, post: Option<Vec<Post>>) {
        let Some(job) = self.jobs[slot].as_mut() else {
            return;
        };
        let post = match post {
            Some(p) => p,
            None if job.pending.is_empty() && job.failed.is_none() => std::mem::take(&mut job.post),
            None => return,
        };
        // Attempts start only under a live lease held here. A process
        // paused (or cut off) past its lease, or a wedged scheduler whose
        // jobs the keeper handed off, may find on waking attempts it
        // journaled before still to start — while the executor that took
        // the job over runs them again: drop the job instead.
        // The clock is read afresh when the append this follows had to wait
        // (the lease may have run out meanwhile). One that was done on its
        // first poll (the memory store; sled without durable writes) took
        // no longer than the rest of the iteration: stores wait for I/O by
        // returning `Pending`, never by blocking inside a poll.
        let now = if self.now_stale {
            self.shared.clock.now()
        } else {
            self.now
        };
        if !job.lease.live(now) {
            let unspawned = post
                .iter()
                .filter(|p| matches!(p, Post::Spawn { .. }))
                .count();
            if unspawned > 0 {
                tracing::warn!(job = %job.id(), "lease lapsed or handed off before attempts could start; dropping the job here");
                self.running -= unspawned;
                self.release(slot);
                return;
            }
        }
        let mut finished = false;
        let mut post = post;
        for p in post.drain(..) {
            match p {
                Post::Spawn {
                    node,
                    attempt,
                    compensation,
                } => self.spawn(slot, node, attempt, compensation),
                Post::CompensationRetry {
                    node,
                    attempt,
                    delay,
                } => {
                    let gen = self.jobs[slot].as_ref().map_or(0, |j| j.gen);
                    self.timers.insert(
                        Timer::CompensationRetry {
                            slot,
                            gen,
                            node,
                            attempt,
                        },
                        delay,
                    );
                }
                Post::Retry {
                    node,
                    attempt,
                    delay,
                } => {
                    let gen = self.jobs[slot].as_ref().map_or(0, |j| j.gen);
                    self.timers.insert(
                        Timer::Retry {
                            slot,
                            gen,
                            node,
                            attempt,
                        },
                        delay,
                    );
                }
                Post::CancelAttempts => {
                    if let Some(job) = self.jobs[slot].as_ref() {
                        job.attempts.cancel.cancel();
                    }
                }
                Post::RecordHistory => self.record_history(slot),
                Post::Reply(tx, answer) => {
                    let _ = tx.send(answer);
                }
                Post::Finish => finished = true,
                Post::StoreDeadLetters => {
                    if let Some(job) = self.jobs[slot].as_ref() {
                        super::dead_letters::spawn_write(
                            Arc::clone(&self.shared),
                            job.id().clone(),
                            self.done_tx.clone(),
                            slot,
                            job.gen,
                        );
                    }
                }
            }
        }
        if let Some(job) = self.jobs[slot].as_mut() {
            if job.post.is_empty() {
                // Keep the buffer's capacity for the next batch.
                job.post = post;
            }
            let every = self
                .shared
                .config
                .snapshot_every
                .max(4 * job.view.nodes.len() as u64);
            if !finished
                && job.view.version == job.durable
                && job.durable - job.last_snapshot >= every
            {
                job.last_snapshot = job.durable;
                let snapshot = crate::journal::Snapshot {
                    view: job.view.clone(),
                };
                let store = Arc::clone(&self.shared.store);
                let id = job.id().clone();
                tokio::spawn(async move {
                    if let Err(e) = store.put_snapshot(&id, &snapshot).await {
                        tracing::warn!(job = %id, error = %e, "snapshot failed; recovery will replay more");
                    }
                });
            }
        }
        if finished {
            if let Some(mut job) = self.release(slot) {
                // Nothing is journaled after the final record, so answers
                // queued behind a replayed final batch are durable now too.
                for p in std::mem::take(&mut job.post) {
                    if let Post::Reply(tx, answer) = p {
                        let _ = tx.send(answer);
                    }
                }
                for tx in job.cancel_waiters.drain(..) {
                    let _ = tx.send(Err(ExecutorError::AlreadyFinished {
                        job: job.view.id().clone(),
                        state: job.view.state,
                    }));
                }
                // The view is not needed any more: the last waiter takes it,
                // so a million-node job is not copied for nothing.
                if let Some(last) = job.waiters.pop() {
                    for w in job.waiters.drain(..) {
                        let _ = w.send(job.view.clone());
                    }
                    let _ = last.send(job.view);
                }
            }
        }
    }

    /// Writes the test outcomes of a job whose nodes are all finished, in a
    /// task, and tells the scheduler when done. A store failure is retried
    /// with the store backoff a few times, then logged: history is
    /// analytics, and a job must not hang on it.
    fn record_history(&mut self, slot: usize) {
        let Some(job) = self.jobs[slot].as_ref() else {
            return;
        };
        // A compact copy of what the outcomes need (a few bytes a node);
        // the outcomes themselves are built a chunk at a time in the task,
        // so a million-node job never holds a million of them at once.
        let ran = ran_nodes(&job.view, &job.hot);
        let view = OutcomeSource {
            header: Arc::clone(&job.view.header),
            updated_at: job.view.updated_at,
        };
        let gen = job.gen;
        let id = job.id().clone();
        let done = self.done_tx.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let keep = shared.config.flaky.keep;
            'chunks: for chunk in ran.chunks(HISTORY_CHUNK) {
                let outcomes = view.outcomes(chunk);
                let mut failures = 0;
                loop {
                    match shared.store.record_outcomes(&outcomes, keep).await {
                        Ok(()) => break,
                        Err(e) if e.is_retryable() && failures < HISTORY_TRIES => {
                            failures += 1;
                            let delay = shared.config.store_retry_delay(failures);
                            tracing::warn!(job = %id, error = %e, retry_in_ms = delay.as_millis() as u64, "recording test history failed; retrying");
                            tokio::time::sleep(delay).await;
                        }
                        Err(e) => {
                            tracing::error!(job = %id, error = %e, "could not record test history; the job finishes without it");
                            break 'chunks;
                        }
                    }
                }
            }
            if let Some(tx) = done.upgrade() {
                let _ = tx.send(Command::HistoryRecorded { slot, gen });
            }
        });
    }

    /// The test history of job `slot` is written: let it finish.
    pub(crate) fn history_recorded(&mut self, slot: usize, gen: u64) {
        let now = self.now;
        let Some(job) = self.job(slot, gen) else {
            return;
        };
        job.history_recorded = true;
        job.finishing = false;
        job.check_done(now);
        self.mark(slot);
    }

    /// Forgets a job (finished, or no longer ours) and hands it back.
    fn release(&mut self, slot: usize) -> Option<ActiveJob> {
        let job = self.jobs[slot].take()?;
        for &(b, trial) in job.admitted.values() {
            self.breakers[b as usize].breaker.release(trial);
        }
        // Attempts dispatched but never spawned (their `node.started` was
        // not durable yet: a job let go because another executor took it
        // over) hold a slot that no finished attempt will give back.
        let unspawned = job
            .post
            .iter()
            .chain(job.failed.iter().flat_map(|f| f.post.iter()))
            .filter(|p| matches!(p, Post::Spawn { .. }))
            .count();
        self.running -= unspawned;
        job.attempts.cancel.cancel();
        self.shared.leases.forget(job.id());
        self.by_id.remove(job.id());
        self.free.push(slot);
        Some(job)
    }

    /// Finds or creates the breaker of `dependency`: the executor's
    /// configuration for it, else the job's, else the executor's default.
    /// A breaker keeps the settings it was created with.
    fn breaker_for(&mut self, dependency: &str, spec: &crate::JobSpec) -> u32 {
        if let Some(&b) = self.breaker_index.get(dependency) {
            return b;
        }
        let config = &self.shared.config;
        let Some(breaker_spec) = config
            .breakers
            .get(dependency)
            .or_else(|| spec.breakers.get(dependency))
            .or(config.default_breaker.as_ref())
        else {
            return NO_BREAKER;
        };
        let breaker = match breaker_spec.config() {
            Ok(c) => Breaker::new(c),
            Err(e) => {
                tracing::warn!(dependency, error = %e, "invalid breaker settings; the dependency has no breaker");
                return NO_BREAKER;
            }
        };
        let b = self.breakers.len() as u32;
        self.breakers.push(BreakerEntry {
            name: dependency.to_owned(),
            breaker,
            parked: Vec::new(),
            users: Vec::new(),
        });
        self.breaker_index.insert(dependency.to_owned(), b);
        b
    }

    /// Links a newly active job's nodes to their dependencies' breakers.
    fn attach_breakers(&mut self, job: &mut ActiveJob, slot: usize, gen: u64) {
        let config = &self.shared.config;
        let spec = Arc::clone(job.view.spec());
        if self.breakers.is_empty()
            && spec.breakers.is_empty()
            && config.breakers.is_empty()
            && config.default_breaker.is_none()
        {
            return;
        }
        let n = spec.nodes().len();
        let mut node_breaker = Vec::new();
        let mut last: Option<(&str, u32)> = None;
        for (i, node) in spec.nodes().iter().enumerate() {
            let dependency = node.dependency_name();
            let b = match last {
                Some((d, b)) if d == dependency => b,
                _ => {
                    let b = self.breaker_for(dependency, &spec);
                    last = Some((dependency, b));
                    b
                }
            };
            if b == NO_BREAKER {
                continue;
            }
            if node_breaker.is_empty() {
                node_breaker = vec![NO_BREAKER; n];
            }
            node_breaker[i] = b;
            let users = &mut self.breakers[b as usize].users;
            if !users.contains(&(slot, gen)) {
                users.push((slot, gen));
            }
        }
        job.node_breaker = node_breaker;
    }

    /// Classifies a finished attempt's failure with its node's rules, and
    /// reports the outcome to the breaker that admitted it.
    fn refine_and_feed(&mut self, mut f: Finished) -> Finished {
        if !f.compensation {
            if let Some(job) = self.job(f.slot, f.gen) {
                if let Err(failure) = f.result {
                    f.result = Err(job.classify(f.node, failure));
                }
            }
        }
        let Some((b, trial)) = f.breaker else {
            return f;
        };
        let entry = &mut self.breakers[b as usize];
        let outcome = match &f.result {
            Ok(_) => Outcome::Success,
            Err(failure) if entry.breaker.config().spec().count.contains(&failure.class) => {
                Outcome::Failure
            }
            Err(_) => Outcome::Ignored,
        };
        if let Some(t) = entry.breaker.on_result(self.now, outcome, trial) {
            self.breaker_transitions.push((b, t));
            // Journal it now, before the outcome's own records: the job
            // whose attempt moved the breaker may be about to finish.
            self.journal_breakers();
        } else if trial && outcome == Outcome::Ignored {
            // The trial slot is free again.
            self.unpark(b);
        }
        f
    }

    /// Puts the nodes waiting on breaker `b` back in their jobs' ready
    /// queues; dispatch asks the breaker again.
    fn unpark(&mut self, b: u32) {
        let parked = std::mem::take(&mut self.breakers[b as usize].parked);
        for (slot, gen, r) in parked {
            let Some(job) = self.job(slot, gen) else {
                continue;
            };
            if job.view.nodes[r.node.0 as usize].state() == NodeState::Ready {
                job.ready.push(r);
                self.mark(slot);
            }
        }
    }

    /// Journals this iteration's breaker transitions in every active job
    /// gated by the breaker, arms the open timers, and releases waiting
    /// nodes when trials may start.
    fn journal_breakers(&mut self) {
        if self.breaker_transitions.is_empty() {
            return;
        }
        let now = self.now;
        for (b, t) in std::mem::take(&mut self.breaker_transitions) {
            let entry = &mut self.breakers[b as usize];
            tracing::info!(dependency = %entry.name, from = %t.from, to = %t.to, failures = t.failures, calls = t.calls, "circuit breaker changed state");
            if t.to == crate::breaker::BreakerState::Open {
                let open_for = entry.breaker.config().spec().open_for.get();
                let transitions = entry.breaker.transitions();
                self.timers.insert(
                    Timer::Breaker {
                        index: b,
                        transitions,
                    },
                    open_for,
                );
            }
            let name = self.breakers[b as usize].name.clone();
            let users = std::mem::take(&mut self.breakers[b as usize].users);
            let mut kept = Vec::with_capacity(users.len());
            for (slot, gen) in users {
                let Some(job) = self.job(slot, gen) else {
                    continue;
                };
                kept.push((slot, gen));
                if job.finishing || job.view.state.is_terminal() {
                    continue;
                }
                job.emit(
                    now,
                    Event::BreakerChanged {
                        dependency: name.clone(),
                        from: t.from,
                        to: t.to,
                        failures: t.failures,
                        calls: t.calls,
                    },
                );
                self.mark(slot);
            }
            self.breakers[b as usize].users = kept;
            if t.to != crate::breaker::BreakerState::Open {
                self.unpark(b);
            }
        }
    }

    fn spawn(&mut self, slot: usize, node: u32, attempt: u32, compensation: bool) {
        let Some(job) = self.jobs[slot].as_mut() else {
            return;
        };
        let spec = job.view.spec();
        let hot = job.hot[node as usize];
        // Only a missing runner (possible after a restart with a smaller
        // registry) needs the type's name; don't copy it otherwise.
        let missing = |kind: &str| format!("no runner is registered for type {kind:?}");
        let runner = if compensation {
            let node_spec = &spec.nodes()[node as usize];
            let kind = node_spec
                .compensate
                .as_ref()
                .map_or(&node_spec.kind, |c| &c.kind);
            match self.shared.registry().get(kind) {
                Some(r) => AttemptRunner::Own(Arc::clone(r)),
                None => AttemptRunner::Missing(missing(kind)),
            }
        } else {
            let index = hot.runner as usize;
            let found = &job.attempts.runners[index];
            if found.get().is_none() {
                if let Some(r) = self.shared.registry().get(&job.kinds[index]) {
                    let _ = found.set(Arc::clone(r));
                }
            }
            match found.get() {
                Some(_) => AttemptRunner::Job(index),
                None => AttemptRunner::Missing(missing(&job.kinds[index])),
            }
        };
        // The spec's limits are read only for nodes that have some.
        let (deadline, heartbeat_timeout) = if hot.limited {
            let node_spec = &spec.nodes()[node as usize];
            (
                node_spec
                    .timeout
                    .map(|t| tokio::time::Instant::now() + t.get()),
                node_spec.heartbeat_timeout.map(HumanDuration::get),
            )
        } else {
            (None, None)
        };
        let limits = AttemptLimits {
            deadline,
            heartbeat_timeout,
            grace: self.shared.config.cancel_grace,
        };
        // Attempts with their own limits get a child token so a timeout can
        // stop just this attempt; others share the job's token.
        let own_token = (limits.deadline.is_some() || limits.heartbeat_timeout.is_some())
            .then(|| Arc::new(job.attempts.cancel.child_token()));
        let heartbeat = if limits.heartbeat_timeout.is_some() {
            Heartbeat::live()
        } else {
            Heartbeat::disabled()
        };
        let shared = Arc::clone(&job.attempts);
        let gen = job.gen;
        let breaker = if compensation {
            None
        } else {
            job.admitted.remove(&node)
        };
        self.crew.assign(Assignment {
            job: shared,
            slot,
            gen,
            node,
            attempt,
            compensation,
            breaker,
            runner,
            limits,
            own_token,
            heartbeat,
        });
    }
}

/// Where an attempt finds its runner.
enum AttemptRunner {
    /// In the job's shared context, at this index (found there before the
    /// attempt was assigned).
    Job(usize),
    /// Its own (a compensation's, looked up by type name).
    Own(Arc<dyn Runner>),
    /// None is registered for the type: the attempt fails permanently.
    Missing(String),
}

/// Compiles the classification rules of a job: its default (`classify`, or
/// its policy's) and every node override. Rules were validated at
/// submission; a list that no longer compiles is dropped with a warning.
fn compile_rules(
    spec: &crate::JobSpec,
    special: &[u32],
    policies: &crate::PolicyRegistry,
    id: &JobId,
) -> (Option<Arc<CompiledRules>>, HashMap<u32, Arc<CompiledRules>>) {
    let compile = |rules: &[crate::classify::ClassifyRule], source: &str| {
        CompiledRules::compile(rules, source)
            .map_err(|e| tracing::warn!(job = %id, error = %e, "classification rules no longer compile; ignored"))
            .ok()
    };
    let job_policy = spec.policy.as_deref().and_then(|r| policies.stored_str(r));
    let job_rules = if spec.classify.is_empty() {
        job_policy
            .filter(|p| !p.classify.is_empty())
            .and_then(|p| compile(&p.classify, &format!("policy:{}", p.key())))
    } else {
        compile(&spec.classify, "job")
    };
    // Nodes naming the same policy share one compiled copy.
    let mut by_policy: HashMap<String, Option<Arc<CompiledRules>>> = HashMap::new();
    let mut node_rules = HashMap::new();
    for &i in special {
        let node = &spec.nodes()[i as usize];
        if node.classify.is_none() && node.policy.is_none() {
            continue;
        }
        let (_, rules) = crate::policy::effective(spec, i as usize, policies);
        let compiled = match rules {
            None => None,
            Some((rules, source)) if source == "node" => compile(rules, "node"),
            Some((rules, source)) => by_policy
                .entry(source.clone())
                .or_insert_with(|| compile(rules, &source))
                .clone(),
        };
        if let Some(c) = compiled {
            node_rules.insert(i, c);
        }
    }
    (job_rules, node_rules)
}

/// Store failures in a row after which recording a job's test history is
/// given up.
const HISTORY_TRIES: u32 = 5;

/// Outcomes recorded per store call.
const HISTORY_CHUNK: usize = 1000;

/// What one node's recorded outcome needs from the view.
#[derive(Clone, Copy)]
struct Ran {
    node: u32,
    passed: bool,
    flaky: bool,
    quarantined: bool,
    attempts: u32,
    at: Option<Timestamp>,
}

/// Node types that are never tests: the built-in `noop` and `sleep`
/// cannot fail, so their history would be an endless run of passes that
/// says nothing about flakiness while costing a stored key per node (a
/// million-node plan of them would store a million keys). A `test_id`
/// still records them.
const NOT_TESTS: [&str; 2] = ["noop", "sleep"];

/// Whether `node`'s outcomes are test history.
fn is_test(node: &crate::spec::NodeSpec) -> bool {
    node.test_id.is_some() || !NOT_TESTS.contains(&node.kind.as_str())
}

/// Every test node of `view` that ran to a result of its own in this run
/// (succeeded, failed or timed out after at least one attempt;
/// carried-over nodes did not run). Which nodes are tests comes from
/// `hot`, not from the specs, which on a large job no cache holds.
fn ran_nodes(view: &JobView, hot: &[HotNode]) -> Vec<Ran> {
    view.nodes
        .iter()
        .enumerate()
        .filter(|&(i, n)| {
            hot[i].test
                && n.machine.attempts > 0
                && matches!(
                    n.state(),
                    NodeState::Succeeded | NodeState::Failed | NodeState::TimedOut
                )
        })
        .map(|(i, n)| Ran {
            node: i as u32,
            passed: n.state() == NodeState::Succeeded,
            flaky: n.flaky(),
            quarantined: n.quarantined,
            attempts: n.machine.attempts,
            at: n.finished_at,
        })
        .collect()
}

/// The job-wide part of its outcomes.
struct OutcomeSource {
    header: Arc<crate::journal::JobHeader>,
    updated_at: Timestamp,
}

impl OutcomeSource {
    fn outcomes(&self, ran: &[Ran]) -> Vec<TestOutcome> {
        let spec = &self.header.spec;
        ran.iter()
            .filter_map(|r| {
                let node = spec.nodes().get(r.node as usize)?;
                Some(TestOutcome {
                    key: crate::flaky::test_key(&spec.name, node),
                    outcome: RunOutcome {
                        job: self.header.id.clone(),
                        job_name: spec.name.clone(),
                        owner: self.header.owner.clone(),
                        at: r.at.unwrap_or(self.updated_at),
                        passed: r.passed,
                        flaky: r.flaky,
                        attempts: r.attempts,
                        quarantined: r.quarantined,
                    },
                })
            })
            .collect()
    }
}

/// The policy of last resort when even the default no longer compiles.
#[derive(Debug)]
struct NoRetry;

impl RetryPolicy for NoRetry {
    fn next_delay(&self, _ctx: &RetryContext) -> Option<Duration> {
        None
    }
    fn max_attempts(&self) -> u32 {
        1
    }
}
