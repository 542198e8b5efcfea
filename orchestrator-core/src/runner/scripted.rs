//! A runner for tests: each attempt's outcome is set by the test, and every
//! execution is recorded for the test to check.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{RunContext, Runner};
use crate::failure::{Failure, FailureClass};
use crate::time::JobId;

/// What one scripted attempt does: its result, and optionally how long it
/// takes, whether it beats its heartbeat and whether it heeds cancellation.
///
/// Durations are slept with [`tokio::time::sleep`], so tests with a paused
/// clock run them instantly and deterministically.
#[derive(Clone, Debug)]
pub struct Outcome {
    result: Scripted,
    /// `None`: runs until cancelled.
    duration: Option<Duration>,
    beat_every: Option<Duration>,
    ignore_cancel: bool,
}

#[derive(Clone, Debug)]
enum Scripted {
    Return(Result<Value, Failure>),
    Panic(String),
}

impl Outcome {
    fn new(result: Scripted) -> Self {
        Self {
            result,
            duration: Some(Duration::ZERO),
            beat_every: None,
            ignore_cancel: false,
        }
    }

    /// Succeeds with a null output.
    pub fn succeed() -> Self {
        Self::succeed_with(Value::Null)
    }

    /// Succeeds with `output`.
    pub fn succeed_with(output: Value) -> Self {
        Self::new(Scripted::Return(Ok(output)))
    }

    /// Fails with `class` and the message `scripted <class> failure`.
    pub fn fail(class: FailureClass) -> Self {
        Self::fail_with(Failure::new(class, format!("scripted {class} failure")))
    }

    /// Fails with `failure`.
    pub fn fail_with(failure: Failure) -> Self {
        Self::new(Scripted::Return(Err(failure)))
    }

    /// Panics with `message`, for tests of how the executor survives a
    /// runner that panics.
    pub fn panic(message: impl Into<String>) -> Self {
        Self::new(Scripted::Panic(message.into()))
    }

    /// Runs until cancelled (for ever, with [`Outcome::ignoring_cancel`]):
    /// a hung test, for timeout and heartbeat-loss tests.
    pub fn hang() -> Self {
        Self {
            duration: None,
            ..Self::succeed()
        }
    }

    /// Takes `duration` before it returns (or panics).
    #[must_use]
    pub fn after(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Beats the heartbeat at the start and every `every` while it runs. By
    /// default a scripted attempt never beats, like a runner that does not
    /// know about heartbeats.
    ///
    /// # Panics
    /// If `every` is zero.
    #[must_use]
    pub fn beating(mut self, every: Duration) -> Self {
        assert!(!every.is_zero(), "a heartbeat interval must not be zero");
        self.beat_every = Some(every);
        self
    }

    /// Keeps running when cancelled, like a runner that breaks the
    /// [`Runner`] contract, for tests of the executor's grace period. By
    /// default a cancelled attempt stops at once and fails with class
    /// `cancelled` (`timeout` if its deadline has passed).
    #[must_use]
    pub fn ignoring_cancel(mut self) -> Self {
        self.ignore_cancel = true;
        self
    }

    async fn play(&self, ctx: &RunContext) -> Result<Value, Failure> {
        let finished = async {
            match self.duration {
                Some(d) if d.is_zero() => {}
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let beating = async {
            let Some(every) = self.beat_every else {
                return std::future::pending::<()>().await;
            };
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                ctx.heartbeat().beat();
            }
        };
        let cancelled = async {
            if self.ignore_cancel {
                std::future::pending::<()>().await;
            } else {
                ctx.cancelled().await;
            }
        };
        tokio::select! {
            // A cancelled attempt must not report a result it did not finish.
            biased;
            () = cancelled => {
                // The executor also cancels attempts whose deadline passed.
                return Err(if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
                    Failure::timeout("scripted attempt timed out")
                } else {
                    Failure::cancelled("scripted attempt cancelled")
                });
            }
            () = finished => {}
            () = beating => {}
        }
        match &self.result {
            Scripted::Return(result) => result.clone(),
            Scripted::Panic(message) => panic!("{message}"),
        }
    }
}

/// One execution of a [`ScriptedRunner`], as recorded.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Execution {
    /// The job it belonged to.
    pub job_id: JobId,
    /// The node id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Whether it ran the node's compensation.
    pub compensation: bool,
    /// When it started, on tokio's clock.
    pub started: Instant,
    /// When it ended (returned, panicked or was dropped); `None` while it runs.
    pub ended: Option<Instant>,
    /// How it ended.
    pub status: ExecutionStatus,
}

