//! Rollback (saga compensation) and rerun from failure, under paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::{
    Event, Executor, ExecutorError, FailureClass, JobSpec, JobState, JobView, MemoryStore,
    NodeSpec, NodeState, OnFailure, Registry, Store, StoreExt,
};
use serde_json::json;

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
    NodeSpec::new(id, "work").compensate("undo", json!({"undo": id}))
}

/// When each node's compensation started and ended.
fn compensations(
    runner: &ScriptedRunner,
) -> BTreeMap<String, (tokio::time::Instant, tokio::time::Instant)> {
    runner
        .executions()
        .into_iter()
        .filter(|e| e.compensation)
        .map(|e| (e.node.clone(), (e.started, e.ended.expect("finished"))))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_diamond_rolls_back_in_reverse_order_in_parallel() {
    let (store, runner, registry) = setup();
    runner.script("fails", [Outcome::fail(FailureClass::Permanent)]);
    let ex = executor(&store, &registry).await;
    // a -> (b, c) -> d, and d -> fails: a, b, c, d succeed, then the job fails.
    let spec = JobSpec::builder("diamond")
        .on_failure(OnFailure::Rollback)
        .retry(serde_json::from_value(json!({"max_attempts": 1})).unwrap())
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .node(node("c").depends_on(["a"]))
        .node(node("d").depends_on(["b", "c"]))
        .node(NodeSpec::new("fails", "work").depends_on(["d"]))
        .build();
    let id = ex.submit(spec, "ops").await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::RolledBack);
    for n in ["a", "b", "c", "d"] {
        assert_eq!(s.node(n).unwrap().state, NodeState::Compensated, "{n}");
    }
    assert_eq!(s.node("fails").unwrap().state, NodeState::Failed);
    let c = compensations(&runner);
    assert_eq!(
        c.len(),
        4,
        "only succeeded nodes with a compensation are undone"
    );
    // Reverse order: d before b and c, b and c before a.
    assert!(c["d"].1 <= c["b"].0 && c["d"].1 <= c["c"].0);
    assert!(c["b"].1 <= c["a"].0 && c["c"].1 <= c["a"].0);
    // b and c are independent: they overlap.
    assert!(
        c["b"].0 < c["c"].1 && c["c"].0 < c["b"].1,
        "b and c compensate in parallel"
    );
    // The compensation saw its own params.
    let records = store.read_all(&id, 0).await.unwrap();
    assert!(records
        .iter()
        .any(|r| matches!(r.event, Event::RollbackStarted { .. })));
    assert_eq!(
        JobView::replay(&records).unwrap().state,
        JobState::RolledBack
    );
}

