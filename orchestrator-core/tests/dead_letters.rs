//! The dead-letter queue end to end through the executor, under paused
//! time: what lands in it (exhausted retries, non-retryable classes, failed
//! compensations) with its history, requeue continuing the job's downstream
//! nodes, discard, and entries a crash left unwritten.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::journal::{JobSummary, Progress, Snapshot};
use orchestrator_core::retry::{Backoff, RetrySpec};
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::store::dead_letter::{
    AttemptDecision, DeadLetter, DeadLetterId, DeadLetterPage, DeadLetterQuery, DeadLetterReason,
    DeadLetterStatus, Resolution, Resolve,
};
use orchestrator_core::store::{DeadLetterStore, JobPage, JobQuery};
use orchestrator_core::{
    DeadLetterError, Event, Executor, ExecutorError, FailureClass, JobId, JobSpec, JobState,
    JobView, MemoryStore, NodeSpec, NodeState, OnFailure, Record, Registry, Store, StoreError,
    StoreExt,
};
use serde_json::json;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn setup() -> (Arc<dyn Store>, ScriptedRunner, Registry) {
    let runner = ScriptedRunner::with_default(Outcome::succeed().after(Duration::from_millis(100)));
    let mut registry = Registry::with_builtins();
    registry.register("work", runner.clone());
    registry.register("undo", runner.clone());
    (Arc::new(MemoryStore::new()), runner, registry)
}

async fn executor(store: &Arc<dyn Store>, registry: &Registry) -> Executor {
    Executor::builder(store.clone())
        .registry(registry.clone())
        .start()
        .await
        .unwrap()
}

fn node(id: &str) -> NodeSpec {
    NodeSpec::new(id, "work").params(json!({"test": id}))
}

fn fail(class: FailureClass) -> Outcome {
    Outcome::fail(class).after(Duration::from_millis(100))
}

fn names(records: &[Record]) -> Vec<&'static str> {
    records.iter().map(|r| r.event.name()).collect()
}

