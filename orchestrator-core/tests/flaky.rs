//! Flakiness end to end on the executor: outcomes recorded when a job
//! finishes (once, also across a crash), `flaky` and `quarantined` in
//! status, quarantined failures that neither fail the job nor block
//! downstream nodes, adaptive attempts driven by a scripted history, and
//! the report's exact scores and owner scoping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::flaky::{
    AttemptBudget, Classification, FlakyQuery, QuarantineReason, RunOutcome, TestOutcome,
};
use orchestrator_core::journal::{Progress, Snapshot};
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::store::{JobPage, JobQuery, TestHistoryStore};
use orchestrator_core::{
    Event, Executor, FailureClass, JobId, JobSpec, JobState, JobSummary, MemoryStore, NodeState,
    Record, Registry, Store, StoreError, StoreExt, Timestamp,
};

const KIND: &str = "test";

async fn executor(store: Arc<dyn Store>, runner: &ScriptedRunner) -> Executor {
    let mut registry = Registry::with_builtins();
    registry.register(KIND, runner.clone());
    Executor::builder(store)
        .registry(registry)
        .start()
        .await
        .expect("executor starts")
}

fn spec(json: &str) -> JobSpec {
    JobSpec::from_json(json).expect("valid spec")
}

/// `P` passed, `F` failed, `f` failed then passed: recorded as runs of
/// jobs `h-0, h-1, …` of job `ci` owned by `owner`.
async fn seed(store: &dyn Store, key: &str, runs: &str, owner: &str) {
    for (i, c) in runs.chars().enumerate() {
        let o = TestOutcome {
            key: key.into(),
            outcome: RunOutcome {
                job: format!("h-{owner}-{i}").parse().expect("id"),
                job_name: "ci".into(),
                owner: owner.into(),
                at: Timestamp(1_000 + i as u64),
                passed: c != 'F',
                flaky: c == 'f',
                attempts: if c == 'f' { 2 } else { 1 },
                quarantined: false,
            },
        };
        store.record_outcomes(&[o], 50).await.expect("seed");
    }
}

