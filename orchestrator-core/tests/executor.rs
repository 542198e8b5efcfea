//! Executor behaviour, deterministic under paused tokio time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::journal::{Progress, Record, Snapshot};
use orchestrator_core::store::{JobPage, JobQuery};
use orchestrator_core::{
    Event, Executor, ExecutorConfig, ExecutorError, Failure, FailureClass, JobId, JobSpec,
    JobState, JobSummary, JobView, MemoryStore, NodeSpec, NodeState, Registry, RunContext, Runner,
    Store, StoreError, StoreExt, TriggerRule,
};
use serde_json::Value;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    Fail(FailureClass),
    /// Never finishes on its own (only cancellation or a timeout ends it).
    Hang,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    after: Duration,
    outcome: Outcome,
}

#[derive(Clone, Debug)]
struct Run {
    node: String,
    attempt: u32,
    start: Instant,
    end: Option<Instant>,
}

/// A runner whose outcome per (node, attempt) a test scripts, and which
/// records every execution and the most attempts in flight at once.
#[derive(Clone, Default)]
struct Probe(Arc<ProbeInner>);

#[derive(Default)]
struct ProbeInner {
    script: Mutex<HashMap<String, Vec<Step>>>,
    runs: Mutex<Vec<Run>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Probe {
    fn script(&self, node: &str, steps: &[(u64, Outcome)]) -> &Self {
        let steps = steps
            .iter()
            .map(|&(ms, outcome)| Step {
                after: Duration::from_millis(ms),
                outcome,
            })
            .collect();
        self.0.script.lock().unwrap().insert(node.to_owned(), steps);
        self
    }

    fn runs(&self) -> Vec<Run> {
        self.0.runs.lock().unwrap().clone()
    }

    fn runs_of(&self, node: &str) -> usize {
        self.runs().iter().filter(|r| r.node == node).count()
    }

    fn max_in_flight(&self) -> usize {
        self.0.max_in_flight.load(Ordering::SeqCst)
    }
}

struct InFlight<'a>(&'a ProbeInner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Runner for Probe {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let node = ctx.node_id().to_owned();
        let step = {
            let script = self.0.script.lock().unwrap();
            script
                .get(&node)
                .and_then(|s| s.get(ctx.attempt() as usize - 1).or(s.last()).copied())
                .unwrap_or(Step {
                    after: Duration::from_secs(1),
                    outcome: Outcome::Ok,
                })
        };
        let index = {
            let mut runs = self.0.runs.lock().unwrap();
            runs.push(Run {
                node,
                attempt: ctx.attempt(),
                start: Instant::now(),
                end: None,
            });
            runs.len() - 1
        };
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(&self.0);
        let outcome = tokio::select! {
            () = tokio::time::sleep(step.after) => step.outcome,
            () = ctx.cancelled() => Outcome::Fail(FailureClass::Cancelled),
        };
        let result = match outcome {
            Outcome::Ok => Ok(Value::Null),
            Outcome::Fail(class) => Err(Failure::new(class, "scripted failure")),
            Outcome::Hang => {
                ctx.cancelled().await;
                Err(Failure::cancelled("stopped"))
            }
        };
        self.0.runs.lock().unwrap()[index].end = Some(Instant::now());
        result
    }
}

fn registry(probe: &Probe) -> Registry {
    let mut r = Registry::with_builtins();
    r.register("probe", probe.clone());
    r
}

async fn executor_with(store: Arc<dyn Store>, probe: &Probe, config: ExecutorConfig) -> Executor {
    Executor::builder(store)
        .registry(registry(probe))
        .config(config)
        .start()
        .await
        .unwrap()
}

async fn executor(probe: &Probe) -> Executor {
    executor_with(
        Arc::new(MemoryStore::new()),
        probe,
        ExecutorConfig::default(),
    )
    .await
}

fn node(id: &str) -> NodeSpec {
    NodeSpec::new(id, "probe")
}

