//! Recovery and escalation records as the executor journals them, and the
//! notification dispatcher: envelopes, per-sink filters, node names for
//! recovered jobs, and a stuck sink that must not stall anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::notify::{
    DeliveryError, Dispatcher, Envelope, EventFilter, NotificationSink, Route,
};
use orchestrator_core::recovery::{RecoveryKind, RecoveryOutcome};
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::{
    Event, Executor, FailureClass, JobSpec, JobState, JobView, MemoryStore, NodeSpec, Record,
    Registry, RetrySpec, Store, StoreExt,
};

const KIND: &str = "test";

fn registry(runner: &ScriptedRunner) -> Registry {
    let mut r = Registry::new();
    r.register(KIND, runner.clone());
    r
}

async fn executor(store: &Arc<dyn Store>, runner: &ScriptedRunner) -> Executor {
    Executor::builder(store.clone())
        .registry(registry(runner))
        .start()
        .await
        .expect("executor starts")
}

fn node(id: &str) -> NodeSpec {
    NodeSpec::new(id, KIND)
}

fn spec(nodes: impl IntoIterator<Item = NodeSpec>) -> JobSpec {
    let mut b = JobSpec::builder("notify").retry(RetrySpec {
        max_attempts: Some(3),
        ..RetrySpec::default()
    });
    for n in nodes {
        b = b.node(n);
    }
    b.build()
}

/// The recovery records of a journal, with the record before each.
fn recoveries(records: &[Record]) -> Vec<(String, Event)> {
    records
        .windows(2)
        .filter(|w| {
            matches!(
                w[1].event,
                Event::RecoveryInitiated { .. } | Event::RecoveryCompleted { .. }
            )
        })
        .map(|w| (w[0].event.name().to_owned(), w[1].event.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_an_infrastructure_failure_is_a_journaled_recovery() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    let infra = || Outcome::fail(FailureClass::Infrastructure);
    runner.script("healed", [infra(), infra(), Outcome::succeed()]);
    runner.script("lost", [infra(), infra(), infra()]);
    runner.script(
        "flaky",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    let ex = executor(&store, &runner).await;
    let id = ex
        .submit(spec([node("healed"), node("lost"), node("flaky")]), "a")
        .await
        .unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Failed);
    let records = store.read_all(&id, 0).await.unwrap();
    let mut healed: Vec<_> = recoveries(&records)
        .into_iter()
        .filter(|(_, e)| e.node() == Some(0))
        .collect();
    assert_eq!(
        healed,
        [
            (
                "node.retry_scheduled".to_owned(),
                Event::RecoveryInitiated {
                    kind: RecoveryKind::InfrastructureRetry,
                    node: Some(0)
                }
            ),
            (
                "node.succeeded".to_owned(),
                Event::RecoveryCompleted {
                    kind: RecoveryKind::InfrastructureRetry,
                    node: Some(0),
                    outcome: RecoveryOutcome::Succeeded
                }
            ),
        ],
        "one recovery for two infrastructure failures, closed by the success"
    );
    healed.clear();
    let lost: Vec<_> = recoveries(&records)
        .into_iter()
        .filter(|(_, e)| e.node() == Some(1))
        .map(|(before, e)| (before, e.name()))
        .collect();
    assert_eq!(
        lost,
        [
            ("node.retry_scheduled".to_owned(), "recovery.initiated"),
            ("node.failed".to_owned(), "recovery.completed"),
        ]
    );
    assert!(records.iter().any(|r| r.event
        == Event::RecoveryCompleted {
            kind: RecoveryKind::InfrastructureRetry,
            node: Some(1),
            outcome: RecoveryOutcome::Failed
        }));
    assert!(
        recoveries(&records)
            .iter()
            .all(|(_, e)| e.node() != Some(2)),
        "a transient failure's retry is not a recovery"
    );
    let view = JobView::replay(&records).unwrap();
    assert!(view.nodes.iter().all(|n| n.recovery.is_none()));
}

#[derive(Default)]
struct Recorder {
    name: String,
    seen: Mutex<Vec<Envelope>>,
}

impl Recorder {
    fn named(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            seen: Mutex::default(),
        })
    }

    fn types(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }
}

#[async_trait]
impl NotificationSink for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, envelope: &Envelope) -> Result<(), DeliveryError> {
        self.seen.lock().unwrap().push(envelope.clone());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_resumed_after_a_restart_is_a_recovery_notified_with_node_names() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script("b", [Outcome::hang(), Outcome::succeed()]);
    let ex = executor(&store, &runner).await;
    let id = ex
        .submit(spec([node("a"), node("b").depends_on(["a"])]), "a")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(ex); // the crash