fn decisions(records: &[Record]) -> Vec<(u32, Event)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            e @ Event::FlakyDecision { node, .. } => Some((*node, e.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn outcomes_are_recorded_when_a_job_finishes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::new();
    runner.script(
        "flaky",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    runner.script("broken", [Outcome::fail(FailureClass::Permanent)]);
    let ex = executor(store.clone(), &runner).await;
    let job = spec(
        r#"{"name": "ci", "retry": {"max_attempts": 3, "backoff": {"kind": "fixed", "delay": "0s"}},
            "dag_definition": {"nodes": [
              {"id": "stable", "type": "test"},
              {"id": "flaky", "type": "test", "test_id": "suite::flaky"},
              {"id": "broken", "type": "test"},
              {"id": "after", "type": "test", "depends_on": ["broken"]},
              {"id": "setup", "type": "noop"},
              {"id": "probe", "type": "noop", "test_id": "suite::probe"}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    assert_eq!(status.state, JobState::Failed);
    let node = |n: &str| status.node(n).expect("node");
    assert!(node("flaky").flaky && !node("stable").flaky && !node("broken").flaky);
    let stable = store.test_history("ci/stable").await.expect("read");
    assert_eq!(stable.len(), 1);
    assert!(stable[0].passed && !stable[0].flaky && stable[0].job == id);
    assert_eq!(stable[0].owner, "alice");
    let flaky = store.test_history("suite::flaky").await.expect("read");
    assert_eq!(
        (flaky[0].passed, flaky[0].flaky, flaky[0].attempts),
        (true, true, 2)
    );
    let broken = store.test_history("ci/broken").await.expect("read");
    assert!(!broken[0].passed);
    // Upstream-failed nodes did not run: no outcome.
    assert!(store
        .test_history("ci/after")
        .await
        .expect("read")
        .is_empty());
    // A built-in no-op is no test, unless it names one.
    assert!(store
        .test_history("ci/setup")
        .await
        .expect("read")
        .is_empty());
    let probe = store.test_history("suite::probe").await.expect("read");
    assert_eq!((probe.len(), probe[0].passed), (1, true));
}

#[tokio::test(start_paused = true)]
async fn a_job_without_tests_finishes_without_history() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ex = executor(store.clone(), &ScriptedRunner::new()).await;
    let job = spec(
        r#"{"name": "plain", "dag_definition": {"nodes": [
              {"id": "a", "type": "noop"},
              {"id": "b", "type": "sleep", "params": {"duration": "1s"}, "depends_on": ["a"]}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    assert_eq!(status.state, JobState::Succeeded);
    for key in ["plain/a", "plain/b"] {
        assert!(store.test_history(key).await.expect("read").is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn quarantined_failure_neither_fails_the_job_nor_blocks_downstream() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = ScriptedRunner::new();
    runner.script("q", [Outcome::fail(FailureClass::Permanent)]);
    let ex = executor(store.clone(), &runner).await;
    let job = spec(
        r#"{"name": "ci", "flaky": {"quarantine": {"tests": ["ci/q"]}},
            "dag_definition": {"nodes": [
              {"id": "q", "type": "test"},
              {"id": "next", "type": "test", "depends_on": ["q"]},
              {"id": "alert", "type": "test", "depends_on": ["q"], "trigger": "one_failed"}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    assert_eq!(status.state, JobState::Succeeded, "{status:#?}");
    let q = status.node("q").expect("q");
    assert_eq!(q.state, NodeState::Failed);
    assert!(q.quarantined);
    // Downstream sees the quarantined failure as a success.
    assert_eq!(
        status.node("next").expect("next").state,
        NodeState::Succeeded
    );
    assert_eq!(
        status.node("alert").expect("alert").state,
        NodeState::Skipped
    );
    let records = store.read_all(&id, 0).await.expect("journal");
    let d = decisions(&records);
    assert_eq!(d.len(), 1);
    let Event::FlakyDecision { decision, .. } = &d[0].1 else {
        unreachable!()
    };
    assert_eq!(decision.quarantine, Some(QuarantineReason::Listed));
    let h = store.test_history("ci/q").await.expect("history");
    assert!(h[0].quarantined && !h[0].passed);

    // The same failure, not quarantined, fails the job and blocks `next`.
    let job = spec(
        r#"{"name": "ci2", "dag_definition": {"nodes": [
              {"id": "q", "type": "test"},
              {"id": "next", "type": "test", "depends_on": ["q"]}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(
        status.node("next").expect("next").state,
        NodeState::UpstreamFailed
    );
}

#[tokio::test(start_paused = true)]
async fn quarantine_by_score_needs_history_above_the_threshold() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(&*store, "ci/wobbly", "PFPFP", "alice").await; // flip rate 0.8
    seed(&*store, "ci/steady", "PPPPF", "alice").await; // flip rate 0.2
    let runner = ScriptedRunner::with_default(Outcome::fail(FailureClass::Permanent));
    let ex = executor(store.clone(), &runner).await;
    let job = spec(
        r#"{"name": "ci", "flaky": {"quarantine": {"score_above": 0.3}},
            "dag_definition": {"nodes": [{"id": "wobbly", "type": "test"}, {"id": "steady", "type": "test"}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    assert!(status.node("wobbly").expect("w").quarantined);
    assert!(!status.node("steady").expect("s").quarantined);
    assert_eq!(status.state, JobState::Failed, "steady's failure counts");
    let records = store.read_all(&id, 0).await.expect("journal");
    let d = decisions(&records);
    assert_eq!(d.len(), 1);
    let Event::FlakyDecision {
        node,
        score,
        decision,
    } = &d[0].1
    else {
        unreachable!()
    };
    assert_eq!(*node, 0);
    assert_eq!((score.runs, score.flips, score.flip_rate), (5, 4, 0.8));
    assert_eq!(decision.quarantine, Some(QuarantineReason::Score));
}

#[tokio::test(start_paused = true)]
async fn adaptive_retries_give_flaky_tests_more_and_failing_ones_fewer() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(&*store, "ci/flaky", "PFPFPPfP", "alice").await;
    seed(&*store, "ci/broken", "FFFFFF", "alice").await;
    seed(&*store, "ci/fine", "PPPPPP", "alice").await;
    let runner = ScriptedRunner::new();
    let fail = || Outcome::fail(FailureClass::Transient);
    runner.script("flaky", [fail(), fail(), fail(), Outcome::succeed()]);
    runner.script("broken", [fail(), fail(), fail(), fail()]);
    runner.script("fine", [fail(), fail(), fail(), Outcome::succeed()]);
    let ex = executor(store.clone(), &runner).await;
    let job = spec(
        r#"{"name": "ci", "flaky": {"adaptive": true, "extra_attempts": 2},
            "retry": {"max_attempts": 2, "backoff": {"kind": "fixed", "delay": "5s"}},
            "dag_definition": {"nodes": [
              {"id": "flaky", "type": "test"}, {"id": "broken", "type": "test"},
              {"id": "fine", "type": "test"}]}}"#,
    );
    let id = ex.submit(job.clone(), "alice").await.expect("submit");
    let status = ex.wait(&id).await.expect("wait");
    // The policy allows 2 attempts; the flaky test gets 2 more, and passes
    // on its fourth.
    let flaky = status.node("flaky").expect("flaky");
    assert_eq!(
        (flaky.state, flaky.attempts, flaky.flaky),
        (NodeState::Succeeded, 4, true)
    );
    // The consistently failing test gets one attempt only.
    assert_eq!(status.node("broken").expect("broken").attempts, 1);
    // A stable test keeps the policy's two.
    assert_eq!(status.node("fine").expect("fine").attempts, 2);
    // Extra attempts run at once; the policy's own retry waited its 5 s.
    let records = store.read_all(&id, 0).await.expect("journal");
    let retries: Vec<Option<u64>> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::NodeFailed {
                node: 0,
                retry_in_ms,
                ..
            } => Some(*retry_in_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [Some(5000), Some(0), Some(0)]);
    let d = decisions(&records);
    let budgets: Vec<(u32, Option<AttemptBudget>, Classification)> = d
        .iter()
        .map(|(n, e)| match e {
            Event::FlakyDecision {
                decision, score, ..
            } => (*n, decision.attempts, score.class),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        budgets,
        [
            (0, Some(AttemptBudget::Extra(2)), Classification::Flaky),
            (1, Some(AttemptBudget::AtMost(1)), Classification::Failing),
        ]
    );
    let Event::FlakyDecision { score, .. } = &d[0].1 else {
        unreachable!()
    };
    assert_eq!((score.runs, score.flips, score.flip_rate), (8, 5, 0.625));
}

/// Fails every append once the job's history is recorded (while armed),
/// so a job can be stopped between recording its history and journaling
/// its end.
struct StopBeforeEnd {
    inner: MemoryStore,
    armed: AtomicBool,
}

impl StopBeforeEnd {
    async fn recorded(&self) -> bool {
        !self
            .inner
            .test_history("ci/b")
            .await
            .expect("read")
            .is_empty()
    }
}

orchestrator_core::forward_store_extensions!(StopBeforeEnd => inner);

#[async_trait]
impl Store for StopBeforeEnd {
    async fn create_job(&self, s: &JobSummary, r: &[Record]) -> Result<(), StoreError> {
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
        if self.armed.load(Ordering::SeqCst) && self.recorded().await {
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
async fn history_is_recorded_once_across_a_crash_before_the_end() {
    let store = Arc::new(StopBeforeEnd {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(true),
    });
    let runner = ScriptedRunner::new();
    runner.script(
        "a",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    let ex = executor(store.clone(), &runner).await;
    let job = spec(
        r#"{"name": "ci", "retry": {"backoff": {"kind": "fixed", "delay": "0s"}},
            "dag_definition": {"nodes": [{"id": "a", "type": "test"}, {"id": "b", "type": "test"}]}}"#,
    );
    let id = ex.submit(job, "alice").await.expect("submit");
    for _ in 0..100 {
        if store.recorded().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.recorded().await, "history recorded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The end could not be journaled: the job is unfinished in the store.
    assert!(!store
        .summary(&id)
        .await
        .expect("summary")
        .progress
        .state
        .is_terminal());
    ex.shutdown();

    store.armed.store(false, Ordering::SeqCst);
    let ex = executor(store.clone(), &runner).await;
    let status = ex.wait(&id).await.expect("recovered");
    assert_eq!(status.state, JobState::Succeeded);
    let a = store.test_history("ci/a").await.expect("history");
    assert_eq!(a.len(), 1, "recorded once: {a:?}");
    assert!(a[0].flaky);
    assert_eq!(store.test_history("ci/b").await.expect("history").len(), 1);
    assert_eq!(runner.runs_of("a"), 2, "no node ran again");
}

#[tokio::test(start_paused = true)]
async fn report_scores_scripted_histories_and_scopes_by_owner() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(&*store, "ci/a", "PPFF", "alice").await;
    seed(&*store, "ci/b", "PfPPP", "alice").await;
    seed(&*store, "ci/c", "FFFFF", "bob").await;
    seed(&*store, "ci/a", "FFF", "bob").await;
    let ex = executor(store.clone(), &ScriptedRunner::new()).await;
    let all = ex
        .flaky_report(&FlakyQuery::default())
        .await
        .expect("report");
    let rows: Vec<(&str, u32, u32, f64, Classification)> = all
        .tests
        .iter()
        .map(|t| {
            (
                t.key.as_str(),
                t.score.runs,
                t.score.flips,
                t.score.flip_rate,
                t.score.class,
            )
        })
        .collect();
    // ci/a: alice's PPFF and bob's FFF ran at the same times; in (time,
    // job) order that is P F P F F F F: three flips.
    // ci/b: P f P P P: the flaky run is the one flip.
    assert_eq!(
        rows,
        [
            ("ci/a", 7, 3, 3.0 / 7.0, Classification::Flaky),
            ("ci/b", 5, 1, 0.2, Classification::Flaky),
            ("ci/c", 5, 0, 0.0, Classification::Failing),
        ]
    );
    let alice = FlakyQuery {
        owner: Some("alice".into()),
        ..FlakyQuery::default()
    };
    let mine = ex.flaky_report(&alice).await.expect("report");
    let keys: Vec<(&str, u32, f64)> = mine
        .tests
        .iter()
        .map(|t| (t.key.as_str(), t.score.runs, t.score.flip_rate))
        .collect();
    assert_eq!(keys, [("ci/a", 4, 0.25), ("ci/b", 5, 0.2)]);
    let min = FlakyQuery {
        min_score: Some(0.3),
        ..FlakyQuery::default()
    };
    let flaky = ex.flaky_report(&min).await.expect("report");
    assert_eq!(flaky.tests.len(), 1);
    assert_eq!(flaky.tests[0].key, "ci/a");
    let paged = FlakyQuery {
        limit: 2,
        ..FlakyQuery::default()
    };
    let p1 = ex.flaky_report(&paged).await.expect("page 1");
    assert_eq!(p1.tests.len(), 2);
    let p2 = ex
        .flaky_report(&FlakyQuery {
            cursor: p1.next_cursor.clone(),
            ..paged
        })
        .await
        .expect("page 2");
    assert_eq!(
        p2.tests.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["ci/c"]
    );
    assert!(ex
        .flaky_report(&FlakyQuery {
            min_score: Some(2.0),
            ..FlakyQuery::default()
        })
        .await
        .is_err());
}

#[tokio::test]
async fn flaky_settings_are_validated_with_paths() {
    let ex = executor(Arc::new(MemoryStore::new()), &ScriptedRunner::new()).await;
    let job = spec(
        r#"{"name": "ci", "flaky": {"extra_attempts": 0, "quarantine": {"score_above": 1.5, "tests": [""]}},
            "dag_definition": {"nodes": [{"id": "a", "type": "test", "test_id": " ",
               "flaky": {"failing_attempts": 0}}]}}"#,
    );
    let err = ex.validate(&job).expect_err("invalid");
    let mut paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/dag_definition/nodes/0/flaky/failing_attempts",
            "/dag_definition/nodes/0/test_id",
            "/flaky/extra_attempts",
            "/flaky/quarantine/score_above",
            "/flaky/quarantine/tests/0",
        ]
    );
    assert!(err
        .problems()
        .iter()
        .all(|p| p.code.as_str() == "invalid_flaky"));
    let unknown = JobSpec::from_json(
        r#"{"name": "ci", "flaky": {"adaptiv": true}, "dag_definition": {"nodes": [{"id": "a", "type": "test"}]}}"#,
    )
    .expect_err("unknown field");
    assert_eq!(unknown.path, "/flaky/adaptiv");
}