impl Execution {
    /// How long it ran, once it has ended.
    pub fn duration(&self) -> Option<Duration> {
        self.ended.map(|end| end - self.started)
    }
}

/// How an [`Execution`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecutionStatus {
    /// Still running.
    Running,
    /// Returned an output.
    Succeeded,
    /// Returned a failure of this class.
    Failed(FailureClass),
    /// Its future was dropped before it finished.
    Dropped,
    /// It panicked.
    Panicked,
}

/// A runner whose outcome per (node id, attempt) a test sets, and which
/// records every execution and the most that ran at once.
///
/// Attempt `n` of a node plays the `n`-th outcome of the node's script;
/// attempts past the script, and nodes without one, play the default
/// outcome (an instant success unless set). Compensations have scripts of
/// their own. Scripting by attempt number rather than by call keeps a test
/// deterministic across recovery, when a fresh run resumes at attempt 3.
///
/// Clones share scripts and records, so keep one and register another.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use orchestrator_core::runner::{ExecutionStatus, Outcome, Registry, RunContext, Runner, ScriptedRunner};
/// use orchestrator_core::{FailureClass, JobSpec, NodeSpec};
///
/// let runner = ScriptedRunner::new();
/// runner.script("flaky", [
///     Outcome::fail(FailureClass::Transient),
///     Outcome::succeed().after(Duration::from_secs(30)),
/// ]);
/// let mut registry = Registry::new();
/// registry.register("test", runner.clone());
///
/// let spec = Arc::new(JobSpec::builder("demo").node(NodeSpec::new("flaky", "test")).build());
/// let attempt = |n| RunContext::new("job-1".parse().unwrap(), spec.clone(), 0, n);
/// let test = registry.get("test").unwrap();
/// assert_eq!(test.run(attempt(1)).await.unwrap_err().class, FailureClass::Transient);
/// assert!(test.run(attempt(2)).await.is_ok()); // 30 s pass at once on a paused clock
/// assert!(test.run(attempt(3)).await.is_ok()); // past the script: the default
///
/// let runs = runner.executions_of("flaky");
/// assert_eq!(runs.len(), 3);
/// assert_eq!(runs[0].status, ExecutionStatus::Failed(FailureClass::Transient));
/// assert_eq!(runs[1].duration(), Some(Duration::from_secs(30)));
/// assert_eq!(runner.max_in_flight(), 1);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ScriptedRunner {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    default: Option<Outcome>,
    /// Keyed by (node id, compensation?).
    scripts: HashMap<(String, bool), Vec<Outcome>>,
    executions: Vec<Execution>,
    in_flight: usize,
    max_in_flight: usize,
}

impl fmt::Debug for ScriptedRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("ScriptedRunner")
            .field("scripted_nodes", &shared.scripts.len())
            .field("executions", &shared.executions.len())
            .field("in_flight", &shared.in_flight)
            .finish_non_exhaustive()
    }
}

impl ScriptedRunner {
    /// A runner whose every attempt succeeds at once until scripted.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner whose unscripted attempts play `outcome`.
    pub fn with_default(outcome: Outcome) -> Self {
        let runner = Self::new();
        runner.set_default(outcome);
        runner
    }

    /// Sets what unscripted attempts play from now on.
    pub fn set_default(&self, outcome: Outcome) -> &Self {
        self.lock().default = Some(outcome);
        self
    }

    /// Sets (replaces) the script of `node`: attempt `n` plays the `n`-th
    /// outcome.
    pub fn script(
        &self,
        node: impl Into<String>,
        outcomes: impl IntoIterator<Item = Outcome>,
    ) -> &Self {
        self.set_script(node.into(), false, outcomes.into_iter().collect());
        self
    }

