//! Retries as the executor performs them, on a paused tokio clock: exact
//! backoff delays between attempts, per-class policies, `retry_on` and
//! `never_retry_on`, exhausted attempts, the total-time budget, retries of
//! attempts interrupted by a crash, and jitter that replays identically for
//! the same job id.
//!
//! Delays are measured where they matter, between the end of one attempt
//! and the start of the next as the runner saw them (tokio time), and are
//! compared with the decision journaled for each failed attempt. Journal
//! timestamps come from a clock that follows tokio's, so the two agree.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::retry::seed_for;
use orchestrator_core::runner::{Execution, Outcome, ScriptedRunner};
use orchestrator_core::{
    Backoff, ClassRetrySpec, Clock, Event, Executor, Failure, FailureClass, Jitter, JobId, JobSpec,
    JobState, JobStatus, MemoryStore, NodeSpec, NodeState, PolicyRegistry, Record, Registry,
    RetryContext, RetryDefaults, RetrySpec, Store, StoreExt, Timestamp, TriggerRule,
};
use tokio::time::Instant;

const KIND: &str = "test";
const EPOCH_MS: u64 = 1_700_000_000_000;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Journal timestamps on tokio's paused clock: the executor computes retry
/// due times and budgets from journal timestamps, and arms timers on tokio
/// time, so a test clock must move with tokio's.
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
        let mut registry = Registry::new();
        registry.register(KIND, self.runner.clone());
        Executor::builder(self.store.clone())
            .registry(registry)
            .clock(self.clock.clone())
            .start()
            .await
            .unwrap()
    }

    /// Submits `spec` under `id` to a new executor and waits for the end.
    async fn run(&self, id: &str, spec: JobSpec) -> (JobStatus, Vec<Record>) {
        let ex = self.executor().await;
        let id: JobId = id.parse().unwrap();
        ex.submit_with_id(id.clone(), spec, "tester").await.unwrap();
        let status = ex.wait(&id).await.unwrap();
        let records = self.store.read_all(&id, 0).await.unwrap();
        (status, records)
    }

    /// When `node`'s attempts started, from the clock's origin.
    fn starts(&self, node: &str) -> Vec<Duration> {
        self.runner
            .executions_of(node)
            .iter()
            .map(|e| e.started - self.clock.0)
            .collect()
    }

    /// The wait between each attempt's end and the next one's start.
    fn gaps(&self, node: &str) -> Vec<Duration> {
        let runs: Vec<Execution> = self.runner.executions_of(node);
        runs.windows(2)
            .map(|w| w[1].started - w[0].ended.expect("attempts end before the next starts"))
            .collect()
    }
}

fn node(id: &str) -> NodeSpec {
    NodeSpec::new(id, KIND)
}

fn job(node: NodeSpec) -> JobSpec {
    JobSpec::builder("retries").node(node).build()
}

/// The journaled retry decision of each failed attempt of node `index`.
fn decisions(records: &[Record], index: u32) -> Vec<(u32, FailureClass, Option<u64>)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::NodeFailed {
                node,
                attempt,
                failure,
                retry_in_ms,
            } if *node == index => Some((*attempt, failure.class, *retry_in_ms)),
            _ => None,
        })
        .collect()
}

fn fail(class: FailureClass) -> Outcome {
    Outcome::fail(class).after(secs(1))
}

