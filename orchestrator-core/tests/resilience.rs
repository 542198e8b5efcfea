//! Classification rules, stored policies and circuit breakers as the
//! executor applies them, on a paused tokio clock (no real sleeps): a
//! breaker opening after its threshold, nodes of that dependency waiting
//! without spending attempts, half-open trials, closing, reopening after a
//! failed trial; class-specific delays from a stored, pinned policy; rules
//! refining the `process` runner's classes by exit code, regex, signal and
//! timeout.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::breaker::{BreakerSpec, BreakerState, Window};
use orchestrator_core::classify::ClassifyRule;
use orchestrator_core::policy::StoredPolicy;
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::{
    Backoff, ClassRetrySpec, Clock, Event, Executor, ExecutorError, Failure, FailureClass,
    HumanDuration, JobSpec, JobState, MemoryStore, NodeSpec, ProblemCode, Record, Registry,
    RetrySpec, Store, StoreExt, Timestamp, TriggerRule,
};
use serde_json::json;
use tokio::time::Instant;

const KIND: &str = "test";
const EPOCH_MS: u64 = 1_700_000_000_000;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Journal time follows tokio's paused clock, so timers and journal agree.
#[derive(Debug)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp(EPOCH_MS + self.0.elapsed().as_millis() as u64)
    }
}

struct Harness {
    store: Arc<dyn Store>,
    runner: ScriptedRunner,
    clock: Arc<TokioClock>,
}

impl Harness {
    fn new() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            runner: ScriptedRunner::new(),
            clock: Arc::new(TokioClock(Instant::now())),
        }
    }

    async fn executor(&self) -> Executor {
        let mut registry = Registry::with_builtins();
        registry.register(KIND, self.runner.clone());
        Executor::builder(self.store.clone())
            .registry(registry)
            .clock(self.clock.clone())
            .start()
            .await
            .unwrap()
    }

    fn starts(&self, node: &str) -> Vec<Duration> {
        self.runner
            .executions_of(node)
            .iter()
            .map(|e| e.started - self.clock.0)
            .collect()
    }
}

fn breaker() -> BreakerSpec {
    BreakerSpec {
        failure_rate: 1.0,
        window: Window::Count { calls: 2 },
        min_calls: 2,
        open_for: HumanDuration::from_secs(10),
        half_open_calls: 1,
        ..BreakerSpec::default()
    }
}

fn no_retry() -> RetrySpec {
    RetrySpec::new().max_attempts(1)
}

/// n1 and n2 fail together and open the farm's breaker; n3 (after both,
/// `all_done`) must wait for the half-open trial.
fn farm_job() -> JobSpec {
    JobSpec::builder("farm")
        .breaker("farm", breaker())
        .node(
            NodeSpec::new("n1", KIND)
                .dependency("farm")
                .retry(no_retry()),
        )
        .node(
            NodeSpec::new("n2", KIND)
                .dependency("farm")
                .retry(no_retry()),
        )
        .node(
            NodeSpec::new("n3", KIND)
                .dependency("farm")
                .depends_on(["n1", "n2"])
                .trigger(TriggerRule::AllDone)
                .retry(
                    RetrySpec::new()
                        .max_attempts(3)
                        .backoff(Backoff::fixed(secs(1))),
                ),
        )
        .build()
}