    /// Sets (replaces) the script of `node`'s compensation step.
    pub fn script_compensation(
        &self,
        node: impl Into<String>,
        outcomes: impl IntoIterator<Item = Outcome>,
    ) -> &Self {
        self.set_script(node.into(), true, outcomes.into_iter().collect());
        self
    }

    fn set_script(&self, node: String, compensation: bool, outcomes: Vec<Outcome>) {
        self.lock().scripts.insert((node, compensation), outcomes);
    }

    /// Every execution so far, in the order they started.
    pub fn executions(&self) -> Vec<Execution> {
        self.lock().executions.clone()
    }

    /// The executions of `node` (its compensations included), in the order
    /// they started.
    pub fn executions_of(&self, node: &str) -> Vec<Execution> {
        self.lock()
            .executions
            .iter()
            .filter(|e| e.node == node)
            .cloned()
            .collect()
    }

    /// How many times `node` itself (not its compensation) started.
    pub fn runs_of(&self, node: &str) -> usize {
        self.lock()
            .executions
            .iter()
            .filter(|e| e.node == node && !e.compensation)
            .count()
    }

    /// How many executions are running now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The most executions that ever ran at once.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// The state, even if a panicking outcome poisoned the lock: no panic
    /// happens while it is held, so the data is whole.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks the attempt's outcome and records its start.
    fn start(&self, ctx: &RunContext) -> (Outcome, usize) {
        let mut shared = self.lock();
        let node = ctx.node_id().to_owned();
        let compensation = ctx.is_compensation();
        let outcome = ctx
            .attempt()
            .checked_sub(1)
            .and_then(|i| {
                shared
                    .scripts
                    .get(&(node.clone(), compensation))?
                    .get(i as usize)
            })
            .or(shared.default.as_ref())
            .cloned()
            .unwrap_or_else(Outcome::succeed);
        shared.executions.push(Execution {
            job_id: ctx.job_id().clone(),
            node,
            attempt: ctx.attempt(),
            compensation,
            started: Instant::now(),
            ended: None,
            status: ExecutionStatus::Running,
        });
        shared.in_flight += 1;
        shared.max_in_flight = shared.max_in_flight.max(shared.in_flight);
        (outcome, shared.executions.len() - 1)
    }
}

/// Records the end of an execution however it ends: returned, panicked, or
/// dropped mid-way by the executor.
struct Finish<'a> {
    runner: &'a ScriptedRunner,
    index: usize,
    status: Option<ExecutionStatus>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(if std::thread::panicking() {
            ExecutionStatus::Panicked
        } else {
            ExecutionStatus::Dropped
        });
        let mut shared = self.runner.lock();
        shared.in_flight -= 1;
        if let Some(execution) = shared.executions.get_mut(self.index) {
            execution.ended = Some(Instant::now());
            execution.status = status;
        }
    }
}