fn state_of(status: &orchestrator_core::JobStatus, id: &str) -> NodeState {
    status.node(id).unwrap().state
}

/// Every node started only after each upstream finished.
fn assert_dependency_order(probe: &Probe, spec: &JobSpec) {
    let runs = probe.runs();
    for n in spec.nodes() {
        let starts = runs.iter().filter(|r| r.node == n.id).map(|r| r.start);
        for start in starts {
            for dep in &n.depends_on {
                let dep_end = runs
                    .iter()
                    .filter(|r| &r.node == dep)
                    .filter_map(|r| r.end)
                    .max();
                assert!(
                    dep_end.is_some_and(|e| e <= start),
                    "{} started before {dep} ended",
                    n.id
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn runs_a_diamond_in_dependency_order() {
    let probe = Probe::default();
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("diamond")
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .node(node("c").depends_on(["a"]))
        .node(node("d").depends_on(["b", "c"]))
        .build();
    let id = ex.submit(spec.clone(), "alice").await.unwrap();
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.progress_percent, 100.0);
    assert!(status
        .nodes
        .iter()
        .all(|n| n.state == NodeState::Succeeded && n.attempts == 1));
    assert_dependency_order(&probe, &spec);
    // b and c ran in parallel.
    assert_eq!(probe.max_in_flight(), 2);
    // The journal replays to the same state, and the summary agrees.
    let view = ex.store().load_view(&id).await.unwrap();
    assert_eq!(view.state, JobState::Succeeded);
    let summary = ex.store().summary(&id).await.unwrap();
    assert_eq!(summary.progress, view.progress());
    assert_eq!(summary.owner, "alice");
}

#[tokio::test(start_paused = true)]
async fn failures_propagate_through_trigger_rules() {
    let probe = Probe::default();
    probe.script("a", &[(10, Outcome::Fail(FailureClass::Permanent))]);
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("triggers")
        .node(node("a"))
        .node(node("ok"))
        .node(node("needs_a").depends_on(["a"]))
        .node(node("after_needs_a").depends_on(["needs_a"]))
        .node(
            node("report")
                .depends_on(["a", "ok"])
                .trigger(TriggerRule::AllDone),
        )
        .node(
            node("on_failure")
                .depends_on(["a"])
                .trigger(TriggerRule::OneFailed),
        )
        .node(
            node("all_failed")
                .depends_on(["a"])
                .trigger(TriggerRule::AllFailed),
        )
        .node(
            node("not_all_failed")
                .depends_on(["a", "ok"])
                .trigger(TriggerRule::AllFailed),
        )
        .node(
            node("one_success")
                .depends_on(["a", "ok"])
                .trigger(TriggerRule::OneSuccess),
        )
        .node(
            node("none_failed")
                .depends_on(["a"])
                .trigger(TriggerRule::NoneFailed),
        )
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Failed);
    let expect = [
        ("a", NodeState::Failed),
        ("ok", NodeState::Succeeded),
        ("needs_a", NodeState::UpstreamFailed),
        ("after_needs_a", NodeState::UpstreamFailed),
        ("report", NodeState::Succeeded),
        ("on_failure", NodeState::Succeeded),
        ("all_failed", NodeState::Succeeded),
        ("not_all_failed", NodeState::Skipped),
        ("one_success", NodeState::Succeeded),
        ("none_failed", NodeState::UpstreamFailed),
    ];
    for (id, state) in expect {
        assert_eq!(state_of(&s, id), state, "{id}");
    }
    assert_eq!(
        s.node("a").unwrap().last_error.as_ref().unwrap().class,
        FailureClass::Permanent
    );
    assert_eq!(probe.runs_of("needs_a"), 0);
}

#[tokio::test(start_paused = true)]
async fn skips_cascade_and_none_failed_tolerates_them() {
    let probe = Probe::default();
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("skips")
        .node(node("a"))
        .node(
            node("only_on_failure")
                .depends_on(["a"])
                .trigger(TriggerRule::AllFailed),
        )
        .node(node("downstream").depends_on(["only_on_failure"]))
        .node(
            node("tolerant")
                .depends_on(["only_on_failure", "a"])
                .trigger(TriggerRule::NoneFailed),
        )
        .node(
            node("strict")
                .depends_on(["only_on_failure"])
                .trigger(TriggerRule::NoneSkipped),
        )
        .build();
    let id = ex.submit(spec, "bob").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(
        s.state,
        JobState::Succeeded,
        "skipped nodes do not fail a job"
    );
    assert_eq!(state_of(&s, "only_on_failure"), NodeState::Skipped);
    assert_eq!(state_of(&s, "downstream"), NodeState::Skipped);
    assert_eq!(state_of(&s, "tolerant"), NodeState::Succeeded);
    assert_eq!(state_of(&s, "strict"), NodeState::Skipped);
}

#[tokio::test(start_paused = true)]
async fn respects_global_job_and_pool_limits() {
    let probe = Probe::default();
    let config = ExecutorConfig {
        max_concurrent_nodes: 3,
        ..ExecutorConfig::default()
    };
    let ex = executor_with(Arc::new(MemoryStore::new()), &probe, config).await;
    let wide = |name: &str| {
        JobSpec::builder(name)
            .nodes((0..12).map(|i| node(&format!("n{i}"))))
            .build()
    };
    let id = ex.submit(wide("global"), "a").await.unwrap();
    ex.wait(&id).await.unwrap();
    assert_eq!(probe.max_in_flight(), 3);

    let probe = Probe::default();
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("per-job")
        .max_concurrency(2)
        .nodes((0..12).map(|i| node(&format!("n{i}"))))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    ex.wait(&id).await.unwrap();
    assert_eq!(probe.max_in_flight(), 2);

    let probe = Probe::default();
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("pools")
        .pool("browser", 1)
        .nodes((0..6).map(|i| node(&format!("ui{i}")).pool("browser")))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(probe.max_in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn dispatches_by_priority_then_critical_path() {
    let probe = Probe::default();
    let config = ExecutorConfig {
        max_concurrent_nodes: 1,
        ..ExecutorConfig::default()
    };
    let ex = executor_with(Arc::new(MemoryStore::new()), &probe, config).await;
    let spec = JobSpec::builder("order")
        .node(node("low"))
        .node(node("high").priority(5))
        .node(node("long_head"))
        .node(node("long_tail").depends_on(["long_head"]))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    ex.wait(&id).await.unwrap();
    let order: Vec<String> = probe.runs().into_iter().map(|r| r.node).collect();
    assert_eq!(order, ["high", "long_head", "low", "long_tail"]);
}

#[tokio::test(start_paused = true)]
async fn cancellation_is_graceful_and_final() {
    let probe = Probe::default();
    probe.script("slow", &[(0, Outcome::Hang)]);
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("cancel")
        .node(node("slow"))
        .node(node("after").depends_on(["slow"]))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ex.status(&id).await.unwrap().state, JobState::Running);
    ex.cancel(&id, Some("user asked".into())).await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Cancelled);
    assert_eq!(s.cancel_reason.as_deref(), Some("user asked"));
    assert_eq!(state_of(&s, "slow"), NodeState::Cancelled);
    assert_eq!(state_of(&s, "after"), NodeState::Cancelled);
    match ex.cancel(&id, None).await {
        Err(ExecutorError::AlreadyFinished { state, .. }) => assert_eq!(state, JobState::Cancelled),
        other => panic!("expected AlreadyFinished, got {other:?}"),
    }
    let missing: JobId = "no-such-job".parse().unwrap();
    assert!(matches!(
        ex.cancel(&missing, None).await,
        Err(ExecutorError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn node_timeout_ends_the_attempt() {
    let probe = Probe::default();
    probe.script("stuck", &[(0, Outcome::Hang)]);
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("timeouts")
        .retry(serde_json::from_value(serde_json::json!({"max_attempts": 1})).unwrap())
        .node(node("stuck").timeout(Duration::from_secs(2)))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Failed);
    assert_eq!(state_of(&s, "stuck"), NodeState::TimedOut);
    assert_eq!(
        s.node("stuck").unwrap().last_error.as_ref().unwrap().class,
        FailureClass::Timeout
    );
}

#[tokio::test(start_paused = true)]
async fn job_timeout_stops_everything() {
    let probe = Probe::default();
    probe.script("forever", &[(0, Outcome::Hang)]);
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("job-timeout")
        .timeout(Duration::from_secs(30))
        .node(node("forever"))
        .node(node("next").depends_on(["forever"]))
        .build();
    let started = Instant::now();
    let id = ex.submit(spec, "a").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::TimedOut);
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(31));
    assert_eq!(state_of(&s, "next"), NodeState::Cancelled);
}

/// A runner that never beats its heartbeat.
struct Silent;

#[async_trait]
impl Runner for Silent {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        ctx.cancelled().await;
        Err(Failure::cancelled("stopped"))
    }
}

#[tokio::test(start_paused = true)]
async fn missed_heartbeats_are_an_infrastructure_failure() {
    let mut registry = Registry::with_builtins();
    registry.register("silent", Silent);
    let ex = Executor::builder(Arc::new(MemoryStore::new()))
        .registry(registry)
        .start()
        .await
        .unwrap();
    let spec = JobSpec::builder("heartbeat")
        .retry(serde_json::from_value(serde_json::json!({"max_attempts": 1})).unwrap())
        .node(NodeSpec::new("quiet", "silent").heartbeat_timeout(Duration::from_secs(3)))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    let err = s.node("quiet").unwrap().last_error.clone().unwrap();
    assert_eq!(err.class, FailureClass::Infrastructure);
    assert_eq!(state_of(&s, "quiet"), NodeState::Failed);
}

#[tokio::test(start_paused = true)]
async fn unknown_types_are_rejected_before_anything_is_stored() {
    let probe = Probe::default();
    let ex = executor(&probe).await;
    let spec = JobSpec::builder("bad")
        .node(NodeSpec::new("x", "warp_drive"))
        .build();
    match ex.submit(spec, "a").await {
        Err(ExecutorError::Invalid(e)) => {
            assert_eq!(e.problems()[0].path, "/dag_definition/nodes/0/type");
            assert!(e.has(orchestrator_core::ProblemCode::UnknownNodeType));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(ex.list(&JobQuery::default()).await.unwrap().jobs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_every_event_in_order() {
    let probe = Probe::default();
    let ex = executor(&probe).await;
    let mut sub = ex.subscribe();
    let spec = JobSpec::builder("events")
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    ex.wait(&id).await.unwrap();
    let mut names = Vec::new();
    let mut last_seq = 0;
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(10), sub.recv())
        .await
        .unwrap_or(Ok(None))
    {
        assert_eq!(n.job, id);
        assert_eq!(n.record.seq, last_seq + 1, "no gaps, in order");
        last_seq = n.record.seq;
        names.push(n.record.event.name());
    }
    assert_eq!(names.first(), Some(&"execution.submitted"));
    assert!(names.contains(&"execution.started"));
    assert_eq!(names.iter().filter(|n| **n == "node.succeeded").count(), 2);
    assert_eq!(names.last(), Some(&"execution.completed"));
    assert_eq!(last_seq, ex.status(&id).await.unwrap().version);
}

/// A node that starts as soon as it is ready is journaled as started only;
/// one that waits for a slot is journaled ready first, then started.
#[tokio::test(start_paused = true)]
async fn only_nodes_that_wait_are_journaled_ready() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let probe = Probe::default();
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    // One slot: of the two roots, one starts at once and one waits for it;
    // `c` starts as soon as both are done.
    let spec = JobSpec::builder("slots")
        .max_concurrency(1)
        .node(node("a"))
        .node(node("b"))
        .node(node("c").depends_on(["a", "b"]))
        .build();
    let id = ex.submit(spec, "o").await.unwrap();
    let summary = ex.wait_summary(&id).await.unwrap();
    assert_eq!(summary.progress.state, JobState::Succeeded);
    assert_eq!(summary.progress.nodes_finished, 3);
    let records = store.read_all(&id, 0).await.unwrap();
    let of = |node: u32| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.event.node() == Some(node))
            .map(|r| r.event.name())
            .collect()
    };
    let (first, second) = if of(0)[0] == "node.started" {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(of(first), ["node.started", "node.succeeded"]);
    assert_eq!(of(second), ["node.ready", "node.started", "node.succeeded"]);
    assert_eq!(of(2), ["node.started", "node.succeeded"]);
    // The journal folds to the same states either way.
    let view = JobView::replay(&records).unwrap();
    assert_eq!(view.count(NodeState::Succeeded), 3);
    // And the full status agrees with the summary.
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, summary.progress.state);
    assert_eq!(status.version, summary.progress.version);
}

#[tokio::test(start_paused = true)]
async fn recovery_never_reruns_succeeded_nodes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let probe = Probe::default();
    probe.script("b", &[(0, Outcome::Hang), (1_000, Outcome::Ok)]);
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let spec = JobSpec::builder("recover")
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .node(node("c").depends_on(["b"]))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = ex.status(&id).await.unwrap();
    assert_eq!(state_of(&before, "a"), NodeState::Succeeded);
    assert_eq!(state_of(&before, "b"), NodeState::Running);
    drop(ex); // the "crash"

    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(
        probe.runs_of("a"),
        1,
        "a succeeded before the crash and must not run again"
    );
    let b_attempts: Vec<u32> = probe
        .runs()
        .iter()
        .filter(|r| r.node == "b")
        .map(|r| r.attempt)
        .collect();
    assert_eq!(
        b_attempts,
        [1, 2],
        "the interrupted attempt is retried as attempt 2"
    );
    let b = s.node("b").unwrap();
    assert_eq!(b.attempts, 2);
    let records = store.read_all(&id, 0).await.unwrap();
    let interrupted = records.iter().any(|r| {
        matches!(&r.event, Event::NodeFailed { node: 1, attempt: 1, failure, .. } if failure.class == FailureClass::Infrastructure)
    });
    assert!(
        interrupted,
        "the in-flight attempt is journaled as interrupted"
    );
    assert!(records.iter().any(|r| r.event == Event::RecoveryStarted));
    assert!(records.iter().any(|r| r.event == Event::RecoveryFinished));
    assert!(JobView::replay(&records).is_ok());
}

/// Wraps a store and fails the next `n` appends (and `n` creates) with
/// `Unavailable`.
struct Flaky {
    inner: MemoryStore,
    fail_next: AtomicUsize,
    failures: AtomicUsize,
    fail_creates: AtomicUsize,
}

orchestrator_core::forward_store_extensions!(Flaky => inner);

#[async_trait]
impl Store for Flaky {
    async fn create_job(&self, s: &JobSummary, r: &[Record]) -> Result<(), StoreError> {
        let left = self
            .fail_creates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if let Ok(n) = left {
            // Every other failure lands the create first (a lost reply).
            if n % 2 == 0 {
                self.inner.create_job(s, r).await?;
            }
            return Err(StoreError::Unavailable {
                message: "injected".into(),
                source: None,
            });
        }
        self.inner.create_job(s, r).await
    }
    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        p: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
            // Half the failures land the write anyway (a timeout after commit).
            if self.failures.load(Ordering::SeqCst) % 2 == 0 {
                self.inner.append(job, expected, records, p, fence).await?;
            }
            return Err(StoreError::Unavailable {
                message: "injected".into(),
                source: None,
            });
        }
        self.inner.append(job, expected, records, p, fence).await
    }
    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
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

#[tokio::test(start_paused = true)]
async fn store_outages_pause_the_job_and_lose_nothing() {
    let store = Arc::new(Flaky {
        inner: MemoryStore::new(),
        fail_next: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        fail_creates: AtomicUsize::new(0),
    });
    let probe = Probe::default();
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let spec = JobSpec::builder("outage")
        .nodes((0..5).map(|i| node(&format!("n{i}"))))
        .node(node("join").depends_on((0..5).map(|i| format!("n{i}"))))
        .build();
    let id = ex.submit(spec, "a").await.unwrap();
    store.fail_next.store(6, Ordering::SeqCst);
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(store.failures.load(Ordering::SeqCst), 6);
    assert_eq!(probe.runs().len(), 6, "no node ran twice");
    let records = store.read_all(&id, 0).await.unwrap();
    let view = JobView::replay(&records).unwrap();
    assert_eq!(view.state, JobState::Succeeded);
    assert_eq!(store.summary(&id).await.unwrap().progress, view.progress());
}

#[tokio::test(start_paused = true)]
async fn one_unreadable_job_does_not_stop_recovery_of_the_others() {
    use orchestrator_core::journal::JobHeader;
    use orchestrator_core::Timestamp;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let probe = Probe::default();
    probe.script("slow", &[(0, Outcome::Hang), (10, Outcome::Ok)]);
    // A healthy job, left running by a "crashed" executor.
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let healthy = ex
        .submit(JobSpec::builder("healthy").node(node("slow")).build(), "a")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(ex);
    // A job whose journal is an illegal sequence (a node succeeded without
    // ever starting).
    let id: JobId = "broken-job".parse().unwrap();
    let header = Arc::new(JobHeader {
        id: id.clone(),
        owner: "a".into(),
        created_at: Timestamp(1),
        spec: Arc::new(JobSpec::builder("broken").node(node("x")).build()),
    });
    let records = [
        Record {
            seq: 1,
            at: Timestamp(1),
            event: Event::Submitted {
                header: header.clone(),
            },
        },
        Record {
            seq: 2,
            at: Timestamp(1),
            event: Event::NodeSucceeded {
                node: 0,
                attempt: 1,
                output: serde_json::Value::Null,
            },
        },
    ];
    let summary = JobView::new(header).summary();
    store.create_job(&summary, &records).await.unwrap();

    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let failures = ex.recovery_failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].job, id);
    assert!(
        failures[0].error.to_string().contains("broken-job"),
        "{}",
        failures[0].error
    );
    assert_eq!(ex.wait(&healthy).await.unwrap().state, JobState::Succeeded);
    // The unreadable job is left exactly as stored.
    assert_eq!(store.read_all(&id, 0).await.unwrap(), records);
}