fn breaker_events(records: &[Record]) -> Vec<(BreakerState, BreakerState, u64)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::BreakerChanged {
                dependency,
                from,
                to,
                ..
            } => {
                assert_eq!(dependency, "farm");
                Some((*from, *to, (r.at.0 - EPOCH_MS) / 1000))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_holds_nodes_until_a_successful_trial_closes_it() {
    let h = Harness::new();
    h.runner
        .script(
            "n1",
            [Outcome::fail(FailureClass::Transient).after(secs(1))],
        )
        .script("n2", [Outcome::fail(FailureClass::Timeout).after(secs(1))])
        .script("n3", [Outcome::succeed().after(secs(1))]);
    let ex = h.executor().await;
    let id = ex.submit(farm_job(), "t").await.unwrap();
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed); // n1 and n2 failed
                                                // n3 was ready at 1 s but waited for the breaker: its single attempt
                                                // is the half-open trial at 11 s.
    assert_eq!(h.starts("n3"), [secs(11)]);
    let records = h.store.read_all(&id, 0).await.unwrap();
    use BreakerState::*;
    assert_eq!(
        breaker_events(&records),
        [
            (Closed, Open, 1),
            (Open, HalfOpen, 11),
            (HalfOpen, Closed, 12)
        ]
    );
    let opened = records
        .iter()
        .find_map(|r| match r.event {
            Event::BreakerChanged {
                failures, calls, ..
            } => Some((failures, calls)),
            _ => None,
        })
        .unwrap();
    assert_eq!(opened, (2, 2));
    assert_eq!(
        records
            .iter()
            .find(|r| matches!(r.event, Event::BreakerChanged { .. }))
            .unwrap()
            .event
            .name(),
        "breaker.opened"
    );
    let breakers = ex.breakers().await.unwrap();
    assert_eq!(breakers.len(), 1);
    assert_eq!(breakers[0].dependency, "farm");
    assert_eq!(breakers[0].state, Closed);
    assert_eq!(breakers[0].transitions, 3);
    assert_eq!(breakers[0].waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_and_the_waiting_retry_spends_no_attempt() {
    let h = Harness::new();
    h.runner
        .script(
            "n1",
            [Outcome::fail(FailureClass::Transient).after(secs(1))],
        )
        .script(
            "n2",
            [Outcome::fail(FailureClass::Transient).after(secs(1))],
        )
        .script(
            "n3",
            [
                Outcome::fail(FailureClass::Transient).after(secs(1)),
                Outcome::succeed().after(secs(1)),
            ],
        );
    let ex = h.executor().await;
    let id = ex.submit(farm_job(), "t").await.unwrap();
    // While the breaker is open, n3 is ready and has made no attempt.
    tokio::time::sleep(secs(5)).await;
    let mid = ex.status(&id).await.unwrap();
    let n3 = mid.nodes.iter().find(|n| n.id == "n3").unwrap();
    assert_eq!(
        (n3.state, n3.attempts),
        (orchestrator_core::NodeState::Ready, 0)
    );
    let b = &ex.breakers().await.unwrap()[0];
    assert_eq!((b.state, b.waiting), (BreakerState::Open, 1));
    assert_eq!(b.open_until, Some(Timestamp(EPOCH_MS + 11_000)));

    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    // Trial at 11 s fails (reopens at 12 s); the retry due at 13 s waits for
    // the next half-open at 22 s, and is the node's second attempt only.
    assert_eq!(h.starts("n3"), [secs(11), secs(22)]);
    let n3 = status.nodes.iter().find(|n| n.id == "n3").unwrap();
    assert_eq!(n3.attempts, 2);
    let records = h.store.read_all(&id, 0).await.unwrap();
    use BreakerState::*;
    assert_eq!(
        breaker_events(&records),
        [
            (Closed, Open, 1),
            (Open, HalfOpen, 11),
            (HalfOpen, Open, 12),
            (Open, HalfOpen, 22),
            (HalfOpen, Closed, 23),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_of_uncounted_classes_leave_the_breaker_closed() {
    let h = Harness::new();
    h.runner
        .script(
            "n1",
            [Outcome::fail(FailureClass::Permanent).after(secs(1))],
        )
        .script(
            "n2",
            [Outcome::fail(FailureClass::Permanent).after(secs(1))],
        )
        .script("n3", [Outcome::succeed().after(secs(1))]);
    let ex = h.executor().await;
    let id = ex.submit(farm_job(), "t").await.unwrap();
    ex.wait(&id).await.unwrap();
    assert_eq!(h.starts("n3"), [secs(1)]);
    let records = h.store.read_all(&id, 0).await.unwrap();
    assert!(breaker_events(&records).is_empty());
}

fn decisions(records: &[Record]) -> Vec<(FailureClass, Option<String>, Option<u64>)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::NodeFailed {
                failure,
                retry_in_ms,
                ..
            } => Some((
                failure.class,
                failure.classified_by.as_ref().map(|c| c.rule.clone()),
                *retry_in_ms,
            )),
            _ => None,
        })
        .collect()
}

fn farm_policy(version: u32, transient_delay: u64) -> StoredPolicy {
    let mut p = StoredPolicy::new("farm", version);
    p.retry = RetrySpec::new()
        .max_attempts(6)
        .backoff(Backoff::fixed(secs(transient_delay)))
        .per_class(
            FailureClass::Timeout,
            ClassRetrySpec::new().backoff(Backoff::linear(secs(5), secs(5))),
        )
        .per_class(
            FailureClass::Infrastructure,
            ClassRetrySpec::new().backoff(Backoff::fixed(Duration::ZERO)),
        )
        .per_class(
            FailureClass::Permanent,
            ClassRetrySpec::new().backoff(Backoff::never()),
        );
    p.classify = vec![ClassifyRule::new(FailureClass::Transient)
        .named("reset")
        .pattern("(?i)connection reset")];
    p
}

#[tokio::test(start_paused = true)]
async fn a_stored_policy_picks_delays_by_class_and_is_pinned_at_submission() {
    let h = Harness::new();
    let ex = h.executor().await;
    ex.create_policy(&farm_policy(1, 2)).await.unwrap();
    h.runner.script(
        "a",
        [
            // A permanent failure the policy's rule reclassifies: transient, 2 s.
            Outcome::fail_with(Failure::permanent("Connection reset by peer")).after(secs(1)),
            // Timeout: linear 5 s, then 10 s (attempt 3).
            Outcome::fail(FailureClass::Timeout).after(secs(1)),
            Outcome::fail(FailureClass::Timeout).after(secs(1)),
            // Infrastructure: at once.
            Outcome::fail(FailureClass::Infrastructure).after(secs(1)),
            // Permanent: never retried.
            Outcome::fail(FailureClass::Permanent).after(secs(1)),
        ],
    );
    let spec = JobSpec::builder("p")
        .policy("farm")
        .node(NodeSpec::new("a", KIND))
        .build();
    let id = ex.submit(spec, "t").await.unwrap();
    // A newer version appearing meanwhile changes nothing for this job.
    ex.create_policy(&farm_policy(2, 60)).await.unwrap();
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    let records = h.store.read_all(&id, 0).await.unwrap();
    use FailureClass::*;
    assert_eq!(
        decisions(&records),
        [
            (Transient, Some("reset".into()), Some(2_000)),
            (Timeout, None, Some(10_000)),
            (Timeout, None, Some(15_000)),
            (Infrastructure, None, Some(0)),
            (Permanent, None, None),
        ]
    );
    let Event::Submitted { header } = &records[0].event else {
        panic!("first record is Submitted")
    };
    assert_eq!(header.spec.policy.as_deref(), Some("farm@1"));
    let first = records
        .iter()
        .find_map(|r| match &r.event {
            Event::NodeFailed { failure, .. } => failure.classified_by.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.runner_class, Permanent);
}

#[tokio::test(start_paused = true)]
async fn unknown_or_conflicting_policies_are_validation_problems() {
    let h = Harness::new();
    let ex = h.executor().await;
    ex.create_policy(&farm_policy(1, 2)).await.unwrap();
    let spec = JobSpec::builder("p")
        .node(NodeSpec::new("a", KIND).policy("farm@7"))
        .node(NodeSpec::new("b", KIND).policy("nope"))
        .node(
            NodeSpec::new("c", KIND)
                .policy("farm")
                .retry(RetrySpec::new()),
        )
        .node(NodeSpec::new("d", KIND).policy("bad name"))
        .build();
    let Err(ExecutorError::Invalid(e)) = ex.submit(spec, "t").await else {
        panic!("expected validation problems")
    };
    let got: Vec<(&str, ProblemCode)> = e.0.iter().map(|p| (p.path.as_str(), p.code)).collect();
    assert_eq!(
        got,
        [
            ("/dag_definition/nodes/0/policy", ProblemCode::UnknownPolicy),
            ("/dag_definition/nodes/1/policy", ProblemCode::UnknownPolicy),
            ("/dag_definition/nodes/2/policy", ProblemCode::InvalidPolicy),
            ("/dag_definition/nodes/3/policy", ProblemCode::InvalidPolicy),
        ]
    );
    // Nothing was stored for the rejected job.
    let page = h.store.list_jobs(&Default::default()).await.unwrap();
    assert!(page.jobs.is_empty());
    // A changed body for an existing version is refused, the stored one kept.
    let err = ex.create_policy(&farm_policy(1, 9)).await.unwrap_err();
    assert!(matches!(
        err,
        ExecutorError::Store(orchestrator_core::StoreError::PolicyConflict { .. })
    ));
    let stored = h.store.get_policy("farm", Some(1)).await.unwrap().unwrap();
    assert_eq!(stored, farm_policy(1, 2));
}

/// A failed attempt: node, class, and the rule with the runner's class.
type Seen<'a> = (&'a str, FailureClass, Option<(String, FailureClass)>);

/// One `process` node per rule kind, each failing once and then passing;
/// the journal shows the class each rule gave the first failure.
#[cfg(unix)]
#[tokio::test]
async fn rules_refine_the_process_runner_by_exit_code_regex_signal_and_timeout() {
    let store = Arc::new(MemoryStore::new());
    let ex = Executor::builder(store.clone()).start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Fails on the first run, passes on the next (a marker file per node).
    let script = |name: &str, fail: &str| {
        let marker = dir.join(name);
        json!({
            "command": format!(
                "if [ -e '{m}' ]; then exit 0; fi; touch '{m}'; {fail}",
                m = marker.display()
            ),
            "shell": true,
        })
    };
    let fast = RetrySpec::new()
        .max_attempts(2)
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .retry_on([
            FailureClass::Transient,
            FailureClass::Timeout,
            FailureClass::Infrastructure,
            FailureClass::Unknown,
            FailureClass::Permanent,
        ]);
    let spec = JobSpec::builder("rules")
        .retry(fast)
        .classify([
            ClassifyRule::new(FailureClass::Infrastructure)
                .named("farm-down")
                .exit_codes([3]),
            ClassifyRule::new(FailureClass::Transient)
                .named("reset")
                .pattern("Connection reset")
                .stream(orchestrator_core::classify::Stream::Stderr),
            ClassifyRule::new(FailureClass::Permanent)
                .named("killed")
                .signals([9]),
            ClassifyRule::new(FailureClass::Infrastructure)
                .named("slow")
                .timeout(true),
        ])
        .node(NodeSpec::new("code", "process").params(script("code", "exit 3")))
        .node(NodeSpec::new("regex", "process").params(script(
            "regex",
            "echo 'read: Connection reset by peer' >&2; exit 1",
        )))
        .node(NodeSpec::new("signal", "process").params(script("signal", "kill -9 $$")))
        .node(
            NodeSpec::new("timeout", "process")
                .params(script("timeout", "sleep 5"))
                .timeout(Duration::from_millis(300)),
        )
        .node(NodeSpec::new("plain", "process").params(script("plain", "exit 1")))
        .build();
    let id = ex.submit(spec, "t").await.unwrap();
    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    let records = store.read_all(&id, 0).await.unwrap();
    let nodes = ["code", "regex", "signal", "timeout", "plain"];
    let mut got: Vec<Seen<'_>> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::NodeFailed { node, failure, .. } => Some((
                nodes[*node as usize],
                failure.class,
                failure
                    .classified_by
                    .as_ref()
                    .map(|c| (c.rule.clone(), c.runner_class)),
            )),
            _ => None,
        })
        .collect();
    got.sort_by_key(|g| g.0);
    use FailureClass::*;
    assert_eq!(
        got,
        [
            ("code", Infrastructure, Some(("farm-down".into(), Unknown))),
            ("plain", Unknown, None),
            ("regex", Transient, Some(("reset".into(), Unknown))),
            ("signal", Permanent, Some(("killed".into(), Infrastructure))),
            ("timeout", Infrastructure, Some(("slow".into(), Timeout))),
        ]
    );
}