#[async_trait]
impl Runner for ScriptedRunner {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let (outcome, index) = self.start(&ctx);
        let mut finish = Finish {
            runner: self,
            index,
            status: None,
        };
        let result = outcome.play(&ctx).await;
        finish.status = Some(match &result {
            Ok(_) => ExecutionStatus::Succeeded,
            Err(failure) => ExecutionStatus::Failed(failure.class),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::runner::Heartbeat;
    use crate::{JobSpec, NodeSpec};

    fn spec() -> Arc<JobSpec> {
        Arc::new(
            JobSpec::builder("scripted tests")
                .nodes((0..5).map(|i| {
                    NodeSpec::new(format!("n{i}"), "scripted").compensate("scripted", Value::Null)
                }))
                .build(),
        )
    }

    fn ctx(node: u32, attempt: u32) -> RunContext {
        RunContext::new("job-1".parse().unwrap(), spec(), node, attempt)
    }

    fn class(result: &Result<Value, Failure>) -> Option<FailureClass> {
        result.as_ref().err().map(|f| f.class)
    }

    #[test]
    fn it_is_cheap_to_share() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<ScriptedRunner>();
        let a = ScriptedRunner::new();
        let b = a.clone();
        b.script("n0", [Outcome::hang()]);
        assert_eq!(a.lock().scripts.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_follow_the_script_then_the_default() {
        let runner = ScriptedRunner::with_default(Outcome::fail(FailureClass::Permanent));
        runner.script(
            "n0",
            [
                Outcome::fail(FailureClass::Transient),
                Outcome::succeed_with(json!({"passed": 12})),
            ],
        );
        let first = runner.run(ctx(0, 1)).await;
        assert_eq!(class(&first), Some(FailureClass::Transient));
        assert_eq!(first.unwrap_err().message, "scripted transient failure");
        assert_eq!(runner.run(ctx(0, 2)).await.unwrap(), json!({"passed": 12}));
        assert_eq!(
            class(&runner.run(ctx(0, 3)).await),
            Some(FailureClass::Permanent)
        );
        // Another node is unscripted; the attempt number, not the call
        // count, picks the outcome.
        assert_eq!(
            class(&runner.run(ctx(1, 1)).await),
            Some(FailureClass::Permanent)
        );
        assert!(runner.run(ctx(0, 2)).await.is_ok());

        runner.set_default(Outcome::succeed());
        assert!(runner.run(ctx(1, 1)).await.is_ok());
        assert_eq!(runner.runs_of("n0"), 4);
        let statuses: Vec<_> = runner
            .executions()
            .iter()
            .map(|e| (e.node.clone(), e.attempt, e.status))
            .collect();
        assert_eq!(
            statuses,
            [
                (
                    "n0".to_owned(),
                    1,
                    ExecutionStatus::Failed(FailureClass::Transient)
                ),
                ("n0".to_owned(), 2, ExecutionStatus::Succeeded),
                (
                    "n0".to_owned(),
                    3,
                    ExecutionStatus::Failed(FailureClass::Permanent)
                ),
                (
                    "n1".to_owned(),
                    1,
                    ExecutionStatus::Failed(FailureClass::Permanent)
                ),
                ("n0".to_owned(), 2, ExecutionStatus::Succeeded),
                ("n1".to_owned(), 1, ExecutionStatus::Succeeded),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn compensations_have_scripts_of_their_own() {
        let runner = ScriptedRunner::new();
        runner.script("n0", [Outcome::fail(FailureClass::Permanent)]);
        runner.script_compensation("n0", [Outcome::fail(FailureClass::Transient)]);
        assert_eq!(
            class(&runner.run(ctx(0, 1)).await),
            Some(FailureClass::Permanent)
        );
        let undo = runner.run(ctx(0, 1).for_compensation()).await;
        assert_eq!(class(&undo), Some(FailureClass::Transient));
        let runs = runner.executions_of("n0");
        assert_eq!(runs.len(), 2);
        assert!(!runs[0].compensation && runs[1].compensation);
        assert_eq!(runner.runs_of("n0"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn durations_run_on_tokio_time_and_are_recorded() {
        let runner = ScriptedRunner::new();
        runner.script("n0", [Outcome::succeed().after(Duration::from_secs(90))]);
        runner.script(
            "n1",
            [Outcome::fail(FailureClass::Timeout).after(Duration::from_secs(30))],
        );
        let t0 = Instant::now();
        let (a, b) = tokio::join!(runner.run(ctx(0, 1)), runner.run(ctx(1, 1)));
        assert!(a.is_ok());
        assert_eq!(class(&b), Some(FailureClass::Timeout));
        assert_eq!(Instant::now() - t0, Duration::from_secs(90));
        let runs = runner.executions();
        assert_eq!(runs[0].started, t0);
        assert_eq!(runs[0].duration(), Some(Duration::from_secs(90)));
        assert_eq!(runs[1].duration(), Some(Duration::from_secs(30)));
        assert_eq!(runner.max_in_flight(), 2);
        assert_eq!(runner.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn max_in_flight_measures_a_concurrency_limit() {
        let runner = ScriptedRunner::with_default(Outcome::succeed().after(Duration::from_secs(1)));
        let limit = Arc::new(Semaphore::new(2));
        let attempts = (0..5).map(|node| {
            let (runner, limit) = (runner.clone(), limit.clone());
            tokio::spawn(async move {
                let _slot = limit.acquire().await.unwrap();
                runner.run(ctx(node, 1)).await
            })
        });
        let t0 = Instant::now();
        for attempt in futures::future::join_all(attempts).await {
            assert!(attempt.unwrap().is_ok());
        }
        assert_eq!(runner.max_in_flight(), 2);
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));

        let unlimited =
            ScriptedRunner::with_default(Outcome::succeed().after(Duration::from_secs(1)));
        futures::future::join_all((0..5).map(|node| unlimited.run(ctx(node, 1)))).await;
        assert_eq!(unlimited.max_in_flight(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_an_attempt_at_once() {
        let runner = ScriptedRunner::new();
        runner.script("n0", [Outcome::succeed().after(Duration::from_secs(3600))]);
        runner.script("n1", [Outcome::hang()]);
        let token = CancellationToken::new();
        let canceller = {
            let token = token.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                token.cancel();
            }
        };
        let (a, b, ()) = tokio::join!(
            runner.run(ctx(0, 1).with_cancel(token.clone())),
            runner.run(ctx(1, 1).with_cancel(token.clone())),
            canceller,
        );
        assert_eq!(class(&a), Some(FailureClass::Cancelled));
        assert_eq!(class(&b), Some(FailureClass::Cancelled));
        for run in runner.executions() {
            assert_eq!(run.duration(), Some(Duration::from_secs(5)));
            assert_eq!(run.status, ExecutionStatus::Failed(FailureClass::Cancelled));
        }

        // Cancelled past its deadline: the executor timed it out.
        let past = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let timed_out = runner
            .run(ctx(1, 1).with_cancel(token).with_deadline(Some(past)))
            .await;
        assert_eq!(class(&timed_out), Some(FailureClass::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_can_ignore_cancellation() {
        let runner = ScriptedRunner::with_default(
            Outcome::succeed()
                .after(Duration::from_secs(10))
                .ignoring_cancel(),
        );
        let token = CancellationToken::new();
        token.cancel();
        let t0 = Instant::now();
        assert!(runner.run(ctx(0, 1).with_cancel(token)).await.is_ok());
        assert_eq!(Instant::now() - t0, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_and_panicking_attempts_are_recorded() {
        let runner = ScriptedRunner::new();
        runner.script("n0", [Outcome::hang()]);
        runner.script("n1", [Outcome::panic("boom").after(Duration::from_secs(2))]);

        let hung = runner.run(ctx(0, 1));
        let gave_up = tokio::time::timeout(Duration::from_secs(7), hung).await;
        assert!(gave_up.is_err());
        let panicked = tokio::spawn({
            let runner = runner.clone();
            async move { runner.run(ctx(1, 1)).await }
        })
        .await
        .unwrap_err();
        assert!(panicked.is_panic());

        let runs = runner.executions();
        assert_eq!(runs[0].status, ExecutionStatus::Dropped);
        assert_eq!(runs[0].duration(), Some(Duration::from_secs(7)));
        assert_eq!(runs[1].status, ExecutionStatus::Panicked);
        assert_eq!(runs[1].duration(), Some(Duration::from_secs(2)));
        assert_eq!(runner.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beating_outcomes_beat_and_others_do_not() {
        let runner = ScriptedRunner::new();
        runner.script(
            "n0",
            [Outcome::succeed()
                .after(Duration::from_secs(10))
                .beating(Duration::from_secs(1))],
        );
        runner.script("n1", [Outcome::succeed().after(Duration::from_secs(10))]);
        let beating = Heartbeat::live();
        let silent = Heartbeat::live();
        let (a, b) = tokio::join!(
            runner.run(ctx(0, 1).with_heartbeat(beating.clone())),
            runner.run(ctx(1, 1).with_heartbeat(silent.clone())),
        );
        assert!(a.is_ok() && b.is_ok());
        assert!(beating.beats() >= 10, "{} beats", beating.beats());
        assert!(beating.since_last().unwrap() <= Duration::from_secs(1));
        assert_eq!(silent.beats(), 0);
        assert_eq!(silent.since_last(), Some(Duration::from_secs(10)));
    }
}
