//! Runners: what executes one attempt of one node.
//!
//! A [`Runner`] gets a [`RunContext`] (params, attempt number, deadline,
//! cancellation token, heartbeat handle) and returns a JSON output or a
//! classified [`Failure`]. A [`Registry`] maps a node's `type` to its runner.
//!
//! Built-ins: [`NoopRunner`] (`noop`), [`SleepRunner`] (`sleep`, param
//! `duration`), [`ProcessRunner`] (`process`) and, for tests,
//! [`ScriptedRunner`], whose outcome per attempt a test sets.
//!
//! ```
//! use async_trait::async_trait;
//! use orchestrator_core::runner::{Registry, RunContext, Runner};
//! use orchestrator_core::Failure;
//! use serde_json::{json, Value};
//!
//! /// Runs one test case by name.
//! struct TestCase;
//!
//! #[async_trait]
//! impl Runner for TestCase {
//!     async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
//!         let name = ctx.params()["name"].as_str().unwrap_or("unnamed");
//!         ctx.heartbeat().beat();
//!         Ok(json!({ "test": name, "attempt": ctx.attempt() }))
//!     }
//! }
//!
//! let mut registry = Registry::with_builtins();
//! registry.register("test_case", TestCase);
//! assert!(registry.get("test_case").is_some());
//! assert!(registry.get("process").is_some());
//! ```

mod process;
mod scripted;

use foldhash::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::spec::{JobSpec, NodeSpec};
use crate::time::JobId;

pub use process::{BaseEnv, ProcessConfig, ProcessRunner};
pub use scripted::{Execution, ExecutionStatus, Outcome, ScriptedRunner};

/// Largest output (serialized JSON) an attempt may return. Outputs are
/// journaled, so they are bounded like every other journal record.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Executes one attempt of one node.
///
/// Contract: return promptly once [`RunContext::cancelled`] fires (the
/// executor drops the future after a grace period anyway); call
/// [`Heartbeat::beat`] regularly if the node has a heartbeat timeout; never
/// panic on bad params (return a [`FailureClass::Permanent`](crate::FailureClass)
/// failure instead).
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs one attempt.
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure>;
}

#[async_trait]
impl<R: Runner + ?Sized> Runner for Arc<R> {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        (**self).run(ctx).await
    }
}

/// Everything a runner knows about the attempt it runs.
#[derive(Clone)]
pub struct RunContext {
    job: Arc<JobContext>,
    node: u32,
    attempt: u32,
    deadline: Option<Instant>,
    /// The attempt's own token (a child of the job's, so that a timeout
    /// stops just this attempt), if it has one; else the job's token is
    /// the attempt's.
    cancel: Option<Arc<CancellationToken>>,
    heartbeat: Heartbeat,
    compensation: bool,
}

/// What every attempt of a job shares: one reference count per attempt
/// instead of one each for the id, the spec and the token. An attempt
/// usually ends on another worker thread than the scheduler that started
/// it, and each shared count it touches is a cache line bounced between
/// the two.
pub(crate) struct JobContext {
    pub(crate) job_id: JobId,
    pub(crate) spec: Arc<JobSpec>,
    // Shared behind an Arc: cloning a `CancellationToken` takes a lock in its
    // tree.
    pub(crate) cancel: Arc<CancellationToken>,
    /// The runners of the job's node types (the executor indexes them),
    /// each set once found in the registry: an attempt borrows its runner
    /// from here rather than holding a count of its own on it.
    pub(crate) runners: Box<[std::sync::OnceLock<Arc<dyn Runner>>]>,
    /// Where the executor's attempts report their outcome.
    pub(crate) done: Arc<crate::executor::Completions>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("job_id", &self.job.job_id)
            .field("node", &self.node_spec().id)
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .field("compensation", &self.compensation)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// A context for attempt `attempt` of node index `node` of `spec`.
    ///
    /// The executor builds these; tests of runners build them directly.
    ///
    /// # Panics
    /// If `node` is not an index into `spec`'s nodes.
    pub fn new(job_id: JobId, spec: Arc<JobSpec>, node: u32, attempt: u32) -> Self {
        assert!(
            (node as usize) < spec.nodes().len(),
            "node index out of range"
        );
        let job = JobContext {
            job_id,
            spec,
            cancel: Arc::new(CancellationToken::new()),
            runners: Box::default(),
            done: Arc::default(),
        };
        Self::for_attempt(Arc::new(job), node, attempt, None)
    }

    /// The executor's constructor: the job's shared part, and the
    /// attempt's own token if it has one.
    pub(crate) fn for_attempt(
        job: Arc<JobContext>,
        node: u32,
        attempt: u32,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Self {
        debug_assert!((node as usize) < job.spec.nodes().len());
        Self {
            job,
            node,
            attempt,
            deadline: None,
            cancel,
            heartbeat: Heartbeat::disabled(),
            compensation: false,
        }
    }

    /// Sets the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the cancellation token.
    #[must_use]
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(Arc::new(token));
        self
    }

    /// Sets a shared cancellation token (no clone of the token itself).
    #[must_use]
    pub fn with_shared_cancel(mut self, token: Arc<CancellationToken>) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sets the heartbeat handle.
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Marks this attempt as running the node's compensation step, whose
    /// params come from `compensate.params`.
    #[must_use]
    pub fn for_compensation(mut self) -> Self {
        self.compensation = true;
        self
    }

    /// The job's id.
    pub fn job_id(&self) -> &JobId {
        &self.job.job_id
    }