#[tokio::test(start_paused = true)]
async fn recovery_can_be_limited_to_chosen_jobs() {
    use orchestrator_core::Recovery;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let probe = Probe::default();
    probe.script("w", &[(0, Outcome::Hang), (10, Outcome::Ok)]);
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let spec = JobSpec::builder("interrupted").node(node("w")).build();
    let a = ex.submit(spec.clone(), "x").await.unwrap();
    let b = ex.submit(spec, "x").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(ex);

    let start = |recovery| {
        Executor::builder(store.clone())
            .registry(registry(&probe))
            .recovery(recovery)
            .start()
    };
    let none = start(Recovery::None).await.unwrap();
    assert!(none.active_jobs().await.unwrap().is_empty());
    drop(none);
    let only_a = start(Recovery::Only(vec![a.clone()])).await.unwrap();
    assert_eq!(only_a.active_jobs().await.unwrap(), vec![a.clone()]);
    assert_eq!(only_a.wait(&a).await.unwrap().state, JobState::Succeeded);
    assert_eq!(
        store.summary(&b).await.unwrap().progress.state,
        JobState::Running
    );
}

/// A code-defined job: nodes that run themselves.
struct Build(Probe);
struct Ship(Probe);

#[async_trait]
impl orchestrator_core::code::Node for Build {
    fn id(&self) -> &str {
        "build"
    }
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        self.0.run(ctx).await
    }
}

