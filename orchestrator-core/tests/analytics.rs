//! Recovery statistics on constructed journals, with exact expected
//! figures, and `collect` over a store with an owner and time range.

use std::collections::BTreeMap;
use std::sync::Arc;

use orchestrator_core::analytics::{
    collect, recovery_stats, NodeTypeStats, RecoveryKindStats, RecoveryStats,
};
use orchestrator_core::journal::JobHeader;
use orchestrator_core::recovery::{EscalationCause, RecoveryKind, RecoveryOutcome};
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::store::JobQuery;
use orchestrator_core::{
    Event, Executor, Failure, FailureClass, JobId, JobSpec, JobState, JobView, ManualClock,
    MemoryStore, NodeSpec, Record, Registry, Store, Timestamp,
};
use serde_json::Value;

/// A journal of `spec` from events at times (ms), checked by replay.
fn journal(id: &str, spec: JobSpec, events: Vec<(u64, Event)>) -> Vec<Record> {
    let header = Arc::new(JobHeader {
        id: id.parse().unwrap(),
        owner: "o".into(),
        created_at: Timestamp(0),
        spec: Arc::new(spec),
    });
    let mut records = vec![Record {
        seq: 1,
        at: Timestamp(0),
        event: Event::Submitted { header },
    }];
    for (at, event) in events {
        records.push(Record {
            seq: records.len() as u64 + 1,
            at: Timestamp(at),
            event,
        });
    }
    JobView::replay(&records).expect("a legal journal");
    records
}

fn started(node: u32, attempt: u32) -> Event {
    Event::NodeStarted { node, attempt }
}

fn failed(node: u32, attempt: u32, class: FailureClass, retry: Option<u64>) -> Event {
    Event::NodeFailed {
        node,
        attempt,
        failure: Box::new(Failure::new(class, "x")),
        retry_in_ms: retry,
    }
}

fn succeeded(node: u32, attempt: u32) -> Event {
    Event::NodeSucceeded {
        node,
        attempt,
        output: Value::Null,
    }
}

fn id(n: u32) -> String {
    format!("01J00000000000000000000{n:03}")
}

/// Job A: `a` (unit) heals after an infrastructure failure, `b` (e2e)
/// after two transient ones, `c` (e2e) fails for good; it was resumed
/// after a restart and escalated. Job B: `x` (unit) passes, `y` (unit) is
/// still retrying an infrastructure failure.
fn journals() -> Vec<Vec<Record>> {
    use FailureClass::*;
    let a = journal(
        &id(1),
        JobSpec::builder("a")
            .node(NodeSpec::new("a", "unit"))
            .node(NodeSpec::new("b", "e2e"))
            .node(NodeSpec::new("c", "e2e"))
            .build(),
        vec![
            (0, Event::Queued),
            (0, Event::Started),
            (0, Event::NodeReady { node: 0 }),
            (0, Event::NodeReady { node: 1 }),
            (0, Event::NodeReady { node: 2 }),
            (1000, started(0, 1)),
            (1000, started(1, 1)),
            (1000, started(2, 1)),
            (1100, Event::RecoveryStarted),
            (
                1100,
                Event::RecoveryInitiated {
                    kind: RecoveryKind::RestartResume,
                    node: None,
                },
            ),
            (1200, failed(2, 1, Permanent, None)),
            (1500, failed(1, 1, Transient, Some(1000))),
            (2000, Event::RecoveryFinished),
            (2000, failed(0, 1, Infrastructure, Some(500))),
            (
                2000,
                Event::RecoveryInitiated {
                    kind: RecoveryKind::InfrastructureRetry,
                    node: Some(0),
                },
            ),
            (2500, Event::NodeRetryDue { node: 0 }),
            (2500, started(0, 2)),
            (2500, Event::NodeRetryDue { node: 1 }),
            (3000, started(1, 2)),
            (3500, failed(1, 2, Transient, Some(1500))),
            (4000, succeeded(0, 2)),
            (
                4000,
                Event::RecoveryCompleted {
                    kind: RecoveryKind::InfrastructureRetry,
                    node: Some(0),
                    outcome: RecoveryOutcome::Succeeded,
                },
            ),
            (5000, Event::NodeRetryDue { node: 1 }),
            (5000, started(1, 3)),
            (6000, succeeded(1, 3)),
            (
                7000,
                Event::Finished {
                    state: JobState::Failed,
                },
            ),
            (
                7000,
                Event::RecoveryCompleted {
                    kind: RecoveryKind::RestartResume,
                    node: None,
                    outcome: RecoveryOutcome::Failed,
                },
            ),
            (
                7000,
                Event::EscalationRequired {
                    node: Some(2),
                    cause: Some(EscalationCause::DeadLettered),
                    reason: "c".into(),
                },
            ),
        ],
    );
    let b = journal(
        &id(2),
        JobSpec::builder("b")
            .node(NodeSpec::new("x", "unit"))
            .node(NodeSpec::new("y", "unit"))
            .node(NodeSpec::new("z", "unit").depends_on(["y"]))
            .build(),
        vec![
            (0, Event::Queued),
            (0, Event::Started),
            (0, Event::NodeReady { node: 0 }),
            (0, Event::NodeReady { node: 1 }),
            (0, started(0, 1)),
            (0, started(1, 1)),
            (100, succeeded(0, 1)),
            (200, failed(1, 1, Infrastructure, Some(1000))),
            (
                200,
                Event::RecoveryInitiated {
                    kind: RecoveryKind::InfrastructureRetry,
                    node: Some(1),
                },
            ),
        ],
    );
    vec![a, b]
}