    /// The whole job spec.
    pub fn job(&self) -> &JobSpec {
        &self.job.spec
    }

    /// The node's index in the spec.
    pub fn node_index(&self) -> u32 {
        self.node
    }

    /// The node's spec.
    pub fn node_spec(&self) -> &NodeSpec {
        &self.job.spec.nodes()[self.node as usize]
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node_spec().id
    }

    /// The runner params: the node's `params`, or its compensation's params
    /// when running a compensation.
    pub fn params(&self) -> &Value {
        let node = self.node_spec();
        match (&node.compensate, self.compensation) {
            (Some(c), true) => &c.params,
            _ => &node.params,
        }
    }

    /// Whether this attempt runs the compensation step.
    pub fn is_compensation(&self) -> bool {
        self.compensation
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the attempt times out, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The cancellation token: cancelled when the job is cancelled or the
    /// attempt times out.
    pub fn cancel_token(&self) -> &CancellationToken {
        self.cancel.as_deref().unwrap_or(&self.job.cancel)
    }

    /// The shared handle of the cancellation token (the executor keeps one to
    /// cancel the attempt).
    pub fn shared_cancel_token(&self) -> Arc<CancellationToken> {
        Arc::clone(self.cancel.as_ref().unwrap_or(&self.job.cancel))
    }

    /// Completes when the attempt should stop.
    pub async fn cancelled(&self) {
        self.cancel_token().cancelled().await;
    }

    /// The heartbeat handle.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }
}

/// A running attempt's proof of life. Cheap to clone and to call.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat(Option<Arc<HeartbeatCell>>);

/// Shared state behind a [`Heartbeat`].
#[derive(Debug)]
pub struct HeartbeatCell {
    origin: Instant,
    last_ms: AtomicU64,
    beats: AtomicU64,
}

impl Heartbeat {
    /// A handle whose beats go nowhere (the node has no heartbeat timeout).
    pub fn disabled() -> Self {
        Self(None)
    }

    /// A live handle; the executor watches [`Heartbeat::since_last`].
    pub fn live() -> Self {
        Self(Some(Arc::new(HeartbeatCell {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            beats: AtomicU64::new(0),
        })))
    }

    /// Records a sign of life.
    pub fn beat(&self) {
        if let Some(cell) = &self.0 {
            let ms = cell.origin.elapsed().as_millis() as u64;
            cell.last_ms.fetch_max(ms, Ordering::Relaxed);
            cell.beats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Time since the last beat (or since the handle was made), `None` for a
    /// disabled handle.
    pub fn since_last(&self) -> Option<Duration> {
        self.0.as_ref().map(|cell| {
            let now = cell.origin.elapsed();
            now.saturating_sub(Duration::from_millis(cell.last_ms.load(Ordering::Relaxed)))
        })
    }

    /// Number of beats so far.
    pub fn beats(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |c| c.beats.load(Ordering::Relaxed))
    }
}

/// Maps node types to runners.
#[derive(Clone, Default)]
pub struct Registry {
    runners: HashMap<String, Arc<dyn Runner>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.runners.keys().collect();
        kinds.sort();
        f.debug_struct("Registry").field("kinds", &kinds).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with `noop`, `sleep` and `process`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("noop", NoopRunner);
        r.register("sleep", SleepRunner);
        r.register("process", ProcessRunner::default());
        r
    }

    /// Registers (or replaces) the runner for `kind`.
    pub fn register(&mut self, kind: impl Into<String>, runner: impl Runner) -> &mut Self {
        self.runners.insert(kind.into(), Arc::new(runner));
        self
    }

    /// Registers a shared runner for `kind`.
    pub fn register_arc(&mut self, kind: impl Into<String>, runner: Arc<dyn Runner>) -> &mut Self {
        self.runners.insert(kind.into(), runner);
        self
    }

    /// Adds every runner of `other`, replacing runners of the same kinds.
    pub fn extend(&mut self, other: &Registry) -> &mut Self {
        for (kind, runner) in &other.runners {
            self.runners.insert(kind.clone(), Arc::clone(runner));
        }
        self
    }

    /// The runner for `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Runner>> {
        self.runners.get(kind)
    }

    /// Whether a runner is registered for `kind`.
    pub fn contains(&self, kind: &str) -> bool {
        self.runners.contains_key(kind)
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.runners.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}

/// `noop`: succeeds at once with a null output.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopRunner;

#[async_trait]
impl Runner for NoopRunner {
    async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
        Ok(Value::Null)
    }
}

/// `sleep`: waits for param `duration` (`"500ms"`, `"2s"`, or milliseconds),
/// beating its heartbeat, and stops early when cancelled.
#[derive(Clone, Copy, Debug, Default)]
pub struct SleepRunner;

#[async_trait]
impl Runner for SleepRunner {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let raw = ctx.params().get("duration").cloned().unwrap_or(Value::Null);
        let duration: crate::HumanDuration = serde_json::from_value(raw)
            .map_err(|e| Failure::permanent(format!("sleep needs a `duration` param: {e}")))?;
        let until = Instant::now() + duration.get();
        loop {
            ctx.heartbeat().beat();
            let step = tokio::time::sleep_until(until.min(Instant::now() + Duration::from_secs(1)));
            tokio::select! {
                () = step => if Instant::now() >= until { break },
                () = ctx.cancelled() => return Err(Failure::cancelled("sleep cancelled")),
            }
        }
        Ok(Value::Null)
    }
}