#[async_trait]
impl orchestrator_core::code::Node for Ship {
    fn id(&self) -> &str {
        "ship"
    }
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("ship", "").depends_on(["build"])
    }
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        self.0.run(ctx).await
    }
}

struct Release(Probe);

impl orchestrator_core::code::Job for Release {
    fn name(&self) -> &str {
        "release"
    }
    fn nodes(&self) -> Vec<Arc<dyn orchestrator_core::code::Node>> {
        vec![
            Arc::new(Build(self.0.clone())),
            Arc::new(Ship(self.0.clone())),
        ]
    }
    fn configure(
        &self,
        spec: orchestrator_core::spec::JobSpecBuilder,
    ) -> orchestrator_core::spec::JobSpecBuilder {
        spec.label("kind", "code")
    }
}

#[tokio::test(start_paused = true)]
async fn code_jobs_run_and_resume_like_any_other() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let probe = Probe::default();
    probe.script("ship", &[(0, Outcome::Hang), (10, Outcome::Ok)]);
    let job = Release(probe.clone());
    let ex = Executor::builder(store.clone()).start().await.unwrap();
    let id = ex.submit_job(&job, "dev").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = ex.status(&id).await.unwrap();
    assert_eq!(state_of(&s, "build"), NodeState::Succeeded);
    assert_eq!(s.node("ship").unwrap().kind, "code:release/ship");
    assert_eq!(s.labels.get("kind").map(String::as_str), Some("code"));
    drop(ex);

    // After a restart, registering the job lets recovery find its nodes.
    let ex = Executor::builder(store.clone())
        .job(&job)
        .start()
        .await
        .unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(probe.runs_of("build"), 1);
    assert_eq!(probe.runs_of("ship"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_submit_whose_create_fails_or_loses_its_reply_is_retried() {
    let store = Arc::new(Flaky {
        inner: MemoryStore::new(),
        fail_next: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        // The first failure does not land, the second lands but loses its
        // reply; the third try is acknowledged as an identical repeat.
        fail_creates: AtomicUsize::new(2),
    });
    let probe = Probe::default();
    let ex = executor_with(store.clone(), &probe, ExecutorConfig::default()).await;
    let id = ex
        .submit(JobSpec::builder("eventually").node(node("a")).build(), "a")
        .await
        .expect("retried until the store answers");
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
    assert_eq!(probe.runs_of("a"), 1);

    // A store that stays down: the error comes back after a few tries, and
    // nothing runs.
    store.fail_creates.store(1_000, Ordering::SeqCst);
    let err = ex
        .submit(JobSpec::builder("never").node(node("b")).build(), "a")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecutorError::Store(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert_eq!(probe.runs_of("b"), 0);
}

/// More commands than the scheduler folds into one iteration, all sent
/// before it runs: the ones left on the channel must be taken in the
/// iterations after, without waiting for another command, an attempt or
/// the keeper's next ping (the heartbeat is 5 s; the deadline is 1 s of
/// paused time, reached only if every task is idle with replies owed).
#[tokio::test(start_paused = true)]
async fn a_flood_of_commands_is_answered_without_another_wake_up() {
    let ex = executor(&Probe::default()).await;
    let calls = (0..10_000).map(|_| ex.active_jobs());
    let answers = tokio::time::timeout(Duration::from_secs(1), futures::future::join_all(calls))
        .await
        .expect("every command is answered");
    assert_eq!(answers.len(), 10_000);
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(Vec::is_empty)));
}