    // A fresh process: its dispatcher never saw the submission, so it
    // reads the spec from the store to name nodes.
    let builder = Executor::builder(store.clone()).registry(registry(&runner));
    let recorder = Recorder::named("recorder");
    let filter: EventFilter = "recovery.*".parse().unwrap();
    let dispatcher = Dispatcher::with_feed(
        builder.subscribe(),
        store.clone(),
        vec![Route::new(recorder.clone(), filter)],
    );
    let ex = builder.start().await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
    let stats = dispatcher.close().await;

    let seen = recorder.seen.lock().unwrap().clone();
    // (type, node, kind, outcome)
    type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let summary: Vec<Row<'_>> = seen
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.node.as_deref(),
                e.details.get("kind").and_then(|v| v.as_str()),
                e.details.get("outcome").and_then(|v| v.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("recovery.initiated", None, Some("restart_resume"), None),
            (
                "recovery.initiated",
                Some("b"),
                Some("infrastructure_retry"),
                None
            ),
            (
                "recovery.completed",
                Some("b"),
                Some("infrastructure_retry"),
                Some("succeeded")
            ),
            (
                "recovery.completed",
                None,
                Some("restart_resume"),
                Some("succeeded")
            ),
        ]
    );
    assert_eq!(stats.sinks[0].delivered, 4);
    assert_eq!((stats.sinks[0].dropped, stats.lagged), (0, 0));
    let e = &seen[1];
    assert_eq!(e.id, format!("{id}-{}", e.seq));
    assert_eq!(e.details.get("node_index"), Some(&serde_json::json!(1)));
    assert_eq!(e.time.len(), "2026-11-23T06:22:56.123Z".len());

    let records = store.read_all(&id, 0).await.unwrap();
    let at = |name: &str| records.iter().position(|r| r.event.name() == name);
    assert_eq!(
        at("execution.recovering").map(|i| i + 1),
        at("recovery.initiated"),
        "the job-wide recovery is initiated right with the takeback"
    );
    let view = JobView::replay(&records).unwrap();
    assert_eq!(view.recovery, None, "closed when the job finished");
}

#[tokio::test(start_paused = true)]
async fn each_sink_gets_the_events_its_filter_matches_in_order() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script("x", [Outcome::fail(FailureClass::Infrastructure)]);
    let ex = executor(&store, &runner).await;
    let all = Recorder::named("all");
    let recovery = Recorder::named("recovery");
    let failures = Recorder::named("failures");
    let dispatcher = Dispatcher::start(
        &ex,
        vec![
            Route::new(all.clone(), EventFilter::all()),
            Route::new(recovery.clone(), "recovery.*".parse().unwrap()),
            Route::new(failures.clone(), "*.failed,escalation.*".parse().unwrap()),
        ],
    );
    let id = ex
        .submit(spec([node("x"), node("y").depends_on(["x"])]), "a")
        .await
        .unwrap();
    ex.wait(&id).await.unwrap();
    let stats = dispatcher.close().await;

    let journal: Vec<String> = store
        .read_all(&id, 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.event.name().to_owned())
        .collect();
    assert_eq!(all.types(), journal, "everything, in journal order");
    assert_eq!(
        recovery.types(),
        ["recovery.initiated", "recovery.completed"]
    );
    assert!(failures.types().is_empty());
    let seqs: Vec<u64> = all.seen.lock().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=journal.len() as u64).collect::<Vec<_>>());
    let first = &all.seen.lock().unwrap()[0];
    assert_eq!(first.kind, "execution.submitted");
    assert_eq!(first.details.get("owner"), Some(&serde_json::json!("a")));
    assert!(
        first.details.get("header").is_none(),
        "the spec is not repeated"
    );
    assert_eq!(
        stats
            .sinks
            .iter()
            .map(|s| (s.name.as_str(), s.delivered))
            .collect::<Vec<_>>(),
        [
            ("all", journal.len() as u64),
            ("recovery", 2),
            ("failures", 0)
        ]
    );
}

/// A sink that never finishes a delivery.
struct Stuck;