fn succeed() -> Outcome {
    Outcome::succeed().after(secs(1))
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_after_the_fixed_delay() {
    let h = Harness::new();
    h.runner.script(
        "flaky",
        [
            fail(FailureClass::Transient),
            fail(FailureClass::Transient),
            succeed(),
        ],
    );
    let retry = RetrySpec::new()
        .max_attempts(3)
        .backoff(Backoff::fixed(secs(5)));
    let (status, records) = h.run("fixed", job(node("flaky").retry(retry))).await;

    assert_eq!(status.state, JobState::Succeeded);
    let flaky = status.node("flaky").unwrap();
    assert_eq!((flaky.state, flaky.attempts), (NodeState::Succeeded, 3));
    assert_eq!(h.gaps("flaky"), [secs(5), secs(5)]);
    assert_eq!(h.starts("flaky"), [secs(0), secs(6), secs(12)]);
    assert_eq!(
        decisions(&records, 0),
        [
            (1, FailureClass::Transient, Some(5_000)),
            (2, FailureClass::Transient, Some(5_000)),
        ]
    );
    // The retry waits on the clock, not on a slot: each attempt started
    // exactly when its retry fell due.
    let due: Vec<u64> = records
        .iter()
        .filter(|r| r.event == Event::NodeRetryDue { node: 0 })
        .map(|r| r.at.0 - EPOCH_MS)
        .collect();
    assert_eq!(due, [6_000, 12_000]);
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_doubles_up_to_max_delay() {
    let h = Harness::new();
    h.runner
        .script("flaky", (0..5).map(|_| fail(FailureClass::Transient)));
    h.runner.set_default(succeed());
    let retry = RetrySpec::new()
        .max_attempts(6)
        .backoff(Backoff::exponential(secs(1), 2.0, None))
        .max_delay(secs(6));
    let (status, records) = h.run("exponential", job(node("flaky").retry(retry))).await;

    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.node("flaky").unwrap().attempts, 6);
    // 1, 2, 4, then capped at 6 s.
    assert_eq!(
        h.gaps("flaky"),
        [secs(1), secs(2), secs(4), secs(6), secs(6)]
    );
    let journaled: Vec<Option<u64>> = decisions(&records, 0).iter().map(|d| d.2).collect();
    assert_eq!(
        journaled,
        [
            Some(1_000),
            Some(2_000),
            Some(4_000),
            Some(6_000),
            Some(6_000)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_waiting_for_its_retry_holds_no_slot() {
    let h = Harness::new();
    h.runner
        .script("flaky", [fail(FailureClass::Transient), succeed()]);
    h.runner
        .script("other", [Outcome::succeed().after(secs(3))]);
    let mut registry = Registry::new();
    registry.register(KIND, h.runner.clone());
    let ex = Executor::builder(h.store.clone())
        .registry(registry)
        .clock(h.clock.clone())
        .config(orchestrator_core::ExecutorConfig {
            max_concurrent_nodes: 1,
            ..orchestrator_core::ExecutorConfig::default()
        })
        .start()
        .await
        .unwrap();
    let retry = RetrySpec::new().backoff(Backoff::fixed(secs(10)));
    let spec = JobSpec::builder("slots")
        .node(node("flaky").priority(1).retry(retry))
        .node(node("other"))
        .build();
    let id = ex.submit(spec, "tester").await.unwrap();

    tokio::time::sleep(secs(2)).await;
    let waiting = ex.status(&id).await.unwrap();
    let flaky = waiting.node("flaky").unwrap();
    assert_eq!(flaky.state, NodeState::RetryWaiting);
    assert_eq!(
        flaky.retry_at.map(|t| t.0 - EPOCH_MS),
        Some(11_000),
        "due 10 s after the failure at 1 s"
    );
    assert_eq!(waiting.node("other").unwrap().state, NodeState::Running);

    let status = ex.wait(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    // The only slot went to `other` while `flaky` waited.
    assert_eq!(h.starts("other"), [secs(1)]);
    assert_eq!(h.starts("flaky"), [secs(0), secs(11)]);
    assert_eq!(h.runner.max_in_flight(), 1);
}

/// The example of the retry module docs, run by the executor: transient
/// failures back off exponentially, timeouts linearly, permanent failures
/// are not retried; all classes share one attempt counter.
#[tokio::test(start_paused = true)]
async fn each_failure_class_follows_its_own_policy() {
    let h = Harness::new();
    h.runner.script(
        "mixed",
        [
            fail(FailureClass::Transient),
            // A genuine timeout: the node's 3 s limit stops a hung attempt.
            Outcome::hang(),
            fail(FailureClass::Transient),
            Outcome::hang(),
            fail(FailureClass::Permanent),
        ],
    );
    let retry = RetrySpec::new()
        .max_attempts(6)
        .backoff(Backoff::exponential(secs(1), 2.0, None))
        .per_class(
            FailureClass::Timeout,
            ClassRetrySpec::new().backoff(Backoff::linear(secs(2), secs(3))),
        )
        .per_class(
            FailureClass::Permanent,
            ClassRetrySpec::new().backoff(Backoff::never()),
        );
    let (status, records) = h
        .run(
            "per-class",
            job(node("mixed").timeout(secs(3)).retry(retry)),
        )
        .await;

    let mixed = status.node("mixed").unwrap();
    assert_eq!((mixed.state, mixed.attempts), (NodeState::Failed, 5));
    assert_eq!(
        mixed.last_error.as_ref().map(|e| e.class),
        Some(FailureClass::Permanent)
    );
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(
        decisions(&records, 0),
        [
            // Exponential after attempt 1: 1 s.
            (1, FailureClass::Transient, Some(1_000)),
            // Linear after attempt 2: 2 s + 1·3 s.
            (2, FailureClass::Timeout, Some(5_000)),
            // Exponential after attempt 3: 1 s · 2².
            (3, FailureClass::Transient, Some(4_000)),
            // Linear after attempt 4: 2 s + 3·3 s.
            (4, FailureClass::Timeout, Some(11_000)),
            // `kind: none` for permanent: the node fails.
            (5, FailureClass::Permanent, None),
        ]
    );
    assert_eq!(h.gaps("mixed"), [secs(1), secs(5), secs(4), secs(11)]);
    let took: Vec<Option<Duration>> = h
        .runner
        .executions_of("mixed")
        .iter()
        .map(Execution::duration)
        .collect();
    assert_eq!(
        took,
        [
            Some(secs(1)),
            Some(secs(3)),
            Some(secs(1)),
            Some(secs(3)),
            Some(secs(1))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_on_and_never_retry_on_choose_the_classes_retried() {
    let h = Harness::new();
    h.runner
        .script("no_infra", [fail(FailureClass::Infrastructure)]);
    h.runner
        .script("transient_ok", [fail(FailureClass::Transient)]);
    h.runner
        .script("permanent_retried", [fail(FailureClass::Permanent)]);
    h.runner
        .script("transient_not", [fail(FailureClass::Transient)]);
    h.runner.set_default(succeed());
    let never_infra = RetrySpec::new()
        .backoff(Backoff::fixed(secs(1)))
        .never_retry_on([FailureClass::Infrastructure]);
    let only_permanent = RetrySpec::new()
        .backoff(Backoff::fixed(secs(1)))
        .retry_on([FailureClass::Permanent]);
    let spec = JobSpec::builder("classes")
        .node(node("no_infra").retry(never_infra.clone()))
        .node(node("transient_ok").retry(never_infra))
        .node(node("permanent_retried").retry(only_permanent.clone()))
        .node(node("transient_not").retry(only_permanent))
        .build();
    let (status, records) = h.run("classes", spec).await;

    let outcome = |id: &str| {
        let n = status.node(id).unwrap();
        (n.state, n.attempts)
    };
    assert_eq!(outcome("no_infra"), (NodeState::Failed, 1));
    assert_eq!(outcome("transient_ok"), (NodeState::Succeeded, 2));
    assert_eq!(outcome("permanent_retried"), (NodeState::Succeeded, 2));
    assert_eq!(outcome("transient_not"), (NodeState::Failed, 1));
    assert_eq!(
        decisions(&records, 0),
        [(1, FailureClass::Infrastructure, None)]
    );
    assert_eq!(
        decisions(&records, 2),
        [(1, FailureClass::Permanent, Some(1_000))]
    );
    assert_eq!(decisions(&records, 3), [(1, FailureClass::Transient, None)]);
    for id in ["no_infra", "transient_not"] {
        assert_eq!(h.runner.runs_of(id), 1, "{id} is not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_fail_the_node_with_the_last_error() {
    let h = Harness::new();
    h.runner.script(
        "doomed",
        (1..=3).map(|n| {
            Outcome::fail_with(Failure::transient(format!("attempt {n} failed"))).after(secs(1))
        }),
    );
    h.runner.script("slow", (0..2).map(|_| Outcome::hang()));
    let spec = JobSpec::builder("exhausted")
        .retry(
            RetrySpec::new()
                .max_attempts(3)
                .backoff(Backoff::fixed(secs(2))),
        )
        .node(node("doomed"))
        .node(node("after").depends_on(["doomed"]))
        .node(
            node("slow").timeout(secs(4)).retry(
                RetrySpec::new()
                    .max_attempts(2)
                    .backoff(Backoff::fixed(secs(1))),
            ),
        )
        .build();
    let (status, records) = h.run("exhausted", spec).await;

    assert_eq!(status.state, JobState::Failed);
    let doomed = status.node("doomed").unwrap();
    assert_eq!((doomed.state, doomed.attempts), (NodeState::Failed, 3));
    let last = doomed.last_error.as_ref().unwrap();
    assert_eq!(
        (last.class, last.message.as_str()),
        (FailureClass::Transient, "attempt 3 failed")
    );
    assert_eq!(
        decisions(&records, 0),
        [
            (1, FailureClass::Transient, Some(2_000)),
            (2, FailureClass::Transient, Some(2_000)),
            (3, FailureClass::Transient, None),
        ]
    );
    assert_eq!(h.runner.runs_of("doomed"), 3);
    assert_eq!(
        status.node("after").unwrap().state,
        NodeState::UpstreamFailed
    );
    assert_eq!(h.runner.runs_of("after"), 0);
    // Timeouts exhaust attempts the same way, and end `timed_out`.
    let slow = status.node("slow").unwrap();
    assert_eq!((slow.state, slow.attempts), (NodeState::TimedOut, 2));
    assert_eq!(
        slow.last_error.as_ref().map(|e| e.class),
        Some(FailureClass::Timeout)
    );
    assert_eq!(h.starts("slow"), [secs(0), secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn max_total_stops_retries_that_would_overrun_the_budget() {
    let h = Harness::new();
    h.runner
        .script("budget", (0..5).map(|_| fail(FailureClass::Transient)));
    let retry = RetrySpec::new()
        .max_attempts(5)
        .backoff(Backoff::fixed(secs(2)))
        .max_total(secs(6));
    let (status, records) = h.run("budget", job(node("budget").retry(retry))).await;

    // Attempt 1 fails at 1 s (1 + 2 ≤ 6: retry at 3 s); attempt 2 fails at
    // 4 s (4 + 2 = 6 ≤ 6: retry at 6 s); attempt 3 fails at 7 s (7 + 2 > 6).
    assert_eq!(h.starts("budget"), [secs(0), secs(3), secs(6)]);
    assert_eq!(
        decisions(&records, 0),
        [
            (1, FailureClass::Transient, Some(2_000)),
            (2, FailureClass::Transient, Some(2_000)),
            (3, FailureClass::Transient, None),
        ]
    );
    assert_eq!(status.node("budget").unwrap().state, NodeState::Failed);
}

/// An attempt in flight when the process died is journaled as interrupted
/// (class `infrastructure`) by the next executor and retried by the
/// policy's rule for that class; a retry that was waiting resumes with the
/// delay it had left.
#[tokio::test(start_paused = true)]
async fn interrupted_attempts_are_retried_per_policy_after_recovery() {
    let h = Harness::new();
    h.runner.script("interrupted", [Outcome::hang(), succeed()]);
    h.runner.script("not_retried", [Outcome::hang()]);
    h.runner
        .script("waiting", [fail(FailureClass::Transient), succeed()]);
    let spec = JobSpec::builder("recovery")
        .retry(
            RetrySpec::new()
                .max_attempts(3)
                .backoff(Backoff::fixed(secs(10)))
                .per_class(
                    FailureClass::Infrastructure,
                    ClassRetrySpec::new().backoff(Backoff::fixed(secs(7))),
                ),
        )
        .node(node("interrupted"))
        .node(
            node("not_retried").retry(
                RetrySpec::new()
                    .backoff(Backoff::fixed(secs(1)))
                    .never_retry_on([FailureClass::Infrastructure]),
            ),
        )
        .node(node("waiting"))
        .build();
    let id: JobId = "recovered-job".parse().unwrap();
    let ex = h.executor().await;
    ex.submit_with_id(id.clone(), spec, "tester").await.unwrap();

    // At 5 s `waiting` failed at 1 s and is due at 11 s; the others hang.
    tokio::time::sleep(secs(5)).await;
    let before = ex.status(&id).await.unwrap();
    assert_eq!(
        before.node("interrupted").unwrap().state,
        NodeState::Running
    );
    assert_eq!(
        before.node("waiting").unwrap().state,
        NodeState::RetryWaiting
    );
    drop(ex); // the crash
    tokio::task::yield_now().await;

    let ex = h.executor().await;
    let status = ex.wait(&id).await.unwrap();
    let records = h.store.read_all(&id, 0).await.unwrap();

    assert_eq!(status.state, JobState::Failed, "not_retried failed");
    let outcome = |id: &str| {
        let n = status.node(id).unwrap();
        (n.state, n.attempts)
    };
    assert_eq!(outcome("interrupted"), (NodeState::Succeeded, 2));
    assert_eq!(outcome("not_retried"), (NodeState::Failed, 1));
    assert_eq!(outcome("waiting"), (NodeState::Succeeded, 2));
    // Journaled by the new executor at 5 s, with the infrastructure rule.
    let interrupted = decisions(&records, 0);
    assert_eq!(
        interrupted,
        [(1, FailureClass::Infrastructure, Some(7_000))]
    );
    assert_eq!(
        decisions(&records, 1),
        [(1, FailureClass::Infrastructure, None)]
    );
    let message = status
        .node("not_retried")
        .unwrap()
        .last_error
        .clone()
        .unwrap();
    assert!(
        message.message.starts_with("attempt interrupted"),
        "{message}"
    );
    // Attempt 2 of the interrupted node 7 s after the recovery; the waiting
    // retry at its original due time, not a full delay after the restart.
    assert_eq!(h.starts("interrupted"), [secs(0), secs(12)]);
    assert_eq!(h.starts("waiting"), [secs(0), secs(11)]);
    let attempts: Vec<u32> = h
        .runner
        .executions_of("interrupted")
        .iter()
        .map(|e| e.attempt)
        .collect();
    assert_eq!(attempts, [1, 2]);
}

/// Jitter is a pure function of (job id, node, attempt): the same job id
/// gets the same delays in a fresh executor (so a replayed journal agrees
/// with the live decision), and another id gets other delays.
#[tokio::test(start_paused = true)]
async fn jitter_is_the_same_for_the_same_job_id() {
    let retry = RetrySpec::new()
        .max_attempts(5)
        .backoff(Backoff::exponential(secs(1), 2.0, None))
        .jitter(Jitter::Full);
    let spec = JobSpec::builder("jitter")
        .node(node("a").retry(retry.clone()))
        .node(node("b").retry(retry.clone()))
        .build();
    let run = |id: &'static str| {
        let spec = spec.clone();
        async move {
            let h = Harness::new();
            h.runner.set_default(fail(FailureClass::Transient));
            let (status, records) = h.run(id, spec).await;
            assert_eq!(status.state, JobState::Failed);
            let gaps = (h.gaps("a"), h.gaps("b"));
            (decisions(&records, 0), decisions(&records, 1), gaps)
        }
    };
    let first = run("jittered-job").await;
    let again = run("jittered-job").await;
    let other = run("another-job").await;
    assert_eq!(first, again, "same id, same delays");
    assert_ne!(first.0, other.0, "another id, other delays");
    assert_ne!(first.0, first.1, "two nodes of one job spread apart");

    // The delays are the policy's, seeded per (job, node), and the runner
    // waited exactly that long.
    let policy = retry
        .compile(&RetryDefaults::default(), &PolicyRegistry::default())
        .unwrap();
    let id: JobId = "jittered-job".parse().unwrap();
    let (a, b, (gaps_a, gaps_b)) = &first;
    for (node, journaled, gaps) in [(0, a, gaps_a), (1, b, gaps_b)] {
        let expected: Vec<(u32, FailureClass, Option<u64>)> = (1..=5)
            .map(|attempt| {
                // Each attempt takes 1 s, and waited the delays before it.
                let elapsed: Duration = gaps[..attempt as usize - 1].iter().sum::<Duration>()
                    + secs(u64::from(attempt));
                let ctx = RetryContext::new(
                    attempt,
                    FailureClass::Transient,
                    seed_for(&id, node),
                    elapsed,
                );
                let delay = policy.next_delay(&ctx).map(|d| d.as_millis() as u64);
                (attempt, FailureClass::Transient, delay)
            })
            .collect();
        assert_eq!(journaled, &expected);
        let waited: Vec<Option<u64>> = gaps.iter().map(|g| Some(g.as_millis() as u64)).collect();
        let decided: Vec<Option<u64>> = journaled[..4].iter().map(|d| d.2).collect();
        assert_eq!(waited, decided);
    }
}

/// A trigger rule downstream of a retried node sees only its final outcome.
#[tokio::test(start_paused = true)]
async fn downstream_nodes_wait_for_the_last_attempt() {
    let h = Harness::new();
    h.runner.script(
        "flaky",
        [
            fail(FailureClass::Transient),
            fail(FailureClass::Transient),
            succeed(),
        ],
    );
    let spec = JobSpec::builder("downstream")
        .retry(RetrySpec::new().backoff(Backoff::fixed(secs(2))))
        .node(node("flaky"))
        .node(
            node("on_failure")
                .depends_on(["flaky"])
                .trigger(TriggerRule::OneFailed),
        )
        .node(node("on_success").depends_on(["flaky"]))
        .build();
    let (status, _) = h.run("downstream", spec).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(
        status.node("on_failure").unwrap().state,
        NodeState::Skipped,
        "a failed attempt that is retried is not a failed node"
    );
    assert_eq!(h.starts("on_success"), [secs(7)]);
}