#[tokio::test(start_paused = true)]
async fn a_wide_rollback_respects_the_concurrency_limit() {
    let (store, runner, registry) = setup();
    let ex = Executor::builder(store.clone())
        .registry(registry)
        .config(orchestrator_core::ExecutorConfig {
            max_concurrent_nodes: 3,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let spec = JobSpec::builder("wide")
        .nodes((0..12).map(|i| node(&format!("n{i}"))))
        .build();
    let id = ex.submit(spec, "ops").await.unwrap();
    assert_eq!(ex.wait(&id).await.unwrap().state, JobState::Succeeded);
    // A rollback requested for a finished job.
    ex.rollback(&id, Some("release withdrawn".into()))
        .await
        .unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::RolledBack);
    assert_eq!(compensations(&runner).len(), 12);
    assert!(runner.max_in_flight() <= 3);
    match ex.rollback(&id, None).await {
        Err(ExecutorError::AlreadyFinished { state, .. }) => {
            assert_eq!(state, JobState::RolledBack);
        }
        other => panic!("expected AlreadyFinished, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_keeps_failing_is_dead_lettered_and_escalated() {
    let (store, runner, registry) = setup();
    runner.script_compensation("b", (0..3).map(|_| Outcome::fail(FailureClass::Transient)));
    let ex = executor(&store, &registry).await;
    let mut sub = ex.subscribe();
    let spec = JobSpec::builder("partial")
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .node(node("c").depends_on(["b"]))
        .build();
    let id = ex.submit(spec, "ops").await.unwrap();
    ex.wait(&id).await.unwrap();
    ex.rollback(&id, None).await.unwrap();
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::RollbackIncomplete);
    assert_eq!(s.node("b").unwrap().state, NodeState::DeadLettered);
    // The rollback went on: a (upstream of the dead-lettered b) was undone.
    assert_eq!(s.node("a").unwrap().state, NodeState::Compensated);
    assert_eq!(s.node("c").unwrap().state, NodeState::Compensated);
    // Two retries by the default policy (3 attempts), then dead-lettered.
    assert_eq!(
        runner
            .executions_of("b")
            .iter()
            .filter(|e| e.compensation)
            .count(),
        3
    );
    let mut escalations = 0;
    while let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::from_millis(1), sub.recv()).await {
        if n.record.event.name() == "escalation.required" {
            escalations += 1;
        }
    }
    assert_eq!(
        escalations, 2,
        "the dead-lettered node and the incomplete rollback"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_the_middle_of_a_rollback_resumes_it_once_per_node() {
    let (store, runner, registry) = setup();
    runner.script_compensation("b", [Outcome::hang(), Outcome::succeed()]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("crashy")
        .node(node("a"))
        .node(node("b").depends_on(["a"]))
        .node(node("c").depends_on(["b"]))
        .build();
    let id = ex.submit(spec, "ops").await.unwrap();
    ex.wait(&id).await.unwrap();
    ex.rollback(&id, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mid = ex.status(&id).await.unwrap();
    assert_eq!(mid.state, JobState::RollingBack);
    assert_eq!(mid.node("c").unwrap().state, NodeState::Compensated);
    assert_eq!(mid.node("b").unwrap().state, NodeState::Compensating);
    drop(ex); // the crash

    let ex = executor(&store, &registry).await;
    let s = ex.wait(&id).await.unwrap();
    assert_eq!(s.state, JobState::RolledBack);
    let c = runner.executions().into_iter().filter(|e| e.compensation);
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    for e in c {
        *per_node.entry(e.node.clone()).or_default() += 1;
    }
    assert_eq!(
        per_node["c"], 1,
        "c was compensated before the crash and not again"
    );
    assert_eq!(
        per_node["b"], 2,
        "b's interrupted compensation is retried once"
    );
    assert_eq!(per_node["a"], 1);
    let records = store.read_all(&id, 0).await.unwrap();
    assert!(JobView::replay(&records).is_ok());
}

#[tokio::test(start_paused = true)]
async fn rerun_from_failure_keeps_what_succeeded() {
    let (store, runner, registry) = setup();
    runner.script("flaky", [Outcome::fail(FailureClass::Permanent)]);
    let ex = executor(&store, &registry).await;
    let spec = JobSpec::builder("pipeline")
        .retry(serde_json::from_value(json!({"max_attempts": 1})).unwrap())
        .node(NodeSpec::new("build", "work"))
        .node(NodeSpec::new("flaky", "work").depends_on(["build"]))
        .node(NodeSpec::new("deploy", "work").depends_on(["flaky"]))
        .build();
    let id = ex.submit(spec, "dev").await.unwrap();
    let first = ex.wait(&id).await.unwrap();
    assert_eq!(first.state, JobState::Failed);
    assert_eq!(
        first.node("deploy").unwrap().state,
        NodeState::UpstreamFailed
    );

    // The fix is in: the flaky step passes from now on.
    runner.script("flaky", [Outcome::succeed()]);
    let rerun = ex.rerun(&id, None, &BTreeMap::new(), "dev").await.unwrap();
    let second = ex.wait(&rerun).await.unwrap();
    assert_eq!(second.state, JobState::Succeeded);
    assert_eq!(
        runner.runs_of("build"),
        1,
        "build succeeded before and is carried over"
    );
    assert_eq!(runner.runs_of("flaky"), 2);
    assert_eq!(runner.runs_of("deploy"), 1);
    assert_eq!(second.labels.get("rerun_of"), Some(&id.to_string()));
    let records = store.read_all(&rerun, 0).await.unwrap();
    assert!(records
        .iter()
        .any(|r| matches!(&r.event, Event::NodeCarriedOver { node: 0, from, .. } if *from == id)));

    // From a named node: it and everything downstream run again.
    let again = ex
        .rerun(&rerun, Some("flaky"), &BTreeMap::new(), "dev")
        .await
        .unwrap();
    assert_eq!(ex.wait(&again).await.unwrap().state, JobState::Succeeded);
    assert_eq!(runner.runs_of("build"), 1);
    assert_eq!(runner.runs_of("flaky"), 3);
    assert_eq!(runner.runs_of("deploy"), 2);

    // Param overrides, and an unknown node.
    let params = BTreeMap::from([("deploy".to_owned(), json!({"target": "staging"}))]);
    let third = ex.rerun(&again, None, &params, "dev").await.unwrap();
    let s = ex.wait(&third).await.unwrap();
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(runner.runs_of("deploy"), 3);
    assert!(matches!(
        ex.rerun(&id, Some("nope"), &BTreeMap::new(), "dev").await,
        Err(ExecutorError::UnknownNode { .. })
    ));
}