#[async_trait]
impl NotificationSink for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    async fn deliver(&self, _: &Envelope) -> Result<(), DeliveryError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_sink_never_stalls_jobs_and_its_drops_are_counted() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    let ex = executor(&store, &runner).await;
    let fine = Recorder::named("fine");
    let dispatcher = Dispatcher::start(
        &ex,
        vec![
            Route::new(Arc::new(Stuck), EventFilter::all()).queue(2),
            Route::new(fine.clone(), EventFilter::all()),
        ],
    );
    let nodes: Vec<NodeSpec> = (0..50).map(|i| node(&format!("n{i}"))).collect();
    let id = ex.submit(spec(nodes), "a").await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
    let total = store.read_all(&id, 0).await.unwrap().len() as u64;
    // Let the dispatcher route what was published.
    while fine.seen.lock().unwrap().len() < total as usize {
        tokio::task::yield_now().await;
    }
    let stats = dispatcher.stats();
    let stuck = &stats.sinks[0];
    assert_eq!(stuck.delivered, 0);
    // One envelope is in the stuck delivery, two wait in its queue.
    assert!(
        stuck.dropped >= total - 3 && stuck.dropped < total,
        "{stuck:?} of {total}"
    );
    assert_eq!(
        stats.sinks[1].delivered, total,
        "the other sink misses nothing"
    );
    drop(dispatcher);
}

#[tokio::test(start_paused = true)]
async fn escalations_carry_their_cause_and_the_node() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script_compensation("b", (0..3).map(|_| Outcome::fail(FailureClass::Transient)));
    let mut registry = registry(&runner);
    registry.register("undo", runner.clone());
    let ex = Executor::builder(store.clone())
        .registry(registry)
        .start()
        .await
        .unwrap();
    let pager = Recorder::named("pager");
    let dispatcher = Dispatcher::start(
        &ex,
        vec![Route::new(pager.clone(), "escalation.*".parse().unwrap())],
    );
    let undo = |id: &str| node(id).compensate("undo", serde_json::json!({}));
    let id = ex
        .submit(spec([undo("a"), undo("b").depends_on(["a"])]), "ops")
        .await
        .unwrap();
    ex.wait(&id).await.unwrap();
    ex.rollback(&id, None).await.unwrap();
    assert_eq!(
        ex.wait(&id).await.unwrap().state,
        JobState::RollbackIncomplete
    );
    dispatcher.close().await;
    let seen = pager.seen.lock().unwrap().clone();
    let got: Vec<(Option<&str>, &str)> = seen
        .iter()
        .map(|e| (e.node.as_deref(), e.details["cause"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("b"), "compensation_dead_lettered"),
            (None, "rollback_incomplete")
        ]
    );
}

#[test]
fn the_dead_letter_escalation_names_node_and_cause() {
    let e = orchestrator_core::recovery::dead_letter_escalation(4, "deploy", "exit code 1");
    assert_eq!(e.name(), "escalation.required");
    assert_eq!(e.node(), Some(4));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["cause"], "dead_lettered");
    assert_eq!(
        json["reason"],
        "node \"deploy\" was dead-lettered: exit code 1"
    );
    // Journals written before causes existed still decode.
    let old: Event =
        serde_json::from_value(serde_json::json!({"type": "escalation_required", "reason": "x"}))
            .unwrap();
    assert_eq!(
        old,
        Event::EscalationRequired {
            node: None,
            cause: None,
            reason: "x".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_taken_over_from_a_shared_store_is_a_takeover_recovery() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::shared());
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script("b", [Outcome::hang(), Outcome::succeed()]);
    // Lease expiry is judged by the executor's clock: make it tokio's
    // paused one, so the lease lapses without a real wait.
    let clock = Arc::new(TokioClock(tokio::time::Instant::now()));
    let executor = |store: &Arc<dyn Store>, runner: &ScriptedRunner| {
        Executor::builder(store.clone())
            .registry(registry(runner))
            .clock(clock.clone())
            .start()
    };
    let first = executor(&store, &runner).await.unwrap();
    let id = first
        .submit(spec([node("a"), node("b").depends_on(["a"])]), "a")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(first); // its lease lapses; the other executor claims the job

    let second = executor(&store, &runner).await.unwrap();
    assert_eq!(second.wait(&id).await.unwrap().state, JobState::Succeeded);
    let records = store.read_all(&id, 0).await.unwrap();
    let job_wide: Vec<&Event> = records
        .iter()
        .map(|r| &r.event)
        .filter(|e| {
            matches!(
                e,
                Event::RecoveryInitiated { node: None, .. }
                    | Event::RecoveryCompleted { node: None, .. }
            )
        })
        .collect();
    assert_eq!(
        job_wide,
        [
            &Event::RecoveryInitiated {
                kind: RecoveryKind::Takeover,
                node: None
            },
            &Event::RecoveryCompleted {
                kind: RecoveryKind::Takeover,
                node: None,
                outcome: RecoveryOutcome::Succeeded
            }
        ]
    );
}

#[derive(Debug)]
struct TokioClock(tokio::time::Instant);

impl orchestrator_core::Clock for TokioClock {
    fn now(&self) -> orchestrator_core::Timestamp {
        orchestrator_core::Timestamp(1_700_000_000_000 + self.0.elapsed().as_millis() as u64)
    }
}