#[test]
fn figures_are_exact_on_constructed_journals() {
    let journals = journals();
    let stats = recovery_stats(journals.iter().map(Vec::as_slice));
    let expected = RecoveryStats {
        jobs: 2,
        jobs_unreadable: 0,
        truncated: false,
        nodes: 5,
        attempts: 8,
        failed_attempts: 5,
        failed_attempts_by_class: BTreeMap::from([
            ("infrastructure".into(), 2),
            ("permanent".into(), 1),
            ("transient".into(), 2),
        ]),
        failures: 4,
        recovered: 2,
        unrecovered: 1,
        open: 1,
        recovered_share: Some(2.0 / 3.0),
        // a: 4000 - 2000; b: 6000 - 1500.
        mean_time_to_recovery_ms: Some(3250),
        max_time_to_recovery_ms: Some(4500),
        node_types: BTreeMap::from([
            (
                "e2e".into(),
                NodeTypeStats {
                    nodes: 2,
                    attempts: 4,
                    retries: 2,
                    retries_per_node: 1.0,
                },
            ),
            (
                "unit".into(),
                NodeTypeStats {
                    nodes: 3,
                    attempts: 4,
                    retries: 1,
                    retries_per_node: 1.0 / 3.0,
                },
            ),
        ]),
        recoveries: BTreeMap::from([
            (
                "infrastructure_retry".into(),
                RecoveryKindStats {
                    initiated: 2,
                    succeeded: 1,
                    failed: 0,
                    cancelled: 0,
                    mean_duration_ms: Some(2000),
                },
            ),
            (
                "restart_resume".into(),
                RecoveryKindStats {
                    initiated: 1,
                    succeeded: 0,
                    failed: 1,
                    cancelled: 0,
                    mean_duration_ms: Some(5900),
                },
            ),
        ]),
        escalations: 1,
    };
    assert_eq!(stats, expected);
}

#[test]
fn empty_and_unreadable_input_gives_no_ratios() {
    let stats = recovery_stats([]);
    assert_eq!(stats, RecoveryStats::default());
    assert_eq!(stats.recovered_share, None);
    assert_eq!(stats.mean_time_to_recovery_ms, None);
    let mut j = journals().remove(1);
    j.remove(0);
    let stats = recovery_stats([j.as_slice(), &[]]);
    assert_eq!((stats.jobs, stats.jobs_unreadable), (0, 2));
}

#[test]
fn a_node_cancelled_while_retrying_is_unrecovered() {
    let j = journal(
        &id(3),
        JobSpec::builder("c")
            .node(NodeSpec::new("n", "unit"))
            .build(),
        vec![
            (0, Event::Queued),
            (0, Event::Started),
            (0, Event::NodeReady { node: 0 }),
            (0, started(0, 1)),
            (10, failed(0, 1, FailureClass::Transient, Some(1000))),
            (20, Event::CancelRequested { reason: None }),
            (20, Event::NodeCancelled { node: 0 }),
            (
                20,
                Event::Finished {
                    state: JobState::Cancelled,
                },
            ),
        ],
    );
    let stats = recovery_stats([j.as_slice()]);
    assert_eq!(
        (
            stats.failures,
            stats.recovered,
            stats.unrecovered,
            stats.open
        ),
        (1, 0, 1, 0)
    );
    assert_eq!(stats.recovered_share, Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn collect_reads_the_jobs_the_query_selects() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script(
        "n",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    let mut registry = Registry::new();
    registry.register("t", runner.clone());
    let ex = Executor::builder(store.clone())
        .registry(registry)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let spec = || JobSpec::builder("j").node(NodeSpec::new("n", "t")).build();
    let mut ids: Vec<JobId> = Vec::new();
    for (owner, at) in [
        ("alice", 1_000_000),
        ("bob", 2_000_000),
        ("alice", 3_000_000),
    ] {
        clock.set(Timestamp(at));
        let id = ex.submit(spec(), owner).await.unwrap();
        ex.wait(&id).await.unwrap();
        ids.push(id);
    }
    let all = collect(store.as_ref(), &JobQuery::default(), 100)
        .await
        .unwrap();
    // Each run's `n` fails once, then passes.
    assert_eq!((all.jobs, all.attempts, all.recovered), (3, 6, 3));
    let alice = JobQuery {
        owner: Some("alice".into()),
        ..JobQuery::default()
    };
    let s = collect(store.as_ref(), &alice, 100).await.unwrap();
    assert_eq!((s.jobs, s.failures, s.truncated), (2, 2, false));
    let middle = JobQuery {
        created_after: Some(Timestamp(1_500_000)),
        created_before: Some(Timestamp(2_500_000)),
        ..JobQuery::default()
    };
    let s = collect(store.as_ref(), &middle, 100).await.unwrap();
    assert_eq!((s.jobs, s.failures), (1, 1));
    let s = collect(store.as_ref(), &JobQuery::default(), 2)
        .await
        .unwrap();
    assert_eq!((s.jobs, s.truncated), (2, true));
}