async fn entries(ex: &Executor, job: &JobId) -> Vec<DeadLetter> {
    ex.dead_letters(&DeadLetterQuery {
        job: Some(job.clone()),
        ..DeadLetterQuery::default()
    })
    .await
    .unwrap()
    .dead_letters
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_land_with_their_full_history() {
    let (store, runner, registry) = setup();
    runner.script("flaky", (0..3).map(|_| fail(FailureClass::Transient)));
    let ex = executor(&store, &registry).await;
    let retry = RetrySpec::new()
        .max_attempts(3)
        .backoff(Backoff::fixed(secs(5)));
    let spec = JobSpec::builder("exhaust")
        .node(node("ok"))
        .node(node("flaky").retry(retry))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Failed);

    let all = entries(&ex, &id).await;
    assert_eq!(all.len(), 1, "only the failed node is dead-lettered");
    let d = &all[0];
    assert_eq!(d.id, DeadLetterId::new(id.clone(), 1, 1));
    assert_eq!(d.id.to_string(), format!("{id}.1.1"));
    assert_eq!(
        (
            d.job_name.as_str(),
            d.owner.as_str(),
            d.node.as_str(),
            d.node_type.as_str()
        ),
        ("exhaust", "alice", "flaky", "work")
    );
    assert_eq!(d.params, json!({"test": "flaky"}));
    assert_eq!(d.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(d.status, DeadLetterStatus::Open);
    assert_eq!(d.failure.class, FailureClass::Transient);
    let history: Vec<_> = d
        .attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.retry_in_ms,
                a.decision,
                a.failure.as_ref().map(|f| f.class),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (
                1,
                Some(5_000),
                AttemptDecision::Retry,
                Some(FailureClass::Transient)
            ),
            (
                2,
                Some(5_000),
                AttemptDecision::Retry,
                Some(FailureClass::Transient)
            ),
            (
                3,
                None,
                AttemptDecision::GiveUp,
                Some(FailureClass::Transient)
            ),
        ]
    );
    for a in &d.attempts {
        let end = a.ended_at.expect("every attempt ended");
        assert!(end >= a.started_at);
    }
    // Journaled first, with an escalation; the entry equals the journal's.
    let records = store.read_all(&id, 0).await.unwrap();
    let n = names(&records);
    let at = |name| {
        n.iter()
            .position(|x| *x == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert!(at("node.failed") < at("node.dead_lettered"));
    assert!(at("node.dead_lettered") < at("execution.failed"));
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::EscalationRequired { node: Some(1), reason, cause: Some(orchestrator_core::recovery::EscalationCause::DeadLettered) } if reason.contains("dead-lettered"))));
    assert_eq!(
        orchestrator_core::store::dead_letter::from_journal(&records),
        all
    );
    assert_eq!(ex.dead_letter(&d.id).await.unwrap(), *d);
    assert_eq!(JobView::replay(&records).unwrap().nodes[1].dead_letters, 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_lands_after_one_attempt() {
    let (store, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("perm").node(node("broken")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    assert_eq!(runner.runs_of("broken"), 1);
    let all = entries(&ex, &id).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].reason, DeadLetterReason::NonRetryable);
    assert_eq!(all[0].attempts.len(), 1);
    assert_eq!(all[0].attempts[0].decision, AttemptDecision::GiveUp);
    assert_eq!(all[0].failure.class, FailureClass::Permanent);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_dead_letters_nothing() {
    let (store, runner, registry) = setup();
    runner.script("slow", [Outcome::succeed().after(secs(60))]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("cancel").node(node("slow")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(secs(1)).await;
    ex.cancel(&id, None).await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Cancelled);
    assert!(entries(&ex, &id).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_compensation_lands_and_can_be_discarded_not_requeued() {
    let (store, runner, registry) = setup();
    runner.script("c", [fail(FailureClass::Permanent)]);
    runner.script_compensation("a", [fail(FailureClass::Permanent)]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("saga")
        .on_failure(OnFailure::Rollback)
        .node(node("a").compensate("undo", json!({})))
        .node(node("c").depends_on(["a"]))
        .build();
    let id = ex.submit(spec, "ops").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::RollbackIncomplete);
    assert_eq!(s.node("a").unwrap().state, NodeState::DeadLettered);
    let all = entries(&ex, &id).await;
    let reasons: Vec<_> = all.iter().map(|d| (d.node.as_str(), d.reason)).collect();
    assert!(
        reasons.contains(&("a", DeadLetterReason::CompensationFailed)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("c", DeadLetterReason::NonRetryable)),
        "{reasons:?}"
    );
    let comp = all.iter().find(|d| d.node == "a").unwrap();
    assert!(comp.attempts.iter().all(|a| a.compensation));
    assert_eq!(
        comp.attempts.last().unwrap().decision,
        AttemptDecision::GiveUp
    );
    match ex.requeue(&comp.id, "bob").await {
        Err(ExecutorError::DeadLetter(DeadLetterError::NotRequeueable { .. })) => {}
        other => panic!("a compensation cannot be requeued: {other:?}"),
    }
    ex.discard(&comp.id, "bob", "undone by hand").await.unwrap();
    assert_eq!(
        ex.dead_letter(&comp.id).await.unwrap().status,
        DeadLetterStatus::Discarded
    );
}

#[tokio::test(start_paused = true)]
async fn requeue_runs_the_node_again_and_the_downstream_continues() {
    let (store, runner, registry) = setup();
    // b exhausts its two attempts; after the requeue it fails once more
    // (retried: the budget is fresh) and then succeeds.
    runner.script(
        "b",
        [
            fail(FailureClass::Transient),
            fail(FailureClass::Transient),
            fail(FailureClass::Transient),
            Outcome::succeed_with(json!("fixed")).after(Duration::from_millis(100)),
        ],
    );
    let ex = executor(&store, &registry).await;
    let retry = RetrySpec::new()
        .max_attempts(2)
        .backoff(Backoff::fixed(secs(1)));
    let spec = JobSpec::builder("requeue")
        .node(node("a"))
        .node(node("b").depends_on(["a"]).retry(retry))
        .node(node("c").depends_on(["b"]))
        .node(node("d").depends_on(["c"]))
        .node(node("x"))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Failed);
    assert_eq!(s.node("c").unwrap().state, NodeState::UpstreamFailed);
    assert_eq!(s.node("d").unwrap().state, NodeState::UpstreamFailed);
    let d = entries(&ex, &id).await.remove(0);
    assert_eq!(d.reason, DeadLetterReason::RetriesExhausted);

    assert_eq!(ex.requeue(&d.id, "bob").await.unwrap(), id);
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded, "{s:?}");
    for n in ["a", "b", "c", "d", "x"] {
        assert_eq!(s.node(n).unwrap().state, NodeState::Succeeded, "{n}");
    }
    assert_eq!(runner.runs_of("a"), 1, "a succeeded node never runs again");
    assert_eq!(runner.runs_of("x"), 1);
    assert_eq!(
        runner.runs_of("b"),
        4,
        "two attempts, requeue, one retry, success"
    );
    assert_eq!((runner.runs_of("c"), runner.runs_of("d")), (1, 1));

    let stored = ex.dead_letter(&d.id).await.unwrap();
    assert_eq!(stored.status, DeadLetterStatus::Requeued);
    assert_eq!(stored.resolution.as_ref().unwrap().by, "bob");
    let records = store.read_all(&id, 0).await.unwrap();
    let n = names(&records);
    for name in ["execution.reopened", "dead_letter.requeued", "node.reset"] {
        assert!(n.contains(&name), "{name} journaled");
    }
    assert_eq!(
        n.iter().filter(|x| **x == "node.reset").count(),
        2,
        "c and d"
    );
    assert_eq!(n.iter().filter(|x| **x == "node.dead_lettered").count(), 1);
    assert_eq!(n.last(), Some(&"execution.completed"));
    let view = JobView::replay(&records).unwrap();
    assert_eq!(view.state, JobState::Succeeded);
    assert_eq!(view.nodes[1].attempt_base, 2);

    // Once only.
    match ex.requeue(&d.id, "bob").await {
        Err(ExecutorError::DeadLetter(DeadLetterError::Conflict { status, .. })) => {
            assert_eq!(status, DeadLetterStatus::Requeued);
        }
        other => panic!("a second requeue must conflict: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_requeued_node_that_fails_again_gets_a_new_entry() {
    let (store, runner, registry) = setup();
    runner.script("b", (0..2).map(|_| fail(FailureClass::Permanent)));
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("twice").node(node("b")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    ex.wait(&id).await.unwrap();
    let first = DeadLetterId::new(id.clone(), 0, 1);
    ex.requeue(&first, "bob").await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    let all = entries(&ex, &id).await;
    let ids: Vec<String> = all.iter().map(|d| d.id.to_string()).collect();
    assert_eq!(
        ids,
        [format!("{id}.0.2"), format!("{id}.0.1")],
        "newest first"
    );
    assert_eq!(all[0].status, DeadLetterStatus::Open);
    assert_eq!(all[0].attempts.len(), 1, "history since the requeue");
    assert_eq!(all[0].attempts[0].attempt, 2);
    assert_eq!(all[1].status, DeadLetterStatus::Requeued);
    // The older entry is not the node's latest any more.
    assert!(matches!(
        ex.requeue(&first, "bob").await,
        Err(ExecutorError::DeadLetter(DeadLetterError::Conflict { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn discard_is_journaled_with_its_reason_and_happens_once() {
    let (store, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    runner.script("slow", [Outcome::succeed().after(secs(60))]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("discard")
        .node(node("broken"))
        .node(node("slow"))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(secs(5)).await;
    // The job is still running (slow): the scheduler journals the discard.
    let d = entries(&ex, &id).await.remove(0);
    assert_eq!(ex.status(&id).await.unwrap().state, JobState::Running);
    for bad in ["", "   ", &"x".repeat(1001)] {
        assert!(matches!(
            ex.discard(&d.id, "bob", bad).await,
            Err(ExecutorError::DeadLetter(DeadLetterError::BadReason))
        ));
    }
    ex.discard(&d.id, "bob", "known flaky infra").await.unwrap();
    let stored = ex.dead_letter(&d.id).await.unwrap();
    assert_eq!(stored.status, DeadLetterStatus::Discarded);
    let r = stored.resolution.unwrap();
    assert_eq!(
        (r.by.as_str(), r.reason.as_deref()),
        ("bob", Some("known flaky infra"))
    );
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    let records = store.read_all(&id, 0).await.unwrap();
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::DeadLetterDiscarded { node: 0, entry: 1, by, reason }
            if by == "bob" && reason == "known flaky infra")));
    JobView::replay(&records).unwrap();
    for again in [
        ex.discard(&d.id, "bob", "known flaky infra").await,
        ex.discard(&d.id, "eve", "other").await,
    ] {
        assert!(
            matches!(
                again,
                Err(ExecutorError::DeadLetter(DeadLetterError::Conflict {
                    status: DeadLetterStatus::Discarded,
                    ..
                }))
            ),
            "{again:?}"
        );
    }
    assert!(matches!(
        ex.requeue(&d.id, "bob").await,
        Err(ExecutorError::DeadLetter(DeadLetterError::Conflict { .. }))
    ));
    let missing = DeadLetterId::new(id.clone(), 0, 9);
    assert!(matches!(
        ex.discard(&missing, "bob", "x").await,
        Err(ExecutorError::DeadLetter(DeadLetterError::NotFound(_)))
    ));
    assert!(matches!(
        ex.dead_letter(&missing).await,
        Err(ExecutorError::DeadLetter(DeadLetterError::NotFound(_)))
    ));
}

#[tokio::test(start_paused = true)]
async fn requeue_of_a_running_job_is_busy() {
    let (store, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    runner.script("slow", [Outcome::succeed().after(secs(60))]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("busy")
        .node(node("broken"))
        .node(node("slow"))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(secs(5)).await;
    let d = entries(&ex, &id).await.remove(0);
    assert!(matches!(
        ex.requeue(&d.id, "bob").await,
        Err(ExecutorError::Busy {
            state: JobState::Running,
            ..
        })
    ));
    assert_eq!(
        ex.dead_letter(&d.id).await.unwrap().status,
        DeadLetterStatus::Open
    );
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    // Once the job is over it can.
    ex.requeue(&d.id, "bob").await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
}

/// A store whose dead-letter writes fail while `down` is set.
struct NoDeadLetters {
    inner: Arc<MemoryStore>,
    down: AtomicBool,
}

impl NoDeadLetters {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                message: "dead letters down".into(),
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl DeadLetterStore for NoDeadLetters {
    async fn put_dead_letter(&self, e: &DeadLetter) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_dead_letter(e).await
    }
    async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.dead_letter(id).await
    }
    async fn list_dead_letters(&self, q: &DeadLetterQuery) -> Result<DeadLetterPage, StoreError> {
        self.inner.list_dead_letters(q).await
    }
    async fn resolve_dead_letter(
        &self,
        id: &DeadLetterId,
        r: &Resolution,
    ) -> Result<Resolve, StoreError> {
        self.check()?;
        self.inner.resolve_dead_letter(id, r).await
    }
}

orchestrator_core::forward_lease_store!(NoDeadLetters => inner);
orchestrator_core::forward_policy_store!(NoDeadLetters => inner);
orchestrator_core::forward_test_history_store!(NoDeadLetters => inner);

#[async_trait]
impl Store for NoDeadLetters {
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
        self.inner
            .append(job, expected, records, progress, fence)
            .await
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
        self.inner.ping().await
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_a_crash_left_unwritten_is_written_at_restart() {
    let (_, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    let inner = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = Arc::new(NoDeadLetters {
        inner: inner.clone(),
        down: AtomicBool::new(true),
    });
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("crash").node(node("broken")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    tokio::time::sleep(secs(30)).await;
    // Journaled, but the entry could not be written: the job waits for it
    // rather than finish with the queue behind its journal.
    let records = store.read_all(&id, 0).await.unwrap();
    assert!(names(&records).contains(&"node.dead_lettered"));
    assert!(entries(&ex, &id).await.is_empty());
    assert_eq!(ex.status(&id).await.unwrap().state, JobState::Running);
    drop(ex); // the "crash"

    // Restarted on the same data, with the store healthy again.
    let healthy: Arc<dyn Store> = inner.clone();
    let ex = executor(&healthy, &registry).await;
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    let all = entries(&ex, &id).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].reason, DeadLetterReason::NonRetryable);
    assert_eq!(
        runner.runs_of("broken"),
        1,
        "the failed node is not run again"
    );
    let records = healthy.read_all(&id, 0).await.unwrap();
    assert_eq!(
        names(&records)
            .iter()
            .filter(|n| **n == "node.dead_lettered")
            .count(),
        1,
        "journaled once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_requeue_whose_entry_write_fails_still_resolves_it_later() {
    let (_, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    let inner = Arc::new(MemoryStore::new());
    let flaky = Arc::new(NoDeadLetters {
        inner: inner.clone(),
        down: AtomicBool::new(false),
    });
    let store: Arc<dyn Store> = flaky.clone();
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("interrupted").node(node("broken")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    ex.wait(&id).await.unwrap();
    let d = DeadLetterId::new(id.clone(), 0, 1);
    // The requeue is journaled and the job reopened; resolving the entry
    // fails for now.
    flaky.down.store(true, Ordering::SeqCst);
    assert_eq!(ex.requeue(&d, "bob").await.unwrap(), id);
    tokio::time::sleep(secs(5)).await;
    assert_eq!(
        inner.dead_letter(&d).await.unwrap().unwrap().status,
        DeadLetterStatus::Open
    );
    flaky.down.store(false, Ordering::SeqCst);
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
    let stored = ex.dead_letter(&d).await.unwrap();
    assert_eq!(stored.status, DeadLetterStatus::Requeued);
    assert_eq!(stored.resolution.unwrap().by, "bob");
    assert_eq!(runner.runs_of("broken"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_discard_interrupted_before_the_entry_was_resolved_completes_when_repeated() {
    let (_, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    let inner = Arc::new(MemoryStore::new());
    let flaky = Arc::new(NoDeadLetters {
        inner: inner.clone(),
        down: AtomicBool::new(false),
    });
    let store: Arc<dyn Store> = flaky.clone();
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("interrupted").node(node("broken")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    ex.wait(&id).await.unwrap();
    let d = DeadLetterId::new(id.clone(), 0, 1);
    flaky.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        ex.discard(&d, "bob", "flaky infra").await,
        Err(ExecutorError::Store(StoreError::Unavailable { .. }))
    ));
    flaky.down.store(false, Ordering::SeqCst);
    // Journaled, but the entry is still open.
    let records = store.read_all(&id, 0).await.unwrap();
    assert!(names(&records).contains(&"dead_letter.discarded"));
    assert_eq!(
        ex.dead_letter(&d).await.unwrap().status,
        DeadLetterStatus::Open
    );
    // Repeating the same decision completes it (journaled once); once
    // complete, any further one conflicts.
    ex.discard(&d, "bob", "flaky infra").await.unwrap();
    assert_eq!(
        ex.dead_letter(&d).await.unwrap().status,
        DeadLetterStatus::Discarded
    );
    assert!(matches!(
        ex.discard(&d, "bob", "flaky infra").await,
        Err(ExecutorError::DeadLetter(DeadLetterError::Conflict { .. }))
    ));
    let records = store.read_all(&id, 0).await.unwrap();
    assert_eq!(
        names(&records)
            .iter()
            .filter(|n| **n == "dead_letter.discarded")
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_different_decision_after_an_interrupted_discard_conflicts() {
    let (_, runner, registry) = setup();
    runner.script("broken", [fail(FailureClass::Permanent)]);
    let flaky = Arc::new(NoDeadLetters {
        inner: Arc::new(MemoryStore::new()),
        down: AtomicBool::new(false),
    });
    let store: Arc<dyn Store> = flaky.clone();
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("interrupted").node(node("broken")).build();
    let id = ex.submit(spec, "alice").await.unwrap();
    ex.wait(&id).await.unwrap();
    let d = DeadLetterId::new(id.clone(), 0, 1);
    flaky.down.store(true, Ordering::SeqCst);
    assert!(ex.discard(&d, "bob", "flaky infra").await.is_err());
    flaky.down.store(false, Ordering::SeqCst);
    // The journal decided: a requeue conflicts, and the entry catches up.
    assert!(matches!(
        ex.requeue(&d, "eve").await,
        Err(ExecutorError::DeadLetter(DeadLetterError::Conflict {
            status: DeadLetterStatus::Discarded,
            ..
        }))
    ));
    let stored = ex.dead_letter(&d).await.unwrap();
    assert_eq!(stored.status, DeadLetterStatus::Discarded);
    assert_eq!(stored.resolution.unwrap().by, "bob");
    assert_eq!(runner.runs_of("broken"), 1);
}
